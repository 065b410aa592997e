"""The numbers behind every chart of the HTML report, aggregated from a :class:`~factor_engine.model.RiskModel`.

Everything here is small and JSON-compatible (lists of floats, ``None`` for a missing value): time series are
sampled to at most ``max_points`` dates, style scores are summarized as histograms, and the raw panel is never
included. Chart names follow the report/dashboard contract (``CHART_NAMES``).
"""

from __future__ import annotations

import datetime
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from factor_engine.model import RiskModel
from factor_engine.panel import DATE, SYMBOL
from factor_engine.portfolio import OptimizationResult, PortfolioError, decompose_risk, portfolio_exposures
from factor_engine.portfolio.snapshot import as_date, forecast_dates, snapshot_at
from factor_engine.portfolio.spec import OptimizeSpec
from factor_engine.regression import MARKET
from factor_engine.risk import validation

__all__ = [
    "BACKTEST_CHARTS",
    "BIAS_COLUMNS",
    "CHART_NAMES",
    "FACTOR_CHARTS",
    "PORTFOLIO_CHARTS",
    "ROLLING_WINDOW",
    "TRADING_DAYS_PER_YEAR",
    "backtest_summary",
    "bias_statistics",
    "optimization_summary",
    "report_data",
    "sample_indices",
]

TRADING_DAYS_PER_YEAR = 252
ROLLING_WINDOW = 63
MAX_BINS = 50
# the chart contract shared with the dashboard and the browser tests (div.fe-chart[data-chart=<name>])
FACTOR_CHARTS = (
    "cumulative-returns-market",
    "cumulative-returns-sectors",
    "cumulative-returns-styles",
    "rolling-volatility",
    "correlation-heatmap",
    "style-distributions",
    "diagnostics-assets",
    "diagnostics-r2",
)
PORTFOLIO_CHARTS = ("portfolio-exposures", "portfolio-risk")
BACKTEST_CHARTS = ("backtest-equity", "backtest-risk", "backtest-exposures")
CHART_NAMES = (*FACTOR_CHARTS, "bias-statistics", *PORTFOLIO_CHARTS)
BIAS_COLUMNS = validation.SUMMARY_COLUMNS

Weights = Mapping[str, float] | pl.DataFrame


def sample_indices(n_dates: int, max_points: int) -> np.ndarray:
    """Positions of the dates kept from a series of ``n_dates``: every k-th date with ``k = ceil(n / max_points)``,
    counted back from the last date (always kept), so at most ``max_points`` dates remain.

    Parameters
    ----------
    n_dates: length of the daily series.
    max_points: the largest number of dates to keep (≥ 2).
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    step = max(1, math.ceil(n_dates / max_points))
    return np.arange(n_dates - 1, -1, -step)[::-1] if n_dates else np.arange(0)


def _floats(values: np.ndarray | Sequence[float | None]) -> list[float | None]:
    """A float list for JSON: NaN, inf and None become None."""
    array = np.asarray(values, dtype=np.float64)
    return [float(v) if math.isfinite(v) else None for v in array.tolist()]


def _dates(series: pl.Series | Sequence[datetime.date]) -> list[str]:
    return [str(d) for d in series]


def _cumulative_returns(daily: np.ndarray) -> np.ndarray:
    """``prod(1 + f) − 1`` up to each date, per column of the (T, K) daily returns (a missing return counts as 0)."""
    return np.cumprod(1.0 + np.nan_to_num(daily, nan=0.0), axis=0) - 1.0


def _rolling_volatility(daily: np.ndarray, window: int) -> np.ndarray:
    """Annualized (× √252) sample sd (ddof 1) of the last ``window`` daily returns per column; NaN until a window
    of ``window`` present returns ends on the date (a missing return makes its windows NaN)."""
    frame = pl.DataFrame({str(k): daily[:, k] for k in range(daily.shape[1])}, schema_overrides=None)
    rolled = frame.select(
        pl.col(c).fill_nan(None).rolling_std(window_size=window, min_samples=window, ddof=1) for c in frame.columns
    )
    values: np.ndarray = rolled.to_numpy().astype(np.float64) * math.sqrt(TRADING_DAYS_PER_YEAR)
    return values.reshape(daily.shape)


def _series_chart(dates: list[str], names: Sequence[str], values: np.ndarray, unit: str) -> dict[str, Any]:
    return {
        "dates": dates,
        "series": {name: _floats(values[:, k]) for k, name in enumerate(names)},
        "unit": unit,
        "points": len(dates) * len(names),
    }


def _correlation(covariance: np.ndarray) -> np.ndarray:
    """The correlation matrix of a covariance matrix (NaN rows and columns for a zero variance)."""
    sd = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = covariance / np.outer(sd, sd)
    correlation[(sd == 0)[:, None] | (sd == 0)[None, :]] = np.nan
    np.fill_diagonal(correlation, np.where(sd > 0, 1.0, np.nan))
    return np.clip(correlation, -1.0, 1.0)


def _histogram(values: np.ndarray) -> dict[str, Any]:
    """Counts of ``values`` in at most 50 equal-width bins: ``edges`` (bins + 1), ``counts``."""
    bins = int(min(MAX_BINS, max(1, math.ceil(math.sqrt(values.size))))) if values.size else 1
    counts, edges = np.histogram(values, bins=bins) if values.size else (np.zeros(0, dtype=np.int64), np.zeros(0))
    return {
        "edges": _floats(edges),
        "counts": [int(c) for c in counts],
        "n": int(values.size),
        "mean": float(values.mean()) if values.size else None,
        "std": float(values.std(ddof=1)) if values.size > 1 else None,
    }


def _model_summary(model: RiskModel, day: datetime.date, n_assets_at_date: int) -> dict[str, Any]:
    dates = model.factor_returns.get_column(DATE)
    config = model.config
    regression = config.get("regression", {})
    covariance = config.get("covariance", {})
    adjustments = config.get("adjustments", {})
    r2 = model.diagnostics.join(model.factor_returns.select(DATE), on=DATE, how="semi").get_column("r2").mean()
    return {
        "first_date": str(dates.min()) if dates.len() else None,
        "last_date": str(dates.max()) if dates.len() else None,
        "n_dates": dates.len(),
        "date": str(day),
        "n_factors": len(model.factors),
        "factors": list(model.factors),
        "sectors": list(model.sectors),
        "styles": list(model.styles),
        "n_assets": model.exposures.get_column(SYMBOL).n_unique(),
        "n_assets_at_date": n_assets_at_date,
        "mean_r2": float(r2) if isinstance(r2, float) and math.isfinite(r2) else None,
        "build": {
            "market cap": model.notes.get("market_cap"),
            "universe": model.notes.get("universe"),
            "styles used": ", ".join(model.notes.get("styles", {}).get("used", [])) or None,
        },
        "warnings": list(model.warnings),
        "config": {
            "universe size": config.get("universe", {}).get("size"),
            "regression": f"{regression.get('method', '?')}, exposure lag {regression.get('exposure_lag', '?')}",
            "covariance half-lives (vol / corr)": f"{covariance.get('vol_half_life', '?')} / "
            f"{covariance.get('corr_half_life', '?')} days",
            "horizon": covariance.get("horizon"),
            "eigenfactor adjustment": adjustments.get("eigenfactor"),
            "volatility regime half-life": adjustments.get("vra_half_life"),
        },
    }


def _bias_chart(bias: pl.DataFrame) -> dict[str, Any]:
    missing = [c for c in ("tested", "mean_bias") if c not in bias.columns]
    if missing:
        raise ValueError(
            f"bias table lacks column(s) {missing}; it has {bias.columns} (build it with report.bias_statistics)"
        )
    rows = [{column: _json_value(row.get(column)) for column in BIAS_COLUMNS} for row in bias.iter_rows(named=True)]
    return {"rows": rows, "points": len(rows)}


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_value(value.item())
    return value


def report_data(
    model: RiskModel,
    *,
    date: datetime.date | str | None = None,
    portfolio: Weights | None = None,
    benchmark: Weights | None = None,
    bias: pl.DataFrame | None = None,
    max_points: int = 520,
    allow_unnormalized: bool = False,
    optimization: Mapping[str, Any] | None = None,
    backtest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The aggregated, JSON-compatible numbers of every report view — never the raw panel.

    Parameters
    ----------
    model: a built or loaded model with factor covariance and specific risk forecasts.
    date: the date of the snapshot views (correlation heatmap, style distributions, portfolio); default the
        model's last forecast date (:func:`factor_engine.portfolio.snapshot.forecast_dates`). A date without a
        forecast raises :class:`~factor_engine.model.ModelError` naming the nearest dates that have one.
    portfolio, benchmark: weights as fractions of capital (a mapping symbol → weight or a frame
        ``symbol, weight``); a symbol the model does not cover on ``date`` raises
        :class:`~factor_engine.portfolio.PortfolioError` naming it. A benchmark needs a portfolio. Weights that
        look like percentages are an error and a sum other than 1 a warning shown in the report
        (:func:`factor_engine.portfolio.check_weights`), unless ``allow_unnormalized``.
    bias: the bias-statistics table of :func:`bias_statistics` (columns ``tested, mean_bias`` at least).
    max_points: the most dates kept per time series (every k-th date, see :func:`sample_indices`).
    optimization: how ``portfolio`` was optimized, :func:`optimization_summary`; shown with it (needs a portfolio).
    backtest: a backtest's figures and charts, :func:`backtest_summary`; shown in a section of its own.

    Returns
    -------
    ``{"summary": {...}, "date": "YYYY-MM-DD", "charts": {name: {...}}}``. Time-series charts hold ``dates`` and
    ``series`` (factor → values); cumulative returns ``prod(1 + f) − 1`` and rolling volatility (annualized,
    fractions) are computed on the daily series and then sampled. Every chart has ``points``, the number of
    values it plots. Missing values are None.
    """
    if benchmark is not None and portfolio is None:
        raise ValueError("a benchmark needs a portfolio: pass portfolio= as well")
    if optimization is not None and portfolio is None:
        raise ValueError("an optimization summary needs its portfolio: pass portfolio= as well")
    sample = sample_indices(model.factor_returns.height, max_points)  # validates max_points first
    snapshot = snapshot_at(model, None if date is None else as_date(date))  # names the nearest dates on a miss
    day: datetime.date = forecast_dates(model)[-1] if date is None else as_date(date)

    returns_frame = model.factor_returns.sort(DATE)
    factors = list(model.factors)
    daily = returns_frame.select(pl.col(factors).cast(pl.Float64).fill_null(np.nan)).to_numpy()
    sampled_dates = _dates(returns_frame.get_column(DATE).gather(sample))
    cumulative = _cumulative_returns(daily)[sample]
    rolling = _rolling_volatility(daily, ROLLING_WINDOW)[sample]
    families = {
        "cumulative-returns-market": [MARKET] if MARKET in factors else [],
        "cumulative-returns-sectors": list(model.sectors),
        "cumulative-returns-styles": list(model.styles),
    }
    charts: dict[str, Any] = {}
    for name, members in families.items():
        columns = [factors.index(f) for f in members]
        charts[name] = _series_chart(sampled_dates, members, cumulative[:, columns], "fraction (0.1 = +10 %)")
    charts["rolling-volatility"] = _series_chart(sampled_dates, factors, rolling, "annualized sd, fraction") | {
        "window": ROLLING_WINDOW
    }

    correlation = _correlation(snapshot.factor_covariance)
    charts["correlation-heatmap"] = {
        "factors": list(snapshot.factors),
        "matrix": [_floats(row) for row in correlation],
        "points": correlation.size,
    }

    styles = [s for s in model.styles if s in model.exposures.columns]
    on_date = model.exposures.filter(pl.col(DATE) == day)
    histograms = {}
    for style in styles:
        values = on_date.get_column(style).cast(pl.Float64).fill_nan(None).drop_nulls().to_numpy()
        histograms[style] = _histogram(values)
    charts["style-distributions"] = {
        "styles": histograms,
        "points": sum(len(h["counts"]) for h in histograms.values()),
    }

    diagnostics = model.diagnostics.sort(DATE)
    diagnostic_sample = sample_indices(diagnostics.height, max_points)
    diagnostic_rows = diagnostics.select(
        DATE, pl.col("n_assets").cast(pl.Float64), pl.col("r2").cast(pl.Float64)
    ).gather(diagnostic_sample)
    diagnostic_dates = _dates(diagnostic_rows.get_column(DATE))
    charts["diagnostics-assets"] = {
        "dates": diagnostic_dates,
        "values": _floats(diagnostic_rows.get_column("n_assets").to_numpy()),
        "unit": "assets in the regression",
        "points": diagnostic_rows.height,
    }
    charts["diagnostics-r2"] = {
        "dates": diagnostic_dates,
        "values": _floats(diagnostic_rows.get_column("r2").fill_null(np.nan).to_numpy()),
        "unit": "R² (fraction)",
        "points": diagnostic_rows.height,
    }

    if bias is not None:
        charts["bias-statistics"] = _bias_chart(bias)

    if portfolio is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the weight warnings are shown in the report, from the risk below
                exposures = portfolio_exposures(snapshot, portfolio, benchmark, allow_unnormalized=allow_unnormalized)
        except PortfolioError as error:  # the report has no drop option: say what to change instead
            message = (
                str(error)
                .replace("does not cover:", f"does not cover on {day}:")
                .replace("(pass unknown='drop' to drop them)", "(remove them from the weights)")
            )
            raise PortfolioError(message) from None
        charts["portfolio-exposures"] = {
            "factors": exposures.get_column("factor").to_list(),
            "portfolio": _floats(exposures.get_column("portfolio").to_numpy()),
            "benchmark": None if benchmark is None else _floats(exposures.get_column("benchmark").to_numpy()),
            "active": None if benchmark is None else _floats(exposures.get_column("active").to_numpy()),
            "points": exposures.height * (1 if benchmark is None else 3),
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            risk = decompose_risk(snapshot, portfolio, benchmark, allow_unnormalized=allow_unnormalized).annualized(
                TRADING_DAYS_PER_YEAR
            )
        contributions = risk.factor_contributions
        charts["portfolio-risk"] = {
            "factors": contributions.get_column("factor").to_list(),
            # contributions to the total risk: x_k (F x)_k / σ per factor and σ_S² / σ, adding up to σ
            "contribution": _floats(contributions.get_column("variance_share").to_numpy() * risk.total_risk),
            "specific_contribution": _json_value(risk.specific_variance_share * risk.total_risk),
            "variance_share": _floats(contributions.get_column("variance_share").to_numpy()),
            "total_risk": risk.total_risk,
            "factor_risk": risk.factor_risk,
            "warnings": list(risk.warnings),
            "specific_risk": risk.specific_risk,
            "factor_variance_share": _json_value(risk.factor_variance_share),
            "specific_variance_share": _json_value(risk.specific_variance_share),
            "active": benchmark is not None,
            "unit": "annualized sd (daily × √252), fraction",
            "points": contributions.height + 1,
        }

    data = {
        "summary": _model_summary(model, day, snapshot.n_assets),
        "date": str(day),
        "max_points": max_points,
        "charts": charts,
    }
    if optimization is not None:
        data["optimization"] = _json_value(dict(optimization))
    if backtest is not None:
        data["backtest"] = _json_value(dict(backtest["summary"]))
        charts.update(backtest["charts"])
    return data


def optimization_summary(spec: OptimizeSpec, result: OptimizationResult, top: int = 20) -> dict[str, Any]:
    """What the report shows of an optimized portfolio: the objective and constraints in words, the solver's
    status and time, the ex-ante risk and tracking error (annualized, fractions), the number of holdings and
    the ``top`` largest by absolute weight (fractions of capital), and the optimizer's warnings."""
    held = result.weights.filter(pl.col("weight") != 0.0)
    largest = held.sort(pl.col("weight").abs(), descending=True).head(top)
    root = math.sqrt(TRADING_DAYS_PER_YEAR)
    return {
        "constraints": spec.describe(),
        "status": result.status,
        "solver": result.solver,
        "solve_seconds": result.solve_seconds,
        "risk": result.risk * root,
        "tracking_error": None if result.tracking_error is None else result.tracking_error * root,
        "holdings": held.height,
        "largest": [{"symbol": symbol, "weight": weight} for symbol, weight in largest.iter_rows()],
        "warnings": list(result.warnings),
    }


def backtest_summary(
    summary: Mapping[str, Any], equity_curve: pl.DataFrame, exposures: pl.DataFrame, max_points: int = 520
) -> dict[str, Any]:
    """What the report shows of a backtest (``factor-engine backtest``): its ``summary`` figures and three
    charts sampled to at most ``max_points`` dates — the equity curve (account currency), the ex-ante risk of
    the book held after each close next to the realized volatility of the equity over the last
    :data:`ROLLING_WINDOW` closes (annualized fractions), and the book's factor exposures.

    Parameters
    ----------
    summary: JSON-compatible figures (``orders_filled``, ``realized_vol``, ``forecast_vol``, ...).
    equity_curve: ``date, equity, daily_return, total_risk`` at least (risk annualized).
    exposures: ``date`` + one column per factor.
    """
    curve = equity_curve.sort(DATE)
    sample = sample_indices(curve.height, max_points)
    dates = _dates(curve.get_column(DATE).gather(sample))
    returns = curve.get_column("daily_return").cast(pl.Float64).fill_null(np.nan).to_numpy()
    realized = _rolling_volatility(returns[:, None], ROLLING_WINDOW)[:, 0]
    forecast = curve.get_column("total_risk").cast(pl.Float64).fill_null(np.nan).to_numpy()
    held = exposures.sort(DATE)
    factors = [column for column in held.columns if column != DATE]
    exposure_sample = sample_indices(held.height, max_points)
    values = held.select(pl.col(factors).cast(pl.Float64).fill_null(np.nan)).to_numpy()[exposure_sample]
    charts = {
        "backtest-equity": _series_chart(
            dates, ["equity"], curve.get_column("equity").to_numpy()[sample, None], "account currency"
        ),
        "backtest-risk": _series_chart(
            dates,
            ["forecast (ex-ante)", f"realized ({ROLLING_WINDOW} days)"],
            np.column_stack([forecast[sample], realized[sample]]),
            "annualized sd, fraction",
        ),
        "backtest-exposures": _series_chart(
            _dates(held.get_column(DATE).gather(exposure_sample)), factors, values, "exposure"
        ),
    }
    return {"summary": dict(summary), "charts": charts}


def bias_statistics(
    model: RiskModel, panel_returns: pl.DataFrame, *, n_portfolios: int = 100, window: int = 252
) -> pl.DataFrame:
    """The model's bias statistics as the report shows them (the cheap tests of ``factor-engine validate``):
    one row per tested set — pure factor portfolios, random long-only portfolios, single assets — with
    ``tested, count, mean_bias, median_bias, fraction_in_band, mean_mrad``
    (:func:`factor_engine.risk.validation.summarize_bias` of each).

    Parameters
    ----------
    model: a model with factor covariance and specific risk forecasts.
    panel_returns: ``date, symbol, asset_returns`` (daily, fractions), e.g. the panel the model was built from.
    n_portfolios: random portfolios to test.
    window: outcomes per MRAD window (trading days).
    """
    return validation.model_bias_summary(model, panel_returns, n_portfolios=n_portfolios, window=window)
