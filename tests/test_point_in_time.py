"""Point in time: a forecast made at the close of t depends only on data up to t.

A model built on a panel cut at t must equal the full build at every date <= t, even when a sector first
appears after t (the full build then has a factor the cut one lacks), with the default adjustments on. And
choosing the universe by cap must not bias the factor returns: it ranks by the previous close's cap.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from factor_engine.config import ModelConfig, StylesConfig, UniverseConfig
from factor_engine.model import RiskModel, build_model, select_universe
from factor_engine.synthetic import generate_market

LATE_SECTOR = "Energy"
CUT_DAY = 420
APPEARS_DAY = 470
FAST_MOMENTUM = {"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}}


def largest_relative_difference(first: np.ndarray, second: np.ndarray) -> float:
    """max |a − b| / max |b| over the finite entries; the missing entries must match exactly."""
    assert first.shape == second.shape
    np.testing.assert_array_equal(np.isfinite(first), np.isfinite(second))
    finite = np.isfinite(second)
    scale = np.max(np.abs(second[finite]))
    return float(np.max(np.abs(first[finite] - second[finite])) / scale)


@pytest.fixture(scope="module")
def panels() -> tuple[pl.DataFrame, pl.DataFrame, object]:
    """The full panel, with every row of the late sector removed before APPEARS_DAY, and the same panel cut
    at CUT_DAY (before the sector appears)."""
    panel = generate_market(260, 620, seed=5).panel
    dates = panel["date"].unique().sort()
    appears, cut = dates[APPEARS_DAY], dates[CUT_DAY]
    full = panel.filter((pl.col("sector") != LATE_SECTOR) | (pl.col("date") >= appears))
    return full, full.filter(pl.col("date") <= cut), cut


@pytest.fixture(scope="module")
def models(panels: tuple[pl.DataFrame, pl.DataFrame, object]) -> tuple[RiskModel, RiskModel, object]:
    full, truncated, cut = panels
    config = ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM))  # default adjustments on
    return build_model(full, config).between(None, cut), build_model(truncated, config), cut  # type: ignore[arg-type]


def test_the_late_sector_is_a_factor_of_the_full_build_only(models: tuple[RiskModel, RiskModel, object]) -> None:
    full, truncated, _ = models
    assert LATE_SECTOR in full.factors and LATE_SECTOR not in truncated.factors
    assert [f for f in full.factors if f != LATE_SECTOR] == list(truncated.factors)
    # before it appears the late sector has no return, no forecast and no exposure
    assert full.factor_returns[LATE_SECTOR].null_count() == full.factor_returns.height
    assert full.exposures[LATE_SECTOR].sum() == 0.0
    assert full.factor_covariance is not None
    k = full.factor_covariance.factors.index(LATE_SECTOR)
    assert np.isnan(full.factor_covariance.values[:, k, k]).all()


def test_factor_returns_and_exposures_equal_up_to_the_cut(models: tuple[RiskModel, RiskModel, object]) -> None:
    full, truncated, _ = models
    common = list(truncated.factors)
    assert full.factor_returns["date"].equals(truncated.factor_returns["date"])
    returns = largest_relative_difference(
        full.factor_returns.select(common).to_numpy().astype(float),
        truncated.factor_returns.select(common).to_numpy().astype(float),
    )
    exposures = largest_relative_difference(
        full.exposures.select(common).fill_null(math.nan).to_numpy(),
        truncated.exposures.select(common).fill_null(math.nan).to_numpy(),
    )
    assert returns <= 1e-12 and exposures <= 1e-12, (returns, exposures)


def test_forecasts_equal_up_to_the_cut(models: tuple[RiskModel, RiskModel, object]) -> None:
    full, truncated, _ = models
    assert full.factor_covariance is not None and truncated.factor_covariance is not None
    assert full.factor_covariance.dates.equals(truncated.factor_covariance.dates)
    index = [full.factor_covariance.factors.index(f) for f in truncated.factors]
    covariance = largest_relative_difference(
        full.factor_covariance.values[:, index][:, :, index], truncated.factor_covariance.values
    )
    assert full.specific_risk is not None and truncated.specific_risk is not None
    assert full.specific_risk.select("date", "symbol").equals(truncated.specific_risk.select("date", "symbol"))
    specific = largest_relative_difference(
        full.specific_risk["specific_vol"].to_numpy(), truncated.specific_risk["specific_vol"].to_numpy()
    )
    assert covariance <= 1e-12 and specific <= 1e-12, (covariance, specific)


def test_adjustments_apply_on_dates_where_a_factor_has_no_forecast_yet(
    models: tuple[RiskModel, RiskModel, object], panels: tuple[pl.DataFrame, pl.DataFrame, object]
) -> None:
    """After the late sector appears it has no forecast for min_periods dates: the eigenfactor adjustment
    still applies to the other factors on those dates (it used to skip every such date)."""
    full_panel, _, _ = panels
    adjusted = build_model(full_panel, ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM)))
    no_eigen = build_model(
        full_panel,
        ModelConfig.from_mapping({"styles": {"params": FAST_MOMENTUM}, "adjustments": {"eigenfactor": False}}),
    )
    assert adjusted.factor_covariance is not None and no_eigen.factor_covariance is not None
    k = adjusted.factor_covariance.factors.index(LATE_SECTOR)
    waiting = np.isnan(adjusted.factor_covariance.values[:, k, k])
    dates = adjusted.factor_covariance.dates.to_numpy()
    appeared = dates >= full_panel.filter(pl.col("sector") == LATE_SECTOR)["date"].min()
    window = np.flatnonzero(waiting & appeared)
    assert window.size > 20
    others = [i for i in range(len(adjusted.factor_covariance.factors)) if i != k]
    first = adjusted.factor_covariance.values[window][:, others][:, :, others]
    second = no_eigen.factor_covariance.values[window][:, others][:, :, others]
    assert np.isfinite(first).all()
    assert np.max(np.abs(first - second) / np.abs(second).max()) > 1e-3  # adjusted on every such date
    assert (np.abs(first - second).reshape(window.size, -1).max(axis=1) > 0).all()


def test_universe_selection_does_not_bias_the_market_factor() -> None:
    """500 of 1,000 assets by cap over 1,500 days. Ranking by the same day's cap keeps the assets that rose
    that day and drops those that fell, so the kept rows' specific returns average above zero and the market
    factor estimated on them is biased upward. Ranking by the previous close's cap (what select_universe does)
    leaves the day's specific returns unselected: their mean is zero up to noise."""
    market = generate_market(1000, 1500, seed=3, styles=())
    panel = market.panel
    specific = market.truth.specific_returns

    def mean_specific_return(universe: pl.DataFrame) -> tuple[float, float]:
        """t-statistic over dates of each date's mean true specific return of the kept rows, and its annual mean."""
        per_date = (
            universe.select("date", "symbol")
            .join(specific, on=["date", "symbol"])
            .group_by("date")
            .agg(pl.col("specific_return").mean())
            .get_column("specific_return")
            .to_numpy()
        )
        return float(per_date.mean() / (per_date.std(ddof=1) / math.sqrt(per_date.size))), float(per_date.mean() * 252)

    point_in_time = select_universe(panel, 500)
    same_day = panel.filter(pl.col("market_cap").rank("ordinal", descending=True).over("date") <= 500)
    t_pit, annual_pit = mean_specific_return(point_in_time)
    t_same_day, annual_same_day = mean_specific_return(same_day)
    assert t_same_day > 5.0, (t_same_day, annual_same_day)  # the old selection: about +6 % a year
    assert abs(t_pit) < 3.0, (t_pit, annual_pit)

    # the market factor of a model built with the universe setting: on the same dates, the same-day selection
    # gives a higher market return on average (paired over dates), the previous-close one does not move it
    config = ModelConfig(universe=UniverseConfig(size=500), styles=StylesConfig(names=()))
    every = ModelConfig(universe=UniverseConfig(size=0), styles=StylesConfig(names=()))
    built = build_model(panel, config).factor_returns.select("date", "market")
    reference = build_model(point_in_time, every).factor_returns.select("date", "market")
    assert built.equals(reference)  # build_model selects exactly select_universe's rows
    biased = build_model(same_day, every).factor_returns.select("date", pl.col("market").alias("biased"))
    gap = built.join(biased, on="date").select(pl.col("biased") - pl.col("market")).to_series().to_numpy()
    t_gap = gap.mean() / (gap.std(ddof=1) / math.sqrt(gap.size))
    assert t_gap > 3.0, (t_gap, gap.mean() * 252)
