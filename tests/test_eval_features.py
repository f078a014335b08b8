"""FeatureSet, extract_features (fake model), Eq. (23) distance, evaluator helpers, input checks."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from eval_reference import reference_eval
from ogfr_core.evaluation import (FeatureSet, compute_distance, euclidean_distance, extract_features,
                                  global_distance, visibility_distance)
from ogfr_core.evaluation.evaluator import (RerankParams, evaluate_features, pick_queries, retrievals)
from ogfr_core.evaluation.inputs import CheckpointMismatchError, check_meta, read_occlusion_z


def eq23_sets() -> tuple[FeatureSet, FeatureSet]:
    """2 queries × 2 gallery, K = 2 parts, D = 2 (values chosen for round distances)."""
    q = FeatureSet(global_feats=[[0, 0], [1, 0]],
                   part_feats=[[[1, 0], [0, 1]], [[0, 0], [0, 0]]],
                   visibility=[[1, 1], [0, 1]], pids=[1, 2], camids=[0, 0], keys=["q0", "q1"])
    g = FeatureSet(global_feats=[[3, 4], [0, 1]],
                   part_feats=[[[1, 0], [0, 0]], [[4, 4], [0, 3]]],
                   visibility=[[1, 1], [1, 0]], pids=[1, 2], camids=[1, 1], keys=["g0", "g1"])
    return q, g


def test_eq23_hand_computed():
    q, g = eq23_sets()
    d = visibility_distance(q, g)
    # q0-g0: global 5, part1 0, part2 1 (both visible)        → (5 + 0 + 1) / 3 = 2
    # q0-g1: global 1, part1 |(1,0)-(4,4)| = 5, part2 hidden in g1 → (1 + 5) / 2 = 3
    # q1-g0: global √20, part1 hidden in q1, part2 0           → √20 / 2 = √5
    # q1-g1: global √2, no part visible in both                → √2 (global distance alone)
    np.testing.assert_allclose(d, [[2, 3], [math.sqrt(5), math.sqrt(2)]], rtol=1e-5)
    np.testing.assert_allclose(global_distance(q, g), [[5, 1], [math.sqrt(20), math.sqrt(2)]], rtol=1e-5)
    # chunked over single queries: same numbers
    np.testing.assert_allclose(compute_distance(q, g, "visibility", chunk_mb=1e-6), d)


def test_eq23_without_parts_is_global_and_normalisation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    q = FeatureSet(x, np.zeros((5, 0, 8)), np.zeros((5, 0)), np.arange(5), np.zeros(5), list("abcde"))
    g = FeatureSet(y, np.zeros((7, 0, 8)), np.zeros((7, 0)), np.arange(7), np.ones(7), list("abcdefg"))
    ref = np.linalg.norm(x[:, None] - y[None], axis=2)
    np.testing.assert_allclose(visibility_distance(q, g), ref, rtol=1e-4, atol=1e-5)
    xn, yn = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(global_distance(q, g, normalize=True),
                               np.linalg.norm(xn[:, None] - yn[None], axis=2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(euclidean_distance(x, y, chunk_mb=1e-6), ref, rtol=1e-4, atol=1e-5)


def test_featureset_validation_roundtrip_concat(tmp_path):
    q, g = eq23_sets()
    with pytest.raises(ValueError, match="global_feats has 2 rows but pids has 3"):
        FeatureSet(q.global_feats, q.part_feats, q.visibility, [1, 2, 3], q.camids, q.keys)
    with pytest.raises(ValueError, match="keys has 1"):
        FeatureSet(q.global_feats, q.part_feats, q.visibility, q.pids, q.camids, ["only-one"])
    with pytest.raises(ValueError, match="visibility"):
        FeatureSet(q.global_feats, q.part_feats, np.ones((2, 3)), q.pids, q.camids, q.keys)
    both = FeatureSet.concat([q, g])
    assert len(both) == 4 and both.keys == ["q0", "q1", "g0", "g1"] and both.pids.tolist() == [1, 2, 1, 2]
    both.save(tmp_path / "f.npz")
    back = FeatureSet.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(back.part_feats, both.part_feats)
    np.testing.assert_array_equal(back.visibility, both.visibility)
    assert back.keys == both.keys and back.camids.tolist() == both.camids.tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]  # no temp file left behind
    with pytest.raises(FileNotFoundError, match="dvc repro evaluate"):
        FeatureSet.load(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="empty gallery"):
        visibility_distance(q, g.subset(np.zeros(2, bool)))
    with pytest.raises(ValueError, match="empty query"):
        visibility_distance(q.subset(slice(0, 0)), g)


class FakeModel(torch.nn.Module):
    """Deterministic ``extract``: global = mean colour, parts = z-scaled, visibility = ~z[:, :K]."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.k = k
        self.seen_camids: list[int] = []
        self.modes: list[bool] = []

    def extract(self, images, z, camids):
        self.seen_camids += camids.tolist()
        self.modes.append(self.training)
        glob = images.mean(dim=(2, 3))  # [B, 3]
        parts = glob[:, None, :] * (1 + z[:, :self.k, None].float())  # [B, K, 3]
        return {"global": glob, "parts": parts, "visibility": z[:, :self.k] == 0}


def _batches(n: int, bs: int, camids):
    rng = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 8, 4, generator=rng)
    z = torch.randint(0, 2, (n, 4), generator=rng)
    for s in range(0, n, bs):
        yield {"image": images[s:s + bs], "z": z[s:s + bs], "camid": torch.as_tensor(camids[s:s + bs]),
               "pid": torch.arange(s, min(n, s + bs)) // 2, "key": [f"k{i}" for i in range(s, min(n, s + bs))]}


def test_extract_features_with_fake_model():
    model = FakeModel().train()
    camids = [0, 1, 5, 1, 0, 7, 1]
    fs = extract_features(model, list(_batches(7, 3, camids)), torch.device("cpu"), num_cameras=2)
    assert (fs.global_feats.shape, fs.part_feats.shape, fs.visibility.shape) == ((7, 3), (7, 2, 3), (7, 2))
    assert fs.keys == [f"k{i}" for i in range(7)] and fs.pids.tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert fs.camids.tolist() == camids  # the protocol keeps the true cameras
    assert model.seen_camids == [0, 1, 0, 1, 0, 0, 1]  # unseen cameras 5, 7 → embedding 0
    assert model.modes == [False] * 3 and model.training  # eval during extraction, restored after
    batch = next(_batches(7, 7, camids))
    np.testing.assert_allclose(fs.global_feats, batch["image"].mean(dim=(2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fs.visibility, (batch["z"][:, :2] == 0).numpy())


def test_extract_features_bad_input():
    model = FakeModel()
    with pytest.raises(ValueError, match="no batch"):
        extract_features(model, [], "cpu")
    bad = [{k: v for k, v in b.items() if k != "z"} for b in _batches(3, 3, [0, 0, 0])]
    with pytest.raises(KeyError, match="'z'"):
        extract_features(model, bad, "cpu")

    class Broken(FakeModel):
        def extract(self, images, z, camids):
            return {"global": images.mean(dim=(2, 3))}

    with pytest.raises(KeyError, match="parts"):
        extract_features(Broken(), list(_batches(3, 3, [0, 0, 0])), "cpu")


def test_evaluate_features_streams_like_full_matrix():
    rng = np.random.default_rng(3)
    n_q, n_g, k, dim = 30, 80, 3, 6

    def make(n, cam):
        return FeatureSet(rng.normal(size=(n, dim)), rng.normal(size=(n, k, dim)), rng.random((n, k)) > 0.3,
                          rng.integers(0, 10, n), np.full(n, cam), [f"{cam}-{i}" for i in range(n)])

    q, g = make(n_q, 0), make(n_g, 1)
    for kind in ("visibility", "global"):
        d = compute_distance(q, g, kind, normalize=True)
        cmc, mAP, mINP, n_valid, _ = reference_eval(d, q.pids, g.pids, q.camids, g.camids, 50)
        res = evaluate_features(q, g, kind, 50, chunk_mb=0.01, normalize=True)
        np.testing.assert_allclose(res.cmc, cmc, atol=1e-6)
        assert res.mAP == pytest.approx(mAP, abs=1e-6) and res.num_valid_queries == n_valid
    rr = evaluate_features(q, g, "visibility", 50, normalize=True, rerank=RerankParams(True, 10, 3, 0.3))
    assert 0 <= rr.mAP <= 1 and rr.cmc.shape == (50,)
    occluded = np.arange(n_q) % 3 == 0
    picked = pick_queries(q, g, occluded, 4)
    assert len(picked) == 4 and occluded[picked].all()
    ex = retrievals(q, g, picked, "visibility", occluded, top_k=5)
    d = compute_distance(q, g, "visibility", normalize=True)
    for e, qi in zip(ex, picked):
        assert len(e["top"]) == 5 and e["occluded"]
        dists = [t["distance"] for t in e["top"]]
        assert dists == sorted(dists) and dists[0] == pytest.approx(d[qi].min(), abs=1e-6)
        assert all(t["match"] == (t["pid"] == e["query_pid"]) for t in e["top"])


def test_checkpoint_meta_mismatch_is_a_clear_error():
    meta = {"model": {}, "data": {"name": "market1501"}, "train": {}, "num_classes": 751,
            "num_cameras": 6, "height": 256, "width": 128, "epochs_trained": 1,
            "pretrained_weights": "", "method": "ogfr"}
    check_meta(meta, "models/market1501/model.pt", "market1501")
    with pytest.raises(CheckpointMismatchError, match="trained on 'market1501' but data.name is 'msmt17'"):
        check_meta(meta, "models/msmt17/model.pt", "msmt17")
    with pytest.raises(CheckpointMismatchError, match=r"lacks \['num_cameras'\].*dvc repro train"):
        check_meta({k: v for k, v in meta.items() if k != "num_cameras"}, "m.pt", "market1501")


def test_read_occlusion_z(tmp_path):
    p = tmp_path / "occ.parquet"
    pd.DataFrame({"key": ["a", "b"], "z_head": [0, 1], "z_arms": [0, 0], "z_torso": [1, 0],
                  "z_legs": [0, 1]}).to_parquet(p)
    z = read_occlusion_z(p)
    assert z["a"].tolist() == [0, 0, 1, 0] and z["b"].tolist() == [1, 0, 0, 1]
    with pytest.raises(FileNotFoundError, match="dvc repro occlusion"):
        read_occlusion_z(tmp_path / "missing.parquet")
    pd.DataFrame({"key": ["a"], "z_head": [0]}).to_parquet(p)
    with pytest.raises(ValueError, match="lacks column"):
        read_occlusion_z(p)
