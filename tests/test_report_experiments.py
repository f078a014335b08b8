

def test_distinct_runs_drops_a_run_listed_twice():
    from ogfr_core.report.build import distinct_runs

    a = {"name": "t-ogfr-s0 @abc", "params": {"train.seed": 0}, "metrics": {"datasets.d.visibility.mAP": 0.36}}
    head = {"name": "main", "params": {"train.seed": 0, "data.root": "x"},  # dvc exp show: other key path
            "metrics": {"reports/metrics.json:datasets.d.visibility.mAP": 0.36, "dvclive:loss": 3.0}}
    b = {"name": "t-ogfr-s1 @abc", "params": {"train.seed": 1}, "metrics": {"datasets.d.visibility.mAP": 0.35}}
    assert [r["name"] for r in distinct_runs([a, head, b, dict(b, name="workspace")])] == [a["name"], b["name"]]
