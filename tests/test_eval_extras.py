"""The generic test-time extras machinery (:mod:`ogfr_core.evaluation.extras`): top-k fusion on a
hand-computed case, the on-disk token store, the streaming of variants into the rank metrics and its
checks, and the warning for an evaluate option of another method."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ogfr_core.config import CpaColEvalConfig, EvaluateConfig, FPCEvalConfig
from ogfr_core.evaluation import FeatureSet, evaluate_rank
from ogfr_core.evaluation.extras import (ExtraContext, TestTimeExtra, TokenStore, fuse_top_k, rows_per_chunk,
                                         run_extra, top_k_indices, z_normalise)


def test_fuse_top_k_by_hand():
    """One query, gallery distances (0.1, 0.2, 0.3, 0.9), top-3 re-scored with similarities (0, 0, 3):
    z(d) = (−1.2247, 0, 1.2247), z(−s) = (0.7071, 0.7071, −1.4142); w = 1 → (−0.518, 0.707, −0.189):
    new order 0, 2, 1, then item 3 (outside the top-3) last; w = 0 keeps the global order."""
    d = np.array([[0.1, 0.2, 0.3, 0.9]], np.float32)
    top = top_k_indices(d, 3)
    assert top.tolist() == [[0, 1, 2]]
    out = fuse_top_k(d, top, np.array([[0.0, 0.0, 3.0]]), {"a": 1.0, "b": 0.0})
    assert np.argsort(out["a"][0], kind="stable").tolist() == [0, 2, 1, 3]
    assert np.argsort(out["b"][0], kind="stable").tolist() == [0, 1, 2, 3]
    z = z_normalise(np.array([[0.1, 0.2, 0.3]]))
    assert z[0].tolist() == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    assert out["a"][0, 3] == pytest.approx(0.9) and out["a"][0, :3].max() < 0.9  # others untouched, behind
    # k = G: every item re-scored
    full = fuse_top_k(d, top_k_indices(d, 10), np.array([[0.0, 0.0, 3.0, 5.0]]), {"a": 10.0})
    assert np.argsort(full["a"][0], kind="stable").tolist() == [3, 2, 0, 1]


def test_token_store_round_trip(tmp_path):
    store = TokenStore(tmp_path / "t.npy", 5, (2, 3))
    x = torch.arange(30, dtype=torch.float32).view(5, 2, 3) / 7
    store.write(slice(0, 3), x[:3])
    store.write(slice(3, 5), x[3:].numpy())
    got = store.read(torch.tensor([[4, 0], [4, 4]]))
    assert got.shape == (2, 2, 2, 3) and got.dtype == torch.float32
    assert torch.allclose(got[0, 0], x[4], atol=1e-2) and torch.allclose(got[0, 1], x[0], atol=1e-2)
    assert store.nbytes == 5 * 2 * 3 * 2  # float16
    assert rows_per_chunk(2**20, 3) == 3 and rows_per_chunk(10**12, 1) == 1


def _sets():
    g = np.eye(3, 4, dtype=np.float32)
    q = FeatureSet(g[:2], np.zeros((2, 0, 4)), np.zeros((2, 0), bool), [0, 1], [0, 0], ["q0", "q1"])
    gal = FeatureSet(g, np.zeros((3, 0, 4)), np.zeros((3, 0), bool), [0, 1, 2], [1, 1, 1], ["g0", "g1", "g2"])
    return q, gal


class _Fixed(TestTimeExtra):
    name = "fixed"
    flags = ("rescores_top_k",)

    def __init__(self, blocks):
        self.blocks = blocks

    def distance_blocks(self, ctx):
        yield from self.blocks


def test_run_extra_streams_every_variant_and_checks_coverage(tmp_path):
    q, gal = _sets()
    ctx = ExtraContext(q, gal, lambda which: iter(()), "cpu", 256, True, tmp_path)
    good = np.array([[0.0, 1, 2], [1, 0, 2]], np.float32)
    bad = np.array([[2.0, 1, 0], [0, 2, 1]], np.float32)
    res = run_extra(_Fixed([(slice(0, 1), {"fixed": good[:1], "v": bad[:1]}),
                            (slice(1, 2), {"fixed": good[1:], "v": bad[1:]})]), ctx)
    assert res["fixed"].mAP == 1.0 and res["v"].mAP == evaluate_rank(bad, [0, 1], [0, 1, 2], [0, 0], [1, 1, 1]).mAP
    with pytest.raises(ValueError, match="covered 1 of 2 queries"):
        run_extra(_Fixed([(slice(0, 1), {"fixed": good[:1]})]), ctx)
    with pytest.raises(ValueError, match="block"):
        run_extra(_Fixed([(slice(0, 2), {"fixed": good[:, :2]})]), ctx)
    with pytest.raises(ValueError, match="yielded rows"):
        run_extra(_Fixed([(slice(1, 2), {"fixed": good[1:]})]), ctx)


def test_options_of_another_method_are_named():
    from ogfr_core.evaluation.pipeline import unused_method_options

    cfg = EvaluateConfig(fpc=FPCEvalConfig(consolidation=True), cpacol=CpaColEvalConfig(rescore=True))
    assert unused_method_options(cfg, "fpc") == ["evaluate.cpacol.rescore"]
    assert sorted(unused_method_options(cfg, "ogfr")) == ["evaluate.cpacol.rescore", "evaluate.fpc.consolidation"]
    assert unused_method_options(EvaluateConfig(), "ogfr") == []


@pytest.mark.parametrize("section,raw,key", [
    ("train", {"model": {"fpc": {"keep_rate": 0.0}}}, "train.model.fpc.keep_rate"),
    ("train", {"model": {"fpc": {"alpha": 1.5}}}, "train.model.fpc.alpha"),
    ("train", {"model": {"fpc": {"prune_blocks": [3, -1]}}}, "train.model.fpc.prune_blocks"),
    ("train", {"model": {"cpacol": {"attn_blocks": []}}}, "train.model.cpacol.attn_blocks"),
    ("train", {"model": {"cpacol": {"stage2_lr_scale": 0}}}, "train.model.cpacol.stage2_lr_scale"),
    ("train", {"model": {"cpacol": {"corr_channel": 8}}}, "train.model.cpacol"),
    ("evaluate", {"cpacol": {"top_k": 0}}, "evaluate.cpacol.top_k"),
    ("evaluate", {"cpacol": {"weight_source": "test"}}, "evaluate.cpacol.weight_source"),
    ("evaluate", {"cpacol": {"weight_sweep": [0.1, -1]}}, "evaluate.cpacol.weight_sweep"),
    ("evaluate", {"fpc": {"neighbours": 0}}, "evaluate.fpc.neighbours"),
])
def test_peer_params_are_validated(section, raw, key):
    from ogfr_core.config import ConfigError, EvaluateConfig, TrainConfig, from_dict

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict({"train": TrainConfig, "evaluate": EvaluateConfig}[section], raw, section)
