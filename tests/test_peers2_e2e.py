"""FPC and CpaCol end to end and on real crops.

* a few optimisation steps on a small real batch (16 CUHK03-NP crops of 4 ids from ../shared) lower
  each method's training loss (FPC: L_S + L_C; CpaCol: stage I, then stage II with stage I frozen);
* the real ``stages.train`` + ``stages.evaluate`` mains on a tiny synthetic repository with the
  test-time extras on: CpaCol's two phases (stage-I checkpoint kept, frozen weights unchanged by
  stage II, combined history), the flagged extra rows in ``reports/metrics.json`` (a weight sweep on
  the validation split only), and the report rows that name the flags.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _repo_synth import make_toy_repo, prepare_labels
from ogfr_core.config import ModelConfig, TrainConfig, to_dict
from ogfr_core.model import build_model
from ogfr_core.training import Trainer, read_checkpoint

H, W = 64, 32


@pytest.fixture(scope="module")
def real_batch(shared_root: Path) -> dict[str, torch.Tensor]:
    files = sorted((shared_root / "bounding_box_train").glob("*.jpg"))
    by_pid = defaultdict(list)
    for f in files[:200]:
        by_pid[f.name.split("_")[0]].append(f)
    pids = [p for p in sorted(by_pid) if len(by_pid[p]) >= 4][:4]
    chosen = [(i, f) for i, p in enumerate(pids) for f in by_pid[p][:4]]
    imgs = [(torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((W, H), Image.BILINEAR), np.float32)
                              / 255.0).permute(2, 0, 1) - 0.5) / 0.5 for _, f in chosen]
    lab = torch.zeros(len(chosen), H, W, dtype=torch.long)
    lab[:, 4:60, 8:24] = 4  # a person-shaped foreground for the attention statistics
    return dict(image=torch.stack(imgs), label_map=lab, z=torch.zeros(len(chosen), 4, dtype=torch.long),
                label=torch.tensor([i for i, _ in chosen]),
                camid=torch.tensor([int(f.name.split("_")[1][1]) - 1 for _, f in chosen]))


def _steps(model, cfg: TrainConfig, batch, n: int) -> list[float]:
    meta = dict(model=to_dict(cfg.model), data={"name": "t"}, train=to_dict(cfg), num_classes=4, num_cameras=2,
                height=H, width=W, epochs_trained=0, pretrained_weights="", method=cfg.model.method)
    tr = Trainer(model, cfg, "/nonexistent-unused", meta, occlusion=5.0, steps_per_epoch=n)
    return [tr.train_step(batch)["loss/total"] for _ in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fpc", "cpacol"])
def test_real_steps_lower_the_loss(real_batch, method):
    mcfg = ModelConfig(method=method, backbone="vit_tiny_patch16_224", depth=2, stride=16, drop_path=0.0)
    mcfg = dataclasses.replace(mcfg, fpc=dataclasses.replace(mcfg.fpc, neighbours=3),
                               cpacol=dataclasses.replace(mcfg.cpacol, corr_channels=16, stage2_epochs=1))
    cfg = TrainConfig(epochs=1, warmup_epochs=0, lr=0.01, model=mcfg, log_every=0)
    cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, occlusion_prob=0.0))
    torch.manual_seed(0)
    model = build_model(mcfg, 4, 2, (H, W), load_weights=False)
    losses = _steps(model, cfg, real_batch, 12)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    if method == "cpacol":  # stage II: only the correlation module learns, on the frozen stage-I features
        model.set_phase("stage2")
        phase = model.training_phases(cfg)[1]
        losses = _steps(model, dataclasses.replace(cfg, lr=phase.lr), real_batch, 12)
        assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def _run(root: Path, monkeypatch) -> dict:
    from stages.evaluate import main as evaluate_main
    from stages.train import main as train_main

    prepare_labels(root)
    monkeypatch.chdir(root)
    train_main()
    evaluate_main([])
    return json.loads((root / "reports" / "metrics.json").read_text())


EVAL = {"device": "cpu", "batch_size": 4, "retrieval_queries": 1, "mask_examples": 1, "fep_images": 0}


@pytest.mark.slow
def test_fpc_train_and_evaluate_with_consolidation(tmp_path, monkeypatch):
    from ogfr_core.report.sections import results_section

    root = make_toy_repo(tmp_path, n_ids=6, per_id=4, overrides={
        "data": {"val_ids": 2},
        "train": {"model": {"method": "fpc", "fpc": {"neighbours": 2, "shortlist": 3}}},
        "evaluate": dict(EVAL, fpc={"consolidation": True, "neighbours": 1, "shortlist": 2})})
    metrics = _run(root, monkeypatch)
    assert metrics["method"] == "fpc"
    for name in ("toy", "toy:val"):
        entry = metrics["datasets"][name]
        assert {"global", "visibility", "fpc_consolidation"} <= set(entry)
        extra = entry["fpc_consolidation"]
        assert extra["flags"] == ["uses_test_gallery"] and extra["options"]["neighbours"] == 1
        assert 0 <= extra["mAP"] <= 1 and extra["seconds"] >= 0
    assert metrics["test_time_extras"] == {"fpc_consolidation": ["uses the test gallery"]}
    rows = [r for r in results_section(metrics).blocks if r[0] == "table"][0][2]
    assert any(r[1] == "this run (fpc_consolidation; uses the test gallery)" for r in rows)
    assert "fpc_consolidation" in (root / "reports" / "plots" / "cmc.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_cpacol_two_phases_and_rescoring(tmp_path, monkeypatch, caplog):
    root = make_toy_repo(tmp_path, n_ids=6, per_id=4, overrides={
        "data": {"val_ids": 2},
        "train": {"epochs": 1, "model": {"method": "cpacol",
                                         "cpacol": {"corr_channels": 8, "stage2_epochs": 1, "attn_ramp_epochs": 1}}},
        "evaluate": dict(EVAL, cpacol={"rescore": True, "top_k": 2, "weight_sweep": [0.5, 1.0],
                                       "weight_source": "official_code"},
                         fpc={"consolidation": True})})
    with caplog.at_level(logging.WARNING):
        metrics = _run(root, monkeypatch)
    assert any("evaluate.fpc.consolidation: on, but the checkpoint's method is cpacol" in r.getMessage()
               for r in caplog.records)
    stage1 = read_checkpoint(root / "models/toy/phases/stage1/model.pt")
    final = read_checkpoint(root / "models/toy/model.pt")
    assert [p["name"] for p in final["meta"]["phases"]] == ["stage1", "stage2"]
    assert final["meta"]["epochs_trained"] == 2 and len(final["meta"]["history"]) == 2
    assert "loss/ver" in final["meta"]["history"][1] and "loss/inter" in final["meta"]["history"][0]
    assert metrics["epochs"] == 2
    correl = ("omega.", "matcher.", "alpha")
    for k, v in stage1["model"].items():  # stage II trains the correlation module only
        if k.startswith(correl):
            continue
        assert torch.equal(v, final["model"][k]), k
    assert any(not torch.equal(v, final["model"][k]) for k, v in stage1["model"].items() if k.startswith(correl))
    test, val = metrics["datasets"]["toy"], metrics["datasets"]["toy:val"]
    assert test["cpacol_rescore"]["flags"] == ["rescores_top_k"]
    assert test["cpacol_rescore"]["options"]["weight_source"] == "official_code"
    assert not any("@w=" in k for k in test)  # the weight sweep never runs on the test set
    assert {"cpacol_rescore@w=0.5", "cpacol_rescore@w=1"} <= set(val)
    assert val["cpacol_rescore@w=1"]["options"]["weight"] == 1.0
    assert "fpc_consolidation" not in test


@pytest.mark.parametrize("method", ["fpc", "cpacol"])
def test_mixed_precision_forward_backward(method):
    """The training loop's AMP path through CPU autocast (bfloat16): the neighbour search and the
    contrastive similarities run in fp32 inside, the loss stays within a few % of fp32, gradients finite."""
    from ogfr_core.config import LossConfig

    cfg = ModelConfig(method=method, backbone="vit_tiny_patch16_224", depth=2, stride=16, drop_path=0.0)
    cfg = dataclasses.replace(cfg, fpc=dataclasses.replace(cfg.fpc, neighbours=3),
                              cpacol=dataclasses.replace(cfg.cpacol, corr_channels=16))
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(8, 3, H, W, generator=g), "label": torch.arange(8) % 4,
             "camid": torch.arange(8) % 2, "label_map": torch.randint(0, 9, (8, H, W), generator=g)}
    totals = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, 4, 2, (H, W), load_weights=False).train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            terms = model.loss(model(batch), batch, LossConfig())
        terms["total"].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        totals[amp] = float(terms["total"].detach())
    assert totals[True] == pytest.approx(totals[False], rel=0.05)
