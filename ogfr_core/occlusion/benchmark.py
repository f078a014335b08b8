"""The ``occlude`` stage's work: derive the occluded-query benchmark and label it like any dataset.

Source set (``data``) → :func:`ogfr_core.data.occluded_benchmark.occlude_queries` (occluded queries,
original gallery) → the same index (:func:`~ogfr_core.data.build_index`, layout ``market1501_test``),
parse (:func:`~ogfr_core.parsing.parse_dataset`) and occlusion (:func:`occlusion_table`, Eq. 1–2)
functions as the ``index``/``parse``/``occlusion`` stages, so every occluded query's z comes from the
parsing of the occluded image. The unchanged gallery's parse results are copied from the source's
cache (:func:`~ogfr_core.parsing.cache.seed_cache`: same bytes, same configuration → same result),
so only the new queries are parsed.

Outputs (``<derived>`` = ``data.name + occlude.suffix``): ``data/derived/<derived>/``,
``data/index/<derived>.parquet``, ``data/parsing/<derived>/``, ``data/occlusion/<derived>.parquet``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DataConfig, OccludeConfig, ParseConfig
from ..io import write_parquet
from .table import occlusion_table

log = logging.getLogger(__name__)


@dataclass
class DerivedSet:
    """What :func:`derive_occluded_set` made: the derived ``name`` and ``root``, its ``index``, the
    ``occluders`` table, its ``occlusion`` table and a ``summary`` dict (for the stage's JSON)."""

    name: str
    root: Path
    index: pd.DataFrame
    occluders: pd.DataFrame
    occlusion: pd.DataFrame
    summary: dict


def derived_name(data: DataConfig, cfg: OccludeConfig) -> str:
    """``data.name + occlude.suffix``, e.g. ``cuhk03-np-detected-occ``."""
    return f"{data.name}{cfg.suffix}"


def derive_occluded_set(data: DataConfig, parse_cfg: ParseConfig, lam: float, cfg: OccludeConfig,
                        repo: Path = Path(".")) -> DerivedSet:
    """Generate, index, parse and occlusion-label the occluded-query benchmark of ``data``.

    Raises:
        MissingLabelsError / ParsingIncompleteError / IndexFileError: the source set's index, parsing or
            occlusion outputs are missing (names the stage to run).
        OccluderSourceError: no training image with a parsed person.
    """
    from ..data.index import build_index, dataset_root, read_index
    from ..data.occluded_benchmark import OccluderSpec, occlude_queries, summarize_occluders
    from ..parsing import load_label_maps, parse_dataset, read_parsing
    from ..parsing.cache import check_coverage, seed_cache

    repo = Path(repo)
    name = derived_name(data, cfg)
    src_root = dataset_root(data, repo)
    src_index = read_index(repo / "data/index" / f"{data.name}.parquet")
    src_parse = repo / "data/parsing" / data.name
    check_coverage(src_parse, src_index["key"], paths=src_index["path"])
    status = read_parsing(src_parse, columns=["status"]).set_index("key")["status"]
    train = src_index[src_index["split"] == "train"]
    sources = train[train["key"].map(status).eq("ok")][["key", "path", "pid"]]
    queries = src_index[src_index["split"] == "query"][["key", "path", "pid"]]
    gallery = src_index[src_index["split"] == "gallery"][["key", "path", "pid"]]
    maps = load_label_maps(src_parse, keys=sources["key"])

    out_root = repo / "data/derived" / name
    spec = OccluderSpec(cfg.kind, tuple(cfg.area), tuple(cfg.edges), cfg.seed)
    occluders = occlude_queries(src_root, out_root, queries, gallery, sources, maps.__getitem__, spec,
                                link_gallery=cfg.link_gallery)

    derived_cfg = DataConfig(name=name, root=str(out_root.resolve()), layout="market1501_test",
                             min_size=data.min_size)
    index = build_index(derived_cfg, repo).frame
    write_parquet(repo / "data/index" / f"{name}.parquet", index)
    parse_dir = repo / "data/parsing" / name
    seeded = seed_cache(src_parse, parse_dir, index.loc[index["split"] == "gallery", "key"])
    parse = parse_dataset(index, out_root, parse_cfg, parse_dir, progress=True)
    parsing = read_parsing(parse_dir, columns=["label_map", "status"])
    table = occlusion_table(parsing[parsing["key"].isin(set(index["key"]))], lam)
    write_parquet(repo / "data/occlusion" / f"{name}.parquet", table)

    z_before = _occluded_share(repo / "data/occlusion" / f"{data.name}.parquet", queries["key"])
    q_keys = index.loc[index["split"] == "query", "key"]
    z_after = float((table.set_index("key").loc[q_keys, "occ_type"] > 0).mean())
    summary = {
        "dataset": name, "source": data.name, "root": str(out_root), "kind": cfg.kind, "area": list(cfg.area),
        "edges": list(cfg.edges), "seed": cfg.seed,
        "occluders": summarize_occluders(occluders, src_index.loc[src_index["split"] != "train", "pid"].unique()),
        "index": {s: int((index["split"] == s).sum()) for s in ("query", "gallery")},
        "parse": {"gallery_rows_reused": seeded, "parsed_now": parse.parsed_now, "coverage": parse.coverage},
        "queries_occluded_by_parsing": {"source": round(z_before, 4), "derived": round(z_after, 4)},
    }
    log.info("occlude: %s — %d queries, parsing calls %.1f%% of them occluded (source queries: %.1f%%)",
             name, len(q_keys), 100 * z_after, 100 * z_before)
    return DerivedSet(name, out_root, index, occluders, table, summary)


def _occluded_share(occlusion_path: Path, keys: pd.Series) -> float:
    """Share of ``keys`` with occlusion type > 0 in an occlusion parquet (NaN when absent)."""
    if not occlusion_path.is_file():
        return float("nan")
    occ = pd.read_parquet(occlusion_path, columns=["key", "occ_type"]).set_index("key")["occ_type"]
    return float((occ.reindex(keys.astype(str)).to_numpy() > 0).mean())


def example_pairs(derived: DerivedSet, repo: Path, src_root: Path, n: int
                  ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """``n`` queries (one per kind/edge combination first, then by key) as (original, occluded) image
    pairs with their parsing label maps and titles (occluder, box area, occlusion type), for the
    examples figure."""
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
    images, maps, titles = [], [], []
    for row, nk in zip(picked.itertuples(index=False), new_keys):
        images += [np.asarray(load_rgb(src_root / src_path[row.key])), np.asarray(load_rgb(derived.root / row.path))]
        maps += [src_maps[row.key], new_maps[nk]]
        titles += ["original", f"{row.kind}/{row.edge} {row.box_area:.0%} · type {int(occ_type[nk])}"]
    return images, maps, titles
