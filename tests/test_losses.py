"""Eq. (15)–(21) and the policy-gradient loss against hand-computed values."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ogfr_core.config import LossConfig, ModelConfig
from ogfr_core.losses import (cosine_loss, ensemble_id_loss, id_loss, kd_loss, mask_loss, mse_loss, objective,
                              part_triplet_loss, policy_gradient_loss, triplet_loss)
from ogfr_core.model import build_model


def test_mse_eq15():
    f_hp = torch.zeros(2, 3, 4)
    f_op = torch.full((2, 3, 4), 2.0)
    assert mse_loss(f_hp, f_op).item() == 4.0
    f_op[0, 0, 0] = 0.0  # one element right: (23 * 4) / 24
    assert math.isclose(mse_loss(f_hp, f_op).item(), 23 * 4 / 24, rel_tol=1e-6)


def test_cosine_eq16():
    f_hp = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])  # [B=1, K+1=3, D=2]
    f_op = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]])  # cos = 1, 0, -1
    assert math.isclose(cosine_loss(f_hp, f_op).item(), (0 + 1 + 2) / 3, rel_tol=1e-6)


def test_id_and_ensemble_eq18():
    logits = torch.tensor([[2.0, 0.0]])
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert math.isclose(id_loss(logits, torch.tensor([0])).item(), ce, rel_tol=1e-6)
    assert math.isclose(ensemble_id_loss(logits, logits, torch.tensor([0])).item(), 2 * ce, rel_tol=1e-6)
    assert math.isclose(ensemble_id_loss(logits, None, torch.tensor([0])).item(), ce, rel_tol=1e-6)


def test_kd_eq17():
    # one image, K+1 = 2 features, 2 classes
    s = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    labels = torch.tensor([0])
    alpha, beta = 0.3, 0.4

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    total = 0.0
    for i in range(2):
        ps, pt = softmax(s[0, i].tolist()), softmax(t[0, i].tolist())
        ce = -math.log(ps[0])
        kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
        total += alpha * ce + beta * kl
    assert math.isclose(kd_loss(s, t, labels, alpha, beta).item(), total / 2, rel_tol=1e-6)
    # the teacher is the target: no gradient reaches it
    t.requires_grad_(True)
    s.requires_grad_(True)
    kd_loss(s, t, labels, alpha, beta).backward()
    assert t.grad is None and s.grad is not None


def test_mask_eq19():
    # uniform correlation over K+1 = 9 classes -> CE = log 9 everywhere
    corr = torch.full((2, 10, 9), 1 / 9)
    labels = torch.randint(0, 9, (2, 64, 32))
    assert math.isclose(mask_loss(corr, (5, 2), labels).item(), math.log(9), rel_tol=1e-5)
    # 1x1 grid: every pixel gets the same distribution; labels half class 1 (p=.5), half class 2 (p=.25)
    corr = torch.tensor([[[0.25, 0.5, 0.25]]])
    lab = torch.zeros(1, 2, 2, dtype=torch.long)
    lab[0, 0] = 1
    lab[0, 1] = 2
    expect = (-math.log(0.5) - math.log(0.25)) / 2
    assert math.isclose(mask_loss(corr, (1, 1), lab).item(), expect, rel_tol=1e-6)


def _mask_loss_reference(corr, grid, label_map, eps=1e-8):
    """Eq. (19) as the code computed it before the per-label gather (kept as the reference): upsample
    all K+1 maps to H×W with F.interpolate, log every pixel, NLL."""
    b, n, k1 = corr.shape
    maps = corr.float().transpose(1, 2).reshape(b, k1, *grid).contiguous()
    up = F.interpolate(maps, size=tuple(label_map.shape[-2:]), mode="bilinear", align_corners=False)
    return F.nll_loss(up.clamp_min(eps).log(), label_map.long())


def test_mask_eq19_gather_matches_full_upsampling():
    # the per-label gather (width pass, then the labelled class's height pass) equals the full bilinear
    # upsampling of all K+1 maps: value and gradient, on the CPU profile's grid (8×4 → 128×64), the
    # paper's (21×10 → 256×128), stride 8 (16×8), non-integer ratios and a downsampling case
    g = torch.Generator().manual_seed(0)
    for grid, size in (((8, 4), (128, 64)), ((21, 10), (256, 128)), ((16, 8), (128, 64)), ((5, 3), (37, 11)),
                       ((8, 4), (6, 3))):
        n = grid[0] * grid[1]
        logits = torch.randn(3, n, 9, generator=g) * 3
        logits[0, :, 0] = -30.0  # background probability ~1e-13: the eps floor is exercised
        lab = torch.randint(0, 9, (3, *size), generator=g)
        a = logits.softmax(-1).requires_grad_(True)
        r = logits.softmax(-1).requires_grad_(True)
        new, ref = mask_loss(a, grid, lab), _mask_loss_reference(r, grid, lab)
        new.backward()
        ref.backward()
        assert abs(new.item() - ref.item()) <= 1e-6 * max(1.0, abs(ref.item())), (grid, size, new.item(), ref.item())
        # integer ratios (every profile): the same weights and sums, gradients to rounding; other ratios:
        # weights within an ulp of the kernel's, which d/dp log p = 1/p amplifies where p is near eps
        exact = size[0] % grid[0] == 0 and size[1] % grid[1] == 0
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-5 if exact else 1e-3, atol=1e-9)


def test_mask_eq19_rejects_bad_labels():
    corr = torch.full((1, 2, 3), 1 / 3)
    with pytest.raises(ValueError, match="label map ids must be in 0..2"):
        mask_loss(corr, (2, 1), torch.full((1, 4, 2), 3))
    with pytest.raises(ValueError, match="grid"):
        mask_loss(corr, (3, 1), torch.zeros(1, 4, 2, dtype=torch.long))


def test_triplet_batch_hard():
    feats = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchors: x=0 (ap 1, an 3) -> 0; x=1 (1, 2) -> 0; x=3 (2, 2) -> 0.3; x=5 (2, 4) -> 0
    assert math.isclose(triplet_loss(feats, labels, 0.3).item(), 0.075, rel_tol=1e-5)
    # Eq. (20): global + mean over parts
    f = torch.stack([feats, feats * 0, feats], 1)  # [B, 3, 1]; part 1 all equal -> d_ap = d_an -> margin
    assert math.isclose(part_triplet_loss(f, labels, 0.3).item(), 0.075 + (0.3 + 0.075) / 2, rel_tol=1e-4)
    # no positive pairs -> 0, differentiable
    assert triplet_loss(feats, torch.arange(4), 0.3).item() == 0.0


def test_policy_gradient_eq9():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.0]], requires_grad=True)  # [E=2, B=2]
    reward = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    loss = policy_gradient_loss(logp, reward)
    assert math.isclose(loss.item(), -(-1.0 + 2.0 - 0.25 + 0.0) / 4, rel_tol=1e-6)
    loss.backward()
    assert torch.allclose(logp.grad, -reward / 4)


def test_objective_terms_and_total():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, stride=12)
    model = build_model(cfg, 3, 2, (64, 32)).train()
    b = dict(image=torch.randn(4, 3, 64, 32), z=torch.zeros(4, 4, dtype=torch.long), camid=torch.zeros(4, dtype=torch.long),
             label=torch.tensor([0, 0, 1, 1]), label_map=torch.randint(0, 9, (4, 64, 32)))
    out = model(b, torch.Generator().manual_seed(0))
    lc = LossConfig()
    terms = objective(out, b["label"], lc, model.grid_size, model.num_prefix, b["label_map"], b["label_map"])
    assert set(terms) == {"mse", "cos", "kd", "en", "tr", "mask", "policy", "total"}
    expect = (terms["mse"] + lc.mu1 * terms["cos"] + terms["kd"] + terms["en"] + lc.mu2 * terms["tr"]
              + terms["mask"] + lc.policy_weight * terms["policy"])
    assert torch.allclose(terms["total"], expect)
    # Table VII switches drop their term
    off = objective(out, b["label"], dataclasses.replace(lc, use_mse=False, use_kd=False), model.grid_size,
                    model.num_prefix, b["label_map"], b["label_map"])
    assert "mse" not in off and "cos" in off
    # use_kd: false drops the KL of Eq. (17) but keeps α·mean_i CE(f_op^i) (the classifiers still train)
    logits = out["student"]["logits"]  # [B, K+1, C]
    ce = sum(F.cross_entropy(logits[:, i], b["label"]) for i in range(logits.shape[1])) / logits.shape[1]
    assert torch.allclose(off["kd"], lc.alpha * ce)
    assert torch.allclose(off["total"], terms["total"] - terms["mse"] - terms["kd"] + off["kd"])
    base = build_model(dataclasses.replace(cfg, method="baseline"), 3, 2, (64, 32)).train()
    bt = base.loss(base(b), b, lc)
    assert set(bt) == {"id", "triplet", "total"} and torch.allclose(bt["total"], bt["id"] + bt["triplet"])


def test_single_branch_objective_with_fep_student():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, stride=12, kd=False, fep_teacher=False,
                      fep_student=True)
    model = build_model(cfg, 3, 2, (64, 32)).train()
    b = dict(image=torch.randn(4, 3, 64, 32), z=torch.zeros(4, 4, dtype=torch.long),
             camid=torch.zeros(4, dtype=torch.long), label=torch.tensor([0, 0, 1, 1]),
             label_map=torch.randint(0, 9, (4, 64, 32)))
    out = model(b, torch.Generator().manual_seed(0))
    lc = LossConfig()
    terms = objective(out, b["label"], lc, model.grid_size, model.num_prefix, b["label_map"])
    assert set(terms) == {"id", "en", "tr", "mask", "policy", "total"}
    s = out["student"]
    mean_id = sum(id_loss(s["logits"][:, i], b["label"]) for i in range(9)) / 9
    assert torch.allclose(terms["id"], mean_id)
    assert torch.allclose(terms["total"], terms["id"] + terms["en"] + lc.mu2 * terms["tr"] + terms["mask"]
                          + lc.policy_weight * terms["policy"])


def test_baseline_loss_reads_only_the_params_the_report_counts_for_it():
    """The report treats every other ``train.loss.*`` param as inert for a baseline run
    (:data:`ogfr_core.report.experiments.BASELINE_LOSS_PARAMS`): Baseline.loss must read no other."""
    from ogfr_core.report.experiments import BASELINE_LOSS_PARAMS

    class Recording:
        def __init__(self, cfg):
            self.cfg, self.read = cfg, set()

        def __getattr__(self, name):
            self.read.add(f"train.loss.{name}")
            return getattr(self.cfg, name)

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, stride=12, method="baseline")
    base = build_model(cfg, 3, 2, (64, 32)).train()
    b = dict(image=torch.randn(4, 3, 64, 32), camid=torch.zeros(4, dtype=torch.long), label=torch.tensor([0, 0, 1, 1]))
    lc = Recording(LossConfig())
    base.loss(base(b), b, lc)
    assert lc.read == set(BASELINE_LOSS_PARAMS)
