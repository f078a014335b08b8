"""Runtime helpers shared by the stages: device choice, seeding and logging."""
from __future__ import annotations

import logging
import os
import random

import numpy as np


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
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Configure root logging once (``HH:MM:SS level name: message``) and return the package logger."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return logging.getLogger("ogfr_core")
