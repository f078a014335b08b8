"""Stage ``occluder``: the learned occluder mask of the ``covered`` occlusion rule (issue 21; ours).

Fine-tunes :class:`ogfr_core.occlusion.learned.OccluderSegmenter` (the hybrid stem's ImageNet
MobileNetV2 blocks 0–13 and an FPN-style head) on synthetic examples: occluders of the ``occlude:``
benchmark's kind pasted by the benchmark's own functions onto training crops, the target being the
pixels the paste changed (:func:`ogfr_core.occlusion.learned.synthesize`), and its part head on the
crop's own label map before the paste (the learned parse of the ``learned_parts`` rule). It trains on **training
identities only**, and not on the ``occlude.val_ids`` identities of the occluded validation set (the
same draw as :func:`ogfr_core.occlusion.benchmark.derive_validation_set`), whose crops score it
(held-out pixel IoU). The ``occlusion`` and ``occlude`` stages predict a mask on every image with it
(``occluder_*`` shares of the occlusion tables); the ``covered`` rule reads them.

Reads ``data/index/<data.name>.parquet``, ``data/parsing/<data.name>/``, the stem weights
(``train.model.stem_weights``) and params ``occluder`` / ``occlude``. Writes
``models/occluder/segmenter.safetensors`` and ``reports/occluder/summary.json``.
Run from the repository root: ``python -m stages.occluder [--params params.yaml]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ogfr_core.config import DataConfig, OccludeConfig, OccluderConfig, TrainConfig, load_section
from ogfr_core.data.images import load_rgb
from ogfr_core.data.index import dataset_root, hold_out_validation, read_index
from ogfr_core.io import write_json
from ogfr_core.data.occluded_benchmark import OccluderSourceError
from ogfr_core.occlusion.learned import WEIGHTS, OccluderSegmenter, SynthSpec, fit, save_segmenter
from ogfr_core.parsing import load_label_maps, read_parsing
from ogfr_core.parsing.cache import check_coverage
from ogfr_core.runtime import run_stage, setup_logging, stage_args

SUMMARY = Path("reports/occluder/summary.json")


def main(params_path: str = "params.yaml") -> None:
    log = setup_logging()
    data = load_section(params_path, "data", DataConfig)
    occl = load_section(params_path, "occlude", OccludeConfig)
    cfg = load_section(params_path, "occluder", OccluderConfig)
    stem = load_section(params_path, "train", TrainConfig).model.stem_weights
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    index = read_index(Path("data/index") / f"{data.name}.parquet")
    parse_dir = Path("data/parsing") / data.name
    check_coverage(parse_dir, index["key"], paths=index["path"])  # names `dvc repro parse` if partial
    status = read_parsing(parse_dir, columns=["status"]).set_index("key")["status"]
    # every training identity (as before data.val_ids moved some out), minus the occluded validation set's
    train = index[index["split"].isin(["train", "val_query", "val_gallery"])].assign(split="train")
    held = hold_out_validation(train, occl.val_ids) if occl.val_ids else train
    ok = held["key"].map(status).eq("ok")  # a person was found: its parse can serve as a person occluder
    fit_rows, hold_rows = held[(held["split"] == "train") & ok], held[(held["split"] != "train") & ok]
    if fit_rows["pid"].nunique() < 2:
        raise OccluderSourceError(f"{parse_dir}: fewer than 2 training identities with a parsed person; "
                                  f"check data.root and rerun `dvc repro parse`")
    rows = pd.concat([fit_rows, hold_rows])
    root = dataset_root(data, Path("."))
    maps = load_label_maps(parse_dir, keys=rows["key"])
    images = {k: np.asarray(load_rgb(root / p)) for k, p in zip(rows["key"], rows["path"])}

    def cols(frame):
        return [images[k] for k in frame["key"]], [maps[k] for k in frame["key"]], frame["pid"].to_numpy()

    spec = SynthSpec(occl.kind, tuple(occl.area), tuple(occl.edges), cfg.none_prob)
    model = OccluderSegmenter(stem, seed=cfg.seed)  # fit() seeds the rest: batches, synthesis
    result = fit(model, *cols(fit_rows), spec, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                 seed=cfg.seed, holdout=cols(hold_rows) if hold_rows["pid"].nunique() >= 2 else None,
                 threshold=cfg.threshold, part_weight=cfg.part_weight)
    save_segmenter(model, WEIGHTS)
    write_json(SUMMARY, {
        "training": {"images": int(len(fit_rows)), "identities": int(fit_rows["pid"].nunique()),
                     "steps": result.steps, "examples": result.examples, "bce": result.losses,
                     "part_cross_entropy": result.part_losses, "part_weight": cfg.part_weight},
        "holdout": {"images": int(len(hold_rows)), "identities": int(hold_rows["pid"].nunique()),
                    **result.holdout},
        "synthesis": {"kind": spec.kind, "area": list(spec.area), "edges": list(spec.edges),
                      "none_prob": spec.none_prob}})
    log.info("occluder: %d steps on %d images of %d identities; held-out pixel IoU %s", result.steps,
             len(fit_rows), fit_rows["pid"].nunique(), result.holdout.get("pixel_iou"))


def cli(argv: list[str] | None = None) -> None:
    """``python -m stages.occluder [--params FILE]``: run :func:`main` with that params file.

    Raises:
        SystemExit: code 2 for an unknown argument (argparse's usage line).
    """
    main(stage_args(__doc__, argv).params)


if __name__ == "__main__":
    run_stage(cli)
