"""Does the FEP agent learn to erase noise? (OGFR §III-B1 and Fig. 7, measured.)

The paper's claim (§IV-E, Fig. 7) is that the erasing-mask agent learns to erase obstacles, cluttered
background and other pedestrians. We measure the part of it that our labels can check: how well the
agent's **erasing probability** ``1 − m`` (Eq. 6; ``m`` is the retain probability) separates
**background patches** from **body patches** of test images, as a ROC-AUC, where a patch is
background when less than half of its cell is a body part in the image's parsing label map
(§III-A1). AUC 0.5 = the agent ignores where the body is; 1 = every background patch is more likely
erased than every body patch. Images where the parser found no person are left out (their label map
is not a ground truth). The spread of ``m`` (mean, std, 5th/95th percentiles) says whether the agent
does anything at all: an agent that never learned keeps its initial, constant ``m``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def erasing_auc(erase_prob: np.ndarray, background: np.ndarray) -> float:
    """ROC-AUC of ``erase_prob`` as a score for ``background`` (Mann–Whitney U / (n_bg · n_body),
    ties counted half; ``scipy.stats.mannwhitneyu``).

    Args:
        erase_prob: ``[M]`` scores (1 − m) of M patches.
        background: ``[M]`` bool, True for background patches.

    Returns:
        AUC in [0, 1], or NaN when either class is empty.

    >>> erasing_auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([True, True, False, False]))
    1.0
    """
    from scipy.stats import mannwhitneyu

    scores = np.asarray(erase_prob, dtype=np.float64).ravel()
    bg = np.asarray(background, dtype=bool).ravel()
    if scores.shape != bg.shape:
        raise ValueError(f"erase_prob {scores.shape} and background {bg.shape} differ in size")
    pos, neg = scores[bg], scores[~bg]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    u = mannwhitneyu(pos, neg, alternative="two-sided", method="asymptotic").statistic
    return float(u / (len(pos) * len(neg)))


def summarize_retain(retain: np.ndarray, background: np.ndarray) -> dict[str, float]:
    """Diagnostics of retain probabilities ``m`` ``[M]`` against per-patch ``background`` ``[M]`` bool."""
    m = np.asarray(retain, dtype=np.float64).ravel()
    bg = np.asarray(background, dtype=bool).ravel()
    return {
        "auc_background": round(erasing_auc(1 - m, bg), 4),
        "retain_mean": round(float(m.mean()), 4), "retain_std": round(float(m.std()), 4),
        "retain_p05": round(float(np.percentile(m, 5)), 4), "retain_p95": round(float(np.percentile(m, 95)), 4),
        "retain_mean_background": round(float(m[bg].mean()), 4) if bg.any() else float("nan"),
        "retain_mean_body": round(float(m[~bg].mean()), 4) if (~bg).any() else float("nan"),
        "patches": int(m.size), "background_fraction": round(float(bg.mean()), 4),
    }


def retain_gap(retain: np.ndarray, background: np.ndarray) -> dict[str, float]:
    """Per-image gap ``mean m(body) − mean m(background)`` (= erasing probability of background minus
    that of body) over images ``[I, N]`` having both kinds of patch: its mean, the half-width of a
    normal 95 % interval over images (``1.96 · s / √I``) and I. Positive = background erased more.

    >>> retain_gap(np.array([[0.9, 0.5], [0.8, 0.6], [0.7, 0.7]]), np.array([[0, 1], [0, 1], [0, 0]], bool))
    {'retain_gap': 0.3, 'retain_gap_ci95': 0.196, 'retain_gap_images': 2}
    """
    m = np.asarray(retain, dtype=np.float64)
    bg = np.asarray(background, dtype=bool)
    both = bg.any(1) & (~bg).any(1)
    if not both.any():
        return {"retain_gap": float("nan"), "retain_gap_ci95": float("nan"), "retain_gap_images": 0}
    m, bg = m[both], bg[both]
    gaps = (m * ~bg).sum(1) / (~bg).sum(1) - (m * bg).sum(1) / bg.sum(1)  # [I]
    ci = 1.96 * gaps.std(ddof=1) / np.sqrt(len(gaps)) if len(gaps) > 1 else float("nan")
    return {"retain_gap": round(float(gaps.mean()), 4), "retain_gap_ci95": round(float(ci), 4),
            "retain_gap_images": int(len(gaps))}


def fep_diagnostics(model, meta: dict, records, root: Path, z: dict, parse_dir: Path, device,
                    max_images: int = 1000, batch_size: int = 128) -> dict:
    """Retain probabilities of the learned agent on test images vs their parsing label maps.

    Args:
        model: an OGFR model (``erasing_mask`` and ``patch_foreground``).
        meta: checkpoint meta (input size, normalisation, cameras).
        records: index rows (``key``, ``path``, ``camid``) to draw from; the first ``max_images``
            whose parse status is ``ok`` are used (index order: deterministic).
        root: dataset root; z: key → occlusion label ``[4]``; parse_dir: ``data/parsing/<name>``.

    Returns:
        ``{"available": False, "reason"}`` without a learned agent or without a parsing cache
        (logged), else ``{"available": True,
        "images": n, **summarize_retain(...)}``.
    """
    import torch

    from ..data.images import load_rgb
    from ..data.transforms import TestTransform
    from ..parsing import load_label_maps, read_parsing
    from .features import map_unseen_cameras

    if not hasattr(model, "erasing_mask"):
        return {"available": False, "reason": "the model has no erasing_mask()"}
    if not (Path(parse_dir) / "manifest.json").is_file():
        log.warning("FEP diagnostics skipped: no parsing cache at %s (run `dvc repro parse`)", parse_dir)
        return {"available": False, "reason": f"no parsing cache at {parse_dir} (run `dvc repro parse`)"}
    status = read_parsing(parse_dir, columns=["status"]).set_index("key")["status"]
    rows = records[records["key"].astype(str).map(status).eq("ok")].head(max_images)
    if rows.empty:
        return {"available": False, "reason": "no test image with a parsed person"}
    keys = rows["key"].astype(str).tolist()
    label_maps = load_label_maps(parse_dir, keys=keys)
    aug = (meta.get("train") or {}).get("augment") or {}
    tf = TestTransform(meta["height"], meta["width"], aug.get("mean", (0.5,) * 3), aug.get("std", (0.5,) * 3))
    retain, background = [], []
    model.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows.iloc[start: start + batch_size]
        ks = chunk["key"].astype(str).tolist()
        images = torch.stack([tf(load_rgb(root / p)) for p in chunk["path"]]).to(device)  # [b, 3, H, W]
        zz = torch.as_tensor(np.stack([z[k] for k in ks])).long().to(device)  # [b, 4]
        cams = map_unseen_cameras(torch.as_tensor(chunk["camid"].to_numpy().copy()).long(), int(meta["num_cameras"]))
        with torch.inference_mode():
            m = model.erasing_mask(images, zz, cams.to(device))  # [b, Hp, Wp] or None
            if m is None:
                return {"available": False, "reason": f"method '{meta.get('method')}' has no learned FEP agent"}
            lm = torch.as_tensor(np.stack([label_maps[k] for k in ks])).long().to(device)  # [b, h, w]
            fg = model.patch_foreground(lm)  # [b, N] body fraction of each patch's cell
        retain.append(m.flatten(1).float().cpu().numpy())
        background.append((fg < 0.5).cpu().numpy())
    out = summarize_retain(np.concatenate(retain), np.concatenate(background))
    out.update(retain_gap(np.concatenate(retain), np.concatenate(background)))  # issue 23: per-image gap ± 95 %
    log.info("FEP agent on %d test images: background AUC %.3f, retain %.3f ± %.3f",
             len(rows), out["auc_background"], out["retain_mean"], out["retain_std"])
    return {"available": True, "images": int(len(rows)), **out}
