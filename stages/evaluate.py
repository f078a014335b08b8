"""Stage `evaluate`: student-branch features → CMC / mAP / mINP under Eq. (23) and the global distance.

Reads ``models/<data.name>/model.pt``, ``data/index/<name>.parquet`` (query/gallery split) and
``data/occlusion/<name>.parquet`` (z is a model input), for ``data.name`` and every
``evaluate.extra_datasets`` entry (cross-dataset; cameras unseen in training use camera embedding 0).

Writes ``reports/metrics.json``, ``reports/plots/cmc.csv`` (rank vs CMC per distance),
``reports/eval/retrievals.json`` (top-5 of occluded queries, Fig. 8) and
``reports/eval/erasing_masks.json`` (FEP retain probability on holistic images, Fig. 7).

Run: ``python -m stages.evaluate [--params params.yaml]`` from the repository root.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ogfr_core.config import ConfigError, DataConfig, EvalDatasetConfig, EvaluateConfig, load_section
from ogfr_core.evaluation import FeatureSet, extract_features, map_unseen_cameras
from ogfr_core.evaluation.evaluator import (RerankParams, cmc_rows, evaluate_features, pick_queries,
                                            retrievals)
from ogfr_core.evaluation.inputs import check_meta, read_occlusion_z
from ogfr_core.io import write_json, write_text
from ogfr_core.runtime import resolve_device, setup_logging

log = logging.getLogger("stages.evaluate")

METRICS = Path("reports/metrics.json")
CMC_CSV = Path("reports/plots/cmc.csv")
RETRIEVALS = Path("reports/eval/retrievals.json")
MASKS = Path("reports/eval/erasing_masks.json")


def extract_split(model, meta, frame, split: str, root: Path, z: dict, cfg: EvaluateConfig,
                  num_workers: int, device, index_path: Path) -> FeatureSet:
    """Features of one split of an index, with its paths (relative to ``root``)."""
    from ogfr_core.data.dataset import ReIDImageDataset, build_test_loader
    from ogfr_core.data.transforms import TestTransform

    records = frame[frame["split"] == split]
    if records.empty:
        raise ValueError(f"{index_path}: no '{split}' rows; empty {split} set (rerun `dvc repro index`)")
    aug = (meta.get("train") or {}).get("augment") or {}
    mean, std = aug.get("mean", (0.5, 0.5, 0.5)), aug.get("std", (0.5, 0.5, 0.5))
    transform = TestTransform(meta["height"], meta["width"], mean, std)
    dataset = ReIDImageDataset(records, root, transform, z=z)
    loader = build_test_loader(dataset, cfg.batch_size, num_workers)
    feats = extract_features(model, loader, device, num_cameras=int(meta["num_cameras"]), progress=True)
    if feats.keys != records["key"].astype(str).tolist():
        raise RuntimeError(f"{index_path}: the {split} loader returned images out of index order")
    feats.paths = records["path"].astype(str).tolist()
    return feats


def erasing_masks(model, meta, feats: FeatureSet, z: dict, root: Path, n: int, device) -> dict:
    """FEP retain probability on ``n`` holistic test images (z = 0), for Fig. 7."""
    import torch

    from ogfr_core.data.images import load_rgb
    from ogfr_core.data.transforms import TestTransform

    if not hasattr(model, "erasing_mask"):
        return {"available": False, "reason": "the model has no erasing_mask()", "items": []}
    holistic = [i for i, k in enumerate(feats.keys) if not np.asarray(z[k]).any()][:n]
    if not holistic:
        return {"available": False, "reason": "no holistic (z = 0) test image", "items": []}
    aug = (meta.get("train") or {}).get("augment") or {}
    tf = TestTransform(meta["height"], meta["width"], aug.get("mean", (0.5,) * 3), aug.get("std", (0.5,) * 3))
    images = torch.stack([tf(load_rgb(root / feats.paths[i])) for i in holistic]).to(device)  # [n,3,H,W]
    zz = torch.as_tensor(np.stack([z[feats.keys[i]] for i in holistic])).long().to(device)  # [n, 4]
    cams = map_unseen_cameras(torch.as_tensor(feats.camids[holistic]).long(), int(meta["num_cameras"]))
    model.eval()
    with torch.inference_mode():
        mask = model.erasing_mask(images, zz, cams.to(device))
    if mask is None:
        return {"available": False, "reason": f"method '{meta['method']}' has no learned FEP agent "
                                              f"(train.model.mask_method / fep switches)", "items": []}
    mask = mask.float().cpu().numpy()  # [n, Hp, Wp]
    return {"available": True, "reason": "", "items": [
        {"key": feats.keys[i], "path": feats.paths[i], "retain": np.round(m, 4).tolist()}
        for i, m in zip(holistic, mask)]}


def evaluate_dataset(model, meta, name: str, root: Path, cfg: EvaluateConfig, num_workers: int,
                     device, want_examples: bool):
    """Metrics (per distance), CMC rows and, for the primary set, retrievals and erasing masks."""
    from ogfr_core.data.index import read_index

    index_path = Path("data/index") / f"{name}.parquet"
    frame = read_index(index_path)
    z = read_occlusion_z(Path("data/occlusion") / f"{name}.parquet")
    query = extract_split(model, meta, frame, "query", root, z, cfg, num_workers, device, index_path)
    gallery = extract_split(model, meta, frame, "gallery", root, z, cfg, num_workers, device, index_path)
    rerank = RerankParams(cfg.rerank, cfg.k1, cfg.k2, cfg.lambda_value)
    results = {}
    for kind in cfg.distances:
        results[kind] = evaluate_features(query, gallery, kind, cfg.max_rank, cfg.chunk_mb,
                                          cfg.feat_norm, rerank)
        log.info("%s / %s: %s", name, kind, results[kind].to_dict())
    entry = {kind: res.to_dict() for kind, res in results.items()}
    entry.update(num_query=len(query), num_gallery=len(gallery),
                 num_query_occluded=int(sum(np.asarray(z[k]).any() for k in query.keys)),
                 num_parts=query.num_parts, rerank=cfg.rerank)
    examples = None
    if want_examples:
        occluded = np.array([np.asarray(z[k]).any() for k in query.keys])
        picked = pick_queries(query, gallery, occluded, cfg.retrieval_queries)
        examples = {
            "retrievals": {"dataset": name, "root": str(root), "queries": retrievals(
                query, gallery, picked, cfg.distances[0], occluded, 5, cfg.chunk_mb, cfg.feat_norm)},
            "masks": dict(erasing_masks(model, meta, FeatureSet.concat([query, gallery]), z, root,
                                        cfg.mask_examples, device), dataset=name, root=str(root)),
        }
    return entry, cmc_rows(results, name), examples


def cmc_csv(rows: list[dict], primary: str) -> str:
    """Wide CSV ``rank,<distance>...``; extra datasets' columns are ``<dataset>/<distance>``."""
    cols: dict[str, dict[int, float]] = {}
    for r in rows:
        col = r["distance"] if r["dataset"] == primary else f"{r['dataset']}/{r['distance']}"
        cols.setdefault(col, {})[r["rank"]] = r["cmc"]
    ranks = sorted({r["rank"] for r in rows})
    lines = [",".join(["rank", *cols])]
    lines += [",".join([str(k)] + [str(cols[c].get(k, "")) for c in cols]) for k in ranks]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    setup_logging()
    data = load_section(args.params, "data", DataConfig)
    cfg = load_section(args.params, "evaluate", EvaluateConfig)
    if not cfg.distances or len(set(cfg.distances)) != len(cfg.distances):
        raise ConfigError(f"{args.params}: evaluate.distances must list visibility and/or global once each, "
                          f"got {list(cfg.distances)}")
    device = resolve_device(cfg.device)

    from ogfr_core.training.checkpoint import load_model

    ckpt = Path("models") / data.name / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: checkpoint not found; run `dvc repro train`")
    model, meta = load_model(ckpt, device)
    check_meta(meta, ckpt, data.name)

    sets = [EvalDatasetConfig(data.name, data.root, data.layout, data.query_camid, data.gallery_camid),
            *cfg.extra_datasets]
    metrics = {"method": meta["method"], "epochs": int(meta["epochs_trained"]),
               "backbone": (meta.get("model") or {}).get("backbone", ""),
               "pretrained_weights": meta["pretrained_weights"], "trained_on": data.name,
               "height": int(meta["height"]), "width": int(meta["width"]),
               "feat_norm": cfg.feat_norm, "datasets": {}}
    rows, examples = [], None
    for i, ds in enumerate(sets):
        entry, ds_rows, ex = evaluate_dataset(model, meta, ds.name, Path(ds.root), cfg,
                                              data.num_workers, device, want_examples=i == 0)
        metrics["datasets"][ds.name] = entry
        rows += ds_rows
        examples = examples or ex
    write_json(METRICS, metrics)
    write_text(CMC_CSV, cmc_csv(rows, data.name))
    write_json(RETRIEVALS, examples["retrievals"])
    write_json(MASKS, examples["masks"])
    log.info("wrote %s, %s, %s, %s", METRICS, CMC_CSV, RETRIEVALS, MASKS)


if __name__ == "__main__":
    main()
