"""Build admission: a bounded number of builds at once and a bounded queue (503 + Retry-After before any run
is created), the panel loaded when a build starts, the memory budget, and the queued runs of a stopping
service failed (SQLite; the lease behaviour on PostgreSQL is in test_lease_db_cut.py)."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest
from service_helpers import API, TEST_CONFIG, ClientFactory, wait_for_job

from db_fixtures import IsolatedDatabase
from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.panel import validate_panel
from factor_engine.service import builds, model_reads
from factor_engine.service.budget import estimate_build_bytes
from factor_engine.service.builds import check_build_extent
from factor_engine.service.schemas import CreateModelRequest
from factor_engine.storage import Store, connect

REQUEST: dict[str, Any] = {
    "start_date": "2023-01-01",
    "end_date": "2024-01-01",
    "universe_size": 40,
    "config": TEST_CONFIG,
    "background": True,
}


@pytest.fixture
def sqlite_store(tmp_path: Any, market_panel: pl.DataFrame) -> Iterator[tuple[IsolatedDatabase, Store]]:
    isolated = IsolatedDatabase("sqlite", f"sqlite:///{tmp_path / 'admission.db'}", None)
    store = connect(isolated.url)
    store.ingest_panel(validate_panel(market_panel))
    try:
        yield isolated, store
    finally:
        store.close()


class Gate:
    """Holds every build at its "exposures" stage until opened; counts the panels loaded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()
        self.reached = threading.Semaphore(0)
        self.loads = 0
        real_build, real_load = builds.build_model, builds.load_build_panel

        def held_build(panel: pl.DataFrame, config: ModelConfig, *, stage: Any) -> Any:
            def held_stage(name: str) -> Any:
                if name == "exposures":
                    self.reached.release()
                    assert self.open.wait(60), "the test never opened the gate"
                return stage(name)

            return real_build(panel, config, stage=held_stage)

        def counted_load(*args: Any, **kwargs: Any) -> pl.DataFrame:
            self.loads += 1
            return real_load(*args, **kwargs)

        monkeypatch.setattr(builds, "build_model", held_build)
        monkeypatch.setattr(builds, "load_build_panel", counted_load)

    def wait_reached(self) -> None:
        assert self.reached.acquire(timeout=60), "no build reached the exposures stage"


def test_full_slots_and_queue_are_503_with_retry_after_and_create_no_run(
    app_client: ClientFactory, sqlite_store: tuple[IsolatedDatabase, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated, store = sqlite_store
    gate = Gate(monkeypatch)
    checks: list[str] = []
    real_check = model_reads.check_build_extent

    def counted_check(*args: Any, **kwargs: Any) -> Any:
        checks.append("extent")
        return real_check(*args, **kwargs)

    monkeypatch.setattr(model_reads, "check_build_extent", counted_check)
    with app_client(isolated, max_concurrent_builds=1, max_queued_builds=1) as client:
        running = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert running.status_code == 202
        gate.wait_reached()
        assert gate.loads == 1
        queued = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert queued.status_code == 202
        # the queued build has not loaded its panel: that happens when it starts
        assert gate.loads == 1
        assert client.get(f"{API}/jobs/{queued.json()['job_id']}").json()["status"] == "queued"

        assert len(checks) == 2
        refused = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert refused.status_code == 503
        assert len(checks) == 2  # refused before its data was looked at
        assert refused.headers["Retry-After"] == "15"
        assert "the build queue is full" in refused.json()["detail"]
        assert "FACTOR_ENGINE_MAX_QUEUED_BUILDS = 1" in refused.json()["detail"]
        direct = client.post(f"{API}/risk-model/create", json={**REQUEST, "background": False})
        assert direct.status_code == 503
        assert direct.headers["Retry-After"] == "15"
        assert "FACTOR_ENGINE_MAX_CONCURRENT_BUILDS" in direct.json()["detail"]
        assert len(checks) == 2
        assert len(store.list_runs()) == 2  # the refused requests created no run

        gate.open.set()
        gate.wait_reached()  # the queued build starts once the slot is free
        assert gate.loads == 2
        for response in (running, queued):
            assert wait_for_job(client, response.json()["job_id"])["status"] == "succeeded"
        # slots and places are given back: the next request is accepted
        again = client.post(f"{API}/risk-model/create", json={**REQUEST, "background": False})
        assert again.status_code == 200


def test_the_memory_budget_refuses_before_any_run(
    app_client: ClientFactory, sqlite_store: tuple[IsolatedDatabase, Store]
) -> None:
    isolated, store = sqlite_store
    request = CreateModelRequest.model_validate(REQUEST)
    config = ModelConfig.from_mapping({**TEST_CONFIG, "universe": {"size": 40}})
    extent, styles = check_build_extent(store, request, config)
    needed = estimate_build_bytes(extent, config, len(styles))
    with app_client(isolated, build_memory_budget_bytes=needed - 1) as client:
        refused = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert refused.status_code == 422
        detail = refused.json()["detail"]
        assert "FACTOR_ENGINE_BUILD_MEMORY_BUDGET_BYTES" in detail
        assert f"{extent.dates:,} dates × up to {extent.most_assets:,} assets" in detail
        assert store.list_runs() == []
    with app_client(isolated, build_memory_budget_bytes=needed) as client:
        accepted = client.post(f"{API}/risk-model/create", json=REQUEST)
        assert accepted.status_code == 202
        assert wait_for_job(client, accepted.json()["job_id"])["status"] == "succeeded"


@pytest.mark.parametrize("dated", [True, False], ids=["date range", "every date"])
def test_the_extent_from_aggregates_equals_the_loaded_panel(
    sqlite_store: tuple[IsolatedDatabase, Store], dated: bool
) -> None:
    _, store = sqlite_store
    body = REQUEST if dated else {k: v for k, v in REQUEST.items() if k not in ("start_date", "end_date")}
    request = CreateModelRequest.model_validate(body)
    config = ModelConfig.from_mapping({**TEST_CONFIG, "universe": {"size": 40}})
    extent, styles = check_build_extent(store, request, config)
    panel = store.load_panel(start=builds.history_start(request), end=request.end_date)
    assert extent == builds.frame_extent(panel)
    per_date = panel.group_by("date").len().get_column("len")
    assert (extent.rows, extent.dates, extent.most_assets) == (panel.height, per_date.len(), per_date.max())
    assert extent.sectors == panel.get_column("sector").n_unique()
    assert len(styles) == len(build_model(validate_panel(panel), config).styles) == 6  # toraniko's 3 and USE4's 3


def test_a_stopping_service_fails_its_queued_runs(
    app_client: ClientFactory, sqlite_store: tuple[IsolatedDatabase, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated, store = sqlite_store
    gate = Gate(monkeypatch)
    with app_client(isolated, max_concurrent_builds=1) as client:
        running = client.post(f"{API}/risk-model/create", json=REQUEST).json()["job_id"]
        gate.wait_reached()
        queued = client.post(f"{API}/risk-model/create", json=REQUEST).json()["job_id"]
        threading.Timer(0.5, gate.open.set).start()  # the running build reaches its next stage and stops
    started = datetime.datetime.now(datetime.UTC)
    for run_id in (running, queued):
        run = store.get_run(run_id)
        assert run.status == "failed"
        assert run.error == builds.INTERRUPTED
        assert run.finished_at is not None and run.finished_at <= started


def test_a_failed_job_can_be_deleted_a_live_or_succeeded_one_cannot(
    app_client: ClientFactory, sqlite_store: tuple[IsolatedDatabase, Store]
) -> None:
    isolated, store = sqlite_store
    failed = store.create_run(REQUEST)
    store.fail_run(failed.id, "the build's worker stopped renewing its lease")
    with app_client(isolated) as client:
        built = client.post(f"{API}/risk-model/create", json={**REQUEST, "background": False})
        assert built.status_code == 200
        assert client.delete(f"{API}/jobs/{failed.id}").status_code == 204
        assert client.get(f"{API}/jobs/{failed.id}").json() == {"detail": f"no job {failed.id}"}
        assert client.delete(f"{API}/jobs/{failed.id}").status_code == 404
        kept = client.delete(f"{API}/jobs/{built.json()['id']}")
        assert kept.status_code == 409
        assert "only a failed job can be deleted (delete its model with DELETE /models/<id>)" in kept.json()["detail"]
        assert client.get(f"{API}/models/{built.json()['id']}").status_code == 200
