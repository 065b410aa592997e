"""report_data: every number equals an independent computation (explicit loops, the library on the snapshot)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math

import numpy as np
import polars as pl
import pytest

from factor_engine.model import ModelError, RiskModel
from factor_engine.portfolio import PortfolioError, decompose_risk
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.report import BIAS_COLUMNS, CHART_NAMES, bias_statistics, report_data, sample_indices
from factor_engine.risk import validation

TIME_SERIES = ("cumulative-returns-market", "cumulative-returns-sectors", "cumulative-returns-styles")


@pytest.fixture(scope="module")
def bias(report_model: RiskModel, report_panel: pl.DataFrame) -> pl.DataFrame:
    return bias_statistics(report_model, report_panel, n_portfolios=20)


@pytest.fixture(scope="module")
def data(report_model: RiskModel, weights: dict[str, dict[str, float]], bias: pl.DataFrame) -> dict[str, object]:
    return report_data(report_model, portfolio=weights["portfolio"], benchmark=weights["benchmark"], bias=bias)


def with_missing_return(model: RiskModel, factor: str, position: int) -> RiskModel:
    """The model with one factor return set to null (a factor dropped on a date)."""
    frame = model.factor_returns.with_row_index("_row")
    frame = frame.with_columns(
        pl.when(pl.col("_row") == position).then(None).otherwise(pl.col(factor)).alias(factor)
    ).drop("_row")
    return dataclasses.replace(model, factor_returns=frame)


def loop_cumulative(values: list[float | None]) -> list[float]:
    out, level = [], 1.0
    for value in values:
        level *= 1.0 + (0.0 if value is None else value)
        out.append(level - 1.0)
    return out


def loop_rolling_vol(values: list[float | None], window: int = 63) -> list[float | None]:
    out: list[float | None] = []
    for end in range(len(values)):
        chunk = values[max(0, end - window + 1) : end + 1]
        if len(chunk) < window or any(v is None for v in chunk):
            out.append(None)
            continue
        mean = sum(chunk) / window  # type: ignore[arg-type]
        variance = sum((v - mean) ** 2 for v in chunk) / (window - 1)  # type: ignore[operator]
        out.append(math.sqrt(variance) * math.sqrt(252))
    return out


def assert_close(actual: list[float | None], expected: list[float | None], tol: float = 1e-10) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        if e is None:
            assert a is None
        else:
            assert a is not None and abs(a - e) <= tol * max(1.0, abs(e)), (a, e)


def test_sample_indices_keep_the_last_date_and_every_kth() -> None:
    assert sample_indices(10, 520).tolist() == list(range(10))
    assert sample_indices(2520, 520).tolist() == list(range(4, 2520, 5))
    assert sample_indices(11, 5).tolist() == [1, 4, 7, 10]
    assert sample_indices(0, 520).tolist() == []
    with pytest.raises(ValueError, match="max_points must be at least 2, got 1"):
        sample_indices(10, 1)


def test_time_series_are_sampled_and_equal_explicit_loops(report_model: RiskModel) -> None:
    model = with_missing_return(report_model, "mom_score", 100)
    data = report_data(model, max_points=120)
    returns = model.factor_returns.sort("date")
    n = returns.height
    step = math.ceil(n / 120)
    kept = list(range(n - 1, -1, -step))[::-1]
    assert len(kept) <= 120
    dates = [str(d) for d in returns["date"]]
    charts = data["charts"]
    families = {
        "cumulative-returns-market": ["market"],
        "cumulative-returns-sectors": list(model.sectors),
        "cumulative-returns-styles": list(model.styles),
    }
    for name, factors in families.items():
        chart = charts[name]
        assert chart["dates"] == [dates[i] for i in kept]
        assert list(chart["series"]) == factors
        assert chart["points"] == len(kept) * len(factors)
        for factor in factors:
            expected = loop_cumulative(returns[factor].to_list())
            assert_close(chart["series"][factor], [expected[i] for i in kept])
    vol = charts["rolling-volatility"]
    assert vol["dates"] == [dates[i] for i in kept] and vol["window"] == 63
    for factor in model.factors:
        expected = loop_rolling_vol(returns[factor].to_list())
        assert_close(vol["series"][factor], [expected[i] for i in kept])
    # the missing return: counted as 0 in the cumulative return, and no volatility for the 63 windows holding it
    holding = [p for p, i in enumerate(kept) if 100 <= i <= 162]
    assert holding and all(vol["series"]["mom_score"][p] is None for p in holding)
    assert vol["series"]["mom_score"][-1] is not None


def test_default_sampling_bounds_every_series(data: dict[str, object], report_model: RiskModel) -> None:
    charts = data["charts"]  # type: ignore[index]
    assert report_model.factor_returns.height > 520
    for name in (*TIME_SERIES, "rolling-volatility", "diagnostics-assets", "diagnostics-r2"):
        assert 0 < len(charts[name]["dates"]) <= 520
        assert charts[name]["dates"][-1] == str(report_model.factor_returns["date"].max()) or name.startswith("diag")


def test_correlation_heatmap_is_the_covariance_forecast_of_the_date(report_model: RiskModel) -> None:
    day = forecast_dates(report_model)[-30]
    data = report_data(report_model, date=day)
    assert data["date"] == str(day)
    heatmap = data["charts"]["correlation-heatmap"]
    covariance = report_model.factor_covariance.at(day)  # type: ignore[union-attr]
    k = len(report_model.factors)
    assert heatmap["factors"] == list(report_model.factors)
    assert heatmap["points"] == k * k
    for i in range(k):
        for j in range(k):
            expected = covariance[i, j] / math.sqrt(covariance[i, i] * covariance[j, j])
            assert abs(heatmap["matrix"][i][j] - expected) < 1e-12
    # the string form of a date is accepted too and gives the same numbers
    assert report_data(report_model, date=str(day))["charts"]["correlation-heatmap"] == heatmap


def test_style_histograms_count_the_scores_of_the_date(data: dict[str, object], report_model: RiskModel) -> None:
    day = forecast_dates(report_model)[-1]
    on_date = report_model.exposures.filter(pl.col("date") == day)
    histograms = data["charts"]["style-distributions"]["styles"]  # type: ignore[index]
    assert list(histograms) == list(report_model.styles)
    for style, histogram in histograms.items():
        values = [v for v in on_date[style].to_list() if v is not None and math.isfinite(v)]
        edges, counts = histogram["edges"], histogram["counts"]
        assert 1 <= len(counts) <= 50 and len(edges) == len(counts) + 1
        assert histogram["n"] == len(values) == sum(counts)
        assert edges[0] == min(values) and edges[-1] == max(values)
        expected = [0] * len(counts)
        for value in values:
            position = next(b for b in range(len(counts)) if value < edges[b + 1] or b == len(counts) - 1)
            expected[position] += 1
        assert counts == expected
        assert histogram["mean"] == pytest.approx(sum(values) / len(values), rel=1e-12, abs=1e-12)


def test_diagnostics_follow_the_model(data: dict[str, object], report_model: RiskModel) -> None:
    diagnostics = report_model.diagnostics.sort("date")
    rows = {str(d): (n, r2) for d, n, r2 in diagnostics.select("date", "n_assets", "r2").iter_rows()}
    for name, column in (("diagnostics-assets", 0), ("diagnostics-r2", 1)):
        chart = data["charts"][name]  # type: ignore[index]
        assert len(chart["dates"]) == len(chart["values"]) == chart["points"]
        for day, value in zip(chart["dates"], chart["values"], strict=True):
            expected = rows[day][column]
            assert value == (None if expected is None or not math.isfinite(expected) else pytest.approx(expected))


def test_portfolio_views_equal_the_library_on_the_snapshot(
    data: dict[str, object], report_model: RiskModel, weights: dict[str, dict[str, float]]
) -> None:
    day = forecast_dates(report_model)[-1]
    exposures = report_model.exposures.filter(pl.col("date") == day)
    factors = list(report_model.factors)

    def loop_exposure(w: dict[str, float]) -> list[float]:
        totals = [0.0] * len(factors)
        for row in exposures.iter_rows(named=True):
            weight = w.get(row["symbol"], 0.0)
            for k, factor in enumerate(factors):
                value = row[factor]
                totals[k] += weight * (0.0 if value is None or math.isnan(value) else value)
        return totals

    chart = data["charts"]["portfolio-exposures"]  # type: ignore[index]
    portfolio, benchmark = loop_exposure(weights["portfolio"]), loop_exposure(weights["benchmark"])
    assert chart["factors"] == factors
    assert chart["portfolio"] == pytest.approx(portfolio, abs=1e-12)
    assert chart["benchmark"] == pytest.approx(benchmark, abs=1e-12)
    assert chart["active"] == pytest.approx([p - b for p, b in zip(portfolio, benchmark, strict=True)], abs=1e-12)
    assert chart["points"] == 3 * len(factors)

    risk = data["charts"]["portfolio-risk"]  # type: ignore[index]
    expected = decompose_risk(snapshot_at(report_model), weights["portfolio"], weights["benchmark"]).annualized(252)
    assert risk["active"] is True
    assert risk["total_risk"] == pytest.approx(expected.total_risk, rel=1e-12)
    assert risk["factor_risk"] == pytest.approx(expected.factor_risk, rel=1e-12)
    assert risk["specific_risk"] == pytest.approx(expected.specific_risk, rel=1e-12)
    shares = expected.factor_contributions["variance_share"].to_numpy()
    assert risk["contribution"] == pytest.approx((shares * expected.total_risk).tolist(), rel=1e-12)
    assert risk["specific_contribution"] == pytest.approx(expected.specific_risk**2 / expected.total_risk, rel=1e-12)
    # the factor and specific contributions add up to the tracking error
    assert sum(risk["contribution"]) + risk["specific_contribution"] == pytest.approx(expected.total_risk, rel=1e-10)


def test_portfolio_without_benchmark_shows_its_own_exposures(
    report_model: RiskModel, weights: dict[str, dict[str, float]]
) -> None:
    frame = pl.DataFrame({"symbol": list(weights["portfolio"]), "weight": list(weights["portfolio"].values())})
    charts = report_data(report_model, portfolio=frame)["charts"]
    snapshot = snapshot_at(report_model)
    h = snapshot.align_weights(weights["portfolio"])
    assert charts["portfolio-exposures"]["portfolio"] == pytest.approx((snapshot.exposures.T @ h).tolist(), abs=1e-12)
    assert charts["portfolio-exposures"]["benchmark"] is None and charts["portfolio-exposures"]["active"] is None
    total = math.sqrt(h @ snapshot.covariance_times(h) * 252)
    assert charts["portfolio-risk"]["total_risk"] == pytest.approx(total, rel=1e-10)
    assert charts["portfolio-risk"]["active"] is False


def test_bias_statistics_summarize_the_validation_functions(
    bias: pl.DataFrame, data: dict[str, object], report_model: RiskModel, report_panel: pl.DataFrame
) -> None:
    returns = report_panel.select("date", "symbol", "asset_returns")
    expected = [
        validation.summarize_bias(validation.factor_portfolio_bias(report_model)),
        validation.summarize_bias(validation.random_portfolio_bias(report_model, returns, n_portfolios=20)),
        validation.summarize_bias(validation.asset_bias(report_model, returns)),
    ]
    assert bias.columns == list(BIAS_COLUMNS)
    assert bias["tested"].to_list() == ["pure factor portfolios", "random portfolios", "single assets"]
    for row, summary in zip(bias.iter_rows(named=True), expected, strict=True):
        for column in BIAS_COLUMNS[1:]:
            want = summary[column][0]
            assert row[column] == (None if want is None else pytest.approx(want, rel=1e-12))
    assert bias["count"][2] == report_panel["symbol"].n_unique() or bias["count"][2] > 50
    chart = data["charts"]["bias-statistics"]  # type: ignore[index]
    assert [r["tested"] for r in chart["rows"]] == bias["tested"].to_list()
    assert chart["rows"][1]["mean_bias"] == pytest.approx(bias["mean_bias"][1], rel=1e-12)
    assert chart["points"] == 3


def test_views_present_only_when_their_inputs_are_given(data: dict[str, object], report_model: RiskModel) -> None:
    assert set(data["charts"]) == set(CHART_NAMES)  # type: ignore[arg-type]
    plain = report_data(report_model)
    assert set(plain["charts"]) == set(CHART_NAMES) - {"bias-statistics", "portfolio-exposures", "portfolio-risk"}
    json.dumps(data, allow_nan=False)  # JSON-compatible: no NaN, no numpy scalars
    summary = plain["summary"]
    assert summary["n_factors"] == len(report_model.factors)
    assert summary["first_date"] == str(report_model.factor_returns["date"].min())
    assert summary["n_assets"] == report_model.exposures["symbol"].n_unique()


def test_bad_inputs_raise_clear_errors(
    report_model: RiskModel, weights: dict[str, dict[str, float]], bias: pl.DataFrame
) -> None:
    available = forecast_dates(report_model)
    weekend = next(
        available[i] + datetime.timedelta(days=1)
        for i in range(available.len() - 1)
        if available[i + 1] - available[i] > datetime.timedelta(days=1)
    )
    with pytest.raises(ModelError, match=rf"no risk forecast for {weekend}: .*nearest before .*nearest after"):
        report_data(report_model, date=weekend)
    with pytest.raises(ModelError, match=r"not a date: '2024-13-01' \(use YYYY-MM-DD\)"):
        report_data(report_model, date="2024-13-01")
    unknown = {**weights["benchmark"], "NOT_A_SYMBOL": 0.1}
    with pytest.raises(
        PortfolioError,
        match=r"weights name 1 symbol\(s\) the risk model does not cover on \d{4}-\d\d-\d\d: 'NOT_A_SYMBOL' \(remove",
    ):
        report_data(report_model, portfolio=unknown)
    with pytest.raises(ValueError, match="a benchmark needs a portfolio"):
        report_data(report_model, benchmark=weights["benchmark"])
    with pytest.raises(ValueError, match=r"bias table lacks column\(s\) \['mean_bias'\]"):
        report_data(report_model, bias=bias.drop("mean_bias"))
    with pytest.raises(ValueError, match=r"panel returns lack column\(s\) \['asset_returns'\]"):
        bias_statistics(report_model, pl.DataFrame({"date": [], "symbol": []}))
    no_forecast = dataclasses.replace(report_model, specific_risk=None)
    with pytest.raises(ModelError, match="the model has no specific risk forecast"):
        report_data(no_forecast)
    assert np.isfinite(report_model.factor_covariance.values[-1]).all()  # type: ignore[union-attr]
