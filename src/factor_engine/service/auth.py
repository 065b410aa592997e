"""The API key, checked from the request headers before anything else: a pure ASGI middleware.

With ``FACTOR_ENGINE_API_KEY`` set, a request to any path but the public ones is answered 401 before a byte of
its body is read, so a rejected request costs almost nothing whatever it carries. The public paths hold no
data: ``GET {API_PREFIX}/health`` (liveness, saying what is down without addresses or credentials), ``/`` (a
redirect to the dashboard) and the dashboard's page and static files (the page asks the user for the key,
which its requests then carry). Everything else, ``/docs``, ``/redoc`` and ``/openapi.json`` included, needs
the key.
"""

from __future__ import annotations

import secrets

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from factor_engine.service.paths import API_PREFIX

__all__ = ["PUBLIC_PATHS", "PUBLIC_PREFIXES", "ApiKeyGate", "is_public", "presented_key"]

#: Paths answered without the key, and prefixes of such paths (the dashboard's static files).
PUBLIC_PATHS: tuple[str, ...] = (f"{API_PREFIX}/health", "/", "/dashboard")
PUBLIC_PREFIXES: tuple[str, ...] = ("/dashboard/static/",)

MISSING_KEY = "missing API key: send the header X-API-Key: <key> or Authorization: Bearer <key>"
INVALID_KEY = "invalid API key"


def is_public(path: str) -> bool:
    """Whether ``path`` is answered without the API key (see :data:`PUBLIC_PATHS` and :data:`PUBLIC_PREFIXES`)."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def presented_key(headers: dict[str, str]) -> str | None:
    """The key a request carries: ``X-API-Key``, else an ``Authorization: Bearer`` token (lower-case names)."""
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ApiKeyGate:
    """401 for a request without the configured key, decided from its headers alone (the body is never read).

    Parameters
    ----------
    app: the wrapped ASGI app.
    api_key: the key every non-public request must present; None or empty lets everything through.
    """

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.expected = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        presented = presented_key(headers)
        if presented is not None and secrets.compare_digest(presented.encode(), self.expected):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"detail": MISSING_KEY if presented is None else INVALID_KEY},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer", "Connection": "close"},
        )
        await response(scope, receive, send)
