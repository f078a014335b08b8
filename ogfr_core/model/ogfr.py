"""The OGFR model (Fig. 2): shared OA-ViT, teacher FEP branch, student branch, BNNecks/classifiers.

Registered as ``method: ogfr`` (:mod:`ogfr_core.model.registry`); Table IV's row-1 baseline is its own
method (:mod:`ogfr_core.model.baseline`). Branches (``model.*`` switches, Tables IV–VI):

* OA-ViT encoder (``oa_vit: false`` drops the occlusion embedding E_o) with K+1 part
  tokens. The **student** branch (occlusion-augmented image) is two conventional layers, or an FEP
  module with ``fep_student``. With ``kd: true`` a **teacher** branch (holistic image) is added: an
  FEP module (``fep_teacher``) or two conventional layers. ``kd: false`` is the single-branch model
  of Table IV rows 2–3.

Features ``i ∈ {g, 1..K}`` are tokens ``0`` and ``2..K+1`` (token 1 is the background part f^0, used
only in the correlation matrix). Each has a classifier shared by both branches (so the KL of Eq. 17
compares teacher and student predictions over the same classifier, and the teacher's reward
probability p^m is meaningful although only the student has an ID term in Eq. 17) and a BNNeck per
branch (so the student's running statistics — the ones used at inference — see student features
only). The encoder outputs ``f_o^g``, ``f_h^g`` of Eq. (18) get their own BNNeck + classifier.

Reward (Eq. 8) of a learned FEP agent, per image: ``p^m`` = softmax probability of the true id from
the global classifier on the purified global feature (after BNNeck) with the sampled erasing mask;
``p^b`` = the same from a frozen copy of the decoder + global BNNeck + classifier run without any
mask. Both are computed without gradient with the decoder in eval mode (no DropPath/dropout, so the
reward carries no stochastic-depth noise; the train-mode forward is used only for the losses) and
both BNNecks normalise with the batch's statistics (:func:`~ogfr_core.model.neck.bn_batch_stats`), so
p^m and p^b are computed alike. Only the [cls] output is read, so the decoders' last layer runs
for that one query (:func:`~ogfr_core.model.fep.block_queries`, same values, ~1/6 of the layer's
cost). The frozen copy is refreshed by :meth:`OGFR.refresh_reward_baseline`
(the loop calls it every ``baseline_refresh_epochs``). ``r = (p^m − p^b) / max(1 − p^b, 1e-6)``, clipped to
``[−reward_clip, reward_clip]`` (our choice, 0 = off). Eq. (9) with B = ``num_episodes`` episodes:
episode 0 is the mask used for the features; extra episodes are sampled without gradient.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..losses import objective, policy_advantage
from .backbone import build_encoder
from .base import ReIDMethod, eval_mode
from .fep import ConventionalHead, ErasingAgent, FEPModule, correlation_matrix, part_visibility
from .neck import bn_batch_stats, cpu_fp32, make_bnneck, make_classifier
from .registry import ModelConfigError, register_method


@register_method("ogfr")
class OGFR(ReIDMethod):
    """OGFR and its ablations (Tables IV–VII). See the module docstring.

    Args:
        cfg: ``train.model`` params.
        num_classes: training identities.
        num_cameras: training cameras (camera embeddings).
        img_size: ``(H, W)`` network input, pixels.
        load_weights: load ``cfg.pretrained`` (False when rebuilding from a checkpoint).

    Attributes:
        init_warning: "" or the warning that the backbone was randomly initialised.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, num_cameras: int,
                 img_size: tuple[int, int], load_weights: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        # fep_teacher configures the teacher branch, which exists only with kd: true; kd: false alone is
        # Table IV's single-branch model (rows 2-3), whatever fep_teacher says
        if cfg.num_episodes < 1:
            raise ModelConfigError(f"model.num_episodes must be >= 1, got {cfg.num_episodes}")
        if cfg.pg_baseline == "leave_one_out" and cfg.num_episodes < 2:
            raise ModelConfigError("model.pg_baseline: leave_one_out needs model.num_episodes >= 2 (the baseline of "
                                   f"an episode is the mean reward of the others), got {cfg.num_episodes}")
        self.num_parts = cfg.num_parts  # K
        self.num_classes = num_classes
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.encoder, self.init_warning = build_encoder(cfg, self.img_size, num_cameras,
                                                        num_part_tokens=self.num_parts + 1,
                                                        use_occ_embed=cfg.oa_vit, load_weights=load_weights)
        dim = self.encoder.embed_dim
        k = self.num_parts
        self.num_prefix = k + 2  # [cls] + K+1 part tokens
        # feature tokens i ∈ {g, 1..K}: token 0 and tokens 2..K+1 (token 1 = background part)
        self.register_buffer("feat_index", torch.tensor([0] + list(range(2, k + 2)), dtype=torch.long),
                             persistent=False)
        template, norm = self.encoder.blocks[-1], self.encoder.norm

        branches = ["student"] + (["teacher"] if cfg.kd else [])
        self.heads = nn.ModuleDict()
        for name in branches:
            use_fep = cfg.fep_student if name == "student" else cfg.fep_teacher
            self.heads[name] = (FEPModule(template, norm, self.num_prefix, k + 1, cfg.decoder,
                                          cfg.mask_method, cfg.random_keep)
                                if use_fep else ConventionalHead(template, norm))
        self.necks = nn.ModuleDict({name: nn.ModuleList([make_bnneck(dim) for _ in range(k + 1)])
                                    for name in branches})
        if "teacher" in self.necks:
            # no term of Eq. (21) back-propagates through the teacher's BNNecks (the KL of Eq. 17
            # detaches the teacher; L_tr reads features before the BNNeck): their affine stays the
            # identity, so it is frozen — every trainable parameter then gets a gradient (tested)
            self.necks["teacher"].requires_grad_(False)
        self.classifiers = nn.ModuleList([make_classifier(dim, num_classes) for _ in range(k + 1)])
        self.encoder_neck = make_bnneck(dim)  # Eq. (18) on the encoder's global outputs
        self.encoder_classifier = make_classifier(dim, num_classes)
        # branches whose learned agent is trained by REINFORCE (Eq. 8-9)
        self.agent_branches = [name for name, head in self.heads.items()
                               if isinstance(head, FEPModule) and head.agent is not None]
        # frozen copies giving p^b (Eq. 8), one per branch with a learned agent; never trained
        # (reward_baseline: live reads p^b from the live network instead: no copy)
        self.reward_baselines = nn.ModuleDict()
        for name, head in self.heads.items():
            if name in self.agent_branches and cfg.reward_baseline == "frozen":
                self.reward_baselines[name] = nn.ModuleDict({"head": copy.deepcopy(head),
                                                             "neck": copy.deepcopy(self.necks[name][0]),
                                                             "classifier": copy.deepcopy(self.classifiers[0])})
        self.reward_baselines.requires_grad_(False)
        self.reward_baselines.eval()

    # ------------------------------------------------------------------------------------------
    #: Eq. (22) reading used by :meth:`extract`: ``pixel`` (upsampled map) or ``token`` (see ``part_visibility``)
    visibility_rule: str = "pixel"

    def train(self, mode: bool = True) -> "OGFR":
        super().train(mode)
        self.reward_baselines.eval()  # the p^b network is always frozen
        return self

    def count_parameters(self) -> int:
        """Number of parameters of the model proper (frozen reward-baseline copies excluded)."""
        skip = {id(p) for p in self.reward_baselines.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    @torch.no_grad()
    def refresh_reward_baseline(self) -> None:
        """Copy the current FEP decoder + global BNNeck + classifier into the frozen p^b network."""
        for name, rb in self.reward_baselines.items():
            rb["head"].load_state_dict(self.heads[name].state_dict())
            rb["neck"].load_state_dict(self.necks[name][0].state_dict())
            rb["classifier"].load_state_dict(self.classifiers[0].state_dict())

    def on_epoch_start(self, epoch: int) -> None:
        """Refresh the frozen p^b network of Eq. (8) every ``baseline_refresh_epochs`` epochs."""
        if self.reward_baselines and epoch % max(1, self.cfg.baseline_refresh_epochs) == 0:
            self.refresh_reward_baseline()

    # ------------------------------------------------------------------------------------------
    def correlation(self, tokens: torch.Tensor) -> torch.Tensor:
        """Correlation matrix ``I [B, N, K+1]`` from encoder tokens ``[B, L, D]`` (see ``fep.correlation_matrix``);
        float32 under CPU autocast (the agent's state and Eq. 19's input; ``train.amp_cpu``)."""
        with cpu_fp32(tokens):
            return correlation_matrix(tokens[:, self.num_prefix:].float(), tokens[:, 1: self.num_prefix].float())

    def _logits(self, branch: str, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature BNNeck + classifier: feats ``[B, K+1, D]`` → (after-BN ``[B, K+1, D]``, logits ``[B, K+1, C]``)."""
        bn = torch.stack([neck(feats[:, i]) for i, neck in enumerate(self.necks[branch])], 1)
        logits = torch.stack([fc(bn[:, i]) for i, fc in enumerate(self.classifiers)], 1)
        return bn, logits

    def branch(self, name: str, images: torch.Tensor, z: torch.Tensor | None, camids: torch.Tensor,
               labels: torch.Tensor | None = None, label_map: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> dict[str, Any]:
        """Run one branch on ``images [B, 3, H, W]``: the encoder, then :meth:`head`."""
        return self.head(name, self.encoder(images, z, camids), labels, label_map, generator)

    def head(self, name: str, enc: torch.Tensor, labels: torch.Tensor | None = None,
             label_map: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Run branch ``name`` on encoder tokens ``enc [B, L, D]`` (F_h / F_o). Returns a dict with
        ``encoded`` (``enc``), ``tokens`` ``[B, L, D]`` (F_hp / F_op), ``feats`` ``[B, K+1, D]``
        (before BNNeck), ``feats_bn``, ``logits`` ``[B, K+1, C]``, ``corr`` ``[B, N, K+1]``,
        ``enc_logits`` ``[B, C]`` (Eq. 18), and for a learned FEP agent in training:
        ``m``, ``actions``, ``log_prob`` ``[E, B]``, ``reward`` ``[E, B]``, ``p_m``, ``p_b``."""
        corr = self.correlation(enc)  # [B, N, K+1]
        out: dict[str, Any] = {"encoded": enc, "corr": corr}
        head = self.heads[name]
        if isinstance(head, FEPModule):
            fg = self.patch_foreground(label_map) if (label_map is not None and head.mask_method == "background") else None
            tokens, info = head(enc, corr, fg, generator)
            out.update(info)
        else:
            tokens, _ = head(enc)
        out["enc_logits"] = self.encoder_classifier(self.encoder_neck(enc[:, 0]))
        feats = tokens[:, self.feat_index]  # [B, K+1, D]
        feats_bn, logits = self._logits(name, feats)
        out.update(tokens=tokens, feats=feats, feats_bn=feats_bn, logits=logits)
        if self.training and labels is not None and out.get("m") is not None and name in self.agent_branches:
            out.update(self._reinforce(name, enc, out, labels, generator))
        return out

    def _reinforce(self, name: str, enc: torch.Tensor, out: dict, labels: torch.Tensor,
                   generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Eq. (8)–(9): rewards and log-probabilities of ``num_episodes`` sampled erasing masks.

        Returns ``reward``, ``advantage``, ``log_prob`` ``[E, B]``, ``p_m`` ``[E, B]``, ``p_b`` ``[B]``,
        ``entropy`` ``[B]`` (the policy's Bernoulli entropy summed over tokens, with gradient to G).
        With ``reward_baseline: live`` p^b is one more [cls]-only decode of the live decoder, batched
        with the episodes (an all-keep mask: the same values as no mask); ``reward_kind``,
        ``pg_baseline`` and ``advantage_norm`` select :func:`policy_reward` and
        :func:`~ogfr_core.losses.policy_advantage` (defaults: Eq. 8, advantage = reward);
        ``pg_baseline: matched_random`` decodes one :func:`matched_random_mask` per episode in the same
        batched pass and takes the advantage relative to its reward (``reward`` stays the episode's own).
        """
        head: FEPModule = self.heads[name]
        m, actions = out["m"], out["actions"]
        idx = labels.long()[:, None]
        live_p_b = self.cfg.reward_baseline == "live"
        live = (head, self.necks[name][0], self.classifiers[0])
        modes = [mod.training for mod in live]
        with torch.no_grad():
            try:  # p^m like p^b: eval-mode decoder (no DropPath), batch-statistics BNNeck
                for mod in live:
                    mod.eval()
                enc = enc.detach()
                episodes = [actions]
                if not live_p_b:
                    rb = self.reward_baselines[name]
                    # only the [cls] output is read: the decoders' last layer runs for that query alone
                    base_g = rb["head"].decode(enc, None, num_queries=1)[:, 0]  # [B, D] unmasked, frozen params
                    p_b = rb["classifier"](bn_batch_stats(rb["neck"], base_g)).float().softmax(-1).gather(1, idx)[:, 0]  # [B]
                for _ in range(self.cfg.num_episodes - 1):
                    u = torch.rand(m.shape, generator=generator, device="cpu").to(m.device)
                    episodes.append((u < m.detach()).to(m.dtype))
                matched = self.cfg.pg_baseline == "matched_random"
                # matched: per episode, a random mask erasing as many tokens of the same image, decoded alongside
                controls = [matched_random_mask(a, generator) for a in episodes] if matched else []
                masks = ([torch.ones_like(actions)] if live_p_b else []) + episodes + controls  # live p^b: keep-all first
                g = head.decode(enc.repeat(len(masks), 1, 1), torch.cat(masks), num_queries=1)[:, 0]  # [len(masks)*B, D]
                p_ms = [self.classifiers[0](bn_batch_stats(self.necks[name][0], g_e)).float().softmax(-1)
                        .gather(1, idx)[:, 0] for g_e in g.chunk(len(masks))]  # BN statistics per episode
                if live_p_b:
                    p_b, p_ms = p_ms[0], p_ms[1:]
            finally:
                for mod, mode in zip(live, modes):
                    mod.train(mode)
            p_m = torch.stack(p_ms[:len(episodes)])  # [E, B]
            reward = policy_reward(p_m, p_b[None], self.cfg.reward_kind, self.cfg.reward_clip)  # [E, B]
            relative = reward
            if matched:  # what this mask did better than erasing as many tokens at random
                relative = reward - policy_reward(torch.stack(p_ms[len(episodes):]), p_b[None], self.cfg.reward_kind,
                                                  self.cfg.reward_clip)
            advantage = policy_advantage(relative, self.cfg.pg_baseline == "leave_one_out", self.cfg.advantage_norm)
        log_prob = torch.stack([ErasingAgent.log_prob(m, a) for a in episodes])  # [E, B]
        return {"reward": reward, "advantage": advantage, "log_prob": log_prob, "p_m": p_m, "p_b": p_b,
                "entropy": ErasingAgent.entropy(m)}

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, Any]:
        """Training forward.

        ``batch``: ``image`` ``[B,3,H,W]`` (holistic, teacher input), ``z`` ``[B,4]``, ``camid`` ``[B]``,
        ``label`` ``[B]``, optional ``label_map`` ``[B,H,W]``; ``image_occ``, ``z_occ``,
        ``label_map_occ`` (occlusion-augmented student input; default: the holistic ones).

        Returns ``{"student": branch dict, "teacher": branch dict (with KD only)}``.

        With both branches the weight-shared encoder runs once on the ``2B`` stacked images
        (holistic, then occluded): the same result as two calls (every op is per image; tested) with
        larger matrix products — one pass instead of two, forward and backward.
        """
        labels, camids = batch["label"], batch["camid"]
        image_s = batch.get("image_occ", batch["image"])
        z_t = batch.get("z")
        z_s = batch.get("z_occ", z_t)
        if "teacher" in self.heads:
            z = None if z_t is None or z_s is None else torch.cat([z_t, z_s])
            enc_t, enc_s = self.encoder(torch.cat([batch["image"], image_s]), z,
                                        torch.cat([camids, camids])).chunk(2)  # 2 × [B, L, D]
        else:
            enc_s = self.encoder(image_s, z_s, camids)
        out = {"student": self.head("student", enc_s, labels, batch.get("label_map_occ", batch.get("label_map")),
                                    generator)}
        if "teacher" in self.heads:
            out["teacher"] = self.head("teacher", enc_t, labels, batch.get("label_map"), generator)
        return out

    def loss(self, out: dict[str, Any], batch: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
        """Eq. (21) (or the single-branch objective of ``kd: false``): :func:`ogfr_core.losses.objective`
        with the holistic and occluded parsing label maps for L_mask (Eq. 19). Adds the logged
        ``reward`` and ``retained_ratio`` of each learned agent to ``out["stats"]``."""
        terms = objective(out, batch["label"], cfg, self.grid_size, self.num_prefix,
                          batch.get("label_map"), batch.get("label_map_occ"))
        stats = out.setdefault("stats", {})
        for name in ("student", "teacher"):
            branch = out.get(name) or {}
            if "reward" in branch:
                stats[f"{name}/reward"] = float(branch["reward"].mean())
            if branch.get("actions") is not None:
                stats[f"{name}/retained_ratio"] = float(branch["actions"].float().mean())
            if branch.get("m") is not None:
                stats.update(self.erasing_stats(name, branch, batch))
        return terms

    @torch.no_grad()
    def erasing_stats(self, name: str, branch: dict, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """What a learned agent erased in this step (issue 23): the erased fraction of the background
        tokens and of the body tokens (a token is background when < half of its cell is a body part in
        the branch's parsing label map: holistic for the teacher, occluded for the student) and the
        mean policy entropy per token. An agent erasing < 2 % of the tokens is "off" whatever its AUC."""
        lm = batch.get("label_map") if name == "teacher" else batch.get("label_map_occ", batch.get("label_map"))
        out: dict[str, float] = {}
        if lm is not None:
            bg = (self.patch_foreground(lm) < 0.5).float()  # [B, N]
            erased = 1 - branch["actions"].float()  # [B, N]
            out[f"{name}/erased_background"] = float((erased * bg).sum() / bg.sum().clamp_min(1))
            out[f"{name}/erased_body"] = float((erased * (1 - bg)).sum() / (1 - bg).sum().clamp_min(1))
        if "entropy" in branch:
            out[f"{name}/entropy"] = float(branch["entropy"].mean()) / branch["m"].shape[1]
        return out

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, images: torch.Tensor, z: torch.Tensor, camids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference (student branch only), features after BNNeck (TransReID ``NECK_FEAT: after``).

        Args:
            images: ``[B, 3, H, W]`` normalised as in training.
            z: occlusion labels ``[B, 4]`` long (Eq. 2).
            camids: ``[B]`` long, within the training cameras.

        Returns:
            ``{"global": [B, D], "parts": [B, K, D], "visibility": [B, K] bool}``. Visibility is Eq. (22) on the student's correlation matrix upsampled to H×W
            (``visibility_rule = "token"``: on the token grid; the evaluation sets it from ``evaluate.visibility``).
            The model is put in eval mode for the call and restored after.
        """
        with eval_mode(self):
            out = self.branch("student", images, z, camids)
        feats = out["feats_bn"]  # [B, K+1, D]
        vis = part_visibility(out["corr"], self.grid_size, self.img_size, self.visibility_rule)  # [B, K]
        return {"global": feats[:, 0], "parts": feats[:, 1:], "visibility": vis}

    @torch.no_grad()
    def erasing_mask(self, images: torch.Tensor, z: torch.Tensor, camids: torch.Tensor) -> torch.Tensor | None:
        """Eq. (6) retain probability ``m`` of the learned agent (teacher's if any, else the student's)
        on ``images`` → ``[B, Hp, Wp]`` float in (0, 1); None when no branch has a learned agent."""
        for name in ("teacher", "student"):
            head = self.heads[name] if name in self.heads else None
            if isinstance(head, FEPModule) and head.agent is not None:
                with eval_mode(self):
                    m = head.agent(self.correlation(self.encoder(images, z, camids)))  # [B, N]
                return m.reshape(images.shape[0], *self.grid_size)
        return None


def matched_random_mask(actions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random keep/erase mask with, per image, exactly as many erased tokens as ``actions``.

    ``actions`` ``[B, N]`` (1 = keep, 0 = erase) → ``[B, N]`` of the same dtype: the erased tokens are a
    uniformly random subset of size ``N − Σ_t a_t`` (ranks of ``torch.rand`` on the CPU generator, as
    the episodes' sampling). The control of ``pg_baseline: matched_random`` (ours, not in Eq. 9): its
    reward is subtracted from the episode's, so the advantage says which tokens to erase, not how many.
    """
    b, n = actions.shape
    erased = (n - actions.sum(1, keepdim=True)).round().long().to(actions.device)  # [B, 1]
    rank = torch.rand((b, n), generator=generator, device="cpu").argsort(1).argsort(1).to(actions.device)
    return (rank >= erased).to(actions.dtype)  # the `erased` lowest ranks are erased


def policy_reward(p_m: torch.Tensor, p_b: torch.Tensor, kind: str = "eq8", clip: float = 0.0,
                  eps: float = 1e-6) -> torch.Tensor:
    """The agent's reward: ``eq8`` = :func:`reinforce_reward` (Eq. 8); ``log_ratio`` =
    ``log p^m − log p^b`` (probabilities floored at ``eps``; ours: its scale does not depend on the
    number of classes, where Eq. 8's ~p^m − p^b shrinks as 1/C). Clipped to ``[−clip, clip]`` when
    ``clip > 0``. Shapes broadcast.

    Raises:
        ValueError: an unknown ``kind``.
    """
    if kind == "eq8":
        return reinforce_reward(p_m, p_b, clip, eps)
    if kind != "log_ratio":
        raise ValueError(f"model.reward_kind must be eq8 or log_ratio, got {kind!r}")
    r = p_m.clamp_min(eps).log() - p_b.clamp_min(eps).log()
    return r.clamp(-clip, clip) if clip > 0 else r


def reinforce_reward(p_m: torch.Tensor, p_b: torch.Tensor, clip: float = 0.0, eps: float = 1e-6) -> torch.Tensor:
    """Eq. (8): ``r = (p^m − p^b) / (1 − p^b)``, denominator floored at ``eps``, optionally clipped to
    ``[−clip, clip]`` (``clip = 0`` = off). Shapes broadcast."""
    r = (p_m - p_b) / (1 - p_b).clamp_min(eps)
    return r.clamp(-clip, clip) if clip > 0 else r

