"""A user's mistake ends in one clear ERROR line (the file or key, and the fix) and exit status 1,
never a traceback, and nothing is written outside data/, models/, reports/ (issue 11, items 2, 3, 6).

Each case runs the real stage entry point (``run_stage(main)``) in a tiny repository-like folder
(tests/_repo_synth.py); the disk-full case runs a real ``python -m stages.index`` subprocess under a
file-size limit, so the write fails in the operating system.
"""
from __future__ import annotations

import json
import resource
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from _data_synth import write_jpeg
from _repo_synth import (DATASET, PYTHON, TRAIN_OUTPUT_DIRS, expect_user_error, make_toy_repo, prepare_labels,
                         stage_env, write_params)
from ogfr_core.config import ConfigError, DataConfig, ParseConfig, TrainConfig, from_dict
from ogfr_core.data.images import ImageReadError, load_rgb


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Stages run in this process set ``train.threads``; give the other tests their thread count back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _index_main(root: Path):
    from stages.index import main

    return lambda: main(root)


def _stage(name: str):
    import importlib

    return importlib.import_module(f"stages.{name}").main


# ------------------------------------------------------------------------------------------------
# params: malformed YAML, missing section, unsafe names, ranges (item 2, item 3)
# ------------------------------------------------------------------------------------------------
def test_malformed_params_yaml_names_file_and_line(tmp_path, caplog):
    make_toy_repo(tmp_path)
    text = (tmp_path / "params.yaml").read_text().replace("name: toy", "name: [toy", 1)
    (tmp_path / "params.yaml").write_text(text)
    msg = expect_user_error(_index_main(tmp_path), caplog, tmp_path, "params.yaml: not valid YAML at line",
                            "fix the syntax")
    assert "ConfigError" in msg
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("stage, section", [("parse", "data"), ("train", "train"), ("occlusion", "occlusion")])
def test_missing_params_section_names_it(tmp_path, caplog, monkeypatch, stage, section):
    import yaml

    make_toy_repo(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    del params[section]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    expect_user_error(_stage(stage), caplog, tmp_path, f"section '{section}' is missing", "params.yaml")


@pytest.mark.parametrize("name", ["../../escaped", "<absolute>", "a/b", ".hidden", ""])
def test_unsafe_data_name_is_rejected_before_any_write(tmp_path, caplog, name):
    root = tmp_path / "repo"
    root.mkdir()
    if name == "<absolute>":  # data/index/<name>.parquet would land at tmp_path/outside.parquet
        name = str(tmp_path / "outside")
    make_toy_repo(root, overrides={"data": {"name": name}})
    msg = expect_user_error(_index_main(root), caplog, root, "data.name", "not a safe name",
                            "letters, digits")
    assert repr(name) in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # nothing beside the repository
    assert not (root / "data").exists()


@pytest.mark.parametrize("stage, section, key, value, allowed", [
    ("index", "data", "height", -5, ">= 1"),
    ("parse", "parse", "label_height", 0, ">= 1"),
    ("train", "train", "lr", 0, "> 0"),
    ("train", "train", "model.drop_path", 1.5, "in [0, 1)"),
    ("occlusion", "occlusion", "lam", -1.0, ">= 0"),
])
def test_out_of_range_param_names_key_and_range(tmp_path, caplog, monkeypatch, stage, section, key, value, allowed):
    over: dict = {}
    node = over.setdefault(section, {})
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    make_toy_repo(tmp_path, overrides=over)
    monkeypatch.chdir(tmp_path)
    main = _index_main(tmp_path) if stage == "index" else _stage(stage)
    expect_user_error(main, caplog, tmp_path, f"{section}.{key}: ", "allowed range", allowed)


def test_range_table_covers_new_fields_with_one_line():
    """The checks are a table keyed by dataclass and field: every listed field exists, so a field
    renamed or removed by a later change cannot leave a silent stale check."""
    import dataclasses

    from ogfr_core.config import CHECKS

    for cls, checks in CHECKS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(checks) <= names, (cls.__name__, set(checks) - names)
    ok = from_dict(TrainConfig, {"lr": 0.01, "augment": {"occlusion_area": [0.1, 0.4]}}, "train")
    assert ok.lr == 0.01
    with pytest.raises(ConfigError, match=r"train.augment.occlusion_area.*non-decreasing"):
        from_dict(TrainConfig, {"augment": {"occlusion_area": [0.4, 0.1]}}, "train")
    with pytest.raises(ConfigError, match=r"parse.pad_ratios.*at least one value"):
        from_dict(ParseConfig, {"pad_ratios": []}, "parse")
    with pytest.raises(ConfigError, match=r"data.min_size: 0 .*>= 1"):
        from_dict(DataConfig, {"name": "x", "root": "y", "min_size": 0}, "data")
    with pytest.raises(ConfigError, match="nan"):
        from_dict(TrainConfig, {"lr": float("nan")}, "train")


# ------------------------------------------------------------------------------------------------
# training inputs: partial parse cache, unreadable image in a DataLoader worker, too few ids (item 2)
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A toy repository with index, parsing (fake backend) and occlusion labels in place; cwd = it."""
    make_toy_repo(tmp_path)
    prepare_labels(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_partial_parse_cache_names_count_and_stage(toy, caplog):
    # the dataset grows (2 new identities) and the index is rebuilt, but parse did not run again
    for i, name in enumerate(["0009_c1s1_000000_00.jpg", "0009_c2s1_000001_00.jpg",
                              "0010_c1s1_000000_00.jpg", "0010_c2s1_000001_00.jpg"]):
        write_jpeg(toy / "ds" / "bounding_box_train" / name, seed=500 + i)
    from stages.index import main as index_main

    assert index_main(toy) == 0
    msg = expect_user_error(_stage("train"), caplog, toy, "4 of 20 training images have no parsing label map",
                            "dvc repro parse")
    assert "occlusion label" in msg  # the occlusion table is stale too, and says so in the same line
    expect_user_error(_stage("occlusion"), caplog, toy, "4 of 24 indexed images have no parsing result",
                      "bounding_box_train/0009_c1s1_000000_00.jpg", "run `dvc repro parse`")
    assert not (toy / "models" / DATASET / "last.pt").exists()


def test_unreadable_image_in_dataloader_worker_is_one_line(toy, caplog):
    write_params(toy, {"data": {"num_workers": 1}, "train": {"epochs": 1}})
    gone = toy / "ds" / "bounding_box_train" / "0003_c1s1_000000_00.jpg"
    gone.unlink()  # moved away after indexing and parsing
    msg = expect_user_error(_stage("train"), caplog, toy, "ImageReadError", "ds/bounding_box_train/0003_c1s1_000000_00.jpg",
                            "file not found", "dvc repro index", "DataLoader worker", allowed=TRAIN_OUTPUT_DIRS)
    assert "\n" not in msg


def test_too_few_identities_for_p_names_the_params(toy, caplog):
    write_params(toy, {"train": {"ids_per_batch": 16}})
    expect_user_error(_stage("train"), caplog, toy, "only 4 identities but P = 16", "train.ids_per_batch")


def test_index_without_train_split_is_a_user_error(toy, caplog):
    index_path = toy / "data" / "index" / f"{DATASET}.parquet"
    index = pd.read_parquet(index_path)
    index[index["split"] != "train"].to_parquet(index_path, index=False)
    expect_user_error(_stage("train"), caplog, toy, "has no training images", "data.layout")


# ------------------------------------------------------------------------------------------------
# disk full: a real write failure from the operating system (item 2)
# ------------------------------------------------------------------------------------------------
def test_write_failure_is_one_error_line_and_leaves_nothing(tmp_path):
    """ENOSPC cannot be produced without mounting a small file system; a file-size limit
    (``RLIMIT_FSIZE`` = 0) makes the same write path fail in the kernel (EFBIG), and Python ignores
    the SIGXFSZ signal, so the stage sees an OSError exactly as on a full disk."""
    make_toy_repo(tmp_path)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    proc = subprocess.run([PYTHON, "-m", "stages.index"], cwd=tmp_path, env=stage_env(), capture_output=True,
                          text=True, preexec_fn=limit, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, proc.stderr
    assert f"cannot write data/index/{DATASET}.parquet" in errors[0] and "ulimit -f" in errors[0]
    folder = tmp_path / "data" / "index"
    assert list(folder.iterdir()) == []  # no output, no temp file
    assert not (tmp_path / "reports").exists()


# ------------------------------------------------------------------------------------------------
# bad image files and names: logged skips counted in the index summary (items 2, 6)
# ------------------------------------------------------------------------------------------------
def _png_with_size(path: Path, width: int, height: int) -> None:
    """A valid 1x1 PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    import io

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # signature; then length(4) 'IHDR'(4) data(13) crc(4)
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4:ihdr + 21])) & 0xFFFFFFFF
    data[ihdr + 21:ihdr + 25] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def test_bad_files_and_names_are_counted_skips(tmp_path, caplog):
    make_toy_repo(tmp_path)
    train = tmp_path / "ds" / "bounding_box_train"
    _png_with_size(train / "0001_c1s1_000090_00.png", 100_000, 100_000)  # 10^10 pixels
    Image.new("RGB", (1, 1), (200, 10, 10)).save(train / "0002_c1s1_000091_00.png")
    write_jpeg(train / "0002_c1s1_000092_00.jpg".replace("0002", "\uff10\uff10\uff10\uff12"), seed=91)
    write_jpeg(train / "0002_c1s1_000093_00.jpg".replace("0002", "\u0660\u0660\u0660\u0662"), seed=92)
    write_jpeg(train / ("1" * 20 + "_c1s1_000094_00.jpg"), seed=93)
    from stages.index import main

    assert main(tmp_path) == 0
    summary = json.loads((tmp_path / "reports" / "index" / "summary.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert summary["skipped_count"] == 5 == len(reasons)
    assert "too large to decode safely" in reasons["0001_c1s1_000090_00.png"]
    assert "1x1 px is smaller than data.min_size = 8" in reasons["0002_c1s1_000091_00.png"]
    assert "does not match" in reasons["\uff10\uff10\uff10\uff12_c1s1_000092_00.jpg"]
    assert "does not match" in reasons["\u0660\u0660\u0660\u0662_c1s1_000093_00.jpg"]
    assert "64-bit" in reasons["1" * 20 + "_c1s1_000094_00.jpg"]
    index = pd.read_parquet(tmp_path / "data" / "index" / f"{DATASET}.parquet")
    assert len(index) == 20 and index["pid"].max() < 200  # only the toy set's own images
    assert not any(r.levelname == "ERROR" for r in caplog.records)


def test_io_error_while_indexing_fails_instead_of_skipping(tmp_path, caplog):
    """A file that is there but cannot be read (a real EIO: a symlink to /proc/self/mem) must not be
    left out of the index silently — DVC would cache that index as if the image did not exist."""
    make_toy_repo(tmp_path)
    (tmp_path / "ds" / "bounding_box_train" / "0001_c1s1_000077_00.jpg").symlink_to("/proc/self/mem")
    expect_user_error(_index_main(tmp_path), caplog, tmp_path, "DatasetReadError", "1 image file(s) could not be read",
                      "0001_c1s1_000077_00.jpg", "Input/output error", "rerun `dvc repro index`")
    assert not (tmp_path / "data" / "index" / f"{DATASET}.parquet").exists()


# ------------------------------------------------------------------------------------------------
# one RGB converter for parsing and training (item 6)
# ------------------------------------------------------------------------------------------------
def test_parse_sees_the_pixels_training_sees(tmp_path):
    """RGBA (colour stored under alpha = 0) and 16-bit images reach the parser exactly as
    ``load_rgb`` gives them to training (alpha composited on black, 16-bit rescaled)."""
    import hashlib

    from _repo_synth import FakeParser
    from ogfr_core.parsing.driver import parse_items

    rgba = np.zeros((32, 16, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:16, :, 3] = 255  # top half opaque, bottom half transparent (colour 200 underneath)
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    deep = (np.arange(32 * 16, dtype=np.uint16).reshape(32, 16) * 120)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    cfg = from_dict(ParseConfig, {"label_height": 32, "label_width": 16}, "parse")
    parser = FakeParser(cfg)
    items = [(hashlib.sha1((tmp_path / n).read_bytes()).hexdigest(), str(tmp_path / n)) for n in ("alpha.png", "deep.png")]
    rows, failures = parse_items(parser, cfg, "cid", items)
    assert failures == [] and len(rows) == 2
    for seen, name in zip(parser.seen, ("alpha.png", "deep.png")):
        np.testing.assert_array_equal(seen, np.asarray(load_rgb(tmp_path / name)))
    assert parser.seen[0][20].max() == 0  # transparent -> black, not the stored 200
    assert parser.seen[1].max() > 100 and parser.seen[1].shape == (32, 16, 3)


def test_image_read_error_survives_pickling_and_worker_reraise():
    import pickle

    err = ImageReadError("ds/a.jpg", "file not found", transient=True)
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, back.transient, str(back)) == (err.path, err.reason, True, str(err))
    # what torch's DataLoader does with a worker's exception: type(exc)(text with the traceback)
    text = ("Caught ImageReadError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in <module>\n'
            f"ogfr_core.data.images.ImageReadError: {err}\n")
    rebuilt = ImageReadError(text)
    assert str(rebuilt).startswith(str(err)) and "\n" not in str(rebuilt) and rebuilt.path == "ds/a.jpg"
