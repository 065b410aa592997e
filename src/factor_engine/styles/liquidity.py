"""Barra USE4 liquidity from share turnover: STOM, STOQ and STOA.

Definitions follow Menchero, Orr and Wang, "The Barra US Equity Model (USE4): Methodology Notes" (MSCI,
2011), Appendix A. With ``V(t)`` the share turnover of date ``t`` (volume / shares outstanding) and a month of
21 trading days:

* **STOM**, monthly share turnover: ``ln(Σ_{last 21 days} V)``;
* **STOQ**, average share turnover of the last quarter: ``ln((1/3) Σ_{m=1..3} exp(STOM_m)) =
  ln((1/3) Σ_{last 63 days} V)``;
* **STOA**, average share turnover of the last year: ``ln((1/12) Σ_{last 252 days} V)``;
* **liquidity** (``liq_score``) = 0.35 STOM + 0.35 STOQ + 0.30 STOA (each trimmed at 3σ and standardized,
  :mod:`factor_engine.styles.descriptors`), standardized, orthogonalized to size (the log market cap,
  trimmed and standardized) by a cap-weighted regression and standardized again.

Turnover is the panel's ``turnover`` column when present, else ``volume / shares_outstanding``. A day without
a turnover (no row, a null, a negative or non-finite value) is a missing observation, not a zero: the sum over
a window of ``W`` days with ``c`` observed days is scaled by ``W / c``, and a window needs at least
``ceil(min_fraction · W)`` observed days (default one half: 11 of 21, 32 of 63, 126 of 252), else its
descriptor is missing (and the others' weights renormalized). A window whose observed turnover is all zero
has a log of −∞: the 3σ trim takes it to the lower bound (the least liquid), it is not a missing value.
Windows are in rows of the panel's date axis.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from factor_engine._dense import run_parallel
from factor_engine.panel import MARKET_CAP, SHARES_OUTSTANDING, TURNOVER, VOLUME
from factor_engine.styles._common import to_lazy, with_score
from factor_engine.styles._panel_grid import panel_grid
from factor_engine.styles.descriptors import descriptor_to_style

__all__ = [
    "LIQUIDITY_MONTHS",
    "LIQUIDITY_SCORE",
    "LIQUIDITY_WEIGHTS",
    "liquidity",
    "liquidity_descriptors",
    "share_turnover",
    "turnover_expression",
]

LIQUIDITY_SCORE = "liq_score"
#: Months of turnover in STOM, STOQ and STOA.
LIQUIDITY_MONTHS = (1, 3, 12)
#: USE4's weights of STOM, STOQ and STOA in liquidity.
LIQUIDITY_WEIGHTS = (0.35, 0.35, 0.30)
# assets per block of the window sums (bounds the (dates, assets) work arrays; blocks run in parallel)
_ASSETS_PER_BLOCK = 16


def _check(month_days: int, min_fraction: float) -> None:
    if isinstance(month_days, bool) or not isinstance(month_days, int) or month_days < 1:
        raise ValueError(f"month_days must be a positive integer, got {month_days!r}")
    if not (isinstance(min_fraction, int | float) and 0.0 < min_fraction <= 1.0):
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction!r}")


def _min_observations(window: int, min_fraction: float) -> int:
    return max(1, math.ceil(min_fraction * window - 1e-9))


def liquidity_descriptors(
    turnover: np.ndarray,
    *,
    months: tuple[int, ...] = LIQUIDITY_MONTHS,
    month_days: int = 21,
    min_fraction: float = 0.5,
    on_rows: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Share turnover descriptors, one (T, N) array per entry of ``months``: ``ln((1/m) · Σ V · W / c)`` over the
    last ``W = m · month_days`` rows with ``c`` observed turnovers; NaN with fewer than
    ``ceil(min_fraction · W)`` of them, −∞ when every observed turnover is zero. The defaults give STOM, STOQ
    and STOA.

    Parameters
    ----------
    turnover: (T, N) daily share turnover (fraction of shares outstanding), NaN where missing (negative and
        non-finite values are missing too).
    months: the windows in months (USE4: 1, 3, 12).
    month_days: trading days per month (USE4: 21).
    min_fraction: fewest observed days of a window, as a fraction of it.
    on_rows: (T, N) mask of the cells that get a descriptor (the panel's rows: a delisted asset's trailing
        windows must not reach later dates), NaN elsewhere; None: every cell.
    """
    _check(month_days, min_fraction)
    if not months or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in months):
        raise ValueError(f"months must be positive integers, got {months!r}")
    n_dates = turnover.shape[0]
    results = [np.full(turnover.shape, np.nan) for _ in months]

    def block(start: int) -> None:
        cols = slice(start, start + _ASSETS_PER_BLOCK)
        values = turnover[:, cols]
        with np.errstate(invalid="ignore"):
            observed = np.isfinite(values) & (values >= 0)
        # prefix sums with a leading zero row: the sum over rows (t − W, t] is prefix[t + 1] − prefix[t + 1 − W]
        # (prefix[0] = 0 for the first W rows);
        # the turnovers are ≥ 0, so the prefix sums never decrease and a window of zeros differs by exactly 0
        sums = np.zeros((n_dates + 1, values.shape[1]))
        np.cumsum(np.where(observed, values, 0.0), axis=0, out=sums[1:])
        counts = np.zeros((n_dates + 1, values.shape[1]))
        np.cumsum(observed, axis=0, out=counts[1:])
        for result, m in zip(results, months, strict=True):
            window = m * month_days
            head = min(window, n_dates)
            count = np.empty((n_dates, values.shape[1]))
            count[:head] = counts[1 : head + 1]
            np.subtract(counts[head + 1 :], counts[1 : n_dates + 1 - head], out=count[head:])
            total = np.empty(count.shape)
            total[:head] = sums[1 : head + 1]
            np.subtract(sums[head + 1 :], sums[1 : n_dates + 1 - head], out=total[head:])
            total *= window / m
            with np.errstate(invalid="ignore", divide="ignore"):
                total /= count
                value = np.log(total, out=total)
            keep = count >= _min_observations(window, min_fraction)
            if on_rows is not None:
                keep &= on_rows[:, cols]
            result[:, cols] = np.where(keep, value, np.nan)

    run_parallel(block, range(0, turnover.shape[1], _ASSETS_PER_BLOCK))
    return results


def share_turnover(turnover: np.ndarray, months: int, *, month_days: int = 21, min_fraction: float = 0.5) -> np.ndarray:
    """One share turnover descriptor (``months`` 1: STOM, 3: STOQ, 12: STOA) of
    :func:`liquidity_descriptors`, (T, N)."""
    return liquidity_descriptors(turnover, months=(months,), month_days=month_days, min_fraction=min_fraction)[0]


def turnover_expression(columns: list[str] | tuple[str, ...]) -> pl.Expr:
    """The daily share turnover of a panel with ``columns``: ``turnover`` when present, else
    ``volume / shares_outstanding``; ValueError when it has neither."""
    if TURNOVER in columns:
        return pl.col(TURNOVER)
    if VOLUME in columns and SHARES_OUTSTANDING in columns:
        return pl.col(VOLUME) / pl.col(SHARES_OUTSTANDING)
    raise ValueError(
        f"liquidity needs a {TURNOVER!r} column, or {VOLUME!r} and {SHARES_OUTSTANDING!r}; the panel has {columns}"
    )


def liquidity(df: pl.DataFrame | pl.LazyFrame, *, month_days: int = 21, min_fraction: float = 0.5) -> pl.DataFrame:
    """Liquidity score per date and symbol: ``0.35 STOM + 0.35 STOQ + 0.30 STOA`` (each trimmed at 3σ and
    standardized), standardized, orthogonalized to size (cap-weighted) and standardized again (see the module
    docstring for the definitions and the treatment of missing days).

    Parameters
    ----------
    df: long frame with ``date, symbol, market_cap`` and ``turnover`` (fraction of shares outstanding) or
        ``volume`` and ``shares_outstanding`` (shares).
    month_days: trading days per month (STOM's window; STOQ's is 3 months, STOA's 12).
    min_fraction: fewest observed days in a window, as a fraction of it (default 0.5).

    Returns
    -------
    DataFrame ``date, symbol, liq_score`` in date order (input order within a date).
    """
    _check(month_days, min_fraction)
    columns = to_lazy(df, "liquidity", (MARKET_CAP,)).collect_schema().names()
    expression = turnover_expression(columns)
    panel = panel_grid(df, "liquidity")
    (turnover,) = panel.load(df, "liquidity", expression.meta.root_names(), {TURNOVER: expression})
    descriptors = liquidity_descriptors(
        turnover, month_days=month_days, min_fraction=min_fraction, on_rows=panel.on_rows
    )
    style = descriptor_to_style(descriptors, LIQUIDITY_WEIGHTS, panel.caps, against_size=True)
    return with_score(panel.rows, LIQUIDITY_SCORE, panel.gather(style))
