"""PK sampler: batches of P identities x K images (OGFR §IV-B: P = 16, K = 4, batch 64).

Semantics of TransReID's / torchreid's ``RandomIdentitySampler`` (Hermans et al. 2017 "In Defense of
the Triplet Loss"), with two differences that make it exact:

1. Per epoch, each identity's image indices are shuffled and cut into chunks of K (an identity with
   fewer than K images gets one chunk drawn *with replacement*; the remainder ``n mod K`` of an
   identity with more images is left out of this epoch, as in TransReID). Batches are built by
   repeatedly drawing P distinct identities among those with chunks left and taking one chunk of
   each. TransReID stops when fewer than P identities have chunks left, which can leave an identity
   out of the epoch; here the last batch takes those remaining identities plus randomly chosen
   other identities (a fresh chunk each), so **every identity appears in every epoch** and every
   batch still has P distinct identities.
2. The index list of an epoch is a pure function of ``(seed, epoch)`` (NumPy ``default_rng``), so
   ``__len__`` is exact and runs are reproducible without touching global RNGs. Call
   :meth:`PKSampler.set_epoch` before each epoch to reshuffle (as ``DistributedSampler``).

Example::

    >>> s = PKSampler([0, 0, 1, 1, 1, 2], p=2, k=2, seed=0)
    >>> idx = list(s); len(idx) == len(s) and len(idx) % 4 == 0
    True
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from ..config import ConfigError

__all__ = ["PKSampler"]


class PKSampler(Sampler[int]):
    """Flat dataset indices; each consecutive block of ``p * k`` is one batch of P ids x K images.

    Args:
        labels: identity label of every dataset item (``len(labels)`` = dataset size), any ints.
        p: identities per batch (P).
        k: images per identity (K).
        seed: base seed; the order of epoch ``e`` depends only on ``(seed, e)``.

    Raises:
        ValueError: ``p < 1``, ``k < 1`` or empty labels.
        ConfigError: fewer than P distinct identities (a ``ValueError`` too; names
            ``train.ids_per_batch`` and ``data.max_train_ids``: the params do not fit the data).
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0):
        if p < 1 or k < 1:
            raise ValueError(f"PKSampler: p and k must be >= 1 (got p={p}, k={k})")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError("PKSampler: labels must be a non-empty 1-D sequence of identity labels")
        ids, inverse = np.unique(labels, return_inverse=True)
        if len(ids) < p:
            raise ConfigError(f"PKSampler: only {len(ids)} identities but P = {p} per batch; lower "
                             f"train.ids_per_batch or use more training identities (data.max_train_ids)")
        self.p, self.k, self.seed = p, k, seed
        self.epoch = 0
        # indices of each identity, in dataset order
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))[:-1]
        self._groups: list[np.ndarray] = np.split(order, bounds)
        self._cache: tuple[int, list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of epoch ``epoch`` (call before iterating each epoch)."""
        self.epoch = int(epoch)

    def _chunk(self, rng: np.random.Generator, group: np.ndarray) -> list[np.ndarray]:
        """Shuffle one identity's indices and cut them into K-chunks (one with replacement if < K)."""
        if len(group) < self.k:
            return [rng.choice(group, size=self.k, replace=True)]
        perm = rng.permutation(group)
        n = len(perm) // self.k
        return [perm[i * self.k:(i + 1) * self.k] for i in range(n)]

    def _epoch_indices(self) -> list[int]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = [self._chunk(rng, g) for g in self._groups]  # per identity, list of [K]
        available = [i for i, c in enumerate(chunks) if c]
        out: list[np.ndarray] = []
        while len(available) >= self.p:
            picked = rng.choice(len(available), size=self.p, replace=False)
            chosen = [available[j] for j in picked]
            for ident in chosen:
                out.append(chunks[ident].pop())
            available = [i for i in available if chunks[i]]
        if available:  # < P identities left: complete the batch with other identities (coverage)
            others = np.setdiff1d(np.arange(len(self._groups)), available)
            extra = rng.choice(others, size=self.p - len(available), replace=False)
            for ident in available:
                out.append(chunks[ident].pop())
            for ident in extra:
                out.append(self._chunk(rng, self._groups[ident])[0])
        flat = np.concatenate(out).tolist() if out else []
        self._cache = (self.epoch, flat)
        return flat

    def __iter__(self) -> Iterator[int]:
        return iter(self._epoch_indices())

    def __len__(self) -> int:
        """Number of indices in the current epoch (a multiple of ``p * k``)."""
        return len(self._epoch_indices())
