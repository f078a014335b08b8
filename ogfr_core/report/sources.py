"""Sources: everything the report reads — pipeline output files and committed run records — as plain data.

Nothing here formats or decides what a section says (:mod:`.sections`); every reader returns dicts,
lists, arrays or DataFrames, and :func:`read_inputs` gathers them into one :class:`ReportInputs`.
Only ``reports/metrics.json`` is required (``dvc repro evaluate``); a missing optional input is None
(or empty) and its section says which stage makes it.

Inputs, relative to the run directory (the repository root):

==================================  =====================  ==========================================
file                                stage                  section
==================================  =====================  ==========================================
reports/metrics.json                evaluate (required)    run setup, results vs. paper
reports/seed_runs.json              (make record-seeds)    first screen, methods, Table IV, verdicts
reports/recipe_selection.json       (recorded by hand)     recipe selection (validation split)
reports/bench_model.json            benchmarks             method comparison (train s/step)
reports/fep_probe.json              fep_probe              verdict (c)
reports/plots/cmc.csv               evaluate               CMC curve
reports/eval/retrievals.json        evaluate               rank-5 retrievals (Fig. 8)
reports/eval/erasing_masks.json     evaluate               erasing masks (Fig. 7)
dvclive/plots/metrics/**.tsv        train                  training curves
data/index/<name>.parquet           index                  occlusion-type histogram (Fig. 6b)
data/occlusion/<name>.parquet       occlusion              occlusion-type histogram (Fig. 6b)
reports/parse/summary.json          parse                  parsing backend
reports/parse/overlay.png           parse                  parsing overlays
reports/occlude/*.json, *.png       occlude                occluded-query benchmark, z accuracy
params.yaml + reports/metrics.json  (the checkout's run)    every comparison (reference configuration)
``dvc exp show --json``             (opt-in, see below)    methods, Table IV, verdicts
==================================  =====================  ==========================================

The runs the comparisons read are the checkout's own (:func:`workspace_run`) and the committed records,
so the report is a function of the repository's files: a clone and the machine that ran the
experiments write the same report. This machine's unrecorded ``dvc exp`` experiments
(:func:`load_experiments`) join only when asked (``python -m stages.report --local-experiments``);
record them (``python -m ogfr_core.report.seed_runs record``) to make them part of the report.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import UserError
from .experiments import flatten, load_recorded_runs

EVAL_METRICS_FILE = "reports/metrics.json"


class MissingMetricsError(UserError, FileNotFoundError):
    """``reports/metrics.json`` is missing: the report has nothing to report."""


@dataclass(frozen=True)
class ReportPaths:
    """Where the report reads and writes, relative to ``run_dir`` unless absolute."""

    metrics: str = "reports/metrics.json"
    cmc: str = "reports/plots/cmc.csv"
    retrievals: str = "reports/eval/retrievals.json"
    masks: str = "reports/eval/erasing_masks.json"
    dvclive: str = "dvclive/plots/metrics"
    parse_summary: str = "reports/parse/summary.json"
    parse_overlay: str = "reports/parse/overlay.png"
    occlude_summary: str = "reports/occlude/summary.json"
    occlude_examples: str = "reports/occlude/examples.png"
    z_accuracy: str = "reports/occlude/z_accuracy.json"
    recipe_selection: str = "reports/recipe_selection.json"
    seed_runs: str = "reports/seed_runs.json"
    bench: str = "reports/bench_model.json"
    fep_probe: str = "reports/fep_probe.json"
    index_dir: str = "data/index"
    occlusion_dir: str = "data/occlusion"
    out_dir: str = "reports"
    params: str = "params.yaml"  # the checkout's configuration (stage `--params`): the reference of the comparisons


def read_metrics(path: Path) -> dict:
    """Read ``reports/metrics.json``.

    Raises:
        MissingMetricsError: the file is missing (names ``dvc repro evaluate``).
        ValueError: not a JSON object with a ``datasets`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingMetricsError(f"{path}: metrics not found; run `dvc repro evaluate` first")
    metrics = json.loads(path.read_text())
    if not isinstance(metrics, dict) or not isinstance(metrics.get("datasets"), dict):
        raise ValueError(f"{path}: expected an object with a 'datasets' mapping; rerun `dvc repro evaluate`")
    return metrics


def read_dvclive(metrics_dir: Path) -> dict[str, Any]:
    """Every dvclive TSV under ``metrics_dir`` → name (relative path, no suffix) → DataFrame(step, value)."""
    import pandas as pd

    out = {}
    for tsv in sorted(Path(metrics_dir).rglob("*.tsv")):
        df = pd.read_csv(tsv, sep="\t")
        value_cols = [c for c in df.columns if c not in ("timestamp", "step")]
        if "step" not in df.columns or not value_cols or df.empty:
            continue
        out[tsv.relative_to(metrics_dir).with_suffix("").as_posix()] = pd.DataFrame(
            {"step": df["step"], "value": pd.to_numeric(df[value_cols[-1]], errors="coerce")})
    return out


def occlusion_counts(index_path: Path, occlusion_path: Path) -> dict[str, np.ndarray]:
    """Images per occlusion type id (0..15) for each split of the index, keyed by image SHA-1.

    Raises:
        FileNotFoundError: either parquet is missing.
    """
    import pandas as pd

    for p in (index_path, occlusion_path):
        if not Path(p).is_file():
            raise FileNotFoundError(str(p))
    index = pd.read_parquet(index_path, columns=["key", "split"])
    occ = pd.read_parquet(occlusion_path)
    if "occ_type" not in occ.columns:
        occ["occ_type"] = 8 * occ.z_head + 4 * occ.z_arms + 2 * occ.z_torso + occ.z_legs
    merged = index.merge(occ[["key", "occ_type"]].drop_duplicates("key"), on="key", how="inner")
    return {split: np.bincount(merged.loc[merged.split == split, "occ_type"].astype(int), minlength=16)[:16]
            for split in ("train", "query", "gallery") if (merged.split == split).any()}


def load_experiments(run_dir: Path, timeout_s: float = 600) -> tuple[list[dict], str]:
    """Runs listed by ``dvc exp show --json --all-commits`` (experiments of every commit, so a
    comparison survives later commits) as ``{"name", "params", "metrics"}`` (flattened dicts).

    Returns:
        ``(runs, note)``; on failure ``([], reason)`` — never raises.
    """
    try:
        proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--all-commits"], cwd=run_dir,
                              capture_output=True,
                              text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"`dvc exp show --json` could not run ({exc})"
    if proc.returncode != 0:
        return [], f"`dvc exp show --json` failed: {proc.stderr.strip()[:300]}"
    try:
        runs = parse_experiments(json.loads(proc.stdout or "[]"))
    except ValueError as exc:
        return [], f"`dvc exp show --json` output not understood ({exc})"
    return runs, NO_EXPERIMENTS_NOTE if has_experiment_refs(run_dir) is False else ""


def workspace_run(params_path: Path, metrics: Mapping) -> dict:
    """The checkout's own run as ``{"name": "workspace", "params", "metrics"}`` (flattened, as
    :func:`parse_experiments` and :func:`~ogfr_core.report.experiments.load_recorded_runs` return them):
    the params file (``{}`` if absent) and ``metrics`` (``reports/metrics.json``). It is the reference
    configuration of the comparisons, and a run of them when no record repeats it.

    Raises:
        ConfigError: the params file is not a valid YAML mapping (:func:`ogfr_core.config.read_params`).
    """
    from ..config import read_params

    params = read_params(params_path) if Path(params_path).is_file() else {}
    return {"name": "workspace", "params": flatten(params), "metrics": flatten(dict(metrics))}


# said in the report when the repository holds no experiment refs (typically a fresh `git clone`)
NO_EXPERIMENTS_NOTE = ("`dvc exp` experiments are not available in this clone: `git clone` does not copy "
                       "experiment refs (`refs/exps/*`); fetch them with `dvc exp pull -A origin`, then "
                       "rerun `python -m stages.report`")


def has_experiment_refs(run_dir: Path) -> bool | None:
    """Whether the git repository at ``run_dir`` holds DVC experiment refs (``refs/exps/*``, which
    ``git clone`` does not copy); None when git cannot tell."""
    try:
        proc = subprocess.run(["git", "for-each-ref", "--count=1", "refs/exps/"], cwd=run_dir,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(proc.stdout.strip()) if proc.returncode == 0 else None


def parse_experiments(doc: Any) -> list[dict]:
    """Runs of DVC 3's ``exp show --json --all-commits`` document as ``{"name", "params", "metrics"}``.

    Kept: the workspace and HEAD rows, and every experiment (``dvc exp run``) of any commit — one
    made on an older commit is named ``<name> @<commit>``, the commit it ran on (its code may differ
    from HEAD's). Older commits' own rows are dropped (their committed metrics may describe
    superseded code). One row per distinct
    (params, metrics): the workspace repeats HEAD whenever nothing changed, and then HEAD's row is
    the one kept. The workspace row is also dropped when its params and its evaluation
    (``reports/metrics.json``, what the tables show) equal HEAD's, whatever other metrics files
    say (a fresh clone's rerun need not match HEAD in every training-loss digit).
    """
    runs: list[dict] = []
    evaluation: list[dict] = []  # per run: flattened reports/metrics.json

    def add(node: Mapping, name: str) -> None:
        data = node.get("data")
        if not isinstance(data, Mapping):
            return
        params = {k: v for f in (data.get("params") or {}).values() for k, v in flatten(f.get("data", {})).items()}
        metrics = {k: v for f in (data.get("metrics") or {}).values() for k, v in flatten(f.get("data", {})).items()}
        if metrics:
            runs.append({"name": name, "params": params, "metrics": metrics})
            evaluation.append(flatten(((data.get("metrics") or {}).get(EVAL_METRICS_FILE) or {}).get("data", {})))

    commits = [n for n in (doc if isinstance(doc, list) else [doc]) if isinstance(n, Mapping)]
    head_seen = False
    workspace = head = None
    for node in commits:
        rev = str(node.get("rev") or "")
        is_head = False
        if rev == "workspace":
            add(node, "workspace")
            workspace = len(runs) - 1 if runs and runs[-1]["name"] == "workspace" else None
        elif not head_seen:
            head_seen = is_head = True
            before = len(runs)
            add(node, node.get("name") or rev[:7])
            head = before if len(runs) > before else None
        for exp in node.get("experiments") or []:
            for run in (exp.get("revs") or []) if isinstance(exp, Mapping) else []:
                if isinstance(run, Mapping):
                    name = run.get("name") or exp.get("name") or str(run.get("rev", ""))[:7]
                    add(run, name if is_head or rev == "workspace" else f"{name} @{rev[:7]}")
    order = sorted(range(len(runs)), key=lambda i: runs[i]["name"] == "workspace")  # stable
    if workspace is not None and head is not None and evaluation[head] and \
            (runs[workspace]["params"], evaluation[workspace]) == (runs[head]["params"], evaluation[head]):
        order.remove(workspace)
    seen: list[tuple[dict, dict]] = []
    keep = set()
    for i in order:
        signature = (runs[i]["params"], runs[i]["metrics"])
        if signature not in seen:
            seen.append(signature)
            keep.add(i)
    return [r for i, r in enumerate(runs) if i in keep]


def distinct_runs(runs: Sequence[dict]) -> list[dict]:
    """``runs`` without repeats, first kept: a run whose metrics equal an earlier run's is the same run
    listed twice (``main`` and ``workspace`` of ``dvc exp show`` after a commit, or the checkout's own
    run that is also in ``reports/seed_runs.json``), and counting it twice would shrink the std."""
    seen, out = set(), []
    for r in runs:
        metrics = r.get("metrics", {})
        # the retrieval numbers identify a run (dvc exp show also lists other metric files, other key
        # paths); a test-time extra's numbers too: two runs may share the standard features (CpaCol's
        # stage II changes only its re-scoring row)
        key = tuple(sorted(round(float(v), 9) for k, v in metrics.items() if isinstance(v, (int, float))
                           and k.endswith((".rank-1", ".mAP")) and "datasets" in k))
        key = key or json.dumps(metrics, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out



def read_json(path: Path) -> Any:
    """The JSON document at ``path``, or None when the file is missing."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class ReportInputs:
    """Everything the report shows, read once (:func:`read_inputs`); None / empty = the input is missing.

    Attributes:
        metrics: ``reports/metrics.json`` (the checkout's own run).
        parse_backend, parse_backend_source: the parsing backend and where it was read.
        experiments, experiments_note: the checkout's run (:func:`workspace_run`), or with
            ``--local-experiments`` the ``dvc exp show`` runs (flattened ``{"name", "params", "metrics"}``,
            :func:`parse_experiments`) and why there are none, if so.
        recorded: runs of ``reports/seed_runs.json`` then ``reports/recipe_selection.json`` (same shape).
        bench, fep_probe, masks, retrievals, occlude_summary, z_accuracy: those JSON documents.
        live: dvclive series, name → DataFrame(step, value) (:func:`read_dvclive`).
        cmc: ``reports/plots/cmc.csv`` as a DataFrame.
        occlusion: split → ``[16]`` image counts per occlusion type (:func:`occlusion_counts`);
            ``occlusion_missing``: the missing parquet when None.
        occlude_examples, parse_overlay: existing PNGs (paths), else None.
    """

    metrics: dict
    parse_backend: str = "unknown"
    parse_backend_source: str = "params.yaml parse.backend"
    experiments: list[dict] = field(default_factory=list)
    experiments_note: str = ""
    recorded: list[dict] = field(default_factory=list)
    bench: dict | None = None
    fep_probe: dict | None = None
    live: dict[str, Any] = field(default_factory=dict)
    cmc: Any = None
    occlusion: dict[str, np.ndarray] | None = None
    occlusion_missing: str = ""
    masks: dict | None = None
    retrievals: dict | None = None
    occlude_summary: dict | None = None
    occlude_examples: Path | None = None
    z_accuracy: dict | None = None
    parse_overlay: Path | None = None

    @property
    def all_runs(self) -> list[dict]:
        """The checkout's run (or the ``dvc exp`` runs) then the recorded runs, each run once
        (:func:`distinct_runs`): the checkout's own run first, it is the reference of the comparisons."""
        return distinct_runs(list(self.experiments) + list(self.recorded))

    @property
    def reference(self) -> dict | None:
        """Flattened params of the checkout's configuration: the ``workspace`` run's (else the first
        ``dvc exp show`` row's); None without either (the verdicts then go by run names)."""
        runs = self.experiments
        return next((r["params"] for r in runs if r["name"] == "workspace"), runs[0]["params"] if runs else None)


def read_inputs(run_dir: Path, dataset: str, parse_backend: str = "", paths: ReportPaths = ReportPaths(),
                experiments: tuple[list[dict], str] | None = None) -> ReportInputs:
    """Read every input of the report (relative to ``run_dir`` unless absolute).

    Args:
        run_dir: the repository root of the run.
        dataset: ``data.name`` (index/occlusion parquet names).
        parse_backend: ``parse.backend`` from params, used when ``reports/parse/summary.json`` has none.
        paths: input locations.
        experiments: ``(runs, note)`` as :func:`load_experiments` returns (``--local-experiments``);
            None = the checkout's run only (:func:`workspace_run`), no ``dvc exp show``.

    Raises:
        MissingMetricsError: ``reports/metrics.json`` is missing (run ``dvc repro evaluate``).
    """
    import pandas as pd

    run_dir = Path(run_dir)
    at = lambda p: Path(p) if Path(p).is_absolute() else run_dir / p  # noqa: E731
    out = ReportInputs(read_metrics(at(paths.metrics)))
    out.parse_backend = parse_backend or "unknown"  # the parse stage's summary first, params second
    summary = read_json(at(paths.parse_summary))
    if isinstance(summary, dict) and summary.get("backend"):
        out.parse_backend, out.parse_backend_source = str(summary["backend"]), str(paths.parse_summary)
    out.experiments, out.experiments_note = (experiments if experiments is not None
                                             else ([workspace_run(at(paths.params), out.metrics)], ""))
    out.recorded = load_recorded_runs(at(paths.seed_runs)) + load_recorded_runs(at(paths.recipe_selection))
    out.bench, out.fep_probe = read_json(at(paths.bench)), read_json(at(paths.fep_probe))
    out.live = read_dvclive(at(paths.dvclive)) if at(paths.dvclive).is_dir() else {}
    out.cmc = pd.read_csv(at(paths.cmc)) if at(paths.cmc).is_file() else None
    try:
        out.occlusion = occlusion_counts(at(paths.index_dir) / f"{dataset}.parquet",
                                         at(paths.occlusion_dir) / f"{dataset}.parquet")
    except FileNotFoundError as exc:
        out.occlusion_missing = str(exc)
    out.masks, out.retrievals = read_json(at(paths.masks)), read_json(at(paths.retrievals))
    for doc in (out.masks, out.retrievals):  # image roots as absolute paths (figures read the crops)
        if isinstance(doc, dict) and doc.get("root") is not None:
            doc["root"] = str(at(doc["root"]))
    out.occlude_summary, out.z_accuracy = read_json(at(paths.occlude_summary)), read_json(at(paths.z_accuracy))
    out.occlude_examples = at(paths.occlude_examples) if at(paths.occlude_examples).is_file() else None
    out.parse_overlay = at(paths.parse_overlay) if at(paths.parse_overlay).is_file() else None
    return out
