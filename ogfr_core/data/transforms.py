"""Train / test transforms (OGFR §IV-B, following TransReID), applied jointly to an image and its
part label map.

Train: resize to H x W (image bilinear with antialias, label map nearest, centre-aligned) -> random horizontal
flip (prob ``aug.flip_prob``; the label map is mirrored *and* its left/right part ids are swapped,
2<->3 arms, 5<->6 legs, 7<->8 feet, so "left arm" stays the person's left arm) -> zero-pad
``aug.pad`` pixels on every side (image black, label map 0 = background; TransReID's ``T.Pad``
before normalisation) -> random crop back to H x W at the same offset for both -> scale to [0, 1]
and normalise with ``aug.mean``/``aug.std`` -> random erasing of the *image only* with prob
``aug.erasing_prob`` (Zhong et al. 2020 "Random Erasing", as the re-ID strong baseline: area
0.02-0.4 of the image, aspect 0.3-3.3, filled with 0 after normalisation, i.e. the normalisation
mean). The label map is not erased: it describes the person, the erased block is an artificial
occluder the network must learn to ignore. Note: TransReID's released code, as far as we know,
uses timm's ``RandomErasing(mode="pixel")`` (per-pixel Gaussian noise) and bicubic resizing; we
follow the mean-fill / bilinear choice of the re-ID baseline. torchvision's ``RandomErasing`` draws
the aspect ratio log-uniformly.

All randomness comes from torch's global RNG (``torch.rand``/``torch.randint`` and torchvision's
``RandomErasing``), so ``torch.manual_seed`` (and the DataLoader's per-worker seeding) makes the
transforms reproducible.

Test: resize bilinear to H x W, scale to [0, 1], normalise.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from .. import PART_NAMES
from ..config import AugmentConfig

__all__ = ["LR_SWAP", "TrainTransform", "TestTransform"]



def _lr_swap(names: Sequence[str]) -> torch.Tensor:
    """Part id -> id of the mirrored part (``left_x`` <-> ``right_x``, others unchanged)."""
    def mirror(n: str) -> str:
        return "right_" + n[5:] if n.startswith("left_") else "left_" + n[6:] if n.startswith("right_") else n
    return torch.tensor([names.index(mirror(n)) for n in names], dtype=torch.int64)


# Part id -> part id after a horizontal flip, from ogfr_core.PART_NAMES: [0, 1, 3, 2, 4, 6, 5, 8, 7].
LR_SWAP = _lr_swap(PART_NAMES)

# Random erasing of the re-ID baseline (Zhong et al.): area fraction and aspect ratio ranges.
ERASING_SCALE = (0.02, 0.4)
ERASING_RATIO = (0.3, 3.3)


def _image_tensor(image: Image.Image | torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL RGB image (or uint8 ``[3, h, w]``) -> uint8 ``[3, H, W]`` resized bilinearly."""
    img = F.pil_to_tensor(image) if isinstance(image, Image.Image) else image  # [3, h, w] uint8
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected an RGB image [3, h, w], got shape {tuple(img.shape)}; load it with load_rgb")
    if tuple(img.shape[-2:]) != (height, width):
        img = F.resize(img, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return img


def _normalise(img: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[3, H, W]`` -> float32 ``[3, H, W]``, ``(x / 255 - mean) / std``."""
    return F.normalize(F.to_dtype(img, torch.float32, scale=True), list(mean), list(std))


class TrainTransform:
    """Joint train augmentation of an image and its part label map (module doc for the order).

    Args:
        height: output height H (pixels).
        width: output width W (pixels).
        aug: ``flip_prob``, ``pad`` (pixels), ``erasing_prob``, ``mean``, ``std``.

    Call:
        ``transform(image, label_map=None) -> (image [3, H, W] float32, label_map [H, W] int64 | None)``
        where ``image`` is a PIL RGB image of any size and ``label_map`` an integer array
        ``[h, w]`` with part ids 0..8 at any resolution (it covers the same crop as the image).

    Raises:
        ValueError: ``label_map`` is not 2-D or has ids outside 0..8.
    """

    def __init__(self, height: int, width: int, aug: AugmentConfig):
        self.height, self.width = int(height), int(width)
        self.aug = aug
        self.erase = v2.RandomErasing(p=aug.erasing_prob, scale=ERASING_SCALE, ratio=ERASING_RATIO, value=0)

    def __call__(self, image: Image.Image, label_map: np.ndarray | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        H, W, pad = self.height, self.width, self.aug.pad
        img = _image_tensor(image, H, W)  # [3, H, W] uint8
        lab = None
        if label_map is not None:
            lab = torch.as_tensor(np.asarray(label_map)).to(torch.int64)
            if lab.ndim != 2:
                raise ValueError(f"label map must be [h, w], got shape {tuple(lab.shape)}")
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= len(LR_SWAP)):
                raise ValueError(f"label map ids must be in 0..{len(LR_SWAP) - 1}, got "
                                 f"{int(lab.min())}..{int(lab.max())}")
            # NEAREST_EXACT samples pixel centres (as PIL's NEAREST and the bilinear image resize),
            # so image and label map stay aligned; plain NEAREST is shifted by half a source pixel.
            lab = F.resize(lab[None].to(torch.uint8), [H, W], interpolation=InterpolationMode.NEAREST_EXACT)[0]
            lab = lab.to(torch.int64)  # [H, W]

        if torch.rand(()) < self.aug.flip_prob:
            img = F.horizontal_flip(img)
            if lab is not None:
                lab = LR_SWAP[F.horizontal_flip(lab)]  # mirror, then left <-> right ids

        if pad > 0:
            img = F.pad(img, [pad, pad, pad, pad], fill=0)  # [3, H+2p, W+2p]
            top = int(torch.randint(0, 2 * pad + 1, ()))
            left = int(torch.randint(0, 2 * pad + 1, ()))
            img = F.crop(img, top, left, H, W)  # [3, H, W]
            if lab is not None:
                lab = F.crop(F.pad(lab[None], [pad, pad, pad, pad], fill=0), top, left, H, W)[0]

        out = self.erase(_normalise(img, self.aug.mean, self.aug.std))  # [3, H, W] float32
        return out, lab


class TestTransform:
    """Resize (bilinear) + normalise: ``transform(image) -> [3, H, W]`` float32.

    Args:
        height, width: output size (pixels).
        mean, std: per-channel normalisation of ``[0, 1]`` values.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, height: int, width: int, mean: Sequence[float], std: Sequence[float]):
        self.height, self.width = int(height), int(width)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return _normalise(_image_tensor(image, self.height, self.width), self.mean, self.std)
