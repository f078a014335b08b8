"""GPU acceptance check (issue 15): one command for what only a GPU can show, written to one JSON.

    make gpu-check                                 # fresh machine: .venv + install (timed), then this script
    python -m benchmarks.gpu_check                 # in an installed environment, on a CUDA machine
    python -m benchmarks.gpu_check --dry-run       # CPU, tiny sizes: what CI runs, so the script cannot rot

What it checks (``checks`` in the JSON: pass/fail, any failure → exit 1; ``goals``: figures against the
paper's Table VIII, reported, never failing the run):

1. **versions** — torch, CUDA runtime, cuDNN, NCCL, GPU name / memory / capability, bf16 support,
   driver, Python, timm, numpy, mediapipe, git commit. Without CUDA the script prints them and exits 2
   with a message (unless ``--dry-run``).
2. **bench** (Table VIII) for each configuration — ``paper`` = ``params/paper.yaml`` merged over
   ``params.yaml`` (ViT-B/16, stride 12, 256×128), ``demo`` = ``params.yaml`` as it is (the CPU demo
   profile) — and each method registered in ``ogfr_core`` (``ogfr_core.model.METHODS`` if it exists,
   else the values ``train.model.method`` accepts), at the file's P×K batch (64), on synthetic
   batches: train-step time per image (warm-up steps excluded, CUDA-synchronised, AMP as the Trainer
   uses it), student inference time per image (``extract``, what ``evaluate`` runs) against the plain
   ViT (the baseline), ratios, images/s, peak GPU memory of a train step and of an inference batch,
   parameters, multiply–accumulates of one training step (the machine-independent ratio), finite
   losses. Functions from :mod:`benchmarks.bench_model`.
3. **amp_overflow** — the :class:`~ogfr_core.training.loop.Trainer` with AMP (GradScaler) on the paper
   model: an ``inf`` injected into one gradient for one step must skip the optimiser step (weights
   unchanged) and back off the loss scale; training must then resume within a few steps (weights
   move, losses finite; a fresh model's fp16 gradients may overflow a few more times on their own,
   counted). The autocast dtype a Linear layer actually produced must be fp16/bf16.
4. **stages** — a scratch copy (a temp folder; the checkout's ``params.yaml`` and ``dvc.lock`` are
   never touched) whose params are the paper configuration + ``ci/profile.yaml`` (the CI slice of the
   shared CUHK03-NP crops) + a bounded run (``train.epochs``, ``train.max_steps_per_epoch``, random
   init); ``python -m stages.index``, ``parse``, ``occlusion``, ``train``, ``evaluate`` run there as
   subprocesses. Checked: every exit status, training on CUDA with finite losses in every epoch of the
   checkpoint's history, ``reports/metrics.json`` with rank-1 / mAP in [0, 1] and valid queries; then
   the train stage's DataLoader over that data: pinned batches on CUDA, loader images/s.
5. **ddp** — the same training through ``torchrun --standalone --nproc_per_node 1`` (NCCL on CUDA,
   Gloo in the dry run; the Trainer wraps the model in DDP under torchrun even with one process), the
   log must show the DDP wrap, then ``evaluate`` on its checkpoint.

Dry run (``--dry-run``): the same code on CPU at tiny sizes, one thread per process — ViT-Tiny with 1
block at 128×64, batch 4, 2 timed steps; a stage run on 4 training / 3 test identities with P×K = 2×2,
1 epoch of 2 steps, Gloo; the overflow check swaps in a CPU GradScaler with CPU fp16 autocast. It
proves that the script, the stage wiring and the checks run (≈ 50 s on 2 cores); none of its figures
is a GPU result (the JSON says so in ``kind``). It is written to ``reports/gpu_check_dry_run.json``
(git-ignored) and may not be written to ``reports/gpu_check.json``. Only a GPU run shows the CUDA
branches: peak GPU memory, the Trainer's own AMP/GradScaler on CUDA, NCCL, pinned batches, and
every timing.

Output: ``--out`` (default ``reports/gpu_check.json``), rewritten after every section (``complete``
false until the end, so a run killed by a time limit still leaves its figures): versions, every
figure, ``checks``, ``goals``, seconds per section, ``total_seconds``; set-up time separately
(``setup``: ``make gpu-check`` times its ``make setup`` step — venv + ``pip install -e .[dev]`` on a
fresh machine, ~0 s when the venv is already installed — and passes ``--setup-seconds``). A GPU
result is committed by hand with the date and GPU name that the JSON holds.

On a fresh GPU machine with network: ``git clone <repo> && cd <repo> && make gpu-check`` (the CUDA
wheels of torch come from PyPI). The stage run needs the shared crops: ``--data-root``, else
``$OGFR_DATA_ROOT``, else ``data.root`` of params.yaml, else ``shared/data/cuhk03-np-detected`` in
the checkout (the CI slice is ~2,400 crops, ~10 MB). Offline, the packages of pyproject.toml must
already be installed (``parse`` needs mediapipe); run ``python -m benchmarks.gpu_check`` with that
Python. Budget: the issue asks for under 8 minutes on one H100/H200-class GPU (``goals``).

Exit status: 0 every check passed; 1 a check failed (each failure is printed and in the JSON); 2 no
CUDA without ``--dry-run``, or bad arguments.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import typing
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml

from benchmarks.bench_model import PAPER, build, make_batch, peak_memory_mb, time_interleaved, train_step_macs
from ogfr_core.config import (SECTIONS, DataConfig, ModelConfig, TrainConfig, deep_merge, from_dict,
                              read_params)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("reports/gpu_check.json")
DRY_RUN_OUT = Path("reports/gpu_check_dry_run.json")
STAGES = ("index", "parse", "occlusion", "train", "evaluate")
# identities and cameras of the synthetic benchmark batches (classifier size, camera embeddings):
# paper = Occluded-Duke as in bench_model (702 ids, 8 cameras), demo = the shared CUHK03-NP (767, 2)
IDS_CAMERAS = {"paper": (702, 8), "demo": (767, 2)}
DRY_RUN_HW = (128, 64)  # the dry run's input size everywhere: the crops' native size (CPU time)
TIME_BUDGET_S = 480.0  # issue 15: the whole check within one 8-minute call on one H100/H200


# ------------------------------------------------------------------------------------------------
# Configurations and methods (taken from the params files and the code, never listed here)
# ------------------------------------------------------------------------------------------------
def load_configuration(name: str, params: Path = REPO / "params.yaml",
                       paper: Path = REPO / "params" / "paper.yaml") -> dict[str, Any]:
    """Raw params of a named configuration: ``demo`` = ``params`` as it is, ``paper`` = ``paper``
    merged over it (:func:`ogfr_core.config.deep_merge`, as ``stages.apply_profile`` does). Every
    section is validated.

    Raises:
        ConfigError: a missing file or an unknown/mistyped key (named).
        ValueError: an unknown configuration name.
    """
    if name not in IDS_CAMERAS:
        raise ValueError(f"unknown configuration {name!r}; choose from {sorted(IDS_CAMERAS)}")
    raw = read_params(params)
    if name == "paper":
        raw = deep_merge(raw, read_params(paper))
    validate(raw, str(params if name == "demo" else f"{paper} over {params}"))
    return raw


def validate(raw: dict[str, Any], where: str) -> None:
    """Check every known section of merged params against its dataclass (ConfigError names the key)."""
    from ogfr_core.config import ConfigError

    for section, cls in SECTIONS.items():
        if section in raw:
            try:
                from_dict(cls, raw[section] or {}, section)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc


def registered_methods() -> list[str]:
    """Method names the code accepts for ``train.model.method``: ``ogfr_core.model.METHODS`` (a
    registry dict, if the package has one), else the values of :attr:`ModelConfig.method`'s Literal.
    The benchmark uses them all, so a new method is picked up without editing this script."""
    import ogfr_core.model as model_pkg

    registry = getattr(model_pkg, "METHODS", None)
    if registry:
        return list(registry)
    return list(typing.get_args(typing.get_type_hints(ModelConfig)["method"]))


def weight_files_off() -> dict[str, str]:
    """``train.model`` keys naming weight files to load (``pretrained``, and ``stem_weights`` where the
    config has it) set to "": timings do not depend on the initialisation, and the stage run must not
    need files that only a connected machine or the ``pretrained`` stage provides (random init, warned)."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return {k: "" for k in ("pretrained", "stem_weights") if k in names}


def random_init(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with :func:`weight_files_off` applied to its model."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **weight_files_off()))


def shrink_for_dry_run(cfg: TrainConfig) -> TrainConfig:
    """The dry run's tiny model: ViT-Tiny with one block (every other setting of the configuration,
    e.g. stride, patch embedding, method switches, kept)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone="vit_tiny_patch16_224", depth=1,
                                                              **weight_files_off()))


# ------------------------------------------------------------------------------------------------
# The report: checks, goals, figures; rewritten after every section
# ------------------------------------------------------------------------------------------------
class Report:
    """Collects figures, pass/fail checks and goals; :meth:`write` stores them atomically as JSON."""

    def __init__(self, out: Path, dry_run: bool) -> None:
        self.out = out
        self.t0 = time.perf_counter()
        self.doc: dict[str, Any] = {
            "schema": 1,
            "kind": ("DRY RUN: CPU at tiny sizes (ViT-Tiny, 1 block, batch 4) - NOT a GPU result"
                     if dry_run else "GPU acceptance run"),
            "dry_run": dry_run,
            "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "complete": False, "checks": [], "goals": [], "sections_seconds": {},
        }

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        """Record one pass/fail check and print it."""
        self.doc["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        print(f"  [{'PASS' if passed else 'FAIL'}] {name}{': ' + detail if detail else ''}", flush=True)
        return bool(passed)

    def goal(self, name: str, value: float | None, target: float, met: bool | None, note: str = "") -> None:
        """Record a figure against a target (the paper's); ``met`` None = not meaningful (dry run)."""
        self.doc["goals"].append({"name": name, "value": value, "target": target, "met": met, "note": note})
        shown = "n/a (dry run)" if met is None else ("met" if met else "NOT met")
        print(f"  [goal {shown}] {name}: {value if value is None else round(value, 4)} vs {target} {note}",
              flush=True)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time a section; an exception inside becomes a failed check ``<name>: crashed`` with its
        traceback in the JSON (the remaining sections still run), then the JSON is rewritten."""
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        try:
            yield
        except Exception as exc:  # recorded as a failed check with the traceback, never swallowed silently
            self.doc.setdefault("errors", {})[name] = traceback.format_exc()
            traceback.print_exc()
            self.check(f"{name}: crashed", False, f"{type(exc).__name__}: {exc}")
        finally:
            self.doc["sections_seconds"][name] = round(time.perf_counter() - t0, 2)
            self.write()

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.doc["checks"])

    def write(self, complete: bool = False) -> None:
        from ogfr_core.io import write_json

        self.doc["complete"] = complete
        self.doc["total_seconds"] = round(time.perf_counter() - self.t0, 2)
        self.doc["passed"] = self.passed
        write_json(self.out, self.doc)


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------
def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "missing"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict[str, Any]:
    """Software and hardware versions (GPU fields only when CUDA is available)."""
    v: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "timm": _version("timm"), "numpy": _version("numpy"), "mediapipe": _version("mediapipe"),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    if torch.backends.cudnn.is_available():
        v["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        nccl = torch.cuda.nccl.version() if hasattr(torch.cuda, "nccl") else None
        v.update(gpu_name=props.name, gpu_count=torch.cuda.device_count(),
                 gpu_memory_gib=round(props.total_memory / 2**30, 1),
                 gpu_capability=f"{props.major}.{props.minor}", gpu_multiprocessors=props.multi_processor_count,
                 bf16_supported=torch.cuda.is_bf16_supported(),
                 nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
                 matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
        try:
            v["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            v["driver"] = "nvidia-smi not available"
    return v


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_configuration(rep: Report, name: str, device: torch.device, args: argparse.Namespace) -> None:
    """Section 2 for one configuration: memory, timing, MACs of every registered method."""
    raw = load_configuration(name, args.params, args.paper)
    data = from_dict(DataConfig, raw["data"], "data")
    cfg = from_dict(TrainConfig, raw["train"], "train")
    cfg = random_init(cfg)  # speed does not depend on the initialisation
    if args.dry_run:
        cfg = shrink_for_dry_run(cfg)
    batch = 4 if args.dry_run else cfg.ids_per_batch * cfg.images_per_id
    hw = DRY_RUN_HW if args.dry_run else (data.height, data.width)
    ncls, ncam = IDS_CAMERAS[name]
    methods = registered_methods()
    out: dict[str, Any] = {"batch": batch, "hw": list(hw), "backbone": cfg.model.backbone, "depth": cfg.model.depth,
                           "stride": cfg.model.stride, "methods_registered": methods,
                           "amp": bool(cfg.amp and device.type == "cuda"), "steps": args.steps,
                           "warmup": args.warmup, "model": {k: v for k, v in dataclasses.asdict(cfg.model).items()
                                                             if k != "method"}}
    per: dict[str, dict[str, Any]] = {m: {} for m in methods}
    if device.type == "cuda":  # before the timings, while this process holds no model
        for m in methods:
            per[m]["peak_train_mib"] = peak_memory_mb(cfg, m, ncls, ncam, hw, batch, device, "train")
            per[m]["peak_infer_mib"] = peak_memory_mb(cfg, m, ncls, ncam, hw, batch, device, "infer")
            _free(device)
    else:
        out["memory_note"] = "CUDA max_memory_allocated only; on CPU see `python -m benchmarks.bench_model`"
    timing, models = time_interleaved(cfg, ncls, ncam, hw, batch, args.steps, device, methods=tuple(methods),
                                      warmup=args.warmup)
    del models
    _free(device)
    for m in methods:
        f = per[m]
        f.update(train_s_per_step=timing[f"train_s_{m}"], train_s_per_step_median=timing[f"train_s_{m}_median"],
                 infer_s_per_batch=timing[f"infer_s_{m}"], infer_s_per_batch_median=timing[f"infer_s_{m}_median"],
                 params_m=timing[f"params_m_{m}"], loss_total_last=timing[f"loss_total_{m}"])
        f["train_ms_per_img"] = 1000 * f["train_s_per_step"] / batch
        f["infer_ms_per_img"] = 1000 * f["infer_s_per_batch"] / batch
        f["train_img_per_s"] = batch / f["train_s_per_step"]
        f["infer_img_per_s"] = batch / f["infer_s_per_batch"]
        f["macs_train_step_g_per_img"] = train_step_macs(cfg, m, ncls, ncam, hw, device) / 1e9
        _free(device)
        rep.check(f"bench/{name}/{m}: finite loss, timed", math.isfinite(f["loss_total_last"])
                  and f["train_s_per_step"] > 0 and f["infer_s_per_batch"] > 0,
                  f"loss {f['loss_total_last']:.4g}, train {f['train_ms_per_img']:.3f} ms/img, "
                  f"infer {f['infer_ms_per_img']:.3f} ms/img")
    if "baseline" in per:
        b = per["baseline"]
        for m, f in per.items():
            f["train_ratio_vs_baseline"] = f["train_s_per_step"] / b["train_s_per_step"]
            f["infer_ratio_vs_baseline"] = f["infer_s_per_batch"] / b["infer_s_per_batch"]
            f["macs_train_ratio_vs_baseline"] = f["macs_train_step_g_per_img"] / b["macs_train_step_g_per_img"]
    out["methods"] = per
    rep.doc.setdefault("bench", {})[name] = out
    for m, f in per.items():
        print(f"  {name}/{m}: train {f['train_ms_per_img']:.3f} ms/img ({f['train_img_per_s']:.1f} img/s), "
              f"infer {f['infer_ms_per_img']:.3f} ms/img, params {f['params_m']:.1f} M, "
              f"MACs/img/step {f['macs_train_step_g_per_img']:.2f} G"
              + (f", peak train {f['peak_train_mib']:.0f} MiB, infer {f['peak_infer_mib']:.0f} MiB"
                 if "peak_train_mib" in f else ""), flush=True)
    if name == "paper" and {"ogfr", "baseline"} <= set(per):
        o, b = per["ogfr"], per["baseline"]
        meaningful = None if args.dry_run else True
        tr, ir = o["train_ratio_vs_baseline"], o["infer_ratio_vs_baseline"]
        paper_tr = PAPER["train_ms"] / PAPER["train_ms_transreid"]
        paper_ir = PAPER["infer_ms"] / PAPER["infer_ms_transreid"]
        rep.goal("paper: train time ratio OGFR / baseline", tr, round(paper_tr, 3), meaningful and tr <= paper_tr,
                 "(Table VIII 14.1 / 4.8 ms/img; the MACs ratio is the load-independent counterpart)")
        rep.goal("paper: inference time ratio student / plain ViT", ir, round(paper_ir, 3),
                 meaningful and ir <= paper_ir, "(Table VIII 7.0 / 5.2 ms/img)")
        rep.goal("paper: OGFR train ms/img", o["train_ms_per_img"], PAPER["train_ms"],
                 meaningful and o["train_ms_per_img"] <= PAPER["train_ms"], "(Table VIII, their GPU)")
        rep.goal("paper: student inference ms/img", o["infer_ms_per_img"], PAPER["infer_ms"],
                 meaningful and o["infer_ms_per_img"] <= PAPER["infer_ms"], "(Table VIII, their GPU)")


def amp_overflow_check(rep: Report, device: torch.device, args: argparse.Namespace) -> None:
    """Section 3: a GradScaler overflow step is skipped and training continues (paper model, AMP)."""
    raw = load_configuration("paper", args.params, args.paper)
    data = from_dict(DataConfig, raw["data"], "data")
    cfg = from_dict(TrainConfig, raw["train"], "train")
    cfg = random_init(cfg)
    batch = 4 if args.dry_run else cfg.ids_per_batch * cfg.images_per_id
    if args.dry_run:
        cfg = shrink_for_dry_run(cfg)
    hw = DRY_RUN_HW if args.dry_run else (data.height, data.width)
    ncls, ncam = IDS_CAMERAS["paper"]
    model, trainer = build(cfg, "ogfr", ncls, ncam, hw, device)
    out: dict[str, Any] = {"trainer_amp": trainer.use_amp}
    if device.type == "cuda":
        rep.check("amp_overflow: Trainer uses AMP on CUDA (train.amp)", trainer.use_amp and trainer.scaler.is_enabled())
    else:  # dry run: the same GradScaler logic on the CPU device, with CPU fp16 autocast
        trainer.use_amp = True
        trainer.scaler = torch.amp.GradScaler("cpu")
        out["note"] = "dry run: CPU GradScaler and CPU fp16 autocast swapped in (the Trainer enables AMP on CUDA only)"
    seen: set[torch.dtype] = set()  # output dtypes of every Linear during the first step
    hooks = [mod.register_forward_hook(lambda _m, _i, o: seen.add(o.dtype))
             for mod in model.modules() if isinstance(mod, torch.nn.Linear)]
    data_b = make_batch(batch, *hw, ncls, device)
    params = [p for p in model.trainable_parameters()]

    def snapshot() -> list[torch.Tensor]:
        return [p.detach().clone() for p in params]

    def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b))

    s1 = trainer.train_step(data_b)
    for h in hooks:
        h.remove()
    half = sorted(str(d).replace("torch.", "") for d in seen & {torch.float16, torch.bfloat16})
    out["autocast_dtype_seen"] = ",".join(half) or "none (" + ",".join(sorted(map(str, seen))) + ")"
    before, scale0 = snapshot(), float(trainer.scaler.get_scale())
    victim = params[0]
    handle = victim.register_hook(lambda g: torch.full_like(g, float("inf")))
    s2 = trainer.train_step(data_b)  # forward/loss finite, one gradient inf → the scaler must skip the step
    handle.remove()
    after_skip, scale1 = snapshot(), float(trainer.scaler.get_scale())
    # training must resume: fp16 gradients of a fresh model may still overflow naturally at this
    # scale, which the scaler handles the same way (skip + back-off), so allow a few more steps
    from ogfr_core.training.loop import NonFiniteLossError

    stats, natural_skips, after_next, error = [s1, s2], 0, after_skip, ""
    try:
        for _ in range(6):
            stats.append(trainer.train_step(data_b))
            after_next = snapshot()
            if not same(after_skip, after_next):
                break
            natural_skips += 1
    except NonFiniteLossError as exc:  # the inf reached the weights: the failure this check exists for
        error = str(exc)
    finite = not error and all(math.isfinite(s[k]) for s in stats for k in s if k.startswith("loss/"))
    out.update(scale_before=scale0, scale_after_overflow=scale1, scale_after_resume=float(trainer.scaler.get_scale()),
               natural_skips_before_resume=natural_skips, loss_total=[s["loss/total"] for s in stats])
    rep.doc["amp_overflow"] = out
    rep.check("amp_overflow: inf gradient → optimiser step skipped (weights unchanged)", same(before, after_skip))
    rep.check("amp_overflow: loss scale backed off", scale1 < scale0, f"{scale0:g} → {scale1:g}")
    rep.check("amp_overflow: training resumes (weights move, all finite)",
              not same(after_skip, after_next) and all(bool(torch.isfinite(p).all()) for p in after_next) and finite,
              error or f"after {natural_skips} further overflow skip(s)")
    if device.type == "cuda":
        rep.check("amp_overflow: autocast produced half precision",
                  not out["autocast_dtype_seen"].startswith("none"), out["autocast_dtype_seen"])
    del model, trainer
    _free(device)


def find_data_root(arg: str) -> Path | None:
    """``--data-root``, else ``$OGFR_DATA_ROOT``, else params.yaml's ``data.root`` (relative to the
    repository), else ``shared/data/cuhk03-np-detected`` inside the checkout; None if none exists."""
    cands = [arg, os.environ.get("OGFR_DATA_ROOT", "")]
    try:
        root = read_params(REPO / "params.yaml")["data"]["root"]
        cands.append(str(root if Path(root).is_absolute() else REPO / root))
    except Exception:  # a broken params.yaml is reported by the other sections
        pass
    cands.append(str(REPO / "shared" / "data" / "cuhk03-np-detected"))
    for c in cands:
        if c and Path(c).is_dir():
            return Path(c).resolve()
    return None


def scratch_params(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    """Params of the stage run: paper configuration + CI profile + a bounded run on ``data_root``."""
    raw = deep_merge(load_configuration("paper", args.params, args.paper), read_params(args.ci_profile))
    workers = min(8, os.cpu_count() or 1)
    over: dict[str, Any] = {
        "data": {"root": str(data_root), "num_workers": 0 if args.dry_run else workers},
        "parse": {"workers": 1 if args.dry_run else workers, "overlay_grid": 4 if args.dry_run else 16},
        "train": {"epochs": args.stage_epochs, "max_steps_per_epoch": args.stage_steps, "log_every": 1,
                  "model": weight_files_off()},
        # the occluded-query benchmark needs the `occlude` stage, which the scratch run does not make
        "evaluate": {"extra_datasets": []},
    }
    if args.dry_run:
        over["data"].update(max_train_ids=4, max_test_ids=3, height=DRY_RUN_HW[0], width=DRY_RUN_HW[1])
        over["train"].update(ids_per_batch=2, images_per_id=2)
        over["train"]["model"].update(backbone="vit_tiny_patch16_224", depth=1)
        over["evaluate"].update(retrieval_queries=2, mask_examples=2)
    raw = deep_merge(raw, over)
    validate(raw, "stage-run params")
    return raw


def run_stage_cmd(rep: Report, label: str, cmd: list[str], cwd: Path, timeout: float) -> tuple[bool, str]:
    """Run one stage command in the scratch folder; record exit status, seconds and the log's tail."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    if rep.doc["dry_run"]:  # tiny sizes: one thread per process spins less on a busy 2-core CI machine
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, log = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, log = -1, f"timed out after {timeout:.0f} s\n{exc.stdout or ''}{exc.stderr or ''}"
    seconds = round(time.perf_counter() - t0, 2)
    (cwd / "logs").mkdir(exist_ok=True)
    (cwd / "logs" / f"{label}.log").write_text(log)
    rep.doc.setdefault("stage_runs", {})[label] = {"cmd": " ".join(cmd[1:] if cmd[0] == sys.executable else cmd),
                                                   "rc": rc, "seconds": seconds,
                                                   "log_tail": log.strip().splitlines()[-12:]}
    rep.check(f"{label}: exit 0", rc == 0, f"{seconds} s" + ("" if rc == 0 else f", rc {rc}; see log_tail"))
    return rc == 0, log


def check_training(rep: Report, label: str, scratch: Path, name: str, log: str, expect: str, epochs: int) -> None:
    """The train stage ran on the expected device; every epoch's losses in model.pt are finite."""
    from ogfr_core.training.checkpoint import read_checkpoint

    m = re.search(r"steps/epoch x \d+ epochs(?: at lr \S+)? on (\S+)", log)
    dev = m.group(1) if m else "not found in the log"
    rep.check(f"{label}: trained on {expect}", dev.startswith(expect), dev)
    ck = read_checkpoint(scratch / "models" / name / "model.pt")
    hist = ck["meta"].get("history", [])
    losses = {k: v for h in hist for k, v in h.items() if k.startswith("loss/")}
    bad = [f"epoch {h.get('epoch')} {k}={v}" for h in hist for k, v in h.items()
           if k.startswith("loss/") and not math.isfinite(v)]
    rep.doc["stage_runs"][label]["history"] = hist
    rep.check(f"{label}: {epochs} epoch(s), every loss finite", len(hist) == epochs and losses and not bad,
              f"{len(hist)} epoch(s), final total {hist[-1].get('loss/total') if hist else None}"
              + (f"; non-finite: {bad}" if bad else ""))


def check_metrics(rep: Report, label: str, scratch: Path, name: str) -> None:
    """reports/metrics.json holds rank-1 / mAP in [0, 1] with valid queries for every distance."""
    doc = json.loads((scratch / "reports" / "metrics.json").read_text())
    ds = doc["datasets"][name]
    figures = {d: {k: ds[d][k] for k in ("rank-1", "mAP", "num_valid_queries")}
               for d in ("visibility", "global") if d in ds}
    ok = bool(figures) and all(0 <= f["rank-1"] <= 1 and 0 <= f["mAP"] <= 1 and f["num_valid_queries"] > 0
                               for f in figures.values())
    rep.doc["stage_runs"][label]["metrics"] = figures
    rep.check(f"{label}: metrics.json valid", ok, json.dumps(figures))


def loader_check(rep: Report, scratch: Path, raw: dict[str, Any], device: torch.device, n_batches: int) -> None:
    """The train stage's DataLoader over the scratch data: pinned batches on CUDA, images/s."""
    from ogfr_core.data import ReIDImageDataset, TrainTransform, build_train_loader, read_index
    from ogfr_core.training.run import load_training_labels

    data = from_dict(DataConfig, raw["data"], "data")
    cfg = from_dict(TrainConfig, raw["train"], "train")
    index = read_index(scratch / "data" / "index" / f"{data.name}.parquet")
    train = index[index["split"] == "train"].reset_index(drop=True)
    label_maps, z, _ = load_training_labels(train, scratch / "data" / "parsing" / data.name,
                                         scratch / "data" / "occlusion" / f"{data.name}.parquet", data.name)
    dataset = ReIDImageDataset(train, Path(data.root), TrainTransform(data.height, data.width, cfg.augment),
                               label_maps=label_maps, z=z)
    loader = build_train_loader(dataset, train["label"].tolist(), cfg.ids_per_batch, cfg.images_per_id, cfg.seed,
                                data.num_workers)
    t0 = time.perf_counter()
    pinned, n_img, n = [], 0, 0
    for batch in loader:
        pinned.append(bool(batch["image"].is_pinned()))
        n_img += batch["image"].shape[0]
        n += 1
        if n >= n_batches:
            break
    seconds = time.perf_counter() - t0
    rep.doc["loader"] = {"batches": n, "images": n_img, "seconds": round(seconds, 3), "num_workers": data.num_workers,
                         "img_per_s": n_img / seconds if seconds > 0 else None, "pinned": pinned,
                         "pin_memory": loader.pin_memory}
    want = device.type == "cuda"
    rep.check(f"loader: batches {'pinned' if want else 'not pinned (no CUDA)'}",
              n > 0 and all(p == want for p in pinned),
              f"{n} batches, {n_img / seconds:.0f} img/s with {data.num_workers} workers")


def stage_run(rep: Report, device: torch.device, args: argparse.Namespace) -> None:
    """Sections 4–5: the stages in a scratch copy, the loader, then train + evaluate under torchrun."""
    data_root = find_data_root(args.data_root)
    if data_root is None:
        rep.check("stages: dataset found", False, "no CUHK03-NP folder: pass --data-root or set OGFR_DATA_ROOT")
        return
    raw = scratch_params(args, data_root)
    name = raw["data"]["name"]
    expect = "cuda" if device.type == "cuda" else "cpu"
    scratch = Path(tempfile.mkdtemp(prefix="ogfr_gpu_check_"))
    rep.doc["stages"] = {"scratch": str(scratch), "data_root": str(data_root),
                         "params": {"data": raw["data"], "train": {k: raw["train"][k] for k in
                                    ("epochs", "max_steps_per_epoch", "ids_per_batch", "images_per_id", "amp")},
                                    "model": raw["train"]["model"]}}
    try:
        (scratch / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        ok, log = True, ""
        for stage in STAGES:
            ok, log = run_stage_cmd(rep, stage, [sys.executable, "-m", f"stages.{stage}"], scratch, args.stage_timeout)
            if not ok:
                return
            if stage == "train":
                check_training(rep, "train", scratch, name, log, expect, args.stage_epochs)
                rep.write()
        check_metrics(rep, "evaluate", scratch, name)
        loader_check(rep, scratch, raw, device, n_batches=2 if args.dry_run else 8)
        rep.write()
        # the same training under torchrun (one process: DDP with NCCL on CUDA, Gloo on CPU), afresh
        shutil.rmtree(scratch / "models" / name, ignore_errors=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "stages.train"]
        ok, log = run_stage_cmd(rep, "torchrun_train", cmd, scratch, args.stage_timeout)
        if ok:
            backend = "nccl" if device.type == "cuda" else "gloo"
            m = re.search(r"DDP: rank 0 of 1, backend (\S+),", log)
            rep.check(f"torchrun_train: DDP wrap with {backend}", bool(m) and m.group(1) == backend,
                      m.group(0) if m else "no 'DDP:' line in the log")
            check_training(rep, "torchrun_train", scratch, name, log, expect, args.stage_epochs)
            runs = rep.doc["stage_runs"]
            plain, ddp = (runs[k]["history"][-1]["loss/total"] for k in ("train", "torchrun_train"))
            # same seed and data: equal up to GPU nondeterminism (a figure, not a check)
            rep.doc["stages"]["final_loss_plain_vs_torchrun"] = [plain, ddp]
            if run_stage_cmd(rep, "torchrun_evaluate", [sys.executable, "-m", "stages.evaluate"], scratch,
                             args.stage_timeout)[0]:
                check_metrics(rep, "torchrun_evaluate", scratch, name)
    finally:
        if args.keep_scratch:
            print(f"  scratch kept: {scratch}", flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="See the module docstring (python -m pydoc benchmarks.gpu_check).")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (CI): proves the script, not the GPU")
    ap.add_argument("--out", default="", help=f"JSON path (default {DEFAULT_OUT}; dry run {DRY_RUN_OUT})")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml", help="the demo configuration")
    ap.add_argument("--paper", type=Path, default=REPO / "params" / "paper.yaml", help="merged over --params")
    ap.add_argument("--ci-profile", type=Path, default=REPO / "ci" / "profile.yaml", help="the stage run's slice")
    ap.add_argument("--data-root", default="", help="the CUHK03-NP crops (default: $OGFR_DATA_ROOT, data.root, "
                                                    "shared/data/cuhk03-np-detected)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per method (default 10; dry run 2)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed warm-up steps (default 3; dry run 1)")
    ap.add_argument("--stage-epochs", type=int, default=0, help="stage run's train.epochs (default 2; dry run 1)")
    ap.add_argument("--stage-steps", type=int, default=0,
                    help="stage run's train.max_steps_per_epoch (default 5; dry run 2)")
    ap.add_argument("--stage-timeout", type=float, default=300.0, help="seconds per stage subprocess")
    ap.add_argument("--skip", action="append", default=[], choices=["bench", "amp_overflow", "stages"],
                    help="leave a section out (repeatable), e.g. to rerun the rest within a time limit")
    ap.add_argument("--keep-scratch", action="store_true", help="keep the stage run's temp folder (logs/)")
    ap.add_argument("--setup-seconds", type=float, default=None, help="set-up time to record (make gpu-check)")
    ap.add_argument("--setup-note", default="", help="what the set-up did (make gpu-check)")
    args = ap.parse_args(argv)
    dry = args.dry_run
    args.steps = args.steps or (2 if dry else 10)
    args.warmup = args.warmup or (1 if dry else 3)
    args.stage_epochs = args.stage_epochs or (1 if dry else 2)
    args.stage_steps = args.stage_steps or (2 if dry else 5)
    args.out = Path(args.out or (DRY_RUN_OUT if dry else DEFAULT_OUT))
    if dry and args.out.resolve() == (REPO / DEFAULT_OUT).resolve():
        ap.error(f"a dry run may not be written to {DEFAULT_OUT}, the GPU result's file; use another --out")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ogfr_core.runtime import setup_logging

    setup_logging()
    cuda = torch.cuda.is_available()
    info = versions()
    print("versions: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    if not cuda and not args.dry_run:
        print("gpu_check: no CUDA device is visible to torch "
              f"(torch {torch.__version__}, CUDA runtime {torch.version.cuda}); this check needs a GPU. "
              "Run it on a CUDA machine, or use --dry-run to exercise the script on CPU.", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda and not args.dry_run else "cpu")
    if args.dry_run:
        torch.set_num_threads(1)  # tiny sizes: one thread spins less on a busy 2-core CI machine
    rep = Report(args.out, args.dry_run)
    rep.doc.update(versions=info, device=str(device), args={k: str(v) for k, v in vars(args).items()},
                   setup={"seconds": args.setup_seconds, "note": args.setup_note or
                          ("not timed (run through `make gpu-check` to time venv + install)"
                           if args.setup_seconds is None else "")})
    if "bench" not in args.skip:
        for name in ("paper", "demo"):
            with rep.section(f"bench/{name}"):
                bench_configuration(rep, name, device, args)
    if "amp_overflow" not in args.skip:
        with rep.section("amp_overflow"):
            amp_overflow_check(rep, device, args)
    if "stages" not in args.skip:
        with rep.section("stages"):
            stage_run(rep, device, args)
    total = time.perf_counter() - rep.t0
    rep.goal("total time (s), set-up excluded", total, TIME_BUDGET_S,
             None if args.dry_run else total <= TIME_BUDGET_S, "(issue 15: one 8-minute call)")
    rep.write(complete=True)
    failed = [c["name"] for c in rep.doc["checks"] if not c["passed"]]
    print(f"gpu_check {'DRY RUN ' if args.dry_run else ''}{'PASSED' if not failed else 'FAILED'}: "
          f"{len(rep.doc['checks']) - len(failed)}/{len(rep.doc['checks'])} checks in {total:.1f} s -> {args.out}"
          + (f"; failed: {failed}" if failed else ""), flush=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
