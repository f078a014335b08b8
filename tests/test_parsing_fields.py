"""BPBreID-style PifPaf field grouping and Mask R-CNN person selection, on synthetic inputs."""
from __future__ import annotations

import numpy as np
import pytest

from ogfr_core.parsing.fields import (NUM_FIELDS, PART_GROUPS, PIFPAF_CHANNELS, fields_to_label_map,
                                      group_fields)
from ogfr_core.parsing.maskrcnn import nearest_centre_index, select_person
from ogfr_core.parsing.pifpaf_backend import pose_nearest_centre

CH = {n: i for i, n in enumerate(PIFPAF_CHANNELS)}


def test_channel_layout_and_groups_cover_all_fields():
    assert NUM_FIELDS == 36 and PIFPAF_CHANNELS[:2] == ("nose", "left_eye")
    assert PIFPAF_CHANNELS[17] == "left_ankle_to_left_knee"
    used = {c for group in PART_GROUPS.values() for c in group}
    assert used == set(PIFPAF_CHANNELS)


def test_grouping_threshold_and_argmax():
    f = np.zeros((36, 8, 8), np.float32)
    f[CH["left_elbow"], 0, 0] = 0.9                      # -> left arm (2)
    f[CH["left_ankle_to_left_knee"], 0, 1] = 0.8         # -> left leg (5)
    f[CH["nose"], 0, 2] = 0.4                            # below 0.5 -> background
    f[CH["left_shoulder_to_left_hip"], 0, 3] = 0.7       # torso 0.7 beats right arm 0.6 -> 4
    f[CH["right_wrist"], 0, 3] = 0.6
    f[CH["right_ankle"], 0, 4] = 0.5                     # == threshold -> right foot (8)
    f[CH["left_ear_to_left_shoulder"], 0, 5] = 0.95      # head group (BPBreID) -> 1
    parts = group_fields(f)
    assert parts.shape == (8, 8, 8)
    assert parts[3, 0, 3] == pytest.approx(0.7) and parts[2, 0, 3] == pytest.approx(0.6)
    label = fields_to_label_map(f, None, 0.5)
    assert label.dtype == np.uint8
    assert label[0, :6].tolist() == [2, 5, 0, 4, 8, 1]
    assert label[1:].max() == 0


def test_person_mask_filters_fields():
    f = np.zeros((36, 4, 4), np.float32)
    f[CH["left_knee"]] = 0.9
    mask = np.zeros((4, 4), np.float32)
    mask[:2] = 1.0
    mask[2] = 0.5          # 0.9 * 0.5 = 0.45 < 0.5 -> background
    label = fields_to_label_map(f, mask, 0.5)
    assert (label[:2] == 5).all() and label[2:].max() == 0
    with pytest.raises(ValueError, match="person_mask"):
        fields_to_label_map(f, np.ones((3, 3)), 0.5)
    with pytest.raises(ValueError, match="36"):
        group_fields(np.zeros((17, 4, 4)))


def test_person_nearest_the_centre_is_selected():
    boxes = np.array([[0, 0, 20, 40], [20, 30, 44, 100], [30, 56, 34, 72], [22, 32, 42, 94]], np.float32)
    labels = np.array([1, 1, 3, 1])      # box 2 is a car, even though it is the most central
    scores = np.array([0.9, 0.8, 0.99, 0.3])  # box 3 is central but below the score threshold
    assert nearest_centre_index(boxes, (128, 64)) == 2
    assert select_person(boxes, labels, scores, (128, 64), 0.5) == 1
    assert select_person(boxes[:0], labels[:0], scores[:0], (128, 64)) is None
    assert select_person(boxes, np.array([3, 3, 3, 3]), scores, (128, 64)) is None


def test_pose_nearest_centre_scaled_to_label_map():
    far = np.zeros((17, 3), np.float32); far[:, :2] = (5, 5); far[:, 2] = 1
    centred = np.zeros((17, 3), np.float32); centred[:, :2] = (32, 64); centred[:, 2] = 0.7
    out = pose_nearest_centre(np.stack([far, centred]), (128, 64), (256, 128))
    np.testing.assert_allclose(out[0], [64, 128, 0.7])
    assert pose_nearest_centre(np.zeros((0, 17, 3)), (128, 64), (256, 128)).sum() == 0
