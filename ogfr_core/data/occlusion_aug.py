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
stage's rule (:func:`ogfr_core.occlusion.labels_after_cover`: ``pixels`` recounts Eq. 2 with λ
rescaled by area to the label-map size; ``hidden_fraction`` / ``covered`` scale the image's hidden /
occluder shares by the share of its visible pixels the obstacle covered), so the z the student sees
in training means what the parse of an occluded query means at test time. An obstacle can only hide parts, so
``z_occ = max(z, z_recomputed)`` (a part already labelled occluded stays occluded even if crop/flip
shifted pixels).

Example::

    >>> aug = occlusion_augment(images, label_maps, z, prob=0.5, area=(0.1, 0.4), rule=OcclusionRule(),
    ...                         generator=torch.Generator().manual_seed(0))   # doctest: +SKIP
    >>> aug.images.shape, aug.label_maps.shape, aug.z.shape, aug.applied.shape

FED's Non-Pedestrian Occlusion (NPO) augmentation (Wang et al., CVPR 2022, §3.1) is
:func:`npo_augment`: the same cutting and pasting (:func:`_paste`, shared with
:func:`occlusion_augment`), with FED's *layout* — a horizontal obstacle (height ``U{H/4..H/2}``,
full width) or a vertical one (full height, width ``U{W/4..W/2}``) anchored at one of the four
corners — and :func:`npo_stripe_targets`, FED's occlusion mask (which of the N horizontal stripes
the obstacle covers by more than three quarters). Where it differs from FED: FED pastes one of 30
patches hand-cropped from training images (backgrounds and objects, no body parts), resized and
colour-jittered; we cut the obstacle at its final size from another image of the batch, at the most
background of 8 candidate positions (``source="background"``, the parsing label map says where
the background is), so it may still hold body parts of another person when no background-only
region of that shape exists, and it is not colour-jittered. FED chooses vertical vs horizontal from
the patch's aspect ratio (> 3 in the paper, > 2 in its code); we draw it with probability
``vertical_prob``. :func:`occlusion_augment` (OGFR's augmentation) is unchanged: same random draws,
same outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..occlusion import OcclusionRule, coarse_counts, labels_after_cover

NUM_CANDIDATES = 8
LOG_ASPECT = (math.log(0.3), math.log(3.3))


@dataclass
class OcclusionBatch:
    """Result of :func:`occlusion_augment`: ``images [B,3,H,W]``, ``label_maps [B,H,W]``,
    ``z [B,4]`` long, ``applied [B]`` bool, ``boxes [B,4]`` long (y, x, h, w; zeros if not applied),
    ``hidden [B,4]`` float hidden shares after the obstacle (None when none were given)."""

    images: torch.Tensor
    label_maps: torch.Tensor
    z: torch.Tensor
    applied: torch.Tensor
    boxes: torch.Tensor
    hidden: torch.Tensor | None = None


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high, (), generator=generator)) if high > 1 else 0


def occlusion_augment(images: torch.Tensor, label_maps: torch.Tensor, z: torch.Tensor, *, prob: float,
                      area: tuple[float, float], rule: OcclusionRule,
                      source: Literal["background", "fed"] = "background",
                      generator: torch.Generator | None = None,
                      hidden: torch.Tensor | None = None) -> OcclusionBatch:
    """Paste an obstacle on a random region of each image with probability ``prob``.

    Args:
        images: ``[B, 3, H, W]`` (any normalisation; obstacles are copied from the same batch).
        label_maps: ``[B, H, W]`` long parsing labels at the image resolution.
        z: ``[B, 4]`` occlusion labels of the un-augmented images.
        prob: probability of occluding an image.
        area: (min, max) obstacle area as a fraction of H×W.
        rule: the occlusion rule of the ``occlusion`` stage (λ of Eq. 2 at 256×128 is rescaled to H×W).
        source: ``background`` or ``fed`` (see module docstring).
        generator: CPU generator for all random draws (reproducible on any device).
        hidden: ``[B, 4]`` the rule's shares of the un-augmented images (the occlusion table's
            ``hidden_*`` / ``occluder_*``: :attr:`~ogfr_core.occlusion.OcclusionRule.state_columns`);
            required by the ``hidden_fraction`` and ``covered`` rules.

    Returns:
        :class:`OcclusionBatch` (new tensors; inputs untouched).

    Raises:
        ValueError: label maps not at the image resolution, a bad area range, or ``hidden`` missing
            under the ``hidden_fraction`` / ``covered`` rules.
    """
    b, _, h, w = images.shape
    _check_maps(images, label_maps)
    lo, hi = area
    if not 0 < lo <= hi < 1:
        raise ValueError(f"occlusion_area must satisfy 0 < min <= max < 1, got {area}")
    _check_source(source)
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
    return _paste(images, label_maps, z, plans, source, rule, hidden)


def _check_maps(images: torch.Tensor, label_maps: torch.Tensor) -> None:
    b, _, h, w = images.shape
    if tuple(label_maps.shape) != (b, h, w):
        raise ValueError(f"label_maps must be [B, H, W] = {(b, h, w)} (image resolution), got {tuple(label_maps.shape)}")


def _check_source(source: str) -> None:
    if source not in ("background", "fed"):
        raise ValueError(f"occlusion_source must be 'background' or 'fed', got {source!r}")


def _paste(images: torch.Tensor, label_maps: torch.Tensor, z: torch.Tensor, plans: list, source: str,
           rule: OcclusionRule, hidden: torch.Tensor | None) -> OcclusionBatch:
    """Cut and paste the planned obstacles, set the label map under them to background, recompute z.

    ``plans``: ``(i, j, oh, ow, candidates, (ty, tx))`` per occluded image ``i``: an ``oh × ow``
    obstacle cut from image ``j`` at one of ``candidates`` (the most background one for
    ``source="background"``, else the first) and pasted at ``(ty, tx)``.
    """
    b, _, h, w = images.shape
    if rule.state is not None and hidden is None:
        raise ValueError(f"the {rule.rule} occlusion rule needs the images' {rule.state} shares (`hidden`, "
                         f"the occlusion table's {rule.state}_* columns)")
    out_img, out_lab = images.clone(), label_maps.clone()
    applied = torch.zeros(b, dtype=torch.bool)
    boxes = torch.zeros(b, 4, dtype=torch.long)
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
    hid = hidden.float() if hidden is not None else torch.zeros(z.shape, device=z.device)  # pixels rule: unused
    z_new, hid_new = labels_after_cover(rule, z, hid, coarse_counts(label_maps), coarse_counts(out_lab), (h, w))
    applied_d = applied.to(z.device)[:, None]
    z_occ = torch.where(applied_d, z_new.to(z.device), z.long())  # [B, 4]
    hid_occ = torch.where(applied_d, hid_new, hid) if hidden is not None else None
    return OcclusionBatch(out_img, out_lab, z_occ, applied.to(images.device), boxes, hid_occ)


def npo_augment(images: torch.Tensor, label_maps: torch.Tensor, z: torch.Tensor, *, prob: float = 1.0,
                vertical_prob: float = 0.5, rule: OcclusionRule = OcclusionRule(),
                source: Literal["background", "fed"] = "background",
                generator: torch.Generator | None = None,
                hidden: torch.Tensor | None = None) -> OcclusionBatch:
    """FED's NPO augmentation (§3.1, "occlusion augmentation"): with probability ``prob`` paste a
    horizontal or vertical obstacle at a random corner of each image (module docstring: how it differs
    from FED's hand-cropped occlusion set).

    Layout (FED's code, ``RandomErasing_Background``): vertical with probability ``vertical_prob`` —
    ``H × U{⌊W/4⌋..⌊W/2⌋}`` pixels — else horizontal — ``U{⌊H/4⌋..⌊H/2⌋} × W``; corner uniform
    among top-left, top-right, bottom-left, bottom-right. The obstacle is cut from another image of the
    batch (``source`` as in :func:`occlusion_augment`); the label map under it becomes background and
    z is recomputed as there (with ``rule``; ``hidden`` as there).

    Args:
        images: ``[B, 3, H, W]``; label_maps: ``[B, H, W]`` long at the image resolution;
        z: ``[B, 4]`` occlusion labels of the un-augmented images.
        prob: probability of occluding an image (FED: 1, every image of the second branch).
        vertical_prob: probability that an obstacle is vertical (FED: decided by the patch's shape).
        generator: CPU generator for all random draws.

    Returns:
        :class:`OcclusionBatch`; ``boxes [B, 4]`` (y, x, h, w) give the obstacles' positions, from which
        :func:`npo_stripe_targets` derives FED's occlusion masks.

    Raises:
        ValueError: label maps not at the image resolution, probabilities outside [0, 1], bad source.
    """
    b, _, h, w = images.shape
    _check_maps(images, label_maps)
    _check_source(source)
    if not (0 <= prob <= 1 and 0 <= vertical_prob <= 1):
        raise ValueError(f"prob and vertical_prob must be in [0, 1], got {prob}, {vertical_prob}")
    plans = []
    for i in range(b):
        if _rand(generator) >= prob:
            continue
        if _rand(generator) < vertical_prob:  # vertical: full height, a quarter to half the width
            oh, ow = h, max(1, w // 4 + _randint(w // 2 - w // 4 + 1, generator))
        else:  # horizontal: a quarter to half the height, full width
            oh, ow = max(1, h // 4 + _randint(h // 2 - h // 4 + 1, generator)), w
        j = (i + 1 + _randint(b - 1, generator)) % b if b > 1 else i
        n_cand = NUM_CANDIDATES if source == "background" else 1
        cands = [(_randint(h - oh + 1, generator), _randint(w - ow + 1, generator)) for _ in range(n_cand)]
        corner = _randint(4, generator)  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
        target = (0 if corner < 2 else h - oh, 0 if corner % 2 == 0 else w - ow)
        plans.append((i, j, oh, ow, cands, target))
    return _paste(images, label_maps, z, plans, source, rule, hidden)


def npo_stripe_targets(boxes: torch.Tensor, applied: torch.Tensor, height: int, width: int,
                       num_stripes: int = 4, threshold: float = 0.75) -> torch.Tensor:
    """FED's occlusion masks (§3.1, "mask generation"): split the image into ``num_stripes`` horizontal
    stripes of equal height; a stripe is occluded (0) when the obstacle covers more than ``threshold``
    of its area, else it is a human part (1). A vertical obstacle (at most half the width) never
    covers three quarters of a stripe, so it leaves every stripe at 1, as the paper prescribes.

    FED computes the covered area from the pixel differences ``|x − x'|``; we know the pasted box
    exactly (the same, except where pasted pixels happen to equal the original ones). FED's code
    uses a different rule (a stripe with any changed pixel is 0 unless all four are touched, with a
    ratio test between the two most covered ones); we follow the paper.

    Args:
        boxes: ``[B, 4]`` long (y, x, h, w) pixels, from :class:`OcclusionBatch`.
        applied: ``[B]`` bool, whether image b has an obstacle.
        height, width: image size in pixels.

    Returns:
        ``[B, num_stripes]`` float targets in {0, 1} (stripe 0 at the top).
    """
    bounds = torch.linspace(0, height, num_stripes + 1, dtype=torch.float64)  # stripe row boundaries
    y, x, bh, bw = (boxes.to(torch.float64).cpu().unbind(1))
    top, bottom = torch.maximum(y[:, None], bounds[None, :-1]), torch.minimum((y + bh)[:, None], bounds[None, 1:])
    rows = (bottom - top).clamp_min(0)  # [B, S] rows of each stripe under the box
    cover = rows * bw[:, None] / ((bounds[1:] - bounds[:-1])[None] * width)  # fraction of the stripe's area
    occluded = (cover > threshold) & applied.cpu()[:, None]
    return (~occluded).float().to(boxes.device)
