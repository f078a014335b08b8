"""The parsing cache: parquet shards under ``data/parsing/<dataset>/``, one row per image.

A row is keyed by the image's content hash (``key``, SHA-1 of the file bytes) and by ``cache_id``, a
hash of the backend, its model id and every parse param that changes the output (label size,
thresholds, padding cascade, limb width, :data:`PARSE_CODE_VERSION`). Rows of several ``cache_id``
can live side by side (switching params back is free); ``manifest.json`` names the active one.

Files::

    data/parsing/<dataset>/
        manifest.json                       active cache_id, backend, model_id, params
        <cache_id>-<shard hash>.parquet     ≤ shard_size rows, written atomically (temp + rename)
    data/parsing/.<dataset>.lock            advisory lock held by the parse run writing the folder

The manifest is written **last**, once every indexed image has a row under its ``cache_id`` (a run
killed, or failing on unreadable files, leaves the previous manifest, or none if that named another
configuration). Readers still check that the rows cover the images they need
(:func:`check_coverage`), because an index can grow after the manifest was written.

Only results that are a property of the image *bytes* are cached: ``ok`` / ``no_person`` (decoded,
parsed), and ``unreadable`` (the indexed bytes do not decode: same bytes, same result). Environment
failures (file moved away, permissions, I/O errors) and files whose bytes no longer match their key
are never cached: the driver retries them on the next run and fails the stage with their count.

Columns: ``key`` str, ``cache_id`` str, ``backend`` str, ``model_id`` str, ``status`` str
(``ok`` | ``no_person`` | ``unreadable`` = the bytes do not decode), ``person_found`` bool, ``label_map`` bytes (PNG, uint8
``[label_height, label_width]``, ids 0..8), ``label_height``/``label_width`` int64 (pixels),
``keypoints`` list of 51 float32 (COCO-17 ``x, y, confidence`` in label-map pixels, flattened),
``part_counts`` list of 9 int64 (pixels per part id 0..8), ``amodal_map`` bytes (PNG, the amodal part
map of :class:`~.base.ParseResult`; empty bytes for backends without one), ``amodal_counts`` list of 9
int64 (pixels per part id in the amodal map; empty without one), ``error`` str ("" unless unreadable).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image

from ..config import ParseConfig
from ..errors import UserError
from ..io import write_json, write_parquet
from .base import NUM_CLASSES, ParseResult

class ParsingIncompleteError(UserError, ValueError):
    """The parsing cache does not (yet) hold a result for every image that is needed: the parse stage
    was interrupted, failed on unreadable files, or ran on an older index. The message counts the
    missing images, shows a few, and names the stage to rerun."""


class MissingAmodalMapError(UserError, ValueError):
    """The parsing cache has no amodal part map (a backend that cannot predict unseen parts, e.g.
    PifPaf fields), but the ``hidden_fraction`` occlusion rule needs one."""


PARSE_CODE_VERSION = "2"  # bump when the keypoints→parts drawing or the row format changes (2: amodal map)
MANIFEST = "manifest.json"
STATUSES = ("ok", "no_person", "unreadable")
COLUMNS = ("key", "cache_id", "backend", "model_id", "status", "person_found", "label_map",
           "label_height", "label_width", "keypoints", "part_counts", "amodal_map", "amodal_counts", "error")
# Params that change a parse result (workers, shard_size, device, overlay_grid do not).
RESULT_PARAMS = ("label_height", "label_width", "min_keypoint_visibility", "pad_ratios", "pad_mode",
                 "mirror_retry", "limb_width_ratio", "mask_threshold", "field_threshold")


def compute_cache_id(cfg: ParseConfig, model_id: str) -> str:
    """16-hex-digit id of (backend, model id, result-changing params, code version)."""
    params = {k: v for k, v in asdict(cfg).items() if k in RESULT_PARAMS}
    blob = json.dumps({"backend": cfg.backend, "model_id": model_id, "code": PARSE_CODE_VERSION,
                       "params": params}, sort_keys=True, default=list)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def encode_label_map(label_map: np.ndarray) -> bytes:
    """uint8 ``[H, W]`` → PNG bytes (lossless, grayscale)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label_map, np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def decode_label_map(data: bytes) -> np.ndarray:
    """PNG bytes → uint8 ``[H, W]``."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img, dtype=np.uint8).copy()


def make_row(key: str, cache_id: str, backend: str, model_id: str, result: ParseResult | None,
             label_hw: tuple[int, int], error: str = "") -> dict:
    """One cache row. ``result=None`` means the image was unreadable (all-background map)."""
    status = "unreadable" if result is None else ("ok" if result.person_found else "no_person")
    if result is None:
        result = ParseResult.empty(label_hw)
    return {
        "key": key, "cache_id": cache_id, "backend": backend, "model_id": model_id, "status": status,
        "person_found": bool(result.person_found), "label_map": encode_label_map(result.label_map),
        "label_height": int(result.label_map.shape[0]), "label_width": int(result.label_map.shape[1]),
        "keypoints": result.keypoints.astype(np.float32).reshape(-1).tolist(),
        "part_counts": np.bincount(result.label_map.ravel(), minlength=NUM_CLASSES).astype(np.int64).tolist(),
        "amodal_map": b"" if result.amodal_map is None else encode_label_map(result.amodal_map),
        "amodal_counts": [] if result.amodal_map is None else
        np.bincount(result.amodal_map.ravel(), minlength=NUM_CLASSES).astype(np.int64).tolist(),
        "error": error,
    }


def shard_paths(parse_dir: str | Path, cache_id: str) -> list[Path]:
    """The shard files of ``cache_id`` in ``parse_dir``, sorted by name."""
    return sorted(Path(parse_dir).glob(f"{cache_id}-*.parquet"))


def cached_keys(parse_dir: str | Path, cache_id: str) -> set[str]:
    """Keys already parsed under ``cache_id`` (reads only the ``key`` column)."""
    keys: set[str] = set()
    for p in shard_paths(parse_dir, cache_id):
        keys.update(pd.read_parquet(p, columns=["key"])["key"].tolist())
    return keys


def write_shard(parse_dir: str | Path, cache_id: str, rows: Iterable[dict]) -> Path:
    """Write ``rows`` as one shard ``<cache_id>-<hash of its keys>.parquet`` (sorted by key), atomically."""
    df = pd.DataFrame(list(rows), columns=list(COLUMNS)).sort_values("key", kind="stable").reset_index(drop=True)
    digest = hashlib.sha1("\n".join(df["key"]).encode()).hexdigest()[:16]
    path = Path(parse_dir) / f"{cache_id}-{digest}.parquet"
    write_parquet(path, df)
    return path


def seed_cache(src_dir: str | Path, dst_dir: str | Path, keys: Iterable[str]) -> int:
    """Copy the cached rows of ``keys`` from the cache folder ``src_dir`` (its active ``cache_id``) into
    ``dst_dir`` as one shard, skipping keys ``dst_dir`` already holds under that ``cache_id``.

    A row is a property of the image bytes and the parse configuration (its key and ``cache_id``), so
    it is valid in any dataset holding the same bytes: a derived dataset (the occluded-query
    benchmark) reuses the source's results for its unchanged gallery, and the parse driver — which
    trusts only rows whose ``cache_id`` matches the current configuration — parses just the rest.

    Returns:
        the number of rows copied (0 when ``src_dir`` has no manifest).
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not (src_dir / MANIFEST).is_file():
        return 0
    cache_id = active_cache_id(src_dir)
    wanted = set(keys) - cached_keys(dst_dir, cache_id)
    if not wanted:
        return 0
    rows = read_parsing(src_dir, cache_id)
    rows = rows[rows["key"].isin(wanted)]
    if rows.empty:
        return 0
    dst_dir.mkdir(parents=True, exist_ok=True)
    write_shard(dst_dir, cache_id, rows.to_dict("records"))
    return int(len(rows))


def write_manifest(parse_dir: str | Path, cfg: ParseConfig, cache_id: str, model_id: str) -> None:
    """Record the active ``cache_id`` (what :func:`read_parsing` returns by default). The parse driver
    calls it last, once the rows of ``cache_id`` cover the whole index."""
    params = {k: v for k, v in asdict(cfg).items() if k in RESULT_PARAMS}
    write_json(Path(parse_dir) / MANIFEST, {"cache_id": cache_id, "backend": cfg.backend, "model_id": model_id,
                                            "code_version": PARSE_CODE_VERSION, "params": params})


def drop_other_manifest(parse_dir: str | Path, cache_id: str) -> bool:
    """Remove ``manifest.json`` if it names another ``cache_id`` than the run about to write: until
    that run completes, readers must not take the old configuration's rows for the current params.
    Returns True if a manifest was removed."""
    path = Path(parse_dir) / MANIFEST
    if path.is_file():
        try:
            current = json.loads(path.read_text()).get("cache_id")
        except (ValueError, AttributeError):
            current = None
        if current != cache_id:
            path.unlink()
            return True
    return False


def active_cache_id(parse_dir: str | Path) -> str:
    """The ``cache_id`` named by ``parse_dir/manifest.json``.

    Raises:
        FileNotFoundError: no manifest (the parse stage has not run into this folder).
    """
    path = Path(parse_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no parsing manifest (no parse run has completed into this "
                                f"folder); run the parse stage (`dvc repro parse` or `python -m stages.parse`)")
    return json.loads(path.read_text())["cache_id"]


def check_coverage(parse_dir: str | Path, keys: Iterable[str], cache_id: str | None = None,
                   what: str = "indexed images", paths: Iterable[str] | None = None, show: int = 3) -> None:
    """Check that the cache (active configuration by default) has a row for every key.

    Args:
        parse_dir: ``data/parsing/<dataset>``.
        keys: image keys that need a parse result.
        cache_id: parse configuration (default: the manifest's).
        what: how the message calls these images (e.g. ``"training images"``).
        paths: the keys' file paths, same order, for the examples in the message (default: keys).

    Raises:
        FileNotFoundError: no manifest (the parse stage never completed here).
        ParsingIncompleteError: some keys have no row (count, examples, and `dvc repro parse`).
    """
    keys = list(keys)
    names = list(paths) if paths is not None else keys
    have = cached_keys(parse_dir, cache_id or active_cache_id(parse_dir))
    missing = [n for k, n in zip(keys, names) if k not in have]
    if missing:
        raise ParsingIncompleteError(
            f"{parse_dir}: {len(missing)} of {len(keys)} {what} have no parsing result (e.g. "
            f"{missing[:show]}); the parse stage was interrupted, failed, or ran on an older index: "
            f"run `dvc repro parse`")


def read_parsing(parse_dir: str | Path, cache_id: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """All cached rows of ``cache_id`` (default: the manifest's), one per key, sorted by key.

    Args:
        parse_dir: ``data/parsing/<dataset>``.
        cache_id: which parse configuration to read; ``None`` = the active one.
        columns: subset of :data:`COLUMNS` to read (``key`` is always included).

    Returns:
        DataFrame with the columns listed in the module doc.

    Raises:
        FileNotFoundError: no manifest, or no shard for that ``cache_id``.
    """
    cache_id = cache_id or active_cache_id(parse_dir)
    paths = shard_paths(parse_dir, cache_id)
    if not paths:
        raise FileNotFoundError(f"{parse_dir}: no parsing shards for cache_id {cache_id}; run the parse stage")
    if columns is not None and "key" not in columns:
        columns = ["key", *columns]
    df = pd.concat([pd.read_parquet(p, columns=columns) for p in paths], ignore_index=True)
    return df.drop_duplicates("key").sort_values("key", kind="stable").reset_index(drop=True)


def load_label_maps(parse_dir: str | Path, keys: Iterable[str] | None = None,
                    cache_id: str | None = None, column: str = "label_map") -> dict[str, np.ndarray]:
    """Decoded label maps ``{key: uint8 [label_height, label_width]}`` (ids 0..8).

    Args:
        parse_dir: ``data/parsing/<dataset>``.
        keys: image keys to return (default: all rows).
        cache_id: parse configuration (default: the manifest's).
        column: ``label_map`` (the visible parsing) or ``amodal_map`` (where the parts should be).

    Raises:
        ParsingIncompleteError: some requested keys are not in the cache (names how many and a few
            of them, and the stage to rerun).
        MissingAmodalMapError: ``column="amodal_map"`` and the backend stored none.
    """
    if column not in ("label_map", "amodal_map"):
        raise ValueError(f"column must be 'label_map' or 'amodal_map', got {column!r}")
    df = read_parsing(parse_dir, cache_id, columns=[column]).rename(columns={column: "label_map"})
    if keys is not None:
        wanted = list(dict.fromkeys(keys))
        df = df.set_index("key")
        missing = [k for k in wanted if k not in df.index]
        if missing:
            raise ParsingIncompleteError(
                f"{parse_dir}: {len(missing)} of {len(wanted)} requested image(s) have no parsing result "
                f"(e.g. {missing[:3]}); run `dvc repro parse` on this index")
        df = df.loc[wanted].reset_index()
    if column == "amodal_map" and (df["label_map"].str.len() == 0).any():
        raise MissingAmodalMapError(f"{parse_dir}: the parse backend stored no amodal part map; "
                                    f"set occlusion.rule: pixels, or parse with mediapipe/torchvision")
    return {k: decode_label_map(b) for k, b in zip(df["key"], df["label_map"])}
