"""Report figures (matplotlib, Agg, PNG), each drawn from one pipeline output.

Every function writes one PNG atomically and returns its path; inputs are already-parsed data
(DataFrames, dicts), the reading lives in :mod:`.sources`, the "what is missing" logic in :mod:`.sections`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..io import atomic_path

GREEN = (0.13, 0.65, 0.2)
RED = (0.85, 0.1, 0.1)
Z_NAMES = ("head", "arms", "torso", "legs")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 110) -> Path:
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def training_curves(series: Mapping[str, "object"], path: Path) -> Path:
    """One panel per dvclive metric (every loss term, reward, retained patches, lr, ...), against
    the epoch: the training loop logs per-epoch means and advances dvclive's step once per epoch.

    Args:
        series: metric name → DataFrame with columns ``step`` (0-based epoch) and ``value``.
    """
    plt = _plt()
    names = sorted(series)
    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        df = series[name]
        epoch = df["step"] + 1
        ax.plot(epoch, df["value"], lw=1.2, color="tab:blue")
        if len(df) > 20:  # smoothed trend over the (noisy) per-epoch values of long runs
            w = max(2, len(df) // 20)
            ax.plot(epoch, df["value"].rolling(w, min_periods=1).mean(), lw=1.6, color="tab:orange")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle("Training curves (dvclive)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def cmc_curve(table, path: Path) -> Path:
    """CMC curves: ``table`` is a DataFrame with ``rank`` and one column per (dataset/)distance."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for col in table.columns:
        if col == "rank":
            continue
        ax.plot(table["rank"], 100 * table[col], marker="o", ms=2.5, lw=1.4,
                label=f"{col} (rank-1 {100 * table[col].iloc[0]:.1f}%)")
    ax.set_xlabel("rank")
    ax.set_ylabel("CMC (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(1, table["rank"].max())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Cumulative matching characteristic")
    return _save(fig, path)


def occlusion_histogram(counts: Mapping[str, np.ndarray], path: Path) -> Path:
    """Fig. 6(b)-style histogram of occlusion types 0..15 per split (log-scaled counts).

    Args:
        counts: split name → ``[16]`` image counts per type id (8·head + 4·arms + 2·torso + legs).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.5, 4.0))
    splits = list(counts)
    width = 0.8 / max(1, len(splits))
    x = np.arange(16)
    for i, split in enumerate(splits):
        c = np.asarray(counts[split])
        total = max(1, int(c.sum()))
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, c, width, label=f"{split} (n={total})")
    labels = [f"{t}\n{t >> 3 & 1}{t >> 2 & 1}{t >> 1 & 1}{t & 1}" for t in range(16)]
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.get_xticklabels()[0].set_fontweight("bold")
    peak = max((int(np.max(c)) for c in counts.values()), default=0)
    if peak > 200:  # heavy-tailed on real sets: holistic dominates
        ax.set_yscale("log")
        ax.set_ylabel("images (log)")
    else:
        ax.set_ylabel("images")
    ax.set_xlabel("occlusion type id, and z = (head, arms, torso, legs), 1 = occluded; 0 = holistic")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Occlusion types from the parsing (Eq. 1-2)")
    return _save(fig, path)


def _load_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None:
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(im)


def erasing_masks(items: Sequence[Mapping], root: Path, path: Path) -> Path:
    """Fig. 7-style: each holistic image, then its FEP retain probability overlaid (red = erased).

    Args:
        items: ``{"path": str relative to root, "retain": [Hp][Wp] floats in (0, 1)}``.
    """
    from PIL import Image

    plt = _plt()
    n = len(items)
    fig, axes = plt.subplots(2, n, figsize=(1.35 * n + 0.8, 5.2), squeeze=False)
    im_map = None
    for j, it in enumerate(items):
        img = _load_image(Path(root) / it["path"])  # [H, W, 3]
        retain = np.asarray(it["retain"], np.float32)  # [Hp, Wp]
        up = np.asarray(Image.fromarray(retain).resize((img.shape[1], img.shape[0]), Image.NEAREST))
        axes[0, j].imshow(img)
        axes[1, j].imshow(img)
        im_map = axes[1, j].imshow(1.0 - up, cmap="Reds", vmin=0, vmax=1, alpha=0.55)
        axes[1, j].set_title(f"mean retain {float(retain.mean()):.2f}", fontsize=7)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("holistic", fontsize=8)
    axes[1, 0].set_ylabel("erasing prob.", fontsize=8)
    if im_map is not None:
        cb = fig.colorbar(im_map, ax=axes[1, :].tolist(), fraction=0.03, pad=0.02)
        cb.set_label("1 − retain prob.", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    fig.suptitle("FEP erasing masks on holistic test images (Fig. 7)", fontsize=10)
    return _save(fig, path)


def retrievals(queries: Sequence[Mapping], root: Path, path: Path, top_k: int = 5) -> Path:
    """Fig. 8-style rank lists: query, then top-k gallery images framed green (same id) or red."""
    plt = _plt()
    n = len(queries)
    fig, axes = plt.subplots(n, top_k + 1, figsize=(1.25 * (top_k + 1), 2.35 * n), squeeze=False)
    size = (128, 64)
    for i, q in enumerate(queries):
        ax = axes[i, 0]
        ax.imshow(_load_image(Path(root) / q["query_path"], size))
        tag = "occluded" if q.get("occluded") else "holistic"
        ax.set_title(f"query id {q['query_pid']}\n{tag}", fontsize=7)
        for side in ax.spines.values():
            side.set_edgecolor("black")
            side.set_linewidth(2)
        for r in range(top_k):
            ax = axes[i, r + 1]
            if r < len(q["top"]):
                g = q["top"][r]
                ax.imshow(_load_image(Path(root) / g["path"], size))
                color = GREEN if g["match"] else RED
                for side in ax.spines.values():
                    side.set_edgecolor(color)
                    side.set_linewidth(4)
                ax.set_title(f"#{r + 1} id {g['pid']}\nd={g['distance']:.2f}", fontsize=7, color=color)
            else:
                ax.axis("off")
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Rank-5 retrievals (green = same identity, red = wrong)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
