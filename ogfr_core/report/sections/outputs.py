"""Sections on the stages' other outputs: training curves, CMC, occlusion types, erasing masks, the
occluded-query benchmark and its labels, retrievals and parsing overlays.

Each function takes already-read data (:class:`~ogfr_core.report.sources.ReportInputs` fields; None =
missing) and returns one :class:`~ogfr_core.report.render.Section`; a figure is drawn into the folder it
is given (``figures/``: no dataset pixels, committed; ``crops/``: dataset crops, DVC-cached only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .. import figures
from ..render import Section
from .common import num


def _figure_or_missing(sec: Section, fn: Callable[[], Path], caption: str, what: str, stage: str) -> None:
    try:
        sec.fig(fn(), caption)
    except FileNotFoundError as exc:
        sec.missing(f"{what} (`{exc.filename or exc}`)", stage)


def training_curves_section(live: Mapping[str, Any], fig_dir: Path, where: str = "dvclive/plots/metrics") -> Section:
    """"Training curves": one panel per dvclive series (``live``: name → DataFrame(step, value))."""
    sec = Section("Training curves")
    if live:
        sec.fig(figures.training_curves(live, fig_dir / "training_curves.png"),
                f"Every logged training series ({len(live)}): loss terms, reward, retained patches, lr "
                "(orange: moving average).")
    else:
        sec.missing(f"dvclive TSVs under `{where}`", "dvc repro train")
    return sec


def cmc_section(cmc: Any, fig_dir: Path, where: str = "reports/plots/cmc.csv") -> Section:
    """"CMC curve" from ``reports/plots/cmc.csv`` (DataFrame: ``rank`` and one column per distance)."""
    sec = Section("CMC curve")
    if cmc is not None:
        sec.fig(figures.cmc_curve(cmc, fig_dir / "cmc.png"), "CMC (rank 1-50) per distance and evaluated set.")
    else:
        sec.missing(f"`{where}`", "dvc repro evaluate")
    return sec


def occlusion_types_section(counts: Mapping[str, np.ndarray] | None, missing: str, fig_dir: Path) -> Section:
    """"Occlusion types (Fig. 6b)": histogram and table of ``counts`` (split → ``[16]`` images per type);
    ``missing``: the parquet that was not found when ``counts`` is None."""
    sec = Section("Occlusion types (Fig. 6b)")
    if counts is None:
        return sec.missing(f"`{missing}`", "dvc repro index" if "index" in missing else "dvc repro occlusion")
    sec.fig(figures.occlusion_histogram(counts, fig_dir / "occlusion_types.png"),
            "Images per occlusion type (z from the parsing, Eq. 1-2) and split.")
    sec.table(["split", "images", "holistic (type 0)", "occluded"],
              [[k, int(v.sum()), int(v[0]), int(v.sum() - v[0])] for k, v in counts.items()])
    return sec


def erasing_masks_section(metrics: dict, masks: dict | None, crop_dir: Path, num_examples: int = 8,
                          where: str = "reports/eval/erasing_masks.json") -> Section:
    """"Erasing masks on holistic images (Fig. 7)": the FEP diagnostics of ``metrics`` (background AUC,
    retain probabilities) and the mask figure from ``masks`` (``erasing_masks.json``, ``root`` absolute)."""
    sec = Section("Erasing masks on holistic images (Fig. 7)")
    fep = next((e["fep"] for e in metrics["datasets"].values() if isinstance(e.get("fep"), dict)), None)
    if fep and fep.get("available"):
        sec.p(f"Does the agent erase background? ROC-AUC of the erasing probability 1 − m (Eq. 6) for "
              f"background vs body patches (parsing label map, < 50 % body = background) on {fep['images']} "
              f"test images: **{fep['auc_background']:.3f}** (0.5 = blind to the body, 1 = every background "
              f"patch more likely erased than every body patch). Retain probability m: mean "
              f"{fep['retain_mean']:.3f} ± {fep['retain_std']:.3f} (5–95 %: {fep['retain_p05']:.3f}–"
              f"{fep['retain_p95']:.3f}); background patches {fep['retain_mean_background']:.3f}, body patches "
              f"{fep['retain_mean_body']:.3f}.")
    elif fep:
        sec.p(f"_FEP diagnostics not available: {fep.get('reason', '?')}._")
    if masks is None:
        return sec.missing(f"`{where}`", "dvc repro evaluate")
    items = masks.get("items", [])[:num_examples]
    if not masks.get("available") or not items:
        sec.p(f"_Not available for this model: {masks.get('reason') or 'no erasing mask'}._")
    else:
        _figure_or_missing(sec, lambda: figures.erasing_masks(items, Path(masks["root"]), crop_dir / "erasing_masks.png"),
                           "Top: holistic test images. Bottom: 1 − retain probability of the FEP "
                           "agent (Eq. 6) per patch; red patches are erased.", "an image", "dvc repro index")
    return sec


def occluded_benchmark_section(summary: dict | None, examples: Path | None,
                               where: str = "reports/occlude/summary.json") -> Section:
    """"Occluded-query benchmark": how the ``occlude`` stage built ``<dataset>-occ`` (its summary) and
    its example figure."""
    sec = Section("Occluded-query benchmark")
    if summary is None:
        return sec.missing(f"`{where}`", "dvc repro occlude")
    o, oc = summary, summary.get("occluders", {})
    by_parsing = o.get("queries_occluded_by_parsing", {})
    sec.p(f"`{o.get('dataset')}`: every query of `{o.get('source')}` with one synthetic occluder "
          f"(stage `occlude`, seed {o.get('seed')}): kinds {oc.get('kinds')}, edges {oc.get('edges')}, "
          f"box area {oc.get('box_area_min', 0):.0%}–{oc.get('box_area_max', 0):.0%} of the crop (mean "
          f"{oc.get('box_area_mean', 0):.0%}; pixels actually covered {oc.get('covered_mean', 0):.0%}), cut from "
          f"{oc.get('source_images')} training images of {oc.get('source_ids')} training identities "
          f"({oc.get('source_test_pids')} from test identities). The gallery is the original. The parsing "
          f"calls {100 * by_parsing.get('derived', float('nan')):.1f}% of the derived queries occluded "
          f"(original queries: {100 * by_parsing.get('source', float('nan')):.1f}%).")
    if examples is not None:
        sec.fig(examples, "Original and occluded queries, each with its parsing overlay; z parsed from "
                          "the occluded image vs its ground truth (occluded parts: H head, A arms, "
                          "T torso, L legs).")
    return sec


def z_accuracy_section(acc: dict | None) -> Section:
    """"Occlusion labels against the ground truth": per set (validation = training identities, where the
    rule is chosen; test = the occluded-query benchmark, which only reports), per rule, the per-part
    F1 (precision / recall) of the parsed z of the occluded queries against their ground truth, by
    occluder kind, the share of queries with any part occluded (parsed vs true) and the rule's
    false-positive rate on the holistic originals (``reports/occlude/z_accuracy.json``)."""
    s = Section("Occlusion labels against the ground truth")
    if not acc:
        return s.missing("`reports/occlude/z_accuracy.json`", "dvc repro occlude")
    force = acc.get("rule_in_force", {})
    s.p(f"Rule in force: `{force.get('rule')}` (λ = {force.get('lam')}, τ = {force.get('tau')}). The ground truth "
        "of an occluded query is its holistic parse with the pixels the occluder changed hidden, under the same "
        "rule — the z the training augmentation gives a pasted obstacle (`ogfr_core/occlusion/truth.py`). "
        "F1 (precision / recall) per coarse part, support = true positives; FP = the rule's rate of "
        "'occluded' on the holistic originals (no occluder).")
    rows = []
    for role, entry in acc.get("sets", {}).items():
        reports = list(entry.get("rules", [])) + list(entry.get("tau_grid", []))
        seen = set()
        for rep in reports:
            name = f"{rep['rule']} " + (f"λ={rep['lam']:g}" if rep["rule"] == "pixels" else f"τ={rep['tau']:g}")
            if name in seen:
                continue
            seen.add(name)
            chosen = entry.get("chosen") or {}
            if (rep["rule"], rep["tau"] if rep["rule"] != "pixels" else None) == \
                    (chosen.get("rule"), chosen.get("tau") if chosen.get("rule") != "pixels" else None):
                name += " (chosen)"
            for kind, parts in [("all", rep["parts"]), *sorted(rep["by_kind"].items())]:
                cells = [f"{num(v['f1'])} ({num(v['precision'])}/{num(v['recall'])}) n={v['support']}"
                         for v in (parts[c] for c in ("head", "arms", "torso", "legs"))]  # JSON sorts the keys
                any_ = rep["any_occluded"]
                rows.append([f"{role} ({entry['dataset']}, {entry['queries']} q.)", name, kind, *cells,
                             f"{any_['parsed']:.0%} / {any_['truth']:.0%}" if kind == "all" else "",
                             f"{rep['holistic_false_positive_rate']['any']:.0%}" if kind == "all" else "",
                             num(rep["score"]) if kind == "all" and "score" in rep else ""])
    s.table(["set", "rule", "occluder", "head F1 (P/R)", "arms F1 (P/R)", "torso F1 (P/R)", "legs F1 (P/R)",
             "any occluded: parsed / true", "holistic FP (any part)", "score"], rows)
    val = acc.get("sets", {}).get("validation")
    if val and val.get("chosen"):
        c = val["chosen"]
        s.p(f"Chosen on the validation set ({val.get('choice', '')}): **{c['rule']}** "
            f"({'λ = ' + format(c['lam'], 'g') if c['rule'] == 'pixels' else 'τ = ' + format(c['tau'], 'g')}; score "
            f"{num(c['score'])}, the paper's rule {num(c['paper_score'])}, best other "
            f"{c['best_other']['rule']} τ = {c['best_other']['tau']} at {num(c['best_other']['score'])}). The test set "
            "reports the rule in force, the paper's rule and that best deviation; it chooses nothing.")
    return s


def retrievals_section(retrievals: dict | None, crop_dir: Path, num_queries: int = 6,
                       where: str = "reports/eval/retrievals.json") -> Section:
    """"Rank-5 retrievals of occluded queries (Fig. 8)" from ``retrievals.json`` (``root`` absolute)."""
    sec = Section("Rank-5 retrievals of occluded queries (Fig. 8)")
    if retrievals is None:
        return sec.missing(f"`{where}`", "dvc repro evaluate")
    queries = retrievals.get("queries", [])[:num_queries]
    if not queries:
        return sec.p("_Not available: the evaluate stage selected no query with a gallery positive._")
    n_occ = sum(bool(q.get("occluded")) for q in queries)
    if n_occ < len(queries):
        sec.p(f"Only {n_occ} of {len(queries)} example queries are occluded (z ≠ 0); the rest are holistic.")
    _figure_or_missing(sec, lambda: figures.retrievals(queries, Path(retrievals["root"]), crop_dir / "retrievals.png"),
                       f"Distance: {queries[0].get('distance', '?')}. Same-id same-camera "
                       "gallery items are excluded, as in the protocol.", "an image", "dvc repro index")
    return sec


def parsing_section(overlay: Path | None, backend: str, where: str = "reports/parse/overlay.png") -> Section:
    """"Parsing overlays": the parse stage's overlay PNG."""
    sec = Section("Parsing overlays")
    if overlay is not None:
        sec.fig(overlay, f"Part label maps over the crops ({backend}).")
    else:
        sec.missing(f"`{where}`", "dvc repro parse")
    return sec
