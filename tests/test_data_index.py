"""build_index / read_index / write_index / summarize_index: subset, relabel, skips, validation."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from ogfr_core.config import DataConfig
from ogfr_core.data import (
    INDEX_COLUMNS, DatasetLayoutError, IndexFileError, build_index, dataset_root, read_index,
    summarize_index, write_index,
)
from ogfr_core.data.readers import READERS
from _data_synth import make_market, write_jpeg


def _cfg(root, **kw) -> DataConfig:
    return DataConfig(name="t", root=str(root), **kw)


def test_dataset_root_relative_and_absolute(tmp_path):
    assert dataset_root(_cfg("../x"), tmp_path) == tmp_path / "../x"
    assert dataset_root(_cfg(tmp_path / "abs"), tmp_path / "repo") == tmp_path / "abs"


def test_shared_subset_index(shared_root):
    cfg = _cfg(shared_root, max_train_ids=4, max_test_ids=3)
    res = build_index(cfg, shared_root)
    f = res.frame
    assert list(f.columns) == list(INDEX_COLUMNS)
    assert all(f[c].dtype == np.int64 for c, t in INDEX_COLUMNS.items() if t == "int64")
    assert res.skipped == []
    # lowest pids of the full listing
    listing = READERS["market1501"](shared_root)
    train_pids = sorted({r.pid for r in listing.records if r.split == "train"})[:4]
    test_pids = sorted({r.pid for r in listing.records if r.split == "query"})[:3]
    assert sorted(f[f.split == "train"].pid.unique()) == train_pids
    assert sorted(f[f.split == "query"].pid.unique()) == test_pids
    assert sorted(f[f.split == "gallery"].pid.unique()) == test_pids
    n_expected = sum(1 for r in listing.records
                     if (r.split == "train" and r.pid in train_pids) or (r.split != "train" and r.pid in test_pids))
    assert len(f) == n_expected
    # relabel: train pids -> 0..N-1 in pid order, -1 elsewhere
    tr = f[f.split == "train"]
    assert dict(zip(tr.pid, tr.label)) == {p: i for i, p in enumerate(train_pids)}
    assert (f[f.split != "train"].label == -1).all()
    # rows: train, query, gallery; size and key of a real file
    assert list(dict.fromkeys(f.split)) == ["train", "query", "gallery"]
    row = f.iloc[0]
    assert (row.width, row.height) == (64, 128)
    assert row.key == hashlib.sha1((shared_root / row.path).read_bytes()).hexdigest()
    # deterministic
    pd.testing.assert_frame_equal(build_index(cfg, shared_root).frame, f)
    s = summarize_index(f)
    assert s["train"] == {"images": len(tr), "ids": 4, "cameras": 2}
    assert s["query"]["ids"] == 3 and s["total_images"] == len(f) and s["duplicate_keys"] == 0


def test_full_relabel_range(shared_root):
    """Relabel on the full shared train split: 767 ids -> labels 0..766 (listing only, no hashing)."""
    from ogfr_core.data import relabel

    listing = READERS["market1501"](shared_root)
    f = pd.DataFrame([r._asdict() for r in listing.records])
    labels = relabel(f)
    tr = labels[(f.split == "train").to_numpy()]
    assert tr.min() == 0 and tr.max() == 766 and len(np.unique(tr)) == 767
    assert (labels[(f.split != "train").to_numpy()] == -1).all()


def test_unreadable_images_are_counted_skips(tmp_path, caplog):
    root = make_market(tmp_path / "m", train=["0002_c1s1_000001_00.jpg", "0003_c1s1_000001_00.jpg",
                                              "0004_c2s1_000001_00.jpg", "oops.jpg"],
                       query=["0005_c1s1_000004_01.jpg"], gallery=["0005_c2s1_000005_00.jpg",
                                                                   "0000_c1s1_000009_00.jpg"])
    (root / "bounding_box_train" / "0003_c1s1_000001_00.jpg").write_bytes(b"")
    full = (root / "bounding_box_train" / "0004_c2s1_000001_00.jpg").read_bytes()
    (root / "bounding_box_train" / "0004_c2s1_000001_00.jpg").write_bytes(full[:40])
    res = build_index(_cfg(root), tmp_path)
    skipped = dict(res.skipped)
    assert set(skipped) == {"bounding_box_train/oops.jpg", "bounding_box_train/0003_c1s1_000001_00.jpg",
                            "bounding_box_train/0004_c2s1_000001_00.jpg"}
    assert "0 bytes" in skipped["bounding_box_train/0003_c1s1_000001_00.jpg"]
    assert "0003_c1s1_000001_00.jpg" in caplog.text
    assert res.frame.path.tolist() == ["bounding_box_train/0002_c1s1_000001_00.jpg",
                                       "query/0005_c1s1_000004_01.jpg",
                                       "bounding_box_test/0000_c1s1_000009_00.jpg",
                                       "bounding_box_test/0005_c2s1_000005_00.jpg"]
    assert res.frame.label.tolist() == [0, -1, -1, -1]


def test_split_unreadable_after_skips_is_error(tmp_path):
    root = make_market(tmp_path / "m", train=["0002_c1s1_000001_00.jpg"], query=["0005_c1s1_000004_01.jpg"],
                       gallery=["0005_c2s1_000005_00.jpg"])
    (root / "query" / "0005_c1s1_000004_01.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetLayoutError, match="split 'query' has no readable image"):
        build_index(_cfg(root), tmp_path)


def test_subset_keeps_distractors_and_msmt_pid0(tmp_path):
    root = make_market(tmp_path / "m",
                       train=[f"{p:04d}_c1s1_000001_00.jpg" for p in (9, 3, 7)],
                       query=[f"{p:04d}_c1s1_000004_01.jpg" for p in (5, 2, 8)],
                       gallery=[f"{p:04d}_c2s1_000005_00.jpg" for p in (5, 2, 8, 0)])
    f = build_index(_cfg(root, max_train_ids=2, max_test_ids=1), tmp_path).frame
    assert sorted(f[f.split == "train"].pid) == [3, 7]
    assert f[f.split == "query"].pid.tolist() == [2]
    assert sorted(f[f.split == "gallery"].pid) == [0, 2]


def test_occluded_reid_index_has_no_train(tmp_path):
    root = tmp_path / "occ"
    for i, folder in enumerate(("occluded_body_images", "whole_body_images")):
        write_jpeg(root / folder / "001" / "001_01.tif", seed=i)
    f = build_index(_cfg(root, layout="occluded_reid"), tmp_path).frame
    assert f.split.tolist() == ["query", "gallery"] and f.camid.tolist() == [0, 1]


def test_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="data.layout 'viper' is unknown"):
        build_index(_cfg(tmp_path, layout="viper"), tmp_path)


def test_write_read_roundtrip_and_validation(tmp_path):
    f = pd.DataFrame({"key": ["a" * 40], "path": ["q/x.jpg"], "pid": [1], "camid": [0], "split": ["query"],
                      "label": [-1], "width": [64], "height": [128]})
    p = tmp_path / "index" / "t.parquet"
    write_index(f, p)
    pd.testing.assert_frame_equal(read_index(p), f, check_dtype=False)
    assert read_index(p).pid.dtype == np.int64
    f.drop(columns="width").to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(IndexFileError, match=r"missing \['width'\].*dvc repro index") as exc:
        read_index(tmp_path / "bad.parquet")
    assert "bad.parquet" in str(exc.value)
    f.assign(pid=f.pid.astype(float)).to_parquet(tmp_path / "float.parquet")
    with pytest.raises(IndexFileError, match="'pid' has dtype float64"):
        read_index(tmp_path / "float.parquet")
    with pytest.raises(IndexFileError, match="not found; rerun `dvc repro index`"):
        read_index(tmp_path / "absent.parquet")
    with pytest.raises(IndexFileError):
        write_index(f.drop(columns="key"), tmp_path / "never.parquet")
    assert not (tmp_path / "never.parquet").exists()


def test_subset_without_distractors_treats_pid0_as_identity():
    """MSMT17: pid 0 is an ordinary test identity (no distractors), so it is the lowest test pid."""
    from ogfr_core.data import ImageRecord, subset_records

    recs = [ImageRecord("a", 0, 0, "query"), ImageRecord("b", 0, 1, "gallery"),
            ImageRecord("c", 4, 1, "gallery"), ImageRecord("d", 4, 0, "query")]
    assert [r.path for r in subset_records(recs, 0, 1, distractor_pid=None)] == ["a", "b"]
    assert [r.path for r in subset_records(recs, 0, 1, distractor_pid=0)] == ["b", "c", "d"]


def test_validation_split_is_carved_from_training_ids(shared_root):
    """data.val_ids: whole training identities leave training (relabelled 0..N-1 without them); each
    held-out id gives one val_query image per camera, the rest val_gallery; deterministic."""
    cfg = _cfg(shared_root, max_train_ids=12, max_test_ids=2, val_ids=4)
    f = build_index(cfg, shared_root).frame
    train, vq, vg = (f[f.split == s] for s in ("train", "val_query", "val_gallery"))
    held = set(vq.pid)
    assert len(held) == 4 and set(vg.pid) == held and not held & set(train.pid)
    assert len(set(train.pid)) == 8 and sorted(train.label.unique()) == list(range(8))
    assert (vq.label == -1).all() and (vg.label == -1).all()
    assert (vq.groupby("pid").camid.nunique() == vq.groupby("pid").size()).all()  # one query per camera
    full = build_index(_cfg(shared_root, max_train_ids=12, max_test_ids=2), shared_root).frame
    assert len(train) + len(vq) + len(vg) == int((full.split == "train").sum())
    # same split on every run; the test splits are untouched
    pd.testing.assert_frame_equal(build_index(cfg, shared_root).frame, f)
    assert f[f.split.isin(["query", "gallery"])].reset_index(drop=True).drop(columns="label").equals(
        full[full.split.isin(["query", "gallery"])].reset_index(drop=True).drop(columns="label"))
    s = summarize_index(f)
    assert s["val_query"]["ids"] == 4 and s["train"]["ids"] == 8


def test_validation_split_bounds_and_roundtrip(tmp_path):
    from ogfr_core.config import ConfigError
    from ogfr_core.data.index import hold_out_validation

    frame = pd.DataFrame({"pid": [1, 1, 2, 2, 3, 3], "camid": [0, 1, 0, 1, 0, 1], "split": ["train"] * 6,
                          "path": list("abcdef")})
    out = hold_out_validation(frame, 1)
    assert (out.split == "val_query").sum() == 2 and (out.split == "train").sum() == 4  # 2 cameras, 1 image each
    assert (frame.split == "train").all()  # the input is not modified
    with pytest.raises(ConfigError, match="data.val_ids = 2: must be in 0..1"):
        hold_out_validation(frame, 2)
    # an index with validation splits survives write/read (the split values are part of the contract)
    root = make_market(tmp_path / "m", [f"000{p}_c{c}s1_00000{i}_00.jpg" for p in (1, 2, 3, 4) for c, i in ((1, 1), (2, 2))],
                       ["0005_c1s1_000001_00.jpg"], ["0005_c2s1_000001_00.jpg"])
    res = build_index(_cfg(root, val_ids=1), root)
    write_index(res.frame, tmp_path / "i.parquet")
    back = read_index(tmp_path / "i.parquet")
    assert (back.split == "val_query").sum() == 2 and set(back.split) == {"train", "val_query", "query", "gallery"}
