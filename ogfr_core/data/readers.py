"""Dataset readers: one function per standard re-ID layout, in the registry :data:`READERS`.

A reader lists a dataset folder (it does not open images; the ``index`` stage does) and returns a
:class:`DatasetListing`: records ``(path relative to root, pid, camid 0-based, split)`` plus the
files it skipped and why. Every reader has the same signature::

    reader(root: Path, *, query_camid: int = 0, gallery_camid: int = 1) -> DatasetListing

``query_camid``/``gallery_camid`` are used only by layouts whose file names carry no camera
(Occluded-REID); the others read the camera from the name and ignore them.

Choices (documented, never silent):

- **Unparseable file names** (an image file whose name does not match the layout, or whose camera
  is outside the layout's range) are *logged skips*: listed in ``DatasetListing.skipped`` with the
  reason, counted in ``reports/index/summary.json`` and logged as a warning with a few examples.
- **Digits** are ASCII ``0-9`` only: a name with fullwidth or Arabic-Indic digits (which Python's
  ``\\d`` and ``int`` would accept) is an unparseable name, as is a pid or camera that does not fit a
  64-bit integer (the index's int64 columns).
- **Junk**: pid ``-1`` (Market-1501 junk) is dropped everywhere, as torchreid/TransReID do; in the
  Market-1501-like layouts pid ``0`` (distractors) is kept in the gallery and dropped elsewhere
  (MSMT17's pid 0 is an ordinary identity). Both are counted in ``DatasetListing.junk``.
- Non-image files (``Thumbs.db``, ``.txt``, ...) inside image folders are ignored; their number is
  logged.
- A split folder with no usable image is an error naming the folder.

Example::

    >>> listing = READERS["market1501"](Path("../shared/data/cuhk03-np-detected"))  # doctest: +SKIP
    >>> listing.records[0]
    ImageRecord(path='bounding_box_train/0002_c1s1_000000_00.jpg', pid=2, camid=0, split='train')
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

from ..config import ConfigError
from ..errors import UserError
from .images import IMAGE_SUFFIXES

__all__ = [
    "DatasetLayoutError", "ImageRecord", "DatasetListing", "READERS", "SPLITS",
    "read_market1501", "read_market1501_test", "read_cuhk03np", "read_occluded_duke", "read_msmt17", "read_occluded_reid",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "query", "gallery")
# File name of Market-1501-like sets: Market `0002_c1s1_000451_03`, CUHK03-NP `0001_c1_1` or the
# shared set's `0001_c1s1_000004_00`, DukeMTMC/Occluded-Duke `0001_c2_f0046182` (stem, no suffix).
_MARKET_NAME = re.compile(r"^(?P<pid>-?[0-9]+)_c(?P<cam>[0-9]+)(?:s[0-9]+)?_\w+$")
# MSMT17 list entries: `0000/0000_000_01_0303morning_0015_0.jpg`; camera = 3rd `_` field (1-based).
_MSMT_CAM_FIELD = 2
# Occluded-REID: `<pid>/<pid>_<nn>.tif`; the pid is the file name's prefix (as BPBreID reads it).
_OCC_REID_NAME = re.compile(r"^(?P<pid>[0-9]+)_\w+$")
_ASCII_INT = re.compile(r"-?[0-9]+")
_INT64_MAX = 2**63 - 1


def _ascii_int(text: str) -> int:
    """``int(text)`` for ASCII digits only (``int`` also reads fullwidth / Arabic-Indic digits).

    Raises:
        ValueError: ``text`` is not an optionally signed run of ASCII digits.
    """
    if not _ASCII_INT.fullmatch(text):
        raise ValueError(f"not an ASCII integer: {text!r}")
    return int(text)


class DatasetLayoutError(UserError, ValueError):
    """The dataset folder is missing, has the wrong layout, or a split has no images."""


class ImageRecord(NamedTuple):
    """One image of a listing. ``path`` is relative to the dataset root (POSIX separators)."""

    path: str
    pid: int
    camid: int  # 0-based (c1 -> 0)
    split: str  # train | query | gallery


@dataclass
class DatasetListing:
    """What a reader found.

    Attributes:
        records: the usable images, in folder order (train, query, gallery; names sorted).
        skipped: ``(path, reason)`` of files that could not be used (unparseable name, ...).
        junk: images dropped by the protocol (pid -1 anywhere, pid 0 outside the gallery).
        splits: the splits this layout provides (Occluded-REID has no ``train``).
        has_distractors: pid 0 marks gallery distractors (Market-1501 convention); False where
            pid 0 is an ordinary identity (MSMT17).
    """

    records: list[ImageRecord] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    junk: int = 0
    splits: tuple[str, ...] = SPLITS
    has_distractors: bool = False


Reader = Callable[..., DatasetListing]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _check_root(root: Path, layout: str, expected: list[str]) -> None:
    """Raise :class:`DatasetLayoutError` unless ``root`` exists and holds every entry of ``expected``."""
    if not root.exists():
        raise DatasetLayoutError(
            f"dataset root {root} does not exist; set `data.root` in params.yaml to the folder "
            f"that contains {', '.join(expected)} (layout '{layout}')"
        )
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset root {root} is not a folder; set `data.root` in params.yaml")
    missing = [e for e in expected if not ((root / e).is_dir() if e.endswith("/") else (root / e).is_file())]
    if missing:
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        shown = ", ".join(found[:20]) + (f", ... ({len(found)} entries)" if len(found) > 20 else "")
        raise DatasetLayoutError(
            f"{root} does not look like a '{layout}' dataset: expected {', '.join(expected)}; "
            f"missing {', '.join(missing)}; found [{shown or 'nothing'}]. Point `data.root` at the "
            f"dataset folder or set `data.layout` to the matching layout"
        )


def _image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files of ``folder`` (by suffix, case-insensitive), sorted; logs ignored other files."""
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    others = len(files) - len(images)
    if others:
        log.info("%s: ignored %d non-image file(s) (e.g. %s)", folder, others,
                 next(p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES))
    return images


def _require_images(listing: DatasetListing, split: str, folder: Path, n_files: int) -> None:
    if not any(r.split == split for r in listing.records):
        why = (f"{n_files} image file(s) there were skipped or junk" if n_files
               else "it contains no image files")
        raise DatasetLayoutError(
            f"split '{split}' has no usable images in {folder}: {why}; check that the dataset was "
            f"extracted completely and that `data.layout` matches it"
        )


def _log_skips(listing: DatasetListing, root: Path) -> None:
    if listing.skipped:
        examples = "; ".join(f"{p} ({r})" for p, r in listing.skipped[:3])
        log.warning("%s: skipped %d file(s) with unusable names, e.g. %s", root, len(listing.skipped), examples)
    if listing.junk:
        log.info("%s: dropped %d junk image(s) (pid -1, or pid 0 outside the gallery)", root, listing.junk)


def _add(listing: DatasetListing, rel: str, pid: int, camid: int, split: str) -> None:
    """Append a record, applying the junk rule: pid < 0 everywhere; for layouts with Market-1501
    distractors (``listing.has_distractors``) also pid 0 outside the gallery. A pid or camera beyond
    int64 is a logged skip."""
    if abs(pid) > _INT64_MAX or not 0 <= camid <= _INT64_MAX:
        listing.skipped.append((rel, f"pid {pid} / camera {camid} does not fit a 64-bit integer"))
        return
    if pid < 0 or (listing.has_distractors and pid == 0 and split != "gallery"):
        listing.junk += 1
        return
    listing.records.append(ImageRecord(rel, pid, camid, split))


# --------------------------------------------------------------------------------------------
# Market-1501-like layouts
# --------------------------------------------------------------------------------------------
_MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def _read_market_like(root: Path, layout: str, num_cameras: int,
                      splits: tuple[str, ...] = SPLITS) -> DatasetListing:
    """Market-1501 layout: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` (those of
    ``splits``); pid and camera from ``PPPP_cC...`` (torchreid's ``([-\\d]+)_c(\\d)`` rule, anchored);
    camera must be 1..num_cameras."""
    root = Path(root)
    folders = {s: _MARKET_FOLDERS[s] for s in splits}
    _check_root(root, layout, [f + "/" for f in folders.values()])
    listing = DatasetListing(has_distractors=True, splits=tuple(splits))
    for split, folder_name in folders.items():
        folder = root / folder_name
        files = _image_files(folder)
        for p in files:
            rel = f"{folder_name}/{p.name}"
            m = _MARKET_NAME.match(p.stem)
            if m is None:
                listing.skipped.append((rel, f"file name does not match '{layout}' naming PPPP_cC..."))
                continue
            cam = int(m["cam"])
            if not 1 <= cam <= num_cameras:
                listing.skipped.append((rel, f"camera c{cam} outside c1..c{num_cameras} of '{layout}'"))
                continue
            _add(listing, rel, int(m["pid"]), cam - 1, split)
        _require_images(listing, split, folder, len(files))
    _log_skips(listing, root)
    return listing


def read_market1501(root: Path, *, query_camid: int = 0, gallery_camid: int = 1) -> DatasetListing:
    """Market-1501 (6 cameras). Names ``PPPP_cCsS_FFFFFF_NN.jpg``; pid -1 junk dropped, pid 0
    distractors kept in the gallery. ``query_camid``/``gallery_camid`` unused (names carry cameras).

    Raises:
        DatasetLayoutError: missing root, missing folders, or a split with no usable image.
    """
    return _read_market_like(root, "market1501", num_cameras=6)


def read_market1501_test(root: Path, *, query_camid: int = 0, gallery_camid: int = 1) -> DatasetListing:
    """An evaluation-only set in Market-1501 layout: ``query/`` and ``bounding_box_test/`` only (no
    training split), Market naming, cameras 1..6 — e.g. the occluded-query benchmark that the
    ``occlude`` stage derives (:mod:`ogfr_core.data.occluded_benchmark`). Same rules as
    :func:`read_market1501`."""
    return _read_market_like(root, "market1501_test", num_cameras=6, splits=("query", "gallery"))


def read_cuhk03np(root: Path, *, query_camid: int = 0, gallery_camid: int = 1) -> DatasetListing:
    """CUHK03-NP (new protocol, Zhong et al. 2017) in Market-1501 layout, 2 cameras (c1, c2); the
    shared ``cuhk03-np-detected`` set. Same rules as :func:`read_market1501`."""
    return _read_market_like(root, "cuhk03np", num_cameras=2)


def read_occluded_duke(root: Path, *, query_camid: int = 0, gallery_camid: int = 1) -> DatasetListing:
    """Occluded-Duke (Miao et al. 2019) in Market-1501 layout, DukeMTMC names ``PPPP_cC_fFFFFFFF.jpg``,
    cameras 1..8. Same rules as :func:`read_market1501`."""
    return _read_market_like(root, "occluded_duke", num_cameras=8)


# --------------------------------------------------------------------------------------------
# MSMT17 (list files)
# --------------------------------------------------------------------------------------------
_MSMT_LISTS = {"train": ("train", "list_train.txt"), "query": ("test", "list_query.txt"),
               "gallery": ("test", "list_gallery.txt")}


def read_msmt17(root: Path, *, query_camid: int = 0, gallery_camid: int = 1) -> DatasetListing:
    """MSMT17 (V1/V2 layout) as torchreid's ``MSMT17`` reads it.

    ``root`` holds ``train/``, ``test/`` and the list files ``list_train.txt``, ``list_query.txt``,
    ``list_gallery.txt`` (``list_val.txt`` too, but, as torchreid's default ``combineall=False``,
    val images are *not* added to train; TransReID adds them). Each list line is
    ``<relative image path> <pid>``; train paths are under ``train/``, query/gallery under ``test/``;
    camera = third ``_`` field of the path, 1-based (``0000/0000_000_01_...`` -> camid 0). Pids are
    used as given. Malformed lines are logged skips (``list_x.txt:LINE``).

    Raises:
        DatasetLayoutError: missing root/folders/list files, or a list with no usable entry.
    """
    root = Path(root)
    _check_root(root, "msmt17", ["train/", "test/"] + [f for _, f in _MSMT_LISTS.values()])
    listing = DatasetListing()
    for split, (folder, list_name) in _MSMT_LISTS.items():
        lines = (root / list_name).read_text().splitlines()
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            parts = line.split()
            where = f"{list_name}:{lineno}"
            try:
                img_rel, pid_s = parts
                pid = _ascii_int(pid_s)
                cam = _ascii_int(Path(img_rel).name.split("_")[_MSMT_CAM_FIELD])
            except (ValueError, IndexError):
                listing.skipped.append((where, f"malformed list line {line.strip()!r}; expected "
                                               f"'<pid dir>/<pid>_<idx>_<cam>_... <pid>'"))
                continue
            if cam < 1:
                listing.skipped.append((where, f"camera {cam} is not 1-based"))
                continue
            _add(listing, f"{folder}/{img_rel}", pid, cam - 1, split)
        _require_images(listing, split, root / list_name, len(lines))
    _log_skips(listing, root)
    return listing


# --------------------------------------------------------------------------------------------
# Occluded-REID (no cameras, no train split)
# --------------------------------------------------------------------------------------------
_OCC_REID_FOLDERS = {"query": "occluded_body_images", "gallery": "whole_body_images"}


def read_occluded_reid(root: Path, *, query_camid: int = 0, gallery_camid: int = 1) -> DatasetListing:
    """Occluded-REID (Zhuo et al. 2018): test-only; ``occluded_body_images/<pid>/<pid>_NN.tif`` are the
    queries, ``whole_body_images/<pid>/<pid>_NN.tif`` the gallery; pid from the file-name prefix
    (BPBreID's reader). The set has no cameras: every query gets ``query_camid`` and every gallery
    image ``gallery_camid`` (default 0 / 1, the convention of BPBreID, FPC and CpaCol), so the
    Market-1501 protocol's same-pid-same-camera filter removes nothing.

    Raises:
        ConfigError: ``query_camid == gallery_camid`` (the protocol would then discard every match).
        DatasetLayoutError: missing root/folders, or a folder with no usable image.
    """
    if query_camid == gallery_camid:
        raise ConfigError(f"occluded_reid: data.query_camid and data.gallery_camid must differ "
                         f"(both {query_camid}); the default convention is 0 / 1")
    root = Path(root)
    _check_root(root, "occluded_reid", [f + "/" for f in _OCC_REID_FOLDERS.values()])
    listing = DatasetListing(splits=("query", "gallery"))
    camids = {"query": query_camid, "gallery": gallery_camid}
    for split, folder_name in _OCC_REID_FOLDERS.items():
        folder = root / folder_name
        files = _image_files(folder, recursive=True)
        for p in files:
            rel = p.relative_to(root).as_posix()
            m = _OCC_REID_NAME.match(p.stem)
            if m is None:
                listing.skipped.append((rel, "file name does not start with '<pid>_' (Occluded-REID naming)"))
                continue
            _add(listing, rel, int(m["pid"]), camids[split], split)
        _require_images(listing, split, folder, len(files))
    _log_skips(listing, root)
    return listing


READERS: dict[str, Reader] = {
    "market1501": read_market1501,
    "market1501_test": read_market1501_test,
    "cuhk03np": read_cuhk03np,
    "msmt17": read_msmt17,
    "occluded_duke": read_occluded_duke,
    "occluded_reid": read_occluded_reid,
}
"""Layout name (``data.layout`` in params.yaml) -> reader."""
