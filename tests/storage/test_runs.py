"""Run lifecycle, listing, conflicts, NotFound messages, delete_model and thread safety, on both backends."""

from __future__ import annotations

import datetime
import threading

import polars as pl
import pytest
import sqlalchemy as sa

from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel, build_model
from factor_engine.panel import validate_panel
from factor_engine.storage import NotFound, Store, StoreConflict
from factor_engine.storage.tables import metadata
from factor_engine.synthetic import generate_market

MODEL_TABLES = [name for name in metadata.tables if name.startswith("model_") and name != "model_runs"]


@pytest.fixture(scope="module")
def model() -> RiskModel:
    """A small model (30 assets × 150 days)."""
    panel = validate_panel(generate_market(30, 150, seed=5).panel)
    config = ModelConfig.from_mapping({"styles": {"momentum": {"trailing_days": 40, "half_life": 10, "lag": 2}}})
    return build_model(panel, config)


def _rows(store: Store, model_id: str) -> dict[str, int]:
    with store.engine.connect() as connection:
        counts = {
            name: int(
                connection.execute(
                    sa.text(f"SELECT count(*) FROM {name} WHERE model_id = :m"), {"m": model_id}
                ).scalar_one()
            )
            for name in MODEL_TABLES
        }
        counts["model_runs"] = int(
            connection.execute(sa.text("SELECT count(*) FROM model_runs WHERE id = :m"), {"m": model_id}).scalar_one()
        )
    return counts


def test_lifecycle_to_success(store: Store, model: RiskModel) -> None:
    before = datetime.datetime.now(datetime.UTC)
    run = store.create_run({"universe_size": 0, "config": {"covariance": {"horizon": 1}}})
    assert len(run.id) == 32 and int(run.id, 16) >= 0
    assert (run.status, run.stage, run.progress, run.error, run.timings) == ("queued", None, 0.0, None, {})
    assert run.request == {"universe_size": 0, "config": {"covariance": {"horizon": 1}}}
    assert before <= run.created_at <= datetime.datetime.now(datetime.UTC)
    assert run.started_at is None and run.finished_at is None
    store.start_run(run.id)
    started = store.get_run(run.id)
    assert started.status == "running" and started.started_at is not None
    store.update_progress(run.id, "styles", 0.25, {"universe": 0.5})
    progressed = store.get_run(run.id)
    assert (progressed.stage, progressed.progress, progressed.timings) == ("styles", 0.25, {"universe": 0.5})
    with pytest.raises(NotFound, match=f"^no model {run.id}$"):
        store.get_model(run.id)
    summary = store.save_model(run.id, model, timings={"universe": 0.5, "styles": 2.0})
    done = store.get_run(run.id)
    assert (done.status, done.progress, done.error, done.timings) == ("succeeded", 1.0, None, summary.timings)
    assert done.finished_at is not None and done.started_at is not None
    assert done.created_at <= done.started_at <= done.finished_at
    assert summary.timings == {"universe": 0.5, "styles": 2.0}
    rows = _rows(store, run.id)
    assert all(rows.values()), rows


def test_conflicts_and_not_found(store: Store, model: RiskModel) -> None:
    run = store.create_run({})
    with pytest.raises(StoreConflict, match=f"job {run.id} is queued, not running"):
        store.update_progress(run.id, "styles", 0.1, {})
    with pytest.raises(StoreConflict, match=f"cannot save a model for job {run.id}: it is queued, not running"):
        store.save_model(run.id, model, timings={})
    store.start_run(run.id)
    with pytest.raises(StoreConflict, match=f"job {run.id} is running, not queued"):
        store.start_run(run.id)
    with pytest.raises(ValueError, match=r"progress must be a fraction in \[0, 1\], got 1.5"):
        store.update_progress(run.id, "styles", 1.5, {})
    with pytest.raises(StoreConflict, match=f"model {run.id} is still building \\(running\\)"):
        store.delete_model(run.id)
    store.fail_run(run.id, "boom: singular matrix")
    failed = store.get_run(run.id)
    assert (failed.status, failed.error) == ("failed", "boom: singular matrix")
    assert failed.finished_at is not None
    with pytest.raises(StoreConflict, match=f"job {run.id} is failed, not queued or running"):
        store.fail_run(run.id, "again")
    with pytest.raises(NotFound, match=f"^no model {run.id}$"):
        store.delete_model(run.id)
    assert _rows(store, run.id) == {**dict.fromkeys(MODEL_TABLES, 0), "model_runs": 1}
    for call in (
        store.get_run,
        store.start_run,
        lambda i: store.fail_run(i, "x"),
        lambda i: store.update_progress(i, "s", 0.5, {}),
        lambda i: store.save_model(i, model, timings={}),
    ):
        with pytest.raises(NotFound, match=r"^no job 00ff$"):
            call("00ff")
    with pytest.raises(ValueError, match="limit must be a positive integer, got 0"):
        store.list_runs(limit=0)
    with pytest.raises(ValueError, match=r"status must be one of .*got 'done'"):
        store.list_runs(status="done")


def test_list_and_expire_runs_without_lease(store: Store, model: RiskModel) -> None:
    ids = [store.create_run({"n": n}).id for n in range(4)]
    store.start_run(ids[1])
    store.start_run(ids[2])
    store.save_model(ids[2], model, timings={})
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(limit=2)] == ids[:1:-1]
    assert [r.id for r in store.list_runs(status="queued")] == [ids[3], ids[0]]
    assert [m.id for m in store.list_models()] == [ids[2]]
    # open runs without a lease: no service worker holds them
    expired = store.expire_runs()
    assert sorted(expired) == sorted([ids[0], ids[1], ids[3]])
    for run_id in expired:
        run = store.get_run(run_id)
        assert run.status == "failed"
        assert run.error is not None and run.error.startswith("interrupted: the service stopped during the build")
    assert store.get_run(ids[2]).status == "succeeded"
    assert store.expire_runs() == []


def _age_lease(store: Store, run_id: str, seconds: float) -> None:
    """Move the lease of ``run_id`` to ``seconds`` from now (negative: expired)."""
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    with store.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE model_runs SET lease_expires_at = :t WHERE id = :id"), {"t": expires, "id": run_id}
        )


def test_leases_are_renewed_by_their_worker_and_expire(store: Store, model: RiskModel) -> None:
    before = datetime.datetime.now(datetime.UTC)
    live = store.create_run({"n": 1}, worker="host:1:a", lease_seconds=30)
    other = store.create_run({"n": 2}, worker="host:2:b", lease_seconds=30)
    held = store.get_run(live.id)
    assert held.worker == "host:1:a"
    assert held.lease_expires_at is not None
    assert 29 <= (held.lease_expires_at - before).total_seconds() <= 31
    store.start_run(live.id)
    # a worker renews only its own leases, and only of open runs
    assert store.renew_leases("host:1:a", [live.id, other.id], 60) == [live.id]
    renewed = store.get_run(live.id).lease_expires_at
    assert renewed is not None and (renewed - before).total_seconds() >= 59
    not_renewed = store.get_run(other.id).lease_expires_at
    assert not_renewed is not None and (not_renewed - before).total_seconds() <= 31
    assert store.expire_runs() == []  # both leases are in the future
    _age_lease(store, other.id, -1.0)
    assert store.expire_runs() == [other.id]
    failed = store.get_run(other.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert "host:2:b" in failed.error and "stopped renewing its lease" in failed.error
    # the failed run is no longer renewable, and the live one is untouched
    assert store.renew_leases("host:2:b", [other.id], 30) == []
    assert store.get_run(live.id).status == "running"
    # its worker comes back too late: the model of an expired run is not saved
    _age_lease(store, live.id, -1.0)
    assert store.expire_runs() == [live.id]
    with pytest.raises(StoreConflict, match="it is failed, not running"):
        store.save_model(live.id, model, timings={})


def test_delete_model_removes_every_row(store: Store, model: RiskModel) -> None:
    kept, deleted = (store.create_run({"n": n}).id for n in range(2))
    for run_id in (kept, deleted):
        store.start_run(run_id)
        store.save_model(run_id, model, timings={})
    kept_rows = _rows(store, kept)
    assert _rows(store, deleted) == kept_rows and all(kept_rows.values())
    store.snapshot(deleted)  # fills the symbol cache, which delete must not leave behind
    store.delete_model(deleted)
    assert _rows(store, deleted) == {**dict.fromkeys(MODEL_TABLES, 0), "model_runs": 0}
    assert _rows(store, kept) == kept_rows
    with pytest.raises(NotFound, match=f"^no job {deleted}$"):
        store.get_run(deleted)
    with pytest.raises(NotFound, match=f"^no model {deleted}$"):
        store.snapshot(deleted)
    with pytest.raises(NotFound, match=f"^no model {deleted}$"):
        store.delete_model(deleted)


def test_cascade_from_model_runs(store: Store, model: RiskModel) -> None:
    """The foreign keys cascade: deleting the run row alone removes every model row."""
    run = store.create_run({})
    store.start_run(run.id)
    store.save_model(run.id, model, timings={})
    with store.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM model_runs WHERE id = :m"), {"m": run.id})
    assert _rows(store, run.id) == {**dict.fromkeys(MODEL_TABLES, 0), "model_runs": 0}


def test_concurrent_threads(store: Store, model: RiskModel) -> None:
    """Several threads create, progress and read runs and save models at once."""
    errors: list[BaseException] = []
    created: list[str] = []
    lock = threading.Lock()
    saved = store.create_run({})
    store.start_run(saved.id)
    store.save_model(saved.id, model, timings={})
    expected = store.factor_returns(saved.id)

    def work(worker: int) -> None:
        try:
            for n in range(4):
                run = store.create_run({"worker": worker, "n": n})
                store.start_run(run.id)
                store.update_progress(run.id, "styles", 0.5, {"universe": 0.1})
                if n == 0:
                    store.save_model(run.id, model, timings={})
                else:
                    store.fail_run(run.id, "stop")
                if not store.factor_returns(saved.id).equals(expected):
                    raise AssertionError("a concurrent read differed")
                with lock:
                    created.append(run.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(created)) == 24
    assert len(store.list_runs(status="failed")) == 18
    assert len(store.list_models()) == 7
    assert pl.Series(store.list_runs(status="succeeded", limit=100)).len() == 7


def test_delete_run_removes_only_a_failed_run(store: Store, model: RiskModel) -> None:
    failed, running, succeeded = (store.create_run({"n": n}).id for n in range(3))
    store.fail_run(failed, "boom")
    store.start_run(running)
    store.start_run(succeeded)
    store.save_model(succeeded, model, timings={})
    store.delete_run(failed)
    with pytest.raises(NotFound, match=f"^no job {failed}$"):
        store.get_run(failed)
    with pytest.raises(NotFound, match=f"^no job {failed}$"):
        store.delete_run(failed)
    with pytest.raises(StoreConflict, match=f"^job {running} is running: only a failed job can be deleted$"):
        store.delete_run(running)
    with pytest.raises(StoreConflict, match=r"is succeeded: only a failed job can be deleted \(delete its model"):
        store.delete_run(succeeded)
    assert {run.id for run in store.list_runs()} == {running, succeeded}
    assert [m.id for m in store.list_models()] == [succeeded]
