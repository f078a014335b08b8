"""benchmarks/gpu_check.py: configurations and methods come from the params files and the code, the
AMP overflow check passes on a real GradScaler and fails without one, and the script refuses what it
must refuse (no CUDA without --dry-run; a dry run written to the GPU result's file). The whole dry
run is CI's job (`.ci/run`), not this file's."""
from __future__ import annotations

import argparse
import typing

import pytest
import torch
import yaml

from benchmarks import gpu_check
from ogfr_core.config import ConfigError, ModelConfig


def test_methods_are_what_the_config_accepts():
    methods = gpu_check.registered_methods()
    import ogfr_core.model as model_pkg

    expected = list(getattr(model_pkg, "METHODS", None) or
                    typing.get_args(typing.get_type_hints(ModelConfig)["method"]))
    assert methods == expected and {"ogfr", "baseline"} <= set(methods)


def test_paper_configuration_is_paper_yaml_over_params(tmp_path):
    params, paper = tmp_path / "params.yaml", tmp_path / "paper.yaml"
    params.write_text(yaml.safe_dump({"data": {"name": "x", "root": "r", "height": 128, "width": 64},
                                      "train": {"epochs": 12, "model": {"backbone": "vit_tiny_patch16_224",
                                                                        "stride": 16, "depth": 6}}}))
    paper.write_text(yaml.safe_dump({"data": {"height": 256}, "train": {"model": {"stride": 12, "depth": 0}}}))
    demo = gpu_check.load_configuration("demo", params, paper)
    merged = gpu_check.load_configuration("paper", params, paper)
    assert demo["train"]["model"] == {"backbone": "vit_tiny_patch16_224", "stride": 16, "depth": 6}
    assert merged["train"]["model"] == {"backbone": "vit_tiny_patch16_224", "stride": 12, "depth": 0}
    assert (merged["data"]["height"], merged["data"]["width"], merged["train"]["epochs"]) == (256, 64, 12)
    paper.write_text(yaml.safe_dump({"train": {"model": {"strid": 12}}}))
    with pytest.raises(ConfigError, match="strid"):
        gpu_check.load_configuration("paper", params, paper)


def test_dry_run_may_not_write_the_gpu_result_file(capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(["--dry-run", "--out", str(gpu_check.REPO / gpu_check.DEFAULT_OUT)])
    assert exc.value.code == 2 and "dry run may not be written" in capsys.readouterr().err
    assert gpu_check.parse_args(["--dry-run"]).out == gpu_check.DRY_RUN_OUT


def test_without_cuda_it_exits_2_and_says_why(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--dry-run" in err
    assert not (tmp_path / "gpu.json").exists()  # nothing that could pass for a GPU result


def _overflow_report(tmp_path) -> gpu_check.Report:
    args = argparse.Namespace(dry_run=True, params=gpu_check.REPO / "params.yaml",
                              paper=gpu_check.REPO / "params" / "paper.yaml")
    rep = gpu_check.Report(tmp_path / "out.json", dry_run=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the dry run does: CPU fp16 on a busy 2-core machine is 4x slower with 2
    try:
        gpu_check.amp_overflow_check(rep, torch.device("cpu"), args)
    finally:
        torch.set_num_threads(threads)
    return rep


def test_amp_overflow_check_passes_with_a_grad_scaler(tmp_path):
    rep = _overflow_report(tmp_path)
    checks = {c["name"]: c["passed"] for c in rep.doc["checks"]}
    assert len(checks) == 3 and all(checks.values()), checks
    o = rep.doc["amp_overflow"]
    assert o["scale_after_overflow"] == o["scale_before"] * 0.5  # GradScaler's default backoff_factor
    assert o["autocast_dtype_seen"] == "float16"  # the Trainer's autocast ran (CPU fp16 in the dry run)


def test_amp_overflow_check_fails_without_one(tmp_path, monkeypatch):
    """Control: a disabled scaler applies the inf gradient, so the skip and back-off checks fail."""
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device, **_: real(device, enabled=False))
    rep = _overflow_report(tmp_path)
    checks = {c["name"].split(": ", 1)[1].split(" ")[0]: c["passed"] for c in rep.doc["checks"]}
    assert checks == {"inf": False, "loss": False, "training": False}
    assert "non-finite loss" in rep.doc["checks"][2]["detail"]
