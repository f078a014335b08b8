"""ogfr_core.remote's checks without DVC runs: a missing / read-only local remote is refused before
DVC starts (one line naming the folder and the fix), other remotes are left to DVC, and the stages to
rerun come out in dvc.yaml order."""
from __future__ import annotations

import json
import subprocess

import pytest

from ogfr_core import remote as rm


def local(path) -> rm.Remote:
    return rm.Remote("store", "../../ogfr-dvc-store", str(path), True)


def test_pull_needs_the_folder_push_needs_its_parent(tmp_path):
    store = tmp_path / "share" / "store"
    with pytest.raises(rm.RemoteError, match=r"share/store does not exist.*dvc remote modify --local store url"):
        rm.check_remote(local(store), "pull")
    with pytest.raises(rm.RemoteError, match=r"parent folder .*share does not exist"):
        rm.check_remote(local(store), "push")
    store.parent.mkdir()
    rm.check_remote(local(store), "push")  # DVC creates the store inside an existing, writable parent
    store.mkdir()
    rm.check_remote(local(store), "pull")
    rm.check_remote(rm.Remote("s3", "s3://bucket/x", "s3://bucket/x", False), "pull")  # left to DVC


def test_read_only_remote_is_refused(tmp_path, monkeypatch):
    # as root os.access always grants W_OK, so the permission answer is simulated
    monkeypatch.setattr(rm.os, "access", lambda path, mode: not mode & rm.os.W_OK)
    with pytest.raises(rm.RemoteError, match="read-only"):
        rm.check_remote(local(tmp_path / "store"), "push")
    rm.check_remote(local(tmp_path), "pull")  # reading still works


def test_stages_to_rerun_in_pipeline_order(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages:\n  index: {cmd: a}\n  parse: {cmd: b}\n  train: {cmd: c}\n"
                                       "  report: {cmd: d}\n")
    status = {"report": [{"changed deps": {}}], "train": [{"changed outs": {"models/x": "deleted"}}]}

    def fake(cmd, **kw):
        assert cmd[-2:] == ["status", "--json"]
        return subprocess.CompletedProcess(cmd, 0, json.dumps(status), "")

    monkeypatch.setattr(rm.subprocess, "run", fake)
    assert rm.stages_to_rerun(tmp_path) == ["train", "report"]
    status.clear()
    assert rm.stages_to_rerun(tmp_path) == []
    monkeypatch.setattr(rm.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 255, "", "ERROR: not a DVC repo"))
    with pytest.raises(rm.RemoteError, match="not a DVC repo"):
        rm.stages_to_rerun(tmp_path)
