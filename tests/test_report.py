"""Report generation on a tiny synthetic run directory (fake metrics, dvclive TSVs, parquets) with a
few real images from the shared dataset for the mask and retrieval figures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ogfr_core.report import MissingMetricsError, build_report, parse_experiments
from ogfr_core.report.sections import table_iv_section, validation_section
from ogfr_core.report.sources import occlusion_counts

DATASET = "cuhk03-np-detected"


def _metrics(pretrained: str = "", r1: float = 0.3) -> dict:
    res = {"rank-1": r1, "rank-5": 0.5, "rank-10": 0.6, "mAP": 0.25, "mINP": 0.1,
           "num_valid_queries": 10, "num_skipped_queries": 2}
    return {"method": "ogfr", "epochs": 2, "backbone": "vit_tiny_patch16_224",
            "pretrained_weights": pretrained, "trained_on": DATASET, "height": 128, "width": 64,
            "feat_norm": True, "datasets": {DATASET: {"visibility": res, "global": dict(res, **{"rank-1": 0.28}),
                                                      "num_query": 12, "num_gallery": 40}}}


def make_run(run: Path, shared_root: Path, with_optional: bool = True) -> Path:
    """A run directory with every input the report reads (or only metrics.json)."""
    (run / "reports").mkdir(parents=True)
    (run / "reports/metrics.json").write_text(json.dumps(_metrics()))
    if not with_optional:
        return run
    rng = np.random.default_rng(0)
    (run / "reports/plots").mkdir()
    ranks = np.arange(1, 51)
    (run / "reports/plots/cmc.csv").write_text(
        "rank,visibility,global\n" + "".join(
            f"{r},{min(1, 0.3 + 0.014 * r):.4f},{min(1, 0.28 + 0.013 * r):.4f}\n" for r in ranks))
    live = run / "dvclive/plots/metrics/train"
    live.mkdir(parents=True)
    for name in ("loss_total", "loss_mse", "loss_cos", "loss_kd", "loss_id", "loss_triplet",
                 "loss_policy", "reward", "retained_patches", "lr"):
        steps = np.arange(0, 60, 2)
        vals = np.exp(-steps / 30) + 0.05 * rng.standard_normal(len(steps))
        pd.DataFrame({"timestamp": steps * 1000, "step": steps, name: vals}).to_csv(
            live / f"{name}.tsv", sep="\t", index=False)
    # index + occlusion parquets over real test images
    test = sorted((shared_root / "bounding_box_test").glob("*.jpg"))[:24]
    query = sorted((shared_root / "query").glob("*.jpg"))[:4]
    rows = []
    for i, p in enumerate(query + test):
        pid, cam = int(p.name[:4]), int(p.name.split("_")[1][1]) - 1
        rows.append({"key": f"k{i:03d}", "path": p.relative_to(shared_root).as_posix(), "pid": pid,
                     "camid": cam, "split": "query" if i < len(query) else "gallery", "label": -1,
                     "width": 64, "height": 128})
    index = pd.DataFrame(rows)
    (run / "data/index").mkdir(parents=True)
    (run / "data/occlusion").mkdir(parents=True)
    index.to_parquet(run / f"data/index/{DATASET}.parquet", index=False)
    z = rng.integers(0, 2, (len(index), 4)) * (rng.random((len(index), 1)) < 0.5)
    occ = pd.DataFrame({"key": index.key, "z_head": z[:, 0], "z_arms": z[:, 1], "z_torso": z[:, 2],
                        "z_legs": z[:, 3]})
    occ["occ_type"] = 8 * occ.z_head + 4 * occ.z_arms + 2 * occ.z_torso + occ.z_legs
    occ.to_parquet(run / f"data/occlusion/{DATASET}.parquet", index=False)
    # evaluate-stage example outputs
    gal = index[index.split == "gallery"].reset_index(drop=True)
    queries = []
    for q in index[index.split == "query"].itertuples():
        top = [{"key": g.key, "path": g.path, "pid": int(g.pid), "camid": int(g.camid),
                "distance": 0.5 + 0.1 * j, "match": bool(g.pid == q.pid)}
               for j, g in enumerate(gal.iloc[:5].itertuples())]
        queries.append({"query_key": q.key, "query_path": q.path, "query_pid": int(q.pid), "query_camid": 0,
                        "occluded": True, "distance": "visibility", "top": top})
    (run / "reports/eval").mkdir()
    (run / "reports/eval/retrievals.json").write_text(json.dumps(
        {"dataset": DATASET, "root": str(shared_root), "queries": queries}))
    items = [{"key": g.key, "path": g.path, "retain": rng.random((8, 4)).round(3).tolist()}
             for g in gal.iloc[:5].itertuples()]
    (run / "reports/eval/erasing_masks.json").write_text(json.dumps(
        {"available": True, "reason": "", "items": items, "dataset": DATASET, "root": str(shared_root)}))
    (run / "reports/parse").mkdir()
    (run / "reports/parse/summary.json").write_text(json.dumps({"backend": "mediapipe"}))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow(rng.random((8, 8)))
    fig.savefig(run / "reports/parse/overlay.png")
    (run / "reports/occlude").mkdir()
    fig.savefig(run / "reports/occlude/examples.png")
    plt.close(fig)
    (run / "reports/occlude/summary.json").write_text(json.dumps({
        "dataset": f"{DATASET}-occ", "source": DATASET, "seed": 0, "queries_occluded_by_parsing": {"source": 0.13, "derived": 0.4},
        "occluders": {"kinds": {"object": 6, "person": 6}, "edges": {"bottom": 4, "left": 4, "right": 4},
                      "box_area_min": 0.2, "box_area_max": 0.5, "box_area_mean": 0.35, "covered_mean": 0.3,
                      "source_images": 12, "source_ids": 9, "source_test_pids": 0}}))
    part = {"precision": 0.5, "recall": 0.25, "f1": 0.3333, "support": 4}
    parts = {c: part for c in ("head", "arms", "torso", "legs")}
    (run / "reports/occlude/z_accuracy.json").write_text(json.dumps({
        "rule_in_force": {"rule": "pixels", "lam": 5.0, "tau": 0.8}, "sets": {"test": {
            "dataset": f"{DATASET}-occ", "queries": 12, "rules": [{
                "rule": "pixels", "lam": 5.0, "tau": None, "parts": parts, "by_kind": {"object": parts},
                "any_occluded": {"truth": 0.5, "parsed": 0.25, "gap": -0.25},
                "holistic_false_positive_rate": {"any": 0.1}, "score": 0.2}]}}}))
    m = _metrics()
    res = dict(m["datasets"][DATASET]["visibility"], **{"rank-1": 0.2, "mAP": 0.15})
    m["datasets"][f"{DATASET}-occ"] = {"visibility": res, "num_query": 12, "num_gallery": 40}
    m["datasets"][DATASET]["fep"] = {"available": True, "images": 20, "auc_background": 0.731, "retain_mean": 0.8,
                                     "retain_std": 0.1, "retain_p05": 0.6, "retain_p95": 0.95,
                                     "retain_mean_background": 0.7, "retain_mean_body": 0.9}
    (run / "reports/metrics.json").write_text(json.dumps(m))
    return run


EXPERIMENTS = [  # the shape of DVC 3's `dvc exp show --json`, trimmed
    {"rev": "workspace", "name": None, "data": {
        "params": {"params.yaml": {"data": {"train": {"model": {"method": "ogfr", "oa_vit": True,
                                                                "fep_student": False, "fep_teacher": True, "kd": True}}}}},
        "metrics": {"reports/metrics.json": {"data": _metrics(r1=0.31)}}}, "experiments": None},
    {"rev": "abc1234def", "name": "main", "data": {"params": {}, "metrics": {}}, "experiments": [
        {"name": "exp-base", "revs": [{"rev": "e1", "name": "exp-base", "data": {
            "params": {"params.yaml": {"data": {"train": {"model": {"method": "baseline"}}}}},
            "metrics": {"reports/metrics.json": {"data": _metrics(r1=0.2)}}}}]}]},
]


def test_report_has_every_section_and_figure(tmp_path, shared_root):
    run = make_run(tmp_path / "run", shared_root)
    out = build_report(run, DATASET, "mediapipe", num_retrieval_queries=3, num_mask_examples=4,
                       experiments=(parse_experiments(EXPERIMENTS), ""))
    md = out["markdown"].read_text()
    html = out["html"].read_text()
    for title in ("At a glance", "Run setup", "Results vs. the paper", "OGFR ablations (Table IV layout)", "Training curves",
                  "CMC curve", "Occlusion types (Fig. 6b)", "Erasing masks on holistic images (Fig. 7)",
                  "Rank-5 retrievals of occluded queries (Fig. 8)", "Parsing overlays"):
        assert f"## {title}" in md
        assert f"<h2>{title}</h2>" in html.replace("&amp;", "&")
    assert "Not available" not in md  # every input was there
    names = {Path(p).name for p in out["figures"]}
    assert names == {"training_curves.png", "cmc.png", "occlusion_types.png", "erasing_masks.png",
                     "retrievals.png", "overlay.png", "examples.png"}
    for p in out["figures"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count("data:image/png;base64,") == 7 and "src='figures/" not in html
    assert "random init — not a reproduction" in md  # pretrained_weights == ""
    assert "30.0" in md and "76.6" in md  # this run's rank-1 and the paper's Table IV / I numbers
    assert "exp-base" in md and "workspace" in md  # two runs → rows of the appendix of every run
    assert md.index("## At a glance") < md.index("## Run setup")  # the first screen comes first
    assert "(reports/parse/summary.json)" in md
    # the occluded-query benchmark: the drop line, its summary and examples; the FEP background AUC
    assert f"({DATASET} → {DATASET}-occ, same gallery): rank-1 30.0 → 20.0 (-10.0), mAP 25.0 → 15.0 (-10.0 points)" in md
    assert "## Occluded-query benchmark" in md and "(0 from test identities)" in md and "examples.png" in md
    assert "**0.731**" in md


def test_report_sections_say_what_is_missing(tmp_path, shared_root):
    run = make_run(tmp_path / "run", shared_root, with_optional=False)
    out = build_report(run, DATASET, "mediapipe", experiments=([], "no git repository"))
    md = out["markdown"].read_text()
    for stage in ("dvc repro train", "dvc repro evaluate", "dvc repro index", "dvc repro parse"):
        assert f"`{stage}`" in md
    assert "No experiments" in md and "no git repository" in md
    assert out["figures"] == []
    assert "(params.yaml parse.backend)" in md


def test_missing_metrics_is_an_error_naming_evaluate(tmp_path):
    with pytest.raises(MissingMetricsError, match="dvc repro evaluate"):
        build_report(tmp_path, DATASET, experiments=([], ""))


def test_pretrained_run_has_no_random_init_warning(tmp_path, shared_root):
    run = make_run(tmp_path / "run", shared_root, with_optional=False)
    (run / "reports/metrics.json").write_text(json.dumps(_metrics(pretrained="weights/vit_base.pth")))
    md = build_report(run, DATASET, experiments=([], ""))["markdown"].read_text()
    assert "random init" not in md
    assert "not a reproduction" in md  # still a 2-epoch tiny-ViT run


def test_model_without_fep_says_so(tmp_path, shared_root):
    run = make_run(tmp_path / "run", shared_root)
    (run / "reports/eval/erasing_masks.json").write_text(json.dumps(
        {"available": False, "reason": "method 'baseline' has no learned FEP agent", "items": [], "root": "."}))
    md = build_report(run, DATASET, experiments=([], ""))["markdown"].read_text()
    assert "method 'baseline' has no learned FEP agent" in md


def test_occlusion_counts_per_split(tmp_path):
    idx = pd.DataFrame({"key": ["a", "b", "c", "d"], "split": ["train", "query", "query", "gallery"]})
    occ = pd.DataFrame({"key": ["a", "b", "c", "d"], "z_head": [0, 1, 1, 0], "z_arms": [0, 0, 0, 0],
                        "z_torso": [0, 0, 0, 1], "z_legs": [0, 1, 1, 1]})
    idx.to_parquet(tmp_path / "i.parquet")
    occ.to_parquet(tmp_path / "o.parquet")
    c = occlusion_counts(tmp_path / "i.parquet", tmp_path / "o.parquet")
    assert c["train"][0] == 1 and c["query"][9] == 2 and c["gallery"][3] == 1
    assert all(v.sum() == n for v, n in zip(c.values(), (1, 2, 1)))


def test_ablation_switches_from_params():
    runs = parse_experiments(EXPERIMENTS)
    assert {r["name"] for r in runs} == {"workspace", "exp-base"}
    sec = table_iv_section(runs, "", DATASET)
    rows = [b for b in sec.blocks if b[0] == "table"][0][2]
    assert rows[0][:6] == ["✓", "–", "✓", "✓", "this checkout", "?"] and rows[0][6] == "31.0"
    assert rows[1][:4] == ["–", "–", "–", "–"] and rows[1][6] == "20.0"  # the baseline: every switch off



def test_fep_teacher_is_off_without_kd():
    """Without KD there is no teacher branch, so FEP-T is "–" whatever ``fep_teacher`` says (Table IV rows
    2-3); FEP-S follows its own switch."""
    from ogfr_core.report.sections.runs import _switches
    ogfr = {"train.model.method": "ogfr", "train.model.oa_vit": True, "train.model.fep_teacher": True}
    assert _switches({**ogfr, "train.model.kd": True}) == ["✓", "–", "✓", "✓"]
    assert _switches({**ogfr, "train.model.kd": False, "train.model.fep_student": True}) == ["✓", "✓", "–", "–"]
    assert _switches({**ogfr, "train.model.method": "fed", "train.model.kd": True}) == ["–", "–", "–", "–"]

def test_content_key_of_runs_with_a_missing_metric():
    """Two runs of one seed, one without a metric (None), still give a key (a fresh pipeline's own run
    beside a recorded one used to raise TypeError comparing None with a float)."""
    from ogfr_core.report.experiments import ConfigGroup
    from ogfr_core.report.sections.runs import content_key
    cols = [("mAP", f"datasets.{DATASET}.visibility.mAP")]
    runs = [{"params": {"train.seed": 0}, "metrics": {f"datasets.{DATASET}.visibility.mAP": 0.25}},
            {"params": {"train.seed": 0}, "metrics": {}}]
    key = content_key(ConfigGroup("", {}, runs), cols)
    assert key == (("0", (0.25,)), ("0", (None,)))

def _run(name, seed, r1, mAP, **params):
    return {"name": name, "params": {"train.seed": seed, "train.threads": seed, **params},
            "metrics": {f"datasets.{DATASET}.visibility.rank-1": r1, f"datasets.{DATASET}.visibility.mAP": mAP}}


def test_seeds_of_one_configuration_give_mean_and_std():
    """Runs that differ only in seed (and thread count) are one configuration: one mean ± sample-std row
    (hand-computed); validation-split runs go to their own section."""
    runs = [_run("workspace", 0, 0.30, 0.20, **{"train.model.method": "ogfr"}),
            _run("ogfr-s1", 1, 0.32, 0.22, **{"train.model.method": "ogfr"}),
            _run("ogfr-s2", 2, 0.34, 0.27, **{"train.model.method": "ogfr"}),
            _run("base-s0", 0, 0.25, 0.18, **{"train.model.method": "baseline"}),
            {"name": "val-a", "params": {"train.seed": 0, "data.val_ids": 100, "train.lr": 0.001},
             "metrics": {f"datasets.{DATASET}:val.visibility.rank-1": 0.5, f"datasets.{DATASET}:val.visibility.mAP": 0.4}}]
    rows = [b for b in table_iv_section(runs, "", DATASET).blocks if b[0] == "table"][0][2]
    assert rows[0][4:] == ["this checkout", "0, 1, 2", "32.0 ± 2.0", "23.0 ± 3.6"]  # sd of 20, 22, 27 = 3.61
    assert rows[1] == ["–", "–", "–", "–", "this checkout", "0", "25.0", "18.0"]  # the baseline
    assert len(rows) == 2  # no per-seed rows: they are in the appendix of every run
    sec = validation_section(runs, DATASET)
    assert [b for b in sec.blocks if b[0] == "table"][0][2] == [["ogfr", "common only", "val-a", "50.0", "40.0"]]
    assert any("`data.val_ids=100, train.lr=0.001`" in b[1] for b in sec.blocks if b[0] == "p")


def test_validation_table_lists_each_swept_extra_under_its_run():
    """A validation run's test-time extras (CpaCol's re-scoring at the configured weight and at each
    swept ``@w=`` weight) get one row each under the run, read from the extra's own metrics, so the
    table shows where the fusion weight was chosen."""
    val = f"datasets.{DATASET}:val"
    m = {f"{val}.visibility.rank-1": 0.59, f"{val}.visibility.mAP": 0.57}
    for variant, weight, r1 in (("cpacol_rescore", 0.3, 0.64), ("cpacol_rescore@w=1", 1.0, 0.62)):
        m.update({f"test_time_extras.{variant}": ["re-scores the top-k"], f"{val}.{variant}.options.weight": weight,
                  f"{val}.{variant}.rank-1": r1, f"{val}.{variant}.mAP": r1 - 0.05})
    runs = [_run("workspace", 0, 0.30, 0.20),
            {"name": "v-cpacol", "params": {"train.seed": 0, "data.val_ids": 100, "train.model.method": "cpacol"},
             "metrics": m}]
    tables = [b for b in validation_section(runs, DATASET).blocks if b[0] == "table"]
    assert tables[0][2] == [
        ["cpacol", "common only", "v-cpacol", "59.0", "57.0"],
        ["", "+ cpacol_rescore (re-scores the top-k; weight=0.3)", "v-cpacol", "64.0", "59.0"],
        ["", "+ cpacol_rescore@w=1 (re-scores the top-k; weight=1.0)", "v-cpacol", "62.0", "57.0"]]


def test_cpacol_test_set_probe_is_disclosed_where_its_choice_is_shown():
    """The CpaCol stage-II length was probed on the test set before the validation comparison (commit
    88db609): the report says so under the validation table (and only when a CpaCol run is listed)."""
    val = f"datasets.{DATASET}:val"
    m = {f"{val}.visibility.rank-1": 0.59, f"{val}.visibility.mAP": 0.57}
    cpacol = {"name": "v-cpacol", "params": {"train.seed": 0, "data.val_ids": 100, "train.model.method": "cpacol"},
              "metrics": m}
    other = {"name": "v-base", "params": {"train.seed": 0, "data.val_ids": 100, "train.model.method": "baseline"},
             "metrics": m}
    texts = lambda runs: [b[1] for b in validation_section(runs, DATASET).blocks if b[0] == "p"]  # noqa: E731
    with_cpacol = [t for t in texts([_run("workspace", 0, 0.3, 0.2), cpacol]) if "88db609" in t]
    assert len(with_cpacol) == 1 and "test set" in with_cpacol[0] and "stage2_epochs" in with_cpacol[0]
    assert not any("88db609" in t for t in texts([_run("workspace", 0, 0.3, 0.2), other]))


def test_repeated_runs_collapse_to_one_row():
    from ogfr_core.report.sources import parse_experiments

    data = {"params": {"params.yaml": {"data": {"train": {"model": {"method": "ogfr"}}}}},
            "metrics": {"reports/metrics.json": {"data": {"m": {"rank-1": 0.5}}}}}
    other = {"params": {"params.yaml": {"data": {"train": {"model": {"method": "baseline"}}}}},
             "metrics": {"reports/metrics.json": {"data": {"m": {"rank-1": 0.4}}}}}
    doc = [{"rev": "workspace", "name": "workspace", "data": data},
           {"rev": "abc1234", "name": "main", "data": data,
            "experiments": [{"revs": [{"rev": "def5678", "name": "baseline", "data": other}]}]}]
    assert [r["name"] for r in parse_experiments(doc)] == ["main", "baseline"]
    doc[0]["data"] = other | {"metrics": {"reports/metrics.json": {"data": {"m": {"rank-1": 0.1}}}}}
    assert [r["name"] for r in parse_experiments(doc)] == ["workspace", "main", "baseline"]
    doc.append({"rev": "0123abc", "name": "0123abc", "data": data})  # an older commit, same run as main
    assert [r["name"] for r in parse_experiments(doc)] == ["workspace", "main", "baseline"]


def test_older_commits_contribute_their_experiments_only():
    """An older commit's own metrics describe superseded code: dropped. Its experiments stay, marked
    with the commit they ran on."""
    def run(method, r1):
        return {"params": {"params.yaml": {"data": {"train": {"model": {"method": method}}}}},
                "metrics": {"reports/metrics.json": {"data": {"m": {"rank-1": r1}}}}}

    doc = [{"rev": "workspace", "data": run("ogfr", 0.5)},
           {"rev": "abc1234ffff", "name": "main", "data": run("ogfr", 0.5), "experiments": None},
           {"rev": "0123abcffff", "name": None, "data": run("ogfr", 0.3),  # older code, other numbers
            "experiments": [{"name": "kd-off", "revs": [{"rev": "9f9f9f9", "name": "kd-off",
                                                         "data": run("ogfr-nokd", 0.2)}]}]}]
    runs = parse_experiments(doc)
    assert [r["name"] for r in runs] == ["main", "kd-off @0123abc"]
    assert [r["metrics"]["m.rank-1"] for r in runs] == [0.5, 0.2]


def test_workspace_matching_head_on_params_and_evaluation_is_dropped():
    """A rerun (e.g. `make repro` in a fresh clone) whose reports/metrics.json and params equal HEAD's
    is not a second run, even if another metrics file (training loss digits) differs."""
    def node(rev, name, r1, loss):
        return {"rev": rev, "name": name, "data": {
            "params": {"params.yaml": {"data": {"train": {"model": {"method": "ogfr"}}}}},
            "metrics": {"reports/metrics.json": {"data": _metrics(r1=r1)},
                        "dvclive/metrics.json": {"data": {"train": {"loss": {"total": loss}}}}}}}

    doc = [node("workspace", None, 0.3, 13.8159), node("abc1234", "main", 0.3, 13.8158)]
    assert [r["name"] for r in parse_experiments(doc)] == ["main"]
    doc = [node("workspace", None, 0.31, 13.8159), node("abc1234", "main", 0.3, 13.8158)]
    assert [r["name"] for r in parse_experiments(doc)] == ["workspace", "main"]


def _git(cwd: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def test_a_fresh_clone_says_experiments_are_not_available(tmp_path):
    """Real git + DVC: a repository with an experiment ref, and a `git clone` of it (which does not
    copy refs/exps). The clone's ablation section says so; the original's does not."""
    from ogfr_core.report.sources import NO_EXPERIMENTS_NOTE, has_experiment_refs, load_experiments

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "params.yaml").write_text("train:\n  model:\n    method: ogfr\n")
    (repo / "reports").mkdir()
    (repo / "reports/metrics.json").write_text(json.dumps(_metrics()))
    (repo / "dvc.yaml").write_text("metrics:\n  - reports/metrics.json\nparams:\n  - params.yaml\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "run")
    head = _git(repo, "rev-parse", "HEAD").strip()
    _git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/baseline", head)  # an experiment ref, as DVC writes
    assert has_experiment_refs(repo) is True
    _git(tmp_path, "clone", "-q", str(repo), "clone")
    assert has_experiment_refs(tmp_path / "clone") is False
    assert has_experiment_refs(tmp_path) is None  # not a repository: nothing said

    runs, note = load_experiments(tmp_path / "clone")
    assert note == NO_EXPERIMENTS_NOTE and len(runs) == 1  # HEAD only (the workspace equals it)
    text = "\n".join(b[1] for b in table_iv_section(runs, note, DATASET).blocks if b[0] == "p")
    assert "not available in this clone" in text and "dvc exp pull -A origin" in text
    assert "not available in this clone" not in "\n".join(
        b[1] for b in table_iv_section(runs + runs, "", DATASET).blocks if b[0] == "p")


def _method_run(name, method, seed, r1, occ_r1, **extra):
    m = {f"datasets.{DATASET}.visibility.rank-1": r1, f"datasets.{DATASET}.visibility.mAP": r1 - 0.05,
         f"datasets.{DATASET}-occ.visibility.rank-1": occ_r1, f"datasets.{DATASET}-occ.visibility.mAP": occ_r1 - 0.05,
         "num_parameters": 5_610_000 if method == "ogfr" else 2_500_000}
    return {"name": name, "params": {"train.seed": seed, "train.model.method": method, "train.lr": 7e-4, **extra},
            "metrics": m}


def test_method_comparison_table_groups_methods_over_seeds():
    """One row per method configuration: mean ± std over seeds on both protocols, params, the benchmark's
    step time ratio and the published numbers; a configuration only OGFR ran (an ablation) is left to
    Table IV, a protocol that two methods ran is kept and named by a short cell."""
    from ogfr_core.report.sections import method_section

    runs = [_method_run("workspace", "ogfr", 0, 0.40, 0.30), _method_run("ogfr-s1", "ogfr", 1, 0.42, 0.32),
            _method_run("base-s0", "baseline", 0, 0.35, 0.20), _method_run("base-s1", "baseline", 1, 0.37, 0.22),
            _method_run("lr", "ogfr", 0, 0.1, 0.1, **{"train.lr": 1e-3})]  # not a method: another recipe
    bench = {"params_yaml": {"methods": {"ogfr": {"train_s": 1.2}, "baseline": {"train_s": 0.4}}}}
    rows = [b for b in method_section(runs, DATASET, bench).blocks if b[0] == "table"][0][2]
    assert rows[0] == ["ogfr", "this checkout", "0, 1", "41.0 ± 1.4", "36.0 ± 1.4", "31.0 ± 1.4", "26.0 ± 1.4",
                       "5.61", "1.20 (3.0×)", "76.6 / 64.7", "96.4 / 90.2"]
    assert rows[1][:4] == ["baseline", "this checkout", "0, 1", "36.0 ± 1.4"] and rows[1][7:10] == [
        "2.50", "0.40 (1.0×)", "66.4 / 59.2"]
    assert len(rows) == 2  # the lr ablation: OGFR alone under that configuration
    old = [_method_run("fed-s0", "fed", 0, 0.2, 0.1, **{"train.lr": 1e-3, "train.model.fed.momentum": 0.5})]
    rows = [b for b in method_section(runs + old, DATASET, bench).blocks if b[0] == "table"][0][2]
    assert [r[:2] for r in rows[2:]] == [["ogfr", "train.lr=0.001"], ["fed", "train.lr=0.001 + train.model.fed.momentum=0.5"]]


def test_method_comparison_table_adds_a_flagged_row_per_test_time_extra():
    """A run that evaluated a test-time extra (CpaCol's re-scoring) gets one mean row under its method,
    read from the extra's own metrics and labelled with its flags, next to the paper's headline row
    (the standard row keeps the paper's stage-I-only number)."""
    from ogfr_core.report.sections import method_section

    def run(name, seed, r1, extra_r1):
        m = {"num_parameters": 4_100_000, "test_time_extras.cpacol_rescore": ["re-scores the top-k (approx.)"]}
        for ds, off in ((DATASET, 0.0), (f"{DATASET}-occ", -0.1)):
            m.update({f"datasets.{ds}.cpacol_rescore.options.weight": 0.3,
                      f"datasets.{ds}.cpacol_rescore.options.score": "a long description of the score",
                      f"datasets.{ds}.visibility.rank-1": r1 + off, f"datasets.{ds}.visibility.mAP": r1 + off,
                      f"datasets.{ds}.cpacol_rescore.rank-1": extra_r1 + off,
                      f"datasets.{ds}.cpacol_rescore.mAP": extra_r1 + off})
        return {"name": name, "params": {"train.seed": seed, "train.model.method": "cpacol"}, "metrics": m}

    rows = [b for b in method_section([run("c0", 0, 0.30, 0.33), run("c1", 1, 0.32, 0.37)], DATASET, None).blocks
            if b[0] == "table"][0][2]
    assert len(rows) == 2 and rows[0][:3] == ["cpacol", "this checkout", "0, 1"]
    assert rows[0][9] == "69.2 / 60.7" and rows[0][3] == "31.0 ± 1.4"     # CpaCol stage I only (Table IV)
    assert rows[0][10] == "–"  # no stage-I-only Market-1501 number published: not the headline row's
    extra = rows[1]
    assert extra[1] == "+ cpacol_rescore (C1)"  # its flags are long: in the appendix
    assert extra[9] == "72.8 / 65.2" and extra[10] == "95.2 / 89.8"        # the paper's headline row
    assert extra[3:7] == ["35.0 ± 2.8", "35.0 ± 2.8", "25.0 ± 2.8", "25.0 ± 2.8"]


def test_method_comparison_one_row_for_the_same_runs_under_two_spellings():
    """Two configurations whose runs measured the same numbers seed for seed (the same runs recorded under
    params spelled differently: a value as a string, an explicit default) are one row, both cells named."""
    from ogfr_core.report.sections import method_section

    runs = [_method_run("workspace", "ogfr", 0, 0.40, 0.30), _method_run("base-s0", "baseline", 0, 0.35, 0.20),
            _method_run("base-s1", "baseline", 1, 0.37, 0.22),
            _method_run("base-s0-again", "baseline", 0, 0.35, 0.20, **{"train.lr": "0.0007"}),
            _method_run("base-s1-again", "baseline", 1, 0.37, 0.22, **{"train.lr": "0.0007"})]
    rows = [b for b in method_section(runs, DATASET, None).blocks if b[0] == "table"][0][2]
    assert [r[0] for r in rows] == ["ogfr", "baseline"]
    assert rows[1][1:4] == ["this checkout = train.lr=0.0007", "0, 1", "36.0 ± 1.4"]
    runs[-1] = _method_run("base-s1-other", "baseline", 1, 0.38, 0.22, **{"train.lr": "0.0007"})  # other numbers
    rows = [b for b in method_section(runs, DATASET, None).blocks if b[0] == "table"][0][2]
    assert rows[1][1] == "this checkout"  # not merged: not the same runs


def test_table_iv_has_no_peer_method():
    """Table IV shows OGFR's ablations (and the baseline, its every-switch-off row), never a peer."""
    from ogfr_core.report.sections import table_iv_section

    runs = [_method_run("workspace", "ogfr", 0, 0.40, 0.30), _method_run("kd-off", "ogfr", 0, 0.35, 0.25,
                                                                         **{"train.model.kd": False}),
            _method_run("base", "baseline", 0, 0.30, 0.20)] + [
        _method_run(m, m, 0, 0.71 + i / 100, 0.1) for i, m in enumerate(("fed", "pgfl_kd", "fpc", "cpacol"))]
    sec = table_iv_section(runs, "", DATASET)
    rows = [b for b in sec.blocks if b[0] == "table"][0][2]
    assert [r[4] for r in rows] == ["this checkout", "train.model.kd=False", "this checkout"]
    assert [r[:4] for r in rows][2] == ["–", "–", "–", "–"]
    text = repr(sec.blocks)
    assert not any(m in text for m in ("fed", "pgfl_kd", "fpc", "cpacol", "71.0", "72.0", "73.0", "74.0"))


def test_long_configurations_go_to_the_appendix(tmp_path):
    """A configuration string longer than a table cell's limit is a C<n> reference in the tables; the
    appendix section holds the string itself, once."""
    from ogfr_core.report.sections import ConfigRefs, method_section, runs_appendix

    long = {"occlusion.rule": "pixels", "parse.min_keypoint_visibility": 0.5}
    runs = [_method_run("workspace", "ogfr", 0, 0.40, 0.30, **{"occlusion.rule": "covered"}),
            _method_run("base", "baseline", 0, 0.30, 0.20, **{"occlusion.rule": "covered"}),
            _method_run("old-ogfr", "ogfr", 0, 0.36, 0.26, **long), _method_run("old-fed", "fed", 0, 0.2, 0.1, **long)]
    refs = ConfigRefs()
    rows = [b for b in method_section(runs, DATASET, None, refs).blocks if b[0] == "table"][0][2]
    assert [r[1] for r in rows] == ["this checkout", "this checkout", "C1", "C1"]
    appendix_rows = [b for b in runs_appendix(runs, DATASET, refs).blocks if b[0] == "table"][0][2]
    assert [r[1] for r in appendix_rows if r[2].startswith("old")] == ["C1", "C1"]
    table = [b for b in refs.section().blocks if b[0] == "table"][0][2]
    assert table == [["C1", "`occlusion.rule=pixels, parse.min_keypoint_visibility=0.5`"]]


def test_first_screen_has_ogfr_and_baseline_mean_std_and_the_verdicts(tmp_path, shared_root):
    """The first section: what was run and OGFR vs baseline as mean ± std over the seed runs of
    reports/seed_runs.json (hand-computed below), on both protocols, with the four verdicts."""
    def record(method, seed, hol, occ):
        dist = "visibility" if method == "ogfr" else "global"
        return {"name": f"t-{method}-s{seed}", "commit": "abc1234",
                "params": {"train": {"seed": seed, "model": {"method": method}}},
                "metrics": {"datasets": {DATASET: {dist: {"rank-1": hol + 0.01, "mAP": hol}},
                                         f"{DATASET}-occ": {dist: {"rank-1": occ + 0.01, "mAP": occ}}}}}

    run = make_run(tmp_path / "run", shared_root, with_optional=False)
    (run / "reports/seed_runs.json").write_text(json.dumps({"runs": [
        record("ogfr", 0, 0.36, 0.20), record("ogfr", 1, 0.38, 0.22), record("ogfr", 2, 0.40, 0.21),
        record("baseline", 0, 0.30, 0.18), record("baseline", 1, 0.32, 0.17)]}))
    md = build_report(run, DATASET, experiments=([], ""))["markdown"].read_text()
    first = md[md.index("## At a glance"):md.index("## Run setup")]
    assert "Seeds: OGFR 0, 1, 2; baseline 0, 1" in first and f"`{DATASET}-occ`" in first
    # OGFR mAP 36, 38, 40 -> 38.0 ± 2.0; occluded 20, 22, 21 -> 21.0 ± 1.0; rank-1 one point above
    assert "| OGFR (Eq. 23 distance) | 3 | 39.0 ± 2.0 | 38.0 ± 2.0 | 22.0 ± 1.0 | 21.0 ± 1.0 |" in first
    # baseline mAP 30, 32 -> 31.0 ± 1.4; occluded 18, 17 -> 17.5 ± 0.7
    assert "| baseline (global feature) | 2 | 32.0 ± 1.4 | 31.0 ± 1.4 | 18.5 ± 0.7 | 17.5 ± 0.7 |" in first
    assert "| OGFR − baseline |  | +7.0 | +7.0 | +3.5 | +3.5 |" in first
    for claim in ("(a) OGFR > baseline", "(b) OGFR's relative drop", "(c) the FEP agent", "(d) Eq. 23 distance"):
        assert claim in first
    assert "| (a) OGFR > baseline, holistic queries (mAP) | **holds** |" in first  # +7.0 ± 1.5 (Welch)


def test_z_accuracy_section_puts_each_part_under_its_column_after_a_json_round_trip():
    """z_accuracy.json is written with sorted keys (arms, head, legs, torso): the table must still read
    head, arms, torso, legs in that order, and mark the rule the validation grid chose."""
    import json

    from ogfr_core.report.sections import z_accuracy_section

    def scores(f1):
        return {p: {"precision": f, "recall": f, "f1": f, "support": 30} for p, f in f1.items()}

    f1 = {"head": 0.1, "arms": 0.2, "torso": 0.3, "legs": 0.4}
    rep = {"rule": "pixels", "lam": 5.0, "tau": None, "parts": scores(f1), "by_kind": {"object": scores(f1)},
           "any_occluded": {"truth": 0.2, "parsed": 0.1, "gap": -0.1},
           "holistic_false_positive_rate": {"any": 0.13}, "score": 0.05}
    acc = json.loads(json.dumps({"rule_in_force": {"rule": "pixels", "lam": 5.0, "tau": 0.8}, "sets": {
        "validation": {"dataset": "x-occ-val", "queries": 200, "rules": [rep],
                       "chosen": {"rule": "pixels", "lam": 5.0, "tau": None, "score": 0.05, "paper_score": 0.05,
                                  "best_other": {"rule": "hidden_fraction", "tau": 0.8, "score": 0.01}}}}},
        sort_keys=True))
    sec = z_accuracy_section(acc)
    (_, header, rows), = [b for b in sec.blocks if b[0] == "table"]
    assert header[3:7] == ["head F1 (P/R)", "arms F1 (P/R)", "torso F1 (P/R)", "legs F1 (P/R)"]
    row = next(r for r in rows if r[1] == "pixels λ=5 (chosen)" and r[2] == "all")
    assert [c.split(" ")[0] for c in row[3:7]] == ["0.10", "0.20", "0.30", "0.40"]
    assert row[7:] == ["10% / 20%", "13%", "0.05"]
    assert any("**pixels**" in b[1] for b in sec.blocks if b[0] == "p")


def test_validation_table_gains_the_occluded_validation_columns_when_evaluated():
    """A validation run that also evaluated the occluded validation set (``<dataset>-occ-val:val``) adds
    its rank-1 / mAP columns; a run without it shows '–' there."""
    occ_val = f"{DATASET}-occ-val:val"
    runs = [_run("workspace", 0, 0.30, 0.20),
            {"name": "val-a", "params": {"train.seed": 0, "data.val_ids": 100},
             "metrics": {f"datasets.{DATASET}:val.visibility.rank-1": 0.5, f"datasets.{DATASET}:val.visibility.mAP": 0.4,
                         f"datasets.{occ_val}.visibility.rank-1": 0.3, f"datasets.{occ_val}.visibility.mAP": 0.25}},
            {"name": "val-b", "params": {"train.seed": 0, "data.val_ids": 100, "train.lr": 0.001},
             "metrics": {f"datasets.{DATASET}:val.visibility.rank-1": 0.6, f"datasets.{DATASET}:val.visibility.mAP": 0.45}}]
    sec = validation_section(runs, DATASET)
    header, rows = [b for b in sec.blocks if b[0] == "table"][0][1:3]
    assert header[-4:] == ["validation rank-1", "validation mAP", "occluded validation rank-1", "occluded validation mAP"]
    by_name = {r[2]: r[3:] for r in rows}
    assert by_name["val-a"] == ["50.0", "40.0", "30.0", "25.0"]
    assert by_name["val-b"][:2] == ["60.0", "45.0"] and by_name["val-b"][2] in ("–", "")


def test_default_report_reads_the_checkout_and_records_only(tmp_path, shared_root, monkeypatch):
    """Without ``experiments`` the report never calls ``dvc exp show`` (whose answer depends on the
    machine's local experiment refs): its runs are the checkout's own (``params.yaml`` +
    ``reports/metrics.json``, named ``workspace``, the reference configuration) and the committed
    records; a record repeating the checkout's run is listed once."""
    import subprocess

    from ogfr_core.report import sources

    def no_subprocess(*a, **k):
        raise AssertionError(f"the default report ran a subprocess: {a[0] if a else k}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    run = make_run(tmp_path / "run", shared_root, with_optional=False)
    (run / "params.yaml").write_text("train:\n  seed: 0\n  model:\n    method: ogfr\ndata:\n  val_ids: 0\n")
    inputs = sources.read_inputs(run, DATASET)
    assert [r["name"] for r in inputs.experiments] == ["workspace"] and inputs.experiments_note == ""
    assert inputs.reference == {"train.seed": 0, "train.model.method": "ogfr", "data.val_ids": 0}
    assert inputs.experiments[0]["metrics"][f"datasets.{DATASET}.visibility.mAP"] == 0.25
    record = {"name": "t-ogfr-s0", "commit": "abc1234", "params": {"train": {"seed": 0, "model": {"method": "ogfr"}}},
              "metrics": _metrics()}
    (run / "reports/seed_runs.json").write_text(json.dumps({"runs": [record]}))
    inputs = sources.read_inputs(run, DATASET)
    assert [r["name"] for r in inputs.all_runs] == ["workspace"]  # the same run (same retrieval numbers)
    (run / "other.yaml").write_text("train:\n  model:\n    method: baseline\n")  # stage `--params other.yaml`
    assert sources.read_inputs(run, DATASET, paths=sources.ReportPaths(params="other.yaml")).reference == {
        "train.model.method": "baseline"}
    md = build_report(run, DATASET)["markdown"].read_text()
    assert md == build_report(run, DATASET)["markdown"].read_text()
