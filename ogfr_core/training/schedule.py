"""Learning-rate schedule: linear warm-up then cosine decay (TransReID's ``WarmupCosine``), per step."""
from __future__ import annotations

import math

import torch


def lr_factor(step: int, total_steps: int, warmup_steps: int, warmup_factor: float, min_ratio: float) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based).

    Warm-up: linear from ``warmup_factor`` to 1 over ``warmup_steps``; then cosine from 1 to
    ``min_ratio`` (= min_lr / lr) at ``total_steps``.

    >>> lr_factor(0, 100, 10, 0.01, 0.0), lr_factor(10, 100, 10, 0.01, 0.0), round(lr_factor(100, 100, 10, 0.01, 0.0), 6)
    (0.01, 1.0, 0.0)
    """
    if step < warmup_steps:
        return warmup_factor + (1 - warmup_factor) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    warmup_factor: float, min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping :func:`lr_factor` once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, warmup_factor, min_ratio))
