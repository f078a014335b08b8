"""Student occlusion augmentation: obstacle pasted, label map set to background, z recomputed."""
from __future__ import annotations

import pytest
import torch

from ogfr_core.data.occlusion_aug import occlusion_augment
from ogfr_core.occlusion import OcclusionRule


def _maps(b=4, h=64, w=32):
    lab = torch.zeros(b, h, w, dtype=torch.long)
    lab[:, 4:12, 12:20] = 1  # head
    lab[:, 12:30, 8:24] = 4  # torso
    lab[:, 30:60, 10:22] = 5  # legs (no arms -> z_arms = 1)
    return lab


def test_occlusion_pastes_obstacle_and_updates_labels():
    torch.manual_seed(0)
    imgs = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 64, 32).clone()  # image i = value i
    lab = _maps()
    z = torch.tensor([[0, 1, 0, 0]] * 4)
    out = occlusion_augment(imgs, lab, z, prob=1.0, area=(0.3, 0.4), rule=OcclusionRule(), source="fed",
                            generator=torch.Generator().manual_seed(1))
    assert out.applied.all()
    for i in range(4):
        y, x, h, w = out.boxes[i].tolist()
        assert 0.25 * 64 * 32 <= h * w <= 0.45 * 64 * 32
        box = out.images[i, :, y:y + h, x:x + w]
        assert bool((box != i).all())  # cut from another image of the batch
        assert bool((out.label_maps[i, y:y + h, x:x + w] == 0).all())
        outside = torch.ones(64, 32, dtype=torch.bool)
        outside[y:y + h, x:x + w] = False
        assert torch.equal(out.label_maps[i][outside], lab[i][outside])
    # z can only gain occluded parts; arms stay occluded
    assert bool((out.z >= z).all()) and bool((out.z[:, 1] == 1).all())
    assert torch.equal(imgs, torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 64, 32))  # input untouched


def test_covering_a_part_marks_it_occluded():
    from ogfr_core.occlusion import coarse_counts, occlusion_labels, scaled_threshold

    lab = _maps(8)
    imgs = torch.zeros(8, 3, 64, 32)
    z = torch.tensor([[0, 1, 0, 0]] * 8)
    out = occlusion_augment(imgs, lab, z, prob=1.0, area=(0.5, 0.9), rule=OcclusionRule(lam=40.0), source="background",
                            generator=torch.Generator().manual_seed(0))
    # z follows Eq. (1)-(2) on the augmented maps with λ scaled to 64x32 (40 -> 2.5 px)
    expect = torch.maximum(z, occlusion_labels(coarse_counts(out.label_maps), scaled_threshold(40.0, (64, 32))))
    assert torch.equal(out.z, expect)
    assert bool((out.z[:, [0, 2, 3]] == 1).any())  # some big obstacle hid a part


def test_prob_zero_is_identity_and_deterministic():
    lab = _maps()
    imgs = torch.randn(4, 3, 64, 32)
    z = torch.zeros(4, 4, dtype=torch.long)
    out = occlusion_augment(imgs, lab, z, prob=0.0, area=(0.1, 0.4), rule=OcclusionRule())
    assert torch.equal(out.images, imgs) and torch.equal(out.z, z) and not out.applied.any()
    a = occlusion_augment(imgs, lab, z, prob=0.5, area=(0.1, 0.4), rule=OcclusionRule(), generator=torch.Generator().manual_seed(3))
    b = occlusion_augment(imgs, lab, z, prob=0.5, area=(0.1, 0.4), rule=OcclusionRule(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and torch.equal(a.z, b.z)


def test_bad_inputs():
    with pytest.raises(ValueError, match="image resolution"):
        occlusion_augment(torch.zeros(1, 3, 64, 32), torch.zeros(1, 32, 16, dtype=torch.long),
                          torch.zeros(1, 4, dtype=torch.long), prob=1, area=(0.1, 0.2), rule=OcclusionRule())
    with pytest.raises(ValueError, match="occlusion_area"):
        occlusion_augment(torch.zeros(1, 3, 64, 32), torch.zeros(1, 64, 32, dtype=torch.long),
                          torch.zeros(1, 4, dtype=torch.long), prob=1, area=(0.5, 0.2), rule=OcclusionRule())


def test_background_source_prefers_background_obstacles():
    lab = _maps(16)
    imgs = lab[:, None].float().expand(16, 3, 64, 32).clone()  # pixel value = its part label
    z = torch.zeros(16, 4, dtype=torch.long)

    def bg_share(source):
        out = occlusion_augment(imgs, lab, z, prob=1.0, area=(0.1, 0.2), rule=OcclusionRule(), source=source,
                                generator=torch.Generator().manual_seed(7))
        pasted = torch.cat([out.images[i, 0, y:y + h, x:x + w].flatten() for i, (y, x, h, w) in enumerate(out.boxes.tolist())])
        return (pasted == 0).float().mean().item()

    assert bg_share("background") > bg_share("fed") + 0.1
