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
    n_dates = values.shape[0]
    n_sectors = int(sectors.max(initial=-1)) + 1
    usable = rows & (sectors >= 0) & np.isfinite(size) & np.isfinite(caps) & (caps > 0)
    observed = usable & np.isfinite(values)
    wanted = usable & ~np.isfinite(values)
    enough = observed.sum(axis=1) >= MIN_OBSERVED
    wanted &= enough[:, None]
    filled = values.copy()
    if n_sectors == 0 or not wanted.any():
        return filled, wanted
    t_obs, n_obs = np.nonzero(observed)
    w = np.sqrt(caps[t_obs, n_obs])
    x = size[t_obs, n_obs]
    y = values[t_obs, n_obs]
    cell = t_obs * n_sectors + sectors[t_obs, n_obs]
    cells = n_dates * n_sectors
    sw, swx, swy = _sums(cell, w, cells), _sums(cell, w * x, cells), _sums(cell, w * y, cells)
    swxx, swxy = _sums(cell, w * x * x, cells), _sums(cell, w * x * y, cells)
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
    t_fill, n_fill = np.nonzero(wanted)
    filled[t_fill, n_fill] = intercept[t_fill, sectors[t_fill, n_fill]] + slope[t_fill] * size[t_fill, n_fill]
    return filled, wanted


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
    rows = np.zeros((grid.n_dates, grid.n_symbols), dtype=bool)
    rows[t, n] = True
    labels = keys.get_column(SECTOR)
    names = labels.drop_nulls().unique().sort()
    codes = labels.cast(pl.Enum(names.to_list())).to_physical().fill_null(-1).to_numpy().astype(np.int64)
    sectors = np.full(rows.shape, -1, dtype=np.int64)
    sectors[t, n] = codes
    caps = grid.scatter(t, n, keys.get_column(MARKET_CAP).cast(pl.Float64).to_numpy())
    size = log_size(caps)
    aligned = scores.join(keys.select(DATE, SYMBOL), on=[DATE, SYMBOL], how="semi").height == scores.height
    if not aligned:
        raise ValueError("scores hold rows that are not in the universe")
    ts, ns = grid.locate(scores)
    counts: dict[str, np.ndarray] = {}
    replaced = []
    for column in columns:
        values = grid.scatter(ts, ns, scores.get_column(column).cast(pl.Float64).to_numpy())
        filled, was_filled = fill_by_sector_and_size(values, sectors, size, caps, rows)
        counts[column] = was_filled.sum(axis=1).astype(np.int64)
        replaced.append(pl.Series(column, filled[ts, ns], nan_to_null=True))
    return scores.with_columns(replaced), counts, grid.date_series()
