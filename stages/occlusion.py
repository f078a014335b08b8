"""Stage `occlusion`: occlusion labels z and type ids from the parsing label maps (OGFR Eq. 1–2, or the
``hidden_fraction`` / ``covered`` rules: ``occlusion.rule``).

Reads ``data/parsing/<data.name>/`` (active parse configuration), ``data/index/<data.name>.parquet``
(for the split and the image paths), the occluder segmenter of stage ``occluder`` (its mask on every
image gives the ``occluder_*`` shares the ``covered`` rule reads; skipped when the rule does not read it
and the weights are absent) and params ``occlusion`` / ``occluder.threshold``. Fails (count, examples, the stage to rerun) unless the parsing covers every
indexed image — never a partial table. Writes ``data/occlusion/<data.name>.parquet``
(key, z_head … z_legs, occ_type, count_head … count_legs, hidden_head … hidden_legs,
occluder_head … occluder_legs, status),
``reports/occlusion/summary.json`` and ``reports/occlusion/types.png``.
Run from the repository root: ``python -m stages.occlusion [--params params.yaml]``.
"""
from __future__ import annotations

from pathlib import Path

from ogfr_core.config import DataConfig, OcclusionConfig, ParseConfig, load_section
from ogfr_core.data.index import dataset_root, read_index
from ogfr_core.io import write_json, write_parquet
from ogfr_core.occlusion import rule_from_config
from ogfr_core.occlusion.figures import plot_type_histogram
from ogfr_core.occlusion.learned import occluder_masker
from ogfr_core.occlusion.table import occlusion_summary, segmentation_table, type_counts_by_split
from ogfr_core.parsing import read_parsing
from ogfr_core.parsing.cache import check_coverage
from ogfr_core.runtime import run_stage, setup_logging, stage_args



def main(params_path: str = "params.yaml") -> None:
    log = setup_logging()
    data = load_section(params_path, "data", DataConfig)
    rule = rule_from_config(load_section(params_path, "occlusion", OcclusionConfig))
    index_path = Path("data/index") / f"{data.name}.parquet"
    index = read_index(index_path)[["key", "path", "split"]]  # names `dvc repro index` if absent
    parse = load_section(params_path, "parse", ParseConfig)
    parse_dir = Path("data/parsing") / data.name
    check_coverage(parse_dir, index["key"], paths=index["path"])  # never a partial table: count + `dvc repro parse`
    parsing = read_parsing(parse_dir, columns=["label_map", "amodal_map", "status"])
    parsing = parsing[parsing["key"].isin(set(index["key"]))]
    masker = occluder_masker(params_path, rule, (parse.label_height, parse.label_width))
    seg = masker(index, dataset_root(data, Path("."))) if masker else None
    table = segmentation_table(parsing, rule, seg)
    write_parquet(Path("data/occlusion") / f"{data.name}.parquet", table)
    write_json("reports/occlusion/summary.json", occlusion_summary(table, index, rule))
    plot_type_histogram(type_counts_by_split(table, index), "reports/occlusion/types.png",
                        title=f"{data.name}: occlusion types per split ({rule.describe()})")
    log.info("occlusion: %d images, %.1f%% holistic", len(table), 100 * float((table["occ_type"] == 0).mean()))


def cli(argv: list[str] | None = None) -> None:
    """``python -m stages.occlusion [--params FILE]``: run :func:`main` with that params file.

    Raises:
        SystemExit: code 2 for an unknown argument (argparse's usage line).
    """
    main(stage_args(__doc__, argv).params)


if __name__ == "__main__":
    run_stage(cli)
