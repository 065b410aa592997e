"""The HTML report of a risk model: :func:`report_data` aggregates the numbers behind every chart,
:func:`write_report` writes them as one self-contained, interactive HTML file (plotly.js inlined, offline)."""

from factor_engine.report.data import BIAS_COLUMNS, CHART_NAMES, bias_statistics, report_data, sample_indices
from factor_engine.report.html import render_html, write_report

__all__ = [
    "BIAS_COLUMNS",
    "CHART_NAMES",
    "bias_statistics",
    "render_html",
    "report_data",
    "sample_indices",
    "write_report",
]
