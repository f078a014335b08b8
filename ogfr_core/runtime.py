"""Runtime helpers shared by the stages: device choice, seeding, logging, and the stage entry point
that turns the project's user-facing errors into one logged line and exit status 1."""
from __future__ import annotations

import argparse
import logging
import random
import sys
from typing import Callable, Sequence

import numpy as np

from .errors import UserError


def resolve_device(name: str = "auto") -> "torch.device":  # noqa: F821
    """``"auto"`` → ``cuda`` when available, else ``cpu``; otherwise ``torch.device(name)``.

    Raises:
        RuntimeError: ``name`` asks for CUDA but none is available (names the fix: ``device: cpu``).
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' requested but CUDA is not available; set device: cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Configure root logging once (``HH:MM:SS level name: message``) and return the package logger."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return logging.getLogger("ogfr_core")


def stage_parser(description: str, params: bool = True) -> argparse.ArgumentParser:
    """The command-line parser every stage shares: ``--params FILE`` (default ``params.yaml``, relative
    to the working directory) when ``params``; nothing else, so a mistyped or unknown argument is
    rejected instead of silently ignored. ``description`` may be a whole module docstring (its first
    line is used)."""
    parser = argparse.ArgumentParser(description=(description or "").strip().splitlines()[0] if description
                                     else None)
    if params:
        parser.add_argument("--params", default="params.yaml", metavar="FILE",
                            help="params file to read (default: params.yaml)")
    return parser


def stage_args(description: str, argv: Sequence[str] | None = None, params: bool = True) -> argparse.Namespace:
    """Parse a stage's arguments with :func:`stage_parser` (``argv`` None = ``sys.argv[1:]``).

    Raises:
        SystemExit: code 2 with argparse's one-line usage error for an unknown argument (0 after
            ``--help``); not an ``Exception``, so :func:`run_stage` lets it through unchanged.
    """
    return stage_parser(description, params).parse_args(argv)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "your input or setup is wrong" (each message names the file/key and the
    fix), as opposed to bugs: :class:`ogfr_core.errors.UserError` (the base of every such error class of
    the project) and ``FileNotFoundError``. Importing nothing else keeps this module cheap."""
    return (UserError, FileNotFoundError)


def is_user_error(exc: BaseException) -> bool:
    """A user-facing error: one of :func:`user_error_types`, or an ``OSError`` of the environment
    (disk full, quota, file size limit, read-only file system, permissions; see
    :func:`ogfr_core.io.write_error_fix`), wherever it was raised (a library's own writer too)."""
    from .io import write_error_fix

    if isinstance(exc, user_error_types()):
        return True
    return isinstance(exc, OSError) and write_error_fix(exc) is not None


def describe_error(exc: BaseException) -> str:
    """The one-line text run_stage logs: ``Type: message`` (+ the fix for an environment OSError)."""
    from .io import OutputWriteError, write_error_fix

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError):
        fix = write_error_fix(exc)
        if fix is not None:
            text += f"; {fix}"
    return text


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's ``main`` and exit: 0 on success, 1 with one ``ERROR`` log line (no traceback)
    for a user-facing error (:func:`is_user_error`); any other exception is a bug and keeps its
    traceback."""
    try:
        result = main()
    except Exception as exc:  # classified below; bugs are re-raised untouched
        if not is_user_error(exc):
            raise
        logging.getLogger("ogfr_core").error("%s", describe_error(exc))
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
