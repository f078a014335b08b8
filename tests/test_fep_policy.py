"""The FEP agent's policy gradient as params (issue 23 item 2): leave-one-out baseline, batch
standardisation, log-ratio reward, entropy bonus, live p^b, and the per-epoch agent diagnostics."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ogfr_core.config import LossConfig, ModelConfig, TrainConfig, to_dict
from ogfr_core.losses import objective, policy_advantage, policy_gradient_loss
from ogfr_core.model import ErasingAgent, ModelConfigError, build_model
from ogfr_core.model.ogfr import policy_reward, reinforce_reward
from ogfr_core.training import Trainer
from ogfr_core.training.agent_stats import grad_snr, mean_ci95
from _real_batch import random_batch

H, W = 64, 32
TINY = ModelConfig(backbone="vit_tiny_patch16_224", depth=2, stride=12, patch_size=16, num_parts=8, drop_path=0.0)


batch = random_batch  # random training batch at H x W (tests/_real_batch.py)


def test_leave_one_out_advantage_hand_computed():
    r = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])  # [E=3, B=2]
    a = policy_advantage(r, leave_one_out=True)
    # image 0: rewards 1, 3, 5 -> 1 - (3+5)/2, 3 - (1+5)/2, 5 - (1+3)/2; image 1: 2, 4, 9
    assert a.tolist() == [[-3.0, -4.5], [0.0, -1.5], [3.0, 6.0]]
    assert torch.equal(policy_advantage(r), r)  # neither option: Eq. 9's reward itself
    with pytest.raises(ValueError, match=">= 2 episodes"):
        policy_advantage(r[:1], leave_one_out=True)


def test_standardised_advantage_hand_computed():
    r = torch.tensor([[1.0, 3.0], [5.0, 7.0]])  # mean 4, population std sqrt(5)
    a = policy_advantage(r, standardise=True)
    s = math.sqrt(5.0)
    assert torch.allclose(a, torch.tensor([[-3 / s, -1 / s], [1 / s, 3 / s]]))
    b = policy_advantage(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]]), True, True)
    assert abs(float(b.mean())) < 1e-6 and float(b.std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)


def test_log_ratio_reward_and_entropy():
    p_m, p_b = torch.tensor([0.5, 0.1]), torch.tensor([0.25, 0.4])
    r = policy_reward(p_m, p_b, "log_ratio")
    assert torch.allclose(r, torch.tensor([math.log(2.0), math.log(0.25)]))
    assert torch.allclose(policy_reward(p_m, p_b, "log_ratio", clip=1.0), torch.tensor([math.log(2.0), -1.0]))
    assert torch.equal(policy_reward(p_m, p_b, "eq8", 1.0), reinforce_reward(p_m, p_b, 1.0))
    with pytest.raises(ValueError, match="reward_kind"):
        policy_reward(p_m, p_b, "other")
    h = ErasingAgent.entropy(torch.tensor([[0.5, 0.5, 0.5]]))
    assert h.item() == pytest.approx(3 * math.log(2.0))  # 3 tokens at the maximum, ln 2 nats each


def test_leave_one_out_needs_two_episodes():
    with pytest.raises(ModelConfigError, match="num_episodes >= 2"):
        build_model(dataclasses.replace(TINY, pg_baseline="leave_one_out"), 3, 2, (H, W), load_weights=False)


def _teacher(cfg: ModelConfig, b: dict, seed: int = 0):
    torch.manual_seed(0)
    model = build_model(cfg, 3, 2, (H, W), load_weights=False).train()
    model.on_epoch_start(0)
    return model, model(b, torch.Generator().manual_seed(seed))["teacher"]


def test_live_p_b_equals_a_just_refreshed_frozen_copy():
    b = batch()
    frozen, t_f = _teacher(dataclasses.replace(TINY, num_episodes=3), b)
    live, t_l = _teacher(dataclasses.replace(TINY, num_episodes=3, reward_baseline="live"), b)
    assert not live.reward_baselines and frozen.reward_baselines  # no frozen copy to keep
    assert torch.allclose(t_l["p_b"], t_f["p_b"], atol=1e-6)
    assert torch.allclose(t_l["p_m"], t_f["p_m"], atol=1e-6)  # episodes batched with the keep-all pass
    assert torch.allclose(t_l["reward"], t_f["reward"], atol=1e-5)
    assert torch.equal(t_f["advantage"], t_f["reward"])  # defaults: the advantage is the reward


def test_loo_standardised_advantage_and_entropy_enter_the_objective():
    b = batch()
    cfg = dataclasses.replace(TINY, num_episodes=4, reward_baseline="live", reward_kind="log_ratio",
                              pg_baseline="leave_one_out", advantage_norm=True)
    model, _ = _teacher(cfg, b)
    out = model(b, torch.Generator().manual_seed(0))
    t = out["teacher"]
    assert t["advantage"].shape == (4, 4)
    assert torch.allclose(t["advantage"], policy_advantage(t["reward"], True, True))
    lc = LossConfig()
    terms = objective(out, b["label"], lc, model.grid_size, model.num_prefix, b["label_map"], b["label_map"])
    assert torch.allclose(terms["policy"], policy_gradient_loss(t["log_prob"], t["advantage"]))
    assert "entropy" not in terms  # weight 0: the original objective
    terms_h = objective(out, b["label"], dataclasses.replace(lc, policy_entropy_weight=0.1), model.grid_size,
                        model.num_prefix, b["label_map"], b["label_map"])
    assert torch.allclose(terms_h["entropy"], t["entropy"].mean())
    assert torch.allclose(terms_h["total"], terms["total"] - 0.1 * terms_h["entropy"])
    # the entropy bonus pushes G towards m = 0.5 (G starts at 2: m = sigmoid(2) > 0.5 -> G decreases)
    model.zero_grad()
    (-t["entropy"].mean()).backward()
    assert float(model.heads["teacher"].agent.G.weight.grad.sum()) > 0


def test_erasing_stats_hand_computed():
    model, t = _teacher(TINY, batch())
    n = t["actions"].shape[1]
    lm = torch.zeros(1, H, W, dtype=torch.long)
    lm[:, : H // 2] = 3  # upper half body
    fg = model.patch_foreground(lm)[0]
    body = fg >= 0.5
    actions = torch.ones(1, n)
    actions[0, body.nonzero()[0, 0]] = 0  # erase one body token
    actions[0, (~body).nonzero()[:2, 0]] = 0  # and two background tokens
    branch = {"actions": actions, "m": torch.full((1, n), 0.5), "entropy": torch.tensor([n * math.log(2)])}
    s = model.erasing_stats("teacher", branch, {"label_map": lm})
    assert s["teacher/erased_background"] == pytest.approx(2 / int((~body).sum()))
    assert s["teacher/erased_body"] == pytest.approx(1 / int(body.sum()))
    assert s["teacher/entropy"] == pytest.approx(math.log(2))


def test_grad_snr_and_ci_hand_computed():
    g = torch.tensor([[1.0, -1.0], [3.0, 1.0], [5.0, 0.0]])  # weight 0: mean 3, s 2; weight 1: mean 0
    assert grad_snr(g) == pytest.approx((3 / 2 + 0) / 2)
    assert math.isnan(grad_snr(g[:1]))
    mean, half = mean_ci95(sum([0.1, 0.3]), 0.01 + 0.09, 2)  # s = 0.1414
    assert mean == pytest.approx(0.2) and half == pytest.approx(1.96 * math.sqrt(0.02 / 2))


def test_training_epoch_logs_agent_diagnostics(tmp_path):
    cfg = TrainConfig(epochs=1, warmup_epochs=0, optimizer="adamw", lr=1e-3, amp=False, log_every=0,
                      model=dataclasses.replace(TINY, num_episodes=2, reward_baseline="live",
                                                pg_baseline="leave_one_out"))
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, 2, (H, W), load_weights=False)
    meta = dict(model=to_dict(cfg.model), data={"name": "t"}, train=to_dict(cfg), num_classes=3, num_cameras=2,
                height=H, width=W, epochs_trained=0, pretrained_weights="", init_warning="", method="ogfr")
    trainer = Trainer(model, cfg, tmp_path, meta, occlusion=5.0, steps_per_epoch=3)
    hist = trainer.fit(lambda e: iter([batch(4, s) for s in range(3)]))
    h = hist[0]
    assert len(trainer.agent_grads) == 3 and trainer.agent_grads[0].shape == (9,)  # G: 1 x (K+1)
    assert h["agent/grad_snr"] == pytest.approx(grad_snr(trainer.agent_grads))
    for k in ("teacher/erased_background", "teacher/erased_body"):
        assert 0.0 <= h[k] <= 1.0 and h[f"{k}_ci95"] >= 0.0


def test_matched_random_mask_erases_as_many_tokens_at_random():
    from ogfr_core.model.ogfr import matched_random_mask

    a = torch.ones(3, 10)
    a[0, :4] = 0  # 4 erased
    a[1, 7] = 0  # 1 erased; row 2 erases nothing
    c = matched_random_mask(a, torch.Generator().manual_seed(0))
    assert c.shape == a.shape and c.dtype == a.dtype and set(c.unique().tolist()) <= {0.0, 1.0}
    assert (c == 0).sum(1).tolist() == [4, 1, 0]
    assert torch.equal(c, matched_random_mask(a, torch.Generator().manual_seed(0)))  # the generator decides
    hits = torch.stack([1 - matched_random_mask(a[:1], torch.Generator().manual_seed(s))[0] for s in range(400)])
    assert hits.mean(0).sub(0.4).abs().max() < 0.1  # each token erased with probability 4/10


def test_matched_random_advantage_is_relative_to_the_control():
    """pg_baseline: matched_random — an agent that erases nothing has a control that erases nothing, so
    its advantage is exactly 0 whatever its reward; otherwise the advantage differs from the reward."""
    b = batch()
    cfg = dataclasses.replace(TINY, num_episodes=2, reward_baseline="live", reward_kind="log_ratio",
                              pg_baseline="matched_random")
    model, t = _teacher(cfg, b)
    assert t["advantage"].shape == t["reward"].shape == (2, 4)
    assert not torch.allclose(t["advantage"], t["reward"])
    with torch.no_grad():
        model.heads["teacher"].agent.G.weight.fill_(50.0)  # m = 1: every token kept
    t_keep = model(b, torch.Generator().manual_seed(0))["teacher"]
    assert bool((t_keep["actions"] == 1).all())
    assert torch.equal(t_keep["advantage"], torch.zeros(2, 4))
