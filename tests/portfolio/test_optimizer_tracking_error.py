"""The optimizer's tracking-error budget and ``objective_on="total"`` against closed forms on the explicit Σ."""

from __future__ import annotations

import numpy as np
import pytest

from factor_engine.portfolio.analytics import RiskModelSnapshot
from factor_engine.portfolio.optimizer import Constraints, OptimizationError, optimize

TOL = 1e-6


@pytest.fixture(scope="module")
def snapshot() -> RiskModelSnapshot:
    rng = np.random.default_rng(21)
    n, k = 25, 3
    loadings = rng.normal(scale=0.01, size=(k, k + 2))
    exposures = rng.normal(size=(n, k))
    exposures[:, 0] = rng.uniform(0.5, 1.5, size=n)
    return RiskModelSnapshot(
        factors=("market", "value", "size"),
        symbols=tuple(f"S{i:02d}" for i in range(n)),
        exposures=exposures,
        factor_covariance=loadings @ loadings.T,
        specific_vol=rng.uniform(0.005, 0.03, size=n),
    )


@pytest.fixture(scope="module")
def benchmark(snapshot: RiskModelSnapshot) -> np.ndarray:
    return np.random.default_rng(4).dirichlet(np.ones(snapshot.n_assets))


def sigma(snapshot: RiskModelSnapshot) -> np.ndarray:
    b = snapshot.exposures
    return b @ snapshot.factor_covariance @ b.T + np.diag(snapshot.specific_vol**2)


def tracking_error(snapshot: RiskModelSnapshot, active: np.ndarray) -> float:
    return float(np.sqrt(active @ sigma(snapshot) @ active))


def min_variance(snapshot: RiskModelSnapshot) -> np.ndarray:
    solved = np.linalg.solve(sigma(snapshot), np.ones(snapshot.n_assets))
    return solved / solved.sum()


def test_total_objective_without_active_constraints_is_the_minimum_variance_portfolio(
    snapshot: RiskModelSnapshot, benchmark: np.ndarray
) -> None:
    result = optimize(snapshot, constraints=Constraints(long_only=False, benchmark=benchmark), objective_on="total")
    weights = result.weights.get_column("weight").to_numpy()
    np.testing.assert_allclose(weights, min_variance(snapshot), atol=TOL)
    assert result.tracking_error == pytest.approx(tracking_error(snapshot, weights - benchmark), rel=1e-9)
    assert result.objective_value == pytest.approx(result.risk**2, rel=1e-9)


def test_tracking_error_budget_binds_on_the_segment_to_the_minimum_variance_portfolio(
    snapshot: RiskModelSnapshot, benchmark: np.ndarray
) -> None:
    """min wᵀΣw s.t. Σw = 1, TE ≤ t: the KKT conditions put w on the segment b + α (w_mv − b), with α such
    that the tracking error equals t when the minimum-variance portfolio is farther than t."""
    step = min_variance(snapshot) - benchmark
    full = tracking_error(snapshot, step)
    limit = 0.4 * full
    constraints = Constraints(long_only=False, benchmark=benchmark, max_tracking_error=limit)
    result = optimize(snapshot, constraints=constraints, objective_on="total")
    weights = result.weights.get_column("weight").to_numpy()
    np.testing.assert_allclose(weights, benchmark + 0.4 * step, atol=TOL)
    assert tracking_error(snapshot, weights - benchmark) <= limit + TOL
    assert result.tracking_error == pytest.approx(limit, rel=1e-6)


def test_tracking_error_budget_on_an_active_objective_holds(snapshot: RiskModelSnapshot, benchmark: np.ndarray) -> None:
    alpha = dict(
        zip(snapshot.symbols, np.random.default_rng(9).normal(scale=0.002, size=snapshot.n_assets), strict=True)
    )
    free = optimize(
        snapshot,
        objective="mean_variance",
        expected_returns=alpha,
        risk_aversion=1.0,
        constraints=Constraints(benchmark=benchmark),
    )
    assert free.tracking_error is not None
    limit = 0.5 * free.tracking_error
    bound = optimize(
        snapshot,
        objective="mean_variance",
        expected_returns=alpha,
        risk_aversion=1.0,
        constraints=Constraints(benchmark=benchmark, max_tracking_error=limit),
    )
    weights = bound.weights.get_column("weight").to_numpy()
    assert tracking_error(snapshot, weights - benchmark) <= limit + TOL
    assert bound.tracking_error == pytest.approx(limit, rel=1e-5)  # the budget binds
    assert weights.min() >= -TOL and weights.sum() == pytest.approx(1.0, abs=TOL)


def test_tracking_error_budget_errors(snapshot: RiskModelSnapshot, benchmark: np.ndarray) -> None:
    with pytest.raises(OptimizationError, match="max_tracking_error needs benchmark weights"):
        optimize(snapshot, constraints=Constraints(max_tracking_error=0.01))
    with pytest.raises(OptimizationError, match="max_tracking_error must be finite and >= 0"):
        optimize(snapshot, constraints=Constraints(benchmark=benchmark, max_tracking_error=-1.0))
    with pytest.raises(OptimizationError, match="objective_on must be 'active' or 'total'"):
        optimize(snapshot, objective_on="both")  # type: ignore[arg-type]
    # a zero budget with a factor bound the benchmark breaks: the conflict is named
    market = float(snapshot.exposures[:, 0] @ benchmark)
    constraints = Constraints(
        benchmark=benchmark, max_tracking_error=0.0, factor_bounds={"market": (market + 0.1, market + 0.2)}
    )
    with pytest.raises(OptimizationError, match=r"infeasible: .*max_tracking_error = 0.0"):
        optimize(snapshot, constraints=constraints)
