"""What can the Eq. (8) reward teach? The fixed-mask reward probe (issue 23, item 1).

The FEP agent (Eq. 6–9) is trained by REINFORCE on ``r = (p^m − p^b) / (1 − p^b)`` (Eq. 8), where
``p^m`` is the true-class probability of the purified global feature with the erasing mask and
``p^b`` the same without a mask. Before tuning the agent we measure, on a trained network, the mean
reward of **fixed** masks instead of sampled ones:

* ``none`` — erase nothing (``p^m = p^b``, reward 0: the bookkeeping check);
* ``background`` — erase the tokens whose cell is less than half body in the parsing label map
  (the paper's Fig. 7 behaviour, the same rule as Table V's "background" mask);
* ``random`` — erase as many tokens as ``background`` does, per image, chosen uniformly;
* ``body`` — erase the other tokens (the body ones);
* ``all`` — erase every token.

If ``background`` earns no more reward than ``random`` (or than ``none``), an agent trained on this
reward cannot learn Fig. 7's behaviour. Both p's are computed as in training
(:meth:`ogfr_core.model.OGFR._reinforce`): the live decoder in eval mode (no DropPath), [cls] output
only, the branch's global BNNeck with the batch's statistics, the shared global classifier. ``p^b``
here is the live network without a mask (not the frozen copy of training, which is a stale live
network). Rewards are reported per mask as mean ± standard error over images, and paired with
``random`` (mean of the per-image difference ± its standard error). Each mask's relative change of the
purified global feature, ``‖g^m − g^b‖ / ‖g^b‖``, says whether the erased patches can move what the
classifier reads at all: a feature that barely moves when *every* patch is erased leaves no mask a
reward to earn. (Our reading of why it barely moves, not measured by this probe: in the customised
decoder the global and part tokens skip the first layer's attention, MHSA_fix Eq. 13, while the erased
patches attend to them there and can take their content back.)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

MASKS = ("none", "background", "random", "body", "all")


def fixed_masks(patch_foreground: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Keep masks (1 = keep the token, 0 = erase) of the probe, per image.

    Args:
        patch_foreground: ``[B, N]`` body fraction of each token's cell (``OGFR.patch_foreground``);
            a token is background when its fraction is < 0.5.
        generator: CPU generator for the ``random`` mask.

    Returns:
        ``{mask name: [B, N] float keep mask}`` for :data:`MASKS`; ``random`` erases exactly as many
        tokens as ``background`` in each image.
    """
    bg = patch_foreground < 0.5  # [B, N]
    n_bg = bg.sum(1, keepdim=True)  # [B, 1]
    scores = torch.rand(bg.shape, generator=generator, device="cpu").to(bg.device)  # [B, N]
    rank = scores.argsort(1).argsort(1)  # [B, N] a random permutation's positions
    rand_erase = rank < n_bg
    ones = torch.ones_like(patch_foreground)
    return {"none": ones, "background": (~bg).float(), "random": (~rand_erase).float(),
            "body": bg.float(), "all": torch.zeros_like(patch_foreground)}


@torch.no_grad()
def fixed_mask_probabilities(model, enc: torch.Tensor, labels: torch.Tensor, patch_foreground: torch.Tensor,
                             branch: str = "teacher", generator: torch.Generator | None = None
                             ) -> dict[str, torch.Tensor]:
    """True-class probabilities of the purified global feature under each fixed mask (Eq. 8's p^m).

    Args:
        model: an OGFR model whose ``branch`` head is an FEP module with a mask token
            (``mask_method`` learned / random / background).
        enc: encoder tokens ``[B, L, D]`` of that branch (``model.encoder(images, z, camids)``).
        labels: ``[B]`` training labels (classifier indices).
        patch_foreground: ``[B, N]`` body fraction per token.
        branch: ``teacher`` (the paper's agent) or ``student``.

    Returns:
        ``{"p_b": [B], "<mask>": [B] p^m for each of MASKS, "erased_<mask>": [B] erased fraction,
        "change_<mask>": [B] ‖g^m − g^b‖ / ‖g^b‖}``: the relative L2 change of the purified global
        feature (the decoder's [cls] output, before the BNNeck) that the mask causes — how much the
        erased patches can move what the classifier reads at all.

    Raises:
        ValueError: the branch has no FEP module with a mask token.
    """
    from ..model.fep import FEPModule
    from ..model.neck import bn_batch_stats

    heads = getattr(model, "heads", {})
    head = heads[branch] if branch in heads else None
    if not isinstance(head, FEPModule) or head.mask_token is None:
        raise ValueError(f"branch {branch!r} has no FEP module with an erasing embedding; probe a model with "
                         f"train.model.fep_{branch}: true and mask_method other than 'none'")
    neck, fc = model.necks[branch][0], model.classifiers[0]
    was = head.training
    head.eval()
    try:
        idx = labels.long()[:, None]

        def prob(keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            g = head.decode(enc, keep, num_queries=1)[:, 0]  # [B, D]
            return g, fc(bn_batch_stats(neck, g)).float().softmax(-1).gather(1, idx)[:, 0]  # [B, D], [B]

        g_b, p_b = prob(None)
        out = {"p_b": p_b}
        for name, keep in fixed_masks(patch_foreground, generator).items():
            g_m, out[name] = prob(keep)
            out[f"erased_{name}"] = 1 - keep.float().mean(1)
            out[f"change_{name}"] = ((g_m - g_b).float().norm(dim=-1) / g_b.float().norm(dim=-1).clamp_min(1e-12))
    finally:
        head.train(was)
    return out


def _mean_se(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return {"mean": float(x.mean()), "se": se}


def summarize_probe(p_b: np.ndarray, p_m: dict[str, np.ndarray], erased: dict[str, np.ndarray],
                    change: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Per-mask mean ± standard error of p^m, of the Eq. (8) reward (unclipped) and of the log-ratio
    reward ``log p^m − log p^b``; and each mask's reward minus the ``random`` mask's, paired per image.

    Args:
        p_b: ``[M]`` p^b of M images; p_m: ``{mask: [M]}``; erased: ``{mask: [M]}`` erased fractions;
        change: ``{mask: [M]}`` relative change of the purified global feature (optional; entry
        ``feature_change``).
    """
    from ..model.ogfr import reinforce_reward

    pb = torch.as_tensor(np.asarray(p_b, dtype=np.float64))
    rewards = {k: reinforce_reward(torch.as_tensor(np.asarray(v, dtype=np.float64)), pb).numpy()
               for k, v in p_m.items()}
    out: dict[str, Any] = {"images": int(len(pb)), "p_b": _mean_se(pb.numpy()), "masks": {}}
    for k, v in p_m.items():
        v = np.asarray(v, dtype=np.float64)
        entry = {"p_m": _mean_se(v), "reward_eq8": _mean_se(rewards[k]),
                 "reward_log_ratio": _mean_se(np.log(np.clip(v, 1e-12, None)) - np.log(np.clip(pb.numpy(), 1e-12, None))),
                 "erased_fraction": float(np.mean(erased[k]))}
        if change is not None and k in change:
            entry["feature_change"] = _mean_se(change[k])
        if "random" in rewards and k != "random":
            entry["reward_eq8_minus_random"] = _mean_se(rewards[k] - rewards["random"])
        out["masks"][k] = entry
    return out
