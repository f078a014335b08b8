"""Seed and ablation runs made by the repository (issue 23 item 5): queue a grid with DVC's own queue,
then record the finished experiments into ``reports/seed_runs.json`` (what the report reads).

Usage (``make seeds`` / ``make record-seeds`` wrap these)::

    python -m ogfr_core.report.seed_runs queue --method ogfr --seeds 0 1 2 [--tag kd-off \\
        --set train.model.kd=false] [--jobs 2] [--start]
    python -m ogfr_core.report.seed_runs record [--prefix t-]
    python -m ogfr_core.report.seed_runs record --workspace t-ogfr-covered-s0   (after `dvc repro`)
    python -m ogfr_core.report.seed_runs verdicts [--set train.loss.teacher_id_weight=0.5]

``queue`` runs ``dvc exp run --queue -n <prefix><method>[-<tag>]-s<seed> -S train.seed=<seed>
-S train.model.method=<method> [-S <set> ...]`` per seed, then (``--start``) ``dvc queue start -j
<jobs>`` (each queued experiment runs the pipeline in its own temporary workspace; ``dvc queue
status`` follows them, ``dvc queue logs <name>`` shows one; ``dvc queue start`` here returns when its
workers have emptied the queue, so run ``make seeds`` in the background or a terminal multiplexer).
A relative ``data.root`` is passed as an absolute ``-S data.root=...`` (:func:`data_root_override`):
the temporary workspace lives in ``.dvc/tmp/exps/``. Only the ``index`` stage declares ``data.root`` (its
rows hold paths relative to the root, so the respelled root gives the same file), so a queued run reuses the
cached parse, occluder and occlusion stages. ``record`` reads ``dvc exp show --json
--all-commits`` and writes every finished experiment whose name starts with ``--prefix`` into
``reports/seed_runs.json`` as ``{"name", "commit", "finished", "params", "metrics", "train_metrics"}``
(nested ``params.yaml``, ``reports/metrics.json`` and ``dvclive/metrics.json`` of the run; ``commit``
= the commit it ran on), replacing a record of the same name and keeping the others. The report
(:mod:`ogfr_core.report.sources`) reads that file with :func:`~ogfr_core.report.experiments.load_recorded_runs`.
``record --workspace NAME`` records the workspace's own run instead (a plain ``dvc repro``;
:func:`workspace_record`), refused unless ``dvc status`` is clean. ``verdicts`` prints the report's
claims (a)–(d) for the checkout's configuration, or with ``--set`` for an ablation of it judged on its own
recorded seed runs (:func:`verdicts_text`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..io import write_text

SEED_RUNS = Path("reports/seed_runs.json")
EVAL_METRICS = "reports/metrics.json"
TRAIN_METRICS = "dvclive/metrics.json"  # the last epoch's training logs (agent: erased fractions, grad SNR)


def run_name(method: str, seed: int, tag: str = "", prefix: str = "t-") -> str:
    """``<prefix><method>[-<tag>]-s<seed>``, e.g. ``t-ogfr-s0``, ``t-ogfr-kd-off-s2`` (the names already
    in ``reports/seed_runs.json``).

    Raises:
        ValueError: a name DVC would refuse (characters other than letters, digits, ``-``, ``_``, ``.``).
    """
    return check_run_name(f"{prefix}{method}{'-' + tag if tag else ''}-s{seed}")


def check_run_name(name: str) -> str:
    """``name`` if DVC accepts it as an experiment name (letters, digits, ``-``, ``_``, ``.``).

    Raises:
        ValueError: any other character.
    """
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"experiment name {name!r}: use letters, digits, '-', '_' or '.' in --tag / --prefix")
    return name


def queue_commands(method: str, seeds: Iterable[int], sets: Sequence[str] = (), tag: str = "",
                   prefix: str = "t-") -> list[list[str]]:
    """One ``dvc exp run --queue`` command (argv) per seed; ``sets`` are extra ``-S key=value`` overrides.

    Raises:
        ValueError: a ``set`` that is not ``key=value``.
    """
    bad = [s for s in sets if "=" not in s]
    if bad:
        raise ValueError(f"--set needs key=value (a params.yaml key), got {bad}")
    out = []
    for seed in seeds:
        cmd = ["dvc", "exp", "run", "--queue", "-n", run_name(method, int(seed), tag, prefix),
               "-S", f"train.seed={int(seed)}", "-S", f"train.model.method={method}"]
        for s in sets:
            cmd += ["-S", s]
        out.append(cmd)
    return out


def data_root_override(params: Path = Path("params.yaml")) -> list[str]:
    """``["data.root=<absolute>"]`` when ``params``' ``data.root`` is relative, else ``[]``.

    A queued experiment runs in a temporary copy of the repository (``.dvc/tmp/exps/tmp*``), where a
    root relative to the repository (``../shared/...``) points nowhere: DVC would report the index
    stage's dataset dependency missing. The absolute path is the same folder seen from the repository.

    Raises:
        FileNotFoundError: ``params`` is missing.
    """
    import yaml

    root = str(((yaml.safe_load(params.read_text()) or {}).get("data") or {}).get("root", ""))
    if not root or Path(root).is_absolute():
        return []
    return [f"data.root={(params.resolve().parent / root).resolve()}"]


def _file_data(files: Mapping | None, name: str | None = None) -> dict:
    """The ``data`` of one file of an ``exp show`` node's params/metrics (the first when ``name`` is None)."""
    files = files or {}
    if name is not None:
        return dict((files.get(name) or {}).get("data") or {})
    for f in files.values():
        return dict((f or {}).get("data") or {})
    return {}


def records_from_exp_show(doc: Any, prefix: str = "t-") -> list[dict]:
    """Finished experiments of a ``dvc exp show --json --all-commits`` document whose name starts with
    ``prefix``, as seed-run records ``{"name", "commit", "finished", "params", "metrics"}`` (nested).

    An experiment counts as finished when it has ``reports/metrics.json``, no error, and its own data:
    a queued or running experiment (executor state other than ``success``) is shown by ``dvc exp show``
    with the *workspace's* params and metrics (``data.rev == "workspace"``), so it is skipped — recording
    it would copy the workspace's run under the experiment's name. ``commit`` is the commit the
    experiment ran on (its parent row's ``rev``); ``finished`` its DVC timestamp.
    """
    out = []
    for node in (doc if isinstance(doc, list) else [doc]):
        if not isinstance(node, Mapping) or node.get("rev") == "workspace":
            continue
        for exp in node.get("experiments") or []:
            for run in (exp.get("revs") or []) if isinstance(exp, Mapping) else []:
                if not isinstance(run, Mapping):
                    continue
                name = str(run.get("name") or exp.get("name") or "")
                data = run.get("data") or {}
                state = ((exp.get("executor") or {}).get("state") if isinstance(exp, Mapping) else None)
                if (not name.startswith(prefix) or run.get("error") or data.get("error")
                        or state not in (None, "success") or data.get("rev") == "workspace"):
                    continue
                metrics = _file_data(data.get("metrics"), EVAL_METRICS)
                if not metrics:
                    continue
                out.append({"name": name, "commit": str(node.get("rev", "")),
                            "finished": str(data.get("timestamp") or ""),
                            "params": _file_data(data.get("params"), "params.yaml"), "metrics": metrics,
                            "train_metrics": _file_data(data.get("metrics"), TRAIN_METRICS)})
    return out


def workspace_record(name: str, root: Path = Path("."), commit: str | None = None) -> dict:
    """The workspace's run (what ``dvc repro`` left in ``root``) as a seed-run record, like
    :func:`records_from_exp_show`'s: ``params.yaml``, ``reports/metrics.json``, ``dvclive/metrics.json``
    (``{}`` if absent), ``commit`` = ``git rev-parse --short HEAD`` (or ``commit``), ``finished`` = the
    metrics file's modification time (UTC, ``date``'s format).

    Raises:
        FileNotFoundError: no ``reports/metrics.json`` (names ``dvc repro``).
        ValueError: a ``name`` DVC would refuse.
    """
    import time

    import yaml

    check_run_name(name)
    metrics_path = Path(root) / EVAL_METRICS
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: no evaluation metrics in the workspace; run `dvc repro` first")
    train_path = Path(root) / TRAIN_METRICS
    if commit is None:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
    return {"name": name, "commit": commit,
            "finished": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(metrics_path.stat().st_mtime)),
            "params": yaml.safe_load((Path(root) / "params.yaml").read_text()) or {},
            "metrics": json.loads(metrics_path.read_text()),
            "train_metrics": json.loads(train_path.read_text()) if train_path.is_file() else {}}


def merge_records(doc: Mapping | None, new: Sequence[Mapping]) -> dict:
    """``reports/seed_runs.json`` with ``new`` records added; a record replaces the one of the same name
    (a rerun supersedes the old run). Runs are kept sorted by name; the ``note`` is kept."""
    doc = dict(doc or {})
    runs = {r["name"]: dict(r) for r in doc.get("runs", [])}
    for r in new:
        runs[r["name"]] = dict(r)
    doc["runs"] = [runs[k] for k in sorted(runs)]
    return doc


def _dvc(args: list[str]) -> subprocess.CompletedProcess:
    """``python -m dvc ...`` with this interpreter's ``bin/`` first on PATH: ``dvc queue start`` spawns
    its workers as ``dvc`` processes, which must be this environment's DVC (e.g. ``.venv/bin/dvc``)."""
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)


def verdicts_text(params_path: str | Path, sets: Sequence[str]) -> str:
    """The verdicts of the report's claims section (:func:`ogfr_core.report.verdicts.claims`) for the
    configuration of ``params_path`` with ``key=value`` overrides (an ablation judged on its own recorded
    seed runs; :func:`~ogfr_core.report.verdicts.override`), one claim per two lines: the numbers the
    README quotes for configurations that are not the checkout's. Reads what the report's claims read
    (:class:`~ogfr_core.report.sources.ReportPaths`, relative to the working directory): the params file,
    ``reports/metrics.json`` (the checkout's run), the two run records and ``reports/fep_probe.json``.

    Raises:
        ValueError: a bad override (:func:`~ogfr_core.report.verdicts.override`).
        MissingMetricsError: no ``reports/metrics.json`` (run ``dvc repro evaluate``).
    """
    import math

    from ..config import DataConfig, load_section
    from .experiments import load_recorded_runs
    from .sections.common import OCC_SUFFIX
    from .sources import ReportPaths, distinct_runs, read_json, read_metrics, workspace_run
    from .verdicts import claims, override, parse_sets

    parse_sets(sets)  # a malformed --set fails before any file is read
    paths = ReportPaths(params=str(params_path))
    data = load_section(params_path, "data", DataConfig)
    workspace = workspace_run(Path(paths.params), read_metrics(Path(paths.metrics)))
    recorded = load_recorded_runs(paths.seed_runs) + load_recorded_runs(paths.recipe_selection)
    runs = distinct_runs(recorded + [workspace])  # as the report's claims section: records first
    reference = override(workspace["params"], sets)
    lines = []
    for r in claims(runs, data.name, data.name + OCC_SUFFIX, read_json(Path(paths.fep_probe)), reference):
        se = f" ± {r['se']:.2f}" if math.isfinite(r["se"]) else ""
        lines += [f"{r['claim']}: {r['verdict']} ({r['diff']:+.2f}{se}; seeds {' / '.join(map(str, r['n']))})",
                  f"    {r['detail']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Queue seed / ablation runs with DVC's queue; record finished ones.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("queue", help="dvc exp run --queue one experiment per seed")
    q.add_argument("--method", default="ogfr")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--tag", default="", help="ablation tag in the run name (e.g. kd-off)")
    q.add_argument("--set", action="append", default=[], help="extra -S key=value (repeatable)")
    q.add_argument("--prefix", default="t-")
    q.add_argument("--jobs", type=int, default=2, help="dvc queue start -j (2 cores here: 2 runs of 1 thread)")
    q.add_argument("--start", action="store_true", help="also start the queue's workers")
    q.add_argument("--dry-run", action="store_true", help="print the commands only")
    r = sub.add_parser("record", help="write finished experiments into reports/seed_runs.json")
    r.add_argument("--prefix", default="t-")
    r.add_argument("--out", default=str(SEED_RUNS))
    r.add_argument("--workspace", metavar="NAME", default="",
                   help="record the workspace's `dvc repro` run as NAME (dvc status must be clean)")
    v = sub.add_parser("verdicts", help="the report's claims (a)-(d) for this checkout's configuration or an "
                                        "ablation of it (--set), from the recorded seed runs")
    v.add_argument("--params", default="params.yaml")
    v.add_argument("--set", action="append", default=[], help="key=value (repeatable): the ablation judged")
    args = ap.parse_args(argv)

    if args.cmd == "verdicts":
        try:
            print(verdicts_text(args.params, args.set))
        except (ValueError, FileNotFoundError) as exc:  # a bad --set, no metrics: one line
            v.error(str(exc))
        return 0

    if args.cmd == "queue":
        sets = [*data_root_override(), *args.set]  # a later --set data.root=... wins
        cmds = queue_commands(args.method, args.seeds, sets, args.tag, args.prefix)
        if args.start:
            cmds.append(["dvc", "queue", "start", "-j", str(args.jobs)])
        for cmd in cmds:
            print(" ".join(cmd))
            if args.dry_run:
                continue
            proc = _dvc(cmd)
            if proc.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
        return 0
    if args.workspace:
        proc = _dvc(["dvc", "status", "--json"])
        if proc.returncode != 0 or json.loads(proc.stdout or "{}"):
            sys.exit("the workspace's outputs are not those of its code and params (`dvc status` is not "
                     "clean): run `dvc repro` first")
        try:
            new = [workspace_record(args.workspace)]
        except (FileNotFoundError, ValueError) as exc:  # one line, not a traceback
            sys.exit(str(exc))
    else:
        proc = _dvc(["dvc", "exp", "show", "--json", "--all-commits"])
        if proc.returncode != 0:
            sys.exit(f"`dvc exp show --json` failed: {proc.stderr.strip()[-500:]}")
        new = records_from_exp_show(json.loads(proc.stdout or "[]"), args.prefix)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.is_file() else {"note": "Seed runs queued with `make seeds`."}
    write_text(out, json.dumps(merge_records(doc, new), indent=1) + "\n")  # atomic; the file's layout kept
    print(f"{len(new)} finished run(s) recorded in {out}: "
          + ", ".join(r["name"] for r in new))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
