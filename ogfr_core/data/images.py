"""Reading one image file: RGB conversion, size and content key, with clear errors.

Every image the pipeline touches goes through :func:`load_rgb` (decode + convert to RGB; the parse
stage uses its two halves :func:`read_image_bytes` + :func:`decode_rgb` to hash the bytes it decodes) or
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

from ..errors import UserError

__all__ = ["ImageReadError", "ImageInfo", "decode_rgb", "load_rgb", "read_image_bytes", "read_image_info", "to_rgb",
           "IMAGE_SUFFIXES"]

# Suffixes (lower case) the readers consider images; Occluded-REID ships .tif files.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

_FIX = "re-extract or re-download the dataset, or delete the file and rerun `dvc repro index`"


class ImageReadError(UserError, ValueError):
    """An image file could not be read (missing, unreadable, empty, truncated, not an image, too large).

    Attributes:
        path: the file.
        reason: what went wrong, short (e.g. ``"empty file (0 bytes)"``), used in skip lists.
        transient: True when the *environment* failed (the file vanished, permissions, an I/O
            error), not its bytes: such a failure must never be cached as the image's result.

    Also constructible from its message alone (``ImageReadError(message)``): torch's DataLoader
    re-raises a worker's exception as ``type(exc)(text with the worker's traceback)``; the one-line
    message at the end of that text is kept, so the stage still logs one clear line.
    """

    def __init__(self, path: str | Path, reason: str | None = None, transient: bool = False):
        if reason is None:  # rebuilt from a message (DataLoader worker re-raise)
            message = _last_message(str(path), type(self).__name__)
            self.path, self.reason, self.transient = message.split(": cannot read image:")[0], message, transient
            super().__init__(message)
            return
        self.path = str(path)
        self.reason = reason
        self.transient = transient
        super().__init__(f"{self.path}: cannot read image: {reason}; {_FIX}")

    def __reduce__(self):  # pickles with its fields (multiprocessing workers)
        return (type(self), (self.path, self.reason, self.transient))


def _last_message(text: str, type_name: str) -> str:
    """The original ``Type: message`` line at the end of a re-raised worker traceback, without the
    type; ``text`` itself when it is not such a traceback."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) > 1 and "Traceback" in text:
        last = lines[-1]
        head, sep, rest = last.partition(": ")
        if sep and head.split(".")[-1] == type_name:
            return rest + " (in a DataLoader worker)"
        return last
    return text


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


def read_image_bytes(path: str | Path) -> bytes:
    """The bytes of an image file.

    Raises:
        ImageReadError: ``transient=True`` when the file is missing, not a regular file, or cannot be
            read (permissions, I/O error): the environment failed, not the image; ``transient=False``
            for an empty file (0 bytes, a property of the content).
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise ImageReadError(path, "file not found" if not path.exists() else "not a regular file",
                                 transient=True)
        data = path.read_bytes()
    except OSError as exc:  # permissions, EIO, a folder swapped in between is_file and read
        raise ImageReadError(path, f"cannot read the file ({exc.strerror or exc})", transient=True) from None
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
    except Image.DecompressionBombError as exc:  # more than 2 x Image.MAX_IMAGE_PIXELS pixels
        raise ImageReadError(path, f"image too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # PIL: truncated / broken data
        raise ImageReadError(path, f"corrupt or truncated image ({exc})") from None
    return img


def decode_rgb(data: bytes, path: str | Path = "<bytes>") -> Image.Image:
    """Decode image file bytes fully and convert them to mode ``RGB`` (:func:`to_rgb`): the one
    converter every stage uses (index, parse, train, evaluate), so label maps are computed on the
    pixels the model sees.

    Raises:
        ImageReadError: ``data`` is not a decodable image (``transient=False``: a property of the bytes).
    """
    return to_rgb(_decode(data, Path(path)))


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
    return decode_rgb(read_image_bytes(path), path)


def read_image_info(path: str | Path) -> ImageInfo:
    """Decode ``path`` fully (catches truncation) and return its size and SHA-1 content key.

    Reads the bytes once: the key is the SHA-1 of exactly the bytes decoded.

    Raises:
        ImageReadError: as :func:`load_rgb`.
    """
    path = Path(path)
    data = read_image_bytes(path)
    img = _decode(data, path)
    return ImageInfo(key=hashlib.sha1(data).hexdigest(), width=img.width, height=img.height)
