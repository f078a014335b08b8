"""The part-parser interface: one image in, a 9-class label map + COCO-17 keypoints out.

Every backend (BlazePose, PifPaf + Mask R-CNN, torchvision Keypoint R-CNN) implements
:class:`PartParser`; the driver and the cache only see :class:`ParseResult`. Part ids follow
``ogfr_core.PART_NAMES`` (0 background, 1 head, 2/3 left/right arm, 4 torso, 5/6 left/right leg,
7/8 left/right foot), "left" being the person's anatomical left (OGFR §III-A1, K = 8).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from .. import PART_NAMES
from ..errors import UserError

NUM_CLASSES = len(PART_NAMES)  # K + 1 = 9
NUM_COCO_KEYPOINTS = 17


class BackendUnavailableError(UserError, RuntimeError):
    """An optional parsing backend cannot run: a package or a local weights file is missing.

    The message names what to install (``pip install ...``) or which file to provide.
    """


@dataclass(frozen=True)
class ParseResult:
    """Output of one :meth:`PartParser.parse` call.

    Attributes:
        label_map: uint8 ``[label_h, label_w]`` with part ids 0..8 (0 = background).
        keypoints: float32 ``[17, 3]`` COCO-17 ``(x, y, confidence)``; x, y in label-map pixels,
            confidence in [0, 1] (0 for keypoints the backend did not find).
        person_found: False when no person was detected; then ``label_map`` is all background and
            every keypoint confidence is 0.
        amodal_map: uint8 ``[label_h, label_w]`` or None — the *amodal* part map: the same parts drawn
            from every predicted keypoint whatever its confidence and without the person mask, i.e.
            where the parser expects each part to be, seen or not (BlazePose predicts the whole
            skeleton). ``label_map`` is its visible subset. None for backends that cannot tell
            (PifPaf fields); the ``hidden_fraction`` occlusion rule needs it.
    """

    label_map: np.ndarray
    keypoints: np.ndarray
    person_found: bool
    amodal_map: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.label_map.dtype != np.uint8 or self.label_map.ndim != 2:
            raise ValueError(f"label_map must be uint8 [H, W], got {self.label_map.dtype} {self.label_map.shape}")
        if self.keypoints.shape != (NUM_COCO_KEYPOINTS, 3):
            raise ValueError(f"keypoints must be [17, 3], got {self.keypoints.shape}")
        if self.label_map.size and int(self.label_map.max()) >= NUM_CLASSES:
            raise ValueError(f"label_map ids must be in 0..{NUM_CLASSES - 1}")
        if self.amodal_map is not None and (self.amodal_map.dtype != np.uint8
                                            or self.amodal_map.shape != self.label_map.shape):
            raise ValueError(f"amodal_map must be uint8 {self.label_map.shape}, got "
                             f"{self.amodal_map.dtype} {self.amodal_map.shape}")

    @classmethod
    def empty(cls, label_hw: tuple[int, int]) -> "ParseResult":
        """No person: all-background ``[label_h, label_w]`` maps (visible and amodal), zero keypoints."""
        return cls(np.zeros(label_hw, np.uint8), np.zeros((NUM_COCO_KEYPOINTS, 3), np.float32), False,
                   np.zeros(label_hw, np.uint8))


class PartParser(abc.ABC):
    """A human-parsing backend (registry: :data:`ogfr_core.parsing.registry.BACKENDS`).

    Subclasses are constructed from a :class:`ogfr_core.config.ParseConfig` and must be cheap to
    construct (heavy models load lazily on the first :meth:`parse`), so the driver can compute the
    cache id without loading a model.

    Attributes:
        model_id: names the model and its version/weights (part of the cache key), e.g.
            ``"mediapipe-0.10.21/pose_landmark_full"``.
    """

    model_id: str

    @abc.abstractmethod
    def parse(self, image_rgb: np.ndarray) -> ParseResult:
        """Parse one crop.

        Args:
            image_rgb: uint8 ``[H, W, 3]`` RGB image (any size; the result is at the configured
                label-map size).

        Returns:
            A :class:`ParseResult`; ``person_found=False`` with an all-background map when no
            person is detected (never raises for that).

        Raises:
            BackendUnavailableError: the backend's package or weights file is missing.
        """

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release native resources (graphs, sessions)."""


def check_image(image_rgb: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image_rgb`` is a non-empty uint8 ``[H, W, 3]`` array."""
    if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 \
            or image_rgb.shape[2] != 3 or image_rgb.shape[0] == 0 or image_rgb.shape[1] == 0:
        shape = getattr(image_rgb, "shape", None)
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {type(image_rgb).__name__} {shape}")
