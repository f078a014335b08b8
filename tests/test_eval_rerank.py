"""k-reciprocal re-ranking: parity with TransReID's loop, shape and properties, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from eval_reference import reference_re_ranking
from ogfr_core.evaluation import euclidean_distance, evaluate_rank, re_ranking


def _all_dist(n=48, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, dim)).astype(np.float32)
    return euclidean_distance(f, f), f


@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (6, 1, 0.5), (50, 15, 0.3)])
def test_parity_with_transreid_loop(k1, k2, lam):
    d, _ = _all_dist()
    ours = re_ranking(d, 12, k1, k2, lam)
    ref = reference_re_ranking(d, 12, k1, k2, lam)
    assert ours.shape == (12, 36) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_lambda_one_is_the_original_distance_row_normalised():
    d, _ = _all_dist(seed=1)
    out = re_ranking(d, 10, k1=8, k2=3, lambda_value=1.0)
    # symmetric input: the reference's transpose(D / colmax) is D / rowmax
    np.testing.assert_allclose(out, d[:10, 10:] / d[:10].max(axis=1, keepdims=True), rtol=1e-6)
    # hence identical ranking and metrics
    q_p, g_p = np.arange(10) % 5, np.arange(38) % 5
    a = evaluate_rank(out, q_p, g_p, np.zeros(10), np.ones(38))
    b = evaluate_rank(d[:10, 10:], q_p, g_p, np.zeros(10), np.ones(38))
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert a.mAP == pytest.approx(b.mAP)


def test_jaccard_part_properties():
    d, f = _all_dist(n=40, seed=2)
    jac = re_ranking(d, 8, k1=10, k2=4, lambda_value=0.0)  # Jaccard distance alone
    assert np.all(jac >= -1e-6) and np.all(jac <= 1 + 1e-6)
    # a gallery item identical to a query is its nearest neighbour after re-ranking
    f2 = np.concatenate([f, f[:1]])  # last item duplicates query 0
    d2 = euclidean_distance(f2, f2)
    out = re_ranking(d2, 8, k1=10, k2=4, lambda_value=0.3)
    assert int(np.argmin(out[0])) == out.shape[1] - 1
    # swapping the roles of two gallery items swaps their columns (permutation equivariance)
    perm = np.arange(41)
    perm[[20, 30]] = perm[[30, 20]]
    out_p = re_ranking(d2[np.ix_(perm, perm)], 8, k1=10, k2=4, lambda_value=0.3)
    np.testing.assert_allclose(out_p[:, [12, 22]], out[:, [22, 12]], atol=1e-6)


@pytest.mark.parametrize("args, match", [
    ((np.zeros((3, 4)), 1), "square"),
    ((np.zeros((3, 3)), 0), "num_query"),
    ((np.zeros((3, 3)), 3), "num_query"),
    ((np.ones((3, 3)), 1, 0), "k1"),
])
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        re_ranking(*args)
