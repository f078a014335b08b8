"""Figure: a grid of crops with their part label maps overlaid (``reports/parse/overlay.png``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .. import PART_NAMES
from ..io import atomic_path

# RGB colour per part id (0 background is not drawn): distinct, left = warm, right = cool.
PART_COLOURS = np.array([
    [0, 0, 0],        # background
    [255, 215, 0],    # head: gold
    [230, 25, 75],    # left arm: red
    [0, 130, 200],    # right arm: blue
    [60, 180, 75],    # torso: green
    [245, 130, 48],   # left leg: orange
    [145, 30, 180],   # right leg: purple
    [250, 190, 212],  # left foot: pink
    [70, 240, 240],   # right foot: cyan
], dtype=np.uint8)


def blend(image_rgb: np.ndarray, label_map: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Image resized (bicubic) to the label map's size with part colours blended in.

    Args:
        image_rgb: uint8 ``[H, W, 3]``; label_map: uint8 ``[h, w]`` (ids 0..8).

    Returns:
        uint8 ``[h, w, 3]``.
    """
    h, w = label_map.shape
    img = np.asarray(Image.fromarray(image_rgb).resize((w, h), Image.BICUBIC), np.float32)  # [h, w, 3]
    colour = PART_COLOURS[label_map].astype(np.float32)  # [h, w, 3]
    fg = (label_map > 0)[..., None]
    return np.where(fg, (1 - alpha) * img + alpha * colour, img).clip(0, 255).astype(np.uint8)


def overlay_grid(images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray], titles: Sequence[str],
                 out_path: str | Path, ncols: int = 8, suptitle: str = "") -> None:
    """Save a grid: for each crop, the crop and the crop with its parts overlaid, side by side.

    Args:
        images: uint8 ``[H, W, 3]`` crops; label_maps: uint8 ``[h, w]`` maps; titles: one per crop.
        out_path: PNG path, written atomically.
        ncols: crops per row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = len(images)
    if n == 0:
        raise ValueError("overlay_grid: no images to draw")
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 2.0 * nrows + 0.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, lm, title in zip(axes.ravel(), images, label_maps, titles):
        h, w = lm.shape
        raw = np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))
        gap = np.full((h, max(w // 16, 2), 3), 255, np.uint8)
        ax.imshow(np.concatenate([raw, gap, blend(img, lm)], axis=1), interpolation="nearest")
        ax.set_title(title, fontsize=7)
    handles = [Patch(color=PART_COLOURS[i] / 255.0, label=PART_NAMES[i].replace("_", " ")) for i in range(1, 9)]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=8, frameon=False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97 if suptitle else 1))
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
