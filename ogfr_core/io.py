"""Atomic output writers: every stage writes through these (temp file in the same folder, ``fsync``,
rename, ``fsync`` of the folder), so neither a killed run nor a power loss leaves a truncated or empty
output that a later stage or DVC would trust. Also: cleaning the temp files a SIGKILL leaves behind,
and the advisory lock around writers of a shared output folder (``filelock``)."""
from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

log = logging.getLogger(__name__)

TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"  # atomic_path's temp files: .<name>.<random>.tmp

# errno -> what to do about it, for write failures that are the environment's, not a bug
_WRITE_FIXES = {
    errno.ENOSPC: "free disk space and rerun",
    errno.EDQUOT: "free space in your disk quota and rerun",
    errno.EFBIG: "the file size limit was reached (`ulimit -f`); raise it and rerun",
    errno.EROFS: "the file system is read-only; run from a writable checkout",
    errno.EACCES: "check the permissions of the folder and rerun",
    errno.EPERM: "check the permissions of the folder and rerun",
}


class OutputWriteError(UserError, OSError):
    """An output file could not be written: disk full, quota, file size limit, read-only file system
    or permissions. The message names the output (not its temp file) and the fix; nothing partial is
    left behind (the previous version of the output, if any, is untouched)."""


def write_error_fix(exc: OSError) -> str | None:
    """What to do about a write failure with ``exc.errno``, or None if it is not an environment error."""
    return _WRITE_FIXES.get(exc.errno)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success ``fsync`` it, rename it onto ``path``
    (POSIX-atomic) and ``fsync`` the folder, so the output survives a power loss whole or not at all.

    On an exception the temporary file is removed and ``path`` is left untouched.

    Raises:
        OutputWriteError: the write failed for lack of space, a size limit, a read-only file system
            or permissions (names ``path`` and the fix).
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        # mkstemp creates 0600; give the output the permissions a plain open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        fix = write_error_fix(exc)
        if fix is None or isinstance(exc, OutputWriteError):
            raise
        raise OutputWriteError(exc.errno, f"cannot write {path}: {exc.strerror}; {fix}") from exc
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(path: str | Path, df: "Any") -> None:
    """Write a pandas DataFrame to parquet (pyarrow, no index), atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically (checkpoints).

    torch writes through a Python file object here, so a failed write surfaces as the ``OSError``
    behind torch's ``RuntimeError`` (torch's own file writer loses the errno) and becomes an
    :class:`OutputWriteError` naming ``path`` (disk full, size limit, ...).
    """
    import torch

    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(obj, fh)
        except RuntimeError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OSError):
                raise cause from exc
            raise


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files (``.<name>.<random>.tmp``) that a killed writer left in ``folder``
    (not recursive). Call it only while holding the folder's :func:`output_lock`, so that no live
    writer's temp file is removed. Returns the removed paths (logged as a warning)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}") if p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.warning("removed %d temp file(s) left by an interrupted run in %s (e.g. %s)", len(stale), folder,
                    stale[0].name)
    return stale


def lock_path(folder: str | Path) -> Path:
    """The lock file of an output folder: ``<parent>/.<folder name>.lock``, beside the folder and not
    inside it, so it never enters the DVC-tracked output or a fingerprint."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def output_lock(folder: str | Path, stage: str) -> Iterator[Path]:
    """Hold the advisory exclusive lock of ``folder`` (``filelock.FileLock`` on :func:`lock_path`)
    while writing into it. A second writer (another ``stage`` run on the same folder) waits, with a
    warning naming the lock, until the first one ends; the operating system releases the lock of a
    killed process, so a SIGKILL never leaves a stale lock. Yields the lock file's path."""
    from filelock import FileLock, Timeout

    path = lock_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fix = write_error_fix(exc)
        if fix is None:
            raise
        raise OutputWriteError(exc.errno, f"cannot create {path.parent}: {exc.strerror}; {fix}") from exc
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("%s is being written by another %s run (lock %s held); waiting for it to finish",
                    folder, stage, path)
        lock.acquire()
    try:
        yield path
    finally:
        lock.release()
