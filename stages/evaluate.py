"""Stage `evaluate` (thin): params → :func:`ogfr_core.evaluation.pipeline.run_evaluation` → files.

Reads ``models/<data.name>/model.pt``, ``data/index/<name>.parquet`` and
``data/occlusion/<name>.parquet``. Writes ``reports/metrics.json``, ``reports/plots/cmc.csv``
(rank vs CMC per distance), ``reports/eval/retrievals.json`` (Fig. 8) and
``reports/eval/erasing_masks.json`` (Fig. 7).

Run: ``python -m stages.evaluate [--params params.yaml]`` from the repository root.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ogfr_core.config import ConfigError, DataConfig, EvaluateConfig, load_section
from ogfr_core.evaluation.pipeline import run_evaluation
from ogfr_core.io import write_json, write_text
from ogfr_core.runtime import resolve_device, run_stage, setup_logging, stage_args

log = logging.getLogger("stages.evaluate")

METRICS = Path("reports/metrics.json")
CMC_CSV = Path("reports/plots/cmc.csv")
RETRIEVALS = Path("reports/eval/retrievals.json")
MASKS = Path("reports/eval/erasing_masks.json")


def main(argv: list[str] | None = None) -> None:
    args = stage_args(__doc__, argv)
    setup_logging()
    data = load_section(args.params, "data", DataConfig)
    cfg = load_section(args.params, "evaluate", EvaluateConfig)
    if not cfg.distances or len(set(cfg.distances)) != len(cfg.distances):
        raise ConfigError(f"{args.params}: evaluate.distances must list visibility and/or global once each, "
                          f"got {list(cfg.distances)}")
    out = run_evaluation(data, cfg, Path("models") / data.name / "model.pt", resolve_device(cfg.device))
    write_json(METRICS, out.metrics)
    write_text(CMC_CSV, out.cmc_csv)
    write_json(RETRIEVALS, out.retrievals)
    write_json(MASKS, out.masks)
    log.info("wrote %s, %s, %s, %s", METRICS, CMC_CSV, RETRIEVALS, MASKS)


if __name__ == "__main__":
    run_stage(main)
