"""``torchvision`` backend: Keypoint R-CNN keypoints → parts (same drawing as ``mediapipe``),
gated by the Mask R-CNN person mask; both models from LOCAL weights files (GPU-friendly route).

Keypoint confidence = sigmoid of torchvision's ``keypoints_scores`` (raw heatmap logits), so
``min_keypoint_visibility = 0.5`` means a positive logit. The detection parsed is the person whose
box centre is nearest the image centre (as for Mask R-CNN, OGFR §III-A1 / BPBreID). COCO keypoints
have no heels/foot tips, so feet are drawn by continuing the shins
(:func:`ogfr_core.parsing.parts.draw_parts`).
"""
from __future__ import annotations

from importlib import metadata

import numpy as np

from ..config import ParseConfig
from .base import ParseResult, PartParser, check_image
from .keypoints import coco17_to_body21
from .maskrcnn import (build_maskrcnn, load_state_dict_strict, person_mask, require_file, select_person,
                       weights_tag)
from .parts import AMODAL_VISIBILITY, draw_parts


def keypoints_to_result(keypoints17: np.ndarray, mask: np.ndarray | None, image_hw: tuple[int, int],
                        cfg: ParseConfig) -> ParseResult:
    """COCO-17 keypoints in image pixels (+ optional person mask at image size) → :class:`ParseResult`.

    Args:
        keypoints17: float ``[17, 3]`` ``(x, y, confidence in [0, 1])``, image pixels.
        mask: ``[H, W]`` person probability/bool at image resolution, or ``None`` (no gating).
        image_hw: ``(H, W)`` of the image.
        cfg: label size, ``min_keypoint_visibility``, ``limb_width_ratio``, ``mask_threshold``.
    """
    from PIL import Image

    lh, lw = cfg.label_height, cfg.label_width
    pts = np.asarray(keypoints17, np.float32).copy()
    pts[:, 0] *= lw / image_hw[1]
    pts[:, 1] *= lh / image_hw[0]
    gate = None
    if mask is not None:
        m = Image.fromarray(np.ascontiguousarray(mask, np.float32), mode="F").resize((lw, lh), Image.BILINEAR)
        gate = np.asarray(m) >= cfg.mask_threshold  # [lh, lw]
    body = coco17_to_body21(pts)
    label = draw_parts(body, (lh, lw), cfg.limb_width_ratio * lh, cfg.min_keypoint_visibility, gate)
    amodal = draw_parts(body, (lh, lw), cfg.limb_width_ratio * lh, AMODAL_VISIBILITY)  # all 17 keypoints, no mask
    return ParseResult(label, pts, True, amodal)


class TorchvisionParser(PartParser):
    """Keypoint R-CNN + Mask R-CNN (torchvision) parser.

    Args:
        cfg: ``parse:`` params; ``weights`` = local ``keypointrcnn_resnet50_fpn`` COCO state dict,
            ``maskrcnn_weights`` = local ``maskrcnn_resnet50_fpn`` COCO state dict; ``device``.
        keypoint_model, mask_model: already built models (tests pass randomly initialised ones);
            when given, the weights params are not read.
        score_threshold: minimum person box score.

    Raises:
        BackendUnavailableError: on the first :meth:`parse` when a weights file is missing.
        RuntimeError: a checkpoint whose keys do not match (missing/unexpected keys listed).
    """

    def __init__(self, cfg: ParseConfig, keypoint_model=None, mask_model=None, score_threshold: float = 0.5):
        self.cfg = cfg
        self.label_hw = (cfg.label_height, cfg.label_width)
        self.score_threshold = score_threshold
        tag = "injected" if keypoint_model is not None else f"{weights_tag(cfg.weights)}+{weights_tag(cfg.maskrcnn_weights)}"
        self.model_id = f"torchvision-{metadata.version('torchvision')}/keypointrcnn+maskrcnn:{tag}"
        self._kp, self._mask = keypoint_model, mask_model
        self._device = None

    def _load(self):
        from ..runtime import resolve_device

        if self._device is None:
            self._device = resolve_device(self.cfg.device)
            if self._kp is None:
                from torchvision.models.detection import keypointrcnn_resnet50_fpn

                path = require_file(self.cfg.weights, "weights", "Keypoint R-CNN (keypointrcnn_resnet50_fpn COCO) weights")
                self._kp = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)
                load_state_dict_strict(self._kp, path)
            if self._mask is None:
                self._mask = build_maskrcnn(self.cfg.maskrcnn_weights)
            self._kp = self._kp.eval().to(self._device)
            self._mask = self._mask.eval().to(self._device)
        return self._kp, self._mask, self._device

    def parse(self, image_rgb: np.ndarray) -> ParseResult:
        """See :meth:`PartParser.parse`."""
        import torch

        check_image(image_rgb)
        kp_model, mask_model, device = self._load()
        hw = image_rgb.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float().div(255).to(device)  # [3, H, W]
        with torch.no_grad():
            out = kp_model([x])[0]
        idx = select_person(out["boxes"].cpu().numpy(), out["labels"].cpu().numpy(), out["scores"].cpu().numpy(),
                            hw, self.score_threshold)
        if idx is None:
            return ParseResult.empty(self.label_hw)
        kps = out["keypoints"][idx].cpu().numpy().astype(np.float32)  # [17, 3] (x, y, visible flag)
        kps[:, 2] = torch.sigmoid(out["keypoints_scores"][idx]).cpu().numpy()  # [17] logits -> [0, 1]
        mask = person_mask(mask_model, image_rgb, device, self.score_threshold)  # [H, W] or None
        if mask is None:  # the keypoint detector saw a person but Mask R-CNN did not: no gating.
            mask = np.ones(hw, np.float32)
        return keypoints_to_result(kps, mask, hw, self.cfg)
