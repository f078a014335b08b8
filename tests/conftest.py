"""Shared pytest fixtures: the shared real dataset (read-only, a handful of images) and tmp dirs."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data" / "cuhk03-np-detected").resolve()


@pytest.fixture(scope="session")
def shared_root() -> Path:
    """Root of the shared CUHK03-NP (detected) set, Market-1501 layout; skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared dataset not found at {SHARED_DATA}")
    return SHARED_DATA
