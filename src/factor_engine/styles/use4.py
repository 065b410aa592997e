"""Barra USE4 styles from returns and market caps: beta, residual volatility and non-linear size.

Definitions follow Menchero, Orr and Wang, "The Barra US Equity Model (USE4): Methodology Notes" (MSCI,
2011), Appendix A; the descriptors become styles through :mod:`factor_engine.styles.descriptors`. Windows
are in trading days of the panel's date axis (a date without a return for an asset is a missing
observation). The panel has no risk-free rate, so "excess" returns are the raw daily returns; the market
return is the cap-weighted mean return of the date, weighted by the previous date's caps.

* **Beta** (``beta_score``, descriptor BETA): the slope of the time-series regression
  ``r_i(t) = α + β R(t) + e(t)`` over the last 252 days, exponentially weighted with a half-life of 63 days.
* **Residual volatility** (``resvol_score``): 0.74 · DASTD + 0.16 · CMRA + 0.10 · HSIGMA, orthogonalized to
  beta and size. DASTD is the exponentially weighted (half-life 42) standard deviation of daily returns over
  252 days; CMRA the cumulative range over 12 months of 21 days, ``ln(1 + Z_max) − ln(1 + Z_min)`` with
  ``Z(T)`` the sum of daily log returns over the last ``T`` months; HSIGMA the weighted standard deviation of
  the beta regression's residuals.
* **Non-linear size** (``nlsize_score``): the cube of the standardized log market cap (USE4's size, LNCAP),
  orthogonalized to it, trimmed and standardized.

A descriptor needs at least ``min_observations`` returns in its window (default 63, a quarter).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from factor_engine._dense import run_parallel
from factor_engine.panel import RETURNS
from factor_engine.styles._common import with_score
from factor_engine.styles._panel_grid import PanelGrid, panel_grid
from factor_engine.styles._shared import shared
from factor_engine.styles.descriptors import descriptor_to_style, nonlinear_size

__all__ = [
    "BETA_DEFAULTS",
    "BETA_SCORE",
    "CMRA_DAYS",
    "NLSIZE_SCORE",
    "RESVOL_SCORE",
    "beta",
    "beta_descriptors",
    "cmra",
    "dastd",
    "market_return",
    "nlsize",
    "resvol",
]

BETA_SCORE = "beta_score"
#: The beta style's parameters: its regression's window, weight half-life and fewest returns (dates).
BETA_DEFAULTS: dict[str, Any] = {"window": 252, "half_life": 63, "min_observations": 63}
RESVOL_SCORE = "resvol_score"
NLSIZE_SCORE = "nlsize_score"
#: USE4's weights of DASTD, CMRA and HSIGMA in residual volatility.
RESVOL_WEIGHTS = (0.74, 0.16, 0.10)
#: CMRA's horizon: 12 months of 21 trading days.
CMRA_MONTHS, CMRA_MONTH_DAYS = 12, 21
CMRA_DAYS = CMRA_MONTHS * CMRA_MONTH_DAYS
# assets per call of the compiled time-series kernels (their accumulators; blocks run in parallel)
_ASSETS_PER_BLOCK = 256
# CMRA's kernel keeps the last months · month_days + 1 cumulative log returns of each asset of its block
_CMRA_ASSETS_PER_BLOCK = 64
# dates per block of the market return (bounds its work arrays)
_DATES_PER_BLOCK = 64


def _decay(half_life: float) -> float:
    if not np.isfinite(half_life) or half_life <= 0:
        raise ValueError(f"half_life must be positive, got {half_life!r}")
    return float(0.5 ** (1.0 / half_life))


def _check_window(window: int, min_observations: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an integer ≥ 2, got {window!r}")
    if not 2 <= min_observations <= window:
        raise ValueError(f"min_observations must be in [2, window={window}], got {min_observations!r}")


def market_return(returns: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """(T,) cap-weighted mean return of each date, weighted by each asset's previous-date cap; NaN on the first
    date and where no asset has both.

    Parameters
    ----------
    returns: (T, N) daily simple returns (fractions), NaN where missing.
    caps: (T, N) market caps (currency units).
    """
    market = np.full(returns.shape[0], np.nan)
    # blocks of dates: the work arrays stay small (no (T, N) temporaries to fault in)
    for start in range(1, returns.shape[0], _DATES_PER_BLOCK):
        stop = min(start + _DATES_PER_BLOCK, returns.shape[0])
        block, previous = returns[start:stop], caps[start - 1 : stop - 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            usable = np.isfinite(block) & np.isfinite(previous) & (previous > 0)
            weights = np.where(usable, previous, 0.0)
            market[start:stop] = np.einsum("ij,ij->i", weights, np.where(usable, block, 0.0)) / weights.sum(axis=1)
    return market


def beta_descriptors(
    returns: np.ndarray,
    market: np.ndarray,
    *,
    window: int = 252,
    half_life: float = 63,
    min_observations: int = 63,
    at: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(BETA, HSIGMA), each (T, N) (or (D, N) for the D dates ``at``): the slope and the residual standard
    deviation of the exponentially weighted regression ``r(t) = α + β R(t) + e(t)`` over the last ``window``
    dates (weights ``0.5^(k / half_life)``, ``k = 0`` the newest), over the dates where both returns are finite;
    NaN with fewer than ``min_observations`` of them or a market without variance.

    Parameters
    ----------
    returns: (T, N) daily asset returns (fractions).
    market: (T,) daily market returns.
    window, half_life, min_observations: in dates.
    at: only these dates (sorted indices into T), each window summed directly.
    """
    _check_window(window, min_observations)
    decay = _decay(half_life)
    if at is not None:
        return _beta_at(returns, market, at, window, decay, min_observations)
    from factor_engine.styles._use4_kernels import beta_block

    returns = np.ascontiguousarray(returns, dtype=np.float64)
    market = np.ascontiguousarray(market, dtype=np.float64)
    if market.shape != returns.shape[:1]:  # the kernel reads market[t] for each row t unchecked
        raise ValueError(f"market must hold one return per date: {market.shape} against returns {returns.shape}")
    slope = np.empty(returns.shape)
    sigma = np.empty(returns.shape)

    def block(start: int) -> None:
        stop = min(start + _ASSETS_PER_BLOCK, returns.shape[1])
        beta_block(returns, market, start, stop, decay, decay**window, window, min_observations, slope, sigma)

    run_parallel(block, range(0, returns.shape[1], _ASSETS_PER_BLOCK))
    return slope, sigma


def _fit(
    returns: np.ndarray,
    market: np.ndarray,
    weighted_sum: Callable[[np.ndarray], np.ndarray],
    count: Callable[[np.ndarray], np.ndarray],
    min_observations: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Slope and residual sd of the weighted regressions of ``returns`` (dates × assets) on ``market`` (dates,),
    over the dates where both are finite, from the window sums ``weighted_sum`` takes (along the dates) and the
    observations ``count`` counts."""
    observed = np.isfinite(returns) & np.isfinite(market)[:, None]
    x = np.where(observed, market[:, None], 0.0)
    y = np.where(observed, returns, 0.0)
    w = weighted_sum(observed.astype(np.float64))
    sx, sy, sxx, sxy, syy = (weighted_sum(values) for values in (x, y, x * x, x * y, y * y))
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = sx / w, sy / w
        var_x = sxx / w - mx * mx
        cov = sxy / w - mx * my
        b = cov / var_x
        # weighted mean squared residual: var(y) − β² var(x), the regression having an intercept
        residual = np.maximum(syy / w - my * my - b * cov, 0.0)
        varies = var_x > 1e-14 * np.maximum(sxx / w, 1e-300)
    enough = (count(observed) >= min_observations) & varies
    return np.where(enough, b, np.nan), np.where(enough, np.sqrt(residual), np.nan)


def dastd(
    returns: np.ndarray,
    *,
    window: int = 252,
    half_life: float = 42,
    min_observations: int = 63,
    at: np.ndarray | None = None,
) -> np.ndarray:
    """DASTD (T, N): the exponentially weighted standard deviation of daily returns over the last ``window``
    dates (weights ``0.5^(k / half_life)``, around their weighted mean); NaN with fewer than
    ``min_observations`` returns.

    Parameters
    ----------
    returns: (T, N) daily returns (fractions).
    window, half_life, min_observations: in dates.
    at: only these dates (sorted indices into T): a (D, N) result, each window summed directly.
    """
    _check_window(window, min_observations)
    decay = _decay(half_life)
    if at is not None:
        return _dastd_at(returns, at, window, decay, min_observations)
    from factor_engine.styles._use4_kernels import dastd_block

    returns = np.ascontiguousarray(returns, dtype=np.float64)
    result = np.empty(returns.shape)

    def block(start: int) -> None:
        stop = min(start + _ASSETS_PER_BLOCK, returns.shape[1])
        dastd_block(returns, start, stop, decay, decay**window, window, min_observations, result)

    run_parallel(block, range(0, returns.shape[1], _ASSETS_PER_BLOCK))
    return result


def cmra(
    returns: np.ndarray,
    *,
    months: int = CMRA_MONTHS,
    month_days: int = CMRA_MONTH_DAYS,
    min_observations: int = 63,
    at: np.ndarray | None = None,
) -> np.ndarray:
    """CMRA (T, N): ``ln(1 + Z_max) − ln(1 + Z_min)`` over ``Z(m)``, the sum of daily log returns over the last
    ``m · month_days`` dates, ``m = 1 … months`` (a missing return, or one of −100 % or worse, counts as 0);
    NaN with fewer than ``min_observations`` returns in the ``months · month_days`` window, before a full
    window, or where ``1 + Z_min ≤ 0``.

    Parameters
    ----------
    returns: (T, N) daily returns (fractions).
    months, month_days: the horizon, USE4's 12 months of 21 trading days.
    min_observations: returns needed in the whole window.
    at: only these dates (sorted indices into T): a (D, N) result.
    """
    span = months * month_days
    _check_window(span, min_observations)
    if at is not None:
        return _cmra_at(returns, at, months, month_days, min_observations)
    from factor_engine.styles._use4_kernels import cmra_block

    returns = np.ascontiguousarray(returns, dtype=np.float64)
    result = np.empty(returns.shape)

    def block(start: int) -> None:
        stop = min(start + _CMRA_ASSETS_PER_BLOCK, returns.shape[1])
        cmra_block(returns, start, stop, months, month_days, min_observations, result)

    run_parallel(block, range(0, returns.shape[1], _CMRA_ASSETS_PER_BLOCK))
    return result


def _window_at(values: np.ndarray, t: int, window: int) -> np.ndarray:
    """The rows of the last ``window`` dates up to ``t`` (fewer at the start), oldest first."""
    window_values: np.ndarray = values[max(0, t - window + 1) : t + 1]
    return window_values


def _weights_at(t: int, window: int, decay: float) -> np.ndarray:
    """``decay^(t − s)`` of the window's dates ``s``, oldest first."""
    length = min(window, t + 1)
    weights: np.ndarray = decay ** np.arange(length - 1, -1, -1, dtype=np.float64)
    return weights


def _beta_at(
    returns: np.ndarray, market: np.ndarray, at: np.ndarray, window: int, decay: float, min_observations: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`beta_descriptors` at the dates ``at`` only: the same sums over each window, taken directly."""
    slope = np.full((at.size, returns.shape[1]), np.nan)
    sigma = np.full_like(slope, np.nan)
    for row, t in enumerate(at.tolist()):
        weights = _weights_at(t, window, decay)

        def weighted_sum(values: np.ndarray, weights: np.ndarray = weights) -> np.ndarray:
            summed: np.ndarray = weights @ values
            return summed

        slope[row], sigma[row] = _fit(
            _window_at(returns, t, window),
            _window_at(market, t, window),
            weighted_sum,
            lambda observed: observed.sum(axis=0),
            min_observations,
        )
    return slope, sigma


def _dastd_at(returns: np.ndarray, at: np.ndarray, window: int, decay: float, min_observations: int) -> np.ndarray:
    """:func:`dastd` at the dates ``at`` only."""
    result = np.full((at.size, returns.shape[1]), np.nan)
    for row, t in enumerate(at.tolist()):
        values = _window_at(returns, t, window)
        observed = np.isfinite(values)
        y = np.where(observed, values, 0.0)
        weights = _weights_at(t, window, decay)
        w = weights @ observed
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (weights @ y) / w
            variance = np.maximum((weights @ (y * y)) / w - mean * mean, 0.0)
        result[row] = np.where(observed.sum(axis=0) >= min_observations, np.sqrt(variance), np.nan)
    return result


def _cmra_at(returns: np.ndarray, at: np.ndarray, months: int, month_days: int, min_observations: int) -> np.ndarray:
    """:func:`cmra` at the dates ``at`` only."""
    span = months * month_days
    result = np.full((at.size, returns.shape[1]), np.nan)
    for row, t in enumerate(at.tolist()):
        if t < span - 1:
            continue
        values = returns[t - span + 1 : t + 1]
        observed = np.isfinite(values) & (values > -1.0)
        logs = np.log1p(np.where(observed, values, 0.0))
        # Z(m): the sum of the last m months' logs, m = 1 … months
        monthly = logs[::-1].reshape(months, month_days, -1).sum(axis=1)
        cumulative = np.cumsum(monthly, axis=0)
        z_max, z_min = cumulative.max(axis=0), cumulative.min(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.log1p(z_max) - np.log1p(z_min)
        enough = observed.sum(axis=0) >= min_observations
        result[row] = np.where(enough & (z_min > -1.0), value, np.nan)
    return result


def _dense_inputs(df: pl.DataFrame | pl.LazyFrame, what: str) -> tuple[PanelGrid, np.ndarray]:
    """The panel's rows on the shared grid (:mod:`factor_engine.styles._panel_grid`) and its returns as a (T, N)
    array (computed once for the styles of one ``compute_styles`` call)."""
    panel = panel_grid(df, what)

    def load_returns() -> np.ndarray:
        (returns,) = panel.load(df, what, (RETURNS,), {RETURNS: pl.col(RETURNS)})
        return returns

    return panel, shared("use4 returns", load_returns)


def _rows_mask(panel: PanelGrid, rows: np.ndarray | None = None) -> np.ndarray:
    """Where the panel has a row (of the dates ``rows`` only, when given): the cells whose descriptor values
    count. A delisted asset's trailing window still yields a descriptor after its last row, which must not enter
    that date's cross-section."""
    mask: np.ndarray = panel.on_rows if rows is None else panel.on_rows[rows]
    return mask


def _dates_at(panel: PanelGrid, at: Sequence[datetime.date] | None) -> np.ndarray | None:
    """The grid indices (sorted) of the dates ``at`` the panel holds; None for every date."""
    if at is None:
        return None
    days = pl.Series(at, dtype=pl.Date).to_physical().to_numpy()
    return np.flatnonzero(np.isin(panel.grid.days, days))


def _scores(panel: PanelGrid, rows: np.ndarray | None, name: str, dense: np.ndarray) -> pl.DataFrame:
    """``date, symbol, name`` of the panel's rows (of the dates ``rows`` only, when given) from ``dense``,
    (T, N) or (len(rows), N)."""
    if rows is None:
        return with_score(panel.rows, name, panel.gather(dense))
    keep = np.isin(panel.t, rows)
    position = np.searchsorted(rows, panel.t[keep])
    return with_score(panel.rows.filter(pl.Series(keep)), name, dense[position, panel.n[keep]])


def beta(
    df: pl.DataFrame | pl.LazyFrame,
    *,
    window: int = 252,
    half_life: float = 63,
    min_observations: int = 63,
    at: Sequence[datetime.date] | None = None,
) -> pl.DataFrame:
    """Beta score per date and symbol: USE4's BETA descriptor (the exponentially weighted time-series
    regression slope on the cap-weighted market return, :func:`beta_descriptors`), trimmed at 3σ and
    standardized (cap-weighted mean 0, equal-weighted std 1).

    Parameters
    ----------
    df: long frame with ``date, symbol, asset_returns, market_cap``.
    window, half_life, min_observations: the regression's window, weight half-life and fewest returns (dates).
    at: only the scores of these dates (each window summed directly; a model extended by new dates).

    Returns
    -------
    DataFrame ``date, symbol, beta_score`` in date order (input order within a date).
    """
    panel, returns = _dense_inputs(df, "beta")
    rows = _dates_at(panel, at)
    style = _beta_style(returns, panel, window, half_life, min_observations, rows)
    return _scores(panel, rows, BETA_SCORE, style)


def _beta_regression(
    returns: np.ndarray,
    caps: np.ndarray,
    window: int,
    half_life: float,
    min_observations: int,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BETA and HSIGMA of the panel, of the dates ``rows`` only when given (computed once for the styles of
    one ``compute_styles`` call)."""
    return shared(
        ("use4 beta regression", window, half_life, min_observations, None if rows is None else rows.tobytes()),
        lambda: beta_descriptors(
            returns,
            market_return(returns, caps),
            window=window,
            half_life=half_life,
            min_observations=min_observations,
            at=rows,
        ),
    )


def _beta_style(
    returns: np.ndarray,
    panel: PanelGrid,
    window: int,
    half_life: float,
    min_observations: int,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """The (T, N) beta exposure (of the dates ``rows`` only when given): BETA on the panel's rows, trimmed and
    standardized (shared like the regression)."""

    def compute() -> np.ndarray:
        slope, _ = _beta_regression(returns, panel.caps, window, half_life, min_observations, rows)
        caps = panel.caps if rows is None else panel.caps[rows]
        return descriptor_to_style([slope], [1.0], caps, keep=_rows_mask(panel, rows))

    key = None if rows is None else rows.tobytes()
    return shared(("use4 beta style", window, half_life, min_observations, key), compute)


def resvol(
    df: pl.DataFrame | pl.LazyFrame,
    *,
    window: int = 252,
    beta_half_life: float = 63,
    dastd_half_life: float = 42,
    min_observations: int = 63,
    at: Sequence[datetime.date] | None = None,
) -> pl.DataFrame:
    """Residual volatility score per date and symbol: ``0.74 DASTD + 0.16 CMRA + 0.10 HSIGMA`` (each trimmed
    and standardized), standardized, orthogonalized to beta and size (cap-weighted) and standardized again.

    Parameters
    ----------
    df: long frame with ``date, symbol, asset_returns, market_cap``.
    window: DASTD's and the beta regression's window (dates); CMRA spans 12 months of 21 dates.
    beta_half_life, dastd_half_life: weight half-lives (dates) of the beta regression (HSIGMA) and DASTD.
    min_observations: fewest returns a descriptor needs in its window.
    at: only the scores of these dates (each window summed directly; a model extended by new dates).

    Returns
    -------
    DataFrame ``date, symbol, resvol_score`` in date order (input order within a date).
    """
    panel, returns = _dense_inputs(df, "resvol")
    rows = _dates_at(panel, at)
    _, hsigma = _beta_regression(returns, panel.caps, window, beta_half_life, min_observations, rows)
    volatility = dastd(returns, window=window, half_life=dastd_half_life, min_observations=min_observations, at=rows)
    descriptors = [volatility, cmra(returns, min_observations=min_observations, at=rows), hsigma]
    beta_style = _beta_style(returns, panel, window, beta_half_life, min_observations, rows)
    caps = panel.caps if rows is None else panel.caps[rows]
    style = descriptor_to_style(
        descriptors, RESVOL_WEIGHTS, caps, against=[beta_style], against_size=True, keep=_rows_mask(panel, rows)
    )
    return _scores(panel, rows, RESVOL_SCORE, style)


def nlsize(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Non-linear size score per date and symbol: the cube of USE4's size (standardized log market cap),
    orthogonalized to size by a cap-weighted regression, trimmed at 3σ and standardized.

    Parameters
    ----------
    df: long frame with ``date, symbol, market_cap`` (currency units, positive).

    Returns
    -------
    DataFrame ``date, symbol, nlsize_score`` in date order (input order within a date).
    """
    panel = panel_grid(df, "nlsize")
    return with_score(panel.rows, NLSIZE_SCORE, panel.gather(nonlinear_size(panel.caps)))
