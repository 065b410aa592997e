"""GET /factors/list, the style-score endpoints POST /factors/{momentum,value,size} (the seed's, with typed
parameters) and POST /factors/{style} for every other registered style (USE4's, custom ones)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from factor_engine.service.cache import cached_json
from factor_engine.service.catalog import factor_list
from factor_engine.service.deps import Cache, State
from factor_engine.service.factor_scores import ScoreRequest, scores_json, style_scores_json
from factor_engine.service.fastjson import FastJSONRoute
from factor_engine.service.schemas import (
    FactorsListResponse,
    MomentumRequest,
    ScoresResponse,
    SizeRequest,
    StyleScoresRequest,
    ValueRequest,
)

router = APIRouter(prefix="/factors", tags=["factors"], route_class=FastJSONRoute)

_ERRORS: dict[int | str, dict[str, str]] = {
    422: {"description": "invalid rows (the field and the row are named) or parameters"},
}


def _scores(style: str, request: ScoreRequest, state: State, cache: Cache) -> Response:
    """The scores of the posted rows, cached by engine version, endpoint and canonical request (they depend on
    nothing stored)."""
    key = None if cache is None else cache.factor_key(style, request.model_dump_json())
    return cached_json(cache, key, lambda: scores_json(style, request, state.settings.max_score_cells))


@router.get("/list", response_model=FactorsListResponse)
def list_factors(state: State) -> FactorsListResponse:
    """The market factor, one sector factor per sector label of the stored panel (its symbols and date range)
    and the style factors of the registry."""
    return factor_list(state.store())


@router.post("/momentum", response_model=ScoresResponse, responses=_ERRORS)
def momentum_scores(request: MomentumRequest, state: State, cache: Cache) -> Response:
    """Momentum scores (``mom_score``) of the posted daily returns."""
    return _scores("momentum", request, state, cache)


@router.post("/value", response_model=ScoresResponse, responses=_ERRORS)
def value_scores(request: ValueRequest, state: State, cache: Cache) -> Response:
    """Value scores (``val_score``) of the posted book/price, sales/price and cash flow/price ratios."""
    return _scores("value", request, state, cache)


@router.post("/size", response_model=ScoresResponse, responses=_ERRORS)
def size_scores(request: SizeRequest, state: State, cache: Cache) -> Response:
    """Size scores (``sze_score``) of the posted market caps."""
    return _scores("size", request, state, cache)


@router.post(
    "/{style}",
    response_model=ScoresResponse,
    responses={**_ERRORS, 404: {"description": "no registered style of that name"}},
)
def style_scores(
    style: Annotated[str, Path(max_length=100, description="a registered style, e.g. beta, resvol, liquidity")],
    request: StyleScoresRequest,
    state: State,
    cache: Cache,
) -> Response:
    """Scores of any registered style (``GET /factors/list``: beta, resvol, nlsize, liquidity, earnings_yield,
    growth, leverage, dividend_yield, btop and the service's custom styles) of the posted rows, with the style's
    keyword ``params``: the library's raw scores (a model also fills missing exposures from sectors and size)."""
    key = None if cache is None else cache.factor_key(f"style:{style}", request.model_dump_json())
    settings = state.settings
    return cached_json(
        cache, key, lambda: style_scores_json(style, request, settings.max_score_cells, settings.build_limits)
    )
