"""Database URL resolution, engine set-up, the Alembic migrations run in code, and the store's base class.

PostgreSQL goes through psycopg 3 (``postgresql+psycopg://``); a ``schema`` puts every table in that schema by
setting the connections' ``search_path`` (the migrations and their ``alembic_version`` table go there too).
SQLite runs in WAL mode with a busy timeout and foreign keys on; write transactions take the write lock at
``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url

from factor_engine.storage.errors import InvalidValue, StoreUnavailable

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "StoreBase",
    "create_store_engine",
    "driver_connection",
    "mask_url",
    "migrate",
]

DEFAULT_DATABASE_URL = "sqlite:///factor_engine.db"
DATABASE_URL_ENV = "FACTOR_ENGINE_DATABASE_URL"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_IMMEDIATE = "factor_engine_immediate"
_CONNECT_TIMEOUT_SECONDS = 10
_SQLITE_BUSY_MS = 30_000
# Copy type names of the column types, for COPY ... (FORMAT BINARY).
_COPY_TYPES: dict[type[sa.types.TypeEngine[Any]], str] = {
    sa.String: "text",
    sa.Text: "text",
    sa.Date: "date",
    sa.LargeBinary: "bytea",
    sa.Float: "float8",
    sa.Integer: "int4",
}


def resolve_database_url(url: str | None = None) -> str:
    """The database URL: ``url``, else env ``FACTOR_ENGINE_DATABASE_URL``, else :data:`DEFAULT_DATABASE_URL`;
    ``postgresql://`` and ``postgres://`` are normalized to ``postgresql+psycopg://``."""
    chosen = url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL
    for prefix in ("postgresql://", "postgres://"):
        if chosen.startswith(prefix):
            return "postgresql+psycopg://" + chosen[len(prefix) :]
    return chosen


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def create_store_engine(url: str, schema: str | None) -> sa.Engine:
    """A pooled engine for ``url``: PostgreSQL with ``pool_pre_ping`` and ``search_path = schema``; SQLite in WAL
    mode, ``busy_timeout`` 30 s, foreign keys on, usable from several threads."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if schema is not None:
            raise ValueError(f"schema {schema!r} is only supported on PostgreSQL, not with {mask_url(url)}")
        engine = sa.create_engine(
            parsed, pool_pre_ping=True, connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_MS / 1000}
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"unsupported database {mask_url(url)}: use postgresql+psycopg:// or sqlite:///")
    if parsed.drivername != "postgresql+psycopg":
        raise ValueError(f"PostgreSQL URLs must use psycopg 3 (postgresql+psycopg://), got {mask_url(url)}")
    connect_args: dict[str, Any] = {"connect_timeout": _CONNECT_TIMEOUT_SECONDS}
    if schema is not None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must be a plain SQL identifier (letters, digits, _), got {schema!r}")
        connect_args["options"] = f"-c search_path={schema}"
    return sa.create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_on_begin
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", f"busy_timeout={_SQLITE_BUSY_MS}", "foreign_keys=ON", "synchronous=NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(connection: sa.Connection) -> None:
    immediate = connection.get_execution_options().get(_IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def migrate(engine: sa.Engine, schema: str | None) -> None:
    """Run the packaged Alembic migrations up to ``head`` (creating ``schema`` first on PostgreSQL); concurrent
    callers on PostgreSQL are serialized by an advisory lock."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('factor_engine.storage.migrate'))")
            if schema is not None:
                connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        config.attributes["schema"] = schema
        command.upgrade(config, "head")


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = " ".join(str(original).split())
    return text or type(original).__name__


class StoreBase:
    """Engine, dialect and the transaction helpers the panel and model parts of the store share."""

    engine: sa.Engine
    dialect: str
    schema: str | None

    def __init__(self, engine: sa.Engine, schema: str | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.schema = schema

    def describe(self) -> str:
        """The database URL with any password masked, plus the schema."""
        url = self.engine.url.render_as_string(hide_password=True)
        return url if self.schema is None else f"{url} (schema {self.schema})"

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Translate connection failures into :class:`StoreUnavailable` and values the database rejects (e.g.
        a NUL character in text on PostgreSQL) into :class:`InvalidValue`."""
        try:
            yield
        except (
            sa.exc.OperationalError,
            sa.exc.InterfaceError,
            psycopg.OperationalError,
            psycopg.InterfaceError,
        ) as exc:
            raise StoreUnavailable(f"database unavailable at {self.describe()}: {_reason(exc)}") from exc
        except (sa.exc.DataError, psycopg.DataError) as exc:
            raise InvalidValue(f"the database cannot take a value: {_reason(exc)}") from exc

    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[sa.Connection]:
        """A connection in a read transaction (rolled back at the end). ``snapshot``: every query of the
        transaction sees the same committed state (REPEATABLE READ on PostgreSQL; a SQLite read transaction in
        WAL mode is one already)."""
        with self._guard(), self.engine.connect() as connection:
            if snapshot and self.dialect == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            yield connection

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A connection in one write transaction: committed at the end, rolled back on any exception."""
        with self._guard(), self.engine.connect() as connection:
            if self.dialect == "sqlite":
                connection = connection.execution_options(**{_IMMEDIATE: True})
            with connection.begin():
                yield connection

    def _bulk_insert(self, connection: sa.Connection, table: sa.Table, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (tuples in the table's column order) in the current transaction: COPY (binary) on
        PostgreSQL, executemany on SQLite."""
        if not rows:
            return
        names = [column.name for column in table.columns]
        if self.dialect == "postgresql":
            types = [_copy_type(column.type) for column in table.columns]
            with driver_connection(connection).cursor() as cursor:
                statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(statement) as copy:
                    copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
        else:
            connection.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in rows])


def driver_connection(connection: sa.Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy PostgreSQL connection (same transaction)."""
    raw = connection.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection, got {type(raw).__name__}")
    return raw


def _copy_type(column_type: sa.types.TypeEngine[Any]) -> str:
    for python_type, name in _COPY_TYPES.items():
        if isinstance(column_type, python_type):
            return name
    raise TypeError(f"no COPY type for column type {column_type!r}")
