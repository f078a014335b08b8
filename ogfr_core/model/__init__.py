"""Re-ID methods on a shared backbone: the registry (``train.model.method``), OGFR (OA-ViT encoder
Eq. 3–5, FEP module Eq. 6–14, student head, BNNecks/classifiers), the Table IV baseline, and the peers.

Importing the package registers every method in :data:`METHODS`.
"""
from .base import ReIDMethod
from .registry import METHODS, ModelConfigError, build_model, register_method
from .fep import (ConventionalHead, block_queries, ErasingAgent, FEPModule, MHSAFix, correlation_matrix,
                  part_visibility, upsample_correlation)
from .oa_vit import OAViT, PretrainedWeightsError, patch_grid
from .ogfr import OGFR, reinforce_reward
from . import baseline  # noqa: F401  (registers "baseline")
from . import fed, pgfl_kd  # noqa: F401  (register the peers "fed", "pgfl_kd")
from . import cpacol, fpc  # noqa: F401  (register "cpacol", "fpc")

__all__ = [
    "METHODS", "ReIDMethod", "register_method", "OAViT", "PretrainedWeightsError", "patch_grid", "OGFR",
    "ModelConfigError", "build_model", "reinforce_reward", "ConventionalHead", "ErasingAgent", "FEPModule",
    "MHSAFix", "correlation_matrix", "part_visibility", "upsample_correlation", "block_queries",
]
