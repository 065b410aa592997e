"""Request body size limit as a pure ASGI middleware: 413 on a Content-Length above the limit, and while a
body is streamed as soon as the bytes received pass it."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimit"]


def _too_large(limit: int) -> str:
    return f"request body too large: the limit is {limit:,} bytes (FACTOR_ENGINE_MAX_BODY_BYTES)"


class BodySizeLimit:
    """Answer 413 to request bodies over ``max_bytes`` bytes.

    Parameters
    ----------
    app: the wrapped ASGI app.
    max_bytes: largest body accepted, bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    response = JSONResponse({"detail": _too_large(self.max_bytes)}, status_code=413)
                    await response(scope, receive, send)
                    return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from body reading; the exception middleware answers 413
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, counted, send)
