"""Backend registry: ``parse.backend`` name → :class:`~ogfr_core.parsing.base.PartParser` class."""
from __future__ import annotations

from ..config import ParseConfig
from .base import PartParser
from .mediapipe_backend import MediaPipeParser
from .pifpaf_backend import PifPafMaskRCNNParser
from .torchvision_backend import TorchvisionParser

BACKENDS: dict[str, type[PartParser]] = {
    "mediapipe": MediaPipeParser,
    "pifpaf_maskrcnn": PifPafMaskRCNNParser,
    "torchvision": TorchvisionParser,
}


def build_parser(cfg: ParseConfig) -> PartParser:
    """Instantiate the backend named by ``cfg.backend`` (cheap: models load on the first parse).

    Raises:
        KeyError: unknown backend name (lists the registered ones).
    """
    if cfg.backend not in BACKENDS:
        raise KeyError(f"unknown parse.backend '{cfg.backend}'; registered: {sorted(BACKENDS)}")
    return BACKENDS[cfg.backend](cfg)
