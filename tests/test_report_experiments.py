

def test_distinct_runs_drops_a_run_listed_twice():
    from ogfr_core.report.build import distinct_runs

    a = {"name": "t-ogfr-s0 @abc", "params": {"train.seed": 0}, "metrics": {"datasets.d.visibility.mAP": 0.36}}
    head = {"name": "main", "params": {"train.seed": 0, "data.root": "x"},  # dvc exp show: other key path
            "metrics": {"reports/metrics.json:datasets.d.visibility.mAP": 0.36, "dvclive:loss": 3.0}}
    b = {"name": "t-ogfr-s1 @abc", "params": {"train.seed": 1}, "metrics": {"datasets.d.visibility.mAP": 0.35}}
    assert [r["name"] for r in distinct_runs([a, head, b, dict(b, name="workspace")])] == [a["name"], b["name"]]


def test_distinct_runs_keeps_runs_that_differ_only_in_a_test_time_extra():
    """CpaCol with a longer stage II: same stage-I features (same standard numbers), another re-scoring row."""
    from ogfr_core.report.build import distinct_runs

    std = {"datasets.d.visibility.mAP": 0.30, "datasets.d.global.mAP": 0.30}
    a = {"name": "st2-4", "params": {}, "metrics": dict(std, **{"datasets.d.cpacol_rescore.mAP": 0.301})}
    b = {"name": "st2-24", "params": {}, "metrics": dict(std, **{"datasets.d.cpacol_rescore.mAP": 0.317})}
    assert [r["name"] for r in distinct_runs([a, b, dict(b, name="again")])] == ["st2-4", "st2-24"]
