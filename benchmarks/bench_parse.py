"""Benchmark: parse a whole dataset with the `parse` params, then re-run (cache hit).

Indexes the dataset of params.yaml's ``data`` section with :func:`ogfr_core.data.build_index`, runs
:func:`ogfr_core.parsing.parse_dataset` twice into a fresh folder (``--out`` to keep it, e.g. to seed
``data/parsing/<name>``) and prints images/s, the whole-set time and the cached re-run's time.

    python -m benchmarks.bench_parse --workers 2            (from the repo root)

Goal on the 2-core reference machine (shared set, 12,168 crops): ≤ 10 min, person found ≥ 95 %.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import tempfile
import time
from pathlib import Path

from ogfr_core.config import DataConfig, ParseConfig, load_section
from ogfr_core.data import build_index, dataset_root
from ogfr_core.parsing import parse_dataset
from ogfr_core.runtime import setup_logging

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="", help="cache folder to fill and keep (default: a fresh temp folder)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    ap.add_argument("--dvc-noop", action="store_true",
                    help="also time `dvc repro parse` twice and report the second (no-op) run; needs "
                         "data/index/<data.name>.parquet and dvc on PATH")
    args = ap.parse_args()
    setup_logging()
    cfg = dataclasses.replace(load_section(args.params, "parse", ParseConfig), workers=args.workers)
    data = load_section(args.params, "data", DataConfig)
    root = dataset_root(data, Path("."))
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_parse_"))
    t = time.perf_counter()
    index = build_index(data, Path(".")).frame
    if args.limit:
        index = index.head(args.limit)
    print(f"index: {len(index)} images hashed in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    first = parse_dataset(index, root, cfg, out)
    whole = time.perf_counter() - t
    t = time.perf_counter()
    second = parse_dataset(index, root, cfg, out, progress=False)
    rerun = time.perf_counter() - t
    print(json.dumps(first.to_dict(), indent=2))
    print(f"first run : {first.parsed_now} parsed ({first.cached} cached) in {whole:.1f} s "
          f"({whole / 60:.2f} min), {first.images_per_s:.1f} images/s with {cfg.workers} workers")
    print(f"person found: {first.person_found}/{first.n_images} ({first.coverage:.2%} of readable)")
    print(f"second run: {second.parsed_now} parsed ({second.cached} cached) in {rerun:.2f} s")
    print(f"cache folder: {out.resolve()}")
    if args.dvc_noop:
        for attempt in ("first", "no-op"):
            t = time.perf_counter()
            subprocess.run(["dvc", "repro", "parse"], check=True, capture_output=True)
            print(f"dvc repro parse ({attempt}): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
