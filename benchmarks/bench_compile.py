"""torch.compile (inductor, CPU) vs eager on the training step (issue #22) — not a test; prints numbers.

Builds two copies of a method with the same weights (params.yaml's ``train`` profile, batch P×K,
synthetic batch of :func:`benchmarks.bench_model.make_batch`), compiles one, and

1. checks the maths: the first training step of both from the same seeds (torch's and the trainer's
   generator) — every loss term and the gradient norm of every parameter, eager vs compiled;
2. times the training step, eager and compiled alternately in one process (the order flips every
   round), after one untimed warm-up step each; the compiled model's first step (compilation) is
   reported separately.

``--scope`` picks what is compiled (``module.compile()``; the RL sampling, Sinkhorn, losses and the
optimiser stay eager unless ``full``):

* ``blocks``: every timm ``Block`` (encoder blocks, head/decoder layers, the frozen p^b copy);
* ``seq``: the encoder's block stack, the ConventionalHead (layers + norm), each FEP decoder;
* ``seq+stem``: ``seq`` plus the trainable MobileNetV2 blocks of the hybrid stem;
* ``full``: the whole model forward (graph breaks: the frozen stem's cache check, the z / camera-id
  range checks, the agent's sampling on a CPU ``torch.Generator``).

Inductor runs with ``fallback_random`` (DropPath draws from torch's generator as eager does) and a
recompile limit of 64 (one timm ``Block.forward`` is specialised per drop-path rate, batch size
128 / 64, train / eval, grad / no-grad and frozen parameters: > 8 variants; at the default limit of 8
the rest silently runs eager).

Measured (2026-12-05, AMD EPYC with avx512_bf16, 2 cores shared with a ``train`` stage and a
pytest run, load 3.2–4.1; README "Performance: the CPU training step"): ``seq+stem`` at 1 thread,
OGFR 1.83 → 1.83 s and 2.02 → 2.00 s in two runs (min of 7), 1.00–1.02× (medians too); baseline
0.97–1.02×; ``blocks`` 1.00–1.03×; ``full`` 0.95× (slower). Compilation cold (the first step): OGFR
52–125 s, the baseline 29 s; 2–16 s from inductor's on-disk cache. Loss: bit-equal
total with ``seq+stem``; within 1e-6 relative with ``full``. Not adopted.

Usage: ``OMP_NUM_THREADS=1 python -m benchmarks.bench_compile [--methods ogfr,baseline] [--steps 7]
[--scope seq+stem] [--check-only] [--drop-path 0]`` (``TORCH_LOGS=graph_breaks,recompiles`` shows
graph breaks and recompilations).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from benchmarks.bench_model import build, make_batch
from ogfr_core.config import DataConfig, TrainConfig, from_dict, read_params


def regions(model: torch.nn.Module, scope: str) -> list[torch.nn.Module]:
    """The modules ``--scope`` compiles (see the module docstring)."""
    from timm.models.vision_transformer import Block

    from ogfr_core.model.fep import ConventionalHead, FEPModule

    if scope == "blocks":
        return [m for m in model.modules() if isinstance(m, Block)]
    mods: list[torch.nn.Module] = [model.encoder.blocks]
    for m in model.modules():
        if isinstance(m, ConventionalHead):
            mods.append(m)
        elif isinstance(m, FEPModule):
            mods += [m.decoder[0], m.decoder]  # decoder[0] alone: the p^b / p^m passes (block_queries for [1])
    if scope == "seq+stem" and getattr(model.encoder, "hybrid", False):
        stem = model.encoder.patch_embed.backbone
        mods.append(stem.blocks[stem.frozen_blocks:])
    return mods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="ogfr,baseline")
    ap.add_argument("--steps", type=int, default=7, help="timed steps of each, after one warm-up step")
    ap.add_argument("--scope", choices=["blocks", "seq", "seq+stem", "full"], default="seq+stem")
    ap.add_argument("--check-only", action="store_true", help="only the first step's loss / gradient check")
    ap.add_argument("--drop-path", type=float, default=-1.0, help="override train.model.drop_path (>= 0)")
    args = ap.parse_args()
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    dynamo_config.recompile_limit = 64
    dynamo_config.accumulated_recompile_limit = 1024

    params = read_params("params.yaml")
    data = from_dict(DataConfig, params["data"], "data")
    cfg = from_dict(TrainConfig, params["train"], "train")
    if args.drop_path >= 0:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, drop_path=args.drop_path))
    hw, ncls, ncam = (data.height, data.width), 767, 2
    dev = torch.device("cpu")
    batch = make_batch(cfg.ids_per_batch * cfg.images_per_id, *hw, ncls, dev)
    print(f"[{cfg.model.backbone} depth {cfg.model.depth}, {hw[0]}x{hw[1]}, batch {batch['image'].shape[0]}, "
          f"scope {args.scope}, {torch.get_num_threads()} threads]")

    for method in args.methods.split(","):
        runs = {}
        for name in ("eager", "compiled"):
            torch.manual_seed(0)  # the same initial weights
            model, trainer = build(cfg, method, ncls, ncam, hw, dev)
            if name == "compiled":
                if args.scope == "full":
                    model.compile()
                else:
                    for mod in regions(model, args.scope):
                        mod.compile()
            torch.manual_seed(1)
            trainer.generator.manual_seed(1)
            t0 = time.perf_counter()
            stats = trainer.train_step(batch)
            first = time.perf_counter() - t0
            grads = {n: float(p.grad.norm()) for n, p in model.named_parameters() if p.grad is not None}
            runs[name] = (trainer, stats, grads, first)
        (te, se, ge, fe), (tc, sc, gc, fc) = runs["eager"], runs["compiled"]
        print(f"[{method}] first step: eager {fe:.2f} s, compiled {fc:.2f} s (with compilation)")
        for k in sorted(k for k in se if k.startswith("loss/")):
            rel = abs(se[k] - sc[k]) / max(abs(se[k]), 1e-12)
            print(f"  {k:<14} eager {se[k]:.8g}  compiled {sc[k]:.8g}  rel {rel:.1e}")
        rel = sorted(((abs(ge[n] - gc[n]) / max(ge[n], 1e-12), n) for n in ge), reverse=True)
        print(f"  gradient norms ({len(rel)} tensors): median rel diff {statistics.median(r for r, _ in rel):.1e}, "
              f"max {rel[0][0]:.1e} ({rel[0][1]}: {ge[rel[0][1]]:.3g} vs {gc[rel[0][1]]:.3g})")
        if args.check_only:
            continue
        te.train_step(batch)  # warm-up (the compiled side may still compile a variant)
        tc.train_step(batch)
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for step in range(args.steps):
            order = (("eager", te), ("compiled", tc))
            for name, tr in (order if step % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                tr.train_step(batch)
                times[name].append(time.perf_counter() - t0)
        e, c = times["eager"], times["compiled"]
        print(f"  step: eager min {min(e):.3f} s median {statistics.median(e):.3f} s | compiled min {min(c):.3f} s "
              f"median {statistics.median(c):.3f} s | eager/compiled {min(e) / min(c):.3f} (min), "
              f"{statistics.median(e) / statistics.median(c):.3f} (median)")
        print(f"  every step (s): eager {' '.join(f'{t:.2f}' for t in e)}; compiled {' '.join(f'{t:.2f}' for t in c)}")


if __name__ == "__main__":
    main()
