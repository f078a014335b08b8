"""Keypoints -> parts on synthetic poses: layout, left/right, occluded keypoints, mirror handling."""
from __future__ import annotations

import numpy as np
import pytest

from ogfr_core import PART_NAMES
from ogfr_core.parsing.keypoints import (BLAZEPOSE33_NAMES, BLAZEPOSE33_SWAP, BODY, BODY21_NAMES,
                                         blazepose_to_body21, body21_to_coco17, coco17_to_body21)
from ogfr_core.parsing.mediapipe_backend import pad_attempts, unmirror_landmarks
from ogfr_core.parsing.parts import draw_parts

HW = (256, 128)
ID = {n: i for i, n in enumerate(PART_NAMES)}

# A person facing the camera in a 256x128 label map: their LEFT side is on the image's RIGHT (x > 64).
FRONT_POSE = {
    "nose": (64, 30), "left_eye": (69, 25), "right_eye": (59, 25), "left_ear": (75, 28), "right_ear": (53, 28),
    "left_shoulder": (88, 62), "right_shoulder": (40, 62), "left_elbow": (98, 100), "right_elbow": (30, 100),
    "left_wrist": (102, 136), "right_wrist": (26, 136), "left_hip": (76, 140), "right_hip": (52, 140),
    "left_knee": (80, 190), "right_knee": (48, 190), "left_ankle": (82, 232), "right_ankle": (46, 232),
    "left_heel": (80, 242), "right_heel": (48, 242), "left_foot_index": (92, 248), "right_foot_index": (36, 248),
}


def front_pose(vis: float = 0.9, **overrides: float) -> np.ndarray:
    pts = np.zeros((21, 3), np.float32)
    for name, (x, y) in FRONT_POSE.items():
        pts[BODY[name]] = (x, y, vis)
    for name, v in overrides.items():
        pts[BODY[name], 2] = v
    return pts


def centroid(label: np.ndarray, part: str) -> tuple[float, float]:
    ys, xs = np.nonzero(label == ID[part])
    assert len(xs), f"no {part} pixels"
    return float(xs.mean()), float(ys.mean())


def test_front_pose_layout_and_sides():
    label = draw_parts(front_pose(), HW, limb_width=24, min_visibility=0.5)
    assert label.shape == HW and label.dtype == np.uint8
    assert set(np.unique(label)) == set(range(9))  # every part drawn
    # head above torso above legs above feet
    assert centroid(label, "head")[1] < centroid(label, "torso")[1] < centroid(label, "left_leg")[1] \
        < centroid(label, "left_foot")[1]
    # anatomical left on the image's right for a front-facing person; not swapped
    assert centroid(label, "left_arm")[0] > 64 > centroid(label, "right_arm")[0]
    assert centroid(label, "left_leg")[0] > centroid(label, "right_leg")[0]
    assert centroid(label, "left_foot")[0] > centroid(label, "right_foot")[0]


def test_low_visibility_keypoint_drops_its_part():
    base = draw_parts(front_pose(), HW, 24, 0.5)
    no_elbow = draw_parts(front_pose(left_elbow=0.2), HW, 24, 0.5)
    assert (base == ID["left_arm"]).sum() > 0 and (no_elbow == ID["left_arm"]).sum() == 0
    assert (no_elbow == ID["right_arm"]).sum() == (base == ID["right_arm"]).sum()
    faceless = draw_parts(front_pose(nose=0.1, left_eye=0.1, right_eye=0.1, left_ear=0.1, right_ear=0.1), HW, 24, 0.5)
    assert (faceless == ID["head"]).sum() == 0
    no_knee = draw_parts(front_pose(left_knee=0.3), HW, 24, 0.5)
    assert (no_knee == ID["left_leg"]).sum() == 0 and (no_knee == ID["left_foot"]).sum() > 0
    nothing = draw_parts(front_pose(vis=0.4), HW, 24, 0.5)
    assert nothing.max() == 0


def test_torso_from_three_corners_and_mask_gate():
    three = draw_parts(front_pose(left_hip=0.0), HW, 24, 0.5)
    assert (three == ID["torso"]).sum() > 500
    mask = np.zeros(HW, bool)
    mask[:, :64] = True  # only the image's left half belongs to the person
    gated = draw_parts(front_pose(), HW, 24, 0.5, person_mask=mask)
    assert gated[:, 64:].max() == 0
    assert (gated == ID["right_arm"]).sum() > 0 and (gated == ID["left_arm"]).sum() == 0
    with pytest.raises(ValueError, match="person_mask"):
        draw_parts(front_pose(), HW, 24, 0.5, person_mask=np.ones((10, 10), bool))


def test_visibility_zero_draws_every_landmark_and_the_mask_alone_gates():
    """parse.min_keypoint_visibility: 0 (the default since issue 21): a leg whose landmarks score 0.01
    is drawn like a confident one, and only the person mask removes pixels (here the legs' lower half)."""
    low = front_pose(left_knee=0.01, left_ankle=0.01, left_heel=0.01, left_foot_index=0.01)
    assert np.array_equal(draw_parts(low, HW, 24, 0.0), draw_parts(front_pose(), HW, 24, 0.0))
    assert (draw_parts(low, HW, 24, 0.5) == ID["left_leg"]).sum() == 0
    mask = np.ones(HW, bool)
    mask[200:] = False  # an occluder over the shins and feet, outside the person mask
    gated = draw_parts(low, HW, 24, 0.0, person_mask=mask)
    assert gated[200:].max() == 0 and (gated == ID["left_leg"]).sum() > 0
    assert (gated == ID["left_foot"]).sum() == 0


def test_coco_only_keypoints_give_feet_below_ankles():
    coco = body21_to_coco17(front_pose())
    label = draw_parts(coco17_to_body21(coco), HW, 24, 0.5)
    fx, fy = centroid(label, "left_foot")
    assert fy > FRONT_POSE["left_ankle"][1] - 2
    assert centroid(label, "right_foot")[0] < fx


def test_blazepose_mapping_and_swap():
    assert [BLAZEPOSE33_NAMES[i] for i in np.arange(33)[BLAZEPOSE33_SWAP][[11, 12, 0, 9]]] == \
        ["right_shoulder", "left_shoulder", "nose", "mouth_right"]
    pts33 = np.zeros((33, 3), np.float32)
    pts33[:, 0] = np.arange(33)
    body = blazepose_to_body21(pts33)
    assert [BLAZEPOSE33_NAMES[int(x)] for x in body[:, 0]] == list(BODY21_NAMES)


def test_unmirror_recovers_the_original_landmarks():
    rng = np.random.default_rng(1)
    original = rng.uniform(0, 1, size=(33, 3)).astype(np.float32)  # normalised x, y, visibility
    # What BlazePose reports on the mirrored crop: the person's left side becomes its right side.
    mirrored = original[BLAZEPOSE33_SWAP].copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    np.testing.assert_allclose(unmirror_landmarks(mirrored), original, atol=1e-6)


def test_pad_attempts_cascade_order():
    assert pad_attempts((1.0, 2.0), True) == [(1.0, False), (2.0, False), (1.0, True), (2.0, True)]
    assert pad_attempts((1.0,), False) == [(1.0, False)]
