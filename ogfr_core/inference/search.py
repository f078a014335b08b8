"""``ogfr search``: rank the images of a gallery folder for one or more query images with a trained
checkpoint — the student branch and the distance of OGFR's inference (§III-D).

Steps:

1. **z (Eq. 1–2)** for every query and every gallery image not in the feature cache: the configured
   parsing backend (``parse:`` params) through the parse stage's own driver and cache
   (:func:`ogfr_core.parsing.parse_dataset`, kept in ``<cache>/parsing/``), then the occlusion stage's
   :func:`ogfr_core.occlusion.table.occlusion_table` with the ``occlusion:`` rule. ``assume_holistic`` skips
   parsing: z = 0 for every image. A query where the parser finds no person gets z = 1111 (type 15),
   as in the pipeline, with a warning.
2. **Features** with ``model.extract`` (:func:`ogfr_core.evaluation.extract_features`); the part
   visibility of Eq. (22) comes from the model's own correlation map. Gallery features are cached in
   ``<cache>/gallery-<id>.npz``, one row per image content key (SHA-1 of the bytes), where ``<id>``
   hashes the checkpoint file's SHA-1, the z source (parse cache id + λ, or holistic) and the
   gallery camera id: a different model never reuses them, a grown gallery embeds only new images.
3. **Ranking** with :func:`ogfr_core.evaluation.compute_distance` — Eq. (23) (``visibility``) or the
   global feature alone (``global``), L2-normalised features when ``feat_norm`` (the evaluate
   stage's setting) — ascending, ties by gallery order.

Camera ids feed the SIE camera embedding (Eq. 5); ids the model was not trained on use embedding 0,
as in evaluation. Nothing here is specific to OGFR: any checkpoint whose model has ``extract`` works.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..occlusion import OcclusionRule

from ..config import ParseConfig
from ..data.images import IMAGE_SUFFIXES
from ..evaluation import DISTANCES, FeatureSet, compute_distance, extract_features
from ..io import atomic_path, write_json
from .common import InferenceInputError, eval_transform, file_sha1, image_key, list_images

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when what a cached row means changes


@dataclass(frozen=True)
class ZSource:
    """Where the occlusion labels z come from: the parse backend + the occlusion rule, or z = 0.

    Attributes:
        parse: ``parse:`` params; None = every image is assumed holistic (z = 0).
        rule: the ``occlusion:`` rule the model was trained with (:class:`~ogfr_core.occlusion.OcclusionRule`).
        workers: parse processes for the gallery (queries are parsed in-process).
        occluder: the occluder segmenter's weights (stage ``occluder``), which the ``covered`` rule reads;
            threshold: its mask threshold (``occluder.threshold``).
    """

    parse: ParseConfig | None = None
    rule: OcclusionRule = OcclusionRule()
    workers: int = 1
    occluder: Path | None = None
    threshold: float = 0.5

    @property
    def holistic(self) -> bool:
        return self.parse is None

    def cache_id(self) -> str:
        """Identifies the z values: ``holistic`` or ``<parse cache id>/<rule>`` (e.g. ``…/pixels λ=5``)."""
        if self.parse is None:
            return "holistic"
        from ..parsing import build_parser
        from ..parsing.cache import compute_cache_id

        rule = self.rule.describe()
        if self.rule.needs_occluder:
            from ..pretrained import sha256_file

            rule += f" mask>{self.threshold:g} {sha256_file(self._occluder_path())[:12]}"
        return f"{compute_cache_id(self.parse, build_parser(self.parse).model_id)}/{rule}"

    def _occluder_path(self) -> Path:
        from ..occlusion.learned import OccluderWeightsError

        if self.occluder is None or not Path(self.occluder).is_file():
            raise OccluderWeightsError(f"{self.occluder}: the covered occlusion rule needs the occluder segmenter "
                                       f"(stage `occluder`): run `dvc repro occluder` in the repository")
        return Path(self.occluder)

    def describe(self) -> str:
        if self.parse is None:
            return "assumed holistic (z = 0, no parsing)"
        return f"parsed with {self.parse.backend} (cache id {self.cache_id()})"


@dataclass(frozen=True)
class SearchOptions:
    """``ogfr search`` knobs (CLI flags of the same names).

    Attributes:
        top_k: results per query.
        distance: ``visibility`` (Eq. 23) or ``global``.
        feat_norm: L2-normalise features before the distance (``evaluate.feat_norm``).
        query_camid, gallery_camid: camera ids for the SIE embedding (0-based).
        batch_size: images per forward pass.
        chunk_mb: memory budget of the distance blocks (MiB).
    """

    top_k: int = 10
    distance: str = "visibility"
    feat_norm: bool = True
    query_camid: int = 0
    gallery_camid: int = 0
    batch_size: int = 64
    chunk_mb: float = 256


def occlusion_z(items: Sequence[tuple[str, str]], source: ZSource, parse_dir: Path,
                workers: int = 1, progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """z ``[4]`` int64 and parse status per image key (Eq. 1–2), reusing the pipeline's parse
    driver/cache and occlusion table.

    Returns:
        ``(z, status)``: key → z; key → ``ok`` | ``no_person`` | ``unreadable`` (``holistic``
        when nothing is parsed).

    Args:
        items: ``(content key, path)`` pairs; paths absolute or relative to the working directory.
        source: the parse config + λ (``source.holistic`` → zeros, nothing parsed).
        parse_dir: parse cache folder (images parsed before are not parsed again).
        workers: parse processes (1 = in this process).

    Raises:
        BackendUnavailableError: the backend's package or weights are missing.
        OccluderWeightsError: the ``covered`` rule without the occluder segmenter's weights.
    """
    import pandas as pd

    from ..occlusion.table import Z_COLUMNS, segmentation_table
    from ..parsing import parse_dataset, read_parsing

    if source.holistic or not items:
        return {k: np.zeros(4, np.int64) for k, _ in items}, {k: "holistic" for k, _ in items}
    segmenter = None
    if source.rule.needs_occluder:  # the covered rule reads the occluder segmenter's mask: check it before parsing
        from ..occlusion.learned import load_segmenter

        segmenter = load_segmenter(source._occluder_path())
    index = pd.DataFrame({"key": [k for k, _ in items], "path": [p for _, p in items]})
    cfg = dataclasses.replace(source.parse, workers=max(1, workers))
    summary = parse_dataset(index, Path("."), cfg, parse_dir, progress=progress)
    parsing = read_parsing(parse_dir, summary.cache_id, columns=["label_map", "amodal_map", "status"])
    seg = None
    if segmenter is not None:
        from ..occlusion.learned import segment_index

        seg = segment_index(segmenter, index, Path("."), (source.parse.label_height, source.parse.label_width),
                            source.threshold)
    table = segmentation_table(parsing[parsing["key"].isin(set(index["key"]))], source.rule, seg)
    return (dict(zip(table["key"], table[list(Z_COLUMNS)].to_numpy(np.int64))),
            dict(zip(table["key"], table["status"].astype(str))))


def embed(model, meta: dict, items: Sequence[tuple[str, str]], z: dict[str, np.ndarray], camid: int,
          batch_size: int, device, progress: bool = False) -> FeatureSet:
    """``model.extract`` features of ``(key, path)`` items (the checkpoint's test transform), in order.

    Returns:
        FeatureSet with ``keys`` = content keys, ``paths`` = the given paths, ``pids`` = −1.
    """
    import pandas as pd

    from ..data.dataset import ReIDImageDataset, build_test_loader

    records = pd.DataFrame({"key": [k for k, _ in items], "path": [str(p) for _, p in items],
                            "pid": -1, "camid": int(camid), "label": -1})
    dataset = ReIDImageDataset(records, Path("."), eval_transform(meta), z=z)
    loader = build_test_loader(dataset, batch_size, num_workers=0)
    feats = extract_features(model, loader, device, num_cameras=int(meta["num_cameras"]), progress=progress)
    feats.paths = records["path"].tolist()
    return feats


@dataclass
class GalleryFeatures:
    """Gallery features in gallery order plus what the cache did.

    Attributes:
        feats: one row per readable gallery image (``paths`` as found, ``keys`` = content keys).
        skipped: unreadable files, ``{"path", "reason"}``.
        cache_path: the ``.npz`` feature cache used.
        reused, embedded: distinct images taken from the cache / embedded now.
    """

    feats: FeatureSet
    skipped: list[dict] = field(default_factory=list)
    cache_path: Path = Path()
    reused: int = 0
    embedded: int = 0


def feature_cache_path(cache_dir: Path, model_sha1: str, source: ZSource, camid: int) -> Path:
    """``<cache_dir>/gallery-<16 hex>.npz``, the hex hashing model, z source and camera id."""
    ident = json.dumps({"version": CACHE_VERSION, "model_sha1": model_sha1, "z": source.cache_id(),
                        "camid": int(camid)}, sort_keys=True)
    return Path(cache_dir) / f"gallery-{hashlib.sha1(ident.encode()).hexdigest()[:16]}.npz"


def _read_cache(path: Path) -> FeatureSet | None:
    if not path.is_file():
        return None
    try:
        return FeatureSet.load(path)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        log.warning("gallery feature cache %s is unreadable (%s); embedding again", path, exc)
        return None


def gallery_features(model, meta: dict, model_sha1: str, gallery_dir: Path, source: ZSource,
                     opts: SearchOptions, cache_dir: Path, device) -> GalleryFeatures:
    """Features of every readable image below ``gallery_dir``; images whose content key is in the
    feature cache are not parsed or embedded again (module doc, step 2).

    Raises:
        InferenceInputError: not a directory, no image file, or none readable.
    """
    from ..data.images import ImageReadError, read_image_info

    files = list_images(gallery_dir)
    if not files:
        raise InferenceInputError(f"gallery {gallery_dir}: no image files (*{', *'.join(IMAGE_SUFFIXES)}) below it")
    items, skipped = [], []
    for f in files:
        try:
            items.append((read_image_info(f).key, str(f)))
        except ImageReadError as exc:
            log.warning("gallery: skipped unreadable image %s (%s)", f, exc.reason)
            skipped.append({"path": str(f), "reason": exc.reason})
    if not items:
        raise InferenceInputError(f"gallery {gallery_dir}: none of its {len(files)} image files is readable")

    cache_path = feature_cache_path(cache_dir, model_sha1, source, opts.gallery_camid)
    cached = _read_cache(cache_path)
    have = {k: i for i, k in enumerate(cached.keys)} if cached is not None else {}
    todo = list({k: (k, p) for k, p in items if k not in have}.values())  # distinct new contents
    log.info("gallery: %d images (%d skipped), %d distinct new to embed, %d from the cache %s",
             len(items), len(skipped), len(todo), len({k for k, _ in items} & set(have)), cache_path)
    if todo:
        z, _ = occlusion_z(todo, source, Path(cache_dir) / "parsing", workers=source.workers)
        new = embed(model, meta, todo, z, opts.gallery_camid, opts.batch_size, device, progress=True)
        new.paths = []
        cached = new if cached is None else FeatureSet.concat([cached, new])
        have = {k: i for i, k in enumerate(cached.keys)}
        cached.save(cache_path)
        write_json(cache_path.with_suffix(".json"), {
            "model_sha1": model_sha1, "z": source.cache_id(), "gallery_camid": opts.gallery_camid,
            "images": len(cached), "version": CACHE_VERSION})
    feats = cached.subset(np.array([have[k] for k, _ in items]))
    feats.paths = [p for _, p in items]
    return GalleryFeatures(feats, skipped, cache_path, reused=len({k for k, _ in items}) - len(todo),
                           embedded=len(todo))


def search(model_path: str | Path, queries: Sequence[str | Path], gallery_dir: str | Path,
           source: ZSource = ZSource(), opts: SearchOptions = SearchOptions(),
           cache_dir: str | Path = ".", device: Any = "cpu") -> dict:
    """Rank ``gallery_dir`` for every query image (module doc).

    Returns:
        The JSON document ``ogfr search --out`` writes: ``model``, ``model_sha1``, ``method``,
        ``distance``, ``feat_norm``, ``z_source``, ``gallery`` (``dir``, ``images``, ``skipped``,
        ``cache`` {``path``, ``reused``, ``embedded``}) and ``queries``: per query ``path``, ``key``,
        ``z`` (head, arms, torso, legs; 1 = occluded), ``occlusion_type`` (0..15),
        ``parse_status`` (``ok``, ``no_person``, ``holistic`` = not parsed), ``visibility`` (K bools,
        Eq. 22) and ``results``: ``rank`` (1-based),
        ``path``, ``key``, ``distance``.

    Raises:
        CheckpointError: the checkpoint cannot be used (see :func:`.common.load_inference_model`).
        InferenceInputError: no query, an unreadable query, an empty/unreadable gallery, bad options.
        BackendUnavailableError: the parse backend cannot run.
    """
    from ..occlusion import occlusion_type
    from .common import load_inference_model

    if opts.distance not in DISTANCES:
        raise InferenceInputError(f"--distance {opts.distance!r}: expected one of {list(DISTANCES)}")
    if opts.top_k < 1 or opts.batch_size < 1:
        raise InferenceInputError("--top-k and --batch-size must be >= 1")
    if not queries:
        raise InferenceInputError("no query image given (--query IMG [IMG ...])")
    query_items = [(image_key(q, "query"), str(q)) for q in queries]  # unreadable query: error first
    gallery_dir, cache_dir = Path(gallery_dir), Path(cache_dir)
    if not gallery_dir.is_dir():
        raise InferenceInputError(f"gallery {gallery_dir}: not a directory of images")
    model, meta = load_inference_model(model_path, device)
    model_sha1 = file_sha1(model_path)

    gallery = gallery_features(model, meta, model_sha1, gallery_dir, source, opts, cache_dir, device)
    qz, qstatus = occlusion_z(query_items, source, cache_dir / "parsing", workers=1, progress=False)
    qfeats = embed(model, meta, query_items, qz, opts.query_camid, opts.batch_size, device)
    dist = compute_distance(qfeats, gallery.feats, opts.distance, opts.chunk_mb, opts.feat_norm)  # [Q, G]

    out_queries = []
    for i, (key, path) in enumerate(query_items):
        z = np.asarray(qz[key], np.int64)
        if qstatus[key] == "no_person":
            log.warning("query %s: the %s parser found no person; z = 1111 (every part occluded, type 15) — "
                        "consider --assume-holistic", path, source.parse.backend)
        order = np.argsort(dist[i], kind="stable")[:opts.top_k]
        out_queries.append({
            "path": path, "key": key, "z": z.tolist(), "occlusion_type": int(occlusion_type(z)),
            "parse_status": qstatus[key], "visibility": qfeats.visibility[i].tolist(),
            "results": [{"rank": r + 1, "path": gallery.feats.paths[j], "key": gallery.feats.keys[j],
                         "distance": round(float(dist[i, j]), 6)} for r, j in enumerate(order)],
        })
    return {
        "model": str(model_path), "model_sha1": model_sha1, "method": str(meta.get("method", "?")),
        "distance": opts.distance, "feat_norm": bool(opts.feat_norm), "z_source": source.describe(),
        "query_camid": opts.query_camid, "gallery_camid": opts.gallery_camid,
        "gallery": {"dir": str(gallery_dir), "images": len(gallery.feats), "skipped": gallery.skipped,
                    "cache": {"path": str(gallery.cache_path), "reused": gallery.reused,
                              "embedded": gallery.embedded}},
        "queries": out_queries,
    }


def search_figure(doc: dict, path: str | Path, max_results: int = 10) -> Path:
    """Fig. 8-style rank lists of a :func:`search` result: per query, the query (black frame, its
    occlusion type) then its first ``max_results`` results with their distance. No identities are
    known here, so nothing is marked right or wrong. Written atomically as PNG.

    The figure shows the images themselves: do not publish it for a licensed dataset.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data.images import load_rgb
    from ..occlusion.table import type_label

    queries = doc["queries"]
    cols = 1 + min(max_results, max((len(q["results"]) for q in queries), default=0))
    fig, axes = plt.subplots(len(queries), cols, figsize=(1.2 * cols, 2.4 * len(queries)), squeeze=False)
    for row, q in enumerate(queries):
        cells = [(q["path"], f"query\nocclusion: {type_label(q['occlusion_type'])}", "black")]
        cells += [(r["path"], f"#{r['rank']}\nd={r['distance']:.3f}", "tab:blue") for r in q["results"][:cols - 1]]
        for ax in axes[row]:
            ax.axis("off")
        for ax, (img_path, title, color) in zip(axes[row], cells):
            ax.axis("on")
            ax.imshow(np.asarray(load_rgb(img_path).resize((64, 128))))
            ax.set_title(title, fontsize=7, color=color)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_edgecolor(color)
                side.set_linewidth(2)
    fig.suptitle(f"ogfr search: {doc['distance']} distance, {doc['method']} ({Path(doc['model']).name})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
