"""snapshot_at against the model frames, read row by row for one date."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from factor_engine.config import ModelConfig
from factor_engine.model import ModelError, RiskModel, build_model
from factor_engine.portfolio import decompose_risk
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.synthetic import generate_market

HORIZON = 5


@pytest.fixture(scope="module")
def model() -> RiskModel:
    config = ModelConfig.from_mapping(
        {"styles": {"momentum": {"trailing_days": 60, "lag": 5}}, "covariance": {"horizon": HORIZON}}
    )
    return build_model(generate_market(150, 400, seed=1).panel, config)


def expected_rows(model: RiskModel, date: dt.date) -> dict[str, tuple[list[float], float]]:
    """symbol → (exposures with missing styles as 0, specific vol), by a plain loop over the rows of date."""
    assert model.specific_risk is not None
    vols = {
        symbol: vol
        for day, symbol, vol in model.specific_risk.select("date", "symbol", "specific_vol").iter_rows()
        if day == date and vol is not None and math.isfinite(vol)
    }
    rows = {}
    for row in model.exposures.iter_rows(named=True):
        if row["date"] != date or row["symbol"] not in vols:
            continue
        values = []
        for factor in model.factors:
            value = row[factor]
            if factor in model.styles and (value is None or math.isnan(value)):
                value = 0.0
            values.append(value)
        if all(v is not None and math.isfinite(v) for v in values):
            rows[row["symbol"]] = (values, vols[row["symbol"]])
    return rows


def test_snapshot_equals_the_model_frames_at_the_date(model: RiskModel) -> None:
    assert model.factor_covariance is not None
    date = forecast_dates(model)[100]
    snapshot = snapshot_at(model, date)
    rows = expected_rows(model, date)
    assert snapshot.factors == model.factors
    assert sorted(snapshot.symbols) == sorted(rows)
    for i, symbol in enumerate(snapshot.symbols):
        exposures, vol = rows[symbol]
        np.testing.assert_array_equal(snapshot.exposures[i], exposures)
        assert snapshot.specific_vol[i] == vol
    daily = model.factor_covariance.at(date) / HORIZON
    np.testing.assert_allclose(snapshot.factor_covariance, 0.5 * (daily + daily.T), rtol=0, atol=0)
    assert snapshot_at(model, str(date)).symbols == snapshot.symbols


def test_missing_style_exposure_is_zero_and_missing_vol_drops_the_asset(model: RiskModel) -> None:
    assert model.specific_risk is not None
    date = forecast_dates(model)[-1]
    symbols = model.exposures.filter(pl.col("date") == date).get_column("symbol").sort().to_list()
    no_style, no_vol = symbols[0], symbols[1]
    style = model.styles[0]
    exposures = model.exposures.with_columns(
        pl.when((pl.col("date") == date) & (pl.col("symbol") == no_style))
        .then(None)
        .otherwise(pl.col(style))
        .alias(style)
    )
    specific = model.specific_risk.filter((pl.col("date") != date) | (pl.col("symbol") != no_vol))
    snapshot = snapshot_at(replace(model, exposures=exposures, specific_risk=specific), date)
    assert no_vol not in snapshot.symbols
    row = snapshot.exposures[snapshot.symbols.index(no_style)]
    assert row[model.factors.index(style)] == 0.0
    assert row[model.factors.index("market")] == 1.0


def test_default_date_is_the_last_with_covariance_and_specific_risk(model: RiskModel) -> None:
    assert model.factor_covariance is not None and model.specific_risk is not None
    covariance = model.factor_covariance
    with_covariance = {d for d in covariance.dates.to_list() if np.isfinite(covariance.at(d)).all()}
    with_specific = set(model.specific_risk.filter(pl.col("specific_vol").is_finite()).get_column("date").to_list())
    last = max(with_covariance & with_specific & set(model.exposures.get_column("date").to_list()))
    assert forecast_dates(model)[-1] == last
    default = snapshot_at(model)
    explicit = snapshot_at(model, last)
    assert default.symbols == explicit.symbols
    np.testing.assert_array_equal(default.exposures, explicit.exposures)
    np.testing.assert_array_equal(default.factor_covariance, explicit.factor_covariance)
    weights = np.full(default.n_assets, 1.0 / default.n_assets)
    assert decompose_risk(default, weights).total_risk > 0


def test_date_before_the_first_forecast_names_the_nearest(model: RiskModel) -> None:
    first = forecast_dates(model)[0]
    early = model.exposures.get_column("date").min()
    assert isinstance(early, dt.date) and early < first
    with pytest.raises(ModelError, match=rf"no risk forecast for {early}: .*nearest after {first}"):
        snapshot_at(model, early)


def test_date_after_the_model_names_the_nearest(model: RiskModel) -> None:
    last = forecast_dates(model)[-1]
    with pytest.raises(
        ModelError,
        match=rf"no risk forecast for 2030-01-02: the model has no exposures on that date; .*nearest before {last}",
    ):
        snapshot_at(model, "2030-01-02")


def test_not_a_date(model: RiskModel) -> None:
    with pytest.raises(ModelError, match=r"not a date: '2024-13-01'"):
        snapshot_at(model, "2024-13-01")


def test_model_without_forecasts(model: RiskModel) -> None:
    with pytest.raises(ModelError, match="no factor covariance forecast"):
        snapshot_at(replace(model, factor_covariance=None))
    with pytest.raises(ModelError, match="no specific risk forecast"):
        snapshot_at(replace(model, specific_risk=None))
