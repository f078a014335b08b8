"""DVC stage ``train``: train OGFR (or an ablation / the baseline) on the training split.

Reads ``data:``, ``train:`` and ``occlusion:`` (the rule that recomputes z after the occlusion
augmentation) of params.yaml; needs ``data/index/<name>.parquet``,
``data/parsing/<name>/`` and ``data/occlusion/<name>.parquet``. Writes ``models/<name>/last.pt`` every
epoch (resume: re-running continues from it), ``models/<name>/model.pt`` at the end, and dvclive
metrics/plots in ``dvclive/``. Multi-GPU: ``torchrun --nproc_per_node N -m stages.train``.
Run from the repository root: ``python -m stages.train [--params params.yaml]``.
"""
from __future__ import annotations

from pathlib import Path

from ogfr_core.config import DataConfig, OcclusionConfig, TrainConfig, load_section
from ogfr_core.runtime import run_stage, setup_logging, stage_args
from ogfr_core.occlusion import rule_from_config
from ogfr_core.training.run import train_from_files


def main(params_path: str = "params.yaml") -> None:
    log = setup_logging()
    data_cfg = load_section(params_path, "data", DataConfig)
    cfg = load_section(params_path, "train", TrainConfig)
    rule = rule_from_config(load_section(params_path, "occlusion", OcclusionConfig))
    name = data_cfg.name
    summary = train_from_files(
        data_cfg, cfg, rule,
        index_path=Path("data/index") / f"{name}.parquet",
        parse_dir=Path("data/parsing") / name,
        occlusion_path=Path("data/occlusion") / f"{name}.parquet",
        out_dir=Path("models") / name,
        live_dir=Path("dvclive"),
    )
    log.info("train done: %s", summary)


def cli(argv: list[str] | None = None) -> None:
    """``python -m stages.train [--params FILE]``: run :func:`main` with that params file.

    Raises:
        SystemExit: code 2 for an unknown argument (argparse's usage line).
    """
    main(stage_args(__doc__, argv).params)


if __name__ == "__main__":
    run_stage(cli)
