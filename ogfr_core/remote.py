"""Share the DVC cache through a remote: what ``make push`` / ``make pull`` run (issue #25).

    python -m ogfr_core.remote push    # dvc push --run-cache   (after `dvc repro` on the machine that ran it)
    python -m ogfr_core.remote pull    # dvc pull --run-cache --allow-missing, then which stages will rerun
    python -m ogfr_core.remote status  # the default remote, and which stages `dvc repro` would rerun

The remote is DVC's own (``.dvc/config``: remote ``store``, a local folder ``../ogfr-dvc-store`` beside
the repository — DVC resolves the url relative to ``.dvc/``; point it elsewhere per machine with
``dvc remote modify --local store url PATH``, or add an S3 / SSH remote: README "Sharing the cache").
Pushed: every cached stage output in ``dvc.lock`` (label maps, derived occluded crops, model
checkpoints, figures with dataset crops) and the run cache (``--run-cache``: deps + params → outputs of
each recorded run, so `dvc repro --pull` restores a run instead of recomputing it). Not pushed: the
dataset itself (``data.root`` is a dependency outside the repository: only its hash is recorded) and
``cache: false`` outputs (metrics JSON, dvclive), which live in git.

DVC's run cache skips stages with a ``persist: true`` output (``pretrained``, ``parse``, ``train``: see
``dvc.stage.cache._can_hash``); those are restored from ``dvc.lock`` instead, so commit ``dvc.lock``
with the push.

Bad input, checked before DVC runs so that nothing is half-written: a local remote whose folder (or,
for a push, its parent) does not exist or is not writable → one ``ERROR:`` line naming the folder and
the fix, exit 1. Anything DVC itself refuses (disk full, network, credentials) → DVC's own ``ERROR``
line, then one line from here, exit 1. A pull that misses some objects still restores what the remote
has and then lists the stages ``dvc repro`` will rerun (exit 0: a partial cache is a valid state).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError


class RemoteError(UserError, RuntimeError):
    """The DVC remote is missing, not writable, or DVC failed (the message names the folder / fix)."""


@dataclass(frozen=True)
class Remote:
    """The default DVC remote: its name, url as configured, and whether it is a local folder
    (``path`` is then absolute, resolved by DVC relative to the config file that set it)."""

    name: str
    url: str
    path: str
    local: bool


def dvc_cmd(*args: str) -> list[str]:
    """``[python, -m, dvc, *args]`` with this interpreter (the venv's DVC, whatever PATH says)."""
    return [sys.executable, "-m", "dvc", *args]


def default_remote(root: str | Path = ".") -> Remote:
    """The repository's default DVC remote (``core.remote``, any config level: ``--local`` wins).

    Raises:
        RemoteError: no default remote is configured (names ``dvc remote add -d``).
    """
    from dvc.repo import Repo

    repo = Repo(str(root))
    try:
        name = repo.config["core"].get("remote")
        if not name or name not in repo.config["remote"]:
            raise RemoteError(f"{Path(root).resolve() / '.dvc' / 'config'}: no default DVC remote; add one with "
                              f"`dvc remote add -d store PATH_OR_URL` (README, \"Sharing the cache\")")
        url = repo.config["remote"][name]["url"]
        odb = repo.cloud.get_remote(name)
        local = odb.fs.protocol == "local"
        return Remote(name, url, str(odb.path) if local else url, local)
    finally:
        repo.close()


def check_remote(remote: Remote, mode: str) -> None:
    """Refuse early what would fail half-way: for a local remote, ``push`` needs the folder (or its
    parent, which DVC will create it in) to exist and be writable; ``pull`` needs the folder to exist
    and be readable. Other remotes (S3, SSH, ...) are left to DVC.

    Raises:
        RemoteError: one line naming the folder and the fix.
    """
    if not remote.local:
        return
    path = Path(remote.path)
    fix = f"or point the remote elsewhere: `dvc remote modify --local {remote.name} url PATH`"
    if mode == "pull":
        if not path.is_dir():
            raise RemoteError(f"DVC remote '{remote.name}' {path} does not exist: nothing was pushed there yet "
                              f"(run `make push` where `dvc repro` ran, or mount the share), {fix}")
        if not os.access(path, os.R_OK | os.X_OK):
            raise RemoteError(f"DVC remote '{remote.name}' {path} is not readable (permissions), {fix}")
        return
    target = path if path.exists() else path.parent
    if not target.is_dir():
        raise RemoteError(f"DVC remote '{remote.name}' {path}: its parent folder {target} does not exist "
                          f"(mount the share or create it), {fix}")
    if not os.access(target, os.W_OK | os.X_OK):
        raise RemoteError(f"DVC remote '{remote.name}' {target} is read-only for this user: nothing can be "
                          f"pushed there, {fix}")


def stages_to_rerun(root: str | Path = ".") -> list[str]:
    """Stages ``dvc repro`` would rerun now (``dvc status --json``: changed deps, params, missing or
    modified outputs), in ``dvc.yaml`` order.

    Raises:
        RemoteError: ``dvc status`` failed (its message).
    """
    proc = subprocess.run(dvc_cmd("status", "--json"), cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RemoteError(f"`dvc status` failed: {tail[0]}")
    text = proc.stdout.strip()
    status = json.loads(text[text.index("{"):]) if "{" in text else {}
    order = _stage_order(Path(root))
    return sorted(status, key=lambda s: (order.get(s.split(":")[-1], len(order)), s))


def _stage_order(root: Path) -> dict[str, int]:
    import yaml

    try:
        stages = yaml.safe_load((root / "dvc.yaml").read_text()).get("stages") or {}
    except (OSError, AttributeError, yaml.YAMLError):
        return {}
    return {name: i for i, name in enumerate(stages)}


def _run_dvc(root: Path, *args: str) -> None:
    """Run DVC with its output on the terminal (progress, its own ERROR line)."""
    proc = subprocess.run(dvc_cmd(*args), cwd=root)
    if proc.returncode != 0:
        raise RemoteError(f"`dvc {' '.join(args)}` failed (DVC's ERROR line above says why); the workspace "
                          f"was not changed by this step")


def push(root: str | Path = ".") -> Remote:
    """``dvc push --run-cache`` to the default remote, after :func:`check_remote`."""
    root = Path(root)
    remote = default_remote(root)
    check_remote(remote, "push")
    _run_dvc(root, "push", "--run-cache")
    return remote


def pull(root: str | Path = ".") -> list[str]:
    """``dvc pull --run-cache --allow-missing`` from the default remote (after :func:`check_remote`),
    then :func:`stages_to_rerun`. Objects the remote lacks are skipped, never half-written: DVC
    downloads into its cache and links only complete objects into the workspace.

    Returns:
        the stages ``dvc repro`` will still run (empty: ``dvc status`` is clean).
    """
    root = Path(root)
    remote = default_remote(root)
    check_remote(remote, "pull")
    _run_dvc(root, "pull", "--run-cache", "--allow-missing")
    return stages_to_rerun(root)


def _say_rerun(stages: list[str]) -> None:
    if stages:
        print(f"WARNING: the remote did not hold everything for this commit: `dvc repro` will rerun "
              f"{len(stages)} stage(s): {', '.join(stages)}", file=sys.stderr)
    else:
        print("dvc status is clean: `dvc repro` has nothing to run")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["push", "pull", "status"])
    ap.add_argument("--root", default=".", help="repository root (default: the current folder)")
    args = ap.parse_args(argv)
    try:
        if args.action == "push":
            remote = push(args.root)
            print(f"pushed to DVC remote '{remote.name}' ({remote.path}); commit and push dvc.lock too")
        elif args.action == "pull":
            _say_rerun(pull(args.root))
        else:
            remote = default_remote(args.root)
            print(f"default DVC remote '{remote.name}': {remote.path}")
            _say_rerun(stages_to_rerun(args.root))
    except RemoteError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
