"""A build whose database connection is cut mid-way: the run cannot be failed while PostgreSQL is out of
reach (it stays "running" in the database), shows as failed within one lease period after the network
returns, and its retry succeeds. The cut is a real partition (a TCP proxy between the service and
PostgreSQL, closed both ways), not a mock. Plus the lease keeper of a worker whose store becomes
unreachable, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, cast

import polars as pl
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from service_helpers import API, TEST_CONFIG, ClientFactory, wait_for_job
from sqlalchemy.engine import make_url

from db_fixtures import IsolatedDatabase
from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel
from factor_engine.panel import validate_panel
from factor_engine.service import builds
from factor_engine.service.jobs import JobRunner
from factor_engine.service.runtime import StoreHolder
from factor_engine.storage import Store, StoreUnavailable, connect
from factor_engine.storage.records import RunRecord
from tcp_proxy import TcpProxy

LEASE_SECONDS = 1.5
# time allowed beyond one lease for the keeper's round and the service's reconnection
SLACK_SECONDS = 1.0
REQUEST: dict[str, Any] = {
    "start_date": "2023-01-01",
    "end_date": "2024-01-01",
    "universe_size": 40,
    "config": TEST_CONFIG,
    "background": True,
}
PAUSE_STAGE = "exposures"
Stage = Callable[[str], AbstractContextManager[object]]


def _via_port(database: IsolatedDatabase, port: int) -> IsolatedDatabase:
    """The same database and schema, reached on 127.0.0.1:``port``."""
    url = make_url(database.url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    return IsolatedDatabase(database.backend, url, database.schema)


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


class PausingBuild:
    """``build_model`` that, on its first call only, stops before stage :data:`PAUSE_STAGE` is announced
    (``reached`` set) until ``resume`` is set; the errors it raised are kept in ``errors``."""

    def __init__(self, real: Callable[..., RiskModel]) -> None:
        self.real = real
        self.reached = threading.Event()
        self.resume = threading.Event()
        self.calls = 0
        self.errors: list[BaseException] = []

    def __call__(self, panel: pl.DataFrame, config: ModelConfig | None = None, *, stage: Stage) -> RiskModel:
        self.calls += 1
        first = self.calls == 1

        def paused(name: str) -> AbstractContextManager[object]:
            if first and name == PAUSE_STAGE:
                self.reached.set()
                if not self.resume.wait(60):
                    raise RuntimeError("the test never resumed the build")
            return stage(name)

        try:
            return self.real(panel, config, stage=paused)
        except BaseException as error:
            self.errors.append(error)
            raise


@pytest.fixture
def pg_stored(postgres_database: IsolatedDatabase, market_panel: pl.DataFrame) -> Iterator[Store]:
    """The isolated PostgreSQL schema holding the synthetic panel, opened on the server's own port."""
    store = connect(postgres_database.url, schema=postgres_database.schema)
    store.ingest_panel(validate_panel(market_panel))
    try:
        yield store
    finally:
        store.close()


def _runner(client: TestClient) -> JobRunner:
    return cast(JobRunner, client.app.state.service.jobs)  # type: ignore[attr-defined]


def test_build_cut_from_the_database_fails_within_a_lease_and_its_retry_succeeds(
    app_client: ClientFactory,
    pg_stored: Store,
    postgres_database: IsolatedDatabase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = make_url(postgres_database.url).port or 5432
    build = PausingBuild(builds.build_model)
    monkeypatch.setattr(builds, "build_model", build)
    with (
        TcpProxy(port) as proxy,
        app_client(_via_port(postgres_database, proxy.port), run_lease_seconds=LEASE_SECONDS) as client,
    ):
        runner = _runner(client)
        assert runner.lease_seconds == LEASE_SECONDS
        accepted = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert build.reached.wait(60), "the build never reached the exposures stage"
        assert proxy.accepted > 0  # the service talks to PostgreSQL through the proxy only
        before = pg_stored.get_run(job_id)
        assert (before.status, before.stage, before.error) == ("running", "factor returns", None)

        # the partition: every connection closed both ways, new ones refused; then the build goes on
        proxy.cut()
        cut_at = time.monotonic()
        build.resume.set()
        _until(lambda: not runner.is_active(job_id), 30, "the build thread did not give up the run")
        assert len(build.errors) == 1 and isinstance(build.errors[0], StoreUnavailable), build.errors
        # its next write (announcing "exposures") and its fail_run could not reach the database: through the
        # server's own port the run is still running at the last stage recorded before the cut
        during = pg_stored.get_run(job_id)
        assert (during.status, during.stage, during.error) == ("running", "factor returns", None)

        # the cut outlasts a lease: the lease has expired, yet nothing reachable can fail the run
        time.sleep(max(0.0, cut_at + 2 * LEASE_SECONDS - time.monotonic()))
        assert proxy.refused > 0  # the keeper kept trying to renew and expire through the cut
        lapsed = pg_stored.get_run(job_id)
        assert lapsed.status == "running" and lapsed.error is None
        assert lapsed.lease_expires_at is not None
        assert lapsed.lease_expires_at < datetime.datetime.now(datetime.UTC)

        proxy.restore()
        restored_at = time.monotonic()
        while True:
            answer = client.get(f"{API}/jobs/{job_id}")
            assert answer.status_code == 200, answer.text  # the service reconnects (pool_pre_ping)
            job = answer.json()
            if job["status"] != "running":
                break
            assert time.monotonic() - restored_at < 10 * LEASE_SECONDS, job
            time.sleep(0.02)
        to_failed = time.monotonic() - restored_at
        print(f"restore → failed: {to_failed:.3f} s (lease {LEASE_SECONDS} s)")
        assert job["status"] == "failed", job
        assert to_failed <= LEASE_SECONDS + SLACK_SECONDS
        assert f"the build's worker ({runner.worker}) stopped renewing its lease" in job["error"]
        assert "Retry the job" in job["error"]
        assert job["model_url"] is None
        assert client.get(f"{API}/models/{job_id}").status_code == 404

        retry = client.post(f"{API}/jobs/{job_id}/retry")
        assert retry.status_code == 202, retry.text
        new_id = retry.json()["job_id"]
        assert new_id != job_id
        done = wait_for_job(client, new_id)
        assert done["status"] == "succeeded", done
        assert build.calls == 2 and len(build.errors) == 1
        model = client.get(f"{API}/models/{new_id}")
        assert model.status_code == 200, model.text
        assert model.json()["request"] == job["request"]  # the failed job's request, as stored
        assert {key: job["request"][key] for key in REQUEST} == REQUEST
        assert model.json()["n_dates"] > 0 and model.json()["covariance_dates"] > 0
        # the first job stays failed, without a model, in the service and in the database
        assert client.get(f"{API}/jobs/{job_id}").json()["status"] == "failed"
        assert client.get(f"{API}/models/{job_id}").status_code == 404
        assert [m.id for m in pg_stored.list_models()] == [new_id]
        assert pg_stored.get_run(job_id).status == "failed"


# --------------------------------------------------------------------------------------------------
# the keeper of a worker that loses its store


class FlakyStore:
    """A real store whose lease calls fail as a lost database does while ``down`` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False

    def renew_leases(self, worker: str, run_ids: list[str], lease_seconds: float) -> list[str]:
        if self.down:
            raise StoreUnavailable("database unavailable at test: connection refused")
        return self.store.renew_leases(worker, run_ids, lease_seconds)

    def expire_runs(self) -> list[str]:
        if self.down:
            raise StoreUnavailable("database unavailable at test: connection refused")
        return self.store.expire_runs()


class FlakyHolder:
    """A store holder that cannot open the store while ``unreachable`` is set."""

    def __init__(self, store: FlakyStore) -> None:
        self.store = store
        self.unreachable = False

    @property
    def connected(self) -> FlakyStore:
        return self.store

    def get(self) -> FlakyStore:
        if self.unreachable:
            raise StoreUnavailable("database unavailable at test: could not connect")
        return self.store


def _age_lease(store: Store, run_id: str, seconds: float) -> None:
    """Move the lease of ``run_id`` to ``seconds`` from now (negative: expired)."""
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    with store.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE model_runs SET lease_expires_at = :t WHERE id = :id"), {"t": expires, "id": run_id}
        )


def _lease_left(run: RunRecord) -> float:
    assert run.lease_expires_at is not None
    return (run.lease_expires_at - datetime.datetime.now(datetime.UTC)).total_seconds()


def test_keeper_of_a_worker_without_its_store_stops_renewing_without_raising(
    database: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    store = connect(database.url, schema=database.schema)
    try:
        flaky = FlakyStore(store)
        holder = FlakyHolder(flaky)
        runner = JobRunner(cast(StoreHolder, holder), lease_seconds=30.0)  # threads not started: rounds by hand
        held = store.create_run({"n": 1}, worker=runner.worker, lease_seconds=30.0)
        runner.track(held.id)
        orphan = store.create_run({"n": 2}, worker="gone:1:dead", lease_seconds=30.0)
        _age_lease(store, held.id, 5.0)
        caplog.set_level(logging.WARNING, logger="factor_engine.service.jobs")

        assert runner.renew_and_expire() == []
        assert _lease_left(store.get_run(held.id)) > 25  # renewed to now + 30 s

        # the store becomes unreachable: first its calls fail, then it cannot even be opened
        _age_lease(store, held.id, 5.0)
        _age_lease(store, orphan.id, -1.0)
        flaky.down = True
        assert runner.renew_and_expire() == []
        holder.unreachable = True
        assert runner.renew_and_expire() == []
        assert runner.renew_and_expire() == []
        assert 0 < _lease_left(store.get_run(held.id)) <= 5  # not renewed
        assert store.get_run(orphan.id).status == "queued"  # not expired either
        warnings = [r.getMessage() for r in caplog.records]
        assert warnings == ["cannot renew build leases: database unavailable at test: connection refused"]

        # back: the held lease is renewed and the lapsed one failed, in one round
        holder.unreachable = flaky.down = False
        assert runner.renew_and_expire() == [orphan.id]
        assert _lease_left(store.get_run(held.id)) > 25
        assert store.get_run(held.id).status == "queued"
        failed = store.get_run(orphan.id)
        assert failed.status == "failed" and failed.error is not None
        assert "the build's worker (gone:1:dead) stopped renewing its lease" in failed.error
        assert [r.getMessage() for r in caplog.records][1:] == [
            "build leases renewed again",
            f"build {orphan.id} failed: its lease expired",
        ]
    finally:
        store.close()
