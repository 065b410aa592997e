"""JSON request bodies parsed by pydantic-core (several times faster than ``json.loads`` on the large weight
and row lists the service receives), through a custom route class."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["FastJSONRoute"]


class _FastJSONRequest(Request):
    """A request whose ``json()`` uses ``pydantic_core.from_json``; NaN and Infinity literals are accepted (and
    then rejected by the schemas, naming the field). Malformed JSON falls back to ``json.loads`` so the error
    carries its position as FastAPI reports it (422 ``json_invalid``)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = pydantic_core.from_json(body, allow_inf_nan=True)
            except ValueError:
                self._json = json.loads(body)  # raises json.JSONDecodeError with the position
        return self._json


class FastJSONRoute(APIRoute):
    """An APIRoute whose handlers get :class:`_FastJSONRequest` requests."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def fast_json_handler(request: Request) -> Response:
            return await handler(_FastJSONRequest(request.scope, request.receive))

        return fast_json_handler
