"""The peers ``fed`` and ``pgfl_kd`` as ``train.model.method`` values: the registry names them on a
typo, their params sub-sections are validated, and ``python -m stages.train`` + ``python -m
stages.evaluate`` run end to end on a tiny synthetic dataset (real subprocesses)."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess

import pytest
import torch

from _repo_synth import PYTHON, make_toy_repo, prepare_labels, stage_env
from ogfr_core.config import ConfigError, ModelConfig, TrainConfig, from_dict
from ogfr_core.model import METHODS, ModelConfigError, build_model


def test_unknown_method_lists_every_registered_method_including_the_peers():
    assert {"fed", "pgfl_kd"} <= set(METHODS)
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, stride=16, method="fedd")
    with pytest.raises(ModelConfigError) as err:
        build_model(cfg, 3, 2, (64, 32))
    message = str(err.value)
    assert message.startswith("train.model.method: unknown method 'fedd'; registered methods: ")
    assert message.split("registered methods: ")[1].split(", ") == sorted(METHODS)  # fed and pgfl_kd among them


@pytest.mark.parametrize("section,key,value,needle", [
    ("fed", "temperature", 0.0, "train.model.fed.temperature: 0.0 is outside the allowed range: > 0"),
    ("fed", "memory_momentum", 1.0, "train.model.fed.memory_momentum: 1.0 is outside the allowed range: in [0, 1)"),
    ("fed", "num_stripes", 0, "train.model.fed.num_stripes: 0 is outside the allowed range: >= 1"),
    ("fed", "npo_prob", 1.5, "train.model.fed.npo_prob: 1.5 is outside the allowed range: in [0, 1]"),
    ("fed", "stripes", 4, "train.model.fed: unknown key(s) ['stripes']"),
    ("pgfl_kd", "lambda_cl", -0.1, "train.model.pgfl_kd.lambda_cl: -0.1 is outside the allowed range: >= 0"),
    ("pgfl_kd", "lambda_mcl", "x", "train.model.pgfl_kd.lambda_mcl: expected a number"),
])
def test_method_params_are_validated(section, key, value, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        from_dict(TrainConfig, {"model": {section: {key: value}}}, "train")
    ok = from_dict(TrainConfig, {"model": {"method": "fed", "fed": {"num_neighbours": 4},
                                           "pgfl_kd": {"lambda_cl": 0.0}}}, "train")
    assert ok.model.fed.num_neighbours == 4 and ok.model.pgfl_kd.lambda_cl == 0.0
    assert dataclasses.asdict(ok.model)["fed"]["temperature"] == 0.05  # travels in the checkpoint meta


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [("fed", {}), ("pgfl_kd", {}),
                                           ("fed", {"fed": {"memory_init": "train_pass",
                                                            "memory_update": "per_sample"}})])
def test_train_and_evaluate_stages_end_to_end(tmp_path, method, extra):
    repo = make_toy_repo(tmp_path, overrides={"train": {"model": {"method": method, **extra}},
                                              "evaluate": {"batch_size": 4, "fep_images": 0,
                                                           "retrieval_queries": 1, "mask_examples": 1}})
    prepare_labels(repo)
    logs = {}
    for stage in ("train", "evaluate"):
        proc = subprocess.run([PYTHON, "-m", f"stages.{stage}"], cwd=repo, env=stage_env(), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs[stage] = proc.stderr + proc.stdout
    ck = torch.load(repo / "models" / "toy" / "model.pt", map_location="cpu", weights_only=True)
    assert ck["meta"]["method"] == method and len(ck["meta"]["history"]) == 2
    # the training-set pass runs before the first epoch exactly when memory_init is train_pass
    assert ("a pass over the" in logs["train"]) == bool(extra), logs["train"][-2000:]
    assert all(math.isfinite(v) for h in ck["meta"]["history"] for v in h.values())
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert metrics["method"] == method
    res = metrics["datasets"]["toy"]
    assert res["num_query"] == 2 and res["num_gallery"] == 2
    for dist in ("visibility", "global"):  # K = 0: Eq. (23) reduces to the global distance
        assert 0.0 <= res[dist]["mAP"] <= 1.0
    assert res["visibility"]["mAP"] == res["global"]["mAP"]


def test_published_numbers_are_cited():
    from ogfr_core.report.paper import PEER_RESULTS, PEER_SOURCES

    for name in ("FED", "PGFL-KD"):
        assert name in PEER_SOURCES and "Table" in PEER_SOURCES[name]
        assert {"Market-1501", "Occluded-Duke", "Occluded-REID"} <= set(PEER_RESULTS[name])
        for metrics in PEER_RESULTS[name].values():
            assert set(metrics) <= {"rank-1", "rank-3", "rank-5", "rank-10", "mAP"}
            assert all(0 < v <= 100 for v in metrics.values())
    assert PEER_RESULTS["FED"]["Occluded-Duke"] == {"rank-1": 68.1, "mAP": 56.4}  # FED Table 1
    assert PEER_RESULTS["PGFL-KD"]["Occluded-Duke"] == {"rank-1": 63.0, "mAP": 54.1}  # PGFL-KD Table 2


@pytest.mark.parametrize("method", ["fed", "pgfl_kd"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_forward_backward(method, dtype):
    """The loop's AMP path (CUDA fp16 autocast) through CPU autocast: fp32 loss within a few % of the
    fp32 run, finite gradients (memories, masked attention and the losses accept low precision)."""
    from ogfr_core.config import LossConfig

    h, w = 64, 32
    g = torch.Generator().manual_seed(0)
    lab = torch.zeros(4, h, w, dtype=torch.long)
    lab[:, 8:56, 8:24] = 4
    lab[:, 2:8, 12:20] = 1
    batch = dict(image=torch.randn(4, 3, h, w, generator=g), z=torch.zeros(4, 4, dtype=torch.long),
                 camid=torch.tensor([0, 1, 0, 1]), label=torch.tensor([0, 0, 1, 1]), label_map=lab)
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", depth=1, stride=16, drop_path=0.0, method=method)
    totals = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, 2, 2, (h, w)).train()
        with torch.autocast("cpu", dtype=dtype, enabled=amp):
            out = model(batch, torch.Generator().manual_seed(0))
            terms = model.loss(out, batch, LossConfig())
        terms["total"].backward()
        assert terms["total"].dtype == torch.float32
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        totals[amp] = float(terms["total"].detach())
    assert totals[True] == pytest.approx(totals[False], rel=0.05)
