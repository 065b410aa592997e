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
exposure that date takes the date's intercept (the same regression without sector dummies). On a date whose
caps are all equal (a model without caps gives every asset a cap of 1) size has no dispersion: it is 0 for
every asset and the fit is on the sectors alone, equally weighted. A date on which fewer than
:data:`MIN_OBSERVED` assets have the exposure is left as it is (nothing to learn from), as is an asset without
a sector or a cap. The fit uses within-sector sums (no matrix is formed), so it costs a
few passes over the (dates × assets) grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

from factor_engine.panel import DATE, MARKET_CAP, SECTOR, SYMBOL
from factor_engine.styles.descriptors import TRIM_SIGMA
from factor_engine.xsection import CONSTANT_TOL

__all__ = [
    "MIN_OBSERVED",
    "FillContext",
    "fill_by_sector_and_size",
    "fill_context",
    "fill_missing_exposures",
]

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
    cell: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fill_by_sector_and_size` on usable rows: ``values`` (NaN where missing), each row's date index,
    sector code, size, regression weight and (date, sector) cell ``date · n_sectors + sector``; returns the
    filled values and the mask of those filled."""
    observed = np.isfinite(values)
    enough = np.bincount(dates[observed], minlength=n_dates) >= MIN_OBSERVED
    wanted = ~observed & enough[dates]
    filled = values.copy()
    if n_sectors == 0 or not wanted.any():
        return filled, wanted
    w, x, y = weights[observed], size[observed], values[observed]
    cell = cell[observed]
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
    codes = sectors[t, n]
    fitted, wanted = _fill_rows(
        values[t, n], t, codes, size[t, n], np.sqrt(caps[t, n]), values.shape[0], n_sectors, t * n_sectors + codes
    )
    filled = values.copy()
    filled[t, n] = fitted
    was_filled = np.zeros(values.shape, dtype=bool)
    was_filled[t, n] = wanted
    return filled, was_filled


def _date_index(dates: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Each row's index into the sorted unique dates, and those dates (one pass for rows in date order)."""
    days = dates.to_physical().to_numpy()
    if days.size and bool(np.all(days[1:] >= days[:-1])):
        change = np.empty(days.size, dtype=bool)
        change[0] = True
        np.not_equal(days[1:], days[:-1], out=change[1:])
        return np.cumsum(change) - 1, dates.filter(pl.Series(change))
    unique, index = np.unique(days, return_inverse=True)
    return index, pl.Series(dates.name, unique.astype(np.int32)).cast(pl.Date)


@dataclass(frozen=True)
class _ByDate:
    """Per-date sums of row values and per-row copies of per-date values, for rows given by their date index:
    contiguous segments (``np.add.reduceat``, ``np.repeat``) when the rows are in date order, as the
    universe's are, else ``np.bincount`` and a gather."""

    dates: np.ndarray
    n_dates: int
    lengths: np.ndarray | None  # rows per date when in date order

    @classmethod
    def of(cls, dates: np.ndarray, n_dates: int) -> _ByDate:
        in_order = dates.size == 0 or bool(np.all(dates[1:] >= dates[:-1]))
        return cls(dates, n_dates, np.bincount(dates, minlength=n_dates) if in_order else None)

    def sum(self, values: np.ndarray) -> np.ndarray:
        if self.lengths is None:
            return np.bincount(self.dates, weights=values, minlength=self.n_dates)
        sums = np.zeros(self.n_dates)
        nonempty = self.lengths > 0
        if values.size:
            starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))
            sums[nonempty] = np.add.reduceat(values, starts[nonempty])
        return sums

    def expand(self, per_date: np.ndarray) -> np.ndarray:
        return np.repeat(per_date, self.lengths) if self.lengths is not None else per_date[self.dates]


def _standardized_rows(
    values: np.ndarray, cap_weights: np.ndarray, by_date: _ByDate
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per date, the rows standardized to a cap-weighted mean of 0 and an equal-weighted std of 1 (ddof 1) as
    :func:`factor_engine.styles.descriptors.standardize_use4` does on the grid; also each date's cap-weighted
    mean and std."""
    finite = np.isfinite(values)
    clean = np.where(finite, values, 0.0)
    count = by_date.sum(finite.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = cap_weights * finite
        cap_mean = by_date.sum(weights * clean) / by_date.sum(weights)
        del weights
        mean = by_date.sum(clean) / count
        clean -= by_date.expand(mean)
        clean *= finite
        std = np.sqrt(by_date.sum(clean * clean) / (count - 1))
        del clean
        std[~(std > CONSTANT_TOL * np.maximum(np.maximum(np.abs(mean), np.abs(cap_mean)), 1e-300))] = np.nan
        standardized = values - by_date.expand(cap_mean)
        standardized /= by_date.expand(std)
    return standardized, cap_mean, std


def _size_rows(caps: np.ndarray, dates: np.ndarray, n_dates: int) -> np.ndarray:
    """USE4's size of each row: the log cap trimmed at 3σ and standardized within its date (the row-space twin
    of the size :mod:`factor_engine.styles.descriptors` computes on the grid); 0 on a date whose caps are all
    equal."""
    by_date = _ByDate.of(dates, n_dates)
    with np.errstate(invalid="ignore", divide="ignore"):
        usable = np.isfinite(caps) & (caps > 0)
        log_cap = np.where(usable, np.log(np.where(usable, caps, 1.0)), np.nan)
    cap_weights = np.where(usable, caps, 0.0)
    _, cap_mean, std = _standardized_rows(log_cap, cap_weights, by_date)
    half_width = TRIM_SIGMA * std
    clipped = np.clip(log_cap, by_date.expand(cap_mean - half_width), by_date.expand(cap_mean + half_width))
    size = _standardized_rows(clipped, cap_weights, by_date)[0]
    # a date whose caps are all equal (a panel without caps, given caps of 1) has no size: 0 for every asset,
    # so the fit there is on the sectors alone
    flat = by_date.expand(~(std > 0)) & usable
    size[flat] = 0.0
    return size


@dataclass(frozen=True)
class FillContext:
    """What filling a universe's exposures needs, computed once for all its styles (:func:`fill_context`).

    Attributes
    ----------
    keys: ``date, symbol`` of the universe's rows.
    dates: the sorted dates (T,).
    used: (R,) positions of the rows that can take part: a sector, a positive cap and a size.
    t, sectors, size, weights: (R,) date index, sector code, USE4 size and √cap of those rows.
    n_sectors: number of sector codes.
    """

    keys: pl.DataFrame
    dates: pl.Series
    used: np.ndarray
    t: np.ndarray
    sectors: np.ndarray
    size: np.ndarray
    weights: np.ndarray
    n_sectors: int

    @cached_property
    def cells(self) -> np.ndarray:
        """(R,) each row's (date, sector) cell, ``t · n_sectors + sector``."""
        cells: np.ndarray = self.t * self.n_sectors + self.sectors
        return cells

    def fill(self, scores: pl.DataFrame, column: str) -> tuple[pl.DataFrame, np.ndarray]:
        """``scores`` (``date, symbol`` + ``column``, rows of the universe) with the missing values of
        ``column`` filled, and the number filled on each date (int64, aligned with :attr:`dates`)."""
        if scores.height == self.keys.height and scores.select(DATE, SYMBOL).equals(self.keys):
            order = None  # the usual case: a style's rows are the universe's, in the same order
        else:
            located = self.keys.with_row_index("__key_row__")
            matched = scores.select(DATE, SYMBOL).join(located, on=[DATE, SYMBOL], how="left", maintain_order="left")
            if matched["__key_row__"].null_count():
                raise ValueError("scores hold rows that are not in the universe")
            order = matched["__key_row__"].to_numpy()
        score = scores.get_column(column).cast(pl.Float64).to_numpy()
        values = np.full(self.keys.height, np.nan)
        if order is None:
            values[:] = score
        else:
            values[order] = score
        n_dates = self.dates.len()
        fitted, wanted = _fill_rows(
            values[self.used], self.t, self.sectors, self.size, self.weights, n_dates, self.n_sectors, self.cells
        )
        values[self.used] = fitted
        counts = np.bincount(self.t[wanted], minlength=n_dates).astype(np.int64)
        result = values if order is None else values[order]
        return scores.with_columns(pl.Series(column, result, nan_to_null=True)), counts


def fill_context(universe: pl.DataFrame) -> FillContext:
    """The :class:`FillContext` of a universe (``date, symbol, sector, market_cap`` rows)."""
    keys = universe.select(DATE, SYMBOL, SECTOR, MARKET_CAP)
    t, dates = _date_index(keys.get_column(DATE))
    labels = keys.get_column(SECTOR)
    names = labels.drop_nulls().unique().sort()
    sectors = labels.cast(pl.Enum(names.to_list())).to_physical().fill_null(-1).to_numpy().astype(np.int64)
    caps = keys.get_column(MARKET_CAP).cast(pl.Float64).to_numpy()
    size = _size_rows(caps, t, dates.len())
    with np.errstate(invalid="ignore"):
        used = np.flatnonzero((sectors >= 0) & np.isfinite(size) & np.isfinite(caps) & (caps > 0))
    return FillContext(
        keys=keys.select(DATE, SYMBOL),
        dates=dates,
        used=used,
        t=t[used],
        sectors=sectors[used],
        size=size[used],
        weights=np.sqrt(caps[used]),
        n_sectors=len(names),
    )


def fill_missing_exposures(
    universe: pl.DataFrame, scores: pl.DataFrame, columns: Sequence[str]
) -> tuple[pl.DataFrame, dict[str, np.ndarray], pl.Series]:
    """``scores`` with the missing values of ``columns`` filled by :func:`fill_by_sector_and_size`, computed on
    the rows (no dates × symbols grid).

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
    context = fill_context(universe)
    counts: dict[str, np.ndarray] = {}
    for column in columns:
        scores, counts[column] = context.fill(scores, column)
    return scores, counts, context.dates
