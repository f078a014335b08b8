"""``parse.min_keypoint_visibility`` chosen on the occluded validation set (issue 21).

The mediapipe parser draws a part only from landmarks whose BlazePose ``visibility`` reaches
``min_keypoint_visibility``, then keeps it inside the person mask. On these crops a low visibility
score is mostly not an occlusion: legs and arms in plain view score below 0.5 on many holistic crops,
so Eq. (2) calls them occluded (the false positives of ``reports/occlude/z_accuracy.json``), while the
learned occluder mask of the ``covered`` rule and the person mask already see real occluders.

For each visibility of ``--grid`` this probe re-parses the occluded validation queries and their
holistic originals with that one parse option changed, recomputes their ground truth
(:func:`~ogfr_core.occlusion.truth.truth_table` on the re-parsed holistic maps), their occlusion
tables (the ``occluder`` stage's segmenter at ``occluder.threshold``) and scores the rule grid the
``occlude`` stage scores (:func:`~ogfr_core.occlusion.benchmark.z_accuracy`: the paper's rule, and
``hidden_fraction`` / ``covered`` over ``occlude.tau_grid``, each rule's
:func:`~ogfr_core.occlusion.truth.rule_score`, the rule :func:`~ogfr_core.occlusion.truth.choose_rule`
takes). The visibility whose chosen rule scores best is the choice; the occluded test set then reports
it next to the visibility in force (never chooses). The derived images stay those of the pipeline's
``occlude`` stage (their person occluders were cut out with the parse in force): only the parsing of
the scored images changes. Writes JSON (default ``reports/occlude/parse_visibility.json``).

Usage (after ``dvc repro occlude``; ≈ 25 s per visibility on the validation set, ≈ 2 min on the test
set, one core)::

    nice -n 10 python -m benchmarks.probe_parse_visibility --threads 1
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

GRID = (0.5, 0.3, 0.1, 0.0)


def parse_keys(parser, paths: dict[str, Path], label_hw: tuple[int, int]) -> pd.DataFrame:
    """Parse each ``key → image path`` with ``parser`` → rows with ``key``, ``label_map``,
    ``amodal_map`` (PNG bytes) and ``status``, as :func:`~ogfr_core.parsing.read_parsing` gives them."""
    from ogfr_core.data.images import load_rgb
    from ogfr_core.parsing.cache import make_row

    rows = [make_row(k, "probe", "probe", "probe", parser.parse(np.asarray(load_rgb(p))), label_hw)
            for k, p in paths.items()]
    return pd.DataFrame(rows)[["key", "label_map", "amodal_map", "status"]]


def score_visibility(cfg, name: str, source: pd.DataFrame, source_root: Path, rule, masks: dict, tau_grid,
                     seed: int, validation: bool) -> dict:
    """:func:`~ogfr_core.occlusion.benchmark.z_accuracy` of the derived set ``name`` parsed with ``cfg``
    (a ``parse:`` config), with the validation grid when ``validation``; ``masks`` maps every scored
    key (occluded queries and holistic originals) to its predicted occluder mask; ``seed`` is
    ``occlude.seed`` (the occluders table must have been drawn with it)."""
    from ogfr_core.occlusion.benchmark import DerivedSet, z_accuracy
    from ogfr_core.occlusion.table import occlusion_table
    from ogfr_core.occlusion.truth import check_occluders, truth_table
    from ogfr_core.parsing.cache import decode_label_map
    from ogfr_core.parsing.mediapipe_backend import MediaPipeParser

    root = Path("data/derived") / name
    index = pd.read_parquet(Path("data/index") / f"{name}.parquet")
    queries = index[index["split"] == "query"]
    occluders = check_occluders(root / "occluders.parquet", seed)
    label_hw = (cfg.label_height, cfg.label_width)
    parser = MediaPipeParser(cfg)
    try:
        occ_parse = parse_keys(parser, {k: root / p for k, p in zip(queries["key"], queries["path"])}, label_hw)
        hol_keys = occluders.set_index("path").loc[queries["path"], "key"].unique()
        hol_parse = parse_keys(parser, {k: source_root / source.loc[k, "path"] for k in hol_keys}, label_hw)
    finally:
        parser.close()
    lm = {k: decode_label_map(b) for k, b in zip(hol_parse["key"], hol_parse["label_map"])}
    am = {k: decode_label_map(b) for k, b in zip(hol_parse["key"], hol_parse["amodal_map"])}
    truth = truth_table(occluders, queries, root, source["path"], source_root, lm.__getitem__, am.__getitem__,
                        label_hw, root / "occluders.parquet")
    derived = DerivedSet(name, root, index, occluders, occlusion_table(occ_parse, rule, masks), {}, truth)
    role = "validation" if validation else "test"
    acc = z_accuracy(rule, {role: derived}, occlusion_table(hol_parse, rule, masks), label_hw, tuple(tau_grid),
                     role if validation else None)
    return acc["sets"][role]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", type=float, nargs="+", default=list(GRID))
    ap.add_argument("--out", default="reports/occlude/parse_visibility.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ogfr_core.config import (DataConfig, OccludeConfig, OccluderConfig, OcclusionConfig, ParseConfig,
                                  load_section)
    from ogfr_core.data.images import load_rgb
    from ogfr_core.data.index import dataset_root, read_index
    from ogfr_core.io import write_json
    from ogfr_core.occlusion import rule_from_config
    from ogfr_core.occlusion.benchmark import VAL_SUFFIX, derived_name
    from ogfr_core.occlusion.learned import WEIGHTS, load_segmenter, predict_masks

    data = load_section(args.params, "data", DataConfig)
    occl = load_section(args.params, "occlude", OccludeConfig)
    parse = load_section(args.params, "parse", ParseConfig)
    rule = rule_from_config(load_section(args.params, "occlusion", OcclusionConfig))
    threshold = load_section(args.params, "occluder", OccluderConfig).threshold
    if parse.backend != "mediapipe":
        raise SystemExit(f"{args.params}: parse.backend is {parse.backend!r}; this probe re-parses with mediapipe only")
    label_hw = (parse.label_height, parse.label_width)
    source = read_index(Path("data/index") / f"{data.name}.parquet").set_index("key")
    source_root = dataset_root(data, Path("."))
    model = load_segmenter(WEIGHTS)

    def masks_of(name: str) -> dict:  # occluded queries and their holistic originals, segmented once
        root = Path("data/derived") / name
        q = pd.read_parquet(Path("data/index") / f"{name}.parquet").query("split == 'query'")
        hol = pd.read_parquet(root / "occluders.parquet").set_index("path").loc[q["path"], "key"].unique()
        paths = {**{k: root / p for k, p in zip(q["key"], q["path"])},
                 **{k: source_root / source.loc[k, "path"] for k in hol}}
        return predict_masks(model, lambda k: np.asarray(load_rgb(paths[k])), list(paths), label_hw, threshold)

    val_name, test_name = derived_name(data, occl) + VAL_SUFFIX, derived_name(data, occl)
    val_masks = masks_of(val_name)
    val = {}
    for vis in args.grid:
        cfg = dataclasses.replace(parse, min_keypoint_visibility=float(vis))
        val[f"{vis:g}"] = score_visibility(cfg, val_name, source, source_root, rule, val_masks, occl.tau_grid,
                                          occl.seed, True)
        c = val[f"{vis:g}"]["chosen"]
        print(f"validation visibility {vis:g}: chosen {c['rule']} tau {c['tau']} score {c['score']:+.3f} "
              f"(paper's rule {c['paper_score']:+.3f})", flush=True)
    best = max(val, key=lambda v: val[v]["chosen"]["score"])
    test_masks = masks_of(test_name)
    test = {}
    for vis in dict.fromkeys([best, f"{parse.min_keypoint_visibility:g}"]):
        chosen = val[vis]["chosen"]
        r = dataclasses.replace(rule, rule=chosen["rule"], tau=chosen["tau"] if chosen["tau"] is not None else rule.tau)
        cfg = dataclasses.replace(parse, min_keypoint_visibility=float(vis))
        test[vis] = score_visibility(cfg, test_name, source, source_root, r, test_masks, occl.tau_grid,
                                      occl.seed, False)
    command = "python -m benchmarks.probe_parse_visibility " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(args.out, {
        "command": command, "in_force": parse.min_keypoint_visibility, "occluder_threshold": threshold,
        "choice": {"by": "the best validation score of the rule choose_rule takes at each visibility (score = mean "
                         "F1 against 'part at least half covered', parts with >= 20 positives, minus the "
                         "holistic false-positive rate)", "min_keypoint_visibility": float(best),
                   "rule": val[best]["chosen"]},
        "sets": {"validation": val, "test": test}})
    for vis, entry in test.items():
        for rep in entry["rules"]:
            print(f"test visibility {vis}: {rep['rule']:8s} tau {rep['tau']} score {rep['score']:+.3f}  F1 " +
                  " ".join(f"{c} {s['f1']:.2f}" for c, s in rep["parts"].items()) + "  object F1 " +
                  " ".join(f"{s['f1']:.2f}" for s in rep["by_kind"].get("object", {}).values()) +
                  f"  holistic FP {rep['holistic_false_positive_rate']['any']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
