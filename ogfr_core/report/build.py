"""Assemble ``reports/report.md`` and a self-contained ``reports/report.html`` from pipeline outputs.

Three steps, one module each: :mod:`.sources` reads every input (files, ``dvc exp show``) into plain
data, :mod:`.sections` turns that data into sections, :mod:`.render` writes Markdown and HTML. Nothing
is typed by hand except the paper's published numbers (:mod:`.paper`). Only ``reports/metrics.json``
is required (``dvc repro evaluate``); the table of inputs is in :mod:`.sources`.
"""
from __future__ import annotations

from pathlib import Path

from ..io import write_text
from .render import Section, render_html, render_markdown
from .sections import (ConfigRefs, cmc_section, erasing_masks_section, headline_section, method_section,
                       occluded_benchmark_section, occlusion_types_section, parsing_section, results_section,
                       retrievals_section, runs_appendix, setup_section, table_iv_section, training_curves_section,
                       validation_section, z_accuracy_section)
from .sections.common import OCC_SUFFIX
from .sources import ReportInputs, ReportPaths, distinct_runs, read_inputs
from .verdicts import claims_section


def report_sections(inputs: ReportInputs, dataset: str, fig_dir: Path, crop_dir: Path,
                    num_retrieval_queries: int = 6, num_mask_examples: int = 8,
                    paths: ReportPaths = ReportPaths()) -> list[Section]:
    """The report's sections in reading order, from ``inputs`` (figures drawn into ``fig_dir`` /
    ``crop_dir``): the first screen, the checkout's run, the comparisons over runs, the verdicts, the
    other stages' outputs, then the appendices (every run; the long configuration strings the tables
    refer to as ``C<n>``)."""
    metrics, runs, note = inputs.metrics, inputs.all_runs, inputs.experiments_note
    occ = dataset + OCC_SUFFIX
    # the recorded seed runs first, so that a record equal to the checkout's own run keeps its t-<m>-s<n> name
    claim_runs = distinct_runs(list(inputs.recorded) + list(inputs.experiments))
    refs = ConfigRefs()
    sections = [
        headline_section(metrics, claim_runs, dataset, inputs.reference, inputs.fep_probe),
        setup_section(metrics, inputs.parse_backend, inputs.parse_backend_source),
        results_section(metrics),
        method_section(runs, dataset, inputs.bench, refs, note),
        table_iv_section(runs, note, dataset, refs),
        validation_section(runs, dataset, refs),
        claims_section(claim_runs, dataset, occ, inputs.fep_probe, inputs.reference),
        training_curves_section(inputs.live, fig_dir, paths.dvclive),
        cmc_section(inputs.cmc, fig_dir, paths.cmc),
        occlusion_types_section(inputs.occlusion, inputs.occlusion_missing, fig_dir),
        erasing_masks_section(metrics, inputs.masks, crop_dir, num_mask_examples, paths.masks),
        occluded_benchmark_section(inputs.occlude_summary, inputs.occlude_examples, paths.occlude_summary),
        z_accuracy_section(inputs.z_accuracy),
        retrievals_section(inputs.retrievals, crop_dir, num_retrieval_queries, paths.retrievals),
        parsing_section(inputs.parse_overlay, inputs.parse_backend, paths.parse_overlay),
    ]
    sections.append(runs_appendix(runs, dataset, refs))
    return sections + [refs.section()]  # last: every reference handed out above


def build_report(run_dir: Path, dataset: str, parse_backend: str = "", num_retrieval_queries: int = 6,
                 num_mask_examples: int = 8, experiments: tuple[list[dict], str] | None = None,
                 paths: ReportPaths = ReportPaths()) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``figures/*.png`` and ``crops/*.png`` under ``run_dir/reports``.

    ``figures/`` holds plots without dataset pixels (fit for git); ``crops/`` and the HTML page
    (which embeds every figure) show dataset crops, so DVC caches them and git never sees them:
    CUHK03 and the other benchmarks must not be republished.

    Args:
        run_dir: the repository root of the run (all inputs are read relative to it).
        dataset: ``data.name`` (index/occlusion parquet names).
        parse_backend: ``parse.backend`` from params, used when ``reports/parse/summary.json`` has none.
        num_retrieval_queries, num_mask_examples: figure sizes (``report:`` params).
        experiments: ``(runs, note)`` as :func:`~.sources.load_experiments` returns; None = the checkout's
            run and the committed records only (:func:`~.sources.read_inputs`).
        paths: input/output locations.

    Returns:
        ``{"markdown": path, "html": path, "figures": [paths]}``.

    Raises:
        MissingMetricsError: ``reports/metrics.json`` is missing (run ``dvc repro evaluate``).
    """
    run_dir = Path(run_dir)
    inputs = read_inputs(run_dir, dataset, parse_backend, paths, experiments)
    out_dir = Path(paths.out_dir) if Path(paths.out_dir).is_absolute() else run_dir / paths.out_dir
    fig_dir = out_dir / "figures"  # no dataset pixels: committed to git
    crop_dir = out_dir / "crops"  # figures showing dataset crops: DVC-cached only (CUHK03 licence)
    sections = report_sections(inputs, dataset, fig_dir, crop_dir, num_retrieval_queries, num_mask_examples, paths)
    title = f"OGFR pipeline report — {inputs.metrics.get('trained_on', dataset)}"
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text(md_path, render_markdown(title, sections, out_dir))
    write_text(html_path, render_html(title, sections))
    figs = [b[1] for s in sections for b in s.blocks if b[0] == "fig"]
    return {"markdown": md_path, "html": html_path, "figures": figs}
