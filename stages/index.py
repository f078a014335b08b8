"""DVC stage ``index``: list the dataset, open + hash every image, write the index and its summary.

Reads ``data:`` of params.yaml. Writes ``data/index/<data.name>.parquet`` (DESIGN.md columns) and
``reports/index/summary.json`` (images / ids / cameras per split, skipped files with reasons, junk).
Run from the repository root: ``python -m stages.index [--params params.yaml]``. Bad params or a bad
dataset folder end the run with exit code 1 and one error line naming the file/folder and the fix.
"""
from __future__ import annotations

import time
from pathlib import Path

from ogfr_core.config import DataConfig, load_section
from ogfr_core.data import build_index, dataset_root, summarize_index, write_index
from ogfr_core.io import write_json
from ogfr_core.runtime import run_stage, setup_logging, stage_args


def main(repo: Path = Path("."), params: str | Path | None = None) -> int:
    """Run the stage from ``repo`` (the repository root) with the params file ``params`` (default
    ``repo/params.yaml``); returns the process exit code.

    Raises:
        ConfigError: bad params; DatasetLayoutError / DatasetReadError: bad dataset folder;
            OutputWriteError: the index could not be written (all one line via :func:`run_stage`).
    """
    log = setup_logging()
    params_path = Path(params) if params is not None else repo / "params.yaml"
    cfg = load_section(params_path, "data", DataConfig)  # errors: one line via run_stage
    t0 = time.perf_counter()
    result = build_index(cfg, repo)
    out = repo / "data" / "index" / f"{cfg.name}.parquet"
    write_index(result.frame, out)
    summary = summarize_index(result.frame)
    summary.update(dataset=cfg.name, layout=cfg.layout, root=str(dataset_root(cfg, repo)),
                   skipped_count=len(result.skipped),
                   skipped=[{"path": p, "reason": r} for p, r in result.skipped],
                   junk_dropped=result.junk)
    write_json(repo / "reports" / "index" / "summary.json", summary)
    log.info("index %s: train %s, query %s, gallery %s; %d skipped, %d junk; %.1f s -> %s",
             cfg.name, summary["train"], summary["query"], summary["gallery"], len(result.skipped),
             result.junk, time.perf_counter() - t0, out)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``python -m stages.index [--params FILE]``: run :func:`main` in the working directory.

    Raises:
        SystemExit: code 2 for an unknown argument (argparse's usage line).
    """
    return main(Path("."), stage_args(__doc__, argv).params)


if __name__ == "__main__":
    run_stage(cli)
