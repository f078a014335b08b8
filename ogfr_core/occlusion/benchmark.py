"""The ``occlude`` stage's work: derive the occluded-query benchmark and label it like any dataset.

Source set (``data``) → :func:`ogfr_core.data.occluded_benchmark.occlude_queries` (occluded queries,
original gallery) → the same index (:func:`~ogfr_core.data.build_index`, layout ``market1501_test``),
parse (:func:`~ogfr_core.parsing.parse_dataset`) and occlusion (:func:`occlusion_table`, Eq. 1–2)
functions as the ``index``/``parse``/``occlusion`` stages, so every occluded query's z comes from the
parsing of the occluded image. The unchanged gallery's parse results are copied from the source's
cache (:func:`~ogfr_core.parsing.cache.seed_cache`: same bytes, same configuration → same result),
so only the new queries are parsed.

Outputs (``<derived>`` = ``data.name + occlude.suffix``): ``data/derived/<derived>/`` (with
``occluders.parquet`` and the ground truth ``z_truth.parquet``), ``data/index/<derived>.parquet``,
``data/parsing/<derived>/``, ``data/occlusion/<derived>.parquet``; the same for ``<derived>-val``,
built from training identities (:func:`derive_validation_set`), and for ``<derived>-val-gallery`` (the
same identities' gallery images occluded), on which two together the rule is chosen (:func:`z_accuracy`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
import pandas as pd

from ..config import ConfigError, DataConfig, OccludeConfig, ParseConfig
from ..io import write_parquet
from . import COVER_RULES, OcclusionRule, occlusion_type
from .table import segmentation_table

if TYPE_CHECKING:
    from .learned import Segmentation

log = logging.getLogger(__name__)


@dataclass
class DerivedSet:
    """What :func:`derive_occluded_set` made: the derived ``name`` and ``root``, its ``index``, the
    ``occluders`` table, its ``occlusion`` table, a ``summary`` dict (for the stage's JSON) and the
    ground truth of its queries (:func:`.truth.truth_table`, also ``<root>/z_truth.parquet``).
    ``run``: what this call did that depends on the parse cache's state, not on the inputs
    (``gallery_rows_reused``, ``parsed_now``): logged, never in ``summary`` (the git-tracked
    ``reports/occlude/summary.json``), as :data:`ogfr_core.parsing.driver.RUN_FIELDS`."""

    name: str
    root: Path
    index: pd.DataFrame
    occluders: pd.DataFrame
    occlusion: pd.DataFrame
    summary: dict
    truth: pd.DataFrame
    run: dict = field(default_factory=dict)


# (index [key, path, ...], root the paths are relative to) -> learned.Segmentation (occluder masks, learned parse)
MaskFn = Callable[[pd.DataFrame, Path], "Segmentation"]


def derived_name(data: DataConfig, cfg: OccludeConfig) -> str:
    """``data.name + occlude.suffix``, e.g. ``cuhk03-np-detected-occ``."""
    return f"{data.name}{cfg.suffix}"


def derive_occluded_set(data: DataConfig, parse_cfg: ParseConfig, rule: OcclusionRule, cfg: OccludeConfig,
                        repo: Path = Path("."), masks: MaskFn | None = None) -> DerivedSet:
    """Generate, index, parse and occlusion-label the occluded-query benchmark of ``data`` (its test
    queries, occluded by training identities; the test gallery unchanged), with its ground truth.
    ``masks`` predicts every image's occluder mask and learned parse (the ``occluder_*`` /
    ``learned_*`` shares; required by the ``covered`` / ``learned_parts`` rules), as the ``occlusion``
    stage does for ``data``.

    Raises:
        MissingLabelsError / ParsingIncompleteError / IndexFileError: the source set's index, parsing or
            occlusion outputs are missing (names the stage to run).
        OccluderSourceError: no training image with a parsed person.
    """
    src = _Source.read(data, repo)
    train = src.index[src.index["split"] == "train"]
    return _derive(src, derived_name(data, cfg), src.index[src.index["split"] == "query"],
                   src.index[src.index["split"] == "gallery"], src.usable(train), parse_cfg, rule, cfg, repo,
                   masks)


def derive_validation_set(data: DataConfig, parse_cfg: ParseConfig, rule: OcclusionRule, cfg: OccludeConfig,
                          repo: Path = Path("."), masks: MaskFn | None = None,
                          occluded: Literal["query", "gallery"] = "query") -> DerivedSet | None:
    """The same kind of occluded set built from training identities, to choose the occlusion rule on
    (``<derived>-val``; None when ``occlude.val_ids`` is 0): ``occlude.val_ids`` training identities
    split as :func:`ogfr_core.data.index.hold_out_validation` does for ``data.val_ids`` (same seed:
    one query per identity and camera, the rest gallery); the queries are occluded by the *other*
    training identities.

    ``occluded="gallery"`` swaps the roles (``<derived>-val-gallery``): the held-out *gallery* images
    are occluded and the held-out queries form its gallery. It adds ~3.75× as many occluded images
    of the same identities to the occlusion-rule choice (:func:`pooled`): with the 200 queries alone
    only legs and torso reach the 20 half-covered positives :func:`.truth.rule_score` counts, so the
    choice never saw head or arms. Recipe selection evaluates the query set only.

    When the index already holds that validation split (``data.val_ids`` > 0: a run that trains
    without those identities), the split is drawn from all training identities again, so it is the
    *same* held-out split and no query, gallery image or occluder comes from an identity the model
    trains on; the occluders come from the identities it does train on. This is the occluded
    validation set that recipe selection evaluates (README "How the recipe was chosen").

    Raises:
        ConfigError: ``data.val_ids`` > 0 and ``occlude.val_ids`` differs from it (the occluded set
            would hold training identities).
        as :func:`derive_occluded_set`.
    """
    from ..data.index import hold_out_validation

    if cfg.val_ids == 0:
        return None
    if data.val_ids and data.val_ids != cfg.val_ids:
        raise ConfigError(f"params.yaml occlude.val_ids = {cfg.val_ids} but data.val_ids = {data.val_ids}: set them "
                          f"equal, so the occluded validation set is the held-out split")
    src = _Source.read(data, repo)
    # every training identity, as before data.val_ids moved some out: same pids -> the same draw
    train = src.index[src.index["split"].isin(["train", "val_query", "val_gallery"])].assign(split="train")
    held = hold_out_validation(train, cfg.val_ids)
    queries, gallery = held[held["split"] == "val_query"], held[held["split"] == "val_gallery"]
    if occluded == "gallery":
        queries, gallery = gallery, queries
    elif occluded != "query":
        raise ValueError(f"occluded must be 'query' or 'gallery', got {occluded!r}")
    sources = src.usable(held[held["split"] == "train"])
    suffix = VAL_SUFFIX if occluded == "query" else VAL_GALLERY_SUFFIX
    return _derive(src, derived_name(data, cfg) + suffix, queries, gallery, sources, parse_cfg, rule, cfg, repo,
                   masks)


VAL_SUFFIX = "-val"
VAL_GALLERY_SUFFIX = "-val-gallery"


def pooled(*sets: DerivedSet) -> DerivedSet:
    """Several derived sets as one for scoring (:func:`z_accuracy`): their index, occluders, occlusion
    table and truth rows concatenated (keys are image-content hashes: distinct images never collide),
    ``name`` the names joined by `` + ``, ``summary`` and ``run`` keyed by name, ``root`` the first set's.

    Raises:
        ValueError: no set, or two sets share an occluded image key.
    """
    if not sets:
        raise ValueError("pooled() needs at least one derived set")
    truth = pd.concat([d.truth for d in sets], ignore_index=True)
    if truth["key"].duplicated().any():
        raise ValueError(f"pooled sets share occluded images: {' + '.join(d.name for d in sets)}")
    index, occluders, occlusion = (pd.concat([getattr(d, a) for d in sets], ignore_index=True)
                                   for a in ("index", "occluders", "occlusion"))
    return DerivedSet(" + ".join(d.name for d in sets), sets[0].root, index, occluders, occlusion,
                      {d.name: d.summary for d in sets}, truth, run={d.name: d.run for d in sets})


@dataclass
class _Source:
    """The holistic source set: its name, root, index, parse folder and parse status per key."""

    name: str
    root: Path
    index: pd.DataFrame
    parse_dir: Path
    status: pd.Series

    @classmethod
    def read(cls, data: DataConfig, repo: Path) -> "_Source":
        from ..data.index import dataset_root, read_index
        from ..parsing import read_parsing
        from ..parsing.cache import check_coverage

        index = read_index(repo / "data/index" / f"{data.name}.parquet")
        parse_dir = repo / "data/parsing" / data.name
        check_coverage(parse_dir, index["key"], paths=index["path"])
        status = read_parsing(parse_dir, columns=["status"]).set_index("key")["status"]
        return cls(data.name, dataset_root(data, repo), index, parse_dir, status)

    def usable(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` whose parse found a person: the occluder sources."""
        return rows[rows["key"].map(self.status).eq("ok")]


def _derive(src: _Source, name: str, queries: pd.DataFrame, gallery: pd.DataFrame, sources: pd.DataFrame,
            parse_cfg: ParseConfig, rule: OcclusionRule, cfg: OccludeConfig, repo: Path,
            masks: MaskFn | None) -> DerivedSet:
    """Occlude ``queries`` with ``sources``, link ``gallery``; index, parse, label and compute the truth."""
    from ..data.index import build_index
    from ..data.occluded_benchmark import OccluderSpec, occlude_queries, summarize_occluders
    from ..parsing import load_label_maps, parse_dataset, read_parsing
    from ..parsing.cache import seed_cache
    from .truth import TRUTH_FILE, check_occluders, truth_table

    cols = ["key", "path", "pid"]
    maps = load_label_maps(src.parse_dir, keys=sources["key"])
    out_root = repo / "data/derived" / name
    spec = OccluderSpec(cfg.kind, tuple(cfg.area), tuple(cfg.edges), cfg.seed)
    occluders = occlude_queries(src.root, out_root, queries[cols], gallery[cols], sources[cols], maps.__getitem__,
                                spec, link_gallery=cfg.link_gallery)

    derived_cfg = DataConfig(name=name, root=str(out_root.resolve()), layout="market1501_test")
    index = build_index(derived_cfg, repo).frame
    write_parquet(repo / "data/index" / f"{name}.parquet", index)
    parse_dir = repo / "data/parsing" / name
    seeded = seed_cache(src.parse_dir, parse_dir, index.loc[index["split"] == "gallery", "key"])
    parse = parse_dataset(index, out_root, parse_cfg, parse_dir, progress=True)
    parsing = read_parsing(parse_dir, columns=["label_map", "amodal_map", "status"])
    seg = masks(index, out_root) if masks is not None else None
    table = segmentation_table(parsing[parsing["key"].isin(set(index["key"]))], rule, seg)
    write_parquet(repo / "data/occlusion" / f"{name}.parquet", table)

    label_hw = (parse_cfg.label_height, parse_cfg.label_width)
    holistic_keys = occluders["key"]
    lm = load_label_maps(src.parse_dir, keys=holistic_keys)
    am = load_label_maps(src.parse_dir, keys=holistic_keys, column="amodal_map") if rule.needs_amodal or \
        _has_amodal(src.parse_dir) else None
    occluders = check_occluders(out_root / "occluders.parquet", cfg.seed)  # the file the truth is computed from
    truth = truth_table(occluders, index, out_root, src.index.set_index("key")["path"], src.root, lm.__getitem__,
                        am.__getitem__ if am is not None else None, label_hw, out_root / "occluders.parquet")
    write_parquet(out_root / TRUTH_FILE, truth)

    z_before = _occluded_share(repo / "data/occlusion" / f"{src.name}.parquet", queries["key"])
    q_keys = index.loc[index["split"] == "query", "key"]
    z_after = float((table.set_index("key").loc[q_keys, "occ_type"] > 0).mean())
    summary = {
        "dataset": name, "source": src.name, "root": str(out_root), "kind": cfg.kind, "area": list(cfg.area),
        "edges": list(cfg.edges), "seed": cfg.seed,
        "occluders": summarize_occluders(occluders, src.index.loc[src.index["split"] != "train", "pid"].unique()),
        "index": {s: int((index["split"] == s).sum()) for s in ("query", "gallery")},
        "parse": {"coverage": parse.coverage},
        "queries_occluded_by_parsing": {"source": round(z_before, 4), "derived": round(z_after, 4)},
    }
    log.info("occlude: %s — %d queries, parsing calls %.1f%% of them occluded (source queries: %.1f%%); "
             "parse: %d gallery rows reused, %d images parsed now", name, len(q_keys), 100 * z_after,
             100 * z_before, seeded, parse.parsed_now)
    return DerivedSet(name, out_root, index, occluders, table, summary, truth,
                      run={"gallery_rows_reused": seeded, "parsed_now": parse.parsed_now})


def _has_amodal(parse_dir: Path) -> bool:
    from ..parsing import read_parsing

    return bool((read_parsing(parse_dir, columns=["amodal_map"])["amodal_map"].str.len() > 0).all())


def z_accuracy(rule: OcclusionRule, sets: dict[str, DerivedSet], holistic: pd.DataFrame,
               label_hw: tuple[int, int], tau_grid: tuple[float, ...], validation: str | None) -> dict:
    """``reports/occlude/z_accuracy.json``: per set, the rule in force and the paper's rule scored against
    the ground truth (:func:`.truth.rule_report`); on the ``validation`` set also every τ of
    ``tau_grid`` for ``hidden_fraction`` and for ``covered`` / ``learned_parts`` / ``learned_soft`` (when
    the tables carry their occluder shares, not NaN), each rule's :func:`.truth.rule_score` and the rule the grid chooses
    (:func:`.truth.choose_rule`). The test set never sees the grid; it reports the rule in force, the
    paper's rule and the validation grid's best deviation.

    Args:
        rule: the rule in force (``occlusion:`` params).
        sets: role (``validation`` / ``test``) → derived set.
        holistic: the source set's occlusion table (the holistic originals' parses).
        label_hw: label-map size (λ rescaling).
        tau_grid: τ values scored on the validation set.
        validation: the role name of the validation set in ``sets`` (None: no grid).
    """
    from .truth import choose_rule, rule_report, rule_score

    paper = OcclusionRule("pixels", lam=rule.lam, tau=rule.tau)
    out: dict = {"rule_in_force": {"rule": rule.rule, "lam": rule.lam, "tau": rule.tau},
                 "label_size": list(label_hw), "sets": {}}
    best_other = None  # the validation grid's best deviation: the test set reports it too (never chooses)
    for role, derived in sets.items():
        rules = [paper] + ([rule] if rule != paper else [])
        if best_other is not None and best_other not in rules:
            rules.append(best_other)
        entry = {"dataset": derived.name, "queries": int(len(derived.truth)),
                 "kinds": {str(k): int(n) for k, n in derived.truth["kind"].value_counts().sort_index().items()},
                 "rules": [rule_report(r, derived.truth, derived.occlusion, holistic, label_hw) for r in rules]}
        for rep in entry["rules"]:
            rep["score"] = rule_score(rep)
        if role == validation:
            kinds = ["hidden_fraction"] + [k for k in COVER_RULES if _has_shares(OcclusionRule(k), derived.occlusion,
                                                                                 holistic)]
            grid = [rule_report(OcclusionRule(kind, rule.lam, t), derived.truth, derived.occlusion, holistic,
                                label_hw) for kind in kinds for t in tau_grid]
            entry["tau_grid"] = grid
            for rep in grid:
                rep["score"] = rule_score(rep)
            entry["chosen"] = choose_rule(entry["rules"][:1] + grid)
            other = entry["chosen"]["best_other"]
            best_other = OcclusionRule(other["rule"], rule.lam, other["tau"] if other["tau"] is not None else rule.tau)
            entry["choice"] = ("score = mean F1 against 'the part is at least half covered' (parts with >= 20 "
                               "such positives) minus the false-positive rate on the holistic originals; the "
                               "paper's rule unless another scores more than 0.05 higher")
        out["sets"][role] = entry
    return out


def _has_shares(rule: OcclusionRule, *tables: pd.DataFrame) -> bool:
    """Every table carries the shares ``rule`` reads (:attr:`~ogfr_core.occlusion.OcclusionRule.state_columns`,
    not NaN)."""
    cols = list(rule.state_columns)
    return all(set(cols) <= set(t.columns) and not t[cols].isna().any().any() for t in tables)


def _occluded_share(occlusion_path: Path, keys: pd.Series) -> float:
    """Share of ``keys`` with occlusion type > 0 in an occlusion parquet (NaN when absent)."""
    if not occlusion_path.is_file():
        return float("nan")
    occ = pd.read_parquet(occlusion_path, columns=["key", "occ_type"]).set_index("key")["occ_type"]
    return float((occ.reindex(keys.astype(str)).to_numpy() > 0).mean())


def example_pairs(derived: DerivedSet, repo: Path, src_root: Path, n: int, rule: OcclusionRule,
                  label_hw: tuple[int, int]) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """``n`` queries (one per kind/edge combination first, then by key) as (original, occluded) image
    pairs with their parsing label maps and titles (occluder, box area, z parsed from the occluded
    image vs its ground truth under ``rule``, as occluded-part letters H/A/T/L), for the examples figure."""
    from .table import type_label
    from .truth import true_z

    from ..data.images import load_rgb
    from ..parsing import load_label_maps

    repo = Path(repo)
    source = derived.summary["source"]
    occ = derived.occluders.sort_values("key", kind="stable")
    first = occ.groupby(["kind", "edge"], sort=True).head(1)
    picked = pd.concat([first, occ.drop(first.index)]).head(n)
    new_key = derived.index.set_index("path")["key"]
    new_keys = [str(new_key[p]) for p in picked["path"]]
    src_maps = load_label_maps(repo / "data/parsing" / source, keys=picked["key"])
    new_maps = load_label_maps(repo / "data/parsing" / derived.name, keys=new_keys)
    src_path = pd.read_parquet(repo / "data/index" / f"{source}.parquet", columns=["key", "path"]).set_index("key")["path"]
    occ_type = derived.occlusion.set_index("key")["occ_type"]
    truth = derived.truth.set_index("key")
    true_type = dict(zip(truth.index, occlusion_type(true_z(rule, truth, label_hw))))
    images, maps, titles = [], [], []
    for row, nk in zip(picked.itertuples(index=False), new_keys):
        images += [np.asarray(load_rgb(src_root / src_path[row.key])), np.asarray(load_rgb(derived.root / row.path))]
        maps += [src_maps[row.key], new_maps[nk]]
        titles += ["original", f"{row.kind}/{row.edge} {row.box_area:.0%}\nz {type_label(int(occ_type[nk]))}"
                               f" · truth {type_label(int(true_type[nk]))}"]
    return images, maps, titles
