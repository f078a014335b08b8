"""FPC (method ``fpc``): the per-block encoder helpers, EViT token selection on a hand-made attention
map, the Eq. (4)-(10) matching (Sinkhorn EMD on a hand-solved transport problem), the Eq. (11)
consolidation input, the losses, gradient reach, and the test-time consolidation's chunking."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ogfr_core.config import LossConfig, ModelConfig
from ogfr_core.model import build_model
from ogfr_core.model.fpc import emd_distance, emd_weights, select_neighbours, sinkhorn
from ogfr_core.model.oa_vit import OAViT
from ogfr_core.model.vit_ops import (attention_with_cls_row, block_forward, evit_keep, input_tokens,
                                     map_block_indices)

H, W = 128, 64  # the CPU profile's input: an 8 x 4 token grid at stride 16
TINY = ModelConfig(method="fpc", backbone="vit_tiny_patch16_224", depth=4, stride=16, patch_embed="conv",
                   drop_path=0.0)


def _batch(b: int = 8, h: int = H, w: int = W, ids: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(b, 3, h, w, generator=g), "image_occ": torch.randn(b, 3, h, w, generator=g),
            "label": torch.arange(b) % ids, "camid": torch.arange(b) % 2,
            "z": torch.zeros(b, 4, dtype=torch.long), "label_map": torch.randint(0, 9, (b, h, w), generator=g)}


def test_block_indices_map_proportionally():
    """The paper's 12-block positions on the CPU profile's 4 blocks (and identity on 12)."""
    assert map_block_indices([3, 6, 9], 4) == [1, 2, 3]
    assert map_block_indices([3, 6, 9], 12) == [3, 6, 9]
    assert map_block_indices([3, 6, 9], 2, unique=True) == [0, 1]
    with pytest.raises(ValueError):
        map_block_indices([-1], 4)


def test_encoder_pieces_equal_the_encoder():
    """input_tokens + block_forward(keep 1) + norm is exactly OAViT.forward (no fork of the encoder)."""
    torch.manual_seed(0)
    enc = OAViT("vit_tiny_patch16_224", (64, 32), 16, 16, depth=2, num_part_tokens=0, num_cameras=2,
                use_occ_embed=False, drop_path=0.0).eval()
    x, cam = torch.randn(3, 3, 64, 32), torch.tensor([0, 1, 0])
    t = input_tokens(enc, x, None, cam)
    for blk in enc.blocks:
        t, kept = block_forward(blk, t, 1.0)
        assert kept is None
    assert torch.equal(enc.norm(t), enc(x, None, cam))
    with pytest.raises(ValueError, match="camera ids"):
        input_tokens(enc, x, None, torch.tensor([0, 5, 0]))


def test_cls_attention_row_is_the_softmax_of_the_cls_query():
    """Eq. (2): the head-averaged first row of softmax(QK^T/sqrt(d)), written out here by hand."""
    torch.manual_seed(0)
    blk = OAViT("vit_tiny_patch16_224", (32, 16), 16, 16, depth=1, num_part_tokens=0,
                use_occ_embed=False).blocks[0].eval()
    x = torch.randn(2, 3, 192)
    out, row = attention_with_cls_row(blk.attn, x)
    assert torch.allclose(out, blk.attn(x), atol=1e-6)
    qkv = x @ blk.attn.qkv.weight.T + blk.attn.qkv.bias  # [2, 3, 576]
    q, k = qkv[..., :192].view(2, 3, 3, 64), qkv[..., 192:384].view(2, 3, 3, 64)  # [B, N, heads, d]
    expect = torch.stack([torch.softmax(torch.einsum("bd,bnd->bn", q[:, 0, h], k[:, :, h]) / 8.0, dim=-1)
                          for h in range(3)]).mean(0)  # [B, N], head dim 64 → scale 1/8
    assert torch.allclose(row, expect[:, 1:], atol=1e-6)


def test_token_selection_on_a_hand_made_attention_map():
    """EViT: keep ceil(0.6 * 5) = 3 tokens with the largest [cls] attention, in attention order; the
    other two fused with their attention as weights (not renormalised)."""
    x = torch.tensor([[[9.0, 9.0], [1, 0], [0, 1], [2, 0], [0, 2], [3, 3]]])  # [cls; 5 patches]
    attn = torch.tensor([[0.10, 0.40, 0.05, 0.30, 0.15]])
    out, kept = evit_keep(x, attn, keep_rate=0.6)
    assert kept.tolist() == [[1, 3, 4]]
    expect = torch.tensor([[[9.0, 9.0], [0, 1], [0, 2], [3, 3], [0.10 * 1 + 0.05 * 2, 0.0]]])
    assert torch.allclose(out, expect)
    assert evit_keep(x, attn, 0.6, fuse=False)[0].shape == (1, 4, 2)
    assert evit_keep(x, attn, 1.0)[0] is x and evit_keep(x, attn, 0.99)[1] is None  # ceil(4.95) = 5: nothing dropped


def test_sparse_encoder_token_counts_on_the_cpu_grid():
    """8 x 4 = 32 tokens, pruned in blocks 1, 2, 3 at γ = 0.8: 26 + 1 fused, 22 + 1, 19 + 1."""
    model = build_model(TINY, 4, 2, (H, W), load_weights=False).eval()
    assert model.prune_blocks == [1, 2, 3] and model.encoder.grid_size == (8, 4)
    b = _batch(2)
    assert model.sparse_tokens(b["image"], b["camid"]).shape == (2, 1 + 20, 192)
    assert model.sparse_tokens(b["image"], b["camid"], keep_rate=1.0).shape == (2, 1 + 32, 192)
    assert torch.allclose(model.sparse_tokens(b["image"], b["camid"], keep_rate=1.0),
                          model.dense_tokens(b["image"], b["camid"]), atol=1e-5)
    out = model.extract(b["image"], b["z"], b["camid"])
    assert out["global"].shape == (2, 192) and out["parts"].shape == (2, 0, 192) and out["visibility"].shape == (2, 0)


def test_sinkhorn_plan_has_the_marginals():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 4, 5, generator=g)
    mu, nu = torch.softmax(torch.randn(3, 4, generator=g), 1), torch.softmax(torch.randn(3, 5, generator=g), 1)
    plan = sinkhorn(cost, mu, nu, eps=0.05, iters=500)
    assert torch.allclose(plan.sum(2), mu, atol=1e-3) and torch.allclose(plan.sum(1), nu, atol=1e-5)


def test_emd_on_a_hand_solved_transport_problem():
    """q = {e1, e2}, g = {e1, (e1+e2)/√2}. Weights (FPC §3.2, max(0, <x_i, mean of the other set>),
    normalised): w_q = (0.854, 0.354)/1.207 = (0.7071, 0.2929), w_g = (0.5, 0.7071)/1.2071 =
    (0.4142, 0.5858). Ground distances 1 − cos: [[0, 0.2929], [1, 0.2929]]. Optimal flow: 0.4142 of q1 to
    g1 (cost 0), the remaining 0.2929 of q1 and all 0.2929 of q2 to g2 → EMD = 0.5858 · 0.2929 = 0.17157."""
    s = 1 / math.sqrt(2)
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    g = torch.tensor([[[1.0, 0.0], [s, s]]])
    assert torch.allclose(emd_weights(q, g), torch.tensor([[0.70711, 0.29289]]), atol=1e-4)
    assert torch.allclose(emd_weights(g, q), torch.tensor([[0.41421, 0.58579]]), atol=1e-4)
    d = emd_distance(q, g, eps=0.005, iters=2000)
    assert float(d) == pytest.approx(0.58579 * (1 - s), abs=2e-3)
    assert float(emd_distance(q, q, eps=0.005, iters=2000)) == pytest.approx(0.0, abs=1e-3)
    assert emd_weights(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[-1.0, 0.0]]])).tolist() == [[1.0]]  # uniform fallback


@pytest.mark.parametrize("alpha,winner", [(0.4, 1), (0.9, 2)])
def test_neighbour_search_eq10(alpha, winner):
    """Candidate 1 has the query's [cls] but orthogonal patches, candidate 2 the opposite; item 0 is the
    query itself (excluded). D = (1-α)·D_cos + α·D_EMD picks 1 at α = 0.4, 2 at α = 0.9."""
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    q_cls, q_patch = e1[None], torch.stack([e1, e1])[None]  # [1, D], [1, 2, D]
    mem_cls = torch.stack([e1, e1, e2])  # [3, D]
    mem_patch = torch.stack([torch.stack([e1, e1]), torch.stack([e2, e2]), torch.stack([e1, e1])])  # [3, 2, D]
    idx, dist = select_neighbours(q_cls, q_patch, mem_cls, lambda i: mem_patch[i], k=2, shortlist=5, alpha=alpha,
                                  exclude=torch.tensor([0]))
    assert idx[0, 0].item() == winner and 0 not in idx[0].tolist()
    expect = {1: alpha * 1.0, 2: (1 - alpha) * 1.0}  # (cos distance, EMD) = (0, 1) and (1, 0)
    assert dist[0].tolist() == pytest.approx(sorted(expect.values()), abs=1e-3)


def test_consolidation_input_is_eq11():
    """The decoder reads [mean of the query's and the neighbours' [cls]; query patches; neighbours' patches]."""
    model = build_model(TINY, 4, 2, (H, W), load_weights=False).eval()
    seen = {}

    class Record(torch.nn.Module):
        def forward(self, seq):
            seen["seq"] = seq
            return seq

    model.decoder = Record()
    q = torch.randn(2, 1 + 5, 192)
    nbr = torch.randn(2, 3, 1 + 32, 192)
    model.consolidate(q, nbr)
    seq = seen["seq"]
    assert seq.shape == (2, 1 + 5 + 3 * 32, 192)
    assert torch.allclose(seq[:, 0], (q[:, 0] + nbr[:, :, 0].sum(1)) / 4)
    assert torch.equal(seq[:, 1:6], q[:, 1:]) and torch.equal(seq[:, 6:38], nbr[:, 0, 1:])


def test_encode_splits_the_sparse_encoder_before_its_last_block():
    """encode = (un-normed tokens before the last block, the sparse encoder's normed output); at keep
    rate 1 the latter is the encoder itself, and the last block + norm of the former gives it back."""
    torch.manual_seed(0)
    model = build_model(TINY, 4, 2, (H, W), load_weights=False).eval()
    b = _batch(3)
    with torch.no_grad():
        trunk, final = model.encode(b["image"], b["camid"], 1.0)
        assert torch.allclose(final, model.dense_tokens(b["image"], b["camid"]), atol=1e-5)
        assert torch.allclose(model.encoder.norm(model.encoder.blocks[-1](trunk)), final, atol=1e-5)
        trunk, final = model.encode(b["image"], b["camid"])  # γ = 0.8 in blocks 1, 2, 3 of 4
        assert trunk.shape[1] == 1 + 22 + 1 and final.shape[1] == 1 + 19 + 1
        assert torch.equal(final, model.sparse_tokens(b["image"], b["camid"]))


@pytest.mark.parametrize("decoder_input, max_dist", [("parallel", 0.05), ("final", None)])
def test_self_consolidated_gallery_image_lands_on_its_gallery_feature(decoder_input, max_dist):
    """A gallery image consolidated with itself as its only neighbour (query side sparse, as at test
    time) is nearest to its own gallery feature. With ``decoder_input: parallel`` (the decoder a
    parallel copy of the last block, as the official code's rec_b) the two are at the same depth: at
    initialisation (decoder = last block) they nearly coincide; ``final`` (ours until issue 24) adds a
    block on top of the normed output, and lands about ten times farther away (measured: 0.07–0.08
    vs 0.007–0.035 in normalised Euclidean distance)."""
    cfg = dataclasses.replace(TINY, fpc=dataclasses.replace(TINY.fpc, decoder_input=decoder_input))
    torch.manual_seed(0)
    model = build_model(cfg, 4, 2, (H, W), load_weights=False).eval()
    b = _batch(8)
    with torch.no_grad():
        trunk, final = model.encode(b["image"], b["camid"], 1.0)  # the gallery pass (dense)
        gallery = F.normalize(model.neck(final[:, 0]), dim=1)  # [8, D]
        memory = model.consolidation_tokens(trunk, final)  # [8, 1 + N, D]
        query = model.consolidation_tokens(*model.encode(b["image"], b["camid"]))  # sparse
        rec = F.normalize(model.rec_neck(model.consolidate(query, memory[:, None])), dim=1)  # K = 1: itself
    dist = torch.cdist(rec, gallery)  # [8, 8]
    assert dist.argmin(1).tolist() == list(range(8))
    if max_dist is not None:
        assert float(dist.diagonal().max()) < max_dist
    else:
        assert float(dist.diagonal().min()) > 0.05


def test_losses_eq3_eq14_eq15_by_hand():
    """L = L_ID + L_T (sparse) + L_ID + L_T (consolidated): cross-entropy and batch-hard triplet on a
    4-image, 2-id case whose values are written out here."""
    from ogfr_core.losses.fpc import fpc_objective

    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.log(torch.tensor([[3.0, 1], [3, 1], [1, 3], [1, 1]]))  # softmax p_true = .75, .75, .75, .5
    ce = -(3 * math.log(0.75) + math.log(0.5)) / 4
    feats = torch.tensor([[0.0, 0], [1, 0], [0, 2], [0, 3]])
    # (hardest positive, hardest negative) distance per anchor: (1, 2), (1, √5), (1, 2), (1, 3)
    m = 3.0
    tri = (max(0, 1 - 2 + m) + max(0, 1 - math.sqrt(5) + m) + max(0, 1 - 2 + m) + max(0, 1 - 3 + m)) / 4
    out = {"sparse": {"logits": logits, "feats": feats},
           "consolidated": {"logits": logits.flip(1), "feats": feats * 2}}  # distances doubled
    cfg = LossConfig(triplet_margin=m, label_smoothing=0.0)
    ce_flip = -(3 * math.log(0.25) + math.log(0.5)) / 4
    tri2 = (max(0, 2 - 4 + m) + max(0, 2 - 2 * math.sqrt(5) + m) + max(0, 2 - 4 + m) + max(0, 2 - 6 + m)) / 4
    terms = fpc_objective(out, labels, cfg)
    assert float(terms["id"]) == pytest.approx(ce, abs=1e-5) and float(terms["triplet"]) == pytest.approx(tri, abs=1e-5)
    assert float(terms["rec_id"]) == pytest.approx(ce_flip, abs=1e-5)
    assert float(terms["rec_triplet"]) == pytest.approx(tri2, abs=1e-5)
    assert float(terms["total"]) == pytest.approx(ce + tri + ce_flip + tri2, abs=1e-5)
    del out["consolidated"]
    assert set(fpc_objective(out, labels, cfg)) == {"id", "triplet", "total"}


@pytest.mark.parametrize("overrides", [{}, {"consolidation": False}, {"fuse_token": False},
                                       {"decoder_input": "parallel"}])
def test_every_trainable_parameter_gets_a_gradient(overrides):
    cfg = dataclasses.replace(TINY, fpc=dataclasses.replace(TINY.fpc, **overrides))
    model = build_model(cfg, 4, 2, (H, W), load_weights=False).train()
    b = _batch()
    out = model(b)
    model.loss(out, b, LossConfig())["total"].backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert ("consolidated" in out) == cfg.fpc.consolidation
    if cfg.fpc.consolidation:
        nbr = out["consolidated"]["neighbours"]
        assert nbr.shape == (8, 7)  # K = min(10, B - 1)
        assert not (nbr == torch.arange(8)[:, None]).any()  # never itself


def test_training_memory_leaves_batchnorm_statistics_alone():
    """The in-batch memory runs in eval mode: the hybrid stem's trainable BN statistics move once per
    step (the sparse pass), exactly as without consolidation."""
    hybrid = dict(patch_embed="hybrid", stem_stride=16, stem_frozen_blocks=2)
    stats = []
    for consolidation in (True, False):
        cfg = dataclasses.replace(TINY, **hybrid, fpc=dataclasses.replace(TINY.fpc, consolidation=consolidation))
        torch.manual_seed(0)
        model = build_model(cfg, 4, 2, (H, W), load_weights=False).train()
        model(_batch())
        stats.append(model.encoder.patch_embed.backbone.blocks[3].conv[0][1].running_mean.clone())
    assert torch.equal(stats[0], stats[1])


@pytest.mark.parametrize("decoder_input", ["final", "parallel"])
def test_consolidation_extra_is_independent_of_the_chunk_size(tmp_path, decoder_input):
    """The test-time consolidation gives the same distances whether queries go one by one (a tiny
    chunk_mb) or all at once, and its neighbours are gallery items."""
    from ogfr_core.config import EvaluateConfig, FPCEvalConfig
    from ogfr_core.evaluation import FeatureSet
    from ogfr_core.evaluation.extras import ExtraContext, run_extra

    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, fpc=dataclasses.replace(TINY.fpc, decoder_input=decoder_input))
    model = build_model(cfg, 4, 2, (H, W), load_weights=False).eval()
    b = _batch(10)
    images, cams = b["image"], b["camid"]
    qi, gi = np.arange(3), np.arange(3, 10)
    pids = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])

    def fs(rows):
        g = model.extract(images[rows], b["z"][rows], cams[rows])["global"].numpy()
        return FeatureSet(g, np.zeros((len(rows), 0, 192)), np.zeros((len(rows), 0), bool), pids[rows],
                          np.array([0] * len(rows)) + (rows >= 3), [f"k{i}" for i in rows])

    def batches(which):
        rows = qi if which == "query" else gi
        for s in range(0, len(rows), 4):
            r = rows[s:s + 4]
            yield slice(s, s + len(r)), {"image": images[r], "z": b["z"][r], "camid": cams[r]}

    cfg = EvaluateConfig(fpc=FPCEvalConfig(consolidation=True, neighbours=3, shortlist=5))
    (extra,) = model.test_time_extras(cfg)
    assert extra.name == "fpc_consolidation" and extra.flags == ("uses_test_gallery",)
    blocks = {}
    for mb in (1e-6, 256):
        ctx = ExtraContext(fs(qi), fs(gi), batches, torch.device("cpu"), mb, True, tmp_path, "test")
        with torch.inference_mode():
            blocks[mb] = np.concatenate([blk["fpc_consolidation"] for _, blk in extra.distance_blocks(ctx)])
        with torch.inference_mode():
            res = run_extra(extra, ctx)["fpc_consolidation"]
        assert 0 <= res.mAP <= 1
    assert blocks[1e-6].shape == (3, 7)
    assert np.allclose(blocks[1e-6], blocks[256], atol=1e-5)
    assert model.test_time_extras(EvaluateConfig()) == []
