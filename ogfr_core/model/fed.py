"""FED — Feature Erasing and Diffusion Network (Wang et al., CVPR 2022; paper
``../shared/papers/001_*.txt``, official code ZacharyWang-007/FED-Occluded-ReID), registered as
``method: fed``, on the shared backbone (:func:`~ogfr_core.model.backbone.build_encoder`).

Training (Fig. 2), two weight-sharing branches run as one encoder pass over ``2B`` images:

1. **NPO augmentation** (§3.1): the second branch sees each holistic image with a horizontal or
   vertical obstacle at a corner (:func:`~ogfr_core.data.occlusion_aug.npo_augment`, run here on the
   batch's holistic ``image`` with the loop's generator; how it differs from FED's hand-cropped
   occlusion set is in that module), and FED's stripe occlusion mask from the obstacle's box
   (:func:`~ogfr_core.data.occlusion_aug.npo_stripe_targets`). The loop's own ``image_occ`` is not used.
2. **Part pooling**: the patch tokens, on their ``Hp × Wp`` grid, are average-pooled into N horizontal
   stripes (N = 4: adaptive pooling of token rows). FED's code pools the flattened token sequence
   (``AdaptiveAvgPool1d(4)``), which is the same for a grid with a multiple of 4 rows (16×8 in the
   paper, 8×4 in the CPU profile) and straddles rows otherwise; rows keep the stripes aligned with
   the image stripes of the occlusion mask.
3. **OEM** (Eq. 1): per stripe ``s_i = σ(W_rg LN(W_cp f_i))`` (``W_cp: D → D/4``), ``f'_i = s_i · f_i``,
   trained by Eq. (2) (targets: all ones for holistic images, the stripe mask for augmented ones).
   Each ``f'_i`` gets a BNNeck (as FED's code); their concatenation ``f' [N·D]`` is the OEM feature:
   ID loss (one classifier over N·D), memory content, FDM query, and the inference feature.
4. **Memory** (Eq. 3): identity centres ``c_k ← m c_k + (1−m) mean_{b: y_b = k} f'_b`` (m = 0.2), from the
   holistic branch only (§3.3). Initialisation (``model.fed.memory_init``): ``first_batch`` (default,
   the recorded runs) sets a centre to its identity's batch mean the first time the identity is seen
   (with the PK sampler every identity is seen in the first epoch; centres not yet seen take no part
   in the search or in Eq. 9) — that centre then contains the sample itself, a trivial positive;
   ``train_pass`` is FED's code: before training, one eval-mode pass over the whole training set
   (test transform) sets every centre to the mean OEM feature of its identity
   (:meth:`FED.initialize_from_training_set`; FED's code gives the FDM memory the same OEM centres).
   Update (``model.fed.memory_update``): ``batch_mean`` (default) follows Eq. (3) with the batch mean
   per identity; ``per_sample`` is FED's code (one momentum step per image, in batch order, so an
   identity with K images in the batch moves K steps).
5. **FDM** (Eq. 4–7, :class:`FeatureDiffusionModule`): the K = 8 most cosine-similar centres of *other*
   identities (memory searching) are keys/values of a multi-head cross-attention (8 heads over N·D
   channels) from ``f'``; the output, per stripe, goes through FFN1, is weighted by the OEM scores and
   added to ``f'``, then FFN2: ``f'_d = FFN2(s · FFN1(f_d) + f')``. FFN1/FFN2 are post-LN residual
   feed-forward networks ``LN(x + W2 GELU(W1 x))`` as the paper describes (FED's code uses a
   pre-LN GEGLU FFN without residual); hidden width 4·D (FED's code). A second memory holds the
   FDM features' centres (Eq. 9's second pair of terms). The FDM output has its own BNNecks (FED's
   code reuses the OEM's, which mixes both features in the running statistics used at inference).
6. **Losses** (Eq. 10, :func:`~ogfr_core.losses.fed.fed_objective`): ½ Σ L_MSE + ½ Σ L_ID (the [cls]
   feature through a BNNeck, the OEM and the FDM features; two branches) + ½ Σ L_C. No triplet loss
   (neither FED's method nor its code has one; its Table 3 rows 0–4, the baselines, train ID +
   triplet): ``model.fed.triplet_weight > 0`` adds ``½ w Σ L_tri`` on the [cls] and OEM features
   before their BNNecks, both branches (a diagnostic). The ID losses' label smoothing is
   ``model.fed.label_smoothing`` (null: ``train.loss.label_smoothing``, 0.1 on the default profile;
   FED's code: 0).

Inference (:meth:`FED.extract`): the FDM is dropped (§3.2); the feature is the concatenated OEM
feature ``f' [B, N·D]`` after the BNNecks — FED's code evaluates exactly this vector (its [cls] feature
is trained but not used); no parts (K = 0), so Eq. (23) reduces to the global distance.

Sizes scale with the backbone: N·D memory/attention width (3072 for ViT-B, 768 for the CPU
profile's ViT-Tiny), D/4 OEM bottleneck, 8 heads (head width N·D/8).

Under DDP each rank updates the memories with its own batch; DDP's buffer broadcast then keeps
rank 0's memories, so every centre moves with 1/world of the batches (not gathered across ranks).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.occlusion_aug import npo_augment, npo_stripe_targets
from ..losses.fed import fed_objective
from .backbone import build_encoder
from .base import ReIDMethod, eval_mode
from .neck import make_bnneck, make_classifier
from .registry import ModelConfigError, register_method


class OcclusionErasingModule(nn.Module):
    """Eq. (1): one scorer per stripe, ``Linear(D, D/r) → LayerNorm → Linear(D/r, 1) → Sigmoid``.

    Shapes: ``forward(parts [B, N, D]) -> scores [B, N]`` in (0, 1).
    """

    def __init__(self, dim: int, num_stripes: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, dim // reduction)
        self.scorers = nn.ModuleList([nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.Linear(hidden, 1))
                                      for _ in range(num_stripes)])

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sigmoid(s(parts[:, i])) for i, s in enumerate(self.scorers)], dim=1)  # [B, N]


class PostNormFFN(nn.Module):
    """FED's FFN1/FFN2 (§3.2, "post-layer normalization feed forward network" [Xiong et al.]):
    ``LN(x + W2 GELU(W1 x))``, hidden width ``ratio · dim``. Shapes: ``[..., dim] -> [..., dim]``."""

    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, ratio * dim), nn.Linear(ratio * dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.fc2(F.gelu(self.fc1(x))))


class FeatureDiffusionModule(nn.Module):
    """FED's FDM (Eq. 4–7, Fig. 3).

    Args:
        dim: D (per stripe); num_stripes: N (attention width N·D); num_heads: heads over N·D channels;
        ffn_ratio: FFN1/FFN2 hidden width in multiples of D.

    Shapes: ``forward(f [B, N, D], scores [B, N], latents [B, K, N·D], key_valid [B, K] bool)
    -> f'_d [B, N, D]``. Keys with ``key_valid = False`` get no attention; a row without any valid
    key diffuses nothing (``f_d = 0``).

    ``Q = f' W1, K_i = M_i W2, V_i = M_i W3`` (no biases, as FED's code), scaled dot-product attention
    per head (Eq. 5), ``Σ m_i V_i`` (Eq. 6), an output projection (standard multi-head attention; FED's
    code has it), then Eq. (7) per stripe: ``FFN2(s · FFN1(f_d) + f')``.
    """

    def __init__(self, dim: int, num_stripes: int, num_heads: int = 8, ffn_ratio: int = 4) -> None:
        super().__init__()
        width = dim * num_stripes
        if width % num_heads:
            raise ModelConfigError(f"train.model.fed.num_heads ({num_heads}) must divide num_stripes x embed dim "
                                   f"({num_stripes} x {dim} = {width})")
        self.dim, self.num_stripes, self.num_heads = dim, num_stripes, num_heads
        self.q = nn.Linear(width, width, bias=False)  # W1
        self.k = nn.Linear(width, width, bias=False)  # W2
        self.v = nn.Linear(width, width, bias=False)  # W3
        self.proj = nn.Linear(width, width)
        self.ffn1, self.ffn2 = PostNormFFN(dim, ffn_ratio), PostNormFFN(dim, ffn_ratio)

    def attention(self, query: torch.Tensor, latents: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        """Eq. (4)–(6) + output projection: query ``[B, N·D]``, latents ``[B, K, N·D]`` → ``f_d [B, N·D]``."""
        b, k, width = latents.shape
        h = self.num_heads
        q = self.q(query).view(b, h, 1, width // h)  # [B, h, 1, d]
        keys = self.k(latents).view(b, k, h, width // h).transpose(1, 2)  # [B, h, K, d]
        values = self.v(latents).view(b, k, h, width // h).transpose(1, 2)  # [B, h, K, d]
        beta = (q @ keys.transpose(-2, -1)) * (width // h) ** -0.5  # [B, h, 1, K], Eq. (5)
        beta = beta.masked_fill(~key_valid[:, None, None, :], torch.finfo(beta.dtype).min)
        att = beta.softmax(-1) * key_valid.any(1).to(beta.dtype)[:, None, None, None]
        return self.proj((att @ values).reshape(b, width))  # Eq. (6), heads concatenated

    def forward(self, f: torch.Tensor, scores: torch.Tensor, latents: torch.Tensor,
                key_valid: torch.Tensor) -> torch.Tensor:
        b = f.shape[0]
        f_d = self.attention(f.reshape(b, -1), latents, key_valid).view(b, self.num_stripes, self.dim)
        return self.ffn2(scores[..., None] * self.ffn1(f_d) + f)  # Eq. (7), [B, N, D]


class FeatureMemory(nn.Module):
    """A memory of identity centres ``[C, F]`` updated by momentum (Eq. 3), with a flag per centre
    telling whether it has been initialised (buffers: saved in checkpoints, moved with the model).

    >>> mem = FeatureMemory(3, 2, momentum=0.2)
    >>> mem.initialize(torch.tensor([[1., 0.], [3., 0.]]), torch.tensor([1, 1]))
    >>> mem.features[1].tolist(), mem.valid.tolist()
    ([2.0, 0.0], [False, True, False])
    """

    def __init__(self, num_classes: int, num_features: int, momentum: float = 0.2, per_sample: bool = False) -> None:
        super().__init__()
        self.momentum = float(momentum)
        self.per_sample = bool(per_sample)
        self.register_buffer("features", torch.zeros(num_classes, num_features))
        self.register_buffer("valid", torch.zeros(num_classes, dtype=torch.bool))

    @staticmethod
    def class_means(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-identity means of ``feats [B, F]`` → (``[C, F]`` means, ``[C]`` bool present in the batch)."""
        sums = feats.new_zeros(num_classes, feats.shape[1]).index_add_(0, labels, feats)
        counts = torch.bincount(labels, minlength=num_classes)
        return sums / counts.clamp_min(1)[:, None].to(sums.dtype), counts > 0

    @torch.no_grad()
    def initialize(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Centres of identities seen for the first time := their batch mean (our lazy initialisation)."""
        means, present = self.class_means(feats.detach().float(), labels, self.features.shape[0])
        new = present & ~self.valid
        self.features[new] = means[new]
        self.valid |= new

    @torch.no_grad()
    def set_centres(self, centres: torch.Tensor, present: torch.Tensor) -> None:
        """Overwrite the centres of the identities with ``present [C]`` True by ``centres [C, F]`` and
        mark exactly those initialised (a pass over the training set)."""
        self.features[present] = centres[present].to(self.features)
        self.valid.copy_(present)

    @torch.no_grad()
    def update(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Eq. (3): ``c_k ← m c_k + (1 − m) · mean_{b: y_b = k} f_b`` for every identity k in the batch
        (an identity seen for the first time is initialised to its mean first). With ``per_sample``
        (FED's code): ``c_{y_b} ← m c_{y_b} + (1 − m) f_b`` for b = 1..B in order.

        >>> mem = FeatureMemory(1, 1, momentum=0.2, per_sample=True)
        >>> mem.set_centres(torch.zeros(1, 1), torch.tensor([True]))
        >>> mem.update(torch.tensor([[1.], [2.]]), torch.tensor([0, 0]))
        >>> round(float(mem.features[0, 0]), 4)  # 0.2·(0.2·0 + 0.8·1) + 0.8·2
        1.76
        """
        self.initialize(feats, labels)
        if self.per_sample:
            for f, y in zip(feats.detach().float(), labels.tolist()):
                self.features[y] = self.momentum * self.features[y] + (1 - self.momentum) * f
            return
        means, present = self.class_means(feats.detach().float(), labels, self.features.shape[0])
        self.features[present] = self.momentum * self.features[present] + (1 - self.momentum) * means[present]


def search_memory(query: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor,
                  k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FED's memory searching (§3.2): for each query ``[B, F]`` the ``k`` centres of *other* identities
    with the highest cosine similarity, among the initialised ones.

    Returns:
        ``(latents [B, k', F], key_valid [B, k'] bool)`` with ``k' = min(k, C)``; slots beyond the
        number of available centres are marked invalid.
    """
    sim = F.normalize(query.detach().float(), dim=1) @ F.normalize(memory.float(), dim=1).t()  # [B, C]
    allowed = valid[None, :] & (torch.arange(memory.shape[0], device=labels.device)[None, :] != labels[:, None])
    sim = sim.masked_fill(~allowed, float("-inf"))
    top, index = sim.topk(min(k, memory.shape[0]), dim=1)  # [B, k']
    return memory[index].to(query.dtype), torch.isfinite(top)


@register_method("fed")
class FED(ReIDMethod):
    """FED on the shared backbone (see the module docstring).

    Args:
        cfg: ``train.model`` params (FED's own in ``cfg.fed``); num_classes: training ids;
        num_cameras: training cameras; img_size: ``(H, W)`` pixels; load_weights: load pretrained weights.

    Raises:
        ModelConfigError: more stripes than token rows, or heads that do not divide N·D.
    """

    def __init__(self, cfg, num_classes: int, num_cameras: int, img_size: tuple[int, int],
                 load_weights: bool = True) -> None:
        super().__init__()
        self.cfg, self.fcfg = cfg, cfg.fed
        self.num_classes = num_classes
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.encoder, self.init_warning = build_encoder(cfg, self.img_size, num_cameras, load_weights=load_weights)
        dim, n = self.encoder.embed_dim, self.fcfg.num_stripes
        if n > self.encoder.grid_size[0]:
            raise ModelConfigError(f"train.model.fed.num_stripes ({n}) exceeds the token grid's "
                                   f"{self.encoder.grid_size[0]} rows at {self.img_size[0]}x{self.img_size[1]}")
        self.global_neck, self.global_classifier = make_bnneck(dim), make_classifier(dim, num_classes)
        self.oem = OcclusionErasingModule(dim, n, self.fcfg.oem_reduction)
        self.oem_necks = nn.ModuleList([make_bnneck(dim) for _ in range(n)])
        self.oem_classifier = make_classifier(n * dim, num_classes)
        self.fdm = FeatureDiffusionModule(dim, n, self.fcfg.num_heads, self.fcfg.ffn_ratio)
        self.fdm_necks = nn.ModuleList([make_bnneck(dim) for _ in range(n)])
        self.fdm_classifier = make_classifier(n * dim, num_classes)
        per_sample = self.fcfg.memory_update == "per_sample"
        self.memory_oem = FeatureMemory(num_classes, n * dim, self.fcfg.memory_momentum, per_sample)
        self.memory_fdm = FeatureMemory(num_classes, n * dim, self.fcfg.memory_momentum, per_sample)

    # ------------------------------------------------------------------------------------------
    def stripes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Part pooling: encoder tokens ``[B, 1 + Hp·Wp, D]`` → N stripe features ``[B, N, D]``
        (adaptive average pooling of token rows)."""
        b, _, d = tokens.shape
        grid = tokens[:, 1:].transpose(1, 2).reshape(b, d, *self.encoder.grid_size)  # [B, D, Hp, Wp]
        return F.adaptive_avg_pool2d(grid, (self.fcfg.num_stripes, 1)).flatten(2).transpose(1, 2)  # [B, N, D]

    @staticmethod
    def _necks(necks: nn.ModuleList, parts: torch.Tensor) -> torch.Tensor:
        """BNNeck per stripe: ``[B, N, D] → [B, N, D]``."""
        return torch.stack([neck(parts[:, i]) for i, neck in enumerate(necks)], 1)

    def erase(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stripes → OEM (Eq. 1) → BNNecks: ``(scores [B, N], parts_bn [B, N, D], f' [B, N·D], the
        weighted stripes before the BNNecks [B, N·D])``."""
        parts = self.stripes(tokens)
        scores = self.oem(parts)  # [B, N]
        weighted = scores[..., None] * parts  # [B, N, D]
        parts_bn = self._necks(self.oem_necks, weighted)
        return scores, parts_bn, parts_bn.flatten(1), weighted.flatten(1)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, Any]:
        """Training forward on ``image`` (holistic), ``label_map``, ``z``, ``label``, ``camid``.

        Returns (rows: B holistic, then B NPO-augmented): ``global_logits``, ``oem_logits``,
        ``fdm_logits`` ``[2B, C]``; ``scores``/``score_targets`` ``[2B, N]``; ``oem_feats``/``fdm_feats``
        ``[2B, N·D]``; ``global_feats`` ``[2B, D]`` and ``oem_feats_raw`` ``[2B, N·D]`` (before the
        BNNecks, for the optional triplet loss); ``memory_oem``/``memory_fdm`` ``[C, N·D]`` and their
        ``_valid`` ``[C]`` (the memories the losses compare with: after initialising this batch's new
        identities, before the momentum update); ``npo_boxes`` ``[B, 4]`` (y, x, h, w of each obstacle)
        and ``npo_applied`` ``[B]``; ``stats``. In training the memories are then updated (Eq. 3).
        """
        fc = self.fcfg
        x, labels, camids = batch["image"], batch["label"], batch["camid"]
        b, _, h, w = x.shape
        occ = npo_augment(x, batch["label_map"].long(), batch["z"], prob=fc.npo_prob,
                          vertical_prob=fc.npo_vertical_prob, generator=generator)
        masks = npo_stripe_targets(occ.boxes, occ.applied, h, w, fc.num_stripes, fc.stripe_threshold)  # [B, N]
        targets = torch.cat([x.new_ones(b, fc.num_stripes), masks.to(x)])  # holistic rows: all human parts
        tokens = self.encoder(torch.cat([x, occ.images]), None, torch.cat([camids, camids]))  # [2B, L, D]
        scores, parts_bn, f_oem, f_oem_raw = self.erase(tokens)
        labels2 = torch.cat([labels, labels])
        if self.training:
            self.memory_oem.initialize(f_oem[:b], labels)
        mem_oem, valid_oem = self.memory_oem.features.clone(), self.memory_oem.valid.clone()
        latents, key_valid = search_memory(f_oem, mem_oem, valid_oem, labels2, fc.num_neighbours)
        f_fdm = self._necks(self.fdm_necks, self.fdm(parts_bn, scores, latents, key_valid)).flatten(1)  # [2B, N·D]
        if self.training:
            self.memory_fdm.initialize(f_fdm[:b], labels)
        mem_fdm, valid_fdm = self.memory_fdm.features.clone(), self.memory_fdm.valid.clone()
        if self.training:
            self.memory_oem.update(f_oem[:b], labels)  # Eq. (3), holistic branch only (§3.3)
            self.memory_fdm.update(f_fdm[:b], labels)
        with torch.no_grad():
            stats = {"oem_score_holistic": float(scores[:b].mean()), "oem_score_augmented": float(scores[b:].mean()),
                     "npo_occluded_stripes": float(1 - targets[b:].mean())}
        return {"global_logits": self.global_classifier(self.global_neck(tokens[:, 0])),
                "oem_logits": self.oem_classifier(f_oem), "fdm_logits": self.fdm_classifier(f_fdm),
                "scores": scores, "score_targets": targets, "oem_feats": f_oem, "fdm_feats": f_fdm,
                "global_feats": tokens[:, 0], "oem_feats_raw": f_oem_raw,
                "memory_oem": mem_oem, "memory_oem_valid": valid_oem, "memory_fdm": mem_fdm,
                "memory_fdm_valid": valid_fdm, "npo_boxes": occ.boxes, "npo_applied": occ.applied,
                "stats": stats}

    def loss(self, out: dict[str, Any], batch: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
        """Eq. (10) (:func:`~ogfr_core.losses.fed.fed_objective`); label smoothing ``model.fed.label_smoothing``
        (null: ``train.loss.label_smoothing``), optional triplet (``model.fed.triplet_weight``, margin
        ``train.loss.triplet_margin``)."""
        ls = cfg.label_smoothing if self.fcfg.label_smoothing is None else self.fcfg.label_smoothing
        return fed_objective(out, batch["label"], self.fcfg.temperature, ls, self.fcfg.triplet_weight,
                             cfg.triplet_margin)

    def wants_training_set_pass(self) -> bool:
        """True with ``model.fed.memory_init: train_pass`` (the training stage then calls
        :meth:`initialize_from_training_set` before the first epoch of a fresh run)."""
        return self.fcfg.memory_init == "train_pass"

    @torch.no_grad()
    def initialize_from_training_set(self, batches: Iterable[dict[str, torch.Tensor]]) -> None:
        """FED's code's memory initialisation: every centre := the mean OEM feature f' ``[N·D]`` (the
        inference feature, eval mode) of its identity's training images, in both memories (FED's code
        gives the FDM memory the same OEM centres). ``batches``: dicts with ``image [B, 3, H, W]``,
        ``camid [B]``, ``label [B]`` over the training set (test transform, no augmentation).
        Identities absent from ``batches`` stay uninitialised.

        Raises:
            ValueError: ``batches`` yielded no image.
        """
        mem = self.memory_oem
        sums = torch.zeros_like(mem.features)  # [C, N·D]
        counts = torch.zeros(mem.features.shape[0], dtype=torch.long, device=mem.features.device)
        with eval_mode(self):
            for b in batches:
                labels = b["label"].to(counts.device)
                sums.index_add_(0, labels, self.global_feature(b["image"], b["camid"]).float())
                counts += torch.bincount(labels, minlength=counts.shape[0])
        if int(counts.sum()) == 0:
            raise ValueError("FED.initialize_from_training_set: the training-set pass yielded no image")
        present = counts > 0
        centres = sums / counts.clamp_min(1)[:, None].to(sums.dtype)
        self.memory_oem.set_centres(centres, present)
        self.memory_fdm.set_centres(centres, present)

    def global_feature(self, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """Inference without the FDM: f' ``[B, N·D]`` (OEM-weighted stripes after their BNNecks,
        concatenated); :meth:`extract` wraps it."""
        return self.erase(self.encoder(images, None, camids))[2]  # [B, N·D]
