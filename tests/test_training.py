"""Training loop: loss decreases on a small real batch, resume == uninterrupted, seeded runs equal,
checkpoints round-trip with weights_only=True, missing labels and NaN losses stop with clear errors.

Images are real CUHK03-NP crops from ../shared (16 images, 4 ids); the parsing label maps are a
fixed synthetic body layout, since this test must not depend on the parse stage.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ogfr_core.config import ModelConfig, TrainConfig, to_dict
from ogfr_core.model import build_model
from ogfr_core.training import (MissingLabelsError, NonFiniteLossError, Trainer, check_training_labels,
                                load_model, read_checkpoint)
from ogfr_core.training.run import load_training_labels

H, W = 64, 32
MODEL = ModelConfig(backbone="vit_tiny_patch16_224", depth=2, stride=12, drop_path=0.0)


def _layout(b: int) -> torch.Tensor:
    lab = torch.zeros(b, H, W, dtype=torch.long)
    lab[:, 2:10, 11:21] = 1
    lab[:, 10:32, 4:9] = 2
    lab[:, 10:32, 23:28] = 3
    lab[:, 10:32, 9:23] = 4
    lab[:, 32:56, 9:16] = 5
    lab[:, 32:56, 16:23] = 6
    lab[:, 56:62, 9:16] = 7
    lab[:, 56:62, 16:23] = 8
    return lab


@pytest.fixture(scope="module")
def real_batch(shared_root: Path) -> dict[str, torch.Tensor]:
    files = sorted((shared_root / "bounding_box_train").glob("*.jpg"))
    by_pid = defaultdict(list)
    for f in files[:200]:
        by_pid[f.name.split("_")[0]].append(f)
    pids = [p for p in sorted(by_pid) if len(by_pid[p]) >= 4][:4]
    chosen = [(i, f) for i, p in enumerate(pids) for f in by_pid[p][:4]]
    imgs = []
    for _, f in chosen:
        arr = np.asarray(Image.open(f).convert("RGB").resize((W, H), Image.BILINEAR), np.float32) / 255.0
        imgs.append((torch.from_numpy(arr).permute(2, 0, 1) - 0.5) / 0.5)  # [3, H, W]
    camid = [int(f.name.split("_")[1][1]) - 1 for _, f in chosen]
    return dict(image=torch.stack(imgs), label_map=_layout(len(chosen)),
                z=torch.zeros(len(chosen), 4, dtype=torch.long), label=torch.tensor([i for i, _ in chosen]),
                camid=torch.tensor(camid))


def _meta(cfg: TrainConfig) -> dict:
    return dict(model=to_dict(cfg.model), data={"name": "test"}, train=to_dict(cfg), num_classes=4, num_cameras=2,
                height=H, width=W, epochs_trained=0, pretrained_weights="", init_warning="random", method=cfg.model.method)


def _trainer(tmp: Path, cfg: TrainConfig, steps: int) -> Trainer:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, 4, 2, (H, W))
    return Trainer(model, cfg, tmp, _meta(cfg), occlusion=5.0, steps_per_epoch=steps)


def _loader(batch, steps):
    def make(epoch):
        g = torch.Generator().manual_seed(epoch)
        for _ in range(steps):
            perm = torch.randperm(len(batch["label"]), generator=g)
            yield {k: v[perm] for k, v in batch.items()}
    return make


def test_loss_decreases_on_real_batch(tmp_path, real_batch):
    cfg = TrainConfig(epochs=1, warmup_epochs=0, lr=0.01, model=MODEL, log_every=0)
    cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, occlusion_prob=0.0))
    tr = _trainer(tmp_path, cfg, steps=12)
    losses = [tr.train_step(real_batch)["loss/total"] for _ in range(12)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


@pytest.mark.parametrize("method", ["ogfr", "baseline"])
def test_resume_equals_uninterrupted_and_seeded_runs_equal(tmp_path, real_batch, method):
    cfg = TrainConfig(epochs=2, warmup_epochs=1, model=dataclasses.replace(MODEL, method=method,
                      baseline_refresh_epochs=1), log_every=0)
    make = _loader(real_batch, 2)
    full = _trainer(tmp_path / "a", cfg, 2).fit(make)
    again = _trainer(tmp_path / "b", cfg, 2).fit(make)
    assert full == again  # two seeded CPU runs: identical metrics

    class Stop(Exception):
        pass

    def interrupted(epoch):
        if epoch == 1:
            raise Stop
        return make(epoch)

    first = _trainer(tmp_path / "c", cfg, 2)
    with pytest.raises(Stop):
        first.fit(interrupted)
    assert read_checkpoint(tmp_path / "c" / "last.pt")["epoch"] == 1
    resumed = _trainer(tmp_path / "c", cfg, 2)
    assert resumed.resume() and resumed.start_epoch == 1
    history = resumed.fit(make)
    assert history == full  # same next-epoch losses after resume; epoch 1 restored from last.pt's meta
    assert (tmp_path / "c" / "model.pt").is_file()
    # a finished identical run: resume() at epoch == cfg.epochs, fit() only rewrites model.pt
    done = _trainer(tmp_path / "c", cfg, 2)
    assert done.resume() and done.start_epoch == 2
    assert done.fit(make) == full
    meta = read_checkpoint(tmp_path / "c" / "model.pt")["meta"]
    assert meta["epochs_trained"] == 2 and meta["history"] == full


def test_checkpoint_roundtrip_weights_only(tmp_path, real_batch):
    cfg = TrainConfig(epochs=1, warmup_epochs=0, model=MODEL, log_every=0)
    tr = _trainer(tmp_path, cfg, 1)
    tr.fit(_loader(real_batch, 1))
    ck = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ck["meta"]["epochs_trained"] == 1 and ck["meta"]["method"] == "ogfr"
    model, meta = load_model(tmp_path / "model.pt")
    assert meta["init_warning"] == "random" and not model.training
    a = tr.model.extract(real_batch["image"], real_batch["z"], real_batch["camid"])
    b = model.extract(real_batch["image"], real_batch["z"], real_batch["camid"])
    for k in a:
        assert torch.equal(a[k], b[k])


def test_resume_starts_afresh_on_other_model_config(tmp_path, real_batch, caplog):
    cfg = TrainConfig(epochs=1, warmup_epochs=0, model=MODEL, log_every=0)
    _trainer(tmp_path, cfg, 1).fit(_loader(real_batch, 1))
    other = dataclasses.replace(cfg, model=dataclasses.replace(MODEL, decoder="conventional"))
    with caplog.at_level("WARNING", logger="ogfr_core.training.loop"):
        tr = _trainer(tmp_path, other, 1)
        assert not tr.resume() and tr.start_epoch == 0
    assert "config/inputs differs" in caplog.text and "afresh" in caplog.text


@pytest.mark.parametrize("change", ["mu1", "seed"])
def test_changed_params_retrain_from_scratch(tmp_path, real_batch, caplog, change):
    """DVC re-runs `train` when params change and models/ persists: a finished last.pt of another
    config must not be reused (that would re-label old weights with the new config)."""
    cfg = TrainConfig(epochs=1, warmup_epochs=0, model=MODEL, log_every=0)
    make = _loader(real_batch, 1)
    _trainer(tmp_path, cfg, 1).fit(make)
    old = read_checkpoint(tmp_path / "model.pt")
    new_cfg = (dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, mu1=2.0)) if change == "mu1"
               else dataclasses.replace(cfg, seed=7))
    with caplog.at_level("WARNING", logger="ogfr_core.training.loop"):
        tr = _trainer(tmp_path, new_cfg, 1)
        assert not tr.resume() and tr.start_epoch == 0  # epoch counter restarts
    assert "config/inputs differs" in caplog.text and "afresh" in caplog.text
    history = tr.fit(make)
    assert [h["epoch"] for h in history] == [1]
    new = read_checkpoint(tmp_path / "model.pt")
    assert new["meta"]["fingerprint"] != old["meta"]["fingerprint"]
    assert new["meta"]["train"] == to_dict(new_cfg)
    assert any(not torch.equal(new["model"][k], old["model"][k]) for k in old["model"])  # retrained
    assert read_checkpoint(tmp_path / "last.pt")["meta"]["fingerprint"] == new["meta"]["fingerprint"]
    # non-result params (log_every, threads, device) do not break resume
    same = _trainer(tmp_path, dataclasses.replace(new_cfg, log_every=5, threads=1), 1)
    assert same.resume() and same.start_epoch == 1


def test_code_change_is_detected(tmp_path, real_batch, caplog):
    cfg = TrainConfig(epochs=1, warmup_epochs=0, model=MODEL, log_every=0)
    _trainer(tmp_path, cfg, 1).fit(_loader(real_batch, 1))
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    ck["meta"]["fingerprint"] = "stale"
    ck["meta"]["fingerprint_parts"]["code"] = "old-code"
    torch.save(ck, tmp_path / "last.pt")
    with caplog.at_level("WARNING", logger="ogfr_core.training.loop"):
        assert not _trainer(tmp_path, cfg, 1).resume()
    assert "code differs" in caplog.text
    del ck["meta"]["fingerprint"], ck["meta"]["fingerprint_parts"]  # a checkpoint from before fingerprints
    torch.save(ck, tmp_path / "last.pt")
    assert not _trainer(tmp_path, cfg, 1).resume()


def test_nan_loss_names_step_term_and_checkpoint(tmp_path, real_batch):
    cfg = TrainConfig(epochs=2, warmup_epochs=0, model=MODEL, log_every=0)
    tr = _trainer(tmp_path, cfg, 1)
    make = _loader(real_batch, 1)

    def poisoned(epoch):
        if epoch == 1:
            with torch.no_grad():
                tr.model.encoder_classifier.weight.fill_(float("nan"))
        return make(epoch)

    with pytest.raises(NonFiniteLossError) as err:
        tr.fit(poisoned)
    msg = str(err.value)
    assert "step 1" in msg and "'en'" in msg and str(tmp_path / "last.pt") in msg


def test_missing_labels_error(tmp_path):
    with pytest.raises(MissingLabelsError) as err:
        check_training_labels(["a", "b", "c"], ["a"], ["a", "b"], "cuhk")
    msg = str(err.value)
    assert "2 of 3" in msg and "dvc repro parse" in msg and "1 of 3" in msg and "dvc repro occlusion" in msg
    check_training_labels(["a"], ["a"], ["a"])  # complete: no error
    train = pd.DataFrame({"key": ["a"]})
    with pytest.raises(MissingLabelsError, match="dvc repro parse"):
        load_training_labels(train, tmp_path / "no_parse", tmp_path / "occ.parquet", "x")


def test_load_model_fails_loudly_on_mismatch(tmp_path, real_batch):
    from ogfr_core.training import CheckpointError

    cfg = TrainConfig(epochs=1, warmup_epochs=0, model=MODEL, log_every=0)
    _trainer(tmp_path, cfg, 1).fit(_loader(real_batch, 1))
    ck = torch.load(tmp_path / "model.pt", weights_only=True)
    del ck["model"]["encoder.occ_embed"]
    ck["model"]["stray.weight"] = torch.zeros(1)
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pt")
    assert "encoder.occ_embed" in str(err.value) and "stray.weight" in str(err.value)
    with pytest.raises(CheckpointError, match="dvc repro train"):
        load_model(tmp_path / "missing.pt")


def test_changed_stage_inputs_retrain(tmp_path, real_batch, caplog):
    from ogfr_core.training.checkpoint import files_hash

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "occ.parquet").write_bytes(b"v1")
    h1 = files_hash([tmp_path / "in"])
    (tmp_path / "in" / "occ.parquet").write_bytes(b"v2")
    assert files_hash([tmp_path / "in"]) != h1
    with pytest.raises(FileNotFoundError, match="nope"):
        files_hash([tmp_path / "nope"])
    cfg = TrainConfig(epochs=1, warmup_epochs=0, model=MODEL, log_every=0)
    torch.manual_seed(0)
    Trainer(build_model(cfg.model, 4, 2, (H, W)), cfg, tmp_path / "m", dict(_meta(cfg), inputs=h1),
            occlusion=5.0, steps_per_epoch=1).fit(_loader(real_batch, 1))
    again = Trainer(build_model(cfg.model, 4, 2, (H, W)), cfg, tmp_path / "m", dict(_meta(cfg), inputs=h1),
                    occlusion=5.0, steps_per_epoch=1)
    assert again.resume()
    with caplog.at_level("WARNING", logger="ogfr_core.training.loop"):
        other = Trainer(build_model(cfg.model, 4, 2, (H, W)), cfg, tmp_path / "m",
                        dict(_meta(cfg), inputs=files_hash([tmp_path / "in"])), occlusion=5.0, steps_per_epoch=1)
        assert not other.resume()
    assert "config/inputs differs" in caplog.text


def test_cpu_bf16_autocast_keeps_the_sensitive_parts_in_fp32(tmp_path):
    """``amp_cpu``: the forward under bf16 autocast (the encoder's matmuls run in bf16), while the
    classifier logits (reward softmax, KL, ID losses), the correlation matrix, the agent's m and every
    loss term are float32; parameters and their gradients stay float32; the loss of a fixed batch is
    close to the fp32 one (bf16 rounding, not a different objective); off by default."""
    assert TrainConfig().amp_cpu is False
    cfg = TrainConfig(epochs=1, warmup_epochs=0, model=dataclasses.replace(MODEL, patch_embed="hybrid", stem_stride=16,
                                                                            stem_frozen_blocks=4, drop_path=0.0))
    g = torch.Generator().manual_seed(0)
    b = 8
    data = dict(image=torch.randn(b, 3, H, W, generator=g), label_map=_layout(b), z=torch.zeros(b, 4, dtype=torch.long),
                label=torch.arange(b) % 4, camid=torch.arange(b) % 2)
    results, encoded = {}, {}
    for amp_cpu in (False, True):
        tr = _trainer(tmp_path / str(amp_cpu), dataclasses.replace(cfg, amp_cpu=amp_cpu), 1)
        assert tr.use_amp_cpu is amp_cpu
        tr.generator.manual_seed(0)
        torch.manual_seed(0)
        batch = tr.prepare(dict(data))
        terms, out = tr.compute_losses(batch)
        results[amp_cpu] = {k: float(v.detach()) for k, v in terms.items()}
        t, s = out["teacher"], out["student"]
        assert all(v.dtype == torch.float32 for v in terms.values())
        for x in (t["logits"], s["logits"], t["enc_logits"], t["corr"], t["m"], t["reward"], t["p_m"], t["tokens"]):
            assert x.dtype == torch.float32
        encoded[amp_cpu] = t["encoded"].detach()
        terms["total"].backward()
        assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32)
                   for p in tr.model.parameters())
    # the encoder's matmuls really ran in bf16 (8 significant bits): its tokens differ from fp32's by far
    # more than fp32 rounding, but stay close
    diff = (encoded[True] - encoded[False]).abs()
    assert float(diff.max()) > 1e-3 and float(diff.mean()) < 0.05, (float(diff.max()), float(diff.mean()))
    fp32, bf16 = results[False], results[True]
    # the triplet term mines the hardest pair of 8 images: bf16 rounding can pick another pair, a jump of
    # a few percent (6 % on an AVX2-only EPYC VM of 2026-12-04; the test had passed at 5 % before), so it gets a wider band
    for k, rel in (("total", 0.05), ("kd", 0.05), ("en", 0.05), ("tr", 0.15), ("mask", 0.05)):
        assert abs(bf16[k] - fp32[k]) <= rel * abs(fp32[k]) + 1e-3, (k, bf16[k], fp32[k])
