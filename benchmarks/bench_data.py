"""Benchmark of the data layer on the shared set: index build (open + SHA-1 of every image) and
train-loader throughput (PK batches of 64 with TrainTransform + label maps).

Run from the repo root: ``python benchmarks/bench_data.py [--batches 20] [--workers 0]``.
Prints seconds and images/s; not a test (timings depend on the machine's load).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ogfr_core.config import AugmentConfig, DataConfig, load_section  # noqa: E402
from ogfr_core.data import ReIDImageDataset, TrainTransform, build_index, build_train_loader, dataset_root  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    repo = Path(".")
    cfg = load_section("params.yaml", "data", DataConfig)
    t0 = time.perf_counter()
    frame = build_index(cfg, repo).frame
    dt = time.perf_counter() - t0
    print(f"build_index: {len(frame)} images in {dt:.2f} s ({len(frame) / dt:.0f} images/s)")

    train = frame[frame.split == "train"].reset_index(drop=True)
    maps = {k: np.zeros((256, 128), np.uint8) for k in train.key}
    ds = ReIDImageDataset(train, dataset_root(cfg, repo), TrainTransform(cfg.height, cfg.width, AugmentConfig()),
                          label_maps=maps)
    loader = build_train_loader(ds, train.label.tolist(), p=16, k=4, seed=0, num_workers=args.workers)
    it = iter(loader)
    next(it)  # warm-up (worker start)
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    dt = time.perf_counter() - t0
    n = args.batches * 64
    print(f"train loader ({args.workers} workers, {cfg.height}x{cfg.width}): {args.batches} batches of 64 "
          f"in {dt:.2f} s ({n / dt:.0f} images/s)")


if __name__ == "__main__":
    main()
