"""BNNeck + identity classifier (TransReID / "Bag of Tricks" BNNeck).

TransReID: ``BatchNorm1d(D)`` with a frozen bias (``requires_grad_(False)``, zero), Kaiming init
(weight 1), then ``Linear(D, num_classes, bias=False)`` initialised ``N(0, 0.001)``. The triplet loss
uses the feature before the BN, the ID loss the logits, and inference uses the feature *after* the
BN (TransReID's default ``TEST.NECK_FEAT: 'after'``).
"""
from __future__ import annotations

import contextlib

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


def cpu_fp32(x: torch.Tensor):
    """A context that turns CPU autocast off while it is on for ``x``'s device (``train.amp_cpu``), so
    what runs inside computes in float32 (inputs need ``.float()``); a no-op context otherwise — on
    CUDA (fp16 AMP keeps its own op lists) and without autocast, where results are bit-identical."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


class FP32Linear(nn.Linear):
    """``nn.Linear`` that computes in float32 under CPU bf16 autocast (:func:`cpu_fp32`): the identity
    classifiers, whose logits feed the softmax of the Eq. (8) reward, the KL of Eq. (17) and the ID
    losses — a bf16 logit (8 significant bits) would move p^m, p^b by ~1 % of their value, the size of
    the reward itself. Same parameters and state-dict keys as ``nn.Linear``; ``[..., in] → [..., out]``
    float32 under CPU autocast, else exactly ``nn.Linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with cpu_fp32(x):
                return F.linear(x.float(), self.weight, self.bias)
        return super().forward(x)


def make_classifier(dim: int, num_classes: int) -> nn.Linear:
    """``Linear(dim, num_classes, bias=False)`` with ``N(0, 0.001)`` weights (TransReID ``weights_init_classifier``);
    float32 logits under CPU autocast (:class:`FP32Linear`)."""
    fc = FP32Linear(dim, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=0.001)
    return fc


def bn_batch_stats(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Apply ``bn`` with the batch's statistics (whatever its mode) without touching its running
    statistics. Used for the RL reward: p^m (train-mode neck) and p^b (frozen copy) are then
    normalised alike, and extra episodes do not count the batch twice in the running mean.
    ``x [B, D] → [B, D]``."""
    return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
