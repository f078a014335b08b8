"""What every registered re-ID method implements (OGFR, the baseline, the peers).

A method is one ``nn.Module`` subclass of :class:`ReIDMethod`, registered by name
(:func:`ogfr_core.model.registry.register_method`) so that ``train.model.method`` selects it. The
training loop, the checkpoints, the evaluation and the CLI only use this interface, so no
method-specific branch exists outside the method's own module:

======================================  ============================================================
``forward(batch, generator)``           training forward on a prepared batch (``image``, ``image_occ``,
                                        ``z``, ``z_occ``, ``camid``, ``label``, ``label_map``,
                                        ``label_map_occ``) → a dict of outputs
``loss(out, batch, cfg)``               the method's training objective → named scalar terms + ``total``
``extract(images, z, camids)``          inference: ``{"global": [B, D], "parts": [B, K, D],
                                        "visibility": [B, K] bool}`` (DESIGN.md; K = 0 if no parts);
                                        a global-only method implements ``global_feature(images,
                                        camids)`` instead and inherits ``extract``
``erasing_mask(images, z, camids)``     Fig. 7's retain probability ``[B, Hp, Wp]``, or None
``on_epoch_start(epoch)``               per-epoch bookkeeping (OGFR: refresh the frozen p^b network)
``wants_training_set_pass()``           whether the training stage should run
``initialize_from_training_set(b)``     once before a fresh run: a pass over the training set (FED's
                                        memory initialisation); neither by default
``trainable_parameters()``              what the optimiser updates
``count_parameters()``                  the model's size (frozen training-only copies excluded)
``training_phases(train_cfg)``          the training run's phases (:class:`TrainingPhase`; one by
                                        default, CpaCol: stage I then stage II)
``set_phase(name)``                     switch to a phase (what is frozen) before its Trainer is built
``test_time_extras(evaluate_cfg, kind)`` optional test-time scorers the evaluate stage runs when an
                                        ``evaluate`` option of the method is on (FPC consolidation,
                                        CpaCol re-scoring); see :mod:`ogfr_core.evaluation.extras`
======================================  ============================================================

Attributes every method sets: ``cfg`` (``train.model``), ``num_classes``, ``img_size`` ``(H, W)``,
``encoder`` (the shared :class:`~ogfr_core.model.oa_vit.OAViT` backbone, from
:func:`~ogfr_core.model.backbone.build_encoder`), ``init_warning`` ("" or why the backbone is random).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block (BN running statistics, no dropout), its previous
    train/eval mode restored after, also when the block raises."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@dataclass(frozen=True)
class TrainingPhase:
    """One phase of a training run: its ``name`` (a sub-folder of the model folder for all but the
    last phase; "" for a single-phase method), ``epochs``, base ``lr`` and ``warmup_epochs``. The
    training stage builds a fresh Trainer (optimiser, schedule, DDP wrapper) per phase, after
    :meth:`ReIDMethod.set_phase`."""

    name: str
    epochs: int
    lr: float
    warmup_epochs: int


class ReIDMethod(nn.Module):
    """Base class of the registered methods (see the module docstring)."""

    #: the registry name (``train.model.method``), set by :func:`~ogfr_core.model.registry.register_method`
    method_name: str = ""

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def loss(self, out: dict[str, Any], batch: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
        """Named loss terms of ``out`` (``LossConfig`` ``cfg``) with their weighted sum as ``total``."""
        raise NotImplementedError

    @torch.no_grad()
    def extract(self, images: torch.Tensor, z: torch.Tensor, camids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference of a global-only method (no part features): ``{"global": [B, D'] =
        :meth:`global_feature`, "parts": [B, 0, D'], "visibility": [B, 0] bool}``, computed in eval
        mode (restored after). ``z`` (occlusion labels ``[B, 4]``) is unused here. Methods with part
        features (OGFR) override this."""
        with eval_mode(self):
            g = self.global_feature(images, camids)  # [B, D']
        b = images.shape[0]
        return {"global": g, "parts": g.new_zeros(b, 0, g.shape[1]),
                "visibility": torch.zeros(b, 0, dtype=torch.bool, device=images.device)}

    def global_feature(self, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """The inference feature ``[B, D']`` of ``images`` ``[B, 3, H, W]`` (``camids`` ``[B]`` long),
        for :meth:`extract` (which calls it in eval mode without gradients)."""
        raise NotImplementedError

    @torch.no_grad()
    def erasing_mask(self, images: torch.Tensor, z: torch.Tensor, camids: torch.Tensor) -> torch.Tensor | None:
        """Retain probability of a learned erasing agent ``[B, Hp, Wp]``; None without one."""
        return None

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the training loop before epoch ``epoch`` (0-based); nothing by default."""

    def wants_training_set_pass(self) -> bool:
        """Whether the training stage calls :meth:`initialize_from_training_set` before the first epoch
        of a fresh (not resumed) run; False by default."""
        return False

    def initialize_from_training_set(self, batches) -> None:
        """One pass over the training set (``batches``: dicts with ``image [B, 3, H, W]`` (test
        transform), ``camid [B]``, ``label [B]``, on the model's device) before training; nothing by
        default."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (``requires_grad``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def count_parameters(self) -> int:
        """Number of parameters of the model (training-only frozen copies excluded by overrides)."""
        return sum(p.numel() for p in self.parameters())

    def training_phases(self, cfg) -> list[TrainingPhase]:
        """Phases of a training run with ``train`` params ``cfg``: one phase by default."""
        return [TrainingPhase("", cfg.epochs, cfg.lr, cfg.warmup_epochs)]

    def set_phase(self, name: str) -> None:
        """Prepare phase ``name`` of :meth:`training_phases` (freeze what it does not train); no-op."""

    def test_time_extras(self, cfg, kind: str = "test") -> list:
        """Test-time scorers (:class:`~ogfr_core.evaluation.extras.TestTimeExtra`) requested by the
        ``evaluate`` params ``cfg`` for this method, for a ``kind`` = ``test`` | ``val`` set; none by default."""
        return []

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch-token grid ``(Hp, Wp)`` of the encoder."""
        return self.encoder.grid_size

    def patch_foreground(self, label_map: torch.Tensor) -> torch.Tensor:
        """Fraction of non-background pixels in each patch's cell: label map ``[B, h, w]`` (resized
        nearest to the input size if needed) → ``[B, N]`` in [0, 1]."""
        import torch.nn.functional as F

        fg = (label_map > 0).float()[:, None]  # [B, 1, h, w]
        if tuple(fg.shape[-2:]) != self.img_size:
            fg = F.interpolate(fg, size=self.img_size, mode="nearest")
        e = self.encoder
        pooled = F.avg_pool2d(fg, kernel_size=e.patch_size, stride=e.stride)  # [B, 1, Hp, Wp]
        return pooled.flatten(1)
