"""POST /portfolio/exposures, POST /portfolio/risk and POST /portfolio/optimize on a stored model's date."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from factor_engine.service import optimization, portfolios
from factor_engine.service.deps import State
from factor_engine.service.fastjson import FastJSONRoute
from factor_engine.service.schemas import (
    OptimizeRequest,
    OptimizeResponse,
    PortfolioExposuresResponse,
    PortfolioRequest,
    PortfolioRiskResponse,
)

router = APIRouter(prefix="/portfolio", tags=["portfolio"], route_class=FastJSONRoute)

_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "no model with that id"},
    422: {
        "description": "symbols the model does not cover (listed), a date without a forecast, weights that look "
        "like percentages (|sum| or a weight above 1.5, unless allow_unnormalized)"
    },
}


@router.post("/exposures", response_model=PortfolioExposuresResponse, responses=_ERRORS)
async def exposures(request: PortfolioRequest, state: State) -> Response:
    """Portfolio (and benchmark, active) factor exposures."""
    return await portfolios.respond(state, request, portfolios.exposures)


@router.post("/risk", response_model=PortfolioRiskResponse, responses=_ERRORS)
async def risk(request: PortfolioRequest, state: State) -> Response:
    """Risk decomposition: total, factor and specific risk, contributions by factor and top assets."""
    return await portfolios.respond(state, request, portfolios.risk)


_OPTIMIZE_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "no model with that id"},
    422: {
        "description": "an infeasible set of constraints (naming the conflicting ones), a malformed or "
        "inconsistent constraint (naming the key), symbols the model does not cover, a date without a forecast"
    },
}


@router.post("/optimize", response_model=OptimizeResponse, responses=_OPTIMIZE_ERRORS)
async def optimize(request: OptimizeRequest, state: State) -> Response:
    """A fully invested portfolio under factor constraints (the keys of ``factor-engine optimize``): its
    weights, ex-ante risk and exposures."""
    result = await run_in_threadpool(optimization.optimize, state, request)
    return Response(result.model_dump_json(), media_type="application/json")
