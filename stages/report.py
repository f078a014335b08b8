"""Stage `report`: ``reports/report.md`` + self-contained ``reports/report.html`` + ``reports/figures``.

Everything comes from the pipeline's outputs (see :mod:`ogfr_core.report.sources` for the inputs and
which stage makes each); only ``reports/metrics.json`` is required.

Run: ``python -m stages.report [--params params.yaml]`` from the repository root.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ogfr_core.config import DataConfig, ReportConfig, load_section, read_params
from ogfr_core.report import build_report
from ogfr_core.runtime import run_stage, setup_logging, stage_args

log = logging.getLogger("stages.report")


def main(argv: list[str] | None = None) -> None:
    args = stage_args(__doc__, argv)
    setup_logging()
    data = load_section(args.params, "data", DataConfig)
    cfg = load_section(args.params, "report", ReportConfig)
    backend = str((read_params(args.params).get("parse") or {}).get("backend", ""))
    out = build_report(Path("."), data.name, backend, cfg.num_retrieval_queries, cfg.num_mask_examples)
    log.info("wrote %s, %s and %d figures", out["markdown"], out["html"], len(out["figures"]))


if __name__ == "__main__":
    run_stage(main)
