"""Optimiser parameter groups: SGD (paper) vs AdamW, the pretrained stem's lr scale, weight decay."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ogfr_core.config import ModelConfig, TrainConfig
from ogfr_core.model import build_model
from ogfr_core.training.optim import build_optimizer, param_groups
from ogfr_core.training.schedule import build_scheduler

TINY = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, patch_embed="hybrid", stem_stride=16,
                   stem_frozen_blocks=4)


def groups_by_name(model, cfg):
    return {g["name"]: g for g in param_groups(model, cfg)}


def test_sgd_decays_everything_and_scales_the_stem_lr():
    model = build_model(TINY, 3, 2, (64, 32))
    cfg = TrainConfig(optimizer="sgd", lr=0.01, stem_lr_scale=0.1, agent_lr_scale=50, weight_decay=1e-4, model=TINY)
    groups = groups_by_name(model, cfg)
    assert set(groups) == {"stem/decay", "agent/decay", "main/decay"}
    assert groups["stem/decay"]["lr"] == pytest.approx(0.001) and groups["main/decay"]["lr"] == 0.01
    assert groups["agent/decay"]["lr"] == pytest.approx(0.5)
    assert [id(p) for p in groups["agent/decay"]["params"]] == [id(model.heads["teacher"].agent.G.weight)]
    stem_ids = {id(p) for p in model.encoder.patch_embed.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in groups["stem/decay"]["params"]} == stem_ids
    # every trainable parameter exactly once; frozen ones never
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert isinstance(build_optimizer(model, cfg), torch.optim.SGD)


def test_adamw_exempts_norms_biases_and_tokens():
    model = build_model(TINY, 3, 2, (64, 32))
    cfg = TrainConfig(optimizer="adamw", lr=3e-4, weight_decay=0.05, model=TINY)
    groups = groups_by_name(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in ("stem/no_decay", "main/no_decay") for p in groups[g]["params"]}
    assert {"encoder.pos_embed", "encoder.cls_token", "encoder.part_tokens", "encoder.occ_embed",
            "encoder.cam_embed", "encoder.norm.weight"} <= no_decay
    assert "encoder.blocks.0.attn.qkv.weight" in {names[id(p)] for p in groups["main/decay"]["params"]}
    assert all(g["weight_decay"] == 0.0 for n, g in groups.items() if n.endswith("no_decay"))
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    # the warm-up/cosine schedule scales every group's own lr
    sched = build_scheduler(opt, 10, 2, 0.1, 0.0)
    expected = [g["lr"] * 0.1 for g in param_groups(model, cfg)]  # warm-up factor at step 0
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(expected)
    lrs0 = [g["lr"] for g in opt.param_groups]
    opt.step(); sched.step()
    ratios = {round(g["lr"] / l0, 6) for g, l0 in zip(opt.param_groups, lrs0)}
    assert len(ratios) == 1


def test_conv_patch_embedding_sgd_has_the_papers_hyper_parameters_everywhere():
    """The paper profile (conv patches, SGD, scales 1): every group has lr 0.008 and weight decay 1e-4
    — per-parameter SGD updates identical to one group over all trainable parameters."""
    model = build_model(dataclasses.replace(TINY, patch_embed="conv", stride=12), 3, 2, (64, 32))
    groups = param_groups(model, TrainConfig(optimizer="sgd", model=TINY))
    assert [g["name"] for g in groups] == ["agent/decay", "main/decay"]
    assert all(g["lr"] == 0.008 and g["weight_decay"] == 1e-4 for g in groups)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.trainable_parameters())
