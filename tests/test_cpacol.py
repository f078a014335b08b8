"""CpaCol (method ``cpacol``): the contrastive losses (Eq. 3-6), the base and verification losses
(Eq. 10-12) against hand-computed values, the ContrastAttn layer, the dense correlation (Eq. 9) and
the center-pivot 4D convolution on tiny hand-made cases, the position prior, the two training phases
(what is frozen, gradient reach), and the test-time top-k fusion."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ogfr_core.config import CpaColEvalConfig, EvaluateConfig, LossConfig, ModelConfig, TrainConfig
from ogfr_core.losses.cpacol import (SIM_MAX, SIM_MIN, inter_contrastive_loss, intra_contrastive_loss,
                                     negative_contrast, part_base_loss, positive_contrast, stage1_objective,
                                     verification_loss)
from ogfr_core.model import ModelConfigError, build_model
from ogfr_core.model.cpacol import (CenterPivotConv4d, ContrastAttn, CorrelationLearner, dense_correlation,
                                    stripe_pool, stripe_prior)

H, W = 128, 64
TINY = ModelConfig(method="cpacol", backbone="vit_tiny_patch16_224", depth=4, stride=16, patch_embed="conv",
                   drop_path=0.0)
TINY = dataclasses.replace(TINY, cpacol=dataclasses.replace(TINY.cpacol, corr_channels=16, stage2_epochs=1))

R2 = 1 / math.sqrt(2)
FG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
BG = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
# cos(fg_i, bg_j) = [[0, 1/√2], [1, 1/√2]] → clamped [[5e-4, .7071], [1 − 5e-4, .7071]]
NEG = -(math.log(1 - SIM_MIN) + 2 * math.log(1 - R2) + math.log(1 - SIM_MAX)) / 4
POS_FG_ALL = -(2 * math.log(SIM_MAX) + 2 * math.log(SIM_MIN)) / 4  # cos(fg0, fg1) = 0
POS_FG_DIAG = -math.log(SIM_MAX)  # only i = j pairs share an id
POS_BG = -(2 * math.log(SIM_MAX) + 2 * math.log(R2)) / 4  # cos(bg0, bg1) = 1/√2


def _batch(b: int = 8, ids: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(b, 3, H, W, generator=g), "image_occ": torch.randn(b, 3, H, W, generator=g),
            "label": torch.arange(b) % ids, "camid": torch.arange(b) % 2, "z": torch.zeros(b, 4, dtype=torch.long),
            "label_map": torch.randint(0, 9, (b, H, W), generator=g)}


def test_contrastive_losses_by_hand():
    assert float(negative_contrast(FG, BG)) == pytest.approx(NEG, rel=1e-5)
    assert float(positive_contrast(FG)) == pytest.approx(POS_FG_ALL, rel=1e-5)
    assert float(positive_contrast(BG)) == pytest.approx(POS_BG, rel=1e-5)
    # Eq. (5): foregrounds pulled together only within an identity
    assert float(inter_contrastive_loss(FG, BG, torch.tensor([0, 1]))) == pytest.approx(NEG + POS_FG_DIAG + POS_BG, rel=1e-5)
    assert float(inter_contrastive_loss(FG, BG, torch.tensor([3, 3]))) == pytest.approx(NEG + POS_FG_ALL + POS_BG, rel=1e-5)
    # Eq. (6): the same three terms across one image's stripes, averaged over images
    stripes_fg, stripes_bg = torch.stack([FG, FG]), torch.stack([BG, BG])  # [B=2, K=2, D]
    assert float(intra_contrastive_loss(stripes_fg, stripes_bg)) == pytest.approx(NEG + POS_FG_ALL + POS_BG, rel=1e-5)


def test_base_stage1_and_verification_losses_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    lp = torch.log(torch.tensor([[3.0, 1], [3, 1], [1, 3], [1, 1]]))  # p_true .75 .75 .75 .5
    ce, ce_flip = -(3 * math.log(0.75) + math.log(0.5)) / 4, -(3 * math.log(0.25) + math.log(0.5)) / 4
    logits = torch.stack([lp, lp.flip(1), lp], dim=1)  # [cls, part 1, part 2]
    feats = torch.tensor([[0.0, 0], [1, 0], [0, 2], [0, 3]])
    tri = (2 + (4 - math.sqrt(5)) + 2 + 1) / 4  # margin 3: (d_ap, d_an) = (1, 2), (1, √5), (1, 2), (1, 3)
    terms = part_base_loss(logits, torch.stack([feats, feats * 0, feats], dim=1), labels, margin=3.0)
    assert float(terms["id"]) == pytest.approx(ce + (ce_flip + ce) / 2, rel=1e-5)  # Eq. (11)
    assert float(terms["triplet"]) == pytest.approx(tri + (3.0 + tri) / 2, rel=1e-5)  # all-equal part: margin
    layer = {"fg": FG.repeat(2, 1), "bg": BG.repeat(2, 1), "fg_stripes": FG.expand(4, 2, 2),
             "bg_stripes": BG.expand(4, 2, 2)}
    out = {"logits": logits, "feats": torch.stack([feats, feats * 0, feats], dim=1), "contrast": [layer, layer]}
    t = stage1_objective(out, labels, LossConfig(triplet_margin=3.0), inter_weight=1.0, intra_weight=0.5)
    assert float(t["total"]) == pytest.approx(float(t["id"] + t["triplet"] + t["inter"] + 0.5 * t["intra"]), rel=1e-6)
    assert float(t["intra"]) == pytest.approx(2 * (NEG + POS_FG_ALL + POS_BG), rel=1e-5)  # summed over 2 layers
    # Eq. (10): s = σ(0) = .5 for a matching pair, σ(ln 3) = .75 for a non-matching one
    v = verification_loss(torch.tensor([0.0, math.log(3)]), torch.tensor([1.0, 0.0]))
    assert float(v) == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)


def test_dense_correlation_eq9_by_hand():
    """Positions a0 = (1, 0), a1 = (0, 1) against b0 = (1, 1), b1 = (−1, 0): ReLU(cos) = [[.7071, 0], [.7071, 0]]."""
    fa = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 1, 2, 2, 1)  # [P, L, C, H=2, W=1]
    fb = torch.tensor([[1.0, 1.0], [-1.0, 0.0]]).T.reshape(1, 1, 2, 2, 1)
    r = dense_correlation(fa, fb)
    assert r.shape == (1, 1, 2, 1, 2, 1)
    assert torch.allclose(r[0, 0, :, 0, :, 0], torch.tensor([[R2, 0.0], [R2, 0.0]]), atol=1e-6)


def test_stripe_prior_and_pooling():
    prior = stripe_prior(8, 4)  # rows → stripes 0 0 1 1 2 2 3 3
    assert prior.shape == (8, 4, 8, 4)
    assert prior[0, 0, 7, 3] == pytest.approx(0.4) and prior[2, 1, 3, 0] == 1.0 and prior[1, 0, 2, 3] == pytest.approx(0.8)
    assert prior[0, 2, 4, 1] == pytest.approx(0.6)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert stripe_pool(x, 2)[0, :, 0].tolist() == [3.5, 11.5]


def _naive_cp4d(x, wa, ba, wb, bb, stride):
    """Center-pivot 4D convolution written with explicit loops (zero padding, odd kernel k)."""
    p, c, ha, wa_, hb, wb_ = x.shape
    o, _, k, _ = wa.shape
    r = k // 2
    oh = [list(range(0, n, stride)) for n in (ha, wa_, hb, wb_)]
    y = torch.zeros(p, o, *[len(v) for v in oh])
    for n in range(p):
        for i, a in enumerate(oh[0]):
            for j, b in enumerate(oh[1]):
                for u, cc in enumerate(oh[2]):
                    for v, d in enumerate(oh[3]):
                        acc = ba + bb
                        for da in range(-r, r + 1):
                            for db in range(-r, r + 1):
                                if 0 <= a + da < ha and 0 <= b + db < wa_:  # around (a, b), key fixed
                                    acc = acc + wa[:, :, da + r, db + r] @ x[n, :, a + da, b + db, cc, d]
                                if 0 <= cc + da < hb and 0 <= d + db < wb_:  # around (c, d), query fixed
                                    acc = acc + wb[:, :, da + r, db + r] @ x[n, :, a, b, cc + da, d + db]
                        y[n, :, i, j, u, v] = acc
    return y


def test_center_pivot_4d_conv_on_a_tiny_hand_case():
    """3 × 1 positions per image, one channel, kernel 3 with only the centre column non-zero: the output
    at (a, c) is b_a + b_b + Σ_d w_d·x[a+d, c] + Σ_d v_d·x[a, c+d] (zero padding) — written out by hand."""
    conv = CenterPivotConv4d(1, 1, 3, 1)
    with torch.no_grad():
        conv.conv_a.weight.zero_()
        conv.conv_b.weight.zero_()
        conv.conv_a.weight[0, 0, :, 1] = torch.tensor([1.0, 10.0, 100.0])
        conv.conv_b.weight[0, 0, :, 1] = torch.tensor([1000.0, 0.0, 2.0])
        conv.conv_a.bias.fill_(0.5)
        conv.conv_b.bias.fill_(0.25)
    x = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]).view(1, 1, 3, 1, 3, 1)  # x[a, c]
    y = conv(x)[0, 0, :, 0, :, 0]
    hand = torch.tensor([
        # a = 0: Σ_d w_d x[a+d, c] uses rows -1, 0, 1 → 10·x[0,c] + 100·x[1,c]; conv_b: 1000·x[0,c-1] + 2·x[0,c+1]
        [0.75 + 10 * 1 + 100 * 4 + 2 * 2, 0.75 + 10 * 2 + 100 * 5 + 1000 * 1 + 2 * 3, 0.75 + 10 * 3 + 100 * 6 + 1000 * 2],
        [0.75 + 1 * 1 + 10 * 4 + 100 * 7 + 2 * 5, 0.75 + 1 * 2 + 10 * 5 + 100 * 8 + 1000 * 4 + 2 * 6,
         0.75 + 1 * 3 + 10 * 6 + 100 * 9 + 1000 * 5],
        [0.75 + 1 * 4 + 10 * 7 + 2 * 8, 0.75 + 1 * 5 + 10 * 8 + 1000 * 7 + 2 * 9, 0.75 + 1 * 6 + 10 * 9 + 1000 * 8],
    ])
    assert torch.allclose(y, hand)


@pytest.mark.parametrize("stride", [1, 2])
def test_center_pivot_4d_conv_equals_explicit_loops(stride):
    torch.manual_seed(0)
    conv = CenterPivotConv4d(2, 3, 3, stride)
    x = torch.randn(2, 2, 3, 2, 4, 3)
    expect = _naive_cp4d(x, conv.conv_a.weight, conv.conv_a.bias, conv.conv_b.weight, conv.conv_b.bias, stride)
    assert torch.allclose(conv(x), expect, atol=1e-5)


def test_correlation_learner_on_the_cpu_grid():
    learner = CorrelationLearner(3)
    corr = torch.rand(5, 3, 8, 4, 8, 4)
    logits = learner(corr)
    assert logits.shape == (5,)
    logits.sum().backward()
    assert all(p.grad is not None for p in learner.parameters())


def test_contrast_attn_layer():
    """f_+ + f_− = mean of f_e (a + (1 − a) = 1); equal stripes average to the image's components; the
    output adds weight · MLP_r(f) ⊗ a (weight 0 = unchanged tokens)."""
    torch.manual_seed(0)
    layer = ContrastAttn(32, stripes=4).eval()
    x = torch.randn(2, 32, 32)  # [B, N = 8 x 4, D]
    out, parts, e = layer(x, (8, 4), None, weight=0.5)
    fe = e.transpose(1, 2).reshape(2, 32, 8, 4)
    assert torch.allclose(parts["fg"] + parts["bg"], fe.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(parts["fg_stripes"].mean(1), parts["fg"], atol=1e-6)
    assert parts["attn"].shape == (2, 8, 4) and bool(((parts["attn"] > 0) & (parts["attn"] < 1)).all())
    expect = x + 0.5 * layer.refine(x) * parts["attn"].flatten(1)[..., None]
    assert torch.allclose(out, expect, atol=1e-6)
    assert torch.equal(layer(x, (8, 4), None, weight=0.0)[0], x)
    _, _, e2 = layer(x, (8, 4), prev=e)
    assert torch.allclose(e2, 2 * e, atol=1e-6)  # chained embeddings (official code)


def test_model_shapes_phases_and_gradient_reach():
    model = build_model(TINY, 4, 2, (H, W), load_weights=False)
    assert model.attn_after == [0, 1, 2] and len(model.contrast) == 3
    assert [p.name for p in model.training_phases(TrainConfig(epochs=3))] == \
        ["stage1", "stage2"]
    b = _batch()
    model.train()
    out = model(b)
    assert out["feats"].shape == (8, 5, 192) and out["logits"].shape == (8, 5, 4)
    assert {"cpacol/attn_fg", "cpacol/attn_bg"} <= set(out["stats"])
    model.loss(out, b, LossConfig())["total"].backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    stage2 = {n for n, _ in model.named_parameters() if n.startswith(("omega", "matcher", "alpha"))}
    assert not any(p.requires_grad for n, p in model.named_parameters() if n in stage2)
    assert all(p.grad is None for n, p in model.named_parameters() if n in stage2)

    model.zero_grad(set_to_none=True)
    model.set_phase("stage2")
    model.train()
    assert not model.encoder.training and not model.contrast.training and model.matcher.training
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("omega", "matcher", "alpha"))}
    feats_before = model.extract(b["image"], b["z"], b["camid"])["global"]
    out = model(b)
    assert out["logits"].shape == (16,) and out["same"][:8].eq(1).all() and out["same"][8:].eq(0).all()
    model.loss(out, b, LossConfig())["total"].backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == stage2
    assert [n for n in trainable if model.get_parameter(n).grad is None] == []
    assert all(p.grad is None for n, p in model.named_parameters() if n not in stage2)
    for k, v in model.state_dict().items():  # stage-I weights and BN statistics untouched by a stage-II forward
        if k in before:
            assert torch.equal(v, before[k]), k
    assert torch.equal(model.extract(b["image"], b["z"], b["camid"])["global"], feats_before)
    assert model.extract(b["image"], b["z"], b["camid"])["global"].shape == (8, 5 * 192)
    with pytest.raises(ValueError, match="phase"):
        model.set_phase("stage3")


def test_config_errors():
    bad = dataclasses.replace(TINY, cpacol=dataclasses.replace(TINY.cpacol, residual_weights=(0.5,)))
    with pytest.raises(ModelConfigError, match="one weight per ContrastAttn layer"):
        build_model(bad, 4, 2, (H, W), load_weights=False)
    none = dataclasses.replace(TINY, cpacol=dataclasses.replace(TINY.cpacol, stage2_epochs=0))
    model = build_model(none, 4, 2, (H, W), load_weights=False)
    assert [p.name for p in model.training_phases(TrainConfig(epochs=3))] == ["stage1"]
    with pytest.raises(ModelConfigError, match="stage2_epochs: 0"):
        model.test_time_extras(EvaluateConfig(cpacol=CpaColEvalConfig(rescore=True)))


def test_residual_ramp_is_stage_one_only():
    model = build_model(dataclasses.replace(TINY, cpacol=dataclasses.replace(TINY.cpacol, attn_ramp_epochs=4)),
                        4, 2, (H, W), load_weights=False)
    model.on_epoch_start(0)
    assert float(model.residual_scale) == 0.25
    model.set_phase("stage2")
    model.on_epoch_start(0)
    assert float(model.residual_scale) == 0.25  # stage II keeps what stage I reached
    assert "residual_scale" in model.state_dict()


def test_rescoring_with_k_equal_to_the_gallery_is_the_full_fusion(tmp_path):
    """top_k = G reproduces the official fusion z(d) + w·z(−logit) over the whole gallery row; a smaller
    k keeps the items outside the top-k behind, in their global order; sweep variants on val only."""
    from ogfr_core.evaluation import FeatureSet, compute_distance
    from ogfr_core.evaluation.extras import ExtraContext, z_normalise

    torch.manual_seed(0)
    model = build_model(TINY, 4, 2, (H, W), load_weights=False).eval()
    b = _batch(9)
    qi, gi = np.arange(3), np.arange(3, 9)
    pids = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])

    def fs(rows):
        g = model.extract(b["image"][rows], b["z"][rows], b["camid"][rows])["global"].numpy()
        return FeatureSet(g, np.zeros((len(rows), 0, g.shape[1])), np.zeros((len(rows), 0), bool), pids[rows],
                          (rows >= 3).astype(int), [f"k{i}" for i in rows])

    def batches(which):
        rows = qi if which == "query" else gi
        yield slice(0, len(rows)), {"image": b["image"][rows], "z": b["z"][rows], "camid": b["camid"][rows]}

    query, gallery = fs(qi), fs(gi)
    ctx = ExtraContext(query, gallery, batches, torch.device("cpu"), 256, True, tmp_path, "val")
    full_cfg = EvaluateConfig(cpacol=CpaColEvalConfig(rescore=True, top_k=6, weight=0.3, weight_sweep=(1.0,)))
    (extra,) = model.test_time_extras(full_cfg, "val")
    with torch.inference_mode():
        (sl, blocks), = list(extra.distance_blocks(ctx))
        fq = model.correlation_features(b["image"][qi], b["camid"][qi])
        fg = model.correlation_features(b["image"][gi], b["camid"][gi])
        logits = torch.stack([model.correlation_logits(fq[i:i + 1].expand(6, -1, -1, -1, -1), fg)
                              for i in range(3)]).numpy()  # [3, 6]
    assert set(blocks) == {"cpacol_rescore", "cpacol_rescore@w=1"}
    d = compute_distance(query, gallery, "global", normalize=True)
    for name, w in (("cpacol_rescore", 0.3), ("cpacol_rescore@w=1", 1.0)):
        fused = z_normalise(d) + w * z_normalise(-logits)
        assert (np.argsort(blocks[name], 1, kind="stable") == np.argsort(fused, 1, kind="stable")).all()
    assert extra.options("cpacol_rescore")["weight_source"] == "official_code"
    (test_extra,) = model.test_time_extras(full_cfg, "test")
    assert list(test_extra.weights) == ["cpacol_rescore"]  # no sweep on a test set
    small = model.test_time_extras(EvaluateConfig(cpacol=CpaColEvalConfig(rescore=True, top_k=2)))[0]
    ctx.kind = "test"
    with torch.inference_mode():
        (_, blocks2), = list(small.distance_blocks(ctx))
    order = np.argsort(blocks2["cpacol_rescore"], 1, kind="stable")
    base = np.argsort(d, 1, kind="stable")
    for r in range(3):
        assert set(order[r, :2]) == set(base[r, :2]) and (order[r, 2:] == base[r, 2:]).all()
