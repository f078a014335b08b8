"""The `index` stage end to end on a synthetic Market-1501 folder (params.yaml in tmp_path)."""
from __future__ import annotations

import json

import pytest
import yaml

from ogfr_core.data import read_index
from ogfr_core.runtime import run_stage
from stages.index import main
from _data_synth import make_market


def _params(tmp_path, root, **extra):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"name": "toy", "root": root, **extra}}))


def test_stage_writes_index_and_summary(tmp_path):
    make_market(tmp_path / "ds", train=["0002_c1s1_000001_00.jpg", "0002_c2s1_000002_00.jpg", "bad.jpg"],
                query=["0005_c1s1_000004_01.jpg"], gallery=["0005_c2s1_000005_00.jpg", "0000_c1s1_000006_00.jpg"])
    (tmp_path / "ds" / "bounding_box_test" / "0005_c2s1_000005_00.jpg").write_bytes(b"")
    _params(tmp_path, "ds")
    assert main(tmp_path) == 0
    frame = read_index(tmp_path / "data" / "index" / "toy.parquet")
    assert len(frame) == 4
    summary = json.loads((tmp_path / "reports" / "index" / "summary.json").read_text())
    assert summary["train"] == {"images": 2, "ids": 1, "cameras": 2}
    assert summary["gallery"] == {"images": 1, "ids": 1, "cameras": 1}
    assert summary["skipped_count"] == 2
    assert {s["path"] for s in summary["skipped"]} == {"bounding_box_train/bad.jpg",
                                                      "bounding_box_test/0005_c2s1_000005_00.jpg"}


def test_stage_bad_root_is_one_clear_error(tmp_path, caplog):
    _params(tmp_path, "nowhere")
    with pytest.raises(SystemExit) as exit_:
        run_stage(lambda: main(tmp_path))
    assert exit_.value.code == 1
    assert "does not exist; set `data.root`" in caplog.text
    assert not (tmp_path / "data").exists()


def test_stage_unknown_param(tmp_path, caplog):
    _params(tmp_path, "ds", layot="market1501")
    with pytest.raises(SystemExit) as exit_:
        run_stage(lambda: main(tmp_path))
    assert exit_.value.code == 1
    assert "unknown key(s) ['layot']" in caplog.text


def test_root_spelling_changes_nothing_downstream_of_the_index(tmp_path):
    """A queued experiment gets ``data.root`` as an absolute path (``seed_runs.data_root_override``): the
    index must come out byte-identical (paths relative to the root) and no later stage may declare
    ``data.root`` as a param — else every queued seed re-parses and retrains the occluder (issue 26)."""
    make_market(tmp_path / "ds", train=["0002_c1s1_000001_00.jpg", "0002_c2s1_000002_00.jpg"],
                query=["0005_c1s1_000004_01.jpg"], gallery=["0005_c2s1_000005_00.jpg"])
    out = tmp_path / "data" / "index" / "toy.parquet"
    _params(tmp_path, "ds")
    assert main(tmp_path) == 0
    relative = out.read_bytes()
    _params(tmp_path, str((tmp_path / "ds").resolve()))
    assert main(tmp_path) == 0
    assert out.read_bytes() == relative

    from pathlib import Path
    stages = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())["stages"]
    readers = sorted(name for name, stage in stages.items()
                     if {"data", "data.root"} & {p for p in stage.get("params", []) if isinstance(p, str)})
    assert readers == ["index"]
