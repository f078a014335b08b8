"""A straightforward per-query loop of the Market-1501 protocol (torchreid's Python
``eval_market1501`` with a stable sort), used as the parity reference in tests and benchmarks."""
from __future__ import annotations

import numpy as np


def reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Return ``(cmc [R], mAP, mINP, num_valid, ap [Q] with NaN for skipped)``."""
    distmat = np.asarray(distmat, np.float32)
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    all_cmc, all_ap, all_inp = [], [], []
    ap_per_q = np.full(num_q, np.nan)
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        remove = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        matches = (g_pids[order] == q_pids[i])[~remove].astype(np.int64)
        if not matches.any():
            continue
        cmc = matches.cumsum()
        cmc[cmc > 1] = 1
        if len(cmc) < max_rank:  # pad with the last value (a hit stays a hit)
            cmc = np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])
        all_cmc.append(cmc[:max_rank])
        pos = np.flatnonzero(matches)
        all_inp.append(len(pos) / (pos[-1] + 1.0))
        precision = np.arange(1, len(pos) + 1) / (pos + 1.0)
        ap_per_q[i] = precision.sum() / len(pos)
        all_ap.append(ap_per_q[i])
    return (np.mean(np.asarray(all_cmc, np.float64), axis=0), float(np.mean(all_ap)),
            float(np.mean(all_inp)), len(all_ap), ap_per_q)


def reference_re_ranking(original_dist, query_num, k1, k2, lambda_value):
    """TransReID ``utils/reranking.py`` loop (float32 instead of float16, stable argsort)."""
    original_dist = np.asarray(original_dist, np.float32)
    gallery_num = all_num = original_dist.shape[0]
    original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, axis=1, kind="stable").astype(np.int32)
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            half = int(np.around(k1 / 2)) + 1
            cand_fwd = initial_rank[candidate, :half]
            cand_bwd = initial_rank[cand_fwd, :half]
            fi_candidate = np.where(cand_bwd == candidate)[0]
            cand_recip = cand_fwd[fi_candidate]
            if len(np.intersect1d(cand_recip, k_reciprocal_index)) > 2 / 3 * len(cand_recip):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, cand_recip)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = [np.where(V[:, i] != 0)[0] for i in range(gallery_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]
