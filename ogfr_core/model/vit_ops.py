"""Per-block access to the shared encoder, for the peers that act between or inside its blocks (FPC's
token pruning, CpaCol's contrastive attention layers).

The shared :class:`~ogfr_core.model.oa_vit.OAViT` runs ``norm(blocks(E))`` in one call; these helpers
run the same pieces one by one — never a fork of OAViT:

==============================  ==================================================================
:func:`input_tokens`            E of Eq. (5) (TransReID's input: ``[cls; part tokens; patches] +
                                P_E (+ γ1 E_o) + γ2 C_e``), exactly what OAViT feeds its first block
:func:`attention_with_cls_row`  a timm ``Attention`` forward that also returns the [cls] row of the
                                attention matrix, averaged over heads (FPC Eq. 2)
:func:`evit_keep`               EViT token reorganisation: keep the tokens with the largest [cls]
                                attention, fuse the others into one attention-weighted token
:func:`block_forward`           one timm ``Block`` with optional pruning between attention and MLP
:func:`map_block_indices`       block indices of a 12-block ViT mapped proportionally to ``depth``
==============================  ==================================================================
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: depth of the ViT-B/16 the papers place their layers in (their block indices refer to it)
REFERENCE_DEPTH = 12


def map_block_indices(indices: Sequence[int], depth: int, reference_depth: int = REFERENCE_DEPTH,
                      unique: bool = False) -> list[int]:
    """0-based block indices given for a ``reference_depth``-block ViT, mapped proportionally to a
    ``depth``-block encoder: ``⌊i · depth / reference_depth⌋`` (identity at ``depth == 12``), clipped
    to ``depth − 1``.

    With ``unique`` repeated indices (a shallow encoder) are merged, with an INFO line.

    >>> map_block_indices([3, 6, 9], 4), map_block_indices([2, 4, 6], 4), map_block_indices([3, 6, 9], 12)
    ([1, 2, 3], [0, 1, 2], [3, 6, 9])

    Raises:
        ValueError: ``depth < 1`` or a negative index.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if any(i < 0 for i in indices):
        raise ValueError(f"block indices must be >= 0, got {list(indices)}")
    mapped = [min(depth - 1, int(i) * depth // reference_depth) for i in indices]
    if unique and len(set(mapped)) != len(mapped):
        merged = sorted(set(mapped))
        log.info("block indices %s of a %d-block ViT map to %s in a %d-block encoder; merged to %s",
                 list(indices), reference_depth, mapped, depth, merged)
        return merged
    return mapped


def input_tokens(encoder, x: torch.Tensor, z: torch.Tensor | None = None,
                 camids: torch.Tensor | None = None) -> torch.Tensor:
    """The sequence OAViT feeds its first block (Eq. 5), ``[B, 1 + P + N, D]``.

    Same computation as the first half of :meth:`OAViT.forward` (so ``encoder.norm(blocks(...))`` of
    this equals ``encoder(x, z, camids)``, tested).

    Raises:
        ValueError: as :meth:`OAViT.forward` — z/camids missing while used, unknown camera ids.
    """
    b = x.shape[0]
    patches = encoder.patch_embed(x) + encoder.pos_embed[:, 1:]  # [B, N, D]
    cls = (encoder.cls_token + encoder.pos_embed[:, :1]).expand(b, -1, -1)  # [B, 1, D]
    tokens = [cls]
    if encoder.part_tokens is not None:
        tokens.append(encoder.part_tokens.expand(b, -1, -1))  # [B, P, D]
    seq = torch.cat(tokens + [patches], dim=1)  # [B, 1 + P + N, D]
    if encoder.occ_embed is not None:
        if z is None:
            raise ValueError("this OA-ViT uses occlusion embeddings: pass z [B, 4]")
        seq = seq + encoder.gamma_occ * encoder.occlusion_embedding(z)[:, None]
    if encoder.cam_embed is not None:
        if camids is None:
            raise ValueError("this OA-ViT uses camera embeddings: pass camids [B]")
        if camids.numel() and (int(camids.min()) < 0 or int(camids.max()) >= encoder.num_cameras):
            raise ValueError(f"camera ids must be in 0..{encoder.num_cameras - 1} (training cameras), "
                             f"got {sorted(set(camids.tolist()))}")
        seq = seq + encoder.gamma_cam * encoder.cam_embed[camids.long()][:, None]
    return seq


def attention_with_cls_row(attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention`` forward on ``x [B, N, D]`` → ``(output [B, N, D], cls_attn [B, N − 1])``.

    ``cls_attn`` is the first row of softmax(QKᵀ/√d) without its [cls] column, averaged over the
    heads: FPC Eq. (2), ``A_cls = 1/n Σ_h softmax(q_cls K_hᵀ / √d)``. The output is the module's own
    (fused scaled-dot-product attention, then the module's norm/gate/projection).
    """
    b, n, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # [B, h, N, d] each
    q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    row = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).float().softmax(dim=-1)  # [B, h, 1, N]
    cls_attn = row[:, :, 0, 1:].mean(dim=1).to(x.dtype)  # [B, N-1]
    out = out.transpose(1, 2).reshape(b, n, -1)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out)), cls_attn


def evit_keep(x: torch.Tensor, cls_attn: torch.Tensor, keep_rate: float, fuse: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """EViT token reorganisation (Liang et al. 2022; FPC §3.1 "Token Sparsification").

    Keeps ``L = ⌈γ · (N − 1)⌉`` of the ``N − 1`` non-[cls] tokens of ``x [B, N, D]``: those with the
    largest [cls] attention ``cls_attn [B, N − 1]``, in decreasing attention order. With ``fuse`` the
    dropped ones become one extra token ``Σ_j a_j x_j`` (attention-weighted sum, not renormalised, as
    EViT and FPC's code). ``keep_rate >= 1`` (or L = N − 1) returns ``x`` unchanged.

    Returns:
        ``(x' [B, 1 + L (+ 1), D], kept [B, L] long indices into the non-[cls] tokens, or None)``.
    """
    n = x.shape[1] - 1
    left = math.ceil(keep_rate * n)
    if keep_rate >= 1 or left >= n:
        return x, None
    left = max(1, left)
    _, idx = cls_attn.topk(left, dim=1, largest=True, sorted=True)  # [B, L]
    others = x[:, 1:]  # [B, N-1, D]
    kept = others.gather(1, idx[..., None].expand(-1, -1, x.shape[2]))  # [B, L, D]
    parts = [x[:, :1], kept]
    if fuse:
        dropped = torch.ones_like(cls_attn).scatter(1, idx, 0.0)  # [B, N-1]: 1 = not kept
        parts.append((others * (cls_attn * dropped)[..., None]).sum(dim=1, keepdim=True))  # [B, 1, D]
    return torch.cat(parts, dim=1), idx


def block_forward(block, x: torch.Tensor, keep_rate: float = 1.0, fuse: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One timm ``Block`` on ``x [B, N, D]``; with ``keep_rate < 1`` the tokens are pruned EViT-style
    (:func:`evit_keep`) between the attention and the MLP, by this block's [cls] attention.

    Returns:
        ``(x' [B, N', D], kept indices [B, L] or None)``.
    """
    if keep_rate >= 1:
        return block(x), None
    out, cls_attn = attention_with_cls_row(block.attn, block.norm1(x))
    x = x + block.drop_path1(block.ls1(out))
    x, kept = evit_keep(x, cls_attn, keep_rate, fuse)
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, kept
