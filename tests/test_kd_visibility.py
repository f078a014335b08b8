"""Distillation as written and Eq. (22) per token (issue 23 item 3): Eq. (15) reductions, the teacher's
ID term, the token reading of Eq. (22), per-part mAP and visible-part histograms."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ogfr_core.config import LossConfig, ModelConfig
from ogfr_core.evaluation.features import FeatureSet
from ogfr_core.evaluation.parts import per_part_map, visible_part_histogram
from ogfr_core.losses import id_loss, mse_loss, objective
from ogfr_core.model import build_model, part_visibility

H, W = 64, 32
TINY = ModelConfig(backbone="vit_tiny_patch16_224", depth=2, stride=12, patch_size=16, num_parts=8, drop_path=0.0)


def test_eq15_channel_sum_vs_mean_hand_computed():
    f_hp = torch.zeros(2, 3, 4)  # B = 2, T = 3 tokens, D = 4 channels
    f_op = torch.zeros(2, 3, 4)
    f_op[0, 0] = torch.tensor([1.0, 2.0, 0.0, 0.0])  # squared norm 5
    f_op[1, 2] = torch.tensor([0.0, 0.0, 0.0, 3.0])  # squared norm 9
    assert mse_loss(f_hp, f_op).item() == pytest.approx(14 / 24)  # mean over B·T·D
    assert mse_loss(f_hp, f_op, "channel_sum").item() == pytest.approx(14 / 6)  # Σ_D, mean over B·T
    assert mse_loss(f_hp, f_op, "channel_sum").item() == pytest.approx(4 * mse_loss(f_hp, f_op).item())
    with pytest.raises(ValueError, match="mse_reduction"):
        mse_loss(f_hp, f_op, "sum")


def _out():
    g = torch.Generator().manual_seed(0)
    b = dict(image=torch.randn(4, 3, H, W, generator=g), z=torch.zeros(4, 4, dtype=torch.long),
             camid=torch.arange(4) % 2, label=torch.arange(4) % 3, label_map=torch.randint(0, 9, (4, H, W), generator=g))
    torch.manual_seed(0)
    model = build_model(TINY, 3, 2, (H, W), load_weights=False).train()
    model.on_epoch_start(0)
    return model, b, model(b, torch.Generator().manual_seed(0))


def test_objective_mse_reduction_and_teacher_id_term():
    model, b, out = _out()
    args = (b["label"], LossConfig(), model.grid_size, model.num_prefix, b["label_map"], b["label_map"])
    base = objective(out, *args)
    cs = objective(out, b["label"], LossConfig(mse_reduction="channel_sum"), *args[2:])
    assert cs["mse"].item() == pytest.approx(192 * base["mse"].item(), rel=1e-4)  # D = 192 channels
    assert "id_teacher" not in base
    half = objective(out, b["label"], LossConfig(mse_weight=0.5), *args[2:])
    assert half["total"].item() == pytest.approx(base["total"].item() - 0.5 * base["mse"].item(), rel=1e-5)
    tid = objective(out, b["label"], LossConfig(teacher_id_weight=0.3), *args[2:])
    t = out["teacher"]["logits"]
    expect = sum(id_loss(t[:, i], b["label"], 0.0) for i in range(t.shape[1])) / t.shape[1]
    assert tid["id_teacher"].item() == pytest.approx(expect.item())
    assert tid["total"].item() == pytest.approx(base["total"].item() + 0.3 * expect.item(), rel=1e-5)
    # the teacher's ID term reaches the teacher head (its decoder) and the shared classifier
    model.zero_grad()
    tid["id_teacher"].backward()
    assert model.heads["teacher"].decoder[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert model.classifiers[0].weight.grad.abs().sum() > 0


def test_eq22_token_rule_on_a_tiny_grid():
    # grid 2 x 2, K = 3: tokens won by background, part 1, part 1, part 3 -> parts 1 and 3 visible
    corr = torch.tensor([[[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1],
                          [0.1, 0.5, 0.4, 0.0], [0.2, 0.1, 0.2, 0.5]]])  # [1, N = 4, K+1 = 4]
    assert part_visibility(corr, (2, 2), (8, 8), "token").tolist() == [[True, False, True]]
    # part 2 wins no token, but is second between tokens 1 and 2: upsampled it may win pixels; the pixel
    # rule is never stricter than the token rule
    pix = part_visibility(corr, (2, 2), (8, 8), "pixel")
    assert (pix | part_visibility(corr, (2, 2), (8, 8), "token")).equal(pix)
    with pytest.raises(ValueError, match="pixel or token"):
        part_visibility(corr, (2, 2), (8, 8), "any")


def test_extract_follows_the_visibility_rule():
    model, b, _ = _out()
    model.eval()
    pix = model.extract(b["image"], b["z"], b["camid"])["visibility"]
    model.visibility_rule = "token"
    tok = model.extract(b["image"], b["z"], b["camid"])["visibility"]
    assert (pix | tok).equal(pix)  # every token winner also wins the pixels at its centre


def test_per_part_map_and_histogram():
    # 2 ids; part 1 separates them, part 2 is noise-free but swapped for the query of id 1
    e = np.eye(4, dtype=np.float32)
    gal_parts = np.stack([np.stack([e[0], e[2]]), np.stack([e[1], e[3]])])  # [2, K=2, D=4]
    q_parts = np.stack([np.stack([e[0], e[2]]), np.stack([e[1], e[2]])])
    vis = np.ones((2, 2), bool)
    g = FeatureSet(e[:2], gal_parts, vis, [0, 1], [1, 1], ["g0", "g1"])
    q = FeatureSet(e[:2], q_parts, vis, [0, 1], [0, 0], ["q0", "q1"])
    res = per_part_map(q, g)
    assert [r["part"] for r in res] == [1, 2]
    assert res[0]["mAP"] == pytest.approx(1.0)
    assert res[1]["mAP"] == pytest.approx(0.75)  # query 1: its match ranks 2nd of 2 -> AP 0.5
    assert visible_part_histogram(np.array([[1, 0], [1, 1], [0, 0], [1, 1]], bool)) == [1, 1, 2]
