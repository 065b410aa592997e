"""save_model is one transaction: an exception or a kill -9 in the middle of the write leaves no model row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from db_fixtures import IsolatedDatabase
from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel, build_model
from factor_engine.panel import validate_panel
from factor_engine.storage import Store, connect
from factor_engine.storage.tables import metadata
from factor_engine.synthetic import generate_market

MODEL_TABLES = [name for name in metadata.tables if name.startswith("model_") and name != "model_runs"]

# Saves a model folder as run argv[4] of the store (argv[1] url, argv[2] schema or ""), but stops for good
# after the third table is written (inside the transaction), after printing WRITING.
_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from factor_engine.model import load_model
    from factor_engine.storage import connect
    from factor_engine.storage.database import StoreBase

    url, schema, folder, run_id = sys.argv[1:5]
    store = connect(url, schema=schema or None, migrate=False)
    model = load_model(folder)
    original = StoreBase._bulk_insert
    written = []

    def stalling(self, connection, table, rows):
        original(self, connection, table, rows)
        written.append(table.name)
        if len(written) == 3:
            print("WRITING", ",".join(written), flush=True)
            time.sleep(120)

    StoreBase._bulk_insert = stalling
    store.save_model(run_id, model, timings={})
    print("SAVED", flush=True)
    """
)


@pytest.fixture(scope="module")
def model() -> RiskModel:
    """A small model (30 assets × 150 days)."""
    panel = validate_panel(generate_market(30, 150, seed=11).panel)
    config = ModelConfig.from_mapping({"styles": {"momentum": {"trailing_days": 40, "half_life": 10, "lag": 2}}})
    return build_model(panel, config)


def _model_rows(store: Store, model_id: str) -> dict[str, int]:
    with store.engine.connect() as connection:
        return {
            name: int(
                connection.execute(
                    sa.text(f"SELECT count(*) FROM {name} WHERE model_id = :m"), {"m": model_id}
                ).scalar_one()
            )
            for name in MODEL_TABLES
        }


def test_exception_mid_write_leaves_nothing(store: Store, model: RiskModel, monkeypatch: pytest.MonkeyPatch) -> None:
    run = store.create_run({})
    store.start_run(run.id)
    original = Store._bulk_insert
    written: list[str] = []

    def failing(self: Store, connection: sa.Connection, table: sa.Table, rows: Any) -> None:
        original(self, connection, table, rows)
        written.append(table.name)
        if len(written) == 4:
            raise RuntimeError("disk full (planted)")

    monkeypatch.setattr(Store, "_bulk_insert", failing)
    with pytest.raises(RuntimeError, match=r"disk full \(planted\)"):
        store.save_model(run.id, model, timings={})
    monkeypatch.undo()
    assert len(written) == 4
    assert _model_rows(store, run.id) == dict.fromkeys(MODEL_TABLES, 0)
    after = store.get_run(run.id)
    assert (after.status, after.finished_at) == ("running", None)
    store.save_model(run.id, model, timings={})  # the run can still be saved (or failed) afterwards
    assert all(_model_rows(store, run.id).values())


def test_kill_during_save_leaves_nothing(
    database: IsolatedDatabase, store: Store, model: RiskModel, tmp_path: Path
) -> None:
    folder = model.save(tmp_path / "model")
    run = store.create_run({})
    store.start_run(run.id)
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, database.url, database.schema or "", str(folder), run.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert writer.stdout is not None
        line = writer.stdout.readline()  # blocks until the writer is inside the transaction
        assert line.startswith("WRITING model_symbols,model_factor_returns,model_covariances"), line + (
            writer.stderr.read() if writer.stderr else ""
        )
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while True:  # PostgreSQL aborts the dead client's transaction when it notices the closed socket
        try:
            rows = _model_rows(store, run.id)
            break
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert rows == dict.fromkeys(MODEL_TABLES, 0)
    assert store.get_run(run.id).status == "running"
    # the killed writer left no lock behind: the same run saves fine now
    again = connect(database.url, schema=database.schema)
    try:
        again.save_model(run.id, model, timings={})
        assert again.get_run(run.id).status == "succeeded"
    finally:
        again.close()
    assert all(_model_rows(store, run.id).values())
