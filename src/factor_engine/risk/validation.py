"""Out-of-sample validation of risk forecasts by bias statistics (Barra USE4 methodology, Appendix A).

For a forecast volatility ``σ_t`` made at the close of date ``t`` and the realized return ``R_{t+1}`` of the
next date (the next date of the returns' date axis), the standardized outcome is ``b_t = R_{t+1} / σ_t``
(daily units: a covariance made for a ``horizon`` is divided by it). Over a test period of ``T`` outcomes
the bias statistic is the sample standard deviation ``B = std(b_t)`` (``ddof = 1``, mean removed as in
USE4); a perfect forecast has ``B ≈ 1`` with the approximate 95 % band ``1 ± sqrt(2 / T)``.

The mean rolling absolute deviation ``MRAD = mean_w |B_w − 1|`` averages over windows of ``window``
consecutive outcomes (252 = 12 months of daily outcomes by default) starting every ``step`` outcomes:
``step = 1`` gives rolling (overlapping) windows, ``step = window`` non-overlapping ones. Windows count
outcomes, not calendar days (missing outcomes are dropped first); MRAD is NaN with fewer than ``window``.

Forecasts validated here:

* :func:`factor_portfolio_bias`: pure factor portfolios, ``b_t = f_{k,t+1} / sqrt(F_t[k,k])``;
* :func:`eigenfactor_portfolio_bias`: the eigenportfolios of each forecast, by eigenvalue rank;
* :func:`random_portfolio_bias`: random long-only portfolios, ``σ_t² = x_tᵀ F_t x_t + Σ_n w_n² s_{n,t}²``;
* :func:`asset_bias`: single assets, ``σ_{n,t}² = x_nᵀ F_t x_n + s_{n,t}²``;
* :func:`sample_covariance_bias`: the same portfolios or assets with the rolling sample covariance of asset
  returns, optionally shrunk by Ledoit–Wolf (:func:`ledoit_wolf_intensity`);
* :func:`min_variance_realized_vol`: realized volatility of long-only minimum-variance portfolios rebuilt
  periodically from each covariance (lower is better);
* :func:`min_variance_bias`: the model's long-only minimum-variance portfolio, ``b_t = R_{t+1} / σ_t`` with the
  portfolio held since the last rebalance and ``σ_t`` the model's forecast of date ``t`` for it (where
  optimizers hurt most: they load on the directions a model underpredicts).

Random portfolios (:func:`random_portfolios`): each holds ``portfolio_size`` assets drawn without replacement
from the sorted symbols of the returns frame with flat Dirichlet weights, re-drawn per portfolio and fixed
over time. On each forecast date the weights are renormalized over the held assets that are *present*: with
a complete forecast at ``t`` (exposures, specific vol, factor covariance; or a full sample window) and a
return at ``t + 1``. Requiring the next return is a mild look-ahead (delisting returns are not modelled).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from factor_engine._grid import Grid, build_grid, check_unique
from factor_engine.panel import DATE, RETURNS, SYMBOL
from factor_engine.risk.covariance import forecast_mask
from factor_engine.risk.min_variance import FactoredCovariance, ledoit_wolf_intensity, long_only_min_variance

if TYPE_CHECKING:  # model.py imports factor_engine.risk: a runtime import here would be circular
    from factor_engine.model import RiskModel

__all__ = [
    "BiasResult",
    "FactoredCovariance",
    "asset_bias",
    "bias_statistic",
    "eigenfactor_portfolio_bias",
    "factor_portfolio_bias",
    "ledoit_wolf_intensity",
    "long_only_min_variance",
    "min_variance_bias",
    "min_variance_realized_vol",
    "model_bias_summary",
    "random_portfolio_bias",
    "random_portfolios",
    "sample_covariance_bias",
    "summarize_bias",
]

FACTOR = "factor"
EIGENFACTOR = "eigenfactor"
PORTFOLIO = "portfolio"
SPECIFIC_VOL = "specific_vol"
_STAT_COLUMNS = ("bias", "lower", "upper", "n", "mrad")
# Forecast dates per block of the dense (dates, assets, factors) products.
_DATES_PER_BLOCK = 64


@dataclass(frozen=True)
class BiasResult:
    """Bias statistic of one series of standardized outcomes.

    Attributes
    ----------
    bias: ``B = std(b)`` (ddof 1); NaN with fewer than 2 outcomes.
    lower, upper: the approximate 95 % band ``1 ∓ sqrt(2 / n)``.
    n: number of finite outcomes used.
    mrad: mean of ``|B_w − 1|`` over windows of ``window`` outcomes every ``step`` outcomes (NaN if n < window).
    window, step: the MRAD windowing.
    """

    bias: float
    lower: float
    upper: float
    n: int
    mrad: float
    window: int
    step: int


def bias_statistic(standardized: np.ndarray, *, window: int = 252, step: int = 1) -> BiasResult:
    """Bias statistic, its 95 % band and the MRAD of a 1-D series of standardized outcomes ``b_t``.

    Parameters
    ----------
    standardized: (T,) outcomes ``R_{t+1} / σ_t`` in time order; non-finite entries are dropped.
    window: outcomes per MRAD window (252 ≈ 12 months of daily outcomes), ≥ 2.
    step: outcomes between window starts (1 rolling, ``window`` non-overlapping), ≥ 1.
    """
    values = np.asarray(standardized, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"standardized must be one-dimensional, got shape {values.shape}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer ≥ 2, got {window!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive integer, got {step!r}")
    values = values[np.isfinite(values)]
    n = int(values.size)
    bias = float(np.std(values, ddof=1)) if n >= 2 else math.nan
    half_width = math.sqrt(2.0 / n) if n else math.nan
    mrad = math.nan
    if n >= window:
        windows = np.lib.stride_tricks.sliding_window_view(values, window)[::step]
        mrad = float(np.mean(np.abs(windows.std(axis=1, ddof=1) - 1.0)))
    return BiasResult(
        bias=bias, lower=1.0 - half_width, upper=1.0 + half_width, n=n, mrad=mrad, window=window, step=step
    )


def _stat_columns(standardized: np.ndarray, window: int, step: int) -> dict[str, list[Any]]:
    """Bias statistics of each column of a (T, M) array of outcomes, as frame columns."""
    results = [bias_statistic(standardized[:, m], window=window, step=step) for m in range(standardized.shape[1])]
    return {name: [getattr(r, name) for r in results] for name in _STAT_COLUMNS}


def _stat_frame(
    key: str, keys: pl.Series | list[Any], standardized: np.ndarray, window: int, step: int
) -> pl.DataFrame:
    columns = _stat_columns(standardized, window, step)
    frame = pl.DataFrame({key: keys, **columns}, schema_overrides={"n": pl.Int64})
    return frame.with_columns(pl.col("bias", "lower", "upper", "mrad").cast(pl.Float64).fill_nan(None))


def _in_period(dates: pl.Series, start: datetime.date | None, end: datetime.date | None) -> np.ndarray:
    """Boolean mask of the forecast dates within [start, end] (inclusive; None = open)."""
    keep = np.ones(dates.len(), dtype=bool)
    if start is not None:
        keep &= (dates >= start).to_numpy()
    if end is not None:
        keep &= (dates <= end).to_numpy()
    return keep


def factor_portfolio_bias(
    model: RiskModel,
    *,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    window: int = 252,
    step: int = 1,
) -> pl.DataFrame:
    """``factor, bias, lower, upper, n, mrad``: bias statistics of the pure factor portfolios.

    ``b_t = f_{k,t+1} / sqrt(F_t[k,k] / horizon)`` for every forecast date ``t`` (within ``[start, end]``,
    inclusive) whose next date on the factor returns' date axis has a return.

    Parameters
    ----------
    model: a model with a factor covariance forecast.
    start, end: first and last forecast date of the test period (None = open).
    window, step: MRAD windowing (see :func:`bias_statistic`).
    """
    covariance, factors, dates, returns, aligned = _factor_forecasts(model)
    variance = np.full((dates.len(), len(factors)), np.nan)
    has_forecast = aligned.is_not_null().to_numpy()
    rows = aligned.drop_nulls().to_numpy()
    variance[has_forecast] = np.einsum("tkk->tk", covariance.values[rows]) / covariance.horizon
    with np.errstate(divide="ignore", invalid="ignore"):
        standardized = returns[1:] / np.sqrt(variance[:-1])
    standardized[~_in_period(dates[:-1], start, end)] = np.nan
    return _stat_frame(FACTOR, factors, standardized, window, step)


def eigenfactor_portfolio_bias(
    model: RiskModel,
    *,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    window: int = 252,
    step: int = 1,
) -> pl.DataFrame:
    """``eigenfactor, bias, lower, upper, n, mrad``: bias statistics of the eigenfactor portfolios.

    For each forecast ``F_t = U diag(d) Uᵀ`` (eigenvalues ascending) with every factor present, eigenfactor
    ``k`` (1 = smallest eigenvalue) has the standardized outcome ``b = (U[:, k]ᵀ f_{t+1}) / sqrt(d_k / horizon)``.
    Sample covariances underpredict the risk of their smallest eigenportfolios (B > 1 at low ranks); the
    eigenfactor risk adjustment (Menchero, Wang & Orr 2011) exists to remove that bias, so this is its test.
    Eigenvalues that are zero up to rounding give no outcome.

    Parameters
    ----------
    model: a model with a factor covariance forecast.
    start, end: first and last forecast date of the test period (None = open).
    window, step: MRAD windowing (see :func:`bias_statistic`).
    """
    covariance, factors, dates, returns, aligned = _factor_forecasts(model)
    standardized = np.full((max(dates.len() - 1, 0), len(factors)), np.nan)
    rows = aligned.to_numpy()[:-1]
    has_forecast = aligned.is_not_null().to_numpy()[:-1] & _in_period(dates[:-1], start, end)
    positions = np.flatnonzero(has_forecast)
    forecasts = covariance.values[rows[positions].astype(np.int64)] / covariance.horizon
    complete = np.isfinite(forecasts).all(axis=(1, 2))
    positions, forecasts = positions[complete], forecasts[complete]
    if positions.size:
        eigvals, eigvecs = np.linalg.eigh(forecasts)
        outcome = np.einsum("tkj,tk->tj", eigvecs, returns[positions + 1])
        usable = eigvals > 1e-12 * np.maximum(eigvals[:, -1:], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            standardized[positions] = np.where(usable, outcome / np.sqrt(np.where(usable, eigvals, 1.0)), np.nan)
    standardized = np.where(np.isfinite(standardized), standardized, np.nan)
    return _stat_frame(EIGENFACTOR, list(range(1, len(factors) + 1)), standardized, window, step)


def _factor_forecasts(model: RiskModel) -> tuple[Any, list[str], pl.Series, np.ndarray, pl.Series]:
    """``(covariance, factors, dates, returns, rows)``: the factor covariance forecast, its factors, the sorted
    factor-return dates, the (T, K) returns and, per date, the row of its forecast (null without one)."""
    covariance = _require_covariance(model)
    factors = list(covariance.factors)
    returns_frame = model.factor_returns.sort(DATE)
    dates = returns_frame[DATE]
    returns = returns_frame.select(factors).to_numpy().astype(np.float64)
    rows = pl.DataFrame({DATE: dates}).join(
        pl.DataFrame({DATE: covariance.dates, "_row": np.arange(covariance.dates.len())}), on=DATE, how="left"
    )["_row"]
    return covariance, factors, dates, returns, rows


def _require_covariance(model: RiskModel) -> Any:
    if model.factor_covariance is None:
        raise ValueError("the model has no factor covariance forecast; build it with a covariance stage")
    return model.factor_covariance


def random_portfolios(
    n_symbols: int, *, n_portfolios: int = 100, portfolio_size: int = 100, seed: int = 0
) -> np.ndarray:
    """(P, N) long-only weights: each row holds ``min(portfolio_size, N)`` assets drawn without replacement
    with flat Dirichlet weights (summing to 1); rows drawn in order from ``numpy.random.default_rng(seed)``."""
    if n_portfolios < 1 or portfolio_size < 1:
        raise ValueError(f"need n_portfolios ≥ 1 and portfolio_size ≥ 1, got {n_portfolios} and {portfolio_size}")
    if n_symbols < 1:
        raise ValueError("no assets to draw portfolios from")
    rng = np.random.default_rng(seed)
    size = min(portfolio_size, n_symbols)
    weights = np.zeros((n_portfolios, n_symbols))
    for p in range(n_portfolios):
        held = rng.choice(n_symbols, size=size, replace=False)
        weights[p, held] = rng.dirichlet(np.ones(size))
    return weights


@dataclass(frozen=True)
class _Dense:
    """Returns and model forecasts on one (date × symbol) grid of the returns frame (daily units).

    returns: (T, N); exposures: (T, N, K); specific_var: (T, N); factor_cov: (T, K, K) — NaN where absent.
    """

    grid: Grid
    returns: np.ndarray
    exposures: np.ndarray
    specific_var: np.ndarray
    factor_cov: np.ndarray


def _returns_grid(panel_returns: pl.DataFrame) -> tuple[Grid, np.ndarray]:
    missing = [c for c in (DATE, SYMBOL, RETURNS) if c not in panel_returns.columns]
    if missing:
        raise ValueError(f"panel_returns is missing column(s) {missing}; it has {panel_returns.columns}")
    frame = panel_returns.select(DATE, SYMBOL, RETURNS)
    grid = build_grid([frame])
    t, n = grid.locate(frame)
    check_unique(grid, t, n, "panel_returns")
    values = frame[RETURNS].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return grid, grid.scatter(t, n, values)


def _on_grid(grid: Grid, frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``frame`` whose date and symbol lie on ``grid``."""
    return frame.filter(
        pl.col(DATE).cast(pl.Date).is_in(grid.date_series().implode())
        & pl.col(SYMBOL).cast(pl.String).is_in(grid.symbols.implode())
    )


def _dense_model(model: RiskModel, panel_returns: pl.DataFrame) -> _Dense:
    covariance = _require_covariance(model)
    if model.specific_risk is None:
        raise ValueError("the model has no specific risk forecast; build it with a specific risk stage")
    grid, returns = _returns_grid(panel_returns)
    factors = list(covariance.factors)
    missing = [f for f in factors if f not in model.exposures.columns]
    if missing:
        raise ValueError(f"model exposures lack the covariance factors {missing}")
    exposures_frame = _on_grid(grid, model.exposures)
    t, n = grid.locate(exposures_frame)
    exposures = np.full((grid.n_dates, grid.n_symbols, len(factors)), np.nan)
    exposures[t, n] = exposures_frame.select(pl.col(factors).cast(pl.Float64).fill_null(np.nan)).to_numpy()
    specific_frame = _on_grid(grid, model.specific_risk)
    t, n = grid.locate(specific_frame)
    vol = specific_frame[SPECIFIC_VOL].cast(pl.Float64).fill_null(np.nan).to_numpy()
    specific_var = grid.scatter(t, n, vol**2)
    factor_cov = np.full((grid.n_dates, len(factors), len(factors)), np.nan)
    cov_days = covariance.dates.cast(pl.Date).to_physical().to_numpy().astype(np.int64)
    t = np.minimum(np.searchsorted(grid.days, cov_days), grid.n_dates - 1)
    on_grid = grid.days[t] == cov_days
    factor_cov[t[on_grid]] = covariance.values[on_grid] / covariance.horizon
    return _Dense(grid, returns, exposures, specific_var, _over_factors_with_forecast(factor_cov))


def _over_factors_with_forecast(factor_cov: np.ndarray) -> np.ndarray:
    """(T, K, K) covariances where a factor without a forecast on a date (NaN variance: a new sector waiting for
    history) has a zero row and column, as a snapshot leaves it out; a date without any forecast stays NaN."""
    has = forecast_mask(factor_cov)
    usable = np.where(has[:, :, None] & has[:, None, :], factor_cov, 0.0)
    usable[~has.any(axis=1)] = np.nan
    return usable


def _present(forecast_ok: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """(T−1, N): assets with a forecast at ``t`` and a return at ``t + 1``."""
    present: np.ndarray = forecast_ok[:-1] & np.isfinite(returns[1:])
    return present


def random_portfolio_bias(
    model: RiskModel,
    panel_returns: pl.DataFrame,
    *,
    n_portfolios: int = 100,
    portfolio_size: int = 100,
    seed: int = 0,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    window: int = 252,
    step: int = 1,
) -> pl.DataFrame:
    """``portfolio, bias, lower, upper, n, mrad``: bias statistics of random long-only portfolios under the
    model, ``σ_t² = x_tᵀ F_t x_t + Σ_n w_{n,t}² s_{n,t}²`` with ``x_t = Σ_n w_{n,t} X_{n,t}`` (see the module
    docstring for the portfolios); :func:`summarize_bias` condenses the rows.

    Parameters
    ----------
    model: a model with factor covariance and specific risk forecasts.
    panel_returns: ``date, symbol, asset_returns`` (daily, fractions).
    n_portfolios, portfolio_size, seed: see :func:`random_portfolios` (drawn over the sorted symbols of
        ``panel_returns``).
    start, end: first and last forecast date of the test period (None = open).
    window, step: MRAD windowing (see :func:`bias_statistic`).
    """
    dense = _dense_model(model, panel_returns)
    weights = random_portfolios(
        dense.grid.n_symbols, n_portfolios=n_portfolios, portfolio_size=portfolio_size, seed=seed
    )
    forecast_ok = np.isfinite(dense.exposures).all(axis=2) & np.isfinite(dense.specific_var)
    forecast_ok &= np.isfinite(dense.factor_cov).all(axis=(1, 2))[:, None]
    present = _present(forecast_ok, dense.returns)
    mask = present.astype(np.float64)
    total = mask @ weights.T  # (T−1, P) weight held by present assets
    exposures = np.where(present[:, :, None], dense.exposures[:-1], 0.0)
    portfolio_exposure = np.einsum("pn,tnk->tpk", weights, exposures, optimize=True)
    factor_var = np.einsum(
        "tpk,tkl,tpl->tp", portfolio_exposure, np.nan_to_num(dense.factor_cov[:-1]), portfolio_exposure, optimize=True
    )
    specific = np.where(present, dense.specific_var[:-1], 0.0) @ (weights**2).T
    realized = np.where(present, dense.returns[1:], 0.0) @ weights.T
    with np.errstate(divide="ignore", invalid="ignore"):
        standardized = np.where(total > 0, (realized / total) / np.sqrt((factor_var + specific) / total**2), np.nan)
    standardized[~_in_period(dense.grid.date_series()[:-1], start, end)] = np.nan
    return _stat_frame(PORTFOLIO, list(range(n_portfolios)), standardized, window, step)


def asset_bias(
    model: RiskModel,
    panel_returns: pl.DataFrame,
    *,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    window: int = 252,
    step: int = 1,
) -> pl.DataFrame:
    """``symbol, bias, lower, upper, n, mrad``: bias statistics of single assets,
    ``b = r_{n,t+1} / σ_{n,t}`` with ``σ_{n,t}² = x_nᵀ F_t x_n + s_{n,t}²`` (exposures and specific vol at ``t``).

    Parameters
    ----------
    model: a model with factor covariance and specific risk forecasts.
    panel_returns: ``date, symbol, asset_returns`` (daily, fractions).
    start, end: first and last forecast date of the test period (None = open).
    window, step: MRAD windowing (see :func:`bias_statistic`).
    """
    dense = _dense_model(model, panel_returns)
    variance = np.empty_like(dense.specific_var)
    for first in range(0, dense.grid.n_dates, _DATES_PER_BLOCK):
        block = slice(first, first + _DATES_PER_BLOCK)
        x = dense.exposures[block]
        variance[block] = np.einsum("tnk,tkl,tnl->tn", x, dense.factor_cov[block], x, optimize=True)
    variance += dense.specific_var
    with np.errstate(divide="ignore", invalid="ignore"):
        standardized = dense.returns[1:] / np.sqrt(variance[:-1])
    standardized[~_in_period(dense.grid.date_series()[:-1], start, end)] = np.nan
    return _stat_frame(SYMBOL, dense.grid.symbols, standardized, window, step)


def sample_covariance_bias(
    panel_returns: pl.DataFrame,
    *,
    window: int = 252,
    shrink: Literal["none", "ledoit_wolf"] = "none",
    target: Literal["portfolios", "assets"] = "portfolios",
    n_portfolios: int = 100,
    portfolio_size: int = 100,
    seed: int = 0,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    mrad_window: int = 252,
    mrad_step: int = 1,
) -> pl.DataFrame:
    """Bias statistics of the rolling sample covariance of asset returns, for the random portfolios of
    :func:`random_portfolio_bias` (same arguments draw the same portfolios) or for single assets.

    The forecast at ``t`` is the covariance ``XᵀX / W`` of the ``window`` returns up to and including ``t``
    (centered), over the assets with a return on every one of those dates (others are excluded that date),
    optionally Ledoit–Wolf shrunk (:func:`ledoit_wolf_intensity`). Forecasts start at the ``window``-th date.

    Parameters
    ----------
    panel_returns: ``date, symbol, asset_returns`` (daily, fractions).
    window: trading days of history per forecast (≥ 2).
    shrink: ``"none"`` or ``"ledoit_wolf"``.
    target: ``"portfolios"`` (frame as :func:`random_portfolio_bias`) or ``"assets"`` (as :func:`asset_bias`).
    n_portfolios, portfolio_size, seed: the random portfolios (see :func:`random_portfolios`).
    start, end: first and last forecast date of the test period (None = open).
    mrad_window, mrad_step: MRAD windowing (see :func:`bias_statistic`).
    """
    if shrink not in ("none", "ledoit_wolf"):
        raise ValueError(f"shrink must be 'none' or 'ledoit_wolf', got {shrink!r}")
    if target not in ("portfolios", "assets"):
        raise ValueError(f"target must be 'portfolios' or 'assets', got {target!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer ≥ 2, got {window!r}")
    grid, returns = _returns_grid(panel_returns)
    n_dates = grid.n_dates
    weights = random_portfolios(grid.n_symbols, n_portfolios=n_portfolios, portfolio_size=portfolio_size, seed=seed)
    finite = np.isfinite(returns)
    # complete[t, n]: asset n has a return on each of the `window` dates ending at t
    counts = np.cumsum(np.vstack([np.zeros((1, grid.n_symbols)), finite]), axis=0)
    complete = np.zeros_like(finite)
    complete[window - 1 :] = (counts[window:] - counts[:-window]) == window
    period = _in_period(grid.date_series(), start, end)
    columns = n_portfolios if target == "portfolios" else grid.n_symbols
    standardized = np.full((max(n_dates - 1, 0), columns), np.nan)
    for t in range(window - 1, n_dates - 1):
        held = np.flatnonzero(complete[t] & finite[t + 1])
        if not period[t] or held.size == 0:
            continue
        covariance = FactoredCovariance.from_returns(returns[t - window + 1 : t + 1, held], shrink)
        realized = returns[t + 1, held]
        if target == "assets":
            with np.errstate(divide="ignore", invalid="ignore"):
                standardized[t, held] = realized / np.sqrt(covariance.variances())
            continue
        held_weights = weights[:, held]
        total = held_weights.sum(axis=1)
        normalized = held_weights / np.where(total > 0, total, 1.0)[:, None]
        variance = covariance.portfolio_variance(normalized)
        with np.errstate(divide="ignore", invalid="ignore"):
            standardized[t] = np.where(total > 0, (normalized @ realized) / np.sqrt(variance), np.nan)
    standardized = np.where(np.isfinite(standardized), standardized, np.nan)
    if target == "assets":
        return _stat_frame(SYMBOL, grid.symbols, standardized, mrad_window, mrad_step)
    return _stat_frame(PORTFOLIO, list(range(n_portfolios)), standardized, mrad_window, mrad_step)


def summarize_bias(frame: pl.DataFrame) -> pl.DataFrame:
    """One row condensing a frame of bias statistics (one row per portfolio, asset or factor):
    ``count, mean_bias, median_bias, fraction_in_band, mean_mrad`` over the rows with a bias statistic."""
    missing = [c for c in _STAT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"not a bias statistics frame: missing column(s) {missing}")
    rows = frame.filter(pl.col("bias").is_not_null())
    return rows.select(
        pl.len().alias("count"),
        pl.col("bias").mean().alias("mean_bias"),
        pl.col("bias").median().alias("median_bias"),
        pl.col("bias").is_between(pl.col("lower"), pl.col("upper")).cast(pl.Float64).mean().alias("fraction_in_band"),
        pl.col("mrad").mean().alias("mean_mrad"),
    )


SUMMARY_COLUMNS = ("tested", "count", "mean_bias", "median_bias", "fraction_in_band", "mean_mrad")


def model_bias_summary(
    model: RiskModel,
    panel_returns: pl.DataFrame,
    *,
    n_portfolios: int = 100,
    window: int = 252,
    eigenfactors: bool = False,
) -> pl.DataFrame:
    """``tested, count, mean_bias, median_bias, fraction_in_band, mean_mrad``: one :func:`summarize_bias` row
    each for the model's pure factor portfolios, random long-only portfolios, single assets and, with
    ``eigenfactors``, the eigenfactor portfolios — what ``factor-engine validate`` and the report show.

    Parameters
    ----------
    model: a model with factor covariance and specific risk forecasts.
    panel_returns: ``date, symbol, asset_returns`` (daily, fractions), e.g. the panel the model was built from.
    n_portfolios: random portfolios to test (see :func:`random_portfolios`).
    window: outcomes per MRAD window (trading days).
    eigenfactors: also test the eigenfactor portfolios.
    """
    missing = [c for c in (DATE, SYMBOL, RETURNS) if c not in panel_returns.columns]
    if missing:
        raise ValueError(f"panel returns lack column(s) {missing}; they have {panel_returns.columns}")
    returns = panel_returns.select(DATE, SYMBOL, RETURNS)
    tested = {
        "pure factor portfolios": factor_portfolio_bias(model, window=window),
        "random portfolios": random_portfolio_bias(model, returns, n_portfolios=n_portfolios, window=window),
        "single assets": asset_bias(model, returns, window=window),
    }
    if eigenfactors:
        tested["eigenfactor portfolios"] = eigenfactor_portfolio_bias(model, window=window)
    return pl.concat(
        [summarize_bias(frame).select(pl.lit(name).alias("tested"), pl.all()) for name, frame in tested.items()]
    ).select(SUMMARY_COLUMNS)


MinVarianceSource = Literal["model", "sample", "ledoit_wolf"]


def min_variance_realized_vol(
    panel_returns: pl.DataFrame,
    *,
    model: RiskModel | None = None,
    sources: tuple[MinVarianceSource, ...] = ("model", "sample", "ledoit_wolf"),
    window: int = 252,
    rebalance_every: int = 21,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    rtol: float = 1e-6,
) -> pl.DataFrame:
    """``source, realized_vol, forecast_vol, n_days, n_rebalances``: realized daily volatility of long-only
    minimum-variance portfolios rebuilt every ``rebalance_every`` dates from each covariance forecast.

    Rebalance dates are common to all sources: the first forecast date (within ``[start, end]``) at which
    every source has a forecast, then every ``rebalance_every``-th date of the returns' date axis. At each
    rebalance date ``t`` the portfolio is :func:`long_only_min_variance` over the assets with a forecast at
    ``t`` (model: exposures, specific vol and factor covariance, ``Σ = X F Xᵀ + D``; sample / Ledoit–Wolf:
    a full ``window`` of returns, as in :func:`sample_covariance_bias`) and is held with constant weights
    over the following dates up to the next rebalance; a missing return counts as 0 (held in cash). A lower
    realized volatility means a more useful covariance. ``forecast_vol`` is the mean forecast daily vol.

    Parameters
    ----------
    panel_returns: ``date, symbol, asset_returns`` (daily, fractions).
    model: the risk model; required when ``"model"`` is among ``sources``.
    sources: covariance forecasts to compare.
    window: trading days of history of the sample covariances (≥ 2).
    rebalance_every: trading days between rebalances (≥ 1).
    start, end: first and last rebalance date (None = open); returns after ``end`` still count until the
        holding period of the last rebalance ends.
    rtol: relative optimality gap of each minimum-variance solve (see :func:`long_only_min_variance`); each
        solve starts from the previous rebalance's weights.
    """
    unknown = [s for s in sources if s not in ("model", "sample", "ledoit_wolf")]
    if unknown or not sources:
        raise ValueError(f"sources must be a non-empty subset of ('model', 'sample', 'ledoit_wolf'), got {sources}")
    if "model" in sources and model is None:
        raise ValueError("source 'model' needs the model argument")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer ≥ 2, got {window!r}")
    if isinstance(rebalance_every, bool) or not isinstance(rebalance_every, int) or rebalance_every < 1:
        raise ValueError(f"rebalance_every must be a positive integer, got {rebalance_every!r}")
    grid, returns = _returns_grid(panel_returns)
    n_dates = grid.n_dates
    finite = np.isfinite(returns)
    counts = np.cumsum(np.vstack([np.zeros((1, grid.n_symbols)), finite]), axis=0)
    complete = np.zeros_like(finite)
    complete[window - 1 :] = (counts[window:] - counts[:-window]) == window
    eligible = complete.any(axis=1) if {"sample", "ledoit_wolf"} & set(sources) else np.ones(n_dates, dtype=bool)
    dense: _Dense | None = None
    model_ok = np.zeros_like(finite)
    if model is not None and "model" in sources:
        dense = _dense_model(model, panel_returns)
        model_ok = np.isfinite(dense.exposures).all(axis=2) & np.isfinite(dense.specific_var)
        model_ok &= np.isfinite(dense.factor_cov).all(axis=(1, 2))[:, None]
        eligible &= model_ok.any(axis=1)
    eligible[-1] = False  # nothing to hold after the last date
    eligible &= _in_period(grid.date_series(), start, end)
    candidates = np.flatnonzero(eligible)
    rebalances = np.arange(candidates[0], n_dates - 1, rebalance_every) if candidates.size else np.array([], int)
    if candidates.size:
        rebalances = rebalances[eligible[rebalances]]
    rows: dict[str, list[Any]] = {name: [] for name in ("source", "realized_vol", "forecast_vol", "n_days")}
    for source in sources:
        realized: list[np.ndarray] = []
        forecast: list[float] = []
        previous_weights = np.ones(grid.n_symbols)  # projects to equal weights: the first start
        for position, t in enumerate(rebalances):
            stop = rebalances[position + 1] if position + 1 < rebalances.size else min(t + rebalance_every, n_dates - 1)
            held = np.flatnonzero(model_ok[t] if source == "model" else complete[t])
            if held.size == 0:
                continue
            if source == "model" and dense is not None:
                covariance = FactoredCovariance.from_model(
                    dense.exposures[t, held], dense.factor_cov[t], dense.specific_var[t, held]
                )
            else:
                covariance = FactoredCovariance.from_returns(returns[t - window + 1 : t + 1, held], source)
            weights = long_only_min_variance(covariance, start=previous_weights[held], rtol=rtol)
            previous_weights = np.zeros(grid.n_symbols)
            previous_weights[held] = weights
            variance = float(covariance.portfolio_variance(weights))
            forecast.append(math.sqrt(max(variance, 0.0)))
            realized.append(np.nan_to_num(returns[t + 1 : stop + 1, held]) @ weights)
        series = np.concatenate(realized) if realized else np.array([])
        rows["source"].append(source)
        rows["realized_vol"].append(float(np.std(series, ddof=1)) if series.size >= 2 else None)
        rows["forecast_vol"].append(float(np.mean(forecast)) if forecast else None)
        rows["n_days"].append(int(series.size))
    return pl.DataFrame(rows, schema_overrides={"n_days": pl.Int64}).with_columns(
        pl.lit(int(rebalances.size), dtype=pl.Int64).alias("n_rebalances")
    )


def min_variance_bias(
    panel_returns: pl.DataFrame,
    model: RiskModel,
    *,
    rebalance_every: int = 21,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    window: int = 63,
    rtol: float = 1e-6,
) -> tuple[BiasResult, float]:
    """Bias statistic of the model's long-only minimum-variance portfolio, and its realized daily volatility.

    The portfolio is rebuilt as in :func:`min_variance_realized_vol` (source ``"model"``: rebalance dates
    every ``rebalance_every`` dates of the returns' axis from the first forecast date within ``[start, end]``,
    weights held constant to the next rebalance, a missing return counting as 0). On every date ``t`` it is
    held, the model's forecast made at ``t`` for the held weights, ``σ_t² = xᵀ F_t x + Σ w² s_t²`` over the held
    assets with a forecast at ``t`` (the others count as cash in both forecast and outcome), standardizes the
    next date's return: ``b_t = Σ w r_{t+1} / σ_t``.

    Parameters
    ----------
    panel_returns: ``date, symbol, asset_returns`` (daily, fractions).
    model: a model with factor covariance and specific risk forecasts.
    rebalance_every: trading days between rebalances (≥ 1).
    start, end: first and last rebalance date (None = open).
    window: outcomes per MRAD window (63 ≈ a quarter, rolling windows).
    rtol: relative optimality gap of each minimum-variance solve.
    """
    if isinstance(rebalance_every, bool) or not isinstance(rebalance_every, int) or rebalance_every < 1:
        raise ValueError(f"rebalance_every must be a positive integer, got {rebalance_every!r}")
    dense = _dense_model(model, panel_returns)
    n_dates = dense.grid.n_dates
    forecast_ok = np.isfinite(dense.exposures).all(axis=2) & np.isfinite(dense.specific_var)
    forecast_ok &= np.isfinite(dense.factor_cov).all(axis=(1, 2))[:, None]
    eligible = forecast_ok.any(axis=1)
    eligible[-1] = False
    eligible &= _in_period(dense.grid.date_series(), start, end)
    candidates = np.flatnonzero(eligible)
    standardized: list[float] = []
    realized: list[float] = []
    if candidates.size:
        rebalances = np.arange(candidates[0], n_dates - 1, rebalance_every)
        rebalances = rebalances[eligible[rebalances]]
        previous = np.ones(dense.grid.n_symbols)
        for position, t in enumerate(rebalances):
            stop = rebalances[position + 1] if position + 1 < rebalances.size else min(t + rebalance_every, n_dates - 1)
            held = np.flatnonzero(forecast_ok[t])
            covariance = FactoredCovariance.from_model(
                dense.exposures[t, held], dense.factor_cov[t], dense.specific_var[t, held]
            )
            weights = long_only_min_variance(covariance, start=previous[held], rtol=rtol)
            previous = np.zeros(dense.grid.n_symbols)
            previous[held] = weights
            for day in range(t, stop):
                live = previous * forecast_ok[day]
                exposure = np.nan_to_num(dense.exposures[day]).T @ live
                variance = exposure @ np.nan_to_num(dense.factor_cov[day]) @ exposure
                variance += float(np.nan_to_num(dense.specific_var[day]) @ live**2)
                outcome = float(np.nan_to_num(dense.returns[day + 1]) @ live)
                realized.append(float(np.nan_to_num(dense.returns[day + 1]) @ previous))
                if variance > 0:
                    standardized.append(outcome / math.sqrt(variance))
    result = bias_statistic(np.asarray(standardized, dtype=np.float64), window=window)
    realized_vol = float(np.std(realized, ddof=1)) if len(realized) >= 2 else math.nan
    return result, realized_vol
