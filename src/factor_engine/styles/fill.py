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
few passes over the universe's rows (compiled: :mod:`factor_engine.styles._fill_kernels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def _contiguous(array: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """``array`` as a C-ordered array of ``dtype`` (a copy only where it is not one already)."""
    return np.ascontiguousarray(array, dtype=dtype)


def _fill_in_place(
    values: np.ndarray,
    rows: np.ndarray,
    dates: np.ndarray,
    sectors: np.ndarray,
    size: np.ndarray,
    weights: np.ndarray,
    n_dates: int,
    n_sectors: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fill_by_sector_and_size` on usable rows, in place: the missing ``values[rows]`` (float64, C order)
    filled, given each row's date index, sector code, size and regression weight (the rows in any order);
    returns the mask of the rows filled and the number filled on each date (int64)."""
    from factor_engine.styles import _fill_kernels

    wanted = np.empty(rows.size, dtype=bool)
    counts = np.zeros(n_dates, dtype=np.int64)
    _fill_kernels.fill_rows(
        values,
        _contiguous(rows, np.int64),
        _contiguous(dates, np.int64),
        _contiguous(sectors, np.int64),
        _contiguous(size, np.float64),
        _contiguous(weights, np.float64),
        n_dates,
        n_sectors,
        MIN_OBSERVED,
        wanted,
        counts,
    )
    return wanted, counts


def _fill_rows(
    values: np.ndarray,
    dates: np.ndarray,
    sectors: np.ndarray,
    size: np.ndarray,
    weights: np.ndarray,
    n_dates: int,
    n_sectors: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fill_by_sector_and_size` on usable rows: ``values`` (NaN where missing), each row's date index
    (any order), sector code, size and regression weight; returns the filled values and the mask of those
    filled."""
    filled = np.array(values, dtype=np.float64)
    wanted, _ = _fill_in_place(filled, np.arange(filled.size), dates, sectors, size, weights, n_dates, n_sectors)
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
    fitted, wanted = _fill_rows(values[t, n], t, codes, size[t, n], np.sqrt(caps[t, n]), values.shape[0], n_sectors)
    filled = values.copy()
    filled[t, n] = fitted
    was_filled = np.zeros(values.shape, dtype=bool)
    was_filled[t, n] = wanted
    return filled, was_filled


def _date_index(dates: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Each row's index into the sorted unique dates, and those dates (one pass for rows in date order)."""
    from factor_engine.styles import _fill_kernels

    days = dates.to_physical().to_numpy()
    if days.size:
        index = np.empty(days.size, dtype=np.int64)
        starts = _fill_kernels.sorted_date_index(days, index)
        if starts.size:
            return index, dates.gather(starts)
    unique, index = np.unique(days, return_inverse=True)
    return index, pl.Series(dates.name, unique.astype(np.int32)).cast(pl.Date)


def _size_rows(caps: np.ndarray, dates: np.ndarray, n_dates: int) -> np.ndarray:
    """USE4's size of each row: the log cap trimmed at 3σ and standardized within its date (the row-space twin
    of the size :mod:`factor_engine.styles.descriptors` computes on the grid); 0 on a date whose caps are all
    equal, NaN for a row without a (positive) cap. The rows may be in any order of their date indices."""
    from factor_engine.styles import _fill_kernels

    caps = _contiguous(caps, np.float64)
    if caps.flags.writeable:  # one compiled signature: a frame's column may come read-only (shared memory)
        caps = caps.view()
        caps.flags.writeable = False
    with np.errstate(invalid="ignore", divide="ignore"):
        size = np.log(caps)  # finite where the cap is finite and positive
    _fill_kernels.size_rows(caps, _contiguous(dates, np.int64), n_dates, TRIM_SIGMA, CONSTANT_TOL, size)
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
        score = scores.get_column(column).cast(pl.Float64)
        if order is None:
            values = score.to_numpy(writable=True)  # filled in place (a copy of the column's data at most once)
        else:
            values = np.full(self.keys.height, np.nan)
            values[order] = score.to_numpy()
        if order is None and bool(np.isfinite(values).all()):
            counts = np.zeros(self.dates.len(), dtype=np.int64)  # nothing missing: nothing to fill
        else:
            _, counts = _fill_in_place(
                values, self.used, self.t, self.sectors, self.size, self.weights, self.dates.len(), self.n_sectors
            )
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
    # a finite size implies a finite, positive cap
    used = np.flatnonzero((sectors >= 0) & np.isfinite(size))
    if used.size == t.size:  # every row takes part (the usual case): no copies
        t_used, sectors_used, size_used, caps_used = t, sectors, size, caps
    else:
        t_used, sectors_used, size_used, caps_used = t[used], sectors[used], size[used], caps[used]
    return FillContext(
        keys=keys.select(DATE, SYMBOL),
        dates=dates,
        used=used,
        t=t_used,
        sectors=sectors_used,
        size=size_used,
        weights=np.sqrt(caps_used),
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
