"""The occlusion rules (Eq. 2 ``pixels``, ``hidden_fraction`` and ``covered``), their agreement between training and
test time, and the ground truth / accuracy of the occluded-query benchmark — on hand-made maps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ogfr_core.data.occlusion_aug import occlusion_augment
from ogfr_core.occlusion import (RULES, OcclusionRule, coarse_counts, hidden_fractions, labels_after_cover,
                                 rule_from_config)
from ogfr_core.occlusion.table import MissingOccluderMaskError, occlusion_table
from ogfr_core.occlusion.truth import (BEFORE, COVERED, OcclusionTruthError, changed_pixels, choose_rule,
                                       check_occluders, part_scores, rule_report, to_label_size, true_z,
                                       truth_row)
from ogfr_core.parsing.cache import MissingAmodalMapError, encode_label_map

HIDDEN = OcclusionRule("hidden_fraction", tau=0.5)
COVERED_RULE = OcclusionRule("covered", lam=5.0, tau=0.5)


def body(h: int = 256, w: int = 128) -> np.ndarray:
    """An amodal body: head rows 0-31, arms and torso 32-127, legs 128-255 (ids 1, 2/3, 4, 5/6)."""
    m = np.zeros((h, w), np.uint8)
    m[: h // 8, w // 4: 3 * w // 4] = 1
    m[h // 8: h // 2, : w // 4] = 2
    m[h // 8: h // 2, 3 * w // 4:] = 3
    m[h // 8: h // 2, w // 4: 3 * w // 4] = 4
    m[h // 2:, : w // 2] = 5
    m[h // 2:, w // 2:] = 6
    return m


def test_hidden_fractions_hand_values_numpy_and_torch():
    v, a = np.array([[50, 0, 80, 10]]), np.array([[100, 0, 60, 40]])
    expected = [[0.5, 1.0, 0.0, 0.75]]  # half seen; nothing in the crop = hidden; overlap clipped; 1/4 seen
    assert hidden_fractions(v, a).tolist() == expected
    assert torch.allclose(hidden_fractions(torch.tensor(v), torch.tensor(a)), torch.tensor(expected))


def test_rule_validation_and_config():
    with pytest.raises(ValueError, match="occlusion.rule"):
        OcclusionRule("area")
    with pytest.raises(ValueError, match="tau"):
        OcclusionRule("hidden_fraction", tau=1.0)
    from ogfr_core.config import OcclusionConfig

    assert rule_from_config(OcclusionConfig(rule="hidden_fraction", lam=3.0, tau=0.4)) == \
        OcclusionRule("hidden_fraction", 3.0, 0.4)
    assert OcclusionRule().labels(np.array([4, 5, 100, 0]), None, (256, 128)).tolist() == [1, 0, 0, 1]


def test_table_under_the_hidden_fraction_rule():
    amodal = body()
    visible = amodal.copy()
    visible[160:, :] = 0            # legs: 96 of 128 rows hidden -> 0.75 > τ
    visible[32:64, :32] = 0         # left arm: a third of one of two arms hidden -> 1/6 < τ
    rows = pd.DataFrame({"key": ["a"], "label_map": [encode_label_map(visible)],
                         "amodal_map": [encode_label_map(amodal)], "status": ["ok"]})
    table = occlusion_table(rows, HIDDEN)
    assert table.loc[0, ["z_head", "z_arms", "z_torso", "z_legs"]].tolist() == [0, 0, 0, 1]
    assert table.loc[0, ["hidden_head", "hidden_arms", "hidden_torso"]].tolist() == [0.0, pytest.approx(1 / 6), 0.0]
    assert table.loc[0, "hidden_legs"] == pytest.approx(0.75)
    assert table.loc[0, "occ_type"] == 1
    # the paper's rule on the same parse: every part still has >= 5 pixels -> holistic
    assert occlusion_table(rows, OcclusionRule()).loc[0, "occ_type"] == 0
    with pytest.raises(MissingAmodalMapError, match="the hidden_fraction occlusion rule needs amodal.*occlusion.rule: pixels"):
        occlusion_table(rows.drop(columns="amodal_map"), HIDDEN)


@pytest.mark.parametrize("rule", [HIDDEN, OcclusionRule("pixels", lam=5.0), OcclusionRule("hidden_fraction", tau=0.2),
                                  COVERED_RULE, OcclusionRule("covered", lam=5.0, tau=0.2)])
def test_training_augmentation_and_ground_truth_agree_on_one_pasted_box(rule):
    """The z the student gets after a pasted obstacle (training) equals the ground truth the benchmark
    computes for an occluder covering the same pixels (test), under each rule (``covered``: a
    holistic training image, no predicted occluder, share 0)."""
    h, w = 128, 64
    amodal = body(h, w)
    visible = amodal.copy()
    visible[100:, :] = 0  # the parse already misses the lower legs
    hidden0 = hidden_fractions(coarse_counts(visible), coarse_counts(amodal)) if rule.rule != "covered" \
        else np.zeros(4)  # [4]
    z0 = rule.labels(coarse_counts(visible), hidden0, (h, w))
    images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    maps = torch.as_tensor(np.stack([visible, visible])).long()
    out = occlusion_augment(images, maps, torch.as_tensor(np.stack([z0, z0])), prob=1.0, area=(0.3, 0.4), rule=rule,
                            hidden=torch.as_tensor(np.stack([hidden0, hidden0])).float(),
                            generator=torch.Generator().manual_seed(1))
    y, x, bh, bw = out.boxes[0].tolist()
    covered = np.zeros((h, w), bool)
    covered[y:y + bh, x:x + bw] = True
    truth = pd.DataFrame([truth_row(visible, amodal, covered)])
    assert out.z[0].tolist() == true_z(rule, truth, (h, w))[0].tolist()
    expected_hidden = 1 - (1 - hidden0) * truth[[f"count_after_{c}" for c in ("head", "arms", "torso", "legs")]
                                                ].to_numpy()[0] / np.maximum(truth[list(BEFORE)].to_numpy()[0], 1)
    assert np.allclose(out.hidden[0].numpy(), np.where(truth[list(BEFORE)].to_numpy()[0] > 0, expected_hidden, hidden0),
                       atol=1e-6)


def test_covered_rule_hand_values_numpy_and_torch():
    """z = Eq. (2) on the pixels the occluder leaves, or more than τ of the part under it."""
    counts = np.array([[100, 100, 100, 6]])
    share = np.array([[0.4, 0.6, 0.96, 0.0]])  # 60 px left; 40 left but > τ; 4 px left < λ; 6 px, nothing covered
    expected = [[0, 1, 1, 0]]
    assert COVERED_RULE.labels(counts, share, (256, 128)).tolist() == expected
    assert COVERED_RULE.labels(torch.tensor(counts), torch.tensor(share), (256, 128)).tolist() == expected
    # no occluder: exactly the paper's Eq. (2)
    assert COVERED_RULE.labels(np.array([4, 5, 100, 0]), np.zeros(4), (256, 128)).tolist() == \
        OcclusionRule().labels(np.array([4, 5, 100, 0]), None, (256, 128)).tolist()
    assert (COVERED_RULE.state, COVERED_RULE.needs_occluder, HIDDEN.state, OcclusionRule().state_columns) == \
        ("occluder", True, "hidden", None)
    assert COVERED_RULE.state_columns == ("occluder_head", "occluder_arms", "occluder_torso", "occluder_legs")
    soft = OcclusionRule("learned_soft", 5.0, 0.5)
    assert (soft.state, soft.needs_occluder, soft.needs_parts, OcclusionRule("learned_parts").needs_parts,
            COVERED_RULE.needs_parts) == ("learned_soft_occluder", True, True, True, False)
    # only learned_soft reads the part head's logits; learned_parts reads its argmax
    assert [OcclusionRule(r).needs_logits for r in RULES] == [r == "learned_soft" for r in RULES]


def test_table_under_the_covered_rule_reads_the_occluder_mask():
    visible = body()
    mask = np.zeros(visible.shape, bool)
    mask[192:, :] = True  # the lower half of the legs: 64 of 128 rows -> share 0.5, not > τ
    mask[:24, :] = True  # 24 of the head's 32 rows -> 0.75 > τ
    rows = pd.DataFrame({"key": ["a"], "label_map": [encode_label_map(visible)],
                         "amodal_map": [encode_label_map(visible)], "status": ["ok"]})
    table = occlusion_table(rows, COVERED_RULE, {"a": mask})
    assert table.loc[0, ["occluder_head", "occluder_arms", "occluder_torso", "occluder_legs"]].tolist() == \
        [0.75, 0.0, 0.0, 0.5]
    assert table.loc[0, ["z_head", "z_arms", "z_torso", "z_legs"]].tolist() == [1, 0, 0, 0]
    assert table.loc[0, "occ_type"] == 8
    assert table.loc[0, "count_head"] == 32 * 64  # Eq. (1) counts stay those of the parse
    # the paper's rule ignores the mask, and without masks the shares are NaN
    assert occlusion_table(rows, OcclusionRule(), {"a": mask}).loc[0, "occ_type"] == 0
    assert occlusion_table(rows, OcclusionRule())[["occluder_head"]].isna().all().all()
    with pytest.raises(MissingOccluderMaskError, match="dvc repro occluder"):
        occlusion_table(rows, COVERED_RULE)
    with pytest.raises(MissingOccluderMaskError, match="1 parsed image"):
        occlusion_table(rows, COVERED_RULE, {"b": mask})


def test_augmentation_needs_hidden_shares_under_the_hidden_rule():
    x, lab, z = torch.zeros(2, 3, 16, 8), torch.zeros(2, 16, 8, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="hidden shares"):
        occlusion_augment(x, lab, z, prob=1.0, area=(0.1, 0.2), rule=HIDDEN)


def test_labels_after_cover_keeps_occluded_parts_and_scales_the_visible_share():
    z, hidden = np.array([0, 1, 0, 0]), np.array([0.2, 0.9, 0.0, 0.0])
    before, after = np.array([100, 10, 50, 0]), np.array([30, 10, 50, 0])
    z2, h2 = labels_after_cover(HIDDEN, z, hidden, before, after, (256, 128))
    assert z2.tolist() == [1, 1, 0, 0]  # head: 1 - 0.8 * 0.3 = 0.76 > 0.5; arms stay occluded
    assert np.allclose(h2, [0.76, 0.9, 0.0, 0.0])


def test_changed_pixels_and_label_size():
    a = np.zeros((4, 2, 3), np.uint8)
    b = a.copy()
    b[2:, :, 1] = 9
    m = changed_pixels(a, b)
    assert m.tolist() == [[False, False], [False, False], [True, True], [True, True]]
    assert to_label_size(m, (8, 4)).sum() == 16 and to_label_size(m, (8, 4))[4:].all()
    with pytest.raises(ValueError, match="differ in size"):
        changed_pixels(a, b[:2])


def test_part_scores_hand_values():
    pred = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 0]])
    truth = np.array([[1, 0, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0]])
    s = part_scores(pred, truth)
    assert s["head"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert s["torso"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert s["legs"] == {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}
    assert np.isnan(s["arms"]["f1"]) and s["arms"]["support"] == 0


def _truth_frame(rows: list[dict], kinds: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["key"] = [f"q{i}" for i in range(len(rows))]
    df["source_key"] = [f"h{i}" for i in range(len(rows))]
    df["kind"] = kinds
    return df


def test_rule_report_on_a_hand_made_benchmark():
    amodal = body()
    cover_legs = np.zeros((256, 128), bool)
    cover_legs[128:, :] = True   # legs fully covered
    cover_head = np.zeros((256, 128), bool)
    cover_head[:8, :] = True     # a quarter of the head
    truth = _truth_frame([truth_row(amodal, amodal, cover_legs), truth_row(amodal, amodal, cover_head)],
                         ["object", "person"])
    assert truth[list(COVERED)].to_numpy().round(2).tolist() == [[0, 0, 0, 1], [0.25, 0, 0, 0]]
    counts = lambda m: coarse_counts(m)  # noqa: E731
    # the parse of the occluded images: the first sees the legs gone, the second misses the cover
    occluded = pd.DataFrame({"key": ["q0", "q1"]})
    parsed_hidden = [[0, 0, 0, 1.0], [0, 0, 0, 0]]
    for i, c in enumerate(("head", "arms", "torso", "legs")):
        occluded[f"count_{c}"] = [counts(np.where(cover_legs, 0, amodal))[i], counts(amodal)[i]]
        occluded[f"hidden_{c}"] = [h[i] for h in parsed_hidden]
    holistic = pd.DataFrame({"key": ["h0", "h1"]})
    for i, c in enumerate(("head", "arms", "torso", "legs")):
        holistic[f"count_{c}"] = counts(amodal)[i]
        holistic[f"hidden_{c}"] = [0.0, 0.6 if c == "arms" else 0.0]  # h1's arms: a false alarm
    rep = rule_report(HIDDEN, truth, occluded, holistic, (256, 128))
    assert rep["parts"]["legs"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert rep["parts"]["head"]["support"] == 0  # a quarter of the head is not "occluded" at τ = 0.5
    assert rep["any_occluded"] == {"truth": 0.5, "parsed": 0.5, "gap": 0.0}
    assert rep["holistic_false_positive_rate"]["arms"] == 0.5 and rep["holistic_false_positive_rate"]["any"] == 0.5
    assert rep["by_kind"]["object"]["legs"]["f1"] == 1.0
    assert rep["vs_half_covered"]["legs"]["f1"] == 1.0
    # the paper's rule: the legs lose every pixel -> occluded in truth and in the parse
    paper = rule_report(OcclusionRule(), truth, occluded, holistic, (256, 128))
    assert paper["parts"]["legs"]["f1"] == 1.0 and paper["holistic_false_positive_rate"]["any"] == 0.0


def test_z_accuracy_grid_scores_learned_soft_when_the_tables_carry_its_shares():
    """The validation grid of reports/occlude/z_accuracy.json scores every cover rule whose shares the
    tables carry: learned_soft (the probabilities) flags legs the argmax share under-reads; tables without
    its shares (no part logits: NaN) leave it out of the grid."""
    from dataclasses import replace
    from pathlib import Path

    from ogfr_core.occlusion.benchmark import DerivedSet, z_accuracy

    amodal = body()
    cover_legs = np.zeros((256, 128), bool)
    cover_legs[128:, :] = True
    truth = _truth_frame([truth_row(amodal, amodal, cover_legs), truth_row(amodal, amodal, np.zeros_like(cover_legs))],
                         ["object", "object"])
    names = ("head", "arms", "torso", "legs")
    occluded, holistic = pd.DataFrame({"key": ["q0", "q1"]}), pd.DataFrame({"key": ["h0", "h1"]})
    shares = {"occluder": 0.0, "learned_occluder": 0.3, "learned_soft_occluder": 0.9}  # q0's legs under each reading
    for i, c in enumerate(names):
        occluded[f"count_{c}"] = holistic[f"count_{c}"] = coarse_counts(amodal)[i]  # the parser still draws them
        occluded[f"hidden_{c}"] = holistic[f"hidden_{c}"] = 0.0
        for state, legs in shares.items():
            occluded[f"{state}_{c}"] = [legs if c == "legs" else 0.0, 0.0]
            holistic[f"{state}_{c}"] = 0.0
    val = DerivedSet("val", Path("."), pd.DataFrame(), pd.DataFrame(), occluded, {}, truth)
    out = z_accuracy(OcclusionRule("learned_soft", 5.0, 0.5), {"validation": val}, holistic, (256, 128), (0.5,),
                     "validation")
    grid = {r["rule"]: r for r in out["sets"]["validation"]["tau_grid"]}
    assert set(grid) == {"hidden_fraction", "covered", "learned_parts", "learned_soft"}
    assert grid["learned_soft"]["parts"]["legs"]["f1"] == 1.0
    assert grid["learned_parts"]["parts"]["legs"]["recall"] == 0.0  # 0.3 < τ and 70 % of the legs left
    no_logits = replace(val, occlusion=occluded.assign(**{f"learned_soft_occluder_{c}": np.nan for c in names}))
    out = z_accuracy(OcclusionRule("learned_parts", 5.0, 0.5), {"validation": no_logits}, holistic, (256, 128),
                     (0.5,), "validation")
    assert {r["rule"] for r in out["sets"]["validation"]["tau_grid"]} == {"hidden_fraction", "covered", "learned_parts"}


def test_choose_rule_keeps_the_paper_unless_a_deviation_wins_by_the_margin():
    def rep(rule, tau, f1s, fp, support=30):
        return {"rule": rule, "lam": 5.0 if rule == "pixels" else None, "tau": tau,
                "holistic_false_positive_rate": {"any": fp},
                "vs_half_covered": {p: {"f1": f, "support": support} for p, f in zip("htal", f1s)}}

    paper = rep("pixels", None, [0.2, 0.2, 0.2, 0.2], 0.10)            # score 0.10
    close = rep("hidden_fraction", 0.5, [0.3, 0.3, 0.3, 0.3], 0.17)    # 0.13: within the margin
    better = rep("hidden_fraction", 0.6, [0.5, 0.5, 0.5, 0.1], 0.05)   # 0.35
    assert choose_rule([paper, close])["rule"] == "pixels"
    chosen = choose_rule([paper, close, better])
    assert (chosen["rule"], chosen["tau"], chosen["score"], chosen["paper_score"]) == ("hidden_fraction", 0.6, 0.35, 0.1)
    few = rep("hidden_fraction", 0.7, [0.9, 0.9, 0.9, 0.9], 0.0, support=5)  # no part with enough positives
    assert choose_rule([paper, few])["rule"] == "pixels"
    with pytest.raises(ValueError, match="pixels"):
        choose_rule([close])


def test_check_occluders_names_the_file_and_the_stage(tmp_path):
    path = tmp_path / "occluders.parquet"
    with pytest.raises(OcclusionTruthError, match="dvc repro occlude"):
        check_occluders(path, 0)
    pd.DataFrame({"path": ["query/a.png"], "key": ["k"], "kind": ["object"], "seed": [3]}).to_parquet(path)
    with pytest.raises(OcclusionTruthError, match=r"occluders.parquet: occluders drawn with seed \[3\]"):
        check_occluders(path, 0)
    assert len(check_occluders(path, 3)) == 1
