"""Occlusion augmentation for the student branch (OGFR §IV-B: "superimposing an obstacle patch onto a
randomly chosen region", following OPR-DAAO / DRL-Net), on batch tensors so it runs on the GPU.

For each image (with probability ``prob``) a rectangle of area fraction ``U(area)`` of the image and
aspect ratio ``exp(U(log 0.3, log 3.3))`` (random-erasing's range) is cut from *another* image of the
batch and pasted at a uniformly random position:

* ``source="background"``: among 8 random candidate positions in the source image, the one with the
  most background pixels in its parsing label map is cut — an obstacle made of scene background;
* ``source="fed"``: a random position in the source image (may contain another person, as FED's
  non-pedestrian/pedestrian occluders mixed; without FED's obstacle annotations this is our proxy).

The label map under the obstacle becomes background (0), and z is recomputed with the `occlusion`
stage's functions (``coarse_counts`` → ``occlusion_labels`` with λ rescaled by area to the label-map
size). An obstacle can only hide parts, so ``z_occ = max(z, z_recomputed)`` (a part already labelled
occluded stays occluded even if crop/flip shifted pixels).

Example::

    >>> aug = occlusion_augment(images, label_maps, z, prob=0.5, area=(0.1, 0.4), lam=5.0,
    ...                         generator=torch.Generator().manual_seed(0))   # doctest: +SKIP
    >>> aug.images.shape, aug.label_maps.shape, aug.z.shape, aug.applied.shape
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..occlusion import coarse_counts, occlusion_labels, scaled_threshold

NUM_CANDIDATES = 8
LOG_ASPECT = (math.log(0.3), math.log(3.3))


@dataclass
class OcclusionBatch:
    """Result of :func:`occlusion_augment`: ``images [B,3,H,W]``, ``label_maps [B,H,W]``,
    ``z [B,4]`` long, ``applied [B]`` bool, ``boxes [B,4]`` long (y, x, h, w; zeros if not applied)."""

    images: torch.Tensor
    label_maps: torch.Tensor
    z: torch.Tensor
    applied: torch.Tensor
    boxes: torch.Tensor


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high, (), generator=generator)) if high > 1 else 0


def occlusion_augment(images: torch.Tensor, label_maps: torch.Tensor, z: torch.Tensor, *, prob: float,
                      area: tuple[float, float], lam: float,
                      source: Literal["background", "fed"] = "background",
                      generator: torch.Generator | None = None) -> OcclusionBatch:
    """Paste an obstacle on a random region of each image with probability ``prob``.

    Args:
        images: ``[B, 3, H, W]`` (any normalisation; obstacles are copied from the same batch).
        label_maps: ``[B, H, W]`` long parsing labels at the image resolution.
        z: ``[B, 4]`` occlusion labels of the un-augmented images.
        prob: probability of occluding an image.
        area: (min, max) obstacle area as a fraction of H×W.
        lam: λ of Eq. (2) at 256×128, rescaled to H×W by area.
        source: ``background`` or ``fed`` (see module docstring).
        generator: CPU generator for all random draws (reproducible on any device).

    Returns:
        :class:`OcclusionBatch` (new tensors; inputs untouched).

    Raises:
        ValueError: label maps not at the image resolution, or a bad area range.
    """
    b, _, h, w = images.shape
    if tuple(label_maps.shape) != (b, h, w):
        raise ValueError(f"label_maps must be [B, H, W] = {(b, h, w)} (image resolution), got {tuple(label_maps.shape)}")
    lo, hi = area
    if not 0 < lo <= hi < 1:
        raise ValueError(f"occlusion_area must satisfy 0 < min <= max < 1, got {area}")
    if source not in ("background", "fed"):
        raise ValueError(f"occlusion_source must be 'background' or 'fed', got {source!r}")
    out_img, out_lab = images.clone(), label_maps.clone()
    applied = torch.zeros(b, dtype=torch.bool)
    boxes = torch.zeros(b, 4, dtype=torch.long)
    # 1) all random draws on the CPU generator (no device sync)
    plans = []  # (i, j, oh, ow, candidates [(y, x)], target (y, x))
    for i in range(b):
        if _rand(generator) >= prob:
            continue
        frac = lo + (hi - lo) * _rand(generator)
        aspect = math.exp(LOG_ASPECT[0] + (LOG_ASPECT[1] - LOG_ASPECT[0]) * _rand(generator))
        oh = max(1, min(h, int(round(math.sqrt(frac * h * w * aspect)))))
        ow = max(1, min(w, int(round(math.sqrt(frac * h * w / aspect)))))
        j = (i + 1 + _randint(b - 1, generator)) % b if b > 1 else i
        n_cand = NUM_CANDIDATES if source == "background" else 1
        cands = [(_randint(h - oh + 1, generator), _randint(w - ow + 1, generator)) for _ in range(n_cand)]
        target = (_randint(h - oh + 1, generator), _randint(w - ow + 1, generator))
        plans.append((i, j, oh, ow, cands, target))
    # 2) background source: score every candidate by its background pixel count, in one gather
    choice = [0] * len(plans)
    if source == "background" and plans:
        bg = (label_maps == 0).float()
        integral = torch.nn.functional.pad(bg.cumsum(1).cumsum(2), (1, 0, 1, 0))  # [B, H+1, W+1]
        rows = [(j, y, x, oh, ow) for (_, j, oh, ow, cands, _) in plans for (y, x) in cands]
        j_, y_, x_, oh_, ow_ = (torch.tensor(c, device=images.device) for c in zip(*rows))
        score = (integral[j_, y_ + oh_, x_ + ow_] - integral[j_, y_, x_ + ow_]
                 - integral[j_, y_ + oh_, x_] + integral[j_, y_, x_])  # [n_plans * 8]
        choice = score.view(len(plans), NUM_CANDIDATES).argmax(1).tolist()  # first max wins
    # 3) paste (slicing with Python ints: no sync)
    for (i, j, oh, ow, cands, (ty, tx)), c in zip(plans, choice):
        sy, sx = cands[c]
        out_img[i, :, ty:ty + oh, tx:tx + ow] = images[j, :, sy:sy + oh, sx:sx + ow]
        out_lab[i, ty:ty + oh, tx:tx + ow] = 0
        applied[i] = True
        boxes[i] = torch.tensor([ty, tx, oh, ow])
    z_new = occlusion_labels(coarse_counts(out_lab), scaled_threshold(lam, (h, w)))  # [B, 4]
    z_occ = torch.maximum(z.long(), z_new.to(z.device))
    z_occ = torch.where(applied.to(z.device)[:, None], z_occ, z.long())
    return OcclusionBatch(out_img, out_lab, z_occ, applied.to(images.device), boxes)
