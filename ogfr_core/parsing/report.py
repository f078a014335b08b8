"""The parse stage's report outputs: the overlay figure's crop selection and the summary JSON."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.images import ImageReadError
from ..io import write_json
from .cache import decode_label_map, read_parsing
from .driver import ParseSummary, read_rgb
from .overlay import overlay_grid

log = logging.getLogger(__name__)


def pick_examples(index: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` index rows spread evenly over the key-sorted index (deterministic, any split)."""
    rows = index.drop_duplicates("key").sort_values("key").reset_index(drop=True)
    if len(rows) <= n:
        return rows
    return rows.iloc[np.linspace(0, len(rows) - 1, n).round().astype(int)].reset_index(drop=True)


def write_parse_report(index: pd.DataFrame, root: str | Path, parse_dir: str | Path, summary: ParseSummary,
                       report_dir: str | Path, n_examples: int = 32) -> None:
    """Write ``report_dir/summary.json`` (:meth:`ParseSummary.result_dict`: no timings or cache
    counts, so it depends only on the inputs) and ``report_dir/overlay.png`` (``n_examples`` crops
    with their part overlay; undecodable crops, and crops that cannot be read any more, are left out,
    the latter with a warning)."""
    report_dir = Path(report_dir)
    write_json(report_dir / "summary.json", summary.result_dict())
    parsing = read_parsing(parse_dir, summary.cache_id).set_index("key")
    examples = pick_examples(index[index["key"].isin(parsing.index)], n_examples)
    images, maps, titles = [], [], []
    for key, path, split in zip(examples["key"], examples["path"], examples.get("split", [""] * len(examples))):
        row = parsing.loc[key]
        if row["status"] == "unreadable":
            continue
        try:
            image = read_rgb(Path(root) / path)
        except ImageReadError as err:
            log.warning("parse overlay: left out %s", err)
            continue
        lm = decode_label_map(row["label_map"])
        images.append(image)
        maps.append(lm)
        parts = int((np.bincount(lm.ravel(), minlength=9)[1:] > 0).sum())
        titles.append(f"{split} · {parts} parts" if row["person_found"] else f"{split} · no person")
    overlay_grid(images, maps, titles, report_dir / "overlay.png",
                 suptitle=f"{summary.backend} parsing ({summary.model_id}), coverage {summary.coverage:.1%}")
