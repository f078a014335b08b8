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
