"""Market-1501 protocol: parity with a straightforward per-query loop, hand-computed values, chunking,
bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eval_reference import reference_eval
from ogfr_core.evaluation import RankAccumulator, evaluate_rank
from ogfr_core.evaluation.rank import order_keys


def _random_problem(rng, q, g, ids, cams, levels):
    """Distances on a coarse grid (many exact ties), few ids/cameras (same-camera positives,
    queries whose only positives are same-camera → no valid positive)."""
    d = (rng.integers(0, levels, (q, g)) / 8).astype(np.float32)
    return (d, rng.integers(0, ids, q), rng.integers(0, ids, g), rng.integers(0, cams, q),
            rng.integers(0, cams, g))


@pytest.mark.parametrize("seed", range(6))
def test_parity_with_reference_loop(seed):
    rng = np.random.default_rng(seed)
    d, qp, gp, qc, gc = _random_problem(rng, 70, 150, ids=25, cams=3, levels=12)
    qp[:3] = 999  # ids absent from the gallery: skipped
    gp[:4], gc[:4], qp[3], qc[3] = 777, 1, 777, 1  # a query whose positives are all same-camera
    cmc, mAP, mINP, n_valid, ap = reference_eval(d, qp, gp, qc, gc, max_rank=50)
    res = evaluate_rank(d, qp, gp, qc, gc, max_rank=50)
    assert res.num_valid_queries == n_valid and res.num_skipped_queries == 70 - n_valid
    assert res.num_skipped_queries >= 4
    np.testing.assert_allclose(res.cmc, cmc, atol=1e-6, rtol=0)
    assert res.mAP == pytest.approx(mAP, abs=1e-6)
    assert res.mINP == pytest.approx(mINP, abs=1e-6)
    np.testing.assert_allclose(res.ap, ap, atol=1e-9, equal_nan=True)


def test_chunking_gives_identical_results():
    rng = np.random.default_rng(7)
    d, qp, gp, qc, gc = _random_problem(rng, 90, 200, ids=20, cams=2, levels=6)
    full = evaluate_rank(d, qp, gp, qc, gc, max_rank=20, chunk_mb=256)
    tiny = evaluate_rank(d, qp, gp, qc, gc, max_rank=20, chunk_mb=0.001)  # one query per block
    acc = RankAccumulator(gp, gc, max_rank=20)
    for s in range(0, 90, 13):  # streamed in uneven blocks, as the evaluate stage does
        acc.process(d[s:s + 13], qp[s:s + 13], qc[s:s + 13])
    streamed = acc.result()
    for other in (tiny, streamed):
        np.testing.assert_array_equal(other.cmc, full.cmc)
        assert other.mAP == full.mAP and other.mINP == full.mINP
        assert other.num_valid_queries == full.num_valid_queries


def test_hand_computed_single_query():
    # gallery by distance: neg (0.1), pos (0.2), junk = same id same cam (0.3), pos (0.4), neg (0.5)
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], np.float32)
    res = evaluate_rank(d, q_pids=[1], g_pids=[2, 1, 1, 1, 3], q_camids=[0],
                        g_camids=[1, 1, 0, 2, 1], max_rank=4)
    # after dropping junk: neg, pos, pos, neg → hits at ranks 2 and 3
    np.testing.assert_array_equal(res.cmc, [0, 1, 1, 1])
    assert res.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert res.mINP == pytest.approx(2 / 3)
    assert res.to_dict()["rank-1"] == 0.0 and res.rank(2) == 1.0


def test_ties_follow_stable_order():
    # all distances equal: the stable order is the gallery order
    d = np.zeros((1, 4), np.float32)
    res = evaluate_rank(d, [5], [1, 5, 2, 5], [0], [1, 1, 1, 1], max_rank=4)
    np.testing.assert_array_equal(res.cmc, [0, 1, 1, 1])
    assert res.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_order_keys_sort_like_value_then_index():
    v = np.array([[0.5, -0.0, 0.0, -2.0, 3.0, 0.5, -1e-30, np.inf]], np.float32)
    keys = order_keys(v)
    np.testing.assert_array_equal(np.argsort(keys[0]), np.argsort(v[0] + 0.0, kind="stable"))


def test_torch_input_and_small_gallery_cuts_cmc():
    d = torch.tensor([[0.1, 0.3], [0.2, 0.4]])
    res = evaluate_rank(d, [1, 2], [2, 1], [0, 0], [1, 1], max_rank=50)
    assert res.cmc.shape == (2,)  # cut at the gallery size, as torchreid
    np.testing.assert_array_equal(res.cmc, [0.5, 1.0])


def test_query_without_positive_is_counted_not_an_error():
    d = np.array([[0.1, 0.2], [0.2, 0.1]], np.float32)
    res = evaluate_rank(d, [1, 9], [1, 2], [0, 0], [1, 1])
    assert res.num_valid_queries == 1 and res.num_skipped_queries == 1
    assert np.isnan(res.ap[1])


@pytest.mark.parametrize("args, match", [
    ((np.zeros((0, 3)), [], [1, 2, 3], [], [0, 0, 0]), "empty query"),
    ((np.zeros((2, 0)), [1, 2], [], [0, 0], []), "empty gallery"),
    ((np.zeros((2, 3)), [1, 2, 3], [1, 2, 3], [0, 0], [0, 0, 0]), "rows but 3 q_pids"),
    ((np.zeros((2, 2)), [1, 2], [1, 2, 3], [0, 0], [0, 0, 0]), "expected \\[q, 3\\]"),
    ((np.zeros((2, 3)), [1, 2], [1, 2, 3], [0, 0], [0, 0]), "g_camids"),
    ((np.full((1, 2), np.nan), [1], [1, 2], [0], [1, 1]), "NaN"),
    ((np.zeros((1, 2)), [1], [2, 3], [0], [1, 1]), "none of the 1 queries"),
])
def test_bad_input_raises_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        evaluate_rank(*args)


def test_memory_stays_under_chunk_budget():
    import tracemalloc

    rng = np.random.default_rng(0)
    d = rng.random((120, 20000), dtype=np.float32)  # 9.2 MiB, larger than the 2 MiB budget
    gp = rng.integers(0, 500, 20000)
    qp, qc, gc = rng.choice(gp, 120), rng.integers(0, 4, 120), rng.integers(0, 4, 20000)
    tracemalloc.start()
    try:
        evaluate_rank(d, qp, gp, qc, gc, chunk_mb=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.2 * 2**20  # budget + bookkeeping (per-query results, labels)
