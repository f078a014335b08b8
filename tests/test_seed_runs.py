"""Seed / ablation runs with DVC's queue (issue 23 item 5): the queued commands, and finished
experiments of `dvc exp show --json` recorded into reports/seed_runs.json as the report reads them."""
from __future__ import annotations

import json

import pytest

from ogfr_core.report.experiments import load_recorded_runs
from ogfr_core.report.seed_runs import data_root_override, main, merge_records, queue_commands, records_from_exp_show, run_name


def test_queue_commands():
    cmds = queue_commands("ogfr", [0, 2], ["train.threads=1", "train.model.kd=false"], tag="kd-off")
    assert cmds[1] == ["dvc", "exp", "run", "--queue", "-n", "t-ogfr-kd-off-s2", "-S", "train.seed=2",
                       "-S", "train.model.method=ogfr", "-S", "train.threads=1", "-S", "train.model.kd=false"]
    assert run_name("baseline", 1) == "t-baseline-s1"
    with pytest.raises(ValueError, match="key=value"):
        queue_commands("ogfr", [0], ["train.seed"])
    with pytest.raises(ValueError, match="experiment name"):
        run_name("ogfr", 0, tag="kd off")


def _run(name, seed, m, error=None):
    return {"rev": "e" * 40, "name": name, "error": error, "data": {
        "timestamp": "2026-12-04T10:00:00", "params": {"params.yaml": {"data": {"train": {"seed": seed}}}},
        "metrics": {"reports/metrics.json": {"data": {"method": "ogfr", "datasets": {"d": {"global": {"mAP": m}}}}},
                    "dvclive/metrics.json": {"data": {"x": 1}}}}}


def exp_show_doc():
    return [{"rev": "workspace", "data": {}},
            {"rev": "c" * 40, "name": "main", "data": {}, "experiments": [
                {"name": "t-ogfr-s0", "revs": [_run("t-ogfr-s0", 0, 0.36)]},
                {"name": "t-ogfr-s1", "revs": [_run("t-ogfr-s1", 1, 0.0, error={"msg": "failed"})]},
                {"name": "other", "revs": [_run("other", 0, 0.1)]},
                {"name": "t-ogfr-s2", "revs": [dict(_run("t-ogfr-s2", 2, 0.3), data={"params": {}})]},
                # still running: dvc exp show fills its row with the workspace's data (rev "workspace")
                {"name": "t-ogfr-s3", "executor": {"state": "running"},
                 "revs": [_run("t-ogfr-s3", 3, 0.36) | {"data": _run("t-ogfr-s3", 3, 0.36)["data"] | {"rev": "workspace"}}]},
                {"name": "t-ogfr-s4", "executor": {"state": "success"}, "revs": [_run("t-ogfr-s4", 4, 0.35)]}]}]


def test_records_from_exp_show_keeps_finished_prefixed_runs():
    recs = records_from_exp_show(exp_show_doc())
    # s1 failed, s2 has no metrics, s3 is still running (the workspace's metrics), 'other' is not t-*
    assert [r["name"] for r in recs] == ["t-ogfr-s0", "t-ogfr-s4"]
    r = recs[0]
    assert r["commit"] == "c" * 40 and r["params"] == {"train": {"seed": 0}}
    assert r["metrics"]["datasets"]["d"]["global"]["mAP"] == 0.36  # reports/metrics.json, not dvclive's
    assert r["train_metrics"] == {"x": 1}  # dvclive's last epoch, apart


def test_merge_replaces_by_name_and_report_reads_it(tmp_path):
    old = {"note": "n", "runs": [{"name": "t-ogfr-s0", "commit": "a" * 40, "params": {}, "metrics": {"m": 1}},
                                 {"name": "t-baseline-s0", "commit": "a" * 40, "params": {}, "metrics": {"m": 2}}]}
    doc = merge_records(old, records_from_exp_show(exp_show_doc()))
    assert doc["note"] == "n" and [r["name"] for r in doc["runs"]] == ["t-baseline-s0", "t-ogfr-s0", "t-ogfr-s4"]
    assert doc["runs"][1]["commit"] == "c" * 40  # the rerun supersedes the old record
    path = tmp_path / "seed_runs.json"
    path.write_text(json.dumps(doc))
    runs = load_recorded_runs(path)
    assert runs[1]["name"] == f"t-ogfr-s0 @{'c' * 7}"
    assert runs[1]["params"]["train.seed"] == 0 and runs[1]["metrics"]["datasets.d.global.mAP"] == 0.36


def test_queue_dry_run_prints(capsys):
    assert main(["queue", "--method", "baseline", "--seeds", "0", "--dry-run", "--start", "--jobs", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    root = "".join(f" -S {s}" for s in data_root_override())  # tested below
    assert out == ["dvc exp run --queue -n t-baseline-s0 -S train.seed=0 -S train.model.method=baseline" + root,
                   "dvc queue start -j 2"]


def test_data_root_override_makes_a_relative_root_absolute(tmp_path):
    """A queued experiment runs in .dvc/tmp/exps/tmp*: a relative data.root becomes the same folder as an
    absolute path; an absolute root needs no override."""
    from ogfr_core.report.seed_runs import data_root_override

    (tmp_path / "repo").mkdir()
    params = tmp_path / "repo/params.yaml"
    params.write_text("data:\n  root: ../shared/data/x\n")
    assert data_root_override(params) == [f"data.root={tmp_path / 'shared/data/x'}"]
    params.write_text("data:\n  root: /abs/x\n")
    assert data_root_override(params) == []


def test_workspace_record_reads_the_workspace_run(tmp_path):
    """``record --workspace NAME``: the workspace's params, evaluation and training metrics as a record the
    report reads like a queued run's; a workspace without metrics names `dvc repro`."""
    from ogfr_core.report.seed_runs import workspace_record

    with pytest.raises(FileNotFoundError, match="dvc repro"):
        workspace_record("t-ogfr-covered-s0", tmp_path, commit="abc1234")
    (tmp_path / "reports").mkdir()
    (tmp_path / "dvclive").mkdir()
    (tmp_path / "params.yaml").write_text("train:\n  seed: 0\n")
    (tmp_path / "reports" / "metrics.json").write_text(json.dumps({"datasets": {"d": {"global": {"mAP": 0.4}}}}))
    (tmp_path / "dvclive" / "metrics.json").write_text(json.dumps({"x": 2}))
    rec = workspace_record("t-ogfr-covered-s0", tmp_path, commit="abc1234")
    assert rec["name"] == "t-ogfr-covered-s0" and rec["commit"] == "abc1234" and rec["finished"].endswith("UTC " + rec["finished"][-4:])
    assert rec["params"] == {"train": {"seed": 0}} and rec["train_metrics"] == {"x": 2}
    path = tmp_path / "seed_runs.json"
    path.write_text(json.dumps(merge_records({}, [rec])))
    assert load_recorded_runs(path)[0]["metrics"]["datasets.d.global.mAP"] == 0.4
    with pytest.raises(ValueError, match="experiment name"):
        workspace_record("t ogfr", tmp_path, commit="abc1234")


def test_record_workspace_bad_name_is_one_line(monkeypatch, tmp_path):
    """`record --workspace` with a name DVC would refuse exits with the one-line reason, no traceback,
    and writes nothing (``dvc status`` faked clean)."""
    import subprocess

    from ogfr_core.report import seed_runs

    monkeypatch.setattr(seed_runs, "_dvc", lambda cmd: subprocess.CompletedProcess(cmd, 0, stdout="{}", stderr=""))
    out = tmp_path / "seed_runs.json"
    with pytest.raises(SystemExit, match="experiment name 'bad name'"):
        main(["record", "--workspace", "bad name", "--out", str(out)])
    assert not out.exists()


def test_verdicts_bad_set_is_one_line(capsys):
    """``seed_runs verdicts --set`` without ``=``: argparse's usage line and exit code 2, no traceback."""
    from ogfr_core.report.seed_runs import main

    with pytest.raises(SystemExit) as exc:
        main(["verdicts", "--set", "train.loss.teacher_id_weight"])
    assert exc.value.code == 2 and "expected key=value" in capsys.readouterr().err


def test_verdicts_text_judges_an_ablation_on_its_recorded_runs(tmp_path, monkeypatch, capsys):
    """``seed_runs verdicts --set``: in a checkout with params, metrics and recorded seed runs, the
    ablation's three OGFR runs are judged against the default's baseline runs (hand-made mAPs 0.40 vs 0.30
    → +10 points); no metrics file is a one-line error naming the stage to run."""
    import yaml

    from ogfr_core.report.seed_runs import main, verdicts_text

    params = {"data": {"name": "ds", "root": str(tmp_path)}, "train": {"seed": 0, "model": {"method": "ogfr"},
                                                "loss": {"teacher_id_weight": 0.0, "triplet_margin": 0.3}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["verdicts"])
    assert exc.value.code == 2 and "dvc repro evaluate" in capsys.readouterr().err

    def record(name, method, seed, tid, hol):
        p = {"data": {"name": "ds", "root": str(tmp_path)}, "train": {"seed": seed, "model": {"method": method},
                                               "loss": {"teacher_id_weight": tid, "triplet_margin": 0.3}}}
        m = {"datasets": {d: {k: {"mAP": v, "rank-1": v} for k in ("visibility", "global")}
                          for d, v in (("ds", hol), ("ds-occ", hol / 2))}}
        return {"name": name, "commit": "abc", "params": p, "metrics": m}

    runs = ([record(f"t-ogfr-tid05-s{i}", "ogfr", i, 0.5, 0.40 + 0.01 * i) for i in range(3)]
            + [record(f"t-baseline-s{i}", "baseline", i, 0.0, 0.30 + 0.01 * i) for i in range(3)])
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/seed_runs.json").write_text(json.dumps({"runs": runs}))
    (tmp_path / "reports/metrics.json").write_text(json.dumps(record("w", "ogfr", 0, 0.0, 0.2)["metrics"]))
    text = verdicts_text("params.yaml", ["train.loss.teacher_id_weight=0.5"])
    assert "(a) OGFR > baseline, holistic queries (mAP): holds (+10.00 ± 0.82; seeds 3 / 3)" in text
    assert "seeds 1 / 3" in verdicts_text("params.yaml", [])  # the default: the checkout's own run only
