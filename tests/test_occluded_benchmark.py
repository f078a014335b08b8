"""The occluded-query benchmark (stage ``occlude``): occluder placement and area, determinism, sources
from training identities only, and the derived set's index/parse/occlusion on a real slice."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ogfr_core.data.occluded_benchmark import (Box, OccluderSpec, background_window, key_rng, occlude,
                                               occlude_queries, person_cutout, place_box)

H, W = 128, 64


@pytest.mark.parametrize("edge", ["bottom", "left", "right"])
def test_box_area_and_placement_within_the_stated_bounds(edge):
    """Object boxes: area = the drawn fraction (± rounding), inside the crop, touching ``edge``;
    person boxes keep the given aspect and stand on the bottom edge when entering from a side."""
    for i in range(200):
        rng = np.random.default_rng(i)
        a = rng.uniform(0.2, 0.5)
        box = place_box(rng, H, W, a, edge)
        assert 0 <= box.y0 < box.y1 <= H and 0 <= box.x0 < box.x1 <= W
        assert abs(box.area / (H * W) - a) <= 0.02
        assert {"bottom": box.y1 == H, "left": box.x0 == 0, "right": box.x1 == W}[edge]
        p = place_box(rng, H, W, a, edge, aspect=0.4)
        assert p.area <= a * H * W * 1.06 and p.y1 == H
        assert {"bottom": True, "left": p.x0 == 0, "right": p.x1 == W}[edge]
        assert abs((p.x1 - p.x0) / (p.y1 - p.y0) - 0.4) < 0.05 or p.y1 - p.y0 == H


def test_paste_object_and_person():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    box = Box(100, 10, 128, 50)
    out, covered = occlude(image, np.full((5, 5, 3), 7, np.uint8), None, box)
    assert covered == box.area / (H * W)
    assert (out[100:, 10:50] == 7).all()
    outside = np.ones((H, W), bool)
    outside[100:, 10:50] = False
    assert (out[outside] == image[outside]).all()
    # a person occluder covers only its mask inside the box
    mask = np.zeros((10, 4), bool)
    mask[:, 1:3] = True
    out, covered = occlude(image, np.full((10, 4, 3), 9, np.uint8), mask, Box(0, 0, 20, 8))
    assert covered == pytest.approx(20 * 4 / (H * W)) and (out[:20, 2:6] == 9).all() and (out[:20, :2] == image[:20, :2]).all()
    # cut-out = the label map's bounding box; background window = the least-body window
    lm = np.zeros((256, 128), np.uint8)
    lm[40:200, 30:90] = 4
    rgb, m = person_cutout(image, lm)
    assert rgb.shape[:2] == m.shape == (80, 30) and m.all()
    win = background_window(np.random.default_rng(1), image, lm, 30, 10, tries=64)
    assert win.shape == (30, 10, 3)


def _toy_market(root: Path, seed: int = 0) -> dict[str, pd.DataFrame]:
    """A Market-layout folder (64×128 random crops): train pids 1-4, test pids 101-103."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, folder, pids in (("train", "bounding_box_train", range(1, 5)), ("query", "query", range(101, 104)),
                                ("gallery", "bounding_box_test", range(101, 104))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for pid in pids:
            for c in (1, 2) if split != "query" else (1,):
                name = f"{pid:04d}_c{c}s1_000000_00.jpg"
                Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / folder / name)
                data = (root / folder / name).read_bytes()
                rows.append({"key": hashlib.sha1(data).hexdigest(), "path": f"{folder}/{name}", "pid": pid,
                             "split": split})
    frame = pd.DataFrame(rows)
    return {s: frame[frame.split == s].reset_index(drop=True) for s in ("train", "query", "gallery")}


def _body_map(key: str) -> np.ndarray:
    lm = np.zeros((256, 128), np.uint8)
    lm[30:240, 35:95] = 4
    return lm


def test_deterministic_sources_from_training_ids_only(tmp_path):
    root = tmp_path / "src"
    parts = _toy_market(root)
    spec = OccluderSpec(kind="mixed", seed=3)
    a = occlude_queries(root, tmp_path / "a", parts["query"], parts["gallery"], parts["train"], _body_map, spec)
    b = occlude_queries(root, tmp_path / "b", parts["query"].iloc[::-1], parts["gallery"], parts["train"].iloc[::-1],
                        _body_map, spec)
    files = sorted(p.name for p in (tmp_path / "a" / "query").iterdir())
    assert files == [Path(p).stem + ".png" for p in sorted(parts["query"].path)]
    for f in files:  # same bytes whatever the row order
        assert (tmp_path / "a/query" / f).read_bytes() == (tmp_path / "b/query" / f).read_bytes()
    c = occlude_queries(root, tmp_path / "c", parts["query"], parts["gallery"], parts["train"], _body_map,
                        OccluderSpec(kind="mixed", seed=4))
    assert any((tmp_path / "a/query" / f).read_bytes() != (tmp_path / "c/query" / f).read_bytes() for f in files)
    assert set(a.source_pid) <= set(parts["train"].pid) and not set(a.source_pid) & set(parts["query"].pid)
    assert a.sort_values("key").reset_index(drop=True).equals(b.sort_values("key").reset_index(drop=True))
    assert ((a.box_area >= 0.18) & (a.box_area <= 0.52)).all() and (a.covered <= a.box_area + 1e-9).all()
    # the gallery is the original, byte for byte (relative symlinks)
    for g in parts["gallery"].path:
        link = tmp_path / "a/bounding_box_test" / Path(g).name
        assert link.is_symlink() and link.read_bytes() == (root / g).read_bytes()
    # the pixels outside the box are the original query's
    row = a.iloc[0]
    orig = np.asarray(Image.open(root / parts["query"].set_index("key").loc[row.key, "path"]).convert("RGB"))
    new = np.asarray(Image.open(tmp_path / "a" / row.path))
    keep = np.ones((H, W), bool)
    keep[row.y0:row.y1, row.x0:row.x1] = False
    assert (new[keep] == orig[keep]).all() and not (new[~keep] == orig[~keep]).all()


def test_spec_validation():
    with pytest.raises(ValueError, match="occlude.area"):
        OccluderSpec(area=(0.5, 0.2))
    with pytest.raises(ValueError, match="occlude.edges"):
        OccluderSpec(edges=("top",))
    assert key_rng(0, "ab" * 20).random() == key_rng(0, "ab" * 20).random()


@pytest.mark.slow
def test_derived_set_index_parse_occlusion_on_a_real_slice(tmp_path, shared_root):
    """On 3 training and 2 test identities of the shared set: the derived set has the occluded queries
    and the original gallery; its parse reuses the gallery's cached rows (parses only the queries,
    with the real mediapipe backend) and its occlusion table covers every image."""
    from ogfr_core.config import DataConfig, OccludeConfig, ParseConfig
    from ogfr_core.data.index import build_index
    from ogfr_core.io import write_parquet
    from ogfr_core.occlusion import COARSE_NAMES, OcclusionRule
    from ogfr_core.occlusion.benchmark import derive_occluded_set
    from ogfr_core.occlusion.table import occlusion_table
    from ogfr_core.parsing import parse_dataset, read_parsing

    data = DataConfig(name="tiny", root=str(shared_root), max_train_ids=3, max_test_ids=2)
    parse_cfg = ParseConfig(workers=0, shard_size=64)
    index = build_index(data, tmp_path).frame
    write_parquet(tmp_path / "data/index/tiny.parquet", index)
    parse_dataset(index, shared_root, parse_cfg, tmp_path / "data/parsing/tiny", progress=False)
    parsing = read_parsing(tmp_path / "data/parsing/tiny", columns=["label_map", "amodal_map", "status"])
    rule = OcclusionRule("hidden_fraction", tau=0.5)
    write_parquet(tmp_path / "data/occlusion/tiny.parquet", occlusion_table(parsing, rule))

    derived = derive_occluded_set(data, parse_cfg, rule, OccludeConfig(kind="person"), tmp_path)
    assert derived.name == "tiny-occ"
    q, g = (derived.index[derived.index.split == s] for s in ("query", "gallery"))
    assert set(derived.index.split) == {"query", "gallery"}
    assert sorted(g.key) == sorted(index.loc[index.split == "gallery", "key"])  # the gallery, unchanged
    assert len(q) == int((index.split == "query").sum()) and all(p.endswith(".png") for p in q.path)
    assert derived.run == {"gallery_rows_reused": len(g), "parsed_now": len(q)}  # this call's work: logged
    assert set(derived.summary["parse"]) == {"coverage"}  # the tracked summary depends on the inputs only
    assert set(derived.occlusion.key) == set(derived.index.key)
    assert derived.summary["occluders"]["source_test_pids"] == 0
    assert set(derived.occluders.source_pid) <= set(index.loc[index.split == "train", "pid"])
    assert (tmp_path / "data/occlusion/tiny-occ.parquet").is_file() and (tmp_path / "data/index/tiny-occ.parquet").is_file()
    # the ground truth: one row per query, the occluder only removes visible pixels, shares in [0, 1]
    truth = pd.read_parquet(derived.root / "z_truth.parquet")
    assert sorted(truth.key) == sorted(q.key) and (truth.kind == "person").all()
    before, after = (truth[[f"count_{w}_{c}" for c in COARSE_NAMES]].to_numpy() for w in ("before", "after"))
    assert (after <= before).all() and (after < before).any()
    covered = truth[[f"covered_{c}" for c in COARSE_NAMES]].to_numpy()
    assert ((0 <= covered) & (covered <= 1)).all()


def test_validation_set_refuses_a_split_other_than_data_val_ids(tmp_path):
    """data.val_ids > 0 and a different occlude.val_ids: the occluded set would hold training
    identities -> one-line ConfigError before any file is read."""
    from ogfr_core.config import ConfigError, DataConfig, OccludeConfig, ParseConfig
    from ogfr_core.occlusion import OcclusionRule
    from ogfr_core.occlusion.benchmark import derive_validation_set

    with pytest.raises(ConfigError, match="occlude.val_ids = 3 but data.val_ids = 2"):
        derive_validation_set(DataConfig(name="tiny", root=str(tmp_path), val_ids=2), ParseConfig(workers=0),
                              OcclusionRule("pixels"), OccludeConfig(val_ids=3), tmp_path)


@pytest.mark.slow
def test_validation_set_is_the_held_out_split_when_training_excludes_it(tmp_path, shared_root):
    """With data.val_ids = occlude.val_ids, the occluded validation set is exactly the index's held-out
    split (same query identities, same gallery images) and every occluder comes from an identity the
    model trains on; the same split as a run without data.val_ids draws."""
    from ogfr_core.config import DataConfig, OccludeConfig, ParseConfig
    from ogfr_core.data.index import build_index, hold_out_validation
    from ogfr_core.io import write_parquet
    from ogfr_core.occlusion import OcclusionRule
    from ogfr_core.occlusion.benchmark import derive_validation_set, pooled
    from ogfr_core.occlusion.table import occlusion_table
    from ogfr_core.parsing import parse_dataset, read_parsing

    data = DataConfig(name="tiny", root=str(shared_root), max_train_ids=4, max_test_ids=2, val_ids=1)
    parse_cfg = ParseConfig(workers=0, shard_size=64)
    index = build_index(data, tmp_path).frame
    held_all = build_index(DataConfig(name="tiny", root=str(shared_root), max_train_ids=4, max_test_ids=2,
                                      val_ids=0), tmp_path).frame
    write_parquet(tmp_path / "data/index/tiny.parquet", index)
    parse_dataset(index, shared_root, parse_cfg, tmp_path / "data/parsing/tiny", progress=False)
    parsing = read_parsing(tmp_path / "data/parsing/tiny", columns=["label_map", "amodal_map", "status"])
    rule = OcclusionRule("pixels")
    write_parquet(tmp_path / "data/occlusion/tiny.parquet", occlusion_table(parsing, rule))

    val = derive_validation_set(data, parse_cfg, rule, OccludeConfig(kind="object", val_ids=1), tmp_path)
    q, g = (val.index[val.index.split == s] for s in ("query", "gallery"))
    held_pids = set(index.loc[index.split == "val_query", "pid"])
    assert len(held_pids) == 1 and set(q.pid) == held_pids
    assert sorted(g.key) == sorted(index.loc[index.split == "val_gallery", "key"])
    assert set(val.occluders.source_pid) <= set(index.loc[index.split == "train", "pid"]) and not (
        set(val.occluders.source_pid) & held_pids)
    # the identity a run without data.val_ids holds out for its occluded validation set
    redrawn = hold_out_validation(held_all[held_all.split == "train"], 1)
    assert set(redrawn.loc[redrawn.split == "val_query", "pid"]) == held_pids

    # the gallery-occluded twin: the held-out gallery images occluded, the held-out queries its gallery
    twin = derive_validation_set(data, parse_cfg, rule, OccludeConfig(kind="object", val_ids=1), tmp_path,
                                 occluded="gallery")
    assert twin.name == "tiny-occ-val-gallery"
    tq, tg = (twin.index[twin.index.split == s] for s in ("query", "gallery"))
    assert len(tq) == (index.split == "val_gallery").sum() and set(tq.pid) == held_pids
    assert sorted(tg.key) == sorted(index.loc[index.split == "val_query", "key"])
    assert sorted(twin.occluders.key) == sorted(index.loc[index.split == "val_gallery", "key"])  # the originals
    assert not (set(twin.occluders.source_pid) & held_pids)
    both = pooled(val, twin)
    assert both.name == "tiny-occ-val + tiny-occ-val-gallery"
    assert len(both.truth) == len(val.truth) + len(twin.truth) == len(q) + len(tq)
    assert set(both.occlusion.key) == set(val.occlusion.key) | set(twin.occlusion.key)
    with pytest.raises(ValueError, match="share occluded images"):
        pooled(val, val)
