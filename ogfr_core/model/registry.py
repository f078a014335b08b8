"""Registry of re-ID methods: ``train.model.method`` → the :class:`~ogfr_core.model.base.ReIDMethod`
subclass that implements it (a dict from name to class, as fast-reid's registries).

Methods register themselves on import (``@register_method("ogfr")``); :mod:`ogfr_core.model` imports
every method module, so :data:`METHODS` is complete once the package is imported.

>>> from ogfr_core.model import METHODS
>>> sorted(METHODS)[:2]
['baseline', 'ogfr']
"""
from __future__ import annotations

from typing import Callable, TypeVar

from ..errors import UserError
from .base import ReIDMethod

METHODS: dict[str, type[ReIDMethod]] = {}
T = TypeVar("T", bound=type)


class ModelConfigError(UserError, ValueError):
    """An unknown method or an inconsistent combination of model switches."""


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`ReIDMethod` subclass under ``name``.

    Raises:
        ValueError: ``name`` is already registered to another class.
    """
    def deco(cls: T) -> T:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered to {METHODS[name].__name__}")
        cls.method_name = name
        METHODS[name] = cls
        return cls
    return deco


def build_model(cfg, num_classes: int, num_cameras: int, img_size: tuple[int, int],
                load_weights: bool = True) -> ReIDMethod:
    """Build ``train.model.method`` from the ``train.model`` params ``cfg``.

    Args:
        cfg: :class:`~ogfr_core.config.ModelConfig`.
        num_classes: training identities; num_cameras: training cameras; img_size: ``(H, W)`` pixels.
        load_weights: load the configured pretrained weights (False when rebuilding from a checkpoint).

    Raises:
        ModelConfigError: an unknown method (the message lists the registered ones) or inconsistent switches.
    """
    if cfg.method not in METHODS:
        raise ModelConfigError(f"train.model.method: unknown method {cfg.method!r}; registered methods: "
                               f"{', '.join(sorted(METHODS))}")
    return METHODS[cfg.method](cfg, num_classes, num_cameras, img_size, load_weights=load_weights)
