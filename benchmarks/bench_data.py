"""Benchmark of the data layer on the shared set: index build (open + SHA-1 of every image) and
train-loader throughput (PK batches of P×K with TrainTransform + label maps), against the model's
training step — does the loader keep up with training (issue #22)?

Three measurements in one process, on params.yaml's profile (``data.num_workers`` workers by default,
the train stage's value):

1. **loader alone**: seconds per batch of ``next(loader)`` with nothing else running in this process
   (the workers' throughput on an otherwise idle machine);
2. **train step alone**: seconds per ``Trainer.train_step`` of ``train.model.method`` on one fixed
   synthetic batch of the same shape (``benchmarks.bench_model.make_batch``; data loading excluded,
   ``--amp`` for the CPU bf16 step);
3. **loader feeding the trainer**: the training loop as the train stage runs it — each step takes the
   next loader batch — split into the time spent waiting in ``next(loader)`` and in the step. The
   workers prefetch while the step runs, so on a machine whose cores the step already uses they
   compete with it: the wait and the step's slow-down are what the loader really costs.

The loader keeps up when (1) ÷ (2) < 1 and the wait in (3) is a small share of the step. Run from
the repo root: ``python -m benchmarks.bench_data [--batches 6] [--loader-batches 24] [--workers 2] [--amp]``; not a test
(timings depend on the machine's load: the script prints ``os.getloadavg()``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ogfr_core.config import DataConfig, TrainConfig, from_dict, load_section, read_params  # noqa: E402
from ogfr_core.data import ReIDImageDataset, TrainTransform, build_index, build_train_loader, dataset_root  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=6, help="timed train steps per measurement (2 and 3)")
    ap.add_argument("--loader-batches", type=int, default=24, help="timed loader batches (1)")
    ap.add_argument("--workers", type=int, default=-1, help="loader workers (default: data.num_workers)")
    ap.add_argument("--amp", action="store_true", help="time the step with CPU bf16 autocast (train.amp_cpu)")
    args = ap.parse_args()
    repo = Path(".")
    cfg = load_section("params.yaml", "data", DataConfig)
    tcfg = from_dict(TrainConfig, read_params("params.yaml")["train"], "train")
    workers = cfg.num_workers if args.workers < 0 else args.workers
    p, k = tcfg.ids_per_batch, tcfg.images_per_id
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
    t0 = time.perf_counter()
    frame = build_index(cfg, repo).frame
    dt = time.perf_counter() - t0
    print(f"build_index: {len(frame)} images in {dt:.2f} s ({len(frame) / dt:.0f} images/s)")

    train = frame[frame.split == "train"].reset_index(drop=True)
    maps = {key: np.zeros((256, 128), np.uint8) for key in train.key}  # the parse cache's resolution
    z = {key: np.zeros(4, np.int64) for key in train.key}
    ds = ReIDImageDataset(train, dataset_root(cfg, repo), TrainTransform(cfg.height, cfg.width, tcfg.augment),
                          label_maps=maps, z=z)

    def loader(epoch: int):
        return iter(build_train_loader(ds, train.label.tolist(), p=p, k=k, seed=epoch, num_workers=workers))

    # 1. loader alone: after the warm-up batch the workers hold up to 2 x workers prefetched batches, which
    # come back at once; those are skipped, then --loader-batches are timed in one stretch
    it = loader(0)
    next(it)  # warm-up (worker start)
    time.sleep(1.0)
    for _ in range(2 * max(1, workers)):
        next(it)  # drain the prefetched batches
    t0 = time.perf_counter()
    for _ in range(args.loader_batches):
        next(it)
    load_s = (time.perf_counter() - t0) / args.loader_batches
    del it

    # 2. the train step alone, on a fixed batch of the same shape
    from benchmarks.bench_model import build, make_batch

    method = tcfg.model.method + ("@bf16" if args.amp else "")
    hw, ncls = (cfg.height, cfg.width), int(train.label.max()) + 1
    ncam = int(train.camid.max()) + 1
    _, trainer = build(tcfg, method, ncls, ncam, hw, torch.device("cpu"))
    fixed = make_batch(p * k, *hw, ncls, torch.device("cpu"))
    trainer.train_step(fixed)  # warm-up
    steps = []
    for _ in range(args.batches):
        t0 = time.perf_counter()
        trainer.train_step(fixed)
        steps.append(time.perf_counter() - t0)
    step_s = statistics.median(steps)

    # 3. the loader feeding the trainer (as the train stage runs)
    it = loader(1)
    trainer.train_step(next(it))  # warm-up (worker start)
    fed_wait, fed_step = [], []
    for _ in range(args.batches):
        t0 = time.perf_counter()
        b = next(it)
        t1 = time.perf_counter()
        trainer.train_step(b)
        fed_wait.append(t1 - t0)
        fed_step.append(time.perf_counter() - t1)
    del it

    n = p * k
    print(f"1. train loader alone ({workers} workers, {cfg.height}x{cfg.width}, batch {n}): "
          f"{load_s:.3f} s/batch (mean of {args.loader_batches} after the prefetched ones; {n / load_s:.0f} images/s)")
    print(f"2. {method} train step alone (fixed batch): {step_s:.3f} s/step (median of {args.batches})")
    print(f"   loader / step = {load_s / step_s:.2f} ({'keeps up' if load_s < step_s else 'DOES NOT keep up'})")
    print(f"3. loader feeding the trainer: wait in next() {statistics.median(fed_wait):.3f} s/step, "
          f"step {statistics.median(fed_step):.3f} s (medians; wait = "
          f"{100 * statistics.median(fed_wait) / statistics.median(fed_step):.1f} % of the step; "
          f"step slowed {statistics.median(fed_step) / step_s:.2f}x by the workers sharing the cores)")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
