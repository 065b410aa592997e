"""One date's risk model out of a :class:`~factor_engine.model.RiskModel`, as a :class:`RiskModelSnapshot`.

A snapshot at ``date`` is the model as of that date's close, in *daily* units:

- ``B``: the exposures known at the close of ``date`` (``RiskModel.exposures`` rows of that date);
- ``F``: the factor covariance forecast made at that close, ``factor_covariance.at(date) / horizon`` (daily),
  over the factors that have a forecast that day: a factor without one yet (a sector that appeared less than
  ``min_periods`` dates ago) is left out of the snapshot, with its exposures;
- ``σ``: the specific volatility forecast made at that close (daily sd, fraction).

Assets: those with a finite ``specific_vol`` forecast on ``date`` *and* finite exposures to the market and
sector factors. An asset whose *style* exposure is missing (null or NaN, e.g. too short a history for
momentum) gets exposure 0 to that style — the cross-sectional mean of a standardized style — rather than
being dropped; an infinite exposure drops the asset.
"""

from __future__ import annotations

import datetime

import numpy as np
import polars as pl

from factor_engine.model import ModelError, RiskModel
from factor_engine.panel import DATE, SYMBOL
from factor_engine.portfolio.analytics import RiskModelSnapshot
from factor_engine.risk import FactorCovariance
from factor_engine.risk.covariance import forecast_mask

__all__ = ["as_date", "forecast_dates", "snapshot_at"]

SPECIFIC_VOL = "specific_vol"


def forecast_dates(model: RiskModel) -> pl.Series:
    """The sorted dates at whose close the model has a factor covariance forecast (for at least one factor),
    specific risk forecasts and exposures: the dates :func:`snapshot_at` accepts."""
    covariance, specific = _forecasts(model)
    finite = forecast_mask(covariance.values).any(axis=1)
    covariance_dates = covariance.dates.filter(pl.Series(finite)).alias(DATE)
    specific_dates = specific.lazy().filter(pl.col(SPECIFIC_VOL).is_finite()).select(pl.col(DATE).unique())
    exposure_dates = model.exposures.lazy().select(pl.col(DATE).unique())
    return (
        covariance_dates.to_frame()
        .lazy()
        .join(specific_dates, on=DATE, how="semi")
        .join(exposure_dates, on=DATE, how="semi")
        .sort(DATE)
        .collect()
        .get_column(DATE)
    )


def snapshot_at(model: RiskModel, date: datetime.date | str | None = None) -> RiskModelSnapshot:
    """The risk model as of the close of ``date``, in daily units (see the module docstring).

    Parameters
    ----------
    model: a built or loaded model with a factor covariance forecast and specific risk.
    date: a date of the model (``datetime.date`` or ``"YYYY-MM-DD"``); default: the last date having a
        finite covariance forecast, specific risk forecasts and exposures (see :func:`forecast_dates`).

    Raises
    ------
    ModelError: the model lacks covariance or specific risk, or ``date`` has no forecast; the message
        names the date and the nearest dates that have one.
    """
    covariance, specific = _forecasts(model)
    available = forecast_dates(model)
    if available.len() == 0:
        raise ModelError("the model has no date with a factor covariance forecast, specific risk and exposures")
    day: datetime.date = available[-1] if date is None else as_date(date)
    if date is not None and not (available == day).any():
        raise ModelError(f"no risk forecast for {day}: {_why_missing(model, day)}; {_nearest(available, day)}")

    matrix = covariance.at(day)
    with_forecast = forecast_mask(matrix)
    index = [i for i, factor in enumerate(covariance.factors) if with_forecast[i] and factor in model.factors]
    factors = [covariance.factors[i] for i in index]
    styles = [f for f in model.styles if f in factors]
    on_date = pl.col(DATE) == day
    frame = (
        model.exposures.lazy()
        .filter(on_date)
        .select(SYMBOL, pl.col(factors).cast(pl.Float64))
        .with_columns(pl.col(styles).fill_null(0.0).fill_nan(0.0))
        .join(
            specific.lazy().filter(on_date).select(SYMBOL, pl.col(SPECIFIC_VOL).cast(pl.Float64)),
            on=SYMBOL,
            how="inner",
        )
        .filter(pl.all_horizontal(pl.col([*factors, SPECIFIC_VOL]).is_finite().fill_null(False)))
        .sort(SYMBOL)
        .collect()
    )
    if frame.height == 0:
        raise ModelError(f"no asset has finite exposures and a specific risk forecast on {day}")
    return RiskModelSnapshot(
        factors=tuple(factors),
        symbols=tuple(frame.get_column(SYMBOL).cast(pl.String).to_list()),
        exposures=frame.select(factors).to_numpy(),
        factor_covariance=matrix[np.ix_(index, index)] / covariance.horizon,
        specific_vol=frame.get_column(SPECIFIC_VOL).to_numpy(),
    )


def _forecasts(model: RiskModel) -> tuple[FactorCovariance, pl.DataFrame]:
    if model.factor_covariance is None:
        raise ModelError("the model has no factor covariance forecast (no factor_covariance table)")
    if model.specific_risk is None:
        raise ModelError("the model has no specific risk forecast (no specific_risk table)")
    return model.factor_covariance, model.specific_risk


def as_date(date: datetime.date | str) -> datetime.date:
    """A ``datetime.date`` (or datetime, or ``"YYYY-MM-DD"`` string) as a date; ModelError naming a bad one."""
    if isinstance(date, datetime.datetime):
        return date.date()
    if isinstance(date, datetime.date):
        return date
    try:
        return datetime.date.fromisoformat(str(date))
    except ValueError:
        raise ModelError(f"not a date: {date!r} (use YYYY-MM-DD)") from None


def _why_missing(model: RiskModel, day: datetime.date) -> str:
    covariance, specific = _forecasts(model)
    if model.exposures.lazy().filter(pl.col(DATE) == day).select(pl.len()).collect().item() == 0:
        return "the model has no exposures on that date"
    if day not in covariance.dates.to_list() or not forecast_mask(covariance.at(day)).any():
        return "no factor covariance forecast (not enough history?)"
    if (
        specific.lazy()
        .filter((pl.col(DATE) == day) & pl.col(SPECIFIC_VOL).is_finite())
        .select(pl.len())
        .collect()
        .item()
        == 0
    ):
        return "no specific risk forecast"
    return "no forecast"


def _nearest(available: pl.Series, day: datetime.date) -> str:
    before = available.filter(available < day)
    after = available.filter(available > day)
    parts = []
    if before.len():
        parts.append(f"nearest before {before[-1]}")
    if after.len():
        parts.append(f"nearest after {after[0]}")
    return "available dates: " + ", ".join(parts) + f" (range {available[0]} → {available[-1]})"
