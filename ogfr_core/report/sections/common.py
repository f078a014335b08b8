"""What the sections share: the protocol's names, number formatting."""
from __future__ import annotations

from typing import Any

RANK_METRICS = ("rank-1", "rank-5", "rank-10", "mAP", "mINP")
OCC_SUFFIX = "-occ"  # the occluded-query benchmark of the ``occlude`` stage (``occlude.suffix``)
ABLATION_SWITCHES = ("oa_vit", "fep_student", "fep_teacher", "kd")


def pct(v: Any) -> str:
    """A fraction as percent with one decimal; "–" for None."""
    return "–" if v is None else f"{100 * float(v):.1f}"


def num(x: float) -> str:
    """Two decimals; "–" for NaN."""
    return "–" if x != x else f"{x:.2f}"
