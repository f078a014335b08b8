"""The image index: one row per usable image of a dataset (``data/index/<name>.parquet``).

Columns (DESIGN.md contract): ``key`` (SHA-1 hex of the file bytes), ``path`` (relative to the
dataset root, POSIX), ``pid``, ``camid`` (0-based), ``split`` (train/query/gallery), ``label``
(train pids relabelled 0..N-1 in pid order, -1 for query/gallery), ``width``, ``height`` (pixels).
Numeric columns are int64. Rows are ordered train, query, gallery, then by path. Two files with
identical bytes share a key (counted as ``duplicate_keys`` in the summary); parsing results keyed by
content are shared between them.

Example::

    >>> cfg = DataConfig(name="cuhk03-np-detected", root="../shared/data/cuhk03-np-detected")
    >>> result = build_index(cfg, Path("."))                      # doctest: +SKIP
    >>> summarize_index(result.frame)["train"]                     # doctest: +SKIP
    {'images': 7353, 'ids': 767, 'cameras': 2}
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ConfigError, DataConfig
from ..errors import UserError
from ..io import write_parquet
from .images import ImageReadError, read_image_info
from .readers import READERS, SPLITS, DatasetLayoutError, DatasetListing, ImageRecord

__all__ = [
    "INDEX_COLUMNS", "INDEX_SPLITS", "VAL_SPLITS", "IndexResult", "hold_out_validation", "IndexFileError",
    "DatasetReadError", "dataset_root", "build_index", "subset_records",
    "read_index", "write_index", "summarize_index",
]

log = logging.getLogger(__name__)

# Column -> dtype of the index parquet (DESIGN.md).
INDEX_COLUMNS: dict[str, str] = {
    "key": "str", "path": "str", "pid": "int64", "camid": "int64", "split": "str",
    "label": "int64", "width": "int64", "height": "int64",
}
_RERUN = "rerun `dvc repro index`"
#: validation splits carved from the training identities (``data.val_ids``)
VAL_SPLITS = ("val_query", "val_gallery")
INDEX_SPLITS = SPLITS + VAL_SPLITS


class IndexFileError(UserError, ValueError):
    """An index parquet is missing or does not have the contract's columns/dtypes."""


class DatasetReadError(DatasetLayoutError):
    """Image files of the dataset could not be read because of the environment (not their bytes)."""


@dataclass
class IndexResult:
    """Output of :func:`build_index`.

    Attributes:
        frame: the index (columns :data:`INDEX_COLUMNS`).
        skipped: ``(path, reason)`` for every file not in ``frame`` because it could not be used
            (unparseable name from the reader, unreadable image from the decoder).
        junk: images dropped by the protocol (pid -1; pid 0 outside the gallery).
    """

    frame: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    junk: int = 0


def dataset_root(cfg: DataConfig, repo_root: Path) -> Path:
    """``cfg.root`` as a path: absolute roots as given, relative ones joined to ``repo_root``."""
    root = Path(cfg.root).expanduser()
    return root if root.is_absolute() else Path(repo_root) / root


def subset_records(records: list[ImageRecord], max_train_ids: int, max_test_ids: int,
                   distractor_pid: int | None = 0) -> list[ImageRecord]:
    """Deterministic identity subset (the CI profile): keep the ``max_train_ids`` lowest train pids
    and the ``max_test_ids`` lowest test pids (pids of query ∪ gallery, ``distractor_pid``
    excluded); the query and gallery images of the kept test pids are kept, and gallery
    distractors (``distractor_pid``, Market-1501's 0; ``None`` for sets without distractors) are
    always kept. ``0`` = no limit.
    """
    def lowest(split_pids: set[int], n: int) -> set[int] | None:
        return set(sorted(split_pids)[:n]) if n > 0 else None

    keep_train = lowest({r.pid for r in records if r.split == "train"}, max_train_ids)
    keep_test = lowest({r.pid for r in records if r.split != "train" and r.pid != distractor_pid},
                       max_test_ids)
    out = []
    for r in records:
        keep = keep_train if r.split == "train" else keep_test
        if keep is None or r.pid in keep or (r.split == "gallery" and r.pid == distractor_pid):
            out.append(r)
    return out


def hold_out_validation(frame: pd.DataFrame, val_ids: int, seed: int = 0) -> pd.DataFrame:
    """Move ``val_ids`` training identities out of ``train`` into a validation query/gallery split.

    The identities are drawn uniformly without replacement from the sorted training pids with
    ``numpy.random.default_rng(seed)`` (deterministic on every machine, spread over the whole pid
    range). For each held-out pid, the first image of each camera (by path) becomes ``val_query``
    and the rest ``val_gallery`` — CUHK03-NP's test protocol (one query per identity and camera),
    evaluated like the test set (a query's same-camera gallery images are ignored).

    Args:
        frame: index rows with ``pid``, ``camid``, ``split``, ``path`` (before relabelling).
        val_ids: number of identities to hold out (0 = none).

    Returns:
        the frame with those rows' ``split`` changed (a copy).

    Raises:
        ConfigError: ``val_ids`` is negative or leaves fewer than 2 training identities.
    """
    if val_ids == 0:
        return frame
    pids = np.unique(frame.loc[frame["split"] == "train", "pid"].to_numpy())
    if val_ids < 0 or val_ids > len(pids) - 2:
        raise ConfigError(f"data.val_ids = {val_ids}: must be in 0..{len(pids) - 2} "
                          f"(the training split has {len(pids)} identities)")
    held = set(np.random.default_rng(seed).choice(pids, size=val_ids, replace=False).tolist())
    frame = frame.copy()
    rows = frame[(frame["split"] == "train") & frame["pid"].isin(held)].sort_values("path", kind="stable")
    first = ~rows.duplicated(["pid", "camid"])  # first image of each (pid, camera)
    frame.loc[rows.index[first.to_numpy()], "split"] = "val_query"
    frame.loc[rows.index[~first.to_numpy()], "split"] = "val_gallery"
    return frame


def build_index(cfg: DataConfig, repo_root: Path) -> IndexResult:
    """List the dataset with its layout's reader, take the identity subset, open and hash every image.

    Args:
        cfg: the ``data`` params (``root``, ``layout``, camera convention, identity subset).
        repo_root: folder that a relative ``cfg.root`` is relative to.

    Returns:
        :class:`IndexResult`; unusable images (0-byte, corrupt, truncated, too large to decode, smaller
        than ``cfg.min_size`` on a side) are logged skips in ``skipped``, never silently absent.

    Raises:
        ConfigError: unknown ``cfg.layout`` (lists the known ones), or an invalid camera convention.
        DatasetLayoutError: from the reader (missing root, wrong layout, empty split), or a split
            left with no readable image.
        DatasetReadError: some files could not be read for a reason of the environment (vanished,
            permissions, I/O error): they are not skipped (an index without them would be cached
            by DVC as if they did not exist); the message counts them and says what to fix.
    """
    if cfg.layout not in READERS:
        raise ConfigError(f"data.layout '{cfg.layout}' is unknown; choose one of {sorted(READERS)}")
    root = dataset_root(cfg, repo_root)
    listing: DatasetListing = READERS[cfg.layout](
        root, query_camid=cfg.query_camid, gallery_camid=cfg.gallery_camid)
    records = subset_records(listing.records, cfg.max_train_ids, cfg.max_test_ids,
                             distractor_pid=0 if listing.has_distractors else None)
    if len(records) != len(listing.records):
        log.info("identity subset (max_train_ids=%d, max_test_ids=%d): %d of %d images kept",
                 cfg.max_train_ids, cfg.max_test_ids, len(records), len(listing.records))

    skipped = list(listing.skipped)
    failed: list[tuple[str, str]] = []
    rows: list[tuple[Any, ...]] = []
    for r in records:
        try:
            info = read_image_info(root / r.path)
        except ImageReadError as exc:
            if exc.transient:
                failed.append((r.path, exc.reason))
                continue
            skipped.append((r.path, exc.reason))
            log.warning("skipping %s: %s", r.path, exc.reason)
            continue
        if min(info.width, info.height) < cfg.min_size:
            reason = f"{info.width}x{info.height} px is smaller than data.min_size = {cfg.min_size} px"
            skipped.append((r.path, reason))
            log.warning("skipping %s: %s", r.path, reason)
            continue
        rows.append((info.key, r.path, r.pid, r.camid, r.split, info.width, info.height))
    if failed:
        raise DatasetReadError(
            f"{root}: {len(failed)} image file(s) could not be read (e.g. {failed[:3]}): the files "
            f"are there but unreadable (permissions, I/O error, a disk that went away); fix access "
            f"and rerun `dvc repro index` (unreadable files are not skipped silently)")
    frame = pd.DataFrame(rows, columns=["key", "path", "pid", "camid", "split", "width", "height"])

    for split in listing.splits:
        if not (frame["split"] == split).any():
            raise DatasetLayoutError(
                f"{root}: split '{split}' has no readable image after skipping "
                f"{len(skipped)} unusable file(s) (e.g. {skipped[:3]}); check the dataset files")

    if cfg.val_ids:
        frame = hold_out_validation(frame, cfg.val_ids)
        log.info("validation split: %d training identities held out (%d val_query, %d val_gallery images)",
                 cfg.val_ids, int((frame["split"] == "val_query").sum()), int((frame["split"] == "val_gallery").sum()))
    order = frame["split"].map({s: i for i, s in enumerate(INDEX_SPLITS)})
    frame = frame.assign(_order=order).sort_values(["_order", "path"], kind="stable")
    frame = frame.drop(columns="_order").reset_index(drop=True)
    frame["label"] = relabel(frame)
    frame = frame[list(INDEX_COLUMNS)]
    frame = _cast(frame)
    if skipped:
        log.warning("%d file(s) skipped (listed in the index summary)", len(skipped))
    return IndexResult(frame=frame, skipped=skipped, junk=listing.junk)


def relabel(frame: pd.DataFrame) -> np.ndarray:
    """Classifier labels: train pids mapped to 0..N-1 in increasing pid order, -1 for query/gallery.

    Returns:
        int64 array ``[len(frame)]``.
    """
    is_train = (frame["split"] == "train").to_numpy()
    labels = np.full(len(frame), -1, dtype=np.int64)
    pids = frame["pid"].to_numpy()[is_train]
    uniq = np.unique(pids)  # sorted
    labels[is_train] = np.searchsorted(uniq, pids)
    return labels


def _cast(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({c: frame[c].astype("int64") if t == "int64" else frame[c].astype(str)
                        for c, t in INDEX_COLUMNS.items()})
    return out


def write_index(frame: pd.DataFrame, path: str | Path) -> None:
    """Write the index atomically (``ogfr_core.io.write_parquet``) after checking its columns."""
    _validate(frame, Path(path))
    write_parquet(path, frame)


def _validate(frame: pd.DataFrame, path: Path) -> None:
    cols = list(frame.columns)
    if cols != list(INDEX_COLUMNS):
        missing = [c for c in INDEX_COLUMNS if c not in cols]
        extra = [c for c in cols if c not in INDEX_COLUMNS]
        raise IndexFileError(f"{path}: index columns {cols} do not match the contract "
                             f"{list(INDEX_COLUMNS)} (missing {missing}, unexpected {extra}); {_RERUN}")
    for c, t in INDEX_COLUMNS.items():
        if t == "int64" and frame[c].dtype != np.int64:
            raise IndexFileError(f"{path}: column '{c}' has dtype {frame[c].dtype}, expected int64; {_RERUN}")
    bad = sorted(set(frame["split"]) - set(INDEX_SPLITS))
    if bad:
        raise IndexFileError(f"{path}: unknown split value(s) {bad}; expected {list(INDEX_SPLITS)}; {_RERUN}")


def read_index(path: str | Path) -> pd.DataFrame:
    """Read and validate an index parquet.

    Returns:
        DataFrame with exactly :data:`INDEX_COLUMNS` (numeric columns int64, text columns ``str``).

    Raises:
        IndexFileError: the file is missing/unreadable or its columns/dtypes differ from the
            contract; the message names the file and says to rerun ``dvc repro index``.
    """
    path = Path(path)
    if not path.is_file():
        raise IndexFileError(f"{path}: index file not found; {_RERUN}")
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise IndexFileError(f"{path}: cannot read the index parquet ({exc}); {_RERUN}") from exc
    _validate(frame, path)
    return _cast(frame)


def summarize_index(frame: pd.DataFrame) -> dict[str, Any]:
    """Counts per split for the stage's metrics JSON.

    Returns:
        ``{"train": {"images", "ids", "cameras"}, "query": {...}, "gallery": {...},
        "total_images": int, "duplicate_keys": int}`` (``ids`` counts distinct pids, distractor
        pid 0 included in the gallery; ``duplicate_keys``: rows whose key already occurred), plus
        ``val_query``/``val_gallery`` when a validation split was held out.
    """
    out: dict[str, Any] = {}
    for split in SPLITS + tuple(s for s in VAL_SPLITS if (frame["split"] == s).any()):
        part = frame[frame["split"] == split]
        out[split] = {"images": int(len(part)), "ids": int(part["pid"].nunique()),
                      "cameras": int(part["camid"].nunique())}
    out["total_images"] = int(len(frame))
    out["duplicate_keys"] = int(frame["key"].duplicated().sum())
    return out
