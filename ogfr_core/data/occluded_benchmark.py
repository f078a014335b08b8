"""An occluded-query benchmark derived deterministically from a holistic Market-layout set.

Occluded-Duke (Miao et al., ICCV 2019) is built by *selection*: occluded queries, a mostly holistic
gallery. Where no occluded set is available (here: only CUHK03-NP, whose queries the parsing finds
13 % occluded), we *synthesise* the occluded queries instead: every original query gets one pasted
occluder, the gallery is the original gallery unchanged. The result is a Market-1501-layout folder
(``query/`` + ``bounding_box_test/``, read by the ``market1501_test`` layout) that the usual
index → parse → occlusion path turns into labels — so a query's z comes from the parsing of the
*occluded* image, as at real test time.

Occluders (``occlude.kind``), chosen to be **unlike the training augmentation** (which pastes a
rectangle cut from another image of the batch at a uniformly random position, area 10–40 %):

* ``person`` — another pedestrian in front of the target, as in Occluded-Duke: the body of a
  *training* identity cut out with its parsing mask (label map > 0), keeping its aspect ratio, pasted
  through the mask (only body pixels cover the target);
* ``object`` — a background region of a training image (the least-body window among 8 random
  positions of a random training image, judged by its parsing label map), pasted as a solid block;
* ``mixed`` — person or object with probability 1/2 each.

Placement and size (every number drawn from ``numpy.random.default_rng([seed, key])``, ``key`` =
the query image's SHA-1, so the set is identical on every machine and independent of file order):

* the occluder's **box** covers a fraction ``a ~ U(area_min, area_max)`` of the crop (default
  0.2–0.5; clipped by the crop's size, so the realised fraction is ``≤ a``, reported per query as
  ``box_area``; a person occluder covers only its mask inside the box: ``covered``);
* it enters from an **edge** drawn uniformly from ``edges`` (default bottom, left, right — as real
  occlusion is; never the top): ``bottom`` — box on the bottom edge, width ``W·U(0.6, 1)`` (objects)
  or the person's aspect, horizontal position uniform; ``left``/``right`` — box on that edge, height
  ``H·U(0.5, 1)`` (objects) or the person's aspect, bottom-aligned for persons (they stand on the
  same ground), vertical position uniform for objects.

The occluded queries are written as PNG (lossless: the pixels are exactly the generator's), named
like the original with ``.png``; the gallery entries are relative symlinks to the original files
(same bytes, so the same image keys and parse-cache entries), or copies with ``link_gallery=False``.
One row per query goes to ``occluders.parquet`` in the output folder (kind, edge, box, area, source
image key and pid).
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import UserError
from .images import load_rgb

log = logging.getLogger(__name__)

EDGES = ("bottom", "left", "right")
KINDS = ("person", "object", "mixed")


class OccluderSourceError(UserError, ValueError):
    """No usable occluder source (no training image with a parsed person)."""


@dataclass(frozen=True)
class OccluderSpec:
    """What to paste (see the module docstring). ``area`` = (min, max) fraction of H×W in (0, 1]."""

    kind: str = "mixed"
    area: tuple[float, float] = (0.2, 0.5)
    edges: tuple[str, ...] = EDGES
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"occlude.kind must be one of {list(KINDS)}, got {self.kind!r}")
        lo, hi = self.area
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"occlude.area must satisfy 0 < min <= max <= 1, got {list(self.area)}")
        bad = [e for e in self.edges if e not in EDGES]
        if bad or not self.edges:
            raise ValueError(f"occlude.edges must be a non-empty subset of {list(EDGES)}, got {list(self.edges)}")


@dataclass(frozen=True)
class Box:
    """A pixel box ``[y0, y1) × [x0, x1)`` in the target crop."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


def key_rng(seed: int, key: str) -> np.random.Generator:
    """``default_rng([seed, first 60 bits of the SHA-1 key])``: the same draws on every machine."""
    return np.random.default_rng([int(seed), int(key[:15], 16)])


def place_box(rng: np.random.Generator, height: int, width: int, area: float, edge: str,
              aspect: float | None = None) -> Box:
    """An occluder box of ``area`` · H·W pixels (clipped to the crop) touching ``edge``.

    Args:
        height, width: crop size H, W in pixels.
        area: target fraction of H·W.
        edge: ``bottom`` | ``left`` | ``right``.
        aspect: box width / height to keep (person occluders); None = drawn as in the module docstring.

    Returns:
        the box; its area is ``≤ area·H·W`` (+ rounding) and it touches ``edge``.
    """
    target = area * height * width
    if aspect is not None:
        h = min(height, max(1, int(round(np.sqrt(target / aspect)))))
        w = min(width, max(1, int(round(aspect * h))))
    elif edge == "bottom":
        w = min(width, max(1, int(round(width * rng.uniform(0.6, 1.0)))))
        h = min(height, max(1, int(round(target / w))))
    else:
        h = min(height, max(1, int(round(height * rng.uniform(0.5, 1.0)))))
        w = min(width, max(1, int(round(target / h))))
    if edge == "bottom":
        x0 = int(rng.integers(0, width - w + 1))
        return Box(height - h, x0, height, x0 + w)
    y0 = height - h if aspect is not None else int(rng.integers(0, height - h + 1))
    x0 = 0 if edge == "left" else width - w
    return Box(y0, x0, y0 + h, x0 + w)


def person_cutout(image: np.ndarray, label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The body of a training image: ``image [H, W, 3]`` uint8 and its parsing ``label_map`` (any size,
    resized nearest to H×W) → (rgb, mask) cropped to the mask's bounding box.

    Raises:
        OccluderSourceError: the label map has no body pixel.
    """
    h, w = image.shape[:2]
    lm = np.asarray(Image.fromarray(label_map.astype(np.uint8)).resize((w, h), Image.NEAREST))
    mask = lm > 0
    if not mask.any():
        raise OccluderSourceError("the source label map has no body pixel")
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return image[y0:y1, x0:x1], mask[y0:y1, x0:x1]


def background_window(rng: np.random.Generator, image: np.ndarray, label_map: np.ndarray,
                      box_h: int, box_w: int, tries: int = 8) -> np.ndarray:
    """A ``box_h × box_w`` window of ``image [H, W, 3]`` with the least body (``label_map > 0``) among
    ``tries`` random positions; the source is resized first when it is smaller than the box."""
    h, w = image.shape[:2]
    if h < box_h or w < box_w:
        scale = max(box_h / h, box_w / w)
        h, w = int(np.ceil(h * scale)), int(np.ceil(w * scale))
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    body = np.asarray(Image.fromarray(label_map.astype(np.uint8)).resize((w, h), Image.NEAREST)) > 0
    best, best_frac = None, 2.0
    for _ in range(tries):
        y, x = int(rng.integers(0, h - box_h + 1)), int(rng.integers(0, w - box_w + 1))
        frac = float(body[y:y + box_h, x:x + box_w].mean())
        if frac < best_frac:
            best, best_frac = (y, x), frac
    y, x = best
    return image[y:y + box_h, x:x + box_w]


def occlude(image: np.ndarray, rgb: np.ndarray, mask: np.ndarray | None, box: Box) -> tuple[np.ndarray, float]:
    """Paste occluder ``rgb`` (resized bilinearly to the box; ``mask`` nearest) onto a copy of
    ``image [H, W, 3]`` uint8 inside ``box``; ``mask`` None = the whole box.

    Returns:
        (occluded image, covered fraction of H·W).
    """
    bh, bw = box.y1 - box.y0, box.x1 - box.x0
    patch = np.asarray(Image.fromarray(rgb).resize((bw, bh), Image.BILINEAR))
    if mask is None:
        m = np.ones((bh, bw), dtype=bool)
    else:
        m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((bw, bh), Image.NEAREST)) > 127
    out = image.copy()
    region = out[box.y0:box.y1, box.x0:box.x1]
    region[m] = patch[m]
    return out, float(m.sum()) / (image.shape[0] * image.shape[1])


def occlude_queries(root: str | Path, out_root: str | Path, queries: pd.DataFrame, gallery: pd.DataFrame,
                    sources: pd.DataFrame, label_map: Callable[[str], np.ndarray], spec: OccluderSpec,
                    link_gallery: bool = True) -> pd.DataFrame:
    """Write the occluded-query benchmark of a Market-layout set to ``out_root`` (module docstring).

    Args:
        root: the source dataset folder (Market-1501 layout).
        out_root: the derived folder to (re)write: ``query/``, ``bounding_box_test/``, ``occluders.parquet``.
        queries, gallery: index rows (``key``, ``path`` relative to ``root``, ``pid``).
        sources: training index rows (``key``, ``path``, ``pid``) whose parsing found a person —
            the only occluder sources (never a test identity).
        label_map: ``key -> uint8 [h, w]`` parsing label map of a source image.
        spec: occluder kind, area, edges, seed.
        link_gallery: symlink the gallery files (True) or copy them.

    Returns:
        one row per query: ``path`` (in ``out_root``), ``key`` (of the original), ``kind``, ``edge``,
        ``y0, x0, y1, x1``, ``area`` (drawn), ``box_area``, ``covered`` (fractions of H·W),
        ``source_key``, ``source_pid``, ``seed`` (``spec.seed``: the ground truth checks it).

    Raises:
        OccluderSourceError: ``sources`` is empty.
    """
    root, out_root = Path(root), Path(out_root)
    if sources.empty:
        raise OccluderSourceError("no training image with a parsed person to cut occluders from; "
                                  "run `dvc repro parse` on the source dataset first")
    sources = sources.sort_values("key", kind="stable").reset_index(drop=True)  # order-independent draws
    for sub in ("query", "bounding_box_test"):
        if (out_root / sub).exists():
            shutil.rmtree(out_root / sub)
        (out_root / sub).mkdir(parents=True)
    rows = []
    for q in queries.itertuples(index=False):
        rng = key_rng(spec.seed, q.key)
        kind = spec.kind if spec.kind != "mixed" else ("person" if rng.random() < 0.5 else "object")
        edge = spec.edges[int(rng.integers(len(spec.edges)))]
        area = float(rng.uniform(*spec.area))
        src = sources.iloc[int(rng.integers(len(sources)))]
        image = np.asarray(load_rgb(root / q.path))  # [H, W, 3] uint8, the converter every stage uses
        src_img = np.asarray(load_rgb(root / src.path))
        h, w = image.shape[:2]
        if kind == "person":
            rgb, mask = person_cutout(src_img, label_map(src.key))
            box = place_box(rng, h, w, area, edge, aspect=rgb.shape[1] / rgb.shape[0])
        else:
            box = place_box(rng, h, w, area, edge)
            rgb, mask = background_window(rng, src_img, label_map(src.key), box.y1 - box.y0, box.x1 - box.x0), None
        occluded, covered = occlude(image, rgb, mask, box)
        rel = f"query/{Path(q.path).stem}.png"
        Image.fromarray(occluded).save(out_root / rel, format="PNG", optimize=False)
        rows.append({"path": rel, "key": q.key, "kind": kind, "edge": edge, "y0": box.y0, "x0": box.x0,
                     "y1": box.y1, "x1": box.x1, "area": round(area, 6), "box_area": box.area / (h * w),
                     "covered": covered, "source_key": src.key, "source_pid": int(src.pid), "seed": int(spec.seed)})
    for g in gallery.itertuples(index=False):
        dst = out_root / "bounding_box_test" / Path(g.path).name
        if link_gallery:
            os.symlink(os.path.relpath((root / g.path).resolve(), dst.parent.resolve()), dst)
        else:
            shutil.copyfile(root / g.path, dst)
    table = pd.DataFrame(rows)
    table.to_parquet(out_root / "occluders.parquet", index=False)
    log.info("occluded benchmark: %d queries (%s), %d gallery images %s -> %s", len(table),
             ", ".join(f"{k} {n}" for k, n in table["kind"].value_counts().sort_index().items()),
             len(gallery), "linked" if link_gallery else "copied", out_root)
    return table


def summarize_occluders(table: pd.DataFrame, test_pids: Sequence[int]) -> dict:
    """Counts and area statistics of :func:`occlude_queries`' table, and the check that no occluder
    comes from a test identity (``source_test_pids`` must be 0)."""
    return {
        "queries": int(len(table)),
        "kinds": {k: int(n) for k, n in table["kind"].value_counts().sort_index().items()},
        "edges": {k: int(n) for k, n in table["edge"].value_counts().sort_index().items()},
        "box_area_mean": round(float(table["box_area"].mean()), 4),
        "box_area_min": round(float(table["box_area"].min()), 4),
        "box_area_max": round(float(table["box_area"].max()), 4),
        "covered_mean": round(float(table["covered"].mean()), 4),
        "source_images": int(table["source_key"].nunique()),
        "source_ids": int(table["source_pid"].nunique()),
        "source_test_pids": int(table["source_pid"].isin(set(int(p) for p in test_pids)).sum()),
    }
