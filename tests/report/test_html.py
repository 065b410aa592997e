"""write_report: one self-contained HTML file holding plotly.js once, every chart div and the report data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from report_helpers import chart_divs, embedded_data

from factor_engine.model import RiskModel
from factor_engine.report import CHART_NAMES, bias_statistics, report_data, write_report
from factor_engine.report.html import plotly_js

OPTIONAL = {"bias-statistics", "portfolio-exposures", "portfolio-risk"}


@pytest.fixture(scope="module")
def full_report(
    report_model: RiskModel,
    report_panel: pl.DataFrame,
    weights: dict[str, dict[str, float]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, pl.DataFrame]:
    bias = bias_statistics(report_model, report_panel, n_portfolios=10)
    out = tmp_path_factory.mktemp("report") / "nested" / "report.html"
    written = write_report(
        report_model, out, portfolio=weights["portfolio"], benchmark=weights["benchmark"], bias=bias, title="T <1>"
    )
    assert written == out
    return out, bias


def test_report_is_self_contained_with_plotly_once(full_report: tuple[Path, pl.DataFrame]) -> None:
    page = full_report[0].read_text(encoding="utf-8")
    bundle = plotly_js()
    assert len(bundle) > 1_000_000
    assert page.count(bundle[:2000]) == 1 and page.count(bundle[-2000:]) == 1 and bundle in page
    # no external resource: no script or link source, no stylesheet import, no CDN
    assert re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)\s*=", page, flags=re.I) is None
    ours = page.replace(bundle, "")  # the page around the bundle (plotly.js itself names its optional CDN assets)
    assert "http://" not in ours and "https://" not in ours and "@import" not in ours
    assert len(re.findall(r"<script\b", page)) == 3  # data, plotly.js, the chart code
    assert "<title>T &lt;1&gt;</title>" in page
    # size: the bundle plus well under a megabyte of page and data
    assert len(page.encode()) < len(bundle.encode()) + 1_000_000


def test_every_chart_div_is_present_with_its_data(
    full_report: tuple[Path, pl.DataFrame], report_model: RiskModel, weights: dict[str, dict[str, float]]
) -> None:
    path, bias = full_report
    page = path.read_text(encoding="utf-8")
    assert sorted(chart_divs(page)) == sorted(CHART_NAMES)
    data = embedded_data(page)
    expected = report_data(report_model, portfolio=weights["portfolio"], benchmark=weights["benchmark"], bias=bias)
    assert data == json.loads(json.dumps(expected))
    for name in CHART_NAMES:
        assert data["charts"][name]["points"] > 0  # type: ignore[index]


def test_optional_views_only_with_their_inputs(report_model: RiskModel, tmp_path: Path) -> None:
    page = write_report(report_model, tmp_path / "plain.htm").read_text(encoding="utf-8")
    assert sorted(chart_divs(page)) == sorted(set(CHART_NAMES) - OPTIONAL)
    assert set(embedded_data(page)["charts"]) == set(CHART_NAMES) - OPTIONAL  # type: ignore[arg-type]
    assert "Bias statistics" not in page and "Portfolio" not in page


def test_write_report_rejects_a_non_html_name(report_model: RiskModel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot write the report to .*report\.txt: use a \.html or \.htm file name"):
        write_report(report_model, tmp_path / "report.txt")
    assert not (tmp_path / "report.txt").exists()
