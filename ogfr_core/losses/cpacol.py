"""CpaCol's losses (Gao et al., "Contrastive Pedestrian Attentive and Correlation Learning Network for
Occluded Person Re-Identification"): Eq. (3)–(6) contrastive losses of the ContrastAttn layers,
Eq. (10) verification loss of the correlation module, Eq. (11)–(13) the stage objectives.

=============================  ===================================================================
:func:`clamped_cosine`         ``[sim(x_i, y_j)]_+`` as a matrix, clamped to [5e-4, 1 − 5e-4] so that
                               the logs are finite (the official code's clamp; the paper's ReLU
                               would give log 0 for a non-positive similarity)
:func:`negative_contrast`      Eq. (3): ``−mean_ij log(1 − [sim(f_+^i, f_−^j)]_+)`` — push the
                               focused and non-focused components apart
:func:`positive_contrast`      Eq. (4): ``−mean_ij 1[...] log [sim(x_i, x_j)]_+`` over the pairs a mask
                               allows — pull components of one kind together
:func:`inter_contrastive_loss` Eq. (5): negative + positive over foregrounds of the SAME identity +
                               positive over all backgrounds, across the batch
:func:`intra_contrastive_loss` Eq. (6): the same three terms across the K stripes of each image,
                               averaged over the batch
:func:`part_base_loss`         Eq. (11): ``L_id(cls) + 1/K Σ_k L_id(part k) + L_tri(cls) + 1/K Σ_k L_tri(part k)``
:func:`stage1_objective`       Eq. (12): ``L_base + λ1 Σ_l L_inter^l + λ2 Σ_l L_intra^l`` (l: ContrastAttn layers)
:func:`verification_loss`      Eq. (10): binary cross-entropy of the correlation score s (Eq. 13: stage II)
=============================  ===================================================================

Normalisation: the paper writes sums over image (and stripe) pairs; with a batch of 64 a sum of
4,096 terms would swamp L_base at λ1 = 1, so we average over the pairs each sum runs over (the
official code also averages). The code's extra rank weights on the positive terms and its loss
warm-up are not in the paper and not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import id_loss, triplet_loss

SIM_MIN, SIM_MAX = 5e-4, 1 - 5e-4


def clamped_cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``clamp(cos(x_i, y_j), 5e-4, 1 − 5e-4)`` for ``x [..., N, D]``, ``y [..., M, D]`` → ``[..., N, M]``."""
    with torch.autocast(device_type=x.device.type, enabled=False):  # fp32: 1 − 5e-4 is not an fp16 number
        sim = F.normalize(x.float(), dim=-1) @ F.normalize(y.float(), dim=-1).transpose(-2, -1)
    return sim.clamp(SIM_MIN, SIM_MAX)


def negative_contrast(fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Eq. (3): ``−mean_ij log(1 − s(fg_i, bg_j))`` over all ``[..., N, D] × [..., N, D]`` pairs
    (mean over every leading dimension too)."""
    return -torch.log(1 - clamped_cosine(fg, bg)).mean()


def positive_contrast(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (4): ``−mean log s(x_i, x_j)`` over the pairs ``(i, j)`` where ``mask [N, N]`` is true (all
    pairs when None, i = j included as in the paper's double sum) of ``x [..., N, D]``."""
    loss = -torch.log(clamped_cosine(x, x))  # [..., N, N]
    if mask is None:
        return loss.mean()
    mask = mask.to(loss.dtype).expand_as(loss)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def inter_contrastive_loss(fg: torch.Tensor, bg: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. (5) ``L_neg + L_pos+ + L_pos−`` for one ContrastAttn layer: focused ``fg [B, D]`` and
    non-focused ``bg [B, D]`` components of the batch's images, identity ``labels [B]`` (foregrounds
    are pulled together only within an identity, Eq. 4)."""
    same = labels[:, None] == labels[None, :]
    return negative_contrast(fg, bg) + positive_contrast(fg, same) + positive_contrast(bg)


def intra_contrastive_loss(fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Eq. (6) for one layer: ``fg``/``bg`` ``[B, K, D]`` stripe components; the three terms across the
    K stripes of each image, averaged over images."""
    return negative_contrast(fg, bg) + positive_contrast(fg) + positive_contrast(bg)


def part_base_loss(logits: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                   margin: float = 0.3) -> dict[str, torch.Tensor]:
    """Eq. (11) on ``logits [B, 1 + K, C]`` (BNNeck classifiers) and ``feats [B, 1 + K, D]`` (before the
    BNNecks), index 0 = [cls], 1..K = stripe parts → ``{"id", "triplet"}``."""
    k = feats.shape[1] - 1
    ids = [id_loss(logits[:, i], labels, label_smoothing) for i in range(k + 1)]
    tris = [triplet_loss(feats[:, i], labels, margin) for i in range(k + 1)]
    part = (lambda xs: sum(xs[1:]) / k) if k else (lambda xs: 0.0)
    return {"id": ids[0] + part(ids), "triplet": tris[0] + part(tris)}


def stage1_objective(out: dict, labels: torch.Tensor, cfg, inter_weight: float, intra_weight: float
                     ) -> dict[str, torch.Tensor]:
    """Eq. (12) from :meth:`CpaCol.forward`'s stage-I output (``LossConfig`` ``cfg``; λ1, λ2).

    Returns:
        ``{"id", "triplet", "inter", "intra", "total"}`` (inter/intra summed over the layers, unweighted).
    """
    terms = part_base_loss(out["logits"], out["feats"], labels, cfg.label_smoothing, cfg.triplet_margin)
    layers = out["contrast"]
    terms["inter"] = sum(inter_contrastive_loss(c["fg"], c["bg"], labels) for c in layers)
    terms["intra"] = sum(intra_contrastive_loss(c["fg_stripes"], c["bg_stripes"]) for c in layers)
    terms["total"] = terms["id"] + terms["triplet"] + inter_weight * terms["inter"] + intra_weight * terms["intra"]
    return terms


def verification_loss(logits: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Eq. (10): ``−(1·log s + (1 − 1)·log(1 − s))``, ``s = sigmoid(logits [P])``, ``same [P]`` ∈ {0, 1};
    mean over the P pairs (binary cross-entropy on the logits, numerically stable)."""
    return F.binary_cross_entropy_with_logits(logits.float(), same.float())
