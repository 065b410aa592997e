"""Shared database fixtures: an isolated store per test on SQLite and on PostgreSQL (a pytest plugin module).

Load it with ``pytest_plugins = ["db_fixtures"]`` in ``tests/conftest.py`` (``tests/`` is on ``sys.path``: the
rootdir conftest is imported in prepend mode), or import the fixtures by name in a directory's conftest.py
(``from db_fixtures import database, store  # noqa: F401``) as ``tests/storage/conftest.py`` does.

PostgreSQL is required: if it is unreachable the PostgreSQL cases FAIL with a message saying so (never skip).
Its URL is ``FACTOR_ENGINE_TEST_POSTGRES_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from factor_engine.storage import Store, connect

POSTGRES_URL = os.environ.get("FACTOR_ENGINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class IsolatedDatabase:
    """Where an isolated store lives: pass ``url`` and ``schema`` to ``factor_engine.storage.connect`` (or set
    ``FACTOR_ENGINE_DATABASE_URL`` = ``url`` and the service's schema setting = ``schema``).

    Attributes
    ----------
    backend: "sqlite" or "postgresql".
    url: SQLAlchemy URL (``sqlite:///<tmp>/store.db`` or the PostgreSQL test URL).
    schema: the per-test PostgreSQL schema ``t_<hex>``; None on SQLite.
    """

    backend: str
    url: str
    schema: str | None


def _libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _admin_connection(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(_libpq_url(url), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required for the storage tests but is unreachable at {url}: {exc} "
            "(start it, or point FACTOR_ENGINE_TEST_POSTGRES_URL at a server)",
            pytrace=False,
        )


@contextmanager
def postgres_schema(url: str = POSTGRES_URL) -> Iterator[IsolatedDatabase]:
    """A fresh empty schema ``t_<hex>`` on the PostgreSQL test server, dropped with CASCADE afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with _admin_connection(url) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield IsolatedDatabase("postgresql", url, schema)
    finally:
        with _admin_connection(url) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND query ILIKE %s",
                (f"%{schema}%",),
            )
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def sqlite_database(folder: Path) -> IsolatedDatabase:
    """An isolated SQLite database file ``store.db`` in ``folder``."""
    return IsolatedDatabase("sqlite", f"sqlite:///{folder / 'store.db'}", None)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IsolatedDatabase]:
    """An empty isolated database per test, parametrized over SQLite and PostgreSQL (not yet migrated)."""
    if request.param == "sqlite":
        yield sqlite_database(tmp_path)
        return
    with postgres_schema() as isolated:
        yield isolated


@pytest.fixture
def postgres_database() -> Iterator[IsolatedDatabase]:
    """An empty isolated PostgreSQL schema per test (for tests that need PostgreSQL only)."""
    with postgres_schema() as isolated:
        yield isolated


@pytest.fixture
def database_url(database: IsolatedDatabase) -> tuple[str, str | None]:
    """``(url, schema)`` of the test's isolated database, e.g. to point a service app at the same store."""
    return database.url, database.schema


@pytest.fixture
def store(database: IsolatedDatabase) -> Iterator[Store]:
    """A migrated, empty :class:`~factor_engine.storage.Store` per test, on SQLite and on PostgreSQL."""
    opened = connect(database.url, schema=database.schema)
    try:
        yield opened
    finally:
        opened.close()
