"""CpaCol — contrastive pedestrian attentive and correlation learning (Gao, Jiao, Long, Niu, Huang,
Wang, Zhang; IEEE TCSVT), registered as ``method: cpacol``. Two training stages (§III-A, Fig. 2), run
one after the other by the train stage (:meth:`CpaCol.training_phases`).

**Stage I — pedestrian feature extraction.** The shared encoder with a contrastive pedestrian
attention (ContrastAttn) layer after the 3rd, 5th and 7th of 12 blocks (§IV-D, Fig. 8; 0-based
``model.cpacol.attn_blocks = [2, 4, 6]``, mapped proportionally to the encoder's depth: the CPU
profile's 4 blocks get one after each of blocks 0, 1, 2). A layer (Fig. 3, :class:`ContrastAttn`):
``f_e = MLP_e(f)`` (three FC layers with LayerNorm + GELU), attention ``a = σ(BN(Conv(f_e)))`` (Eq. 1),
focused/non-focused components ``f_± = AvgPool(f_e ⊗ a)``, ``AvgPool(f_e ⊗ (1 − a))`` (Eq. 2) over the
image and over K horizontal stripes, and the foreground features ``MLP_r(f) ⊗ a`` (Eq. 7). The
focused/non-focused split is the LEARNED attention map's, as in the paper — CpaCol uses no parsing;
our parsing label maps only measure it (training stats ``cpacol/attn_fg`` and ``cpacol/attn_bg``:
the mean attention on patches the parser calls person / background). Losses (Eq. 12):
``L_base`` (Eq. 11: ID + triplet on the [cls] feature and on K = 4 stripe-pooled part features of
the output tokens, TransReID-style) ``+ λ1·L_inter + λ2·L_intra`` (Eq. 3–6; λ1 = 1, λ2 = 0.5,
§IV-D) — :mod:`ogfr_core.losses.cpacol`. Inference feature (§III-D): the BNNeck'd [cls] feature
concatenated with the K BNNeck'd part features divided by K (the official code's ``/4``),
``[B, (1 + K)·D]``; under the standard protocol this is CpaCol's number, and it is stage I alone
(stage II freezes it).

**Stage II — correlation learning (CorreL, §III-C).** The stage-I model is frozen (eval mode, no
gradient); trainable are ω_l (3×3 conv C → C_r + BN, the official code's embedding; C_r = 256), the
position prior α ∈ R^{H×W×H×W} (initialised from the rows' 4-stripe gap: 1.0 / 0.8 / 0.6 / 0.4) and the
4D correlation learner (:class:`CorrelationLearner`: four blocks of center-pivot 4D convolutions
(Min et al., HSNet) with GroupNorm + ReLU, channels 16 → 128, spatial stride 8 in all, 4D average pool,
MLP → a logit; s = σ(logit), Fig. 5). For each pair, Eq. (9):
``r_l(a,b,c,d) = ReLU(cos(ω_l(f_l^i)(a,b), ω_l(f_l^j)(c,d)))`` on the ContrastAttn layers' output
tokens, times α, stacked over l. Trained with the verification loss (Eq. 10) on hard pairs: for each
image the hardest positive and hardest negative of the batch by the stage-I [cls] feature (the
official code's ``hard_sample``; it uses random pairs for its first 20 epochs). Stage-II lr =
``train.lr · stage2_lr_scale`` (§IV-B: 0.01 after stage I's 0.008 → 1.25).

**Test-time fusion (an approximation; ``evaluate.cpacol.rescore``).** The official code scores every
query–gallery pair with the correlation module, z-normalises both the global distance and the
module's output over the gallery, and adds them with weight 0.3 (after sweeping the weight on the
test set). We re-score only the ``evaluate.cpacol.top_k`` nearest of each query by the global
distance (:class:`CpaColRescore`, flagged "re-scores the top-k"): z statistics over those k, items
outside them never promoted; with k = G it is the code's fusion. The weight is the official code's
0.3 (the paper gives none) unless chosen on the validation split (``evaluate.cpacol.weight_sweep``
evaluated on ``evaluate.sets: [val]``).

Where the paper is silent we follow the official code: MLP_e reads the tokens detached and the
layers' embeddings are chained (``e_l = MLP_e^l(f_l) + e_{l−1}``); Eq. (7)'s foreground features
enter the token stream as a residual ``f ← f + w_l·MLP_r(f) ⊗ a`` with ``w = (0.5, 0.25, 0.1)``
ramped linearly over the first ``attn_ramp_epochs``. Not adopted from the code (not in the paper):
its per-layer ID classifiers on the attended embeddings, the rank weights of its positive
contrastive terms, its extra margin-ranking term in the verification loss, its JPM-style copy of the
last block for the part features, and its 0/1 label inversion of the verification target.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from ..losses.cpacol import stage1_objective, verification_loss
from .backbone import build_encoder
from .base import ReIDMethod, TrainingPhase
from .neck import make_bnneck, make_classifier
from .registry import ModelConfigError, register_method
from .vit_ops import input_tokens, map_block_indices

log = logging.getLogger(__name__)

PHASES = ("stage1", "stage2")


def _mlp(dim: int, hidden: int, bias: bool) -> nn.Sequential:
    """Three FC layers with LayerNorm + GELU between them (Fig. 3 MLP_e / MLP_r)."""
    return nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.LayerNorm(hidden), nn.GELU(),
                         nn.Linear(hidden, hidden, bias=bias), nn.LayerNorm(hidden), nn.GELU(),
                         nn.Linear(hidden, dim, bias=bias))


def stripe_pool(x: torch.Tensor, stripes: int) -> torch.Tensor:
    """Mean of ``x [B, C, H, W]`` over each of ``stripes`` horizontal bands of rows (``torch.tensor_split``:
    every row used, bands differ by at most one row) → ``[B, stripes, C]``."""
    return torch.stack([band.mean(dim=(2, 3)) for band in torch.tensor_split(x, stripes, dim=2)], dim=1)


def stripe_prior(h: int, w: int, stripes: int = 4) -> torch.Tensor:
    """Initial position embedding α of §III-C, ``[h, w, h, w]``: with the rows split into 4 stripes,
    ``1 − 0.2·|stripe(a) − stripe(c)|`` (same stripe 1.0, adjacent 0.8, then 0.6, 0.4), any columns."""
    band = torch.div(torch.arange(h) * stripes, h, rounding_mode="floor")  # [h] stripe of each row
    gap = (band[:, None] - band[None, :]).abs().float()  # [h, h]
    prior = (1 - 0.2 * gap).clamp_min(0.0)
    return prior[:, None, :, None].expand(h, w, h, w).contiguous()


def dense_correlation(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """Eq. (9) without the embedding: ``ReLU(cos(fa(a, b), fb(c, d)))`` for every position pair.

    Args:
        fa, fb: ``[P, L, C, H, W]`` (P pairs, L layers, C channels).

    Returns:
        ``[P, L, H, W, H, W]``.
    """
    fa, fb = F.normalize(fa.float(), dim=2), F.normalize(fb.float(), dim=2)
    return F.relu(torch.einsum("plcab,plcxy->plabxy", fa, fb))


class ContrastAttn(nn.Module):
    """One contrastive pedestrian attention layer (Fig. 3, Eq. 1, 2, 7).

    Args:
        dim: token channels C; stripes: K of Eq. (6).

    ``forward(x [B, N, D], grid (Hp, Wp), prev embedding or None, weight)`` → ``(x' [B, N, D], parts,
    embedding [B, N, D])`` with ``parts = {"fg", "bg": [B, D], "fg_stripes", "bg_stripes": [B, K, D],
    "attn": [B, Hp, Wp]}``; ``x' = x + weight·MLP_r(x) ⊗ a``.
    """

    def __init__(self, dim: int, stripes: int = 4) -> None:
        super().__init__()
        self.stripes = stripes
        self.embed = _mlp(dim, dim // 2, bias=True)  # MLP_e
        self.refine = _mlp(dim, dim // 2, bias=False)  # MLP_r
        self.conv = nn.Conv2d(dim, 1, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], prev: torch.Tensor | None = None,
                weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        b, n, d = x.shape
        e = self.embed(x.detach())  # [B, N, D] (the code detaches the layer's input)
        if prev is not None:
            e = e + prev  # the code chains the layers' embeddings
        fe = e.transpose(1, 2).reshape(b, d, *grid)  # [B, D, Hp, Wp]
        a = torch.sigmoid(self.bn(self.conv(fe)))  # [B, 1, Hp, Wp]  Eq. (1)
        fg, bg = fe * a, fe * (1 - a)
        parts = {"fg": fg.mean(dim=(2, 3)), "bg": bg.mean(dim=(2, 3)),  # Eq. (2)
                 "fg_stripes": stripe_pool(fg, self.stripes), "bg_stripes": stripe_pool(bg, self.stripes),
                 "attn": a[:, 0]}
        x = x + weight * self.refine(x) * a.flatten(2).transpose(1, 2)  # Eq. (7), as a residual
        return x, parts, e


class CenterPivotConv4d(nn.Module):
    """Center-pivot 4D convolution (Min et al., HSNet, ICCV 2021; CpaCol Eq. 8) on ``[P, C, Ha, Wa,
    Hb, Wb]``: a 2D convolution over the first image's positions at each (subsampled) position of the
    second, plus one over the second's positions at each (subsampled) position of the first.

    Args:
        in_channels, out_channels; kernel: k (odd; padding k // 2); stride: s on all four dims.

    Output: ``[P, out, ⌈Ha/s⌉, ⌈Wa/s⌉, ⌈Hb/s⌉, ⌈Wb/s⌉]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = int(stride)
        self.conv_a = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2)
        self.conv_b = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        xa = x[..., ::s, ::s]  # [P, C, Ha, Wa, Hb', Wb']
        p, c, ha, wa, hb, wb = xa.shape
        ya = self.conv_a(xa.permute(0, 4, 5, 1, 2, 3).reshape(p * hb * wb, c, ha, wa))  # [P·Hb'·Wb', O, Ha', Wa']
        ya = ya.view(p, hb, wb, *ya.shape[1:]).permute(0, 3, 4, 5, 1, 2)  # [P, O, Ha', Wa', Hb', Wb']
        xb = x[:, :, ::s, ::s]  # [P, C, Ha', Wa', Hb, Wb]
        p, c, ha, wa, hb, wb = xb.shape
        yb = self.conv_b(xb.permute(0, 2, 3, 1, 4, 5).reshape(p * ha * wa, c, hb, wb))  # [P·Ha'·Wa', O, Hb', Wb']
        yb = yb.view(p, ha, wa, *yb.shape[1:]).permute(0, 3, 1, 2, 4, 5)  # [P, O, Ha', Wa', Hb', Wb']
        return ya + yb


class CorrelationLearner(nn.Module):
    """The CorreL module's 4D network (Fig. 5; the official code's ``Cor_Learner``): four blocks of
    (CP-4D conv → GroupNorm(4) → ReLU) layers — (k5 s2 → 16), (k3 → 16, k3 s2 → 32),
    (k3 → 32, k3 → 32, k3 s2 → 64), (k3 → 64, k3 → 64, k3 → 128) — then the 4D average pool and
    ``Linear(128, 128) → ReLU → Linear(128, 1)``. ``forward(corr [P, L, H, W, H, W]) → logits [P]``."""

    LAYERS = ((16, 5, 2), None, (16, 3, 1), (32, 3, 2), None, (32, 3, 1), (32, 3, 1), (64, 3, 2), None,
              (64, 3, 1), (64, 3, 1), (128, 3, 1))

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        layers, c = [], in_channels
        for spec in self.LAYERS:
            if spec is None:  # block boundary (Fig. 5); kept for reading, no module
                continue
            out, k, s = spec
            layers += [CenterPivotConv4d(c, out, k, s), nn.GroupNorm(4, out), nn.ReLU(inplace=True)]
            c = out
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, 1))

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        y = self.blocks(corr)  # [P, 128, h, w, h, w]
        return self.head(y.flatten(2).mean(dim=2))[:, 0]  # [P]


@register_method("cpacol")
class CpaCol(ReIDMethod):
    """CpaCol (see the module docstring).

    Args:
        cfg: ``train.model`` params (``cfg.cpacol``: :class:`~ogfr_core.config.CpaColConfig`);
        num_classes, num_cameras, img_size ``(H, W)``, load_weights: as every method.

    Shapes: stage I ``forward(batch)`` → ``feats [B, 1 + K, D]`` (before the BNNecks), ``logits
    [B, 1 + K, C]``, ``contrast`` (one dict per layer, see :class:`ContrastAttn`); stage II →
    ``logits [2B]`` (anchor vs hardest positive, then vs hardest negative), ``same [2B]``.

    Raises:
        ModelConfigError: ``residual_weights`` and ``attn_blocks`` differ in length.
    """

    def __init__(self, cfg, num_classes: int, num_cameras: int, img_size: tuple[int, int],
                 load_weights: bool = True) -> None:
        super().__init__()
        cc = cfg.cpacol
        if len(cc.residual_weights) != len(cc.attn_blocks):
            raise ModelConfigError(f"train.model.cpacol.residual_weights has {len(cc.residual_weights)} values but "
                                   f"attn_blocks has {len(cc.attn_blocks)}: give one weight per ContrastAttn layer")
        self.cfg = cfg
        self.num_classes = num_classes
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.encoder, self.init_warning = build_encoder(cfg, self.img_size, num_cameras, load_weights=load_weights)
        dim = self.encoder.embed_dim
        self.attn_after = map_block_indices(cc.attn_blocks, self.encoder.depth)  # several may follow one block
        self.stripes = int(cc.num_stripes)
        self.contrast = nn.ModuleList(ContrastAttn(dim, self.stripes) for _ in self.attn_after)
        self.necks = nn.ModuleList(make_bnneck(dim) for _ in range(1 + self.stripes))
        self.classifiers = nn.ModuleList(make_classifier(dim, num_classes) for _ in range(1 + self.stripes))
        # stage II (CorreL)
        hp, wp = self.encoder.grid_size
        self.omega = nn.ModuleList(nn.Sequential(nn.Conv2d(dim, cc.corr_channels, 3, padding=1, bias=False),
                                                 nn.BatchNorm2d(cc.corr_channels)) for _ in self.attn_after)
        self.alpha = nn.Parameter(stripe_prior(hp, wp))
        self.matcher = CorrelationLearner(len(self.attn_after))
        # ContrastAttn residual ramp (official code): a buffer, so evaluation uses the value training reached
        self.register_buffer("residual_scale", torch.ones(()))
        self._stage2 = {id(p) for m in (self.omega, self.matcher) for p in m.parameters()} | {id(self.alpha)}
        self._wants_grad = {n: p.requires_grad for n, p in self.named_parameters()}  # frozen by design stay so
        self.phase = PHASES[0]
        self.set_phase(PHASES[0])

    # ---------------------------------------------------------------------------------------
    def training_phases(self, cfg) -> list[TrainingPhase]:
        """Stage I (``train.epochs`` at ``train.lr``), then stage II (``cpacol.stage2_epochs`` at
        ``train.lr · stage2_lr_scale``, warm-up capped at its length); stage II is left out at 0 epochs."""
        cc = self.cfg.cpacol
        phases = [TrainingPhase("stage1", cfg.epochs, cfg.lr, cfg.warmup_epochs)]
        if cc.stage2_epochs > 0:
            phases.append(TrainingPhase("stage2", cc.stage2_epochs, cfg.lr * cc.stage2_lr_scale,
                                        min(cfg.warmup_epochs, cc.stage2_epochs - 1)))
        return phases

    def set_phase(self, name: str) -> None:
        """``stage1``: the feature extractor trains, CorreL is frozen; ``stage2``: the reverse, and the
        feature extractor stays in eval mode (its BatchNorm statistics and drop-path off).

        Raises:
            ValueError: an unknown phase.
        """
        if name not in PHASES:
            raise ValueError(f"CpaCol phase must be one of {PHASES}, got {name!r}")
        self.phase = name
        for n, p in self.named_parameters():
            p.requires_grad_(self._wants_grad[n] and ((id(p) in self._stage2) == (name == "stage2")))
        self.train(self.training)

    def train(self, mode: bool = True) -> "CpaCol":
        super().train(mode)
        if getattr(self, "phase", PHASES[0]) == "stage2":
            for m in (self.encoder, self.contrast, self.necks, self.classifiers):
                m.eval()
        return self

    def on_epoch_start(self, epoch: int) -> None:
        """Stage I: the ContrastAttn residual weights ramp linearly to 1 over ``attn_ramp_epochs``."""
        ramp = self.cfg.cpacol.attn_ramp_epochs
        if self.phase == "stage1":
            self.residual_scale.fill_(min(1.0, (epoch + 1) / ramp) if ramp > 0 else 1.0)

    # ---------------------------------------------------------------------------------------
    def features(self, images: torch.Tensor, camids: torch.Tensor) -> dict[str, Any]:
        """The stage-I network: ``{"tokens": [B, 1 + N, D] after the final norm, "contrast": [per layer
        dict], "layer_tokens": [per layer patch tokens [B, N, D]] (f_l of Eq. 9)}``."""
        x = input_tokens(self.encoder, images, None, camids)  # [B, 1 + N, D]
        grid = self.encoder.grid_size
        weights = self.cfg.cpacol.residual_weights
        contrast, layer_tokens, prev, layer = [], [], None, 0
        for i, blk in enumerate(self.encoder.blocks):
            x = blk(x)
            while layer < len(self.attn_after) and self.attn_after[layer] == i:
                patches, parts, prev = self.contrast[layer](x[:, 1:], grid, prev,
                                                            weights[layer] * self.residual_scale)
                x = torch.cat([x[:, :1], patches], dim=1)
                contrast.append(parts)
                layer_tokens.append(patches)
                layer += 1
        return {"tokens": self.encoder.norm(x), "contrast": contrast, "layer_tokens": layer_tokens}

    def global_parts(self, tokens: torch.Tensor) -> torch.Tensor:
        """[cls] and the K stripe-pooled part features of the output tokens → ``[B, 1 + K, D]`` (Eq. 11)."""
        b, n, d = tokens.shape
        grid = self.encoder.grid_size
        parts = stripe_pool(tokens[:, 1:].transpose(1, 2).reshape(b, d, *grid), self.stripes)  # [B, K, D]
        return torch.cat([tokens[:, None, 0], parts], dim=1)

    def corr_embed(self, layer_tokens: list[torch.Tensor]) -> torch.Tensor:
        """ω_l of Eq. (9) on each layer's patch tokens, L2-normalised over channels → ``[B, L, C_r, Hp, Wp]``."""
        grid = self.encoder.grid_size
        out = [F.normalize(w(t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid)), dim=1)
               for w, t in zip(self.omega, layer_tokens)]
        return torch.stack(out, dim=1)

    def correlation_logits(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """Pair logits (s = σ(logit), Eq. 10) of ``fa``, ``fb`` ``[P, L, C_r, Hp, Wp]``: Eq. (9) times α,
        then the 4D network → ``[P]``."""
        return self.matcher(dense_correlation(fa, fb) * self.alpha)

    @torch.no_grad()
    def correlation_features(self, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """Test time: ``[B, L, C_r, Hp, Wp]`` embedded ContrastAttn features of images (eval mode)."""
        return self.corr_embed(self.features(images, camids)["layer_tokens"])

    # ---------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, Any]:
        """Stage I or II (:attr:`phase`) on the occlusion-augmented view (``image_occ``, else ``image``)."""
        images = batch.get("image_occ", batch["image"])
        if self.phase == "stage2":
            return self._forward_stage2(images, batch)
        f = self.features(images, batch["camid"])
        feats = self.global_parts(f["tokens"])  # [B, 1 + K, D]
        logits = torch.stack([cls(neck(feats[:, i])) for i, (neck, cls) in
                              enumerate(zip(self.necks, self.classifiers))], dim=1)  # [B, 1 + K, C]
        out = {"phase": "stage1", "feats": feats, "logits": logits, "contrast": f["contrast"], "stats": {}}
        label_map = batch.get("label_map_occ", batch.get("label_map"))
        if label_map is not None and f["contrast"]:  # how the learned attention sits on the parsed person
            with torch.no_grad():
                fg = (self.patch_foreground(label_map) > 0.5).float()  # [B, N]
                attn = f["contrast"][-1]["attn"].flatten(1).float()  # [B, N]
                out["stats"]["cpacol/attn_fg"] = float((attn * fg).sum() / fg.sum().clamp_min(1))
                out["stats"]["cpacol/attn_bg"] = float((attn * (1 - fg)).sum() / (1 - fg).sum().clamp_min(1))
        return out

    def _forward_stage2(self, images: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        labels = batch["label"]
        with torch.no_grad():
            f = self.features(images, batch["camid"])
            g = f["tokens"][:, 0].float()  # [B, D] the stage-I [cls] feature
            dist = torch.cdist(g, g)  # [B, B]
            same = labels[:, None] == labels[None, :]
            pos = dist.masked_fill(~same, float("-inf")).argmax(dim=1)  # hardest positive
            neg = dist.masked_fill(same, float("inf")).argmin(dim=1)  # hardest negative
        emb = self.corr_embed(f["layer_tokens"])  # [B, L, C_r, Hp, Wp], gradient into ω only
        partner = torch.cat([pos, neg])
        logits = self.correlation_logits(torch.cat([emb, emb]), emb[partner])  # [2B]
        target = (torch.cat([labels, labels]) == labels[partner]).float()
        acc = float(((logits > 0).float() == target).float().mean())
        return {"phase": "stage2", "logits": logits, "same": target, "stats": {"cpacol/pair_accuracy": acc}}

    def loss(self, out: dict[str, Any], batch: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
        """Stage I: Eq. (12) (:func:`~ogfr_core.losses.cpacol.stage1_objective`); stage II: Eq. (13) = Eq. (10)."""
        if out["phase"] == "stage2":
            ver = verification_loss(out["logits"], out["same"])
            return {"ver": ver, "total": ver}
        cc = self.cfg.cpacol
        return stage1_objective(out, batch["label"], cfg, cc.inter_weight, cc.intra_weight)

    def global_feature(self, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """``[B, (1 + K)·D] = [BN(f_cls), BN(f_p^1)/K, ..., BN(f_p^K)/K]`` (§III-D; the official code's
        concatenation); :meth:`extract` wraps it."""
        feats = self.global_parts(self.features(images, camids)["tokens"])  # [B, 1 + K, D]
        k = self.stripes
        return torch.cat([neck(feats[:, i]) / (1 if i == 0 else k) for i, neck in enumerate(self.necks)], dim=1)

    def test_time_extras(self, cfg, kind: str = "test") -> list:
        """``evaluate.cpacol.rescore`` → :class:`CpaColRescore` (its ``weight_sweep`` on ``val`` sets only).

        Raises:
            ModelConfigError: re-scoring asked for a model trained without stage II.
        """
        ev = getattr(cfg, "cpacol", None)
        if ev is None or not ev.rescore:
            return []
        if self.cfg.cpacol.stage2_epochs <= 0:
            raise ModelConfigError("evaluate.cpacol.rescore needs the correlation module: the checkpoint was trained "
                                   "with train.model.cpacol.stage2_epochs: 0; retrain with stage II, or set "
                                   "evaluate.cpacol.rescore: false")
        sweep = tuple(ev.weight_sweep) if kind == "val" else ()
        if ev.weight_sweep and kind != "val":
            log.info("evaluate.cpacol.weight_sweep is evaluated on the validation split only (not on %s sets)", kind)
        return [CpaColRescore(self, ev.top_k, ev.weight, ev.weight_source, sweep)]


class CpaColRescore:
    """CpaCol's test-time fusion on the top-k of the global ranking, a
    :class:`~ogfr_core.evaluation.extras.TestTimeExtra` named ``cpacol_rescore`` (flagged
    ``rescores_top_k``); sweep variants ``cpacol_rescore@w=<w>``.

    Steps: (1) one pass over the queries and one over the gallery store each image's embedded
    ContrastAttn features ``[L, C_r, Hp, Wp]`` in float16 :class:`~ogfr_core.evaluation.extras.TokenStore`
    files on disk; (2) per block of queries (``evaluate.chunk_mb``): global distances (as the ``global``
    row), the ``top_k`` candidates, their correlation logits (pairs in chunks), and
    :func:`~ogfr_core.evaluation.extras.fuse_top_k` (z-normalised distance + w · z-normalised −logit).
    The logit is the module's output before the sigmoid, as the official code fuses it.

    Cost (Occluded-Duke: 2,210 queries, 17,661 gallery images): on disk (Q + G)·L·C_r·Hp·Wp·2 bytes —
    6.4 GB for the paper configuration (L = 3, C_r = 256, 21×10 tokens), 244 MB for the CPU profile
    (C_r = 64, 8×4); Q·k = 221,000 correlation pairs at k = 100 instead of Q·G = 39 million for the
    full fusion (``benchmarks/bench_model.py`` measures the seconds per query).
    """

    name = "cpacol_rescore"
    flags = ("rescores_top_k",)

    def __init__(self, model: CpaCol, top_k: int, weight: float, weight_source: str, sweep: tuple[float, ...] = ()):
        self.model = model
        self.top_k = int(top_k)
        self.weight = float(weight)
        self.weight_source = weight_source
        self.weights = {self.name: self.weight, **{f"{self.name}@w={w:g}": float(w) for w in sweep}}

    def options(self, variant: str) -> dict:
        return {"top_k": self.top_k, "weight": self.weights[variant],
                "weight_source": self.weight_source if variant == self.name else "validation sweep",
                "score": "correlation logit (before the sigmoid), z-normalised over the top-k",
                "compare_with": "the global row: stage I alone (stage II leaves its features unchanged)"}

    def store_features(self, ctx, which: str, n: int):
        """Embedded ContrastAttn features of every image of a split, in a TokenStore."""
        from ..evaluation.extras import TokenStore

        m = self.model
        shape = (len(m.attn_after), m.cfg.cpacol.corr_channels, *m.encoder.grid_size)
        store = TokenStore(ctx.scratch / f"{which}_corr.npy", n, shape)
        for rows, b in ctx.batches(which):
            store.write(rows, m.correlation_features(b["image"], b["camid"]))
        return store

    def distance_blocks(self, ctx):
        import numpy as np

        from ..evaluation.distance import iter_distance_blocks
        from ..evaluation.extras import fuse_top_k, rows_per_chunk, top_k_indices

        m, dev = self.model, ctx.device
        q_store = self.store_features(ctx, "query", len(ctx.query))
        g_store = self.store_features(ctx, "gallery", len(ctx.gallery))
        hw = m.encoder.grid_size[0] * m.encoder.grid_size[1]
        per_pair = 4 * hw * hw * (len(m.attn_after) + 2 * 16) + 2 * 4 * int(np.prod(q_store.shape))
        pairs_per_chunk = rows_per_chunk(per_pair, ctx.chunk_mb)
        for sl, block in iter_distance_blocks(ctx.query, ctx.gallery, "global", ctx.chunk_mb, ctx.normalize):
            top = top_k_indices(block, self.top_k)  # [q, k]
            qi = np.repeat(np.arange(sl.start, sl.stop), top.shape[1])
            gi = top.reshape(-1)
            scores = np.empty(len(qi), np.float32)
            for c in range(0, len(qi), pairs_per_chunk):
                fa = q_store.read(qi[c:c + pairs_per_chunk]).to(dev)
                fb = g_store.read(gi[c:c + pairs_per_chunk]).to(dev)
                scores[c:c + pairs_per_chunk] = m.correlation_logits(fa, fb).float().cpu().numpy()
            yield sl, fuse_top_k(block, top, scores.reshape(top.shape), self.weights)
