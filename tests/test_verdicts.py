"""The paper's claims as verdicts from recorded runs (issue 23 item 7), on synthetic run records."""
from __future__ import annotations

import math

import pytest

from ogfr_core.report.verdicts import claims, claims_section, paired, verdict, welch

D, O = "ds", "ds-occ"


def rec(name, hol, occ, hol_g=None, occ_g=None, fep=None):
    m = {f"datasets.{D}.visibility.mAP": hol, f"datasets.{O}.visibility.mAP": occ,
         f"datasets.{D}.global.mAP": hol if hol_g is None else hol_g,
         f"datasets.{O}.global.mAP": occ if occ_g is None else occ_g}
    for k, v in (fep or {}).items():
        m[f"datasets.{D}.fep.{k}"] = v
    return {"name": name, "params": {}, "metrics": m}


def fep(bg, body, mean):
    return {"retain_mean_background": bg, "retain_mean_body": body, "retain_mean": mean}


def test_welch_and_paired_hand_computed():
    d, se = welch([0.36, 0.38, 0.34], [0.30, 0.32, 0.31])  # means .36 vs .31; s² .0004 and .0001
    assert d == pytest.approx(0.05) and se == pytest.approx(math.sqrt(0.0004 / 3 + 0.0001 / 3))
    m, s = paired([0.01, 0.03])
    assert m == pytest.approx(0.02) and s == pytest.approx(math.sqrt(0.0002) / math.sqrt(2))
    assert math.isnan(welch([1.0], [0.0, 1.0])[1]) and verdict(1.0, float("nan")) == "too few seeds"


def test_four_verdicts_on_synthetic_runs():
    runs = [
        # OGFR: holistic .36/.38/.34, occluded drops 50 % (worse than the baseline's 40 %);
        # Eq. 23 below global by 1 point everywhere; agent erases background more on 3/3 seeds
        rec("t-ogfr-s0-main @abcdef1", 0.36, 0.18, 0.37, 0.19, fep(0.80, 0.90, 0.85)),
        rec("t-ogfr-s1 @abcdef1", 0.38, 0.19, 0.39, 0.20, fep(0.70, 0.75, 0.72)),
        rec("t-ogfr-s2", 0.34, 0.17, 0.35, 0.18, fep(0.60, 0.68, 0.65)),
        rec("t-baseline-s0", 0.30, 0.18), rec("t-baseline-s1", 0.32, 0.192), rec("t-baseline-s2", 0.31, 0.186),
        rec("t-ogfr-kd-off-s0", 0.99, 0.99),  # an ablation: not an OGFR seed run
    ]
    a, b, c, d = claims(runs, D, O)
    assert a["verdict"] == "holds" and a["diff"] == pytest.approx(5.0) and a["n"] == (3, 3)
    assert b["verdict"] == "does not hold" and b["diff"] == pytest.approx(-10.0)  # drop 40 % − 50 %
    assert c["verdict"] == "holds" and c["diff"] == pytest.approx(100 * (0.10 + 0.05 + 0.08) / 3)
    assert d["verdict"] == "does not hold" and d["diff"] == pytest.approx(-1.0) and d["n"] == (6,)
    assert "ds -1.00 (n = 3)" in d["detail"] and "ds-occ -1.00 (n = 3)" in d["detail"]


def test_agent_off_or_mixed_seeds_and_noise():
    base = [rec(f"t-baseline-s{i}", 0.31 + 0.02 * (i - 1), 0.18) for i in range(3)]
    # agent "off" on seed 0 (1 % erased) and body erased more on seed 2 -> (c) does not hold
    og = [rec("t-ogfr-s0", 0.32, 0.18, fep=fep(0.98, 0.995, 0.99)),
          rec("t-ogfr-s1", 0.30, 0.18, fep=fep(0.7, 0.8, 0.75)),
          rec("t-ogfr-s2", 0.31, 0.18, fep=fep(0.8, 0.7, 0.75))]
    a, b, c, d = claims(base + og, D, O, probe={"masks": {"background": {
        "reward_eq8": {"mean": -0.0053, "se": 0.0003}, "reward_eq8_minus_random": {"mean": 0.0015, "se": 0.0006}},
        "all": {"feature_change": {"mean": 0.045, "se": 0.001}}}})
    assert a["verdict"] == "within noise"  # equal means
    assert c["verdict"] == "does not hold" and "1 agent(s) off" in c["detail"] and "2/3 seeds > 0" in c["detail"]
    assert "minus random +0.0015" in c["detail"]
    assert "erasing every patch moves the purified global feature by 4.5 %" in c["detail"]
    assert d["verdict"] == "within noise" and d["diff"] == 0.0  # Eq. 23 == global on every run


def test_claims_section_renders_a_row_per_claim():
    sec = claims_section([], D, O)
    table = [b for b in sec.blocks if b[0] == "table"][0]
    assert len(table[2]) == 4 and all("no runs" in r[4] or "no FEP" in r[4] for r in table[2])


def test_agent_claim_uses_the_per_image_gap_interval_when_recorded():
    og = [rec(f"t-ogfr-s{i}", 0.36, 0.2, fep={"retain_gap": g, "retain_gap_ci95": c, "retain_mean": 0.8,
                                                "retain_mean_background": 0.7, "retain_mean_body": 0.9})
          for i, (g, c) in enumerate([(0.05, 0.01), (0.04, 0.01), (0.03, 0.02)])]
    c = claims(og, D, O)[2]
    assert c["verdict"] == "holds" and c["diff"] == pytest.approx(4.0) and "+5.0 ± 1.0" in c["detail"]
    og[2]["metrics"][f"datasets.{D}.fep.retain_gap_ci95"] = 0.04  # seed 2's interval includes 0
    assert claims(og, D, O)[2]["verdict"] == "within noise"


def test_claims_follow_the_reference_configuration_not_the_names():
    """With the checkout's params as reference, the verdicts read the runs of that configuration (any
    name, seed from train.seed) and ignore an earlier default's runs named t-ogfr-s<n> / t-baseline-s<n>."""
    ref = {"train.model.method": "ogfr", "parse.min_keypoint_visibility": 0.0, "train.seed": 0}

    def run(name, method, seed, vis, hol):
        r = rec(name, hol, hol / 2)
        r["params"] = {**ref, "train.model.method": method, "train.seed": seed, "parse.min_keypoint_visibility": vis}
        return r

    old = [run(f"t-ogfr-s{i}", "ogfr", i, 0.5, 0.50) for i in range(3)] + \
        [run(f"t-baseline-s{i}", "baseline", i, 0.5, 0.10) for i in range(3)]
    new = [run(f"t-ogfr-vis0-s{i}", "ogfr", i, 0.0, 0.30 + 0.01 * i) for i in range(3)] + \
        [run(f"t-baseline-vis0-s{i}", "baseline", i, 0.0, 0.30 + 0.01 * i) for i in range(3)]
    a = claims(old + new, D, O, reference=ref)[0]
    assert a["n"] == (3, 3) and a["diff"] == pytest.approx(0.0) and a["verdict"] == "within noise"
    assert claims(old + new, D, O)[0]["diff"] == pytest.approx(40.0)  # by name: the earlier default's runs
    assert claims(old, D, O, reference=ref)[0]["detail"] == "no runs"


def test_an_ablation_is_judged_on_its_own_runs_with_the_default_baseline():
    """``override`` (``seed_runs verdicts --set``): the ablation's OGFR runs against the baseline runs of
    the default, since an OGFR loss weight is inert for the baseline; bad overrides are one-line errors."""
    from ogfr_core.report.verdicts import override

    ref = {"train.model.method": "ogfr", "train.loss.teacher_id_weight": 0.0, "train.seed": 0}

    def run(name, method, seed, tid, hol):
        r = rec(name, hol, hol / 2)
        r["params"] = {**ref, "train.model.method": method, "train.seed": seed, "train.loss.teacher_id_weight": tid}
        return r

    runs = ([run(f"t-ogfr-s{i}", "ogfr", i, 0.0, 0.40) for i in range(3)]
            + [run(f"t-ogfr-tid05-s{i}", "ogfr", i, 0.5, 0.30 + 0.01 * i) for i in range(3)]
            + [run(f"t-baseline-s{i}", "baseline", i, 0.0, 0.30 + 0.01 * i) for i in range(3)])
    ablation = override(ref, ["train.loss.teacher_id_weight=0.5"])
    assert ablation["train.loss.teacher_id_weight"] == 0.5 and ref["train.loss.teacher_id_weight"] == 0.0
    a = claims(runs, D, O, reference=ablation)[0]
    assert a["n"] == (3, 3) and a["diff"] == pytest.approx(0.0)  # the ablation's 30-32 vs the baseline's 30-32
    assert claims(runs, D, O, reference=ref)[0]["diff"] == pytest.approx(9.0)  # the default's 40 vs 31
    with pytest.raises(ValueError, match="key=value"):
        override(ref, ["train.loss.teacher_id_weight"])
    with pytest.raises(ValueError, match="not a param"):
        override(ref, ["train.loss.teacher_id_wieght=0.5"])
