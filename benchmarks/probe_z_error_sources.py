"""Where the remaining error of the ``covered`` / ``learned_parts`` / ``learned_soft`` occlusion labels comes
from (issue 21): the occluder segmenter, the parse of the occluded image, or the rule.

Under ``learned_parts`` / ``learned_soft`` "the occluded image's parse" below is the segmenter's *learned*
parse of the target on the occluded image (:func:`~ogfr_core.occlusion.learned.predict`, the shares it reads
on its argmax / its probabilities; Eq. (2) still counts the parser's pixels), and "the holistic original's
parse" replaces it in combinations 3–4 (a one-hot parse, on which both readings agree: read as ``learned_parts``).
The validation role pools ``<derived>-val`` and ``<derived>-val-gallery``, as ``z_accuracy.json`` does.

The pipeline's z of an occluded query (:class:`~ogfr_core.occlusion.OcclusionRule` ``covered``) reads
two estimates: the occluder mask the segmenter predicts on the occluded image
(:func:`~ogfr_core.occlusion.learned.predict_masks`, ``occluder.threshold``) and the parse of that
image (its visible parts). The ground truth (:mod:`ogfr_core.occlusion.truth`) reads the true occluder
(the pixels it changed, :func:`~ogfr_core.occlusion.truth.changed_pixels` at label size) on the parse of the
*holistic* original. Swapping each estimate for its truth, on the occluded validation set
(``<derived>-val``) and the occluded test set, the rule in force (params ``occlusion``) is scored under
four combinations with the pipeline's own :func:`~ogfr_core.occlusion.table.occlusion_table` and
:func:`~ogfr_core.occlusion.truth.rule_report` (numbers comparable to ``reports/occlude/z_accuracy.json``):

1. ``pred_mask+occluded_parse`` — the pipeline today (checked against ``z_accuracy.json``'s F1s and
   the stored occlusion tables' z);
2. ``true_mask+occluded_parse`` — what is left is the parse of the occluded image's error;
3. ``pred_mask+holistic_parse`` — what is left is the segmenter's error (the query's predicted mask on
   its holistic original's parse);
4. ``true_mask+holistic_parse`` — the truth itself: F1 1 (a check of the decomposition).

The holistic false-positive rate of each report uses the holistic originals' parses with the mask of
the same source: the predicted mask on the holistic image (1, 3), none (2, 4: no occluder there).
Also the segmenter's pixel quality per occluder kind against the true mask (pooled IoU, precision,
recall at the threshold in force; over the whole crop and over the holistic parse's body pixels), and
on the holistic originals the share of pixels it marks as occluder (false alarms).

Writes JSON (default ``reports/occlude/z_error_sources.json``). Predicted masks are cached per set
(``--cache``; keyed by the weights' hash and the threshold).

Usage (after ``dvc repro occlude``; about 30 s on one core, 15 s with the mask cache)::

    nice -n 10 python -m benchmarks.probe_z_error_sources --threads 1
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

COMBOS = ("pred_mask+occluded_parse", "true_mask+occluded_parse", "pred_mask+holistic_parse",
          "true_mask+holistic_parse")



def mask_scores(pred: Sequence[np.ndarray], truth: Sequence[np.ndarray],
                within: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """Pixel quality of predicted occluder masks against the true ones, pooled over all images.

    Args:
        pred, truth: bool ``[lh, lw]`` masks, one pair per image (e.g. :func:`~ogfr_core.occlusion.learned.predict_masks` and
            the changed pixels at label size).
        within: optional bool ``[lh, lw]`` per image: count only these pixels (e.g. the parsed body).

    Returns:
        ``{"iou", "precision", "recall", "pred_share", "true_share", "pixels"}``: |P∩T|/|P∪T|,
        |P∩T|/|P|, |P∩T|/|T| (NaN where the denominator is 0), the shares of the counted pixels
        predicted / truly occluder, and the number of counted pixels. (The same pooled IoU as the
        ``occluder`` stage's holdout ``pixel_iou`` in :func:`~ogfr_core.occlusion.learned.fit`, plus
        precision / recall and a pixel subset.)

    Raises:
        ValueError: ``pred`` and ``truth`` hold different numbers of masks.

    Example::

        >>> p, t = np.array([[1, 1, 0, 0]], bool), np.array([[0, 1, 1, 0]], bool)
        >>> mask_scores([p], [t])
        {'iou': 0.3333, 'precision': 0.5, 'recall': 0.5, 'pred_share': 0.5, 'true_share': 0.5, 'pixels': 4}
    """
    tp = fp = fn = n = 0
    for i, (p, t) in enumerate(zip(pred, truth, strict=True)):
        p, t = np.asarray(p, bool), np.asarray(t, bool)
        if within is not None:
            w = np.asarray(within[i], bool)
            p, t = p & w, t & w
            n += int(w.sum())
        else:
            n += p.size
        tp += int((p & t).sum())
        fp += int((p & ~t).sum())
        fn += int((~p & t).sum())

    def ratio(a: int, b: int) -> float:
        return round(a / b, 4) if b else float("nan")

    return {"iou": ratio(tp, tp + fp + fn), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "pred_share": ratio(tp + fp, n), "true_share": ratio(tp + fn, n), "pixels": int(n)}

def cached_masks(cache: Path | None, tag: str, compute) -> dict[str, np.ndarray]:
    """``compute()`` (``{key: bool [lh, lw]}``), stored as packed bits in ``cache/<tag>.npz`` (None: no cache)."""
    path = cache / f"{tag}.npz" if cache is not None else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as f:
            keys, bits, shape = f["keys"].tolist(), f["bits"], tuple(f["shape"].tolist())
        n = shape[0] * shape[1]
        return {k: np.unpackbits(b, count=n).astype(bool).reshape(shape) for k, b in zip(keys, bits)}
    masks = compute()
    if path is not None and masks:
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(masks)
        shape = masks[keys[0]].shape
        np.savez_compressed(path, keys=np.asarray(keys), shape=np.asarray(shape),
                            bits=np.stack([np.packbits(masks[k].reshape(-1)) for k in keys]))
    return masks


def cached_parts(cache: Path | None, tag: str, compute) -> dict[str, np.ndarray]:
    """``compute()`` (``{key: uint8 [lh, lw]}`` label maps), stored in ``cache/<tag>.npz`` (None: no cache)."""
    path = cache / f"{tag}.npz" if cache is not None else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as f:
            return dict(zip(f["keys"].tolist(), f["maps"]))
    maps = compute()
    if path is not None and maps:
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(maps)
        np.savez_compressed(path, keys=np.asarray(keys), maps=np.stack([maps[k] for k in keys]).astype(np.uint8))
    return maps


def score_set(model, tag: str, names: Sequence[str], source: pd.DataFrame, source_root: Path, rule,
              threshold: float, label_hw: tuple[int, int], cache: Path | None) -> dict:
    """The four combinations' :func:`rule_report` and the segmenter's pixel quality on the derived
    sets ``names`` pooled (module docstring)."""
    from ogfr_core.data.images import load_rgb
    from ogfr_core.occlusion.learned import predict
    from ogfr_core.occlusion.table import Z_COLUMNS, occlusion_table
    from ogfr_core.occlusion.truth import TRUTH_FILE, changed_pixels, rule_report, rule_score, to_label_size
    from ogfr_core.parsing import read_parsing
    from ogfr_core.parsing.cache import decode_label_map

    truth = pd.concat([pd.read_parquet(Path("data/derived") / n / TRUTH_FILE) for n in names], ignore_index=True)
    cols = ["label_map", "status"]
    occ_parse = pd.concat([read_parsing(Path("data/parsing") / n, columns=cols) for n in names], ignore_index=True)
    occ_parse = occ_parse[occ_parse["key"].isin(set(truth["key"]))].reset_index(drop=True)
    hol_parse = read_parsing(Path("data/parsing") / source.attrs["name"], columns=cols)
    hol_parse = hol_parse[hol_parse["key"].isin(set(truth["source_key"]))].reset_index(drop=True)
    # the holistic original's parse under its query's key: the parse the ground truth reads
    to_query = dict(zip(truth["source_key"], truth["key"]))
    hol_as_query = hol_parse.assign(key=hol_parse["key"].map(to_query))

    occluded = {}
    for n in names:
        index = pd.read_parquet(Path("data/index") / f"{n}.parquet", columns=["key", "path"])
        index = index[index["key"].isin(set(truth["key"]))]
        occluded.update({k: np.asarray(load_rgb(Path("data/derived") / n / p)) for k, p in zip(index["key"], index["path"])})
    original = {k: np.asarray(load_rgb(source_root / source.loc[k, "path"])) for k in truth["source_key"]}
    true_q = {q: to_label_size(changed_pixels(original[s], occluded[q]), label_hw)
              for q, s in zip(truth["key"], truth["source_key"])}
    segs: dict = {}  # one predict() per image set, whichever cache entry asks first

    def segment(which: str):
        if which not in segs:
            images, keys = (occluded, truth["key"]) if which == "occluded" else (original, truth["source_key"])
            segs[which] = predict(model, images.__getitem__, keys.tolist(), label_hw, threshold)
        return segs[which]

    label = "+".join(names)
    pred_q = cached_masks(cache, f"{tag}-{label}-occluded", lambda: segment("occluded").masks)
    pred_h = cached_masks(cache, f"{tag}-{label}-holistic", lambda: segment("holistic").masks)
    none_h = {k: np.zeros(label_hw, bool) for k in truth["source_key"]}
    if rule.needs_parts:  # learned_parts: the share is read on the segmenter's learned parse of the target
        parts_q = cached_parts(cache, f"{tag}-{label}-occluded-parts", lambda: segment("occluded").parts)
        parts_h = cached_parts(cache, f"{tag}-{label}-holistic-parts", lambda: segment("holistic").parts)
        true_parts_h = {k: decode_label_map(b) for k, b in zip(hol_parse["key"], hol_parse["label_map"])}
        true_parts_q = {to_query[k]: m for k, m in true_parts_h.items()}
    else:  # covered: no part maps are read
        parts_q = parts_h = true_parts_h = true_parts_q = None
    # learned_soft reads the learned parse's probabilities (one predict() per set, not cached); on the
    # holistic parse (one-hot) the soft share is the argmax share: combinations 3-4 read it as learned_parts
    logits_q = segment("occluded").part_logits if rule.needs_logits else None
    logits_h = segment("holistic").part_logits if rule.needs_logits else None
    one_hot = dataclasses.replace(rule, rule="learned_parts") if rule.needs_logits else rule

    hol_pred = occlusion_table(hol_parse, rule, pred_h, parts_h, logits_h)
    hol_none = occlusion_table(hol_parse, rule, none_h, parts_h, logits_h)
    tables = {COMBOS[0]: (rule, occlusion_table(occ_parse, rule, pred_q, parts_q, logits_q), hol_pred),
              COMBOS[1]: (rule, occlusion_table(occ_parse, rule, true_q, parts_q, logits_q), hol_none),
              COMBOS[2]: (one_hot, occlusion_table(hol_as_query, one_hot, pred_q, true_parts_q),
                          occlusion_table(hol_parse, one_hot, pred_h, true_parts_h)),
              COMBOS[3]: (one_hot, occlusion_table(hol_as_query, one_hot, true_q, true_parts_q),
                          occlusion_table(hol_parse, one_hot, none_h, true_parts_h))}
    out: dict = {"dataset": " + ".join(names), "queries": int(len(truth)),
                 "kinds": {str(k): int(n) for k, n in truth["kind"].value_counts().sort_index().items()},
                 "combinations": {}}
    for combo, (combo_rule, occ, hol) in tables.items():
        rep = rule_report(combo_rule, truth, occ, hol, label_hw)
        out["combinations"][combo] = {**rep, "score": rule_score(rep)}

    # the pipeline today vs its stored occlusion tables (stage occlude / occlusion): same z per image
    stored_q = pd.concat([pd.read_parquet(Path("data/occlusion") / f"{n}.parquet") for n in names]).set_index("key")
    stored_h = pd.read_parquet(Path("data/occlusion") / f"{source.attrs['name']}.parquet").set_index("key")
    mine_q, mine_h = tables[COMBOS[0]][1].set_index("key"), hol_pred.set_index("key")
    out["stored_tables_z_mismatch"] = {
        "occluded": int((stored_q.loc[mine_q.index, list(Z_COLUMNS)] != mine_q[list(Z_COLUMNS)]).any(axis=1).sum()),
        "holistic": int((stored_h.loc[mine_h.index, list(Z_COLUMNS)] != mine_h[list(Z_COLUMNS)]).any(axis=1).sum())}

    body = {q: decode_label_map(b) > 0 for q, b in zip(hol_as_query["key"], hol_as_query["label_map"])}
    seg: dict = {}
    for kind in sorted(truth["kind"].unique()):
        keys = truth.loc[truth["kind"] == kind, "key"].tolist()
        p, t = [pred_q[k] for k in keys], [true_q[k] for k in keys]
        seg[str(kind)] = {"crop": mask_scores(p, t), "body": mask_scores(p, t, [body[k] for k in keys])}
    hkeys = truth["source_key"].tolist()
    zeros = [none_h[k] for k in hkeys]
    seg["holistic"] = {"crop": mask_scores([pred_h[k] for k in hkeys], zeros),
                       "body": mask_scores([pred_h[k] for k in hkeys], zeros,
                                           [body[to_query[k]] for k in hkeys])}
    seg["note"] = ("pooled over the set's images at the label size; 'body': only the holistic parse's body "
                   "pixels (what the rule reads); holistic: no occluder, so pred_share is the false-alarm share")
    out["segmenter"] = seg
    out["parse"] = parse_diagnostics(truth, tables[COMBOS[1]][1], occ_parse, body, true_q, rule.state)
    return out


def parse_diagnostics(truth: pd.DataFrame, table: pd.DataFrame, occ_parse: pd.DataFrame,
                      holistic_body: dict[str, np.ndarray], true_masks: dict[str, np.ndarray],
                      state: str = "occluder") -> dict:
    """How the occluded image's parse departs from the holistic one, per occluder kind: each part's mean
    share under the true occluder read on the occluded parse (``table``: combination 2's occlusion table,
    its ``<state>_*`` columns: ``learned_occluder`` for the learned parse of rule ``learned_parts``)
    vs the truth's (holistic parse), its visible pixels relative to the holistic parse's, and the body
    pixels of the two parses (:func:`mask_scores` with the occluded parse
    as "pred" and the holistic parse as "truth") under the true occluder and outside it."""
    from ogfr_core.occlusion import COARSE_NAMES
    from ogfr_core.occlusion.truth import BEFORE, COVERED
    from ogfr_core.parsing.cache import decode_label_map

    t = truth.set_index("key")
    tab = table.set_index("key").loc[t.index]
    occ_body = {k: decode_label_map(b) > 0 for k, b in zip(occ_parse["key"], occ_parse["label_map"])}
    out: dict = {}
    for kind in sorted(t["kind"].unique()):
        keys = t.index[t["kind"] == kind]
        before = t.loc[keys, list(BEFORE)].to_numpy(np.float64)
        counts = tab.loc[keys, [f"count_{c}" for c in COARSE_NAMES]].to_numpy(np.float64)
        ratio = np.where(before > 0, counts / np.maximum(before, 1), np.nan)
        p, h = [occ_body[k] for k in keys], [holistic_body[k] for k in keys]
        shares = tab.loc[keys, [f"{state}_{c}" for c in COARSE_NAMES]].mean()
        out[str(kind)] = {
            "covered_share_true": {c: round(float(v), 4) for c, v in
                                   zip(COARSE_NAMES, t.loc[keys, list(COVERED)].mean())},
            "covered_share_on_occluded_parse": {c: round(float(v), 4) for c, v in zip(COARSE_NAMES, shares)},
            "visible_pixels_vs_holistic": {c: round(float(np.nanmedian(ratio[:, i])), 4)
                                           for i, c in enumerate(COARSE_NAMES)},
            "body_under_occluder": mask_scores(p, h, [true_masks[k] for k in keys]),
            "body_outside_occluder": mask_scores(p, h, [~true_masks[k] for k in keys]),
        }
    out["note"] = ("combination 2 (true mask): covered_share_* = mean share of each part's visible pixels under the "
                   "true occluder, on the holistic parse (the truth) vs on the occluded image's parse; "
                   "visible_pixels_vs_holistic = median |V_c| occluded parse / holistic parse; body_* = body pixels "
                   "of the occluded parse ('pred') vs the holistic parse ('true'): under the occluder pred_share is "
                   "how much of the occluder the occluded parse calls body, true_share how much of it hid the body")
    return out


def check_against(report: dict, accuracy: dict, role: str, rule) -> dict:
    """Combination 1's F1s (all parts and per kind) against ``z_accuracy.json``'s report of the rule in
    force on the same set: ``{"matches": bool, "max_abs_diff": float}``."""
    ref = next(r for r in accuracy["sets"][role]["rules"]
               if r["rule"] == rule.rule and (r["tau"] is None or math.isclose(r["tau"], rule.tau)))
    mine = report["combinations"][COMBOS[0]]
    pairs = [(mine["parts"][c]["f1"], ref["parts"][c]["f1"]) for c in ref["parts"]]
    pairs += [(mine["by_kind"][k][c]["f1"], ref["by_kind"][k][c]["f1"])
              for k in ref["by_kind"] for c in ref["by_kind"][k]]
    pairs += [(mine["holistic_false_positive_rate"]["any"], ref["holistic_false_positive_rate"]["any"])]
    diffs = [abs(a - b) for a, b in pairs if a == a and b == b]
    same_nan = all((a != a) == (b != b) for a, b in pairs)
    worst = max(diffs, default=0.0)
    return {"matches": bool(same_nan and worst < 1e-4), "max_abs_diff": round(worst, 4),
            "reference": "reports/occlude/z_accuracy.json"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--accuracy", default="reports/occlude/z_accuracy.json", help="the report combination 1 must match")
    ap.add_argument("--cache", default="ogfr-cache/z_error_sources", help="predicted-mask cache folder ('' = none)")
    ap.add_argument("--out", default="reports/occlude/z_error_sources.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ogfr_core.config import DataConfig, OccludeConfig, OccluderConfig, OcclusionConfig, ParseConfig, load_section
    from ogfr_core.data.index import dataset_root, read_index
    from ogfr_core.io import write_json
    from ogfr_core.occlusion import rule_from_config
    from ogfr_core.occlusion.benchmark import VAL_GALLERY_SUFFIX, VAL_SUFFIX, derived_name
    from ogfr_core.occlusion.learned import WEIGHTS, load_segmenter

    data = load_section(args.params, "data", DataConfig)
    occl = load_section(args.params, "occlude", OccludeConfig)
    parse = load_section(args.params, "parse", ParseConfig)
    rule = rule_from_config(load_section(args.params, "occlusion", OcclusionConfig))
    threshold = load_section(args.params, "occluder", OccluderConfig).threshold
    if not rule.needs_occluder:
        raise SystemExit(f"{args.params}: occlusion.rule is {rule.rule!r}; this probe decomposes the covered and "
                         f"learned_* rules (pass a params file with one of them, e.g. `git show ccb23d7:params.yaml`)")
    label_hw = (parse.label_height, parse.label_width)
    source = read_index(Path("data/index") / f"{data.name}.parquet").set_index("key")
    source.attrs["name"] = data.name
    root = dataset_root(data, Path("."))
    model = load_segmenter(WEIGHTS)
    tag = f"{hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()[:12]}-thr{threshold:g}"
    cache = Path(args.cache) if args.cache else None
    accuracy = json.loads(Path(args.accuracy).read_text())
    sets = {}
    val = [derived_name(data, occl) + VAL_SUFFIX, derived_name(data, occl) + VAL_GALLERY_SUFFIX]  # pooled, as z_accuracy
    for role, names in (("validation", val), ("test", [derived_name(data, occl)])):
        sets[role] = score_set(model, tag, names, source, root, rule, threshold, label_hw, cache)
        sets[role]["reproduces_z_accuracy"] = check_against(sets[role], accuracy, role, rule)
    command = "python -m benchmarks.probe_z_error_sources " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(args.out, {
        "command": command,
        "rule": {"reading": rule.rule, "lam": rule.lam, "tau": rule.tau, "mask_threshold": threshold,
                 "label_size": list(label_hw)},
        "segmenter_weights": {"path": str(WEIGHTS), "sha256_12": tag.split("-")[0]},
        "parse_read": ("the segmenter's learned parse of the occluded image (shares; Eq. 2 on the parser's counts)"
                       if rule.needs_parts else "the parser's parse of the occluded image"),
        "combinations": {COMBOS[0]: "predicted occluder mask + occluded image's parse (the pipeline today)",
                         COMBOS[1]: "true occluder mask + occluded image's parse (error left: the parse)",
                         COMBOS[2]: "predicted occluder mask + holistic original's parse (error left: the segmenter)",
                         COMBOS[3]: "true occluder mask + holistic original's parse (the ground truth: F1 1)"},
        "sets": sets})
    for role, rep in sets.items():
        chk = rep["reproduces_z_accuracy"]
        print(f"{role} ({rep['dataset']}, {rep['queries']} queries {rep['kinds']}): combination 1 reproduces "
              f"z_accuracy.json: {chk['matches']} (max |diff| {chk['max_abs_diff']}); stored-table z mismatches "
              f"{rep['stored_tables_z_mismatch']}")
        for combo, r in rep["combinations"].items():
            for kind, parts in r["by_kind"].items():
                print(f"  {combo:26s} {kind:7s} F1 " + " ".join(f"{c} {s['f1']:.2f}" for c, s in parts.items())
                      + "   P/R " + " ".join(f"{s['precision']:.2f}/{s['recall']:.2f}" for s in parts.values())
                      + f"   holistic FP {r['holistic_false_positive_rate']['any']:.3f}")
        for kind, d in rep["parse"].items():
            if kind != "note":
                row = {n: " ".join(f"{v:.2f}" for v in d[n].values()) for n in
                       ("covered_share_true", "covered_share_on_occluded_parse", "visible_pixels_vs_holistic")}
                under, outside = d["body_under_occluder"], d["body_outside_occluder"]
                print(f"  parse {kind:7s} covered share true {row['covered_share_true']} | on occluded parse "
                      f"{row['covered_share_on_occluded_parse']} | visible vs holistic "
                      f"{row['visible_pixels_vs_holistic']} | under occluder body: occluded parse "
                      f"{under['pred_share']:.2f}, holistic {under['true_share']:.2f} | outside: body IoU "
                      f"{outside['iou']:.2f}")
        for kind, s in rep["segmenter"].items():
            if kind != "note":
                print(f"  segmenter {kind:8s} crop IoU {s['crop']['iou']:.3f} P {s['crop']['precision']:.3f} "
                      f"R {s['crop']['recall']:.3f} pred {s['crop']['pred_share']:.3f} "
                      f"true {s['crop']['true_share']:.3f}"
                      f" | body IoU {s['body']['iou']:.3f} P {s['body']['precision']:.3f} R {s['body']['recall']:.3f}"
                      f" pred {s['body']['pred_share']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
