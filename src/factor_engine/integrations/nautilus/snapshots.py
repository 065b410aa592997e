"""Where the NautilusTrader components get their risk model: a model folder or a model of the service's store,
and :class:`SnapshotBook`, the model's snapshot as of any trading date without look-ahead."""

from __future__ import annotations

import bisect
import datetime
from dataclasses import replace

import numpy as np
import polars as pl

from factor_engine.model import ModelError, RiskModel, load_model
from factor_engine.panel import DATE
from factor_engine.portfolio.analytics import RiskModelSnapshot
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at
from factor_engine.risk import FactorCovariance

__all__ = ["SnapshotBook", "load_risk_model"]


def load_risk_model(
    model_path: str | None = None, model_id: str | None = None, database_url: str | None = None
) -> RiskModel:
    """The model of a folder written by ``factor-engine build`` (``model_path``), or the built model
    ``model_id`` of the service's store at ``database_url`` (default: the service's database setting).
    Exactly one of ``model_path`` and ``model_id`` is needed."""
    if (model_path is None) == (model_id is None):
        raise ValueError("give exactly one of model_path (a model folder) and model_id (a model of the store)")
    if model_path is not None:
        return load_model(model_path)
    from factor_engine.storage import connect  # the store only when a model id asks for it

    store = connect(database_url, migrate=False)
    try:
        return store.load_model(str(model_id))
    finally:
        store.close()


class SnapshotBook:
    """The snapshots of one model, as of a trading date: the latest forecast date on or before it.

    A snapshot made at the close of ``d`` (:func:`factor_engine.portfolio.snapshot.snapshot_at`) only uses what
    was known then, so asking for the day of a bar never looks ahead. Each date's snapshot is computed once,
    from that date's rows alone, and shared by every component holding the book.
    """

    def __init__(self, model: RiskModel) -> None:
        self.model = model
        self.dates: list[datetime.date] = forecast_dates(model).to_list()
        if not self.dates:
            raise ModelError("the model has no date with a factor covariance forecast, specific risk and exposures")
        covariance = model.factor_covariance
        if covariance is None:  # forecast_dates has raised already; this narrows the type
            raise ModelError("the model has no factor covariance forecast")
        self._covariance = covariance
        self._covariance_row = {day: row for row, day in enumerate(covariance.dates.to_list())}
        self._exposures = _by_date(model.exposures)
        self._specific = _by_date(model.specific_risk if model.specific_risk is not None else pl.DataFrame())
        self._cache: dict[datetime.date, RiskModelSnapshot] = {}
        self._empty = replace(
            model,
            factor_returns=model.factor_returns.clear(),
            residuals=model.residuals.clear(),
            diagnostics=model.diagnostics.clear(),
        )

    def forecast_date(self, day: datetime.date) -> datetime.date | None:
        """The latest forecast date on or before ``day`` (None before the first forecast)."""
        position = bisect.bisect_right(self.dates, day)
        return self.dates[position - 1] if position else None

    def as_of(self, day: datetime.date) -> RiskModelSnapshot | None:
        """The snapshot of :meth:`forecast_date` (None before the first forecast)."""
        forecast_day = self.forecast_date(day)
        return None if forecast_day is None else self.at(forecast_day)

    def at(self, day: datetime.date) -> RiskModelSnapshot:
        """The snapshot made at the close of the forecast date ``day``, as ``snapshot_at(model, day)``."""
        snapshot = self._cache.get(day)
        if snapshot is None:
            snapshot = self._cache[day] = snapshot_at(self.model_at(day), day)
        return snapshot

    def model_at(self, day: datetime.date) -> RiskModel:
        """The model cut to the forecast date ``day``: its configuration, factors and notes with that date's
        exposures, specific risk and factor covariance only (no factor returns, residuals or diagnostics), what
        :func:`~factor_engine.live.LiveModel.from_model` needs for the next day's live session."""
        if day not in self._covariance_row:
            raise ModelError(f"{day} is not a forecast date of the model (see forecast_date)")
        row = self._covariance_row[day]
        covariance = self._covariance
        return replace(
            self._empty,
            exposures=self._exposures[day],
            specific_risk=self._specific[day],
            factor_covariance=FactorCovariance(
                dates=covariance.dates[row : row + 1],
                factors=covariance.factors,
                values=np.ascontiguousarray(covariance.values[row : row + 1]),
                horizon=covariance.horizon,
            ),
        )


def _by_date(frame: pl.DataFrame) -> dict[datetime.date, pl.DataFrame]:
    if frame.height == 0:
        return {}
    return {key[0]: part for key, part in frame.partition_by(DATE, as_dict=True, maintain_order=True).items()}
