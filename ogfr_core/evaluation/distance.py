"""Query × gallery distances: Euclidean global distance and OGFR's visibility-aware Eq. (23).

Eq. (23)::

    dist(q, g) = ( Σ_i v_i^q v_i^g · D(f_i^q, f_i^g) + D(f_g^q, f_g^g) ) / ( Σ_i v_i^q v_i^g + 1 )

with D the Euclidean distance, i = 1..K part features and the global feature always visible: the mean
of the global distance and of the part distances over the parts visible in BOTH images (PGFA-style).
A pair sharing no visible part gets the global distance.

All functions work on query chunks (torch, float32) so that the temporaries stay under ``chunk_mb``;
:func:`iter_distance_blocks` streams blocks for :class:`~ogfr_core.evaluation.rank.RankAccumulator`
without ever holding the full ``[Q, G]`` matrix.

Example::

    >>> import numpy as np
    >>> euclidean_distance(np.array([[0., 0.]]), np.array([[3., 4.], [0., 1.]])).tolist()
    [[5.0, 1.0]]
"""
from __future__ import annotations

from typing import Iterator, Literal

import numpy as np

from .features import FeatureSet

DistanceKind = Literal["visibility", "global"]
DISTANCES: tuple[str, ...] = ("visibility", "global")


def _torch(x):
    import torch

    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _pairwise(x, y):
    """Euclidean distance ``[q, g]`` between torch rows ``x [q, D]`` and ``y [g, D]`` (float32)."""
    import torch

    xx = (x * x).sum(1, keepdim=True)  # [q, 1]
    yy = (y * y).sum(1)[None, :]  # [1, g]
    d2 = torch.addmm(xx + yy, x, y.T, beta=1.0, alpha=-2.0)  # [q, g] = |x|² + |y|² - 2 x·y
    return d2.clamp_min_(0.0).sqrt_()


def _normalize(x, enabled: bool):
    import torch

    return torch.nn.functional.normalize(x, dim=-1) if enabled else x


def euclidean_distance(x, y, chunk_mb: float = 256) -> np.ndarray:
    """Euclidean distance matrix ``[Q, G]`` float32 between ``x [Q, D]`` and ``y [G, D]``.

    Raises:
        ValueError: different feature dimensions.
    """
    x, y = _torch(np.asarray(x, np.float32)), _torch(np.asarray(y, np.float32))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: {x.shape[1]} vs {y.shape[1]}")
    rows = _rows_per_chunk(len(y), 1, chunk_mb)
    out = np.empty((len(x), len(y)), np.float32)
    for s in range(0, len(x), rows):
        out[s:s + rows] = _pairwise(x[s:s + rows], y).numpy()
    return out


def _rows_per_chunk(num_gallery: int, num_terms: int, chunk_mb: float) -> int:
    # float32 [G] rows alive per query: global: |x|²+|y|² and the addmm output (+ the block handed
    # out); Eq. (23) adds the denominator, the part weights, one part distance (2) and their product
    per_row = max(1, num_gallery) * 4 * (6 if num_terms > 0 else 3)
    return max(1, int(chunk_mb * 2**20) // per_row)


def _check_pair(query: FeatureSet, gallery: FeatureSet) -> None:
    if len(query) == 0:
        raise ValueError("empty query set: no query features (check the index's 'query' split)")
    if len(gallery) == 0:
        raise ValueError("empty gallery: no gallery features (check the index's 'gallery' split)")
    if query.dim != gallery.dim or query.num_parts != gallery.num_parts:
        raise ValueError(f"query (D={query.dim}, K={query.num_parts}) and gallery "
                         f"(D={gallery.dim}, K={gallery.num_parts}) features differ")


def iter_distance_blocks(query: FeatureSet, gallery: FeatureSet, kind: DistanceKind = "visibility",
                         chunk_mb: float = 256, normalize: bool = False
                         ) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(query_slice, dist [q, G] float32)`` blocks covering all queries in order.

    Args:
        query, gallery: feature sets (same D and K).
        kind: ``"visibility"`` = Eq. (23); ``"global"`` = Euclidean distance of the global features.
        chunk_mb: memory budget (MiB) for one block and its temporaries.
        normalize: L2-normalise every feature vector first (TransReID ``TEST.FEAT_NORM``).

    Raises:
        ValueError: empty query/gallery, mismatched D/K, or an unknown ``kind``.
    """
    import torch

    if kind not in DISTANCES:
        raise ValueError(f"unknown distance '{kind}', expected one of {DISTANCES}")
    _check_pair(query, gallery)
    use_parts = kind == "visibility" and query.num_parts > 0
    qg = _normalize(_torch(query.global_feats), normalize)  # [Q, D]
    gg = _normalize(_torch(gallery.global_feats), normalize)  # [G, D]
    if use_parts:
        qp = _normalize(_torch(query.part_feats), normalize)  # [Q, K, D]
        gp = _normalize(_torch(gallery.part_feats), normalize)  # [G, K, D]
        qv = _torch(query.visibility).float()  # [Q, K]
        gv = _torch(gallery.visibility).float()  # [G, K]
    rows = _rows_per_chunk(len(gallery), query.num_parts if use_parts else 0, chunk_mb)
    with torch.inference_mode():
        for s in range(0, len(query), rows):
            sl = slice(s, min(s + rows, len(query)))
            num = _pairwise(qg[sl], gg)  # [q, G] global term, visibility 1
            if use_parts:
                den = torch.ones_like(num)  # [q, G]
                for k in range(query.num_parts):
                    w = qv[sl, k, None] * gv[None, :, k]  # [q, G] = v_k^q · v_k^g
                    num.add_(w * _pairwise(qp[sl, k], gp[:, k]))
                    den.add_(w)
                num.div_(den)
            yield sl, num.numpy()


def compute_distance(query: FeatureSet, gallery: FeatureSet, kind: DistanceKind = "visibility",
                     chunk_mb: float = 256, normalize: bool = False) -> np.ndarray:
    """Full ``[Q, G]`` float32 distance matrix (see :func:`iter_distance_blocks` for the args)."""
    out = np.empty((len(query), len(gallery)), np.float32)
    for sl, block in iter_distance_blocks(query, gallery, kind, chunk_mb, normalize):
        out[sl] = block
    return out


def visibility_distance(query: FeatureSet, gallery: FeatureSet, chunk_mb: float = 256,
                        normalize: bool = False) -> np.ndarray:
    """Eq. (23) distance ``[Q, G]`` float32 (global + parts visible in both images)."""
    return compute_distance(query, gallery, "visibility", chunk_mb, normalize)


def global_distance(query: FeatureSet, gallery: FeatureSet, chunk_mb: float = 256,
                    normalize: bool = False) -> np.ndarray:
    """Euclidean distance of the global features only ``[Q, G]`` float32 (comparison baseline)."""
    return compute_distance(query, gallery, "global", chunk_mb, normalize)
