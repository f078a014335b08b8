"""The learned occluder mask (issue 21, ``ogfr_core.occlusion.learned``): shapes, targets, synthetic
examples and the occlusion table after a mask — on hand-made images and maps (random backbone)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ogfr_core.occlusion import OcclusionRule, coarse_counts
from ogfr_core.occlusion.learned import (INPUT_HW, PART_FINE_IDS, OccluderSegmenter, SynthSpec, fit, part_target,
                                         one_hot_logits, predict, predict_masks, soft_part_shares, synthesize, to_input, to_target)
from ogfr_core.occlusion.table import (COUNT_COLUMNS, LEARNED_OCCLUDER_COLUMNS, LEARNED_SOFT_COLUMNS,
                                       OCCLUDER_COLUMNS, Z_COLUMNS, MissingOccluderMaskError, occlusion_table)

from tests.test_occlusion import parsing_rows
from tests.test_occlusion_rule import body


def test_segmenter_shapes_and_frozen_backbone():
    torch.manual_seed(0)
    frozen = OccluderSegmenter("", train_backbone=False)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())
    out = frozen(torch.randn(2, 3, *INPUT_HW))
    assert out.shape == (2, 1, INPUT_HW[0] // 4, INPUT_HW[1] // 4)
    occ, parts = frozen.eval().forward_parts(torch.randn(2, 3, *INPUT_HW))
    assert occ.shape == out.shape and parts.shape == (2, 5, INPUT_HW[0] // 4, INPUT_HW[1] // 4)
    frozen.train()
    out.sum().backward()  # the head learns, the frozen backbone gets no gradient
    assert frozen.lateral[0].weight.grad is not None
    assert all(p.grad is None for p in frozen.backbone.parameters())
    tuned = OccluderSegmenter("", train_backbone=True).train()
    assert all(p.requires_grad for p in tuned.backbone.parameters())
    assert not any(m.training for m in tuned.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_target_is_the_covered_share_of_each_cell():
    changed = np.zeros((256, 128), bool)
    changed[:, :64] = True  # left half of the crop
    changed[200:, 64:] = True  # and the bottom rows 200..255 on the right
    t = to_target(changed)
    assert t.shape == (1, 32, 16)
    assert torch.all(t[0, :, :8] == 1)
    assert torch.all(t[0, :24, 8:] == 0)  # rows 0..191 of the crop untouched on the right
    assert torch.allclose(t[0, 25:, 8:], torch.ones(7, 8))  # rows 200..255 -> cells 25..31
    x = to_input(np.full((160, 60, 3), 255, np.uint8))
    assert x.shape == (3, *INPUT_HW) and torch.allclose(x[0], torch.full(INPUT_HW, (1 - 0.485) / 0.229))


def _crops(n: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (160, 64, 3), dtype=np.uint8) for _ in range(n)]
    return images, [body() for _ in range(n)]


def test_segmenter_init_is_the_seeds_alone():
    """The stage's model is reproducible from occluder.seed: the new layers' init does not depend on the
    global RNG's state (it did: the first stage runs drew it from an unseeded process), nor changes it."""
    torch.manual_seed(123)
    a = OccluderSegmenter("", seed=0).state_dict()
    after = torch.rand(1)  # the global RNG after a build (the backbone's random init draws from it)
    torch.manual_seed(456)
    b = OccluderSegmenter("", seed=0).state_dict()
    torch.manual_seed(123)
    c = OccluderSegmenter("", seed=1).state_dict()
    assert torch.equal(torch.rand(1), after)  # the seeded layers did not draw from the global RNG
    new = [k for k in a if k.startswith(("lateral.", "head.")) and a[k].is_floating_point() and a[k].numel() > 1]
    assert new and all(torch.equal(a[k], b[k]) for k in new)
    convs = [k for k in new if k.endswith("weight") and not k.startswith("head.1.")]  # head.1: BatchNorm (ones)
    assert convs and not any(torch.equal(a[k], c[k]) for k in convs)


def test_synthesize_changes_only_the_reported_pixels():
    (image, source), (_, source_map) = _crops(2)[0], _crops(2)[1]
    same, none = synthesize(np.random.default_rng(0), image, source, source_map, SynthSpec(none_prob=1.0))
    assert same is image and not none.any()
    for seed in range(6):  # person and object occluders, from every edge
        occluded, changed = synthesize(np.random.default_rng(seed), image, source, source_map, SynthSpec(none_prob=0.0))
        assert changed.any() and changed.shape == image.shape[:2]
        np.testing.assert_array_equal(occluded[~changed], image[~changed])
        assert 0.05 < changed.mean() <= 0.55  # occlude.area (0.2, 0.5) of the crop, a person cut-out less


def test_covered_reading_through_the_occlusion_table_hand_values():
    """The occlusion table (what the stages and the probe score) reads a predicted mask the covered way."""
    lm = body()  # head 32x64 px, arms 2 x 96x32, torso 96x64, legs 128x128
    mask = np.zeros_like(lm, bool)
    mask[128:, :] = True  # the whole legs
    mask[32:80, 32:96] = True  # half the torso
    rows = parsing_rows({"a": lm, "b": lm})
    none = {"a": mask, "b": np.zeros_like(mask)}
    t = occlusion_table(rows, OcclusionRule("covered", lam=5.0, tau=0.4), none).set_index("key")
    assert t.loc["a", list(COUNT_COLUMNS)].tolist() == [32 * 64, 2 * 96 * 32, 96 * 64, 128 * 128]  # counts before
    assert t.loc["a", list(OCCLUDER_COLUMNS)].tolist() == [0.0, 0.0, 0.5, 1.0]
    assert t.loc["a", list(Z_COLUMNS)].tolist() == [0, 0, 1, 1]
    assert t.loc["b", list(Z_COLUMNS)].tolist() == [0, 0, 0, 0]  # no occluder: exactly Eq. (2)
    at_half = occlusion_table(rows, OcclusionRule("covered", lam=5.0, tau=0.5), none).set_index("key")
    assert at_half.loc["a", list(Z_COLUMNS)].tolist() == [0, 0, 0, 1]  # > tau, not >=


def test_part_target_is_the_coarse_share_of_each_cell():
    """The part head's target: per 8x8 cell of the 256x128 map, the share of background / head / arms /
    torso / legs (fine ids merged: right arm 3 -> arms, foot 7 -> legs)."""
    lm = np.zeros((256, 128), np.uint8)
    lm[:8, :8] = 1  # head fills cell (0, 0)
    lm[8:16, :4] = 3  # right arm: left half of cell (1, 0)
    lm[248:, 120:] = 7  # left foot fills cell (31, 15)
    t = part_target(lm)
    assert t.shape == (5, 32, 16) and torch.allclose(t.sum(0), torch.ones(32, 16))
    assert t[1, 0, 0] == 1 and t[0, 0, 0] == 0
    assert t[2, 1, 0] == 0.5 and t[0, 1, 0] == 0.5
    assert t[4, 31, 15] == 1 and t[0, 5, 5] == 1


def test_learned_parts_reading_through_the_occlusion_table_hand_values():
    """The learned_parts rule reads the covered share on the learned parse, not on the parser's label map:
    a parse that drew an occluding pedestrian's legs as the target's (no legs under the mask) reads the
    legs visible; the learned parse that puts the target's legs under the mask reads them occluded. Eq. (2)
    reads the parser's counts: a part the learned parse misses is not occluded for it."""
    lm = body()  # head 32x64 px, arms 2 x 96x32, torso 96x64, legs 128x128 (rows 128..255)
    mask = np.zeros_like(lm, bool)
    mask[192:, :] = True  # the lower half of the legs
    learned = lm.copy()
    learned[learned == 6] = 5  # coarse classes are drawn as the first fine id of each part
    learned[128:, :] = np.where(learned[128:, :] > 0, 5, 0)
    parsed = lm.copy()
    parsed[192:, :] = 0  # the occluded image's parse lost the covered legs, and drew them higher up
    parsed[96:128, 32:96] = 5
    rows = parsing_rows({"a": parsed})
    rule = OcclusionRule("learned_parts", lam=5.0, tau=0.4)
    t = occlusion_table(rows, rule, {"a": mask}, {"a": learned}).set_index("key")
    assert t.loc["a", list(LEARNED_OCCLUDER_COLUMNS)].tolist() == [0.0, 0.0, 0.0, 0.5]
    assert t.loc["a", list(Z_COLUMNS)].tolist() == [0, 0, 0, 1]
    no_torso = np.where(learned == 4, 0, learned).astype(np.uint8)  # the learned parse draws no torso
    t2 = occlusion_table(rows, rule, {"a": mask}, {"a": no_torso}).set_index("key")
    assert t2.loc["a", "learned_occluder_torso"] == 0.0 and t2.loc["a", list(Z_COLUMNS)].tolist() == [0, 0, 0, 1]
    covered = occlusion_table(rows, OcclusionRule("covered", lam=5.0, tau=0.4), {"a": mask}, {"a": learned})
    assert covered.set_index("key").loc["a", "occluder_legs"] == 0.0  # the parser's map: nothing under the mask
    assert covered.set_index("key").loc["a", "z_legs"] == 0
    with pytest.raises(MissingOccluderMaskError, match=f"the {rule.rule} occlusion rule needs .*learned parse"):
        occlusion_table(rows, rule, {"a": mask})
    with pytest.raises(MissingOccluderMaskError, match="no learned parse"):
        occlusion_table(rows, rule, {"a": mask}, {"b": learned})


def test_soft_part_shares_hand_values_and_one_hot_parity():
    """learned_soft reads s_c = sum p_c m / sum p_c on the upsampled probabilities: a 50 % arm under the
    occluder counts half; a one-hot parse gives the argmax parse's share exactly."""
    lg = np.full((5, 4, 2), -60.0, np.float32)
    lg[2, :2] = 0.0  # arms sure in the top two rows
    lg[[0, 2], 2:] = 0.0  # arms or background 50/50 in the bottom two rows
    mask = np.zeros((4, 2), bool)
    mask[2:] = True  # the occluder covers the bottom rows
    s = soft_part_shares([lg], [mask])
    assert s.shape == (1, 4) and s[0, 1] == pytest.approx(4 * 0.5 / (4 + 4 * 0.5))  # 4 covered px at 0.5: 1/3
    assert s[0, [0, 2, 3]].tolist() == [0, 0, 0]  # ~e^-60 of mass in all: not drawn, as in an argmax parse
    lm = body()
    learned = np.where(lm == 6, 5, np.where(lm == 3, 2, lm)).astype(np.uint8)
    occ = np.zeros_like(lm, bool)
    occ[150:, :] = True
    from ogfr_core.occlusion.table import _covered_shares

    hard = _covered_shares(coarse_counts(learned)[None], [learned], [occ])
    assert soft_part_shares([one_hot_logits(learned)], [occ]) == pytest.approx(hard, abs=1e-9)
    with pytest.raises(ValueError, match="2 logit maps but 1 masks"):
        soft_part_shares([lg, lg], [mask])


def test_learned_soft_rule_through_the_occlusion_table():
    """The learned_soft rule's z comes from the part probabilities: arms 50/50 with background lose the
    argmax (no arm drawn: share 0, not occluded under learned_parts) but keep their share under the soft
    reading (2/3 covered: occluded). Without part logits it names the stage to rerun."""
    lm = body()  # arms and torso rows 32-127, legs 128-255
    learned = np.where(lm == 6, 5, np.where(lm == 3, 2, lm)).astype(np.uint8)
    lg = one_hot_logits(learned)
    arms = learned == 2
    lg[0][arms] = 0.0  # background as likely as arms there: the argmax (first index) draws background
    argmax = PART_FINE_IDS[lg.argmax(0)]
    assert not (argmax == 2).any()
    mask = np.zeros_like(lm, bool)
    mask[64:128, :] = True  # the lower 2/3 of the arms and the torso
    rows = parsing_rows({"a": lm})
    soft = OcclusionRule("learned_soft", lam=5.0, tau=0.5)
    t = occlusion_table(rows, soft, {"a": mask}, {"a": argmax}, {"a": lg}).set_index("key")
    assert t.loc["a", list(LEARNED_SOFT_COLUMNS)].tolist() == pytest.approx([0, 2 / 3, 2 / 3, 0], abs=1e-6)
    assert t.loc["a", list(LEARNED_OCCLUDER_COLUMNS)].tolist() == pytest.approx([0, 0, 2 / 3, 0], abs=1e-6)
    assert t.loc["a", list(Z_COLUMNS)].tolist() == [0, 1, 1, 0]
    hard = occlusion_table(rows, OcclusionRule("learned_parts", lam=5.0, tau=0.5), {"a": mask}, {"a": argmax})
    assert hard.loc[0, list(Z_COLUMNS)].tolist() == [0, 0, 1, 0]
    assert hard["learned_soft_occluder_arms"].isna().all()  # no logits: NaN (learned_parts does not read them)
    with pytest.raises(MissingOccluderMaskError, match="part logits"):
        occlusion_table(rows, soft, {"a": mask}, {"a": argmax})
    with pytest.raises(MissingOccluderMaskError, match="no learned part logits"):
        occlusion_table(rows, soft, {"a": mask}, {"a": argmax}, {"b": lg})


def test_fit_and_predict_on_tiny_random_inputs():
    images, maps = _crops(4)
    model = OccluderSegmenter("", train_backbone=False)
    res = fit(model, images, maps, np.array([0, 0, 1, 1]), SynthSpec(none_prob=0.5), steps=2, batch_size=2, lr=1e-3,
              seed=0, holdout=(images, maps, np.array([0, 0, 1, 1])), log_every=1)
    assert len(res.losses) == 2 and all(np.isfinite(res.losses)) and res.examples == 4
    assert len(res.part_losses) == 2 and all(np.isfinite(res.part_losses))
    assert set(res.holdout) == {"examples", "pixel_iou", "pixel_accuracy", "threshold", "part_accuracy"}
    assert res.holdout["examples"] == 8 and 0 <= res.holdout["pixel_iou"] <= 1 and 0 <= res.holdout["part_accuracy"] <= 1
    seg = predict(model, dict(zip("abcd", images)).__getitem__, list("abcd"), (256, 128))
    assert set(seg.parts) == set(seg.part_logits) == set("abcd")
    assert all(g.shape == (5, 32, 16) and g.dtype == np.float32 for g in seg.part_logits.values())
    assert all(m.shape == (256, 128) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1, 2, 4, 5}
               for m in seg.parts.values())
    masks = predict_masks(model, dict(zip("abcd", images)).__getitem__, list("abcd"), (256, 128))
    assert set(masks) == set("abcd") and all(m.shape == (256, 128) and m.dtype == bool for m in masks.values())
    with pytest.raises(ValueError, match="2 identities"):
        fit(model, images, maps, np.zeros(4, int), SynthSpec(), steps=1, batch_size=2, lr=1e-3, seed=0)


def test_segmenter_weights_round_trip_and_errors(tmp_path):
    """save_segmenter / load_segmenter give the same logits; a missing or foreign file is one error
    naming the file and the stage; segment_index reads an index's images into label-size masks."""
    import pandas as pd
    from PIL import Image
    from safetensors.torch import save_file

    from ogfr_core.occlusion.learned import OccluderWeightsError, load_segmenter, save_segmenter, segment_index

    torch.manual_seed(0)
    model = OccluderSegmenter("").eval()
    path = tmp_path / "models" / "segmenter.safetensors"
    save_segmenter(model, path)
    loaded = load_segmenter(path)
    x = torch.randn(2, 3, *INPUT_HW)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(OccluderWeightsError, match=r"missing\.safetensors.*dvc repro occluder"):
        load_segmenter(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(OccluderWeightsError, match=r"foreign\.safetensors: not an occluder segmenter"):
        load_segmenter(tmp_path / "foreign.safetensors")
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 20, 3), 128, np.uint8)).save(tmp_path / name)
    masks = segment_index(loaded, pd.DataFrame({"key": ["ka", "kb"], "path": ["a.png", "b.png"]}), tmp_path,
                          (16, 8), 0.5)
    assert sorted(masks.masks) == ["ka", "kb"] and masks.masks["ka"].shape == (16, 8) and masks.masks["ka"].dtype == bool
    assert np.array_equal(masks.masks["ka"], masks.masks["kb"])  # same pixels, same mask
    assert np.array_equal(masks.parts["ka"], masks.parts["kb"]) and masks.parts["ka"].shape == (16, 8)
