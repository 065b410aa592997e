"""POST /portfolio/optimize: an :class:`~factor_engine.portfolio.spec.OptimizeSpec` solved on a stored model's
snapshot (the same translation as ``factor-engine optimize``)."""

from __future__ import annotations

import threading

from factor_engine.portfolio import OptimizationError, decompose_risk, portfolio_exposures
from factor_engine.portfolio.analytics import TRADING_DAYS
from factor_engine.portfolio.spec import SPEC_KEYS, OptimizeSpec
from factor_engine.service.errors import InputError
from factor_engine.service.portfolios import _figures
from factor_engine.service.runtime import ServiceState
from factor_engine.service.schemas import FactorExposure, OptimizeRequest, OptimizeResponse, Weight

__all__ = ["optimize"]

# The optimizer records the warnings of cvxpy and the solvers with warnings.catch_warnings, which is not
# thread-safe: one optimization at a time per process (they take milliseconds to seconds).
_SOLVING = threading.Lock()
_OPT_IN = 'send "allow_unnormalized": true'


def optimize(state: ServiceState, request: OptimizeRequest) -> OptimizeResponse:
    """The optimized portfolio of ``request`` on its model date; 422 (InputError) for malformed or infeasible
    constraints, naming them; 404 for an unknown model."""
    entry = state.snapshots.get(state.store(), request.model_id, request.date)
    snapshot = entry.snapshot
    try:
        spec = OptimizeSpec.from_mapping(request.model_dump(include=set(SPEC_KEYS)))
        with _SOLVING:
            result = spec.run(snapshot)
    except OptimizationError as error:
        raise InputError(str(error).replace("set allow_unnormalized = true", _OPT_IN)) from None
    weights = result.weights
    # the optimized book may be long-short or leveraged: no percentage check on it
    daily = decompose_risk(snapshot, weights, allow_unnormalized=True)
    annualized = daily.annualized(TRADING_DAYS)
    daily_figures, annual_figures = _figures(daily), _figures(annualized)
    if result.tracking_error is not None:
        daily_figures.tracking_error = result.tracking_error
        annual_figures.tracking_error = result.tracking_error * TRADING_DAYS**0.5
    exposures = portfolio_exposures(snapshot, weights, spec.benchmark, allow_unnormalized=True)
    return OptimizeResponse(
        model_id=request.model_id,
        date=entry.date,
        objective=spec.objective,
        constraints=spec.describe(),
        status=result.status,
        solver=result.solver,
        solve_seconds=result.solve_seconds,
        weights=[Weight(symbol=symbol, weight=weight) for symbol, weight in weights.iter_rows() if weight != 0.0],
        periods_per_year=TRADING_DAYS,
        daily=daily_figures,
        annualized=annual_figures,
        exposures=[FactorExposure(**row) for row in exposures.iter_rows(named=True)],
        warnings=[warning.replace("set Constraints(allow_unnormalized=True)", _OPT_IN) for warning in result.warnings],
    )
