"""Each style's declared lookback is enough: its scores of the last dates computed on the rows from
``history_start`` on equal those computed on the whole history (what a model update relies on)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from factor_engine.styles import (
    Descriptor,
    Lookback,
    available_styles,
    compute_styles,
    get_style,
    history_start,
    register_descriptor_style,
    unregister_style,
)
from factor_engine.synthetic import generate_market

USE4 = ("momentum", "value", "size", "beta", "resvol", "nlsize", "liquidity", "earnings_yield", "growth",
        "leverage", "dividend_yield", "btop")  # fmt: skip
LAST = 3  # the dates of the "update"


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    """A USE4 market of 120 assets x 420 dates with gaps: some assets miss scattered days, so an asset's own
    rows (momentum's window) reach further back than the dates."""
    frame = generate_market(120, 420, seed=3, styles=USE4).panel
    rng = np.random.default_rng(0)
    gappy = (pl.col("symbol").rank("dense").cast(pl.Int64) % 7 == 0) & pl.Series(rng.random(frame.height) < 0.3)
    return frame.filter(~gappy)


@pytest.mark.parametrize("name", [style.name for style in available_styles() if style.name in USE4])
def test_scores_from_the_history_start_equal_the_full_history(panel: pl.DataFrame, name: str) -> None:
    style = get_style(name)
    need = style.history()
    assert need is not None
    dates = panel.get_column("date").unique().sort()
    first = dates[-LAST]
    start = history_start(panel.select("date", "symbol"), first, [need])
    full = compute_styles(panel, [name]).filter(pl.col("date") >= first)
    tail = compute_styles(panel.filter(pl.col("date") >= start), [name]).filter(pl.col("date") >= first)
    assert tail.select("date", "symbol").equals(full.select("date", "symbol"))
    expected, ours = full.get_column(style.score).to_numpy(), tail.get_column(style.score).to_numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    assert np.isfinite(expected).sum() > 0.5 * expected.size
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)
    # only the last dates' scores, from the same rows (what an update computes)
    at = compute_styles(panel.filter(pl.col("date") >= start), [name], at=dates[-LAST:].to_list())
    assert at.select("date", "symbol").equals(full.select("date", "symbol"))
    np.testing.assert_allclose(at.get_column(style.score).to_numpy(), expected, rtol=1e-9, atol=1e-12)
    if need != Lookback():  # a lookback shorter by one is not enough: the test can tell
        short = Lookback(dates=max(need.dates - 1, 0), rows=max(need.rows - 1, 0))
        scored = panel.filter(pl.col("date") == first).get_column("symbol").to_list()
        cut = history_start(panel.select("date", "symbol"), first, [short], symbols=scored)
        shorter = compute_styles(panel.filter(pl.col("date") >= cut), [name]).filter(pl.col("date") >= first)
        values = shorter.get_column(style.score).to_numpy()
        assert not np.allclose(values, expected, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_history_start_counts_dates_and_each_assets_own_rows() -> None:
    days = pl.date_range(pl.date(2024, 1, 1), pl.date(2024, 1, 10), eager=True)
    keys = pl.DataFrame({"date": list(days) * 2, "symbol": ["A"] * 10 + ["B"] * 10}).filter(
        (pl.col("symbol") == "A") | (pl.col("date").dt.day() % 3 == 0)  # B trades every third day
    )
    first = days[8]  # 2024-01-09
    assert history_start(keys, first, [Lookback()]) == first
    assert history_start(keys, first, [Lookback(dates=3)]) == days[6]
    assert history_start(keys, first, [Lookback(rows=3)]) == days[2]  # B's rows: 01-03, 01-06
    assert history_start(keys, first, [Lookback(rows=3)], symbols=["A"]) == days[6]
    assert history_start(keys, days[0], [Lookback(dates=5, rows=5)]) == days[0]


def test_a_descriptor_style_of_expressions_declares_no_lookback() -> None:
    plain = register_descriptor_style("test_plain", [Descriptor("DYLD", 1.0)], orthogonal_to=("beta",))
    custom = register_descriptor_style("test_expr", [Descriptor("X", 1.0, pl.col("dividend_yield").shift(5))])
    try:
        assert plain.history() == get_style("beta").history()
        assert custom.history() is None
    finally:
        unregister_style("test_plain")
        unregister_style("test_expr")
