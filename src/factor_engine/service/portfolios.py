"""Portfolio exposures and risk decomposition on a stored model's snapshot (kept in an in-process LRU)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from factor_engine.portfolio import PortfolioError, check_weights, decompose_risk, portfolio_exposures
from factor_engine.portfolio.analytics import ALLOW_UNNORMALIZED_HINT, TRADING_DAYS, RiskDecomposition
from factor_engine.service.errors import InputError
from factor_engine.service.runtime import CachedSnapshot, ServiceState
from factor_engine.service.schemas import (
    AssetContribution,
    FactorContribution,
    FactorExposure,
    PortfolioExposuresResponse,
    PortfolioRequest,
    PortfolioRiskResponse,
    RiskFigures,
    Weights,
)

__all__ = ["exposures", "respond", "risk"]

_SHOWN = 5


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _as_mapping(weights: Weights, what: str) -> dict[str, float]:
    """``{"SYM": w}`` from either weight form; duplicate symbols and an empty portfolio are errors."""
    if isinstance(weights, dict):
        mapping = dict(weights)
    else:
        mapping = {}
        duplicates = []
        for item in weights:
            if item.symbol in mapping:
                duplicates.append(item.symbol)
            mapping[item.symbol] = item.weight
        if duplicates:
            raise InputError(f"{what} name {len(duplicates)} symbol(s) more than once: {duplicates[:_SHOWN]}")
    if not mapping:
        raise InputError(f"{what} are empty: give at least one symbol")
    return mapping


@dataclass(frozen=True)
class _Holdings:
    """Weights (and benchmark) as arrays in the snapshot's symbol order, the dropped symbols and the warnings of
    the weight checks."""

    portfolio: np.ndarray
    benchmark: np.ndarray | None
    dropped: list[str]
    warnings: list[str]


_OPT_IN = 'send "allow_unnormalized": true'


def _holdings(entry: CachedSnapshot, request: PortfolioRequest) -> _Holdings:
    """The request's weights aligned to the snapshot and checked (:func:`factor_engine.portfolio.check_weights`:
    percentage-like weights are a 422, a sum other than 1 a warning), unless ``allow_unnormalized``."""
    dropped: list[str] = []
    messages: list[str] = []
    arrays: list[np.ndarray | None] = []
    for what, weights in (("weights", request.weights), ("benchmark weights", request.benchmark)):
        if weights is None:
            arrays.append(None)
            continue
        mapping = _as_mapping(weights, what)
        index = entry.index
        try:  # the usual case, every symbol covered: one pass
            rows = [index[symbol] for symbol in mapping]
            values = list(mapping.values())
        except KeyError:
            unknown = [symbol for symbol in mapping if symbol not in index]
            if request.unknown == "raise":
                shown = ", ".join(repr(s) for s in unknown[:_SHOWN]) + (", ..." if len(unknown) > _SHOWN else "")
                raise PortfolioError(
                    f"{what} name {len(unknown)} symbol(s) the model does not cover on {entry.date}: {shown} "
                    '(send "unknown": "drop" to drop them)'
                ) from None
            dropped.extend(symbol for symbol in unknown if symbol not in dropped)
            rows = [index[symbol] for symbol in mapping if symbol in index]
            values = [weight for symbol, weight in mapping.items() if symbol in index]
        holdings = np.zeros(len(index))
        holdings[np.asarray(rows, dtype=np.intp)] = np.asarray(values, dtype=np.float64)
        try:
            messages += check_weights(
                holdings, what=what, symbols=entry.snapshot.symbols, allow_unnormalized=request.allow_unnormalized
            )
        except PortfolioError as error:
            raise PortfolioError(str(error).replace(ALLOW_UNNORMALIZED_HINT, _OPT_IN)) from None
        arrays.append(holdings)
    portfolio, benchmark = arrays
    if portfolio is None:  # pragma: no cover - weights are required by the schema
        raise InputError("weights are required")
    return _Holdings(portfolio, benchmark, dropped, [m.replace(ALLOW_UNNORMALIZED_HINT, _OPT_IN) for m in messages])


async def respond(
    state: ServiceState, request: PortfolioRequest, compute: Callable[[ServiceState, PortfolioRequest], BaseModel]
) -> Response:
    """``compute(state, request)`` as a JSON response: on the event loop when the snapshot is in memory (a
    millisecond of work: no threadpool hop, no GIL hand-offs), else in the threadpool (it loads from the store)."""
    if state.snapshots.holds(request.model_id, request.date):
        result = compute(state, request)
    else:
        result = await run_in_threadpool(compute, state, request)
    return Response(result.model_dump_json(), media_type="application/json")


def exposures(state: ServiceState, request: PortfolioRequest) -> PortfolioExposuresResponse:
    """Portfolio, benchmark and active exposures per factor on the model date."""
    entry = state.snapshots.get(state.store(), request.model_id, request.date)
    held = _holdings(entry, request)
    # checked above (with the service's wording): the library need not check again
    frame = portfolio_exposures(entry.snapshot, held.portfolio, held.benchmark, allow_unnormalized=True)
    return PortfolioExposuresResponse(
        model_id=request.model_id,
        date=entry.date,
        exposures=[FactorExposure(**row) for row in frame.iter_rows(named=True)],
        dropped_symbols=held.dropped,
        warnings=held.warnings,
    )


def _figures(decomposition: RiskDecomposition) -> RiskFigures:
    return RiskFigures(
        total_risk=decomposition.total_risk,
        factor_risk=decomposition.factor_risk,
        specific_risk=decomposition.specific_risk,
        tracking_error=decomposition.tracking_error,
        factor_variance_share=_finite(decomposition.factor_variance_share),
        specific_variance_share=_finite(decomposition.specific_variance_share),
    )


def risk(state: ServiceState, request: PortfolioRequest) -> PortfolioRiskResponse:
    """The risk decomposition (daily and annualized) of the portfolio, or of its active weights."""
    entry = state.snapshots.get(state.store(), request.model_id, request.date)
    held = _holdings(entry, request)
    daily = decompose_risk(entry.snapshot, held.portfolio, held.benchmark, allow_unnormalized=True)  # checked above
    annualized = daily.annualized(TRADING_DAYS)
    factors = [
        FactorContribution(
            factor=row["factor"],
            exposure=row["exposure"],
            volatility=row["volatility"],
            correlation=_finite(row["correlation"]),
            contribution=row["contribution"],
            variance_share=_finite(row["variance_share"]),
        )
        for row in daily.factor_contributions.iter_rows(named=True)
    ]
    assets = (
        daily.asset_contributions.filter(pl.col("weight") != 0.0)
        .sort(pl.col("contribution").abs(), descending=True, nulls_last=True)
        .head(request.top)
    )
    top = [
        AssetContribution(
            symbol=row["symbol"],
            weight=row["weight"],
            mcr=_finite(row["mcr"]),
            contribution=_finite(row["contribution"]),
            share=_finite(row["share"]),
        )
        for row in assets.iter_rows(named=True)
    ]
    return PortfolioRiskResponse(
        model_id=request.model_id,
        date=entry.date,
        periods_per_year=TRADING_DAYS,
        daily=_figures(daily),
        annualized=_figures(annualized),
        factor_contributions=factors,
        top_assets=top,
        dropped_symbols=held.dropped,
        warnings=held.warnings,
    )
