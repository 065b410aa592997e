"""POST /live/factor-returns and the WebSocket /live/stream/{model_id}: today's factor returns so far on a stored
model's last close (:mod:`factor_engine.live`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, WebSocket
from starlette.concurrency import run_in_threadpool

from factor_engine.service import live_stream
from factor_engine.service.deps import State
from factor_engine.service.fastjson import FastJSONRoute
from factor_engine.service.live import factor_returns, live_service
from factor_engine.service.live_schemas import LiveFactorReturnsResponse, LiveRequest
from factor_engine.service.runtime import ServiceState

router = APIRouter(prefix="/live", tags=["live"], route_class=FastJSONRoute)
#: The stream checks the API key itself (from the handshake's headers or an ``auth`` first message): the HTTP
#: key dependency cannot read a WebSocket, and browsers cannot set headers on one.
stream_router = APIRouter(prefix="/live", tags=["live"])

_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "no model with that id"},
    422: {
        "description": "no returns or prices, prices without closes, NaN, non-positive prices, returns ≤ −1, symbols "
        "the model does not know (unless unknown is drop), weights that look like percentages, a model whose "
        "regression does not use the previous close's exposures"
    },
}


@router.post("/factor-returns", response_model=LiveFactorReturnsResponse, responses=_ERRORS)
async def live_factor_returns(body: LiveRequest, state: State, request: Request) -> Response:
    """Today's factor returns so far (the model's cross-sectional regression on its last close's exposures) from
    today's returns, or prices over the previous closes; with ``weights``, the portfolio's live P&L, exposures
    and risk."""
    result = await run_in_threadpool(factor_returns, state, live_service(request), body)
    return Response(result.model_dump_json(), media_type="application/json")


@stream_router.websocket("/stream/{model_id}")
async def live_stream_socket(
    websocket: WebSocket,
    model_id: str,
    channel: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")] = "default",
) -> None:
    """Price updates in, fresh factor returns out, to every client of the (model, channel): see
    :mod:`factor_engine.service.live_stream` for the messages."""
    state: ServiceState = websocket.app.state.service
    await live_stream.serve(websocket, state, live_service(websocket), model_id, channel)
