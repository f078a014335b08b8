"""A learned occluder mask for the occlusion labels (issue 21; ours, not the paper's Eq. 1–2).

The parser (BlazePose here) draws every part at its keypoints, so a part that an occluder covers
rarely loses its pixels and Eq. (2) rarely fires (README "Occlusion labels"). The training
augmentation does not have that problem: it knows the pasted box and sets the label map under it to
background before recounting (:func:`ogfr_core.occlusion.labels_after_cover`). This module estimates
that box from the image alone, so test-time z follows the same update:

1. :class:`OccluderSegmenter` — ImageNet MobileNetV2 blocks 0–13 (the hybrid stem's weights,
   fine-tuned or frozen; BatchNorm statistics frozen) tapped at strides 4, 8 and 16 (24 / 32 / 96 channels), 1×1 lateral convs to
   ``width`` channels summed at stride 4 (an FPN-style top-down sum), a 3×3 conv + BN + ReLU and a 1×1
   conv: one occluder logit per 4×4 pixels of the ``INPUT_HW`` = 128×64 input (``[B, 1, 32, 16]``);
   beside it a second head of the same form gives 5 coarse-part logits (background, head, arms, torso,
   legs) per cell: the learned parse of the *target* person (``[B, 5, 32, 16]``).
2. :func:`synthesize` — its training data: a training image with an occluder of the ``occlude:``
   benchmark's kind pasted by the benchmark's own functions
   (:mod:`ogfr_core.data.occluded_benchmark`: person cut-outs and background windows from an edge),
   or no occluder (share ``none_prob``); the target is the pixels the paste changed (as the ground
   truth of :mod:`.truth`), area-averaged to the output grid; the part head's target is the parser's
   label map of the crop *before* the paste (:func:`part_target`): on an occluded image it learns where
   the target's parts are, the covered ones included, and that an occluding pedestrian is not the
   target — what the ground truth reads and the parse of the occluded image gets wrong (README "Where
   the remaining z error comes from").
3. :func:`predict` / :func:`occluder_masker` — the predicted occluder (probability > ``threshold``,
   upsampled to the label maps) and the learned parse (argmax, as fine ids) of every image, which the
   occlusion table turns into each part's covered share on the parser's label map (``occluder_*``) and
   on the learned parse (``learned_occluder_*``); beside them the part head's logits
   (:attr:`Segmentation.part_logits`), whose probabilities :func:`soft_part_shares` reads
   (``learned_soft_occluder_*``). :class:`~ogfr_core.occlusion.OcclusionRule` ``covered`` /
   ``learned_parts`` / ``learned_soft`` turn them into z: Eq. (2) on the pixels the occluder leaves, or
   more than τ of the part covered — what the parse would say if it saw the occluder as the
   augmentation does.

Caveat (README): the segmenter learns the occluders this repository synthesises (from training
identities only, never a test image), so its accuracy on our benchmark is an in-distribution number;
real occluders (Occluded-Duke) would need their own training data.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from ..errors import UserError


log = logging.getLogger(__name__)

INPUT_HW = (128, 64)  # segmenter input H × W (the ReID model's input size)
OUT_STRIDE = 4  # logits per 4 × 4 input pixels: [B, 1, 32, 16]
TAPS = (3, 6, 13)  # MobileNetV2 blocks whose outputs are tapped: stride 4 (24 ch), 8 (32 ch), 16 (96 ch)
TAP_CHANNELS = (24, 32, 96)
NUM_PART_CLASSES = 5  # background + the 4 coarse parts (head, arms, torso, legs)
PART_FINE_IDS = np.array([0, 1, 2, 4, 5], np.uint8)  # coarse class → the fine id it is drawn as (Eq. 1 counts it)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_PART_MASS = 1e-12  # soft_part_shares: a part with less probability mass (in pixels) is not drawn (share 0)
WEIGHTS = Path("models/occluder/segmenter.safetensors")  # stage `occluder`'s output (repository-relative)


class OccluderSegmenter(nn.Module):
    """Per-pixel occluder logits from an RGB crop (module docstring, step 1).

    Args:
        stem_weights: MobileNetV2 weights file (stage ``pretrained``; torchvision key names), or ""
            for a random backbone (tests).
        width: channels of the lateral convs and the head.
        train_backbone: fine-tune the backbone's weights too (its BatchNorm statistics stay frozen).
        seed: initialise the lateral and head layers from this torch seed (the global RNG is left as
            it was); None draws them from the global RNG, whose state at that point is not reproducible
            from one process to the next.

    Shapes: ``forward(x [B, 3, 128, 64] normalised)`` → occluder logits ``[B, 1, 32, 16]``;
    :meth:`forward_parts` → ``(occluder logits [B, 1, 32, 16], part logits [B, 5, 32, 16])``.

    Raises:
        PretrainedWeightsError: ``stem_weights`` missing or not MobileNetV2 (as the ReID stem).
    """

    def __init__(self, stem_weights: str | Path = "", width: int = 32, train_backbone: bool = True,
                 seed: int | None = None) -> None:
        super().__init__()
        from ..model.stem import build_stem, load_stem_weights

        stem = build_stem("mobilenetv2", 16)
        if stem_weights:
            load_stem_weights(stem, stem_weights)
        self.backbone = stem.blocks  # features[0..13]
        self.train_backbone = bool(train_backbone)
        for p in self.backbone.parameters():
            p.requires_grad_(self.train_backbone)
        with torch.random.fork_rng(enabled=seed is not None):  # the new layers' init, from `seed` alone
            if seed is not None:
                torch.manual_seed(seed)
            self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in TAP_CHANNELS)
            self.head = _head(width, 1)
            self.parts = _head(width, NUM_PART_CLASSES)

    def train(self, mode: bool = True) -> "OccluderSegmenter":
        super().train(mode)
        self.backbone.eval()  # frozen ImageNet statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._fpn(x))  # [B, 1, H/4, W/4]

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both heads on one backbone pass: ``([B, 1, H/4, W/4], [B, 5, H/4, W/4])`` logits."""
        y = self._fpn(x)
        return self.head(y), self.parts(y)

    def _fpn(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_backbone):
            for i, block in enumerate(self.backbone):
                x = block(x)
                if i in TAPS:
                    feats.append(x)
        size = feats[0].shape[-2:]  # stride 4
        y = sum(nn.functional.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
                if f.shape[-2:] != size else lat(f) for lat, f in zip(self.lateral, feats))
        return y  # [B, width, H/4, W/4]


def _head(width: int, out: int) -> nn.Sequential:
    """3×3 conv + BN + ReLU + 1×1 conv to ``out`` logits."""
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True), nn.Conv2d(width, out, 1))


def to_input(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` crop → normalised float32 ``[3, 128, 64]`` (bilinear resize, ImageNet mean/std)."""
    img = np.asarray(Image.fromarray(image).resize((INPUT_HW[1], INPUT_HW[0]), Image.BILINEAR), np.float32) / 255
    img = (img - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(img.transpose(2, 0, 1).copy())


def to_target(changed: np.ndarray) -> torch.Tensor:
    """bool ``[H, W]`` changed pixels → float32 ``[1, 32, 16]``: the covered share of each output cell
    (PIL's box filter: the area average of the mask over the cell's footprint in the crop)."""
    hw = (INPUT_HW[0] // OUT_STRIDE, INPUT_HW[1] // OUT_STRIDE)
    m = Image.fromarray(changed.astype(np.float32), mode="F").resize((hw[1], hw[0]), Image.BOX)
    return torch.from_numpy(np.asarray(m, np.float32).clip(0, 1).copy())[None]


def part_target(label_map: np.ndarray) -> torch.Tensor:
    """uint8 ``[lh, lw]`` label map (fine ids 0..8) → float32 ``[5, 32, 16]``: the share of each coarse
    class (background, head, arms, torso, legs) in every output cell (area average of the one-hot map)."""
    from . import FINE_TO_COARSE

    coarse = torch.from_numpy(FINE_TO_COARSE[np.asarray(label_map, np.int64)] + 1)  # [lh, lw] in 0..4
    onehot = nn.functional.one_hot(coarse, NUM_PART_CLASSES).permute(2, 0, 1).float()[None]  # [1, 5, lh, lw]
    hw = (INPUT_HW[0] // OUT_STRIDE, INPUT_HW[1] // OUT_STRIDE)
    return nn.functional.adaptive_avg_pool2d(onehot, hw)[0]


@dataclass(frozen=True)
class SynthSpec:
    """How :func:`synthesize` draws an example: the ``occlude:`` benchmark's ``kind`` / ``area`` /
    ``edges``, and ``none_prob``, the share of examples left holistic (target all zero)."""

    kind: str = "mixed"
    area: tuple[float, float] = (0.2, 0.5)
    edges: tuple[str, ...] = ("bottom", "left", "right")
    none_prob: float = 0.2


def synthesize(rng: np.random.Generator, image: np.ndarray, source: np.ndarray, source_map: np.ndarray,
               spec: SynthSpec) -> tuple[np.ndarray, np.ndarray]:
    """One training example: ``image`` (uint8 ``[H, W, 3]``) occluded like a benchmark query by
    ``source`` (another training identity's crop) and its parsing ``source_map``, or left as is.

    Returns:
        ``(occluded [H, W, 3] uint8, changed [H, W] bool)`` — changed = the pixels that differ from
        ``image`` (all False for a holistic example).

    Raises:
        OccluderSourceError: a person occluder from a source without body pixels.
    """
    from ..data.occluded_benchmark import background_window, occlude, person_cutout, place_box

    if rng.random() < spec.none_prob:
        return image, np.zeros(image.shape[:2], bool)
    kind = spec.kind if spec.kind != "mixed" else ("person" if rng.random() < 0.5 else "object")
    edge = spec.edges[int(rng.integers(len(spec.edges)))]
    area = float(rng.uniform(*spec.area))
    h, w = image.shape[:2]
    if kind == "person":
        rgb, mask = person_cutout(source, source_map)
        box = place_box(rng, h, w, area, edge, aspect=rgb.shape[1] / rgb.shape[0])
    else:
        box = place_box(rng, h, w, area, edge)
        rgb, mask = background_window(rng, source, source_map, box.y1 - box.y0, box.x1 - box.x0), None
    occluded, _ = occlude(image, rgb, mask, box)
    return occluded, (occluded != image).any(-1)


@dataclass
class FitResult:
    """What :func:`fit` reports: the loss of each logged window (mean BCE; ``part_losses``: mean part
    cross-entropy), steps, examples seen and the held-out pixel IoU / accuracy at ``threshold`` and the
    learned parse's pixel accuracy (on examples from held-out identities)."""

    losses: list[float]
    steps: int
    examples: int
    holdout: dict
    part_losses: list[float] = field(default_factory=list)


def fit(model: OccluderSegmenter, images: Sequence[np.ndarray], maps: Sequence[np.ndarray],
        pids: np.ndarray, spec: SynthSpec, *, steps: int, batch_size: int, lr: float, seed: int,
        holdout: tuple[Sequence[np.ndarray], Sequence[np.ndarray], np.ndarray] | None = None,
        threshold: float = 0.5, log_every: int = 100, part_weight: float = 1.0) -> FitResult:
    """Train ``model`` on :func:`synthesize` examples (Adam): BCE with the covered share as a soft target,
    plus ``part_weight`` × the soft cross-entropy of the part head against the crop's own label map
    before the paste (:func:`part_target`). An example's occluder comes from an image of another identity.

    Args:
        images, maps, pids: training crops (uint8 ``[H, W, 3]``), their parsing label maps and pids.
        spec: what to paste; steps, batch_size, lr: the schedule (constant lr); seed: NumPy and torch.
        holdout: (images, maps, pids) of identities the head never trains on: scored after training on
            ``4 × batch_size`` fixed examples (pixel IoU and accuracy of ``prob > threshold``; the part
            head's pixel accuracy against the target's majority class, ``part_accuracy``).
        part_weight: weight of the part loss (0: the part head stays at its initialisation).

    Raises:
        ValueError: fewer than 2 identities.
    """
    if len(np.unique(pids)) < 2:
        raise ValueError("occluder segmenter: needs images of at least 2 identities")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    losses, part_losses, window = [], [], []
    for step in range(steps):
        x, t, parts = _batch(rng, images, maps, pids, spec, batch_size)
        occ_logits, part_logits = model.forward_parts(x)
        bce = nn.functional.binary_cross_entropy_with_logits(occ_logits, t)
        part_ce = -(parts * part_logits.log_softmax(1)).sum(1).mean()
        loss = bce + part_weight * part_ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append((bce.item(), part_ce.item()))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            losses.append(round(float(np.mean([w[0] for w in window])), 5))
            part_losses.append(round(float(np.mean([w[1] for w in window])), 5))
            log.info("occluder segmenter: step %d/%d, BCE %.4f, part CE %.4f", step + 1, steps, losses[-1],
                     part_losses[-1])
            window = []
    scores = {}
    if holdout is not None:
        x, t, parts = _batch(np.random.default_rng(seed + 1), *holdout, spec, 4 * batch_size)
        model.eval()
        with torch.no_grad():
            occ_logits, part_logits = model.forward_parts(x)
        p = torch.sigmoid(occ_logits) > threshold
        truth = t > 0.5
        inter, union = float((p & truth).sum()), float((p | truth).sum())
        scores = {"examples": int(len(x)), "pixel_iou": round(inter / max(union, 1.0), 4),
                  "pixel_accuracy": round(float((p == truth).float().mean()), 4), "threshold": threshold,
                  "part_accuracy": round(float((part_logits.argmax(1) == parts.argmax(1)).float().mean()), 4)}
    return FitResult(losses, steps, steps * batch_size, scores, part_losses)


def _batch(rng: np.random.Generator, images: Sequence[np.ndarray], maps: Sequence[np.ndarray], pids: np.ndarray,
           spec: SynthSpec, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` examples: inputs ``[n, 3, 128, 64]``, occluder targets ``[n, 1, 32, 16]`` and part targets
    ``[n, 5, 32, 16]`` (the label map of the image before the paste)."""
    xs, ts, ps = [], [], []
    for _ in range(n):
        i = int(rng.integers(len(images)))
        j = int(rng.integers(len(images)))
        while pids[j] == pids[i]:
            j = int(rng.integers(len(images)))
        occluded, changed = synthesize(rng, images[i], images[j], maps[j], spec)
        xs.append(to_input(occluded))
        ts.append(to_target(changed))
        ps.append(part_target(maps[i]))
    return torch.stack(xs), torch.stack(ts), torch.stack(ps)


@dataclass(frozen=True)
class Segmentation:
    """What the segmenter says of a set of images, at the label maps' resolution: ``masks`` ``{key: bool
    [lh, lw]}`` (occluder pixels) and ``parts`` ``{key: uint8 [lh, lw]}`` (the learned parse of the target,
    coarse classes drawn as fine ids 0 / 1 / 2 / 4 / 5: background, head, arms, torso, legs); and at the
    segmenter's own grid, ``part_logits`` ``{key: float32 [5, 32, 16]}`` (the part head's logits, which
    :func:`soft_part_shares` reads for the ``learned_soft`` rule; empty when not kept)."""

    masks: dict[str, np.ndarray]
    parts: dict[str, np.ndarray]
    part_logits: dict[str, np.ndarray] = field(default_factory=dict)


@torch.no_grad()
def predict(model: OccluderSegmenter, load: Callable[[str], np.ndarray], keys: Sequence[str],
            label_hw: tuple[int, int], threshold: float = 0.5, batch_size: int = 64) -> Segmentation:
    """Predicted occluder pixels and learned parse of each image at the label maps' resolution.

    Args:
        load: key → uint8 ``[H, W, 3]`` crop.
        keys: images to segment.
        label_hw: (lh, lw) of the parse label maps.
        threshold: a pixel is an occluder where the bilinearly upsampled probability exceeds it.

    Returns:
        :class:`Segmentation` (the part map: argmax of the bilinearly upsampled part logits; the logits
        themselves at the segmenter's grid, 10 KB an image).
    """
    model.eval()
    masks: dict[str, np.ndarray] = {}
    parts: dict[str, np.ndarray] = {}
    logits: dict[str, np.ndarray] = {}
    keys = list(keys)
    for start in range(0, len(keys), batch_size):
        chunk = keys[start:start + batch_size]
        occ, part = model.forward_parts(torch.stack([to_input(load(k)) for k in chunk]))
        up = dict(size=tuple(label_hw), mode="bilinear", align_corners=False)
        prob = torch.sigmoid(nn.functional.interpolate(occ, **up))[:, 0]  # [b, lh, lw]
        label = nn.functional.interpolate(part, **up).argmax(1)  # [b, lh, lw] in 0..4
        for k, p, m, z in zip(chunk, (prob > threshold).numpy(), label.numpy(), part.numpy()):
            masks[k], parts[k], logits[k] = p, PART_FINE_IDS[m], z
    return Segmentation(masks, parts, logits)


def one_hot_logits(parse: np.ndarray, margin: float = 60.0) -> np.ndarray:
    """A parse as the part head's output: uint8 ``[lh, lw]`` label map (fine ids 0..8) → float32
    ``[5, lh, lw]`` logits, 0 for the pixel's coarse class and −``margin`` for the others, so that
    :func:`soft_part_shares` on them reads the parse's own (argmax) shares. For parses that stand in for
    the learned one (tests; a parser's map)."""
    from . import FINE_TO_COARSE

    coarse = FINE_TO_COARSE[np.asarray(parse, np.int64)] + 1  # [lh, lw] in 0..4
    return np.where(np.arange(NUM_PART_CLASSES)[:, None, None] == coarse[None], 0.0, -margin).astype(np.float32)


@torch.no_grad()
def soft_part_shares(logits: Sequence[np.ndarray], masks: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """The share of each coarse part under the occluder, read on the part head's probabilities (rule
    ``learned_soft``, :mod:`ogfr_core.occlusion`): s̃_c = Σ_x p_c(x)·m(x) / Σ_x p_c(x), with p the softmax
    of the logits bilinearly upsampled to the masks' size (as :func:`predict` upsamples them before its
    argmax), 0 where Σ_x p_c(x) ≤ :data:`MIN_PART_MASS` (the head draws none of the part, as an argmax parse
    without it). With one-hot probabilities it is the argmax parse's share.

    Args:
        logits: per image float ``[5, h, w]`` part logits (background, head, arms, torso, legs;
            :attr:`Segmentation.part_logits`).
        masks: per image bool ``[lh, lw]`` occluder pixels (the same images, in order).

    Returns:
        float64 ``[N, 4]`` in [0, 1], order (head, arms, torso, legs).

    Raises:
        ValueError: ``logits`` and ``masks`` hold different numbers of images.

    Example (a 2×1 map: an arm sure in the top cell, 50 % likely in the bottom one, which the occluder
    covers: the argmax would draw no arm there and read share 0; here 0.5 / 1.5)::

        >>> lg = np.full((5, 2, 1), -30.0, np.float32)  # (background, head, arms, torso, legs) × 2 cells
        >>> lg[2, 0] = 0.0  # top cell: arms only
        >>> lg[[0, 2], 1] = 0.0  # bottom cell: arms or background, 50 / 50
        >>> round(float(soft_part_shares([lg], [np.array([[False], [True]])])[0, 1]), 3)
        0.333
    """
    if len(logits) != len(masks):
        raise ValueError(f"soft_part_shares: {len(logits)} logit maps but {len(masks)} masks")
    out = np.zeros((len(masks), NUM_PART_CLASSES - 1))
    for start in range(0, len(masks), batch_size):
        lg = torch.as_tensor(np.stack(logits[start:start + batch_size]), dtype=torch.float32)  # [b, 5, h, w]
        m = torch.as_tensor(np.stack(masks[start:start + batch_size]), dtype=torch.float32)  # [b, lh, lw]
        p = nn.functional.interpolate(lg, size=tuple(m.shape[-2:]), mode="bilinear",
                                      align_corners=False).softmax(1)[:, 1:]  # [b, 4, lh, lw]
        total = p.sum((2, 3))  # [b, 4]
        under = (p * m[:, None]).sum((2, 3))
        out[start:start + len(m)] = torch.where(total > MIN_PART_MASS, under / total.clamp_min(MIN_PART_MASS),
                                                0.0).double().numpy()
    return out


def predict_masks(model: OccluderSegmenter, load: Callable[[str], np.ndarray], keys: Sequence[str],
                  label_hw: tuple[int, int], threshold: float = 0.5, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The occluder masks of :func:`predict`: ``{key: bool [lh, lw]}``."""
    return predict(model, load, keys, label_hw, threshold, batch_size).masks


class OccluderWeightsError(UserError, FileNotFoundError):
    """The occluder segmenter's weights are missing or unreadable: the message names the file and the
    stage to rerun (``dvc repro occluder``)."""


def save_segmenter(model: OccluderSegmenter, path: str | Path) -> None:
    """Write the segmenter's whole state (backbone included) as safetensors, atomically."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))


def load_segmenter(path: str | Path) -> OccluderSegmenter:
    """The segmenter written by :func:`save_segmenter` (stage ``occluder``), in eval mode.

    Raises:
        OccluderWeightsError: the file is missing, or its tensors do not fit :class:`OccluderSegmenter`.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise OccluderWeightsError(f"{path}: no occluder segmenter weights; run `dvc repro occluder`")
    model = OccluderSegmenter("")
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, ValueError, OSError) as err:
        raise OccluderWeightsError(f"{path}: not an occluder segmenter ({str(err).splitlines()[0]}); "
                                   f"rerun `dvc repro occluder`") from err
    return model.eval()


def segment_index(model: OccluderSegmenter, index: pd.DataFrame, root: Path, label_hw: tuple[int, int],
                  threshold: float) -> Segmentation:
    """:func:`predict` for every row of an index (``key``, ``path`` relative to ``root``)."""
    from ..data.images import load_rgb

    paths = dict(zip(index["key"], index["path"]))
    return predict(model, lambda k: np.asarray(load_rgb(Path(root) / paths[k])), list(paths), label_hw, threshold)


def occluder_masker(params_path: str | Path, rule, label_hw: tuple[int, int]
                    ) -> Callable[[pd.DataFrame, Path], Segmentation] | None:
    """What the ``occlusion`` / ``occlude`` stages segment images with: the ``occluder`` stage's model
    (:data:`WEIGHTS`) at ``occluder.threshold``, as ``masks(index, root) ->`` :class:`Segmentation`
    (:func:`segment_index`). None when ``rule`` does not read the mask and the weights are absent (a
    stage run outside the pipeline): the tables' ``occluder_*`` / ``learned_*`` shares are then NaN.

    Raises:
        OccluderWeightsError: the ``covered`` / ``learned_parts`` rule without the weights (names
            ``dvc repro occluder``).
        ConfigError: params without an ``occluder:`` section.
    """
    from ..config import OccluderConfig, load_section

    if not rule.needs_occluder and not WEIGHTS.is_file():
        return None
    threshold = load_section(params_path, "occluder", OccluderConfig).threshold
    model = load_segmenter(WEIGHTS)
    return lambda index, root: segment_index(model, index, root, label_hw, threshold)
