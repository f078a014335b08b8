"""Real faults: nothing lost, nothing poisoned (issue 11, items 1, 4, 5).

- SIGKILL of a real ``python -m stages.parse`` (mediapipe, ``workers: 2``) after its first shard: no
  manifest is left, the occlusion stage refuses the partial cache, the rerun parses only what is
  missing, and the cache then equals an uninterrupted run's, row for row.
- Two parse runs started together on one cache: the lock serialises them; one parses, the other
  finds everything cached; one manifest, each image in exactly one shard.
- A file moved away during a run is not cached: the run fails with the count, the next run parses it.
- SIGKILL of a real ``python -m stages.train`` in the middle of epoch 2: the rerun resumes from
  ``last.pt`` and ends with the same weights and history as an uninterrupted run; a truncated
  ``last.pt`` starts afresh with a warning; temp files of a killed write are removed.

The parse subprocess tests use real CUHK03-NP crops from ../shared (the backend needs people in the
images); the others use tiny synthetic images.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from _repo_synth import (DATASET, PYTHON, FakeParser, make_toy_repo, prepare_labels, stage_env,
                         expect_user_error, write_params)
from ogfr_core.config import ParseConfig
from ogfr_core.data.index import relabel, write_index
from ogfr_core.io import atomic_path, output_lock
from ogfr_core.parsing import parse_dataset, read_parsing
from ogfr_core.parsing.cache import MANIFEST, ParsingIncompleteError, compute_cache_id, shard_paths

CROPS = "crops"


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Stages run in this process set ``train.threads``; give the other tests their thread count back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
PARSED_NOW = re.compile(r"parse: (\d+) images \((\d+) parsed now, (\d+) cached\)")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def crops_repo(root: Path, shared_root: Path, n: int, parse: dict) -> pd.DataFrame:
    """A repository-like folder whose index lists the first ``n`` real training crops."""
    files = sorted((shared_root / "bounding_box_train").glob("*.jpg"))[:n]
    frame = pd.DataFrame({
        "key": [hashlib.sha1(f.read_bytes()).hexdigest() for f in files],
        "path": [f.relative_to(shared_root).as_posix() for f in files],
        "pid": [int(f.name[:4]) for f in files], "camid": [int(f.name.split("_")[1][1]) - 1 for f in files],
        "split": "train", "label": 0, "width": 64, "height": 128,
    })
    frame["label"] = relabel(frame)
    root.mkdir(parents=True, exist_ok=True)
    write_index(frame.astype({c: "int64" for c in ("pid", "camid", "label", "width", "height")}),
                root / "data" / "index" / f"{CROPS}.parquet")
    (root / "params.yaml").write_text(yaml.safe_dump({
        "data": {"name": CROPS, "root": str(shared_root)},
        "parse": {"overlay_grid": 4, **parse}, "occlusion": {"lam": 5.0}}))
    return frame


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL whatever is left of a subprocess's session (orphaned pool workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def parsed_now(log_text: str) -> int:
    m = PARSED_NOW.search(log_text)
    assert m, log_text[-3000:]
    return int(m.group(2))


# ------------------------------------------------------------------------------------------------
# parse: SIGKILL with workers: 2, then resume
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_parse_with_two_workers_resumes_to_the_uninterrupted_cache(tmp_path, shared_root, caplog,
                                                                              monkeypatch):
    n = 40
    repo = tmp_path / "repo"
    index = crops_repo(repo, shared_root, n, {"workers": 2, "shard_size": 4})
    parse_dir = repo / "data" / "parsing" / CROPS

    proc = subprocess.Popen([PYTHON, "-m", "stages.parse"], cwd=repo, env=stage_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(parse_dir.glob("*.parquet")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no shard written within 300 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the stage process, mid-run
        proc.wait(timeout=60)
    finally:
        kill_group(proc)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    shards = list(parse_dir.glob("*.parquet"))
    written = sum(len(pd.read_parquet(p, columns=["key"])) for p in shards)
    assert 1 <= len(shards) and written < n, "the run finished before the kill: nothing was interrupted"
    assert not (parse_dir / MANIFEST).exists()  # written last: a killed run leaves none

    # the occlusion stage refuses the partial cache instead of writing a partial table
    monkeypatch.chdir(repo)
    from stages.occlusion import main as occlusion_main

    expect_user_error(occlusion_main, caplog, repo, "no parsing manifest", "dvc repro parse")
    assert not (repo / "data" / "occlusion").exists()

    # what a SIGKILL during a write leaves behind (atomic_path's temp file), removed on the rerun
    orphan = parse_dir / ".abc.parquet.x1y2.tmp"
    orphan.write_bytes(b"half a shard")
    rerun = subprocess.run([PYTHON, "-m", "stages.parse"], cwd=repo, env=stage_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert parsed_now(rerun.stderr) == n - written
    assert not orphan.exists() and not list(parse_dir.glob(".*.tmp"))

    # an uninterrupted run (in this process, no workers) gives the same cache, row for row
    cfg = ParseConfig(workers=0, shard_size=4)
    reference = parse_dataset(index, shared_root, cfg, tmp_path / "reference", progress=False)
    assert reference.parsed_now == n and reference.status_counts["ok"] >= n // 2
    resumed = read_parsing(parse_dir)
    assert json.loads((parse_dir / MANIFEST).read_text())["cache_id"] == reference.cache_id
    assert sorted(resumed["key"]) == sorted(index["key"])
    pd.testing.assert_frame_equal(resumed, read_parsing(tmp_path / "reference"))


# ------------------------------------------------------------------------------------------------
# parse: two runs started together on one cache
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_parse_runs_started_together_end_consistent(tmp_path, shared_root):
    n = 12
    repo = tmp_path / "repo"
    index = crops_repo(repo, shared_root, n, {"workers": 0, "shard_size": 4})
    parse_dir = repo / "data" / "parsing" / CROPS
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = []
    # The test holds the cache's lock until both runs wait on it, so that they really overlap
    # (their start-up time differs by seconds on a loaded machine), then lets them race for it.
    with output_lock(parse_dir, "test"):
        try:
            for log_path in logs:
                with log_path.open("w") as fh:
                    procs.append(subprocess.Popen([PYTHON, "-m", "stages.parse"], cwd=repo, env=stage_env(),
                                                  start_new_session=True, stdout=subprocess.DEVNULL, stderr=fh))
            deadline = time.monotonic() + 300
            while not all("waiting for it to finish" in p.read_text() for p in logs):
                assert all(p.poll() is None for p in procs), [p.read_text()[-2000:] for p in logs]
                assert time.monotonic() < deadline, [p.read_text()[-2000:] for p in logs]
                time.sleep(0.05)
        except BaseException:
            for p in procs:
                kill_group(p)
            raise
    for p in procs:
        try:
            assert p.wait(timeout=600) == 0, [lp.read_text()[-3000:] for lp in logs]
        finally:
            kill_group(p)
    assert sorted(parsed_now(lp.read_text()) for lp in logs) == [0, n]  # one parsed, one found it cached
    manifest = json.loads((parse_dir / MANIFEST).read_text())
    keys = [k for s in shard_paths(parse_dir, manifest["cache_id"]) for k in pd.read_parquet(s, columns=["key"])["key"]]
    assert sorted(keys) == sorted(index["key"])  # every image in exactly one shard of the manifest's config
    assert len(list(parse_dir.glob("*.parquet"))) == len(shard_paths(parse_dir, manifest["cache_id"]))
    assert not list(parse_dir.glob(".*.tmp"))


# ------------------------------------------------------------------------------------------------
# parse: a temporary read failure is not cached (item 1); manifest last (item 4)
# ------------------------------------------------------------------------------------------------
def _toy_index(root: Path):
    make_toy_repo(root)
    from ogfr_core.data.index import read_index
    from stages.index import main as index_main

    assert index_main(root) == 0
    return read_index(root / "data" / "index" / f"{DATASET}.parquet")


def test_file_moved_away_during_a_run_is_parsed_on_the_next(tmp_path, caplog):
    index = _toy_index(tmp_path)
    cfg = ParseConfig(label_height=64, label_width=32, workers=0, shard_size=4)
    root, out = tmp_path / "ds", tmp_path / "parsing"
    moved, broken = root / index["path"].iloc[5], root / index["path"].iloc[9]
    aside, aside_broken = tmp_path / "aside.jpg", tmp_path / "aside2.jpg"
    moved.rename(aside)  # unreadable for the first run only
    broken.rename(aside_broken)
    broken.symlink_to("/proc/self/mem")  # a real I/O error (EIO) on read, for the first run only
    parser = FakeParser(cfg)
    with pytest.raises(ParsingIncompleteError) as err:
        parse_dataset(index, root, cfg, out, progress=False, parser=parser)
    msg = str(err.value)
    assert f"2 of {len(index)} images were not parsed and are not cached" in msg
    assert str(moved) in msg and "file not found" in msg and "rerun `dvc repro parse`" in msg
    assert str(broken) in msg and "Input/output error" in msg
    assert parser.calls == len(index) - 2
    assert not (out / MANIFEST).exists()
    with pytest.raises(FileNotFoundError, match="no parsing manifest"):
        read_parsing(out)  # nothing downstream can take the partial cache for a complete one

    aside.rename(moved)
    broken.unlink()
    aside_broken.rename(broken)
    again = FakeParser(cfg)
    summary = parse_dataset(index, root, cfg, out, progress=False, parser=again)
    assert (summary.parsed_now, again.calls) == (2, 2)
    assert summary.status_counts == {"ok": len(index), "no_person": 0, "unreadable": 0}
    reference = parse_dataset(index, root, cfg, tmp_path / "reference", progress=False, parser=FakeParser(cfg))
    assert reference.parsed_now == len(index)
    pd.testing.assert_frame_equal(read_parsing(out), read_parsing(tmp_path / "reference"))


def test_parse_stage_fails_with_the_count_and_retries(tmp_path, caplog, monkeypatch):
    """The real stage (mediapipe backend, in process): exit 1 naming the file, then exit 0."""
    index = _toy_index(tmp_path)
    monkeypatch.chdir(tmp_path)
    from stages.parse import main as parse_main

    moved = tmp_path / "ds" / index["path"].iloc[0]
    moved.rename(tmp_path / "aside.jpg")
    expect_user_error(parse_main, caplog, tmp_path, f"1 of {len(index)} images were not parsed",
                      index["path"].iloc[0], "make the files readable", "rerun `dvc repro parse`")
    assert not (tmp_path / "reports" / "parse" / "summary.json").exists()
    (tmp_path / "aside.jpg").rename(moved)
    caplog.clear()
    caplog.set_level(logging.INFO)
    parse_main()
    assert (tmp_path / "reports" / "parse" / "summary.json").is_file()
    done = [r.getMessage() for r in caplog.records if "parsed now" in r.getMessage()]  # timings: log only
    assert done and f"(1 parsed now, {len(index) - 1} cached)" in done[-1]


def test_file_changed_since_indexing_is_not_cached(tmp_path):
    index = _toy_index(tmp_path)
    cfg = ParseConfig(label_height=64, label_width=32, workers=0, shard_size=4)
    changed = tmp_path / "ds" / index["path"].iloc[2]
    changed.write_bytes((tmp_path / "ds" / index["path"].iloc[3]).read_bytes())  # other (valid) bytes
    with pytest.raises(ParsingIncompleteError, match=r"1 changed since indexing .*rerun `dvc repro index`"):
        parse_dataset(index, tmp_path / "ds", cfg, tmp_path / "parsing", progress=False, parser=FakeParser(cfg))
    cached = {k for p in (tmp_path / "parsing").glob("*.parquet") for k in pd.read_parquet(p)["key"]}
    assert index["key"].iloc[2] not in cached and len(cached) == len(index) - 1


def test_manifest_of_another_configuration_is_dropped_until_complete(tmp_path):
    index = _toy_index(tmp_path)
    cfg = ParseConfig(label_height=64, label_width=32, workers=0, shard_size=4)
    out = tmp_path / "parsing"
    first = parse_dataset(index, tmp_path / "ds", cfg, out, progress=False, parser=FakeParser(cfg))
    other = dataclasses.replace(cfg, limb_width_ratio=0.2)
    assert compute_cache_id(other, FakeParser.model_id) != first.cache_id

    class Killed(RuntimeError):
        pass

    def kill(path):
        raise Killed(path)

    with pytest.raises(Killed):
        parse_dataset(index, tmp_path / "ds", other, out, progress=False, parser=FakeParser(other), on_shard=kill)
    assert not (out / MANIFEST).exists()  # neither the old configuration's rows nor a partial new one
    done = parse_dataset(index, tmp_path / "ds", other, out, progress=False, parser=FakeParser(other))
    assert json.loads((out / MANIFEST).read_text())["cache_id"] == done.cache_id != first.cache_id


# ------------------------------------------------------------------------------------------------
# train: SIGKILL mid-epoch, then resume; truncated last.pt; temp files
# ------------------------------------------------------------------------------------------------
def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_sigkill_train_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, caplog, monkeypatch):
    runs = {}
    for name in ("full", "killed"):
        make_toy_repo(tmp_path / name)
        prepare_labels(tmp_path / name)
        runs[name] = tmp_path / name
    model_dir = Path("models") / DATASET

    full = subprocess.run([PYTHON, "-m", "stages.train"], cwd=runs["full"], env=stage_env(), capture_output=True,
                          text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    reference = _state(runs["full"] / model_dir / "model.pt")

    repo = runs["killed"]
    proc = subprocess.Popen([PYTHON, "-m", "stages.train"], cwd=repo, env=stage_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:  # log_every: 1 -> one line per step
            seen.append(line)
            if "epoch 2 step 1/4" in line:
                os.kill(proc.pid, signal.SIGKILL)  # one step into epoch 2 of 2
                break
        proc.wait(timeout=60)
    finally:
        kill_group(proc)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    assert not (repo / model_dir / "model.pt").exists()
    assert _state(repo / model_dir / "last.pt")["epoch"] == 1
    orphan = repo / model_dir / ".last.pt.k1ll3d.tmp"  # what a kill during torch.save leaves behind
    orphan.write_bytes(b"\x00" * 100)

    resumed = subprocess.run([PYTHON, "-m", "stages.train"], cwd=repo, env=stage_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from models/toy/last.pt at epoch 1" in resumed.stderr
    assert "removed 1 temp file(s)" in resumed.stderr and not orphan.exists()
    result = _state(repo / model_dir / "model.pt")
    assert result["meta"]["history"] == reference["meta"]["history"]
    assert result["model"].keys() == reference["model"].keys()
    for k, v in reference["model"].items():
        assert torch.equal(result["model"][k], v), k

    # a truncated last.pt (e.g. a copy cut short) does not make every rerun fail: fresh start, warned
    last = repo / model_dir / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    monkeypatch.chdir(repo)
    from stages.train import main as train_main

    with caplog.at_level(logging.WARNING, logger="ogfr_core.training.loop"):
        train_main()
    warnings = [r.getMessage() for r in caplog.records if r.name == "ogfr_core.training.loop"]
    assert any("models/toy/last.pt cannot be resumed from" in w and "starts afresh" in w for w in warnings), warnings
    again = _state(repo / model_dir / "model.pt")
    assert again["meta"]["history"] == reference["meta"]["history"]
    for k, v in reference["model"].items():
        assert torch.equal(again["model"][k], v), k


# ------------------------------------------------------------------------------------------------
# atomic writes and fingerprints (item 5)
# ------------------------------------------------------------------------------------------------
def test_atomic_write_is_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "out.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].endswith(".tmp") and events[1][1] == str(target) and events[2][1] == str(tmp_path)
    assert target.read_text() == "{}"


def test_fingerprint_ignores_temp_files_of_killed_writes(tmp_path):
    from ogfr_core.training.checkpoint import files_hash

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "a.parquet").write_bytes(b"rows")
    before = files_hash([tmp_path / "cache"])
    (tmp_path / "cache" / ".a.parquet.x.tmp").write_bytes(b"half")
    assert files_hash([tmp_path / "cache"]) == before
    (tmp_path / "cache" / "b.parquet").write_bytes(b"more rows")
    assert files_hash([tmp_path / "cache"]) != before
