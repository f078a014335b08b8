"""Ground-truth occlusion labels of the occluded-query benchmark, and how well the parse recovers them.

On a derived occluded set (:mod:`ogfr_core.occlusion.benchmark`) we know exactly which pixels every
occluder changed: the occluded query and its holistic original differ there and nowhere else. The
ground truth of a query is what its *holistic* parse says once those pixels are hidden — the same
update the training augmentation applies after pasting an obstacle
(:func:`ogfr_core.occlusion.labels_after_cover`), so it is the z the rule in force would give if the
parser saw through the occluder perfectly:

* ``count_before_c`` — visible pixels of coarse part c in the holistic label map (Eq. 1);
* ``count_after_c`` — the same, with the changed pixels set to background;
* ``hidden_holistic_c`` — the holistic parse's hidden share (amodal vs visible map);
* ``covered_c = 1 − after / before`` — the true share of the visible part the occluder covers.

These raw numbers are stored per query (:func:`truth_table`), so :func:`rule_report` can score any
rule (``pixels`` with λ, ``hidden_fraction`` with τ, ``covered`` with λ and τ) without re-parsing:
the parse's z of the occluded image (``count_*`` and the rule's ``hidden_*`` / ``occluder_*`` shares of
its occlusion table) against the truth, per coarse
part (precision / recall / F1 / support), per occluder kind, the share of queries with any part
occluded, the agreement with "the part is at least half covered", and the false-positive rate of
the rule on the holistic queries (z says occluded where no occluder is).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import UserError
from . import COARSE_NAMES, NUM_COARSE, OcclusionRule, coarse_counts, hidden_fractions, labels_after_cover

BEFORE = tuple(f"count_before_{c}" for c in COARSE_NAMES)
AFTER = tuple(f"count_after_{c}" for c in COARSE_NAMES)
HIDDEN0 = tuple(f"hidden_holistic_{c}" for c in COARSE_NAMES)
COVERED = tuple(f"covered_{c}" for c in COARSE_NAMES)
COUNT = tuple(f"count_{c}" for c in COARSE_NAMES)
HIDDEN = tuple(f"hidden_{c}" for c in COARSE_NAMES)
TRUTH_FILE = "z_truth.parquet"
HALF_COVERED = 0.5  # the rule-free reference: "the part is at least half covered"


class OcclusionTruthError(UserError, ValueError):
    """The ground truth of an occluded set cannot be computed: its occluders table is missing or was
    drawn with another seed, or a query has no holistic parse. The message names the file and the
    stage to rerun."""


def changed_pixels(original: np.ndarray, occluded: np.ndarray) -> np.ndarray:
    """Pixels an occluder changed: bool ``[H, W]``, True where any channel of the two uint8 ``[H, W, 3]``
    images differs (a pasted pixel equal to the original is not counted: it hides nothing).

    Raises:
        ValueError: the images differ in shape.
    """
    if original.shape != occluded.shape:
        raise ValueError(f"original {original.shape} and occluded {occluded.shape} images differ in size")
    return (original != occluded).any(-1)


def to_label_size(mask: np.ndarray, label_hw: tuple[int, int]) -> np.ndarray:
    """bool ``[H, W]`` image-resolution mask → bool ``[lh, lw]`` (nearest neighbour, PIL's pixel centres,
    as the label maps were drawn)."""
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((label_hw[1], label_hw[0]), Image.NEAREST)
    return np.asarray(img) > 127


def truth_row(label_map: np.ndarray, amodal_map: np.ndarray | None, changed: np.ndarray) -> dict[str, float]:
    """The rule-free truth numbers of one occluded query (module docstring).

    Args:
        label_map: uint8 ``[lh, lw]`` holistic visible parsing (ids 0..8).
        amodal_map: uint8 ``[lh, lw]`` holistic amodal part map, or None (hidden shares = 0).
        changed: bool ``[lh, lw]`` pixels the occluder changed, at the label maps' resolution.

    Returns:
        ``{count_before_c, count_after_c, hidden_holistic_c, covered_c}`` for c in head, arms, torso, legs.
    """
    before = coarse_counts(label_map)  # [4]
    after = coarse_counts(np.where(changed, 0, label_map))  # [4]
    hidden0 = hidden_fractions(before, coarse_counts(amodal_map)) if amodal_map is not None else np.zeros(NUM_COARSE)
    covered = np.where(before > 0, 1 - after / np.maximum(before, 1), 0.0)
    row: dict[str, float] = {}
    for i in range(NUM_COARSE):
        row[BEFORE[i]], row[AFTER[i]] = int(before[i]), int(after[i])
        row[HIDDEN0[i]], row[COVERED[i]] = float(hidden0[i]), float(covered[i])
    return row


def truth_table(occluders: pd.DataFrame, derived_index: pd.DataFrame, derived_root: Path,
                source_paths: pd.Series, source_root: Path, label_map: callable, amodal_map: callable | None,
                label_hw: tuple[int, int], occluders_path: Path | str = "occluders.parquet") -> pd.DataFrame:
    """Truth numbers for every occluded query of a derived set.

    Args:
        occluders: the derived set's ``occluders.parquet`` (``path`` in the derived set, ``key`` of the
            holistic original, ``kind``).
        derived_index: the derived set's index (``key``, ``path``, ``split``).
        derived_root, source_root: folders the derived / source paths are relative to.
        source_paths: holistic key → path relative to ``source_root``.
        label_map, amodal_map: holistic key → uint8 ``[lh, lw]`` maps (``amodal_map`` None: no amodal maps).
        label_hw: the label maps' size.
        occluders_path: for error messages.

    Returns:
        one row per query: ``key`` (occluded image), ``source_key`` (holistic original), ``kind``,
        :data:`BEFORE`, :data:`AFTER`, :data:`HIDDEN0`, :data:`COVERED` and ``label_height``/``label_width``
        (the maps' size, for λ); sorted by ``key``.

    Raises:
        OcclusionTruthError: a query of the index has no occluder row, or an occluder's holistic
            original has no parse / no path.
    """
    from ..data.images import load_rgb

    queries = derived_index[derived_index["split"] == "query"]
    occ = occluders.set_index("path")
    missing = [p for p in queries["path"] if p not in occ.index]
    if missing:
        raise OcclusionTruthError(f"{occluders_path}: {len(missing)} occluded queries have no occluder row "
                                  f"(e.g. {missing[:3]}); the set was written by another run: rerun `dvc repro occlude`")
    rows = []
    for q in queries.itertuples(index=False):
        o = occ.loc[q.path]
        if o.key not in source_paths.index:
            raise OcclusionTruthError(f"{occluders_path}: holistic original {o.key[:12]}… of {q.path} is not in the "
                                      f"source index: rerun `dvc repro index occlude`")
        try:
            lm = label_map(o.key)
            am = amodal_map(o.key) if amodal_map is not None else None
        except KeyError as err:
            raise OcclusionTruthError(f"{occluders_path}: holistic original {o.key[:12]}… of {q.path} has no parse: "
                                      f"rerun `dvc repro parse occlude`") from err
        original = np.asarray(load_rgb(source_root / source_paths[o.key]))
        occluded = np.asarray(load_rgb(derived_root / q.path))
        changed = to_label_size(changed_pixels(original, occluded), label_hw)
        rows.append({"key": q.key, "source_key": o.key, "kind": o.kind, **truth_row(lm, am, changed),
                     "label_height": int(label_hw[0]), "label_width": int(label_hw[1])})
    return pd.DataFrame(rows).sort_values("key", kind="stable").reset_index(drop=True)


def true_z(rule: OcclusionRule, truth: pd.DataFrame, label_hw: tuple[int, int]) -> np.ndarray:
    """Ground-truth z ``[N, 4]`` under ``rule`` from :func:`truth_table` rows: the holistic parse's z,
    updated by the occluder's changed pixels (:func:`labels_after_cover`). Under ``covered`` (and
    ``learned_parts``) the holistic original has no occluder (share 0), so z = Eq. (2) on ``after`` or
    ``covered`` > τ."""
    before, after = truth[list(BEFORE)].to_numpy(), truth[list(AFTER)].to_numpy()
    hidden0 = truth[list(HIDDEN0)].to_numpy() if not rule.needs_occluder else np.zeros(before.shape)
    z0 = rule.labels(before, hidden0, label_hw)
    return labels_after_cover(rule, z0, hidden0, before, after, label_hw)[0]


def parsed_z(rule: OcclusionRule, table: pd.DataFrame, label_hw: tuple[int, int]) -> np.ndarray:
    """z ``[N, 4]`` under ``rule`` from occlusion-table rows (``count_*`` and the rule's shares,
    :attr:`~ogfr_core.occlusion.OcclusionRule.state_columns`, of each parse)."""
    counts = table[list(COUNT)].to_numpy()
    shares = table[list(rule.state_columns or HIDDEN)].to_numpy()
    return rule.labels(counts, shares, label_hw)


def part_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Per coarse part: ``precision``, ``recall``, ``f1`` (NaN where undefined) and ``support`` (true
    positives' count) of binary ``pred`` against ``truth``, both ``[N, 4]``.

    Example::

        >>> part_scores(np.array([[1, 0, 0, 1], [0, 0, 1, 1]]), np.array([[1, 0, 1, 0], [1, 0, 1, 1]]))["torso"]
        {'precision': 1.0, 'recall': 0.5, 'f1': 0.6667, 'support': 2}
    """
    out = {}
    for i, name in enumerate(COARSE_NAMES):
        p, t = pred[:, i].astype(bool), truth[:, i].astype(bool)
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        prec = tp / (tp + fp) if tp + fp else float("nan")
        rec = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        out[name] = {"precision": _r(prec), "recall": _r(rec), "f1": _r(f1), "support": int(t.sum())}
    return out


def rule_report(rule: OcclusionRule, truth: pd.DataFrame, occluded: pd.DataFrame, holistic: pd.DataFrame,
                label_hw: tuple[int, int]) -> dict:
    """How well ``rule`` applied to the parses of the occluded queries recovers their truth.

    Args:
        rule: the rule scored (truth and prediction both under it).
        truth: :func:`truth_table` rows.
        occluded: the derived set's occlusion table (rows for ``truth.key``).
        holistic: the source set's occlusion table (rows for ``truth.source_key``).
        label_hw: the label maps' size (λ rescaling).

    Returns:
        ``{"rule", "lam", "tau", "queries", "parts": {part: scores}, "by_kind": {kind: {part: scores}},
        "any_occluded": {"truth", "parsed", "gap"}, "vs_half_covered": {part: scores},
        "holistic_false_positive_rate": {part: rate, "any": rate}}`` (rates and shares in [0, 1]).
    """
    occ = occluded.set_index("key").loc[truth["key"]]
    hol = holistic.set_index("key").loc[truth["source_key"]]
    t = true_z(rule, truth, label_hw)  # [N, 4]
    p = parsed_z(rule, occ, label_hw)  # [N, 4]
    half = (truth[list(COVERED)].to_numpy() >= HALF_COVERED).astype(np.int64)
    h = parsed_z(rule, hol, label_hw)  # z of the holistic originals: every 1 is a false alarm of the rule
    kinds = truth["kind"].to_numpy()
    return {
        "rule": rule.rule, "lam": rule.lam if rule.rule != "hidden_fraction" else None,
        "tau": rule.tau if rule.rule != "pixels" else None, "queries": int(len(truth)),
        "parts": part_scores(p, t),
        "by_kind": {str(k): part_scores(p[kinds == k], t[kinds == k]) for k in sorted(set(kinds))},
        "any_occluded": {"truth": _r(t.any(1).mean()), "parsed": _r(p.any(1).mean()),
                         "gap": _r(p.any(1).mean() - t.any(1).mean())},
        "vs_half_covered": part_scores(p, half),
        "half_covered_any": _r(half.any(1).mean()),
        "holistic_false_positive_rate": {**{c: _r(h[:, i].mean()) for i, c in enumerate(COARSE_NAMES)},
                                         "any": _r(h.any(1).mean())},
    }


def check_occluders(occluders_path: Path, seed: int) -> pd.DataFrame:
    """Read a derived set's ``occluders.parquet`` and check it was drawn with ``seed``.

    Raises:
        OcclusionTruthError: the file is missing, or its ``seed`` column names another seed.
    """
    path = Path(occluders_path)
    if not path.is_file():
        raise OcclusionTruthError(f"{path}: no occluders table; rerun `dvc repro occlude`")
    table = pd.read_parquet(path)
    seeds = set(table["seed"].unique().tolist()) if "seed" in table.columns else set()
    if seeds != {int(seed)}:
        raise OcclusionTruthError(f"{path}: occluders drawn with seed {sorted(seeds) or 'unknown'}, "
                                  f"params say occlude.seed {seed}; rerun `dvc repro occlude`")
    return table


def rule_score(rep: dict, min_support: int = 20) -> float:
    """How a validation grid ranks a rule: the mean F1 against the rule-free truth "the part is at least
    half covered" over the coarse parts with ≥ ``min_support`` such positives, minus the rule's
    false-positive rate (any part) on the holistic originals — one scale for every rule (each rule's
    own truth moves with its threshold), rewarding occlusion seen and penalising occlusion invented.
    NaN if no part has enough positives."""
    f1 = [s["f1"] for s in rep["vs_half_covered"].values() if s["support"] >= min_support and s["f1"] == s["f1"]]
    return _r(float(np.mean(f1)) - rep["holistic_false_positive_rate"]["any"]) if f1 else float("nan")


def choose_rule(reports: Iterable[dict], margin: float = 0.05, min_support: int = 20) -> dict:
    """The rule a validation grid chooses: the paper's ``pixels`` rule (faithful first) unless another
    rule's :func:`rule_score` beats it by more than ``margin``; then the best-scoring one.

    Args:
        reports: :func:`rule_report` outputs (the paper's rule among them).
        margin: how much a deviation must win by (~950 occluded validation images: smaller gaps are noise).

    Returns:
        ``{"rule", "lam", "tau", "score", "paper_score", "margin"}`` of the chosen rule.

    Raises:
        ValueError: no ``pixels`` report among ``reports``.
    """
    reports = list(reports)
    paper = next((r for r in reports if r["rule"] == "pixels"), None)
    if paper is None:
        raise ValueError("choose_rule needs the paper's pixels rule among the reports")
    scored = [(rule_score(r, min_support), r) for r in reports]
    best_score, best = max(((sc, r) for sc, r in scored if sc == sc), key=lambda t: t[0],
                           default=(float("nan"), paper))
    paper_score = rule_score(paper, min_support)
    chosen = best if best_score > paper_score + margin else paper
    return {"rule": chosen["rule"], "lam": chosen["lam"], "tau": chosen["tau"], "score": rule_score(chosen, min_support),
            "paper_score": paper_score, "best_other": {"rule": best["rule"], "tau": best["tau"], "score": best_score},
            "margin": margin}


def _r(x: float) -> float:
    return float("nan") if x != x else round(float(x), 4)
