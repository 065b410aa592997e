"""connect(): URL resolution, migrations, masked StoreUnavailable messages."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from db_fixtures import IsolatedDatabase
from factor_engine.storage import DEFAULT_DATABASE_URL, Store, StoreUnavailable, connect, resolve_database_url
from factor_engine.storage.tables import metadata
from stored_panels import migrate_to


def test_resolve_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACTOR_ENGINE_DATABASE_URL", raising=False)
    assert resolve_database_url() == DEFAULT_DATABASE_URL == "sqlite:///factor_engine.db"
    monkeypatch.setenv("FACTOR_ENGINE_DATABASE_URL", "postgres://u:p@h:5432/db")
    assert resolve_database_url() == "postgresql+psycopg://u:p@h:5432/db"
    assert resolve_database_url("postgresql://h/db") == "postgresql+psycopg://h/db"
    assert resolve_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_unreachable_postgresql_is_unavailable_with_masked_password() -> None:
    with pytest.raises(
        StoreUnavailable,
        match=r"^database unavailable at postgresql\+psycopg://postgres:\*\*\*@127\.0\.0\.1:1/test: .*refused",
    ) as raised:
        connect("postgresql://postgres:secret@127.0.0.1:1/test")
    assert "secret" not in str(raised.value)


def test_unopenable_sqlite_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing/dir/store.db"
    with pytest.raises(StoreUnavailable, match=rf"^database unavailable at {url}: .*unable to open database file"):
        connect(url)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="schema 'x' is only supported on PostgreSQL"):
        connect(f"sqlite:///{tmp_path}/s.db", schema="x")
    with pytest.raises(ValueError, match="schema must be a plain SQL identifier"):
        connect("postgresql://postgres@127.0.0.1/test", schema="x; drop table panel")
    with pytest.raises(ValueError, match="unsupported database mysql://h/db"):
        connect("mysql://h/db")


def test_lost_connection_is_unavailable(postgres_database: IsolatedDatabase) -> None:
    """Connections killed under the pool: the next call reconnects (pre-ping) or reports unavailability."""
    store = connect(postgres_database.url, schema=postgres_database.schema)
    try:
        store.create_run({})
        with store.engine.connect() as connection:  # the pool's (only) connection
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with psycopg.connect(postgres_database.url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert len(store.list_runs()) == 1  # pool_pre_ping replaced the dead connection
    finally:
        store.close()
    broken = Store(sa.create_engine("postgresql+psycopg://postgres:pw@127.0.0.1:1/test"), "t_x")
    with pytest.raises(
        StoreUnavailable,
        match=r"^database unavailable at postgresql\+psycopg://postgres:\*\*\*@127\.0\.0\.1:1/test \(schema t_x\): ",
    ):
        broken.list_runs()


def test_migrations_match_the_tables(store: Store, database: IsolatedDatabase) -> None:
    """Alembic's head creates exactly the tables of factor_engine.storage.tables; migrating again is a no-op."""
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table_schema": database.schema,
                "include_name": lambda name, kind, parent: not (kind == "table" and name == "alembic_version"),
            },
        )
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == "0004"
    again = connect(database.url, schema=database.schema)
    again.close()
    assert store.describe() == (
        database.url if database.schema is None else f"{database.url} (schema {database.schema})"
    )


def test_blob_columns_use_lz4(postgres_database: IsolatedDatabase) -> None:
    """The migrations compress the per-date blobs and the update state with lz4 on PostgreSQL (this server has
    lz4)."""
    store = connect(postgres_database.url, schema=postgres_database.schema)
    try:
        with store.engine.connect() as connection:
            methods = connection.exec_driver_sql(
                "SELECT c.relname, a.attcompression FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE a.attname = 'data' AND c.relnamespace = current_schema()::regnamespace ORDER BY c.relname"
            ).all()
    finally:
        store.close()
    assert [tuple(row) for row in methods] == [
        ("model_covariances", ""),
        ("model_diagnostics", ""),
        ("model_exposures", "l"),
        ("model_residuals", "l"),
        ("model_specific_risk", "l"),
        ("model_state", "l"),
    ]


def test_runs_of_a_store_from_before_leases_are_expired_after_the_upgrade(database: IsolatedDatabase) -> None:
    """A store at revision 0001 (no leases) with a run left running: upgraded to head, the run has no lease,
    so ``expire_runs`` fails it as interrupted; a finished run is untouched."""
    engine = migrate_to(database, "0001")
    try:
        with engine.begin() as connection:
            for run_id, status in (("old-running", "running"), ("old-failed", "failed")):
                connection.exec_driver_sql(
                    "INSERT INTO model_runs (id, status, request, progress, timings, created_at) "
                    f"VALUES ('{run_id}', '{status}', '{{}}', 0.5, '{{}}', '2026-11-30 10:00:00')"
                )
    finally:
        engine.dispose()
    store = connect(database.url, schema=database.schema)  # migrates to head
    try:
        assert store.get_run("old-running").lease_expires_at is None
        assert store.expire_runs() == ["old-running"]
        run = store.get_run("old-running")
        assert run.status == "failed"
        assert run.error is not None and run.error.startswith("interrupted: the service stopped during the build")
        assert store.get_run("old-failed").error is None
    finally:
        store.close()
