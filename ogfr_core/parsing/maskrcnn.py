"""Mask R-CNN person mask (torchvision), shared by the ``pifpaf_maskrcnn`` and ``torchvision`` backends.

The paper (§III-A1, following BPBreID) keeps the person instance whose box centre is nearest the
image centre: re-ID crops are centred on their identity, other people are distractors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import BackendUnavailableError

COCO_PERSON_LABEL = 1  # torchvision's COCO category id for "person"


def nearest_centre_index(boxes: np.ndarray, image_hw: tuple[int, int]) -> int | None:
    """Index of the box whose centre is nearest the image centre, ``None`` if there are no boxes.

    Args:
        boxes: float ``[N, 4]`` ``(x1, y1, x2, y2)`` in pixels.
        image_hw: ``(H, W)`` of the image, pixels.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return None
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0  # [N, 2] (x, y)
    target = np.array([image_hw[1] / 2.0, image_hw[0] / 2.0], np.float32)
    return int(np.argmin(((centres - target) ** 2).sum(1)))


def select_person(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, image_hw: tuple[int, int],
                  score_threshold: float = 0.5) -> int | None:
    """Pick the detection to parse: a person (label 1) with score ≥ threshold, box centre nearest
    the image centre. Returns its index into the inputs, or ``None`` (no person)."""
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, np.float32).reshape(-1)
    keep = np.flatnonzero((labels == COCO_PERSON_LABEL) & (scores >= score_threshold))
    best = nearest_centre_index(np.asarray(boxes).reshape(-1, 4)[keep], image_hw)
    return None if best is None else int(keep[best])


def require_file(path: str, param: str, what: str) -> Path:
    """Return ``Path(path)`` if it is an existing file, else raise :class:`BackendUnavailableError`
    naming the ``parse.<param>`` to set (weights are never downloaded by this project)."""
    if not path:
        raise BackendUnavailableError(
            f"parse.{param} is empty: set it to a local {what} file (this project never downloads weights; "
            f"fetch it on a machine with internet, e.g. via torchvision's weights enum, and copy it here)")
    p = Path(path)
    if not p.is_file():
        raise BackendUnavailableError(f"parse.{param}: {what} file not found: {p} — put the weights there or fix the path")
    return p


def weights_tag(path: str) -> str:
    """Short identity of a weights file for the cache key: ``name:size`` (no hashing of large
    files), or ``"none"`` when unset/missing."""
    p = Path(path) if path else None
    if p is None or not p.is_file():
        return "none"
    return f"{p.name}:{p.stat().st_size}"


def load_state_dict_strict(model, path: Path) -> None:
    """Load a local checkpoint (``weights_only=True``) into ``model``, listing missing/unexpected keys.

    Raises:
        RuntimeError: the keys do not match (names up to 10 of each).
    """
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{path}: checkpoint does not match {type(model).__name__}: "
                           f"missing keys {list(missing)[:10]} ({len(missing)}), "
                           f"unexpected keys {list(unexpected)[:10]} ({len(unexpected)})")


def build_maskrcnn(weights_path: str, min_size: int = 800):
    """torchvision ``maskrcnn_resnet50_fpn`` with a LOCAL weights file, in eval mode.

    Raises:
        BackendUnavailableError: the file is missing (never downloads).
        RuntimeError: the checkpoint keys do not match.
    """
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    path = require_file(weights_path, "maskrcnn_weights", "Mask R-CNN (maskrcnn_resnet50_fpn COCO) weights")
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=min_size)
    load_state_dict_strict(model, path)
    return model.eval()


def person_mask(model, image_rgb: np.ndarray, device, score_threshold: float = 0.5) -> np.ndarray | None:
    """Run Mask R-CNN on one image and return the selected person's soft mask ``[H, W]`` in [0, 1]
    (image resolution), or ``None`` when no person passes ``score_threshold``."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float().div(255).to(device)  # [3, H, W]
    with torch.no_grad():
        out = model([x])[0]
    idx = select_person(out["boxes"].cpu().numpy(), out["labels"].cpu().numpy(), out["scores"].cpu().numpy(),
                        image_rgb.shape[:2], score_threshold)
    if idx is None:
        return None
    return out["masks"][idx, 0].cpu().numpy().astype(np.float32)  # [H, W]
