"""Test-time extras: scorers a method offers beside the standard distances, run by the evaluate stage
only when one of the method's ``evaluate`` options is on — with no method name in this package.

Some peers change the ranking at test time in ways the standard protocol does not allow or that
only approximate the paper: FPC consolidates each query with its neighbours in a memory of the TEST
GALLERY; CpaCol re-scores the top of each query's ranking with a pairwise correlation network. The
evaluation code asks the model for them (:meth:`ReIDMethod.test_time_extras(evaluate_cfg, kind)
<ogfr_core.model.base.ReIDMethod.test_time_extras>`) and treats every one alike:

* an extra is a :class:`TestTimeExtra`: ``name`` (its key in ``reports/metrics.json``), ``flags``
  (keys of :data:`FLAGS`: what makes the number non-standard, printed by the report), ``options()``
  (recorded) and ``distance_blocks(ctx)``, which yields ``(query slice, {variant: dist [q, G]})``
  blocks that stream into a :class:`~ogfr_core.evaluation.rank.RankAccumulator` (variant = ``name``,
  or e.g. a fusion weight of a validation sweep);
* the :class:`ExtraContext` gives it the standard query/gallery :class:`FeatureSet`, a way to read
  the split's images again in FeatureSet order, the memory budget ``chunk_mb`` and a scratch folder
  (removed afterwards) for on-disk memories (:class:`TokenStore`).

Shared helpers: :class:`TokenStore` (per-image float16 arrays in a ``numpy.memmap``: bounded RAM for
a 17,661-image gallery), :func:`top_k_indices` / :func:`fuse_top_k` (re-score the top-k of a ranking by
z-normalised fusion), :func:`run_extra` (rank metrics of every variant).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .features import FeatureSet
from .rank import RankAccumulator, RankResult

log = logging.getLogger(__name__)

#: flag → the words the report prints next to the number
FLAGS: dict[str, str] = {
    "uses_test_gallery": "uses the test gallery",
    "rescores_top_k": "re-scores the top-k of the global ranking (approximation)",
}


@dataclass
class ExtraContext:
    """What a test-time extra may read.

    Attributes:
        query, gallery: the standard features (``model.extract``) of the two splits.
        batches: ``batches("query" | "gallery")`` iterates the split's images again, in FeatureSet
            order, as ``(rows slice, {"image" [b,3,H,W], "z" [b,4] long, "camid" [b] long})`` on
            ``device`` (camids mapped as for ``extract``).
        device: torch device of the model.
        chunk_mb: memory budget (MiB) for one block of work and its temporaries.
        normalize: L2-normalise features before distances (``evaluate.feat_norm``).
        scratch: an empty folder for on-disk memories, removed after the extra ran.
        kind: ``"test"`` or ``"val"`` (the validation split held out of the training ids).
    """

    query: FeatureSet
    gallery: FeatureSet
    batches: Callable[[str], Iterator[tuple[slice, dict]]]
    device: Any
    chunk_mb: float
    normalize: bool
    scratch: Path
    kind: str = "test"


class TestTimeExtra:
    """Base class of a test-time scorer (see the module docstring)."""

    #: key in metrics.json (the main variant's name)
    name: str = ""
    #: keys of :data:`FLAGS`
    flags: tuple[str, ...] = ()

    def options(self, variant: str) -> dict:
        """The parameters that produced ``variant`` (recorded in metrics.json)."""
        return {}

    def distance_blocks(self, ctx: ExtraContext) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        """Yield ``(query slice, {variant: dist [q, G] float32})`` covering every query in order."""
        raise NotImplementedError


class TokenStore:
    """Per-image arrays of one shape, float16, in a ``numpy.memmap`` file: the RAM it holds is the
    chunk being written or read, the rest is on disk (and in the page cache).

    Args:
        path: the file (``.npy``; its folder must exist).
        n: number of images; shape: per-image shape, e.g. ``(N, D)`` patch tokens.

    ``write(rows, values)`` stores ``values [b, *shape]`` at ``rows``; ``read(index)`` returns
    float32 ``[*index.shape, *shape]`` (a torch tensor, CPU).
    """

    def __init__(self, path: str | Path, n: int, shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float16, shape=(int(n), *self.shape))

    @property
    def nbytes(self) -> int:
        """Size of the file's data in bytes."""
        return int(self.array.nbytes)

    def write(self, rows: slice, values) -> None:
        import torch

        if isinstance(values, torch.Tensor):
            values = values.detach().float().cpu().numpy()
        self.array[rows] = np.asarray(values, np.float32).astype(np.float16)

    def read(self, index):
        import torch

        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, np.int64)
        flat = np.sort(np.unique(idx.reshape(-1)))  # sorted page access, each image once
        rows = self.array[flat].astype(np.float32)  # [u, *shape]
        pos = np.searchsorted(flat, idx.reshape(-1))
        return torch.from_numpy(rows[pos].reshape(*idx.shape, *self.shape))


def top_k_indices(dist: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` gallery indices of smallest distance per query row of ``dist [q, G]``, nearest first
    (ties by gallery index, as the rank evaluation breaks them) → ``[q, min(k, G)]`` int64."""
    k = min(int(k), dist.shape[1])
    return np.argsort(dist, axis=1, kind="stable")[:, :k].astype(np.int64)


def z_normalise(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``(x − mean) / (std + 1e-7)`` along ``axis`` (population std, as CpaCol's code)."""
    x = np.asarray(x, np.float64)
    return (x - x.mean(axis=axis, keepdims=True)) / (x.std(axis=axis, keepdims=True) + 1e-7)


def fuse_top_k(dist: np.ndarray, top: np.ndarray, scores: np.ndarray,
               weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Re-score the top of each ranking: for query row ``i`` and its candidates ``top[i] [k]``, the
    fused distance ``z(d_ik) + w · z(−s_ik)`` orders the k candidates (z = z-normalisation over them;
    ``scores`` are similarities, larger = more alike), which stay ahead of every other gallery item;
    the others keep their distance order.

    This is CpaCol's test-time fusion (official code: z-normalise the global distance and the
    correlation output over the WHOLE gallery row, add them with weight w) restricted to the top-k:
    an approximation — the z statistics are those of the k candidates, and an item outside the top-k
    of the global distance is never promoted. With k = G it is the full fusion.

    Args:
        dist: ``[q, G]`` distances; top: ``[q, k]`` indices (:func:`top_k_indices`);
        scores: ``[q, k]`` similarities of those pairs; weights: ``{variant: w}``.

    Returns:
        ``{variant: [q, G] float32}`` whose row order is the re-scored ranking.
    """
    dist = np.asarray(dist, np.float32)
    q, g = dist.shape
    rows = np.arange(q)[:, None]
    z_d = z_normalise(np.take_along_axis(dist, top, axis=1))  # [q, k]
    z_s = z_normalise(-np.asarray(scores, np.float64))  # similarity → distance-like
    others = dist.copy()
    others[rows, top] = np.inf
    floor = others.min(axis=1) if top.shape[1] < g else np.zeros(q, np.float32)  # [q]
    out = {}
    for variant, w in weights.items():
        fused = z_d + float(w) * z_s  # [q, k]
        block = dist.copy()
        block[rows, top] = (fused - fused.max(axis=1, keepdims=True) + (floor[:, None] - 1.0)).astype(np.float32)
        out[variant] = block
    return out


def run_extra(extra: TestTimeExtra, ctx: ExtraContext, max_rank: int = 50) -> dict[str, RankResult]:
    """Market-1501 metrics of every variant ``extra`` yields (streamed; no ``[Q, G]`` matrix held).

    Raises:
        ValueError: the extra's blocks do not cover the queries in order, or have the wrong width.
    """
    accs: dict[str, RankAccumulator] = {}
    done = 0
    for sl, blocks in extra.distance_blocks(ctx):
        if sl.start != done:
            raise ValueError(f"test-time extra {extra.name!r} yielded rows {sl.start}.. after {done}")
        done = sl.stop
        for variant, block in blocks.items():
            if block.shape != (sl.stop - sl.start, len(ctx.gallery)):
                raise ValueError(f"test-time extra {extra.name!r}/{variant}: block {block.shape} for rows "
                                 f"{sl.start}:{sl.stop} and {len(ctx.gallery)} gallery items")
            acc = accs.setdefault(variant, RankAccumulator(ctx.gallery.pids, ctx.gallery.camids, max_rank,
                                                           ctx.chunk_mb))
            acc.process(block, ctx.query.pids[sl], ctx.query.camids[sl])
    if done != len(ctx.query):
        raise ValueError(f"test-time extra {extra.name!r} covered {done} of {len(ctx.query)} queries")
    return {variant: acc.result() for variant, acc in accs.items()}


def rows_per_chunk(bytes_per_row: float, chunk_mb: float) -> int:
    """How many rows of ``bytes_per_row`` fit in ``chunk_mb`` MiB (at least 1)."""
    return max(1, int(chunk_mb * 2**20 // max(1.0, math.ceil(bytes_per_row))))
