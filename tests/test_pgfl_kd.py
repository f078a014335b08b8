"""PGFL-KD (method ``pgfl_kd``): label-map heatmaps (Eq. 1), the losses (Eq. 4, 5, 10) against
hand-computed values, shapes, the MB-only inference feature, gradients, and a few real steps."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from _real_batch import H, W, body_layout, real_batch
from ogfr_core.config import LossConfig, ModelConfig, PGFLKDConfig, TrainConfig
from ogfr_core.losses import id_loss, triplet_loss
from ogfr_core.losses.pgfl_kd import consistent_loss, multi_part_contrastive_loss, pgfl_kd_objective, reid_loss
from ogfr_core.model import build_model
from ogfr_core.model.pgfl_kd import foreground_enhanced, positive_sets

TINY = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, stride=16, patch_size=16, drop_path=0.0,
                   method="pgfl_kd")
HYBRID = {"patch_embed": "hybrid", "stem_stride": 16, "stem_frozen_blocks": 4}


def _batch(b: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return dict(image=torch.randn(b, 3, H, W, generator=g), z=torch.zeros(b, 4, dtype=torch.long),
                camid=torch.arange(b) % 2, label=torch.arange(b) // 2, label_map=body_layout(b))


def test_label_maps_stand_in_for_keypoint_heatmaps():
    """Eq. (1)'s H_k from a label map: each part's share of every token's cell, normalised over the
    tokens; an absent part is uniform (the spatial softmax of a flat heatmap)."""
    model = build_model(TINY, 2, 2, (H, W))  # 16x16 patches, stride 16: a 4x2 token grid
    lab = torch.zeros(1, H, W, dtype=torch.long)
    lab[0, 0:16, 0:16] = 1  # head fills token (0, 0)
    lab[0, 16:24, 0:32] = 2  # left arm: half of tokens (1, 0) and (1, 1)
    lab[0, 48:64, 16:32] = 8  # right foot: 3/4 of the pixels in token (3, 1)...
    lab[0, 60:64, 0:16] = 8  # ...and 1/4 in token (3, 0)
    heat = model.part_heatmaps(lab)
    assert heat.shape == (1, 8, 8) and torch.allclose(heat.sum(-1), torch.ones(1, 8))
    assert heat[0, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert heat[0, 1].tolist() == [0, 0, 0.5, 0.5, 0, 0, 0, 0]
    assert heat[0, 7].tolist() == pytest.approx([0, 0, 0, 0, 0, 0, 0.2, 0.8])  # 64 vs 256 pixels
    for absent in (2, 3, 4, 5, 6):
        assert heat[0, absent].tolist() == [0.125] * 8


def test_positive_sets_pair_left_and_right():
    pos = positive_sets()
    assert pos.shape == (8, 8) and torch.equal(pos, pos.t()) and pos.diagonal().all()
    pairs = {(i, j) for i, j in pos.nonzero().tolist() if i < j}
    assert pairs == {(1, 2), (4, 5), (6, 7)}  # arms, legs, feet; head (0) and torso (3) alone


def test_consistent_loss_eq4_and_its_gradient():
    f_g = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    f_e = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    loss = consistent_loss(f_g, f_e)
    assert float(loss.detach()) == pytest.approx((5 + 2) / 2)
    loss.backward()
    assert f_g.grad.tolist() == [[1.0, 2.0], [-1.0, -1.0]]  # 2 (f_G − f_E) / B
    assert f_e.grad is None  # the FEB is the detached teacher
    # as written, with f_E = f_F + f_G the value is ‖f_F‖² whatever f_G is
    f_f = torch.tensor([[3.0, 4.0]])
    for g in (torch.zeros(1, 2), torch.tensor([[10.0, -7.0]])):
        assert float(consistent_loss(g, g + f_f)) == pytest.approx(25.0)


def test_consistent_loss_normalized_form():
    """The normalised reading of Eq. (4): ‖n(f_G) − sg(n(f_E))‖² = 2 − 2 cos, scale-free, and (unlike the
    literal form) it depends on f_G, so it can be lowered."""
    f_g = torch.tensor([[3.0, 4.0]], requires_grad=True)
    f_e = torch.tensor([[4.0, 3.0]], requires_grad=True)
    loss = consistent_loss(f_g, f_e, "normalized")
    assert float(loss.detach()) == pytest.approx(0.08)  # [0.6, 0.8] − [0.8, 0.6] = [−0.2, 0.2]; 2 − 2·24/25
    assert float(consistent_loss(10 * f_g, 0.1 * f_e, "normalized").detach()) == pytest.approx(0.08)
    assert float(consistent_loss(f_g, f_e, "literal").detach()) == pytest.approx(2.0)  # the raw scale
    loss.backward()
    assert f_e.grad is None
    # d/dg ‖g/|g| − e'‖² = 2 (I − n nᵀ)(n − e') / |g|, n = [0.6, 0.8], e' = [0.8, 0.6]: orthogonal to g
    n, e = torch.tensor([0.6, 0.8]), torch.tensor([0.8, 0.6])
    expect = 2 * (torch.eye(2) - torch.outer(n, n)) @ (n - e) / 5.0
    assert torch.allclose(f_g.grad[0], expect, atol=1e-6) and abs(float(f_g.grad[0] @ n)) < 1e-6
    f_f = torch.tensor([[3.0, 4.0]])  # f_E = f_F + f_G: now f_G matters
    values = [float(consistent_loss(g, g + f_f, "normalized")) for g in (torch.tensor([[1.0, 0.0]]),
                                                                          torch.tensor([[30.0, 40.0]]))]
    assert values[0] > 0.3 and values[1] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="cl_form"):
        consistent_loss(f_g, f_e, "cosine")


def test_foreground_enhanced_branch_eq1_to_eq3_by_hand():
    """Eq. (1)–(3) on N = 2 tokens, D = 2, K = 2 parts."""
    fmap = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # F_1, F_2
    heat = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])  # part 1 on token 1, part 2 spread
    f_g = torch.tensor([[2.0, 3.0]])
    f_l, att, f_f, f_e = foreground_enhanced(fmap, heat, f_g)
    assert f_l.tolist() == [[[1.0, 0.0], [0.5, 0.5]]]  # Eq. (1)
    # f_L = [0.75, 0.25]; F_n · f_L / √2 = [0.75, 0.25] / √2
    a1 = 1 / (1 + math.exp(-0.5 / math.sqrt(2)))
    assert att[0].tolist() == pytest.approx([a1, 1 - a1])  # Eq. (2)
    assert f_f[0].tolist() == pytest.approx([a1, 1 - a1])  # f_F = Σ a_n F_n
    assert f_e[0].tolist() == pytest.approx([2 + a1, 4 - a1])  # Eq. (3): f_E = f_F + f_G


def test_multi_part_contrastive_loss_eq5():
    f_g = torch.tensor([[1.0, 0.0, 0.0, 1.0]], requires_grad=True)  # groups g1 = [1, 0], g2 = [0, 1]
    f_p = torch.tensor([[2.0, 0.0, 0.0, 3.0]], requires_grad=True)  # parts p1 = [2, 0], p2 = [0, 3]
    eye = torch.eye(2, dtype=torch.bool)
    loss = multi_part_contrastive_loss(f_g, f_p, eye)
    # s = [[p1·g1, p1·g2], [p2·g1, p2·g2]] = [[2, 0], [0, 3]]
    assert float(loss.detach()) == pytest.approx(math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-3)))
    loss.backward()
    assert f_p.grad is None and f_g.grad is not None  # parts are the teacher
    both = torch.ones(2, 2, dtype=torch.bool)  # every group positive: nothing to contrast
    assert float(multi_part_contrastive_loss(f_g, f_p, both).detach()) == pytest.approx(0.0, abs=1e-6)
    # a mirror pair: part 1's positives are groups 1 and 2
    mirror = torch.tensor([[True, True], [False, True]])
    assert float(multi_part_contrastive_loss(f_g, f_p, mirror).detach()) == pytest.approx(math.log(1 + math.exp(-3)))


def test_objective_eq10_is_the_weighted_sum():
    torch.manual_seed(0)
    b, d, c = 4, 16, 3
    labels = torch.tensor([0, 0, 1, 1])
    feats = {k: torch.randn(b, d) for k in ("g", "e", "v", "p")}
    logits = {k: torch.randn(b, c) for k in ("g", "e", "v")}
    terms = pgfl_kd_objective({"feats": feats, "logits": logits}, labels, positive_sets(), 0.25, 0.5, margin=0.3)
    for k in ("g", "e", "v"):
        expect = id_loss(logits[k], labels) + triplet_loss(feats[k], labels, 0.3)
        assert float(terms[f"reid_{k}"]) == pytest.approx(float(expect))
        assert float(reid_loss(feats[k], logits[k], labels)) == pytest.approx(float(expect))
    total = (terms["reid_g"] + terms["reid_e"] + terms["reid_v"] + 0.25 * consistent_loss(feats["g"], feats["e"])
             + 0.5 * multi_part_contrastive_loss(feats["g"], feats["p"], positive_sets()))
    assert float(terms["total"]) == pytest.approx(float(total))


def test_shapes_and_main_branch_inference():
    model = build_model(TINY, 2, 2, (H, W)).train()
    d = model.encoder.embed_dim
    b = _batch()
    out = model(b)
    assert all(out["feats"][k].shape == (4, d) for k in ("g", "e", "v", "p"))
    assert all(out["logits"][k].shape == (4, 2) for k in ("g", "e", "v"))
    assert out["heatmaps"].shape == (4, 8, 8) and torch.allclose(out["attention"].sum(1), torch.ones(4))
    assert torch.allclose(out["feats"]["v"], out["feats"]["g"] + out["feats"]["p"])  # Eq. (6)
    assert bool((out["feats"]["p"] >= 0).all())  # ReLU(BN(W f_l))
    feats = model.extract(b["image"], b["z"], b["camid"])
    assert feats["global"].shape == (4, d) and feats["parts"].shape == (4, 0, d) and feats["visibility"].shape == (4, 0)
    model.eval()
    with torch.no_grad():  # MB only: the global feature after its BNNeck, no label map needed
        expect = model.necks["g"](model(b)["feats"]["g"])
    assert torch.allclose(feats["global"], expect, atol=1e-6)


@pytest.mark.parametrize("overrides", [{}, HYBRID])
def test_every_trainable_parameter_gets_a_gradient(overrides):
    model = build_model(dataclasses.replace(TINY, **overrides), 2, 2, (H, W)).train()
    b = _batch()
    out = model(b)
    model.loss(out, b, LossConfig())["total"].backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def _steps(shared_root, tmp_path, pcfg: PGFLKDConfig, steps: int = 12) -> list[dict[str, float]]:
    from ogfr_core.training import Trainer

    cfg = TrainConfig(epochs=1, warmup_epochs=0, lr=0.01, log_every=0,
                      model=dataclasses.replace(TINY, depth=2, stride=12, pgfl_kd=pcfg))
    torch.manual_seed(0)
    trainer = Trainer(build_model(cfg.model, 4, 2, (H, W)), cfg, tmp_path, {"model": {}}, occlusion=5.0,
                      steps_per_epoch=steps)
    batch = real_batch(shared_root)
    return [trainer.train_step(batch) for _ in range(steps)]


def test_a_few_steps_on_a_real_batch_lower_the_loss(shared_root, tmp_path):
    """With the paper's λ's the ReID terms fall (L_CL's literal value ‖f_F‖² is not what its gradient
    lowers, see :func:`consistent_loss`); without L_CL (Table 6 row 5) or with its normalised reading the
    whole Eq. (10) falls."""
    first, last = (lambda h, k: np.mean([x[k] for x in h[:3]])), (lambda h, k: np.mean([x[k] for x in h[-3:]]))
    hist = _steps(shared_root, tmp_path / "paper", PGFLKDConfig())
    reid = lambda h, pick: sum(pick(h, f"loss/reid_{k}") for k in "gev")  # noqa: E731
    assert reid(hist, last) < reid(hist, first), [x["loss/total"] for x in hist]
    hist = _steps(shared_root, tmp_path / "no_cl", PGFLKDConfig(lambda_cl=0.0))
    assert last(hist, "loss/total") < 0.7 * first(hist, "loss/total"), [x["loss/total"] for x in hist]
    assert last(hist, "loss/mcl") < first(hist, "loss/mcl")
    hist = _steps(shared_root, tmp_path / "normalized", PGFLKDConfig(cl_form="normalized"))
    assert all(0.0 <= x["loss/cl"] <= 4.0 for x in hist)  # 2 − 2 cos: bounded, unlike ‖f_F‖²
    assert last(hist, "loss/total") < 0.7 * first(hist, "loss/total"), [x["loss/total"] for x in hist]
