"""Part-level diagnostics of the Eq. (22)–(23) distance (issue 23 item 3; ``evaluate.part_map``).

* :func:`per_part_map` — the mAP of each part feature f^i alone (i = 1..K), every query ranked by the
  Euclidean distance of that part feature (L2-normalised as ``evaluate.feat_norm``), visibility
  ignored: which parts carry identity on their own.
* :func:`visible_part_histogram` — how many of the K parts Eq. (22) calls visible per image: with the
  permissive pixel reading most parts are visible on every query, and the global feature then weighs
  as little as 1/(1 + #visible) of the Eq. (23) distance.
"""
from __future__ import annotations

import numpy as np

from .evaluator import evaluate_features
from .features import FeatureSet


def part_feature_set(fs: FeatureSet, i: int) -> FeatureSet:
    """Part feature ``i`` (0-based over the K parts) of ``fs`` as the global feature of a part-less set."""
    return FeatureSet(fs.part_feats[:, i], np.zeros((len(fs), 0, fs.dim), np.float32), np.zeros((len(fs), 0), bool),
                      fs.pids, fs.camids, fs.keys)


def per_part_map(query: FeatureSet, gallery: FeatureSet, max_rank: int = 50, chunk_mb: float = 256,
                 normalize: bool = True) -> list[dict]:
    """``[{"part": i, "mAP": ..., "rank-1": ...}]`` for i = 1..K, each part feature ranked alone
    (Market-1501 protocol, :func:`~ogfr_core.evaluation.evaluator.evaluate_features` with the global
    distance). Empty for a model without part features."""
    out = []
    for i in range(query.num_parts):
        res = evaluate_features(part_feature_set(query, i), part_feature_set(gallery, i), "global", max_rank,
                                chunk_mb, normalize)
        out.append({"part": i + 1, "mAP": float(res.mAP), "rank-1": float(res.rank(1))})
    return out


def visible_part_histogram(visibility: np.ndarray) -> list[int]:
    """Counts of images with 0, 1, …, K visible parts, ``visibility [N, K]`` bool → K + 1 ints.

    >>> visible_part_histogram(np.array([[1, 0, 1], [1, 1, 1], [0, 0, 0]], bool))
    [1, 0, 1, 1]
    """
    v = np.asarray(visibility, dtype=bool)
    return np.bincount(v.sum(1), minlength=v.shape[1] + 1).astype(int).tolist()
