"""ReID evaluation: features (Eq. 22 visibility from the model), distances (Eq. 23), the Market-1501
protocol (CMC / mAP / mINP), k-reciprocal re-ranking.

Evaluation never cares how features were produced: a model only needs ``extract`` (see
:mod:`.features`); everything else works on :class:`FeatureSet` objects and distance matrices.
"""
from .distance import (DISTANCES, compute_distance, euclidean_distance, global_distance,
                       iter_distance_blocks, visibility_distance)
from .features import FeatureSet, extract_features, map_unseen_cameras
from .rank import RankAccumulator, RankResult, evaluate_rank
from .rerank import re_ranking

__all__ = [
    "DISTANCES", "FeatureSet", "RankAccumulator", "RankResult", "compute_distance",
    "euclidean_distance", "evaluate_rank", "extract_features", "global_distance",
    "iter_distance_blocks", "map_unseen_cameras", "re_ranking", "visibility_distance",
]
