"""The storage tests use the shared database fixtures of ``tests/db_fixtures.py``."""

from db_fixtures import database, database_url, postgres_database, store  # noqa: F401
