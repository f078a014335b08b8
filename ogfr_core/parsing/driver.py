"""The parse driver: every indexed image → one cache row, in parallel, resumable.

Only keys missing from the cache under the current ``cache_id`` are parsed (a rerun with unchanged
inputs parses 0 images; new images parse only themselves). Pending keys are processed in shards of
``shard_size`` that are written atomically as soon as they are complete, so a killed run resumes
at the first unwritten shard; the manifest is written last, when the index is covered. Worker
processes (``workers`` > 1, spawn start method) each hold their own backend instance (BlazePose
graphs are not shareable across processes).

A run holds the cache folder's advisory lock (:func:`ogfr_core.io.output_lock`): a second run on the
same folder waits, then finds the images parsed. Temp files of a killed run are removed at the start.

What is cached (see :mod:`.cache`): the result of the image *bytes* only. Each file is read once,
its SHA-1 compared with its index key, and decoded with the converter training uses
(:func:`ogfr_core.data.images.decode_rgb`). A file that cannot be read (moved away, permissions, I/O
error) or whose bytes changed since indexing gets no row: it is retried on the next run, and the run
ends with :class:`~.cache.ParsingIncompleteError` counting them (the other images stay cached).
"""
from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import ParseConfig
from ..data.images import ImageReadError, decode_rgb, load_rgb, read_image_bytes
from ..io import output_lock, remove_stale_temps
from .base import PartParser
from .cache import (STATUSES, ParsingIncompleteError, cached_keys, compute_cache_id, drop_other_manifest,
                    make_row, read_parsing, write_manifest, write_shard)
from .native_logs import filter_process_stderr
from .registry import build_parser

log = logging.getLogger(__name__)
INDEX_COLUMNS = ("key", "path")


@dataclass
class ParseSummary:
    """What a :func:`parse_dataset` call did and the state of the cache for the index's images.

    Attributes:
        n_images: distinct keys in the index.
        parsed_now: images parsed by this call; ``cached``: found in the cache.
        status_counts: rows per status (``ok``, ``no_person``, ``unreadable``) over the index.
        coverage: person found / readable images (0..1).
        mean_visible_parts: mean number of the 8 parts with ≥ 1 pixel, over readable images.
        parse_seconds: wall time spent parsing (s); ``images_per_s``: ``parsed_now / parse_seconds``.

    ``parsed_now``, ``cached``, ``parse_seconds`` and ``images_per_s`` (:data:`RUN_FIELDS`) describe
    this call, not the result: they are logged, and left out of :meth:`result_dict`, the git-tracked
    ``reports/parse/summary.json`` (so a fresh clone's run writes the same file).
    """

    backend: str
    model_id: str
    cache_id: str
    n_images: int
    parsed_now: int
    cached: int
    workers: int
    status_counts: dict[str, int] = field(default_factory=dict)
    person_found: int = 0
    coverage: float = 0.0
    mean_visible_parts: float = 0.0
    parse_seconds: float = 0.0
    images_per_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def result_dict(self) -> dict:
        """:meth:`to_dict` without :data:`RUN_FIELDS`: depends only on the inputs (images, params, backend)."""
        return {k: v for k, v in asdict(self).items() if k not in RUN_FIELDS}


# fields of ParseSummary that depend on the cache's state and the machine, not on the inputs
RUN_FIELDS = ("parsed_now", "cached", "parse_seconds", "images_per_s")


# ---------------------------------------------------------------------------------------------
# per-image work (runs in the workers, or in-process when workers <= 1)
# ---------------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(cfg: ParseConfig) -> None:
    """Process-pool initializer: one backend per worker process, its native log chatter filtered for
    the worker's whole life (:func:`.native_logs.filter_process_stderr`)."""
    filter_process_stderr()
    parser = build_parser(cfg)
    _WORKER.update(parser=parser, cfg=cfg)


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to uint8 ``[H, W, 3]`` RGB with the pipeline's one converter
    (:func:`ogfr_core.data.images.load_rgb`: alpha composited on black, 16-bit rescaled).

    Raises:
        ImageReadError: missing, unreadable, truncated or corrupt file (names the file).
    """
    return np.asarray(load_rgb(path), dtype=np.uint8)


# what to do about images that were not cached, by kind
FAILURE_FIXES = {
    "unreadable file": "make the files readable (check data.root, the disk, permissions) and rerun "
                       "`dvc repro parse`: they are parsed then",
    "changed since indexing": "the files' bytes no longer match their index key: rerun `dvc repro index`",
}


def parse_items(parser: PartParser, cfg: ParseConfig, cache_id: str,
                items: list[tuple[str, str]]) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Parse ``(key, absolute path)`` items into cache rows.

    Returns:
        ``(rows, failures)``: one row per item whose result is a property of its bytes (``ok``,
        ``no_person``, or ``unreadable`` when the indexed bytes do not decode; the caller logs and
        counts those), and ``(path, kind, reason)`` for items that must not be cached: ``kind`` is
        ``"unreadable file"`` (the environment failed: vanished, permissions, I/O) or
        ``"changed since indexing"`` (SHA-1 of the bytes != key).
    """
    label_hw = (cfg.label_height, cfg.label_width)
    rows, failures = [], []
    for key, path in items:
        try:
            data = read_image_bytes(path)
        except ImageReadError as err:
            if err.transient:
                failures.append((path, "unreadable file", err.reason))
                continue
            data = b""  # an empty file: its (indexed) bytes are the result
        if hashlib.sha1(data).hexdigest() != key:
            failures.append((path, "changed since indexing", f"SHA-1 {hashlib.sha1(data).hexdigest()[:12]}... "
                                                             f"!= key {key[:12]}..."))
            continue
        try:
            image = np.asarray(decode_rgb(data, path), dtype=np.uint8)  # [H, W, 3]
        except ImageReadError as err:
            rows.append(make_row(key, cache_id, cfg.backend, parser.model_id, None, label_hw,
                                 error=f"{path}: {err.reason}"))
            continue
        rows.append(make_row(key, cache_id, cfg.backend, parser.model_id, parser.parse(image), label_hw))
    return rows, failures


def _worker_parse(cache_id: str, items: list[tuple[str, str]]) -> tuple[list[dict], list[tuple[str, str, str]]]:
    return parse_items(_WORKER["parser"], _WORKER["cfg"], cache_id, items)


def incomplete_error(failures: list[tuple[str, str, str]], n_images: int, out_dir: Path) -> ParsingIncompleteError:
    """The error a parse run ends with when some images could not be parsed (count, examples, fix)."""
    parts = []
    for kind, fix in FAILURE_FIXES.items():
        of_kind = [f"{p} ({r})" for p, k, r in failures if k == kind]
        if of_kind:
            parts.append(f"{len(of_kind)} {kind} (e.g. {'; '.join(of_kind[:3])}): {fix}")
    return ParsingIncompleteError(
        f"{out_dir}: {len(failures)} of {n_images} images were not parsed and are not cached — "
        + " | ".join(parts) + ". The other images are cached; the manifest is written once all are parsed")


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _check_index(index: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"index is missing column(s) {missing}; build it with the index stage "
                         f"(columns key, path, pid, camid, split, label, width, height)")
    return index.drop_duplicates("key")[list(INDEX_COLUMNS)]


def parse_dataset(index: pd.DataFrame, root: str | Path, cfg: ParseConfig, out_dir: str | Path, *,
                  progress: bool = True, on_shard: Callable[[Path], None] | None = None,
                  parser: PartParser | None = None) -> ParseSummary:
    """Parse every image of ``index`` not yet in the cache at ``out_dir``.

    Args:
        index: DataFrame with at least ``key`` (content hash) and ``path`` (relative to ``root``).
        root: dataset root directory.
        cfg: ``parse:`` params (backend, label size, ``workers``, ``shard_size``, ...).
        out_dir: cache folder ``data/parsing/<dataset>``.
        progress: show a tqdm bar.
        on_shard: called with each written shard's path (tests use it to interrupt a run).
        parser: an already built backend for in-process parsing (tests); default: the registry's.

    Returns:
        :class:`ParseSummary` (counts over the index's keys, speed of this call).

    Raises:
        ValueError: the index lacks ``key``/``path``, or ``shard_size`` < 1.
        BackendUnavailableError: the backend's package or weights are missing.
        ParsingIncompleteError: some images could not be read or changed since indexing; they are
            not cached (retried next run), the others are, and the manifest is not written.
        OutputWriteError: a shard could not be written (disk full, ...).
    """
    items = _check_index(index)
    if cfg.shard_size < 1:
        raise ValueError(f"parse.shard_size must be >= 1, got {cfg.shard_size}")
    root, out_dir = Path(root), Path(out_dir)
    parser = parser or build_parser(cfg)
    cache_id = compute_cache_id(cfg, parser.model_id)
    with output_lock(out_dir, "parse"):
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)
        if drop_other_manifest(out_dir, cache_id):
            log.info("parse: %s named another parse configuration; removed until this one is complete",
                     out_dir / "manifest.json")
        return _parse_locked(items, root, cfg, out_dir, parser, cache_id, progress, on_shard)


def _parse_locked(items: pd.DataFrame, root: Path, cfg: ParseConfig, out_dir: Path, parser: PartParser,
                  cache_id: str, progress: bool, on_shard: Callable[[Path], None] | None) -> ParseSummary:
    """:func:`parse_dataset`'s work, with the cache folder's lock held."""
    done = cached_keys(out_dir, cache_id)
    pending = items[~items["key"].isin(done)].sort_values("key")
    todo = [(k, str(root / p)) for k, p in zip(pending["key"], pending["path"])]
    shards = [todo[i:i + cfg.shard_size] for i in range(0, len(todo), cfg.shard_size)]
    log.info("parse: %d images, %d cached, %d to parse in %d shard(s) (backend %s, cache_id %s)",
             len(items), len(items) - len(todo), len(todo), len(shards), cfg.backend, cache_id)

    t0 = time.perf_counter()
    n_unreadable = 0
    failures: list[tuple[str, str, str]] = []
    bar = tqdm(total=len(todo), desc="parse", unit="img", disable=not progress or not todo)
    pool = None
    if cfg.workers > 1 and todo:
        pool = ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                   initargs=(cfg,))
    try:
        # Pieces of every shard are queued at once (workers never idle at shard boundaries); results
        # come back in order, and a shard is written as soon as its last piece has arrived.
        chunk = max(1, min(16, cfg.shard_size // (4 * max(cfg.workers, 1))))
        pieces = [(s, shard[i:i + chunk]) for s, shard in enumerate(shards) for i in range(0, len(shard), chunk)]
        results = pool.map(_worker_parse, [cache_id] * len(pieces), [p for _, p in pieces]) if pool else \
            (parse_items(parser, cfg, cache_id, p) for _, p in pieces)
        rows: list[dict] = []
        for n, ((s, piece), (piece_rows, piece_failures)) in enumerate(zip(pieces, results)):
            rows.extend(piece_rows)
            for path, kind, reason in piece_failures:
                log.warning("parse: not cached, retried next run: %s (%s: %s)", path, kind, reason)
            failures.extend(piece_failures)
            bar.update(len(piece))
            if n + 1 < len(pieces) and pieces[n + 1][0] == s:
                continue  # shard s not complete yet
            for r in rows:
                if r["status"] == "unreadable":
                    n_unreadable += 1
                    log.warning("parse: skipped undecodable image (%s)", r["error"])
            if rows:
                path = write_shard(out_dir, cache_id, rows)
                if on_shard is not None:
                    on_shard(path)
            rows = []
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    seconds = time.perf_counter() - t0
    if n_unreadable:
        log.warning("parse: %d undecodable image(s) marked status=unreadable", n_unreadable)
    if failures:
        raise incomplete_error(failures, len(items), out_dir)
    write_manifest(out_dir, cfg, cache_id, parser.model_id)  # last: the cache now covers the index
    summary = ParseSummary(backend=cfg.backend, model_id=parser.model_id, cache_id=cache_id, n_images=len(items),
                           parsed_now=len(todo), cached=len(items) - len(todo), workers=cfg.workers,
                           parse_seconds=round(seconds, 3),
                           images_per_s=round(len(todo) / seconds, 3) if todo and seconds > 0 else 0.0)
    return _fill_stats(summary, out_dir, cache_id, set(items["key"]))


def _fill_stats(summary: ParseSummary, out_dir: Path, cache_id: str, keys: set[str]) -> ParseSummary:
    """Status counts, coverage and mean visible parts over the index's keys (from ``part_counts``)."""
    if not keys:
        summary.status_counts = {s: 0 for s in STATUSES}
        return summary
    df = read_parsing(out_dir, cache_id, columns=["status", "person_found", "part_counts"])
    df = df[df["key"].isin(keys)]
    summary.status_counts = {s: int((df["status"] == s).sum()) for s in STATUSES}
    readable = df[df["status"] != "unreadable"]
    summary.person_found = int(df["person_found"].sum())
    summary.coverage = round(summary.person_found / len(readable), 4) if len(readable) else 0.0
    if len(readable):
        counts = np.stack(readable["part_counts"].map(np.asarray).to_list())  # [N, 9]
        summary.mean_visible_parts = round(float((counts[:, 1:] > 0).sum(1).mean()), 3)
    return summary
