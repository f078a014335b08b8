"""Checks that every training image has the labels the model needs (parsing map and occlusion z)."""
from __future__ import annotations

from typing import Iterable

from ..data.dataset import MissingLabelsError as _DatasetMissingLabels


class MissingLabelsError(_DatasetMissingLabels):
    """Some training images have no parsing label map or no occlusion label; the message names
    how many, a few keys, and the stage to re-run. A subclass of the data layer's error of the same
    name, so one ``except ogfr_core.data.MissingLabelsError`` catches both."""

    def __init__(self, message: str) -> None:  # noqa: D107 — plain message, unlike the parent's fields
        ValueError.__init__(self, message)


def check_training_labels(keys: Iterable[str], parsed_keys: Iterable[str], occlusion_keys: Iterable[str],
                          dataset: str = "", show: int = 5) -> None:
    """Raise :class:`MissingLabelsError` if any training image key lacks a parsing label map or an
    occlusion row, naming how many, a few keys, and which stage to re-run.

    Example::

        >>> check_training_labels(["a", "b"], ["a", "b"], ["a", "b"])
    """
    keys = list(keys)
    parsed, occluded = set(parsed_keys), set(occlusion_keys)
    problems = []
    no_parse = [k for k in keys if k not in parsed]
    if no_parse:
        problems.append(f"{len(no_parse)} of {len(keys)} training images have no parsing label map "
                        f"(e.g. {no_parse[:show]}): run `dvc repro parse`")
    no_occ = [k for k in keys if k not in occluded]
    if no_occ:
        problems.append(f"{len(no_occ)} of {len(keys)} training images have no occlusion label "
                        f"(e.g. {no_occ[:show]}): run `dvc repro occlusion`")
    if problems:
        where = f" for dataset '{dataset}'" if dataset else ""
        raise MissingLabelsError(f"missing labels{where}:\n  " + "\n  ".join(problems))
