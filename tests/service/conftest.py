"""Fixtures of the service tests: a synthetic market and apps on isolated stores (SQLite and PostgreSQL,
from ``tests/db_fixtures.py``)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from service_helpers import ClientFactory

from db_fixtures import IsolatedDatabase, database, database_url, postgres_database  # noqa: F401
from factor_engine.service import Settings, create_app
from factor_engine.synthetic import generate_market


@pytest.fixture(scope="session")
def market_panel() -> pl.DataFrame:
    """60 assets over 300 business days from 2023-01-02 (covers the seed's 2023-01-01 → 2024-01-01)."""
    return generate_market(60, 300, seed=7, start=datetime.date(2023, 1, 2)).panel


@pytest.fixture
def app_client(tmp_path: Path) -> ClientFactory:
    """``app_client(database=None, **settings)``: a TestClient on a new app (lifespan run), on the given
    isolated database or a fresh SQLite file."""

    @contextmanager
    def make(isolated: IsolatedDatabase | None = None, **overrides: Any) -> Iterator[TestClient]:
        url = isolated.url if isolated is not None else f"sqlite:///{tmp_path / 'service.db'}"
        schema = isolated.schema if isolated is not None else None
        settings = Settings(database_url=url, database_schema=schema, **overrides)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client

    return make
