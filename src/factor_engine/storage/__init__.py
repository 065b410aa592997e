"""Storage of the Factor Engine service: the panel, model runs (build jobs) and built risk models in
PostgreSQL (psycopg 3) or an embedded SQLite file, through SQLAlchemy 2 Core with packaged Alembic migrations.

Tables and blob layouts: :mod:`factor_engine.storage.tables` and :mod:`factor_engine.storage.codec`.
"""

from factor_engine.storage.database import DEFAULT_DATABASE_URL, resolve_database_url
from factor_engine.storage.errors import InvalidValue, NotFound, StoreConflict, StoreError, StoreUnavailable
from factor_engine.storage.records import (
    IngestResult,
    ModelSummary,
    PanelExtent,
    PanelSummary,
    RunRecord,
    SectorSummary,
)
from factor_engine.storage.store import Store, connect

__all__ = [
    "DEFAULT_DATABASE_URL",
    "IngestResult",
    "InvalidValue",
    "ModelSummary",
    "NotFound",
    "PanelExtent",
    "PanelSummary",
    "RunRecord",
    "SectorSummary",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoreUnavailable",
    "connect",
    "resolve_database_url",
]
