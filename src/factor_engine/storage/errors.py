"""The exceptions of the store; the service maps them to HTTP statuses (503, 404, 409, 422)."""

from __future__ import annotations

__all__ = ["InvalidValue", "NotFound", "StoreConflict", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or the connection was lost (service: 503)."""


class NotFound(StoreError):
    """An unknown model or run id (service: 404)."""


class StoreConflict(StoreError):
    """The request contradicts the state of a run, e.g. deleting a model whose build is running (service: 409)."""


class InvalidValue(StoreError, ValueError):
    """A value the database cannot hold or compare, e.g. text with a NUL character on PostgreSQL (service: 422)."""
