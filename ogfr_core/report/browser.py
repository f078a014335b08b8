"""Check the HTML report in a real browser: headless Chromium loads the page, and a script measures
whether every figure decoded and every table fits the window; optionally a full-page screenshot.

Manual check (Debian/Ubuntu: ``apt-get install chromium``)::

    python -m ogfr_core.report.browser reports/report.html --screenshot /tmp/report.png

prints one line per problem and exits 1 if there is one. The screenshot shows dataset crops (the
report embeds them): look at it, never commit it.

How: the page is copied to a temporary file with a small script appended; after the ``load`` event
the script writes its measurements as JSON into a ``<pre>`` element, and ``chromium --headless
--dump-dom`` prints the DOM (Chromium's documented headless switches). Nothing of the report is
changed.
"""
from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_PROBE_ID = "ogfr-browser-check"
_PROBE = """<script>
window.addEventListener('load', () => {
  const vw = document.documentElement.clientWidth;
  const images = [...document.images].map(i => ({alt: (i.alt || '').slice(0, 80), complete: i.complete,
    natural_width: i.naturalWidth, natural_height: i.naturalHeight, right: i.getBoundingClientRect().right}));
  const tables = [...document.querySelectorAll('table')].map((t, k) => ({index: k,
    first_cell: (t.rows[0] && t.rows[0].cells[0] ? t.rows[0].cells[0].textContent : '').slice(0, 40),
    right: t.getBoundingClientRect().right}));
  const out = {viewport_width: vw, scroll_width: document.documentElement.scrollWidth,
    page_height: document.documentElement.scrollHeight, images: images, tables: tables};
  const pre = document.createElement('pre');
  pre.id = '%s';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>""" % _PROBE_ID


class BrowserCheckError(UserError, RuntimeError):
    """Chromium is missing, failed, or the page gave no measurements."""


@dataclass
class PageCheck:
    """What Chromium measured on the page.

    Attributes:
        viewport_width: window width in CSS pixels; ``scroll_width``: the document's width (wider =
            a horizontal scroll bar); ``page_height``: full page height (CSS pixels).
        images: per ``<img>``: ``alt``, ``complete``, ``natural_width``/``natural_height`` (0 = not
            decoded), ``right`` (right edge, CSS pixels).
        tables: per ``<table>``: ``index``, ``first_cell``, ``right`` (right edge, CSS pixels).
    """

    viewport_width: int
    scroll_width: int
    page_height: int
    images: list[dict] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)

    def problems(self) -> list[str]:
        """One line per figure that did not load or does not fit, per table wider than the window,
        and for a page wider than the window; empty when the page is fine."""
        out = []
        for i, img in enumerate(self.images):
            if not img["complete"] or img["natural_width"] <= 0:
                out.append(f"figure {i + 1} ({img['alt']!r}) did not load")
            elif img["right"] > self.viewport_width + 0.5:
                out.append(f"figure {i + 1} ({img['alt']!r}) ends at x={img['right']:.0f} px, "
                           f"beyond the {self.viewport_width} px window")
        for t in self.tables:
            if t["right"] > self.viewport_width + 0.5:
                out.append(f"table {t['index'] + 1} (first cell {t['first_cell']!r}) ends at "
                           f"x={t['right']:.0f} px, beyond the {self.viewport_width} px window")
        if self.scroll_width > self.viewport_width:
            out.append(f"the page is {self.scroll_width} px wide, wider than the {self.viewport_width} px window")
        return out


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable on ``PATH`` (``chromium`` first), or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(binary: str, args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    # --no-sandbox: Chromium refuses to run as root with its sandbox (containers, CI)
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-dev-shm-usage", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrowserCheckError(f"{binary} could not run: {exc}") from exc
    if proc.returncode != 0:
        raise BrowserCheckError(f"{binary} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc


def check_page(html_path: str | Path, width: int = 1280, screenshot: str | Path | None = None,
               chromium: str | None = None, timeout_s: float = 120) -> PageCheck:
    """Load ``html_path`` in headless Chromium at ``width`` CSS pixels and measure it.

    Args:
        html_path: the page (e.g. ``reports/report.html``).
        width: window width, CSS pixels.
        screenshot: write a full-page PNG there (a second Chromium run, window as tall as the page).
        chromium: the executable; default :func:`find_chromium`.
        timeout_s: per Chromium run.

    Raises:
        FileNotFoundError: ``html_path`` is missing.
        BrowserCheckError: no Chromium, Chromium failed, or it returned no measurements.
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"{html_path}: no such page (run `python -m stages.report`)")
    binary = chromium or find_chromium()
    if binary is None:
        raise BrowserCheckError(f"no Chromium found on PATH (tried {', '.join(CHROMIUM_NAMES)}); "
                                "install it, e.g. `apt-get install chromium`")
    page = html_path.read_text(encoding="utf-8")
    probed = page.replace("</body>", _PROBE + "</body>") if "</body>" in page else page + _PROBE
    with tempfile.TemporaryDirectory() as tmp:
        probe_file = Path(tmp) / html_path.name  # same name, so relative links would resolve alike
        probe_file.write_text(probed, encoding="utf-8")
        dom = _chromium(binary, [f"--window-size={width},900", "--virtual-time-budget=10000",
                                 "--dump-dom", probe_file.as_uri()], timeout_s).stdout
        m = re.search(rf'<pre id="{_PROBE_ID}">(.*?)</pre>', dom, re.S)
        if not m:
            raise BrowserCheckError(f"{binary} loaded {html_path} but the measuring script did not run")
        check = PageCheck(**json.loads(html.unescape(m.group(1))))
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            _chromium(binary, [f"--window-size={width},{max(check.page_height, 200)}",
                               "--virtual-time-budget=10000", f"--screenshot={shot}", html_path.as_uri()],
                      timeout_s)
            if not shot.is_file():
                raise BrowserCheckError(f"{binary} wrote no screenshot to {shot}")
    return check


def main(argv: list[str] | None = None) -> int:
    """``python -m ogfr_core.report.browser PAGE [--width W] [--screenshot PNG]``: exit 1 on a problem."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", default="reports/report.html")
    parser.add_argument("--width", type=int, default=1280, help="window width, CSS pixels (default 1280)")
    parser.add_argument("--screenshot", help="write a full-page PNG here (shows dataset crops: do not commit it)")
    args = parser.parse_args(argv)
    try:
        check = check_page(args.page, args.width, args.screenshot)
    except (FileNotFoundError, BrowserCheckError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    loaded = sum(1 for i in check.images if i["complete"] and i["natural_width"] > 0)
    print(f"{args.page}: {loaded}/{len(check.images)} figures loaded, {len(check.tables)} tables, page "
          f"{check.scroll_width}×{check.page_height} px in a {check.viewport_width} px window"
          + (f"; screenshot {args.screenshot}" if args.screenshot else ""))
    problems = check.problems()
    for line in problems:
        print(f"problem: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
