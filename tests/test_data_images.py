"""load_rgb / read_image_info: mode conversion to RGB and clear errors for unreadable files."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from ogfr_core.data import ImageReadError, load_rgb, read_image_info
from _data_synth import write_jpeg


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 16), (0, 255, 255, 0)).save(p)  # pure red in CMYK
    img = load_rgb(p)
    assert img.mode == "RGB" and img.size == (8, 16)
    r, g, b = np.asarray(img).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_grayscale_replicated_to_three_channels(tmp_path):
    p = tmp_path / "gray.png"
    Image.fromarray(np.arange(8 * 16, dtype=np.uint8).reshape(16, 8), mode="L").save(p)
    arr = np.asarray(load_rgb(p))
    assert arr.shape == (16, 8, 3)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    assert arr[1, 0, 0] == 8


def test_png_alpha_composited_on_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:2, :, 3] = 255  # top half opaque
    rgba[2:, :, 3] = 0    # bottom half transparent
    p = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(p)
    arr = np.asarray(load_rgb(p))
    assert arr.shape == (4, 4, 3)
    assert (arr[:2] == 200).all() and (arr[2:] == 0).all()


def test_16bit_grayscale_rescaled(tmp_path):
    p = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(p)
    assert (np.asarray(load_rgb(p)) == 255).all()


def test_palette_png(tmp_path):
    p = tmp_path / "pal.png"
    Image.new("RGB", (4, 4), (10, 20, 30)).convert("P").save(p)
    assert load_rgb(p).mode == "RGB"


def test_info_key_is_sha1_of_bytes(tmp_path):
    p = write_jpeg(tmp_path / "a.jpg", size=(12, 24))
    info = read_image_info(p)
    assert info.key == hashlib.sha1(p.read_bytes()).hexdigest()
    assert (info.width, info.height) == (12, 24)


@pytest.mark.parametrize("kind,reason", [
    ("missing", "file not found"),
    ("empty", "0 bytes"),
    ("garbage", "not a recognised image"),
    ("truncated", "truncated"),
])
def test_unreadable_files_raise_naming_file(tmp_path, kind, reason):
    p = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(b"this is not a jpeg" * 10)
    elif kind == "truncated":
        full = write_jpeg(tmp_path / "full.jpg", size=(64, 128)).read_bytes()
        p.write_bytes(full[: len(full) // 2])
    for fn in (load_rgb, read_image_info):
        with pytest.raises(ImageReadError) as exc:
            fn(p)
        assert str(p) in str(exc.value) and reason in str(exc.value)
        assert "dvc repro index" in str(exc.value)
        assert isinstance(exc.value, ValueError)
