"""``pifpaf_maskrcnn`` backend — the paper's parsing labels (OGFR §III-A1, as BPBreID builds them).

PifPaf (openpifpaf) confidence fields, 17 keypoint + 19 limb maps, are multiplied by the Mask R-CNN
mask of the person whose box centre is nearest the image centre, grouped into the 8 parts and
thresholded (:func:`ogfr_core.parsing.fields.fields_to_label_map`). Keypoints: PifPaf's decoded
COCO-17 pose nearest the image centre.

Neither openpifpaf nor its weights can be installed on the reference machines (openpifpaf 0.13 pins
torch 1.13). The grouping/filtering logic is tested on synthetic fields; the openpifpaf adapter
(:meth:`PifPafMaskRCNNParser._pifpaf`) follows the openpifpaf 0.13 ``Predictor`` API
(``processor.fields_batch`` → CIF ``[17, 5, h, w]`` and CAF ``[19, 9, h, w]``, confidence in channel
1) and has NOT been run against a live install.
"""
from __future__ import annotations

from importlib import metadata

import numpy as np

from ..config import ParseConfig
from .base import BackendUnavailableError, ParseResult, PartParser, check_image
from .fields import NUM_FIELDS, fields_to_label_map
from .maskrcnn import build_maskrcnn, nearest_centre_index, person_mask, require_file, weights_tag

PIFPAF_INSTALL_HINT = ("parse.backend=pifpaf_maskrcnn needs openpifpaf, which is not installable next to "
                       "torch>=2: create an environment with torch 1.13 and run `pip install openpifpaf==0.13.11`, "
                       "or use parse.backend=mediapipe")


def _resize_stack(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[C, h, w]`` (or ``[h, w]``) float maps to ``hw`` (torch ``interpolate``)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    squeeze = t.ndim == 2
    t = t[None, None] if squeeze else t[None]  # [1, C, h, w]
    out = torch.nn.functional.interpolate(t, size=hw, mode="bilinear", align_corners=False)[0]  # [C, H, W]
    return (out[0] if squeeze else out).numpy()


class PifPafMaskRCNNParser(PartParser):
    """PifPaf fields × Mask R-CNN person mask → 8 parts (BPBreID rule, ``field_threshold``).

    Args:
        cfg: ``parse:`` params; ``weights`` = local openpifpaf checkpoint (e.g. shufflenetv2k16),
            ``maskrcnn_weights`` = local torchvision ``maskrcnn_resnet50_fpn`` COCO state dict.

    Raises:
        BackendUnavailableError: on the first :meth:`parse` when openpifpaf is not importable or a
            weights file is missing (the message names the package / the param and path).
    """

    def __init__(self, cfg: ParseConfig):
        self.cfg = cfg
        self.label_hw = (cfg.label_height, cfg.label_width)
        try:
            version = metadata.version("openpifpaf")
        except metadata.PackageNotFoundError:
            version = "missing"
        self.model_id = f"openpifpaf-{version}:{weights_tag(cfg.weights)}+maskrcnn:{weights_tag(cfg.maskrcnn_weights)}"
        self._models = None

    def _load(self):
        if self._models is None:
            try:
                import openpifpaf  # noqa: F401  (lazy: optional dependency)
            except ImportError as err:
                raise BackendUnavailableError(PIFPAF_INSTALL_HINT) from err
            from ..runtime import resolve_device

            ckpt = require_file(self.cfg.weights, "weights", "openpifpaf checkpoint")
            device = resolve_device(self.cfg.device)
            mask_model = build_maskrcnn(self.cfg.maskrcnn_weights).to(device)
            predictor = openpifpaf.Predictor(checkpoint=str(ckpt))
            self._models = (predictor, mask_model, device)
        return self._models

    def _pifpaf(self, predictor, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """openpifpaf 0.13 adapter: fields ``[36, H, W]`` at image size and the decoded poses
        ``[P, 17, 3]`` (image pixels). Unverified against a live install (see module doc)."""
        import torch
        from PIL import Image

        pil = Image.fromarray(image_rgb)
        processed, _, meta = predictor.preprocess(pil, [], {})
        batch = torch.unsqueeze(processed, 0)
        fields = predictor.processor.fields_batch(predictor.model, batch, device=predictor.device)[0]
        cif, caf = fields[0], fields[1]  # [17, 5, h, w], [19, 9, h, w]
        conf = np.concatenate([np.asarray(cif)[:, 1], np.asarray(caf)[:, 1]])  # [36, h, w]
        if conf.shape[0] != NUM_FIELDS:
            raise RuntimeError(f"openpifpaf returned {conf.shape[0]} confidence maps, expected {NUM_FIELDS}")
        preds = predictor.processor.annotations_batch(predictor.model, batch, device=predictor.device)[0]
        poses = np.stack([a.inverse_transform(meta).data for a in preds]) if preds else np.zeros((0, 17, 3))
        return _resize_stack(conf, image_rgb.shape[:2]), poses.astype(np.float32)

    def parse(self, image_rgb: np.ndarray) -> ParseResult:
        """See :meth:`PartParser.parse`."""
        check_image(image_rgb)
        predictor, mask_model, device = self._load()
        mask = person_mask(mask_model, image_rgb, device)  # [H, W] or None
        if mask is None:
            return ParseResult.empty(self.label_hw)
        fields, poses = self._pifpaf(predictor, image_rgb)  # [36, H, W], [P, 17, 3]
        label = fields_to_label_map(_resize_stack(fields, self.label_hw), _resize_stack(mask, self.label_hw),
                                    self.cfg.field_threshold)
        return ParseResult(label, pose_nearest_centre(poses, image_rgb.shape[:2], self.label_hw), True)


def pose_nearest_centre(poses: np.ndarray, image_hw: tuple[int, int], label_hw: tuple[int, int]) -> np.ndarray:
    """Of ``[P, 17, 3]`` poses (image pixels), the one whose keypoint box centre is nearest the image
    centre, rescaled to label-map pixels ``[17, 3]`` (zeros when ``P == 0``)."""
    out = np.zeros((17, 3), np.float32)
    if len(poses) == 0:
        return out
    boxes = []
    for pose in poses:
        seen = pose[pose[:, 2] > 0]
        if len(seen) == 0:
            seen = pose
        boxes.append([seen[:, 0].min(), seen[:, 1].min(), seen[:, 0].max(), seen[:, 1].max()])
    best = poses[nearest_centre_index(np.array(boxes), image_hw)]
    out[:] = best
    out[:, 0] *= label_hw[1] / image_hw[1]
    out[:, 1] *= label_hw[0] / image_hw[0]
    return out

