"""FEP diagnostics: the ROC-AUC of the erasing probability against background patches."""
from __future__ import annotations

import numpy as np
import pytest

from ogfr_core.evaluation.fep_diagnostics import erasing_auc, summarize_retain


def test_auc_hand_computed():
    # 2 background patches (erase 0.9, 0.4), 3 body patches (erase 0.1, 0.4, 0.5):
    # pairs (bg > body): 0.9 beats all 3; 0.4 beats 0.1, ties 0.4 (1/2), loses to 0.5 -> 3 + 1.5 = 4.5 of 6
    auc = erasing_auc(np.array([0.9, 0.4, 0.1, 0.4, 0.5]), np.array([1, 1, 0, 0, 0], bool))
    assert auc == pytest.approx(4.5 / 6)
    assert np.isnan(erasing_auc(np.array([0.2, 0.3]), np.array([True, True])))


def test_hand_made_mask_separates_background():
    """A 4×2 patch grid whose agent retains the body column and erases the background column: AUC 1;
    the same mask scored against the swapped labels: AUC 0; a constant mask (an agent that never
    learned, m = sigmoid(2) everywhere): AUC 0.5 and zero spread."""
    background = np.array([[1, 0]] * 4, bool).ravel()  # left column background, right column body
    retain = np.where(background, 0.2, 0.9)
    out = summarize_retain(retain, background)
    assert out["auc_background"] == 1.0 and out["retain_mean_background"] == pytest.approx(0.2)
    assert out["retain_mean_body"] == pytest.approx(0.9) and out["background_fraction"] == 0.5
    assert summarize_retain(retain, ~background)["auc_background"] == 0.0
    const = summarize_retain(np.full(8, 0.8808), background)
    assert const["auc_background"] == 0.5 and const["retain_std"] == 0.0


def test_retain_gap_per_image_hand_computed():
    from ogfr_core.evaluation.fep_diagnostics import retain_gap

    m = np.array([[0.9, 0.5, 0.5], [0.8, 0.6, 0.7], [0.7, 0.7, 0.7]])
    bg = np.array([[0, 1, 1], [0, 1, 1], [1, 1, 1]], bool)  # image 3 has no body patch: left out
    out = retain_gap(m, bg)
    # gaps: 0.9 − 0.5 = 0.4, 0.8 − 0.65 = 0.15; mean 0.275, s = 0.1768, ci = 1.96 · s / √2
    assert out["retain_gap"] == pytest.approx(0.275) and out["retain_gap_images"] == 2
    assert out["retain_gap_ci95"] == pytest.approx(round(1.96 * 0.25 / np.sqrt(2) / np.sqrt(2), 4), abs=1e-4)
