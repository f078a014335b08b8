"""PGFL-KD's loss terms (Zheng et al., "Pose-Guided Feature Learning with Knowledge Distillation for
Occluded Person Re-Identification", ACM MM 2021, §3.2–3.4), each a named function (tested against
hand-computed values in tests/test_pgfl_kd.py):

================================  ================================================================
:func:`consistent_loss`            Eq. (4)  ‖f_G − sg(f_E)‖²₂ (squared L2 norm), batch mean; the FEB's
                                   foreground-enhanced feature is the detached teacher; ``form``
                                   ``literal`` (raw features, as written) or ``normalized`` (both
                                   L2-normalised first: our reading of an ambiguous scale)
:func:`multi_part_contrastive_loss` Eq. (5)  −Σ_i log Σ_{j∈P(i)} exp(f_g,j·f_p,i) / Σ_j exp(f_g,j·f_p,i),
                                   batch mean; part features detached (teacher)
:func:`reid_loss`                  L_ReID = ID (cross-entropy on the BNNeck's logits) + batch-hard
                                   triplet (on the feature before the BNNeck), as BoT [25]
:func:`pgfl_kd_objective`          Eq. (10) L_ReID^G + L_ReID^E + L_ReID^V + λ_cl L_CL + λ_mcl L_MCL
================================  ================================================================
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import id_loss, triplet_loss


#: the readings of Eq. (4) ``train.model.pgfl_kd.cl_form`` selects
CL_FORMS = ("literal", "normalized")


def consistent_loss(f_g: torch.Tensor, f_e: torch.Tensor, form: str = "literal") -> torch.Tensor:
    """Eq. (4), the consistent loss, ``f_E`` detached (the teacher).

    Args:
        f_g: global feature ``[B, D]``; f_e: foreground-enhanced feature ``[B, D]`` (Eq. 3).
        form: ``"literal"`` — ``‖f_G − sg(f_E)‖²₂`` on the raw features, as Eq. (4) is written (its
            value is ‖f_F‖² since f_E = f_F + f_G, and its scale follows the features' norm: ≈ 28 for
            our [cls] tokens); ``"normalized"`` — ``‖n(f_G) − sg(n(f_E))‖²₂`` with ``n`` the L2
            normalisation (``= 2 − 2 cos(f_G, f_E)``, in [0, 4]): our reading of an ambiguous scale (the
            text calls Eq. 2 a cosine similarity and Fig. 3 tunes λ_cl together with λ_mcl, which
            suggests an order-1 term); the paper does not say.

    Returns:
        The per-image squared distance (sum over channels), mean over the batch (a scalar).

    Raises:
        ValueError: an unknown ``form``.
    """
    if form not in CL_FORMS:
        raise ValueError(f"consistent_loss: form {form!r} is not one of {list(CL_FORMS)} "
                         f"(train.model.pgfl_kd.cl_form)")
    g, e = f_g.float(), f_e.detach().float()
    if form == "normalized":
        g, e = F.normalize(g, dim=1), F.normalize(e, dim=1)
    return (g - e).pow(2).sum(1).mean()


def multi_part_contrastive_loss(f_g: torch.Tensor, f_p: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Eq. (5), the multi-positive contrastive loss between channel groups.

    Args:
        f_g: global feature ``[B, D]``, split into K groups ``f_g,j [D/K]``.
        f_p: part-aligned feature ``[B, D]`` (K groups ``f_p,i``), detached here (the teacher).
        positives: ``[K, K]`` bool, ``positives[i, j]`` = j ∈ P(i) (the part itself and its mirror).

    Returns:
        ``−Σ_i log(Σ_{j∈P(i)} exp(s_ij) / Σ_j exp(s_ij))`` with ``s_ij = f_g,j · f_p,i`` (a plain dot
        product, as Eq. 5 writes it: no normalisation, no temperature), mean over the batch.
    """
    k = positives.shape[0]
    g = f_g.float().reshape(f_g.shape[0], k, -1)  # [B, K, D/K]
    p = f_p.detach().float().reshape(f_p.shape[0], k, -1)
    s = torch.einsum("bid,bjd->bij", p, g)  # [B, K (part i), K (group j)]
    pos = torch.logsumexp(s.masked_fill(~positives[None], float("-inf")), dim=2)
    return -(pos - torch.logsumexp(s, dim=2)).sum(1).mean()


def reid_loss(feats: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
              label_smoothing: float = 0.0) -> torch.Tensor:
    """L_ReID of one feature: ``L_id(logits) + L_tri(feats)`` (feats before the BNNeck ``[B, D]``)."""
    return id_loss(logits, labels, label_smoothing) + triplet_loss(feats, labels, margin)


def pgfl_kd_objective(out: dict, labels: torch.Tensor, positives: torch.Tensor, lambda_cl: float,
                      lambda_mcl: float, margin: float = 0.3, label_smoothing: float = 0.0,
                      cl_form: str = "literal") -> dict[str, torch.Tensor]:
    """Eq. (10) from :meth:`ogfr_core.model.pgfl_kd.PGFLKD.forward`: ``reid_g``, ``reid_e``, ``reid_v``,
    ``cl`` (Eq. 4 in the reading ``cl_form``, :func:`consistent_loss`), ``mcl`` (Eq. 5) unweighted, and
    ``total``."""
    f, lg = out["feats"], out["logits"]
    terms = {f"reid_{n}": reid_loss(f[n], lg[n], labels, margin, label_smoothing) for n in ("g", "e", "v")}
    terms["cl"] = consistent_loss(f["g"], f["e"], cl_form)
    terms["mcl"] = multi_part_contrastive_loss(f["g"], f["p"], positives)
    terms["total"] = (terms["reid_g"] + terms["reid_e"] + terms["reid_v"]
                      + lambda_cl * terms["cl"] + lambda_mcl * terms["mcl"])
    return terms
