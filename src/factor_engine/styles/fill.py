"""USE4's treatment of missing style exposures: filled by a regression on sectors and size.

A USE4 style needs history or data an asset may lack on a date (a new listing has no 252-day beta yet, a
company no reported dividend). Barra USE4 (Menchero, Orr and Wang, "The Barra US Equity Model (USE4):
Methodology Notes", MSCI 2011, §3.2) does not drop such an asset from the cross-section: its missing
descriptor is filled by regressing the style, over the assets that have it, on industry dummies and size,
and taking the fitted value.

Here, date by date and style by style: the exposure ``y`` of the assets that have one is regressed, weighted
by the square root of market cap (the model's regression weights), on one dummy per sector and USE4's size
(the log market cap, trimmed at 3σ and standardized, as :mod:`factor_engine.styles.use4` uses it),

    ``y_i = a_sector(i) + b · size_i + e_i``,

and an asset without the exposure gets ``a_sector(i) + b · size_i``. A sector with no asset holding the
exposure that date takes the date's intercept (the same regression without sector dummies). A date on which
fewer than :data:`MIN_OBSERVED` assets have the exposure is left as it is (nothing to learn from), as is an
asset without a sector, cap or size. The fit uses within-sector sums (no matrix is formed), so it costs a
few passes over the (dates × assets) grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from factor_engine._grid import build_grid
from factor_engine.panel import DATE, MARKET_CAP, SECTOR, SYMBOL
from factor_engine.styles.descriptors import log_size

__all__ = ["MIN_OBSERVED", "fill_by_sector_and_size", "fill_missing_exposures"]

#: Fewest assets with the exposure on a date for its missing values to be filled.
MIN_OBSERVED = 10


def _sums(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=size)


def _fill_rows(
    values: np.ndarray,
    dates: np.ndarray,
    sectors: np.ndarray,
    size: np.ndarray,
    weights: np.ndarray,
    n_dates: int,
    n_sectors: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fill_by_sector_and_size` on usable rows: ``values`` (NaN where missing), each row's date index,
    sector code, size and regression weight; returns the filled values and the mask of those filled."""
    observed = np.isfinite(values)
    enough = np.bincount(dates[observed], minlength=n_dates) >= MIN_OBSERVED
    wanted = ~observed & enough[dates]
    filled = values.copy()
    if n_sectors == 0 or not wanted.any():
        return filled, wanted
    w, x, y = weights[observed], size[observed], values[observed]
    cell = dates[observed] * n_sectors + sectors[observed]
    cells = n_dates * n_sectors
    wx = w * x
    sw, swx, swy = _sums(cell, w, cells), _sums(cell, wx, cells), _sums(cell, w * y, cells)
    swxx, swxy = _sums(cell, wx * x, cells), _sums(cell, wx * y, cells)
    shape = (n_dates, n_sectors)
    sw, swx, swy, swxx, swxy = (a.reshape(shape) for a in (sw, swx, swy, swxx, swxy))
    present = sw > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        # the slope from within-sector deviations (the dummies absorb each sector's mean)
        sxx = np.where(present, swxx - swx * swx / sw, 0.0).sum(axis=1)
        sxy = np.where(present, swxy - swx * swy / sw, 0.0).sum(axis=1)
        slope = np.where(sxx > 1e-12 * np.maximum(swxx.sum(axis=1), 1e-300), sxy / sxx, 0.0)
        intercept = np.where(present, (swy - slope[:, None] * swx) / sw, np.nan)
        # a sector without observations that date: the date's pooled intercept
        pooled = (swy.sum(axis=1) - slope * swx.sum(axis=1)) / sw.sum(axis=1)
    intercept = np.where(present, intercept, pooled[:, None])
    t_fill = dates[wanted]
    filled[wanted] = intercept[t_fill, sectors[wanted]] + slope[t_fill] * size[wanted]
    return filled, wanted


def fill_by_sector_and_size(
    values: np.ndarray, sectors: np.ndarray, size: np.ndarray, caps: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Missing exposures filled by the date's sqrt-cap-weighted regression on sector dummies and size.

    Parameters
    ----------
    values: (T, N) style exposures, NaN where missing.
    sectors: (T, N) sector codes 0…S−1, −1 where an asset has none.
    size: (T, N) USE4 size exposure (standardized log cap), NaN where unknown.
    caps: (T, N) market caps (currency units).
    rows: (T, N) True where the panel has a row (only those are filled).

    Returns
    -------
    ``(filled, was_filled)``: the exposures with the fitted values in place of the missing ones, and the
    (T, N) mask of the values filled.
    """
    with np.errstate(invalid="ignore"):
        usable = rows & (sectors >= 0) & np.isfinite(size) & np.isfinite(caps) & (caps > 0)
    t, n = np.nonzero(usable)
    n_sectors = int(sectors.max(initial=-1)) + 1
    fitted, wanted = _fill_rows(
        values[t, n], t, sectors[t, n], size[t, n], np.sqrt(caps[t, n]), values.shape[0], n_sectors
    )
    filled = values.copy()
    filled[t, n] = fitted
    was_filled = np.zeros(values.shape, dtype=bool)
    was_filled[t, n] = wanted
    return filled, was_filled


def fill_missing_exposures(
    universe: pl.DataFrame, scores: pl.DataFrame, columns: Sequence[str]
) -> tuple[pl.DataFrame, dict[str, np.ndarray], pl.Series]:
    """``scores`` with the missing values of ``columns`` filled by :func:`fill_by_sector_and_size`.

    Parameters
    ----------
    universe: ``date, symbol, sector, market_cap`` rows of the model's universe.
    scores: ``date, symbol`` + score columns, on the universe's rows.
    columns: the score columns to fill.

    Returns
    -------
    ``(scores, filled, dates)``: the filled scores (same rows and order), for each column the number of values
    filled on each date (an int64 array aligned with ``dates``), and the sorted dates.
    """
    keys = universe.select(DATE, SYMBOL, SECTOR, MARKET_CAP)
    grid = build_grid([keys])
    t, n = grid.locate(keys)
    labels = keys.get_column(SECTOR)
    names = labels.drop_nulls().unique().sort()
    sectors = labels.cast(pl.Enum(names.to_list())).to_physical().fill_null(-1).to_numpy().astype(np.int64)
    caps = keys.get_column(MARKET_CAP).cast(pl.Float64).to_numpy()
    size = log_size(grid.scatter(t, n, caps))[t, n]
    with np.errstate(invalid="ignore"):
        usable = (sectors >= 0) & np.isfinite(size) & np.isfinite(caps) & (caps > 0)
    if scores.select(DATE, SYMBOL).equals(keys.select(DATE, SYMBOL)):  # the styles' rows are the universe's
        order = None
    else:
        located = keys.select(DATE, SYMBOL).with_row_index("__key_row__")
        matched = scores.select(DATE, SYMBOL).join(located, on=[DATE, SYMBOL], how="left", maintain_order="left")
        if matched["__key_row__"].null_count():
            raise ValueError("scores hold rows that are not in the universe")
        order = matched["__key_row__"].to_numpy()
    counts: dict[str, np.ndarray] = {}
    replaced = []
    rows_used = np.flatnonzero(usable)
    for column in columns:
        score = scores.get_column(column).cast(pl.Float64).to_numpy()
        values = np.full(keys.height, np.nan)
        if order is None:
            values[:] = score
        else:
            values[order] = score
        fitted, wanted = _fill_rows(
            values[rows_used],
            t[rows_used],
            sectors[rows_used],
            size[rows_used],
            np.sqrt(caps[rows_used]),
            grid.n_dates,
            len(names),
        )
        values[rows_used] = fitted
        counts[column] = np.bincount(t[rows_used][wanted], minlength=grid.n_dates).astype(np.int64)
        result = values if order is None else values[order]
        replaced.append(pl.Series(column, result, nan_to_null=True))
    return scores.with_columns(replaced), counts, grid.date_series()
