"""The self-contained HTML report: plotly.js (from the python plotly package) inlined once, the numbers of
:func:`factor_engine.report.report_data` as JSON, inline CSS, no network access.

Every chart is a ``<div class="fe-chart" data-chart="<name>">`` drawn by ``Plotly.newPlot``; once drawn its div
gets ``data-rendered="true"`` and ``data-points="<values plotted>"``, and a chart that fails gets
``data-error="<message>"`` and a ``console.error`` line (the report/dashboard contract).
"""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from factor_engine.model import RiskModel
from factor_engine.report.data import ROLLING_WINDOW, Weights, report_data

__all__ = ["render_html", "write_report"]

HTML_SUFFIXES = (".html", ".htm")


@cache
def plotly_js() -> str:
    """The plotly.js bundle shipped inside the python plotly package (offline, never a CDN)."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


_CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #2f6fde; --bg: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #102a43; color: #f0f4f8; padding: 24px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; }
header p { margin: 0; color: #bcccdc; }
ul.warnings li { color: #8d2b0b; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 24px 48px; }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 12px; margin: 16px 0; }
.fact { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.fact b { display: block; font-size: 18px; }
.fact span { color: var(--muted); font-size: 13px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; margin: 16px 0; padding: 16px 20px; }
section h2 { margin: 0 0 4px; font-size: 18px; font-weight: 600; }
.caption { margin: 0 0 8px; color: var(--muted); font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
.fe-chart { width: 100%; height: 380px; }
.fe-chart.tall { height: 560px; grid-column: 1 / -1; }
table { border-collapse: collapse; font-size: 13px; margin-top: 8px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { color: var(--muted); font-weight: 600; }
.config td { text-align: left; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 16px; }
"""

# Builds each chart's traces from the embedded JSON; sets the contract attributes once drawn.
_JS = r"""
(function () {
  "use strict";
  performance.mark("fe-plotly-ready");  // plotly.js, inlined just before, has been evaluated
  var report = JSON.parse(document.getElementById("fe-data").textContent);
  var pending = 0;
  var settled = function () { if (--pending === 0) { performance.mark("fe-charts-drawn"); } };
  var charts = report.charts;
  var pct = function (v) { return v === null ? null : 100 * v; };
  var base = function (title, yTitle, extra) {
    var layout = { margin: { l: 60, r: 20, t: 36, b: 48 },
                   title: { text: title, font: { size: 14 }, x: 0.01, xanchor: "left" },
                   yaxis: { title: { text: yTitle }, zeroline: true }, legend: { orientation: "h", y: -0.18 },
                   hovermode: "x unified", paper_bgcolor: "#fff", plot_bgcolor: "#fff" };
    return Object.assign(layout, extra || {});
  };
  var lines = function (chart, scale) {
    return Object.keys(chart.series).map(function (name) {
      return { type: "scatter", mode: "lines", name: name, x: chart.dates,
               y: chart.series[name].map(scale), line: { width: 1.5 } };
    });
  };
  var builders = {
    "cumulative-returns-market": function (c) {
      return [lines(c, pct), base("Market", "cumulative return (%)")]; },
    "cumulative-returns-sectors": function (c) {
      return [lines(c, pct), base("Sectors", "cumulative return (%)")]; },
    "cumulative-returns-styles": function (c) {
      return [lines(c, pct), base("Styles", "cumulative return (%)")]; },
    "rolling-volatility": function (c) {
      return [lines(c, pct), base(c.window + "-day rolling volatility", "annualized volatility (%)")]; },
    "correlation-heatmap": function (c) {
      return [[{ type: "heatmap", x: c.factors, y: c.factors, z: c.matrix, zmin: -1, zmax: 1,
                 colorscale: "RdBu", reversescale: true, hoverongaps: false }],
              base("Factor correlation on " + report.date, "", { hovermode: "closest",
                   yaxis: { autorange: "reversed", automargin: true }, xaxis: { automargin: true },
                   margin: { l: 140, r: 20, t: 36, b: 140 } })]; },
    "style-distributions": function (c) {
      var traces = Object.keys(c.styles).map(function (name) {
        var h = c.styles[name], mids = [];
        for (var i = 0; i < h.counts.length; i++) { mids.push((h.edges[i] + h.edges[i + 1]) / 2); }
        return { type: "bar", name: name, x: mids, y: h.counts, opacity: 0.6,
                 width: h.counts.length ? (h.edges[1] - h.edges[0]) : 0 };
      });
      return [traces, base("Style scores on " + report.date, "assets", { barmode: "overlay", hovermode: "closest",
                  xaxis: { title: { text: "score (standardized)" } } })]; },
    "diagnostics-assets": function (c) {
      return [[{ type: "scatter", mode: "lines", name: "assets", x: c.dates, y: c.values }],
              base("Assets in each regression", "assets")]; },
    "diagnostics-r2": function (c) {
      return [[{ type: "scatter", mode: "lines", name: "R²", x: c.dates, y: c.values.map(pct) }],
              base("Cross-sectional R²", "R² (%)")]; },
    "bias-statistics": function (c) {
      var names = c.rows.map(function (r) { return r.tested; });
      return [[{ type: "bar", name: "mean B", x: names, y: c.rows.map(function (r) { return r.mean_bias; }) }],
              base("Mean bias statistic (1 = forecast right)", "bias statistic B", { hovermode: "closest",
                   shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 1, y1: 1,
                              line: { dash: "dash", color: "#e12d39" } }] })]; },
    "portfolio-exposures": function (c) {
      var traces = [{ type: "bar", name: "portfolio", x: c.factors, y: c.portfolio }];
      if (c.benchmark) {
        traces.push({ type: "bar", name: "benchmark", x: c.factors, y: c.benchmark });
        traces.push({ type: "bar", name: "active", x: c.factors, y: c.active });
      }
      return [traces, base("Factor exposures on " + report.date, "exposure", { barmode: "group",
                           hovermode: "closest", xaxis: { automargin: true }, legend: { orientation: "v" } })]; },
    "backtest-equity": function (c) {
      return [lines(c, function (v) { return v; }), base("Equity", "account currency")]; },
    "backtest-risk": function (c) {
      return [lines(c, pct), base("Ex-ante risk and realized volatility", "annualized volatility (%)")]; },
    "backtest-exposures": function (c) {
      return [lines(c, function (v) { return v; }), base("Factor exposures of the book", "exposure")]; },
    "portfolio-risk": function (c) {
      var names = c.factors.concat(["specific"]);
      var values = c.contribution.concat([c.specific_contribution]).map(pct);
      return [[{ type: "bar", name: "contribution", x: names, y: values }],
              base((c.active ? "Tracking error" : "Risk") + " contributions on " + report.date,
                   "contribution to annualized risk (%)", { hovermode: "closest", xaxis: { automargin: true } })]; }
  };
  var countPoints = function (traces) {
    return traces.reduce(function (total, t) {
      if (t.type === "heatmap") { return total + t.z.reduce(function (s, row) { return s + row.length; }, 0); }
      return total + t.y.length;
    }, 0);
  };
  document.querySelectorAll(".fe-chart").forEach(function (div) {
    var name = div.getAttribute("data-chart");
    var fail = function (error) {
      var message = (error && error.message) ? error.message : String(error);
      div.setAttribute("data-error", message);
      console.error("chart " + name + ": " + message);
    };
    try {
      if (!charts[name] || !builders[name]) { throw new Error("no data for chart " + name); }
      var spec = builders[name](charts[name]);
      pending++;
      Plotly.newPlot(div, spec[0], spec[1], { responsive: true, displaylogo: false }).then(function () {
        div.setAttribute("data-points", String(countPoints(spec[0])));
        div.setAttribute("data-rendered", "true");
        settled();
      }, function (error) { fail(error); settled(); });
    } catch (error) { fail(error); }
  });
})();
"""


def _section(title: str, caption: str, charts: list[tuple[str, bool]], extra: str = "") -> str:
    divs = "".join(
        f'<div class="fe-chart{" tall" if tall else ""}" data-chart="{name}"></div>' for name, tall in charts
    )
    inner = f'<div class="grid">{divs}</div>' if len(charts) > 1 else divs
    return (
        f"<section><h2>{html.escape(title)}</h2><p class='caption'>{html.escape(caption)}</p>{inner}{extra}</section>"
    )


def _fact(value: object, label: str) -> str:
    return f"<div class='fact'><b>{html.escape(str(value))}</b><span>{html.escape(label)}</span></div>"


def _percent(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def _bias_table(rows: list[dict[str, Any]]) -> str:
    header = "<tr><th>tested</th><th>count</th><th>mean B</th><th>median B</th><th>in band</th><th>mean MRAD</th></tr>"

    def cell(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    body = "".join(
        "<tr>"
        f"<td>{html.escape(str(row['tested']))}</td><td>{cell(row.get('count'), ',')}</td>"
        f"<td>{cell(row.get('mean_bias'), '.3f')}</td><td>{cell(row.get('median_bias'), '.3f')}</td>"
        f"<td>{_percent(row.get('fraction_in_band'), 0)}</td><td>{cell(row.get('mean_mrad'), '.3f')}</td>"
        "</tr>"
        for row in rows
    )
    return f"<table>{header}{body}</table>"


def _risk_table(risk: dict[str, Any]) -> str:
    total = "tracking error" if risk["active"] else "total risk"
    rows = [
        (total, risk["total_risk"], 1.0),
        ("factor risk", risk["factor_risk"], risk["factor_variance_share"]),
        ("specific risk", risk["specific_risk"], risk["specific_variance_share"]),
    ]
    body = "".join(
        f"<tr><td>{name}</td><td>{_percent(value)}</td><td>{_percent(share, 1)}</td></tr>"
        for name, value, share in rows
    )
    return f"<table><tr><th></th><th>annualized risk</th><th>share of variance</th></tr>{body}</table>"


def render_html(data: dict[str, Any], *, title: str | None = None) -> str:
    """The report page of the numbers of :func:`report_data` (a complete HTML document).

    Parameters
    ----------
    data: the output of :func:`report_data`.
    title: the page heading; default "Factor Engine risk model report".
    """
    summary, charts = data["summary"], data["charts"]
    heading = title or "Factor Engine risk model report"
    facts = "".join(
        [
            _fact(f"{summary['first_date']} → {summary['last_date']}", f"{summary['n_dates']:,} dates solved"),
            _fact(
                summary["n_factors"],
                f"factors: market, {len(summary['sectors'])} sectors, {len(summary['styles'])} styles",
            ),
            _fact(f"{summary['n_assets']:,}", f"assets ({summary['n_assets_at_date']:,} on {data['date']})"),
            _fact(data["date"], "snapshot date (correlations, styles, portfolio)"),
            _fact("n/a" if summary["mean_r2"] is None else f"{summary['mean_r2']:.3f}", "mean cross-sectional R²"),
        ]
    )
    config_rows = "".join(
        f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(value))}</td></tr>"
        for key, value in summary["config"].items()
    )
    step = data["max_points"]
    sections = [
        _section(
            "Cumulative factor returns",
            "prod(1 + daily factor return) − 1 since the first solved date, in percent, by factor family. "
            f"Long histories are shown at every k-th date (at most {step} points per series).",
            [
                ("cumulative-returns-market", False),
                ("cumulative-returns-styles", False),
                ("cumulative-returns-sectors", True),
            ],
        ),
        _section(
            "Rolling factor volatility",
            f"Standard deviation of the daily factor returns over the last {ROLLING_WINDOW} trading days, annualized "
            "(× √252), in percent; computed on the daily series, then sampled.",
            [("rolling-volatility", True)],
        ),
        _section(
            "Factor correlation",
            f"Correlations of the factor covariance forecast made at the close of {data['date']} (−1 to 1).",
            [("correlation-heatmap", True)],
        ),
        _section(
            "Style score distributions",
            f"Histogram of each style's standardized scores on {data['date']} across assets (assets per bin).",
            [("style-distributions", False)],
        ),
        _section(
            "Regression diagnostics",
            "Assets used in each date's cross-sectional regression, and its weighted R² in percent.",
            [("diagnostics-assets", False), ("diagnostics-r2", False)],
        ),
    ]
    if "bias-statistics" in charts:
        sections.append(
            _section(
                "Bias statistics",
                "Out-of-sample test of the risk forecasts: B = std of realized return / forecast risk; 1 means "
                "right, above 1 under-forecast. 'in band' is the share of tests inside 1 ± √(2/T).",
                [("bias-statistics", False)],
                _bias_table(charts["bias-statistics"]["rows"]),
            )
        )
    if "portfolio-exposures" in charts:
        active = charts["portfolio-risk"]["active"]
        sections.append(
            _section(
                "Portfolio",
                f"Factor exposures Bᵀw on {data['date']}"
                + (" of the portfolio, the benchmark and the active weights" if active else "")
                + "; contributions of each factor (x_k (F x)_k / σ) and of the specific part (σ_S² / σ) to the "
                + "annualized "
                + ("tracking error" if active else "risk")
                + " σ, in percent: they add up to it.",
                [("portfolio-exposures", False), ("portfolio-risk", False)],
                _risk_table(charts["portfolio-risk"]) + _portfolio_warnings(charts["portfolio-risk"]),
            )
        )
    if "optimization" in data:
        sections.append(_optimization_section(data["optimization"]))
    if "backtest" in data:
        sections.append(_backtest_section(data["backtest"]))
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(heading)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(heading)}</h1><p>Barra-style factor risk model · daily returns as fractions, "
        "shown in percent</p></header><main>"
        f"<div class='facts'>{facts}</div>"
        + _build_notes(summary)
        + f"<details><summary>Configuration</summary><table class='config'>{config_rows}</table></details>"
        + "".join(sections)
        + f"</main><footer>Generated by factor_engine on {generated}; works offline.</footer>"
        f'<script type="application/json" id="fe-data">{payload}</script>'
        f"<script>{plotly_js()}</script><script>{_JS}</script></body></html>\n"
    )


def _optimization_section(summary: dict[str, Any]) -> str:
    """How the portfolio was optimized: objective and constraints, solver, ex-ante risk, largest holdings."""
    constraints = "".join(f"<li>{html.escape(line)}</li>" for line in summary["constraints"])
    tracking = summary.get("tracking_error")
    facts = (
        f"<p class='caption'>{html.escape(str(summary['status']))} ({html.escape(str(summary['solver']))}, "
        f"{summary['solve_seconds']:.2f} s); {summary['holdings']:,} holdings; ex-ante risk "
        f"{_percent(summary['risk'])} annualized"
        + ("" if tracking is None else f", tracking error {_percent(tracking)}")
        + ".</p>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(row['symbol'])}</td><td>{_percent(row['weight'])}</td></tr>"
        for row in summary["largest"]
    )
    holdings = f"<table id='optimized-holdings'><tr><th>symbol</th><th>weight</th></tr>{rows}</table>"
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in summary.get("warnings", []))
    return (
        "<section id='optimization'><h2>Optimized portfolio</h2>"
        f"<ul id='optimization-constraints'>{constraints}</ul>{facts}{holdings}"
        + (f"<ul class='warnings'>{warnings}</ul>" if warnings else "")
        + "</section>"
    )


def _backtest_section(summary: dict[str, Any]) -> str:
    """A backtest's figures (orders, realized against forecast volatility, return, turnover) and its charts."""

    def number(key: str, spec: str) -> str:
        value = summary.get(key)
        return "n/a" if value is None else format(value, spec)

    def share(key: str) -> str:
        value = summary.get(key)
        return _percent(None if value is None else float(value))

    facts = "".join(
        [
            _fact(summary.get("engine", "n/a"), f"{summary.get('start')} → {summary.get('end')}"),
            _fact(number("orders_filled", ","), f"orders filled ({number('orders_denied', ',')} denied by the guard)"),
            _fact(f"{share('realized_vol')} / {share('forecast_vol')}", "realized / forecast volatility, annualized"),
            _fact(number("vol_ratio", ".3f"), "realized ÷ forecast volatility"),
            _fact(share("annualized_return"), f"annualized return; final equity {number('final_equity', ',.0f')}"),
            _fact(number("turnover", ".2f"), "turnover per year (traded value ÷ equity)"),
        ]
    )
    largest = summary.get("max_abs_exposure") or {}
    rows = "".join(
        f"<tr><td>{html.escape(str(factor))}</td><td>{value:.4f}</td></tr>" for factor, value in largest.items()
    )
    table = f"<table id='backtest-exposures-max'><tr><th>factor</th><th>largest |exposure|</th></tr>{rows}</table>"
    caption = (
        "The strategy run in NautilusTrader's BacktestEngine: the equity after each close, the ex-ante risk of the "
        f"book held after it next to the realized volatility of the last {ROLLING_WINDOW} daily returns "
        "(annualized, percent), and the book's factor exposures."
    )
    return _section(
        "Backtest",
        caption,
        [("backtest-equity", False), ("backtest-risk", False), ("backtest-exposures", True)],
        table,
    ).replace(
        "<section><h2>Backtest</h2>", f"<section id='backtest'><h2>Backtest</h2><div class='facts'>{facts}</div>", 1
    )


def _portfolio_warnings(risk: dict[str, Any]) -> str:
    """The weight checks' warnings (e.g. weights not summing to 1) under the portfolio's risk table."""
    listed = "".join(f"<li>{html.escape(w)}</li>" for w in risk.get("warnings", []))
    return f"<ul class='warnings'>{listed}</ul>" if listed else ""


def _build_notes(summary: dict[str, Any]) -> str:
    """What the build did with the data (market cap use, universe, styles) and its warnings: what was left
    out of the model and why, and the thin sectors."""
    rows = "".join(
        f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(value))}</td></tr>"
        for key, value in summary.get("build", {}).items()
        if value
    )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in summary.get("warnings", []))
    if not rows and not warnings:
        return ""
    listed = f"<ul class='warnings'>{warnings}</ul>" if warnings else ""
    heading = "<h2>What the build did with the data</h2>"
    return f"<section id='build-notes'>{heading}<table class='config'>{rows}</table>{listed}</section>"


def write_report(
    model: RiskModel,
    out: str | Path,
    *,
    date: datetime.date | str | None = None,
    portfolio: Weights | None = None,
    benchmark: Weights | None = None,
    bias: pl.DataFrame | None = None,
    title: str | None = None,
    allow_unnormalized: bool = False,
    optimization: Mapping[str, Any] | None = None,
    backtest: Mapping[str, Any] | None = None,
) -> Path:
    """Write the model's report as one self-contained HTML file (plotly.js inlined once, data as JSON).

    Parameters
    ----------
    model: a built or loaded model with factor covariance and specific risk forecasts.
    out: the file to write (``.html`` or ``.htm``); parent folders are created.
    date, portfolio, benchmark, bias, allow_unnormalized, optimization, backtest: see
        :func:`factor_engine.report.report_data`.
    title: the page heading.

    Returns the path written.
    """
    target = Path(out)
    if target.suffix.lower() not in HTML_SUFFIXES:
        raise ValueError(f"cannot write the report to {target}: use a .html or .htm file name")
    data = report_data(
        model,
        date=date,
        portfolio=portfolio,
        benchmark=benchmark,
        bias=bias,
        allow_unnormalized=allow_unnormalized,
        optimization=optimization,
        backtest=backtest,
    )
    page = render_html(data, title=title)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(target)
    return target
