"""The HTML report in a real browser (headless Chromium): figures decode, tables fit the window.

Runs where Chromium is installed (Debian: ``apt-get install chromium``), skipped elsewhere; the
same check by hand: ``python -m ogfr_core.report.browser reports/report.html --screenshot x.png``.
"""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
from test_report import DATASET, make_run

from ogfr_core.report import build_report, parse_experiments
from ogfr_core.report.browser import check_page, find_chromium, main

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed (apt-get install chromium)")]


def test_report_figures_load_and_tables_fit(tmp_path, shared_root):
    from test_report import EXPERIMENTS

    run = make_run(tmp_path / "run", shared_root)
    out = build_report(run, DATASET, "mediapipe", num_retrieval_queries=3, num_mask_examples=4,
                       experiments=(parse_experiments(EXPERIMENTS), ""))
    shot = tmp_path / "shot.png"  # shows dataset crops: stays in tmp
    check = check_page(out["html"], width=1280, screenshot=shot)
    assert len(check.images) == len(out["figures"]) == 7  # make_run has every figure, the occlude examples included
    assert all(i["complete"] and i["natural_width"] > 0 for i in check.images)
    assert len(check.tables) >= 4 and check.problems() == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width == 1280 and im.height == check.page_height > 2000  # the whole page


def test_a_broken_figure_and_a_wide_table_are_reported(tmp_path, capsys):
    """The check can fail: a PNG that does not decode, and a table wider than the window."""
    png_head = base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode()
    cells = "".join(f"<td>{'x' * 40}</td>" for _ in range(40))
    page = tmp_path / "report.html"
    page.write_text(f"<!doctype html><html><body><img src='data:image/png;base64,{png_head}' alt='broken'>"
                    f"<table><tr><td>wide</td>{cells}</tr></table></body></html>")
    problems = check_page(page, width=800).problems()
    assert any("figure 1 ('broken') did not load" in p for p in problems)
    assert any(p.startswith("table 1 (first cell 'wide')") for p in problems)
    assert main([str(page), "--width", "800"]) == 1
    assert "problem: figure 1" in capsys.readouterr().out
    assert main([str(Path(tmp_path) / "missing.html")]) == 1
