"""Model complexity and speed benchmark (OGFR Table VIII) — not a test; prints numbers.

1. Parameters and FLOPs of the paper configuration (ViT-B/16, stride 12, 256×128, K = 8, 702
   training ids and 8 cameras as Occluded-Duke) with ``torch.utils.flop_counter`` (which counts
   2 FLOPs per multiply–accumulate; Table VIII's "FLOPs" are multiply–accumulates as fvcore/thop
   report, so we print both). Params exclude the frozen reward-baseline copy (a training-time buffer).
2. Time per training step of OGFR vs the single-branch baseline (and the multiply–accumulates of
   a whole step, forward + backward, which do not depend on the machine's load), and inference time
   of the student branch vs a plain ViT (the baseline model: ViT + BNNeck, same backbone and
   stride), measured alternately in one process; ratios of the minima over ``--steps`` (medians printed too).
3. Peak memory of one training step of each model: CUDA ``max_memory_allocated``; on CPU the peak
   RSS (``VmHWM``) of a fresh spawned process that builds the model and runs one step.
4. ``--profile params``: the same timings for params.yaml's ``train.model`` at ``data.height × data.width``
   with a PK batch (P×K) — seconds per training step for the CPU budget (data loading excluded) —
   for **every registered method** (OGFR, the baseline, the peers): parameters, multiply–accumulates
   per image of a whole training step, inference MACs per image (``extract``) and the inference
   ratios (MACs and time) against the baseline (:func:`method_table`).

Usage: ``python -m benchmarks.bench_model [--profile paper|params|both] [--batch 4] [--steps 3]``
(``--methods fed,pgfl_kd,baseline`` limits ``--profile params`` to those methods)
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import statistics
import time
from typing import Any

import torch

from ogfr_core.config import DataConfig, TrainConfig, from_dict, read_params
from ogfr_core.model import METHODS, build_model
from ogfr_core.training.loop import Trainer

PAPER = {"params_m": 121.7, "flops_g": 26.5, "train_ms": 14.1, "train_ms_transreid": 4.8,
         "infer_ms": 7.0, "infer_ms_transreid": 5.2}


def paper_train_config() -> TrainConfig:
    cfg = TrainConfig()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone="vit_base_patch16_224", depth=0,
                                                              stride=12, pretrained=""))


def make_batch(b: int, h: int, w: int, num_classes: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(b) // max(1, b // max(2, b // 4)) % num_classes
    return {"image": torch.randn(b, 3, h, w, generator=g).to(device),
            "label_map": torch.randint(0, 9, (b, h, w), generator=g).to(device),
            "z": torch.randint(0, 2, (b, 4), generator=g).to(device),
            "label": labels.to(device), "camid": (torch.arange(b) % 2).to(device)}


def build(cfg: TrainConfig, method: str, num_classes: int, num_cameras: int, hw: tuple[int, int], device):
    mcfg = dataclasses.replace(cfg.model, method=method)
    model = build_model(mcfg, num_classes, num_cameras, hw, load_weights=False)
    run_cfg = dataclasses.replace(cfg, model=mcfg, warmup_epochs=0, epochs=1000)
    trainer = Trainer(model, run_cfg, "/tmp/ogfr_bench_unused", {}, lam=5.0, steps_per_epoch=1000, device=device)
    return model, trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def count_flops(model, hw, device) -> dict[str, float]:
    """FLOPs (torch counter: 2 per MAC) for one image: full training forward (teacher + student) and
    inference (student branch only)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    b = make_batch(1, *hw, model.num_classes, device)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            model(b)
        full = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            model.extract(b["image"], b["z"], b["camid"])
        infer = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            model.encoder(b["image"], b["z"], b["camid"])
        enc = fc.get_total_flops()
    model.train()
    # "every module once": one encoder pass + teacher FEP decoder + student layers
    once = full - enc
    return {"flops_full_g": full / 1e9, "flops_student_g": infer / 1e9, "flops_modules_once_g": once / 1e9,
            "macs_full_g": full / 2e9, "macs_student_g": infer / 2e9, "macs_modules_once_g": once / 2e9}


def train_step_macs(cfg: TrainConfig, method: str, num_classes: int, num_cameras: int, hw: tuple[int, int],
                    device: torch.device, batch: int = 2) -> float:
    """Multiply–accumulates per image of one whole training step (forward, backward, optimiser;
    torch's counter) — the machine-independent counterpart of the timed ratio."""
    from torch.utils.flop_counter import FlopCounterMode

    _, trainer = build(cfg, method, num_classes, num_cameras, hw, device)
    with FlopCounterMode(display=False) as fc:
        trainer.train_step(make_batch(batch, *hw, num_classes, device))
    return fc.get_total_flops() / 2 / batch


def infer_macs(model, hw: tuple[int, int], device: torch.device) -> float:
    """Multiply–accumulates per image of ``model.extract`` (the inference branch; torch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    b = make_batch(2, *hw, model.num_classes, device)
    with FlopCounterMode(display=False) as fc:
        model.extract(b["image"], b["z"], b["camid"])
    return fc.get_total_flops() / 2 / 2


def method_table(cfg: TrainConfig, num_classes: int, num_cameras: int, hw: tuple[int, int], batch: int, steps: int,
                 device: torch.device, methods: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    """Per registered method (default: all of :data:`~ogfr_core.model.METHODS`): ``params_m``
    (``count_parameters``, millions), ``macs_train_step_g`` (per image, forward + backward + optimiser),
    ``macs_infer_g`` (per image, ``extract``), ``train_s``/``infer_s`` (minimum seconds per batch,
    :func:`time_interleaved`) and, against the baseline, ``macs_train_ratio``, ``macs_infer_ratio``,
    ``train_time_ratio``, ``infer_time_ratio``."""
    methods = tuple(sorted(METHODS)) if methods is None else methods
    timing, models = time_interleaved(cfg, num_classes, num_cameras, hw, batch, steps, device, methods=methods)
    table = {m: {"params_m": timing[f"params_m_{m}"], "train_s": timing[f"train_s_{m}"],
                 "infer_s": timing[f"infer_s_{m}"], "macs_infer_g": infer_macs(models[m], hw, device) / 1e9,
                 "loss_total": timing[f"loss_total_{m}"]} for m in methods}
    del models
    for m in methods:
        table[m]["macs_train_step_g"] = train_step_macs(cfg, m, num_classes, num_cameras, hw, device) / 1e9
    if "baseline" in table:
        base = table["baseline"]
        for row in table.values():
            row["macs_train_ratio"] = row["macs_train_step_g"] / base["macs_train_step_g"]
            row["macs_infer_ratio"] = row["macs_infer_g"] / base["macs_infer_g"]
            row["train_time_ratio"] = row["train_s"] / base["train_s"]
            row["infer_time_ratio"] = row["infer_s"] / base["infer_s"]
    return table


def _vm_hwm_mb() -> float:
    """Peak resident set of this process (``VmHWM``, reset at exec — unlike ``ru_maxrss``, which a
    spawned child inherits from its parent), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status (Linux only)")


def _peak_child(queue, cfg_dict, method, num_classes, num_cameras, hw, batch, kind):
    cfg = from_dict(TrainConfig, cfg_dict, "train")
    dev = torch.device("cpu")
    before = _vm_hwm_mb()
    model, trainer = build(cfg, method, num_classes, num_cameras, hw, dev)
    data = make_batch(batch, *hw, num_classes, dev)
    if kind == "train":
        trainer.train_step(data)
    else:
        model.extract(data["image"], data["z"], data["camid"])
    queue.put((before, _vm_hwm_mb()))


def peak_memory_mb(cfg, method, num_classes, num_cameras, hw, batch, device, kind: str = "train") -> float:
    """Peak memory (MiB) of one training step (``kind="train"``: forward, backward, SGD) or one
    inference batch (``kind="infer"``: :meth:`OGFR.extract`, as the evaluate stage runs it) of a
    freshly built model: CUDA ``max_memory_allocated`` (weights + optimiser state + activations), on
    CPU the whole-process peak RSS of a fresh spawned process (Python + torch + model + the call)."""
    if kind not in ("train", "infer"):
        raise ValueError(f"kind must be 'train' or 'infer', got {kind!r}")
    if device.type == "cuda":
        model, trainer = build(cfg, method, num_classes, num_cameras, hw, device)
        data = make_batch(batch, *hw, num_classes, device)
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        if kind == "train":
            trainer.train_step(data)
        else:
            model.extract(data["image"], data["z"], data["camid"])
        sync(device)
        peak = torch.cuda.max_memory_allocated() / 2**20
        del model, trainer, data
        torch.cuda.empty_cache()
        return peak
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    from ogfr_core.config import to_dict

    p = ctx.Process(target=_peak_child, args=(q, to_dict(cfg), method, num_classes, num_cameras, hw, batch, kind))
    p.start()
    before, after = q.get()
    p.join()
    return after  # whole-process peak RSS of a fresh process: Python + torch + model + one call


def time_interleaved(cfg, num_classes, num_cameras, hw, batch, steps, device,
                     methods: tuple[str, ...] = ("ogfr", "baseline"), warmup: int = 1,
                     infer_repeats: int = 3) -> tuple[dict[str, Any], dict[str, torch.nn.Module]]:
    """Seconds per train step and per inference batch (``extract``, the student branch; the
    baseline's is a plain ViT + BNNeck) of each method, measured alternately in one process after
    ``warmup`` untimed steps (CUDA-synchronised around every call). The ratios use the minimum over
    repeats (the least disturbed run on a shared machine); medians are reported too.

    Returns:
        ``(figures, models)``: per method ``train_s_<m>``, ``infer_s_<m>`` (minima, seconds per
        batch of ``batch`` images), their ``_median``, ``params_m_<m>`` (millions), ``loss_total_<m>``
        (the last timed step's total loss); ``train_ratio``/``infer_ratio`` (+ ``_median``) of ogfr
        over baseline when both are measured; and the built models by method.
    """
    models, trainers = {}, {}
    for m in methods:
        models[m], trainers[m] = build(cfg, m, num_classes, num_cameras, hw, device)
    data = make_batch(batch, *hw, num_classes, device)
    train: dict[str, list[float]] = {m: [] for m in methods}
    infer: dict[str, list[float]] = {m: [] for m in methods}
    last_loss: dict[str, float] = {}
    for step in range(warmup + steps):  # the first `warmup` rounds are not timed
        timed = step >= warmup
        for name in methods:
            sync(device)
            t0 = time.perf_counter()
            stats = trainers[name].train_step(data)
            sync(device)
            if timed:
                train[name].append(time.perf_counter() - t0)
            last_loss[name] = stats["loss/total"]
        for _ in range(infer_repeats):
            for name in methods:
                sync(device)
                t0 = time.perf_counter()
                models[name].extract(data["image"], data["z"], data["camid"])
                sync(device)
                if timed:
                    infer[name].append(time.perf_counter() - t0)
    med: dict[str, Any] = {}
    for kind, table in (("train", train), ("infer", infer)):
        for k, v in table.items():
            med[f"{kind}_s_{k}"] = min(v)
            med[f"{kind}_s_{k}_median"] = statistics.median(v)
    if "ogfr" in methods and "baseline" in methods:
        med["train_ratio"] = med["train_s_ogfr"] / med["train_s_baseline"]
        med["infer_ratio"] = med["infer_s_ogfr"] / med["infer_s_baseline"]
        med["train_ratio_median"] = med["train_s_ogfr_median"] / med["train_s_baseline_median"]
        med["infer_ratio_median"] = med["infer_s_ogfr_median"] / med["infer_s_baseline_median"]
    for m in methods:
        med[f"params_m_{m}"] = models[m].count_parameters() / 1e6
        med[f"loss_total_{m}"] = last_loss[m]
    return med, models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=["paper", "params", "both"], default="both")
    ap.add_argument("--batch", type=int, default=0, help="paper profile batch (default: 64 on CUDA, 4 on CPU)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default="", help="also write the numbers as JSON here")
    ap.add_argument("--methods", default="",
                    help="comma-separated methods for --profile params (default: all registered)")
    args = ap.parse_args()
    from ogfr_core.runtime import resolve_device

    device = resolve_device(args.device)
    results: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads()}
    if args.profile in ("paper", "both"):
        cfg = paper_train_config()
        hw, ncls, ncam = (256, 128), 702, 8
        batch = args.batch or (64 if device.type == "cuda" else 4)
        memory = {}
        if not args.no_memory:  # before the timings, while this process holds no model
            memory["peak_mb_ogfr"] = peak_memory_mb(cfg, "ogfr", ncls, ncam, hw, batch, device)
            memory["peak_mb_baseline"] = peak_memory_mb(cfg, "baseline", ncls, ncam, hw, batch, device)
        timing, models = time_interleaved(cfg, ncls, ncam, hw, batch, args.steps, device)
        flops = count_flops(models["ogfr"], hw, device)
        del models
        plain = build_model(dataclasses.replace(cfg.model, method="baseline"), ncls, ncam, hw, load_weights=False)
        flops["macs_plain_vit_g"] = count_flops(plain, hw, device)["macs_student_g"]
        del plain
        for method in ("ogfr", "baseline"):
            flops[f"macs_train_step_{method}_g"] = train_step_macs(cfg, method, ncls, ncam, hw, device) / 1e9
        flops["macs_train_ratio"] = flops["macs_train_step_ogfr_g"] / flops["macs_train_step_baseline_g"]
        r = {"batch": batch, **timing, **flops, **memory}
        r["params_vs_paper_pct"] = 100 * (r["params_m_ogfr"] / PAPER["params_m"] - 1)
        r["macs_once_vs_paper_pct"] = 100 * (r["macs_modules_once_g"] / PAPER["flops_g"] - 1)
        r["macs_student_vs_paper_pct"] = 100 * (r["macs_student_g"] / PAPER["flops_g"] - 1)
        results["paper_vitb_s12_256x128"] = r
        print(f"[paper config ViT-B/16 stride 12, 256x128, K=8, 702 ids] device={device} batch={batch}")
        print(f"  params OGFR {r['params_m_ogfr']:.1f} M (paper 121.7 M, {r['params_vs_paper_pct']:+.1f}%), "
              f"baseline {r['params_m_baseline']:.1f} M")
        print(f"  FLOPs/image (torch counter, 2 per MAC): training forward (2 encoder passes) "
              f"{r['flops_full_g']:.1f} G, student inference {r['flops_student_g']:.1f} G")
        print(f"  MACs/image: every module once (encoder + teacher FEP + student) {r['macs_modules_once_g']:.1f} G "
              f"(paper 26.5 G: {r['macs_once_vs_paper_pct']:+.1f}%), student inference {r['macs_student_g']:.1f} G "
              f"({r['macs_student_vs_paper_pct']:+.1f}%), training forward {r['macs_full_g']:.1f} G, "
              f"plain ViT-B/s12 {r['macs_plain_vit_g']:.1f} G (TransReID in Table VIII: 23.6 G with JPM)")
        print(f"  MACs/image of a whole training step (forward + backward + SGD): "
              f"OGFR {r['macs_train_step_ogfr_g']:.1f} G, baseline {r['macs_train_step_baseline_g']:.1f} G, ratio {r['macs_train_ratio']:.3f}")
        print(f"  train step: OGFR {r['train_s_ogfr']:.3f} s, baseline {r['train_s_baseline']:.3f} s, "
              f"ratio {r['train_ratio']:.2f} (median {r['train_ratio_median']:.2f}; goal <= 2.5; paper 14.1/4.8 = 2.94)")
        print(f"  inference:  student {r['infer_s_ogfr']:.3f} s, plain ViT {r['infer_s_baseline']:.3f} s, "
              f"ratio {r['infer_ratio']:.2f} (median {r['infer_ratio_median']:.2f}; goal <= 1.35; paper 7.0/5.2 = 1.35)")
        if "peak_mb_ogfr" in r:
            kind = "CUDA max allocated" if device.type == "cuda" else "process peak RSS"
            print(f"  peak memory ({kind}): OGFR {r['peak_mb_ogfr']:.0f} MiB, baseline {r['peak_mb_baseline']:.0f} MiB")
    if args.profile in ("params", "both"):
        params = read_params("params.yaml")
        data = from_dict(DataConfig, params["data"], "data")
        cfg = from_dict(TrainConfig, params["train"], "train")
        hw, ncls, ncam = (data.height, data.width), 767, 2
        batch = cfg.ids_per_batch * cfg.images_per_id
        methods = tuple(m for m in args.methods.split(",") if m) or None
        table = method_table(cfg, ncls, ncam, hw, batch, args.steps, device, methods)
        results["params_yaml"] = {"batch": batch, "backbone": cfg.model.backbone, "depth": cfg.model.depth,
                                  "stride": cfg.model.stride, "hw": list(hw), "methods": table}
        print(f"[params.yaml {cfg.model.backbone} depth {cfg.model.depth} {cfg.model.patch_embed} patches, "
              f"{hw[0]}x{hw[1]}, batch {batch}, {ncls} ids] device={device} threads={torch.get_num_threads()}")
        print(f"  {'method':<10} {'params M':>9} {'train GMACs/img':>16} {'x base':>7} {'infer GMACs/img':>16} "
              f"{'x base':>7} {'train s/step':>13} {'x base':>7} {'infer s/batch':>14} {'x base':>7}")
        for m, r in table.items():
            print(f"  {m:<10} {r['params_m']:>9.2f} {r['macs_train_step_g']:>16.3f} "
                  f"{r.get('macs_train_ratio', 0):>7.2f} "
                  f"{r['macs_infer_g']:>16.3f} {r.get('macs_infer_ratio', 0):>7.2f} {r['train_s']:>13.3f} "
                  f"{r.get('train_time_ratio', 0):>7.2f} "
                  f"{r['infer_s']:>14.3f} {r.get('infer_time_ratio', 0):>7.2f}")
    if args.out:
        from ogfr_core.io import write_json

        write_json(args.out, results)


if __name__ == "__main__":
    main()
