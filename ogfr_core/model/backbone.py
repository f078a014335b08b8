"""The backbone builder every method shares: an :class:`~ogfr_core.model.oa_vit.OAViT` configured from
``train.model`` (conv patches of Eq. 4 or the hybrid ImageNet stem, depth, camera embedding) with its
pretrained weights loaded."""
from __future__ import annotations

from .oa_vit import OAViT


def build_encoder(cfg, img_size: tuple[int, int], num_cameras: int, num_part_tokens: int = 0,
                  use_occ_embed: bool = False, load_weights: bool = True) -> tuple[OAViT, str]:
    """The shared encoder and its initialisation warning.

    Args:
        cfg: ``train.model`` params (:class:`~ogfr_core.config.ModelConfig`): backbone, depth,
            patch embedding (``conv`` | ``hybrid`` stem), stride, γ1/γ2, drop-path, weights.
        img_size: ``(H, W)`` pixels; num_cameras: camera embeddings (TransReID's SIE).
        num_part_tokens: K + 1 learnable part tokens after [cls] (0 = ``[cls; patches]``).
        use_occ_embed: add the occlusion pattern embedding E_o of Eq. (3)/(5).
        load_weights: load ``cfg.pretrained`` (ViT) and ``cfg.stem_weights`` (hybrid stem).

    Returns:
        ``(encoder, init_warning)``; the warning is "" unless no pretrained weights were loaded.

    Raises:
        PretrainedWeightsError: a configured weights file is missing or does not match.
    """
    encoder = OAViT(cfg.backbone, img_size, cfg.patch_size, cfg.stride, cfg.depth,
                    num_part_tokens=num_part_tokens, num_cameras=num_cameras, gamma_occ=cfg.gamma_occ,
                    gamma_cam=cfg.gamma_cam, use_occ_embed=use_occ_embed, drop_path=cfg.drop_path,
                    patch_embed=cfg.patch_embed, stem=cfg.stem, stem_stride=cfg.stem_stride,
                    stem_frozen_blocks=cfg.stem_frozen_blocks)
    warning = ""
    if load_weights and cfg.pretrained:
        encoder.load_pretrained(cfg.pretrained)
    if load_weights and cfg.stem_weights:
        encoder.load_stem_weights(cfg.stem_weights)
    if load_weights and not cfg.pretrained and not cfg.stem_weights:
        warning = (f"no pretrained weights (train.model.pretrained and stem_weights are empty): the "
                   f"{cfg.backbone} backbone is randomly initialised, accuracy will be far below the "
                   f"paper's ImageNet-initialised results")
    return encoder, warning
