"""Occlusion-Aware Vision Transformer (OA-ViT), OGFR §III-A2, Eq. (3)–(5).

One encoder, shared by the teacher (holistic) and student (occluded) branches. It reuses timm's
``PatchEmbed``, ``Block`` and final ``LayerNorm`` from ``timm.create_model(backbone)`` and adds:

* an overlapping patch embedding (Eq. 4): the timm patch projection with stride ``S < P``
  (TransReID's "smaller stride": S = 12, P = 16 at 256×128 gives 21×10 = 210 patches);
* ``K + 1`` learnable part tokens ``P_t`` (K body parts + background) between [cls] and the patches;
* occlusion pattern embeddings ``O_e ∈ R^{2×2×2×2×D}``, indexed by the occlusion label z (Eq. 3);
* camera embeddings ``C_e`` (one per training camera, TransReID's SIE);
* ``E = [x_cls; P_t; P_s] + P_E + γ1·E_o + γ2·C_e`` (Eq. 5). As TransReID adds its SIE embedding,
  ``E_o`` and ``C_e`` are added to every token. ``P_E`` covers [cls] and the patches (the
  pretrained position embedding, resized bilinearly to the patch grid as TransReID's
  ``resize_pos_embed``); the part tokens get no separate position embedding, since a learnable
  position embedding added to a learnable token is redundant (our choice; the paper is silent).

Example::

    >>> enc = OAViT("vit_tiny_patch16_224", img_size=(64, 32), stride=12, depth=2,
    ...             num_part_tokens=9, num_cameras=2)
    >>> z, camids = torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 1])
    >>> enc(torch.randn(2, 3, 64, 32), z, camids).shape      # [B, 1 + (K+1) + N, D], N = 5 x 2
    torch.Size([2, 20, 192])
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import timm
import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from torch import nn

from ..errors import UserError

log = logging.getLogger(__name__)

NUM_COARSE = 4  # C of Eq. (1)-(3): head, arms, torso, legs


def patch_grid(height: int, width: int, patch_size: int, stride: int) -> tuple[int, int]:
    """Eq. (4): ``(⌊(H + S − P)/S⌋, ⌊(W + S − P)/S⌋)`` patches along height and width.

    >>> patch_grid(256, 128, 16, 12)
    (21, 10)
    """
    return (height + stride - patch_size) // stride, (width + stride - patch_size) // stride


class PretrainedWeightsError(UserError, RuntimeError):
    """Backbone weights are missing, unreadable, could not be downloaded, or do not match the backbone."""


class OAViT(nn.Module):
    """OA-ViT encoder (Eq. 3–5) on a timm ViT.

    Args:
        backbone: timm model name, e.g. ``vit_base_patch16_224`` (paper) or ``vit_tiny_patch16_224``.
        img_size: network input ``(H, W)`` in pixels.
        patch_size: P of Eq. (4).
        stride: S of Eq. (4); ``S < P`` overlaps patches.
        depth: number of backbone blocks kept (0 = all); truncation is for CPU runs.
        num_part_tokens: K + 1 (0 for the single-branch baseline: sequence [cls; patches]).
        num_cameras: number of camera embeddings (0 = none).
        gamma_occ: γ1 of Eq. (5); ``use_occ_embed=False`` drops the E_o term (Table IV "OA-ViT" off).
        gamma_cam: γ2 of Eq. (5); 0 drops the camera embedding.
        drop_path: stochastic depth rate of the timm blocks.
        patch_embed: ``conv`` — Eq. (4), timm's patch projection with stride S; ``hybrid`` — the
            feature map of a CNN stem as the patch tokens (:mod:`ogfr_core.model.stem`; ViT's hybrid
            architecture): ``patch_size`` and ``stride`` are then ignored and the grid is
            ``⌈H/stem_stride⌉ × ⌈W/stem_stride⌉``.
        stem: CNN stem of the hybrid embedding (``mobilenetv2``).
        stem_stride: output stride of the stem in pixels (8 or 16).
        stem_frozen_blocks: leading stem blocks kept frozen (ImageNet weights and BN statistics).

    After construction ``patch_size`` and ``stride`` describe each token's cell on the image
    (``stem_stride`` for the hybrid): :meth:`OGFR.patch_foreground` pools label maps with them.

    Shapes: ``forward(x [B,3,H,W], z [B,4] long, camids [B] long) -> [B, 1 + (K+1) + N, D]``.
    """

    def __init__(
        self,
        backbone: str,
        img_size: Sequence[int],
        patch_size: int = 16,
        stride: int = 12,
        depth: int = 0,
        num_part_tokens: int = 9,
        num_cameras: int = 0,
        gamma_occ: float = 3.0,
        gamma_cam: float = 3.0,
        use_occ_embed: bool = True,
        drop_path: float = 0.1,
        patch_embed: str = "conv",
        stem: str = "mobilenetv2",
        stem_stride: int = 16,
        stem_frozen_blocks: int = 0,
    ) -> None:
        super().__init__()
        height, width = int(img_size[0]), int(img_size[1])
        if stride <= 0 or stride > patch_size:
            raise ValueError(f"stride must be in 1..patch_size ({patch_size}), got {stride}")
        # timm builds the blocks/patch embedding; we never download (pretrained=False).
        vit = timm.create_model(backbone, pretrained=False, num_classes=0, img_size=(height, width),
                                patch_size=patch_size, drop_path_rate=drop_path)
        self.backbone_name = backbone
        self.embed_dim = dim = vit.embed_dim
        self.num_heads = vit.blocks[0].attn.num_heads
        total = len(vit.blocks)
        if depth < 0 or depth > total:
            raise ValueError(f"depth must be in 0..{total} for {backbone}, got {depth}")
        self.depth = depth or total
        self.img_size = (height, width)
        self.hybrid = patch_embed == "hybrid"
        if self.hybrid:
            from .stem import hybrid_embed

            self.patch_embed = hybrid_embed(stem, stem_stride, (height, width), dim,  # stem + 1×1 proj
                                            stem_frozen_blocks)
            self.patch_size = self.stride = int(stem_stride)
            self.grid_size = tuple(int(g) for g in self.patch_embed.grid_size)
        elif patch_embed == "conv":
            self.patch_size, self.stride = patch_size, stride
            self.grid_size = patch_grid(height, width, patch_size, stride)
            self.patch_embed = vit.patch_embed
            self.patch_embed.proj.stride = (stride, stride)  # Eq. (4): overlapping patches
            self.patch_embed.grid_size = self.grid_size
            self.patch_embed.num_patches = self.grid_size[0] * self.grid_size[1]
        else:
            raise ValueError(f"patch_embed must be 'conv' or 'hybrid', got {patch_embed!r}")
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.cls_token = vit.cls_token  # [1, 1, D]
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim))  # P_E for [cls; P_s]
        trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*list(vit.blocks.children())[: self.depth])
        self.norm = vit.norm

        self.num_part_tokens = num_part_tokens
        self.part_tokens = nn.Parameter(torch.zeros(1, num_part_tokens, dim)) if num_part_tokens else None
        self.gamma_occ = float(gamma_occ)
        self.occ_embed = (nn.Parameter(torch.zeros(*([2] * NUM_COARSE), dim))  # O_e, Eq. (3)
                          if use_occ_embed and gamma_occ != 0 else None)
        self.gamma_cam = float(gamma_cam)
        self.num_cameras = num_cameras
        self.cam_embed = (nn.Parameter(torch.zeros(num_cameras, dim))
                          if num_cameras > 0 and gamma_cam != 0 else None)
        for p in (self.part_tokens, self.occ_embed, self.cam_embed):
            if p is not None:
                trunc_normal_(p, std=0.02)  # TransReID's SIE initialisation

    # names of the parameters a plain ViT checkpoint does not have
    NEW_PARAMS = ("part_tokens", "occ_embed", "cam_embed")

    def occlusion_embedding(self, z: torch.Tensor) -> torch.Tensor:
        """Eq. (3): ``E_o = O_e[z0, z1, z2, z3]``; z ``[B, 4]`` in {0,1} → ``[B, D]``.

        Raises:
            ValueError: z is not ``[B, 4]`` or has values outside {0, 1}.
        """
        if z.ndim != 2 or z.shape[1] != NUM_COARSE:
            raise ValueError(f"z must be [B, {NUM_COARSE}], got {tuple(z.shape)}")
        if z.numel() and (int(z.min()) < 0 or int(z.max()) > 1):
            raise ValueError("z values must be 0 (visible) or 1 (occluded)")
        z = z.long()
        return self.occ_embed[z[:, 0], z[:, 1], z[:, 2], z[:, 3]]  # [B, D]

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None,
                camids: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (5) then the transformer blocks and final LayerNorm → ``F [B, 1 + (K+1) + N, D]``.

        Raises:
            ValueError: a camera id outside ``0..num_cameras-1`` (the model has no embedding for it),
                or z/camids missing while the model uses them.
        """
        b = x.shape[0]
        patches = self.patch_embed(x) + self.pos_embed[:, 1:]  # [B, N, D]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)  # [B, 1, D]
        tokens = [cls]
        if self.part_tokens is not None:
            tokens.append(self.part_tokens.expand(b, -1, -1))  # [B, K+1, D]
        seq = torch.cat(tokens + [patches], dim=1)  # [B, 1 + (K+1) + N, D]
        if self.occ_embed is not None:
            if z is None:
                raise ValueError("this OA-ViT uses occlusion embeddings: pass z [B, 4]")
            seq = seq + self.gamma_occ * self.occlusion_embedding(z)[:, None]
        if self.cam_embed is not None:
            if camids is None:
                raise ValueError("this OA-ViT uses camera embeddings: pass camids [B]")
            if camids.numel() and (int(camids.min()) < 0 or int(camids.max()) >= self.num_cameras):
                raise ValueError(f"camera ids must be in 0..{self.num_cameras - 1} (training cameras), "
                                 f"got {sorted(set(camids.tolist()))}")
            seq = seq + self.gamma_cam * self.cam_embed[camids.long()][:, None]
        return self.norm(self.blocks(seq))

    # ------------------------------------------------------------------------------------------
    def _timm_weights(self, tag: str) -> dict[str, torch.Tensor]:
        """timm's pretrained state dict for ``backbone[.tag]``, downloaded by timm (needs the network)."""
        name = f"{self.backbone_name}.{tag}" if tag else self.backbone_name
        log.warning("train.model.pretrained = timm: downloading %s weights through timm "
                    "(needs the network; cached by timm / Hugging Face hub afterwards)", name)
        try:
            full = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as exc:  # no network, unknown tag, hub error: one message with the fix
            raise PretrainedWeightsError(
                f"could not get timm's pretrained weights for {name!r} ({type(exc).__name__}: {exc}). "
                f"Downloading needs the network; offline, save the state_dict of timm.create_model("
                f"{name!r}, pretrained=True) on a connected machine and set train.model.pretrained "
                f"to that local file") from exc
        return full.state_dict()

    def _read_weights_file(self, path: Path) -> dict[str, torch.Tensor]:
        """State dict of a local ``.pth``/``.pt``/``.bin``/``.safetensors``/``.npz`` file."""
        if not path.is_file():
            raise PretrainedWeightsError(
                f"pretrained weights file not found: {path} (set train.model.pretrained to a local "
                f"file, or to 'timm' to let timm download them — that needs the network)")
        try:
            if path.suffix == ".npz":
                full = timm.create_model(self.backbone_name, pretrained=False, num_classes=0)
                full.load_pretrained(str(path))  # timm's Google .npz reader
                return full.state_dict()
            from timm.models import load_state_dict

            return load_state_dict(str(path), weights_only=True)  # .pth / .safetensors
        except Exception as exc:  # re-raised with the file name and the fix
            raise PretrainedWeightsError(f"cannot read pretrained weights {path}: {exc}") from exc

    def load_pretrained(self, source: str | Path) -> dict[str, list[str]]:
        """Load ViT weights into the encoder: a local checkpoint (``.pth``/``.pt``/``.bin``/
        ``.safetensors`` timm/torch state dict, or a Google ``.npz``), or ``timm`` / ``timm:<tag>`` —
        timm's own pretrained weights for this backbone (``<tag>`` e.g. ``augreg2_in21k_ft_in1k``),
        which timm downloads from the Hugging Face hub: **that needs the network** (timm caches the
        file, so later runs read the cache). Local files never touch the network.

        The position embedding is resized bilinearly from the checkpoint's grid (square, e.g. 14×14
        for ImageNet 224) to this model's patch grid (TransReID's ``resize_pos_embed``); blocks beyond
        ``depth`` and classifier heads are dropped. Loading is strict for everything else.

        With a hybrid patch embedding the checkpoint's ``patch_embed.*`` is dropped (the stem has its
        own weights: :meth:`load_stem_weights`).

        Returns:
            ``{"dropped": [...]}`` — checkpoint keys intentionally not used (heads, truncated blocks).

        Raises:
            PretrainedWeightsError: file missing/unreadable, the timm download failed (names the fix),
                or missing/unexpected/mis-shaped keys (all listed).
        """
        text = str(source)
        if text == "timm" or text.startswith("timm:"):
            origin = text
            state = self._timm_weights(text.partition(":")[2])
        else:
            origin = str(Path(source))
            state = self._read_weights_file(Path(source))
        if "model" in state and isinstance(state["model"], dict):
            state = state["model"]

        dropped, kept = [], {}
        for key, value in state.items():
            if key.startswith(("head.", "fc_norm.", "head_drop.")):
                dropped.append(key)
            elif self.hybrid and key.startswith("patch_embed."):
                dropped.append(key)  # the hybrid's tokens come from the CNN stem (load_stem_weights)
            elif key.startswith("blocks.") and int(key.split(".")[1]) >= self.depth:
                dropped.append(key)
            else:
                kept[key] = value
        if "pos_embed" in kept:
            pe = kept["pos_embed"]  # [1, 1 + n_old, D]
            n_old = pe.shape[1] - 1
            side = int(round(n_old ** 0.5))
            if side * side != n_old:
                raise PretrainedWeightsError(
                    f"{origin}: pos_embed has {n_old} patch positions, not a square grid; cannot resize")
            kept["pos_embed"] = resample_abs_pos_embed(pe, list(self.grid_size), old_size=[side, side],
                                                       num_prefix_tokens=1, interpolation="bilinear",
                                                       antialias=False)
        own = self.state_dict()
        new = self.NEW_PARAMS + (("patch_embed",) if self.hybrid else ())
        missing = sorted(k for k in own if k not in kept and k.split(".")[0] not in new)
        unexpected = sorted(k for k in kept if k not in own)
        mis_shaped = sorted(f"{k}: checkpoint {tuple(kept[k].shape)} vs model {tuple(own[k].shape)}"
                            for k in kept if k in own and kept[k].shape != own[k].shape)
        if missing or unexpected or mis_shaped:
            raise PretrainedWeightsError(
                f"{origin} does not match backbone {self.backbone_name} (depth {self.depth}):\n"
                f"  missing keys: {missing}\n  unexpected keys: {unexpected}\n  shape mismatches: {mis_shaped}")
        self.load_state_dict(kept, strict=False)
        log.info("loaded %d tensors from %s (%d dropped: heads / blocks beyond depth)",
                 len(kept), origin, len(dropped))
        return {"dropped": dropped}

    def load_stem_weights(self, path: str | Path) -> dict[str, list[str]]:
        """Load the hybrid stem's ImageNet weights (torchvision key names, the ``pretrained`` stage's
        file) — see :func:`ogfr_core.model.stem.load_stem_weights`.

        Raises:
            PretrainedWeightsError: no hybrid stem, or the file is missing/unreadable/mismatched.
        """
        if not self.hybrid:
            raise PretrainedWeightsError(
                "train.model.stem_weights is set but train.model.patch_embed is 'conv': set patch_embed: "
                "hybrid, or stem_weights: ''")
        from .stem import load_stem_weights

        info = load_stem_weights(self.patch_embed.backbone, path)
        log.info("loaded the %d-block CNN stem from %s (%d deeper tensors dropped)",
                 len(self.patch_embed.backbone), path, len(info["dropped"]))
        return info
