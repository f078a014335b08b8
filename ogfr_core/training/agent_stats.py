"""Per-epoch diagnostics of the FEP agent's learning (issue 23 item 2), logged by the training loop.

* :func:`grad_snr` — signal-to-noise of the agent's gradient over an epoch's steps: for each weight of
  ``G`` (Eq. 6) ``|mean_t g_t| / std_t g_t``, averaged over the weights. A REINFORCE gradient whose
  SNR is ≪ 1 is noise: an adaptive optimiser (AdamW) still moves ``G`` by about one lr per step in a
  random direction, SGD (the paper) barely moves it.
* :func:`mean_ci95` — mean and half-width of a normal 95 % interval of per-step values (the erased
  fraction on background / body tokens): ``1.96 · std / √T``, steps treated as independent batches.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

#: per-step statistics whose epoch mean is logged with a 95 % interval (suffix ``_ci95``)
CI_SUFFIXES = ("/erased_background", "/erased_body")


def grad_snr(grads: torch.Tensor | Sequence[torch.Tensor]) -> float:
    """``mean_p |mean_t g[t, p]| / std_t g[t, p]`` of gradients ``[T, P]`` (T steps, P weights).

    Weights with zero variance over the steps are left out (NaN if none is left or T < 2). The std is
    the sample std (``ddof = 1``).

    >>> grad_snr(torch.tensor([[1.0, 2.0], [3.0, 2.0]]))  # weight 0: |2| / 1.414; weight 1: constant
    1.414213562373095
    """
    g = torch.stack(list(grads)) if not isinstance(grads, torch.Tensor) else grads
    g = g.double().reshape(g.shape[0], -1)
    if g.shape[0] < 2:
        return float("nan")
    sd = g.std(0, unbiased=True)
    ok = sd > 0
    if not bool(ok.any()):
        return float("nan")
    return float((g.mean(0).abs()[ok] / sd[ok]).mean())


def mean_ci95(total: float, total_sq: float, n: int) -> tuple[float, float]:
    """``(mean, 1.96 · s / √n)`` from the sum and the sum of squares of ``n`` values (``s``: sample
    std); the half-width is NaN for ``n < 2``.

    >>> mean_ci95(6.0, 14.0, 3)  # values 1, 2, 3: mean 2, s = 1
    (2.0, 1.1316065276116665)
    """
    mean = total / n
    if n < 2:
        return mean, float("nan")
    var = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    return mean, 1.96 * math.sqrt(var / n)
