"""Dataset readers: exact counts on the shared set, synthetic layouts, and bad-input errors."""
from __future__ import annotations

from collections import Counter

import pytest

from ogfr_core.data import READERS, DatasetLayoutError, ImageRecord
from _data_synth import make_market, write_jpeg


# ---------------------------------------------------------------- shared CUHK03-NP (Market layout)
@pytest.mark.parametrize("layout", ["market1501", "cuhk03np"])
def test_shared_set_counts(shared_root, layout):
    listing = READERS[layout](shared_root)
    assert listing.skipped == [] and listing.junk == 0
    by_split = {s: [r for r in listing.records if r.split == s] for s in ("train", "query", "gallery")}
    assert {s: len(v) for s, v in by_split.items()} == {"train": 7353, "query": 1000, "gallery": 3815}
    assert {s: len({r.pid for r in v}) for s, v in by_split.items()} == {"train": 767, "query": 500, "gallery": 500}
    assert all({r.camid for r in v} == {0, 1} for v in by_split.values())
    # train and test identities are disjoint (CUHK03-NP protocol); test ids shared by query/gallery
    assert not {r.pid for r in by_split["train"]} & {r.pid for r in by_split["query"]}
    assert {r.pid for r in by_split["query"]} == {r.pid for r in by_split["gallery"]}


def test_shared_set_name_parsing(shared_root):
    listing = READERS["market1501"](shared_root)
    rec = {r.path: r for r in listing.records}
    assert rec["query/0001_c2s1_000007_00.jpg"] == ImageRecord("query/0001_c2s1_000007_00.jpg", 1, 1, "query")
    assert rec["bounding_box_train/0002_c1s1_000000_00.jpg"].pid == 2
    assert rec["bounding_box_train/0002_c1s1_000000_00.jpg"].camid == 0


# ---------------------------------------------------------------- synthetic layouts
def test_market1501_junk_and_distractors(tmp_path):
    root = make_market(
        tmp_path / "m",
        train=["0002_c1s1_000001_00.jpg", "0002_c6s1_000002_00.jpg", "-1_c1s1_000003_00.jpg",
               "Thumbs.db"],
        query=["0005_c3s2_000004_01.jpg"],
        gallery=["0005_c4s1_000005_00.jpg", "0000_c2s1_000006_00.jpg", "-1_c2s1_000007_00.jpg"],
    )
    listing = READERS["market1501"](root)
    assert listing.junk == 2 and listing.skipped == []
    assert sorted((r.split, r.pid, r.camid) for r in listing.records) == [
        ("gallery", 0, 1), ("gallery", 5, 3), ("query", 5, 2), ("train", 2, 0), ("train", 2, 5)]


def test_unparseable_name_is_counted_skip(tmp_path, caplog):
    root = make_market(tmp_path / "m", train=["0002_c1s1_000001_00.jpg", "holiday.jpg"],
                       query=["0005_c1s1_000004_01.jpg"], gallery=["0005_c2s1_000005_00.jpg"])
    listing = READERS["market1501"](root)
    assert len(listing.records) == 3
    assert listing.skipped == [("bounding_box_train/holiday.jpg",
                                "file name does not match 'market1501' naming PPPP_cC...")]
    assert "holiday.jpg" in caplog.text


def test_camera_out_of_range_is_skip(tmp_path):
    root = make_market(tmp_path / "m", train=["0002_c1s1_000001_00.jpg", "0002_c3s1_000001_00.jpg"],
                       query=["0005_c1s1_000004_01.jpg"], gallery=["0005_c2s1_000005_00.jpg"])
    listing = READERS["cuhk03np"](root)  # 2 cameras
    assert [p for p, _ in listing.skipped] == ["bounding_box_train/0002_c3s1_000001_00.jpg"]
    assert "c3" in listing.skipped[0][1]


def test_occluded_duke_cameras_1_to_8(tmp_path):
    root = make_market(tmp_path / "d", train=["0001_c8_f0046182.jpg", "0001_c1_f0046183.jpg"],
                       query=["0003_c5_f0000001.jpg"], gallery=["0003_c2_f0000002.jpg", "0007_c9_f0000003.jpg"])
    listing = READERS["occluded_duke"](root)
    assert sorted((r.split, r.pid, r.camid) for r in listing.records) == [
        ("gallery", 3, 1), ("query", 3, 4), ("train", 1, 0), ("train", 1, 7)]
    assert [p for p, _ in listing.skipped] == ["bounding_box_test/0007_c9_f0000003.jpg"]


def test_msmt17_list_files(tmp_path):
    root = tmp_path / "msmt"
    entries = {
        "list_train.txt": ("train", ["0000/0000_000_01_0303morning_0015_0.jpg 0",
                                     "0001/0001_003_15_0303noon_0003_1.jpg 1"]),
        "list_val.txt": ("train", ["0002/0002_000_05_0303morning_0001_0.jpg 2"]),
        "list_query.txt": ("test", ["0000/0000_001_07_0303afternoon_0010_0.jpg 0", "not a valid line at all"]),
        "list_gallery.txt": ("test", ["0000/0000_002_02_0303afternoon_0011_0.jpg 0"]),
    }
    for list_name, (folder, lines) in entries.items():
        for i, line in enumerate(lines):
            if len(line.split()) == 2:
                write_jpeg(root / folder / line.split()[0], seed=i)
        (root / list_name).write_text("\n".join(lines) + "\n")
    listing = READERS["msmt17"](root)
    assert sorted(listing.records) == sorted([
        ImageRecord("train/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0, "train"),
        ImageRecord("train/0001/0001_003_15_0303noon_0003_1.jpg", 1, 14, "train"),
        ImageRecord("test/0000/0000_001_07_0303afternoon_0010_0.jpg", 0, 6, "query"),
        ImageRecord("test/0000/0000_002_02_0303afternoon_0011_0.jpg", 0, 1, "gallery"),
    ])  # val not added to train (torchreid default)
    assert [p for p, _ in listing.skipped] == ["list_query.txt:2"]


def _make_occluded_reid(root):
    for pid in (1, 2):
        for i in range(2):
            write_jpeg(root / "occluded_body_images" / f"{pid:03d}" / f"{pid:03d}_{i:02d}.tif", seed=pid * 10 + i)
            write_jpeg(root / "whole_body_images" / f"{pid:03d}" / f"{pid:03d}_{i:02d}.tif", seed=pid * 20 + i)
    return root


def test_occluded_reid_camid_convention(tmp_path):
    root = _make_occluded_reid(tmp_path / "occ")
    listing = READERS["occluded_reid"](root)
    assert listing.splits == ("query", "gallery")
    c = Counter((r.split, r.camid) for r in listing.records)
    assert c == {("query", 0): 4, ("gallery", 1): 4}
    assert {r.pid for r in listing.records} == {1, 2}
    assert "occluded_body_images/001/001_00.tif" in {r.path for r in listing.records}
    swapped = READERS["occluded_reid"](root, query_camid=5, gallery_camid=3)
    assert Counter((r.split, r.camid) for r in swapped.records) == {("query", 5): 4, ("gallery", 3): 4}
    with pytest.raises(ValueError, match="must differ"):
        READERS["occluded_reid"](root, query_camid=1, gallery_camid=1)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("layout", sorted(READERS))
def test_missing_root(tmp_path, layout):
    with pytest.raises(DatasetLayoutError, match=r"does not exist; set `data.root`") as exc:
        READERS[layout](tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value)


def test_wrong_layout_lists_expected_and_found(tmp_path):
    root = _make_occluded_reid(tmp_path / "occ")
    with pytest.raises(DatasetLayoutError) as exc:
        READERS["market1501"](root)
    msg = str(exc.value)
    assert "bounding_box_train/" in msg and "query/" in msg  # expected
    assert "occluded_body_images/" in msg and "whole_body_images/" in msg  # found
    assert "data.layout" in msg


def test_split_with_no_images_names_folder(tmp_path):
    root = make_market(tmp_path / "m", train=["0002_c1s1_000001_00.jpg"], query=[],
                       gallery=["0005_c2s1_000005_00.jpg"])
    with pytest.raises(DatasetLayoutError, match="split 'query' has no usable images") as exc:
        READERS["market1501"](root)
    assert str(root / "query") in str(exc.value)


def test_split_with_only_junk_is_error(tmp_path):
    root = make_market(tmp_path / "m", train=["0002_c1s1_000001_00.jpg"], query=["-1_c1s1_000001_00.jpg"],
                       gallery=["0005_c2s1_000005_00.jpg"])
    with pytest.raises(DatasetLayoutError, match="1 image file"):
        READERS["market1501"](root)
