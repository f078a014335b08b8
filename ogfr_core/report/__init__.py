"""The pipeline report: tables and figures from the stages' outputs (``reports/report.md`` / ``.html``).

:mod:`.sources` reads, :mod:`.sections` writes the sections, :mod:`.render` renders them,
:mod:`.build` puts the three together (:func:`build_report`, what ``stages/report.py`` calls).
"""
from .build import build_report
from .render import Section
from .sources import MissingMetricsError, ReportPaths, load_experiments, parse_experiments

__all__ = ["MissingMetricsError", "ReportPaths", "Section", "build_report", "load_experiments",
           "parse_experiments"]
