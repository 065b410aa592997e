"""End-to-end truth check: on the synthetic market, the barra estimates track the true factor returns.

The synthetic market generates returns of date t from the exposures known at the close of t-1 with
cap-weighted zero-sum sector returns, which is exactly the model ``method="barra"`` estimates (default
``exposure_lag=1``). With the true exposures supplied as user exposures, the estimates must correlate
with the truth at ≥ 0.99 (market, sectors) and ≥ 0.95 (styles) on a 3,000-asset market.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from factor_engine import styles
from factor_engine.regression import estimate_from_panel
from factor_engine.synthetic import SyntheticMarket, generate_market


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return generate_market(3000, 500, seed=7)


def _correlations(estimated: pl.DataFrame, truth: pl.DataFrame, pairs: dict[str, str]) -> dict[str, float]:
    renamed = truth.rename({c: f"true {c}" for c in truth.columns if c != "date"})
    joined = estimated.join(renamed, on="date")
    # over the dates where the factor was estimated (a style is absent while its scores warm up)
    return {
        name: float(np.corrcoef(both[name].to_numpy(), both[f"true {true}"].to_numpy())[0, 1])
        for name, true in pairs.items()
        for both in [joined.drop_nulls([name, f"true {true}"])]
    }


def test_barra_recovers_true_factor_returns(market: SyntheticMarket) -> None:
    panel, truth = market.panel, market.truth
    result = estimate_from_panel(
        panel,
        truth.exposures,
    )
    assert sorted(result.factors) == sorted(truth.factors)
    corr = _correlations(result.factor_returns, truth.factor_returns, {f: f for f in truth.factors})
    for name in ("market", *[f for f in truth.factors if f not in truth.styles]):
        assert corr[name] >= 0.99, (name, corr[name])
    for name in truth.styles:
        assert corr[name] >= 0.95, (name, corr[name])
    # the sector returns' cap-weighted sum is zero on every date, with the previous close's caps of the
    # assets in that date's regression
    dates = panel["date"].unique().sort()
    previous = pl.DataFrame({"date": dates[1:], "exposure_date": dates[:-1]})
    caps = panel.select(pl.col("date").alias("exposure_date"), "symbol", "market_cap")
    used = result.exposures.join(previous, on="date").join(caps, on=["exposure_date", "symbol"])
    sectors = list(result.sectors)
    sector_caps = used.group_by("date").agg((pl.col(s) * pl.col("market_cap")).sum() for s in sectors)
    weights = sector_caps.join(result.factor_returns, on="date", suffix=" return")
    constraint = sum(weights[s].to_numpy() * weights[f"{s} return"].to_numpy() for s in sectors)
    total = weights.select(pl.sum_horizontal(sectors)).to_series().to_numpy()
    assert np.max(np.abs(constraint / total)) < 1e-12


def test_point_in_time_beats_same_day_exposures(market: SyntheticMarket) -> None:
    """Returns are generated from the previous close's exposures: exposure_lag=1 must fit them better."""
    panel, truth = market.panel, market.truth
    lagged = estimate_from_panel(panel, truth.exposures, exposure_lag=1)
    same_day = estimate_from_panel(panel, truth.exposures, exposure_lag=0)
    corr_lagged = _correlations(lagged.factor_returns, truth.factor_returns, {s: s for s in truth.styles})
    corr_same = _correlations(same_day.factor_returns, truth.factor_returns, {s: s for s in truth.styles})
    assert corr_lagged["size"] > corr_same["size"]


def test_engine_styles_explain_the_market(market: SyntheticMarket) -> None:
    """With the engine's own style scores the market and sector returns are still recovered."""
    panel, truth = market.panel, market.truth
    scores = styles.compute_styles(panel).drop_nulls()
    result = estimate_from_panel(
        panel,
        scores,
    )
    corr = _correlations(result.factor_returns, truth.factor_returns, {"market": "market", "Energy": "Energy"})
    assert corr["market"] >= 0.99
    assert corr["Energy"] >= 0.97
    # value and size scores are built from data tied to the true value and size exposures
    corr_styles = _correlations(
        result.factor_returns.rename({"val_score": "value_est", "sze_score": "size_est"}),
        truth.factor_returns,
        {"value_est": "value", "size_est": "size"},
    )
    assert corr_styles["value_est"] > 0.5
    assert corr_styles["size_est"] > 0.5
