"""append_model_dates on the store: the new dates' rows inserted and the small tables replaced in one
transaction; the result reads back as the model stored at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa

from db_fixtures import IsolatedDatabase
from factor_engine.config import ModelConfig
from factor_engine.model import ModelError, ModelExtension, RiskModel, build_model
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.storage import NotFound, Store, connect
from factor_engine.storage.tables import model_runs
from factor_engine.synthetic import generate_market

FRAMES = ("factor_returns", "exposures", "residuals", "diagnostics", "specific_risk")
NEW_SYMBOL = "ZZZ_LISTED_LATER"


@pytest.fixture(scope="module")
def model() -> RiskModel:
    """40 assets × 220 days; one asset is renamed on the last two dates, as a listing the update brings."""
    config = ModelConfig.from_mapping({"styles": {"momentum": {"trailing_days": 40, "half_life": 10, "lag": 2}}})
    built = build_model(generate_market(40, 220, seed=5).panel, config)
    dates = built.exposures["date"].unique().sort()
    renamed = pl.when((pl.col("symbol") == built.exposures["symbol"][0]) & (pl.col("date") >= dates[-2]))
    rename = renamed.then(pl.lit(NEW_SYMBOL)).otherwise(pl.col("symbol")).alias("symbol")
    assert built.specific_risk is not None
    return dataclasses.replace(
        built,
        exposures=built.exposures.with_columns(rename),
        residuals=built.residuals.with_columns(rename),
        specific_risk=built.specific_risk.with_columns(rename),
    )


@pytest.fixture(scope="module")
def dates(model: RiskModel) -> list[datetime.date]:
    return model.exposures["date"].unique().sort().to_list()


def extension(model: RiskModel, after: datetime.date, until: datetime.date | None = None) -> ModelExtension:
    """What an update from ``after`` to ``until`` writes: the large tables' rows of those dates, the small tables
    as of ``until`` (whole)."""
    return ModelExtension.after(model.between(end=until), after)


def save(store: Store, model: RiskModel) -> str:
    run = store.create_run({"universe_size": 0})
    store.start_run(run.id)
    store.save_model(run.id, model, timings={})
    return run.id


def assert_stored_equals(store: Store, model_id: str, model: RiskModel) -> None:
    loaded = store.load_model(model_id)
    for name in FRAMES:
        assert getattr(loaded, name).equals(getattr(model, name)), name
    assert loaded.factor_covariance is not None and model.factor_covariance is not None
    assert loaded.factor_covariance.dates.equals(model.factor_covariance.dates)
    np.testing.assert_array_equal(loaded.factor_covariance.values, model.factor_covariance.values)
    assert store.model_dates(model_id) == forecast_dates(model).to_list()


def row_counts(store: Store, model_id: str) -> dict[str, Any]:
    tables = ("model_symbols", "model_factor_returns", "model_covariances", "model_exposures", "model_residuals")
    with store.engine.connect() as connection:
        counts = {
            name: connection.execute(
                sa.text(f"SELECT count(*) FROM {name} WHERE model_id = :m"), {"m": model_id}
            ).scalar_one()
            for name in tables
        }
        counts["meta"] = connection.execute(
            sa.select(model_runs.c.model_meta).where(model_runs.c.id == model_id)
        ).scalar_one()
    return counts


def test_appended_dates_read_back_as_the_model_stored_at_once(
    store: Store, model: RiskModel, dates: list[datetime.date]
) -> None:
    first, second = dates[-4], dates[-2]
    model_id = save(store, model.between(end=first))
    summary = store.append_model_dates(model_id, extension(model, first, second))
    assert summary.last_date == model.between(end=second).factor_returns["date"].max()
    assert_stored_equals(store, model_id, model.between(end=second))
    summary = store.append_model_dates(model_id, extension(model, second))
    assert_stored_equals(store, model_id, model)
    at_once = save(store, model)
    expected = store.get_model(at_once)
    for field in ("first_date", "last_date", "n_dates", "n_assets", "covariance_dates", "factors"):
        assert getattr(summary, field) == getattr(expected, field), field
    assert summary.n_assets == model.exposures["symbol"].n_unique()  # the listed symbol is in the dictionary
    assert datetime.datetime.fromisoformat(row_counts(store, model_id)["meta"]["updated_at"]).tzinfo is not None
    snapshot, expected_snapshot = store.snapshot(model_id), snapshot_at(model)
    assert NEW_SYMBOL in snapshot.symbols and snapshot.symbols == expected_snapshot.symbols
    for name in ("exposures", "factor_covariance", "specific_vol"):
        np.testing.assert_array_equal(getattr(snapshot, name), getattr(expected_snapshot, name))


def test_another_process_reads_the_new_symbols(
    database: IsolatedDatabase, store: Store, model: RiskModel, dates: list[datetime.date]
) -> None:
    """A second store (another service worker) that cached the model's symbol dictionary before the append
    reads the appended dates with the new symbol."""
    model_id = save(store, model.between(end=dates[-3]))
    other = connect(database.url, schema=database.schema, migrate=False)
    try:
        assert other.exposures(model_id).equals(model.between(end=dates[-3]).exposures)  # caches the dictionary
        store.append_model_dates(model_id, extension(model, dates[-3]))
        assert other.exposures(model_id).equals(model.exposures)
        assert other.specific_risk(model_id, start=dates[-1]).equals(
            model.specific_risk.filter(pl.col("date") >= dates[-1])  # type: ignore[union-attr]
        )
    finally:
        other.close()


def test_a_failure_in_the_transaction_leaves_the_model(
    store: Store, model: RiskModel, dates: list[datetime.date], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = model.between(end=dates[-3])
    model_id = save(store, old)
    before = row_counts(store, model_id)
    original = Store._bulk_insert
    for failing in range(1, 8):  # symbols, 3 blob tables, factor returns, covariances, diagnostics
        written: list[str] = []

        def fail_at(
            self: Store,
            connection: sa.Connection,
            table: sa.Table,
            rows: Any,
            failing: int = failing,
            written: list[str] = written,
        ) -> None:
            original(self, connection, table, rows)
            written.append(table.name)
            if len(written) == failing:
                raise RuntimeError(f"planted failure after {table.name}")

        monkeypatch.setattr(Store, "_bulk_insert", fail_at)
        with pytest.raises(RuntimeError, match="planted failure"):
            store.append_model_dates(model_id, extension(model, dates[-3]))
        monkeypatch.undo()
        assert row_counts(store, model_id) == before, written
        assert_stored_equals(store, model_id, old)
    store.append_model_dates(model_id, extension(model, dates[-3]))
    assert_stored_equals(store, model_id, model)


def test_append_refuses_what_does_not_fit(store: Store, model: RiskModel, dates: list[datetime.date]) -> None:
    model_id = save(store, model.between(end=dates[-3]))
    before = row_counts(store, model_id)
    with pytest.raises(ModelError, match=r"new exposures rows start on .*, not after the model's last date"):
        store.append_model_dates(model_id, extension(model, dates[-5]))
    fitting = extension(model, dates[-3])
    with pytest.raises(ModelError, match=r"an update cannot add, drop or reorder factors"):
        dropped = fitting.factor_returns.drop(model.factors[-1])
        store.append_model_dates(model_id, dataclasses.replace(fitting, factor_returns=dropped))
    with pytest.raises(ModelError, match=r"has factor_covariance, the extension lacks it"):
        store.append_model_dates(model_id, dataclasses.replace(fitting, factor_covariance=None))
    with pytest.raises(NotFound, match="no model nope"):
        store.append_model_dates("nope", fitting)
    assert row_counts(store, model_id) == before
