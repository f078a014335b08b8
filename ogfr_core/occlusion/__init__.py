"""Occlusion labels from parsing label maps — OGFR Eq. (1)–(2), and the ``hidden_fraction`` / ``covered`` /
``learned_parts`` rules.

A 9-class label map (0 background, 1 head, 2/3 left/right arm, 4 torso, 5/6 left/right leg,
7/8 left/right foot) is merged into C = 4 coarse parts {head, arms, torso, legs(+feet)}; the pixel
count y(c) of each coarse part (Eq. 1) gives l_c = 1 (occluded) when y(c) < λ (Eq. 2), and
z = [l_head, l_arms, l_torso, l_legs] ∈ {0,1}^4. The occlusion type id packs z as a binary number
with the head as the most significant bit: type = 8·z0 + 4·z1 + 2·z2 + z3 ∈ 0..15 (0 = holistic,
15 = every part occluded / no person found).

Five rules decide z (``occlusion.rule``, :class:`OcclusionRule`):

* ``pixels`` — the paper's Eq. (2): a part is occluded when fewer than λ of its pixels are visible.
  With a keypoint parser that draws every part at its (possibly hallucinated) keypoints, this only
  fires when a part has vanished completely.
* ``hidden_fraction`` — ours: the parser's *amodal* map A (every part drawn from the whole predicted
  skeleton, no person mask: where the part should be) against its visible map V (the label map:
  confident keypoints, gated by the person mask); the hidden share of coarse part c is
  h_c = 1 − min(1, |V_c| / |A_c|) (1 when |A_c| = 0: nothing of the part is in the crop), and
  z_c = 1 when h_c > τ. Parts overlap in A (arms over the torso), so the ratio is clipped.
* ``covered`` — ours (issue 21): a learned occluder mask (:mod:`.learned`, stage ``occluder``) is
  predicted on the image; s_c is the share of part c's visible pixels under it, and
  z_c = 1 when Eq. (2) fires on the pixels it leaves, |V_c|·(1 − s_c) < λ, or s_c > τ. Without an
  occluder (s = 0) it is exactly Eq. (2).
* ``learned_parts`` — ours (issue 21): ``covered`` with the share s̃_c read on a *learned* parse of the
  target person instead of the parser's label map of the image. The occluder stage's segmenter has a
  second head trained to reproduce the parser's label map of the crop *before* an occluder was pasted
  on it (:mod:`.learned`), so on an occluded image it draws where the target's parts are, the covered
  ones included, and not the occluding pedestrian: what the ground truth and the training
  augmentation read (the holistic parse with the occluder's pixels hidden). z_c = 1 when Eq. (2) fires
  on the parser's visible pixels that the occluder leaves, |V_c|·(1 − s̃_c) < λ, or s̃_c > τ; a part the
  learned parse does not draw has s̃_c = 0 (its absence is the parser's Eq. 2 to say, as in training).
* ``learned_soft`` — ours (issue 21): ``learned_parts`` with the share read on the learned parse's part
  *probabilities* p_c (softmax of the part head's logits) instead of its argmax,
  s̃_c = Σ_x p_c(x)·m(x) / Σ_x p_c(x) for the predicted occluder mask m (0 where Σ_x p_c(x) ≤
  :data:`~.learned.MIN_PART_MASS`): an arm the head is unsure of under the occluder still counts with
  its probability, where the argmax drops it (README "Occlusion labels"). On a one-hot parse both
  readings agree.

Each rule but ``pixels`` carries a per-part share ("state", :attr:`OcclusionRule.state`): the hidden
share h (``hidden_*`` columns of the occlusion table), the occluder share s (``occluder_*``) or the
occluder share on the learned parse (``learned_occluder_*``; on its probabilities ``learned_soft_occluder_*``).

After an obstacle covers some visible pixels (training augmentation, or an occluder of the
benchmark whose ground truth is computed), :func:`labels_after_cover` updates z with the same rule:
``pixels`` recounts the visible pixels; ``hidden_fraction`` and ``covered`` scale the part's
remaining share by the fraction of visible pixels left uncovered, h' = 1 − (1 − h)·|V'_c| / |V_c|
(for ``covered`` / ``learned_parts``: the share under the predicted occluder or the pasted obstacle). Training and test
z therefore mean the same thing.

The same functions serve the `occlusion` stage (NumPy, one map at a time) and training (torch,
batched), where the occlusion augmentation pastes an obstacle, sets the label map under it to
background and recomputes z.

Example::

    >>> import numpy as np
    >>> m = np.zeros((256, 128), np.uint8); m[10:20, 50:70] = 1; m[40:120, 40:90] = 4
    >>> occlusion_labels(coarse_counts(m), lam=5.0).tolist()
    [0, 1, 0, 1]
    >>> occlusion_type([0, 1, 0, 1])
    5
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np

from .. import COARSE_PARTS

COARSE_NAMES: tuple[str, ...] = tuple(COARSE_PARTS)
NUM_COARSE = len(COARSE_NAMES)  # C = 4
NUM_FINE_CLASSES = 9  # K + 1
# Lookup table fine id (0..8) -> coarse index (0..3), -1 for background.
FINE_TO_COARSE = np.full(NUM_FINE_CLASSES, -1, dtype=np.int64)
for _c, _ids in enumerate(COARSE_PARTS.values()):
    FINE_TO_COARSE[list(_ids)] = _c

# Reference label-map resolution at which the paper's λ = 5 is stated (training input H×W).
REFERENCE_SIZE = (256, 128)

ArrayT = TypeVar("ArrayT")


def coarse_counts(label_map: ArrayT) -> ArrayT:
    """Eq. (1): pixel count of each coarse part.

    Args:
        label_map: integer label map ``[..., H, W]`` with values in 0..8 (numpy array or torch tensor).

    Returns:
        counts ``[..., 4]`` (int64) in pixels, order (head, arms, torso, legs); same array library
        as the input.

    Raises:
        ValueError: a label outside 0..8, or fewer than 2 dimensions.
    """
    if label_map.ndim < 2:
        raise ValueError(f"label_map must be [..., H, W], got shape {tuple(label_map.shape)}")
    if _is_torch(label_map):
        import torch

        lm = label_map.long()
        if lm.numel() and (int(lm.min()) < 0 or int(lm.max()) >= NUM_FINE_CLASSES):
            raise ValueError("label_map values must be in 0..8")
        flat = lm.flatten(-2)  # [..., H*W]
        onehot = torch.nn.functional.one_hot(flat, NUM_FINE_CLASSES).sum(-2)  # [..., 9]
        lut = torch.as_tensor(FINE_TO_COARSE, device=lm.device)
        out = torch.zeros(*onehot.shape[:-1], NUM_COARSE, dtype=torch.long, device=lm.device)
        for c in range(NUM_COARSE):
            out[..., c] = onehot[..., (lut == c).nonzero().flatten()].sum(-1)
        return out
    lm = np.asarray(label_map)
    if lm.size and (lm.min() < 0 or lm.max() >= NUM_FINE_CLASSES):
        raise ValueError("label_map values must be in 0..8")
    flat = lm.reshape(*lm.shape[:-2], -1).astype(np.int64)  # [..., H*W]
    hist = np.apply_along_axis(np.bincount, -1, flat, minlength=NUM_FINE_CLASSES) if flat.ndim > 1 \
        else np.bincount(flat, minlength=NUM_FINE_CLASSES)  # [..., 9]
    return np.stack([hist[..., list(ids)].sum(-1) for ids in COARSE_PARTS.values()], -1).astype(np.int64)


def occlusion_labels(counts: ArrayT, lam: "float | ArrayT") -> ArrayT:
    """Eq. (2): ``z[..., c] = 1`` (occluded) if ``counts[..., c] < lam`` else 0.

    Args:
        counts: coarse pixel counts ``[..., 4]`` from :func:`coarse_counts`.
        lam: threshold λ in pixels at the label map's resolution (paper: 5 at 256×128; see
            :func:`scaled_threshold` for other resolutions); a scalar, or an array/tensor that
            broadcasts against ``counts`` (e.g. ``[N, 1]``, one λ per map).

    Returns:
        z ``[..., 4]`` int64 (numpy or torch, as the input).
    """
    if _is_torch(counts):
        return (counts < lam).long()
    return (np.asarray(counts) < lam).astype(np.int64)


def occlusion_type(z: Sequence[int] | ArrayT) -> int | ArrayT:
    """Pack z (``[..., 4]``, head first) into the type id 8·z0 + 4·z1 + 2·z2 + z3 ∈ 0..15.

    Returns an ``int`` for a single z, else an int64 array/tensor ``[...]``.
    """
    weights = [8, 4, 2, 1]
    if _is_torch(z):
        import torch

        return (z.long() * torch.tensor(weights, device=z.device)).sum(-1)
    arr = np.asarray(z, dtype=np.int64)
    if arr.shape[-1] != NUM_COARSE:
        raise ValueError(f"z must have {NUM_COARSE} entries in its last dim, got shape {arr.shape}")
    out = (arr * np.array(weights)).sum(-1)
    return int(out) if out.ndim == 0 else out


def type_to_z(type_id: int) -> list[int]:
    """Inverse of :func:`occlusion_type`: ``5 -> [0, 1, 0, 1]``.

    Raises:
        ValueError: ``type_id`` outside 0..15.
    """
    if not 0 <= int(type_id) < 2**NUM_COARSE:
        raise ValueError(f"occlusion type id must be in 0..15, got {type_id}")
    return [(int(type_id) >> s) & 1 for s in (3, 2, 1, 0)]


def scaled_threshold(lam: float, shape: Sequence[int], reference: Sequence[int] = REFERENCE_SIZE) -> float:
    """λ rescaled from the ``reference`` resolution (H, W) to a label map of ``shape`` (H, W), by area.

    Counts scale with area, so a map at half the height and width needs λ/4 for the same decision.
    """
    return float(lam) * (shape[-2] * shape[-1]) / (reference[0] * reference[1])


RULES = ("pixels", "hidden_fraction", "covered", "learned_parts", "learned_soft")
COVER_RULES = ("covered", "learned_parts", "learned_soft")  # read the occluder share and Eq. (2) on what it leaves
PARTS_RULES = ("learned_parts", "learned_soft")  # read the occluder stage's learned parse of the target


@dataclass(frozen=True)
class OcclusionRule:
    """How z is decided from a parse (module docstring).

    Attributes:
        rule: ``pixels`` (Eq. 2, the paper), ``hidden_fraction`` (amodal vs visible parts, ours),
            ``covered`` (Eq. 2 outside a learned occluder mask, or the part more than τ under it; ours) or
            ``learned_parts`` (``covered`` on the segmenter's learned parse of the target; ours) or
            ``learned_soft`` (``learned_parts`` on the learned parse's part probabilities; ours).
        lam: λ of Eq. (2) in pixels at 256×128 (rescaled by area to other map sizes); every rule but
            ``hidden_fraction``.
        tau: share threshold in [0, 1): z_c = 1 when the hidden / covered share of c exceeds τ;
            every rule but ``pixels``.

    Raises:
        ValueError: an unknown rule, λ < 0 or τ outside [0, 1).
    """

    rule: str = "pixels"
    lam: float = 5.0
    tau: float = 0.5

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"occlusion.rule must be one of {list(RULES)}, got {self.rule!r}")
        if self.lam < 0 or not 0 <= self.tau < 1:
            raise ValueError(f"occlusion.lam must be >= 0 and occlusion.tau in [0, 1), got {self.lam}, {self.tau}")

    @property
    def needs_amodal(self) -> bool:
        """True when the rule reads the parser's amodal part map."""
        return self.rule == "hidden_fraction"

    @property
    def needs_occluder(self) -> bool:
        """True when the rule reads a predicted occluder mask (stage ``occluder``)."""
        return self.rule in COVER_RULES

    @property
    def needs_parts(self) -> bool:
        """True when the rule reads the occluder stage's learned parse of the target."""
        return self.rule in PARTS_RULES

    @property
    def needs_logits(self) -> bool:
        """True when the rule reads the learned parse's part logits (its probabilities), not its argmax."""
        return self.rule == "learned_soft"

    @property
    def state(self) -> str | None:
        """The per-part share the rule reads (the occlusion table's ``<state>_*`` columns): ``hidden``,
        ``occluder``, ``learned_occluder``, ``learned_soft_occluder``, or None for ``pixels``."""
        return {"hidden_fraction": "hidden", "covered": "occluder", "learned_parts": "learned_occluder",
                "learned_soft": "learned_soft_occluder"}.get(self.rule)

    @property
    def state_columns(self) -> tuple[str, ...] | None:
        """The occlusion-table columns of :attr:`state`, e.g. ``("occluder_head", …, "occluder_legs")``;
        None for ``pixels``."""
        return None if self.state is None else tuple(f"{self.state}_{c}" for c in COARSE_NAMES)

    def describe(self) -> str:
        """Short text for logs and figure titles, e.g. ``hidden_fraction τ=0.5``."""
        if self.rule == "pixels":
            return f"pixels λ={self.lam:g}"
        return f"{self.rule} τ={self.tau:g}" + (f" λ={self.lam:g}" if self.needs_occluder else "")

    def labels(self, counts: ArrayT, share: ArrayT, shape: Sequence[int]) -> ArrayT:
        """z ``[..., 4]`` int64 from the visible coarse counts (Eq. 1) and the rule's per-part share.

        Args:
            counts: visible coarse pixel counts ``[..., 4]`` (:func:`coarse_counts` of the label map).
            share: ``[..., 4]`` in [0, 1], the rule's :attr:`state`: hidden shares
                (:func:`hidden_fractions`) for ``hidden_fraction``; the share of each part's visible
                pixels under the occluder for ``covered`` / ``learned_parts`` (the counts are those
                *before* it); ignored by ``pixels``.
            shape: (H, W) of the label map the counts come from (λ is rescaled to it).
        """
        if self.rule == "pixels":
            return occlusion_labels(counts, scaled_threshold(self.lam, shape))
        if self.rule == "hidden_fraction":
            return (share > self.tau).long() if _is_torch(share) else (np.asarray(share) > self.tau).astype(np.int64)
        lam = scaled_threshold(self.lam, shape)
        if _is_torch(counts):
            left = (counts.float() * (1 - share.float())).round()  # visible pixels the occluder leaves
            return ((left < lam) | (share > self.tau)).long()
        left = np.rint(np.asarray(counts, np.float64) * (1 - np.asarray(share, np.float64)))
        return ((left < lam) | (np.asarray(share) > self.tau)).astype(np.int64)


def rule_from_config(cfg) -> OcclusionRule:
    """The rule of an ``occlusion:`` params section (:class:`ogfr_core.config.OcclusionConfig`)."""
    return OcclusionRule(cfg.rule, float(cfg.lam), float(cfg.tau))


def hidden_fractions(visible_counts: ArrayT, amodal_counts: ArrayT) -> ArrayT:
    """Hidden share of each coarse part, h = 1 − min(1, |V_c| / |A_c|) (1 where |A_c| = 0).

    Args:
        visible_counts: coarse pixel counts of the visible label map ``[..., 4]``.
        amodal_counts: coarse pixel counts of the amodal part map ``[..., 4]`` (same resolution).

    Returns:
        float ``[..., 4]`` in [0, 1] (float32 tensor or float64 array, as the input).

    Example::

        >>> hidden_fractions(np.array([50, 0, 80, 10]), np.array([100, 0, 60, 40])).tolist()
        [0.5, 1.0, 0.0, 0.75]
    """
    if _is_torch(visible_counts):
        v, a = visible_counts.float(), amodal_counts.float()
        return (1 - (v / a.clamp_min(1)).clamp(0, 1)).where(a > 0, 1.0)
    v, a = np.asarray(visible_counts, np.float64), np.asarray(amodal_counts, np.float64)
    return np.where(a > 0, 1 - np.clip(v / np.maximum(a, 1), 0, 1), 1.0)


def labels_after_cover(rule: OcclusionRule, z: ArrayT, hidden: ArrayT, before: ArrayT, after: ArrayT,
                       shape: Sequence[int]) -> tuple[ArrayT, ArrayT]:
    """z and hidden shares after an obstacle covered some visible pixels, under ``rule``.

    ``pixels``: Eq. (2) on the visible counts left (``after``). ``hidden_fraction`` / ``covered``: the
    remaining share shrinks by the uncovered fraction of the visible pixels, h' = 1 − (1 − h)·after/before
    (h' = h where nothing was visible); ``covered`` then reads Eq. (2) on before·(1 − h') = (1 − h)·after
    pixels (``learned_parts`` alike). Either way a part already occluded stays occluded: z' = max(z, new).

    Args:
        rule: the rule in force.
        z: ``[..., 4]`` labels before the cover; hidden: ``[..., 4]`` the rule's shares before it
            (:attr:`OcclusionRule.state`; zeros for ``pixels``).
        before, after: visible coarse pixel counts ``[..., 4]`` before / after the cover, on the same
            label map (same crop, flip and resolution).
        shape: (H, W) of that label map (λ rescaling).

    Returns:
        ``(z', h')``: int64 ``[..., 4]`` and float ``[..., 4]``; torch in, torch out.

    Example (``covered``, λ = 5 at 256×128 so 5 px here): a torso of 100 visible pixels, 20 % under
    the predicted occluder, loses 40 more to a pasted box: h' = 1 − 0.8·60/100 = 0.52 > τ = 0.5::

        >>> z, h = labels_after_cover(OcclusionRule("covered", 5.0, 0.5), np.zeros(4, np.int64),
        ...                           np.array([0, 0, 0.2, 0]), np.array([50, 50, 100, 50]),
        ...                           np.array([50, 50, 60, 50]), (256, 128))
        >>> z.tolist(), h.round(2).tolist()
        ([0, 0, 1, 0], [0.0, 0.0, 0.52, 0.0])
    """
    torch_in = _is_torch(before)
    if torch_in:
        ratio = (after.float() / before.float().clamp_min(1)).where(before > 0, 1.0)
    else:
        b = np.asarray(before, np.float64)
        ratio = np.where(b > 0, np.asarray(after, np.float64) / np.maximum(b, 1), 1.0)
    new_hidden = 1 - (1 - hidden) * ratio
    new_z = rule.labels(before if rule.needs_occluder else after, new_hidden, shape)
    if torch_in:
        import torch

        return torch.maximum(z.long(), new_z), new_hidden
    return np.maximum(np.asarray(z, np.int64), new_z), new_hidden


def _is_torch(x: object) -> bool:
    return type(x).__module__.startswith("torch")
