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
   with a PK batch (P×K) — seconds per training step for the CPU budget (data loading excluded) — for
   EVERY registered method (:func:`method_table`): parameters, multiply–accumulates per image of a
   training step (per phase for a multi-phase method, e.g. CpaCol's stage I / stage II) and of
   inference, train/inference seconds, inference ratio vs the baseline; and the per-query cost of the
   test-time extras (:func:`extras_cost`: FPC's consolidation, CpaCol's top-k re-scoring). The paper
   profile prints the extras' cost at ViT-B/16 size too.

Where an OGFR training step of the CPU profile spends its time (issue #22; ``--trace ogfr``, batch
64 = 16×4, 128×64, hybrid stem, synthetic batch; self CPU time of torch.profiler, shared 2-core VM,
load average 3–7, so shares rather than seconds). 1 thread, before the changes of issue #22
(5.5 s): transformer matmuls (``mm``/``addmm``: encoder over the 2B = 128 stacked images × 42
tokens, the teacher FEP and student layers over 64, the no-grad reward passes) 51 %; MobileNetV2
stem convolutions forward + backward 17 %; its batch norms 10 % (one eval-mode BN of a frozen block
over ``[128, 96, 64, 32]`` alone 4.5 %); attention kernels 4 %; GELU 3 %; Eq. (19) — bilinear
upsampling of ``[64, 9, 8, 4]`` to ``[64, 9, 128, 64]``, its backward and the ``log`` over it, twice —
3–4 %; ~1,700 ``copy_`` (mostly the occlusion augmentation's per-image pastes) 1.6 %; AdamW 1.3 %.
The baseline (1.8 s, same run): matmuls 39 %, stem convolutions 27 %, stem batch norms 15 %. So the
time follows the MACs of the transformer layers, which OGFR has ~4× of the baseline's (two views
through the encoder, two 2-layer heads, reward passes), while the stem — most of the baseline's
MACs — only doubles. Changed (same values, tested): Eq. (19) at the labelled class only
(:func:`ogfr_core.losses.mask_loss`, ~4× less work per call) and the frozen stem blocks with BN
folded into their convolutions (:class:`ogfr_core.model.stem.CNNStem`); measured together
interleaved with the old code path in one process: the OGFR step 0.92–0.95× (1 thread). 2 threads,
after the changes (2.8 s per step unprofiled; 10.1 s of CPU time over both threads, load 3.5): matmuls
40 %, stem convolutions 12 %, batch norms forward + backward 8 %, and the memory-bound ops grow under
contention — ``copy_`` (1,735 calls) 5 %, ``cat`` 3.6 %, ``fill_`` 3.2 % — while L_mask's gathers,
scatter and ``log`` are 0.6 %. Not changed: the copies of the occlusion augmentation (per-image
pastes, ``ogfr_core/data/occlusion_aug.py``), the concatenations in the FEP decoder / reward passes
(issue #23's code) and AdamW's per-tensor loop (``foreach``/``fused`` would change the update's
rounding). MACs: torch's counter mis-counts grouped convolution backward
(:func:`conv_backward_flops` fixes it): the baseline step is 0.254 G MACs per image, not 0.73 G, and
OGFR / baseline 3.45×, not 2.50×.

Usage: ``python -m benchmarks.bench_model [--profile paper|params|both] [--batch 4] [--steps 3]``
(``--methods fed,pgfl_kd,baseline`` limits ``--profile params`` to those methods; ``--amp`` adds
``ogfr@bf16`` / ``baseline@bf16`` rows, CPU bf16 autocast (``train.amp_cpu``) timed interleaved with
fp32; ``--trace ogfr`` prints torch.profiler's table of one training step)
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


def build(cfg: TrainConfig, method: str, num_classes: int, num_cameras: int, hw: tuple[int, int], device,
          phase: str | None = None):
    """Model + Trainer of ``method``; ``<method>@bf16`` trains with CPU bf16 autocast (``train.amp_cpu``)."""
    method, _, precision = method.partition("@")
    if precision not in ("", "bf16"):
        raise ValueError(f"unknown precision suffix @{precision} (allowed: @bf16)")
    cfg = dataclasses.replace(cfg, amp_cpu=precision == "bf16")
    mcfg = dataclasses.replace(cfg.model, method=method)
    model = build_model(mcfg, num_classes, num_cameras, hw, load_weights=False)
    if phase is not None:  # a training phase of a multi-phase method (what it freezes)
        model.set_phase(phase)
    run_cfg = dataclasses.replace(cfg, model=mcfg, warmup_epochs=0, epochs=1000)
    trainer = Trainer(model, run_cfg, "/tmp/ogfr_bench_unused", {}, occlusion=5.0, steps_per_epoch=1000, device=device)
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


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **_) -> int:
    """FLOPs (2 per MAC) of ``aten.convolution_backward``, for grouped convolutions too.

    torch's own formula (``torch.utils.flop_counter.conv_backward_flop``, torch 2.14) ignores
    ``groups``: it counts a depthwise convolution's weight gradient as a dense one, C times too many
    (C = channels; ×96…576 in MobileNetV2). Each gradient costs the forward's MACs,
    ``elements(output) × C_in/groups × kh × kw`` (``weight [C_out, C_in/g, kh, kw]``; transposed:
    ``elements(input) × C_out/g × kh × kw``), counted for each of grad_input / grad_weight requested
    by ``output_mask``.
    """
    k = 1
    for s in w_shape[1:]:
        k *= int(s)
    n = 1
    for s in (x_shape if transposed else grad_out_shape):
        n *= int(s)
    return 2 * n * k * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter():
    """``FlopCounterMode`` with :func:`conv_backward_flops` for ``aten.convolution_backward``."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})


def train_step_macs(cfg: TrainConfig, method: str, num_classes: int, num_cameras: int, hw: tuple[int, int],
                    device: torch.device, batch: int = 2, phase: str | None = None) -> float:
    """Multiply–accumulates per image of one whole training step (forward, backward, optimiser;
    torch's counter with grouped-convolution backward counted right, :func:`conv_backward_flops`) —
    the machine-independent counterpart of the timed ratio. ``phase``: a training phase of a
    multi-phase method (default: its first)."""
    _, trainer = build(cfg, method, num_classes, num_cameras, hw, device, phase)
    with flop_counter() as fc:
        trainer.train_step(make_batch(batch, *hw, num_classes, device))
    return fc.get_total_flops() / 2 / batch


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
    for m in methods:
        if m.endswith("@bf16") and m.partition("@")[0] in methods:
            med[f"train_speedup_{m}"] = med[f"train_s_{m.partition('@')[0]}"] / med[f"train_s_{m}"]
    if "ogfr" in methods and "baseline" in methods:
        med["train_ratio"] = med["train_s_ogfr"] / med["train_s_baseline"]
        med["infer_ratio"] = med["infer_s_ogfr"] / med["infer_s_baseline"]
        med["train_ratio_median"] = med["train_s_ogfr_median"] / med["train_s_baseline_median"]
        med["infer_ratio_median"] = med["infer_s_ogfr_median"] / med["infer_s_baseline_median"]
    for m in methods:
        med[f"params_m_{m}"] = models[m].count_parameters() / 1e6
        med[f"loss_total_{m}"] = last_loss[m]
    return med, models


def inference_macs(model, hw, device) -> float:
    """Multiply–accumulates of ``extract`` for one image (eval mode, torch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    b = make_batch(1, *hw, model.num_classes, device)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.extract(b["image"], b["z"], b["camid"])
    model.train()
    return fc.get_total_flops() / 2


def method_table(cfg: TrainConfig, num_classes: int, num_cameras: int, hw: tuple[int, int], batch: int,
                 steps: int, device, methods: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Every registered method (or ``methods``) on one configuration: ``params_m``, ``macs_train_step_g``
    per image (``{phase: G}`` for multi-phase methods), ``macs_infer_g`` per image, ``train_s`` /
    ``infer_s`` (minima over ``steps``, batch of ``batch``, measured alternately in one process) and
    ``infer_ratio`` = infer_s / the baseline's (inference MACs ratio too)."""
    from ogfr_core.model import METHODS

    methods = tuple(methods or sorted(METHODS))
    timing, models = time_interleaved(cfg, num_classes, num_cameras, hw, batch, steps, device, methods=methods)
    table: dict[str, dict[str, Any]] = {}
    for m in methods:
        if "@" in m:  # a precision variant: timing only (MACs and parameters are the method's)
            table[m] = {"train_s": timing[f"train_s_{m}"], "train_s_median": timing[f"train_s_{m}_median"],
                        "infer_s": timing[f"infer_s_{m}"], "loss_total": timing[f"loss_total_{m}"],
                        "train_speedup": timing.get(f"train_speedup_{m}")}
            continue
        phases = [p.name for p in models[m].training_phases(cfg)]
        step = {(p or "train"): train_step_macs(cfg, m, num_classes, num_cameras, hw, device, 2, p or None) / 1e9
                for p in phases}
        table[m] = {"params_m": models[m].count_parameters() / 1e6, "macs_train_step_g": step,
                    "macs_infer_g": inference_macs(models[m], hw, device) / 1e9,
                    "train_s": timing[f"train_s_{m}"], "infer_s": timing[f"infer_s_{m}"],
                    "train_s_median": timing[f"train_s_{m}_median"], "loss_total": timing[f"loss_total_{m}"]}
    if "baseline" in table:
        for m in table:
            if "@" in m:
                continue
            table[m]["train_ratio"] = table[m]["train_s"] / table["baseline"]["train_s"]
            table[m]["train_macs_ratio"] = (sum(table[m]["macs_train_step_g"].values())
                                            / sum(table["baseline"]["macs_train_step_g"].values()))
            table[m]["infer_ratio"] = table[m]["infer_s"] / table["baseline"]["infer_s"]
            table[m]["infer_macs_ratio"] = table[m]["macs_infer_g"] / table["baseline"]["macs_infer_g"]
    return table


def extras_cost(cfg: TrainConfig, hw: tuple[int, int], device, top_k: int = 100, neighbours: int = 10,
                shortlist: int = 100, repeats: int = 2) -> dict[str, Any]:
    """Per-query cost of the test-time extras, on random tokens of the right shapes (the gallery pass
    they need is one ``extract``-sized forward per gallery image, in ``method_table``):

    * FPC consolidation: Eq. (4)-(10) neighbour search over ``shortlist`` candidates (EMD by Sinkhorn)
      + the consolidation decoder on ``1 + M + K·N`` tokens;
    * CpaCol re-scoring: the correlation module on ``top_k`` pairs (Eq. 9 + the 4D network).

    Returns seconds (minimum over ``repeats``) and multiply–accumulates per query (torch's counter;
    Sinkhorn's element-wise exp/divisions are not counted).
    """
    from torch.utils.flop_counter import FlopCounterMode

    out: dict[str, Any] = {}
    g = torch.Generator().manual_seed(0)
    fpc = build_model(dataclasses.replace(cfg.model, method="fpc"), 10, 2, hw, load_weights=False).to(device).eval()
    n, d = fpc.encoder.num_patches, fpc.encoder.embed_dim
    img = torch.randn(1, 3, *hw, generator=g).to(device)
    cam = torch.zeros(1, dtype=torch.long, device=device)
    mem_cls = torch.randn(max(shortlist, 1000), d, generator=g).to(device)
    mem_patch = torch.randn(max(shortlist, 1000), n, d, generator=g).to(device)

    def consolidate():
        tok = fpc.sparse_tokens(img, cam)
        idx = fpc.neighbours(tok, mem_cls, lambda i: mem_patch[i], neighbours, shortlist)
        nbr = torch.cat([mem_cls[idx][:, :, None], mem_patch[idx]], dim=2)
        return fpc.rec_neck(fpc.consolidate(tok, nbr))

    cp = build_model(dataclasses.replace(cfg.model, method="cpacol"), 10, 2, hw, load_weights=False).to(device).eval()
    shape = (len(cp.attn_after), cp.cfg.cpacol.corr_channels, *cp.encoder.grid_size)
    fq = torch.nn.functional.normalize(torch.randn(1, *shape, generator=g), dim=2).to(device)
    fgal = torch.nn.functional.normalize(torch.randn(top_k, *shape, generator=g), dim=2).to(device)

    def rescore():
        return cp.correlation_logits(fq.expand(top_k, *shape), fgal)

    for name, fn in (("fpc_consolidation", consolidate), ("cpacol_rescore", rescore)):
        with torch.no_grad():
            with FlopCounterMode(display=False) as fc:
                fn()
            times = []
            for _ in range(repeats):
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times.append(time.perf_counter() - t0)
        out[name] = {"s_per_query": min(times), "macs_per_query_g": fc.get_total_flops() / 2e9}
    with torch.no_grad():
        kept = fpc.sparse_tokens(img, cam).shape[1] - 1
    out["fpc_consolidation"].update(neighbours=neighbours, shortlist=shortlist, query_tokens=kept,
                                    decoder_tokens=1 + kept + neighbours * n)
    out["cpacol_rescore"].update(top_k=top_k, pairs_per_query=top_k)
    return out


def print_method_table(table: dict[str, dict[str, Any]], extras: dict[str, Any]) -> None:
    print("  method      params(M)  train-step MACs/img (G)            infer MACs/img (G)  train s/step  "
          "infer s/batch  infer ratio vs baseline")
    for m, r in table.items():
        if "@" in m:  # precision variant
            speed = f" ({r['train_speedup']:.2f}x the fp32 step)" if r.get("train_speedup") else ""
            print(f"  {m:<10} {'':9}  {'(same MACs)':<34} {'':9}  {r['train_s']:12.3f}  {r['infer_s']:13.3f}{speed}")
            continue
        step = ", ".join(f"{k} {v:.3f}" for k, v in r["macs_train_step_g"].items())
        ratio = f"{r['infer_ratio']:.2f} (MACs {r['infer_macs_ratio']:.2f})" if "infer_ratio" in r else "-"
        print(f"  {m:<10} {r['params_m']:9.2f}  {step:<34} {r['macs_infer_g']:9.3f}  {r['train_s']:12.3f}  "
              f"{r['infer_s']:13.3f}  {ratio}")
    if "ogfr" in table and "train_ratio" in table["ogfr"]:
        r = table["ogfr"]
        print(f"  OGFR / baseline train step: time {r['train_ratio']:.2f}x, MACs {r['train_macs_ratio']:.2f}x "
              f"-> {r['train_ratio'] / r['train_macs_ratio']:.2f}x the MAC ratio (issue #22 target <= 1.15)")
    print_extras(extras)


def print_extras(extras: dict[str, Any]) -> None:
    f, c = extras["fpc_consolidation"], extras["cpacol_rescore"]
    print(f"  test-time extras per query: FPC consolidation (K={f['neighbours']}, shortlist {f['shortlist']}) "
          f"{1e3 * f['s_per_query']:.1f} ms, {f['macs_per_query_g']:.2f} G MACs; CpaCol re-scoring of the top "
          f"{c['top_k']} {1e3 * c['s_per_query']:.1f} ms, {c['macs_per_query_g']:.2f} G MACs "
          f"(Occluded-Duke, 2,210 queries: {2210 * f['s_per_query'] / 60:.1f} / {2210 * c['s_per_query'] / 60:.1f} min)")


def profile_step(cfg: TrainConfig, method: str, num_classes: int, num_cameras: int, hw: tuple[int, int],
                 batch: int, device, rows: int = 25) -> str:
    """torch.profiler table of one training step of ``method`` (after one untimed step): the ``rows``
    ops with the most self CPU time, and the same grouped by input shape."""
    from torch.profiler import ProfilerActivity, profile

    _, trainer = build(cfg, method, num_classes, num_cameras, hw, device)
    data = make_batch(batch, *hw, num_classes, device)
    trainer.train_step(data)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        trainer.train_step(data)
    avg = prof.key_averages()
    return (avg.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=50)
            + prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows,
                                                                 max_name_column_width=40, max_shapes_column_width=80))


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
    ap.add_argument("--amp", action="store_true",
                    help="--profile params: also time <method>@bf16 (CPU bf16 autocast, train.amp_cpu) interleaved")
    ap.add_argument("--trace", default="",
                    help="--profile params: print torch.profiler's table of one training step of this method")
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
        r["test_time_extras"] = extras_cost(cfg, hw, device, repeats=1)
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
        print_extras(r["test_time_extras"])
        if "peak_mb_ogfr" in r:
            kind = "CUDA max allocated" if device.type == "cuda" else "process peak RSS"
            print(f"  peak memory ({kind}): OGFR {r['peak_mb_ogfr']:.0f} MiB, baseline {r['peak_mb_baseline']:.0f} MiB")
    if args.profile in ("params", "both"):
        params = read_params("params.yaml")
        data = from_dict(DataConfig, params["data"], "data")
        cfg = from_dict(TrainConfig, params["train"], "train")
        hw, ncls, ncam = (data.height, data.width), 767, 2
        batch = cfg.ids_per_batch * cfg.images_per_id
        methods = tuple(m for m in args.methods.split(",") if m) or tuple(sorted(METHODS))
        if args.amp:
            methods += tuple(f"{m}@bf16" for m in methods if m in ("ogfr", "baseline"))
        if args.trace:
            print(f"[torch.profiler: one {args.trace} training step, batch {batch}, {torch.get_num_threads()} threads]")
            print(profile_step(cfg, args.trace, ncls, ncam, hw, batch, device))
        table = method_table(cfg, ncls, ncam, hw, batch, args.steps, device, methods)
        results["params_yaml"] = {"batch": batch, "backbone": cfg.model.backbone, "depth": cfg.model.depth,
                                  "stride": cfg.model.stride, "hw": list(hw), "methods": table}
        extras = extras_cost(cfg, hw, device)
        results["params_yaml"]["test_time_extras"] = extras
        print(f"[params.yaml {cfg.model.backbone} depth {cfg.model.depth} {cfg.model.patch_embed} patches, "
              f"{hw[0]}x{hw[1]}, batch {batch}, {ncls} ids] device={device} threads={torch.get_num_threads()}")
        print(f"  every registered method (batch {batch}; MACs per image, torch counter):")
        print_method_table(table, extras)
    if args.out:
        from ogfr_core.io import write_json

        write_json(args.out, results)


if __name__ == "__main__":
    main()
