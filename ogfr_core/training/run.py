"""Wiring for the `train` stage: index + parsing + occlusion labels → dataset/loader → model → Trainer.

Uses the data layer (``ogfr_core.data``: ``read_index``, ``TrainTransform``, ``ReIDImageDataset``,
``build_train_loader``) and the parsing cache (``ogfr_core.parsing.load_label_maps``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import DataConfig, TrainConfig, to_dict
from ..occlusion import OcclusionRule
from ..io import output_lock, remove_stale_temps
from ..runtime import resolve_device, seed_everything
from .checkpoint import files_hash, read_checkpoint
from .labels import MissingLabelsError, check_training_labels
from .loop import Trainer, distributed_context

log = logging.getLogger(__name__)


def load_training_labels(train: pd.DataFrame, parse_dir: Path, occlusion_path: Path, dataset: str,
                         share_columns: tuple[str, ...] | None = None
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Parsing label maps, occlusion labels z and the rule's per-part shares for every training image
    (keyed by image key).

    Args:
        share_columns: the occlusion-table columns of the rule's share
            (:attr:`ogfr_core.occlusion.OcclusionRule.state_columns`: ``hidden_*`` or ``occluder_*``);
            None (the paper's ``pixels`` rule) reads no share.

    Returns:
        ``(label_maps, z, shares)``: uint8 ``[h, w]`` maps, int64 ``[4]`` labels, float32 ``[4]`` shares
        (None when the table lacks ``share_columns`` or has NaN there, e.g. a parse backend without
        amodal maps, or ``share_columns`` is None).

    Raises:
        MissingLabelsError: the parsing folder / occlusion parquet is absent, or some training images
            have no entry (how many, examples, and which stage to re-run) — checked on the keys
            before any label map is decoded.
        FileNotFoundError: the parsing folder has no manifest (the parse stage never completed).
    """
    if not Path(parse_dir).exists():
        raise MissingLabelsError(f"parsing output {parse_dir} not found: run `dvc repro parse`")
    if not Path(occlusion_path).is_file():
        raise MissingLabelsError(f"occlusion labels {occlusion_path} not found: run `dvc repro occlusion`")
    from ..occlusion.table import Z_COLUMNS
    from ..parsing import load_label_maps, read_parsing  # the parse stage's cache readers

    keys = train["key"].astype(str).tolist()
    parsed = read_parsing(parse_dir, columns=["key"])["key"]
    occ = pd.read_parquet(occlusion_path)
    check_training_labels(keys, parsed, occ["key"].astype(str), dataset)
    label_maps = load_label_maps(parse_dir, keys=keys)
    z_rows = occ[list(Z_COLUMNS)].to_numpy(np.int64).copy()  # writable (pandas CoW arrays are read-only)
    z = dict(zip(occ["key"].astype(str), z_rows))
    hidden = None
    cols = list(share_columns or ())
    if cols and set(cols) <= set(occ.columns) and not occ[cols].isna().any().any():
        h_rows = occ[cols].to_numpy(np.float32).copy()  # [N, 4]
        hidden = dict(zip(occ["key"].astype(str), h_rows))
    return label_maps, z, hidden


def training_set_pass(model, train: pd.DataFrame, data_cfg: DataConfig, cfg: TrainConfig, device) -> None:
    """Run ``model.initialize_from_training_set`` over every training image once, in index order, with
    the test transform (resize + normalise, no augmentation) in batches of P×K (FED's memory
    initialisation, ``train.model.fed.memory_init: train_pass``)."""
    from ..data.dataset import ReIDImageDataset, build_test_loader
    from ..data.transforms import TestTransform

    aug = cfg.augment
    dataset = ReIDImageDataset(train, Path(data_cfg.root), TestTransform(data_cfg.height, data_cfg.width,
                                                                          aug.mean, aug.std))
    loader = build_test_loader(dataset, cfg.ids_per_batch * cfg.images_per_id, data_cfg.num_workers)
    log.info("%s: a pass over the %d training images before training", cfg.model.method, len(train))
    model.initialize_from_training_set({k: b[k].to(device) for k in ("image", "camid", "label")} for b in loader)


def train_from_files(data_cfg: DataConfig, cfg: TrainConfig, occlusion: OcclusionRule, *, index_path: Path, parse_dir: Path,
                     occlusion_path: Path, out_dir: Path, live_dir: Path | None = "dvclive") -> dict[str, Any]:
    """Train on the ``train`` split of the index and write ``out_dir/{last,model}.pt``.

    Rank 0 holds the advisory lock of ``out_dir`` for the whole run (:func:`ogfr_core.io.output_lock`:
    a second run on the same dataset waits for it) and first removes the temp files a killed run
    left in ``out_dir`` (they would enter DVC's cache).

    Returns:
        a summary dict (epochs, steps per epoch, device, final loss terms, init warning).

    Raises:
        IndexFileError: the index has no training images.
        MissingLabelsError / FileNotFoundError: parsing or occlusion labels missing or partial.
        ConfigError: fewer training identities than ``train.ids_per_batch``.
    """
    rank = distributed_context()[0]
    with output_lock(out_dir, "train") if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            remove_stale_temps(out_dir)
        return _train_from_files(data_cfg, cfg, occlusion, index_path=index_path, parse_dir=parse_dir,
                                 occlusion_path=occlusion_path, out_dir=out_dir, live_dir=live_dir)


def _train_from_files(data_cfg: DataConfig, cfg: TrainConfig, occlusion: OcclusionRule, *, index_path: Path, parse_dir: Path,
                      occlusion_path: Path, out_dir: Path, live_dir: Path | None = "dvclive") -> dict[str, Any]:
    """:func:`train_from_files` with ``out_dir``'s lock held (rank 0)."""
    from ..data import IndexFileError, ReIDImageDataset, TrainTransform, build_train_loader, read_index
    from ..model import build_model

    rank, world, local_rank = distributed_context()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and torch.distributed.is_available() and torch.distributed.is_initialized():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)

    index = read_index(index_path)
    train = index[index["split"] == "train"].reset_index(drop=True)
    if train.empty:
        raise IndexFileError(f"{index_path} has no training images (split == 'train'); train on a dataset "
                             f"with a train split (data.name / data.layout), or rerun `dvc repro index`")
    share_cols = occlusion.state_columns  # None under the paper's pixels rule
    label_maps, z, hidden = load_training_labels(train, parse_dir, occlusion_path, data_cfg.name, share_cols)
    if share_cols is not None and hidden is None:
        raise MissingLabelsError(f"{occlusion_path} has no {occlusion.state}_* shares, which occlusion.rule "
                                 f"{occlusion.rule} needs: rerun `dvc repro occlusion`")
    num_classes = int(train["label"].max()) + 1
    num_cameras = int(train["camid"].max()) + 1

    transform = TrainTransform(data_cfg.height, data_cfg.width, cfg.augment)
    dataset = ReIDImageDataset(train, Path(data_cfg.root), transform, label_maps=label_maps, z=z,
                               hidden=hidden)
    labels = train["label"].to_numpy(np.int64)
    # under DDP each rank has its own PK sampler over ALL identities, seeded seed + 1000·rank (an
    # independent random PK order, not a shard); 1/world of its batches make one epoch in total
    loader = build_train_loader(dataset, labels.tolist(), cfg.ids_per_batch, cfg.images_per_id,
                                cfg.seed + 1000 * rank, data_cfg.num_workers)
    steps = len(loader) // world if world > 1 else len(loader)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    if world > 1:  # samplers may differ in length: agree on the minimum, or the all-reduce hangs
        import torch.distributed as dist

        t = torch.tensor([steps], dtype=torch.long, device=device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        steps = int(t.item())

    model = build_model(cfg.model, num_classes, num_cameras, (data_cfg.height, data_cfg.width))
    if model.init_warning:
        log.warning(model.init_warning)
    meta = {
        "model": to_dict(cfg.model), "data": to_dict(data_cfg), "train": to_dict(cfg),
        "num_classes": num_classes, "num_cameras": num_cameras,
        "occlusion": dataclasses.asdict(occlusion),
        "height": data_cfg.height, "width": data_cfg.width, "epochs_trained": 0,
        "pretrained_weights": cfg.model.pretrained, "init_warning": model.init_warning,
        "method": cfg.model.method, "num_parameters": model.count_parameters(),
        # part of the resume fingerprint: upstream outputs changed ⇒ retrain, not resume
        "inputs": files_hash([index_path, parse_dir, occlusion_path]), "world_size": world,
    }

    def make_loader(epoch: int):
        loader.sampler.set_epoch(epoch)
        return loader

    # One Trainer per training phase (a method with several, e.g. CpaCol's stage I then stage II, gets
    # a fresh optimiser, schedule and DDP wrapper per phase); earlier phases live in phases/<name>/.
    phases = model.training_phases(cfg)
    live, history, resumed, phase_log = None, [], False, []
    for i, phase in enumerate(phases):
        single = len(phases) == 1
        model.set_phase(phase.name)
        phase_cfg = cfg if single else dataclasses.replace(cfg, epochs=phase.epochs, lr=phase.lr,
                                                           warmup_epochs=phase.warmup_epochs)
        phase_dir = out_dir if i == len(phases) - 1 else out_dir / "phases" / phase.name
        trainer = Trainer(model, phase_cfg, phase_dir, meta if single else dict(meta, phase=phase.name), occlusion,
                          steps, device)
        phase_resumed = trainer.resume()
        resumed = resumed or phase_resumed
        if i == 0 and not phase_resumed and model.wants_training_set_pass():
            training_set_pass(model, train, data_cfg, cfg, trainer.device)
        if i == 0 and rank == 0 and live_dir is not None:
            from dvclive import Live

            live = Live(dir=str(live_dir), resume=phase_resumed, save_dvc_exp=False, dvcyaml=None)
            live.log_params({"method": cfg.model.method, "backbone": cfg.model.backbone,
                             "pretrained": cfg.model.pretrained or "none (random init)"})
        trainer.live = live
        log.info("training %s%s on %d images (%d ids, %d cameras), %d steps/epoch x %d epochs at lr %.3g on %s",
                 cfg.model.method, "" if single else f" ({phase.name})", len(train), num_classes, num_cameras,
                 steps, phase.epochs, phase.lr, device)
        phase_history = trainer.fit(make_loader)
        history += [dict(h, epoch=len(history) + j + 1) for j, h in enumerate(phase_history)]
        phase_log.append({"name": phase.name, "epochs": phase.epochs, "lr": phase.lr,
                          "resumed_from_epoch": trainer.start_epoch if phase_resumed else 0})
    if len(phases) > 1 and rank == 0:  # model.pt: every phase's history and epochs
        from ..io import save_torch

        ck = read_checkpoint(trainer.final_path)
        ck["meta"].update(history=history, epochs_trained=len(history), phases=phase_log)
        save_torch(trainer.final_path, ck)
    if live is not None:
        live.end()
    last = history[-1] if history else {}
    # history covers every epoch of the run (resumed ones come from last.pt's meta); "final" = last epoch
    return {"epochs": sum(p.epochs for p in phases), "steps_per_epoch": steps, "device": str(device),
            "resumed": resumed, "resumed_from_epoch": phase_log[0]["resumed_from_epoch"],
            "history_epochs": len(history), "phases": phase_log,
            "final": {k: v for k, v in last.items() if isinstance(v, float) and math.isfinite(v)},
            "init_warning": model.init_warning}
