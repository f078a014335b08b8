"""The re-ID image dataset over index rows, and its train (PK) / test DataLoaders.

Example::

    >>> frame = read_index("data/index/cuhk03-np-detected.parquet")          # doctest: +SKIP
    >>> train = frame[frame.split == "train"]
    >>> ds = ReIDImageDataset(train, root, TrainTransform(128, 64, AugmentConfig()))
    >>> loader = build_train_loader(ds, train.label.tolist(), p=16, k=4, seed=0, num_workers=2)
    >>> batch = next(iter(loader)); batch["image"].shape
    torch.Size([64, 3, 128, 64])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from .images import load_rgb
from .sampler import PKSampler

__all__ = ["MissingLabelsError", "ReIDImageDataset", "collate", "build_train_loader", "build_test_loader"]

_REQUIRED = ("key", "path", "pid", "camid", "label")


class MissingLabelsError(UserError, ValueError):
    """Label maps or occlusion labels are missing for some records (rerun parse / occlusion).

    Attributes:
        what: ``"label_maps"`` or ``"z"``.
        missing: number of records without an entry.
        examples: a few of their paths.
    """

    def __init__(self, what: str, missing: int, total: int, examples: list[str]):
        self.what, self.missing, self.examples = what, missing, examples
        stage = "parse" if what == "label_maps" else "occlusion"
        super().__init__(f"{what}: {missing} of {total} images have no entry (keyed by image SHA-1), "
                         f"e.g. {examples}; the {stage} outputs are stale or partial: run `dvc repro {stage}`")


def _check_keys(what: str, table: Mapping[str, Any] | None, keys: list[str], paths: list[str]) -> None:
    if table is None:
        return
    missing = [p for k, p in zip(keys, paths) if k not in table]
    if missing:
        raise MissingLabelsError(what, len(missing), len(keys), missing[:5])


class ReIDImageDataset(Dataset):
    """Images of index rows, with optional part label maps and occlusion labels z.

    Args:
        records: index rows (columns ``key``, ``path``, ``pid``, ``camid``, ``label``).
        root: dataset root the ``path`` column is relative to.
        transform: ``TrainTransform`` (called as ``transform(image, label_map)``, returns a tuple)
            or ``TestTransform`` (``transform(image)`` -> tensor). Without ``label_maps`` the
            transform is called with the image only; a tuple result contributes its first element.
        label_maps: image key -> uint8 part label map ``[h, w]`` (ids 0..8).
        z: image key -> occlusion labels ``[4]`` (head, arms, torso, legs; Eq. 2).
        hidden: image key -> the occlusion rule's shares ``[4]`` in [0, 1] (the occlusion table's
            ``hidden_*`` or ``occluder_*``), which the ``hidden_fraction`` / ``covered`` rules need to
            update z after the occlusion augmentation.

    Item (``dataset[i]``): ``{"image": [3, H, W] float32, "label_map": [H, W] int64 (if label_maps),
    "z": [4] int64 (if z), "hidden": [4] float32 (if hidden), "pid": int, "label": int, "camid": int, "key": str, "index": int}``.

    Raises:
        ValueError: ``records`` lacks a required column.
        MissingLabelsError: ``label_maps`` / ``z`` lack the key of some record (count + examples).
        ImageReadError: (at ``__getitem__``) an image became unreadable since indexing.
    """

    def __init__(self, records: pd.DataFrame, root: Path, transform: Callable,
                 label_maps: Mapping[str, np.ndarray] | None = None,
                 z: Mapping[str, Sequence[int]] | None = None,
                 hidden: Mapping[str, Sequence[float]] | None = None):
        missing_cols = [c for c in _REQUIRED if c not in records.columns]
        if missing_cols:
            raise ValueError(f"records lack column(s) {missing_cols}; pass rows of the index "
                             f"(ogfr_core.data.read_index)")
        self.root = Path(root)
        self.transform = transform
        self.keys: list[str] = records["key"].astype(str).tolist()
        self.paths: list[str] = records["path"].astype(str).tolist()
        self.pids: list[int] = records["pid"].astype("int64").tolist()
        self.camids: list[int] = records["camid"].astype("int64").tolist()
        self.labels: list[int] = records["label"].astype("int64").tolist()
        _check_keys("label_maps", label_maps, self.keys, self.paths)
        _check_keys("z", z, self.keys, self.paths)
        _check_keys("z", hidden, self.keys, self.paths)
        self.label_maps = label_maps
        self.z = z
        self.hidden = hidden

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:
        key = self.keys[i]
        image = load_rgb(self.root / self.paths[i])
        item: dict[str, Any] = {}
        if self.label_maps is not None:
            result = self.transform(image, self.label_maps[key])
            if not isinstance(result, tuple) or result[1] is None:
                raise TypeError(f"{type(self.transform).__name__} does not transform label maps; "
                                f"use TrainTransform with label_maps")
            item["image"], item["label_map"] = result
        else:
            result = self.transform(image)
            item["image"] = result[0] if isinstance(result, tuple) else result
        if self.z is not None:
            item["z"] = torch.tensor(np.asarray(self.z[key], dtype=np.int64))  # [4], copied (source may be read-only)
        if self.hidden is not None:
            item["hidden"] = torch.tensor(np.asarray(self.hidden[key], dtype=np.float32))  # [4]
        item.update(pid=self.pids[i], label=self.labels[i], camid=self.camids[i], key=key, index=i)
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: tensors stacked (``[B, ...]``), ints -> int64 ``[B]``, ``key`` a list."""
    out: dict[str, Any] = {}
    for name in items[0]:
        values = [it[name] for it in items]
        if isinstance(values[0], torch.Tensor):
            out[name] = torch.stack(values)
        elif isinstance(values[0], (int, np.integer)):
            out[name] = torch.as_tensor(values, dtype=torch.int64)
        else:
            out[name] = values
    return out


def build_train_loader(dataset: ReIDImageDataset, labels: Sequence[int], p: int, k: int, seed: int,
                       num_workers: int) -> DataLoader:
    """PK-sampled train loader: batches of ``p * k`` items (P ids x K images), last partial batch
    dropped. Call ``loader.sampler.set_epoch(e)`` every epoch. Worker RNGs derive from torch's
    global seed (DataLoader default), so seeding torch makes the augmentation reproducible.

    Raises:
        ValueError: ``len(labels) != len(dataset)`` or fewer than P identities.
    """
    if len(labels) != len(dataset):
        raise ValueError(f"labels has {len(labels)} entries but the dataset {len(dataset)} items")
    sampler = PKSampler(labels, p=p, k=k, seed=seed)
    return DataLoader(dataset, batch_size=p * k, sampler=sampler, drop_last=True, collate_fn=collate,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)


def build_test_loader(dataset: ReIDImageDataset, batch_size: int, num_workers: int) -> DataLoader:
    """Sequential loader over every item (no shuffle, last partial batch kept)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, collate_fn=collate,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available())
