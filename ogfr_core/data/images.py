"""Reading one image file: RGB conversion, size and content key, with clear errors.

Every image the pipeline touches goes through :func:`load_rgb` (decode + convert to RGB) or
:func:`read_image_info` (decode + size + SHA-1 content key, used by the ``index`` stage). Unreadable
files raise :class:`ImageReadError`, which names the file and what to do; the index stage turns it
into a logged skip counted in ``reports/index/summary.json``.

Mode conversion (PIL modes):

- ``RGB``: unchanged. ``L`` / ``1`` (grayscale, bilevel) and ``CMYK`` / ``YCbCr``: PIL's
  ``convert("RGB")`` (grayscale is replicated to the three channels; CMYK uses PIL's naive
  ``R = 255 - C - K``-style conversion, adequate for photos saved by mistake as CMYK).
- ``P`` (palette): expanded through the palette; a palette with transparency is treated as RGBA.
- ``RGBA`` / ``LA`` / ``PA`` / ``RGBa``: the alpha channel is **composited on black**
  (``rgb * alpha / 255``), i.e. transparent pixels become background-black like the zero padding
  of the train transforms, rather than keeping the arbitrary colour stored under alpha = 0.
- ``I`` / ``I;16`` / ``F`` (16/32-bit grayscale): rescaled linearly to 0..255 by the value range of
  the type (``I;16``: 65535; ``I``/``F``: the image's max), then replicated to RGB.

EXIF orientation is ignored (as ``torchvision``/``torchreid``'s ``Image.open(p).convert("RGB")``):
re-ID crops are stored upright.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageReadError", "ImageInfo", "load_rgb", "read_image_info", "to_rgb", "IMAGE_SUFFIXES"]

# Suffixes (lower case) the readers consider images; Occluded-REID ships .tif files.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

_FIX = "re-extract or re-download the dataset, or delete the file and rerun `dvc repro index`"


class ImageReadError(ValueError):
    """An image file could not be read (missing, empty, truncated, not an image).

    Attributes:
        path: the file.
        reason: what went wrong, short (e.g. ``"empty file (0 bytes)"``), used in skip lists.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: cannot read image: {reason}; {_FIX}")


@dataclass(frozen=True)
class ImageInfo:
    """Size and content key of a decoded image file.

    Attributes:
        key: SHA-1 hex digest of the file bytes (DESIGN.md contract: the image's key).
        width: pixels.
        height: pixels.
    """

    key: str
    width: int
    height: int


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ImageReadError(path, "file not found" if not path.exists() else "not a regular file")
    data = path.read_bytes()
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    return data


def _decode(data: bytes, path: Path) -> Image.Image:
    """Fully decode ``data`` (``Image.load``), so truncated files fail here and not later."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a recognised image format (corrupt file?)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # PIL: truncated / broken data
        raise ImageReadError(path, f"corrupt or truncated image ({exc})") from None
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any common mode to mode ``RGB`` (rules in the module doc)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode == "RGB":
            return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)  # [H, W]
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGB", rgba.size, (0, 0, 0))
        black.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))  # rgb*a + 0*(1-a)
        return black
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Read an image file (JPEG, PNG, TIFF, BMP) as a fully decoded mode-``RGB`` PIL image.

    Args:
        path: image file.

    Returns:
        ``PIL.Image.Image`` of mode ``RGB``, size as stored (W x H pixels).

    Raises:
        ImageReadError: the file is missing, 0 bytes, truncated, corrupt or not an image; the
            message names the file and the fix.
    """
    path = Path(path)
    return to_rgb(_decode(_read_bytes(path), path))


def read_image_info(path: str | Path) -> ImageInfo:
    """Decode ``path`` fully (catches truncation) and return its size and SHA-1 content key.

    Reads the bytes once: the key is the SHA-1 of exactly the bytes decoded.

    Raises:
        ImageReadError: as :func:`load_rgb`.
    """
    path = Path(path)
    data = _read_bytes(path)
    img = _decode(data, path)
    return ImageInfo(key=hashlib.sha1(data).hexdigest(), width=img.width, height=img.height)
