"""Typed dependencies of the routers: the service state, the cache and the API-key check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from factor_engine.service.auth import INVALID_KEY, MISSING_KEY, presented_key
from factor_engine.service.cache import ResponseCache
from factor_engine.service.runtime import ServiceState

__all__ = ["Cache", "State", "get_state", "require_api_key"]


async def get_state(request: Request) -> ServiceState:
    """The state the app's lifespan created (async: no threadpool hop for a dependency that never blocks)."""
    state: ServiceState = request.app.state.service
    return state


async def get_cache(request: Request) -> ResponseCache | None:
    """The Redis response cache, or None when REDIS_URL is not set."""
    state: ServiceState = request.app.state.service
    return state.cache


State = Annotated[ServiceState, Depends(get_state)]
Cache = Annotated[ResponseCache | None, Depends(get_cache)]


async def require_api_key(request: Request) -> None:
    """401 unless the request carries the configured key (``X-API-Key`` or ``Authorization: Bearer``);
    nothing to check when no key is configured. :class:`factor_engine.service.auth.ApiKeyGate` already
    answers such requests before their body is read; this dependency keeps each secured router safe on its
    own (e.g. mounted in another app)."""
    state: ServiceState = request.app.state.service
    expected = state.settings.api_key
    if not expected:
        return
    presented = presented_key({name.lower(): value for name, value in request.headers.items()})
    if presented is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, MISSING_KEY, headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(presented.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, INVALID_KEY, headers={"WWW-Authenticate": "Bearer"})
