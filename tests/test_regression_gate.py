"""The CI metric gate fails on drops beyond the tolerance, on missing metrics, never on gains."""
from __future__ import annotations

import pytest

from ogfr_core.regression import check, flatten

REF = {"cuhk03": {"visibility": {"rank1": 0.50, "mAP": 0.40}, "num_queries": 200}}


def test_flatten_drops_non_numeric_and_bools():
    assert flatten({"a": {"b": 1, "c": "x", "d": True}, "e": 2.5}) == {"a.b": 1.0, "e": 2.5}


def test_within_tolerance_and_improvement_pass():
    cur = {"cuhk03": {"visibility": {"rank1": 0.48, "mAP": 0.55}}}
    res = check(cur, REF, {"cuhk03.visibility.rank1": 0.03, "cuhk03.visibility.mAP": 0.03})
    assert res.passed
    assert [round(r.delta, 6) for r in res.rows] == [-0.02, 0.15]


def test_drop_beyond_tolerance_fails_and_is_reported():
    cur = {"cuhk03": {"visibility": {"rank1": 0.46, "mAP": 0.40}}}
    res = check(cur, REF, {"cuhk03.visibility.rank1": 0.03, "cuhk03.visibility.mAP": 0.03})
    assert not res.passed
    assert [r.ok for r in res.rows] == [False, True]
    assert "REGRESSION" in res.table()


def test_boundary_drop_equal_to_tolerance_passes():
    cur = {"cuhk03": {"visibility": {"rank1": 0.47, "mAP": 0.40}}}
    assert check(cur, REF, {"cuhk03.visibility.rank1": 0.03 + 1e-12}).passed


def test_missing_metric_fails():
    res = check({"cuhk03": {}}, REF, {"cuhk03.visibility.rank1": 0.03})
    assert not res.passed and "missing" in res.table()


def test_empty_or_negative_tolerances_rejected():
    with pytest.raises(ValueError, match="vacuously"):
        check(REF, REF, {})
    with pytest.raises(ValueError, match=">= 0"):
        check(REF, REF, {"cuhk03.visibility.rank1": -0.1})


def test_lower_is_better_metric_fails_on_a_rise_not_on_a_fall():
    ref = {"train": {"loss": {"total": 13.5}}}
    tol = {"train.loss.total": 0.2}
    assert not check({"train": {"loss": {"total": 13.8}}}, ref, tol, lower_is_better={"train.loss.total"}).passed
    assert check({"train": {"loss": {"total": 12.0}}}, ref, tol, lower_is_better={"train.loss.total"}).passed
    assert check({"train": {"loss": {"total": 13.65}}}, ref, tol, lower_is_better={"train.loss.total"}).passed
    with pytest.raises(ValueError, match="without a tolerance"):
        check(ref, ref, tol, lower_is_better={"train.loss.mse"})


def test_ci_gate_script_passes_then_fails_on_a_worse_run(tmp_path, monkeypatch):
    """stages.ci_gate --no-repro: reference from one run, a worse run (lower mAP, higher loss) fails."""
    import json

    import yaml

    from stages.ci_gate import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "dvclive").mkdir()
    gate = {"metrics": {"eval": "reports/metrics.json", "train": "dvclive/metrics.json"},
            "tolerances": {"eval.datasets.d.visibility.mAP": 0.005, "train.train.loss.total": 0.1},
            "lower_is_better": ["train.train.loss.total"]}
    (tmp_path / "gate.yaml").write_text(yaml.safe_dump(gate))

    def run(m_ap, loss, *flags):
        (tmp_path / "reports/metrics.json").write_text(json.dumps({"datasets": {"d": {"visibility": {"mAP": m_ap}}}}))
        (tmp_path / "dvclive/metrics.json").write_text(json.dumps({"train": {"loss": {"total": loss}}}))
        return main(["--no-repro", "--gate", "gate.yaml", "--reference", "ref.json", *flags])

    assert run(0.020, 13.5, "--update-reference") == 0
    assert json.loads((tmp_path / "ref.json").read_text())["train"]["train"]["loss"]["total"] == 13.5
    assert run(0.018, 13.55) == 0                      # within both tolerances
    assert run(0.020, 14.2) == 1                       # training got worse
    assert "REGRESSION" in (tmp_path / "reports/gate.md").read_text()
    assert run(0.010, 13.5) == 1                       # retrieval got worse
