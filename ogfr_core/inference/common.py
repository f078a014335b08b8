"""What `ogfr search` and `ogfr export` share: loading a checkpoint for inference, its test
transform, image files and their content keys, and the errors a user can fix.

Everything works through the student-branch inference API of DESIGN.md, whatever method the
checkpoint holds::

    model.extract(images [B,3,H,W] float, z [B,4] long, camids [B] long)
        -> {"global": [B,D], "parts": [B,K,D], "visibility": [B,K] bool}
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..data.images import IMAGE_SUFFIXES, ImageReadError, read_image_info
from ..errors import UserError


class InferenceInputError(UserError, ValueError):
    """Bad input to ``ogfr search`` / ``ogfr export`` (unreadable query, empty gallery, missing params
    file, no crops to verify on); the message names the file/option and the fix."""


def load_inference_model(path: str | Path, device: Any = "cpu") -> tuple[Any, dict]:
    """:func:`ogfr_core.training.checkpoint.load_model` for inference, with one clear error for a
    checkpoint this code cannot use.

    Returns:
        ``(model in eval mode on device, meta)``.

    Raises:
        CheckpointError: missing/unreadable file, state-dict mismatch (another version of the code:
            keys listed), meta naming a method/config this version does not know, or a model
            without ``extract``.
    """
    from ..config import ConfigError
    from ..model import ModelConfigError
    from ..training.checkpoint import CheckpointError, load_model

    try:
        model, meta = load_model(path, device)
    except (ConfigError, ModelConfigError) as exc:
        raise CheckpointError(f"{path}: its meta describes a model this version cannot build ({exc}); it was "
                              "written by another method or version of the pipeline — use that version, or "
                              "retrain with `dvc repro train`") from exc
    if not callable(getattr(model, "extract", None)):
        raise CheckpointError(f"{path}: method {meta.get('method')!r} has no inference API (model.extract)")
    return model, meta


def file_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-1 (hex) of a file's bytes, read in chunks (checkpoints can be hundreds of MB)."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def eval_transform(meta: dict):
    """The checkpoint's test transform: resize to its ``height × width``, normalise with the
    training ``augment.mean``/``std`` (as the evaluate stage does)."""
    from ..data.transforms import TestTransform

    aug = (meta.get("train") or {}).get("augment") or {}
    return TestTransform(meta["height"], meta["width"], aug.get("mean", (0.5,) * 3), aug.get("std", (0.5,) * 3))



def list_images(folder: str | Path) -> list[Path]:
    """Image files (:data:`~ogfr_core.data.images.IMAGE_SUFFIXES`, any case) below ``folder``,
    recursively, sorted by path.

    Raises:
        InferenceInputError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InferenceInputError(f"{folder}: not a directory of images")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_key(path: str | Path, role: str = "image") -> str:
    """Content key (SHA-1 of the bytes, DESIGN.md) of an image that must be readable (decoded fully).

    Raises:
        InferenceInputError: the file is missing, empty, truncated or not an image (names ``role``).
    """
    try:
        return read_image_info(path).key
    except ImageReadError as exc:
        raise InferenceInputError(f"{role} {path}: cannot read image: {exc.reason}") from None
