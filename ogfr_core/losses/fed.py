"""FED's loss terms (Wang et al., "Feature Erasing and Diffusion Network for Occluded Person
Re-Identification", CVPR 2022, §3.3), each a named function (tested against hand-computed values in
tests/test_fed.py):

============================  ====================================================================
:func:`oem_mse_loss`           Eq. (2)  mean squared error between OEM occlusion scores and FED's
                               stripe occlusion masks (1 = human part, 0 = occluded), mean over the
                               N stripes and the batch
:func:`memory_logits`          ⟨f, c_j⟩ / τ of Eq. (9): cosine similarity of features and memory
                               centres over the temperature; centres not yet initialised are −inf
:func:`memory_contrastive_loss` Eq. (9)  −log softmax_j(⟨f, c_j⟩/τ)[y], batch mean
:func:`fed_objective`          Eq. (10) ½ Σ₂ L_MSE + ½ Σ₆ L_ID + ½ Σ₄ L_C (+ ½ w Σ₄ L_tri, optional,
                               not FED's)
============================  ====================================================================

⟨·,·⟩ in Eq. (9) is the cosine similarity: FED's code (``HybridMemory``) normalises both the features
and the centres (as SpCL, its reference [4], does); the paper's text does not say.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import id_loss, triplet_loss


def oem_mse_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. (2): ``1/N Σ_i (s_i − mask_i)²`` for scores and targets ``[B, N]``, mean over the batch."""
    return F.mse_loss(scores.float(), targets.float())


def memory_logits(feats: torch.Tensor, memory: torch.Tensor, temperature: float,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """``cos(f_b, c_j) / τ`` for features ``[B, F]`` and centres ``[C, F]`` → ``[B, C]``; centres with
    ``valid[j] == False`` (not initialised yet) get −inf, so they take no part in the softmax."""
    logits = F.normalize(feats.float(), dim=1) @ F.normalize(memory.float(), dim=1).t() / temperature
    if valid is not None:
        logits = logits.masked_fill(~valid[None, :], float("-inf"))
    return logits


def memory_contrastive_loss(feats: torch.Tensor, memory: torch.Tensor, labels: torch.Tensor, temperature: float,
                            valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (9): ``−log exp(⟨f, c_y⟩/τ) / Σ_j exp(⟨f, c_j⟩/τ)``, batch mean, against a memory of identity
    centres ``[C, F]`` (no gradient into the memory; it is updated by momentum, Eq. 3).

    Raises:
        ValueError: a label's own centre is not initialised (its positive would be missing).
    """
    if valid is not None and not bool(valid[labels].all()):
        raise ValueError("memory_contrastive_loss: some labels have no initialised centre; initialise the "
                         "memory with the batch before computing the loss")
    return F.cross_entropy(memory_logits(feats, memory.detach(), temperature, valid), labels)


def fed_objective(out: dict, labels: torch.Tensor, temperature: float, label_smoothing: float = 0.0,
                  triplet_weight: float = 0.0, margin: float = 0.3) -> dict[str, torch.Tensor]:
    """Eq. (10): ``L = ½ Σ_{2} L_MSE + ½ Σ_{6} L_ID + ½ Σ_{4} L_C`` from :meth:`ogfr_core.model.fed.FED.forward`.

    The two branches (holistic, NPO-augmented: ``2B`` rows, holistic first) each give one L_MSE (OEM
    scores against all-ones for the holistic images, against the stripe masks for the augmented ones),
    three L_ID (the [cls] feature, the OEM feature, the FDM feature, each with its classifier) and two
    L_C (the OEM feature against the OEM-feature memory, the FDM feature against the FDM memory).
    FED's code weighs these differently (L_MSE summed, the augmented branch's OEM L_C × 0.3); we follow
    the paper. Returns the unweighted group sums ``mse``, ``id``, ``contrast`` and ``total``.

    With ``triplet_weight`` w > 0 (a diagnostic, not FED: issue 24) the batch-hard triplet loss (margin
    ``margin``) on ``global_feats`` and ``oem_feats_raw`` (before the BNNecks), each branch, is added
    as ``triplet`` (unweighted sum of the four) and ``total`` gains ``½ w · triplet``.
    """
    b = labels.shape[0]
    labels2 = torch.cat([labels, labels])
    scores, targets = out["scores"], out["score_targets"]
    mse = oem_mse_loss(scores[:b], targets[:b]) + oem_mse_loss(scores[b:], targets[b:])
    ids = sum(id_loss(out[k][rows], labels2[rows], label_smoothing)
              for k in ("global_logits", "oem_logits", "fdm_logits") for rows in (slice(0, b), slice(b, None)))
    contrast = sum(memory_contrastive_loss(out[f][rows], out[m], labels2[rows], temperature, out[f"{m}_valid"])
                   for f, m in (("oem_feats", "memory_oem"), ("fdm_feats", "memory_fdm"))
                   for rows in (slice(0, b), slice(b, None)))
    terms = {"mse": mse, "id": ids, "contrast": contrast}
    terms["total"] = 0.5 * (mse + ids + contrast)
    if triplet_weight > 0:
        terms["triplet"] = sum(triplet_loss(out[f][rows], labels2[rows], margin)
                               for f in ("global_feats", "oem_feats_raw") for rows in (slice(0, b), slice(b, None)))
        terms["total"] = terms["total"] + 0.5 * triplet_weight * terms["triplet"]
    return terms
