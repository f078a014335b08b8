"""FPC's training objective (Ye et al., "Dynamic Feature Pruning and Consolidation for Occluded Person
Re-Identification", 2023): Eq. (3), (14), (15).

======================  ==============================================================================
:func:`id_triplet`      ``L_ID + L_T`` on one [cls] feature: cross-entropy on its BNNeck logits, batch-hard
                        triplet on the feature before the BNNeck (TransReID's pair of losses)
:func:`fpc_objective`   Eq. (15) ``L = L_S + L_C``: L_S (Eq. 3) on the sparse encoder's [cls], L_C (Eq. 14)
                        on the consolidation decoder's [cls] (absent when ``model.fpc.consolidation`` is off)
======================  ==============================================================================
"""
from __future__ import annotations

import torch

from . import id_loss, triplet_loss


def id_triplet(logits: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
               margin: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_ID(logits [B, C]), L_T(feats [B, D]))`` — Eq. (3)/(14)'s two terms."""
    return id_loss(logits, labels, label_smoothing), triplet_loss(feats, labels, margin)


def fpc_objective(out: dict, labels: torch.Tensor, cfg) -> dict[str, torch.Tensor]:
    """Eq. (15) ``L = L_S + L_C`` from :meth:`FPC.forward`'s output (``LossConfig`` ``cfg``: label
    smoothing, triplet margin).

    Returns:
        ``{"id", "triplet"}`` (L_S, Eq. 3), ``{"rec_id", "rec_triplet"}`` (L_C, Eq. 14, when the model
        consolidates) and ``total``.
    """
    s = out["sparse"]
    terms = dict(zip(("id", "triplet"), id_triplet(s["logits"], s["feats"], labels, cfg.label_smoothing,
                                                  cfg.triplet_margin)))
    if "consolidated" in out:
        c = out["consolidated"]
        terms.update(zip(("rec_id", "rec_triplet"), id_triplet(c["logits"], c["feats"], labels, cfg.label_smoothing,
                                                              cfg.triplet_margin)))
    terms["total"] = sum(terms.values())
    return terms
