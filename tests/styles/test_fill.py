"""Missing USE4 exposures filled by regression on sectors and size, against a per-date lstsq reference."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_liquidity import reference_size

from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.styles.fill import MIN_OBSERVED, _size_rows, fill_by_sector_and_size, fill_missing_exposures
from factor_engine.synthetic import generate_market


def _reference(values, sectors, size, caps, rows):
    """Date by date: weighted lstsq of the observed values on sector dummies and size, fitted values for the
    missing ones; a sector without observations takes the pooled intercept given the slope."""
    expected = values.copy()
    n_sectors = sectors.max() + 1
    for t in range(values.shape[0]):
        usable = rows[t] & (sectors[t] >= 0) & np.isfinite(size[t]) & (caps[t] > 0)
        observed = usable & np.isfinite(values[t])
        missing = usable & ~np.isfinite(values[t])
        if observed.sum() < MIN_OBSERVED or not missing.any():
            continue
        present = np.unique(sectors[t, observed])
        design = np.column_stack([(sectors[t, observed] == s).astype(float) for s in present] + [size[t, observed]])
        root_w = np.sqrt(np.sqrt(caps[t, observed]))
        coef, *_ = np.linalg.lstsq(design * root_w[:, None], values[t, observed] * root_w, rcond=None)
        slope = coef[-1]
        w = np.sqrt(caps[t, observed])
        pooled = (w @ values[t, observed] - slope * (w @ size[t, observed])) / w.sum()
        intercepts = np.full(n_sectors, pooled)
        intercepts[present] = coef[:-1]
        for i in np.flatnonzero(missing):
            expected[t, i] = intercepts[sectors[t, i]] + slope * size[t, i]
    return expected


@pytest.fixture(scope="module")
def dense_case():
    rng = np.random.default_rng(7)
    n_dates, n_assets, n_sectors = 12, 80, 5
    sectors = rng.integers(0, n_sectors, (n_dates, n_assets))
    sectors[:, :3] = -1  # no sector: never filled
    size = rng.standard_normal((n_dates, n_assets))
    caps = np.exp(rng.normal(21, 1.5, (n_dates, n_assets)))
    truth = 0.3 * sectors + 0.8 * size + 0.2 * rng.standard_normal((n_dates, n_assets))
    values = truth.copy()
    values[rng.random(values.shape) < 0.2] = np.nan
    values[4, sectors[4] == 2] = np.nan  # a sector without any observation that date
    values[7, MIN_OBSERVED - 1 :] = np.nan  # too few observations: left missing
    rows = rng.random(values.shape) > 0.05
    values[~rows] = np.nan
    return values, sectors, size, caps, rows


def test_fill_matches_per_date_lstsq(dense_case):
    values, sectors, size, caps, rows = dense_case
    filled, was_filled = fill_by_sector_and_size(values, sectors, size, caps, rows)
    expected = _reference(values, sectors, size, caps, rows)
    np.testing.assert_allclose(filled, expected, rtol=1e-10, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(was_filled, np.isfinite(filled) & ~np.isfinite(values))
    assert was_filled.sum() > 100
    # observed values untouched; no sector, no row, too few observations: still missing
    observed = np.isfinite(values)
    np.testing.assert_array_equal(filled[observed], values[observed])
    assert np.isnan(filled[:, :3][~np.isfinite(values[:, :3])]).all()
    assert np.isnan(filled[~rows]).all()
    assert not was_filled[7].any()


def test_filled_values_recover_the_structure(dense_case):
    """The fitted values track the sector-and-size structure the values were drawn from."""
    values, sectors, size, caps, rows = dense_case
    filled, was_filled = fill_by_sector_and_size(values, sectors, size, caps, rows)
    truth_mean = 0.3 * sectors + 0.8 * size
    keep = was_filled & (np.arange(values.shape[0])[:, None] != 4)
    assert np.corrcoef(filled[keep], truth_mean[keep])[0, 1] > 0.95


def test_fill_missing_exposures_on_frames():
    universe = pl.DataFrame(
        {
            "date": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2],
            "symbol": [f"S{i}" for i in range(11)] + ["S0", "S1"],
            "sector": ["A", "B"] * 5 + ["A", "A", "B"],
            "market_cap": [1e9 * (i + 1) for i in range(11)] + [1e9, 2e9],
        }
    ).with_columns(pl.col("date").cast(pl.Date))
    score = [float(i) for i in range(10)] + [None, None, 1.0]
    scores = universe.select("date", "symbol").with_columns(pl.Series("x_score", score))
    filled, counts, dates = fill_missing_exposures(universe, scores, ["x_score"])
    assert filled.select("date", "symbol").equals(scores.select("date", "symbol"))
    assert filled["x_score"][10] is not None and filled["x_score"][11] is None  # date 2 has too few values
    np.testing.assert_array_equal(counts["x_score"], [1, 0])
    assert dates.to_list() == universe["date"].unique().sort().to_list()


def test_model_fills_new_listings_and_counts_them():
    market = generate_market(300, 400, seed=3, listing_rate=0.3)
    filled = build_model(market.panel)
    raw = build_model(market.panel, ModelConfig.from_mapping({"styles": {"names": ["momentum", "size"]}}))
    notes = filled.notes["styles"]["filled"]
    assert notes["beta"] > 0 and notes["resvol"] > 0
    assert filled.diagnostics["n_filled"].sum() > 0
    assert raw.diagnostics["n_filled"].sum() == 0 and raw.notes["styles"]["filled"] == {}
    # every universe row with a beta after filling: assets listed inside the last 63 days included
    last = filled.exposures.filter(pl.col("date") == filled.exposures["date"].max())
    assert last["beta_score"].null_count() == 0


def test_size_of_the_rows_is_use4_size_on_the_grid():
    """The fill's row-space size equals USE4's size from a per-date reference on the dates x symbols grid."""
    rng = np.random.default_rng(3)
    caps = np.exp(rng.normal(21, 1.5, (30, 60)))
    caps[rng.random(caps.shape) < 0.15] = np.nan  # no row
    caps[2, :5] = np.exp(40.0)  # outliers to trim
    t, n = np.nonzero(np.isfinite(caps))
    expected = reference_size(caps)[t, n]
    np.testing.assert_allclose(_size_rows(caps[t, n], t, caps.shape[0]), expected, rtol=1e-12, atol=1e-12)
