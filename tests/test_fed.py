"""FED (method ``fed``): NPO augmentation and stripe masks, OEM, memory (Eq. 3), memory search, FDM,
the losses (Eq. 2, 9, 10) against hand-computed values, shapes, gradients, and a few real steps."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from _real_batch import H, W, real_batch
from ogfr_core.config import LossConfig, ModelConfig, TrainConfig
from ogfr_core.data.occlusion_aug import npo_augment, npo_stripe_targets
from ogfr_core.losses.fed import fed_objective, memory_contrastive_loss, memory_logits, oem_mse_loss
from ogfr_core.model import build_model
from ogfr_core.model.fed import FeatureDiffusionModule, FeatureMemory, OcclusionErasingModule, search_memory

TINY = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, stride=16, patch_size=16, drop_path=0.0, method="fed")
HYBRID = {"patch_embed": "hybrid", "stem_stride": 16, "stem_frozen_blocks": 4}


def _batch(b: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(b, H, W, dtype=torch.long)
    lab[:, 8:56, 8:24] = 4  # a person in the middle, background at the sides
    return dict(image=torch.randn(b, 3, H, W, generator=g), z=torch.zeros(b, 4, dtype=torch.long),
                camid=torch.arange(b) % 2, label=torch.arange(b) // 2, label_map=lab)


# ------------------------------------------------------------------------------------------------
# NPO augmentation and the OEM targets
# ------------------------------------------------------------------------------------------------
def test_npo_obstacles_are_corner_anchored_horizontal_or_vertical_bands():
    b = 16
    imgs = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, H, W).clone()  # image i = value i
    lab = _batch(b)["label_map"]
    out = npo_augment(imgs, lab, torch.zeros(b, 4, dtype=torch.long), prob=1.0, vertical_prob=0.5,
                      generator=torch.Generator().manual_seed(0))
    assert out.applied.all()
    kinds = set()
    for i, (y, x, h, w) in enumerate(out.boxes.tolist()):
        assert y in (0, H - h) and x in (0, W - w)  # one of the four corners
        if w == W and h < H:
            kinds.add("horizontal")
            assert H // 4 <= h <= H // 2
        else:
            kinds.add("vertical")
            assert h == H and W // 4 <= w <= W // 2
        assert bool((out.images[i, :, y:y + h, x:x + w] != i).all())  # cut from another image
        assert bool((out.label_maps[i, y:y + h, x:x + w] == 0).all())
        outside = torch.ones(H, W, dtype=torch.bool)
        outside[y:y + h, x:x + w] = False
        assert torch.equal(out.images[i][:, outside], imgs[i][:, outside])
    assert kinds == {"horizontal", "vertical"}
    for vp, kind in ((0.0, "horizontal"), (1.0, "vertical")):
        o = npo_augment(imgs, lab, torch.zeros(b, 4, dtype=torch.long), vertical_prob=vp,
                        generator=torch.Generator().manual_seed(1))
        assert all((w == W) if kind == "horizontal" else (h == H) for _, _, h, w in o.boxes.tolist())
    none = npo_augment(imgs, lab, torch.zeros(b, 4, dtype=torch.long), prob=0.0)
    assert torch.equal(none.images, imgs) and not none.applied.any()
    with pytest.raises(ValueError, match="vertical_prob"):
        npo_augment(imgs, lab, torch.zeros(b, 4, dtype=torch.long), vertical_prob=1.5)


def test_npo_background_source_cuts_background():
    """Obstacles are cut where the source image's label map is background (FED pastes background /
    object patches, not people): more background than a random position in the source image."""
    b = 16
    lab = _batch(b)["label_map"]
    imgs = lab[:, None].float().expand(b, 3, H, W).clone()  # pixel value = its part label

    def bg_share(source):
        out = npo_augment(imgs, lab, torch.zeros(b, 4, dtype=torch.long), source=source,
                          generator=torch.Generator().manual_seed(3))
        pasted = torch.cat([out.images[i, 0, y:y + h, x:x + w].flatten()
                            for i, (y, x, h, w) in enumerate(out.boxes.tolist())])
        return (pasted == 0).float().mean().item()

    assert bg_share("background") > bg_share("fed") + 0.1


@pytest.mark.parametrize("box,applied,expected", [
    ((0, 0, 16, 32), True, [0, 1, 1, 1]),     # top quarter: stripe 0 fully covered
    ((0, 0, 28, 32), True, [0, 1, 1, 1]),     # stripe 1 covered 12/16 = 0.75: not more than 3/4
    ((0, 0, 29, 32), True, [0, 0, 1, 1]),     # stripe 1 covered 13/16 > 3/4
    ((48, 0, 16, 32), True, [1, 1, 1, 0]),    # bottom quarter
    ((36, 0, 28, 32), True, [1, 1, 1, 0]),    # stripe 2 covered 12/16: visible
    ((0, 0, 16, 28), True, [0, 1, 1, 1]),     # 28/32 of the width: 0.875 > 3/4
    ((0, 0, 16, 24), True, [1, 1, 1, 1]),     # 24/32 = 0.75: visible
    ((0, 0, 64, 16), True, [1, 1, 1, 1]),     # vertical obstacle: ignored (§3.1)
    ((0, 0, 16, 32), False, [1, 1, 1, 1]),    # no obstacle
])
def test_oem_target_for_a_hand_placed_obstacle(box, applied, expected):
    t = npo_stripe_targets(torch.tensor([box]), torch.tensor([applied]), H, W, num_stripes=4, threshold=0.75)
    assert t.tolist() == [[float(v) for v in expected]]


def test_model_targets_follow_the_pasted_obstacles():
    model = build_model(TINY, 2, 2, (H, W)).train()
    b = _batch()
    out = model(b, torch.Generator().manual_seed(0))
    targets = out["score_targets"]
    assert torch.equal(targets[:4], torch.ones(4, 4))  # holistic branch: every stripe is a human part
    assert torch.equal(targets[4:], npo_stripe_targets(out["npo_boxes"], out["npo_applied"], H, W, 4, 0.75))
    assert out["npo_applied"].all()  # npo_prob 1: every image of the second branch


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------
def test_oem_eq1_hand_value():
    oem = OcclusionErasingModule(dim=8, num_stripes=2, reduction=4)  # hidden width 2
    with torch.no_grad():
        fc1, norm, fc2 = oem.scorers[0]
        fc1.weight.zero_()
        fc1.weight[0, 0], fc1.weight[1, 1] = 1.0, 1.0
        fc1.bias.zero_()
        fc2.weight.copy_(torch.tensor([[2.0, 0.5]]))
        fc2.bias.fill_(0.25)
    f = torch.zeros(1, 2, 8)
    f[0, 0, :2] = torch.tensor([3.0, 1.0])
    s = oem(f).detach()
    assert s.shape == (1, 2)
    # W_cp f = [3, 1] -> LN -> [1, -1]/sqrt(1 + eps) -> W_rg: 2 - 0.5, + 0.25
    assert float(s[0, 0]) == pytest.approx(1 / (1 + math.exp(-(1.5 / math.sqrt(1 + 1e-5) + 0.25))), rel=1e-6)
    assert 0 < float(s[0, 1]) < 1


@pytest.mark.parametrize("stride,expected", [(16, [0.5, 10.5, 20.5, 30.5]),   # 4x2 grid: one row per stripe
                                             (12, [5.5, 15.5, 25.5, 35.5])])  # 5x2: adaptive bins of 2 rows
def test_stripes_pool_token_rows(stride, expected):
    model = build_model(dataclasses.replace(TINY, stride=stride), 2, 2, (H, W))
    hp, wp = model.encoder.grid_size
    vals = torch.tensor([[10.0 * r + c for r in range(hp) for c in range(wp)]])  # token value = 10·row + col
    tokens = torch.cat([torch.full((1, 1), -99.0), vals], 1)[..., None].expand(1, 1 + hp * wp, 3)
    assert model.stripes(tokens)[0, :, 0].tolist() == pytest.approx(expected)


def test_memory_initialisation_and_momentum_update_eq3():
    mem = FeatureMemory(num_classes=3, num_features=2, momentum=0.2)
    mem.initialize(torch.tensor([[1.0, 2.0]]), torch.tensor([0]))
    assert mem.valid.tolist() == [True, False, False] and mem.features[0].tolist() == [1.0, 2.0]
    feats = torch.tensor([[3.0, 4.0], [5.0, 6.0], [2.0, 0.0]])
    mem.update(feats, torch.tensor([0, 0, 2]))
    # c_0 = 0.2 · [1, 2] + 0.8 · mean([3, 4], [5, 6]) = [0.2 + 3.2, 0.4 + 4.0]
    assert mem.features[0].tolist() == pytest.approx([3.4, 4.4])
    assert mem.features[2].tolist() == [2.0, 0.0]  # first sighting: the batch mean
    assert mem.features[1].tolist() == [0.0, 0.0] and mem.valid.tolist() == [True, False, True]
    mem.update(torch.tensor([[0.0, 10.0]]), torch.tensor([2]))
    assert mem.features[2].tolist() == pytest.approx([0.4, 8.0])  # 0.2·[2, 0] + 0.8·[0, 10]


def test_per_sample_momentum_update_as_feds_code():
    """memory_update: per_sample — one Eq. (3) step per image in batch order (FED's HybridMemory)."""
    mem = FeatureMemory(num_classes=2, num_features=2, momentum=0.2, per_sample=True)
    mem.set_centres(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([True, False]))
    mem.update(torch.tensor([[3.0, 4.0], [5.0, 6.0], [2.0, 0.0]]), torch.tensor([0, 0, 1]))
    # c_0: 0.2·[1, 0] + 0.8·[3, 4] = [2.6, 3.2]; then 0.2·[2.6, 3.2] + 0.8·[5, 6] = [4.52, 5.44]
    assert mem.features[0].tolist() == pytest.approx([4.52, 5.44])
    # c_1 unseen: initialised to its batch mean [2, 0], then one step towards [2, 0] stays there
    assert mem.features[1].tolist() == pytest.approx([2.0, 0.0]) and mem.valid.all()
    batch_mean = FeatureMemory(num_classes=2, num_features=2, momentum=0.2)
    batch_mean.set_centres(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([True, False]))
    batch_mean.update(torch.tensor([[3.0, 4.0], [5.0, 6.0]]), torch.tensor([0, 0]))
    assert batch_mean.features[0].tolist() == pytest.approx([3.4, 4.0])  # 0.2·[1, 0] + 0.8·[4, 5]


def test_memory_init_pass_fills_every_centre_from_the_training_set():
    """memory_init: train_pass — before training, every identity's centre is the mean eval-mode OEM
    feature of ALL its training images (both memories, as FED's code), not the first batch's; the
    first training batch then only moves the centres by Eq. (3)."""
    cfg = dataclasses.replace(TINY, fed=dataclasses.replace(TINY.fed, memory_init="train_pass"))
    torch.manual_seed(0)
    model = build_model(cfg, 3, 2, (H, W)).train()
    assert model.wants_training_set_pass() and not build_model(TINY, 3, 2, (H, W)).wants_training_set_pass()
    g = torch.Generator().manual_seed(3)
    images, labels = torch.randn(9, 3, H, W, generator=g), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    camids = torch.arange(9) % 2
    batches = [{"image": images[s], "camid": camids[s], "label": labels[s]} for s in (slice(0, 4), slice(4, 9))]
    model.initialize_from_training_set(iter(batches))
    assert model.training  # mode restored
    feats = model.extract(images, None, camids)["global"]  # [9, N·D]
    for k in range(3):
        expect = feats[labels == k].mean(0)
        assert torch.allclose(model.memory_oem.features[k], expect, atol=1e-5)
        assert torch.allclose(model.memory_fdm.features[k], expect, atol=1e-5)
    assert model.memory_oem.valid.all() and model.memory_fdm.valid.all()
    before = model.memory_oem.features.clone()
    b = _batch(4)  # ids 0, 1: their centres move by one momentum step, id 2's stays
    out = model(b, torch.Generator().manual_seed(0))
    assert torch.equal(out["memory_oem"], before)  # the loss compares with the pass's centres
    m = model.fcfg.memory_momentum
    for k in (0, 1):
        expect = m * before[k] + (1 - m) * out["oem_feats"][:4][b["label"] == k].detach().mean(0)
        assert torch.allclose(model.memory_oem.features[k], expect, atol=1e-5)
    assert torch.equal(model.memory_oem.features[2], before[2])
    with pytest.raises(ValueError, match="no image"):
        model.initialize_from_training_set(iter([]))


def test_memory_search_skips_own_identity_and_uninitialised_centres():
    memory = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    valid = torch.tensor([True, True, True, False])
    latents, key_valid = search_memory(torch.tensor([[2.0, 0.0]]), memory, valid, torch.tensor([0]), k=3)
    assert latents.shape == (1, 3, 2)
    assert torch.equal(latents[0, :2], memory[[1, 2]]) and key_valid.tolist() == [[True, True, False]]
    latents, key_valid = search_memory(torch.tensor([[2.0, 0.0]]), memory, valid, torch.tensor([0]), k=8)
    assert latents.shape == (1, 4, 2) and key_valid.sum() == 2  # k clamped to C


def test_fdm_attention_and_masked_keys():
    torch.manual_seed(0)
    fdm = FeatureDiffusionModule(dim=4, num_stripes=2, num_heads=2, ffn_ratio=2)
    query, latents = torch.randn(3, 8), torch.randn(3, 5, 8)
    one = torch.zeros(3, 5, dtype=torch.bool)
    one[:, 2] = True  # a single valid key: all attention on it, f_d = proj(W3 M_2)
    assert torch.allclose(fdm.attention(query, latents, one), fdm.proj(fdm.v(latents[:, 2])), atol=1e-6)
    none = torch.zeros(3, 5, dtype=torch.bool)  # nothing to diffuse: f_d = proj(0)
    assert torch.allclose(fdm.attention(query, latents, none), fdm.proj.bias.expand(3, 8))
    out = fdm(torch.randn(3, 2, 4), torch.rand(3, 2), latents, torch.ones(3, 5, dtype=torch.bool))
    assert out.shape == (3, 2, 4)


def test_fdm_heads_must_divide_the_width():
    from ogfr_core.model import ModelConfigError

    with pytest.raises(ModelConfigError, match="num_heads"):
        build_model(dataclasses.replace(TINY, fed=dataclasses.replace(TINY.fed, num_heads=7)), 2, 2, (H, W))
    with pytest.raises(ModelConfigError, match="num_stripes"):
        build_model(dataclasses.replace(TINY, fed=dataclasses.replace(TINY.fed, num_stripes=5)), 2, 2, (H, W))


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------
def test_oem_mse_eq2():
    assert float(oem_mse_loss(torch.tensor([[0.5, 1.0]]), torch.tensor([[1.0, 0.0]]))) == pytest.approx(0.625)


def test_memory_contrastive_eq9():
    feats = torch.tensor([[2.0, 0.0]])
    memory = torch.tensor([[3.0, 0.0], [0.0, 5.0], [7.0, 7.0]])
    valid = torch.tensor([True, True, False])
    logits = memory_logits(feats, memory, 0.5, valid)
    assert logits[0, :2].tolist() == pytest.approx([2.0, 0.0]) and logits[0, 2] == float("-inf")
    # cosines 1 and 0 over τ = 0.5; the uninitialised third centre is left out
    assert float(memory_contrastive_loss(feats, memory, torch.tensor([0]), 0.5, valid)) == pytest.approx(
        math.log(1 + math.exp(-2)))
    assert float(memory_contrastive_loss(feats, memory, torch.tensor([1]), 0.5, valid)) == pytest.approx(
        math.log(math.exp(2) + 1))
    with pytest.raises(ValueError, match="no initialised centre"):
        memory_contrastive_loss(feats, memory, torch.tensor([2]), 0.5, valid)


def test_fed_objective_eq10():
    eye = torch.eye(2)
    out = {"scores": torch.tensor([[0.5, 1.0], [1.0, 0.0]]), "score_targets": torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
           "global_logits": torch.zeros(2, 2), "oem_logits": torch.zeros(2, 2), "fdm_logits": torch.zeros(2, 2),
           "oem_feats": eye, "fdm_feats": eye, "memory_oem": eye, "memory_fdm": eye,
           "memory_oem_valid": torch.ones(2, dtype=torch.bool), "memory_fdm_valid": torch.ones(2, dtype=torch.bool)}
    terms = fed_objective(out, torch.tensor([0]), temperature=1.0)
    mse = 0.125  # holistic: (0.5 - 1)² / 2; augmented: 0
    ids = 6 * math.log(2)  # six uniform two-class predictions
    contrast = 2 * (math.log(1 + math.exp(-1)) + math.log(1 + math.e))  # cos 1 vs 0, and 0 vs 1, for both memories
    assert float(terms["mse"]) == pytest.approx(mse)
    assert float(terms["id"]) == pytest.approx(ids)
    assert float(terms["contrast"]) == pytest.approx(contrast)
    assert float(terms["total"]) == pytest.approx(0.5 * (mse + ids + contrast))


def test_fed_objective_optional_triplet_and_label_smoothing():
    """triplet_weight w adds ½·w·Σ₄ L_tri (the [cls] and OEM features before the BNNecks, both
    branches); 0 leaves Eq. (10) as it was; the model reads its own label smoothing (null: train.loss's)."""
    from ogfr_core.losses import triplet_loss

    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1])
    b2 = 8
    out = {"scores": torch.rand(b2, 2), "score_targets": torch.ones(b2, 2),
           "global_logits": torch.randn(b2, 2), "oem_logits": torch.randn(b2, 2), "fdm_logits": torch.randn(b2, 2),
           "oem_feats": torch.randn(b2, 4), "fdm_feats": torch.randn(b2, 4), "memory_oem": torch.randn(2, 4),
           "memory_fdm": torch.randn(2, 4), "memory_oem_valid": torch.ones(2, dtype=torch.bool),
           "memory_fdm_valid": torch.ones(2, dtype=torch.bool),
           "global_feats": torch.randn(b2, 3), "oem_feats_raw": torch.randn(b2, 4)}
    plain = fed_objective(out, labels, 0.05)
    assert "triplet" not in plain
    with_tri = fed_objective(out, labels, 0.05, triplet_weight=2.0, margin=0.3)
    labels2 = torch.cat([labels, labels])
    tri = sum(triplet_loss(out[f][r], labels2[r], 0.3) for f in ("global_feats", "oem_feats_raw")
              for r in (slice(0, 4), slice(4, 8)))
    assert float(with_tri["triplet"]) == pytest.approx(float(tri))
    assert float(with_tri["total"]) == pytest.approx(float(plain["total"]) + 0.5 * 2.0 * float(tri))
    smooth = fed_objective(out, labels, 0.05, label_smoothing=0.1)
    assert float(smooth["id"]) != pytest.approx(float(plain["id"]))
    b = _batch()
    for fed_ls, expect in ((None, 0.1), (0.0, 0.0)):
        model = build_model(dataclasses.replace(TINY, fed=dataclasses.replace(TINY.fed, label_smoothing=fed_ls)),
                            2, 2, (H, W)).train()
        o = model(b, torch.Generator().manual_seed(0))
        got = model.loss(o, b, LossConfig(label_smoothing=0.1))
        want = fed_objective(o, b["label"], 0.05, expect)["id"]
        assert float(got["id"].detach()) == pytest.approx(float(want.detach()))


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------
def test_fed_shapes_memory_and_inference_feature():
    model = build_model(TINY, 2, 2, (H, W)).train()
    n, d = 4, model.encoder.embed_dim
    b = _batch()
    out = model(b, torch.Generator().manual_seed(0))
    assert out["scores"].shape == (8, n)
    assert out["oem_feats"].shape == (8, n * d) and out["fdm_feats"].shape == (8, n * d)
    assert out["oem_logits"].shape == (8, 2) and out["global_logits"].shape == (8, 2)
    assert model.memory_oem.valid.all() and model.memory_fdm.valid.all()  # both ids seen
    before = model.memory_oem.features.clone()
    model(b, torch.Generator().manual_seed(1))
    assert not torch.equal(model.memory_oem.features, before)  # momentum step
    model.eval()
    frozen = model.memory_oem.features.clone()
    with torch.no_grad():
        out_eval = model(b, torch.Generator().manual_seed(2))
    assert torch.equal(model.memory_oem.features, frozen)  # no update outside training
    feats = model.extract(b["image"], b["z"], b["camid"])
    assert feats["global"].shape == (4, n * d) and feats["parts"].shape == (4, 0, n * d)
    assert feats["visibility"].shape == (4, 0)
    # the inference feature is the OEM feature f' of the holistic rows, not the FDM's
    assert torch.allclose(feats["global"], out_eval["oem_feats"][:4], atol=1e-5)
    assert not torch.allclose(feats["global"], out_eval["fdm_feats"][:4], atol=1e-2)
    assert "memory_oem.features" in model.state_dict()  # the memories travel with the checkpoint


@pytest.mark.parametrize("overrides", [{}, HYBRID, {"fed": dataclasses.replace(TINY.fed, triplet_weight=1.0,
                                                                               memory_update="per_sample")}])
def test_every_trainable_parameter_gets_a_gradient(overrides):
    model = build_model(dataclasses.replace(TINY, **overrides), 2, 2, (H, W)).train()
    b = _batch()
    out = model(b, torch.Generator().manual_seed(0))
    model.loss(out, b, LossConfig())["total"].backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_a_few_steps_on_a_real_batch_lower_the_loss(shared_root, tmp_path):
    from ogfr_core.training import Trainer

    batch = real_batch(shared_root)
    cfg = TrainConfig(epochs=1, warmup_epochs=0, lr=0.01, log_every=0,
                      model=dataclasses.replace(TINY, depth=2, stride=12))
    torch.manual_seed(0)
    trainer = Trainer(build_model(cfg.model, 4, 2, (H, W)), cfg, tmp_path, {"model": {}}, occlusion=5.0, steps_per_epoch=12)
    hist = [trainer.train_step(batch) for _ in range(12)]
    total = [h["loss/total"] for h in hist]
    assert np.mean(total[-3:]) < 0.5 * np.mean(total[:3]), total
    assert np.mean([h["loss/mse"] for h in hist[-3:]]) < hist[0]["loss/mse"]  # the OEM learns the stripe masks


def test_resume_restores_the_memories(shared_root, tmp_path):
    """The memories are training state: a run interrupted after epoch 1 and resumed from last.pt ends
    with the same losses, weights and memories as an uninterrupted one."""
    from ogfr_core.config import to_dict
    from ogfr_core.training import Trainer, read_checkpoint

    batch = real_batch(shared_root)
    cfg = TrainConfig(epochs=2, warmup_epochs=1, log_every=0, model=TINY)
    meta = dict(model=to_dict(cfg.model), data={"name": "test"}, train=to_dict(cfg), num_classes=4, num_cameras=2,
                height=H, width=W, epochs_trained=0, pretrained_weights="", init_warning="", method="fed")

    def trainer(out):
        torch.manual_seed(0)
        return Trainer(build_model(cfg.model, 4, 2, (H, W)), cfg, out, meta, occlusion=5.0, steps_per_epoch=2)

    def make(epoch):
        g = torch.Generator().manual_seed(epoch)
        for _ in range(2):
            perm = torch.randperm(16, generator=g)
            yield {k: v[perm] for k, v in batch.items()}

    class Stop(Exception):
        pass

    def interrupted(epoch):
        if epoch == 1:
            raise Stop
        return make(epoch)

    full = trainer(tmp_path / "full")
    history = full.fit(make)
    first = trainer(tmp_path / "cut")
    with pytest.raises(Stop):
        first.fit(interrupted)
    resumed = trainer(tmp_path / "cut")
    assert resumed.resume() and resumed.start_epoch == 1
    assert resumed.model.memory_oem.valid.all()  # restored, not re-initialised
    assert resumed.fit(make) == history
    a, b = (read_checkpoint(p / "model.pt")["model"] for p in (tmp_path / "full", tmp_path / "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
