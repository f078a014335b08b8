"""CMC / mAP / mINP under the Market-1501 protocol, vectorised and chunked over queries.

Protocol (torchreid ``eval_market1501``, fast-reid ``eval_market1501``, TransReID ``eval_func``):
for each query, gallery items with the same pid AND the same camid are dropped ("junk"); a query
with no remaining same-pid item is skipped and counted; CMC is cut at ``max_rank`` and averaged over
the valid queries; AP = Σ (precision at each hit) / #positives; mINP = mean over valid queries of
#positives / rank of the hardest (last) positive (Ye et al., "Deep Learning for Person Re-ID: A
Survey and Outlook", TPAMI 2021).

Ties: the reference implementations call ``np.argsort(distmat, axis=1)`` (introsort, not stable),
so the order of equal distances is unspecified there. Here the gallery is ranked as a *stable*
sort would rank it — by distance, then by gallery index — which equals
``np.argsort(distmat, axis=1, kind="stable")``. Distances are compared as float32 (the features are
float32); a float64 ``distmat`` is rounded to float32 first.

How it is fast: only the ranks of the same-pid gallery items matter (hits and junk), and the rank of
item ``j`` in a row is ``#{k : (d_k, k) <= (d_j, j)}``. Distances and gallery indices are packed into
one order-preserving int64 key per element, so a rank is a count of keys ``<=`` the item's key —
a compare-and-sum over the row, with no sort of the 17,661-long rows. Queries are processed in
blocks whose temporaries fit in ``chunk_mb`` (measured with tracemalloc: peak ≈ the budget; blocks
are capped at 32 MiB, larger ones were slower). The distance matrix handed in is not copied.

Example::

    >>> import numpy as np
    >>> d = np.array([[0.1, 0.5, 0.3], [0.2, 0.1, 0.9]], np.float32)
    >>> r = evaluate_rank(d, q_pids=[1, 2], g_pids=[1, 2, 1], q_camids=[0, 0], g_camids=[1, 1, 1])
    >>> r.cmc[:3].tolist(), round(r.mAP, 4)
    ([1.0, 1.0, 1.0], 1.0)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

_INT64_MAX = np.iinfo(np.int64).max
_BLOCK_MB_CAP = 32.0  # MiB; see RankAccumulator
_BYTES_PER_ELEMENT = 16  # peak temporaries per [query, gallery] element of a block


@dataclass(frozen=True)
class RankResult:
    """Result of :func:`evaluate_rank`.

    Attributes:
        cmc: ``[R]`` float64, ``cmc[r]`` = fraction of valid queries with a true match within the
            top ``r + 1`` (R = ``min(max_rank, num_gallery)``).
        mAP: mean average precision over valid queries, in [0, 1].
        mINP: mean inverse negative penalty over valid queries, in [0, 1].
        num_valid_queries: queries with at least one positive after junk removal.
        num_skipped_queries: queries without one (counted, not an error).
        ap: ``[Q]`` float64 per-query AP, NaN for skipped queries.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_skipped_queries: int
    ap: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def rank(self, k: int) -> float:
        """CMC at rank ``k`` (1-based), e.g. ``rank(1)`` is rank-1 accuracy in [0, 1]."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank {k} outside 1..{len(self.cmc)}")
        return float(self.cmc[k - 1])

    def to_dict(self, ranks: tuple[int, ...] = (1, 5, 10)) -> dict:
        """Plain dict (percent-free floats in [0, 1]) for ``reports/metrics.json``."""
        out = {f"rank-{k}": self.rank(k) for k in ranks if k <= len(self.cmc)}
        out.update(mAP=float(self.mAP), mINP=float(self.mINP),
                   num_valid_queries=int(self.num_valid_queries),
                   num_skipped_queries=int(self.num_skipped_queries))
        return out


def order_keys(dist: np.ndarray) -> np.ndarray:
    """Pack ``dist [..., G]`` and the gallery index into int64 keys that sort like ``(dist, index)``.

    The float32 bit pattern of a distance, viewed as int32 with negative values' magnitude bits
    flipped, is monotone in the float value (-0.0 is folded onto +0.0 first); it forms the high 32
    bits, the gallery index the low 32 bits. Keys are unique within a row.

    Raises:
        ValueError: NaN in ``dist`` or more than 2**31 gallery items.
    """
    d = np.asarray(dist, dtype=np.float32) + np.float32(0.0)  # fresh copy; -0.0 -> +0.0
    if d.shape[-1] >= 2**31:
        raise ValueError(f"gallery of {d.shape[-1]} items is too large for int64 rank keys")
    bits = d.view(np.int32)  # in place on the copy: 4 + 1 + 8 bytes per element at the peak
    bits[bits < 0] ^= np.int32(0x7FFFFFFF)
    keys = bits.astype(np.int64)
    del d, bits
    keys <<= 32
    keys |= np.arange(keys.shape[-1], dtype=np.int64)
    return keys


class RankAccumulator:
    """Streaming Market-1501 evaluator (fast-reid's ``reset/process/evaluate`` in spirit).

    Feed distance chunks ``[q, G]`` for consecutive query blocks with :meth:`process`, then call
    :meth:`result`. Memory is bounded by the chunk handed in plus ``chunk_mb`` of temporaries.

    Args:
        g_pids, g_camids: ``[G]`` gallery labels.
        max_rank: CMC length; reduced to ``G`` (with a warning) when the gallery is smaller,
            as torchreid does.
        chunk_mb: memory budget (MiB) for the per-chunk temporaries.

    Raises:
        ValueError: empty gallery, or ``g_pids``/``g_camids`` of different lengths.
    """

    def __init__(self, g_pids, g_camids, max_rank: int = 50, chunk_mb: float = 256):
        self.g_pids = np.asarray(g_pids).astype(np.int64, copy=False).ravel()
        self.g_camids = np.asarray(g_camids).astype(np.int64, copy=False).ravel()
        num_g = len(self.g_pids)
        if num_g == 0:
            raise ValueError("empty gallery: no gallery items to rank (check the index's 'gallery' split)")
        if len(self.g_camids) != num_g:
            raise ValueError(f"g_pids has {num_g} items but g_camids has {len(self.g_camids)}")
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        if num_g < max_rank:
            log.warning("gallery has %d items < max_rank %d; CMC cut at %d", num_g, max_rank, num_g)
            max_rank = num_g
        self.max_rank = max_rank
        if chunk_mb <= 0:
            raise ValueError(f"chunk_mb must be > 0, got {chunk_mb}")
        # blocks larger than ~32 MiB only add page faults and cache misses (measured), so the
        # budget is a cap, not a target
        self.chunk_bytes = max(1, int(min(chunk_mb, _BLOCK_MB_CAP) * 2**20))
        self._first: list[np.ndarray] = []  # kept rank of the first hit (0 = skipped query)
        self._ap: list[np.ndarray] = []
        self._inp: list[np.ndarray] = []

    def process(self, dist, q_pids, q_camids) -> None:
        """Rank one block of queries.

        Args:
            dist: ``[q, G]`` distances (smaller = more similar).
            q_pids, q_camids: ``[q]`` labels of these queries.

        Raises:
            ValueError: shape mismatch or NaN distances.
        """
        dist = np.asarray(dist)
        q_pids = np.asarray(q_pids).astype(np.int64, copy=False).ravel()
        q_camids = np.asarray(q_camids).astype(np.int64, copy=False).ravel()
        num_g = len(self.g_pids)
        if dist.ndim != 2 or dist.shape[1] != num_g:
            raise ValueError(f"distance block has shape {dist.shape}, expected [q, {num_g}]")
        if not (dist.shape[0] == len(q_pids) == len(q_camids)):
            raise ValueError(f"distance block has {dist.shape[0]} rows but {len(q_pids)} q_pids "
                             f"and {len(q_camids)} q_camids")
        if dist.shape[0] == 0:
            return
        # peak ~16 bytes per element: keys 8 (+ 5 while they are built), same-pid mask 1, NaN check 1;
        # the [b, P, G] comparison is sub-blocked to the same budget in _process_block
        rows = max(1, self.chunk_bytes // (num_g * _BYTES_PER_ELEMENT))
        for s in range(0, dist.shape[0], rows):
            self._process_block(dist[s:s + rows], q_pids[s:s + rows], q_camids[s:s + rows])

    def _process_block(self, dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray) -> None:
        if np.isnan(dist).any():
            raise ValueError("distance matrix contains NaN (check the features for NaN/inf)")
        c, num_g = dist.shape
        keys = order_keys(dist)  # [c, G] int64, unique per row
        same = self.g_pids[None, :] == q_pids[:, None]  # [c, G] same-pid (hits and junk)
        rr, cc = np.nonzero(same)  # row-major: grouped by query, gallery index ascending
        n_same = np.bincount(rr, minlength=c)  # [c]
        p_max = int(n_same.max()) if len(rr) else 0
        first = np.zeros(c, np.int64)
        ap = np.full(c, np.nan)
        inp = np.full(c, np.nan)
        if p_max == 0:
            self._append(first, ap, inp)
            return
        slot = np.arange(len(rr)) - np.repeat(np.cumsum(n_same) - n_same, n_same)  # position in row
        item_keys = np.full((c, p_max), _INT64_MAX, np.int64)  # [c, P], padded with +max
        item_keys[rr, slot] = keys[rr, cc]
        junk = np.zeros((c, p_max), bool)  # [c, P] same pid and same camera
        junk[rr, slot] = self.g_camids[cc] == q_camids[rr]
        valid_slot = np.zeros((c, p_max), bool)
        valid_slot[rr, slot] = True
        # rank (1-based, over the whole row) of each same-pid item: #keys <= its key.
        # Sub-blocks keep the [b, P, G] boolean under the budget.
        ranks = np.empty((c, p_max), np.int64)
        del same
        sub = max(1, (self.chunk_bytes - keys.nbytes) // max(1, p_max * num_g))
        for s in range(0, c, sub):  # one [b, P, G] boolean alive at a time
            ranks[s:s + sub] = (keys[s:s + sub, None, :] <= item_keys[s:s + sub, :, None]).sum(axis=2)
        # order the same-pid items of each row by rank; padding (rank G) goes last
        ranks = np.where(valid_slot, ranks, num_g + 1)
        order = np.argsort(ranks, axis=1, kind="stable")
        ranks = np.take_along_axis(ranks, order, 1)
        junk = np.take_along_axis(junk, order, 1)
        good = np.take_along_axis(valid_slot, order, 1) & ~junk  # [c, P]
        kept_rank = ranks - np.cumsum(junk, axis=1)  # rank after dropping junk ranked before it
        hits = np.cumsum(good, axis=1)  # hits so far (at good slots: 1, 2, ...)
        n_good = hits[:, -1]
        has = n_good > 0
        big = np.iinfo(np.int64).max
        first = np.where(has, np.where(good, kept_rank, big).min(axis=1), 0)
        last = np.where(good, kept_rank, 0).max(axis=1)
        prec_sum = np.where(good, hits / np.maximum(kept_rank, 1), 0.0).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ap = np.where(has, prec_sum / n_good, np.nan)
            inp = np.where(has, n_good / np.maximum(last, 1), np.nan)
        self._append(first, ap, inp)

    def _append(self, first, ap, inp) -> None:
        self._first.append(first)
        self._ap.append(ap)
        self._inp.append(inp)

    def result(self) -> RankResult:
        """Aggregate every processed block.

        Raises:
            ValueError: no query was processed, or no query has a positive in the gallery.
        """
        if not self._first:
            raise ValueError("empty query set: no queries were evaluated (check the 'query' split)")
        first = np.concatenate(self._first)
        ap = np.concatenate(self._ap)
        inp = np.concatenate(self._inp)
        valid = first > 0
        n_valid = int(valid.sum())
        n_skip = int(len(first) - n_valid)
        if n_valid == 0:
            raise ValueError(f"none of the {len(first)} queries has a positive in the gallery "
                             "(after dropping same-pid same-camera items): check the query/gallery "
                             "split and the camid convention (data.query_camid / gallery_camid)")
        if n_skip:
            log.info("%d of %d queries have no gallery positive and are skipped", n_skip, len(first))
        ranks = np.arange(1, self.max_rank + 1)
        cmc = (first[valid, None] <= ranks[None, :]).mean(axis=0)  # [R]
        return RankResult(cmc=cmc.astype(np.float64), mAP=float(ap[valid].mean()),
                          mINP=float(inp[valid].mean()), num_valid_queries=n_valid,
                          num_skipped_queries=n_skip, ap=ap)


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                  chunk_mb: float = 256) -> RankResult:
    """Market-1501 CMC / mAP / mINP of a query × gallery distance matrix.

    Args:
        distmat: ``[Q, G]`` distances (numpy array or torch tensor; smaller = more similar).
        q_pids, q_camids: ``[Q]`` query labels; g_pids, g_camids: ``[G]`` gallery labels.
        max_rank: CMC cut (50 as torchreid/fast-reid).
        chunk_mb: memory budget (MiB) for the temporaries of one query chunk.

    Returns:
        :class:`RankResult`.

    Raises:
        ValueError: empty query or gallery, label/row count mismatch, NaN distances, or no query
            with a positive. A single query without a positive is counted in
            ``num_skipped_queries``, not an error.
    """
    if hasattr(distmat, "detach"):  # torch tensor
        distmat = distmat.detach().cpu().numpy()
    distmat = np.asarray(distmat)
    q_pids = np.asarray(q_pids).ravel()
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D [Q, G], got shape {distmat.shape}")
    if distmat.shape[0] == 0:
        raise ValueError("empty query set: distmat has 0 rows (check the 'query' split)")
    acc = RankAccumulator(g_pids, g_camids, max_rank=max_rank, chunk_mb=chunk_mb)
    acc.process(distmat, q_pids, q_camids)
    return acc.result()
