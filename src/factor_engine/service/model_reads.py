"""Reads, listing and deletion of stored models, and the model-build and job endpoints' logic."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence

import numpy as np
import polars as pl
from pydantic import ValidationError

from factor_engine.panel import DATE, SYMBOL
from factor_engine.service.budget import GIB, estimate_build_bytes
from factor_engine.service.builds import check_build_extent, check_request, model_config
from factor_engine.service.errors import Conflict, InputError, ResourceNotFound
from factor_engine.service.paths import job_path, model_path
from factor_engine.service.runtime import ServiceState
from factor_engine.service.schemas import (
    CovarianceResponse,
    CreateModelRequest,
    DiagnosticsResponse,
    ExposuresResponse,
    FactorReturnsResponse,
    JobAccepted,
    JobResponse,
    ModelDatesResponse,
    ModelSummaryResponse,
    SpecificRiskResponse,
)
from factor_engine.service.updates import queue_update
from factor_engine.storage import ModelSummary, NotFound, PanelExtent, RunRecord, Store

__all__ = [
    "create_model",
    "delete_job",
    "delete_model",
    "get_job",
    "list_jobs",
    "list_models",
    "model_covariance",
    "model_dates",
    "model_diagnostics",
    "model_exposures",
    "model_factor_returns",
    "model_specific_risk",
    "model_summary",
    "retry_job",
]

_SHOWN = 5


def _matrix(values: np.ndarray) -> list[list[float | None]]:
    """Rows of a 2-D float array with NaN as None (JSON has no NaN)."""
    return [[float(x) if math.isfinite(x) else None for x in row] for row in values.tolist()]


def _vector(values: Sequence[float | None]) -> list[float | None]:
    return [float(x) if x is not None and math.isfinite(x) else None for x in values]


def summary_response(summary: ModelSummary) -> ModelSummaryResponse:
    """The response of a stored model's summary."""
    return ModelSummaryResponse(
        id=summary.id,
        model_url=model_path(summary.id),
        created_at=summary.created_at,
        updated_at=summary.updated_at,
        factors=list(summary.factors),
        sectors=list(summary.sectors),
        styles=list(summary.styles),
        first_date=summary.first_date,
        last_date=summary.last_date,
        n_dates=summary.n_dates,
        n_assets=summary.n_assets,
        covariance_dates=summary.covariance_dates,
        horizon=summary.horizon,
        config=summary.config,
        request=summary.request,
        timings=summary.timings,
        engine_version=summary.engine_version,
        build=summary.build,
        warnings=list(summary.build.get("warnings", [])),
    )


def job_response(run: RunRecord) -> JobResponse:
    """The response of a run (a job)."""
    model_id = run.model_id if run.kind == "update" and run.model_id else run.id
    return JobResponse(
        id=run.id,
        kind=run.kind,  # type: ignore[arg-type]
        model_id=model_id,
        status=run.status,  # type: ignore[arg-type]
        stage=run.stage,
        progress=run.progress,
        error=run.error,
        timings=run.timings,
        request=run.request,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        status_url=job_path(run.id),
        model_url=model_path(model_id) if run.status == "succeeded" else None,
    )


# --------------------------------------------------------------------------------------------------
# builds and jobs


def _admit(state: ServiceState, store: Store, request: CreateModelRequest) -> PanelExtent:
    """The checks every build request passes before a run is created: its configuration within the service's
    bounds, its data present and solvable (from aggregates, nothing loaded) and its estimated peak memory
    within the budget (InputError, 422, otherwise). Returns the extent of the data it would load."""
    settings = state.settings
    config = model_config(request, settings.style_module_names, settings.build_limits)
    extent, styles = check_build_extent(store, request, config)
    needed = estimate_build_bytes(extent, config, len(styles))
    if needed > settings.memory_budget:
        raise InputError(
            f"the build is estimated to need {needed / GIB:.1f} GiB of memory ({extent.dates:,} dates × up to "
            f"{extent.most_assets:,} assets); the service's budget is {settings.memory_budget / GIB:.1f} GiB "
            "(FACTOR_ENGINE_BUILD_MEMORY_BUDGET_BYTES). Shorten the date range (start_date, end_date), lower the "
            "universe size or the eigenfactor simulations, or raise the budget"
        )
    return extent


def create_model(state: ServiceState, request: CreateModelRequest) -> ModelSummaryResponse | JobAccepted:
    """Build now (small panel, ``background`` not true, or ``background`` false) and return the summary, or
    queue a job and return where to poll it. Checks fail with 422, and a full build slot or queue with 503
    (``Retry-After``), before any run is created; the panel is loaded when the build starts."""
    check_request(request)
    state.jobs.check_capacity(request.background)  # a full service refuses before looking at the data
    store = state.store()
    extent = _admit(state, store, request)
    direct = request.background is False or (
        request.background is None and extent.rows <= state.settings.sync_build_max_rows
    )
    jobs = state.jobs
    payload = request.model_dump(mode="json")
    if not direct:
        with jobs.queue_place() as place:
            run = store.create_run(payload, worker=jobs.worker, lease_seconds=jobs.lease_seconds)
            place.submit(run.id)
        return JobAccepted(job_id=run.id, status="queued", status_url=job_path(run.id))
    with jobs.direct_slot():
        run = store.create_run(payload, worker=jobs.worker, lease_seconds=jobs.lease_seconds, running=True)
        try:
            summary = jobs.run_direct(store, run.id, request)
        except ValueError as error:
            raise InputError(f"cannot build the model: {error} (job {run.id} failed)") from error
    return summary_response(summary)


def _run(store: Store, job_id: str) -> RunRecord:
    try:
        return store.get_run(job_id)
    except NotFound:
        raise ResourceNotFound(f"no job {job_id}") from None


def get_job(state: ServiceState, job_id: str) -> JobResponse:
    """A job's status."""
    return job_response(_run(state.store(), job_id))


def list_jobs(state: ServiceState, status: str | None, limit: int) -> list[JobResponse]:
    """Recent jobs, newest first."""
    return [job_response(run) for run in state.store().list_runs(status=status, limit=limit)]


def delete_job(state: ServiceState, job_id: str) -> None:
    """Delete a failed job's record (404 if unknown; 409 while it is queued or running, or when it succeeded:
    its model is deleted with DELETE /models/{id})."""
    try:
        state.store().delete_run(job_id)
    except NotFound:
        raise ResourceNotFound(f"no job {job_id}") from None


def retry_job(state: ServiceState, job_id: str) -> JobAccepted:
    """Queue a new job with the request of the failed job ``job_id`` (409 unless it failed); the request is
    admitted again (bounds, data, memory budget, queue) as a new one would be."""
    store = state.store()
    run = _run(store, job_id)
    if run.status != "failed":
        raise Conflict(f"job {job_id} is {run.status}; only a failed job can be retried")
    if run.kind == "update":
        return queue_update(state, run.model_id or "", run.request)
    try:
        request = CreateModelRequest.model_validate(run.request)
    except ValidationError as error:
        raise InputError(f"job {job_id}'s request is not a valid model build request: {error}") from None
    state.jobs.check_capacity(True)
    _admit(state, store, request)
    jobs = state.jobs
    with jobs.queue_place() as place:
        retry = store.create_run(run.request, worker=jobs.worker, lease_seconds=jobs.lease_seconds)
        place.submit(retry.id)
    return JobAccepted(job_id=retry.id, status="queued", status_url=job_path(retry.id))


# --------------------------------------------------------------------------------------------------
# models


def _model(store: Store, model_id: str) -> ModelSummary:
    try:
        return store.get_model(model_id)
    except NotFound:
        raise ResourceNotFound(f"no model {model_id}") from None


def list_models(state: ServiceState) -> list[ModelSummaryResponse]:
    """Every built model, newest first."""
    return [summary_response(summary) for summary in state.store().list_models()]


def model_summary(state: ServiceState, model_id: str) -> ModelSummaryResponse:
    """One model's summary."""
    return summary_response(_model(state.store(), model_id))


def delete_model(state: ServiceState, model_id: str) -> None:
    """Delete a model, its run and its cached reads (409 while its build is queued or running).

    Dropping the cached reads is best effort: once the deletion has committed a Redis error is only logged
    (by the cache), since every cached read checks the model in the database first and so is 404 anyway."""
    store = state.store()
    try:
        run = store.get_run(model_id)
    except NotFound:
        raise ResourceNotFound(f"no model {model_id}") from None
    if run.kind != "build":
        raise ResourceNotFound(f"no model {model_id} (it is an update job)")
    if run.status in ("queued", "running") or state.jobs.is_active(model_id):
        raise Conflict(f"model {model_id} is being built (job {run.status}); delete it when the job has ended")
    if run.status != "succeeded":
        raise ResourceNotFound(f"no model {model_id} (its job {run.status})")
    try:
        store.delete_model(model_id)
    except NotFound:
        raise ResourceNotFound(f"no model {model_id}") from None
    state.snapshots.drop_model(model_id)
    if state.cache is not None:
        state.cache.drop_model(model_id)  # never raises: None when Redis failed


def model_dates(state: ServiceState, model_id: str) -> ModelDatesResponse:
    """The dates with a full forecast (covariance, specific risk and exposures)."""
    store = state.store()
    _model(store, model_id)
    return ModelDatesResponse(model_id=model_id, dates=store.model_dates(model_id))


def _day(store: Store, model_id: str, date: datetime.date | None) -> datetime.date:
    """``date``, or the last model date."""
    if date is not None:
        return date
    dates = store.model_dates(model_id)
    if not dates:
        raise InputError(f"model {model_id} has no date with a covariance forecast, specific risk and exposures")
    return dates[-1]


def _no_data(summary: ModelSummary, what: str, date: datetime.date) -> InputError:
    return InputError(
        f"model {summary.id} has no {what} on {date}; its dates run {summary.first_date} → {summary.last_date} "
        f"(GET {model_path(summary.id)}/dates lists the dates with every forecast)"
    )


def model_factor_returns(
    state: ServiceState, model_id: str, start: datetime.date | None, end: datetime.date | None
) -> FactorReturnsResponse:
    """Daily factor returns in [start, end] (columnar)."""
    store = state.store()
    summary = _model(store, model_id)
    frame = store.factor_returns(model_id, start=start, end=end)
    factors = [name for name in frame.columns if name != DATE]
    return FactorReturnsResponse(
        model_id=model_id,
        factors=factors or list(summary.factors),
        dates=frame.get_column(DATE).to_list(),
        returns=_matrix(frame.select(pl.col(factors).cast(pl.Float64)).to_numpy()) if factors else [],
    )


def model_diagnostics(state: ServiceState, model_id: str) -> DiagnosticsResponse:
    """The regression's per-date diagnostics (assets used, rows excluded, R²), sorted by date."""
    store = state.store()
    _model(store, model_id)
    frame = store.diagnostics(model_id).sort(DATE)
    return DiagnosticsResponse(
        model_id=model_id,
        dates=frame.get_column(DATE).to_list(),
        n_assets=frame.get_column("n_assets").to_list(),
        n_excluded=frame.get_column("n_excluded").to_list(),
        r2=_vector(frame.get_column("r2").cast(pl.Float64).to_list()),
    )


def model_covariance(state: ServiceState, model_id: str, date: datetime.date | None) -> CovarianceResponse:
    """The factor covariance forecast made at the close of ``date`` (default: the last model date)."""
    store = state.store()
    summary = _model(store, model_id)
    day = _day(store, model_id, date)
    covariance = store.factor_covariance(model_id, start=day, end=day)
    if day not in covariance.dates.to_list():
        raise _no_data(summary, "factor covariance forecast", day)
    return CovarianceResponse(
        model_id=model_id,
        date=day,
        horizon=covariance.horizon,
        factors=list(covariance.factors),
        covariance=_matrix(covariance.at(day)),
    )


def model_specific_risk(state: ServiceState, model_id: str, date: datetime.date | None) -> SpecificRiskResponse:
    """Specific volatility forecasts made at the close of ``date`` (default: the last model date)."""
    store = state.store()
    summary = _model(store, model_id)
    day = _day(store, model_id, date)
    frame = store.specific_risk(model_id, start=day, end=day).sort(SYMBOL)
    if frame.height == 0:
        raise _no_data(summary, "specific risk forecast", day)
    return SpecificRiskResponse(
        model_id=model_id,
        date=day,
        symbols=frame.get_column(SYMBOL).to_list(),
        specific_vol=_vector(frame.get_column("specific_vol").cast(pl.Float64).to_list()),
    )


def model_exposures(
    state: ServiceState, model_id: str, date: datetime.date | None, symbols: Sequence[str] | None
) -> ExposuresResponse:
    """Exposures known at the close of ``date`` (default: the last model date), of ``symbols`` (None = all)."""
    store = state.store()
    summary = _model(store, model_id)
    day = _day(store, model_id, date)
    frame = store.exposures(model_id, start=day, end=day).sort(SYMBOL)
    if frame.height == 0:
        raise _no_data(summary, "exposures", day)
    if symbols:
        wanted = list(dict.fromkeys(symbols))
        held = set(frame.get_column(SYMBOL).to_list())
        unknown = [symbol for symbol in wanted if symbol not in held]
        if unknown:
            shown = ", ".join(unknown[:_SHOWN]) + (", ..." if len(unknown) > _SHOWN else "")
            raise InputError(f"model {model_id} has no exposures on {day} for {len(unknown)} symbol(s): {shown}")
        frame = frame.filter(pl.col(SYMBOL).is_in(wanted))
    factors = [name for name in frame.columns if name not in (DATE, SYMBOL)]
    return ExposuresResponse(
        model_id=model_id,
        date=day,
        factors=factors,
        symbols=frame.get_column(SYMBOL).to_list(),
        exposures=_matrix(frame.select(pl.col(factors).cast(pl.Float64)).to_numpy()),
    )
