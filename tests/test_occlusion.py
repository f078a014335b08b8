"""Occlusion labels (Eq. 1-2) and the occlusion stage's table/figure, on hand-made label maps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ogfr_core.occlusion import OcclusionRule, coarse_counts, occlusion_labels, occlusion_type, type_to_z
from ogfr_core.occlusion.figures import plot_type_histogram
from ogfr_core.occlusion.table import (occlusion_summary, occlusion_table, type_counts_by_split,
                                       type_label)
from ogfr_core.parsing.cache import encode_label_map

LAM = 5.0


def hand_map() -> np.ndarray:
    """head 100 px, arms 4 px (= λ-1: occluded), torso exactly 5 px (= λ: visible), legs 0 px."""
    m = np.zeros((256, 128), np.uint8)
    m[10:20, 50:60] = 1          # head: 100 px
    m[40, 10:12] = 2             # left arm: 2 px
    m[40, 100:102] = 3           # right arm: 2 px -> arms 4 px
    m[60, 60:65] = 4             # torso: 5 px
    return m


def parsing_rows(maps: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({"key": list(maps), "label_map": [encode_label_map(m) for m in maps.values()],
                         "status": ["ok"] * len(maps)})


def test_counts_z_and_type_on_hand_made_map():
    m = hand_map()
    counts = coarse_counts(m)
    assert counts.tolist() == [100, 4, 5, 0]
    z = occlusion_labels(counts, LAM)
    assert z.tolist() == [0, 1, 0, 1]  # count λ-1 occluded, count == λ visible
    assert occlusion_type(z) == 8 * 0 + 4 * 1 + 2 * 0 + 1 == 5
    assert type_to_z(5) == [0, 1, 0, 1]


def test_feet_count_as_legs_and_empty_map_is_type_15():
    m = np.zeros((256, 128), np.uint8)
    m[200:202, 10:13] = 7  # left foot 6 px -> legs visible
    assert coarse_counts(m).tolist() == [0, 0, 0, 6]
    assert occlusion_type(occlusion_labels(coarse_counts(m), LAM)) == 8 + 4 + 2
    empty = np.zeros((256, 128), np.uint8)
    assert occlusion_type(occlusion_labels(coarse_counts(empty), LAM)) == 15


def test_torch_and_numpy_agree_batched():
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 9, size=(3, 32, 16)).astype(np.uint8)
    maps[1][maps[1] == 1] = 0  # no head in map 1
    np_counts = coarse_counts(maps)
    t_counts = coarse_counts(torch.from_numpy(maps))
    assert np_counts.tolist() == t_counts.tolist()
    assert np_counts[1, 0] == 0
    assert occlusion_type(occlusion_labels(np_counts, LAM)).tolist() == \
        occlusion_type(occlusion_labels(t_counts, LAM)).tolist()


def test_occlusion_table_columns_and_values():
    full = np.zeros((256, 128), np.uint8)
    full[0:10, 0:10] = 1
    full[20:30, 0:10] = 2
    full[40:50, 0:10] = 4
    full[60:70, 0:10] = 6
    table = occlusion_table(parsing_rows({"b": hand_map(), "a": full, "c": np.zeros((256, 128), np.uint8)}), LAM)
    assert list(table.columns) == ["key", "z_head", "z_arms", "z_torso", "z_legs", "occ_type",
                                   "count_head", "count_arms", "count_torso", "count_legs",
                                   "hidden_head", "hidden_arms", "hidden_torso", "hidden_legs",
                                   "occluder_head", "occluder_arms", "occluder_torso", "occluder_legs",
                                   "learned_occluder_head", "learned_occluder_arms",
                                   "learned_occluder_torso", "learned_occluder_legs",
                                   "learned_soft_occluder_head", "learned_soft_occluder_arms",
                                   "learned_soft_occluder_torso", "learned_soft_occluder_legs", "status"]
    assert table[["occluder_head", "occluder_legs", "learned_soft_occluder_arms"]].isna().all().all()  # no masks
    assert table["key"].tolist() == ["a", "b", "c"]
    assert table["occ_type"].tolist() == [0, 5, 15]
    assert table.loc[1, ["count_head", "count_arms", "count_torso", "count_legs"]].tolist() == [100, 4, 5, 0]
    assert table.loc[1, ["z_head", "z_arms", "z_torso", "z_legs"]].tolist() == [0, 1, 0, 1]
    assert str(table["occ_type"].dtype) == "int64"


def test_table_rejects_wrong_input():
    with pytest.raises(ValueError, match="read_parsing"):
        occlusion_table(pd.DataFrame({"key": ["a"]}), LAM)


def test_type_labels():
    assert type_label(0) == "none"
    assert type_label(15) == "all"
    assert type_label(5) == "A+L"
    assert type_label(8) == "H"


def test_counts_by_split_summary_and_histogram(tmp_path):
    table = occlusion_table(parsing_rows({"a": hand_map(), "b": np.zeros((256, 128), np.uint8),
                                          "c": hand_map()}), LAM)
    index = pd.DataFrame({"key": ["a", "b", "c"], "split": ["train", "query", "train"]})
    counts = type_counts_by_split(table, index)
    assert counts.shape == (2, 16)
    assert counts.index.tolist() == ["train", "query"]
    assert counts.loc["train", 5] == 2 and counts.loc["query", 15] == 1
    assert int(counts.to_numpy().sum()) == 3
    summary = occlusion_summary(table, index, OcclusionRule(lam=LAM))
    assert (summary["rule"], summary["lam"]) == ("pixels", LAM)
    assert summary["splits"]["train"]["occluded_fraction"]["arms"] == 1.0
    assert summary["splits"]["query"]["type_counts"]["15"] == 1
    out = tmp_path / "types.png"
    plot_type_histogram(counts, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no occlusion label"):
        type_counts_by_split(table, pd.DataFrame({"key": ["zzz"], "split": ["train"]}))


def test_occlusion_table_scales_lambda_with_the_stored_map_size():
    """λ = 5 px is stated at 256×128; a 128×64 map (¼ of the area) uses λ = 1.25 (as the augmentation does)."""
    import pandas as pd

    from ogfr_core.occlusion.table import occlusion_table
    from ogfr_core.parsing.cache import encode_label_map

    small = np.zeros((128, 64), np.uint8)
    small[10, 30:32] = 1          # head: 2 px  → visible at 128×64 (2 ≥ 1.25), occluded if λ were 5
    small[40:80, 20:44] = 4       # torso
    small[80:120, 20:30] = 5      # a leg
    full = np.zeros((256, 128), np.uint8)
    full[20, 60:62] = 1           # head: 2 px at 256×128 → occluded (2 < 5)
    full[80:160, 40:88] = 4
    df = pd.DataFrame({"key": ["a", "b"], "label_map": [encode_label_map(small), encode_label_map(full)],
                       "status": ["ok", "ok"]})
    table = occlusion_table(df, 5.0).set_index("key")
    assert table.loc["a", ["z_head", "z_arms", "z_torso", "z_legs"]].tolist() == [0, 1, 0, 0]
    assert table.loc["b", ["z_head", "z_arms", "z_torso", "z_legs"]].tolist() == [1, 1, 0, 1]
    assert table.loc["a", "count_head"] == 2 == table.loc["b", "count_head"]
