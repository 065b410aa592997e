"""Model updates (``POST /models/{id}/update``): a stored model extended by the dates of the stored panel after
its last date, as a background job of the build jobs' kind (queue, lease, status, errors on the run).

The job reads what an update needs of the model from the store (:meth:`Store.update_inputs`: metadata, small
tables, update state and the recent exposure keys, never the large tables), loads the panel the model was
built from (the symbols its build request restricted it to, if any) from the first date those keys hold on,
runs :func:`factor_engine.update.extend_model` and writes the new dates with
:meth:`Store.append_model_dates` in ONE transaction that also marks the job succeeded: a failure anywhere
leaves the model as it was. The result equals a build on the whole panel (``tests/service/test_model_update.py``).
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Mapping
from typing import Any

import polars as pl
from pydantic import ValidationError

from factor_engine._missing_caps import has_cap
from factor_engine.model import ModelError
from factor_engine.panel import DATE, MARKET_CAP, SYMBOL, validate_panel
from factor_engine.service.builds import INTERRUPTED, BuildCancelled, Progress
from factor_engine.service.errors import InputError
from factor_engine.service.paths import job_path
from factor_engine.service.runtime import ServiceState
from factor_engine.service.schemas import CreateModelRequest, JobAccepted, UpdateModelRequest
from factor_engine.storage import ModelSummary, Store
from factor_engine.update import ShortKeys, UpdateInputs, extend_model

__all__ = ["NOTHING_TO_ADD", "UPDATE_STAGES", "queue_update", "run_update"]

# stages in the order they run: reading the model and the panel, then extend_model's stages, then "save"
UPDATE_STAGES = (
    "read model",
    "load panel",
    "universe",
    "styles",
    "factor returns",
    "factor covariance",
    "specific risk",
    "save",
)
NOTHING_TO_ADD = "nothing to add"


def queue_update(state: ServiceState, model_id: str, request: UpdateModelRequest | Mapping[str, Any]) -> JobAccepted:
    """Queue an update job of the stored model ``model_id``: 404 for an unknown model, 409 while it is being
    built or another update of it is queued or running (checked with the run's creation in one transaction),
    503 when the job queue is full. The job loads the panel when it starts."""
    payload = request.model_dump(mode="json") if isinstance(request, UpdateModelRequest) else dict(request)
    try:
        UpdateModelRequest.model_validate(payload)
    except ValidationError as error:
        raise InputError(f"not a valid model update request: {error}") from None
    jobs = state.jobs
    jobs.check_capacity(True)
    store = state.store()
    with jobs.queue_place() as place:
        run = store.create_update_run(model_id, payload, worker=jobs.worker, lease_seconds=jobs.lease_seconds)
        place.submit(run.id)
    return JobAccepted(job_id=run.id, status="queued", status_url=job_path(run.id))


def run_update(store: Store, run_id: str, *, cancelled: threading.Event | None = None) -> ModelSummary:
    """Run the queued update job ``run_id`` (see the module docstring): the model's summary after the update,
    or the job failed with the error message (re-raised). A refused update (ModelError: a new sector, a model
    without update state, a panel lacking the model's rows) and a panel without a later date ("nothing to
    add") fail the job with a message saying so."""
    store.start_run(run_id)
    progress = Progress(store, run_id, cancelled, UPDATE_STAGES)
    try:
        run = store.get_run(run_id)
        if run.model_id is None:
            raise InputError(f"job {run_id} is not a model update")
        model_id = run.model_id
        request = UpdateModelRequest.model_validate(run.request)
        with progress.stage("read model"):
            symbols = _build_symbols(store, model_id)
            inputs = store.update_inputs(model_id)
        with progress.stage("load panel"):
            panel = load_update_panel(store, inputs, symbols, request.end_date)
        try:
            extension, _ = extend_model(inputs, panel, stage=progress.stage)
        except ShortKeys:  # an asset's own rows reach further back than the keys read: read them all
            with progress.stage("read model"):
                inputs = store.update_inputs(model_id, all_keys=True)
            with progress.stage("load panel"):
                panel = load_update_panel(store, inputs, symbols, request.end_date)
            extension, _ = extend_model(inputs, panel, stage=progress.stage)
        if extension is None:
            until = f" up to {request.end_date}" if request.end_date is not None else ""
            raise InputError(
                f"{NOTHING_TO_ADD}: the stored panel has no date after model {model_id}'s last date "
                f"{inputs.last_date}{until}; ingest the new dates first (POST /data/panel)"
            )
        progress.announce("save")
        return store.append_model_dates(model_id, extension, run_id=run_id, timings=dict(progress.timings))
    except BaseException as error:
        message = str(error) or type(error).__name__
        if isinstance(error, ModelError):
            message = f"the model cannot be updated: {message}"
        elif not isinstance(error, ValueError | BuildCancelled):
            message = f"{type(error).__name__}: {message}"
        with contextlib.suppress(Exception):  # if the database is gone the lease expires instead
            store.fail_run(run_id, INTERRUPTED if isinstance(error, BuildCancelled) else message)
        raise


def load_update_panel(
    store: Store, inputs: UpdateInputs, symbols: list[str] | None, end: datetime.date | None
) -> pl.DataFrame:
    """The stored panel an update of the model read as ``inputs`` needs: the rows of ``symbols`` (None: all)
    from the first date of the exposure keys read up to ``end`` (None: the last), plus, for an asset of the new
    dates without a row there before them, its latest earlier row with a cap (the previous cap the universe ranks
    by)."""
    since = inputs.keys.get_column(DATE).min() if inputs.keys.height else None
    panel = store.load_panel(symbols=symbols, start=since, end=end)  # type: ignore[arg-type]
    last = inputs.last_date
    # a row without a cap is not the previous cap's row: the build leaves it out
    with_cap = has_cap() if MARKET_CAP in panel.columns else pl.lit(True)
    later = panel.filter(pl.col(DATE) > last).get_column(SYMBOL).unique()
    earlier = panel.filter((pl.col(DATE) <= last) & with_cap).get_column(SYMBOL).unique()
    unseen = sorted(set(later.to_list()) - set(earlier.to_list()))
    if unseen and isinstance(since, datetime.date):
        before = store.load_panel(symbols=unseen, end=since - datetime.timedelta(days=1))
        if MARKET_CAP in before.columns:
            before = before.filter(has_cap())
        previous = before.group_by(SYMBOL, maintain_order=True).last()  # rows come sorted by date
        if previous.height:
            shared = [column for column in panel.columns if column in previous.columns]
            panel = pl.concat([panel, previous.select(shared)], how="diagonal_relaxed").sort(DATE, SYMBOL)
    return validate_panel(panel)


def _build_symbols(store: Store, model_id: str) -> list[str] | None:
    """The symbols the model's build request restricted its panel to (None: every stored symbol, also for a
    model stored outside the service, whose run holds no build request)."""
    try:
        request = CreateModelRequest.model_validate(store.get_run(model_id).request)
    except ValidationError:
        return None
    if request.restrict_to_symbols and request.universe_symbols:
        return list(dict.fromkeys(request.universe_symbols))
    return None
