"""What the sections share: the protocol's names, number formatting."""
from __future__ import annotations

from typing import Any

from ..render import Section

RANK_METRICS = ("rank-1", "rank-5", "rank-10", "mAP", "mINP")
OCC_SUFFIX = "-occ"  # the occluded-query benchmark of the ``occlude`` stage (``occlude.suffix``)
ABLATION_SWITCHES = ("oa_vit", "fep_student", "fep_teacher", "kd")


def pct(v: Any) -> str:
    """A fraction as percent with one decimal; "–" for None."""
    return "–" if v is None else f"{100 * float(v):.1f}"


def num(x: float) -> str:
    """Two decimals; "–" for NaN."""
    return "–" if x != x else f"{x:.2f}"


class ConfigRefs:
    """Short references for long configuration strings: a table cell carries ``C1``, the appendix
    (:meth:`section`) the full ``k=v, …`` string, so tables stay narrow.

    >>> refs = ConfigRefs(limit=10)
    >>> refs.cell("default"), refs.cell("train.lr=0.001, train.epochs=2"), refs.cell("train.lr=0.001, train.epochs=2")
    ('default', 'C1', 'C1')
    """

    def __init__(self, limit: int = 40, prefix: str = "C") -> None:
        self.limit, self.prefix = limit, prefix
        self.refs: dict[str, str] = {}  # full string -> reference, in first-use order

    def cell(self, text: str) -> str:
        """``text`` itself when at most ``limit`` characters, else its reference (``C<n>``)."""
        if len(text) <= self.limit:
            return text
        if text not in self.refs:
            self.refs[text] = f"{self.prefix}{len(self.refs) + 1}"
        return self.refs[text]

    def section(self, title: str = "Appendix: configurations and test-time options") -> Section:
        """The appendix: one row per reference handed out, with its full string."""
        s = Section(title)
        if not self.refs:
            return s.p("_No configuration string was long enough to need a reference._")
        s.p("Each reference used in the tables above: the params in which a configuration differs from this "
            "checkout's `params.yaml` (`k=v`, flattened keys), or a test-time extra's flags and options.")
        return s.table(["ref", "configuration"], [[r, f"`{t}`"] for t, r in self.refs.items()])
