"""Helpers for the data tests: tiny synthetic datasets in the standard layouts (written to tmp_path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (16, 32)) -> Path:
    """Write a small random RGB JPEG (W x H = size); distinct seeds give distinct bytes."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)
    return path


def make_market(root: Path, train: list[str], query: list[str], gallery: list[str]) -> Path:
    """Market-1501 layout with the given file names in each folder."""
    seed = 0
    for folder, names in (("bounding_box_train", train), ("query", query), ("bounding_box_test", gallery)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for n in names:
            seed += 1
            if n.lower().endswith((".jpg", ".jpeg", ".png")):
                write_jpeg(root / folder / n, seed)
            else:  # a non-image file (e.g. Thumbs.db)
                (root / folder / n).write_bytes(b"not an image")
    return root
