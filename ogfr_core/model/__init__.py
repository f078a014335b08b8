"""OGFR model: OA-ViT encoder (Eq. 3–5), FEP module (Eq. 6–14), student head, BNNecks/classifiers."""
from .fep import (ConventionalHead, block_queries, ErasingAgent, FEPModule, MHSAFix, correlation_matrix,
                  part_visibility, upsample_correlation)
from .oa_vit import OAViT, PretrainedWeightsError, patch_grid
from .ogfr import OGFR, ModelConfigError, build_model, reinforce_reward

__all__ = [
    "OAViT", "PretrainedWeightsError", "patch_grid", "OGFR", "ModelConfigError", "build_model",
    "reinforce_reward", "ConventionalHead", "ErasingAgent", "FEPModule", "MHSAFix",
    "correlation_matrix", "part_visibility", "upsample_correlation", "block_queries",
]
