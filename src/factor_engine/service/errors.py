"""Exceptions of the service and their HTTP answers.

=========================================================  =====  ==========================================
exception                                                  code   body
=========================================================  =====  ==========================================
request body that fails the schema                         422    ``{"detail": [{"loc", "msg", "type"}]}``
:class:`InputError`, ``PanelError``, ``ConfigError``,      422    ``{"detail": "<message>"}``
``ModelError``, ``PortfolioError``, ``InvalidValue``
:class:`ResourceNotFound`, ``NotFound``                    404    ``{"detail": "no model <id>"}``
:class:`Conflict`, ``StoreConflict``                       409    ``{"detail": "<message>"}``
``StoreUnavailable``                                       503    ``{"detail": "database unavailable: ..."}``
:class:`ServiceBusy` (builds at capacity, queue full)      503    ``{"detail": ...}``, ``Retry-After`` header
=========================================================  =====  ==========================================
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from factor_engine.config import ConfigError
from factor_engine.model import ModelError
from factor_engine.panel import PanelError
from factor_engine.portfolio import PortfolioError
from factor_engine.storage import InvalidValue, NotFound, StoreConflict, StoreUnavailable

__all__ = [
    "CacheUnavailable",
    "Conflict",
    "InputError",
    "ResourceNotFound",
    "ServiceBusy",
    "install_error_handlers",
]


class InputError(ValueError):
    """A request that is well formed but cannot be served (answered 422 with the message)."""


class ResourceNotFound(LookupError):
    """An unknown model or job (answered 404 with the message)."""


class Conflict(RuntimeError):
    """A request that conflicts with the current state, e.g. deleting a model being built (answered 409)."""


class ServiceBusy(RuntimeError):
    """Every build slot is taken or the build queue is full (answered 503 with ``Retry-After``).

    Parameters
    ----------
    message: what is full and which setting bounds it.
    retry_after: seconds the client should wait before trying again.
    """

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CacheUnavailable(RuntimeError):
    """The configured Redis cannot be reached (answered 503)."""


def _message(error: BaseException) -> str:
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings (JSON has no NaN) and unknown objects as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return str(value)


def validation_details(error: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as ``loc, msg, type`` (+ ``ctx``), without the offending input (it may be a huge
    list, or a NaN that JSON cannot carry)."""
    details = []
    for item in error.errors():
        detail = {"loc": list(item.get("loc", ())), "msg": item.get("msg", ""), "type": item.get("type", "")}
        if item.get("ctx"):
            detail["ctx"] = _json_safe(item["ctx"])
        details.append(detail)
    return details


def _answer(code: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=code, content={"detail": detail})


def install_error_handlers(app: FastAPI) -> None:
    """Map the library, storage and service exceptions to their HTTP answers (see the module docstring)."""

    async def invalid_request(_request: Request, error: Exception) -> JSONResponse:
        if not isinstance(error, RequestValidationError):  # pragma: no cover - registered for that type only
            raise error
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": validation_details(error)}
        )

    async def unprocessable(_request: Request, error: Exception) -> JSONResponse:
        return _answer(status.HTTP_422_UNPROCESSABLE_CONTENT, _message(error))

    async def not_found(_request: Request, error: Exception) -> JSONResponse:
        return _answer(status.HTTP_404_NOT_FOUND, _message(error))

    async def conflict(_request: Request, error: Exception) -> JSONResponse:
        return _answer(status.HTTP_409_CONFLICT, _message(error))

    async def database_down(_request: Request, error: Exception) -> JSONResponse:
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, f"database unavailable: {_message(error)}")

    async def cache_down(_request: Request, error: Exception) -> JSONResponse:
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, f"cache unavailable: {_message(error)}")

    async def busy(_request: Request, error: Exception) -> JSONResponse:
        retry_after = error.retry_after if isinstance(error, ServiceBusy) else 30
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": _message(error)},
            headers={"Retry-After": str(retry_after)},
        )

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ServiceBusy, busy)
    for error_type in (InputError, PanelError, ConfigError, ModelError, PortfolioError, InvalidValue):
        app.add_exception_handler(error_type, unprocessable)
    app.add_exception_handler(ResourceNotFound, not_found)
    # e.g. a model deleted by another request between the existence check and the read
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(Conflict, conflict)
    app.add_exception_handler(StoreConflict, conflict)
    app.add_exception_handler(StoreUnavailable, database_down)
    app.add_exception_handler(CacheUnavailable, cache_down)
