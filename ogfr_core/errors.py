"""The base class of the project's user-facing errors.

A :class:`UserError` means "your input or setup is wrong": its message names the file or key and the
fix, and a stage (:func:`ogfr_core.runtime.run_stage`) or the ``ogfr`` command reports it as one
``ERROR`` line and exit status 1, without a traceback. Any other exception is a bug and keeps its
traceback.

Each concrete error keeps the built-in base it had before this class existed (``ValueError``,
``RuntimeError``, ``OSError``, ``FileNotFoundError``) as its second base, so ``except ValueError``
callers still catch it. This module imports nothing from the rest of :mod:`ogfr_core`: it sits at the
bottom of the import graph, so every module can import it cheaply.
"""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Your input or setup is wrong; the message names the file/key and the fix.

    Subclass it (with the built-in base that fits, e.g. ``class ConfigError(UserError, ValueError)``)
    for every error a user can cause and fix; never for a bug.
    """
