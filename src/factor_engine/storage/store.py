"""The :class:`Store` (panel + runs + models over one pooled engine) and :func:`connect`."""

from __future__ import annotations

from factor_engine.storage.database import create_store_engine, resolve_database_url
from factor_engine.storage.database import migrate as run_migrations
from factor_engine.storage.model_store import ModelStore
from factor_engine.storage.panel_store import PanelStore

__all__ = ["Store", "connect"]


class Store(PanelStore, ModelStore):
    """The Factor Engine database: the panel, the model runs and the built models. Thread-safe (one pooled
    engine; every method takes its own connection and transaction)."""


def connect(url: str | None = None, *, schema: str | None = None, migrate: bool = True) -> Store:
    """Open the store and check that the database answers.

    Parameters
    ----------
    url: database URL (see :func:`resolve_database_url`; default env ``FACTOR_ENGINE_DATABASE_URL`` or
        ``sqlite:///factor_engine.db`` relative to the working directory).
    schema: PostgreSQL only: put every table in this schema (created if missing).
    migrate: run the Alembic migrations up to ``head`` first.

    Raises
    ------
    StoreUnavailable: "database unavailable at <masked url>: <reason>" when the database cannot be reached.
    """
    engine = create_store_engine(resolve_database_url(url), schema)
    store = Store(engine, schema)
    try:
        with store._guard():
            if migrate:
                run_migrations(engine, schema)
            else:
                with engine.connect() as connection:
                    connection.exec_driver_sql("SELECT 1")
    except BaseException:
        engine.dispose()
        raise
    return store
