"""The dense grid's dense → long step (:meth:`factor_engine._grid.Grid.cells_frame`), against np.nonzero."""

from __future__ import annotations

import numpy as np
import polars as pl

from factor_engine._grid import Grid


def test_cells_frame_is_the_nonzero_cells_in_date_symbol_order() -> None:
    rng = np.random.default_rng(5)
    days = np.sort(rng.choice(np.arange(18_000, 18_400), size=12, replace=False)).astype(np.int32)
    grid = Grid(days=days, symbols=pl.Series("symbol", [f"S{i}" for i in range(7)]))
    first = 3  # a (9, 7) array over the grid's dates 3 … 11
    values = rng.normal(size=(9, 7))
    other = rng.normal(size=(9, 7))
    mask = rng.random((9, 7)) > 0.4
    mask[4] = False  # a date without a cell
    frame = grid.cells_frame(mask, {"value": values, "other": other}, first=first)
    t, n = np.nonzero(mask)
    expected = pl.DataFrame(
        {
            "date": grid.date_series().gather(t + first),
            "symbol": grid.symbols.gather(n),
            "value": values[t, n],
            "other": other[t, n],
        }
    )
    assert frame.equals(expected) and frame.schema == expected.schema
    assert frame.height == mask.sum() > 20
    empty = grid.cells_frame(np.zeros((9, 7), dtype=bool), {"value": values}, first=first)
    assert empty.height == 0 and empty.schema == expected.select("date", "symbol", "value").schema
