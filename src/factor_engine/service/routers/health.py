"""GET /health (no API key) and GET /info."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from factor_engine.service.deps import State, require_api_key
from factor_engine.service.fastjson import FastJSONRoute
from factor_engine.service.schemas import HealthResponse, InfoResponse
from factor_engine.service.status import health, info

router = APIRouter(tags=["service"], route_class=FastJSONRoute)


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "the database is down"}},
)
def get_health(state: State) -> JSONResponse:
    """Whether the database and the configured Redis answer (never needs the API key): 200 "ok", 200
    "degraded" when only Redis is down (answers come from the database), 503 when the database is down."""
    report, healthy = health(state)
    return JSONResponse(report.model_dump(), status_code=200 if healthy else 503)


@router.get("/info", response_model=InfoResponse, dependencies=[Depends(require_api_key)])
def get_info(state: State) -> InfoResponse:
    """Engine version, capabilities, the configured store and cache, and the limits."""
    return info(state)
