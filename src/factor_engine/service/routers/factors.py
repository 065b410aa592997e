"""GET /factors/list and the style-score endpoints POST /factors/{momentum,value,size}."""

from __future__ import annotations

from fastapi import APIRouter, Response

from factor_engine.service.cache import cached_json
from factor_engine.service.catalog import factor_list
from factor_engine.service.deps import Cache, State
from factor_engine.service.factor_scores import ScoreRequest, scores_json
from factor_engine.service.fastjson import FastJSONRoute
from factor_engine.service.schemas import (
    FactorsListResponse,
    MomentumRequest,
    ScoresResponse,
    SizeRequest,
    ValueRequest,
)

router = APIRouter(prefix="/factors", tags=["factors"], route_class=FastJSONRoute)

_ERRORS: dict[int | str, dict[str, str]] = {
    422: {"description": "invalid rows (the field and the row are named) or parameters"},
}


def _scores(style: str, request: ScoreRequest, cache: Cache) -> Response:
    """The scores of the posted rows, cached by engine version, endpoint and canonical request (they depend on
    nothing stored)."""
    key = None if cache is None else cache.factor_key(style, request.model_dump_json())
    return cached_json(cache, key, lambda: scores_json(style, request))


@router.get("/list", response_model=FactorsListResponse)
def list_factors(state: State) -> FactorsListResponse:
    """The market factor, one sector factor per sector label of the stored panel (its symbols and date range)
    and the style factors of the registry."""
    return factor_list(state.store())


@router.post("/momentum", response_model=ScoresResponse, responses=_ERRORS)
def momentum_scores(request: MomentumRequest, cache: Cache) -> Response:
    """Momentum scores (``mom_score``) of the posted daily returns."""
    return _scores("momentum", request, cache)


@router.post("/value", response_model=ScoresResponse, responses=_ERRORS)
def value_scores(request: ValueRequest, cache: Cache) -> Response:
    """Value scores (``val_score``) of the posted book/price, sales/price and cash flow/price ratios."""
    return _scores("value", request, cache)


@router.post("/size", response_model=ScoresResponse, responses=_ERRORS)
def size_scores(request: SizeRequest, cache: Cache) -> Response:
    """Size scores (``sze_score``) of the posted market caps."""
    return _scores("size", request, cache)
