"""params.yaml loads into typed sections; unknown / mistyped / missing keys are errors naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from ogfr_core.config import (
    ConfigError, DataConfig, EvaluateConfig, OcclusionConfig, ParseConfig, ReportConfig,
    TrainConfig, from_dict, load_section, read_params,
)

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {
    "data": DataConfig, "parse": ParseConfig, "occlusion": OcclusionConfig, "train": TrainConfig,
    "evaluate": EvaluateConfig, "report": ReportConfig,
}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_repo_params_load_strictly(section):
    cfg = load_section(REPO / "params.yaml", section, SECTIONS[section])
    assert isinstance(cfg, SECTIONS[section])


def test_paper_hyper_parameters_in_params_yaml():
    # OGFR §IV-B values that the CPU profile must not change (its optimiser is AdamW, chosen on the
    # validation split; the paper profile restores SGD, lr 0.008, wd 1e-4, momentum 0.9)
    from ogfr_core.config import deep_merge, read_params

    paper = from_dict(TrainConfig, deep_merge(read_params(REPO / "params.yaml"),
                                              read_params(REPO / "params/paper.yaml"))["train"], "train")
    assert (paper.optimizer, paper.lr, paper.momentum, paper.weight_decay) == ("sgd", 0.008, 0.9, 1e-4)
    assert (paper.model.patch_embed, paper.model.stride, paper.model.depth, paper.epochs) == ("conv", 12, 0, 120)
    train = load_section(REPO / "params.yaml", "train", TrainConfig)
    assert train.ids_per_batch * train.images_per_id == 64 and train.images_per_id == 4
    assert (train.loss.alpha, train.loss.beta, train.loss.mu1, train.loss.mu2) == (0.3, 0.4, 0.5, 0.5)
    assert (train.model.gamma_occ, train.model.gamma_cam, train.model.num_parts) == (3.0, 3.0, 8)
    assert load_section(REPO / "params.yaml", "occlusion", OcclusionConfig).lam == 5.0


def test_nested_sections_and_type_coercion():
    cfg = from_dict(TrainConfig, {"epochs": 3, "model": {"stride": 12}, "augment": {"pad": 4,
                                                                                  "mean": [0, 0, 0]}})
    assert cfg.epochs == 3 and cfg.model.stride == 12 and cfg.augment.pad == 4
    assert cfg.augment.mean == (0.0, 0.0, 0.0) and isinstance(cfg.augment.mean[0], float)
    assert cfg.loss.alpha == 0.3  # defaults fill the rest


@pytest.mark.parametrize("raw, key", [
    ({"epochs": 3, "epoch": 4}, "epoch"),                 # unknown key (typo)
    ({"model": {"strid": 12}}, "strid"),                  # unknown nested key
    ({"epochs": "3"}, "train.epochs"),                    # mistyped
    ({"lr": True}, "train.lr"),                           # bool is not a number
    ({"model": {"method": 3}}, "train.model.method"),     # not a string (names are checked by the registry)
    ({"augment": {"occlusion_area": [0.1]}}, "train.augment.occlusion_area"),
])
def test_bad_keys_are_errors_naming_the_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(TrainConfig, raw, "train")


def test_missing_required_key_and_section(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        from_dict(DataConfig, {"name": "x"}, "data")
    p = tmp_path / "params.yaml"
    p.write_text("data: {name: x, root: y}\n")
    with pytest.raises(ConfigError, match="section 'train' is missing"):
        load_section(p, "train", TrainConfig)
    with pytest.raises(ConfigError, match="not found"):
        read_params(tmp_path / "nope.yaml")


def test_profile_merge_validates_before_writing(tmp_path):
    from ogfr_core.config import apply_profile

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {model: {strid: 12}}\n")
    before = params.read_text()
    with pytest.raises(ConfigError, match="strid"):
        apply_profile(params, bad)
    assert params.read_text() == before  # untouched on error

    paper = apply_profile(params, REPO / "params" / "paper.yaml")
    train = load_section(params, "train", TrainConfig)
    assert (train.model.backbone, train.model.stride, train.model.depth) == ("vit_base_patch16_224", 12, 0)
    assert train.lr == 0.008 and train.loss.alpha == 0.3  # untouched keys survive the merge
    assert load_section(params, "data", DataConfig).height == 256 == paper["data"]["height"]
    # the CPU profile's validation-chosen CpaCol fusion weight is not claimed for the paper configuration
    assert load_section(params, "evaluate", EvaluateConfig).cpacol.weight_source == "official_code"


def test_profile_merge_keeps_comments(tmp_path):
    from ogfr_core.config import apply_profile

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    apply_profile(params, REPO / "params" / "paper.yaml")
    text = params.read_text()
    assert "# PK sampler: P = 16 ids x K = 4 images" in text and "stride: 12" in text
