"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), following TransReID's ``utils/reranking.py`` step by step, vectorised.

Input is the distance matrix among ALL images (queries first, then gallery), e.g. Eq. (23) between
``FeatureSet.concat([query, gallery])`` and itself. Memory is O(N²) with N = Q + G, as in the
reference (Market-1501: N = 19,281 → ~1.5 GB for each N×N float32 matrix); the Jaccard step is
processed query by query over a sparse (CSC-like) view of V.

Differences from the reference: neighbour lists use a stable sort (ties by index), V is float32
instead of float16 (the reference's float16 changes the last digits of the result).
"""
from __future__ import annotations

import numpy as np


def _topk(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices ``[N, k]`` of the k smallest entries per row, ascending, ties by index."""
    k = min(k, dist.shape[1])
    order = np.argsort(dist, axis=1, kind="stable")
    return order[:, :k]


def _reciprocal(rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-reciprocal neighbours R(i, k): ``(ids [N, k+1], mask [N, k+1])``.

    j ∈ R(i, k) iff j is among the k+1 nearest of i AND i is among the k+1 nearest of j.
    """
    n = rank.shape[0]
    fwd = rank[:, :k + 1]  # [N, k+1]
    bwd = rank[fwd, :k + 1]  # [N, k+1, k+1]
    mask = (bwd == np.arange(n)[:, None, None]).any(axis=2)  # [N, k+1]
    return fwd, mask


def re_ranking(all_dist, num_query: int, k1: int = 50, k2: int = 15,
               lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked query × gallery distance.

    Args:
        all_dist: ``[N, N]`` distances among queries (first ``num_query`` rows/cols) and gallery.
        num_query: Q.
        k1, k2: k-reciprocal neighbourhood size and query-expansion size (TransReID: 50, 15).
        lambda_value: weight of the original distance (TransReID: 0.3); 1.0 returns the
            original distance divided by each query's largest distance (same ranking).

    Returns:
        ``[Q, N - Q]`` float32: ``(1 - λ) · Jaccard + λ · original / rowmax``.

    Raises:
        ValueError: non-square matrix, ``num_query`` outside 1..N-1, or bad k1/k2/λ.
    """
    d = np.asarray(all_dist, dtype=np.float32)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"re_ranking needs a square [N, N] distance matrix, got {d.shape}")
    n = d.shape[0]
    if not 0 < num_query < n:
        raise ValueError(f"num_query must be in 1..{n - 1}, got {num_query}")
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"bad re-ranking params k1={k1}, k2={k2}, lambda={lambda_value}")
    k1 = min(k1, n - 1)
    col_max = d.max(axis=0)
    orig = (d / np.where(col_max > 0, col_max, 1.0)).T  # reference: transpose(D / max(D, axis=0))
    rank = _topk(orig, max(k1 + 1, k2))  # [N, k1+1]

    # k-reciprocal sets and their expansion by the k1/2-reciprocal sets of their members
    fwd, recip = _reciprocal(rank, k1)  # [N, k1+1]
    kh = int(np.around(k1 / 2))
    fwd_h, recip_h = _reciprocal(rank, kh)  # [N, kh+1]
    members = np.zeros((n, n), bool)  # [N, N] R(i, k1)
    rows = np.repeat(np.arange(n), fwd.shape[1])
    members[rows[recip.ravel()], fwd.ravel()[recip.ravel()]] = True
    expanded = members.copy()
    n_half = recip_h.sum(axis=1)  # [N] |R(c, k1/2)|
    for i in range(n):
        cands = fwd[i][recip[i]]  # [c] members of R(i, k1)
        sets = fwd_h[cands]  # [c, kh+1]
        valid = recip_h[cands]  # [c, kh+1]
        inter = (members[i][sets] & valid).sum(axis=1)  # [c] |R(c, k1/2) ∩ R(i, k1)|
        ok = inter > (2.0 / 3.0) * n_half[cands]
        expanded[i, sets[ok][valid[ok]]] = True
    weights = np.where(expanded, np.exp(-orig), 0.0).astype(np.float32)  # [N, N]
    v = weights / weights.sum(axis=1, keepdims=True)
    del weights, members, expanded

    if k2 != 1:  # local query expansion: mean of V over the k2 nearest neighbours
        v_qe = np.empty_like(v)
        for s in range(0, n, 256):
            v_qe[s:s + 256] = v[rank[s:s + 256, :k2]].mean(axis=1)
        v = v_qe

    # Jaccard distance via Σ_k min(V[i, k], V[j, k]), over the non-zeros of each column
    cols_r, cols_c = np.nonzero(v.T)  # grouped by column k: rows j with V[j, k] != 0
    col_start = np.searchsorted(cols_r, np.arange(n + 1))
    col_vals = v[cols_c, cols_r]
    jac = np.empty((num_query, n - num_query), np.float32)
    for i in range(num_query):
        nz = np.flatnonzero(v[i])  # columns k with V[i, k] != 0
        lens = col_start[nz + 1] - col_start[nz]
        # positions of those columns' non-zeros in cols_c / col_vals, concatenated
        idx = np.repeat(col_start[nz] - (np.cumsum(lens) - lens), lens) + np.arange(lens.sum())
        vi = np.repeat(v[i, nz], lens)
        temp_min = np.bincount(cols_c[idx], weights=np.minimum(vi, col_vals[idx]), minlength=n)
        jac[i] = 1.0 - temp_min[num_query:] / (2.0 - temp_min[num_query:])
    final = jac * (1.0 - lambda_value) + orig[:num_query, num_query:] * lambda_value
    return final.astype(np.float32)
