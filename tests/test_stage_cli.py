"""Stages do not silently ignore their command line (issue 26, item 4): every stage takes
``--params FILE`` (default params.yaml; ``pretrained`` reads no params and takes nothing) through the
shared :func:`ogfr_core.runtime.stage_args`, and rejects anything else with argparse's one-line usage
error, exit status 2. Each entry function is called in this process (a subprocess per torch-importing
stage would be slow)."""
from __future__ import annotations

import importlib

import pytest
import yaml

from _data_synth import make_market
from ogfr_core.runtime import run_stage

#: stage → its command-line entry function (``cli`` where ``main`` keeps the signature tests call)
ENTRIES = {"index": "cli", "parse": "cli", "occluder": "cli", "occlusion": "cli", "occlude": "cli",
           "train": "cli", "pretrained": "cli", "evaluate": "main", "report": "main"}
PARAMS_STAGES = sorted(set(ENTRIES) - {"pretrained"})


def _entry(stage: str):
    return getattr(importlib.import_module(f"stages.{stage}"), ENTRIES[stage])


@pytest.mark.parametrize("stage", sorted(ENTRIES))
def test_unknown_argument_is_a_usage_error(stage, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may run: no params.yaml here
    with pytest.raises(SystemExit) as exit_:
        run_stage(lambda: _entry(stage)(["--bogus"]))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "unrecognized arguments: --bogus" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["p.yaml", "--bogus"], ["--params"]])
def test_apply_profile_rejects_bad_arguments(argv, capsys):
    from stages.apply_profile import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2


def test_ci_gate_rejects_unknown_arguments(capsys):
    from stages.ci_gate import main

    with pytest.raises(SystemExit) as exit_:
        main(["--bogus"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("stage", PARAMS_STAGES)
def test_params_flag_is_read(stage, tmp_path, monkeypatch, caplog):
    """``--params elsewhere.yaml`` is the file read: its absence is the error, not params.yaml's."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_stage(lambda: _entry(stage)(["--params", "elsewhere.yaml"]))
    assert exit_.value.code == 1
    assert "elsewhere.yaml" in caplog.text


def test_index_honours_params_flag(tmp_path, monkeypatch):
    """``python -m stages.index --params other.yaml`` indexes other.yaml's dataset, not params.yaml's."""
    from ogfr_core.data import read_index
    from stages.index import cli

    make_market(tmp_path / "ds", train=["0002_c1s1_000001_00.jpg", "0002_c2s1_000002_00.jpg"],
                query=["0005_c1s1_000004_01.jpg"], gallery=["0005_c2s1_000005_00.jpg"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"name": "wrong", "root": "nowhere"}}))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"data": {"name": "toy", "root": "ds"}}))
    monkeypatch.chdir(tmp_path)
    assert cli(["--params", "other.yaml"]) == 0
    assert len(read_index(tmp_path / "data" / "index" / "toy.parquet")) == 4
    assert not (tmp_path / "data" / "index" / "wrong.parquet").exists()
