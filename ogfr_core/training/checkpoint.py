"""Checkpoints: atomic save (``ogfr_core.io.save_torch``) and a ``weights_only=True`` model loader.

A checkpoint is ``{"model": state_dict, "optimizer", "scheduler", "scaler": state dicts or None,
"epoch": int, "meta": dict}`` with only tensors and plain Python values, so
``torch.load(..., weights_only=True)`` reads it. ``meta`` keys (all plain dict/list/str/int):
``model``, ``data``, ``train`` (the params sections as dicts), ``num_classes``, ``num_cameras``,
``height``, ``width``, ``epochs_trained``, ``pretrained_weights`` ("" = random init), ``init_warning``
("" or the random-init warning the report shows), ``method``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig, from_dict
from ..errors import UserError
from ..io import TEMP_PREFIX, TEMP_SUFFIX, save_torch

REQUIRED_META = ("model", "data", "train", "num_classes", "num_cameras", "height", "width",
                 "epochs_trained", "pretrained_weights", "method")


# ``train`` / ``data`` params that do not change what a run computes (left out of the fingerprint).
# ``epochs`` stays in: the cosine schedule depends on it.
NON_RESULT_TRAIN_KEYS = ("log_every", "device", "threads")
NON_RESULT_DATA_KEYS = ("num_workers",)
# subpackages of ogfr_core whose source defines the training computation
CODE_PACKAGES = ("model", "losses", "training", "data", "occlusion")


def code_hash(packages: tuple[str, ...] = CODE_PACKAGES) -> str:
    """SHA-1 (hex) over the sorted ``*.py`` files (relative path + contents) of the given ``ogfr_core``
    subpackages. Changes whenever the training code changes, so a stale ``last.pt`` is not resumed."""
    root = Path(__file__).resolve().parents[1]  # ogfr_core/
    h = hashlib.sha1()
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def files_hash(paths: list[str | Path]) -> str:
    """SHA-1 (hex) over the given files and, for folders, every file below them (sorted; name +
    contents), except the temp files of interrupted atomic writes (``.*.tmp``). Used for the stage
    inputs (index, parsing cache, occlusion labels) in the fingerprint.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    h = hashlib.sha1()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found (needed for the run fingerprint)")
        files = sorted(f for f in p.rglob("*") if f.is_file() and not _is_temp(f)) if p.is_dir() else [p]
        for f in files:
            h.update(f.relative_to(p.parent).as_posix().encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def _is_temp(f: Path) -> bool:
    """A temp file of :func:`ogfr_core.io.atomic_path` (``.<name>.<random>.tmp``)."""
    return f.name.startswith(TEMP_PREFIX) and f.name.endswith(TEMP_SUFFIX)


def _sha1_json(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def run_fingerprint(meta: dict[str, Any], code: str | None = None) -> dict[str, str]:
    """What identifies a run for auto-resume: ``{"config": sha1, "code": sha1, "fingerprint": sha1}``.

    ``config`` hashes ``meta["train"]`` without :data:`NON_RESULT_TRAIN_KEYS`, ``meta["data"]`` without
    :data:`NON_RESULT_DATA_KEYS`, ``num_classes``, ``num_cameras``, ``height``, ``width``, and the
    optional ``inputs`` (stage-input hash, :func:`files_hash`) and ``world_size`` entries; ``code`` is
    :func:`code_hash`; ``fingerprint`` hashes both.
    """
    train = {k: v for k, v in dict(meta.get("train", {})).items() if k not in NON_RESULT_TRAIN_KEYS}
    data = {k: v for k, v in dict(meta.get("data", {})).items() if k not in NON_RESULT_DATA_KEYS}
    config = _sha1_json({"train": train, "data": data,
                         **{k: meta.get(k) for k in ("num_classes", "num_cameras", "height", "width", "inputs",
                                                      "world_size")}})
    code = code_hash() if code is None else code
    return {"config": config, "code": code, "fingerprint": _sha1_json([config, code])}


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the model it is loaded into."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    scheduler: Any | None, epoch: int, meta: dict[str, Any], scaler: Any | None = None) -> None:
    """Write a checkpoint atomically (temp file + rename), so a killed run leaves the previous one.

    Raises:
        CheckpointError: ``meta`` lacks one of :data:`REQUIRED_META`.
    """
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint meta lacks {missing}")
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "meta": dict(meta, epochs_trained=int(epoch)),
    }
    save_torch(path, state)


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``.

    Raises:
        CheckpointError: file missing or not a readable checkpoint (names the file and the stage).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (run `dvc repro train`)")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # re-raised with the file name
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ck, dict) or "model" not in ck or "meta" not in ck:
        raise CheckpointError(f"{path} is not an OGFR checkpoint (no 'model'/'meta' entries)")
    return ck


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` that raises listing every missing/unexpected key (never a partial load)."""
    result = unwrap(model).load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{source} does not match the model:\n  missing keys: {result.missing_keys}\n"
                              f"  unexpected keys: {result.unexpected_keys}")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint's meta and load its weights (``weights_only=True``).

    Returns:
        ``(model in eval mode on device, meta)``; ``model.init_warning`` carries the random-init warning.

    Raises:
        CheckpointError: unreadable file, incomplete meta, or state-dict mismatch (keys listed).
    """
    from ..model import build_model

    ck = read_checkpoint(path, device)
    meta = ck["meta"]
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: checkpoint meta lacks {missing}")
    cfg = from_dict(ModelConfig, meta["model"], "meta.model")
    model = build_model(cfg, int(meta["num_classes"]), int(meta["num_cameras"]),
                        (int(meta["height"]), int(meta["width"])), load_weights=False)
    load_state_strict(model, ck["model"], str(path))
    model.init_warning = meta.get("init_warning", "")
    return model.to(device).eval(), meta
