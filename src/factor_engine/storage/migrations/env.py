"""Alembic environment of the store: runs on the connection and schema that :func:`connect` passes in
``config.attributes`` (no alembic.ini, no URL of its own)."""

from __future__ import annotations

from alembic import context

from factor_engine.storage.tables import metadata

connection = context.config.attributes["connection"]
schema = context.config.attributes.get("schema")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table_schema=schema,
    include_schemas=schema is not None,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
