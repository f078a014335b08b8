"""Query/gallery FeatureSets → ranking metrics, CMC plot rows and example retrievals.

This is what the ``evaluate`` stage calls once per (dataset, distance). Without re-ranking the
``[Q, G]`` matrix is never held: distance blocks stream into a
:class:`~ogfr_core.evaluation.rank.RankAccumulator`. With re-ranking the ``[Q+G, Q+G]`` matrix is
built (Zhong et al. need it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .distance import compute_distance, iter_distance_blocks
from .features import FeatureSet
from .rank import RankAccumulator, RankResult, evaluate_rank
from .rerank import re_ranking


@dataclass(frozen=True)
class RerankParams:
    """k-reciprocal re-ranking switch and parameters (TransReID defaults)."""

    enabled: bool = False
    k1: int = 50
    k2: int = 15
    lambda_value: float = 0.3


def distance_matrix(query: FeatureSet, gallery: FeatureSet, kind: str, chunk_mb: float = 256,
                    normalize: bool = True, rerank: RerankParams = RerankParams()) -> np.ndarray:
    """Full ``[Q, G]`` distance of ``kind`` (``visibility`` | ``global``), re-ranked if asked."""
    if not rerank.enabled:
        return compute_distance(query, gallery, kind, chunk_mb, normalize)
    both = FeatureSet.concat([query, gallery])
    all_dist = compute_distance(both, both, kind, chunk_mb, normalize)  # [Q+G, Q+G]
    return re_ranking(all_dist, len(query), rerank.k1, rerank.k2, rerank.lambda_value)


def evaluate_features(query: FeatureSet, gallery: FeatureSet, kind: str = "visibility",
                      max_rank: int = 50, chunk_mb: float = 256, normalize: bool = True,
                      rerank: RerankParams = RerankParams()) -> RankResult:
    """Market-1501 metrics of ``query`` against ``gallery`` under distance ``kind``.

    Args:
        query, gallery: feature sets (their own pids/camids are used; nothing is positional).
        kind: ``"visibility"`` (Eq. 23) or ``"global"``.
        max_rank, chunk_mb: see :func:`~ogfr_core.evaluation.rank.evaluate_rank`.
        normalize: L2-normalise features first (TransReID ``TEST.FEAT_NORM: yes``).
        rerank: k-reciprocal re-ranking parameters.

    Raises:
        ValueError: empty query/gallery, D/K mismatch, or no query with a positive.
    """
    if rerank.enabled:
        dist = distance_matrix(query, gallery, kind, chunk_mb, normalize, rerank)
        return evaluate_rank(dist, query.pids, gallery.pids, query.camids, gallery.camids,
                             max_rank, chunk_mb)
    acc = RankAccumulator(gallery.pids, gallery.camids, max_rank, chunk_mb)
    for sl, block in iter_distance_blocks(query, gallery, kind, chunk_mb, normalize):
        acc.process(block, query.pids[sl], query.camids[sl])
    return acc.result()


def cmc_rows(results: Mapping[str, RankResult], dataset: str) -> list[dict]:
    """Long-format CMC rows ``{dataset, distance, rank, cmc}`` for the DVC plot (rank 1-based)."""
    return [{"dataset": dataset, "distance": kind, "rank": r + 1, "cmc": round(float(v), 6)}
            for kind, res in results.items() for r, v in enumerate(res.cmc)]


def pick_queries(query: FeatureSet, gallery: FeatureSet, occluded: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` example queries for the retrieval figure: occluded ones with a gallery
    positive first (evenly spread over the query list, deterministic), then holistic ones.

    Args:
        occluded: ``[Q]`` bool, True when the query's z has any occluded part.
    """
    occluded = np.asarray(occluded, bool)
    has_pos = np.zeros(len(query), bool)
    for i in range(len(query)):
        has_pos[i] = np.any((gallery.pids == query.pids[i]) & (gallery.camids != query.camids[i]))
    chosen: list[int] = []
    for pool in (np.flatnonzero(occluded & has_pos), np.flatnonzero(~occluded & has_pos)):
        need = n - len(chosen)
        if need <= 0 or len(pool) == 0:
            continue
        take = pool[np.unique(np.linspace(0, len(pool) - 1, min(need, len(pool))).round().astype(int))]
        chosen.extend(take.tolist())
    return np.asarray(chosen[:n], np.int64)


def retrievals(query: FeatureSet, gallery: FeatureSet, indices: Sequence[int], kind: str,
               occluded: np.ndarray, top_k: int = 5, chunk_mb: float = 256,
               normalize: bool = True) -> list[dict]:
    """Top-``k`` gallery items of selected queries (junk — same pid AND camera — removed, as in
    the protocol), for the report's Fig. 8.

    Returns:
        One dict per query: ``query_key``, ``query_path``, ``query_pid``, ``occluded``, ``distance``
        (kind) and ``top`` = list of ``{key, path, pid, camid, distance, match}``.
    """
    indices = np.asarray(indices, np.int64)
    if len(indices) == 0:
        return []
    sub = query.subset(indices)
    dist = compute_distance(sub, gallery, kind, chunk_mb, normalize)  # [n, G]
    out = []
    for row, qi in enumerate(indices):
        junk = (gallery.pids == query.pids[qi]) & (gallery.camids == query.camids[qi])
        d = np.where(junk, np.inf, dist[row])
        top = np.argsort(d, kind="stable")[:top_k]
        out.append({
            "query_key": query.keys[qi],
            "query_path": query.paths[qi] if query.paths else "",
            "query_pid": int(query.pids[qi]),
            "query_camid": int(query.camids[qi]),
            "occluded": bool(occluded[qi]),
            "distance": kind,
            "top": [{"key": gallery.keys[j], "path": gallery.paths[j] if gallery.paths else "",
                     "pid": int(gallery.pids[j]), "camid": int(gallery.camids[j]),
                     "distance": float(d[j]), "match": bool(gallery.pids[j] == query.pids[qi])}
                    for j in top if np.isfinite(d[j])],
        })
    return out
