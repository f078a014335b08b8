"""Metric-regression gate: compare a run's ``reports/metrics.json`` with a committed reference.

The gate flattens both JSON documents to dotted keys (``{"a": {"rank1": 0.5}}`` → ``"a.rank1"``)
and checks every *gated* key in the direction that is worse for it: a higher-is-better metric
(rank-1, mAP) fails when ``current < reference − tolerance``; a lower-is-better one (a final
training loss) fails when ``current > reference + tolerance``. Tolerances are in the metric's own
units. Improvements never fail; a gated key missing from either side is itself a failure, so
renaming a metric cannot silently disable the gate.

Example::

    >>> check({"m": {"rank1": 0.40}}, {"m": {"rank1": 0.45}}, {"m.rank1": 0.03}).passed
    False
    >>> check({"m": {"rank1": 0.43}}, {"m": {"rank1": 0.45}}, {"m.rank1": 0.03}).passed
    True
    >>> check({"loss": 2.5}, {"loss": 2.0}, {"loss": 0.3}, lower_is_better={"loss"}).passed
    False
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested mappings to ``{"a.b.c": number}``; non-numeric leaves are dropped."""
    out: dict[str, float] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


@dataclass(frozen=True)
class GateRow:
    """One gated metric: reference and current values, allowed drop, verdict."""

    key: str
    reference: float | None
    current: float | None
    tolerance: float
    lower_is_better: bool = False

    @property
    def delta(self) -> float | None:
        """``current − reference`` (None if either is missing)."""
        if self.reference is None or self.current is None:
            return None
        return self.current - self.reference

    @property
    def ok(self) -> bool:
        """False for a missing value or a change beyond the tolerance in the worse direction."""
        if self.delta is None:
            return False
        return self.delta <= self.tolerance if self.lower_is_better else self.delta >= -self.tolerance


@dataclass(frozen=True)
class GateResult:
    """All rows of a gate check; ``passed`` is True when every row is ok."""

    rows: list[GateRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every gated row is ok."""
        return all(r.ok for r in self.rows)

    def table(self) -> str:
        """Markdown table of the check (key, reference, current, delta, tolerance, verdict)."""
        def f(x: float | None) -> str:
            return "missing" if x is None else f"{x:.4f}"

        lines = ["| metric | better | reference | current | delta | allowed change | verdict |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            better, allowed = ("lower", f"+{r.tolerance:.4f}") if r.lower_is_better else ("higher", f"-{r.tolerance:.4f}")
            lines.append(f"| {r.key} | {better} | {f(r.reference)} | {f(r.current)} | {f(r.delta)} | "
                         f"{allowed} | {'ok' if r.ok else 'REGRESSION'} |")
        return "\n".join(lines)


def check(current: Mapping[str, Any], reference: Mapping[str, Any],
          tolerances: Mapping[str, float], lower_is_better: frozenset[str] | set[str] = frozenset()) -> GateResult:
    """Gate ``current`` against ``reference`` for each dotted key in ``tolerances``; keys listed in
    ``lower_is_better`` fail on a rise beyond the tolerance, all others on a drop.

    Raises:
        ValueError: ``tolerances`` is empty or holds a negative tolerance, or ``lower_is_better``
            names a key that is not gated.
    """
    stray = sorted(set(lower_is_better) - set(tolerances))
    if stray:
        raise ValueError(f"lower_is_better names keys without a tolerance: {stray}")
    if not tolerances:
        raise ValueError("no gated metrics given: the gate would pass vacuously")
    cur, ref = flatten(current), flatten(reference)
    rows = []
    for key, tol in tolerances.items():
        if tol < 0:
            raise ValueError(f"tolerance for {key} must be >= 0, got {tol}")
        rows.append(GateRow(key, ref.get(key), cur.get(key), float(tol), key in lower_is_better))
    return GateResult(rows)


def load_json(path: str | Path, hint: str) -> dict[str, Any]:
    """Read a JSON file, raising ``FileNotFoundError`` whose message says how to produce it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {hint}")
    return json.loads(path.read_text())
