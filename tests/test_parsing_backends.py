"""Backend registry, clear errors for missing packages/weights, torchvision plumbing (random weights)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ogfr_core.config import ParseConfig
from ogfr_core.parsing import BACKENDS, BackendUnavailableError, ParseResult, build_parser
from ogfr_core.parsing.maskrcnn import load_state_dict_strict
from ogfr_core.parsing.torchvision_backend import TorchvisionParser, keypoints_to_result

IMG = np.zeros((128, 64, 3), np.uint8)


def cfg(**kw) -> ParseConfig:
    return dataclasses.replace(ParseConfig(), **kw)


def test_registry_names_and_unknown_backend():
    assert set(BACKENDS) == {"mediapipe", "pifpaf_maskrcnn", "torchvision"}
    assert build_parser(cfg()).model_id.startswith("mediapipe-0.10.21/")
    with pytest.raises(KeyError, match="registered"):
        build_parser(cfg(backend="nope"))


def test_pifpaf_backend_names_the_missing_package():
    pytest.importorskip("torch")
    try:
        import openpifpaf  # noqa: F401
        pytest.skip("openpifpaf is installed here")
    except ImportError:
        pass
    parser = build_parser(cfg(backend="pifpaf_maskrcnn"))
    with pytest.raises(BackendUnavailableError, match="pip install openpifpaf"):
        parser.parse(IMG)


def test_torchvision_backend_names_the_missing_weights(tmp_path):
    with pytest.raises(BackendUnavailableError, match="parse.weights is empty"):
        build_parser(cfg(backend="torchvision", device="cpu")).parse(IMG)
    missing = tmp_path / "keypointrcnn.pth"
    with pytest.raises(BackendUnavailableError, match="keypointrcnn.pth"):
        build_parser(cfg(backend="torchvision", device="cpu", weights=str(missing))).parse(IMG)


def test_checkpoint_mismatch_lists_keys(tmp_path):
    model = torch.nn.Linear(2, 2)
    state = dict(model.state_dict(), extra=torch.zeros(1))
    del state["bias"]
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"missing keys \['bias'\].*unexpected keys \['extra'\]"):
        load_state_dict_strict(model, path)


def test_keypoints_to_result_scales_to_label_map():
    kps = np.zeros((17, 3), np.float32)
    kps[5] = (44, 31, 0.9)   # left shoulder, image pixels of a 64x128 crop
    kps[7] = (49, 50, 0.9)   # left elbow
    res = keypoints_to_result(kps, np.ones((128, 64), np.float32), (128, 64), cfg())
    assert res.person_found and res.label_map.shape == (256, 128)
    np.testing.assert_allclose(res.keypoints[5], [88, 62, 0.9], rtol=1e-6)
    ys, xs = np.nonzero(res.label_map == 2)  # left arm drawn between the scaled points
    assert len(xs) and 80 < xs.mean() < 106 and 55 < ys.mean() < 108


@pytest.mark.slow
def test_torchvision_plumbing_with_random_weights():
    from torchvision.models.detection import keypointrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    small = dict(weights=None, weights_backbone=None, min_size=64, max_size=128, box_score_thresh=0.0,
                 box_detections_per_img=5)
    parser = TorchvisionParser(cfg(backend="torchvision", device="cpu"), keypoint_model=keypointrcnn_resnet50_fpn(**small),
                               mask_model=maskrcnn_resnet50_fpn(**small), score_threshold=0.0)
    rng = np.random.default_rng(0)
    res = parser.parse(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8))
    assert isinstance(res, ParseResult)
    assert res.label_map.shape == (256, 128) and res.label_map.dtype == np.uint8
    assert res.keypoints.shape == (17, 3) and res.label_map.max() <= 8
    assert ((res.keypoints[:, 2] >= 0) & (res.keypoints[:, 2] <= 1)).all()


def test_mediapipe_backend_names_the_missing_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError
    parser = build_parser(cfg())
    with pytest.raises(BackendUnavailableError, match=r"pip install mediapipe==0\.10\.21"):
        parser.parse(IMG)
