"""Benchmark: parse a whole dataset with the `parse` params, then re-run (cache hit).

Builds a minimal index (key = SHA-1 of the file bytes, path relative to the root) from every
``*.jpg`` under ``--root``'s Market-1501 folders, runs :func:`ogfr_core.parsing.parse_dataset`
twice into ``--out`` and prints images/s, the whole-set time and the cached re-run's time.

    python -m benchmarks.bench_parse --root ../shared/data/cuhk03-np-detected --workers 2   (from the repo root)

Goal on the 2-core reference machine (shared set, 12,168 crops): ≤ 10 min, person found ≥ 95 %.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import time
from pathlib import Path

import pandas as pd

from ogfr_core.config import ParseConfig, load_section
from ogfr_core.parsing import parse_dataset
from ogfr_core.runtime import setup_logging

FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


def minimal_index(root: Path, limit: int = 0) -> pd.DataFrame:
    """``key``/``path`` rows for the Market-1501-layout images under ``root`` (sorted by path)."""
    paths = sorted(p for f in FOLDERS for p in (root / f).glob("*.jpg"))
    if limit:
        paths = paths[:limit]
    if not paths:
        raise SystemExit(f"no *.jpg under {root}/{{{','.join(FOLDERS)}}}")
    return pd.DataFrame({"key": [hashlib.sha1(p.read_bytes()).hexdigest() for p in paths],
                         "path": [p.relative_to(root).as_posix() for p in paths]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/data/cuhk03-np-detected")
    ap.add_argument("--out", default="data/parsing/cuhk03-np-detected", help="cache folder (kept)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    ap.add_argument("--dvc-noop", action="store_true",
                    help="also time `dvc repro parse` twice and report the second (no-op) run; needs "
                         "data/index/<data.name>.parquet and dvc on PATH")
    args = ap.parse_args()
    setup_logging()
    cfg = dataclasses.replace(load_section(args.params, "parse", ParseConfig), workers=args.workers)
    t = time.perf_counter()
    index = minimal_index(Path(args.root), args.limit)
    print(f"index: {len(index)} images hashed in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    first = parse_dataset(index, args.root, cfg, args.out)
    whole = time.perf_counter() - t
    t = time.perf_counter()
    second = parse_dataset(index, args.root, cfg, args.out, progress=False)
    rerun = time.perf_counter() - t
    print(json.dumps(first.to_dict(), indent=2))
    print(f"first run : {first.parsed_now} parsed ({first.cached} cached) in {whole:.1f} s "
          f"({whole / 60:.2f} min), {first.images_per_s:.1f} images/s with {cfg.workers} workers")
    print(f"person found: {first.person_found}/{first.n_images} ({first.coverage:.2%} of readable)")
    print(f"second run: {second.parsed_now} parsed ({second.cached} cached) in {rerun:.2f} s")
    print(f"cache folder: {Path(args.out).resolve()}")
    if args.dvc_noop:
        for attempt in ("first", "no-op"):
            t = time.perf_counter()
            subprocess.run(["dvc", "repro", "parse"], check=True, capture_output=True)
            print(f"dvc repro parse ({attempt}): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
