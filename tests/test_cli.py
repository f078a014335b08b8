"""`ogfr search` and `ogfr export` on a tiny random-init checkpoint (nothing is trained here):
planted match first, the gallery feature cache, export parity with PyTorch, one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from ogfr_core.occlusion import OcclusionRule
import torch
from PIL import Image

from ogfr_core.cli import main
from ogfr_core.inference import SearchOptions, ZSource, search

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def tiny_checkpoint(path: Path, method: str = "ogfr", seed: int = 0) -> Path:
    """A real OGFR (or baseline) checkpoint, randomly initialised: vit_tiny cut to 1 block, 64×32 input.
    (timm's smaller ``test_vit*`` models use ``dynamic_img_size``, which OAViT does not support.)"""
    from ogfr_core.config import ModelConfig, TrainConfig, to_dict
    from ogfr_core.model import build_model
    from ogfr_core.training.checkpoint import save_checkpoint

    cfg = ModelConfig(method=method, backbone="vit_tiny_patch16_224", depth=1, stride=16, patch_size=16)
    torch.manual_seed(seed)
    model = build_model(cfg, num_classes=3, num_cameras=2, img_size=(64, 32), load_weights=False)
    meta = {"model": to_dict(cfg), "data": {"name": "tiny"}, "train": to_dict(TrainConfig()),
            "num_classes": 3, "num_cameras": 2, "height": 64, "width": 32, "epochs_trained": 1,
            "pretrained_weights": "", "method": method}
    save_checkpoint(path, model, None, None, 1, meta)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """Built once per module (a timm ViT init costs seconds): two OGFR seeds and a baseline."""
    d = tmp_path_factory.mktemp("ckpts")
    return {"a": tiny_checkpoint(d / "a.pt"), "b": tiny_checkpoint(d / "b.pt", seed=1),
            "baseline": tiny_checkpoint(d / "baseline.pt", method="baseline")}


@pytest.fixture(scope="module")
def loaded(ckpts) -> dict[str, tuple]:
    """``load_inference_model`` of each checkpoint, once (the references the tests compare with)."""
    from ogfr_core.inference.common import load_inference_model

    return {k: load_inference_model(p) for k, p in ckpts.items()}


def blocks(seed: int) -> np.ndarray:
    """A 128×64 RGB image of 8 random colour bands with a random dark 'person' box (uint8)."""
    rng = np.random.default_rng(seed)
    img = np.repeat(rng.integers(0, 256, (8, 1, 3)), 16, axis=0).repeat(64, axis=1).astype(np.uint8)  # [128, 64, 3]
    y, x = rng.integers(10, 60), rng.integers(4, 30)
    img[y:y + 60, x:x + 28] = rng.integers(0, 90, 3)
    return img


@pytest.fixture
def gallery(tmp_path) -> tuple[Path, Path, Path]:
    """(query image, gallery folder, the planted match): 11 distinct images + the query with noise."""
    query = tmp_path / "query.png"
    Image.fromarray(blocks(0)).save(query)
    folder = tmp_path / "gallery"
    (folder / "sub").mkdir(parents=True)
    for i in range(1, 12):
        Image.fromarray(blocks(i)).save(folder / ("sub" if i % 3 == 0 else "") / f"g{i:02d}.png")
    noisy = blocks(0).astype(np.int16) + np.random.default_rng(99).integers(-4, 5, (128, 64, 3))
    planted = folder / "g07_planted.png"
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(planted)
    return query, folder, planted


def test_search_returns_the_planted_match_first(tmp_path, gallery, ckpts, loaded, capsys):
    """Through the CLI; the distances are Eq. (23) recomputed by hand from model.extract."""
    from ogfr_core.data.images import load_rgb
    from ogfr_core.inference.common import eval_transform

    query, folder, planted = gallery
    (folder / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")  # skipped, counted, not fatal
    out = tmp_path / "res" / "results.json"
    code = main(["search", "--model", str(ckpts["a"]), "--query", str(query), "--gallery", str(folder),
                 "--top-k", "12", "--out", str(out), "--figure", str(tmp_path / "res" / "fig.png"),
                 "--assume-holistic", "--params", str(tmp_path / "none.yaml"), "--device", "cpu"])
    assert code == 0
    doc = json.loads(out.read_text())
    q = doc["queries"][0]
    assert [r["rank"] for r in q["results"]] == list(range(1, 13))
    assert q["results"][0]["path"] == str(planted)
    d = [r["distance"] for r in q["results"]]
    assert d == sorted(d) and d[0] < 0.5 * d[1]  # the near-copy is far closer than anything else
    assert doc["gallery"]["images"] == 12 and doc["gallery"]["cache"]["embedded"] == 12
    assert [s["path"] for s in doc["gallery"]["skipped"]] == [str(folder / "sub" / "broken.jpg")]
    assert q["z"] == [0, 0, 0, 0] and q["parse_status"] == "holistic" and len(q["visibility"]) == 8
    assert doc["distance"] == "visibility" and doc["method"] == "ogfr"
    assert f"    1. {d[0]:.4f}  {planted}" in capsys.readouterr().out
    assert Image.open(tmp_path / "res" / "fig.png").size[0] > 300

    model, meta = loaded["a"]
    tf = eval_transform(meta)
    paths = [query] + [Path(r["path"]) for r in q["results"]]
    x = torch.stack([tf(load_rgb(p)) for p in paths])  # [13, 3, 64, 32]
    feats = model.extract(x, torch.zeros(len(paths), 4, dtype=torch.long), torch.zeros(len(paths), dtype=torch.long))
    g = torch.nn.functional.normalize(feats["global"], dim=-1)  # [13, D]
    p = torch.nn.functional.normalize(feats["parts"], dim=-1)  # [13, K, D]
    v = feats["visibility"].float()  # [13, K]
    for j, r in enumerate(q["results"], start=1):
        w = v[0] * v[j]  # parts visible in both
        num = (g[0] - g[j]).norm() + (w * (p[0] - p[j]).norm(dim=-1)).sum()
        # evaluation computes |x|² + |y|² − 2x·y in float32: ~1e-5 absolute cancellation error near 0
        assert r["distance"] == pytest.approx(float(num / (w.sum() + 1)), abs=1e-4)


def test_gallery_cache_is_reused_and_invalidated_by_another_model(tmp_path, gallery, ckpts):
    query, folder, planted = gallery
    a, b = ckpts["a"], ckpts["b"]
    cache = tmp_path / "cache"
    first = search(a, [query], folder, ZSource(), SearchOptions(top_k=12), cache)
    again = search(a, [query], folder, ZSource(), SearchOptions(top_k=12), cache)
    assert (first["gallery"]["cache"]["embedded"], again["gallery"]["cache"]["embedded"]) == (12, 0)
    assert again["gallery"]["cache"]["reused"] == 12
    assert again["queries"][0]["results"] == first["queries"][0]["results"]  # cached = recomputed
    other = search(b, [query], folder, ZSource(), SearchOptions(top_k=12), cache)
    assert other["gallery"]["cache"]["embedded"] == 12
    assert other["gallery"]["cache"]["path"] != first["gallery"]["cache"]["path"]
    assert other["queries"][0]["results"] != first["queries"][0]["results"]
    Image.fromarray(blocks(50)).save(folder / "new.png")  # a grown gallery embeds only the new image
    (folder / "g01.png").rename(folder / "renamed.png")  # same content under a new name: still cached
    grown = search(a, [query], folder, ZSource(), SearchOptions(top_k=13), cache)
    assert (grown["gallery"]["cache"]["embedded"], grown["gallery"]["cache"]["reused"]) == (1, 12)
    assert grown["queries"][0]["results"][0]["path"] == str(planted)


def test_search_parses_real_queries_with_the_configured_backend(tmp_path, shared_root, ckpts):
    """z from mediapipe + Eq. (2) on a real crop, as the occlusion stage would compute it."""
    from ogfr_core.config import ParseConfig
    from ogfr_core.occlusion import coarse_counts, occlusion_labels, scaled_threshold
    from ogfr_core.parsing import build_parser
    from ogfr_core.parsing.driver import read_rgb

    crops = [*sorted((shared_root / "query").glob("*.jpg"))[:1],
             *sorted((shared_root / "bounding_box_test").glob("*.jpg"))[:3]]
    folder = tmp_path / "gallery"
    folder.mkdir()
    for c in crops[1:]:
        (folder / c.name).write_bytes(c.read_bytes())
    cfg = ParseConfig(workers=1)
    doc = search(ckpts["a"], [crops[0]], folder, ZSource(cfg, OcclusionRule()), SearchOptions(top_k=3),
                 tmp_path / "cache")
    q = doc["queries"][0]
    label = build_parser(cfg).parse(read_rgb(crops[0])).label_map
    expected = occlusion_labels(coarse_counts(label), scaled_threshold(5.0, label.shape)).tolist()
    assert q["z"] == expected and q["parse_status"] == "ok"
    assert "mediapipe" in doc["z_source"] and len(q["results"]) == 3


def _export_and_check(tmp_path, shared_root, ckpt: Path, reference: tuple, method: str, fmt: str):
    out = tmp_path / f"student.{fmt}"
    assert main(["export", "--model", str(ckpt), "--format", fmt, "--out", str(out),
                 "--verify-images", str(shared_root / "query")]) == 0
    # an independent run of the saved file: batch 3 (traced with 2), an unseen camera id (5 → 0)
    from ogfr_core.data.images import load_rgb
    from ogfr_core.inference.common import eval_transform

    model, meta = reference
    crops = sorted((shared_root / "bounding_box_test").glob("*.jpg"))[:3]
    x = torch.stack([eval_transform(meta)(load_rgb(c)) for c in crops])  # [3, 3, 64, 32]
    z = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 1], [0, 1, 1, 0]])
    cams = torch.tensor([0, 1, 5])
    ref = model.extract(x, z, torch.tensor([0, 1, 0]))
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["images", "z", "camids"]
        got = sess.run(None, {"images": x.numpy(), "z": z.numpy(), "camids": cams.numpy()})
        meta_props = sess.get_modelmeta().custom_metadata_map
        assert (meta_props["ogfr.height"], meta_props["ogfr.width"], meta_props["ogfr.method"]) == ("64", "32", method)
    else:
        got = [t.numpy() for t in torch.jit.load(str(out))(x, z, cams)]
    for name, g in zip(("global", "parts", "visibility"), got):
        r = ref[name].numpy()
        assert g.shape == r.shape
        if r.dtype == np.bool_:
            assert (g == r).all()
        elif r.size:
            assert np.abs(g - r).max() <= 1e-4
    return out


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("method, fmt", [("ogfr", "onnx"), ("ogfr", "torchscript"), ("baseline", "onnx")])
def test_export_matches_pytorch_on_real_crops(tmp_path, shared_root, ckpts, loaded, capsys, method, fmt):
    pytest.importorskip("onnxruntime", reason="pip install '.[export]'")
    key = "a" if method == "ogfr" else method
    _export_and_check(tmp_path, shared_root, ckpts[key], loaded[key], method, fmt)
    printed = capsys.readouterr().out
    assert "export check:" in printed and "8 real crops" in printed
    assert printed.count(" ok\n") == 6 and "FAILED" not in printed  # 3 outputs × batches 8 and 1


def test_export_that_disagrees_is_not_written(tmp_path, shared_root, ckpts, caplog):
    ckpt = ckpts["a"]
    out = tmp_path / "student.pt"
    code = main(["export", "--model", str(ckpt), "--format", "torchscript", "--out", str(out),
                 "--verify-images", str(shared_root / "query"), "--tolerance", "-1"])
    assert code == 1 and not out.exists() and not list(tmp_path.glob(".student.pt*"))
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "does not match PyTorch, not written" in errors[0].getMessage()


def _broken_checkpoints(tmp_path: Path, good_path: Path) -> dict[str, Path]:
    """Checkpoints this code cannot use: another version's meta, and another model's weights."""
    good = torch.load(good_path, weights_only=True)
    other_version = dict(good, meta=dict(good["meta"], model=dict(good["meta"]["model"], future_knob="x")))
    torch.save(other_version, tmp_path / "other_version.pt")
    other_method = dict(good, meta=dict(good["meta"], model=dict(good["meta"]["model"], method="baseline"),
                                        method="baseline"))
    torch.save(other_method, tmp_path / "other_method.pt")
    (tmp_path / "not_a_checkpoint.pt").write_bytes(b"onnx?")
    return {"unknown key(s) ['future_knob']": tmp_path / "other_version.pt",
            "does not match the model": tmp_path / "other_method.pt",
            "cannot read checkpoint": tmp_path / "not_a_checkpoint.pt"}


def test_user_errors_are_one_line_and_exit_1(tmp_path, gallery, ckpts, caplog):
    query, folder, _ = gallery
    model = ckpts["a"]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "empty").mkdir()
    common = ["--out", str(tmp_path / "r.json"), "--assume-holistic"]
    cases = {
        "query " + str(bad): ["search", "--model", str(model), "--query", str(bad), "--gallery", str(folder), *common],
        "no image files": ["search", "--model", str(model), "--query", str(query), "--gallery", str(tmp_path / "empty"),
                           *common],
        "--params": ["search", "--model", str(model), "--query", str(query), "--gallery", str(folder),
                     "--params", str(tmp_path / "missing.yaml")],
        "need at least 3 real crops": ["export", "--model", str(model), "--format", "onnx",
                                       "--out", str(tmp_path / "x.onnx"), "--verify-images", str(query)],
    }
    for expected, path in _broken_checkpoints(tmp_path, model).items():
        cases[expected] = ["search", "--model", str(path), "--query", str(query), "--gallery", str(folder), *common]
    for expected, argv in cases.items():
        caplog.clear()
        assert main(argv) == 1, expected
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "\n" not in errors[0] and expected in errors[0], (expected, errors)


def test_cli_error_in_a_real_process_is_one_stderr_line(tmp_path, gallery):
    """The console script's module as a real process: a missing checkpoint → exit 1, one line, no traceback."""
    query, folder, _ = gallery
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ogfr_core.cli", "search", "--model", str(tmp_path / "no.pt"),
                           "--query", str(query), "--gallery", str(folder), "--assume-holistic",
                           "--out", str(tmp_path / "r.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ERROR" in lines[0] and "checkpoint not found" in lines[0], proc.stderr


def test_console_script_entry_point():
    """pyproject.toml declares `ogfr = ogfr_core.cli:main`, and it resolves to the CLI."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["ogfr"].partition(":")
    import importlib

    assert getattr(importlib.import_module(module), attr) is main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0


def test_covered_rule_without_the_occluder_segmenter_is_one_error_before_parsing(tmp_path):
    """``ogfr search`` with a model trained under the ``covered`` rule needs the ``occluder`` stage's
    weights: a missing file is named (with the stage to run) before any image is parsed."""
    from ogfr_core.config import ParseConfig
    from ogfr_core.inference.search import occlusion_z
    from ogfr_core.occlusion.learned import OccluderWeightsError

    source = ZSource(ParseConfig(), OcclusionRule("covered", 5.0, 0.5), occluder=tmp_path / "none.safetensors")
    with pytest.raises(OccluderWeightsError, match=r"none\.safetensors.*dvc repro occluder"):
        occlusion_z([("k", str(tmp_path / "q.png"))], source, tmp_path / "parse")
    assert not (tmp_path / "parse").exists()
