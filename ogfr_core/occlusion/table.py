"""The occlusion stage's table: parsing label maps → z and occlusion type per image (Eq. 1–2, or the
``hidden_fraction`` / ``covered`` rules).

Uses :func:`ogfr_core.occlusion.coarse_counts` / :func:`hidden_fractions` / :class:`OcclusionRule` /
:func:`occlusion_type` on each cached label map (and amodal map). Images without a person (or unreadable) have an all-background map, so
every coarse part is occluded (type 15).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd

from ..errors import UserError
from . import COARSE_NAMES, OcclusionRule, coarse_counts, hidden_fractions, occlusion_type, type_to_z

if TYPE_CHECKING:
    from .learned import Segmentation

Z_COLUMNS = tuple(f"z_{c}" for c in COARSE_NAMES)  # z_head, z_arms, z_torso, z_legs
COUNT_COLUMNS = tuple(f"count_{c}" for c in COARSE_NAMES)
HIDDEN_COLUMNS = tuple(f"hidden_{c}" for c in COARSE_NAMES)  # hidden_head, ..., hidden_legs
OCCLUDER_COLUMNS = tuple(f"occluder_{c}" for c in COARSE_NAMES)  # occluder_head, ..., occluder_legs
LEARNED_OCCLUDER_COLUMNS = tuple(f"learned_occluder_{c}" for c in COARSE_NAMES)
LEARNED_SOFT_COLUMNS = tuple(f"learned_soft_occluder_{c}" for c in COARSE_NAMES)
TABLE_COLUMNS = ("key", *Z_COLUMNS, "occ_type", *COUNT_COLUMNS, *HIDDEN_COLUMNS, *OCCLUDER_COLUMNS,
                 *LEARNED_OCCLUDER_COLUMNS, *LEARNED_SOFT_COLUMNS, "status")
_SHARE_PREFIXES = ("hidden_", "occluder_", "learned_")
_ABBREV = {"head": "H", "arms": "A", "torso": "T", "legs": "L"}


class MissingOccluderMaskError(UserError, ValueError):
    """The ``covered`` rule was asked for without predicted occluder masks (stage ``occluder``)."""


def occlusion_table(parsing: pd.DataFrame, rule: OcclusionRule | float,
                    occluder_masks: Mapping[str, np.ndarray] | None = None,
                    part_maps: Mapping[str, np.ndarray] | None = None,
                    part_logits: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per parsed image: coarse pixel counts (Eq. 1), hidden and occluder shares, z under ``rule``
    and the type id.

    Args:
        parsing: rows of :func:`ogfr_core.parsing.read_parsing` (needs ``key``, ``label_map`` PNG
            bytes, ``status``; ``amodal_map`` PNG bytes for the hidden shares).
        rule: the :class:`~ogfr_core.occlusion.OcclusionRule` in force; a number means the paper's
            ``pixels`` rule with that λ (pixels at 256×128, rescaled by area to the maps' size).
        occluder_masks: image key → bool ``[lh, lw]`` predicted occluder pixels at the label maps'
            size (:func:`ogfr_core.occlusion.learned.predict_masks`); the ``occluder_*`` shares are
            NaN without them.
        part_maps: image key → uint8 ``[lh, lw]`` learned parse of the target (fine ids 0..8,
            :func:`ogfr_core.occlusion.learned.predict`): the share of each of its parts under the
            occluder (``learned_occluder_*``, 0 where it draws none of the part), which the
            ``learned_parts`` rule reads; NaN without them (or without ``occluder_masks``).
        part_logits: image key → float ``[5, h, w]`` part logits of that learned parse
            (:attr:`~ogfr_core.occlusion.learned.Segmentation.part_logits`): the share read on its
            probabilities (``learned_soft_occluder_*``, :func:`~ogfr_core.occlusion.learned.soft_part_shares`),
            which the ``learned_soft`` rule reads; NaN without them (or without ``occluder_masks``).

    Returns:
        DataFrame with columns ``key``, ``z_head``, ``z_arms``, ``z_torso``, ``z_legs`` (int64 0/1,
        1 = occluded), ``occ_type`` (int64 0..15 = 8·z_head + 4·z_arms + 2·z_torso + z_legs),
        ``count_head`` … ``count_legs`` (int64 visible pixels), ``hidden_head`` … ``hidden_legs``
        (float64 hidden shares in [0, 1]; NaN without an amodal map), ``occluder_head`` …
        ``occluder_legs`` (float64 share of each part's visible pixels under the predicted occluder, 0
        where the part has none; NaN without masks), ``learned_occluder_*`` (float64, the same on the
        learned parse; NaN without it), ``learned_soft_occluder_*`` (float64, on its probabilities; NaN
        without the logits) and ``status`` (the parse status), sorted by key.

    Raises:
        ValueError: a required column is missing.
        MissingAmodalMapError: the rule needs amodal maps and the parsing has none.
        MissingOccluderMaskError: the ``covered`` / ``learned_parts`` rule without ``occluder_masks``
            (``learned_parts``: or without ``part_maps``; ``learned_soft``: without ``part_logits``), or a
            key without a mask or learned parse.
    """
    from ..parsing.cache import MissingAmodalMapError, decode_label_map

    rule = rule if isinstance(rule, OcclusionRule) else OcclusionRule("pixels", lam=float(rule))
    missing = [c for c in ("key", "label_map", "status") if c not in parsing.columns]
    if missing:
        raise ValueError(f"parsing table lacks column(s) {missing}; pass the output of read_parsing()")
    if len(parsing) == 0:
        return pd.DataFrame({c: pd.Series(dtype="str" if c in ("key", "status") else
                                          "float64" if c.startswith(_SHARE_PREFIXES) else "int64")
                             for c in TABLE_COLUMNS})
    maps = [decode_label_map(b) for b in parsing["label_map"]]
    counts = np.stack([coarse_counts(m) for m in maps])  # [N, 4]
    amodal_bytes = parsing["amodal_map"] if "amodal_map" in parsing.columns else None
    if amodal_bytes is not None and (amodal_bytes.str.len() > 0).all():
        amodal = np.stack([coarse_counts(decode_label_map(b)) for b in amodal_bytes])  # [N, 4]
        hidden = hidden_fractions(counts, amodal)  # [N, 4]
    elif rule.needs_amodal:
        raise MissingAmodalMapError(f"the {rule.rule} occlusion rule needs amodal part maps and the parsing "
                                    "has none (parse backend without one, or a cache written before they "
                                    "existed: rerun `dvc repro parse`); "
                                    "set occlusion.rule: pixels to use Eq. (2)")
    else:
        hidden = np.full(counts.shape, np.nan)
    keys = parsing["key"].to_numpy()
    if occluder_masks is not None:
        absent = [k for k in keys if k not in occluder_masks]
        if absent:
            raise MissingOccluderMaskError(f"{len(absent)} parsed image(s) have no predicted occluder mask "
                                           f"(e.g. {str(absent[0])[:12]}…): rerun the stage with every image")
        occluder = _covered_shares(counts, maps, [occluder_masks[k] for k in keys])  # [N, 4]
    elif rule.needs_occluder:
        raise MissingOccluderMaskError(f"the {rule.rule} occlusion rule needs predicted occluder masks (stage "
                                       "`occluder`: run `dvc repro occluder`); or set occlusion.rule: pixels")
    else:
        occluder = np.full(counts.shape, np.nan)
    learned = np.full(counts.shape, np.nan)
    if part_maps is not None and occluder_masks is not None:
        absent = [k for k in keys if k not in part_maps]
        if absent:
            raise MissingOccluderMaskError(f"{len(absent)} parsed image(s) have no learned parse "
                                           f"(e.g. {str(absent[0])[:12]}…): rerun the stage with every image")
        pmaps = [np.asarray(part_maps[k]) for k in keys]
        learned = _covered_shares(np.stack([coarse_counts(m) for m in pmaps]), pmaps,
                                  [occluder_masks[k] for k in keys])  # [N, 4]
    elif rule.needs_parts and not rule.needs_logits:
        raise MissingOccluderMaskError(f"the {rule.rule} occlusion rule needs the occluder stage's learned "
                                       "parse (stage `occluder`: run `dvc repro occluder`); or set "
                                       "occlusion.rule: covered")
    soft = np.full(counts.shape, np.nan)
    if part_logits and occluder_masks is not None:
        absent = [k for k in keys if k not in part_logits]
        if absent:
            raise MissingOccluderMaskError(f"{len(absent)} parsed image(s) have no learned part logits "
                                           f"(e.g. {str(absent[0])[:12]}…): rerun the stage with every image")
        from .learned import soft_part_shares

        soft = soft_part_shares([part_logits[k] for k in keys], [occluder_masks[k] for k in keys])  # [N, 4]
    elif rule.needs_logits:
        raise MissingOccluderMaskError(f"the {rule.rule} occlusion rule needs the occluder stage's part logits "
                                       "(stage `occluder`: run `dvc repro occluder`); or set "
                                       "occlusion.rule: learned_parts")
    state = {"hidden": hidden, "occluder": occluder, "learned_occluder": learned,
             "learned_soft_occluder": soft}.get(rule.state, hidden)
    z = np.stack([rule.labels(c, h, m.shape) for c, h, m in zip(counts, state, maps)])  # [N, 4]
    out = pd.DataFrame({"key": keys})
    for i, name in enumerate(COARSE_NAMES):
        out[f"z_{name}"] = z[:, i].astype(np.int64)
    out["occ_type"] = np.asarray(occlusion_type(z), dtype=np.int64).reshape(-1)
    for i, name in enumerate(COARSE_NAMES):
        out[f"count_{name}"] = counts[:, i].astype(np.int64)
    for i, name in enumerate(COARSE_NAMES):
        out[f"hidden_{name}"] = hidden[:, i].astype(np.float64)
    for i, name in enumerate(COARSE_NAMES):
        out[f"occluder_{name}"] = occluder[:, i].astype(np.float64)
    for i, name in enumerate(COARSE_NAMES):
        out[f"learned_occluder_{name}"] = learned[:, i].astype(np.float64)
    for i, name in enumerate(COARSE_NAMES):
        out[f"learned_soft_occluder_{name}"] = soft[:, i].astype(np.float64)
    out["status"] = parsing["status"].to_numpy()
    return out.sort_values("key", kind="stable").reset_index(drop=True)[list(TABLE_COLUMNS)]


def _covered_shares(counts: np.ndarray, maps: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Share of each coarse part's pixels under the occluder mask: ``[N, 4]`` float64, 0 where the part
    has no pixels (``counts [N, 4]``: :func:`coarse_counts` of ``maps``; masks bool ``[lh, lw]``)."""
    left = np.stack([coarse_counts(np.where(o, 0, m)) for m, o in zip(maps, masks)])  # [N, 4]
    return np.where(counts > 0, 1 - left / np.maximum(counts, 1), 0.0)


def segmentation_table(parsing: pd.DataFrame, rule: OcclusionRule, seg: "Segmentation | None") -> pd.DataFrame:
    """:func:`occlusion_table` with what the occluder stage's segmenter says of the images (masks, learned
    parse, part logits; :class:`~ogfr_core.occlusion.learned.Segmentation`), or none of it (``seg`` None:
    no segmenter, the ``occluder_*`` / ``learned_*`` shares are NaN). Raises as :func:`occlusion_table`."""
    if seg is None:
        return occlusion_table(parsing, rule)
    return occlusion_table(parsing, rule, seg.masks, seg.parts, seg.part_logits)


def type_label(type_id: int) -> str:
    """Short name of an occlusion type: the occluded coarse parts, e.g. ``5 -> "A+L"``, ``0 -> "none"``."""
    z = type_to_z(type_id)
    names = [_ABBREV[c] for c, v in zip(COARSE_NAMES, z) if v]
    return "none" if not names else ("all" if len(names) == len(z) else "+".join(names))


def type_counts_by_split(table: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Images per (split, occlusion type): DataFrame ``[splits, 16]`` of int counts.

    Raises:
        ValueError: some index keys have no occlusion row (re-run the parse/occlusion stages).
    """
    merged = index[["key", "split"]].merge(table[["key", "occ_type"]], on="key", how="left")
    if merged["occ_type"].isna().any():
        n = int(merged["occ_type"].isna().sum())
        raise ValueError(f"{n} indexed image(s) have no occlusion label; re-run the parse and occlusion stages")
    counts = pd.crosstab(merged["split"], merged["occ_type"].astype(int)).reindex(columns=range(16), fill_value=0)
    order = [s for s in ("train", "query", "gallery") if s in counts.index] + \
            [s for s in counts.index if s not in ("train", "query", "gallery")]
    return counts.loc[order]


def occlusion_summary(table: pd.DataFrame, index: pd.DataFrame, rule: OcclusionRule) -> dict:
    """Metrics for ``reports/occlusion/summary.json``: per split, image count, fraction of each coarse
    part occluded, fraction holistic (type 0), and the 16 type counts."""
    counts = type_counts_by_split(table, index)
    merged = index[["key", "split"]].merge(table, on="key", how="left")
    splits = {}
    for split, group in merged.groupby("split", sort=False):
        splits[str(split)] = {
            "images": int(len(group)),
            "holistic_fraction": round(float((group["occ_type"] == 0).mean()), 4),
            "occluded_fraction": {c: round(float(group[f"z_{c}"].mean()), 4) for c in COARSE_NAMES},
            "type_counts": {f"{t:02d}": int(counts.loc[split, t]) for t in range(16)},
        }
    return {"rule": rule.rule, "lam": rule.lam, "tau": rule.tau, "images": int(len(table)), "splits": splits}
