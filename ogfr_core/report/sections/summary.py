"""The first screen (what was run, the headline result, the verdicts) and the checkout's own run: its
setup and its results beside the paper's."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..experiments import fmt_pct, mean_std
from ..paper import PAPER_RESULTS, PAPER_SETUP, PAPER_TABLE, paper_dataset
from ..render import Section
from ..verdicts import claims, seed_runs
from .common import OCC_SUFFIX, RANK_METRICS, pct


def setup_section(metrics: dict, parse_backend: str, parse_source: str) -> Section:
    """"Run setup": dataset, method, backbone, ImageNet weights or the random-init warning, epochs,
    input size and parsing backend, read from ``reports/metrics.json`` — so a CPU demo is never
    mistaken for a reproduction."""
    s = Section("Run setup")
    pretrained = str(metrics.get("pretrained_weights", ""))
    stem = str(metrics.get("stem_weights", "")) if metrics.get("patch_embed") == "hybrid" else ""
    epochs = metrics.get("epochs")
    backbone = metrics.get("backbone", "")
    size = f"{metrics.get('height', '?')}×{metrics.get('width', '?')}"
    problems = []
    if not pretrained and not stem:
        s.warn("**random init — not a reproduction.** The backbone was not initialised from ImageNet "
               "weights (`train.model.pretrained` is empty); numbers below say nothing about the paper's.")
        problems.append("random init")
    elif not pretrained:
        s.warn("**hybrid OA-ViT — not a reproduction.** The patch tokens come from an ImageNet-pretrained "
               "MobileNetV2 stem (`train.model.patch_embed: hybrid`); the transformer blocks are randomly "
               "initialised (no ImageNet ViT weights on this machine).")
        problems.append("ImageNet CNN stem + randomly initialised transformer blocks (paper: ImageNet ViT-B/16)")
    if epochs is not None and int(epochs) < PAPER_SETUP["epochs"]:
        problems.append(f"{epochs} epochs (paper {PAPER_SETUP['epochs']})")
    if backbone and backbone != PAPER_SETUP["backbone"]:
        problems.append(f"backbone {backbone} (paper {PAPER_SETUP['backbone']})")
    if size != f"{PAPER_SETUP['height']}×{PAPER_SETUP['width']}":
        problems.append(f"input {size} (paper 256×128)")
    if problems:
        s.warn("This run differs from the paper's setting: " + "; ".join(problems) +
               ". Treat it as a pipeline demo, not a reproduction.")
    s.table(["item", "value"], [
        ["trained on", metrics.get("trained_on", "?")],
        ["evaluated on", ", ".join(metrics["datasets"])],
        ["method", metrics.get("method", "?")],
        ["backbone", backbone or "?"],
        ["patch embedding", metrics.get("patch_embed", "conv")],
        ["ImageNet weights", pretrained or (f"CNN stem only: {stem}" if stem else "NONE (random init)")],
        ["epochs trained", epochs if epochs is not None else "?"],
        ["input size (H×W)", size],
        ["parsing backend", f"{parse_backend} ({parse_source})"],
        ["feature L2-norm", metrics.get("feat_norm", "?")],
    ])
    return s


def results_section(metrics: dict) -> Section:
    """"Results vs. the paper": rank-1/5/10, mAP, mINP (percent) per evaluated set and distance
    (Eq. 23 ``visibility`` and ``global``) beside the paper's Table I–III rows for that set."""
    s = Section("Results vs. the paper")
    s.p("CMC rank-k, mAP and mINP in percent, Market-1501 protocol (same-id same-camera gallery "
        "items dropped). `visibility` is Eq. (23), `global` the global feature alone. Paper rows are "
        "the published numbers (OGFR paper tables as cited).")
    rows = []
    for name, entry in metrics["datasets"].items():
        for kind in ("visibility", "global"):
            if kind in entry:
                m = entry[kind]
                rows.append([name, f"this run ({kind})", *[pct(m.get(k)) for k in RANK_METRICS],
                             f"{m.get('num_valid_queries', '?')} / {entry.get('num_query', '?')}"])
        for kind, m in entry.items():  # test-time extras of a peer method: flagged, never the standard protocol
            if isinstance(m, dict) and "flags" in m:
                rows.append([name, f"this run ({kind}; {', '.join(m.get('flag_labels', m['flags']))})",
                             *[pct(m.get(k)) for k in RANK_METRICS],
                             f"{m.get('num_valid_queries', '?')} / {entry.get('num_query', '?')}"])
        paper = paper_dataset(name)
        if paper is None:
            rows.append([name, "paper", *["–"] * len(RANK_METRICS), "the paper reports no result on this set"])
            continue
        for method, vals in PAPER_RESULTS[paper].items():
            rows.append([name, f"{method} (paper Table {PAPER_TABLE[paper]})",
                         *[f"{vals[k]:.1f}" if k in vals else "–" for k in RANK_METRICS], ""])
    s.table(["dataset", "source", *RANK_METRICS, "valid / all queries"], rows)
    drops = [(n, n[: -len(OCC_SUFFIX)]) for n in metrics["datasets"]
             if n.endswith(OCC_SUFFIX) and n[: -len(OCC_SUFFIX)] in metrics["datasets"]]
    for occ, hol in drops:
        h, o = metrics["datasets"][hol].get("visibility", {}), metrics["datasets"][occ].get("visibility", {})
        if h and o:
            s.p(f"Holistic → occluded queries ({hol} → {occ}, same gallery): rank-1 {pct(h.get('rank-1'))} → "
                f"{pct(o.get('rank-1'))} ({100 * (o['rank-1'] - h['rank-1']):+.1f}), mAP {pct(h.get('mAP'))} → "
                f"{pct(o.get('mAP'))} ({100 * (o['mAP'] - h['mAP']):+.1f} points).")
    skipped = {n: e.get(k, {}).get("num_skipped_queries", 0) for n, e in metrics["datasets"].items()
               for k in ("visibility",)}
    if any(skipped.values()):
        s.p("Queries skipped (no gallery positive after junk removal): " +
            ", ".join(f"{n}: {v}" for n, v in skipped.items()) + ".")
    return s



#: the distance each method is judged on (as in :mod:`..verdicts`): Eq. 23 for OGFR, the global
#: feature for the baseline (its two distances coincide)
PRIMARY_DISTANCE = {"ogfr": "visibility", "baseline": "global"}


def profile_line(metrics: dict) -> str:
    """The training profile in words (backbone, weights, epochs, input size) and whether it is the paper's."""
    stem = metrics.get("patch_embed") == "hybrid"
    weights = ("ImageNet ViT weights" if metrics.get("pretrained_weights") else
               "ImageNet CNN stem, random transformer blocks" if stem and metrics.get("stem_weights") else "random init")
    size = f"{metrics.get('height', '?')}×{metrics.get('width', '?')}"
    ours = (metrics.get("backbone"), metrics.get("epochs"), size)
    paper = (PAPER_SETUP["backbone"], PAPER_SETUP["epochs"], f"{PAPER_SETUP['height']}×{PAPER_SETUP['width']}")
    kind = "the paper's profile" if ours == paper and metrics.get("pretrained_weights") else "a reduced (CPU demo) profile"
    return (f"{kind}: `{metrics.get('backbone', '?')}` ({weights}), {metrics.get('epochs', '?')} epochs, input {size} "
            f"(paper: `{paper[0]}`, {paper[1]} epochs, {paper[2]})")


def headline_section(metrics: dict, runs: Sequence[Mapping[str, Any]], dataset: str,
                     reference: Mapping[str, Any] | None = None, probe: Mapping[str, Any] | None = None) -> Section:
    """The first screen, "At a glance": what was run (dataset, both test protocols, profile, seeds) and the
    headline result — OGFR vs the baseline, rank-1 / mAP in percent as mean ± sample std over the seed
    runs of this checkout's configuration (:func:`~ogfr_core.report.verdicts.seed_runs`: the runs of
    ``reports/seed_runs.json`` / ``dvc exp`` whose configuration is ``reference`` with that method; each
    method on its primary distance, :data:`PRIMARY_DISTANCE`) on the holistic (``dataset``) and occluded
    (``dataset-occ``) queries — with the paper's claims as verdicts (:func:`~ogfr_core.report.verdicts.claims`)
    in one short table."""
    s = Section("At a glance")
    occ = f"{dataset}{OCC_SUFFIX}"
    by = seed_runs(runs, reference)
    seeds = {m: sorted(v) for m, v in by.items()}
    s.p(f"**What was run.** OGFR and the ViT baseline (TransReID-style, no OA-ViT / FEP / KD), trained on "
        f"`{metrics.get('trained_on', dataset)}` with {profile_line(metrics)}; tested on its holistic queries "
        f"(`{dataset}`) and on the same queries with a synthetic occluder (`{occ}`, same gallery). Seeds: OGFR "
        f"{', '.join(map(str, seeds['ogfr'])) or 'none'}; baseline {', '.join(map(str, seeds['baseline'])) or 'none'} "
        "(this checkout's configuration; `reports/seed_runs.json`).")
    if profile_line(metrics).startswith("a reduced"):
        s.warn("**Not a reproduction**: a pipeline demo on a reduced profile; compare OGFR with the baseline "
               "run here, not with the paper's numbers.")
    cols = [(ds, m) for ds in (dataset, occ) for m in ("rank-1", "mAP")]
    values = {m: [[v.get(f"datasets.{ds}.{PRIMARY_DISTANCE[m]}.{k}") for v in by[m].values()] for ds, k in cols]
              for m in ("ogfr", "baseline")}
    rows = []
    for m, name in (("ogfr", "OGFR (Eq. 23 distance)"), ("baseline", "baseline (global feature)")):
        rows.append([name, len(by[m]), *[fmt_pct(*mean_std(v)) for v in values[m]]])
    diffs = []
    for vo, vb in zip(values["ogfr"], values["baseline"]):
        mo, mb = mean_std(vo)[0], mean_std(vb)[0]
        diffs.append(f"{100 * (mo - mb):+.1f}" if mo == mo and mb == mb else "–")
    rows.append(["OGFR − baseline", "", *diffs])
    if any(by.values()):
        s.p("**Headline result** (rank-1 / mAP in percent, mean ± sample std over the seeds):")
        s.table(["method", "seeds", "holistic rank-1", "holistic mAP", "occluded rank-1", "occluded mAP"], rows)
    else:
        s.p("_No seed runs of this checkout's configuration: `make seeds` then `make record-seeds`._")
    verdicts = claims(runs, dataset, occ, probe, reference)
    s.p("**The paper's claims**, judged on those seeds (holds = the difference in the claimed direction exceeds "
        "2 standard errors; details in \"The paper's claims, judged on the seed runs\"):")
    s.table(["claim", "verdict", "diff ± se (points)"],
            [[v["claim"], f"**{v['verdict']}**",
              f"{v['diff']:+.1f} ± {v['se']:.1f}" if math.isfinite(v["se"]) else
              (f"{v['diff']:+.1f}" if math.isfinite(v["diff"]) else "–")] for v in verdicts])
    return s
