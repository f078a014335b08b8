"""The pipeline report: tables and figures from the stages' outputs (``reports/report.md`` / ``.html``)."""
from .build import MissingMetricsError, ReportPaths, Section, build_report, load_experiments, parse_experiments

__all__ = ["MissingMetricsError", "ReportPaths", "Section", "build_report", "load_experiments",
           "parse_experiments"]
