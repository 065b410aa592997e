"""Sparse factors: a sector that appears only in the last third of the dates and another that empties for 60
days. The forecast exists on every date after warm-up (over the factors that have history), portfolio risk
works on those dates, and the bias statistics stay in 0.9–1.1."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from factor_engine.config import ModelConfig, StylesConfig
from factor_engine.model import RiskModel, build_model
from factor_engine.portfolio import decompose_risk
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.risk import validation
from factor_engine.synthetic import generate_market

LATE, GAP = "Energy", "Utilities"
APPEARS, GAP_DAYS = 600, (300, 359)
FAST_MOMENTUM = {"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}}


@pytest.fixture(scope="module")
def market() -> tuple[pl.DataFrame, RiskModel]:
    panel = generate_market(600, 900, seed=1, sector_start={LATE: APPEARS}, sector_gaps={GAP: GAP_DAYS}).panel
    return panel, build_model(panel, ModelConfig(styles=StylesConfig(params=FAST_MOMENTUM)))


def test_a_forecast_exists_on_every_date_after_warm_up(market: tuple[pl.DataFrame, RiskModel]) -> None:
    panel, model = market
    covariance = model.factor_covariance
    assert covariance is not None and LATE in model.factors and GAP in model.factors
    variance = np.diagonal(covariance.values, axis1=1, axis2=2)
    has = np.isfinite(variance)
    late, gap = covariance.factors.index(LATE), covariance.factors.index(GAP)
    # styles with a warm-up: momentum, and USE4's beta and residual volatility (63 returns)
    warming = [covariance.factors.index(s) for s in ("mom_score", "beta_score", "resvol_score")]
    others = [k for k in range(len(covariance.factors)) if k not in (late, *warming)]
    assert has[:, others].all()  # every other factor, the emptied sector included, on every forecast date
    for style in warming:  # from the end of its warm-up on
        assert has[int(np.argmax(has[:, style])) :, style].all()
    # the late sector enters once it has min_periods returns, and stays
    first_forecast = int(np.argmax(has[:, late]))
    assert has[first_forecast:, late].all() and not has[:first_forecast, late].any()
    returns_dates = model.factor_returns.filter(pl.col(LATE).is_not_null())["date"]
    assert covariance.dates[first_forecast] == returns_dates[62]  # the 63rd estimated return (min_periods)
    # every forecast is PSD over the factors that have one
    for t in range(0, covariance.dates.len(), 7):
        active = np.flatnonzero(has[t])
        assert np.linalg.eigvalsh(covariance.values[t][np.ix_(active, active)]).min() > -1e-15
    # the emptied sector has no return during its gap, but keeps its forecast
    dates = panel["date"].unique().sort()
    in_gap = model.factor_returns.filter(pl.col("date").is_between(dates[GAP_DAYS[0]], dates[GAP_DAYS[1]]))
    assert in_gap[GAP].null_count() == in_gap.height == 60
    assert has[:, gap].all()
    # snapshots and portfolio risk on every date after warm-up, also while the late sector waits
    available = forecast_dates(model)
    assert available.len() == covariance.dates.len()
    for day in (dates[GAP_DAYS[0] + 10], dates[APPEARS + 5], dates[-1]):
        snapshot = snapshot_at(model, day)
        weights = np.full(len(snapshot.symbols), 1.0 / len(snapshot.symbols))
        risk = decompose_risk(snapshot, weights)
        assert np.isfinite(risk.total_risk) and 0.0 < risk.total_risk < 0.05
    assert LATE not in snapshot_at(model, dates[APPEARS + 5]).factors
    assert LATE in snapshot_at(model, dates[-1]).factors


def test_bias_statistics_stay_in_band(market: tuple[pl.DataFrame, RiskModel]) -> None:
    panel, model = market
    summary = validation.model_bias_summary(model, panel.select("date", "symbol", "asset_returns"))
    means = dict(zip(summary["tested"], summary["mean_bias"], strict=True))
    assert 0.9 <= means["pure factor portfolios"] <= 1.1, means
    assert 0.9 <= means["random portfolios"] <= 1.1, means
    assert 0.9 <= means["single assets"] <= 1.1, means
