"""OA-ViT (Eq. 3–5), FEP (Eq. 6–14), the OGFR model's shapes and inference API, weight loading."""
from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from timm.models.vision_transformer import Attention

from ogfr_core.config import ModelConfig
from ogfr_core.model import (ErasingAgent, FEPModule, MHSAFix, ModelConfigError, OAViT, PretrainedWeightsError,
                             block_queries, build_model, correlation_matrix, part_visibility, patch_grid,
                             reinforce_reward)
from ogfr_core.model.neck import bn_batch_stats
from ogfr_core.losses import policy_gradient_loss
from _real_batch import random_batch

H, W = 64, 32
TINY = ModelConfig(backbone="vit_tiny_patch16_224", depth=2, stride=12, patch_size=16, num_parts=8)


batch = random_batch  # random training batch at H x W (tests/_real_batch.py)


def test_patch_grid_eq4():
    assert patch_grid(256, 128, 16, 12) == (21, 10)  # TransReID stride 12 -> 210 patches
    assert patch_grid(256, 128, 16, 16) == (16, 8)
    assert patch_grid(128, 64, 16, 16) == (8, 4)
    assert patch_grid(64, 32, 16, 12) == (5, 2)


def test_encoder_shapes_and_grid():
    enc = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=2, num_part_tokens=9, num_cameras=2)
    assert len(enc.blocks) == 2 and enc.grid_size == (5, 2)
    assert enc.pos_embed.shape == (1, 1 + 10, 192)
    b = batch()
    out = enc(b["image"], b["z"], b["camid"])
    assert out.shape == (4, 1 + 9 + 10, 192)
    assert enc.patch_embed(b["image"]).shape == (4, 10, 192)  # overlapping conv, stride 12


def test_occlusion_embedding_eq3_indexing():
    enc = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=1, num_part_tokens=9, num_cameras=2)
    with torch.no_grad():
        for t in range(16):
            zz = [(t >> s) & 1 for s in (3, 2, 1, 0)]
            enc.occ_embed[zz[0], zz[1], zz[2], zz[3]] = float(t)
    z = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1], [1, 1, 1, 1]])
    e = enc.occlusion_embedding(z)
    assert e.shape == (4, 192)
    assert e[:, 0].tolist() == [0.0, 8.0, 5.0, 15.0]  # O_e[z0, z1, z2, z3]
    with pytest.raises(ValueError, match="0 \\(visible\\) or 1"):
        enc.occlusion_embedding(torch.tensor([[2, 0, 0, 0]]))


def test_occlusion_and_camera_embeddings_enter_the_sequence():
    enc = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=1, num_part_tokens=9, num_cameras=2,
                drop_path=0.0).eval()
    x = torch.randn(1, 3, H, W)
    a = enc(x, torch.tensor([[0, 0, 0, 0]]), torch.tensor([0]))
    b = enc(x, torch.tensor([[1, 0, 0, 0]]), torch.tensor([0]))
    c = enc(x, torch.tensor([[0, 0, 0, 0]]), torch.tensor([1]))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="camera ids must be in 0..1"):
        enc(x, torch.tensor([[0, 0, 0, 0]]), torch.tensor([2]))
    no_occ = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=1, num_part_tokens=9, num_cameras=2,
                   use_occ_embed=False)
    assert no_occ.occ_embed is None


def test_mhsa_fix_keeps_global_and_part_outputs_equal_to_v():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, qkv_bias=True)
    fix = MHSAFix.from_attention(attn, num_fixed=3).eval()
    x = torch.randn(2, 10, 32)
    out = fix(x)
    v = fix.qkv(x).reshape(2, 10, 3, 32)[:, :, 2]  # [B, L, D] value vectors (heads concatenated)
    # Eq. (13): fixed tokens' head outputs are their values; then the usual output projection
    assert torch.allclose(out[:, :3], fix.proj(v[:, :3]), atol=1e-6)
    # Eq. (12): patch tokens attend over all tokens as ordinary attention does
    assert torch.allclose(out[:, 3:], attn.eval()(x)[:, 3:], atol=1e-5)


def test_correlation_agent_and_visibility():
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [1, N=2, D=2]
    parts = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]])  # [1, K+1=3, D]
    corr = correlation_matrix(patches, parts)
    scale = 2 ** -0.5
    expect0 = torch.softmax(torch.tensor([0.0, 4.0 * scale, 0.0]), 0)
    assert torch.allclose(corr[0, 0], expect0) and torch.allclose(corr.sum(-1), torch.ones(1, 2))
    agent = ErasingAgent(3)
    with torch.no_grad():
        agent.G.weight.copy_(torch.tensor([[-1.0, 2.0, 0.5]]))
    m = agent(corr)  # Eq. (6)
    assert torch.allclose(m, torch.sigmoid(corr @ torch.tensor([-1.0, 2.0, 0.5])))
    # Eq. (22): 4 patches on a 2x2 grid; part 1 wins two patches, part 2 one, part 3 none
    c = torch.tensor([[[0.1, 0.8, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05],
                       [0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]]])
    vis = part_visibility(c, (2, 2), (8, 8))
    assert vis.tolist() == [[True, True, False]]


def test_fep_mask_methods():
    torch.manual_seed(0)
    enc = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=1, num_part_tokens=9)
    tokens = torch.randn(3, 1 + 9 + 10, 192)
    state = torch.softmax(torch.randn(3, 10, 9), -1)
    g = torch.Generator().manual_seed(0)
    for method in ("learned", "none", "random", "background"):
        fep = FEPModule(enc.blocks[-1], enc.norm, 10, 9, "customised", method, random_keep=0.5).train()
        fg = torch.tensor([[1.0] * 5 + [0.0] * 5] * 3)
        out, info = fep(tokens, state, fg, g)
        assert out.shape == tokens.shape
        if method == "none":
            assert info["actions"] is None
        else:
            assert info["actions"].shape == (3, 10) and set(info["actions"].unique().tolist()) <= {0.0, 1.0}
        if method == "learned":
            assert info["m"].shape == (3, 10)
        if method == "background":
            assert info["actions"].tolist() == fg.tolist()
    conv = FEPModule(enc.blocks[-1], enc.norm, 10, 9, "conventional", "learned")
    assert not isinstance(conv.decoder[0].attn, MHSAFix)
    cust = FEPModule(enc.blocks[-1], enc.norm, 10, 9, "customised", "learned")
    assert isinstance(cust.decoder[0].attn, MHSAFix) and not isinstance(cust.decoder[1].attn, MHSAFix)


def test_erased_patches_are_replaced_by_the_learnable_embedding():
    enc = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=1, num_part_tokens=9)
    fep = FEPModule(enc.blocks[-1], enc.norm, 10, 9, "customised", "learned").eval()
    tokens = torch.randn(1, 20, 192)
    seen = {}
    fep.decoder[0].register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0]))
    actions = torch.tensor([[1.0, 0.0] * 5])
    fep.decode(tokens, actions)
    x = seen["x"]
    assert torch.equal(x[:, :10], tokens[:, :10])  # global + part tokens untouched
    assert torch.equal(x[0, 10], tokens[0, 10]) and torch.equal(x[0, 11], fep.mask_token[0, 0])


@pytest.mark.parametrize("overrides,teacher,k", [
    ({}, True, 8),
    ({"fep_student": True, "fep_teacher": False}, True, 8),
    ({"fep_student": True, "fep_teacher": True, "decoder": "conventional"}, True, 8),
    ({"kd": False, "fep_teacher": False, "oa_vit": False}, False, 8),
    ({"method": "baseline"}, False, 0),
])
def test_model_forward_shapes(overrides, teacher, k):
    cfg = dataclasses.replace(TINY, **overrides)
    model = build_model(cfg, num_classes=3, num_cameras=2, img_size=(H, W)).train()
    b = batch()
    out = model(b, torch.Generator().manual_seed(0))
    assert ("teacher" in out) == teacher
    for br in out.values():
        assert br["feats"].shape == (4, k + 1, 192)
        assert br["logits"].shape == (4, k + 1, 3)
        if k:  # OGFR's heads return every token (F_hp / F_op); the baseline only its [cls] feature
            assert br["tokens"].shape == (4, 1 + k + 1 + 10, 192)
    if k:
        assert out["student"]["corr"].shape == (4, 10, k + 1)
    if teacher and cfg.fep_teacher and cfg.mask_method == "learned":
        t = out["teacher"]
        assert t["reward"].shape == (1, 4) and t["log_prob"].shape == (1, 4) and t["p_b"].shape == (4,)


def test_extract_and_erasing_mask_api():
    model = build_model(TINY, num_classes=3, num_cameras=2, img_size=(H, W)).train()
    b = batch()
    feats = model.extract(b["image"], b["z"], b["camid"])
    assert set(feats) == {"global", "parts", "visibility"}
    assert feats["global"].shape == (4, 192) and feats["parts"].shape == (4, 8, 192)
    assert feats["visibility"].shape == (4, 8) and feats["visibility"].dtype == torch.bool
    assert model.training  # mode restored
    # after-BNNeck features in eval mode: deterministic
    again = model.extract(b["image"], b["z"], b["camid"])
    assert torch.equal(feats["global"], again["global"])
    m = model.erasing_mask(b["image"], b["z"], b["camid"])
    assert m.shape == (4, 5, 2) and bool(((m > 0) & (m < 1)).all())
    base = build_model(dataclasses.replace(TINY, method="baseline"), 3, 2, (H, W))
    bf = base.extract(b["image"], b["z"], b["camid"])
    assert bf["parts"].shape == (4, 0, 192) and bf["visibility"].shape == (4, 0)
    assert base.erasing_mask(b["image"], b["z"], b["camid"]) is None


def test_kd_false_alone_is_the_single_branch_model():
    """Table IV rows 2-3: ``kd: false`` needs no other switch (fep_teacher configures a teacher that
    does not exist without KD)."""
    model = build_model(dataclasses.replace(TINY, kd=False, fep_teacher=True), 3, 2, (H, W))
    assert list(model.heads) == ["student"] and list(model.necks) == ["student"]
    assert not model.reward_baselines


def test_random_init_warning_recorded():
    model = build_model(TINY, 3, 2, (H, W))
    assert "randomly initialised" in model.init_warning


def test_reward_eq8_and_reinforce_sign():
    r = reinforce_reward(torch.tensor([0.6, 0.2, 0.5]), torch.tensor([0.5, 0.5, 0.5]))
    assert torch.allclose(r, torch.tensor([0.2, -0.6, 0.0]))
    assert reinforce_reward(torch.tensor([0.0]), torch.tensor([0.99]), clip=1.0).item() == -1.0
    # toy agent, one patch: positive reward for retaining -> gradient step raises m
    for reward, direction in ((1.0, 1), (-1.0, -1)):
        agent = ErasingAgent(2, init_logit=0.0)
        state = torch.tensor([[[0.5, 0.5]]])
        m0 = agent(state)
        logp = ErasingAgent.log_prob(m0, torch.ones(1, 1))[None]  # [E=1, B=1]
        policy_gradient_loss(logp, torch.tensor([[reward]])).backward()
        with torch.no_grad():
            agent.G.weight -= 0.5 * agent.G.weight.grad
        assert (agent(state) - m0).item() * direction > 0


def _save_timm_vit(tmp_path, fmt: str):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    sd = vit.state_dict()
    if fmt == "pth":
        path = tmp_path / "vit.pth"
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "vit.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return vit, sd, path


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_pretrained_loading_resizes_pos_embed(tmp_path, fmt):
    vit, sd, path = _save_timm_vit(tmp_path, fmt)
    enc = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=2, num_part_tokens=9, num_cameras=2)
    info = enc.load_pretrained(path)
    assert torch.equal(enc.patch_embed.proj.weight, sd["patch_embed.proj.weight"])
    assert torch.equal(enc.blocks[1].attn.qkv.weight, sd["blocks.1.attn.qkv.weight"])
    assert torch.equal(enc.pos_embed[:, 0], sd["pos_embed"][:, 0])  # cls position kept
    assert enc.pos_embed.shape == (1, 11, 192)
    assert "head.weight" in info["dropped"] and "blocks.5.mlp.fc1.weight" in info["dropped"]


def test_pretrained_loading_fails_loudly(tmp_path):
    vit, sd, _ = _save_timm_vit(tmp_path, "pth")
    del sd["blocks.0.norm1.weight"]
    sd["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    enc = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=2, num_part_tokens=9)
    with pytest.raises(PretrainedWeightsError) as err:
        enc.load_pretrained(bad)
    assert "blocks.0.norm1.weight" in str(err.value) and "extra.weight" in str(err.value)
    with pytest.raises(PretrainedWeightsError, match="not found"):
        enc.load_pretrained(tmp_path / "nope.pth")
    small = OAViT("vit_small_patch16_224", (H, W), 16, 12, depth=1, num_part_tokens=9)
    with pytest.raises(PretrainedWeightsError, match="shape mismatches"):
        small.load_pretrained(tmp_path / "vit.pth")


def test_reward_is_zero_when_nothing_is_erased_after_refresh():
    cfg = dataclasses.replace(TINY, drop_path=0.0, num_episodes=3)
    model = build_model(cfg, num_classes=3, num_cameras=2, img_size=(H, W)).train()
    with torch.no_grad():
        model.heads["teacher"].agent.G.weight.fill_(50.0)  # m ≈ 1: every patch retained
    model.refresh_reward_baseline()
    t = model(batch(), torch.Generator().manual_seed(0))["teacher"]
    assert t["actions"].min().item() == 1.0
    assert t["reward"].shape == (3, 4)
    assert torch.allclose(t["p_m"], t["p_b"].expand(3, -1), atol=1e-6)
    assert torch.allclose(t["reward"], torch.zeros(3, 4), atol=1e-5)
    # the frozen copy is not trained and stays in eval mode
    assert not any(p.requires_grad for p in model.reward_baselines.parameters())
    assert not model.reward_baselines.training


def test_reward_has_no_drop_path_noise():
    """Eq. (8) with stochastic depth on: nothing erased ⇒ p^m == p^b and r == 0 (up to float rounding:
    the E episodes are decoded as one batch of E·B, whose matrix products may round differently from
    the batch of B — seen under CPU load), while the train-mode features (for the losses) still carry
    the DropPath noise; modes are restored."""
    cfg = dataclasses.replace(TINY, drop_path=0.5, num_episodes=3)
    model = build_model(cfg, num_classes=3, num_cameras=2, img_size=(H, W)).train()
    with torch.no_grad():
        model.heads["teacher"].agent.G.weight.fill_(50.0)  # m ≈ 1: every patch retained
    model.refresh_reward_baseline()
    torch.manual_seed(0)
    t = model(batch(), torch.Generator().manual_seed(0))["teacher"]
    assert t["actions"].min().item() == 1.0
    assert torch.allclose(t["p_m"], t["p_b"].expand(3, -1), rtol=0, atol=1e-6)
    assert torch.allclose(t["reward"], torch.zeros(3, 4), rtol=0, atol=1e-5)
    assert model.training and model.heads["teacher"].training and model.necks["teacher"][0].training
    assert all(m.training for m in model.heads["teacher"].modules())
    torch.manual_seed(1)
    t2 = model(batch(), torch.Generator().manual_seed(0))["teacher"]
    assert not torch.allclose(t["feats"], t2["feats"])  # DropPath active in the loss path


def test_block_queries_equals_the_full_block_for_those_tokens():
    enc = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=1, num_part_tokens=9)
    block = enc.blocks[0].eval()
    x = torch.randn(2, 20, 192)
    with torch.no_grad():
        full = block(x)
        for n in (1, 10, 20):
            assert torch.allclose(block_queries(block, x, n), full[:, :n], atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        block_queries(block.train(), x, 1)
    fixed = FEPModule(enc.blocks[0], enc.norm, 10, 9, "customised", "learned").decoder[0].eval()
    with pytest.raises(ValueError, match="MHSAFix"):
        block_queries(fixed, x, 1)


def test_reward_scoring_reads_the_same_global_feature_as_a_full_decode():
    """p^m of Eq. (8) uses the decoder's last layer for the [cls] query only: same value as scoring
    the full eval-mode decode of the sampled mask (episode 0)."""
    cfg = dataclasses.replace(TINY, drop_path=0.1)
    model = build_model(cfg, num_classes=3, num_cameras=2, img_size=(H, W)).train()
    torch.manual_seed(0)
    t = model(batch(), torch.Generator().manual_seed(0))["teacher"]
    head, neck, fc = model.heads["teacher"], model.necks["teacher"][0], model.classifiers[0]
    head.eval()
    with torch.no_grad():
        g = head.decode(t["encoded"], t["actions"])[:, 0]  # full decode, [B, D]
        p = fc(bn_batch_stats(neck, g)).softmax(-1).gather(1, batch()["label"][:, None])[:, 0]
    assert torch.allclose(t["p_m"][0], p, atol=1e-5)


def test_one_encoder_pass_for_both_branches_equals_two_passes():
    model = build_model(TINY, num_classes=3, num_cameras=2, img_size=(H, W)).eval()
    b = batch()
    b_occ = batch(seed=1)
    b.update(image_occ=b_occ["image"], z_occ=b_occ["z"])
    with torch.no_grad():
        out = model(b)
        teacher = model.encoder(b["image"], b["z"], b["camid"])
        student = model.encoder(b["image_occ"], b["z_occ"], b["camid"])
    assert torch.allclose(out["teacher"]["encoded"], teacher, atol=1e-5)
    assert torch.allclose(out["student"]["encoded"], student, atol=1e-5)
    assert not torch.allclose(teacher, student)


def test_pretrained_timm_source_goes_through_timm_and_fails_with_the_fix(monkeypatch):
    """``pretrained: timm[:tag]`` asks timm for ``backbone.tag`` with pretrained=True (a download;
    simulated here — tests never touch the network) and loads it like a local file; a failed
    download names the offline fix."""
    import ogfr_core.model.oa_vit as oa_vit

    real_create = timm.create_model
    fake = real_create("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    calls = []

    def downloaded(name, pretrained=False, **kw):
        if pretrained:
            calls.append(name)
            return fake
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(oa_vit.timm, "create_model", downloaded)
    enc = OAViT("vit_tiny_patch16_224", (H, W), 16, 12, depth=2, num_part_tokens=9)
    enc.load_pretrained("timm:augreg_in21k_ft_in1k")
    assert calls == ["vit_tiny_patch16_224.augreg_in21k_ft_in1k"]
    assert torch.equal(enc.blocks[1].mlp.fc2.weight, fake.blocks[1].mlp.fc2.weight)

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(oa_vit.timm, "create_model", offline)
    with pytest.raises(PretrainedWeightsError, match="needs the network.*local file"):
        enc.load_pretrained("timm")


HYBRID = {"patch_embed": "hybrid", "stem_stride": 16, "stem_frozen_blocks": 4}


@pytest.mark.parametrize("overrides,loss", [
    ({}, {}), ({"fep_teacher": False}, {}), ({"fep_student": True}, {}), ({"decoder": "conventional"}, {}),
    ({"oa_vit": False}, {}), ({"mask_method": "none"}, {}), ({"mask_method": "random"}, {}),
    ({"mask_method": "background"}, {}), ({"kd": False}, {}), ({"kd": False, "fep_student": True}, {}),
    ({"fep_student": True, "fep_teacher": False}, {}), ({"method": "baseline"}, {}),
    # Table VII: each knowledge-distillation loss off, and L_mask off
    ({}, {"use_kd": False}), ({}, {"use_mse": False}), ({}, {"use_cos": False}), ({}, {"use_mask": False}),
    ({}, {"use_mse": False, "use_cos": False, "use_kd": False}), ({}, {"kd_detach_teacher": True}),
    # the hybrid ImageNet stem (CPU profile), OGFR and baseline, strides 8 and 16
    (HYBRID, {}), (dict(HYBRID, stem_stride=8), {}), (dict(HYBRID, method="baseline"), {}),
    (dict(HYBRID, stem_frozen_blocks=0), {"use_kd": False}),
])
def test_every_trainable_parameter_gets_a_gradient(overrides, loss):
    """No dead parameters under any model or loss switch (so DDP needs no find_unused_parameters and
    no switch leaves a classifier or BNNeck untrained)."""
    from ogfr_core.config import LossConfig
    from ogfr_core.losses import objective

    model = build_model(dataclasses.replace(TINY, **overrides), num_classes=3, num_cameras=2,
                        img_size=(H, W)).train()
    b = batch()
    out = model(b, torch.Generator().manual_seed(0))
    b["label_map_occ"] = b["label_map"]
    model.loss(out, b, LossConfig(**loss))["total"].backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert dead == []
    if "teacher" in getattr(model, "necks", {}):
        assert not any(p.requires_grad for p in model.necks["teacher"].parameters())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_forward_backward(dtype):
    """The training loop's AMP path (CUDA autocast, fp16) exercised through CPU autocast: the custom
    parts (MHSA_fix, block_queries, agent log-probabilities, batch-statistics BNNeck, losses) accept
    low-precision activations, the loss stays within a few % of fp32 and every gradient is finite."""
    from ogfr_core.config import LossConfig
    from ogfr_core.losses import objective

    cfg = dataclasses.replace(TINY, num_episodes=2, drop_path=0.0)
    totals = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=3, num_cameras=2, img_size=(H, W)).train()
        b = batch()
        with torch.autocast("cpu", dtype=dtype, enabled=amp):
            out = model(b, torch.Generator().manual_seed(0))
            terms = objective(out, b["label"], LossConfig(), model.grid_size, model.num_prefix, b["label_map"])
        terms["total"].backward()
        assert terms["total"].dtype == torch.float32
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        totals[amp] = float(terms["total"].detach())
    assert totals[True] == pytest.approx(totals[False], rel=0.05)


@pytest.mark.parametrize("stride,hw,grid,channels", [
    (16, (128, 64), (8, 4), 96), (8, (128, 64), (16, 8), 32),
    (16, (256, 128), (16, 8), 96), (8, (256, 128), (32, 16), 32),
])
def test_hybrid_stem_shapes(stride, hw, grid, channels):
    """Hybrid patch embedding: the MobileNetV2 feature map at stride s becomes ⌈H/s⌉·⌈W/s⌉ tokens;
    everything after it (part tokens, E_o, Eq. 22 visibility, the erasing mask) sees that grid."""
    from ogfr_core.model.stem import build_stem

    assert build_stem("mobilenetv2", stride)(torch.zeros(1, 3, *hw)).shape == (1, channels, *grid)
    cfg = dataclasses.replace(TINY, patch_embed="hybrid", stem_stride=stride)
    model = build_model(cfg, num_classes=3, num_cameras=2, img_size=hw).eval()
    assert model.grid_size == grid and model.encoder.num_patches == grid[0] * grid[1]
    b = 2
    x, z, cam = torch.randn(b, 3, *hw), torch.zeros(b, 4, dtype=torch.long), torch.tensor([0, 1])
    assert model.encoder(x, z, cam).shape == (b, 1 + 9 + grid[0] * grid[1], 192)
    out = model.extract(x, z, cam)
    assert out["global"].shape == (b, 192) and out["parts"].shape == (b, 8, 192) and out["visibility"].shape == (b, 8)
    assert model.erasing_mask(x, z, cam).shape == (b, *grid)
    assert model.patch_foreground(torch.ones(b, *hw, dtype=torch.long)).shape == (b, grid[0] * grid[1])


def test_hybrid_stem_frozen_blocks_keep_imagenet_statistics():
    """Frozen stem blocks: no gradient, BatchNorm stays in eval mode while the model trains."""
    cfg = dataclasses.replace(TINY, patch_embed="hybrid", stem_stride=16, stem_frozen_blocks=4)
    model = build_model(cfg, num_classes=3, num_cameras=2, img_size=(64, 32)).train()
    stem = model.encoder.patch_embed.backbone
    before = stem.blocks[1].conv[0][1].running_mean.clone()
    trainable_before = stem.blocks[5].conv[0][1].running_mean.clone()
    model(batch(), torch.Generator().manual_seed(0))
    assert not any(p.requires_grad for p in stem.blocks[:4].parameters())
    assert all(p.requires_grad for p in stem.blocks[4:].parameters())
    assert not stem.blocks[1].training and stem.blocks[5].training
    assert torch.equal(stem.blocks[1].conv[0][1].running_mean, before)
    assert not torch.equal(stem.blocks[5].conv[0][1].running_mean, trainable_before)


def test_stem_weights_need_the_hybrid_embedding(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="patch_embed: hybrid"):
        build_model(dataclasses.replace(TINY, stem_weights=str(tmp_path / "w.pt")), 3, 2, (H, W))
    with pytest.raises(PretrainedWeightsError, match="dvc repro pretrained"):
        build_model(dataclasses.replace(TINY, patch_embed="hybrid", stem_weights=str(tmp_path / "w.pt")), 3, 2, (H, W))


def test_registry_builds_every_method_and_names_them_on_a_typo():
    """``train.model.method`` selects a registered module; an unknown name lists the registered ones."""
    from ogfr_core.model import METHODS, ReIDMethod

    assert {"ogfr", "baseline"} <= set(METHODS)
    for name in METHODS:
        model = build_model(dataclasses.replace(TINY, method=name), 3, 2, (H, W))
        assert isinstance(model, ReIDMethod) and model.method_name == name
        out = model.extract(*[batch()[k] for k in ("image", "z", "camid")])
        assert out["global"].shape[0] == 4 and out["parts"].shape[:2] == out["visibility"].shape
    with pytest.raises(ModelConfigError, match=r"unknown method 'transreid'; registered methods: .*baseline.*ogfr"):
        build_model(dataclasses.replace(TINY, method="transreid"), 3, 2, (H, W))


def test_global_only_methods_share_one_extract_in_eval_mode():
    """Every method but OGFR inherits ``ReIDMethod.extract``: its ``global_feature`` computed in eval
    mode (BN running statistics: equal to a manual eval-mode call), empty parts, train mode restored,
    also when the feature raises."""
    from ogfr_core.model import METHODS
    from ogfr_core.model.base import ReIDMethod

    b = batch()
    for name in sorted(set(METHODS) - {"ogfr"}):
        model = build_model(dataclasses.replace(TINY, method=name), 3, 2, (H, W)).train()
        assert type(model).extract is ReIDMethod.extract, name
        out = model.extract(b["image"], b["z"], b["camid"])
        assert model.training, name
        with torch.no_grad():
            expected = model.eval().global_feature(b["image"], b["camid"])
        model.train()
        assert torch.equal(out["global"], expected), name
        d = expected.shape[1]
        assert out["parts"].shape == (4, 0, d) and out["visibility"].shape == (4, 0), name
        assert out["visibility"].dtype == torch.bool

    def broken(images, camids):
        assert not model.training  # called in eval mode
        raise RuntimeError("feature failed")

    model.global_feature = broken
    with pytest.raises(RuntimeError, match="feature failed"):
        model.extract(b["image"], b["z"], b["camid"])
    assert model.training  # restored after the error


def _randomise_bn(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine (a fresh BN is the identity map, which would hide a
    wrong fold)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))


def test_frozen_stem_blocks_fold_batch_norm_into_the_convolutions():
    """The frozen blocks run with BN folded into the convolutions: same output as the unfused blocks
    (to float rounding), and the folded copy follows a change of the frozen weights (a load)."""
    from ogfr_core.model.stem import build_stem

    stem = build_stem("mobilenetv2", 16, frozen_blocks=4).train()
    _randomise_bn(stem)
    x = torch.randn(3, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        stem(x)
        fused = stem._fused[1]
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        plain = stem.blocks[:4](x)  # eval mode: the frozen blocks' own forward
        torch.testing.assert_close(fused(x), plain, rtol=1e-5, atol=1e-5 * float(plain.abs().max()))
        assert "_fused" not in "".join(stem.state_dict())  # a cache, never saved
        # a load_state_dict (copy_) bumps the tensors' versions: the folded copy is rebuilt
        state = {k: v.clone() for k, v in stem.state_dict().items()}
        state["blocks.1.conv.0.1.running_mean"] += 1.0
        stem.load_state_dict(state)
        plain2 = stem.blocks[:4](x)
        assert not torch.allclose(plain2, plain)
        torch.testing.assert_close(stem._frozen_forward()(x), plain2, rtol=1e-5, atol=1e-5 * float(plain2.abs().max()))
        stem.fuse_frozen_bn = False  # the switch: frozen blocks as they are
        stem._fused = None
        stem(x)
        assert stem._fused is None


def test_training_loss_equals_the_unoptimised_code_path(monkeypatch):
    """The loss of a fixed batch (fixed seed and model, hybrid stem with 4 frozen blocks, teacher FEP
    with a learned agent) is the same within 1e-5 with this module's speed-ups as with the code they
    replaced: the frozen stem blocks unfolded and Eq. (19) by full bilinear upsampling (the reference
    implementation kept in tests/test_losses.py)."""
    import ogfr_core.losses as losses
    from ogfr_core.config import LossConfig
    from tests.test_losses import _mask_loss_reference

    cfg = dataclasses.replace(TINY, patch_embed="hybrid", stem_stride=16, stem_frozen_blocks=4)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=3, num_cameras=2, img_size=(64, 32)).train()
    _randomise_bn(model.encoder.patch_embed.backbone.blocks[:4])
    b = 4
    g = torch.Generator().manual_seed(0)
    data = dict(image=torch.randn(b, 3, 64, 32, generator=g), z=torch.randint(0, 2, (b, 4), generator=g),
                camid=torch.arange(b) % 2, label=torch.arange(b) % 2,
                label_map=torch.randint(0, 9, (b, 64, 32), generator=g))

    def total() -> float:
        torch.manual_seed(0)
        out = model(data, torch.Generator().manual_seed(0))
        return float(model.loss(out, data, LossConfig())["total"])

    new = total()
    model.encoder.patch_embed.backbone.fuse_frozen_bn = False
    monkeypatch.setattr(losses, "mask_loss", _mask_loss_reference)
    old = total()
    assert abs(new - old) <= 1e-5 * max(1.0, abs(old)), (new, old)
