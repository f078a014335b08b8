"""Helpers for the reliability tests: a tiny repository-like folder (params.yaml + a synthetic
Market-1501 dataset) whose stages run in seconds, a deterministic fake parsing backend, and a check
for "one clear ERROR line and exit status 1"."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pytest
import yaml

from _data_synth import make_market
from ogfr_core.config import ParseConfig, deep_merge
from ogfr_core.parsing import ParseResult, PartParser

REPO = Path(__file__).resolve().parents[1]
DATASET = "toy"
# Small enough that a 2-epoch training run takes seconds on one CPU core.
TINY: dict[str, Any] = {
    "data": {"name": DATASET, "root": "ds", "height": 64, "width": 32, "num_workers": 0},
    "parse": {"label_height": 64, "label_width": 32, "workers": 0, "shard_size": 4, "overlay_grid": 4},
    "train": {"epochs": 2, "ids_per_batch": 2, "images_per_id": 2, "warmup_epochs": 1, "device": "cpu",
              "amp": False, "log_every": 1, "threads": 1,
              "model": {"backbone": "vit_tiny_patch16_224", "depth": 1, "stride": 16, "pretrained": "",
                        "patch_embed": "conv", "stem_weights": "", "stem_frozen_blocks": 0}},
    "evaluate": {"extra_datasets": []},
    "occluder": {"steps": 2, "batch_size": 2, "threads": 1},
}
OUTPUT_DIRS = {"data", "models", "reports"}  # where a stage may write
TRAIN_OUTPUT_DIRS = OUTPUT_DIRS | {"dvclive"}  # the train stage's declared metrics/plots (dvc.yaml)


def train_names(n_ids: int, per_id: int, first_pid: int = 1) -> list[str]:
    """Market-1501 file names: ``per_id`` images of each pid, alternating cameras c1/c2."""
    return [f"{pid:04d}_c{1 + i % 2}s1_{i:06d}_00.jpg"
            for pid in range(first_pid, first_pid + n_ids) for i in range(per_id)]


def write_params(root: Path, overrides: Mapping[str, Any] | None = None) -> Path:
    """``root/params.yaml``: the repository's params.yaml with :data:`TINY` and ``overrides`` merged in."""
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    params = deep_merge(params, overrides or {})
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def make_toy_repo(root: Path, n_ids: int = 4, per_id: int = 4, overrides: Mapping[str, Any] | None = None) -> Path:
    """A repository-like folder: ``params.yaml`` and ``ds/`` (16x32 JPEGs, ``n_ids`` x ``per_id``
    training images, 2 query and 2 gallery images)."""
    make_market(root / "ds", train_names(n_ids, per_id),
                query=["0101_c1s1_000000_00.jpg", "0102_c1s1_000000_00.jpg"],
                gallery=["0101_c2s1_000001_00.jpg", "0102_c2s1_000001_00.jpg"])
    write_params(root, overrides)
    return root


class FakeParser(PartParser):
    """Deterministic and fast: a body layout (head, arms, torso, legs, feet) at the configured label
    size; images with a dark mean have no person. Counts its calls and keeps the arrays it got."""

    model_id = "fake-body-1"

    def __init__(self, cfg: ParseConfig):
        self.cfg = cfg
        self.calls = 0
        self.seen: list[np.ndarray] = []

    def parse(self, image_rgb: np.ndarray) -> ParseResult:
        self.calls += 1
        self.seen.append(image_rgb.copy())
        h, w = self.cfg.label_height, self.cfg.label_width
        if image_rgb.mean() < 20:
            return ParseResult.empty((h, w))
        lab = np.zeros((h, w), np.uint8)
        r = lambda f: int(round(f * h))  # noqa: E731 - rows as fractions of the height
        c = lambda f: int(round(f * w))  # noqa: E731
        lab[r(0.03):r(0.15), c(0.35):c(0.65)] = 1
        lab[r(0.15):r(0.5), c(0.1):c(0.28)] = 2
        lab[r(0.15):r(0.5), c(0.72):c(0.9)] = 3
        lab[r(0.15):r(0.5), c(0.28):c(0.72)] = 4
        lab[r(0.5):r(0.88), c(0.28):c(0.5)] = 5
        lab[r(0.5):r(0.88), c(0.5):c(0.72)] = 6
        amodal = lab.copy()  # where the parts should be: the whole body, feet included
        amodal[r(0.88):r(0.97), c(0.28):c(0.5)] = 7
        amodal[r(0.88):r(0.97), c(0.5):c(0.72)] = 8
        legs = 1 + int(image_rgb[..., 0].sum()) % 2  # some crops lose their feet (occluded legs)
        if legs == 1:
            lab = amodal.copy()
        return ParseResult(lab, np.full((17, 3), 0.5, np.float32), True, amodal)


def prepare_labels(root: Path) -> None:
    """Run the index stage, parse with :class:`FakeParser` and write the occlusion table, in ``root``
    (no predicted occluder on any image: under the ``covered`` rule, z is Eq. 2's)."""
    from ogfr_core.config import DataConfig, OcclusionConfig, load_section
    from ogfr_core.data.index import read_index
    from ogfr_core.io import write_parquet
    from ogfr_core.occlusion import rule_from_config
    from ogfr_core.occlusion.learned import one_hot_logits
    from ogfr_core.occlusion.table import occlusion_table
    from ogfr_core.parsing import parse_dataset, read_parsing
    from ogfr_core.parsing.cache import decode_label_map
    from stages.index import main as index_main

    assert index_main(root) == 0
    data = load_section(root / "params.yaml", "data", DataConfig)
    cfg = load_section(root / "params.yaml", "parse", ParseConfig)
    index = read_index(root / "data" / "index" / f"{data.name}.parquet")
    parse_dir = root / "data" / "parsing" / data.name
    parse_dataset(index, root / data.root, cfg, parse_dir, progress=False, parser=FakeParser(cfg))
    rule = rule_from_config(load_section(root / "params.yaml", "occlusion", OcclusionConfig))
    parsing = read_parsing(parse_dir, columns=["label_map", "amodal_map", "status"])
    no_occluder = {k: np.zeros((cfg.label_height, cfg.label_width), bool) for k in parsing["key"]}  # covered rule
    # learned_parts rule: the parse itself stands in for the occluder stage's learned parse
    parts = dict(zip(parsing["key"], map(decode_label_map, parsing["label_map"]))) if rule.needs_parts else None
    logits = {k: one_hot_logits(m) for k, m in parts.items()} if rule.needs_logits else None
    write_parquet(root / "data" / "occlusion" / f"{data.name}.parquet",
                  occlusion_table(parsing, rule, no_occluder, parts, logits))


def expect_user_error(main: Callable[[], object], caplog: pytest.LogCaptureFixture, root: Path,
                      *needles: str, allowed: set[str] = OUTPUT_DIRS) -> str:
    """Run ``main`` through ``run_stage``: assert exit status 1, exactly one ERROR record that contains
    every ``needle`` and no traceback, and no new top-level entry in ``root`` outside ``allowed``
    (data/, models/, reports/). Returns the ERROR message."""
    from ogfr_core.runtime import run_stage

    before = set(os.listdir(root))
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_:
        run_stage(main)
    assert exit_.value.code == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None
    message = errors[0].getMessage()
    assert "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert set(os.listdir(root)) - before <= allowed
    return message


def stage_env() -> dict[str, str]:
    """Environment for ``python -m stages.<name>`` run in a folder outside the repository."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


PYTHON = sys.executable
