"""POST /portfolio/exposures and POST /portfolio/risk on a stored model's date."""

from __future__ import annotations

from fastapi import APIRouter, Response

from factor_engine.service import portfolios
from factor_engine.service.deps import State
from factor_engine.service.fastjson import FastJSONRoute
from factor_engine.service.schemas import PortfolioExposuresResponse, PortfolioRequest, PortfolioRiskResponse

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
