"""Stage ``occlude``: the occluded-query benchmark derived from ``data`` (issue: no occluded set here).

Every query of ``data`` gets one synthetic occluder (a training pedestrian or a training background
region, entering from the bottom/left/right edge, 20–50 % of the crop by default; params ``occlude``),
deterministically from ``occlude.seed`` and the image's key; the gallery is unchanged. The derived set
``<data.name><occlude.suffix>`` is then indexed, parsed and occlusion-labelled with the same functions
as the ``index``/``parse``/``occlusion`` stages, so its queries' z come from the parsing of the occluded
images (:mod:`ogfr_core.occlusion.benchmark`). ``evaluate.extra_datasets`` lists it, so every method is
evaluated on both protocols.

Writes ``data/derived/<derived>/`` (occluded query PNGs, gallery symlinks, ``occluders.parquet``),
``data/index|parsing|occlusion`` for ``<derived>``, ``reports/occlude/summary.json`` and
``reports/occlude/examples.png`` (dataset pixels: DVC-cached only), and the same occluded set built from
training identities (``<derived>-val``, ``occlude.val_ids``) and its gallery-occluded twin
(``<derived>-val-gallery``), on which two together the occlusion rule is chosen;
``reports/occlude/z_accuracy.json`` scores the parsed z of both against their ground truth (the holistic
parse with the occluder's pixels hidden, :mod:`ogfr_core.occlusion.truth`); every image's occluder mask
comes from the ``occluder`` stage's segmenter, as in the ``occlusion`` stage.
Run: ``python -m stages.occlude [--params params.yaml]``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ogfr_core.config import ConfigError, DataConfig, OccludeConfig, OcclusionConfig, ParseConfig, load_section
from ogfr_core.data.index import dataset_root
from ogfr_core.io import write_json
from ogfr_core.occlusion import rule_from_config
from ogfr_core.occlusion.benchmark import (derive_occluded_set, derive_validation_set, example_pairs, pooled,
                                          z_accuracy)
from ogfr_core.occlusion.learned import occluder_masker
from ogfr_core.occlusion.truth import OcclusionTruthError
from ogfr_core.parsing.overlay import overlay_grid
from ogfr_core.runtime import run_stage, setup_logging, stage_args

REPORT_DIR = Path("reports/occlude")


def main(params_path: str = "params.yaml") -> None:
    log = setup_logging()
    data = load_section(params_path, "data", DataConfig)
    parse_cfg = load_section(params_path, "parse", ParseConfig)
    rule = rule_from_config(load_section(params_path, "occlusion", OcclusionConfig))
    cfg = load_section(params_path, "occlude", OccludeConfig)
    if cfg.val_ids < 1:  # dvc.yaml lists the validation set's outputs: the stage must make them
        raise ConfigError(f"{params_path} occlude.val_ids: must be >= 1 for the occlude stage (its outputs include "
                          "the occluded validation set <derived>-val that chooses the occlusion rule)")
    label_hw = (parse_cfg.label_height, parse_cfg.label_width)
    masks = occluder_masker(params_path, rule, label_hw)
    derived = derive_occluded_set(data, parse_cfg, rule, cfg, Path("."), masks)
    val = derive_validation_set(data, parse_cfg, rule, cfg, Path("."), masks)
    val_gallery = derive_validation_set(data, parse_cfg, rule, cfg, Path("."), masks, occluded="gallery")
    holistic_path = Path("data/occlusion") / f"{data.name}.parquet"
    if not holistic_path.is_file():
        raise OcclusionTruthError(f"{holistic_path} not found (the holistic queries' z): run `dvc repro occlusion`")
    holistic = pd.read_parquet(holistic_path)
    sets = {"validation": pooled(val, val_gallery), "test": derived}
    accuracy = z_accuracy(rule, sets, holistic, label_hw, tuple(cfg.tau_grid), "validation")
    write_json(REPORT_DIR / "summary.json", {**derived.summary, "validation_set": val.summary,
                                             "validation_gallery_set": val_gallery.summary})
    write_json(REPORT_DIR / "z_accuracy.json", accuracy)
    if cfg.examples:
        images, maps, titles = example_pairs(derived, Path("."), dataset_root(data, Path(".")), cfg.examples,
                                             rule, label_hw)
        overlay_grid(images, maps, titles, REPORT_DIR / "examples.png",
                     suptitle=f"{derived.name}: original and occluded queries with their parsing; "
                              f"z ({rule.describe()}) parsed vs truth")
    log.info("occlude: wrote %s (%d queries, %d gallery)", derived.root, *derived.summary["index"].values())


def cli(argv: list[str] | None = None) -> None:
    """``python -m stages.occlude [--params FILE]``: run :func:`main` with that params file.

    Raises:
        SystemExit: code 2 for an unknown argument (argparse's usage line).
    """
    main(stage_args(__doc__, argv).params)


if __name__ == "__main__":
    run_stage(cli)
