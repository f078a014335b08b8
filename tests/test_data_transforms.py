"""Train/test transforms: shapes, flip with left/right id swap, pad+crop alignment, erasing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ogfr_core.config import AugmentConfig
from ogfr_core.data import LR_SWAP, TestTransform, TrainTransform

H, W = 64, 32
STEP = 28  # image colour = part id * STEP (ids 0..8 -> 0..224)


def _labelled_pair(seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A label map of 8x8 blocks with random part ids and an image whose red channel encodes it."""
    rng = np.random.default_rng(seed)
    lab = np.kron(rng.integers(0, 9, size=(H // 8, W // 8)), np.ones((8, 8), np.int64)).astype(np.uint8)
    img = np.stack([lab * STEP, np.full_like(lab, 0), 255 - lab * STEP], axis=-1).astype(np.uint8)
    return Image.fromarray(img), lab


def _red_ids(img: torch.Tensor) -> torch.Tensor:
    """Undo normalisation (mean = std = 0.5) and decode the red channel back to part ids."""
    red = (img[0] * 0.5 + 0.5) * 255  # [H, W] in 0..255
    return torch.round(red / STEP).to(torch.int64)


@pytest.mark.parametrize("flip", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pad_crop_flip_keep_image_and_labels_aligned(flip, seed):
    image, lab = _labelled_pair(seed)
    t = TrainTransform(H, W, AugmentConfig(flip_prob=flip, pad=10, erasing_prob=0.0))
    torch.manual_seed(seed)
    img, lab_out = t(image, lab)
    assert img.shape == (3, H, W) and img.dtype == torch.float32
    assert lab_out.shape == (H, W) and lab_out.dtype == torch.int64
    assert 0 <= lab_out.min() and lab_out.max() <= 8
    encoded = _red_ids(img)  # ids as drawn in the image (before any left/right swap)
    expected = LR_SWAP[lab_out] if flip else lab_out
    assert torch.equal(encoded, expected)
    # padding is background in both: some crop offsets show it, all must agree (checked above)


def test_flip_mirrors_and_swaps_left_right():
    lab = np.zeros((H, W), np.uint8)
    lab[:, : W // 2] = 2   # left arm on the image's left half
    lab[:8, W // 2:] = 5   # left leg top-right
    lab[8:16, W // 2:] = 7  # left foot
    lab[16:24, W // 2:] = 1  # head (no side)
    image = Image.fromarray(np.zeros((H, W, 3), np.uint8))
    t = TrainTransform(H, W, AugmentConfig(flip_prob=1.0, pad=0, erasing_prob=0.0))
    _, out = t(image, lab)
    assert (out[:, W // 2:] == 3).all()  # mirrored to the right half, now "right arm"
    assert (out[:8, : W // 2] == 6).all() and (out[8:16, : W // 2] == 8).all()
    assert (out[16:24, : W // 2] == 1).all()
    assert LR_SWAP.tolist() == [0, 1, 3, 2, 4, 6, 5, 8, 7]


def test_flip_mirrors_image():
    arr = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    t = TrainTransform(H, W, AugmentConfig(flip_prob=1.0, pad=0, erasing_prob=0.0))
    img, none = t(Image.fromarray(arr))
    assert none is None
    ref = (torch.from_numpy(arr[:, ::-1].copy()).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(img, ref)


def test_resize_label_map_from_other_resolution():
    """Label maps are stored at 256x128; images here are 128x64 and the input 64x32."""
    rng = np.random.default_rng(3)
    lab = np.kron(rng.integers(0, 9, (8, 4)), np.ones((32, 32), np.int64)).astype(np.uint8)  # [256, 128]
    image = Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
    t = TrainTransform(H, W, AugmentConfig(flip_prob=0.0, pad=0, erasing_prob=0.0))
    img, out = t(image, lab)
    assert img.shape == (3, H, W) and out.shape == (H, W)
    expected = np.kron(lab[::32, ::32], np.ones((8, 8), np.int64))  # nearest-neighbour downscale
    assert torch.equal(out, torch.from_numpy(expected))


def test_random_erasing_image_only_and_reproducible():
    image, lab = _labelled_pair(0)
    off = TrainTransform(H, W, AugmentConfig(flip_prob=0.5, pad=10, erasing_prob=0.0))
    on = TrainTransform(H, W, AugmentConfig(flip_prob=0.5, pad=10, erasing_prob=1.0))
    torch.manual_seed(5)
    img0, lab0 = off(image, lab)
    torch.manual_seed(5)
    img1, lab1 = on(image, lab)
    torch.manual_seed(5)
    img2, lab2 = on(image, lab)
    assert torch.equal(img1, img2) and torch.equal(lab1, lab2)  # seeded torch RNG -> reproducible
    assert torch.equal(lab0, lab1)  # label map untouched by erasing
    changed = (img0 != img1).any(0)  # [H, W]
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert len(rows) > 0
    box = img1[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert (box == 0).all()  # filled with the mean (0 after normalisation)
    area = box.shape[1] * box.shape[2] / (H * W)
    assert 0.02 * 0.5 <= area <= 0.4 + 0.05  # rounding of the box sides


def test_bad_label_map():
    image, _ = _labelled_pair()
    t = TrainTransform(H, W, AugmentConfig())
    with pytest.raises(ValueError, match=r"ids must be in 0..8"):
        t(image, np.full((H, W), 9, np.uint8))
    with pytest.raises(ValueError, match=r"must be \[h, w\]"):
        t(image, np.zeros((1, H, W), np.uint8))


def test_test_transform():
    t = TestTransform(H, W, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = t(Image.new("RGB", (W * 2, H * 2), (255, 0, 255)))
    assert out.shape == (3, H, W) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 5, 5], torch.tensor([1.0, -1.0, 1.0]))


def test_resize_keeps_image_and_label_map_aligned():
    """Image 64x32 and label map 256x128 of the same scene, output 40x24 (non-integer scales): away
    from block edges the image colour and the label map agree."""
    rng = np.random.default_rng(4)
    blocks = rng.integers(0, 9, (8, 4))
    lab = np.kron(blocks, np.ones((32, 32), np.int64)).astype(np.uint8)  # [256, 128]
    small = np.kron(blocks, np.ones((8, 8), np.int64)).astype(np.uint8)  # [64, 32]
    image = Image.fromarray(np.stack([small * STEP, np.zeros_like(small), 255 - small * STEP], -1))
    t = TrainTransform(40, 24, AugmentConfig(flip_prob=0.0, pad=0, erasing_prob=0.0))
    img, out = t(image, lab)
    # interior pixels: the label is constant on the 3x3 neighbourhood
    o = out.numpy()
    interior = np.ones_like(o, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= np.roll(np.roll(o, dy, 0), dx, 1) == o
    interior[[0, -1], :] = interior[:, [0, -1]] = False
    assert interior.sum() > 0.3 * o.size
    assert (_red_ids(img).numpy()[interior] == o[interior]).all()
