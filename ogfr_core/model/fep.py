"""Feature Erasing and Purification (FEP) module, OGFR §III-B, Eq. (6)–(14).

* :func:`correlation_matrix` — the state ``I ∈ R^{N×(K+1)}`` (patch ↔ part affinity). The paper says
  only "similarity between patch features and part features"; we use a scaled dot product
  followed by a softmax over the K+1 parts: ``I[n, k] = softmax_k(<f^p_n, f^k> / √D)``, so each row is
  a distribution over {background, K parts}, which is what Eq. (19)'s cross-entropy and Eq. (22)'s
  visibility need.
* :class:`ErasingAgent` — Eq. (6) ``m = sigmoid(I Gᵀ)``, Eq. (7) ``a ~ Bernoulli(m)``.
* :class:`MHSAFix` — Eq. (11)–(14): queries from the patch tokens only; global and part outputs are
  their value vectors unchanged.
* :class:`FEPModule` — agent (or a fixed mask rule, Table V) → replace erased patches by a learnable
  embedding → customised two-layer decoder (MHSA_fix layer, then a conventional layer; Table VI's
  "conventional" variant uses two conventional layers) → LayerNorm → ``F_hp``.

Decoder layers are timm pre-norm ``Block`` s (``x + MHSA(LN(x))``, ``x + FFN(LN(x))``) — our reading
of Eq. (10)'s ``FFN(LN(MHSA(·)))`` in the layout of the ViT they extend; as TransReID's JPM branch,
they are initialised as copies of the encoder's last block, plus a final LayerNorm.
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Attention, Block
from torch import nn

from .neck import FP32Linear

MaskMethod = Literal["learned", "none", "random", "background"]


def correlation_matrix(patches: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """State ``I`` of the FEP agent (and of Eq. 19/22): softmax over parts of scaled dot products.

    Args:
        patches: patch features ``f^p`` ``[B, N, D]``.
        parts: part features ``f^0..f^K`` ``[B, K+1, D]`` (index 0 = background).

    Returns:
        ``I [B, N, K+1]``, rows sum to 1.
    """
    scale = patches.shape[-1] ** -0.5
    logits = torch.einsum("bnd,bkd->bnk", patches, parts) * scale  # [B, N, K+1]
    return logits.softmax(dim=-1)


def upsample_correlation(corr: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Eq. (19)'s ``Ĩ``: rearrange ``I [B, N, K+1]`` to ``[B, K+1, Hp, Wp]`` and upsample bilinearly to
    ``size = (H, W)`` → ``[B, K+1, H, W]`` (probabilities; bilinear weights keep each pixel summing to 1)."""
    b, n, k1 = corr.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"correlation has {n} patches, grid {grid} needs {grid[0] * grid[1]}")
    maps = corr.transpose(1, 2).reshape(b, k1, grid[0], grid[1]).contiguous()  # [B, K+1, Hp, Wp]
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def part_visibility(corr: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
                    rule: str = "pixel") -> torch.Tensor:
    """Eq. (22): part i ∈ 1..K is visible if it is the arg-max class at some pixel of ``Ĩ``.

    Eq. (22) reads "max pixel value of Ĩ_i exceeds 0"; a softmax probability is always > 0, so we read
    Ĩ_i as the part's share of the per-pixel arg-max map (pixel value 1 where part i wins, else 0),
    i.e. "part i wins at least one pixel" (``rule: pixel``). Bilinear upsampling creates pixels where
    a part that wins no token still wins (between two tokens it is second in), so this reading is the
    most permissive; ``rule: token`` reads Eq. (22) on the token grid itself: part i is visible if it
    is the arg-max class of at least one token (row of ``I``).

    Args:
        corr: ``I [B, N, K+1]``; grid: ``(Hp, Wp)``; size: ``(H, W)`` pixels (``pixel`` rule only).
        rule: ``pixel`` | ``token``.

    Returns:
        ``[B, K]`` bool (background excluded).

    Raises:
        ValueError: an unknown rule.
    """
    if rule not in ("pixel", "token"):
        raise ValueError(f"evaluate.visibility must be pixel or token, got {rule!r}")
    k1 = corr.shape[-1]
    if rule == "token":
        winner = corr.argmax(dim=-1)  # [B, N]
        return F.one_hot(winner, k1).amax(dim=1).bool()[:, 1:]
    up = upsample_correlation(corr, grid, size)  # [B, K+1, H, W]
    winner = up.argmax(dim=1)  # [B, H, W]
    present = F.one_hot(winner.flatten(1), k1).amax(dim=1).bool()  # [B, K+1]
    return present[:, 1:]


class ErasingAgent(nn.Module):
    """Erasing-mask agent, Eq. (6)–(7): ``m = sigmoid(I Gᵀ)``, ``a ~ Bernoulli(m)``.

    ``G ∈ R^{1×(K+1)}`` (no bias, as Eq. 6). Since each row of ``I`` sums to 1, ``I Gᵀ`` is a convex
    combination of G's entries; we initialise ``G = 2`` so that the agent starts by retaining ~88% of
    the patches (sigmoid(2)) instead of erasing half of them at random (our choice; paper silent).
    """

    def __init__(self, num_part_tokens: int, init_logit: float = 2.0) -> None:
        super().__init__()
        self.G = FP32Linear(num_part_tokens, 1, bias=False)  # fp32 under CPU autocast (train.amp_cpu)
        nn.init.constant_(self.G.weight, init_logit)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``state I [B, N, K+1]`` → retain probability ``m [B, N]``."""
        return torch.sigmoid(self.G(state)).squeeze(-1)

    @staticmethod
    def log_prob(m: torch.Tensor, actions: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """``Σ_t log π(a_t | s_t)`` of Eq. (9) for Bernoulli actions: ``[B, N] → [B]``."""
        m = m.float().clamp(eps, 1 - eps)  # fp32: under fp16 autocast 1 - m underflows
        a = actions.float()
        return (a * m.log() + (1 - a) * (1 - m).log()).sum(-1)

    @staticmethod
    def entropy(m: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """Entropy of the Bernoulli policy ``Σ_t H(m_t)`` (nats), ``[B, N] → [B]``; differentiable in m."""
        m = m.float().clamp(eps, 1 - eps)
        return -(m * m.log() + (1 - m) * (1 - m).log()).sum(-1)


class MHSAFix(Attention):
    """MHSA_fix of Eq. (11)–(14), a timm ``Attention`` whose first ``num_fixed`` tokens (global + part
    tokens) do not attend: their per-head output is their value vector ``v`` (Eq. 13); only the patch
    tokens query (Eq. 11–12) over all keys/values. Heads are concatenated and projected as usual.

    Shapes: ``[B, L, D] → [B, L, D]``.
    """

    def __init__(self, dim: int, num_heads: int, num_fixed: int, **kwargs) -> None:
        super().__init__(dim, num_heads=num_heads, **kwargs)
        self.num_fixed = num_fixed

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        """Eq. (11)–(14) on ``x [B, L, D]`` (first ``num_fixed`` tokens fixed) → ``[B, L, D]``.

        Raises:
            ValueError: an attention mask or causal attention is requested (not part of MHSA_fix).
        """
        if attn_mask is not None or is_causal:
            raise ValueError("MHSAFix does not support attention masks")
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, h, L, d]
        q, k = self.q_norm(q), self.k_norm(k)
        q_patch = q[:, :, self.num_fixed:]  # [B, h, N, d]  Eq. (11): queries from patch tokens
        out_patch = F.scaled_dot_product_attention(
            q_patch, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)  # Eq. (12)
        out = torch.cat([v[:, :, : self.num_fixed], out_patch], dim=2)  # Eq. (13)-(14)
        out = out.transpose(1, 2).reshape(b, n, self.attn_dim)  # [B, L, h*d]
        out = self.norm(out)
        return self.proj_drop(self.proj(out))

    @classmethod
    def from_attention(cls, attn: Attention, num_fixed: int) -> "MHSAFix":
        """An MHSA_fix with the weights of a timm ``Attention`` (same qkv/proj shapes)."""
        new = cls(attn.qkv.in_features, attn.num_heads, num_fixed,
                  qkv_bias=attn.qkv.bias is not None, proj_bias=attn.proj.bias is not None)
        new.load_state_dict(attn.state_dict(), strict=True)
        return new


def block_queries(block: Block, x: torch.Tensor, num_queries: int) -> torch.Tensor:
    """A timm pre-norm ``Block`` evaluated for the first ``num_queries`` tokens only.

    Every token still serves as key and value, so the result equals ``block(x)[:, :num_queries]``
    (tested); the saving is the queries, output projection and FFN of the other tokens (with one
    query out of 220 tokens a block costs ~1/6 of the full pass). Used where only the [cls] output of
    a decoder's last layer is read: the no-gradient p^b / p^m scoring of Eq. (8).

    Args:
        block: a timm ``Block`` with a conventional ``Attention`` (not :class:`MHSAFix`).
        x: ``[B, L, D]`` input tokens.
        num_queries: how many leading tokens to compute, ``1 <= num_queries <= L``.

    Returns:
        ``[B, num_queries, D]``. Inference semantics: no DropPath / dropout.

    Raises:
        ValueError: ``block`` is in training mode (its DropPath would be skipped silently) or its
            attention is not a conventional timm ``Attention``.
    """
    attn = block.attn
    if block.training:
        raise ValueError("block_queries computes inference outputs; put the block in eval mode")
    if type(attn) is not Attention:
        raise ValueError(f"block_queries needs a timm Attention, got {type(attn).__name__}")
    b, n_tok, _ = x.shape
    heads, hd, dim = attn.num_heads, attn.head_dim, attn.num_heads * attn.head_dim
    h = block.norm1(x)  # [B, L, D]
    w, bias = attn.qkv.weight, attn.qkv.bias  # rows: q | k | v
    q = F.linear(h[:, :num_queries], w[:dim], None if bias is None else bias[:dim])  # [B, n, h*d]
    kv = F.linear(h, w[dim:], None if bias is None else bias[dim:])  # [B, L, 2*h*d]
    q = q.reshape(b, num_queries, heads, hd).transpose(1, 2)  # [B, h, n, d]
    k, v = kv.reshape(b, n_tok, 2, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # [B, h, L, d] each
    q, k = attn.q_norm(q), attn.k_norm(k)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, num_queries, dim)  # [B, n, h*d]
    o = attn.norm(o)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        o = o * gate(h[:, :num_queries]).sigmoid()
    y = x[:, :num_queries] + block.ls1(attn.proj(o))  # [B, n, D]
    return y + block.ls2(block.mlp(block.norm2(y)))


def make_layers(template: Block, count: int, fixed_first: int = 0) -> nn.Sequential:
    """``count`` copies of a timm ``Block`` (TransReID initialises extra layers from the last block).
    With ``fixed_first > 0`` the first copy's attention becomes :class:`MHSAFix` with that many fixed
    tokens (the customised decoder's first layer)."""
    layers = [copy.deepcopy(template) for _ in range(count)]
    if fixed_first:
        layers[0].attn = MHSAFix.from_attention(layers[0].attn, fixed_first)
    return nn.Sequential(*layers)


class ConventionalHead(nn.Module):
    """Two conventional transformer layers + LayerNorm (the student branch; also the teacher when
    FEP-T is off). ``[B, L, D] → [B, L, D]``."""

    def __init__(self, template: Block, norm: nn.Module, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = make_layers(template, num_layers)
        self.norm = copy.deepcopy(norm)

    def forward(self, tokens: torch.Tensor, **_: object) -> tuple[torch.Tensor, dict]:
        """``tokens [B, L, D]`` → ``(F_op [B, L, D], {})``; extra keyword arguments (the FEP module's
        state / foreground inputs) are accepted and ignored so both heads share one call."""
        return self.norm(self.layers(tokens)), {}


class FEPModule(nn.Module):
    """FEP module (Eq. 6–14).

    Args:
        template, norm: timm block / LayerNorm the decoder layers are copied from.
        num_prefix: number of global + part tokens before the patches (``1 + K + 1``).
        num_part_tokens: K + 1.
        decoder: ``customised`` (MHSA_fix then MHSA, Eq. 10) or ``conventional`` (two MHSA layers).
        mask_method: Table V — ``learned`` (the agent), ``none`` (keep all), ``random``
            (Bernoulli(``random_keep``)), ``background`` (erase patches whose parsing label is
            background — occluded pixels are background in the parsing; needs ``patch_foreground``).
        random_keep: retain probability of the ``random`` method.

    ``forward(tokens [B, L, D], state I [B, N, K+1], patch_foreground [B, N] | None, generator)``
    returns ``(F_hp [B, L, D], info)`` with ``info`` = ``{"m": [B, N] (learned only), "actions": [B, N]}``.
    In training the learned agent samples ``a ~ Bernoulli(m)`` (Eq. 7); in eval mode it is greedy,
    ``a = 1[m > 0.5]`` (our choice; only used when FEP sits in the student branch).
    """

    def __init__(self, template: Block, norm: nn.Module, num_prefix: int, num_part_tokens: int,
                 decoder: Literal["customised", "conventional"] = "customised",
                 mask_method: MaskMethod = "learned", random_keep: float = 0.5) -> None:
        super().__init__()
        self.num_prefix = num_prefix
        self.mask_method = mask_method
        self.random_keep = random_keep
        self.agent = ErasingAgent(num_part_tokens) if mask_method == "learned" else None
        dim = template.norm1.normalized_shape[0]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if mask_method != "none" else None
        if self.mask_token is not None:
            trunc_normal_(self.mask_token, std=0.02)
        fixed = num_prefix if decoder == "customised" else 0
        self.decoder = make_layers(template, 2, fixed_first=fixed)
        self.norm = copy.deepcopy(norm)

    def decode(self, tokens: torch.Tensor, actions: torch.Tensor | None,
               num_queries: int | None = None) -> torch.Tensor:
        """Replace patches with ``actions == 0`` by the learnable embedding, run the decoder (Eq. 10).

        ``tokens [B, L, D]``, ``actions [B, N]`` (or None: keep all) → ``[B, L, D]``; with
        ``num_queries = n`` only the first n tokens of the last layer are computed (eval mode only,
        see :func:`block_queries`) → ``[B, n, D]``.
        """
        if actions is not None and self.mask_token is not None:
            prefix, patches = tokens[:, : self.num_prefix], tokens[:, self.num_prefix:]
            keep = actions[..., None].to(patches.dtype)  # [B, N, 1]
            patches = keep * patches + (1 - keep) * self.mask_token.to(patches.dtype)
            tokens = torch.cat([prefix, patches], dim=1)
        if num_queries is None:
            return self.norm(self.decoder(tokens))
        *first, last = self.decoder
        for layer in first:
            tokens = layer(tokens)
        return self.norm(block_queries(last, tokens, num_queries))

    def sample_actions(self, state: torch.Tensor, patch_foreground: torch.Tensor | None = None,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(m, actions)``: m ``[B, N]`` (learned only, else None), actions ``[B, N]`` float in {0,1}
        (None for ``mask_method: none``)."""
        b, n, _ = state.shape
        if self.mask_method == "none":
            return None, None
        if self.mask_method == "learned":
            m = self.agent(state.detach())  # the state is an observation: PG updates G only
            if self.training:
                u = torch.rand(m.shape, generator=generator, device="cpu").to(m.device)
                return m, (u < m.detach()).to(m.dtype)  # Eq. (7) a ~ Bernoulli(m)
            return m, (m > 0.5).to(m.dtype)
        if self.mask_method == "random":
            if generator is None and not self.training:  # eval: the same mask every call (deterministic)
                generator = torch.Generator().manual_seed(0)
            u = torch.rand((b, n), generator=generator, device="cpu").to(state.device)
            return None, (u < self.random_keep).to(state.dtype)
        # background: erase patches whose label is background/occluded; at inference (no labels)
        # the predicted correlation's arg-max class stands in for the parsing label.
        fg = patch_foreground if patch_foreground is not None else (state.argmax(-1) > 0).to(state.dtype)
        return None, (fg >= 0.5).to(state.dtype)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor | None = None,
                patch_foreground: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        if state is None:
            raise ValueError("FEPModule needs the correlation matrix state I [B, N, K+1]")
        m, actions = self.sample_actions(state, patch_foreground, generator)
        info = {"actions": actions}
        if m is not None:
            info["m"] = m
        return self.decode(tokens, actions), info
