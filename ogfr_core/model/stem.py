"""Hybrid patch embedding: a CNN feature map becomes the ViT's patch tokens.

This is the ViT paper's *hybrid architecture* (Dosovitskiy et al., ICLR 2021, §3.1 "Hybrid
Architecture"): instead of cutting the image into P×P patches and projecting each (Eq. 4 of OGFR),
the input sequence is formed from the feature map of a CNN, each spatial position of the map being
one token (a 1×1 "patch", projected to the embedding dimension D). We use timm's
:class:`timm.layers.HybridEmbed` around a truncated torchvision feature extractor.

Why here: no ImageNet ViT weights can be obtained on the reference machines, and a randomly
initialised ViT learns almost nothing in a CPU budget. An ImageNet-pretrained **MobileNetV2** can
(see :mod:`ogfr_core.pretrained`), so the CPU profile puts its first blocks in front of randomly
initialised transformer blocks. How this departs from Eq. (4): the number of tokens is
``⌈H/s⌉ × ⌈W/s⌉`` for the stem's output stride ``s`` (8 or 16) instead of
``⌊(H+S−P)/S⌋ × ⌊(W+S−P)/S⌋``, and each token sees the CNN's receptive field rather than one P×P
patch. Everything after the patch tokens — part tokens, occlusion pattern embedding E_o (Eq. 3),
camera embedding, FEP over patch tokens (Eq. 6–14), L_mask on the patch grid (Eq. 19), Eq. 22
visibility — is unchanged, because it only sees a ``[B, N, D]`` token sequence on an ``Hp × Wp`` grid.

Stems (``train.model.stem``) and their cut points (``train.model.stem_stride``):

============  ======  =============================  ============  ===========
stem          stride  torchvision layers kept         channels      128×64 grid
============  ======  =============================  ============  ===========
mobilenetv2   8       ``mobilenet_v2().features[:7]``  32            16 × 8
mobilenetv2   16      ``mobilenet_v2().features[:14]`` 96            8 × 4
============  ======  =============================  ============  ===========

Example::

    >>> stem = build_stem("mobilenetv2", 16, frozen_blocks=4)
    >>> stem(torch.zeros(1, 3, 128, 64)).shape
    torch.Size([1, 96, 8, 4])
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import UserError

#: stem name → {output stride: number of ``features`` blocks kept}
STEM_CUTS: dict[str, dict[int, int]] = {"mobilenetv2": {8: 7, 16: 14}}


class StemConfigError(UserError, ValueError):
    """An unknown stem name or output stride."""


class CNNStem(nn.Module):
    """A truncated CNN feature extractor whose first ``frozen_blocks`` blocks are frozen.

    Frozen blocks keep their (ImageNet) weights and BatchNorm running statistics: they run without
    gradient and stay in eval mode even when the model trains — the usual fine-tuning practice for
    the generic low-level filters, and it removes the costliest part of the backward pass (the
    high-resolution early layers). The stem computes in ``channels_last`` memory format (measured on
    CPU: MobileNetV2's depthwise convolutions run about 1.7× faster forward + backward;
    ``benchmarks/bench_model.py``); the output is returned as is (the 1×1 projection and flatten
    that follow do not care).

    The frozen blocks run with each BatchNorm folded into the convolution before it
    (``fuse_conv_bn_eval``: ``W' = W·γ/√(σ²+ε)``, ``b' = β + (b − μ)·γ/√(σ²+ε)``), the same affine map
    in one pass instead of two over the stem's largest activations (the 64×32 maps of 96 channels at
    128×64 input); outputs equal the unfused blocks' to float rounding (relative ~1e-6, tested). The
    folded copy is a cache, not a parameter: it is rebuilt whenever a frozen weight or BN statistic
    changes (tensor versions: ``load_state_dict``, :func:`load_stem_weights`) and never saved.
    ``fuse_frozen_bn = False`` runs the blocks as they are.

    ``forward(x [B, 3, H, W]) -> [B, C, ⌈H/s⌉, ⌈W/s⌉]``.
    """

    def __init__(self, blocks: nn.Sequential, frozen_blocks: int = 0, fuse_frozen_bn: bool = True) -> None:
        super().__init__()
        if not 0 <= frozen_blocks <= len(blocks):
            raise StemConfigError(f"train.model.stem_frozen_blocks must be in 0..{len(blocks)}, got {frozen_blocks}")
        self.blocks = blocks.to(memory_format=torch.channels_last)
        self.frozen_blocks = int(frozen_blocks)
        self.fuse_frozen_bn = bool(fuse_frozen_bn)
        self._fused: tuple[tuple, nn.Module] | None = None  # (key, folded frozen blocks): a cache, no state
        for p in self.blocks[: self.frozen_blocks].parameters():
            p.requires_grad_(False)

    def __len__(self) -> int:
        return len(self.blocks)

    def train(self, mode: bool = True) -> "CNNStem":
        super().train(mode)
        self.blocks[: self.frozen_blocks].eval()  # frozen: ImageNet BN statistics, never updated
        return self

    def _frozen_forward(self) -> nn.Module:
        """The frozen blocks with every Conv2d → BatchNorm2d pair folded (cached; see the class doc)."""
        frozen = self.blocks[: self.frozen_blocks]
        tensors = list(frozen.parameters()) + list(frozen.buffers())
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        if self._fused is None or self._fused[0] != key:
            fused = copy.deepcopy(frozen).eval()
            for mod in fused.modules():
                if isinstance(mod, nn.Sequential):  # torchvision's Conv2dNormActivation, InvertedResidual.conv
                    kids = list(mod._modules.items())
                    for (name_a, a), (name_b, b) in zip(kids, kids[1:]):
                        if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                            mod._modules[name_a] = fuse_conv_bn_eval(a, b)
                            mod._modules[name_b] = nn.Identity()
            fused.requires_grad_(False)
            self._fused = (key, fused.to(memory_format=torch.channels_last))
        return self._fused[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        k = self.frozen_blocks
        if k:
            with torch.no_grad():
                frozen = self._frozen_forward() if self.fuse_frozen_bn else self.blocks[:k]
                x = frozen(x)  # [B, C_k, H/s_k, W/s_k], no graph kept
        return self.blocks[k:](x)


def build_stem(name: str, stride: int, frozen_blocks: int = 0) -> CNNStem:
    """Truncated torchvision feature extractor, randomly initialised (weights: :func:`load_stem_weights`).

    Args:
        name: ``mobilenetv2``.
        stride: output stride in pixels, 8 or 16.
        frozen_blocks: leading blocks kept frozen (see :class:`CNNStem`).

    Returns:
        :class:`CNNStem` mapping ``[B, 3, H, W]`` → ``[B, C, ⌈H/stride⌉, ⌈W/stride⌉]``.

    Raises:
        StemConfigError: unknown ``name`` or ``stride`` (lists the allowed values).
    """
    if name not in STEM_CUTS:
        raise StemConfigError(f"train.model.stem: unknown stem {name!r}; allowed: {sorted(STEM_CUTS)}")
    cuts = STEM_CUTS[name]
    if stride not in cuts:
        raise StemConfigError(f"train.model.stem_stride: {stride} is not available for {name}; "
                              f"allowed: {sorted(cuts)}")
    from torchvision.models import mobilenet_v2

    blocks = nn.Sequential(*list(mobilenet_v2(weights=None).features.children())[: cuts[stride]])
    return CNNStem(blocks, frozen_blocks)


def load_stem_weights(stem: CNNStem, path: str | Path) -> dict[str, list[str]]:
    """Load a torchvision-keyed MobileNetV2 state dict (``features.<i>.…``, as written by the
    ``pretrained`` stage) into the truncated ``stem``: layers ``i < len(stem)`` load strictly, the rest
    of the file (deeper layers) is dropped. ``*.safetensors`` files (what the stage writes) are read
    with ``safetensors``; any other suffix with ``torch.load(weights_only=True)`` (older ``.pt`` files).

    Returns:
        ``{"dropped": [...]}`` — file keys of layers beyond the cut.

    Raises:
        PretrainedWeightsError: the file is missing or unreadable (names ``dvc repro pretrained``),
            or a kept key is missing / mis-shaped (all listed).
    """
    from .oa_vit import PretrainedWeightsError

    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"stem weights not found: {path} (run `dvc repro pretrained`, or set train.model.stem_weights "
            f"to '' for a randomly initialised stem)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # re-raised with the file name and the fix
        raise PretrainedWeightsError(f"cannot read stem weights {path}: {exc} "
                                     f"(delete it and run `dvc repro pretrained`)") from exc
    kept, dropped = {}, []
    for key, value in state.items():
        head, _, rest = key.partition(".")
        idx = rest.split(".")[0]
        if head != "features" or not idx.isdigit():
            dropped.append(key)
        elif int(idx) < len(stem):
            kept[rest] = value
        else:
            dropped.append(key)
    own = stem.blocks.state_dict()
    missing = sorted(k for k in own if k not in kept)
    mis_shaped = sorted(f"{k}: file {tuple(kept[k].shape)} vs stem {tuple(own[k].shape)}"
                        for k in kept if k in own and kept[k].shape != own[k].shape)
    unexpected = sorted(k for k in kept if k not in own)
    if missing or mis_shaped or unexpected:
        raise PretrainedWeightsError(
            f"{path} does not match the stem ({len(stem)} MobileNetV2 blocks):\n  missing keys: {missing}\n"
            f"  unexpected keys: {unexpected}\n  shape mismatches: {mis_shaped}")
    stem.blocks.load_state_dict(kept, strict=True)  # copy_ keeps the channels_last layout
    return {"dropped": dropped}


def hybrid_embed(name: str, stride: int, img_size: tuple[int, int], embed_dim: int,
                 frozen_blocks: int = 0) -> nn.Module:
    """timm ``HybridEmbed``: ``stem`` then a 1×1 conv projection to ``embed_dim``, flattened.

    ``forward(x [B, 3, H, W]) -> [B, N, D]`` with ``N = Hp·Wp``; ``.grid_size = (Hp, Wp)``,
    ``.backbone`` is the stem. Raises :class:`StemConfigError` as :func:`build_stem`.
    """
    from timm.layers import HybridEmbed

    return HybridEmbed(build_stem(name, stride, frozen_blocks), img_size=img_size, patch_size=1,
                       embed_dim=embed_dim)
