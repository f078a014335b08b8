"""The z error-sources probe (issue 21, ``benchmarks/probe_z_error_sources.py``): its mask cache, the
check against ``z_accuracy.json`` and the parse diagnostics, on hand-made masks and maps."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.probe_z_error_sources import (COMBOS, cached_masks, cached_parts, check_against, mask_scores,
                                             parse_diagnostics)
from ogfr_core.occlusion import COARSE_NAMES, OcclusionRule
from ogfr_core.occlusion.table import occlusion_table
from ogfr_core.occlusion.truth import truth_row

from tests.test_occlusion import parsing_rows
from tests.test_occlusion_rule import body


def test_cached_masks_round_trip_and_no_recompute(tmp_path):
    masks = {"a": np.eye(3, 5, dtype=bool), "b": np.zeros((3, 5), bool)}
    calls = []
    first = cached_masks(tmp_path, "t", lambda: calls.append(1) or masks)
    again = cached_masks(tmp_path, "t", lambda: calls.append(1) or {})
    assert calls == [1] and set(again) == {"a", "b"}
    assert all(again[k].dtype == bool and (again[k] == masks[k]).all() for k in masks) and first is masks
    assert cached_masks(None, "t", lambda: masks) is masks


def test_cached_parts_round_trip_keeps_the_fine_ids(tmp_path):
    maps = {"a": np.array([[0, 1, 2], [4, 5, 0]], np.uint8), "b": np.full((2, 3), 5, np.uint8)}
    calls = []
    cached_parts(tmp_path, "p", lambda: calls.append(1) or maps)
    again = cached_parts(tmp_path, "p", lambda: calls.append(1) or {})
    assert calls == [1] and set(again) == {"a", "b"}
    assert all(again[k].dtype == np.uint8 and (again[k] == maps[k]).all() for k in maps)
    assert cached_parts(None, "p", lambda: maps) is maps


def _report(f1: float) -> dict:
    parts = {c: {"f1": f1} for c in COARSE_NAMES}
    return {"parts": parts, "by_kind": {"object": parts, "person": {c: {"f1": math.nan} for c in COARSE_NAMES}},
            "holistic_false_positive_rate": {"any": 0.02}}


def test_check_against_matches_the_rule_in_force_only():
    rule = OcclusionRule("covered", 5.0, 0.5)
    acc = {"sets": {"test": {"rules": [{"rule": "pixels", "tau": None, **_report(0.1)},
                                       {"rule": "covered", "tau": 0.5, **_report(0.6)}]}}}
    assert check_against({"combinations": {COMBOS[0]: _report(0.6)}}, acc, "test", rule)["matches"]
    miss = check_against({"combinations": {COMBOS[0]: _report(0.7)}}, acc, "test", rule)
    assert not miss["matches"] and miss["max_abs_diff"] == 0.1


def test_parse_diagnostics_hand_values():
    hol = body()  # head rows 0-31 (cols 32-95), arms+torso 32-127, legs 128-255
    occ = hol.copy()
    occ[192:, :] = 0  # the occluded parse drops the lower half of the legs ...
    occ[160:192, :] = 0
    true = np.zeros(hol.shape, bool)
    true[128:, :] = True  # ... under an occluder covering all the legs
    truth = pd.DataFrame([{"key": "q", "source_key": "h", "kind": "object",
                           **truth_row(hol, None, true)}])
    table = occlusion_table(parsing_rows({"q": occ}), OcclusionRule("covered", 5.0, 0.5), {"q": true})
    d = parse_diagnostics(truth, table, parsing_rows({"q": occ}), {"q": hol > 0}, {"q": true})["object"]
    assert d["covered_share_true"] == {"head": 0.0, "arms": 0.0, "torso": 0.0, "legs": 1.0}
    assert d["covered_share_on_occluded_parse"]["legs"] == 1.0  # rows 128-159 left, all under the occluder
    assert d["visible_pixels_vs_holistic"]["legs"] == 0.25 and d["visible_pixels_vs_holistic"]["head"] == 1.0
    under = d["body_under_occluder"]  # 128 x 128 occluder: holistic body everywhere, occluded parse 32 rows
    assert under["pred_share"] == 0.25 and under["true_share"] == 1.0 and under["precision"] == 1.0
    assert d["body_outside_occluder"]["iou"] == 1.0


def test_mask_scores_hand_values():
    p1 = np.array([[1, 1], [0, 0]], bool)
    t1 = np.array([[0, 1], [1, 0]], bool)
    p2 = np.zeros((2, 2), bool)
    t2 = np.array([[1, 0], [0, 0]], bool)
    s = mask_scores([p1, p2], [t1, t2])  # pooled: tp 1, fp 1, fn 2 over 8 pixels
    assert s == {"iou": 0.25, "precision": 0.5, "recall": 0.3333, "pred_share": 0.25, "true_share": 0.375,
                 "pixels": 8}
    body = [np.array([[0, 1], [1, 1]], bool), np.array([[0, 1], [1, 1]], bool)]  # drops (0, 0) of each
    s = mask_scores([p1, p2], [t1, t2], within=body)  # tp 1, fp 0, fn 1 over 6 pixels
    assert s == {"iou": 0.5, "precision": 1.0, "recall": 0.5, "pred_share": 0.1667, "true_share": 0.3333,
                 "pixels": 6}
    empty = mask_scores([p2], [p2])
    assert np.isnan(empty["iou"]) and np.isnan(empty["precision"]) and empty["pred_share"] == 0.0
