"""Momentum: exponentially weighted trailing cumulative return, skipping the latest ``lag`` observations."""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Sequence

import numpy as np
import polars as pl

from factor_engine._dense import (
    date_bounds,
    run_parallel,
    standardize,
    standardize_rows,
    winsorize,
    winsorize_rows,
    worker_count,
)
from factor_engine._grid import Grid, check_unique
from factor_engine.panel import RETURNS
from factor_engine.styles._common import load_inputs, with_score
from factor_engine.styles._panel_grid import date_ordered_grid

SCORE = "mom_score"

# Returns at least this large in magnitude are handled exactly; smaller ones through the power series.
_SERIES_LIMIT = 0.1
# Stop the power series when the largest remaining term is below this (absolute, in log-growth units).
_SERIES_TOL = 1e-14


def momentum(
    df: pl.DataFrame | pl.LazyFrame,
    *,
    trailing_days: int = 252,
    half_life: int | float = 126,
    lag: int = 20,
    winsor_factor: float | None = 0.01,
    at: Sequence[datetime.date] | None = None,
) -> pl.DataFrame:
    """Momentum score per date and symbol: the exponentially weighted cumulative return
    ``prod(1 + w_j r_j) - 1`` over ``trailing_days`` observations ending ``lag`` observations before the date,
    winsorized and standardized cross-sectionally (toraniko 1.1.1's definition).

    Parameters
    ----------
    df: long frame with ``date, symbol, asset_returns`` (daily simple returns, fractions).
    trailing_days: window length in observations (rows of the symbol, not calendar days).
    half_life: observations over which the weight of a return halves; the newest return has weight 1.
    lag: observations skipped before the window ends (20 ≈ one month, excludes short-term reversal).
    winsor_factor: fraction clipped at each tail per date before standardizing; None disables.
    at: only the scores of these dates (each product summed directly over its window; equal to the full run's
        up to rounding): a model extended by new dates. The rows of other dates are left out of the result.

    Returns
    -------
    DataFrame ``date, symbol, mom_score`` in date order (input order within a date; input not sorted by
    date is sorted by (date, symbol)); the score is null until a symbol has
    ``lag + trailing_days`` observations, and when any return in its window is missing.
    """
    if isinstance(trailing_days, bool) or not isinstance(trailing_days, int) or trailing_days <= 0:
        raise ValueError(f"trailing_days must be a positive integer, got {trailing_days!r}")
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 0:
        raise ValueError(f"lag must be a non-negative integer, got {lag!r}")
    if not np.isfinite(half_life) or half_life <= 0:
        raise ValueError(f"half_life must be positive, got {half_life!r}")
    frame = load_inputs(df, "momentum", (RETURNS,))
    grid, t, n = date_ordered_grid(frame)
    check_unique(grid, t, n, "momentum input")
    returns = frame[RETURNS].to_numpy()
    if at is not None:
        return _momentum_at(frame, grid, t, n, returns, at, trailing_days, half_life, lag, winsor_factor)
    from factor_engine.styles._momentum_kernels import symbol_major_order

    # each symbol's rows in date order, symbols one after another (a stable counting sort by symbol: the frame
    # is in date order), the growth computed along them and put back in the frame's order
    order = symbol_major_order(n, grid.n_symbols)
    by_symbol = n[order]
    new_symbol = np.ones(order.shape[0], dtype=bool)
    new_symbol[1:] = by_symbol[1:] != by_symbol[:-1]
    scores = np.empty(order.shape[0])
    scores[order] = trailing_weighted_growth(returns[order], new_symbol, trailing_days, half_life, lag)
    # the statistics run date by date on the frame's rows
    bounds = date_bounds(frame)
    if winsor_factor is not None:
        scores = winsorize_rows(scores, bounds, winsor_factor)
    return with_score(frame, SCORE, standardize_rows(scores, bounds))


def _momentum_at(
    frame: pl.DataFrame,
    grid: Grid,
    t: np.ndarray,
    n: np.ndarray,
    returns: np.ndarray,
    at: Sequence[datetime.date],
    trailing_days: int,
    half_life: float,
    lag: int,
    winsor_factor: float | None,
) -> pl.DataFrame:
    """:func:`momentum`'s scores of the dates ``at`` only, each product summed directly over its window."""
    # each symbol's history in date order, symbols one after another: the transposed grid, flattened
    present = np.zeros((grid.n_symbols, grid.n_dates), dtype=bool)
    present[n, t] = True
    by_symbol = np.full((grid.n_symbols, grid.n_dates), np.nan)
    by_symbol[n, t] = returns
    symbol_of_row = np.nonzero(present)[0]
    new_symbol = np.ones(symbol_of_row.shape[0], dtype=bool)
    new_symbol[1:] = symbol_of_row[1:] != symbol_of_row[:-1]
    wanted = _date_rows(grid, at)  # grid date indices
    keep = np.isin(t, wanted)
    # each wanted row's position in the symbols' concatenated histories (symbol-major, date order)
    flat = np.cumsum(present.ravel()).reshape(present.shape) - 1
    targets = flat[n[keep], t[keep]]
    values = trailing_growth_at(by_symbol[present], new_symbol, targets, trailing_days, half_life, lag)
    position = np.searchsorted(wanted, t[keep])
    dense = np.full((wanted.size, grid.n_symbols), np.nan)
    dense[position, n[keep]] = values
    if winsor_factor is not None:
        dense = winsorize(dense, winsor_factor)
    return with_score(frame.filter(pl.Series(keep)), SCORE, standardize(dense)[position, n[keep]])


def _date_rows(grid: Grid, at: Sequence[datetime.date]) -> np.ndarray:
    """Sorted date indices on ``grid`` of the dates ``at`` (those it holds)."""
    days = pl.Series(at, dtype=pl.Date).to_physical().to_numpy()
    return np.flatnonzero(np.isin(grid.days, days))


def trailing_growth_at(
    returns: np.ndarray, new_segment: np.ndarray, targets: np.ndarray, window: int, half_life: float, lag: int
) -> np.ndarray:
    """:func:`trailing_weighted_growth` at the positions ``targets`` only: each product summed directly, as
    ``Σ_j log1p(w_j r_j)`` over its window (NaN where the window leaves the symbol's history or holds a
    non-finite return)."""
    n = returns.shape[0]
    starts = np.flatnonzero(new_segment)
    segment_start = starts[np.searchsorted(starts, targets, side="right") - 1] if targets.size else targets
    ends = targets - lag
    first = ends - window + 1
    ok = first >= segment_start
    out = np.full(targets.shape[0], np.nan)
    if not ok.any():
        return out
    offsets = np.arange(window)
    weights = np.exp(-np.log(2.0) / half_life) ** (window - 1 - offsets)
    index = np.clip(first[ok][:, None] + offsets[None, :], 0, n - 1)
    window_returns = returns[index]
    with np.errstate(invalid="ignore", divide="ignore"):
        growth = np.expm1(np.log1p(window_returns * weights[None, :]).sum(axis=1))
    out[ok] = np.where(np.isfinite(window_returns).all(axis=1), growth, np.nan)
    return out


def trailing_weighted_growth(
    returns: np.ndarray, new_segment: np.ndarray, window: int, half_life: float, lag: int
) -> np.ndarray:
    """``prod_j(1 + w_j r_{p-lag-window+1+j}) - 1`` for every position ``p`` of a series of concatenated
    symbol histories, with ``w_j = 2**(-(window-1-j)/half_life)``; NaN where the window leaves the symbol's
    history or holds a non-finite return.

    The log of the product is a sum of ``log1p(w r)`` over the window. Returns below ``_SERIES_LIMIT`` in
    magnitude enter through the power series of ``log1p``: each power is a truncated exponentially weighted
    sum, all of them advanced in one compiled pass along each symbol's history
    (:func:`factor_engine.styles._momentum_kernels.weighted_growth`). Larger returns (rare) are added exactly.
    The result matches the direct product to about 1e-14. Work is split across CPU cores at symbol boundaries.

    Parameters
    ----------
    returns: daily simple returns (fractions), symbol by symbol, each symbol's rows in date order.
    new_segment: boolean flags, True on the first row of each symbol.
    window, half_life, lag: as in :func:`momentum` (observations).
    """
    from factor_engine.styles._momentum_kernels import weighted_growth

    n = returns.shape[0]
    out = np.full(n, np.nan)
    if n == 0:
        return out
    returns = np.ascontiguousarray(returns, dtype=np.float64)
    starts = np.flatnonzero(new_segment)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    stops = np.append(starts[1:], n)
    decay = float(np.exp(-np.log(2.0) / half_life))
    # symbols in one piece per worker, of about equal rows
    cuts = np.searchsorted(stops, np.linspace(0, n, worker_count() + 1)[1:-1])
    pieces = [(a, b) for a, b in itertools.pairwise([0, *cuts.tolist(), starts.size]) if b > a]

    def run(piece: tuple[int, int]) -> None:
        first, last = piece
        weighted_growth(
            returns, starts[first:last], stops[first:last], window, lag, decay, _SERIES_LIMIT, _SERIES_TOL, out
        )

    run_parallel(run, pieces)
    return out
