"""``mediapipe`` backend: BlazePose (MediaPipe Pose, 33 landmarks + person segmentation), offline CPU.

The shared crops are tight (the person touches the left/right borders), where BlazePose's person
detector fails on about half of them. Padding the crop horizontally by ~its width on each side
(edge-replicated pixels) and retrying a cascade of paddings, then the mirrored crop, finds a
person in ~97 % of them. The first attempt that finds a person wins; a mirrored result is mirrored
back and its left/right landmarks swapped, so "left" stays the person's anatomical left.

Landmarks → 9-class label map via :func:`ogfr_core.parsing.parts.draw_parts` (BlazePose
``visibility`` is the confidence), gated by the segmentation mask (≥ ``mask_threshold``). The amodal
map draws the same parts from all 33 landmarks (BlazePose predicts the whole skeleton, including
the parts it cannot see) without the mask: where each part should be. The ``hidden_fraction``
occlusion rule compares the two (:mod:`ogfr_core.occlusion`).
Source: MediaPipe Pose legacy solution API (``mp.solutions.pose.Pose``, static_image_mode=True,
model_complexity=1 = ``pose_landmark_full``, enable_segmentation=True), mediapipe 0.10.21.

Logs: mediapipe's graph start and first calls print a block of absl/TFLite INFO and WARNING lines
per process (``inference_feedback_manager``, ``landmark_projection_calculator``, the XNNPACK
delegate). No environment variable or API of this build controls them, so the graph's construction
and every ``process`` call run under :func:`.native_logs.native_stderr_filtered`, which drops
exactly those lines (``OGFR_NATIVE_LOGS=1`` shows them).
"""
from __future__ import annotations

from importlib import metadata

import numpy as np
from PIL import Image

from ..config import ParseConfig
from .base import BackendUnavailableError, ParseResult, PartParser, check_image
from .keypoints import BLAZEPOSE33_SWAP, blazepose_to_body21, body21_to_coco17
from .native_logs import native_stderr_filtered
from .parts import AMODAL_VISIBILITY, draw_parts

MODEL_COMPLEXITY = 1
_COMPLEXITY_NAMES = ("lite", "full", "heavy")


def _mediapipe_version() -> str:
    try:
        return metadata.version("mediapipe")
    except metadata.PackageNotFoundError:
        return "missing"


def pad_attempts(pad_ratios: tuple[float, ...], mirror_retry: bool) -> list[tuple[float, bool]]:
    """The retry cascade: ``(pad ratio, mirrored)`` pairs, all unmirrored ratios first."""
    attempts = [(float(r), False) for r in pad_ratios]
    if mirror_retry:
        attempts += [(float(r), True) for r in pad_ratios]
    return attempts


def unmirror_landmarks(points: np.ndarray) -> np.ndarray:
    """Landmarks predicted on a horizontally flipped image → the original image.

    Args:
        points: float ``[33, 3]`` ``(x, y, visibility)`` with x normalised to [0, 1] across the
            flipped image's width.

    Returns:
        ``[33, 3]``: x → 1 − x and every left/right landmark pair exchanged (the flipped image's
        "left shoulder" is the person's right shoulder).
    """
    out = points.copy()
    out[:, 0] = 1.0 - out[:, 0]
    return out[BLAZEPOSE33_SWAP]


class MediaPipeParser(PartParser):
    """BlazePose parts parser (default backend). See the module docstring.

    Args:
        cfg: ``parse:`` params (label size, ``pad_ratios``, ``pad_mode``, ``mirror_retry``,
            ``min_keypoint_visibility``, ``limb_width_ratio``, ``mask_threshold``).

    Raises:
        BackendUnavailableError: on the first :meth:`parse` if mediapipe is not installed.
    """

    def __init__(self, cfg: ParseConfig):
        self.cfg = cfg
        self.label_hw = (cfg.label_height, cfg.label_width)
        self.attempts = pad_attempts(cfg.pad_ratios, cfg.mirror_retry)
        if not self.attempts:
            raise ValueError("parse.pad_ratios must list at least one padding ratio (0 = no padding)")
        self.model_id = f"mediapipe-{_mediapipe_version()}/pose_landmark_{_COMPLEXITY_NAMES[MODEL_COMPLEXITY]}"
        self._pose = None

    def _model(self):
        if self._pose is None:
            try:
                import mediapipe as mp
            except ImportError as err:
                raise BackendUnavailableError(
                    "parse.backend=mediapipe needs the mediapipe package: pip install mediapipe==0.10.21 "
                    "(needs numpy<2)") from err
            with native_stderr_filtered():
                self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=MODEL_COMPLEXITY,
                                                    enable_segmentation=True)
        return self._pose

    def parse(self, image_rgb: np.ndarray) -> ParseResult:
        """Parse one crop (see :meth:`PartParser.parse`); tries the padding cascade in order."""
        check_image(image_rgb)
        pose = self._model()
        h, w = image_rgb.shape[:2]
        mode = self.cfg.pad_mode
        for ratio, mirrored in self.attempts:
            p = int(round(ratio * w))
            padded = np.pad(image_rgb, ((0, 0), (p, p), (0, 0)), mode=mode) if p else image_rgb  # [h, w+2p, 3]
            if mirrored:
                padded = padded[:, ::-1]
            with native_stderr_filtered():
                res = pose.process(np.ascontiguousarray(padded))
            if res.pose_landmarks is None:
                continue
            lm = np.array([[q.x, q.y, q.visibility] for q in res.pose_landmarks.landmark], np.float32)  # [33, 3]
            seg = np.asarray(res.segmentation_mask, np.float32)  # [h, w+2p], person probability
            if mirrored:
                lm = unmirror_landmarks(lm)
                seg = seg[:, ::-1]
            return self._to_result(lm, seg[:, p:p + w], pad_px=p, crop_hw=(h, w))
        return ParseResult.empty(self.label_hw)

    def _to_result(self, lm: np.ndarray, seg: np.ndarray, pad_px: int, crop_hw: tuple[int, int]) -> ParseResult:
        """Normalised padded-image landmarks + crop-aligned mask → label-map pixels and parts."""
        h, w = crop_hw
        lh, lw = self.label_hw
        pts = lm.copy()
        pts[:, 0] = (lm[:, 0] * (w + 2 * pad_px) - pad_px) * (lw / w)  # label-map x, pixels
        pts[:, 1] = lm[:, 1] * h * (lh / h)  # label-map y, pixels
        mask_img = Image.fromarray(np.ascontiguousarray(seg, np.float32), mode="F")
        mask = np.asarray(mask_img.resize((lw, lh), Image.BILINEAR)) >= self.cfg.mask_threshold  # [lh, lw]
        body = blazepose_to_body21(pts)
        width = self.cfg.limb_width_ratio * lh
        label = draw_parts(body, self.label_hw, width, self.cfg.min_keypoint_visibility, person_mask=mask)
        amodal = draw_parts(body, self.label_hw, width, AMODAL_VISIBILITY)  # every landmark, no mask
        return ParseResult(label, body21_to_coco17(body), True, amodal)

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None
