"""The panel on the dense (dates × symbols) grid, shared by the styles of one ``compute_styles`` call.

The dense styles (liquidity, the descriptor styles) start from the same rows, grid and market caps;
:func:`panel_grid` computes those once per :func:`factor_engine.styles.compute_styles` call
(:mod:`factor_engine.styles._shared`) and each style loads only its own columns, in the same row order
(:func:`factor_engine.styles._common.load_expressions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from factor_engine._grid import Grid, build_grid, check_unique
from factor_engine.panel import DATE, MARKET_CAP, SYMBOL
from factor_engine.styles._common import load_expressions, load_inputs
from factor_engine.styles._shared import shared

__all__ = ["PanelGrid", "date_ordered_grid", "panel_grid"]


@dataclass(frozen=True)
class PanelGrid:
    """The panel's rows on the dense grid.

    Attributes
    ----------
    rows: ``date, symbol`` of the panel in the styles' row order (date order, input order within a date).
    grid: the sorted date and symbol axes (T dates, N symbols).
    t, n: (rows,) date and symbol index of each row.
    caps: (T, N) market caps (currency units), NaN where the panel has no row.
    on_rows: (T, N) True where the panel has a row.
    cells: (rows,) each row's cell in the flattened (T · N) grid, ``t · N + n``.
    """

    rows: pl.DataFrame
    grid: Grid
    t: np.ndarray
    n: np.ndarray
    caps: np.ndarray
    on_rows: np.ndarray
    cells: np.ndarray

    def scatter(self, values: np.ndarray) -> np.ndarray:
        """A (T, N) array holding the (rows,) ``values`` at their cells, NaN elsewhere."""
        return _scatter(self.grid, self.cells, values)

    def gather(self, dense: np.ndarray) -> np.ndarray:
        """The (rows,) values of a (T, N) array at the rows' cells."""
        gathered: np.ndarray = np.take(dense, self.cells)
        return gathered

    def load(
        self, df: pl.DataFrame | pl.LazyFrame, what: str, columns: Sequence[str], expressions: Mapping[str, pl.Expr]
    ) -> list[np.ndarray]:
        """Each expression evaluated on ``df`` (which holds ``columns``) as a (T, N) array, NaN where missing."""
        frame = load_expressions(df, what, columns, expressions)
        if frame.height != self.rows.height:
            raise ValueError(f"{what}: the panel changed between loads ({self.rows.height} then {frame.height} rows)")
        return [self.scatter(frame[name].to_numpy()) for name in expressions]


def panel_grid(df: pl.DataFrame | pl.LazyFrame, what: str) -> PanelGrid:
    """The rows, grid and market caps of ``df`` (which needs ``date, symbol, market_cap``), computed once per
    ``compute_styles`` call."""
    return shared("styles panel grid and caps", lambda: _load(df, what))


def _load(df: pl.DataFrame | pl.LazyFrame, what: str) -> PanelGrid:
    frame = load_inputs(df, what, (MARKET_CAP,))  # in date order
    grid, t, n = date_ordered_grid(frame)
    cells = t * grid.n_symbols + n
    if not bool(np.all(cells[1:] > cells[:-1])):  # rows sorted by (date, symbol) are unique
        check_unique(grid, t, n, f"{what} input")
    caps = _scatter(grid, cells, frame[MARKET_CAP].to_numpy())
    on_rows = np.zeros(caps.shape, dtype=bool)
    on_rows.ravel()[cells] = True
    rows = frame.select(frame.columns[:2])
    return PanelGrid(rows=rows, grid=grid, t=t, n=n, caps=caps, on_rows=on_rows, cells=cells)


def _scatter(grid: Grid, cells: np.ndarray, values: np.ndarray) -> np.ndarray:
    dense = np.full(grid.n_dates * grid.n_symbols, np.nan)
    dense[cells] = values
    return dense.reshape(grid.n_dates, grid.n_symbols)


def date_ordered_grid(frame: pl.DataFrame) -> tuple[Grid, np.ndarray, np.ndarray]:
    """The grid of a frame in date order and each row's (date, symbol) index: the dates where they change
    (one pass, no sort; the same axes as :func:`factor_engine._grid.build_grid`)."""
    if frame.height == 0:
        grid = build_grid([frame])
        return grid, np.zeros(0, np.int64), np.zeros(0, np.int64)
    days = frame[DATE].to_physical().to_numpy()
    change = np.empty(days.shape[0], dtype=bool)
    change[0] = True
    np.not_equal(days[1:], days[:-1], out=change[1:])
    t = np.cumsum(change) - 1
    symbols = frame[SYMBOL].unique(maintain_order=True).sort()  # maintain_order: faster at millions of rows
    if symbols.null_count():
        raise ValueError("null symbol in the input")
    grid = Grid(days=days[change].astype(np.int32), symbols=symbols.rename(SYMBOL))
    n = frame[SYMBOL].cast(pl.Enum(symbols)).to_physical().to_numpy().astype(np.int64)
    return grid, t, n
