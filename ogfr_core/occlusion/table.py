"""The occlusion stage's table: parsing label maps → z and occlusion type per image (Eq. 1–2).

Uses :func:`ogfr_core.occlusion.coarse_counts` / :func:`occlusion_labels` / :func:`occlusion_type`
on each cached label map. Images without a person (or unreadable) have an all-background map, so
every coarse part is occluded (type 15).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import COARSE_NAMES, coarse_counts, occlusion_labels, occlusion_type, scaled_threshold, type_to_z

Z_COLUMNS = tuple(f"z_{c}" for c in COARSE_NAMES)  # z_head, z_arms, z_torso, z_legs
COUNT_COLUMNS = tuple(f"count_{c}" for c in COARSE_NAMES)
TABLE_COLUMNS = ("key", *Z_COLUMNS, "occ_type", *COUNT_COLUMNS, "status")
_ABBREV = {"head": "H", "arms": "A", "torso": "T", "legs": "L"}


def occlusion_table(parsing: pd.DataFrame, lam: float) -> pd.DataFrame:
    """One row per parsed image: coarse pixel counts (Eq. 1), z (Eq. 2) and the type id.

    Args:
        parsing: rows of :func:`ogfr_core.parsing.read_parsing` (needs ``key``, ``label_map`` PNG
            bytes, ``status``).
        lam: λ of Eq. (2), pixels at the label maps' resolution (paper: 5 at 256×128).

    Returns:
        DataFrame with columns ``key``, ``z_head``, ``z_arms``, ``z_torso``, ``z_legs`` (int64 0/1,
        1 = occluded), ``occ_type`` (int64 0..15 = 8·z_head + 4·z_arms + 2·z_torso + z_legs),
        ``count_head`` … ``count_legs`` (int64 pixels) and ``status`` (the parse status), sorted by key.
    """
    from ..parsing.cache import decode_label_map

    missing = [c for c in ("key", "label_map", "status") if c not in parsing.columns]
    if missing:
        raise ValueError(f"parsing table lacks column(s) {missing}; pass the output of read_parsing()")
    if len(parsing) == 0:
        return pd.DataFrame({c: pd.Series(dtype="str" if c in ("key", "status") else "int64") for c in TABLE_COLUMNS})
    maps = [decode_label_map(b) for b in parsing["label_map"]]
    counts = np.stack([coarse_counts(m) for m in maps])  # [N, 4]
    # λ is stated at 256×128 (the paper's input); rescale by area for maps stored at another size,
    # exactly as the training-time occlusion augmentation does (scaled_threshold).
    thresholds = np.array([scaled_threshold(lam, m.shape) for m in maps])[:, None]  # [N, 1]
    z = occlusion_labels(counts, thresholds)  # Eq. (2), [N, 4]
    out = pd.DataFrame({"key": parsing["key"].to_numpy()})
    for i, name in enumerate(COARSE_NAMES):
        out[f"z_{name}"] = z[:, i].astype(np.int64)
    out["occ_type"] = np.asarray(occlusion_type(z), dtype=np.int64).reshape(-1)
    for i, name in enumerate(COARSE_NAMES):
        out[f"count_{name}"] = counts[:, i].astype(np.int64)
    out["status"] = parsing["status"].to_numpy()
    return out.sort_values("key", kind="stable").reset_index(drop=True)[list(TABLE_COLUMNS)]


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


def occlusion_summary(table: pd.DataFrame, index: pd.DataFrame, lam: float) -> dict:
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
    return {"lam": lam, "images": int(len(table)), "splits": splits}
