"""The store's side of model updates (migration 0004), on SQLite and PostgreSQL: the update state saved with a
model and replaced by an append, Store.update_inputs equal to what read_update_inputs reads of the same model
saved as a folder, update runs among the jobs, and a store from before the migration upgraded (and back)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from db_fixtures import IsolatedDatabase
from factor_engine.config import ModelConfig
from factor_engine.model import ModelError, ModelExtension, RiskModel, build_model
from factor_engine.storage import NotFound, Store, StoreConflict, connect
from factor_engine.synthetic import generate_market
from factor_engine.update import UpdateInputs, read_update_inputs
from stored_panels import migrate_to

# short lookbacks: an update reads the exposure keys of its last ~60 dates only
SHORT = {
    "styles": {"names": ["momentum", "size"], "momentum": {"trailing_days": 20, "half_life": 10, "lag": 5}},
    "covariance": {"min_periods": 20},
    "adjustments": {"eigenfactor_simulations": 20},
    "specific_risk": {"min_periods": 10},
}


@pytest.fixture(scope="module")
def model() -> RiskModel:
    built = build_model(generate_market(50, 260, seed=9).panel, ModelConfig.from_mapping(SHORT))
    assert built.state and {"factor_covariance", "specific_risk"} <= set(built.state)
    return built


def save(store: Store, model: RiskModel) -> str:
    run = store.create_run({"universe_size": 0})
    store.start_run(run.id)
    store.save_model(run.id, model, timings={})
    return run.id


def assert_same_state(ours: dict[str, dict[str, np.ndarray]], theirs: dict[str, dict[str, np.ndarray]]) -> None:
    assert sorted(ours) == sorted(theirs)
    for component, arrays in theirs.items():
        assert sorted(ours[component]) == sorted(arrays), component
        for name, array in arrays.items():
            stored = ours[component][name]
            assert stored.dtype == np.asarray(array).dtype and stored.shape == np.shape(array), (component, name)
            np.testing.assert_array_equal(stored, array)


def test_the_state_is_saved_with_the_model_and_replaced_by_an_append(store: Store, model: RiskModel) -> None:
    assert model.state is not None
    model_id = save(store, model)
    assert_same_state(store.model_state(model_id), {k: dict(v) for k, v in model.state.items()})
    # strings, NaN and integer arrays keep their dtypes (the specific-risk state holds all three)
    assert store.model_state(model_id)["specific_risk"]["symbols"].dtype.kind == "U"
    assert np.isnan(store.model_state(model_id)["specific_risk"]["recent"]).any()
    without = save(store, dataclasses.replace(model, state=None))
    assert store.model_state(without) == {}
    # an append replaces the components it gives and keeps the others
    dates = model.factor_returns.get_column("date")
    first = save(store, dataclasses.replace(model.between(end=dates[-2]), state=model.state))
    replaced = {"specific_risk": {"marker": np.arange(3, dtype=np.int64), "label": np.array(["a", "bc"])}}
    extension = dataclasses.replace(ModelExtension.after(model, dates[-2]), state=replaced)
    store.append_model_dates(first, extension)
    kept = {name: dict(arrays) for name, arrays in model.state.items() if name != "specific_risk"}
    assert "factor_covariance" in kept
    assert_same_state(store.model_state(first), {**replaced, **kept})
    with pytest.raises(ValueError, match=r"state array 'bad' holds Python objects"):
        store.save_model(
            store.create_run({}, running=True).id,
            dataclasses.replace(model, state={"x": {"bad": np.array([object()], dtype=object)}}),
            timings={},
        )
    with pytest.raises(NotFound, match="no model nope"):
        store.model_state("nope")


def _assert_inputs_equal(ours: UpdateInputs, theirs: UpdateInputs) -> None:
    assert ours.all_keys == theirs.all_keys
    assert ours.keys.sort("date", "symbol").equals(theirs.keys.sort("date", "symbol"))
    assert ours.factor_returns.equals(theirs.factor_returns)
    assert ours.diagnostics.equals(theirs.diagnostics)
    assert ours.covariance is not None and theirs.covariance is not None
    assert (
        ours.covariance.dates.equals(theirs.covariance.dates) and ours.covariance.horizon == theirs.covariance.horizon
    )
    np.testing.assert_array_equal(ours.covariance.values, theirs.covariance.values)
    assert_same_state(ours.state, theirs.state)
    assert ours.last_date == theirs.last_date and ours.config == theirs.config
    for key in ("factors", "sectors", "styles", "config", "build"):
        assert ours.meta[key] == theirs.meta[key], key


def test_update_inputs_equal_those_read_from_the_model_folder(store: Store, model: RiskModel, tmp_path: Path) -> None:
    model_id = save(store, model)
    model.save(tmp_path / "model")
    recent = store.update_inputs(model_id)
    assert not recent.all_keys
    dates = recent.keys.get_column("date").unique()
    assert 20 < dates.len() < 100 and dates.max() == model.exposures.get_column("date").max()
    _assert_inputs_equal(recent, read_update_inputs(tmp_path / "model"))
    every = store.update_inputs(model_id, all_keys=True)
    assert every.keys.height == model.exposures.height
    _assert_inputs_equal(every, read_update_inputs(tmp_path / "model", all_keys=True))
    without = save(store, model.between(end=model.factor_returns.get_column("date")[-2]))
    with pytest.raises(ModelError, match=rf"^model {without} has no update state: .* rebuild it without end_date"):
        store.update_inputs(without)
    with pytest.raises(NotFound, match="no model nope"):
        store.update_inputs("nope")


def test_update_runs_are_jobs_of_a_model(store: Store, model: RiskModel) -> None:
    model_id = save(store, model)
    run = store.create_update_run(model_id, {"end_date": None}, worker="w", lease_seconds=30)
    assert (run.kind, run.model_id, run.status, run.request) == ("update", model_id, "queued", {"end_date": None})
    with pytest.raises(StoreConflict, match=rf"already being updated \(job {run.id}, queued\)"):
        store.create_update_run(model_id, {})
    with pytest.raises(StoreConflict, match="is being updated"):
        store.delete_model(model_id)
    building = store.create_run({}, running=True)
    with pytest.raises(StoreConflict, match="still being built"):
        store.create_update_run(building.id, {})
    for unknown in ("nope", run.id):  # an update run is no model
        with pytest.raises(NotFound, match=f"no model {unknown}"):
            store.create_update_run(unknown, {})
        with pytest.raises(NotFound):
            store.get_model(unknown)
    assert [summary.id for summary in store.list_models()] == [model_id]
    # the append finishes the run in its transaction; a run that is not running is refused with nothing written
    dates = model.factor_returns.get_column("date")
    cut = save(store, model.between(end=dates[-2]))
    other = store.create_update_run(cut, {})
    with pytest.raises(StoreConflict, match=f"cannot finish update job {other.id}: it is queued, not running"):
        store.append_model_dates(cut, ModelExtension.after(model, dates[-2]), run_id=other.id)
    assert store.get_model(cut).last_date == dates[-2] and store.get_model(cut).updated_at is None
    store.start_run(other.id)
    summary = store.append_model_dates(cut, ModelExtension.after(model, dates[-2]), run_id=other.id, timings={"x": 1})
    finished = store.get_run(other.id)
    assert finished.status == "succeeded" and finished.timings == {"x": 1.0}
    assert summary.last_date == dates[-1] and summary.updated_at is not None
    assert store.get_run(cut).updated_at == summary.updated_at
    assert [m.updated_at for m in store.list_models() if m.id == cut] == [summary.updated_at]
    # a finished update job can be deleted; deleting the model deletes its update jobs
    store.fail_run(run.id, "test")
    store.delete_model(model_id)
    with pytest.raises(NotFound):
        store.get_run(run.id)
    store.delete_run(other.id)
    with pytest.raises(NotFound):
        store.get_run(other.id)


def test_a_store_from_before_the_migration_is_upgraded_and_back(database: IsolatedDatabase, model: RiskModel) -> None:
    """A model stored at revision 0003 is a build without update time nor state after the upgrade; downgraded
    to 0003, the update runs are deleted and the models kept."""
    engine = migrate_to(database, "0003")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO model_runs (id, status, request, progress, timings, created_at) "
                "VALUES ('old-failed', 'failed', '{}', 0.5, '{}', '2026-11-30 10:00:00')"
            )
    finally:
        engine.dispose()
    store = connect(database.url, schema=database.schema)  # migrates to head
    try:
        old = store.get_run("old-failed")
        assert (old.kind, old.model_id, old.updated_at) == ("build", None, None)
        model_id = save(store, model)
        store.create_update_run(model_id, {})
    finally:
        store.close()
    engine = migrate_to(database, "0003", down=True)
    try:
        with engine.connect() as connection:
            ids = sorted(connection.execute(sa.text("SELECT id FROM model_runs")).scalars())
            tables = sa.inspect(connection).get_table_names()
    finally:
        engine.dispose()
    assert ids == sorted(["old-failed", model_id]) and "model_state" not in tables
    store = connect(database.url, schema=database.schema)
    try:
        assert store.get_model(model_id).updated_at is None and store.model_state(model_id) == {}
        assert store.load_model(model_id).factor_returns.equals(model.factor_returns)
    finally:
        store.close()
