"""Runs (model builds) and the models they produce: lifecycle, one-transaction save, reads by date range.

A run's id is its model's id. :meth:`ModelStore.save_model` writes every model table and flips the run to
``succeeded`` in one transaction (COPY in binary format on PostgreSQL), so an error or a killed process leaves
no model row and the run not succeeded. :meth:`ModelStore.append_model_dates` extends a stored model by new
dates in one transaction too (with the update run that made them, when given), and :meth:`ModelStore.update_inputs`
reads what :func:`factor_engine.update.extend_model` needs without the large tables. A model's update state
(``RiskModel.state``) is stored with it and replaced by each append. Update runs (``kind`` "update") are jobs
among the builds; they never hold a model. Reads decode the per-date blobs (:mod:`factor_engine.storage.codec`).
"""

from __future__ import annotations

import datetime
import io
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa
from psycopg import sql as psql

from factor_engine import __version__
from factor_engine.model import ModelError, ModelExtension, RiskModel
from factor_engine.panel import DATE, SYMBOL
from factor_engine.portfolio.analytics import RiskModelSnapshot
from factor_engine.portfolio.snapshot import SPECIFIC_VOL, as_date, forecast_dates, snapshot_at
from factor_engine.risk import FactorCovariance
from factor_engine.storage.codec import (
    decode_blocks,
    decode_dates,
    decode_matrix,
    decode_state,
    encode_blocks,
    encode_dates,
    encode_state,
)
from factor_engine.storage.codec import encode_matrix as encode_covariance
from factor_engine.storage.database import StoreBase, driver_connection
from factor_engine.storage.errors import NotFound, StoreConflict
from factor_engine.storage.records import ModelSummary, RunRecord, RunStatus
from factor_engine.storage.tables import (
    BLOB_TABLES,
    model_covariances,
    model_diagnostics,
    model_exposures,
    model_factor_returns,
    model_residuals,
    model_runs,
    model_specific_risk,
    model_state,
    model_symbols,
)
from factor_engine.update import UpdateInputs, keys_reach, model_config

__all__ = ["INTERRUPTED", "ModelStore", "lease_expired"]

INTERRUPTED = "interrupted: the service stopped during the build"
RESIDUAL = "residual"
_OPEN = (RunStatus.QUEUED, RunStatus.RUNNING)
_MODEL_TABLES = (
    model_diagnostics,
    *BLOB_TABLES,
    model_covariances,
    model_factor_returns,
    model_state,
    model_symbols,
)
BUILD, UPDATE = "build", "update"
# a stored model: a build run that succeeded (an update run never holds a model)
_IS_MODEL = (model_runs.c.status == RunStatus.SUCCEEDED, model_runs.c.kind == BUILD)
# Cached symbol dictionaries (appending dates only adds symbols at the end: a dictionary too short for the
# positions read is read again).
_SYMBOL_CACHE_SIZE = 32
_RUN_COLUMNS = [c for c in model_runs.c if c.name not in ("model_meta", "forecast_dates")]


# the long rows of model_factor_returns as read back
_LONG_RETURNS = {DATE: pl.Date(), "factor": pl.String(), "value": pl.Float64()}


def _update_run(
    connection: sa.Connection, run_id: str, allowed: Sequence[str], values: Mapping[str, Any], conflict: str
) -> None:
    """Update run ``run_id`` if its status is one of ``allowed``; else NotFound (no such run) or StoreConflict
    with ``conflict`` formatted with its ``status``."""
    changed = connection.execute(
        model_runs.update().where(model_runs.c.id == run_id, model_runs.c.status.in_(allowed)).values(**values)
    ).rowcount
    if changed == 0:
        status = connection.execute(
            sa.select(model_runs.c.status).where(model_runs.c.id == run_id)
        ).scalar_one_or_none()
        if status is None:
            raise NotFound(f"no job {run_id}")
        raise StoreConflict(conflict.format(status=status))


def lease_expired(worker: str | None, expires: datetime.datetime | None) -> str:
    """The error of a run failed because its lease expired (``expires`` None: it never had one)."""
    if expires is None:
        return f"{INTERRUPTED}: no service worker holds the build. Retry the job (POST /jobs/<id>/retry)"
    when = "" if expires is None else f" at {expires.isoformat(timespec='seconds')}"
    return (
        f"the build's worker ({worker or 'unknown'}) stopped renewing its lease: it stopped, died or lost the "
        f"database; the lease expired{when}. Retry the job (POST /jobs/<id>/retry)"
    )


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=float(value))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _utc(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=datetime.UTC)


def _date(value: Any) -> datetime.date | None:
    if value is None or isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(str(value))


class ModelStore(StoreBase):
    """The ``model_runs`` table and the model tables."""

    def __init__(self, engine: sa.Engine, schema: str | None = None) -> None:
        super().__init__(engine, schema)
        self._symbol_cache: dict[str, pl.Series] = {}
        self._symbol_lock = threading.Lock()

    # ---- runs ---------------------------------------------------------------------------------------------
    def create_run(
        self,
        request: dict[str, Any],
        *,
        worker: str | None = None,
        lease_seconds: float | None = None,
        running: bool = False,
    ) -> RunRecord:
        """A new run for ``request`` (any JSON-compatible mapping) in status ``queued``, or ``running`` (started
        now) with ``running`` (a build that starts at once), held by ``worker`` with a lease of
        ``lease_seconds`` (both None: no lease, e.g. a build outside the service)."""
        if not isinstance(request, Mapping):
            raise TypeError(f"request must be a JSON object (a mapping), got {type(request).__name__}")
        run_id = uuid.uuid4().hex
        now = _now()
        with self._write() as connection:
            connection.execute(
                model_runs.insert().values(
                    id=run_id,
                    status=RunStatus.RUNNING if running else RunStatus.QUEUED,
                    request=dict(request),
                    progress=0.0,
                    timings={},
                    created_at=now,
                    started_at=now if running else None,
                    worker=worker,
                    lease_expires_at=None if lease_seconds is None else now + _seconds(lease_seconds),
                )
            )
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id``; NotFound("no job <id>") if there is none."""
        with self._read() as connection:
            row = connection.execute(sa.select(*_RUN_COLUMNS).where(model_runs.c.id == run_id)).one_or_none()
        if row is None:
            raise NotFound(f"no job {run_id}")
        return _run_record(row._mapping)

    def list_runs(self, *, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Runs, newest first, optionally only those in ``status``; at most ``limit`` (≥ 1)."""
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        statuses = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED)
        if status is not None and status not in statuses:
            raise ValueError(f"status must be one of {statuses}, got {status!r}")
        query = sa.select(*_RUN_COLUMNS).order_by(model_runs.c.created_at.desc(), model_runs.c.id).limit(limit)
        if status is not None:
            query = query.where(model_runs.c.status == status)
        with self._read() as connection:
            return [_run_record(row._mapping) for row in connection.execute(query)]

    def start_run(self, run_id: str) -> None:
        """Move a queued run to ``running``; StoreConflict if it is not queued."""
        self._transition(run_id, (RunStatus.QUEUED,), status=RunStatus.RUNNING, started_at=_now())

    def update_progress(self, run_id: str, stage: str, progress: float, timings: dict[str, float]) -> None:
        """Record the current stage, progress (fraction 0..1) and seconds per stage of a running run."""
        if not 0.0 <= float(progress) <= 1.0:
            raise ValueError(f"progress must be a fraction in [0, 1], got {progress!r}")
        self._transition(run_id, (RunStatus.RUNNING,), stage=stage, progress=float(progress), timings=_timings(timings))

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a queued or running run ``failed`` with ``error``; StoreConflict if it already finished."""
        self._transition(run_id, _OPEN, status=RunStatus.FAILED, error=str(error), finished_at=_now())

    def renew_leases(self, worker: str, run_ids: Sequence[str], lease_seconds: float) -> list[str]:
        """Extend to now + ``lease_seconds`` the leases ``worker`` holds on the queued or running runs
        ``run_ids`` (taking the lease of a run without one); returns the ids renewed (a run that ended, or was
        failed by another worker after its lease expired, is not)."""
        if not run_ids:
            return []
        ids = list(run_ids)
        held = sa.or_(model_runs.c.worker == worker, model_runs.c.worker.is_(None))
        where = (model_runs.c.id.in_(ids), model_runs.c.status.in_(_OPEN), held)
        with self._write() as connection:
            renewed = list(connection.execute(sa.select(model_runs.c.id).where(*where)).scalars())
            if renewed:
                connection.execute(
                    model_runs.update()
                    .where(model_runs.c.id.in_(renewed))
                    .values(worker=worker, lease_expires_at=_now() + _seconds(lease_seconds))
                )
        return renewed

    def expire_runs(self) -> list[str]:
        """Fail every queued or running run whose lease has expired (its worker stopped renewing it: it died,
        was stopped or lost the database) or that has no lease (no service worker holds it: left by a service
        from before leases, or created outside one), with an error saying so; returns their ids."""
        now = _now()
        lapsed = sa.or_(model_runs.c.lease_expires_at.is_(None), model_runs.c.lease_expires_at < now)
        where = (model_runs.c.status.in_(_OPEN), lapsed)
        with self._write() as connection:
            expired = connection.execute(
                sa.select(model_runs.c.id, model_runs.c.worker, model_runs.c.lease_expires_at).where(*where)
            ).all()
            for run_id, worker, expires in expired:
                connection.execute(
                    model_runs.update()
                    .where(model_runs.c.id == run_id, *where)
                    .values(status=RunStatus.FAILED, error=lease_expired(worker, _utc(expires)), finished_at=now)
                )
        return [row[0] for row in expired]

    def _transition(self, run_id: str, allowed: Sequence[str], **values: Any) -> None:
        with self._write() as connection:
            _update_run(connection, run_id, allowed, values, f"job {run_id} is {{status}}, not {' or '.join(allowed)}")

    # ---- save ---------------------------------------------------------------------------------------------
    def save_model(self, run_id: str, model: RiskModel, *, timings: dict[str, float]) -> ModelSummary:
        """Write every table of ``model`` (its update state, :attr:`RiskModel.state`, too) and mark run ``run_id``
        succeeded, in ONE transaction.

        Parameters
        ----------
        run_id: a run in status ``running`` (StoreConflict otherwise, NotFound if unknown).
        model: the built model (daily units).
        timings: seconds per build stage, stored on the run.
        """
        encoded = _encode_model(run_id, model)
        with self._write() as connection:
            values = {
                "status": RunStatus.SUCCEEDED,
                "stage": None,
                "progress": 1.0,
                "timings": _timings(timings),
                "finished_at": _now(),
                "model_meta": encoded.meta,
                "forecast_dates": encoded.forecast_dates,
            }
            conflict = f"cannot save a model for job {run_id}: it is {{status}}, not running"
            _update_run(connection, run_id, (RunStatus.RUNNING,), values, conflict)
            for table, rows in encoded.tables:
                self._bulk_insert(connection, table, rows)
        return self.get_model(run_id)

    def append_model_dates(
        self,
        model_id: str,
        extension: ModelExtension,
        *,
        run_id: str | None = None,
        timings: dict[str, float] | None = None,
    ) -> ModelSummary:
        """Extend the stored model ``model_id`` by new dates in ONE transaction: the new dates' rows of the
        exposures, residuals and specific risk inserted (symbols new to the model added to its dictionary),
        the factor returns, factor covariance and diagnostics replaced by the extension's, the state components
        the extension gives replaced (the others kept), the summary, forecast dates and ``updated_at`` updated,
        and the update run ``run_id`` (if given) marked succeeded with ``timings``. An error leaves the model
        (and the run) as it was.

        Parameters
        ----------
        model_id: a stored model (NotFound otherwise).
        extension: the new dates (see :class:`factor_engine.model.ModelExtension`).
        run_id: the running update run that made ``extension`` (StoreConflict unless it is running).
        timings: seconds per stage, stored on that run.

        Raises ModelError when the extension does not fit the model (factors, forecasts, a date not after the
        stored ones), naming what differs.
        """
        now = _now()
        with self._write() as connection:
            locked = connection.execute(
                sa.select(model_runs.c.model_meta, model_runs.c.forecast_dates)
                .where(model_runs.c.id == model_id, *_IS_MODEL)
                .with_for_update()
            ).one_or_none()
            if locked is None:
                raise NotFound(f"no model {model_id}")
            meta, stored_forecast_dates = dict(locked[0]), locked[1]
            extension.check(
                tuple(meta["factors"]),
                has_covariance=bool(meta["has_covariance"]),
                has_specific_risk=bool(meta["has_specific_risk"]),
                model=f"model {model_id}",
            )
            symbols = self._appended_symbols(connection, model_id, extension)
            for table, frame, columns in _blob_frames(extension, tuple(meta["factors"])):
                self._check_after_last_date(connection, table, model_id, frame)
                rows = [(model_id, b.date, b.positions, b.data) for b in encode_blocks(frame, columns, symbols)]
                self._bulk_insert(connection, table, rows)
            encoded = _encode_small_tables(model_id, extension, tuple(meta["factors"]))
            for table, rows in encoded:
                connection.execute(table.delete().where(table.c.model_id == model_id))
                self._bulk_insert(connection, table, rows)
            state_rows = _state_rows(model_id, extension.state)
            if state_rows:
                components = [row[1] for row in state_rows]
                connection.execute(
                    model_state.delete().where(
                        model_state.c.model_id == model_id, model_state.c.component.in_(components)
                    )
                )
                self._bulk_insert(connection, model_state, state_rows)
            connection.execute(
                model_runs.update()
                .where(model_runs.c.id == model_id)
                .values(
                    model_meta=_extended_meta(meta, extension, symbols.len(), now),
                    forecast_dates=_extended_forecast_dates(stored_forecast_dates, extension, meta),
                    updated_at=now,
                )
            )
            if run_id is not None:
                values = {
                    "status": RunStatus.SUCCEEDED,
                    "stage": None,
                    "progress": 1.0,
                    "timings": _timings(timings or {}),
                    "finished_at": _now(),
                }
                conflict = f"cannot finish update job {run_id}: it is {{status}}, not running"
                _update_run(connection, run_id, (RunStatus.RUNNING,), values, conflict)
        with self._symbol_lock:
            self._symbol_cache.pop(model_id, None)
        return self.get_model(model_id)

    # ---- updates ------------------------------------------------------------------------------------------
    def create_update_run(
        self,
        model_id: str,
        request: dict[str, Any],
        *,
        worker: str | None = None,
        lease_seconds: float | None = None,
    ) -> RunRecord:
        """A new queued update run of the stored model ``model_id`` with ``request`` (JSON), held by ``worker``
        under a lease of ``lease_seconds``. Checked and created in one transaction that locks the model's row,
        so two requests never both get a run: NotFound for an unknown model, StoreConflict while the model is
        being built or another update of it is queued or running."""
        if not isinstance(request, Mapping):
            raise TypeError(f"request must be a JSON object (a mapping), got {type(request).__name__}")
        run_id = uuid.uuid4().hex
        now = _now()
        with self._write() as connection:
            target = connection.execute(
                sa.select(model_runs.c.status, model_runs.c.kind).where(model_runs.c.id == model_id).with_for_update()
            ).one_or_none()
            if target is None or target[1] != BUILD or target[0] == RunStatus.FAILED:
                raise NotFound(f"no model {model_id}")
            if target[0] in _OPEN:
                raise StoreConflict(f"model {model_id} is still being built ({target[0]}); update it once it is built")
            running = connection.execute(
                sa.select(model_runs.c.id, model_runs.c.status).where(
                    model_runs.c.kind == UPDATE, model_runs.c.model_id == model_id, model_runs.c.status.in_(_OPEN)
                )
            ).first()
            if running is not None:
                raise StoreConflict(
                    f"model {model_id} is already being updated (job {running[0]}, {running[1]}); wait for it to end"
                )
            connection.execute(
                model_runs.insert().values(
                    id=run_id,
                    status=RunStatus.QUEUED,
                    request=dict(request),
                    progress=0.0,
                    timings={},
                    created_at=now,
                    worker=worker,
                    lease_expires_at=None if lease_seconds is None else now + _seconds(lease_seconds),
                    kind=UPDATE,
                    model_id=model_id,
                )
            )
        return self.get_run(run_id)

    def model_state(self, model_id: str) -> dict[str, dict[str, np.ndarray]]:
        """The update state stored with the model: component → array name → array ({} when it has none)."""
        with self._read() as connection:
            self._meta(connection, model_id)
            return self._state(connection, model_id)

    def update_inputs(self, model_id: str, *, all_keys: bool = False) -> UpdateInputs:
        """What :func:`factor_engine.update.extend_model` needs of the stored model ``model_id``, read in one
        snapshot without the large tables: its metadata, factor returns, diagnostics, factor covariance, update
        state and the ``date, symbol`` keys of its exposure rows over the dates its styles look back on (as
        :func:`factor_engine.update.read_update_inputs` reads a folder); ``all_keys`` reads the keys of every
        date (when ``extend_model`` says an asset's rows reach further back).

        Raises NotFound for an unknown model and ModelError for a model without update state."""
        with self._read(snapshot=True) as connection:
            stored = self._meta(connection, model_id)
            state = self._state(connection, model_id)
            if not state:
                raise ModelError(
                    f"model {model_id} has no update state: it was built before updates were possible, or cut to "
                    "an end_date before the last date its build estimated (the state belongs to that date); "
                    "rebuild it without end_date to get a model that can be updated"
                )
            meta = _update_meta(stored)
            factors = tuple(stored["factors"])
            factor_returns = self._factor_returns(connection, model_id, factors, None, None)
            reach = None if all_keys else keys_reach(model_config(meta))
            dates = factor_returns.get_column(DATE).sort()
            since = None if reach is None or reach >= dates.len() else dates[-reach]
            return UpdateInputs(
                meta=meta,
                factor_returns=factor_returns,
                diagnostics=self._diagnostics(connection, model_id),
                covariance=self._covariance(connection, model_id, stored, []),
                keys=self._exposure_keys(connection, model_id, since),
                state=state,
                all_keys=since is None,
            )

    # ---- models -------------------------------------------------------------------------------------------
    def list_models(self) -> list[ModelSummary]:
        """Every stored model (succeeded run), newest first."""
        query = (
            sa.select(*_RUN_COLUMNS, model_runs.c.model_meta)
            .where(*_IS_MODEL)
            .order_by(model_runs.c.created_at.desc(), model_runs.c.id)
        )
        with self._read() as connection:
            return [_model_summary(row._mapping) for row in connection.execute(query)]

    def get_model(self, model_id: str) -> ModelSummary:
        """The model ``model_id``; NotFound("no model <id>") unless it is a succeeded run."""
        with self._read() as connection:
            return _model_summary(self._model_row(connection, model_id))

    def delete_model(self, model_id: str) -> None:
        """Delete the model, its run and its update runs in one transaction; NotFound if unknown, StoreConflict
        while it builds or an update of it is queued or running."""
        with self._write() as connection:
            status = connection.execute(
                sa.select(model_runs.c.status).where(model_runs.c.id == model_id, model_runs.c.kind == BUILD)
            ).scalar_one_or_none()
            if status in _OPEN:
                raise StoreConflict(f"model {model_id} is still building ({status}); wait for it or let it fail")
            if status != RunStatus.SUCCEEDED:
                raise NotFound(f"no model {model_id}")
            updates = (model_runs.c.kind == UPDATE, model_runs.c.model_id == model_id)
            updating = connection.execute(
                sa.select(model_runs.c.id).where(*updates, model_runs.c.status.in_(_OPEN))
            ).first()
            if updating is not None:
                raise StoreConflict(f"model {model_id} is being updated (job {updating[0]}); wait for it to end")
            for table in _MODEL_TABLES:
                connection.execute(table.delete().where(table.c.model_id == model_id))
            connection.execute(model_runs.delete().where(*updates))
            connection.execute(model_runs.delete().where(model_runs.c.id == model_id))
        with self._symbol_lock:
            self._symbol_cache.pop(model_id, None)

    def delete_run(self, run_id: str) -> None:
        """Delete the record of the failed run ``run_id`` (a failed run has no model rows), or of a finished update
        run; NotFound if unknown, StoreConflict otherwise (a queued or running run is still held by its worker; a
        succeeded build is deleted with its model by :meth:`delete_model`)."""
        finished = sa.or_(
            model_runs.c.status == RunStatus.FAILED,
            sa.and_(model_runs.c.kind == UPDATE, model_runs.c.status == RunStatus.SUCCEEDED),
        )
        with self._write() as connection:
            deleted = connection.execute(model_runs.delete().where(model_runs.c.id == run_id, finished)).rowcount
            if deleted:
                return
            status = connection.execute(
                sa.select(model_runs.c.status).where(model_runs.c.id == run_id)
            ).scalar_one_or_none()
        if status is None:
            raise NotFound(f"no job {run_id}")
        hint = " (delete its model with DELETE /models/<id>)" if status == RunStatus.SUCCEEDED else ""
        raise StoreConflict(f"job {run_id} is {status}: only a failed job can be deleted{hint}")

    def model_dates(self, model_id: str) -> list[datetime.date]:
        """The dates with a finite covariance forecast, specific risk and exposures (those snapshot accepts)."""
        with self._read() as connection:
            return self._forecast_dates(connection, model_id).to_list()

    def factor_returns(
        self, model_id: str, *, start: datetime.date | None = None, end: datetime.date | None = None
    ) -> pl.DataFrame:
        """``date`` + one Float64 column per factor (model order; daily fractions) for dates in [start, end]."""
        with self._read() as connection:
            meta = self._meta(connection, model_id)
            return self._factor_returns(connection, model_id, tuple(meta["factors"]), start, end)

    def factor_covariance(
        self, model_id: str, *, start: datetime.date | None = None, end: datetime.date | None = None
    ) -> FactorCovariance:
        """The factor covariance forecasts made at the dates in [start, end] (the model's horizon units);
        ModelError if the model has none."""
        with self._read() as connection:
            meta = self._meta(connection, model_id)
            covariance = self._covariance(connection, model_id, meta, _range(model_covariances, start, end))
        if covariance is None:
            raise ModelError(f"model {model_id} has no factor covariance forecast")
        return covariance

    def specific_risk(
        self, model_id: str, *, start: datetime.date | None = None, end: datetime.date | None = None
    ) -> pl.DataFrame:
        """``date, symbol, specific_vol`` (daily sd, fraction); ModelError if the model has none."""
        with self._read() as connection:
            meta = self._meta(connection, model_id)
            if not meta["has_specific_risk"]:
                raise ModelError(f"model {model_id} has no specific risk forecast")
            where = _range(model_specific_risk, start, end)
            return self._blocks(connection, model_specific_risk, model_id, [SPECIFIC_VOL], where)

    def exposures(
        self, model_id: str, *, start: datetime.date | None = None, end: datetime.date | None = None
    ) -> pl.DataFrame:
        """``date, symbol`` + one column per factor (model order): exposures known at each date's close."""
        with self._read() as connection:
            meta = self._meta(connection, model_id)
            where = _range(model_exposures, start, end)
            return self._blocks(connection, model_exposures, model_id, meta["factors"], where)

    def residuals(
        self, model_id: str, *, start: datetime.date | None = None, end: datetime.date | None = None
    ) -> pl.DataFrame:
        """``date, symbol, residual`` (daily fractions) for dates in [start, end]."""
        with self._read() as connection:
            self._meta(connection, model_id)
            where = _range(model_residuals, start, end)
            return self._blocks(connection, model_residuals, model_id, [RESIDUAL], where)

    def diagnostics(self, model_id: str) -> pl.DataFrame:
        """The per-date regression diagnostics, as ``RiskModel.diagnostics``."""
        with self._read() as connection:
            self._meta(connection, model_id)
            return self._diagnostics(connection, model_id)

    def load_model(
        self, model_id: str, *, start: datetime.date | None = None, end: datetime.date | None = None
    ) -> RiskModel:
        """The model, or its dates in [start, end], as a RiskModel; with no bounds its frames equal the saved
        ones exactly (dtypes, nulls, row order for date-sorted frames)."""
        with self._read() as connection:
            meta = self._meta(connection, model_id)
            factors = tuple(meta["factors"])
            diagnostics = self._diagnostics(connection, model_id)
            if start is not None or end is not None:
                diagnostics = diagnostics.filter(_between(pl.col(DATE), start, end))
            specific = None
            if meta["has_specific_risk"]:
                where = _range(model_specific_risk, start, end)
                specific = self._blocks(connection, model_specific_risk, model_id, [SPECIFIC_VOL], where)
            return RiskModel(
                factor_returns=self._factor_returns(connection, model_id, factors, start, end),
                exposures=self._blocks(
                    connection, model_exposures, model_id, factors, _range(model_exposures, start, end)
                ),
                residuals=self._blocks(
                    connection, model_residuals, model_id, [RESIDUAL], _range(model_residuals, start, end)
                ),
                diagnostics=diagnostics,
                factors=factors,
                sectors=tuple(meta["sectors"]),
                styles=tuple(meta["styles"]),
                factor_covariance=self._covariance(connection, model_id, meta, _range(model_covariances, start, end)),
                specific_risk=specific,
                config=meta["config"],
                notes=meta.get("build", {}),
            )

    def snapshot(self, model_id: str, date: datetime.date | str | None = None) -> RiskModelSnapshot:
        """The model as of the close of ``date`` (default: the last of :meth:`model_dates`), in daily units:
        :func:`factor_engine.portfolio.snapshot.snapshot_at` on the model, reading only the dates it needs.

        Raises NotFound for an unknown model and ModelError (naming the date and the nearest dates with a
        forecast) for a date without one.
        """
        with self._read() as connection:
            available = self._forecast_dates(connection, model_id)
            day = _snapshot_day(date, available)
            if day is None:  # no forecast at all, or an unparseable date: the library raises on either
                wanted = available.tail(1).to_list()
            elif (available == day).any():
                wanted = [day]
            else:  # the library's error names the nearest dates and the range: give it those dates
                before = available.filter(available < day)
                after = available.filter(available > day)
                wanted = [day, *before.head(1), *before.tail(1), *after.head(1), *after.tail(1)]
            model = self._dates_model(connection, model_id, sorted(set(wanted)))
        return snapshot_at(model, date)

    # ---- internals ----------------------------------------------------------------------------------------
    def _model_row(self, connection: sa.Connection, model_id: str) -> sa.RowMapping:
        row = connection.execute(
            sa.select(*_RUN_COLUMNS, model_runs.c.model_meta).where(model_runs.c.id == model_id, *_IS_MODEL)
        ).one_or_none()
        if row is None:
            raise NotFound(f"no model {model_id}")
        return row._mapping

    def _meta(self, connection: sa.Connection, model_id: str) -> dict[str, Any]:
        meta = connection.execute(
            sa.select(model_runs.c.model_meta).where(model_runs.c.id == model_id, *_IS_MODEL)
        ).scalar_one_or_none()
        if meta is None:
            raise NotFound(f"no model {model_id}")
        result: dict[str, Any] = meta
        return result

    def _forecast_dates(self, connection: sa.Connection, model_id: str) -> pl.Series:
        row = connection.execute(
            sa.select(model_runs.c.forecast_dates).where(model_runs.c.id == model_id, *_IS_MODEL)
        ).one_or_none()
        if row is None:
            raise NotFound(f"no model {model_id}")
        return decode_dates(row[0])

    def _state(self, connection: sa.Connection, model_id: str) -> dict[str, dict[str, np.ndarray]]:
        rows = connection.execute(
            sa.select(model_state.c.component, model_state.c.data)
            .where(model_state.c.model_id == model_id)
            .order_by(model_state.c.component)
        ).all()
        return {str(component): decode_state(bytes(blob)) for component, blob in rows}

    def _exposure_keys(self, connection: sa.Connection, model_id: str, since: datetime.date | None) -> pl.DataFrame:
        """``date, symbol`` of the stored exposure rows from ``since`` on (all when None), from the positions
        blobs only (the values are not read)."""
        where = [] if since is None else [model_exposures.c.date >= since]
        rows = connection.execute(
            sa.select(model_exposures.c.date, model_exposures.c.positions)
            .where(model_exposures.c.model_id == model_id, *where)
            .order_by(model_exposures.c.date)
        ).all()
        positions = [np.frombuffer(bytes(blob), dtype="<i4") for _, blob in rows]
        flat = np.concatenate(positions).astype(np.int64) if positions else np.zeros(0, dtype=np.int64)
        symbols = self._symbols(connection, model_id)
        if flat.size and int(flat.max()) >= symbols.len():  # the model gained symbols since it was cached
            symbols = self._symbols(connection, model_id, refresh=True)
        dates = pl.Series(DATE, [_date(day) for day, _ in rows], dtype=pl.Date)
        row_dates = dates.gather(np.repeat(np.arange(len(rows)), [block.size for block in positions]))
        return pl.DataFrame([row_dates, symbols.gather(flat).cast(pl.String).alias(SYMBOL)])

    def _symbols(self, connection: sa.Connection, model_id: str, *, refresh: bool = False) -> pl.Series:
        with self._symbol_lock:
            cached = None if refresh else self._symbol_cache.get(model_id)
        if cached is not None:
            return cached
        names = connection.execute(
            sa.select(model_symbols.c.symbol)
            .where(model_symbols.c.model_id == model_id)
            .order_by(model_symbols.c.position)
        ).scalars()
        symbols = pl.Series(SYMBOL, list(names), dtype=pl.String)
        with self._symbol_lock:
            if len(self._symbol_cache) >= _SYMBOL_CACHE_SIZE:
                self._symbol_cache.pop(next(iter(self._symbol_cache)))
            self._symbol_cache[model_id] = symbols
        return symbols

    def _blocks(
        self,
        connection: sa.Connection,
        table: sa.Table,
        model_id: str,
        columns: Sequence[str],
        where: Iterable[sa.ColumnElement[bool]],
    ) -> pl.DataFrame:
        rows = connection.execute(
            sa.select(table.c.date, table.c.positions, table.c.data)
            .where(table.c.model_id == model_id, *where)
            .order_by(table.c.date)
        ).all()
        blocks = [(_date(d), bytes(p), bytes(v)) for d, p, v in rows]
        symbols = self._symbols(connection, model_id) if rows else pl.Series(SYMBOL, [], dtype=pl.String)
        try:
            return decode_blocks(blocks, columns, symbols)  # type: ignore[arg-type]
        except pl.exceptions.OutOfBoundsError:  # the model gained symbols since the dictionary was cached
            return decode_blocks(blocks, columns, self._symbols(connection, model_id, refresh=True))  # type: ignore[arg-type]

    def _appended_symbols(self, connection: sa.Connection, model_id: str, extension: ModelExtension) -> pl.Series:
        """The model's symbol dictionary with the symbols first seen in ``extension`` added at its end (sorted
        among themselves), inserted into ``model_symbols``."""
        stored = self._symbols(connection, model_id, refresh=True)
        frames = [extension.exposures, extension.residuals]
        if extension.specific_risk is not None:
            frames.append(extension.specific_risk)
        seen = pl.concat([frame.select(pl.col(SYMBOL).cast(pl.String)) for frame in frames]).get_column(SYMBOL)
        new = sorted(set(seen.unique().to_list()) - set(stored.to_list()))
        rows = [(model_id, stored.len() + offset, name) for offset, name in enumerate(new)]
        self._bulk_insert(connection, model_symbols, rows)
        return pl.concat([stored, pl.Series(SYMBOL, new, dtype=pl.String)])

    def _check_after_last_date(
        self, connection: sa.Connection, table: sa.Table, model_id: str, frame: pl.DataFrame
    ) -> None:
        if frame.height == 0:
            return
        last = _date(
            connection.execute(sa.select(sa.func.max(table.c.date)).where(table.c.model_id == model_id)).scalar()
        )
        first_new = _date(frame.get_column(DATE).min())
        if last is not None and first_new is not None and first_new <= last:
            raise ModelError(
                f"the new {table.name.removeprefix('model_')} rows start on {first_new}, not after the model's "
                f"last date {last}: only dates after it can be appended"
            )

    def _factor_returns(
        self,
        connection: sa.Connection,
        model_id: str,
        factors: tuple[str, ...],
        start: datetime.date | None,
        end: datetime.date | None,
    ) -> pl.DataFrame:
        """``date`` + one Float64 column per factor (in ``factors`` order) pivoted from the long rows."""
        if self.dialect == "postgresql":
            long = self._long_factor_returns_by_copy(connection, model_id, start, end)
        else:
            table = model_factor_returns
            rows = connection.execute(
                sa.select(table.c.date, table.c.factor, table.c.value)
                .where(table.c.model_id == model_id, *_range(table, start, end))
                .order_by(table.c.date)
            ).all()
            long = pl.DataFrame([(_date(d), f, v) for d, f, v in rows], schema=_LONG_RETURNS, orient="row")
        if long.height == 0:
            return pl.DataFrame(schema={DATE: pl.Date(), **{name: pl.Float64() for name in factors}})
        wide = long.pivot(on="factor", index=DATE, values="value", maintain_order=True)
        return wide.select(pl.col(DATE), *(pl.col(name).cast(pl.Float64) for name in factors))

    def _long_factor_returns_by_copy(
        self,
        connection: sa.Connection,
        model_id: str,
        start: datetime.date | None,
        end: datetime.date | None,
    ) -> pl.DataFrame:
        """The long ``date, factor, value`` rows on PostgreSQL, streamed by ``COPY .. TO STDOUT`` as CSV and parsed
        by polars (floats print in their shortest exact form), 5× faster than fetching row objects."""
        conditions = [psql.SQL("model_id = {}").format(psql.Literal(model_id))]
        if start is not None:
            conditions.append(psql.SQL("date >= {}").format(psql.Literal(start)))
        if end is not None:
            conditions.append(psql.SQL("date <= {}").format(psql.Literal(end)))
        query = psql.SQL(
            "COPY (SELECT date, factor, value FROM model_factor_returns WHERE {} ORDER BY date) TO STDOUT (FORMAT CSV)"
        ).format(psql.SQL(" AND ").join(conditions))
        buffer = io.BytesIO()
        with driver_connection(connection).cursor() as cursor, cursor.copy(query) as copy:
            for block in copy:
                buffer.write(block)
        if buffer.tell() == 0:
            return pl.DataFrame(schema=_LONG_RETURNS)
        buffer.seek(0)
        return pl.read_csv(buffer, has_header=False, new_columns=list(_LONG_RETURNS), schema_overrides=_LONG_RETURNS)

    def _covariance(
        self,
        connection: sa.Connection,
        model_id: str,
        meta: Mapping[str, Any],
        where: Iterable[sa.ColumnElement[bool]],
    ) -> FactorCovariance | None:
        if not meta["has_covariance"]:
            return None
        factors = tuple(meta["factors"])
        k = len(factors)
        rows = connection.execute(
            sa.select(model_covariances.c.date, model_covariances.c.data)
            .where(model_covariances.c.model_id == model_id, *where)
            .order_by(model_covariances.c.date)
        ).all()
        values = np.stack([decode_matrix(bytes(blob), k) for _, blob in rows]) if rows else np.zeros((0, k, k))
        dates = pl.Series(DATE, [_date(d) for d, _ in rows], dtype=pl.Date)
        return FactorCovariance(dates=dates, factors=factors, values=values, horizon=int(meta["horizon"]))

    def _diagnostics(self, connection: sa.Connection, model_id: str) -> pl.DataFrame:
        blob = connection.execute(
            sa.select(model_diagnostics.c.data).where(model_diagnostics.c.model_id == model_id)
        ).scalar_one_or_none()
        if blob is None:
            raise NotFound(f"no model {model_id}")
        return pl.read_ipc(io.BytesIO(bytes(blob)))

    def _dates_model(self, connection: sa.Connection, model_id: str, dates: list[datetime.date]) -> RiskModel:
        """The exposures, covariance and specific risk of ``dates`` only (what snapshot_at reads)."""
        meta = self._meta(connection, model_id)
        factors = tuple(meta["factors"])

        def on_dates(table: sa.Table) -> list[sa.ColumnElement[bool]]:
            return [table.c.date.in_(dates)]

        specific = None
        if meta["has_specific_risk"]:
            specific = self._blocks(
                connection, model_specific_risk, model_id, [SPECIFIC_VOL], on_dates(model_specific_risk)
            )
        return RiskModel(
            factor_returns=pl.DataFrame(schema={DATE: pl.Date(), **{name: pl.Float64() for name in factors}}),
            exposures=self._blocks(connection, model_exposures, model_id, factors, on_dates(model_exposures)),
            residuals=pl.DataFrame(schema={DATE: pl.Date(), SYMBOL: pl.String(), RESIDUAL: pl.Float64()}),
            diagnostics=pl.DataFrame(schema={DATE: pl.Date()}),
            factors=factors,
            sectors=tuple(meta["sectors"]),
            styles=tuple(meta["styles"]),
            factor_covariance=self._covariance(connection, model_id, meta, on_dates(model_covariances)),
            specific_risk=specific,
            config=meta["config"],
            notes=meta.get("build", {}),
        )


class _EncodedModel:
    """A model turned into table rows, ready to insert."""

    def __init__(
        self, meta: dict[str, Any], forecast_dates: bytes | None, tables: list[tuple[sa.Table, list[tuple[Any, ...]]]]
    ) -> None:
        self.meta = meta
        self.forecast_dates = forecast_dates
        self.tables = tables


def _encode_model(model_id: str, model: RiskModel) -> _EncodedModel:
    """Rows of every model table, plus the metadata JSON and forecast dates of the run."""
    if not isinstance(model, RiskModel):
        raise TypeError(f"save_model expects a factor_engine.model.RiskModel, got {type(model).__name__}")
    factors = list(model.factors)
    symbol_frames = [model.exposures.select(SYMBOL), model.residuals.select(SYMBOL)]
    if model.specific_risk is not None:
        symbol_frames.append(model.specific_risk.select(SYMBOL))
    symbols = pl.concat(symbol_frames).get_column(SYMBOL).cast(pl.String).unique().sort()
    tables: list[tuple[sa.Table, list[tuple[Any, ...]]]] = [
        (model_symbols, [(model_id, position, name) for position, name in enumerate(symbols.to_list())])
    ]
    covariance = model.factor_covariance
    tables.extend(_encode_small_tables(model_id, model, tuple(factors)))
    tables.append((model_state, _state_rows(model_id, model.state)))
    for table, frame, columns in _blob_frames(model, tuple(factors)):
        blocks = encode_blocks(frame, columns, symbols)
        tables.append((table, [(model_id, b.date, b.positions, b.data) for b in blocks]))

    dates = model.factor_returns.get_column(DATE)
    available = None
    if covariance is not None and model.specific_risk is not None:
        available = encode_dates(forecast_dates(model))
    meta = {
        "factors": factors,
        "sectors": list(model.sectors),
        "styles": list(model.styles),
        "horizon": covariance.horizon if covariance is not None else 1,
        "has_covariance": covariance is not None,
        "has_specific_risk": model.specific_risk is not None,
        "config": model.config,
        "build": model.notes,
        "engine_version": __version__,
        "first_date": str(dates.min()) if dates.len() else None,
        "last_date": str(dates.max()) if dates.len() else None,
        "n_dates": dates.n_unique(),
        "n_assets": symbols.len(),
        "covariance_dates": covariance.dates.len() if covariance is not None else 0,
    }
    return _EncodedModel(meta, available, tables)


def _blob_frames(
    source: RiskModel | ModelExtension, factors: tuple[str, ...]
) -> list[tuple[sa.Table, pl.DataFrame, list[str]]]:
    """The per-date blob tables of a model or an extension: (table, frame, value columns)."""
    frames: list[tuple[sa.Table, pl.DataFrame, list[str]]] = [
        (model_exposures, source.exposures, list(factors)),
        (model_residuals, source.residuals, [RESIDUAL]),
    ]
    if source.specific_risk is not None:
        frames.append((model_specific_risk, source.specific_risk, [SPECIFIC_VOL]))
    return frames


def _encode_small_tables(
    model_id: str, source: RiskModel | ModelExtension, factors: tuple[str, ...]
) -> list[tuple[sa.Table, list[tuple[Any, ...]]]]:
    """Rows of the tables stored whole: the long factor returns, the covariance blobs (if any), the diagnostics."""
    long = source.factor_returns.unpivot(index=DATE, on=list(factors), variable_name="factor", value_name="value")
    tables: list[tuple[sa.Table, list[tuple[Any, ...]]]] = [
        (model_factor_returns, [(model_id, *row) for row in long.iter_rows()])
    ]
    covariance = source.factor_covariance
    if covariance is not None:
        if tuple(covariance.factors) != factors:
            raise ModelError(f"covariance factors {covariance.factors} differ from the model's {factors}")
        rows = [
            (model_id, day, encode_covariance(covariance.values[index]))
            for index, day in enumerate(covariance.dates.to_list())
        ]
        tables.append((model_covariances, rows))
    diagnostics = io.BytesIO()
    source.diagnostics.write_ipc(diagnostics, compression="uncompressed")
    tables.append((model_diagnostics, [(model_id, diagnostics.getvalue())]))
    return tables


def _extended_meta(
    meta: Mapping[str, Any], extension: ModelExtension, n_assets: int, now: datetime.datetime
) -> dict[str, Any]:
    """The run's ``model_meta`` after ``extension``: the date range, counts and engine version updated, the
    build notes replaced when the extension has some, ``updated_at`` (UTC, ISO) set."""
    dates = extension.factor_returns.get_column(DATE)
    covariance = extension.factor_covariance
    return {
        **meta,
        "build": meta.get("build", {}) if extension.notes is None else extension.notes,
        "engine_version": __version__,
        "first_date": str(dates.min()) if dates.len() else None,
        "last_date": str(dates.max()) if dates.len() else None,
        "n_dates": dates.n_unique(),
        "n_assets": n_assets,
        "covariance_dates": covariance.dates.len() if covariance is not None else 0,
        "updated_at": now.isoformat(timespec="seconds"),
    }


def _state_rows(model_id: str, state: Mapping[str, Mapping[str, np.ndarray]] | None) -> list[tuple[Any, ...]]:
    """Rows of ``model_state``: one ``.npz`` blob per component of ``state`` (None: none)."""
    rows: list[tuple[Any, ...]] = []
    for component, arrays in sorted((state or {}).items()):
        if not component or len(component) > 64:
            raise ValueError(f"state component name {component!r} must have 1 to 64 characters")
        rows.append((model_id, component, encode_state(arrays)))
    return rows


def _update_meta(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The stored model's metadata in the shape of a model folder's ``model.json`` (what an update reads)."""
    return {
        "factors": list(stored["factors"]),
        "sectors": list(stored["sectors"]),
        "styles": list(stored["styles"]),
        "date_range": [stored["first_date"], stored["last_date"]],
        "covariance_horizon": stored["horizon"] if stored["has_covariance"] else None,
        "config": stored["config"],
        "build": stored.get("build", {}),
    }


def _extended_forecast_dates(stored: bytes | None, extension: ModelExtension, meta: Mapping[str, Any]) -> bytes | None:
    """The stored forecast dates plus those of the new dates (the old dates' forecasts do not change)."""
    if extension.factor_covariance is None or extension.specific_risk is None:
        return stored
    new_dates = RiskModel(
        factor_returns=extension.factor_returns,
        exposures=extension.exposures,
        residuals=extension.residuals,
        diagnostics=extension.diagnostics,
        factors=tuple(meta["factors"]),
        sectors=tuple(meta["sectors"]),
        styles=tuple(meta["styles"]),
        factor_covariance=extension.factor_covariance,
        specific_risk=extension.specific_risk,
    )
    combined = pl.concat([decode_dates(stored), forecast_dates(new_dates)]).unique().sort()
    return encode_dates(combined)


def _timings(timings: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(timings, Mapping):
        raise TypeError(f"timings must be a mapping of stage name to seconds, got {type(timings).__name__}")
    return {str(stage): float(seconds) for stage, seconds in timings.items()}


def _range(table: sa.Table, start: datetime.date | None, end: datetime.date | None) -> list[sa.ColumnElement[bool]]:
    conditions = []
    if start is not None:
        conditions.append(table.c.date >= start)
    if end is not None:
        conditions.append(table.c.date <= end)
    return conditions


def _between(column: pl.Expr, start: datetime.date | None, end: datetime.date | None) -> pl.Expr:
    condition = pl.lit(True)
    if start is not None:
        condition &= column >= start
    if end is not None:
        condition &= column <= end
    return condition


def _snapshot_day(date: datetime.date | str | None, available: pl.Series) -> datetime.date | None:
    """The date a snapshot reads: ``date`` (parsed), else the last available one; None if neither exists."""
    if date is None:
        last: datetime.date | None = available[-1] if available.len() else None
        return last
    try:
        return as_date(date)
    except ModelError:
        return None  # snapshot_at raises its "not a date" error


def _run_record(row: sa.RowMapping) -> RunRecord:
    return RunRecord(
        id=row["id"],
        status=row["status"],
        request=dict(row["request"] or {}),
        stage=row["stage"],
        progress=float(row["progress"]),
        error=row["error"],
        timings={str(k): float(v) for k, v in (row["timings"] or {}).items()},
        created_at=_utc(row["created_at"]),  # type: ignore[arg-type]
        started_at=_utc(row["started_at"]),
        finished_at=_utc(row["finished_at"]),
        worker=row["worker"],
        lease_expires_at=_utc(row["lease_expires_at"]),
        kind=row["kind"],
        model_id=row["model_id"],
        updated_at=_utc(row["updated_at"]),
    )


def _model_summary(row: sa.RowMapping) -> ModelSummary:
    meta = row["model_meta"]
    return ModelSummary(
        id=row["id"],
        created_at=_utc(row["created_at"]),  # type: ignore[arg-type]
        factors=tuple(meta["factors"]),
        sectors=tuple(meta["sectors"]),
        styles=tuple(meta["styles"]),
        first_date=_date(meta["first_date"]),
        last_date=_date(meta["last_date"]),
        n_dates=int(meta["n_dates"]),
        n_assets=int(meta["n_assets"]),
        covariance_dates=int(meta["covariance_dates"]),
        horizon=int(meta["horizon"]),
        config=meta["config"],
        request=dict(row["request"] or {}),
        timings={str(k): float(v) for k, v in (row["timings"] or {}).items()},
        engine_version=str(meta["engine_version"]),
        build=dict(meta.get("build", {})),
        updated_at=_utc(row["updated_at"]),
    )
