"""POST /risk-model/create, POST /models/{id}/update and the model reads: GET /models, GET|DELETE /models/{id},
its dates, factor returns, regression diagnostics, covariance, specific risk and exposures (reads cached in Redis
when configured)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from factor_engine.service import model_reads
from factor_engine.service.cache import cached_json
from factor_engine.service.deps import Cache, State
from factor_engine.service.errors import ResourceNotFound
from factor_engine.service.fastjson import FastJSONRoute
from factor_engine.service.runtime import ServiceState
from factor_engine.service.schemas import (
    CovarianceResponse,
    CreateModelRequest,
    DiagnosticsResponse,
    ExposuresResponse,
    FactorReturnsResponse,
    JobAccepted,
    ModelDatesResponse,
    ModelSummaryResponse,
    SpecificRiskResponse,
    UpdateModelRequest,
)
from factor_engine.service.updates import queue_update
from factor_engine.storage import NotFound

router = APIRouter(tags=["models"], route_class=FastJSONRoute)

_NOT_FOUND: dict[int | str, dict[str, str]] = {404: {"description": "no model with that id"}}
DateQuery = datetime.date | None


def _model_version(state: ServiceState, model_id: str) -> str:
    """The version of the stored model ``model_id``: the ISO times its build finished (a rebuilt model has a new
    one) and dates were last added to it by an update, read from the database by primary key; ResourceNotFound
    unless it exists and its build succeeded."""
    try:
        run = state.store().get_run(model_id)
    except NotFound:
        raise ResourceNotFound(f"no model {model_id}") from None
    if run.status != "succeeded" or run.kind != "build":
        raise ResourceNotFound(f"no model {model_id}")
    built = (run.finished_at or run.created_at).isoformat()
    return built if run.updated_at is None else f"{built}+{run.updated_at.isoformat()}"


def _cached_read(
    request: Request, state: ServiceState, cache: Cache, model_id: str, read: Callable[[], BaseModel]
) -> Response:
    """``read()`` as JSON, cached under the model's current version: the model is looked up in the database
    first, so a deleted model is 404 and a rebuilt one never gets an old body, whatever Redis holds."""
    key = None
    if cache is not None:
        version = _model_version(state, model_id)
        query = urlencode(sorted(request.query_params.multi_items()))
        key = cache.model_key(model_id, version, f"{request.url.path}?{query}")
    return cached_json(cache, key, lambda: read().model_dump_json().encode())


@router.post(
    "/risk-model/create",
    response_model=ModelSummaryResponse,
    responses={
        202: {"model": JobAccepted, "description": "queued as a background job"},
        422: {"description": "empty universe, no data in the range, unknown config keys, unbuildable panel"},
    },
)
def create_risk_model(request: CreateModelRequest, state: State) -> Response:
    """Build a risk model from the stored panel: 200 with its summary when small, else 202 with a job."""
    result = model_reads.create_model(state, request)
    if isinstance(result, JobAccepted):
        return JSONResponse(result.model_dump(), status_code=status.HTTP_202_ACCEPTED)
    return Response(result.model_dump_json(), media_type="application/json")


@router.post(
    "/models/{model_id}/update",
    response_model=JobAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **_NOT_FOUND,
        409: {"description": "the model is being built, or an update of it is already queued or running"},
        503: {"description": "the job queue is full (Retry-After)"},
    },
)
def update_model(model_id: str, state: State, request: UpdateModelRequest | None = None) -> JobAccepted:
    """Extend a model by the stored panel's dates after its last date, as a job (poll its status_url). The
    job fails with the reason when the model cannot be updated (a new sector, a model without update state)
    or when there is nothing to add."""
    return queue_update(state, model_id, request or UpdateModelRequest())


@router.get("/models", response_model=list[ModelSummaryResponse])
def list_models(state: State) -> list[ModelSummaryResponse]:
    """Every built model, newest first."""
    return model_reads.list_models(state)


@router.get("/models/{model_id}", response_model=ModelSummaryResponse, responses=_NOT_FOUND)
def get_model(model_id: str, request: Request, state: State, cache: Cache) -> Response:
    """A model's summary."""
    return _cached_read(request, state, cache, model_id, lambda: model_reads.model_summary(state, model_id))


@router.delete(
    "/models/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_NOT_FOUND, 409: {"description": "its build is still running"}},
)
def delete_model(model_id: str, state: State) -> Response:
    """Delete a model, its job record and its cached reads."""
    model_reads.delete_model(state, model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/models/{model_id}/dates", response_model=ModelDatesResponse, responses=_NOT_FOUND)
def get_dates(model_id: str, request: Request, state: State, cache: Cache) -> Response:
    """Dates with a covariance forecast, specific risk and exposures."""
    return _cached_read(request, state, cache, model_id, lambda: model_reads.model_dates(state, model_id))


@router.get("/models/{model_id}/factor-returns", response_model=FactorReturnsResponse, responses=_NOT_FOUND)
def get_factor_returns(
    model_id: str, request: Request, state: State, cache: Cache, start: DateQuery = None, end: DateQuery = None
) -> Response:
    """Daily factor returns in [start, end] (inclusive), columnar."""
    return _cached_read(
        request, state, cache, model_id, lambda: model_reads.model_factor_returns(state, model_id, start, end)
    )


@router.get("/models/{model_id}/diagnostics", response_model=DiagnosticsResponse, responses=_NOT_FOUND)
def get_diagnostics(model_id: str, request: Request, state: State, cache: Cache) -> Response:
    """Per-date regression diagnostics: assets used, rows excluded and R², columnar."""
    return _cached_read(request, state, cache, model_id, lambda: model_reads.model_diagnostics(state, model_id))


@router.get("/models/{model_id}/covariance", response_model=CovarianceResponse, responses=_NOT_FOUND)
def get_covariance(model_id: str, request: Request, state: State, cache: Cache, date: DateQuery = None) -> Response:
    """The factor covariance forecast made at the close of ``date`` (default: the last model date)."""
    return _cached_read(request, state, cache, model_id, lambda: model_reads.model_covariance(state, model_id, date))


@router.get("/models/{model_id}/specific-risk", response_model=SpecificRiskResponse, responses=_NOT_FOUND)
def get_specific_risk(model_id: str, request: Request, state: State, cache: Cache, date: DateQuery = None) -> Response:
    """Specific volatility forecasts at the close of ``date`` (default: the last model date)."""
    return _cached_read(request, state, cache, model_id, lambda: model_reads.model_specific_risk(state, model_id, date))


@router.get("/models/{model_id}/exposures", response_model=ExposuresResponse, responses=_NOT_FOUND)
def get_exposures(
    model_id: str,
    request: Request,
    state: State,
    cache: Cache,
    date: DateQuery = None,
    symbols: str | None = Query(None, description="comma-separated symbols (default: every asset)"),
) -> Response:
    """Exposures known at the close of ``date`` (default: the last model date)."""
    wanted = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    return _cached_read(
        request, state, cache, model_id, lambda: model_reads.model_exposures(state, model_id, date, wanted)
    )
