"""Checks and readers for the evaluate stage's inputs: the checkpoint's meta and the occlusion parquet.

Both fail with a message naming the file and the fix (never a bare traceback, never a silent
partial evaluation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import UserError

Z_COLUMNS = ("z_head", "z_arms", "z_torso", "z_legs")
META_KEYS = ("model", "data", "train", "num_classes", "num_cameras", "height", "width",
             "epochs_trained", "pretrained_weights", "method")


class CheckpointMismatchError(UserError, ValueError):
    """The checkpoint was trained under another config than the one being evaluated."""


def check_meta(meta: Mapping[str, Any], path: str | Path, dataset: str) -> None:
    """Check a checkpoint's meta against the evaluated ``data`` config.

    Args:
        meta: the ``meta`` dict of ``ogfr_core.training.checkpoint.load_model``.
        path: checkpoint file (for the message).
        dataset: ``data.name`` the checkpoint is expected to be trained on.

    Raises:
        CheckpointMismatchError: meta keys missing, or trained on another dataset. The input size is
            taken from the checkpoint (not from params), so a params change of ``data.height``
            without retraining does not silently evaluate at the wrong size.
    """
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise CheckpointMismatchError(f"{path}: checkpoint meta lacks {missing}; it was not written by "
                                      "this pipeline's train stage — run `dvc repro train`")
    trained_on = (meta.get("data") or {}).get("name")
    if trained_on is not None and trained_on != dataset:
        raise CheckpointMismatchError(
            f"{path}: checkpoint was trained on '{trained_on}' but data.name is '{dataset}'; "
            "run `dvc repro train` for this dataset (cross-dataset sets go in evaluate.extra_datasets)")
    for k in ("height", "width", "num_cameras"):
        if not isinstance(meta[k], (int, np.integer)) or meta[k] < 0:
            raise CheckpointMismatchError(f"{path}: checkpoint meta '{k}' = {meta[k]!r} is not a size")


def read_occlusion_z(path: str | Path) -> dict[str, np.ndarray]:
    """Occlusion labels per image key from ``data/occlusion/<name>.parquet``.

    Returns:
        key → ``[4]`` int64 z = (head, arms, torso, legs), 1 = occluded (Eq. 2).

    Raises:
        FileNotFoundError: missing file (names ``dvc repro occlusion``).
        ValueError: missing columns, values outside {0, 1}, or duplicated keys.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: occlusion labels not found; run `dvc repro occlusion`")
    frame = pd.read_parquet(path, columns=None)
    missing = [c for c in ("key", *Z_COLUMNS) if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: occlusion parquet lacks column(s) {missing}; run `dvc repro occlusion`")
    z = frame[list(Z_COLUMNS)].to_numpy(np.int64)  # [N, 4]
    if z.size and not np.isin(z, (0, 1)).all():
        raise ValueError(f"{path}: z columns must be 0/1; run `dvc repro occlusion`")
    keys = frame["key"].astype(str).tolist()
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicated image keys; run `dvc repro occlusion`")
    return dict(zip(keys, z))
