"""Typed views of ``params.yaml``: one frozen dataclass per pipeline stage.

Every stage reads only its own section (so DVC re-runs a stage only when *its* knobs change) via
:func:`load_section`. Unknown keys, missing required keys, values of the wrong type, numbers outside
their allowed range and unsafe names (:data:`CHECKS`) raise :class:`ConfigError` naming the section
and key, e.g.::

    >>> cfg = load_section("params.yaml", "train", TrainConfig)   # doctest: +SKIP
    >>> cfg.lr
    0.008

Paper references (OGFR §IV-B) are in ``params.yaml``'s comments and in the field docs below.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar

import yaml

from .errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A params file or section does not match its dataclass (unknown, missing, mistyped or
    out-of-range key, unsafe name, malformed YAML)."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """``data:`` — where the images are and how they are read (used by every stage).

    ``root`` is relative to the repository root (or absolute). ``layout`` picks the reader
    (see :data:`ogfr_core.data.readers.READERS`). ``query_camid``/``gallery_camid`` are the camera
    convention for datasets without cameras (Occluded-REID), as BPBreID/FPC/CpaCol use.
    ``max_train_ids``/``max_test_ids`` (0 = all) take a deterministic subset of identities, used by
    the CI profile. ``val_ids`` (0 = none) holds that many training identities out of training as a
    validation query/gallery split (``val_query``/``val_gallery`` in the index), for choosing
    hyper-parameters without looking at the test set. ``min_size``: crops narrower or shorter than
    this (pixels) are skipped by the index stage, counted in its summary (a 1x1 image carries no
    identity).
    """

    name: str
    root: str
    layout: str = "market1501"
    query_camid: int = 0
    gallery_camid: int = 1
    max_train_ids: int = 0
    max_test_ids: int = 0
    val_ids: int = 0
    height: int = 256
    width: int = 128
    num_workers: int = 2
    min_size: int = 8


@dataclass(frozen=True)
class ParseConfig:
    """``parse:`` — human-parsing backend and its cache (OGFR §III-A1).

    ``pad_ratios``/``pad_mode``/``mirror_retry``/``mask_threshold`` are used by the ``mediapipe``
    backend only (padding cascade and segmentation gate); ``field_threshold`` by ``pifpaf_maskrcnn``;
    ``weights``/``maskrcnn_weights`` are local files for ``pifpaf_maskrcnn``/``torchvision``.
    ``workers``, ``shard_size``, ``device`` and ``overlay_grid`` do not enter the cache key.
    """

    backend: Literal["mediapipe", "pifpaf_maskrcnn", "torchvision"] = "mediapipe"
    label_height: int = 256
    label_width: int = 128
    workers: int = 2
    shard_size: int = 512
    min_keypoint_visibility: float = 0.5
    pad_ratios: tuple[float, ...] = (1.0, 2.0, 1.5)
    pad_mode: Literal["edge", "constant", "reflect"] = "edge"
    mirror_retry: bool = True
    limb_width_ratio: float = 0.12
    mask_threshold: float = 0.5
    field_threshold: float = 0.5
    weights: str = ""
    maskrcnn_weights: str = ""
    device: str = "auto"
    overlay_grid: int = 32


@dataclass(frozen=True)
class OcclusionConfig:
    """``occlusion:`` — how z is decided (:class:`ogfr_core.occlusion.OcclusionRule`): ``rule``
    ``pixels`` = Eq. (1)–(2) with λ in pixels at 256×128; ``hidden_fraction`` = a coarse part is
    occluded when more than ``tau`` of its amodal area is not visible; ``covered`` = Eq. (2) on the
    pixels a learned occluder mask leaves, or more than ``tau`` of the part under it (stage
    ``occluder``); ``learned_parts`` = ``covered`` on the occluder stage's learned parse of the target;
    ``learned_soft`` = ``learned_parts`` on that parse's part probabilities (all four ours, README
    "Occlusion labels")."""

    rule: Literal["pixels", "hidden_fraction", "covered", "learned_parts", "learned_soft"] = "pixels"
    lam: float = 5.0
    tau: float = 0.5


@dataclass(frozen=True)
class OccluderConfig:
    """``occluder:`` — the learned occluder mask of the ``covered`` occlusion rule (stage ``occluder``,
    :mod:`ogfr_core.occlusion.learned`): the segmenter is fine-tuned for ``steps`` Adam steps of
    ``batch_size`` synthetic examples (occluders of the ``occlude:`` kind pasted on training crops of
    the identities outside ``occlude.val_ids``; ``none_prob`` of them left holistic) at learning rate
    ``lr`` from ``seed``; a pixel is an occluder where its probability exceeds ``threshold``. Its part
    head (the learned parse of the ``learned_parts`` rule) trains beside it with loss weight
    ``part_weight``."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 5.0e-4
    none_prob: float = 0.2
    seed: int = 0
    threshold: float = 0.5
    threads: int = 0
    part_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.part_weight < 0:
            raise ConfigError(f"occluder.part_weight must be >= 0, got {self.part_weight}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"occluder: steps, batch_size must be >= 1 and lr > 0, got {self.steps}, "
                              f"{self.batch_size}, {self.lr}")
        if not 0 <= self.none_prob < 1 or not 0 < self.threshold < 1:
            raise ConfigError(f"occluder: none_prob must be in [0, 1) and threshold in (0, 1), got "
                              f"{self.none_prob}, {self.threshold}")


@dataclass(frozen=True)
class FEDConfig:
    """``model.fed:`` — FED (Wang et al., CVPR 2022), method ``fed`` (:mod:`ogfr_core.model.fed`).

    ``num_stripes`` N part stripes (§3: 4); ``oem_reduction``: the OEM's first FC maps D → D/4 (Eq. 1);
    ``stripe_threshold``: a stripe covered by more than this is occluded (§3.1: three quarters);
    ``npo_prob``/``npo_vertical_prob``: NPO augmentation of the second branch (FED's code: every
    image; vertical share ours); ``memory_momentum`` m of Eq. (3) (0.2); ``temperature`` τ of Eq. (9)
    (0.05); ``num_neighbours`` K nearest other-identity centres (Table 4: 8); ``num_heads`` of the FDM
    cross-attention over N·D channels (§4.2: 8); ``ffn_ratio``: hidden width of FFN1/FFN2 (× D, FED's
    code: 4).

    Diagnostic switches (issue 24; defaults = the recorded runs): ``memory_init`` ``first_batch`` (a
    centre := its identity's batch mean when first seen) | ``train_pass`` (FED's code: one eval-mode
    pass over the training set before training, every centre the mean OEM feature of its identity);
    ``memory_update`` ``batch_mean`` (Eq. 3 with the batch mean per identity) | ``per_sample`` (FED's
    code: one momentum step per image, in batch order); ``label_smoothing`` of FED's ID losses (null =
    ``train.loss.label_smoothing``; FED's code: 0); ``triplet_weight``: weight of a batch-hard triplet
    loss on the [cls] and OEM features before their BNNecks (0 = FED; its Table 3 rows 0–4 train ID +
    triplet).
    """

    num_stripes: int = 4
    oem_reduction: int = 4
    stripe_threshold: float = 0.75
    npo_prob: float = 1.0
    npo_vertical_prob: float = 0.5
    memory_momentum: float = 0.2
    temperature: float = 0.05
    num_neighbours: int = 8
    num_heads: int = 8
    ffn_ratio: int = 4
    memory_init: Literal["first_batch", "train_pass"] = "first_batch"
    memory_update: Literal["batch_mean", "per_sample"] = "batch_mean"
    label_smoothing: float | None = None
    triplet_weight: float = 0.0


@dataclass(frozen=True)
class PGFLKDConfig:
    """``model.pgfl_kd:`` — PGFL-KD (Zheng et al., ACM MM 2021), method ``pgfl_kd``
    (:mod:`ogfr_core.model.pgfl_kd`): weights λ_cl of the consistent loss (Eq. 4) and λ_mcl of the
    multi-part contrastive loss (Eq. 5) in Eq. (10) (Fig. 3: 0.25 each); ``cl_form``: Eq. (4) on the raw
    features as written (``literal``) or on L2-normalised ones (``normalized``, our reading of an
    ambiguous scale; :func:`ogfr_core.losses.pgfl_kd.consistent_loss`)."""

    lambda_cl: float = 0.25
    lambda_mcl: float = 0.25
    cl_form: Literal["literal", "normalized"] = "literal"


@dataclass(frozen=True)
class FPCConfig:
    """``model.fpc:`` — FPC (feature pruning and consolidation), :mod:`ogfr_core.model.fpc`.

    ``prune_blocks`` are 0-based block indices of a 12-block ViT (the official code's ``drop_loc``;
    the paper's "layers 3, 6 and 9"), mapped proportionally to ``depth`` blocks. ``keep_rate`` γ and
    ``alpha`` α of Eq. (10) are §3.4's values; ``neighbours`` K and ``shortlist`` are the training
    values (the test-time consolidation reads ``evaluate.fpc``). ``consolidation: false`` trains the
    sparse encoder alone (Table 4 row 2). ``decoder_input``: what the consolidation decoder (and the
    neighbour search) reads — ``final`` (the encoder's normed output: the consolidated query sits one
    block deeper than the gallery features) or ``parallel`` (the un-normed tokens before the last
    block: the decoder is a parallel copy of the last block, as the official code's ``rec_b`` beside
    ``b1``, so query and gallery features come out at the same depth).
    """

    keep_rate: float = 0.8
    prune_blocks: tuple[int, ...] = (3, 6, 9)
    fuse_token: bool = True
    consolidation: bool = True
    neighbours: int = 10
    shortlist: int = 100
    alpha: float = 0.4
    sinkhorn_iters: int = 100
    sinkhorn_eps: float = 0.05
    decoder_input: Literal["final", "parallel"] = "final"


@dataclass(frozen=True)
class CpaColConfig:
    """``model.cpacol:`` — CpaCol (contrastive pedestrian attention + correlation learning),
    :mod:`ogfr_core.model.cpacol`.

    ``attn_blocks``: 0-based blocks of a 12-block ViT after which a ContrastAttn layer sits (paper:
    the 3rd, 5th and 7th), mapped proportionally to ``depth``; ``residual_weights`` (one per layer)
    and ``attn_ramp_epochs`` are the official code's (the paper is silent); ``inter_weight`` /
    ``intra_weight`` are λ1 / λ2 of Eq. (12); ``corr_channels`` C_r of Eq. (9); stage II runs
    ``stage2_epochs`` epochs at ``train.lr · stage2_lr_scale`` with the stage-I model frozen.
    """

    attn_blocks: tuple[int, ...] = (2, 4, 6)
    residual_weights: tuple[float, ...] = (0.5, 0.25, 0.1)
    attn_ramp_epochs: int = 20
    num_stripes: int = 4
    inter_weight: float = 1.0
    intra_weight: float = 0.5
    corr_channels: int = 256
    stage2_epochs: int = 180
    stage2_lr_scale: float = 1.25


@dataclass(frozen=True)
class ModelConfig:
    """``model:`` — OA-ViT backbone, FEP module, student head, and the ablation switches.

    ``patch_embed``: ``conv`` = Eq. (4) P×P patches with stride S (the paper); ``hybrid`` = the
    feature map of an ImageNet CNN stem as patch tokens (ViT's hybrid architecture,
    :mod:`ogfr_core.model.stem`), ``stem`` cut at output stride ``stem_stride`` and loaded from
    ``stem_weights`` ("" = random init), its first ``stem_frozen_blocks`` blocks frozen.
    ``patch_size``/``stride`` are unused by the hybrid.
    """

    method: str = "ogfr"  # a registered method (ogfr_core.model.METHODS); checked when the model is built
    backbone: str = "vit_base_patch16_224"
    pretrained: str = ""
    depth: int = 0
    patch_embed: Literal["conv", "hybrid"] = "conv"
    stem: Literal["mobilenetv2"] = "mobilenetv2"
    stem_stride: Literal[8, 16] = 16
    stem_weights: str = ""
    stem_frozen_blocks: int = 0
    patch_size: int = 16
    stride: int = 12
    num_parts: int = 8
    gamma_occ: float = 3.0
    gamma_cam: float = 3.0
    drop_path: float = 0.1
    oa_vit: bool = True
    fep_teacher: bool = True
    fep_student: bool = False
    kd: bool = True
    mask_method: Literal["learned", "none", "random", "background"] = "learned"
    decoder: Literal["customised", "conventional"] = "customised"
    random_keep: float = 0.5
    num_episodes: int = 1
    baseline_refresh_epochs: int = 2
    reward_clip: float = 1.0  # |r| of Eq. (8) clipped (our choice, 0 = off); p^b near 1 makes r explode
    # policy gradient of the FEP agent (issue 23; defaults = the original implementation):
    reward_baseline: Literal["frozen", "live"] = "frozen"  # p^b of Eq. (8): frozen copy refreshed every
    #   baseline_refresh_epochs (paper: "every several epochs") | live = the same no-grad pass without a mask
    reward_kind: Literal["eq8", "log_ratio"] = "eq8"  # Eq. (8) (p^m-p^b)/(1-p^b) | log p^m - log p^b (ours)
    pg_baseline: Literal["none", "leave_one_out", "matched_random"] = "none"  # advantage = r | r - mean of the
    #   other episodes | r - r of a random mask erasing as many tokens of the same image (which tokens, not how many)
    advantage_norm: bool = False  # standardise the advantages over the batch (all episodes x images)
    fed: FEDConfig = field(default_factory=FEDConfig)  # method fed only
    pgfl_kd: PGFLKDConfig = field(default_factory=PGFLKDConfig)  # method pgfl_kd only
    fpc: FPCConfig = field(default_factory=FPCConfig)  # method fpc
    cpacol: CpaColConfig = field(default_factory=CpaColConfig)  # method cpacol


@dataclass(frozen=True)
class LossConfig:
    """``loss:`` — weights of Eq. (15)–(21) and the triplet margin (TransReID: soft-margin off, 0.3)."""

    alpha: float = 0.3
    beta: float = 0.4
    mu1: float = 0.5
    mu2: float = 0.5
    triplet_margin: float = 0.3
    kd_temperature: float = 1.0
    label_smoothing: float = 0.0
    use_mse: bool = True
    use_cos: bool = True
    use_kd: bool = True
    use_mask: bool = True
    policy_weight: float = 1.0
    kd_detach_teacher: bool = False  # stop-gradient on the teacher in L_mse/L_cos (KL always detaches it)
    policy_entropy_weight: float = 0.0  # entropy bonus of the agent's Bernoulli policy (ours; 0 = off)
    mse_reduction: Literal["mean", "channel_sum"] = "mean"  # Eq. (15): mean over channels | their sum (paper)
    mse_weight: float = 1.0  # weight of L_mse in Eq. (21) (paper: 1)
    teacher_id_weight: float = 0.0  # ID loss on the teacher's logits (shared classifiers fit f_hp; ours, 0 = off)


@dataclass(frozen=True)
class AugmentConfig:
    """``augment:`` — §IV-B / TransReID transforms and the student's occlusion augmentation."""

    flip_prob: float = 0.5
    pad: int = 10
    erasing_prob: float = 0.0
    occlusion_prob: float = 0.5
    occlusion_source: Literal["background", "fed"] = "background"
    occlusion_area: tuple[float, float] = (0.1, 0.4)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TrainConfig:
    """``train:`` — optimisation (OGFR §IV-B: SGD, lr 0.008, wd 1e-4, cosine, batch 64 = 16×4).

    ``optimizer``: ``sgd`` (the paper; ``momentum``) or ``adamw`` (ours, for randomly initialised
    transformer blocks on a short CPU budget; ``momentum`` unused). With ``adamw``, biases, norm
    weights and the learnable tokens/embeddings get no weight decay (timm's
    ``param_groups_weight_decay`` rule). ``stem_lr_scale`` multiplies ``lr`` for the pretrained CNN
    stem of a hybrid patch embedding (1 = same lr), ``agent_lr_scale`` for the FEP erasing agent
    (:mod:`ogfr_core.training.optim`).

    ``amp``: fp16 autocast + GradScaler on CUDA (no effect on CPU). ``amp_cpu``: bf16 autocast on CPU
    (oneDNN's bf16 matmuls/convolutions; no scaler: bf16 has fp32's exponent range), with the
    classifier logits, the correlation matrix, the FEP agent, the reward softmax and every loss in fp32
    (:class:`~ogfr_core.training.loop.Trainer`); off by default until validated (README "Performance").
    """

    seed: int = 0
    epochs: int = 120
    ids_per_batch: int = 16
    images_per_id: int = 4
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.008
    stem_lr_scale: float = 1.0
    agent_lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    warmup_factor: float = 0.01
    min_lr: float = 1.6e-6
    amp: bool = True
    amp_cpu: bool = False
    device: str = "auto"
    log_every: int = 20
    max_steps_per_epoch: int = 0
    threads: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class EvalDatasetConfig:
    """One extra (cross-dataset) evaluation set in ``evaluate.extra_datasets``.

    E.g. a model trained on Market-1501 evaluated on Occluded-REID. Its index and occlusion parquets
    (``data/index/<name>.parquet``, ``data/occlusion/<name>.parquet``) must exist: run the index /
    parse / occlusion stages with ``data`` pointing at it. ``query_camid``/``gallery_camid`` are the
    camera convention for sets without cameras. Cameras the model was not trained on use camera
    embedding 0 (``evaluation.map_unseen_cameras``).

    ``split: val`` marks a set built from the held-out *training* identities (the occluded validation
    set of stage ``occlude``): evaluated only with ``val`` in ``evaluate.sets`` and a validation split
    in the index (``data.val_ids`` > 0: otherwise the model trained on those identities), never with
    the test sets.
    """

    name: str
    root: str
    layout: str = "market1501"
    query_camid: int = 0
    gallery_camid: int = 1
    split: Literal["test", "val"] = "test"


@dataclass(frozen=True)
class FPCEvalConfig:
    """``evaluate.fpc:`` — FPC's test-time feature consolidation (§3.2–3.3), which reads a memory of
    the TEST GALLERY's tokens: not the standard protocol, reported as "uses the test gallery".
    ``neighbours`` K (paper: 10 on Occluded-Duke, 5 elsewhere), ``shortlist``: cosine candidates
    ranked by Eq. (10) (paper: 100)."""

    consolidation: bool = False
    neighbours: int = 10
    shortlist: int = 100


@dataclass(frozen=True)
class CpaColEvalConfig:
    """``evaluate.cpacol:`` — CpaCol's test-time fusion of the global distance with the correlation
    score s of Eq. (10), on the ``top_k`` of each query's global ranking only (an approximation of
    re-scoring every pair). ``weight``: fusion weight (0.3 = the official code's; the paper gives no
    value); ``weight_source`` says where it came from (the report prints it); ``weight_sweep``: extra
    weights evaluated on the VALIDATION split only (``evaluate.sets: [val]``), to choose ``weight``."""

    rescore: bool = False
    top_k: int = 100
    weight: float = 0.3
    weight_source: Literal["official_code", "validation"] = "official_code"
    weight_sweep: tuple[float, ...] = ()


@dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate:`` — Market-1501 protocol, Eq. (22)–(23), optional k-reciprocal re-ranking.

    ``distances``: ``visibility`` = Eq. (23), ``global`` = global feature only (comparison).
    ``feat_norm``: L2-normalise features before the distance (TransReID ``TEST.FEAT_NORM: yes``).
    ``retrieval_queries``: occluded queries whose top-5 go to ``reports/eval/retrievals.json``.
    ``mask_examples``: holistic images whose FEP erasing mask goes to ``reports/eval/erasing_masks.json``.
    ``fep_images``: test images (parse status ok) on which the FEP diagnostics are measured (0 = off).
    ``sets``: ``test`` = the dataset's query/gallery (+ ``extra_datasets``); ``val`` = the validation
    split held out of the training ids (``data.val_ids``), when the index has one. Choose
    hyper-parameters with ``sets: [val]`` so that no test number is computed.
    ``oracle_occlusion``: on a derived occluded set (``occlude`` stage), also rank its queries with their
    ground-truth z (flagged rows ``oracle_z:<distance>``, :func:`ogfr_core.evaluation.pipeline.oracle_rows`).
    """

    batch_size: int = 128
    max_rank: int = 50
    chunk_mb: int = 256
    rerank: bool = False
    k1: int = 50
    k2: int = 15
    lambda_value: float = 0.3
    device: str = "auto"
    feat_norm: bool = True
    distances: tuple[Literal["visibility", "global"], ...] = ("visibility", "global")
    retrieval_queries: int = 16
    mask_examples: int = 8
    fep_images: int = 1000
    visibility: Literal["pixel", "token"] = "pixel"  # Eq. (22): a part wins >= 1 upsampled pixel | >= 1 token
    part_map: bool = False  # also rank by each part feature alone (mAP per part) + visible-part histograms
    sets: tuple[Literal["test", "val"], ...] = ("test", "val")
    oracle_occlusion: bool = True
    extra_datasets: tuple[EvalDatasetConfig, ...] = ()
    fpc: FPCEvalConfig = field(default_factory=FPCEvalConfig)  # test-time extras of method fpc
    cpacol: CpaColEvalConfig = field(default_factory=CpaColEvalConfig)  # test-time extras of method cpacol


@dataclass(frozen=True)
class OccludeConfig:
    """``occlude:`` — the occluded-query benchmark derived from ``data`` (the ``occlude`` stage,
    :mod:`ogfr_core.data.occluded_benchmark`): every query gets one occluder of ``kind`` (person |
    object | mixed), box area ``area`` = (min, max) fraction of the crop, entering from one of
    ``edges``, drawn from ``seed`` and the image's key. The derived set is ``<data.name><suffix>``
    under ``data/derived/``; its gallery is the original's (symlinked, or copied with
    ``link_gallery: false``). ``val_ids``: the same kind of occluded set built from that many
    *training* identities (``<derived>-val``: the validation split of ``data.val_ids`` with the
    same seed, its queries occluded by other training identities; 0 = none), on which the
    occlusion rule is chosen (``tau_grid``: the τ values of every rule but ``pixels`` scored there, written to
    ``reports/occlude/z_accuracy.json``); the test set only reports the rule in force."""

    kind: Literal["person", "object", "mixed"] = "mixed"
    area: tuple[float, float] = (0.2, 0.5)
    edges: tuple[Literal["bottom", "left", "right"], ...] = ("bottom", "left", "right")
    seed: int = 0
    suffix: str = "-occ"
    link_gallery: bool = True
    examples: int = 8
    val_ids: int = 100
    tau_grid: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class ReportConfig:
    """``report:`` — what the report shows."""

    num_retrieval_queries: int = 6
    num_mask_examples: int = 8


# --------------------------------------------------------------------------------------------
# Value checks: allowed ranges and safe names, one line per field (applied by from_dict)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """Allowed interval of a numeric field (``None`` = unbounded); a tuple value is checked element-wise.

    ``lo_open``/``hi_open`` exclude the bound; ``ordered``: the elements must not decrease (e.g. a
    ``(min, max)`` pair); ``nonempty``: a tuple needs at least one element.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    ordered: bool = False
    nonempty: bool = False

    def describe(self) -> str:
        """The range in interval notation, e.g. ``>= 1``, ``in [0, 1)``."""
        if self.hi is None:
            text = f"{'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.lo is None:
            text = f"{'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            text = f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.ordered:
            text += ", in non-decreasing order"
        if self.nonempty:
            text = "at least one value, each " + text
        return text

    def contains(self, v: float) -> bool:
        """Whether the single number ``v`` lies in the range (NaN never does)."""
        if math.isnan(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def __call__(self, value: Any, key: str) -> None:
        """Raise :class:`ConfigError` naming ``key``, ``value`` and the allowed range if outside it."""
        values = value if isinstance(value, tuple) else (value,)
        ok = all(self.contains(float(v)) for v in values)
        ok = ok and not (self.ordered and any(a > b for a, b in zip(values, values[1:])))
        ok = ok and not (self.nonempty and not values)
        if not ok:
            raise ConfigError(f"{key}: {value!r} is outside the allowed range: {self.describe()} "
                              f"(fix it in params.yaml)")


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def safe_name(value: str, key: str) -> None:
    """A name that goes into output paths (``data/index/<name>.parquet``, ``models/<name>/``) must be a
    single safe path component: letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit
    (so never ``..``, ``/``, an absolute path or a hidden file), at most 100 characters.

    Raises:
        ConfigError: naming ``key`` and the rule.
    """
    if not SAFE_NAME.fullmatch(value):
        raise ConfigError(f"{key}: {value!r} is not a safe name (it becomes part of output paths such as "
                          f"data/index/<name>.parquet and models/<name>/); use 1-100 letters, digits, "
                          f"'.', '_' or '-', starting with a letter or digit")


def safe_suffix(value: str, key: str) -> None:
    """A suffix appended to a safe name (``occlude.suffix``): 1-20 letters, digits, ``.``, ``_``, ``-``.

    Raises:
        ConfigError: naming ``key`` and the rule.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,20}", value):
        raise ConfigError(f"{key}: {value!r} is not a safe suffix (it is appended to data.name in output "
                          f"paths); use 1-20 letters, digits, '.', '_' or '-'")


NONNEG, POSITIVE, PROB = Range(0), Range(0, lo_open=True), Range(0, 1)
AT_LEAST_1 = Range(1)

# Per section dataclass: field -> check(value, key). Fields not listed take any value of their type.
CHECKS: dict[type, dict[str, Callable[[Any, str], None]]] = {
    DataConfig: {
        "name": safe_name, "query_camid": NONNEG, "gallery_camid": NONNEG, "max_train_ids": NONNEG,
        "max_test_ids": NONNEG, "val_ids": NONNEG, "height": AT_LEAST_1, "width": AT_LEAST_1,
        "num_workers": NONNEG, "min_size": AT_LEAST_1,
    },
    ParseConfig: {
        "label_height": AT_LEAST_1, "label_width": AT_LEAST_1, "workers": NONNEG, "shard_size": AT_LEAST_1,
        "min_keypoint_visibility": PROB, "pad_ratios": Range(0, nonempty=True),
        "limb_width_ratio": POSITIVE, "mask_threshold": PROB, "field_threshold": PROB, "overlay_grid": NONNEG,
    },
    OcclusionConfig: {"lam": NONNEG, "tau": Range(0, 1, hi_open=True)},
    ModelConfig: {
        "depth": NONNEG, "stem_frozen_blocks": NONNEG, "patch_size": AT_LEAST_1, "stride": AT_LEAST_1,
        "num_parts": AT_LEAST_1, "gamma_occ": NONNEG, "gamma_cam": NONNEG, "drop_path": Range(0, 1, hi_open=True), "random_keep": PROB,
        "num_episodes": AT_LEAST_1, "baseline_refresh_epochs": AT_LEAST_1, "reward_clip": NONNEG,
    },
    FEDConfig: {
        "num_stripes": AT_LEAST_1, "oem_reduction": AT_LEAST_1, "stripe_threshold": PROB, "npo_prob": PROB,
        "npo_vertical_prob": PROB, "memory_momentum": Range(0, 1, hi_open=True), "temperature": POSITIVE,
        "num_neighbours": AT_LEAST_1, "num_heads": AT_LEAST_1, "ffn_ratio": AT_LEAST_1,
        "label_smoothing": lambda v, k: None if v is None else Range(0, 1, hi_open=True)(v, k),
        "triplet_weight": NONNEG,
    },
    PGFLKDConfig: {"lambda_cl": NONNEG, "lambda_mcl": NONNEG},
    LossConfig: {
        "alpha": NONNEG, "beta": NONNEG, "mu1": NONNEG, "mu2": NONNEG, "triplet_margin": NONNEG,
        "kd_temperature": POSITIVE, "label_smoothing": Range(0, 1, hi_open=True), "policy_weight": NONNEG,
        "policy_entropy_weight": NONNEG, "teacher_id_weight": NONNEG, "mse_weight": NONNEG,
    },
    AugmentConfig: {
        "flip_prob": PROB, "pad": NONNEG, "erasing_prob": PROB, "occlusion_prob": PROB,
        "occlusion_area": Range(0, 1, lo_open=True, hi_open=True, ordered=True), "std": POSITIVE,
    },
    TrainConfig: {
        "seed": Range(0, 2**31 - 1), "epochs": AT_LEAST_1, "ids_per_batch": AT_LEAST_1,
        "images_per_id": AT_LEAST_1, "lr": POSITIVE, "stem_lr_scale": NONNEG, "agent_lr_scale": NONNEG,
        "momentum": Range(0, 1, hi_open=True), "weight_decay": NONNEG, "warmup_epochs": NONNEG, "warmup_factor": Range(0, 1, lo_open=True),
        "min_lr": NONNEG, "log_every": NONNEG, "max_steps_per_epoch": NONNEG, "threads": NONNEG,
    },
    EvalDatasetConfig: {"name": safe_name, "query_camid": NONNEG, "gallery_camid": NONNEG},
    EvaluateConfig: {
        "batch_size": AT_LEAST_1, "max_rank": AT_LEAST_1, "chunk_mb": AT_LEAST_1, "k1": AT_LEAST_1,
        "k2": AT_LEAST_1, "lambda_value": PROB, "retrieval_queries": NONNEG, "mask_examples": NONNEG,
        "fep_images": NONNEG,
    },
    FPCConfig: {"keep_rate": Range(0, 1, lo_open=True), "prune_blocks": NONNEG, "neighbours": AT_LEAST_1,
                "shortlist": AT_LEAST_1, "alpha": PROB, "sinkhorn_iters": AT_LEAST_1, "sinkhorn_eps": POSITIVE},
    CpaColConfig: {"attn_blocks": Range(0, nonempty=True), "residual_weights": Range(0, nonempty=True),
                   "attn_ramp_epochs": NONNEG, "num_stripes": AT_LEAST_1, "inter_weight": NONNEG,
                   "intra_weight": NONNEG, "corr_channels": AT_LEAST_1, "stage2_epochs": NONNEG,
                   "stage2_lr_scale": POSITIVE},
    FPCEvalConfig: {"neighbours": AT_LEAST_1, "shortlist": AT_LEAST_1},
    CpaColEvalConfig: {"top_k": AT_LEAST_1, "weight": NONNEG, "weight_sweep": NONNEG},
    ReportConfig: {"num_retrieval_queries": NONNEG, "num_mask_examples": NONNEG},
    OccludeConfig: {"area": Range(0, 1, lo_open=True, ordered=True), "seed": Range(0, 2**31 - 1),
                    "suffix": safe_suffix, "examples": NONNEG, "val_ids": NONNEG,
                    "tau_grid": Range(0, 1, hi_open=True)},
}


def check_value(cls: type, name: str, value: Any, key: str) -> None:
    """Apply the :data:`CHECKS` entry of field ``name`` of dataclass ``cls`` (if any) to ``value``.

    Raises:
        ConfigError: naming ``key``, the value and the allowed range / naming rule.
    """
    check = CHECKS.get(cls, {}).get(name)
    if check is not None:
        check(value, key)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return _coerce(value, a, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type[T], raw: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, strictly.

    Raises:
        ConfigError: on an unknown key (with the list of allowed ones), a missing required key, a
            value whose type does not match the field annotation, or a value that fails the field's
            :data:`CHECKS` entry (range, safe name).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; allowed: {sorted(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name in raw:
            kwargs[name] = _coerce(raw[name], hints[name], key)
            check_value(cls, name, kwargs[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    return cls(**kwargs)


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read a params YAML file into a dict.

    Raises:
        ConfigError: the file is missing, is not valid YAML (names the line and column), or is not
            a YAML mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root)")
    try:
        with path.open() as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where} ({problem}); fix the syntax there "
                          f"(indentation, a missing ':' or an unclosed quote/bracket)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return data


def load_section(path: str | Path, section: str, cls: type[T]) -> T:
    """Load section ``section`` of params file ``path`` as a ``cls`` instance (strict).

    Raises:
        ConfigError: missing file/section, unknown or mistyped key (the message names the key).
    """
    params = read_params(path)
    if section not in params:
        raise ConfigError(f"{path}: section '{section}' is missing; add it (see the repository's "
                          f"params.yaml for its keys)")
    return from_dict(cls, params[section] or {}, section)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (tuples become lists), e.g. to store in a checkpoint."""
    def conv(v: Any) -> Any:
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(dataclasses.asdict(cfg))


# --------------------------------------------------------------------------------------------
# Profiles: partial params files merged over params.yaml (CI profile, paper configuration)
# --------------------------------------------------------------------------------------------
SECTIONS: dict[str, type] = {
    "data": DataConfig, "parse": ParseConfig, "occlusion": OcclusionConfig, "train": TrainConfig,
    "evaluate": EvaluateConfig, "report": ReportConfig, "occlude": OccludeConfig, "occluder": OccluderConfig,
}


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in recursively; ``over`` wins, lists are replaced whole."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _merge_into(node: Any, over: Mapping[str, Any]) -> None:
    """Recursive in-place merge into a ruamel round-trip mapping (keeps its comments)."""
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(node.get(key), Mapping):
            _merge_into(node[key], value)
        else:
            node[key] = value


def apply_profile(params_path: str | Path, profile_path: str | Path) -> dict[str, Any]:
    """Merge the partial params file ``profile_path`` over ``params_path`` and write it back.

    Every section is validated (:func:`from_dict`) before anything is written, so a typo in a
    profile fails with the key named and leaves params.yaml untouched. Comments in params.yaml are
    kept (ruamel.yaml round-trip, the YAML library DVC itself uses).

    Returns:
        the merged params as plain dicts.

    Raises:
        ConfigError: missing files, or an unknown/mistyped key in the merged result.
    """
    import io as _io

    from ruamel.yaml import YAML

    from .io import write_text

    profile = read_params(profile_path)
    unknown = sorted(set(profile) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{profile_path}: unknown section(s) {unknown}; allowed: {sorted(SECTIONS)}")
    merged = deep_merge(read_params(params_path), profile)
    for name, cls in SECTIONS.items():
        if name in merged:
            from_dict(cls, merged[name] or {}, name)
    rt = YAML()  # round-trip: keeps comments and key order
    doc = rt.load(Path(params_path).read_text())
    _merge_into(doc, profile)
    buf = _io.StringIO()
    rt.dump(doc, buf)
    write_text(params_path, buf.getvalue())
    return merged
