"""The plain records the store returns: ingest results, panel summaries, runs and model summaries."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IngestResult", "ModelSummary", "PanelExtent", "PanelSummary", "RunRecord", "RunStatus", "SectorSummary"]


class RunStatus:
    """The states of a run: queued → running → succeeded | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class IngestResult:
    """What one :meth:`Store.ingest_panel` call did.

    Attributes
    ----------
    rows: rows in the batch.
    inserted: rows new to the store.
    updated: rows that replaced an existing (date, symbol) row (same or different values).
    symbols: distinct symbols in the batch.
    first_date, last_date: the batch's date range.
    seconds: wall time of the call.
    """

    rows: int
    inserted: int
    updated: int
    symbols: int
    first_date: datetime.date
    last_date: datetime.date
    seconds: float


@dataclass(frozen=True)
class PanelSummary:
    """The stored panel: row and symbol counts, date range, and the value columns with a non-null value."""

    rows: int
    symbols: int
    first_date: datetime.date | None
    last_date: datetime.date | None
    columns: tuple[str, ...]


@dataclass(frozen=True)
class PanelExtent:
    """The size of a selection of stored panel rows, from aggregates (no row is loaded).

    Attributes
    ----------
    rows: rows selected.
    dates: distinct dates.
    most_assets: the most rows (assets) on one date.
    sectors: distinct non-null sector labels.
    first_date, last_date: the date range (None when no row is selected).
    columns: the value columns with at least one non-null value among the rows.
    """

    rows: int
    dates: int
    most_assets: int
    sectors: int
    first_date: datetime.date | None
    last_date: datetime.date | None
    columns: tuple[str, ...]


@dataclass(frozen=True)
class SectorSummary:
    """One sector label of the stored panel (labels are the user's data: any taxonomy).

    Attributes
    ----------
    sector: the label as stored.
    symbols: distinct symbols with at least one row under this label (a symbol that changed sector counts under
        each of its labels).
    rows: stored (date, symbol) rows with this label.
    first_date, last_date: the first and last date a row carries this label.
    """

    sector: str
    symbols: int
    rows: int
    first_date: datetime.date
    last_date: datetime.date


@dataclass(frozen=True)
class RunRecord:
    """A job: a model build (its id is also the model id) or a model update (``kind`` "update": it appends dates
    to the model ``model_id``).

    Attributes
    ----------
    id: uuid4 hex.
    status: "queued" | "running" | "succeeded" | "failed".
    request: the create request, or the update request (JSON).
    stage: current stage name.
    progress: 0..1.
    error: why the run failed.
    timings: seconds per stage.
    created_at, started_at, finished_at: UTC timestamps.
    worker: the service process holding the build while it is queued or running (None: no lease).
    lease_expires_at: when the worker's lease on it runs out unless renewed (UTC; None: no lease).
    kind: "build" or "update".
    model_id: the model an update extends (None for a build: its model's id is ``id``).
    updated_at: a build's model: when dates were last appended to it (UTC; None: never).
    """

    id: str
    status: str
    request: dict[str, Any]
    stage: str | None
    progress: float
    error: str | None
    timings: dict[str, float]
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    worker: str | None = None
    lease_expires_at: datetime.datetime | None = None
    kind: str = "build"
    model_id: str | None = None
    updated_at: datetime.datetime | None = None


@dataclass(frozen=True)
class ModelSummary:
    """A stored model (a succeeded run).

    Attributes
    ----------
    id: the run id.
    created_at: when the run was created (UTC).
    updated_at: when dates were last appended to the model by an update (UTC; None: never updated).
    factors, sectors, styles: factor names in model order.
    first_date, last_date: the factor-return date range.
    n_dates: dates with factor returns.
    n_assets: distinct symbols in the model.
    covariance_dates: dates with a factor covariance forecast.
    horizon: covariance horizon in trading days.
    config: the effective model configuration.
    request: the create request.
    timings: seconds per build stage.
    engine_version: factor_engine version that built the model.
    build: what the build did with the data (:attr:`factor_engine.model.RiskModel.notes`): market cap use,
        universe, sectors, styles used and left out, factors left out, warnings.
    """

    id: str
    created_at: datetime.datetime
    factors: tuple[str, ...]
    sectors: tuple[str, ...]
    styles: tuple[str, ...]
    first_date: datetime.date | None
    last_date: datetime.date | None
    n_dates: int
    n_assets: int
    covariance_dates: int
    horizon: int
    config: dict[str, Any]
    request: dict[str, Any]
    timings: dict[str, float]
    engine_version: str
    build: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime.datetime | None = None
