"""BNNeck + identity classifier (TransReID / "Bag of Tricks" BNNeck).

TransReID: ``BatchNorm1d(D)`` with a frozen bias (``requires_grad_(False)``, zero), Kaiming init
(weight 1), then ``Linear(D, num_classes, bias=False)`` initialised ``N(0, 0.001)``. The triplet loss
uses the feature before the BN, the ID loss the logits, and inference uses the feature *after* the
BN (TransReID's default ``TEST.NECK_FEAT: 'after'``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_bnneck(dim: int) -> nn.BatchNorm1d:
    """``BatchNorm1d(dim)`` with weight 1, bias 0 and the bias frozen (TransReID ``weights_init_kaiming``)."""
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


def make_classifier(dim: int, num_classes: int) -> nn.Linear:
    """``Linear(dim, num_classes, bias=False)`` with ``N(0, 0.001)`` weights (TransReID ``weights_init_classifier``)."""
    fc = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


def bn_batch_stats(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Apply ``bn`` with the batch's statistics (whatever its mode) without touching its running
    statistics. Used for the RL reward: p^m (train-mode neck) and p^b (frozen copy) are then
    normalised alike, and extra episodes do not count the batch twice in the running mean.
    ``x [B, D] → [B, D]``."""
    return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
