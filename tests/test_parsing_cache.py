"""The parsing cache and driver: rerun parses 0, new images only, resume after an interruption,
unreadable images, cache-key params, readers. Uses a fast deterministic fake backend."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ogfr_core.config import ParseConfig
from ogfr_core.parsing import ParseResult, PartParser, load_label_maps, parse_dataset, read_parsing
from ogfr_core.parsing.cache import (ParsingIncompleteError, compute_cache_id, decode_label_map, encode_label_map,
                                     shard_paths)

LABEL_HW = (32, 16)


class FakeParser(PartParser):
    """Deterministic: dark images have no person; otherwise a box whose part id depends on the pixels."""

    model_id = "fake-1"

    def __init__(self, cfg: ParseConfig):
        self.cfg = cfg
        self.calls = 0

    def parse(self, image_rgb: np.ndarray) -> ParseResult:
        self.calls += 1
        if image_rgb.mean() < 20:
            return ParseResult.empty(LABEL_HW)
        label = np.zeros(LABEL_HW, np.uint8)
        label[4:20, 2:12] = 1 + int(image_rgb.sum()) % 8
        kps = np.full((17, 3), 0.5, np.float32)
        return ParseResult(label, kps, True)


def make_images(root: Path, n: int, start: int = 0) -> pd.DataFrame:
    rows = []
    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        arr = rng.integers(0, 255, (24, 12, 3), dtype=np.uint8) if i % 5 else np.full((24, 12, 3), i % 17, np.uint8)
        path = root / "imgs" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        rows.append({"key": hashlib.sha1(path.read_bytes()).hexdigest(), "path": f"imgs/{path.name}"})
    return pd.DataFrame(rows)


def corrupt_image(root: Path) -> pd.DataFrame:
    path = root / "imgs" / "broken.jpg"
    path.write_bytes(b"not a jpeg at all")
    return pd.DataFrame([{"key": hashlib.sha1(path.read_bytes()).hexdigest(), "path": "imgs/broken.jpg"}])


@pytest.fixture()
def cfg() -> ParseConfig:
    return dataclasses.replace(ParseConfig(), label_height=LABEL_HW[0], label_width=LABEL_HW[1], shard_size=4,
                               workers=0)


def run(index, root, cfg, out, **kw):
    parser = kw.pop("parser", None) or FakeParser(cfg)
    return parse_dataset(index, root, cfg, out, progress=False, parser=parser, **kw), parser


def test_rerun_parses_nothing_and_new_images_only(tmp_path, cfg):
    index = pd.concat([make_images(tmp_path, 10), corrupt_image(tmp_path)], ignore_index=True)
    out = tmp_path / "parsing"
    s1, p1 = run(index, tmp_path, cfg, out)
    assert (s1.n_images, s1.parsed_now, s1.cached) == (11, 11, 0)
    assert s1.status_counts == {"ok": 8, "no_person": 2, "unreadable": 1}
    assert p1.calls == 10  # the corrupt file is never handed to the backend
    assert s1.coverage == pytest.approx(0.8)
    assert s1.mean_visible_parts == pytest.approx(0.8)  # 8 images x 1 part + 2 x 0, over readable
    assert len(shard_paths(out, s1.cache_id)) == 3  # 11 images / shard_size 4

    s2, p2 = run(index, tmp_path, cfg, out)
    assert (s2.parsed_now, s2.cached, p2.calls) == (0, 11, 0)

    bigger = pd.concat([index, make_images(tmp_path, 3, start=100)], ignore_index=True)
    s3, p3 = run(bigger, tmp_path, cfg, out)
    assert (s3.parsed_now, s3.cached, p3.calls) == (3, 11, 3)

    df = read_parsing(out)
    assert len(df) == 14 and df["key"].is_unique
    broken = df[df["status"] == "unreadable"].iloc[0]
    assert "broken.jpg" in broken["error"] and not broken["person_found"]
    assert decode_label_map(broken["label_map"]).max() == 0
    dark = df[df["status"] == "no_person"].iloc[0]
    assert decode_label_map(dark["label_map"]).max() == 0 and not dark["person_found"]
    row = df[df["status"] == "ok"].iloc[0]
    assert len(row["keypoints"]) == 51 and len(row["part_counts"]) == 9
    assert (row["label_height"], row["label_width"]) == LABEL_HW
    assert {"key", "cache_id", "backend", "model_id", "status", "person_found", "label_map", "label_height",
            "label_width", "keypoints"} <= set(df.columns)


def test_interrupted_run_resumes_to_the_same_content(tmp_path, cfg):
    index = make_images(tmp_path, 10)
    full, _ = run(index, tmp_path, cfg, tmp_path / "full")

    class Killed(RuntimeError):
        pass

    def kill_after_first(path: Path) -> None:
        raise Killed(str(path))

    with pytest.raises(Killed):
        run(index, tmp_path, cfg, tmp_path / "resumed", on_shard=kill_after_first)
    assert len(shard_paths(tmp_path / "resumed", full.cache_id)) == 1
    assert not list((tmp_path / "resumed").glob("*.tmp"))
    resumed, parser = run(index, tmp_path, cfg, tmp_path / "resumed")
    assert (resumed.parsed_now, resumed.cached, parser.calls) == (6, 4, 6)
    pd.testing.assert_frame_equal(read_parsing(tmp_path / "full"), read_parsing(tmp_path / "resumed"))


def test_cache_id_depends_on_result_params_only(tmp_path, cfg):
    base = compute_cache_id(cfg, "m")
    assert compute_cache_id(dataclasses.replace(cfg, workers=7, shard_size=3, overlay_grid=4, device="cpu"), "m") == base
    assert compute_cache_id(dataclasses.replace(cfg, min_keypoint_visibility=0.3), "m") != base
    assert compute_cache_id(dataclasses.replace(cfg, pad_ratios=(1.0,)), "m") != base
    assert compute_cache_id(cfg, "other-model") != base
    index = make_images(tmp_path, 3)
    run(index, tmp_path, cfg, tmp_path / "p")
    s, p = run(index, tmp_path, dataclasses.replace(cfg, limb_width_ratio=0.2), tmp_path / "p")
    assert s.parsed_now == 3 and p.calls == 3  # new params: parsed again, old rows kept beside
    assert len(read_parsing(tmp_path / "p")) == 3  # reader returns the active (latest) configuration


def test_readers(tmp_path, cfg):
    with pytest.raises(FileNotFoundError, match="run the parse stage"):
        read_parsing(tmp_path / "nothing")
    index = make_images(tmp_path, 4)
    run(index, tmp_path, cfg, tmp_path / "p")
    maps = load_label_maps(tmp_path / "p", keys=index["key"][:2])
    assert list(maps) == index["key"][:2].tolist()
    assert all(m.shape == LABEL_HW and m.dtype == np.uint8 for m in maps.values())
    assert len(load_label_maps(tmp_path / "p")) == 4
    with pytest.raises(ParsingIncompleteError, match=r"1 of 1 requested image\(s\) have no parsing result.*dvc repro parse"):
        load_label_maps(tmp_path / "p", keys=["deadbeef"])
    with pytest.raises(ValueError, match="missing column"):
        parse_dataset(pd.DataFrame({"key": ["a"]}), tmp_path, cfg, tmp_path / "q", parser=FakeParser(cfg))


def test_png_round_trip():
    m = np.random.default_rng(0).integers(0, 9, (256, 128)).astype(np.uint8)
    np.testing.assert_array_equal(decode_label_map(encode_label_map(m)), m)
