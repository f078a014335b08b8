"""PGFL-KD — Pose-Guided Feature Learning with Knowledge Distillation (Zheng et al., ACM MM 2021; paper
``../shared/papers/002_*.txt``; no public code), registered as ``method: pgfl_kd``, on the shared
backbone (:func:`~ogfr_core.model.backbone.build_encoder`).

Three branches over one encoder pass (Fig. 2) on the occlusion-augmented view (``image_occ``, the
same augmentation as the baseline; the paper trains a ResNet-50 with random erasing instead):

* **MB** (main branch): ``f_G`` = the encoder's [cls] output (the paper: global average pooling of a
  ResNet feature map; on a ViT the [cls] token is the global feature every method here uses). The
  patch tokens ``F [N, D]`` are the feature map.
* **Part features** (Eq. 1): ``f_l,k = Σ_n H_k[n] F_n`` for K = 8 parts. **Our parsing label maps stand
  in for the paper's HRNet keypoint heatmaps**: ``H_k`` is the fraction of each token's cell that the
  label map assigns to part k (head, left/right arm, torso, left/right leg, left/right foot — the
  paper's groups are head, left/right lower arm, left/right knee, left/right ankle, torso),
  normalised to sum to 1 over the tokens (the paper normalises each heatmap with a spatial
  softmax). A part absent from the label map (occluded or not found) gets a uniform map — what the
  softmax of a flat, low heatmap gives — i.e. global average pooling.
* **FEB** (Eq. 2–3): ``f_L = mean_k f_l,k``; ``a = softmax_n(F_n · f_L / √D)``; ``f_F = Σ a_n F_n``;
  ``f_E = f_F + f_G``. Eq. (2) is written as a dot product, the text says cosine similarity; we scale
  the dot product by 1/√D (attention's scaling): the raw dot of LayerNorm-ed ViT tokens (≈ D·cos) makes
  the softmax one-hot, a cosine (in [−1, 1]) makes it nearly flat over N tokens.
* **SAB**: ``f_p,k = ReLU(BN(W_k f_l,k))``, ``W_k: D → D/K``; ``f_P = [f_p,1 … f_p,K] [D]``; interaction
  ``f_V = f_G + f_P`` (Eq. 6).

Losses (Eq. 10, :func:`~ogfr_core.losses.pgfl_kd.pgfl_kd_objective`): L_ReID (ID on a BNNeck + batch-hard
triplet before it) on f_G, f_E and f_V; λ_cl·L_CL (Eq. 4, f_E detached; ``cl_form`` picks the raw
features as written or L2-normalised ones, an ambiguity of scale, see
:func:`~ogfr_core.losses.pgfl_kd.consistent_loss`) + λ_mcl·L_MCL (Eq. 5, f_P
detached; positives: the part itself and its left/right mirror). Inference: only the MB — f_G after
its BNNeck ``[B, D]``, no parts (§3.5), so the pose/parsing input is not needed at test time.

D must be divisible by K = 8 (f_G is split into 8 channel groups): 192 (ViT-Tiny) and 768 (ViT-B) are.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.pgfl_kd import pgfl_kd_objective
from .backbone import build_encoder
from .base import ReIDMethod
from .neck import make_bnneck, make_classifier
from .registry import ModelConfigError, register_method

#: label-map part ids 1..8 (ogfr_core.PART_NAMES) used as the K = 8 pose groups, in this order
PART_IDS = (1, 2, 3, 4, 5, 6, 7, 8)
#: each group's left/right mirror among PART_IDS' positions (head and torso are their own)
MIRROR = (0, 2, 1, 3, 5, 4, 7, 6)


def positive_sets(mirror: tuple[int, ...] = MIRROR) -> torch.Tensor:
    """``[K, K]`` bool: ``P(i) = {i, mirror(i)}`` of Eq. (5)."""
    k = len(mirror)
    pos = torch.eye(k, dtype=torch.bool)
    pos[torch.arange(k), torch.tensor(mirror)] = True
    return pos


def foreground_enhanced(fmap: torch.Tensor, heat: torch.Tensor, f_g: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The FEB (Eq. 1–3) on the patch tokens ``fmap [B, N, D]`` with part heatmaps ``heat [B, K, N]``
    and the global feature ``f_g [B, D]``.

    Returns:
        ``(f_l [B, K, D], a [B, N], f_F [B, D], f_E [B, D])``: part features ``f_l,k = Σ_n H_k[n] F_n``
        (Eq. 1); attention ``a = softmax_n(F_n · f_L / √D)`` with ``f_L = mean_k f_l,k`` (Eq. 2; the
        1/√D scale is ours, see the module docstring); ``f_F = Σ_n a_n F_n``; ``f_E = f_F + f_G`` (Eq. 3).
    """
    f_l = heat @ fmap  # [B, K, D], Eq. (1)
    f_L = f_l.mean(1)  # [B, D]
    att = torch.softmax((fmap @ f_L[:, :, None]).squeeze(-1) * fmap.shape[-1] ** -0.5, dim=1)  # [B, N], Eq. (2)
    f_f = (att[..., None] * fmap).sum(1)  # [B, D]
    return f_l, att, f_f, f_f + f_g  # f_E = f_F + f_G, Eq. (3)


@register_method("pgfl_kd")
class PGFLKD(ReIDMethod):
    """PGFL-KD on the shared backbone (see the module docstring).

    Args:
        cfg: ``train.model`` params (λ's in ``cfg.pgfl_kd``); num_classes: training ids;
        num_cameras: training cameras; img_size: ``(H, W)`` pixels; load_weights: load pretrained weights.

    Raises:
        ModelConfigError: the embed dim is not divisible by K = 8.

    Shapes: ``forward(batch)`` → ``feats`` ``{"g", "e", "v", "p": [B, D]}``, ``logits`` ``{"g", "e", "v": [B, C]}``,
    ``heatmaps`` ``[B, K, N]``, ``attention`` ``[B, N]``.
    """

    def __init__(self, cfg, num_classes: int, num_cameras: int, img_size: tuple[int, int],
                 load_weights: bool = True) -> None:
        super().__init__()
        self.cfg, self.pcfg = cfg, cfg.pgfl_kd
        self.num_classes = num_classes
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.encoder, self.init_warning = build_encoder(cfg, self.img_size, num_cameras, load_weights=load_weights)
        dim, k = self.encoder.embed_dim, len(PART_IDS)
        if dim % k:
            raise ModelConfigError(f"method pgfl_kd splits the global feature into {k} channel groups: the "
                                   f"backbone's embed dim {dim} is not divisible by {k}")
        self.necks = nn.ModuleDict({n: make_bnneck(dim) for n in ("g", "e", "v")})
        self.classifiers = nn.ModuleDict({n: make_classifier(dim, num_classes) for n in ("g", "e", "v")})
        self.sab = nn.ModuleList([nn.Sequential(nn.Linear(dim, dim // k), nn.BatchNorm1d(dim // k), nn.ReLU())
                                  for _ in range(k)])
        self.register_buffer("positives", positive_sets(), persistent=False)

    def part_heatmaps(self, label_map: torch.Tensor) -> torch.Tensor:
        """Label map ``[B, h, w]`` (resized nearest to the input size if needed) → ``H [B, K, N]``: each
        part's share of every token's cell, normalised over the tokens; uniform for an absent part."""
        onehot = torch.stack([(label_map == p) for p in PART_IDS], 1).float()  # [B, K, h, w]
        if tuple(onehot.shape[-2:]) != self.img_size:
            onehot = F.interpolate(onehot, size=self.img_size, mode="nearest")
        e = self.encoder
        pooled = F.avg_pool2d(onehot, kernel_size=e.patch_size, stride=e.stride)  # [B, K, Hp, Wp]
        if tuple(pooled.shape[-2:]) != tuple(e.grid_size):
            pooled = F.adaptive_avg_pool2d(onehot, e.grid_size)
        heat = pooled.flatten(2)  # [B, K, N]
        mass = heat.sum(-1, keepdim=True)
        uniform = torch.full_like(heat, 1.0 / heat.shape[-1])
        return torch.where(mass > 0, heat / mass.clamp_min(1e-12), uniform)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, Any]:
        """Training forward on ``image_occ`` (else ``image``) with ``label_map_occ`` (else ``label_map``)."""
        images = batch.get("image_occ", batch["image"])
        label_map = batch.get("label_map_occ", batch.get("label_map"))
        if label_map is None:
            raise ValueError("method pgfl_kd needs parsing label maps in the training batch (label_map)")
        tokens = self.encoder(images, None, batch["camid"])  # [B, 1 + N, D]
        f_g, fmap = tokens[:, 0], tokens[:, 1:]  # [B, D], [B, N, D]
        heat = self.part_heatmaps(label_map).to(fmap.dtype)  # [B, K, N]
        f_l, att, _, f_e = foreground_enhanced(fmap, heat, f_g)  # Eq. (1)-(3)
        f_p = torch.cat([sab(f_l[:, i]) for i, sab in enumerate(self.sab)], dim=1)  # [B, D]
        feats = {"g": f_g, "e": f_e, "v": f_g + f_p, "p": f_p}  # Eq. (6)
        logits = {n: self.classifiers[n](self.necks[n](feats[n])) for n in ("g", "e", "v")}
        return {"feats": feats, "logits": logits, "heatmaps": heat, "attention": att}

    def loss(self, out: dict[str, Any], batch: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
        """Eq. (10) (:func:`~ogfr_core.losses.pgfl_kd.pgfl_kd_objective`); triplet margin and label
        smoothing from ``train.loss``, the Eq. (4) reading from ``train.model.pgfl_kd.cl_form``."""
        return pgfl_kd_objective(out, batch["label"], self.positives, self.pcfg.lambda_cl, self.pcfg.lambda_mcl,
                                 cfg.triplet_margin, cfg.label_smoothing, self.pcfg.cl_form)

    def global_feature(self, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """MB only (§3.5): f_G after its BNNeck ``[B, D]``; :meth:`extract` wraps it."""
        return self.necks["g"](self.encoder(images, None, camids)[:, 0])  # [B, D]
