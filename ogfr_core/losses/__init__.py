"""OGFR losses, Eq. (15)–(21), the agent's policy-gradient loss (Eq. 9), and the objective assembly.

Every term is a named function (tested against hand-computed values in tests/test_losses.py):

======================  =====================================================================
:func:`mse_loss`        Eq. (15)  ‖F_hp − F_op‖², mean over tokens and channels (torch ``MSELoss``) or,
                        ``loss.mse_reduction: channel_sum``, summed over channels, mean over tokens
:func:`cosine_loss`     Eq. (16)  mean over i ∈ {g,1..K} (and the batch) of 1 − cos(f_hp^i, f_op^i)
:func:`kd_loss`         Eq. (17)  mean over i of α·CE(student logits) + β·T²·KL(p_teacher ‖ p_student)
:func:`id_loss`         cross-entropy (optionally label-smoothed) on classifier logits
:func:`ensemble_id_loss` Eq. (18) L_id(f_o^g) + L_id(f_h^g)
:func:`mask_loss`       Eq. (19)  −Σ_k M_k log Ĩ_k, averaged over pixels and images (the paper's sum
                        is a pixel sum; we average so the term's scale does not depend on H×W)
:func:`triplet_loss`    batch-hard triplet (TransReID: Euclidean, hardest positive/negative,
                        margin ranking loss, margin 0.3), on features before BNNeck
:func:`part_triplet_loss` Eq. (20) L_tri(f^g) + mean_i L_tri(f^i)
:func:`policy_gradient_loss` Eq. (9) −mean_{b, images} R_b · Σ_t log π(a_{b,t} | s_{b,t})
:func:`policy_advantage` R_b of Eq. (9) as an advantage: leave-one-out baseline, batch standardisation
:func:`objective`       Eq. (21) (or the baseline / single-branch objectives), returns every term
======================  =====================================================================
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import LossConfig


def mse_loss(f_hp: torch.Tensor, f_op: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. (15) ``‖F_hp − F_op‖²₂`` between teacher and student token features ``[B, T, D]``.

    ``reduction``: ``mean`` — torch's ``MSELoss``, the mean over batch, tokens and channels (the
    original implementation: 1/D of the paper's norm); ``channel_sum`` — the squared L2 norm of each
    token's difference (sum over the D channels, as Eq. 15 writes it), averaged over the T tokens and
    the batch (the mean over tokens keeps the term's scale independent of the patch grid, as Eq. 16–17
    average over their K+1 features; ours, the paper does not say how tokens are reduced).

    Raises:
        ValueError: an unknown reduction.
    """
    if reduction == "mean":
        return F.mse_loss(f_op, f_hp)
    if reduction != "channel_sum":
        raise ValueError(f"loss.mse_reduction must be mean or channel_sum, got {reduction!r}")
    return (f_op.float() - f_hp.float()).pow(2).sum(-1).mean()


def cosine_loss(f_hp: torch.Tensor, f_op: torch.Tensor) -> torch.Tensor:
    """Eq. (16): ``1/(K+1) Σ_i (1 − cos(f_hp^i, f_op^i))`` for features ``[B, K+1, D]``, mean over B."""
    return (1 - F.cosine_similarity(f_hp, f_op, dim=-1)).mean()


def id_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Identity (cross-entropy) loss, logits ``[B, C]``, labels ``[B]``."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def kd_loss(logits_op: torch.Tensor, logits_hp: torch.Tensor, labels: torch.Tensor, alpha: float,
            beta: float, temperature: float = 1.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Eq. (17): ``1/(K+1) Σ_i [α·L_id(f_op^i) + β·KL(f_hp^i ‖ f_op^i)]``.

    ``logits_*`` ``[B, K+1, C]``. KL is Hinton's: ``T²·KL(softmax(z_hp/T) ‖ softmax(z_op/T))``, batch
    mean, with the teacher detached (the teacher is the target).
    """
    k1 = logits_op.shape[1]
    total = logits_op.new_zeros((), dtype=torch.float32)
    for i in range(k1):
        ce = id_loss(logits_op[:, i], labels, label_smoothing)
        log_p_s = F.log_softmax(logits_op[:, i].float() / temperature, -1)
        log_p_t = F.log_softmax(logits_hp[:, i].detach().float() / temperature, -1)
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature ** 2
        total = total + alpha * ce + beta * kl
    return total / k1


def ensemble_id_loss(enc_logits_o: torch.Tensor, enc_logits_h: torch.Tensor | None, labels: torch.Tensor,
                     label_smoothing: float = 0.0) -> torch.Tensor:
    """Eq. (18): ``L_id(f_o^g) + L_id(f_h^g)`` on the encoder's global features (``enc_logits_h`` None
    in the single-branch model → only the first term)."""
    loss = id_loss(enc_logits_o, labels, label_smoothing)
    if enc_logits_h is not None:
        loss = loss + id_loss(enc_logits_h, labels, label_smoothing)
    return loss


def bilinear_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D taps of ``F.interpolate(mode="bilinear", align_corners=False)`` without a scale factor
    (PyTorch's ``area_pixel_compute_source_index``): output position ``o`` reads source positions
    ``i0[o]``, ``i1[o]`` with weights ``w0[o]``, ``w1[o]``, where ``src = (o + 0.5)·in/out − 0.5``
    clamped at 0, ``i0 = ⌊src⌋``, ``i1 = min(i0 + 1, in − 1)``, ``w1 = src − i0``, ``w0 = 1 − w1``
    (float32; with an integer ratio ``out/in`` the kernel's weights exactly, otherwise within an
    ulp).

    Returns:
        ``(i0, i1)`` long ``[out_size]`` and ``(w0, w1)`` float32 ``[out_size]``.
    """
    scale = torch.tensor(float(in_size), dtype=torch.float32) / out_size
    src = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0.0)  # [out]
    i0 = src.to(torch.long)  # floor: src >= 0
    i1 = (i0 + 1).clamp_max(in_size - 1)
    w1 = src - i0.to(torch.float32)
    w0 = 1.0 - w1
    return i0, i1, w0, w1


def mask_loss(corr: torch.Tensor, grid: tuple[int, int], label_map: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. (19): cross-entropy between the bilinearly upsampled correlation matrix and parsing labels,
    ``−1/(B·H·W) Σ_{b,p} log Ĩ_{b, M(b,p)}(p)``.

    ``Ĩ`` is ``I`` on the ``Hp × Wp`` patch grid upsampled bilinearly to the label map's ``H × W``
    (:func:`ogfr_core.model.fep.upsample_correlation`, ``align_corners=False``). Only the labelled
    class's probability enters the loss at each pixel, so it is computed at that class alone: the
    grid is interpolated along the width for all K+1 classes (``[B, K+1, Hp, W]``, small), then along
    the height only at each pixel's label (two gathers). Same values as upsampling all K+1 maps to
    ``H × W`` and taking ``log`` of every pixel — the products and sums of PyTorch's kernel, in its
    order (width, then height); tested equal within 1e-6 to that reference, value and gradient — at
    1/(K+1) of the ``log`` and of the upsampling backward (the two costliest ops of L_mask).

    Args:
        corr: ``I [B, N, K+1]`` (probabilities), ``N = Hp·Wp``.
        grid: patch grid ``(Hp, Wp)``.
        label_map: ``[B, H, W]`` integer in 0..K (0 = background).
        eps: probabilities are floored here before the log.

    Returns:
        scalar (float32), mean over images and pixels.

    Raises:
        ValueError: ``N != Hp·Wp``, or a label outside 0..K.
    """
    b, n, k1 = corr.shape
    hp, wp = int(grid[0]), int(grid[1])
    if n != hp * wp:
        raise ValueError(f"correlation has {n} patches, grid {grid} needs {hp * wp}")
    lab = label_map.long()  # [B, H, W]
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= k1):
        raise ValueError(f"label map ids must be in 0..{k1 - 1} (the correlation's K+1 classes), "
                         f"got {int(lab.min())}..{int(lab.max())}")
    h, w = lab.shape[-2:]
    dev = corr.device
    maps = corr.float().transpose(1, 2).reshape(b, k1, hp, wp)  # [B, K+1, Hp, Wp]
    x0, x1, wx0, wx1 = (t.to(dev) for t in bilinear_taps(wp, w))
    rows = maps[..., x0] * wx0 + maps[..., x1] * wx1  # [B, K+1, Hp, W]: width pass, every class
    rows = rows.reshape(b, k1 * hp, w)  # row index = class * Hp + grid row
    y0, y1, wy0, wy1 = (t.to(dev) for t in bilinear_taps(hp, h))
    base = lab * hp  # [B, H, W]
    top = rows.gather(1, base + y0[:, None])  # [B, H, W]: Ĩ's labelled class at grid row y0
    bottom = rows.gather(1, base + y1[:, None])
    picked = wy0[:, None] * top + wy1[:, None] * bottom  # [B, H, W] = Ĩ_{M(p)}(p)
    return -picked.clamp_min(eps).log().mean()


def triplet_loss(feats: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (TransReID ``TripletLoss``, Hermans et al. 2017).

    For each anchor: hardest positive (max distance, same id) and hardest negative (min distance,
    other id) on Euclidean distances of ``feats [B, D]``; ``mean(relu(d_ap − d_an + margin))``.
    Anchors without a positive or negative in the batch are skipped (0 if none is usable).
    """
    x = feats.float()
    dist = torch.cdist(x, x).clamp_min(1e-12)  # [B, B]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not bool(valid.any()):
        return x.sum() * 0.0
    d_ap = dist.masked_fill(~pos_mask, float("-inf")).amax(1)
    d_an = dist.masked_fill(~neg_mask, float("inf")).amin(1)
    return F.relu(d_ap - d_an + margin)[valid].mean()


def part_triplet_loss(feats: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Eq. (20): ``L_tri(f^g) + 1/K Σ_i L_tri(f^i)``, feats ``[B, K+1, D]`` (index 0 = global)."""
    loss = triplet_loss(feats[:, 0], labels, margin)
    k = feats.shape[1] - 1
    if k:
        loss = loss + sum(triplet_loss(feats[:, i], labels, margin) for i in range(1, k + 1)) / k
    return loss


def policy_gradient_loss(log_prob: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """Eq. (9) as a loss: ``−1/B Σ_b R_b Σ_t log π(a_{b,t} | s_{b,t})``, also averaged over images.

    Args:
        log_prob: ``[E, B]`` summed log-probabilities of each episode's actions (``Σ_t``).
        reward: ``[E, B]`` rewards R_b (no gradient).

    Minimising it moves the policy towards actions with positive reward (REINFORCE).
    """
    return -(reward.detach() * log_prob).mean()


def policy_advantage(reward: torch.Tensor, leave_one_out: bool = False, standardise: bool = False,
                     eps: float = 1e-8) -> torch.Tensor:
    """Advantage of each episode for Eq. (9), rewards ``[E, B]`` → ``[E, B]`` (no gradient).

    * ``leave_one_out`` (RLOO, Kool et al. 2019): ``A_e = r_e − 1/(E−1) Σ_{e'≠e} r_{e'}`` per image —
      an unbiased baseline that removes what all masks of an image share (how far the network moved,
      how hard the image is), leaving what this mask did better than the others. Needs ``E ≥ 2``.
    * ``standardise``: ``(A − mean(A)) / (std(A) + eps)`` over all ``E·B`` entries (population std),
      so the policy loss has unit scale whatever the reward's scale.

    With neither the advantage is the reward itself (Eq. 9 as written).

    Raises:
        ValueError: ``leave_one_out`` with a single episode.
    """
    a = reward.detach()
    if leave_one_out:
        e = a.shape[0]
        if e < 2:
            raise ValueError("a leave-one-out baseline needs >= 2 episodes per image (model.num_episodes)")
        a = a - (a.sum(0, keepdim=True) - a) / (e - 1)
    if standardise:
        a = (a - a.mean()) / (a.std(unbiased=False) + eps)
    return a


def _non_background_tokens(tokens: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """F = {f^g, f^1..f^K, f^p} of Eq. (15): all tokens except the background part token f^0."""
    if num_prefix <= 1:
        return tokens
    return torch.cat([tokens[:, :1], tokens[:, 2:]], dim=1)


def objective(out: dict, labels: torch.Tensor, cfg: LossConfig, grid: tuple[int, int],
              num_prefix: int, label_map: torch.Tensor | None = None,
              label_map_occ: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Assemble the training loss from :meth:`ogfr_core.model.OGFR.forward`'s output.

    * OGFR with KD, Eq. (21): ``(L_mse + μ1 L_cos + L_kd) + (L_en + μ2 L_tr) + L_mask`` plus
      ``policy_weight · L_pg`` for each learned agent; ``use_mse/use_cos/use_mask`` switch those
      terms off and ``use_kd`` the KL of Eq. (17) (Table VII; its α·L_id term stays, see the code). L_mask averages the teacher's and the student's correlation matrices
      (the encoder is shared; the student's is the one Eq. 22 reads at inference).
    * single branch (``kd: false``, Table IV rows 2–3; our reading): ``mean_i L_id(f_op^i) + L_en(f_o^g)
      + μ2 L_tr(student) + L_mask + L_pg``.

    Returns:
        dict of named scalar terms (unweighted) and ``total`` (weighted sum).
    """
    s, t = out["student"], out.get("teacher")
    terms: dict[str, torch.Tensor] = {}
    total = s["feats"].new_zeros((), dtype=torch.float32)
    if t is not None:
        t_tokens = t["tokens"].detach() if cfg.kd_detach_teacher else t["tokens"]
        t_feats = t["feats"].detach() if cfg.kd_detach_teacher else t["feats"]
        if cfg.use_mse:
            terms["mse"] = mse_loss(_non_background_tokens(t_tokens, num_prefix),
                                    _non_background_tokens(s["tokens"], num_prefix), cfg.mse_reduction)
            total = total + cfg.mse_weight * terms["mse"]
        if cfg.use_cos:
            terms["cos"] = cosine_loss(t_feats, s["feats"])
            total = total + cfg.mu1 * terms["cos"]
        # Table VII "KD" off (use_kd: false) drops the KL of Eq. (17) but keeps its identity term
        # α·L_id(f_op^i): without it nothing trains the K+1 classifiers and the student BNNecks (the
        # features used at inference), and the Eq. (8) reward would read untrained classifiers
        terms["kd"] = kd_loss(s["logits"], t["logits"], labels, cfg.alpha, cfg.beta if cfg.use_kd else 0.0,
                              cfg.kd_temperature, cfg.label_smoothing)
        total = total + terms["kd"]
        terms["en"] = ensemble_id_loss(s["enc_logits"], t["enc_logits"], labels, cfg.label_smoothing)
        terms["tr"] = part_triplet_loss(t["feats"], labels, cfg.triplet_margin)
        if cfg.teacher_id_weight > 0:  # ours: the shared classifiers also fit the teacher's features f_hp^i
            terms["id_teacher"] = sum(id_loss(t["logits"][:, i], labels, cfg.label_smoothing)
                                      for i in range(t["logits"].shape[1])) / t["logits"].shape[1]
            total = total + cfg.teacher_id_weight * terms["id_teacher"]
    else:
        terms["id"] = sum(id_loss(s["logits"][:, i], labels, cfg.label_smoothing)
                          for i in range(s["logits"].shape[1])) / s["logits"].shape[1]
        total = total + terms["id"]
        terms["en"] = ensemble_id_loss(s["enc_logits"], None, labels, cfg.label_smoothing)
        terms["tr"] = part_triplet_loss(s["feats"], labels, cfg.triplet_margin)
    total = total + terms["en"] + cfg.mu2 * terms["tr"]
    if cfg.use_mask:
        masks = [(b["corr"], lm) for b, lm in ((s, label_map_occ if label_map_occ is not None else label_map),
                                              (t, label_map)) if b is not None and lm is not None]
        if masks:
            terms["mask"] = sum(mask_loss(c, grid, lm) for c, lm in masks) / len(masks)
            total = total + terms["mask"]
    pg = [policy_gradient_loss(b["log_prob"], b.get("advantage", b["reward"])) for b in (s, t)
          if b is not None and "log_prob" in b]
    if pg:
        terms["policy"] = sum(pg)
        total = total + cfg.policy_weight * terms["policy"]
        if cfg.policy_entropy_weight > 0:  # entropy bonus: − w · mean_b Σ_t H(m_t)
            terms["entropy"] = sum(b["entropy"].mean() for b in (s, t) if b is not None and "entropy" in b)
            total = total - cfg.policy_entropy_weight * terms["entropy"]
    terms["total"] = total
    return terms
