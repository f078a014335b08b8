"""Shared pytest fixtures: the shared real dataset (read-only, a handful of images) and tmp dirs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout, or wherever $OGFR_DATA_ROOT points (.ci/run sets it for clones elsewhere)
SHARED_DATA = Path(os.environ.get("OGFR_DATA_ROOT")
                   or REPO / ".." / "shared" / "data" / "cuhk03-np-detected").resolve()


@pytest.fixture(scope="session")
def shared_root() -> Path:
    """Root of the shared CUHK03-NP (detected) set, Market-1501 layout; skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared dataset not found at {SHARED_DATA}")
    return SHARED_DATA
