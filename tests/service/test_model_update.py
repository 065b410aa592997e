"""POST /models/{id}/update on SQLite and PostgreSQL: a model built by the service, extended by newly ingested
panel rows in a job, equals a build on the whole panel; 404, 409, refusals, "nothing to add", and a failure in
the write leaves the model as it was (then the retried job succeeds)."""

from __future__ import annotations

import datetime
import io
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from service_helpers import API, TEST_CONFIG, ClientFactory, model_config, wait_for_job

from db_fixtures import IsolatedDatabase
from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel, build_model
from factor_engine.panel import validate_panel
from factor_engine.storage import Store, connect
from factor_engine.storage.model_store import ModelStore
from factor_engine.synthetic import generate_market
from factor_engine.update import differences

UNIVERSE = 100  # of the 120 assets: the new dates' universe is ranked by the previous caps
NEW = 3  # dates ingested after the build
TOLERANCE = 1e-10  # relative to each quantity's largest value
BUILD: dict[str, Any] = {"universe_size": UNIVERSE, "config": TEST_CONFIG, "background": True}
# styles with short lookbacks: the update reads the exposure keys of its last ~60 dates only
SHORT_CONFIG: dict[str, Any] = {**TEST_CONFIG, "styles": {**TEST_CONFIG["styles"], "names": ["momentum", "size"]}}


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return validate_panel(generate_market(120, 400, seed=11).panel)


@pytest.fixture(scope="module")
def dates(panel: pl.DataFrame) -> list[datetime.date]:
    return panel.get_column("date").unique().sort().to_list()


@pytest.fixture(scope="module")
def full(panel: pl.DataFrame) -> RiskModel:
    """The reference: a build on the whole panel with the configuration the service builds with."""
    return build_model(panel, model_config(UNIVERSE))


@pytest.fixture
def store(database: IsolatedDatabase) -> Iterator[Store]:
    opened = connect(database.url, schema=database.schema)
    try:
        yield opened
    finally:
        opened.close()


def _upload(client: TestClient, rows: pl.DataFrame) -> None:
    body = io.BytesIO()
    rows.write_parquet(body)
    response = client.post(
        f"{API}/data/panel/upload",
        content=body.getvalue(),
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    assert response.status_code == 200, response.text


def _build(client: TestClient, request: dict[str, Any] = BUILD) -> str:
    response = client.post(f"{API}/risk-model/create", json=request)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    return str(job["id"])


def _settled(client: TestClient, job_id: str, timeout: float = 10.0) -> None:
    """Wait until this worker no longer holds ``job_id`` (its thread ends just after the job's status does)."""
    deadline = time.monotonic() + timeout
    while client.app.state.service.jobs.is_active(job_id):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"job {job_id} still held after {timeout} s"
        time.sleep(0.02)


def _update(client: TestClient, model_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST the update, check the 202 answer and return the finished job."""
    response = client.post(f"{API}/models/{model_id}/update", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued" and accepted["status_url"] == f"{API}/jobs/{accepted['job_id']}"
    return wait_for_job(client, accepted["job_id"])


def assert_updated_equals(stored: RiskModel, full: RiskModel, since: datetime.date) -> None:
    """The stored model equals ``full`` within TOLERANCE: the later dates' factor returns, exposures, specific
    risk and factor covariance, and the exposures up to ``since`` (the build's, kept)."""
    gaps = differences(stored, full, since)
    assert set(gaps) >= {"factor returns", "exposures", "specific risk", "factor covariance", "earlier exposures"}
    assert all(gap < TOLERANCE for gap in gaps.values()), gaps
    assert stored.factor_covariance is not None and (stored.factor_covariance.dates > since).any()


def test_an_update_in_two_jobs_equals_a_build_on_the_whole_panel(
    database: IsolatedDatabase,
    app_client: ClientFactory,
    store: Store,
    panel: pl.DataFrame,
    dates: list[datetime.date],
    full: RiskModel,
) -> None:
    cut = dates[-NEW - 1]
    with app_client(database) as client:
        _upload(client, panel.filter(pl.col("date") <= cut))
        model_id = _build(client)
        built = client.get(f"{API}/models/{model_id}").json()
        assert built["updated_at"] is None and built["last_date"] == str(cut)
        _upload(client, panel.filter(pl.col("date") > cut))
        # the first job adds two of the three new dates (end_date), the second the last one
        first = _update(client, model_id, {"end_date": str(dates[-2])})
        assert first["status"] == "succeeded", first
        assert first["kind"] == "update" and first["model_id"] == model_id
        assert first["model_url"] == f"{API}/models/{model_id}"
        assert first["progress"] == 1.0 and "styles" in first["timings"] and "save" not in first["timings"]
        middle = client.get(f"{API}/models/{model_id}").json()
        assert middle["last_date"] == str(dates[-2]) and middle["updated_at"] is not None
        second = _update(client, model_id)
        assert second["status"] == "succeeded", second
        summary = client.get(f"{API}/models/{model_id}").json()
        listed = {model["id"]: model for model in client.get(f"{API}/models").json()}
        returns = client.get(f"{API}/models/{model_id}/factor-returns").json()
        jobs = client.get(f"{API}/jobs").json()
    assert summary["last_date"] == str(dates[-1]) and summary["n_dates"] == full.factor_returns.height
    assert summary["updated_at"] >= middle["updated_at"] > summary["created_at"]
    assert list(listed) == [model_id]  # update jobs are jobs, not models
    assert listed[model_id]["updated_at"] == summary["updated_at"]
    assert returns["dates"][-1] == str(dates[-1])  # the read follows the update (no stale cached body)
    assert {job["kind"] for job in jobs} == {"build", "update"} and len(jobs) == 3
    assert_updated_equals(store.load_model(model_id), full, cut)
    assert store.get_model(model_id).build["updated"] == {"dates": 1, "through": str(dates[-1])}


def test_sparse_asset_makes_the_job_read_every_key(
    postgres_database: IsolatedDatabase,
    app_client: ClientFactory,
    panel: pl.DataFrame,
    dates: list[datetime.date],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Styles with short lookbacks: the job reads the exposure keys of the last dates only, except for an asset
    trading one day in four, whose own rows reach further back: then it reads them all (and the panel from
    the model's first date). The result equals the build either way."""
    sparse = panel.get_column("symbol").unique().sort()[7]
    day = pl.col("date").rank("dense").cast(pl.Int64)
    thinned = panel.filter((pl.col("symbol") != sparse) | (day % 4 == 0))
    cut = dates[-2]  # the last date is one of the sparse asset's (400 % 4 == 0)
    request = {**BUILD, "config": SHORT_CONFIG}
    config = ModelConfig.from_mapping({**SHORT_CONFIG, "universe": {"size": UNIVERSE}})
    reads: list[bool] = []
    update_inputs = ModelStore.update_inputs

    def recorded(self: ModelStore, model_id: str, *, all_keys: bool = False) -> Any:
        reads.append(all_keys)
        return update_inputs(self, model_id, all_keys=all_keys)

    with app_client(postgres_database) as client:
        _upload(client, thinned.filter(pl.col("date") <= cut))
        model_id = _build(client, request)
        store = connect(postgres_database.url, schema=postgres_database.schema)
        try:
            recent = store.update_inputs(model_id)
            assert not recent.all_keys and recent.keys.get_column("date").n_unique() < 100
            _upload(client, thinned.filter(pl.col("date") > cut))
            monkeypatch.setattr(ModelStore, "update_inputs", recorded)
            job = _update(client, model_id)
            assert job["status"] == "succeeded", job
            assert reads == [False, True]  # the recent keys first, then every key
            assert_updated_equals(store.load_model(model_id), build_model(thinned, config), cut)
        finally:
            store.close()


def test_unknown_model_and_running_jobs(
    database: IsolatedDatabase, app_client: ClientFactory, store: Store, panel: pl.DataFrame, dates: list[datetime.date]
) -> None:
    with app_client(database) as client:
        _upload(client, panel.filter(pl.col("date") <= dates[-2]))
        model_id = _build(client)
        missing = client.post(f"{API}/models/nope/update")
        building = store.create_run({"universe_size": 10}, worker="another-worker", lease_seconds=120, running=True)
        being_built = client.post(f"{API}/models/{building.id}/update")
        # an update of the model queued by another worker: a second one is refused, and so is a deletion
        other = store.create_update_run(model_id, {}, worker="another-worker", lease_seconds=120)
        twice = client.post(f"{API}/models/{model_id}/update")
        _settled(client, model_id)  # the build's thread has let go of it (else a deletion is refused anyway)
        deleted = client.delete(f"{API}/models/{model_id}")
        of_job = client.post(f"{API}/models/{other.id}/update")  # a job id is no model
        store.fail_run(other.id, "stopped by the test")
        _upload(client, panel.filter(pl.col("date") > dates[-2]))
        retried = client.post(f"{API}/jobs/{other.id}/retry")
        assert retried.status_code == 202, retried.text
        job = wait_for_job(client, retried.json()["job_id"])
        finished = client.delete(f"{API}/jobs/{job['id']}")
    assert missing.status_code == 404 and missing.json() == {"detail": "no model nope"}
    assert being_built.status_code == 409 and "still being built" in being_built.json()["detail"]
    assert twice.status_code == 409
    assert twice.json()["detail"] == (
        f"model {model_id} is already being updated (job {other.id}, queued); wait for it to end"
    )
    assert deleted.status_code == 409 and "is being updated" in deleted.json()["detail"]
    assert of_job.status_code == 404
    assert job["status"] == "succeeded" and job["kind"] == "update", job
    assert store.get_model(model_id).last_date == dates[-1]
    assert finished.status_code == 204


def test_refusals_and_nothing_to_add_fail_the_job_with_the_reason(
    database: IsolatedDatabase, app_client: ClientFactory, store: Store, panel: pl.DataFrame, dates: list[datetime.date]
) -> None:
    cut = dates[-NEW - 1]
    with app_client(database) as client:
        _upload(client, panel.filter(pl.col("date") <= cut))
        model_id = _build(client)
        nothing = _update(client, model_id)
        before = store.load_model(model_id)
        new_rows = panel.filter(pl.col("date") > cut)
        relabelled = new_rows.with_columns(
            pl.when(pl.col("symbol") == new_rows["symbol"][0])
            .then(pl.lit("Brand New Sector"))
            .otherwise(pl.col("sector"))
            .alias("sector")
        )
        _upload(client, relabelled)
        new_sector = _update(client, model_id)
        summary = client.get(f"{API}/models/{model_id}").json()
    assert nothing["status"] == "failed"
    assert nothing["error"] == (
        f"nothing to add: the stored panel has no date after model {model_id}'s last date {cut}; ingest the new "
        "dates first (POST /data/panel)"
    )
    assert new_sector["status"] == "failed"
    assert new_sector["error"] == (
        "the model cannot be updated: sector 'Brand New Sector' appears in the new dates but is not in the model: "
        "rebuild the model"
    )
    assert summary["updated_at"] is None and summary["last_date"] == str(cut)
    assert store.load_model(model_id).factor_returns.equals(before.factor_returns)


def test_a_model_built_from_a_start_date_updates_like_the_build_cut_alike(
    database: IsolatedDatabase, app_client: ClientFactory, store: Store, panel: pl.DataFrame, dates: list[datetime.date]
) -> None:
    """A model built with start_date keeps the warm-up's factor returns in its update state: updated, it equals
    the build of the whole panel cut at the same date. A model that keeps fewer dates than its styles look back
    on would need the warm-up's rows, which are not stored: the job then says so."""
    cut, start = dates[-NEW - 1], dates[100]  # 296 dates kept: more than beta's 253
    with app_client(database) as client:
        _upload(client, panel.filter(pl.col("date") <= cut))
        model_id = _build(client, {**BUILD, "universe_size": 500, "start_date": str(start)})
        binding_id = _build(client, {**BUILD, "universe_size": 500, "start_date": str(dates[200])})
        _upload(client, panel.filter(pl.col("date") > cut))
        job = _update(client, model_id)
        binding = _update(client, binding_id)
    assert job["status"] == "succeeded", job
    stored = store.load_model(model_id)
    assert stored.factor_returns["date"].min() == start
    # the service builds from history_days (730 calendar days by default) before start_date
    warm = panel.filter(pl.col("date") >= start - datetime.timedelta(days=730))
    assert_updated_equals(stored, build_model(warm, model_config(500)).between(start=start), cut)
    assert binding["status"] == "failed"
    assert "rows from before the model's first date are needed" in binding["error"]


def test_missing_caps_are_left_out_of_the_update_as_of_the_build(
    database: IsolatedDatabase, app_client: ClientFactory, store: Store, panel: pl.DataFrame, dates: list[datetime.date]
) -> None:
    """Caps missing in the stored panel: the update equals the build on the same panel. The largest asset has no
    row in the dates the job reads before the new ones (cross-sectional styles: the last 3) and no cap on its two
    rows before those: the universe ranks it by its cap before them, as the build does (the job looks further
    back for it); another asset lacks its cap on a new date, which the update's notes count."""
    cut = dates[-NEW - 1]
    config = {**TEST_CONFIG, "styles": {"names": ["size", "value"]}}
    largest, other = (
        panel.filter(pl.col("date") == cut)
        .join(panel.group_by("symbol").len().filter(pl.col("len") == len(dates)), on="symbol", how="semi")
        .sort("market_cap", descending=True)
        .get_column("symbol")
        .head(2)
        .to_list()
    )
    day = pl.col("date")
    holes = panel.filter(
        ~((pl.col("symbol") == largest) & day.is_between(dates[-30], dates[-NEW - 1]))  # no row in the dates read
    ).with_columns(
        pl.when(
            ((pl.col("symbol") == largest) & day.is_in(dates[-32:-30]))
            | ((pl.col("symbol") == other) & (day == dates[-2]))
        )
        .then(None)
        .otherwise(pl.col("market_cap"))
        .alias("market_cap")
    )
    assert holes.filter(day == dates[-1]).height > UNIVERSE  # the universe binds: the previous cap decides
    with app_client(database) as client:
        _upload(client, holes.filter(day <= cut))
        model_id = _build(client, {**BUILD, "config": config})
        _upload(client, holes.filter(day > cut))
        job = _update(client, model_id)
    assert job["status"] == "succeeded", job
    stored = store.load_model(model_id)
    reference = build_model(holes, ModelConfig.from_mapping({**config, "universe": {"size": UNIVERSE}}))
    assert stored.exposures.filter(pl.col("symbol") == largest).get_column("date").max() == dates[-1]
    assert_updated_equals(stored, reference, cut)
    updated = store.get_model(model_id).build["updated"]
    assert updated["market_cap_missing"] == {"rows": 1, "symbols": [other], "symbols_left_out": []}
    assert updated["warnings"][0].startswith(f"market_cap missing on 1 row of 1 symbol of the new dates ({other})")


def test_a_failed_write_leaves_the_model_as_it_was(
    database: IsolatedDatabase,
    app_client: ClientFactory,
    store: Store,
    panel: pl.DataFrame,
    dates: list[datetime.date],
    full: RiskModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write fails at its last insert (the new state, after the new dates' rows and the small tables): the
    model, its state and its summary are as before and the job failed with the error; the retried job then
    writes the update."""
    cut = dates[-NEW - 1]
    insert = ModelStore._bulk_insert

    def failing(self: ModelStore, connection: Any, table: Any, rows: Any) -> None:
        if table.name == "model_state":
            raise RuntimeError("injected failure in the append")
        insert(self, connection, table, rows)

    with app_client(database) as client:
        _upload(client, panel.filter(pl.col("date") <= cut))
        model_id = _build(client)
        before, state = store.load_model(model_id), store.model_state(model_id)
        symbols, summary = store.exposures(model_id).get_column("symbol").unique(), store.get_model(model_id)
        _upload(client, panel.filter(pl.col("date") > cut))
        monkeypatch.setattr(ModelStore, "_bulk_insert", failing)
        failed = _update(client, model_id)
        monkeypatch.undo()
        after, unchanged, summary_after = (
            store.load_model(model_id),
            store.model_state(model_id),
            store.get_model(model_id),
        )
        last_after = store.model_dates(model_id)[-1]
        retried = client.post(f"{API}/jobs/{failed['id']}/retry")
        assert retried.status_code == 202, retried.text
        job = wait_for_job(client, retried.json()["job_id"])
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: injected failure in the append"
    for name in ("factor_returns", "exposures", "residuals", "diagnostics", "specific_risk"):
        assert getattr(after, name).equals(getattr(before, name)), name
    assert after.factor_covariance is not None and before.factor_covariance is not None
    np.testing.assert_array_equal(after.factor_covariance.values, before.factor_covariance.values)
    assert unchanged.keys() == state.keys()
    for component, arrays in state.items():
        for name, array in arrays.items():
            np.testing.assert_array_equal(unchanged[component][name], array)
    assert summary_after == summary and last_after == cut and summary.n_assets == symbols.len()
    assert job["status"] == "succeeded", job
    assert_updated_equals(store.load_model(model_id), full, cut)
