"""FPC — feature pruning and consolidation (Ye et al., "Dynamic Feature Pruning and Consolidation for
Occluded Person Re-Identification", AAAI 2024; arXiv 2211.14742), registered as ``method: fpc``.

**Sparse encoder S (§3.1; the comparable number).** The shared encoder (TransReID input, Eq. 1) with
EViT token sparsification inside the blocks of ``model.fpc.prune_blocks``: after a block's attention
the ``L = ⌈γ·N⌉`` tokens with the largest [cls] attention (Eq. 2, averaged over heads) are kept and
the others fused into one attention-weighted token (:func:`~ogfr_core.model.vit_ops.evit_keep`), then
the block's MLP runs on the shorter sequence. γ = 0.8 (§3.4). The paper prunes in "layers 3, 6 and
9" of 12; the official code's ``drop_loc = (3, 6, 9)`` are 0-based blocks, i.e. inside the 4th, 7th
and 10th — we take the code's indices and map them proportionally to the encoder's depth
(⌊i·depth/12⌋: the CPU profile's 4 blocks prune in blocks 1, 2, 3, every block but the first; 32
tokens of its 8×4 grid → 26 + 1 fused → 22 + 1 → 19 + 1). Inference feature: the sparse encoder's
[cls] after the BNNeck, for query and gallery alike (K = 0 parts). Trained with Eq. (3)
``L_S = L_ID + L_T`` on the occlusion-augmented view, like the baseline.

**Consolidation (§3.2–3.3; a test-time extra that reads the TEST GALLERY).** A memory holds the
dense (keep rate 1) encoder tokens of every gallery image. For each query: 100 candidates by the
cosine distance of the [cls] tokens (Eq. 4), then the K nearest by Eq. (10) ``D = (1 − α)·D_cos +
α·D_EMD`` (α = 0.4) where D_EMD (Eq. 5–9) is the earth mover's distance between the query's sparse
patch tokens and the candidate's patch tokens, ground distance 1 − cos, weights ``max(0, ⟨q_i,
mean_j g_j⟩)`` (and symmetrically), normalised, solved by Sinkhorn (ε = 0.05, the official code's);
then one transformer layer (a copy of the encoder's last block + LayerNorm, as the code's
``rec_b``) reads ``[f_c; f_q; f_g^(1..K)]`` (Eq. 11: f_c the mean of the query's and the neighbours'
[cls] tokens, then the query's and the neighbours' patch tokens) and its [cls] output, after its own
BNNeck, is the query's feature. Gallery features are then the dense encoder's (the official
evaluation code: gallery at keep rate 1.0).

**Depth of the consolidated feature** (``model.fpc.decoder_input``, issue 24). In the official code
the global head ``b1`` and the consolidation decoder ``rec_b`` are parallel copies of the last block
(+ LayerNorm), both reading the un-normed tokens of the blocks before it; memory, search and decoder
all use those tokens, so the consolidated query and the gallery features come out at the same depth.
``parallel`` does that here (the encoder's own last block + norm plays ``b1``; the decoder reads the
tokens before the last block, as does the neighbour search). ``final`` (the default, what the
recorded runs used) feeds the encoder's normed output to the decoder, which stacks one more block
on top: the consolidated query then sits one block deeper than the gallery features it is compared
with, and no loss ties the two spaces (L_C trains the decoder's own classifier). The sparse encoder
(the comparable row) is the same in both. This is ``evaluate.fpc.consolidation`` (default off),
reported as "uses the test gallery": the standard protocol never lets a query see other gallery
images. See :class:`FPCConsolidation` for its memory bound.

**Training the consolidation decoder** (Eq. 14–15, ``L = L_S + L_C``). No training code was
released and the paper does not say where a training image's neighbours come from; ours: the
batch's other images. Their dense tokens (the holistic view ``image``, eval mode, no gradient: a
memory, as the gallery's at test time) are searched with the same Eq. (10) distance, the image
itself excluded, K = ``min(model.fpc.neighbours, B − 1)``. The decoder input keeps the gradient of
the query's tokens, so L_C trains the encoder too.

Where the paper and the official evaluation code disagree, we follow the paper, and say so:
Eq. (11) averages the query's [cls] with the neighbours' and includes the query's own patch tokens
(the code feeds only the neighbours' mean [cls] and patches); EMD weights use the mean of the other
set's patches (the code uses the other image's [cls] token); the code's Sinkhorn stops after about
two iterations (tolerance 0.1 on a mean change of order 1/N) — we iterate to a 1e-3 marginal error
or ``sinkhorn_iters``; the code prunes only at inference (``if not self.training``) — we prune in
training too, since L_S supervises the *sparse* encoder (Eq. 3) and EViT trains that way.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.fpc import fpc_objective
from .backbone import build_encoder
from .base import ReIDMethod
from .neck import make_bnneck, make_classifier
from .registry import ModelConfigError, register_method
from .vit_ops import block_forward, input_tokens, map_block_indices

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Matching (§3.2): Eq. (4) cosine distance, Eq. (5)-(9) EMD, Eq. (10) their combination
# --------------------------------------------------------------------------------------------
def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. (4) as a distance: ``1 − cos(a_i, b_j)`` for ``a [Q, D]``, ``b [G, D]`` → ``[Q, G]``."""
    return 1 - F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def sinkhorn(cost: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor, eps: float = 0.05, iters: int = 100,
             tol: float = 1e-3) -> torch.Tensor:
    """Entropic optimal transport plan (Sinkhorn–Knopp; Cuturi 2013) for a batch of problems.

    Args:
        cost: ``[P, M, N]`` ground distances; mu: ``[P, M]``, nu: ``[P, N]`` marginals (each sums to 1).
        eps: entropic regularisation (``K = exp(−cost/ε)``); iters: at most this many iterations;
        tol: stop once every row marginal of the plan is within ``tol`` of ``mu`` (checked every 10).

    Returns:
        the plan ``T [P, M, N]`` (≥ 0, column sums = ``nu``, row sums ≈ ``mu``).
    """
    k = torch.exp(-cost.float() / eps)  # [P, M, N]
    mu, nu = mu.float(), nu.float()
    v = torch.ones_like(nu)
    for it in range(iters):
        u = mu / (k @ v[..., None])[..., 0].clamp_min(1e-30)  # [P, M]
        v = nu / (k.transpose(1, 2) @ u[..., None])[..., 0].clamp_min(1e-30)  # [P, N]
        if (it + 1) % 10 == 0 and iters > it + 1:
            rows = u * (k @ v[..., None])[..., 0]
            if float((rows - mu).abs().max()) < tol:
                break
    return u[..., None] * k * v[:, None, :]


def emd_weights(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """FPC §3.2: ``w_i = max(0, ⟨x_i, mean_j other_j⟩)`` normalised to sum 1 (uniform when all are 0),
    for L2-normalised tokens ``x [P, M, D]``, ``other [P, N, D]`` → ``[P, M]``."""
    w = F.relu((x * other.mean(dim=1, keepdim=True)).sum(-1))  # [P, M]
    total = w.sum(dim=1, keepdim=True)
    uniform = torch.full_like(w, 1.0 / w.shape[1])
    return torch.where(total > 0, w / total.clamp_min(1e-12), uniform)


def emd_distance(q: torch.Tensor, g: torch.Tensor, eps: float = 0.05, iters: int = 100) -> torch.Tensor:
    """Eq. (5)–(9): earth mover's distance between token sets ``q [P, M, D]`` and ``g [P, N, D]``
    (pairs along P): ground distance ``d_ij = 1 − cos(q_i, g_j)``, weights :func:`emd_weights`, plan by
    :func:`sinkhorn`; returns ``Σ_ij f_ij d_ij`` → ``[P]`` in [0, 2]."""
    qn, gn = F.normalize(q.float(), dim=-1), F.normalize(g.float(), dim=-1)
    cost = 1 - qn @ gn.transpose(1, 2)  # [P, M, N]
    plan = sinkhorn(cost, emd_weights(qn, gn), emd_weights(gn, qn), eps, iters)
    return (plan * cost).sum(dim=(1, 2))


def select_neighbours(q_cls: torch.Tensor, q_patch: torch.Tensor, mem_cls: torch.Tensor,
                      fetch: Callable[[torch.Tensor], torch.Tensor], k: int, shortlist: int, alpha: float,
                      eps: float = 0.05, iters: int = 100, exclude: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The K nearest memory items of each query by Eq. (10), searched among the ``shortlist`` nearest
    by Eq. (4) (§3.4: 100 by cosine, then K by the combined distance).

    Args:
        q_cls: ``[Q, D]`` query [cls] tokens; q_patch: ``[Q, M, D]`` query (sparse) patch tokens.
        mem_cls: ``[G, D]`` memory [cls] tokens; fetch: memory indices ``[Q, S]`` → patch tokens
            ``[Q, S, N, D]`` (a tensor lookup in training, the on-disk store at test time).
        k: neighbours K; shortlist: S; alpha: α of Eq. (10); eps/iters: Sinkhorn.
        exclude: ``[Q]`` memory index each query must not pick (itself, in training), or None.

    Returns:
        ``(indices [Q, K] long, distances [Q, K])``, nearest first.
    """
    with torch.autocast(device_type=q_cls.device.type, enabled=False):  # fp32: exp(-d/ε) underflows in fp16
        return _select_neighbours(q_cls.float(), q_patch.float(), mem_cls.float(), fetch, k, shortlist, alpha, eps,
                                  iters, exclude)


def _select_neighbours(q_cls, q_patch, mem_cls, fetch, k, shortlist, alpha, eps, iters, exclude):
    d_cos = cosine_distance(q_cls, mem_cls)  # [Q, G]
    if exclude is not None:
        d_cos = d_cos.scatter(1, exclude[:, None].long(), float("inf"))
    g = mem_cls.shape[0] - (exclude is not None)
    s = min(shortlist, g)
    k = min(k, s)
    d_short, cand = d_cos.topk(s, dim=1, largest=False)  # [Q, S]
    patches = fetch(cand).to(q_patch.device).float()  # [Q, S, N, D]
    qp = q_patch[:, None].expand(-1, s, -1, -1).reshape(-1, *q_patch.shape[1:])  # [Q·S, M, D]
    d_emd = emd_distance(qp, patches.reshape(-1, *patches.shape[2:]), eps, iters).view(-1, s)  # [Q, S]
    d = (1 - alpha) * d_short + alpha * d_emd  # Eq. (10)
    d_top, pos = d.topk(k, dim=1, largest=False)
    return cand.gather(1, pos), d_top


@register_method("fpc")
class FPC(ReIDMethod):
    """FPC (see the module docstring).

    Args:
        cfg: ``train.model`` params (``cfg.fpc``: :class:`~ogfr_core.config.FPCConfig`); num_classes,
        num_cameras, img_size ``(H, W)``, load_weights: as every method.

    Shapes: ``forward(batch)["sparse"]`` has ``feats [B, D]``, ``feats_bn [B, D]``, ``logits [B, C]``,
    ``tokens [B, 1 + N', D]`` (N' ≤ N after pruning); ``["consolidated"]`` (when
    ``model.fpc.consolidation``) ``feats``/``feats_bn [B, D]``, ``logits [B, C]``, ``neighbours [B, K]``.

    Raises:
        ModelConfigError: ``model.fpc.shortlist < model.fpc.neighbours``.
    """

    def __init__(self, cfg, num_classes: int, num_cameras: int, img_size: tuple[int, int],
                 load_weights: bool = True) -> None:
        super().__init__()
        fc = cfg.fpc
        if fc.shortlist < fc.neighbours:
            raise ModelConfigError(f"train.model.fpc.shortlist ({fc.shortlist}) must be >= "
                                   f"train.model.fpc.neighbours ({fc.neighbours})")
        self.cfg = cfg
        self.num_classes = num_classes
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.encoder, self.init_warning = build_encoder(cfg, self.img_size, num_cameras, load_weights=load_weights)
        self.prune_blocks = map_block_indices(fc.prune_blocks, self.encoder.depth, unique=True)
        self.keep_rate = float(fc.keep_rate)
        dim = self.encoder.embed_dim
        self.neck = make_bnneck(dim)
        self.classifier = make_classifier(dim, num_classes)
        self.consolidates = bool(fc.consolidation)
        self.decoder_input = fc.decoder_input
        if self.consolidates:  # the official code's rec_b: a copy of the (pretrained) last block + norm
            self.decoder = copy.deepcopy(self.encoder.blocks[-1])
            self.decoder_norm = copy.deepcopy(self.encoder.norm)
            self.rec_neck = make_bnneck(dim)
            self.rec_classifier = make_classifier(dim, num_classes)

    # ---------------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor, camids: torch.Tensor, keep_rate: float | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The sparse encoder S at ``keep_rate`` (default γ): ``images [B, 3, H, W]`` → ``(trunk, final)``:
        ``trunk [B, 1 + N'', D]`` the un-normed tokens after every block but the last (the input of the
        official code's parallel heads ``b1`` / ``rec_b``), ``final [B, 1 + N', D]`` after the last block
        and the final LayerNorm ([cls] first; kept tokens, then the fused token, after each pruning)."""
        keep = self.keep_rate if keep_rate is None else keep_rate
        fuse, last = self.cfg.fpc.fuse_token, len(self.encoder.blocks) - 1
        x = input_tokens(self.encoder, images, None, camids)  # [B, 1 + N, D]
        for i, blk in enumerate(self.encoder.blocks[:-1]):
            x, _ = block_forward(blk, x, keep if i in self.prune_blocks else 1.0, fuse)
        y, _ = block_forward(self.encoder.blocks[-1], x, keep if last in self.prune_blocks else 1.0, fuse)
        return x, self.encoder.norm(y)

    def sparse_tokens(self, images: torch.Tensor, camids: torch.Tensor, keep_rate: float | None = None
                      ) -> torch.Tensor:
        """The sparse encoder S: ``images [B, 3, H, W]`` → tokens after the final LayerNorm
        ``[B, 1 + N', D]`` (the ``final`` of :meth:`encode`)."""
        return self.encode(images, camids, keep_rate)[1]

    def consolidation_tokens(self, trunk: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        """The tokens the neighbour search and the decoder read, by ``model.fpc.decoder_input``:
        ``final`` (the encoder's normed output; the decoder then sits one block deeper than the gallery
        features) or ``parallel`` (``trunk``: the decoder is a parallel copy of the last block, as the
        official code's ``rec_b`` beside ``b1``, so query and gallery features come out at one depth)."""
        return trunk if self.decoder_input == "parallel" else final

    def dense_tokens(self, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """The memory's tokens: the encoder at keep rate 1, ``[B, 1 + N, D]``."""
        return self.encoder(images, None, camids)

    def consolidate(self, q_tokens: torch.Tensor, nbr_tokens: torch.Tensor) -> torch.Tensor:
        """Eq. (11)–(13): the consolidation decoder's [cls] output ``[B, D]``.

        Args:
            q_tokens: ``[B, 1 + M, D]`` the query's sparse tokens; nbr_tokens: ``[B, K, 1 + N, D]``
                its neighbours' memory tokens.
        """
        f_c = torch.cat([q_tokens[:, None, 0], nbr_tokens[:, :, 0]], dim=1).mean(dim=1, keepdim=True)  # [B, 1, D]
        seq = torch.cat([f_c, q_tokens[:, 1:], nbr_tokens[:, :, 1:].flatten(1, 2)], dim=1)  # [B, 1+M+K·N, D]
        return self.decoder_norm(self.decoder(seq))[:, 0]

    def neighbours(self, q_tokens: torch.Tensor, mem_cls: torch.Tensor,
                   fetch: Callable[[torch.Tensor], torch.Tensor], k: int, shortlist: int,
                   exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. (4)–(10) neighbour search for queries ``q_tokens [Q, 1 + M, D]`` → indices ``[Q, K]``."""
        fc = self.cfg.fpc
        idx, _ = select_neighbours(q_tokens[:, 0], q_tokens[:, 1:], mem_cls, fetch, k, shortlist, fc.alpha,
                                   fc.sinkhorn_eps, fc.sinkhorn_iters, exclude)
        return idx

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, Any]:
        """S on the occlusion-augmented view; with consolidation also the decoder, whose neighbours are
        the batch's other images (dense tokens of the holistic view, no gradient)."""
        images = batch.get("image_occ", batch["image"])
        trunk, tokens = self.encode(images, batch["camid"])  # [B, 1 + N'', D], [B, 1 + N', D]
        f = tokens[:, 0]
        f_bn = self.neck(f)
        out: dict[str, Any] = {"sparse": {"feats": f, "feats_bn": f_bn, "logits": self.classifier(f_bn),
                                          "tokens": tokens},
                               "stats": {"fpc/tokens_kept": float(tokens.shape[1] - 1)}}
        if self.consolidates and images.shape[0] > 1:
            with torch.no_grad():
                was = self.encoder.training
                self.encoder.eval()  # a memory, as the gallery's at test time: no drop-path, no BN update
                try:
                    dense = self.encode(batch["image"], batch["camid"], 1.0)
                    memory = self.consolidation_tokens(*dense)  # [B, 1 + N, D]
                finally:
                    self.encoder.train(was)
                b = images.shape[0]
                query = self.consolidation_tokens(trunk, tokens)  # [B, 1 + M, D]
                idx = self.neighbours(query.detach(), memory[:, 0], lambda i: memory[:, 1:][i],
                                      self.cfg.fpc.neighbours, self.cfg.fpc.shortlist,
                                      exclude=torch.arange(b, device=images.device))  # [B, K]
            rec = self.consolidate(self.consolidation_tokens(trunk, tokens), memory[idx])  # [B, D]
            rec_bn = self.rec_neck(rec)
            same = (batch["label"][idx] == batch["label"][:, None]).float().mean()
            out["consolidated"] = {"feats": rec, "feats_bn": rec_bn, "logits": self.rec_classifier(rec_bn),
                                   "neighbours": idx}
            out["stats"]["fpc/neighbour_same_id"] = float(same)
        return out

    def loss(self, out: dict[str, Any], batch: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
        """Eq. (15) ``L_S + L_C`` (:func:`~ogfr_core.losses.fpc.fpc_objective`)."""
        return fpc_objective(out, batch["label"], cfg)

    def global_feature(self, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """The sparse encoder's [cls] after the BNNeck ``[B, D]`` — FPC's number under the standard
        protocol; :meth:`extract` wraps it."""
        return self.neck(self.sparse_tokens(images, camids)[:, 0])  # [B, D]

    def test_time_extras(self, cfg, kind: str = "test") -> list:
        """``evaluate.fpc.consolidation`` → :class:`FPCConsolidation` (needs a trained decoder).

        Raises:
            ModelConfigError: consolidation asked for a model trained without it, or
                ``evaluate.fpc.shortlist < evaluate.fpc.neighbours``.
        """
        ev = getattr(cfg, "fpc", None)
        if ev is None or not ev.consolidation:
            return []
        if not self.consolidates:
            raise ModelConfigError("evaluate.fpc.consolidation: the checkpoint was trained with "
                                   "train.model.fpc.consolidation: false (no consolidation decoder); retrain "
                                   "with it on, or set evaluate.fpc.consolidation: false")
        if ev.shortlist < ev.neighbours:
            raise ModelConfigError(f"evaluate.fpc.shortlist ({ev.shortlist}) must be >= evaluate.fpc.neighbours "
                                   f"({ev.neighbours})")
        return [FPCConsolidation(self, ev.neighbours, ev.shortlist)]


class FPCConsolidation:
    """FPC's test-time feature consolidation against a memory of the **test gallery** (§3.2–3.3),
    a :class:`~ogfr_core.evaluation.extras.TestTimeExtra` named ``fpc_consolidation``, flagged
    ``uses_test_gallery``.

    Steps: (1) one pass over the gallery at keep rate 1 stores every image's patch tokens in a float16
    :class:`~ogfr_core.evaluation.extras.TokenStore` on disk and keeps its [cls] token and its feature
    (BNNeck) in RAM; (2) queries, in chunks sized to ``evaluate.chunk_mb``: sparse tokens → the
    ``shortlist`` nearest by cosine → Eq. (10) with EMD on those (their patches read from the store)
    → the K nearest → the consolidation decoder → its BNNeck; (3) distances of the consolidated
    queries to the dense gallery features (Euclidean on L2-normalised features, as ``global``).

    Memory cost (Occluded-Duke: 17,661 gallery images, 2,210 queries), with N patch tokens of D
    channels: on disk 17,661·N·D·2 bytes — 5.70 GB for the paper configuration (ViT-B/16, stride 12,
    256×128: N = 210, D = 768), 217 MB for the CPU profile (N = 32, D = 192); in RAM the gallery's
    [cls] tokens and features, 2·17,661·D·4 bytes (109 MB / 27 MB), plus one query chunk: per query
    S·N·D·4 bytes of fetched candidates (S = 100: 64.5 MB for the paper configuration) and ~4·S·M·N·4
    bytes of transport problems (M ≤ N query tokens: ≤ 70 MB), so a chunk is 1 query at the default
    ``chunk_mb`` 256 on the paper configuration and ~40 on the CPU profile. The decoder then reads
    1 + M + K·N tokens per query (2,311 at K = 10 on the paper configuration).
    """

    name = "fpc_consolidation"
    flags = ("uses_test_gallery",)

    def __init__(self, model: FPC, neighbours: int, shortlist: int) -> None:
        self.model = model
        self.k = int(neighbours)
        self.shortlist = int(shortlist)

    def options(self, variant: str) -> dict:
        fc = self.model.cfg.fpc
        return {"neighbours": self.k, "shortlist": self.shortlist, "alpha": fc.alpha, "keep_rate": fc.keep_rate,
                "gallery_features": "dense (keep rate 1), as the official evaluation code",
                "decoder_input": fc.decoder_input,
                "compare_with": "the global row: the sparse encoder alone, FPC's number under the standard protocol"}

    def distance_blocks(self, ctx):
        import numpy as np

        from ..evaluation.distance import iter_distance_blocks
        from ..evaluation.extras import TokenStore, rows_per_chunk
        from ..evaluation.features import FeatureSet

        m, dev = self.model, ctx.device
        n_g, n_q, dim, n_tok = len(ctx.gallery), len(ctx.query), m.encoder.embed_dim, m.encoder.num_patches
        store = TokenStore(ctx.scratch / "gallery_patches.npy", n_g, (n_tok, dim))
        mem_cls = torch.empty(n_g, dim)
        g_feat = torch.empty(n_g, dim)
        for rows, b in ctx.batches("gallery"):
            trunk, final = m.encode(b["image"], b["camid"], 1.0)  # dense: [b, 1 + N, D] each
            tok = m.consolidation_tokens(trunk, final)
            mem_cls[rows] = tok[:, 0].float().cpu()
            g_feat[rows] = m.neck(final[:, 0]).float().cpu()
            store.write(rows, tok[:, 1:])
        mem_cls_dev = mem_cls.to(dev)
        s = min(self.shortlist, n_g)
        per_query = s * n_tok * dim * 4 + 4 * s * n_tok * n_tok * 4 + self.k * (1 + n_tok) * dim * 4
        sub = rows_per_chunk(per_query, ctx.chunk_mb)
        q_feat = torch.empty(n_q, dim)
        for rows, b in ctx.batches("query"):
            tokens = m.consolidation_tokens(*m.encode(b["image"], b["camid"]))  # [b, 1 + M, D]
            for s0 in range(0, tokens.shape[0], sub):
                t = tokens[s0:s0 + sub]
                idx = m.neighbours(t, mem_cls_dev, lambda i: store.read(i).to(dev), self.k, self.shortlist)
                nbr = torch.cat([mem_cls_dev[idx][:, :, None], store.read(idx).to(dev)], dim=2)  # [q, K, 1+N, D]
                q_feat[rows.start + s0:rows.start + s0 + t.shape[0]] = m.rec_neck(m.consolidate(t, nbr)).float().cpu()
        query = FeatureSet(q_feat.numpy(), np.zeros((n_q, 0, dim), np.float32), np.zeros((n_q, 0), bool),
                           ctx.query.pids, ctx.query.camids, ctx.query.keys)
        gallery = FeatureSet(g_feat.numpy(), np.zeros((n_g, 0, dim), np.float32), np.zeros((n_g, 0), bool),
                             ctx.gallery.pids, ctx.gallery.camids, ctx.gallery.keys)
        for sl, block in iter_distance_blocks(query, gallery, "global", ctx.chunk_mb, ctx.normalize):
            yield sl, {self.name: block}
