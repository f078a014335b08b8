"""Optimiser construction: SGD (OGFR §IV-B) or AdamW, with parameter groups.

Groups are split along two axes:

* **pretrained CNN stem** of a hybrid patch embedding (``encoder.patch_embed.backbone``, ImageNet
  MobileNetV2): lr ``lr · stem_lr_scale``; the **FEP erasing agent** (``G`` of Eq. 6, parameters
  named ``….agent.…``): lr ``lr · agent_lr_scale`` — its REINFORCE gradient (Eq. 9) is scaled by
  rewards of order 1e-3, and an adaptive optimiser moves each weight by about one lr per step, so at
  the transformer's lr ``G`` barely leaves its initialisation in a short run (ours; the paper gives
  no agent lr); everything else: ``lr``;
* **weight decay**: SGD decays every parameter (TransReID's ``WEIGHT_DECAY_BIAS`` = ``WEIGHT_DECAY``,
  the paper's setting); AdamW exempts biases, normalisation weights (every parameter with ≤ 1
  dimension) and the learnable tokens/embeddings (``pos_embed``, ``cls_token``, part tokens,
  occlusion/camera embeddings, the FEP replacement token ``mask_token``) — timm's ``param_groups_weight_decay`` rule
  with the model's ``no_weight_decay()`` names.

Only parameters with ``requires_grad`` are optimised (frozen BNNeck biases and the reward-baseline
copies are not).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig

#: parameter-name suffixes that AdamW never decays (learnable tokens and embeddings)
NO_DECAY_NAMES = ("pos_embed", "cls_token", "part_tokens", "occ_embed", "cam_embed", "mask_token")


def is_agent_parameter(name: str) -> bool:
    """True for the FEP erasing agent's parameters (``…agent.G.weight``), not its frozen p^b copies."""
    return ".agent." in f".{name}" and not name.startswith("reward_baselines.")


def is_stem_parameter(name: str) -> bool:
    """True for parameters of the hybrid embedding's CNN stem (``…encoder.patch_embed.backbone.…``)."""
    return ".patch_embed.backbone." in f".{name}"


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Parameter groups ``{"params", "lr", "weight_decay", "name"}`` (see the module docstring);
    empty groups are left out, group order is fixed (stem, agent, main; decay before no-decay) and
    the transformer's (``main``) groups come last."""
    decay_all = cfg.optimizer == "sgd"
    scale = {"stem": cfg.stem_lr_scale, "agent": cfg.agent_lr_scale, "main": 1.0}
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = not decay_all and (p.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES)
        part = "stem" if is_stem_parameter(name) else "agent" if is_agent_parameter(name) else "main"
        buckets.setdefault((part, not no_decay), []).append(p)
    groups = []
    for part in ("stem", "agent", "main"):
        for decay in (True, False):
            params = buckets.get((part, decay))
            if params:
                groups.append({"params": params, "name": f"{part}/{'decay' if decay else 'no_decay'}",
                               "lr": cfg.lr * scale[part],
                               "weight_decay": cfg.weight_decay if decay else 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (momentum ``cfg.momentum``) or ``torch.optim.AdamW`` (betas 0.9/0.999)
    over :func:`param_groups`.

    Raises:
        ValueError: an unknown ``cfg.optimizer`` (config validation normally catches it first).
    """
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")
