"""Stage `parse`: human-parsing label maps for every indexed image (OGFR §III-A1), cached as parquet.

Reads ``data/index/<data.name>.parquet`` and params ``parse`` (+ ``data.name``, ``data.root``);
writes ``data/parsing/<data.name>/`` (resumable cache, see ogfr_core.parsing.cache),
``reports/parse/summary.json`` (results only; this run's timing and cache counts go to the log)
and ``reports/parse/overlay.png``.
Run from the repository root: ``python -m stages.parse [--params params.yaml]``.
"""
from __future__ import annotations

from pathlib import Path

from ogfr_core.config import DataConfig, ParseConfig, load_section
from ogfr_core.data.index import dataset_root, read_index
from ogfr_core.data.readers import DatasetLayoutError
from ogfr_core.parsing import parse_dataset
from ogfr_core.parsing.report import write_parse_report
from ogfr_core.runtime import run_stage, setup_logging, stage_args


def main(params_path: str = "params.yaml") -> None:
    log = setup_logging()
    data = load_section(params_path, "data", DataConfig)
    cfg = load_section(params_path, "parse", ParseConfig)
    index_path = Path("data/index") / f"{data.name}.parquet"
    index = read_index(index_path)  # key, path, pid, camid, split, label, width, height; names `dvc repro index` if absent
    root = dataset_root(data, Path("."))
    if not root.is_dir():
        raise DatasetLayoutError(f"data.root {root} is not a directory; set data.root in {params_path}")
    out_dir = Path("data/parsing") / data.name
    summary = parse_dataset(index, root, cfg, out_dir)
    write_parse_report(index, root, out_dir, summary, Path("reports/parse"), cfg.overlay_grid)
    log.info("parse: %d images (%d parsed now, %d cached), coverage %.1f%%, %.1f s, %.1f images/s",
             summary.n_images, summary.parsed_now, summary.cached, 100 * summary.coverage,
             summary.parse_seconds, summary.images_per_s)


def cli(argv: list[str] | None = None) -> None:
    """``python -m stages.parse [--params FILE]``: run :func:`main` with that params file.

    Raises:
        SystemExit: code 2 for an unknown argument (argparse's usage line).
    """
    main(stage_args(__doc__, argv).params)


if __name__ == "__main__":
    run_stage(cli)
