"""ReIDImageDataset + loaders on a handful of real images of the shared set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ogfr_core.config import AugmentConfig, DataConfig
from ogfr_core.data import (
    MissingLabelsError, ReIDImageDataset, TestTransform, TrainTransform, build_index, build_test_loader,
    build_train_loader,
)

H, W = 32, 16


@pytest.fixture(scope="module")
def small_index(shared_root):
    cfg = DataConfig(name="t", root=str(shared_root), max_train_ids=4, max_test_ids=1)
    frame = build_index(cfg, shared_root).frame
    train = frame[frame.split == "train"].groupby("pid").head(4).reset_index(drop=True)  # 4 ids x <=4
    test = frame[frame.split != "train"].head(6).reset_index(drop=True)
    return train, test


def test_train_items_with_label_maps_and_z(small_index, shared_root):
    train, _ = small_index
    rng = np.random.default_rng(0)
    maps = {k: rng.integers(0, 9, (64, 32), dtype=np.uint8) for k in train.key}
    z = {k: [0, 1, 0, 1] for k in train.key}
    ds = ReIDImageDataset(train, shared_root, TrainTransform(H, W, AugmentConfig()), label_maps=maps, z=z)
    item = ds[3]
    assert item["image"].shape == (3, H, W) and item["label_map"].shape == (H, W)
    assert item["label_map"].dtype == torch.int64 and item["z"].tolist() == [0, 1, 0, 1]
    assert item["z"].dtype == torch.int64
    row = train.iloc[3]
    assert (item["pid"], item["label"], item["camid"], item["key"], item["index"]) == (
        row.pid, row.label, row.camid, row.key, 3)

    loader = build_train_loader(ds, train.label.tolist(), p=2, k=2, seed=0, num_workers=0)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, H, W) and batch["label_map"].shape == (4, H, W)
    assert batch["z"].shape == (4, 4) and batch["pid"].dtype == torch.int64
    assert isinstance(batch["key"], list) and len(batch["key"]) == 4
    assert len(set(batch["label"].tolist())) == 2
    assert len(loader) == len(loader.sampler) // 4


def test_missing_label_maps_error(small_index, shared_root):
    train, _ = small_index
    maps = {k: np.zeros((8, 4), np.uint8) for k in train.key[2:]}
    with pytest.raises(MissingLabelsError, match=r"label_maps: 2 of \d+ images have no entry") as exc:
        ReIDImageDataset(train, shared_root, TrainTransform(H, W, AugmentConfig()), label_maps=maps)
    assert exc.value.examples == train.path[:2].tolist()
    with pytest.raises(MissingLabelsError, match=r"^z: "):
        ReIDImageDataset(train, shared_root, TestTransform(H, W, (0.5,) * 3, (0.5,) * 3), z={})


def test_test_loader_keeps_order(small_index, shared_root):
    _, test = small_index
    ds = ReIDImageDataset(test, shared_root, TestTransform(H, W, (0.5,) * 3, (0.5,) * 3))
    batches = list(build_test_loader(ds, batch_size=4, num_workers=0))
    assert [b["image"].shape[0] for b in batches] == [4, 2]
    assert sum((b["key"] for b in batches), []) == test.key.tolist()
    assert torch.cat([b["camid"] for b in batches]).tolist() == test.camid.tolist()
    assert "label_map" not in batches[0] and "z" not in batches[0]


def test_train_transform_without_label_maps(small_index, shared_root):
    train, _ = small_index
    ds = ReIDImageDataset(train, shared_root, TrainTransform(H, W, AugmentConfig()))
    item = ds[0]
    assert item["image"].shape == (3, H, W) and "label_map" not in item


def test_worker_loader_runs(small_index, shared_root):
    train, _ = small_index
    ds = ReIDImageDataset(train, shared_root, TrainTransform(H, W, AugmentConfig()))
    loader = build_train_loader(ds, train.label.tolist(), p=4, k=2, seed=1, num_workers=1)
    loader.sampler.set_epoch(1)
    batches = list(loader)
    assert batches and all(b["image"].shape == (8, 3, H, W) for b in batches)
