"""The training loop (OGFR §IV-B): SGD + warm-up/cosine, PK batches, occlusion augmentation for the
student, AMP on CUDA (fp16) and optionally on CPU (bf16, ``amp_cpu``), DDP under ``torchrun``, atomic
per-epoch checkpoints with automatic resume, dvclive logging, non-finite-loss guard.

Reproducibility: at the start of epoch ``e`` the loop seeds torch with ``seed + e`` and its own CPU
generator (occlusion augmentation, agent actions) with ``seed · 1000 + e``, and asks the caller for
that epoch's loader (the stage seeds the PK sampler with ``seed + e``). A run resumed from
``last.pt`` at an epoch boundary therefore continues exactly as an uninterrupted run, and two CPU
runs with the same seed give identical metrics.

Resume means "continue an interrupted IDENTICAL run": ``last.pt`` is reused only when its
``fingerprint`` (:func:`~ogfr_core.training.checkpoint.run_fingerprint`: result-relevant ``train`` /
``data`` params + a hash of the training code) equals the current one. Otherwise (DVC re-runs
``train`` exactly because params or code changed, and ``models/<name>/`` persists) a warning says
what differs and training starts afresh, overwriting ``last.pt``. Per-epoch history is kept in the
checkpoint meta, so a resumed run's history covers all epochs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

from ..config import TrainConfig
from ..data.occlusion_aug import occlusion_augment
from ..errors import UserError
from ..occlusion import OcclusionRule
from .agent_stats import CI_SUFFIXES, grad_snr, mean_ci95
from .checkpoint import CheckpointError, load_state_strict, read_checkpoint, run_fingerprint, save_checkpoint, unwrap
from .optim import build_optimizer
from .schedule import build_scheduler

log = logging.getLogger(__name__)


def cpu_bf16_support() -> bool | None:
    """Whether the CPU has native bf16 arithmetic (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``'s
    flags, what oneDNN's bf16 kernels need); None where ``/proc/cpuinfo`` cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _to_float32(obj: Any) -> Any:
    """``obj`` with every bf16/fp16 tensor inside dicts, lists and tuples cast to float32 (differentiable;
    float32 and integer tensors are returned as they are, no copy)."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype in (torch.bfloat16, torch.float16) else obj
    if isinstance(obj, dict):
        return {k: _to_float32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_to_float32(v) for v in obj)
    return obj


class NonFiniteLossError(UserError, RuntimeError):
    """A loss term became NaN/inf; the message names the step, the term and the last good checkpoint."""


def distributed_context() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; initialises the process group (NCCL on CUDA, Gloo on CPU)
    when launched by ``torchrun`` — which sets ``TORCHELASTIC_RUN_ID``, so that ``--nproc_per_node 1``
    runs the DDP path too (a one-process group) — or when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if (world > 1 or "TORCHELASTIC_RUN_ID" in os.environ) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


class Trainer:
    """Train any registered method (:class:`~ogfr_core.model.ReIDMethod`: OGFR, the baseline, the peers).

    Args:
        model: the model (bare; wrapped in DDP here when distributed).
        cfg: ``train`` params.
        out_dir: where ``last.pt`` (every epoch, resume) and ``model.pt`` (final) go.
        meta: checkpoint meta (see :mod:`ogfr_core.training.checkpoint`); ``epochs_trained`` is filled in.
        occlusion: the occlusion rule (``occlusion:`` params, :class:`~ogfr_core.occlusion.OcclusionRule`)
            that recomputes z after the student's occlusion augmentation; a number = Eq. (2) with that λ.
        steps_per_epoch: optimiser steps per epoch (for the schedule).
        device: torch device.
        live: a ``dvclive.Live`` (rank 0) or None.

    Batches are dicts with ``image [B,3,H,W]``, ``label_map [B,H,W]`` long, ``z [B,4]``, ``label [B]``,
    ``camid [B]``, and ``hidden [B,4]`` float under the ``hidden_fraction`` / ``covered`` rules (extra keys
    ignored).
    """

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, out_dir: str | Path, meta: dict[str, Any],
                 occlusion: OcclusionRule | float, steps_per_epoch: int, device: torch.device | str = "cpu", live: Any = None) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world, local_rank = distributed_context()
        self.model = model.to(self.device)
        self.net: torch.nn.Module = self.model
        if dist.is_available() and dist.is_initialized():  # torchrun, also with one process
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=False)  # every trainable parameter gets a gradient (tested)
            log.info("DDP: rank %d of %d, backend %s, device %s", self.rank, self.world, dist.get_backend(),
                     self.device)
        self.out_dir = Path(out_dir)
        self.meta = dict(meta)
        parts = run_fingerprint(self.meta)
        self.meta["fingerprint"] = parts["fingerprint"]
        self.meta["fingerprint_parts"] = {"config": parts["config"], "code": parts["code"]}
        self.occlusion = occlusion if isinstance(occlusion, OcclusionRule) else OcclusionRule("pixels", float(occlusion))
        self.steps_per_epoch = int(steps_per_epoch)
        if self.steps_per_epoch <= 0:
            raise ValueError("steps_per_epoch must be > 0 (is the training set empty?)")
        self.live = live
        self.optimizer = build_optimizer(self.model, cfg)
        total = cfg.epochs * self.steps_per_epoch
        self.scheduler = build_scheduler(self.optimizer, total, cfg.warmup_epochs * self.steps_per_epoch,
                                         cfg.warmup_factor, cfg.min_lr / cfg.lr)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        # CPU mixed precision (train.amp_cpu): bf16 autocast, no scaler (bf16 has fp32's exponent range)
        self.use_amp_cpu = bool(getattr(cfg, "amp_cpu", False)) and self.device.type == "cpu"
        if self.use_amp_cpu and cpu_bf16_support() is False:
            log.warning("train.amp_cpu: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 in /proc/cpuinfo): "
                        "bf16 runs emulated, measured 14x SLOWER than fp32 on an AVX2-only machine "
                        "(benchmarks/bench_model.py --amp); set train.amp_cpu: false")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.generator = torch.Generator()
        self.start_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.agent_grads: list[torch.Tensor] = []  # this epoch's gradients of the FEP agent (grad SNR)

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def final_path(self) -> Path:
        return self.out_dir / "model.pt"

    # ------------------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Resume from ``out_dir/last.pt`` if it belongs to an identical run. Returns True if resumed.

        A ``last.pt`` whose ``fingerprint`` differs from (or lacks) the current one is not loaded: a
        WARNING names what differs (config and/or code) and training starts afresh (``last.pt`` is
        overwritten after the first epoch). A matching ``last.pt`` with ``epoch >= cfg.epochs`` is a
        finished run: :meth:`fit` then only rewrites ``model.pt`` from it. An unreadable ``last.pt``
        (truncated, not a checkpoint) is not resumed either: a WARNING names the file and training
        starts afresh (it is overwritten after the first epoch), instead of failing every rerun.

        Raises:
            CheckpointError: ``last.pt`` matches but its state dicts do not.
        """
        if not self.last_path.is_file():
            return False
        try:
            ck = read_checkpoint(self.last_path, self.device)
        except CheckpointError as exc:
            log.warning("%s cannot be resumed from (%s); training starts afresh and overwrites it", self.last_path,
                        str(exc).splitlines()[0])
            return False
        old = ck["meta"]
        if old.get("fingerprint") != self.meta["fingerprint"]:
            old_parts = old.get("fingerprint_parts") or {}
            what = [label for k, label in (("config", "config/inputs"), ("code", "code"))
                    if old_parts.get(k) != self.meta["fingerprint_parts"][k]]
            log.warning("%s is from a different run (%s differ%s; fingerprint %s vs %s): not resuming, "
                        "training starts afresh and overwrites it", self.last_path,
                        " and ".join(what) if old_parts else "no fingerprint stored: config/code unknown",
                        "s" if len(what) == 1 else "", old.get("fingerprint", "none"), self.meta["fingerprint"])
            return False
        load_state_strict(self.model, ck["model"], str(self.last_path))
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.start_epoch = min(int(ck["epoch"]), self.cfg.epochs)
        self.global_step = self.start_epoch * self.steps_per_epoch
        self.history = [dict(h) for h in old.get("history", [])][: self.start_epoch]
        log.info("resumed from %s at epoch %d", self.last_path, self.start_epoch)
        return True

    def prepare(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Move a loader batch to the device and add the student's occlusion-augmented view."""
        if batch.get("label_map") is None:
            raise ValueError("training batches need parsing label maps (run `dvc repro parse`)")
        out = {k: batch[k].to(self.device, non_blocking=True) for k in ("image", "label_map", "z", "label", "camid")}
        out["label_map"] = out["label_map"].long()
        aug = self.cfg.augment
        hidden = batch["hidden"].to(self.device, non_blocking=True) if "hidden" in batch else None  # [B, 4]
        occ = occlusion_augment(out["image"], out["label_map"], out["z"], prob=aug.occlusion_prob,
                                area=aug.occlusion_area, rule=self.occlusion, source=aug.occlusion_source,
                                generator=self.generator, hidden=hidden)
        out.update(image_occ=occ.images, label_map_occ=occ.label_maps, z_occ=occ.z)
        return out

    def compute_losses(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Forward (through DDP when distributed) + the method's own ``loss`` → (loss terms, model output).

        CUDA AMP: forward and losses under fp16 autocast. CPU ``amp_cpu``: the forward under bf16
        autocast, then every floating tensor of its output cast to float32 and the losses computed with
        autocast off — every loss term (KL, CE, MSE, cosine, triplet, L_mask, policy gradient) in fp32.
        """
        if self.use_amp_cpu:
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                out = self.net(batch, generator=self.generator)
            out = _to_float32(out)
            terms = unwrap(self.model).loss(out, batch, self.cfg.loss)
            return terms, out
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
            out = self.net(batch, generator=self.generator)
            terms = unwrap(self.model).loss(out, batch, self.cfg.loss)
        return terms, out

    def check_finite(self, terms: dict[str, torch.Tensor], epoch: int) -> None:
        """Raise :class:`NonFiniteLossError` naming the step, the term and the last good checkpoint."""
        values = torch.stack([v.detach().float() for v in terms.values()])
        if bool(torch.isfinite(values).all()):
            return
        bad = [k for k, v in terms.items() if not bool(torch.isfinite(v.detach()).all())]
        last = str(self.last_path) if self.last_path.is_file() else "none (no epoch finished yet)"
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch} step {self.global_step}: term(s) {bad} = "
            f"{[float(terms[k].detach()) for k in bad]}; last good checkpoint: {last}")

    def train_step(self, batch: dict[str, Any], epoch: int = 0) -> dict[str, float]:
        """One optimiser step. Returns the loss terms, lr, mean reward and retained-patch ratio."""
        batch = self.prepare(batch)
        terms, out = self.compute_losses(batch)
        self.check_finite(terms, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.record_agent_gradient()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[-1]["lr"]  # the transformer's lr (group 0 may be the stem's)
        self.scheduler.step()
        self.global_step += 1
        stats = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        stats["lr"] = lr
        stats.update(out.get("stats") or {})  # method-specific scalars (OGFR: reward, retained patches)
        return stats

    def record_agent_gradient(self) -> None:
        """Keep this step's gradient of the FEP agent's weights (``G`` of Eq. 6; unscaled under AMP) for
        the epoch's gradient SNR (:func:`~ogfr_core.training.agent_stats.grad_snr`)."""
        from .optim import is_agent_parameter

        grads = [p.grad.detach().float().flatten() for n, p in unwrap(self.model).named_parameters()
                 if p.grad is not None and is_agent_parameter(n)]
        if grads:
            scale = float(self.scaler.get_scale()) if self.use_amp else 1.0
            self.agent_grads.append(torch.cat(grads).cpu() / scale)

    def agreed_steps(self, loader: Iterable[Any], cap: int) -> int:
        """This epoch's step count: ``min(cap, len(loader))``, and under DDP the minimum over ranks
        (``all_reduce(MIN)``), so every rank stops after the same number of steps (each rank has its
        own PK sampler, whose length may differ; unequal counts would hang the gradient all-reduce)."""
        n = cap
        if hasattr(loader, "__len__"):
            n = min(n, len(loader))
        if self.world > 1 and dist.is_initialized():
            t = torch.tensor([n], dtype=torch.long,
                             device=self.device if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            n = int(t.item())
        return n

    def fit(self, make_loader: Callable[[int], Iterable[dict[str, Any]]]) -> list[dict[str, float]]:
        """Train ``cfg.epochs`` epochs (from the resume point), checkpoint each epoch, write ``model.pt``.

        ``make_loader(epoch)`` returns that epoch's batches (seeded by the caller). Returns per-epoch
        mean statistics (also logged to dvclive on rank 0).
        """
        model = unwrap(self.model)
        cfg = self.cfg
        max_steps = cfg.max_steps_per_epoch or self.steps_per_epoch
        for epoch in range(self.start_epoch, cfg.epochs):
            torch.manual_seed(cfg.seed + epoch)
            self.generator.manual_seed(cfg.seed * 1000 + epoch)
            model.on_epoch_start(epoch)
            self.net.train()
            sums: dict[str, float] = {}
            squares: dict[str, float] = {}  # per-step statistics logged with a 95 % interval
            self.agent_grads = []
            steps = 0
            loader = make_loader(epoch)
            limit = self.agreed_steps(loader, min(max_steps, self.steps_per_epoch))
            for batch in loader:
                if steps >= limit:
                    break
                stats = self.train_step(batch, epoch)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                    if k.endswith(CI_SUFFIXES):
                        squares[k] = squares.get(k, 0.0) + v * v
                steps += 1
                if self.rank == 0 and cfg.log_every and steps % cfg.log_every == 0:
                    log.info("epoch %d step %d/%d loss %.4f lr %.2e", epoch + 1, steps, self.steps_per_epoch,
                             stats["loss/total"], stats["lr"])
            if steps == 0:
                raise RuntimeError(f"epoch {epoch}: the loader yielded no batch (too few ids for P×K?)")
            means = {k: v / steps for k, v in sums.items()}
            means.update({f"{k}_ci95": mean_ci95(sums[k], sq, steps)[1] for k, sq in squares.items()})
            if self.agent_grads:  # |mean| / std of G's gradient over the epoch's steps
                means["agent/grad_snr"] = grad_snr(self.agent_grads)
            means["epoch"] = epoch + 1
            self.history.append(means)
            if self.rank == 0:
                save_checkpoint(self.last_path, self.model, self.optimizer, self.scheduler, epoch + 1,
                                dict(self.meta, history=self.history), self.scaler)
                if self.live is not None:
                    for k, v in means.items():
                        if k != "epoch":
                            self.live.log_metric(f"train/{k}", v)
                    self.live.next_step()
                log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs,
                         " ".join(f"{k}={v:.4g}" for k, v in means.items() if k.startswith("loss/")))
        if self.rank == 0:
            save_checkpoint(self.final_path, self.model, None, None, cfg.epochs,
                            dict(self.meta, history=self.history))
        return self.history
