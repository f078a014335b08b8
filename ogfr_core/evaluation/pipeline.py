"""The `evaluate` stage's work, end to end: checkpoint + index + occlusion labels → metrics.

For ``data.name`` and every ``evaluate.extra_datasets`` entry (cross-dataset evaluation; cameras
unseen in training use camera embedding 0): student-branch features of the query and gallery
splits, CMC / mAP / mINP under each distance of ``evaluate.distances`` (Eq. 23 ``visibility`` and
``global``), CMC rows for the DVC plot, and — for the primary set — rank-5 retrievals of occluded
queries (Fig. 8) and FEP retain probabilities on holistic images (Fig. 7).

Raises (from :func:`run_evaluation`): ``FileNotFoundError`` for a missing checkpoint (names
``dvc repro train``), ``ValueError`` for a checkpoint of another dataset/config or an empty split.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError, DataConfig, EvalDatasetConfig, EvaluateConfig
from .evaluator import RerankParams, cmc_rows, evaluate_features, pick_queries, retrievals
from .features import FeatureSet, extract_features, map_unseen_cameras
from .inputs import check_meta, read_occlusion_z

log = logging.getLogger(__name__)


def split_loader(meta, frame, split: str, root: Path, z: dict, cfg: EvaluateConfig, num_workers: int,
                 index_path: Path):
    """``(records, loader)`` of one split of an index, in index order, with the test transform."""
    from ..data.dataset import ReIDImageDataset, build_test_loader
    from ..data.transforms import TestTransform

    records = frame[frame["split"] == split]
    if records.empty:
        raise ValueError(f"{index_path}: no '{split}' rows; empty {split} set (rerun `dvc repro index`)")
    aug = (meta.get("train") or {}).get("augment") or {}
    mean, std = aug.get("mean", (0.5, 0.5, 0.5)), aug.get("std", (0.5, 0.5, 0.5))
    transform = TestTransform(meta["height"], meta["width"], mean, std)
    dataset = ReIDImageDataset(records, root, transform, z=z)
    return records, build_test_loader(dataset, cfg.batch_size, num_workers)


def extract_split(model, meta, frame, split: str, root: Path, z: dict, cfg: EvaluateConfig,
                  num_workers: int, device, index_path: Path) -> FeatureSet:
    """Features of one split of an index, with its paths (relative to ``root``)."""
    records, loader = split_loader(meta, frame, split, root, z, cfg, num_workers, index_path)
    feats = extract_features(model, loader, device, num_cameras=int(meta["num_cameras"]), progress=True)
    if feats.keys != records["key"].astype(str).tolist():
        raise RuntimeError(f"{index_path}: the {split} loader returned images out of index order")
    feats.paths = records["path"].astype(str).tolist()
    return feats


def erasing_masks(model, meta, feats: FeatureSet, z: dict, root: Path, n: int, device) -> dict:
    """FEP retain probability on ``n`` holistic test images (z = 0), for Fig. 7."""
    import torch

    from ..data.images import load_rgb
    from ..data.transforms import TestTransform

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
                     device, want_examples: bool, splits: tuple[str, str] = ("query", "gallery"),
                     label: str | None = None):
    """Metrics (per distance), CMC rows and, for the primary set, retrievals, erasing masks and the
    FEP diagnostics (:mod:`~ogfr_core.evaluation.fep_diagnostics`).

    ``splits`` = the index's (query, gallery) split names — ``("val_query", "val_gallery")`` for the
    validation split held out of the training identities (``data.val_ids``); ``label`` names the
    entry in metrics/CMC (default ``name``)."""
    from ..data.index import read_index

    label = label or name
    index_path = Path("data/index") / f"{name}.parquet"
    frame = read_index(index_path)
    z = read_occlusion_z(Path("data/occlusion") / f"{name}.parquet")
    query = extract_split(model, meta, frame, splits[0], root, z, cfg, num_workers, device, index_path)
    gallery = extract_split(model, meta, frame, splits[1], root, z, cfg, num_workers, device, index_path)
    rerank = RerankParams(cfg.rerank, cfg.k1, cfg.k2, cfg.lambda_value)
    results = {}
    for kind in cfg.distances:
        results[kind] = evaluate_features(query, gallery, kind, cfg.max_rank, cfg.chunk_mb,
                                          cfg.feat_norm, rerank)
        log.info("%s / %s: %s", label, kind, results[kind].to_dict())
    entry = {kind: res.to_dict() for kind, res in results.items()}
    kind_of_set = "val" if splits[0].startswith("val") or label.endswith(":val") else "test"  # val: held-out training ids
    for extra in model.test_time_extras(cfg, kind_of_set):
        extra_results, extra_entries = evaluate_extra(extra, model, meta, frame, splits, root, z, cfg,
                                                      num_workers, device, index_path, query, gallery,
                                                      kind_of_set)
        results.update(extra_results)
        entry.update(extra_entries)
    if cfg.oracle_occlusion and splits[0] == "query":
        entry.update(oracle_rows(model, meta, frame, root, z, cfg, num_workers, device, index_path, gallery))
    if cfg.part_map and query.num_parts:  # each part feature alone, and Eq. (22)'s visible-part counts
        from .parts import per_part_map, visible_part_histogram

        entry["part_map"] = per_part_map(query, gallery, cfg.max_rank, cfg.chunk_mb, cfg.feat_norm)
        occ_q = np.array([np.asarray(z[k]).any() for k in query.keys], bool)
        entry["visible_parts"] = {"rule": cfg.visibility,
                                  "holistic_queries": visible_part_histogram(query.visibility[~occ_q]),
                                  "occluded_queries": visible_part_histogram(query.visibility[occ_q]),
                                  "gallery": visible_part_histogram(gallery.visibility)}
    entry.update(num_query=len(query), num_gallery=len(gallery),
                 num_query_occluded=int(sum(np.asarray(z[k]).any() for k in query.keys)),
                 num_parts=query.num_parts, rerank=cfg.rerank, splits=list(splits))
    examples = None
    if want_examples and cfg.fep_images > 0:
        from .fep_diagnostics import fep_diagnostics

        records = frame[frame["split"].isin(splits)]
        entry["fep"] = fep_diagnostics(model, meta, records, root, z, Path("data/parsing") / name, device,
                                       max_images=cfg.fep_images, batch_size=cfg.batch_size)
    if want_examples:
        occluded = np.array([np.asarray(z[k]).any() for k in query.keys])
        picked = pick_queries(query, gallery, occluded, cfg.retrieval_queries)
        examples = {
            "retrievals": {"dataset": name, "root": str(root), "queries": retrievals(
                query, gallery, picked, cfg.distances[0], occluded, 5, cfg.chunk_mb, cfg.feat_norm)},
            "masks": dict(erasing_masks(model, meta, FeatureSet.concat([query, gallery]), z, root,
                                        cfg.mask_examples, device), dataset=name, root=str(root)),
        }
    return entry, cmc_rows(results, label), examples


ORACLE_FLAG = "oracle_occlusion_labels"
ORACLE_LABEL = "oracle occlusion labels: the queries' ground-truth z, not available at test time"


def oracle_rows(model, meta, frame, root: Path, z: dict, cfg: EvaluateConfig, num_workers: int, device,
                index_path: Path, gallery: FeatureSet) -> dict:
    """The "oracle occlusion labels" rows of a derived occluded set (its ``root`` holds the ground truth
    ``z_truth.parquet``, :mod:`ogfr_core.occlusion.truth`): the queries' features extracted again with
    their *true* z under the occlusion rule the checkpoint was trained with (``meta["occlusion"]``;
    Eq. 2 with λ = 5 for checkpoints older than that field), ranked against the same gallery features,
    one flagged entry ``oracle_z:<distance>`` per distance. Separates "the labels are wrong" from "the
    model cannot use them"; never a headline number. ``{}`` for a set without a ground truth.

    Raises:
        OcclusionTruthError: the truth table lacks some query (rerun ``dvc repro occlude``).
    """
    import pandas as pd

    from ..occlusion import OcclusionRule
    from ..occlusion.truth import TRUTH_FILE, OcclusionTruthError, true_z

    path = Path(root) / TRUTH_FILE
    if not path.is_file():
        return {}
    truth = pd.read_parquet(path).set_index("key")
    rule = OcclusionRule(**(meta.get("occlusion") or {}))
    queries = frame.loc[frame["split"] == "query", "key"].astype(str)
    missing = queries[~queries.isin(truth.index)]
    if len(missing):
        raise OcclusionTruthError(f"{path}: {len(missing)} queries of {index_path} have no ground truth "
                                  f"(e.g. {missing.iloc[0][:12]}…): rerun `dvc repro occlude`")
    rows = truth.loc[queries]
    zt = true_z(rule, rows, (int(rows["label_height"].iloc[0]), int(rows["label_width"].iloc[0])))  # [Q, 4]
    oracle_z = {**z, **{k: row for k, row in zip(queries, zt)}}
    query = extract_split(model, meta, frame, "query", root, oracle_z, cfg, num_workers, device, index_path)
    rerank = RerankParams(cfg.rerank, cfg.k1, cfg.k2, cfg.lambda_value)
    out = {}
    for kind in cfg.distances:
        res = evaluate_features(query, gallery, kind, cfg.max_rank, cfg.chunk_mb, cfg.feat_norm, rerank)
        out[f"oracle_z:{kind}"] = dict(res.to_dict(), flags=[ORACLE_FLAG], flag_labels=[ORACLE_LABEL],
                                       options={"rule": rule.describe(), "queries_with_true_occlusion":
                                                int(zt.any(1).sum())})
        log.info("%s / oracle z / %s: %s", index_path.stem, kind, res.to_dict())
    return out


def evaluate_extra(extra, model, meta, frame, splits: tuple[str, str], root: Path, z: dict,
                   cfg: EvaluateConfig, num_workers: int, device, index_path: Path, query: FeatureSet,
                   gallery: FeatureSet, kind: str) -> tuple[dict, dict]:
    """Run one test-time extra (:mod:`.extras`) of the model on a (query, gallery) pair.

    Returns:
        ``(results, entries)``: ``{variant: RankResult}`` and ``{variant: metrics dict + "flags",
        "flag_labels", "options", "seconds", "seconds_per_query"}`` for the dataset's metrics entry.
    """
    import tempfile
    import time

    import torch

    from .extras import FLAGS, ExtraContext, run_extra
    from .features import map_unseen_cameras

    def batches(which: str):
        feats = query if which == "query" else gallery
        _, loader = split_loader(meta, frame, splits[0 if which == "query" else 1], root, z, cfg, num_workers,
                                 index_path)
        start = 0
        for batch in loader:
            b = batch["image"].shape[0]
            if list(batch["key"]) != feats.keys[start:start + b]:
                raise RuntimeError(f"{index_path}: the {which} loader returned images out of index order")
            cams = map_unseen_cameras(torch.as_tensor(batch["camid"]).long(), int(meta["num_cameras"]))
            yield slice(start, start + b), {"image": batch["image"].to(device),
                                            "z": torch.as_tensor(batch["z"]).long().to(device),
                                            "camid": cams.to(device)}
            start += b

    if cfg.rerank:
        log.info("test-time extra %s: not combined with k-reciprocal re-ranking (evaluate.rerank)", extra.name)
    t0 = time.perf_counter()
    model.eval()
    with tempfile.TemporaryDirectory(prefix="ogfr-extra-") as scratch, torch.inference_mode():
        ctx = ExtraContext(query, gallery, batches, device, cfg.chunk_mb, cfg.feat_norm, Path(scratch), kind)
        results = run_extra(extra, ctx, cfg.max_rank)
    seconds = time.perf_counter() - t0
    entries = {}
    for variant, res in results.items():
        entries[variant] = dict(res.to_dict(), flags=list(extra.flags),
                                flag_labels=[FLAGS.get(f, f) for f in extra.flags],
                                options=extra.options(variant), seconds=round(seconds, 3),
                                seconds_per_query=round(seconds / max(1, len(query)), 6))
        log.info("%s (test-time extra, %s): %s", variant, "; ".join(entries[variant]["flag_labels"]),
                 res.to_dict())
    return results, entries


def unused_method_options(cfg: EvaluateConfig, method: str) -> list[str]:
    """``evaluate.<m>.<switch>`` options that are on for a registered method ``m`` other than the
    checkpoint's ``method`` (they do nothing for it): the keys, for a warning."""
    import dataclasses

    from ..model import METHODS

    out = []
    for name in METHODS:
        sub = getattr(cfg, name, None)
        if name == method or not dataclasses.is_dataclass(sub):
            continue
        out += [f"evaluate.{name}.{f.name}" for f in dataclasses.fields(sub) if getattr(sub, f.name) is True]
    return out


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


@dataclass
class EvaluationOutputs:
    """Everything the stage writes: ``metrics`` (reports/metrics.json), ``cmc_csv`` (DVC plot),
    ``retrievals`` (Fig. 8 input) and ``masks`` (Fig. 7 input)."""

    metrics: dict
    cmc_csv: str
    retrievals: dict
    masks: dict


def run_evaluation(data: DataConfig, cfg: EvaluateConfig, checkpoint: Path, device) -> EvaluationOutputs:
    """Evaluate the student branch of ``checkpoint`` on ``data`` (+ ``cfg.extra_datasets``)."""
    from ..training.checkpoint import load_model

    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found; run `dvc repro train`")
    model, meta = load_model(checkpoint, device)
    check_meta(meta, checkpoint, data.name)
    if hasattr(model, "visibility_rule"):  # Eq. (22) reading (evaluate.visibility)
        model.visibility_rule = cfg.visibility

    sets = [EvalDatasetConfig(data.name, data.root, data.layout, data.query_camid, data.gallery_camid)]
    metrics = {"method": meta["method"], "epochs": int(meta["epochs_trained"]),
               "backbone": (meta.get("model") or {}).get("backbone", ""),
               "pretrained_weights": meta["pretrained_weights"], "trained_on": data.name,
               "patch_embed": (meta.get("model") or {}).get("patch_embed", "conv"),
               "stem_weights": (meta.get("model") or {}).get("stem_weights", ""),
               "num_parameters": int(meta.get("num_parameters") or model.count_parameters()),
               "height": int(meta["height"]), "width": int(meta["width"]),
               "feat_norm": cfg.feat_norm, "datasets": {}}
    from ..data.index import read_index

    jobs = []  # (dataset config, (query split, gallery split), label)
    has_val = (read_index(Path("data/index") / f"{data.name}.parquet")["split"] == "val_query").any()
    want = [ds for ds in cfg.extra_datasets if ds.split in cfg.sets and (ds.split == "test" or has_val)]
    for ds in want:
        if not (Path("data/index") / f"{ds.name}.parquet").is_file():
            raise FileNotFoundError(
                f"evaluate.extra_datasets: data/index/{ds.name}.parquet not found — make it first: "
                f"`dvc repro occlude` for the occluded-query benchmark, or the index/parse/occlusion "
                f"stages with `data` pointing at {ds.root}; or remove the entry")
    if "test" in cfg.sets:
        jobs += [(ds, ("query", "gallery"), ds.name) for ds in [sets[0], *want] if ds.split == "test"]
    if "val" in cfg.sets and has_val:
        jobs.append((sets[0], ("val_query", "val_gallery"), f"{data.name}:val"))
        jobs += [(ds, ("query", "gallery"), f"{ds.name}:val") for ds in want if ds.split == "val"]
    if not jobs:
        raise ConfigError(f"evaluate.sets = {list(cfg.sets)} leaves nothing to evaluate (the index has no "
                          f"validation split: set data.val_ids > 0, or add 'test')")
    metrics["validation_ids"] = int(data.val_ids)
    ignored = unused_method_options(cfg, meta["method"])
    if ignored:
        log.warning("%s: on, but the checkpoint's method is %s — ignored", ", ".join(ignored), meta["method"])
    rows, examples = [], None
    for i, (ds, splits, label) in enumerate(jobs):
        entry, ds_rows, ex = evaluate_dataset(model, meta, ds.name, Path(ds.root), cfg, data.num_workers,
                                              device, want_examples=i == 0, splits=splits, label=label)
        metrics["datasets"][label] = entry
        rows += ds_rows
        examples = examples or ex
    # which test-time extras produced numbers (the report flags them: not the standard protocol)
    metrics["test_time_extras"] = {k: v["flag_labels"] for e in metrics["datasets"].values()
                                   for k, v in e.items() if isinstance(v, dict) and "flags" in v}
    return EvaluationOutputs(metrics, cmc_csv(rows, jobs[0][2]), examples["retrievals"], examples["masks"])
