"""Benchmark: CMC + mAP on an Occluded-Duke-sized random problem (2,210 queries × 17,661 gallery).

Compares, in one run on the same matrix:
  * ours — ``ogfr_core.evaluation.evaluate_rank`` (chunked, rank-by-counting, stable ties);
  * a straightforward NumPy per-query loop (torchreid's Python ``eval_market1501`` with a stable sort);
  * fast-reid's Cython ``evaluate_cy`` when importable: it is not installed by the project. Build it
    by hand from the ``fastreid`` wheel's ``fastreid/evaluation/rank_cylib/rank_cy.pyx`` (Cython +
    gcc, ``build_ext --inplace``) and point ``--fastreid-cy DIR`` at the folder holding ``rank_cy*.so``.

Goal (issue "Stages evaluate and report"): ≤ 1.35 s, i.e. ≤ 0.5× fast-reid's 2.7 s on 2 cores.

Run: ``python benchmarks/bench_eval.py [--repeat 3] [--chunk-mb 256] [--fastreid-cy DIR]``
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ogfr_core.evaluation import evaluate_rank  # noqa: E402

NUM_Q, NUM_G, NUM_IDS, NUM_CAMS = 2210, 17661, 1110, 8  # Occluded-Duke test split sizes


def make_problem(seed: int = 0):
    """Random distances; gallery ids ~16 images each (as Occluded-Duke), every query id in the gallery."""
    rng = np.random.default_rng(seed)
    distmat = rng.random((NUM_Q, NUM_G), dtype=np.float32)
    g_pids = rng.integers(0, NUM_IDS, NUM_G)
    q_pids = rng.choice(g_pids, NUM_Q)
    return distmat, q_pids, g_pids, rng.integers(0, NUM_CAMS, NUM_Q), rng.integers(0, NUM_CAMS, NUM_G)


def numpy_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The protocol written straightforwardly, one query at a time (reference for speed and values)."""
    all_cmc, all_ap = [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        matches = (g_pids[order] == q_pids[i])[keep]
        if not matches.any():
            continue
        cmc = np.minimum(matches.cumsum(), 1)
        all_cmc.append(cmc[:max_rank])
        pos = np.flatnonzero(matches)
        all_ap.append((np.arange(1, len(pos) + 1) / (pos + 1.0)).mean())
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap))


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk-mb", type=float, default=256)
    ap.add_argument("--fastreid-cy", default="", help="folder with fast-reid's compiled rank_cy module")
    args = ap.parse_args()
    d, qp, gp, qc, gc = make_problem()
    print(f"problem: {NUM_Q} x {NUM_G} float32 distances, {NUM_IDS} ids, {NUM_CAMS} cameras")

    t_ours, ours = timed(lambda: evaluate_rank(d, qp, gp, qc, gc, 50, args.chunk_mb), args.repeat)
    print(f"ours (evaluate_rank, chunk_mb={args.chunk_mb:g}): {t_ours:.3f} s  "
          f"rank-1 {ours.cmc[0]:.6f} mAP {ours.mAP:.6f}")
    t_loop, (cmc, mAP) = timed(lambda: numpy_loop(d, qp, gp, qc, gc), 1)
    print(f"numpy per-query loop:           {t_loop:.3f} s  rank-1 {cmc[0]:.6f} mAP {mAP:.6f}")
    print(f"  agreement: max |CMC diff| {np.abs(cmc - ours.cmc).max():.2e}, |mAP diff| {abs(mAP - ours.mAP):.2e}")
    print(f"  ratio ours / loop = {t_ours / t_loop:.3f}")

    if args.fastreid_cy:
        sys.path.insert(0, args.fastreid_cy)
        try:
            import rank_cy  # fast-reid's Cython evaluator, built by hand (see the module doc)
        except ImportError as exc:
            print(f"fast-reid rank_cy: not importable from {args.fastreid_cy} ({exc})")
            return
        call = lambda: rank_cy.evaluate_cy(d, qp.astype(np.int64), gp.astype(np.int64),  # noqa: E731
                                           qc.astype(np.int64), gc.astype(np.int64), 50)
        t_fr, (fr_cmc, fr_ap, _fr_inp) = timed(call, args.repeat)
        print(f"fast-reid evaluate_cy (Cython): {t_fr:.3f} s  rank-1 {fr_cmc[0]:.6f} mAP {np.mean(fr_ap):.6f}")
        print(f"  agreement: max |CMC diff| {np.abs(fr_cmc - ours.cmc).max():.2e}, "
              f"|mAP diff| {abs(np.mean(fr_ap) - ours.mAP):.2e} (float32 sums in Cython)")
        print(f"  ratio ours / fast-reid = {t_ours / t_fr:.3f}  (goal <= 0.5)")
    else:
        print("fast-reid rank_cy: not given (--fastreid-cy); the project does not install it")
    print(f"goal <= 1.35 s: {'met' if t_ours <= 1.35 else 'NOT met'} ({t_ours:.3f} s)")


if __name__ == "__main__":
    main()
