"""The baseline of OGFR's Table IV (row 1): a single-branch ViT (TransReID without JPM) on
occlusion-augmented images, trained with identity and triplet losses.

``[cls; patches] + P_E + γ2·C_e`` (no part tokens, no occlusion embedding; the camera embedding is
TransReID's SIE) through the shared encoder (:func:`~ogfr_core.model.backbone.build_encoder`,
including the hybrid ImageNet stem), one BNNeck + classifier on the [cls] output.
``L = L_id(BNNeck(f^g)) + L_tri(f^g)`` (TransReID: triplet on the feature before the BNNeck). Inference
feature: after the BNNeck, no parts (K = 0).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losses import id_loss, triplet_loss
from .backbone import build_encoder
from .base import ReIDMethod
from .neck import make_bnneck, make_classifier
from .registry import register_method


@register_method("baseline")
class Baseline(ReIDMethod):
    """Table IV row 1 (see the module docstring).

    Args:
        cfg: ``train.model`` params; num_classes: training ids; num_cameras: training cameras;
        img_size: ``(H, W)`` pixels; load_weights: load the configured pretrained weights.

    Shapes: ``forward(batch)["student"]`` has ``feats``/``feats_bn`` ``[B, 1, D]`` and ``logits`` ``[B, 1, C]``.
    """

    def __init__(self, cfg, num_classes: int, num_cameras: int, img_size: tuple[int, int],
                 load_weights: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.encoder, self.init_warning = build_encoder(cfg, self.img_size, num_cameras, load_weights=load_weights)
        dim = self.encoder.embed_dim
        self.neck = make_bnneck(dim)
        self.classifier = make_classifier(dim, num_classes)

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, Any]:
        """Encoder on the occlusion-augmented view (``image_occ``, else ``image``) → [cls] feature."""
        images = batch.get("image_occ", batch["image"])
        f = self.encoder(images, None, batch["camid"])[:, 0]  # [B, D]
        f_bn = self.neck(f)
        return {"student": {"feats": f[:, None], "feats_bn": f_bn[:, None],
                            "logits": self.classifier(f_bn)[:, None]}}  # [B, 1, D], [B, 1, C]

    def loss(self, out: dict[str, Any], batch: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
        """``L_id + L_tri`` (TransReID's loss for a ViT without JPM)."""
        s, labels = out["student"], batch["label"]
        terms = {"id": id_loss(s["logits"][:, 0], labels, cfg.label_smoothing),
                 "triplet": triplet_loss(s["feats"][:, 0], labels, cfg.triplet_margin)}
        terms["total"] = terms["id"] + terms["triplet"]
        return terms

    def global_feature(self, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """[cls] after the BNNeck ``[B, D]`` (TransReID ``NECK_FEAT: after``); :meth:`extract` wraps it."""
        return self.neck(self.encoder(images, None, camids)[:, 0])  # [B, D]
