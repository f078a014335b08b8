"""Stage `report`: ``reports/report.md`` + self-contained ``reports/report.html`` + ``reports/figures``.

Everything comes from the pipeline's outputs (see :mod:`ogfr_core.report.sources` for the inputs and
which stage makes each); only ``reports/metrics.json`` is required.

Run: ``python -m stages.report [--params params.yaml] [--local-experiments]`` from the repository root.
The comparisons read the checkout's run and the committed records (``reports/seed_runs.json``,
``reports/recipe_selection.json``), so every clone writes the same report; ``--local-experiments`` adds
this machine's ``dvc exp`` runs (``dvc exp show``), e.g. to look at runs not recorded yet.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ogfr_core.config import DataConfig, ReportConfig, load_section, read_params
from ogfr_core.report import ReportPaths, build_report, load_experiments
from ogfr_core.runtime import run_stage, setup_logging, stage_parser

log = logging.getLogger("stages.report")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--local-experiments", action="store_true",
                        help="also compare this machine's `dvc exp` runs (dvc exp show), not only the committed records")
    args = parser.parse_args(argv)
    setup_logging()
    data = load_section(args.params, "data", DataConfig)
    cfg = load_section(args.params, "report", ReportConfig)
    backend = str((read_params(args.params).get("parse") or {}).get("backend", ""))
    experiments = load_experiments(Path(".")) if args.local_experiments else None
    out = build_report(Path("."), data.name, backend, cfg.num_retrieval_queries, cfg.num_mask_examples, experiments,
                       ReportPaths(params=str(args.params)))
    log.info("wrote %s, %s and %d figures", out["markdown"], out["html"], len(out["figures"]))


if __name__ == "__main__":
    run_stage(main)
