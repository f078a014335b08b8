"""Figure: histogram of the 16 occlusion types per split (OGFR Fig. 6b analogue)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path
from .table import type_label


def plot_type_histogram(counts: pd.DataFrame, out_path: str | Path, title: str = "") -> None:
    """Grouped bars: fraction of each split's images per occlusion type (log scale), counts on top.

    Args:
        counts: ``[splits, 16]`` image counts (:func:`ogfr_core.occlusion.table.type_counts_by_split`).
        out_path: PNG path, written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = np.arange(16)
    n_splits = len(counts.index)
    width = 0.8 / max(n_splits, 1)
    fig, ax = plt.subplots(figsize=(12, 4.2))
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
    for i, split in enumerate(counts.index):
        row = counts.loc[split].to_numpy(dtype=float)  # [16]
        frac = row / max(row.sum(), 1.0)
        x = types - 0.4 + width * (i + 0.5)
        ax.bar(x, np.where(frac > 0, frac, np.nan), width, label=f"{split} (n={int(row.sum())})",
               color=colours[i % len(colours)])
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-4, top=1.5)
    ax.set_xticks(types)
    ax.set_xticklabels([f"{t}\n{type_label(t)}" for t in types], fontsize=8)
    ax.set_xlabel("occlusion type id (occluded coarse parts: H head, A arms, T torso, L legs)")
    ax.set_ylabel("fraction of the split's images (log)")
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=9, loc="upper right")
    ax.set_title(title or "Occlusion types per split (Eq. 1–2)", fontsize=10)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
