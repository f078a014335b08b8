"""PifPaf confidence fields → 8-part label map, as BPBreID does (the paper's parsing labels).

PifPaf predicts 17 keypoint confidence maps (PIF/CIF, COCO-17 order) and 19 limb association maps
(PAF/CAF, the COCO skeleton order below). BPBreID ("eight" grouping) multiplies them by the person
mask, takes for each part the max over its channel group, and labels a pixel
``0 if max_k part_k < threshold else 1 + argmax_k part_k``. Part order here follows
``ogfr_core.PART_NAMES`` (head, left arm, right arm, torso, left leg, right leg, left foot, right
foot); the channel groups are BPBreID's ``CombinePifPafIntoEightBodyMasks``.
Source: BPBreID (Somers et al., WACV 2023), torchreid/data/masks_transforms/pifpaf_mask_transform.py.
"""
from __future__ import annotations

import numpy as np

from .. import PART_NAMES
from .keypoints import COCO17_NAMES

# PifPaf's 19 COCO limb fields, in its output channel order.
PIFPAF_LIMBS: tuple[str, ...] = (
    "left_ankle_to_left_knee", "left_knee_to_left_hip", "right_ankle_to_right_knee",
    "right_knee_to_right_hip", "left_hip_to_right_hip", "left_shoulder_to_left_hip",
    "right_shoulder_to_right_hip", "left_shoulder_to_right_shoulder", "left_shoulder_to_left_elbow",
    "right_shoulder_to_right_elbow", "left_elbow_to_left_wrist", "right_elbow_to_right_wrist",
    "left_eye_to_right_eye", "nose_to_left_eye", "nose_to_right_eye", "left_eye_to_left_ear",
    "right_eye_to_right_ear", "left_ear_to_left_shoulder", "right_ear_to_right_shoulder",
)
PIFPAF_CHANNELS: tuple[str, ...] = COCO17_NAMES + PIFPAF_LIMBS  # 36 = 17 + 19
NUM_FIELDS = len(PIFPAF_CHANNELS)

# part name -> channel names whose max gives that part's confidence (BPBreID's eight-part grouping).
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "head": ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_eye_to_right_eye",
             "nose_to_left_eye", "nose_to_right_eye", "left_eye_to_left_ear", "right_eye_to_right_ear",
             "left_ear_to_left_shoulder", "right_ear_to_right_shoulder"),
    "left_arm": ("left_shoulder", "left_elbow", "left_wrist", "left_shoulder_to_left_elbow",
                 "left_elbow_to_left_wrist"),
    "right_arm": ("right_shoulder", "right_elbow", "right_wrist", "right_shoulder_to_right_elbow",
                  "right_elbow_to_right_wrist"),
    "torso": ("left_hip", "right_hip", "left_hip_to_right_hip", "left_shoulder_to_left_hip",
              "right_shoulder_to_right_hip", "left_shoulder_to_right_shoulder"),
    "left_leg": ("left_knee", "left_ankle_to_left_knee", "left_knee_to_left_hip", "left_hip_to_right_hip"),
    "right_leg": ("right_knee", "right_ankle_to_right_knee", "right_knee_to_right_hip"),
    "left_foot": ("left_ankle",),
    "right_foot": ("right_ankle",),
}
assert tuple(PART_GROUPS) == PART_NAMES[1:]
_CHANNEL = {n: i for i, n in enumerate(PIFPAF_CHANNELS)}
PART_CHANNELS: tuple[tuple[int, ...], ...] = tuple(tuple(_CHANNEL[n] for n in g) for g in PART_GROUPS.values())


def group_fields(fields: np.ndarray) -> np.ndarray:
    """Max over each part's channel group.

    Args:
        fields: float ``[36, H, W]`` PifPaf confidences (17 keypoint + 19 limb maps, order
            :data:`PIFPAF_CHANNELS`), values in [0, 1].

    Returns:
        float32 ``[8, H, W]`` part confidences in ``ogfr_core.PART_NAMES[1:]`` order.

    Raises:
        ValueError: wrong number of channels or dimensions.
    """
    fields = np.asarray(fields, dtype=np.float32)
    if fields.ndim != 3 or fields.shape[0] != NUM_FIELDS:
        raise ValueError(f"fields must be [{NUM_FIELDS}, H, W] (17 PIF + 19 PAF maps), got {fields.shape}")
    return np.stack([fields[list(ch)].max(0) for ch in PART_CHANNELS])  # [8, H, W]


def fields_to_label_map(fields: np.ndarray, person_mask: np.ndarray | None, threshold: float = 0.5) -> np.ndarray:
    """PifPaf fields × person mask → 9-class label map (BPBreID rule).

    Args:
        fields: float ``[36, H, W]`` PifPaf confidence fields at the label-map resolution.
        person_mask: ``[H, W]`` person mask (bool or probability in [0, 1]) of the selected person,
            or ``None`` to keep every field value.
        threshold: ``label = 0`` where the max part confidence is below it (BPBreID: 0.5).

    Returns:
        uint8 ``[H, W]``: 0 where ``max_k part_k < threshold`` else ``1 + argmax_k part_k``.
    """
    parts = group_fields(fields)  # [8, H, W]
    if person_mask is not None:
        if person_mask.shape != parts.shape[1:]:
            raise ValueError(f"person_mask shape {person_mask.shape} != fields' {parts.shape[1:]}")
        parts = parts * np.asarray(person_mask, np.float32)[None]  # [8, H, W]
    best = parts.max(0)  # [H, W]
    label = (parts.argmax(0) + 1).astype(np.uint8)  # [H, W]
    label[best < threshold] = 0
    return label
