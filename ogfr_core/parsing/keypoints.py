"""Keypoint schemas and the mappings between them.

* COCO-17 — the keypoint format stored in the cache (PifPaf and Keypoint R-CNN predict it).
* BODY-21 — COCO-17 plus heels and foot tips: the input of :func:`ogfr_core.parsing.parts.draw_parts`.
  COCO-only backends leave the four extra points at confidence 0.
* BlazePose-33 — MediaPipe Pose landmarks (``mp.solutions.pose.PoseLandmark`` order).

"left"/"right" always mean the person's anatomical side, as COCO and BlazePose define them: for a
person facing the camera the left shoulder appears on the image's right.
"""
from __future__ import annotations

import numpy as np

COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
BODY21_NAMES: tuple[str, ...] = COCO17_NAMES + (
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
BODY = {name: i for i, name in enumerate(BODY21_NAMES)}

# mp.solutions.pose.PoseLandmark order (MediaPipe 0.10).
BLAZEPOSE33_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
# BODY-21 point i is BlazePose landmark BLAZEPOSE_TO_BODY21[i].
BLAZEPOSE_TO_BODY21 = np.array([BLAZEPOSE33_NAMES.index(n) for n in BODY21_NAMES], dtype=np.int64)


def _swap_permutation(names: tuple[str, ...]) -> np.ndarray:
    """Index permutation that exchanges every ``left*``/``right*`` pair (``mouth_left`` ↔ ``mouth_right`` too)."""
    idx = {n: i for i, n in enumerate(names)}
    perm = []
    for n in names:
        if "left" in n:
            perm.append(idx[n.replace("left", "right")])
        elif "right" in n:
            perm.append(idx[n.replace("right", "left")])
        else:
            perm.append(idx[n])
    return np.array(perm, dtype=np.int64)


BLAZEPOSE33_SWAP = _swap_permutation(BLAZEPOSE33_NAMES)
COCO17_SWAP = _swap_permutation(COCO17_NAMES)


def blazepose_to_body21(points33: np.ndarray) -> np.ndarray:
    """``[33, 3]`` BlazePose ``(x, y, visibility)`` → ``[21, 3]`` BODY-21 (same units)."""
    if points33.shape != (33, 3):
        raise ValueError(f"expected BlazePose points [33, 3], got {points33.shape}")
    return points33[BLAZEPOSE_TO_BODY21].astype(np.float32)


def coco17_to_body21(points17: np.ndarray) -> np.ndarray:
    """``[17, 3]`` COCO ``(x, y, conf)`` → ``[21, 3]`` BODY-21 with heels/foot tips at confidence 0."""
    if points17.shape != (17, 3):
        raise ValueError(f"expected COCO-17 points [17, 3], got {points17.shape}")
    out = np.zeros((len(BODY21_NAMES), 3), np.float32)
    out[:17] = points17
    return out


def body21_to_coco17(points21: np.ndarray) -> np.ndarray:
    """``[21, 3]`` BODY-21 → ``[17, 3]`` COCO-17 (drops heels and foot tips)."""
    return np.ascontiguousarray(points21[:17], dtype=np.float32)
