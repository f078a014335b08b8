"""PKSampler invariants (TransReID RandomIdentitySampler semantics, exact coverage)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ogfr_core.data import PKSampler

# 10 identities with 1..10 images each (ids 0,1,2 have < K = 4 images)
LABELS = [pid for pid in range(10) for _ in range(pid + 1)]


def _batches(sampler: PKSampler) -> list[list[int]]:
    idx = list(sampler)
    n = sampler.p * sampler.k
    assert len(idx) == len(sampler) and len(idx) % n == 0 and len(idx) > 0
    return [idx[i:i + n] for i in range(0, len(idx), n)]


@pytest.mark.parametrize("p,k,seed", [(3, 4, 0), (4, 2, 1), (10, 3, 2), (2, 1, 3)])
def test_batches_are_p_ids_times_k(p, k, seed):
    labels = np.asarray(LABELS)
    s = PKSampler(LABELS, p=p, k=k, seed=seed)
    for epoch in range(3):
        s.set_epoch(epoch)
        covered = set()
        for b in _batches(s):
            c = Counter(labels[b].tolist())
            assert len(c) == p and set(c.values()) == {k}  # P distinct ids x K images each
            covered |= set(c)
        assert covered == set(range(10))  # every identity in every epoch


def test_few_images_sampled_with_replacement_and_no_remainder_dupes():
    labels = np.asarray(LABELS)
    s = PKSampler(LABELS, p=3, k=4, seed=0)
    for b in _batches(s):
        for pid in set(labels[b].tolist()):
            members = [i for i in b if labels[i] == pid]
            own = set(np.flatnonzero(labels == pid).tolist())
            assert len(members) == 4 and set(members) <= own
            if pid + 1 >= 4:  # enough images: a chunk has K distinct indices
                assert len(set(members)) == 4
    only_one = int(np.flatnonzero(labels == 0)[0])  # id 0 has a single image: drawn K times
    assert Counter(list(s))[only_one] % 4 == 0 and only_one in list(s)


def test_deterministic_per_seed_and_epoch():
    a, b = PKSampler(LABELS, 3, 4, seed=7), PKSampler(LABELS, 3, 4, seed=7)
    assert list(a) == list(b)
    c = PKSampler(LABELS, 3, 4, seed=8)
    assert list(a) != list(c)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first


def test_too_few_identities():
    with pytest.raises(ValueError, match="only 10 identities but P = 16"):
        PKSampler(LABELS, p=16, k=4)
    with pytest.raises(ValueError, match="p and k must be >= 1"):
        PKSampler(LABELS, p=0, k=4)
