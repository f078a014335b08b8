"""Fixed-mask reward probe (issue 23 item 1): mask bookkeeping and the probe's numbers on a tiny model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ogfr_core.config import ModelConfig
from ogfr_core.evaluation.fep_probe import MASKS, fixed_mask_probabilities, fixed_masks, summarize_probe
from ogfr_core.model import build_model

H, W = 64, 32
TINY = ModelConfig(backbone="vit_tiny_patch16_224", depth=2, stride=12, patch_size=16, num_parts=8)


def test_fixed_masks_erase_background_body_and_as_many_random_tokens():
    fg = torch.tensor([[0.0, 0.2, 0.6, 1.0, 0.4, 0.9],
                       [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]])  # background (<0.5): 3 tokens, then 1 token
    masks = fixed_masks(fg, torch.Generator().manual_seed(0))
    assert masks["background"].tolist() == [[0, 0, 1, 1, 0, 1], [1, 1, 1, 0, 1, 1]]
    assert masks["body"].tolist() == [[1, 1, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]]
    assert (1 - masks["random"]).sum(1).tolist() == [3.0, 1.0]  # as many erased tokens as background
    assert masks["none"].sum().item() == 12 and masks["all"].sum().item() == 0


def _model():
    torch.manual_seed(0)
    return build_model(TINY, num_classes=3, num_cameras=2, img_size=(H, W), load_weights=False).eval()


def test_probe_erasing_nothing_gives_p_b_and_zero_reward():
    model = _model()
    g = torch.Generator().manual_seed(1)
    images, z = torch.randn(6, 3, H, W, generator=g), torch.randint(0, 2, (6, 4), generator=g)
    labels, lm = torch.arange(6) % 3, torch.randint(0, 9, (6, H, W), generator=g)
    with torch.no_grad():
        enc = model.encoder(images, z, torch.arange(6) % 2)
    out = fixed_mask_probabilities(model, enc, labels, model.patch_foreground(lm), "teacher", g)
    assert torch.equal(out["none"], out["p_b"])  # keep-all mask == no mask, bit for bit
    assert out["erased_none"].eq(0).all() and out["erased_all"].eq(1).all()
    assert torch.allclose(out["erased_random"], out["erased_background"])
    assert not torch.allclose(out["all"], out["p_b"])  # erasing changes the prediction
    assert out["change_none"].eq(0).all() and (out["change_all"] > 0).all()  # ‖g^m − g^b‖ / ‖g^b‖
    # the probe's p^b is the training reward's p^b after a refresh (same live decoder, same batch BN)
    model.refresh_reward_baseline()
    model.train()
    tr = model.head("teacher", enc, labels)
    assert torch.allclose(tr["p_b"], out["p_b"], atol=1e-6)
    summary = summarize_probe(out["p_b"].numpy(), {m: out[m].numpy() for m in MASKS},
                              {m: out[f"erased_{m}"].numpy() for m in MASKS},
                              {m: out[f"change_{m}"].numpy() for m in MASKS})
    assert summary["masks"]["none"]["feature_change"] == {"mean": 0.0, "se": 0.0}
    assert summary["masks"]["all"]["feature_change"]["mean"] == pytest.approx(out["change_all"].mean().item(), rel=1e-6)
    none = summary["masks"]["none"]
    assert none["reward_eq8"]["mean"] == 0.0 and none["reward_eq8"]["se"] == 0.0
    assert none["reward_log_ratio"]["mean"] == 0.0 and none["erased_fraction"] == 0.0
    assert summary["images"] == 6 and "reward_eq8_minus_random" not in summary["masks"]["random"]


def test_summarize_probe_hand_computed():
    p_b = np.array([0.5, 0.2])
    s = summarize_probe(p_b, {"random": np.array([0.25, 0.2]), "background": np.array([0.75, 0.6])},
                        {"random": np.array([0.5, 0.5]), "background": np.array([0.5, 0.5])},
                        {"background": np.array([0.1, 0.3])})
    assert s["masks"]["background"]["feature_change"]["mean"] == pytest.approx(0.2)
    assert s["masks"]["background"]["feature_change"]["se"] == pytest.approx(0.1)  # std 0.1414 / sqrt 2
    assert "feature_change" not in s["masks"]["random"]
    # Eq. 8: (0.25-0.5)/0.5 = -0.5, 0; (0.75-0.5)/0.5 = 0.5, (0.6-0.2)/0.8 = 0.5
    assert s["masks"]["random"]["reward_eq8"]["mean"] == pytest.approx(-0.25)
    assert s["masks"]["random"]["reward_eq8"]["se"] == pytest.approx(0.25)  # std(ddof=1) 0.3536 / sqrt 2
    assert s["masks"]["background"]["reward_eq8"]["mean"] == pytest.approx(0.5)
    assert s["masks"]["background"]["reward_eq8_minus_random"]["mean"] == pytest.approx(0.75)
    assert s["masks"]["background"]["reward_log_ratio"]["mean"] == pytest.approx(
        (np.log(1.5) + np.log(3.0)) / 2)


def test_probe_script_on_synthetic_records(tmp_path):
    """benchmarks.probe_fep_reward.probe_records on image files: bookkeeping through the loader path."""
    from benchmarks.probe_fep_reward import probe_records

    model = _model()
    rng = np.random.default_rng(0)
    rows, z, lms = [], {}, {}
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(p)
        k = f"k{i}"
        rows.append({"key": k, "path": p.name, "camid": i % 2, "label": i % 3})
        z[k] = np.zeros(4, np.int64)
        lms[k] = rng.integers(0, 9, (H, W)).astype(np.uint8)
    meta = {"height": H, "width": W, "num_cameras": 2, "train": {}}
    res = probe_records(model, pd.DataFrame(rows), tmp_path, z, lms, meta, "teacher", 4, 0, "cpu")
    assert res["images"] == 4  # the last batch of 1 is skipped (BNNeck batch statistics need 2)
    assert res["masks"]["none"]["reward_eq8"]["mean"] == 0.0
    assert res["masks"]["all"]["erased_fraction"] == 1.0
