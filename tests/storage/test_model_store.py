"""save_model / load_model / reads / snapshot on SQLite and PostgreSQL against the in-memory model."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from factor_engine.config import ModelConfig
from factor_engine.model import ModelError, RiskModel, build_model
from factor_engine.panel import validate_panel
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.storage import NotFound, Store
from factor_engine.synthetic import generate_market

FRAMES = ("factor_returns", "exposures", "residuals", "diagnostics", "specific_risk")


@pytest.fixture(scope="module")
def model() -> RiskModel:
    """A model of 60 assets × 300 days with a short momentum window (nulls in early momentum scores)."""
    panel = validate_panel(generate_market(60, 300, seed=3).panel)
    config = ModelConfig.from_mapping({"styles": {"momentum": {"trailing_days": 60, "half_life": 20, "lag": 5}}})
    return build_model(panel, config)


def _save(store: Store, model: RiskModel, request: dict[str, object] | None = None) -> str:
    run = store.create_run(request or {"universe_size": 0})
    store.start_run(run.id)
    store.save_model(run.id, model, timings={"styles": 0.5, "factor returns": 1.25})
    return run.id


def _assert_snapshots_equal(actual: object, expected: object) -> None:
    for name in ("factors", "symbols"):
        assert getattr(actual, name) == getattr(expected, name)
    for name in ("exposures", "factor_covariance", "specific_vol"):
        assert np.array_equal(getattr(actual, name), getattr(expected, name)), name


def test_round_trip_is_exact(store: Store, model: RiskModel) -> None:
    assert model.exposures["mom_score"].null_count() > 0  # the nulls are part of what must round-trip
    model_id = _save(store, model)
    loaded = store.load_model(model_id)
    for name in FRAMES:
        assert_frame_equal(getattr(loaded, name), getattr(model, name), check_exact=True)
    assert (loaded.factors, loaded.sectors, loaded.styles) == (model.factors, model.sectors, model.styles)
    assert loaded.config == model.config
    assert loaded.factor_covariance is not None and model.factor_covariance is not None
    assert loaded.factor_covariance.dates.equals(model.factor_covariance.dates)
    assert loaded.factor_covariance.factors == model.factor_covariance.factors
    assert loaded.factor_covariance.horizon == model.factor_covariance.horizon
    assert np.array_equal(loaded.factor_covariance.values, model.factor_covariance.values, equal_nan=True)


def test_factor_returns_round_trip_awkward_values_exactly(store: Store, model: RiskModel) -> None:
    """Dropped factors (null), values at the edges of float64 and the shortest-repr corner cases survive the
    PostgreSQL COPY/CSV read path bit for bit."""
    awkward = [None, 1e-310, -2.2250738585072014e-308, 1.7976931348623157e308, 0.1 + 0.2, -1 / 3, 5e-324]
    column = model.factors[1]
    values = model.factor_returns[column].to_list()
    values[: len(awkward)] = awkward
    edited = dataclasses.replace(
        model, factor_returns=model.factor_returns.with_columns(pl.Series(column, values, dtype=pl.Float64))
    )
    loaded = store.factor_returns(_save(store, edited))
    assert_frame_equal(loaded, edited.factor_returns, check_exact=True)
    start, end = edited.factor_returns["date"][3], edited.factor_returns["date"][9]
    assert_frame_equal(
        store.factor_returns(store.list_models()[0].id, start=start, end=end),
        edited.factor_returns.filter(pl.col("date").is_between(start, end)),
        check_exact=True,
    )


def test_readers_by_date_range(store: Store, model: RiskModel) -> None:
    model_id = _save(store, model)
    dates = model.factor_returns["date"]
    start, end = dates[100], dates[150]

    def within(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("date").is_between(start, end))

    assert_frame_equal(store.factor_returns(model_id), model.factor_returns, check_exact=True)
    assert_frame_equal(store.factor_returns(model_id, start=start, end=end), within(model.factor_returns))
    assert_frame_equal(store.exposures(model_id, start=start, end=end), within(model.exposures), check_exact=True)
    assert_frame_equal(store.residuals(model_id, end=end), model.residuals.filter(pl.col("date") <= end))
    assert model.specific_risk is not None and model.factor_covariance is not None
    assert_frame_equal(store.specific_risk(model_id, start=start), model.specific_risk.filter(pl.col("date") >= start))
    assert_frame_equal(store.diagnostics(model_id), model.diagnostics, check_exact=True)
    covariance = store.factor_covariance(model_id, start=start, end=end)
    wanted = model.factor_covariance.dates.is_between(start, end).to_numpy()
    assert covariance.dates.equals(model.factor_covariance.dates.filter(wanted))
    assert np.array_equal(covariance.values, model.factor_covariance.values[wanted], equal_nan=True)
    part = store.load_model(model_id, start=start, end=end)
    for name in FRAMES:
        assert_frame_equal(getattr(part, name), within(getattr(model, name)), check_exact=True)
    assert store.model_dates(model_id) == forecast_dates(model).to_list()


def test_summary(store: Store, model: RiskModel) -> None:
    model_id = _save(store, model, {"symbols": None, "universe_size": 0})
    summary = store.get_model(model_id)
    assert model.factor_covariance is not None
    symbols = pl.concat([model.exposures["symbol"], model.residuals["symbol"]]).n_unique()
    assert summary.id == model_id
    assert (summary.factors, summary.sectors, summary.styles) == (model.factors, model.sectors, model.styles)
    assert (summary.first_date, summary.last_date) == (
        model.factor_returns["date"].min(),
        model.factor_returns["date"].max(),
    )
    assert summary.n_dates == model.factor_returns.height
    assert summary.n_assets == symbols
    assert summary.covariance_dates == model.factor_covariance.dates.len()
    assert summary.horizon == model.factor_covariance.horizon
    assert summary.config == model.config
    assert summary.request == {"symbols": None, "universe_size": 0}
    assert summary.timings == {"styles": 0.5, "factor returns": 1.25}
    assert summary.engine_version == "0.1.0"
    assert summary.created_at.tzinfo is not None
    assert [m.id for m in store.list_models()] == [model_id]


@pytest.mark.parametrize("which", ["first", "middle", "last", "default"])
def test_snapshot_equals_library(store: Store, model: RiskModel, which: str) -> None:
    model_id = _save(store, model)
    available = forecast_dates(model)
    date = {"first": available[0], "middle": available[available.len() // 2], "last": available[-1], "default": None}[
        which
    ]
    _assert_snapshots_equal(store.snapshot(model_id, date), snapshot_at(model, date))


def test_snapshot_errors_match_library(store: Store, model: RiskModel) -> None:
    model_id = _save(store, model)
    available = forecast_dates(model)
    no_forecast = model.factor_returns["date"][0]  # before min_periods: no covariance forecast yet
    assert no_forecast < available[0]
    gap = available[10] + datetime.timedelta(days=1)  # a date between two model dates (or a weekend)
    while (available == gap).any():
        gap += datetime.timedelta(days=1)
    for date in (no_forecast, gap, "1999-01-01", "not a date"):
        with pytest.raises(ModelError) as expected:
            snapshot_at(model, date)
        with pytest.raises(ModelError, match=r"no risk forecast for|not a date") as actual:
            store.snapshot(model_id, date)
        assert str(actual.value) == str(expected.value)
    before, after = available.filter(available < gap)[-1], available.filter(available > gap)[0]
    with pytest.raises(
        ModelError, match=rf"no risk forecast for {gap}: .*nearest before {before}, nearest after {after}"
    ):
        store.snapshot(model_id, gap)
    with pytest.raises(NotFound, match="no model 0123"):
        store.snapshot("0123")


def test_blob_layout(store: Store, model: RiskModel) -> None:
    """The stored blobs follow the documented little-endian layouts (read here without the store's decoder)."""
    model_id = _save(store, model)
    assert model.factor_covariance is not None
    day = model.factor_covariance.dates[-1]
    with store.engine.connect() as connection:
        blob = connection.execute(
            sa.text("SELECT data FROM model_covariances WHERE model_id = :m AND date = :d"), {"m": model_id, "d": day}
        ).scalar_one()
        positions, data = connection.execute(
            sa.text("SELECT positions, data FROM model_exposures WHERE model_id = :m AND date = :d"),
            {"m": model_id, "d": day},
        ).one()
        dictionary = dict(
            connection.execute(
                sa.text("SELECT position, symbol FROM model_symbols WHERE model_id = :m"), {"m": model_id}
            ).all()
        )
    k = len(model.factors)
    assert np.array_equal(np.frombuffer(blob, "<f8").reshape(k, k), model.factor_covariance.at(day), equal_nan=True)
    expected = model.exposures.filter(pl.col("date") == day)
    symbols = [dictionary[p] for p in np.frombuffer(positions, "<i4")]
    assert symbols == expected["symbol"].to_list()
    values = np.frombuffer(data, "<f8").reshape(-1, k)
    assert np.array_equal(values, expected.select(model.factors).to_numpy(), equal_nan=True)


def test_model_without_forecasts(store: Store, model: RiskModel) -> None:
    bare = dataclasses.replace(model, factor_covariance=None, specific_risk=None)
    model_id = _save(store, bare)
    loaded = store.load_model(model_id)
    assert loaded.factor_covariance is None and loaded.specific_risk is None
    assert_frame_equal(loaded.exposures, bare.exposures, check_exact=True)
    assert store.model_dates(model_id) == []
    with pytest.raises(ModelError, match="the model has no factor covariance forecast"):
        store.snapshot(model_id)
    with pytest.raises(ModelError, match=f"model {model_id} has no specific risk forecast"):
        store.specific_risk(model_id)
    with pytest.raises(ModelError, match=f"model {model_id} has no factor covariance forecast"):
        store.factor_covariance(model_id)


def test_unknown_model(store: Store) -> None:
    for read in (
        store.get_model,
        store.load_model,
        store.factor_returns,
        store.exposures,
        store.residuals,
        store.specific_risk,
        store.diagnostics,
        store.model_dates,
        store.factor_covariance,
        store.delete_model,
    ):
        with pytest.raises(NotFound, match=r"^no model feedbeef$"):
            read("feedbeef")
