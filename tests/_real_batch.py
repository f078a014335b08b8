"""A small real training batch for the peer-method tests: 16 CUHK03-NP crops (4 ids x 4) from
../shared, resized to 64x32, with a fixed synthetic parsing layout (the tests must not depend on the
parse stage). Same construction as tests/test_training.py's fixture."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

H, W = 64, 32


def body_layout(b: int, h: int = H, w: int = W) -> torch.Tensor:
    """``[b, h, w]`` long label maps: head, arms, torso, legs, feet (ids 1..8) of a standing person."""
    lab = torch.zeros(b, h, w, dtype=torch.long)
    r = lambda f: int(round(f * h))  # noqa: E731 - rows/columns as fractions of the size
    c = lambda f: int(round(f * w))  # noqa: E731
    lab[:, r(0.03):r(0.16), c(0.34):c(0.66)] = 1
    lab[:, r(0.16):r(0.5), c(0.12):c(0.28)] = 2
    lab[:, r(0.16):r(0.5), c(0.72):c(0.88)] = 3
    lab[:, r(0.16):r(0.5), c(0.28):c(0.72)] = 4
    lab[:, r(0.5):r(0.88), c(0.28):c(0.5)] = 5
    lab[:, r(0.5):r(0.88), c(0.5):c(0.72)] = 6
    lab[:, r(0.88):r(0.97), c(0.28):c(0.5)] = 7
    lab[:, r(0.88):r(0.97), c(0.5):c(0.72)] = 8
    return lab


def real_batch(shared_root: Path, n_ids: int = 4, per_id: int = 4) -> dict[str, torch.Tensor]:
    """``image [16,3,H,W]`` (normalised to [-1, 1]), ``label_map``, ``z`` (zeros), ``label`` 0..n_ids-1, ``camid``."""
    files = sorted((shared_root / "bounding_box_train").glob("*.jpg"))
    by_pid = defaultdict(list)
    for f in files[:200]:
        by_pid[f.name.split("_")[0]].append(f)
    pids = [p for p in sorted(by_pid) if len(by_pid[p]) >= per_id][:n_ids]
    chosen = [(i, f) for i, p in enumerate(pids) for f in by_pid[p][:per_id]]
    imgs = []
    for _, f in chosen:
        arr = np.asarray(Image.open(f).convert("RGB").resize((W, H), Image.BILINEAR), np.float32) / 255.0
        imgs.append((torch.from_numpy(arr).permute(2, 0, 1) - 0.5) / 0.5)  # [3, H, W]
    return dict(image=torch.stack(imgs), label_map=body_layout(len(chosen)),
                z=torch.zeros(len(chosen), 4, dtype=torch.long), label=torch.tensor([i for i, _ in chosen]),
                camid=torch.tensor([int(f.name.split("_")[1][1]) - 1 for _, f in chosen]))


def random_batch(b: int = 4, seed: int = 0, h: int = H, w: int = W) -> dict[str, torch.Tensor]:
    """A random training batch of ``b`` items (images ``[b, 3, h, w]``, z, camid, label, label_map):
    shapes only, for tests of the model's mechanics."""
    g = torch.Generator().manual_seed(seed)
    return dict(image=torch.randn(b, 3, h, w, generator=g), z=torch.randint(0, 2, (b, 4), generator=g),
                camid=torch.arange(b) % 2, label=torch.arange(b) % 3,
                label_map=torch.randint(0, 9, (b, h, w), generator=g))
