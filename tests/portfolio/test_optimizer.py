"""Portfolio optimizer: every constraint holds on the result, optima match closed forms on the explicit Σ."""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pytest

from factor_engine.portfolio import optimizer
from factor_engine.portfolio.analytics import RiskModelSnapshot
from factor_engine.portfolio.optimizer import Constraints, OptimizationError, OptimizationResult, optimize

TOL = 1e-6
FACTORS = ("market", "value", "momentum", "size")


def make_snapshot(
    rng: np.random.Generator, n: int, k: int, factors: tuple[str, ...] | None = None, *, rank: int | None = None
) -> RiskModelSnapshot:
    loadings = rng.normal(scale=0.01, size=(k, rank if rank is not None else k + 2))
    exposures = rng.normal(size=(n, k))
    exposures[:, 0] = rng.uniform(0.5, 1.5, size=n)  # a market-like factor with positive betas
    return RiskModelSnapshot(
        factors=factors if factors is not None else tuple(f"factor_{j}" for j in range(k)),
        symbols=tuple(f"S{i:03d}" for i in range(n)),
        exposures=exposures,
        factor_covariance=loadings @ loadings.T,
        specific_vol=rng.uniform(0.005, 0.03, size=n),
    )


@pytest.fixture(scope="module")
def snapshot() -> RiskModelSnapshot:
    return make_snapshot(np.random.default_rng(7), 30, len(FACTORS), FACTORS)


@pytest.fixture(scope="module")
def expected_returns(snapshot: RiskModelSnapshot) -> dict[str, float]:
    values = np.random.default_rng(11).normal(scale=0.001, size=snapshot.n_assets)
    return dict(zip(snapshot.symbols, values.tolist(), strict=True))


def explicit_covariance(snapshot: RiskModelSnapshot) -> np.ndarray:
    b, f, s = snapshot.exposures, snapshot.factor_covariance, snapshot.specific_vol
    return b @ f @ b.T + np.diag(s**2)


def weight_vector(result: OptimizationResult) -> np.ndarray:
    return result.weights.get_column("weight").to_numpy()


def min_variance_closed_form(snapshot: RiskModelSnapshot) -> np.ndarray:
    ones = np.ones(snapshot.n_assets)
    solved = np.linalg.solve(explicit_covariance(snapshot), ones)
    return solved / (ones @ solved)


def test_budget(snapshot: RiskModelSnapshot) -> None:
    result = optimize(snapshot, constraints=Constraints(long_only=False, budget=0.5))
    assert abs(weight_vector(result).sum() - 0.5) <= TOL
    assert result.status in ("optimal", "optimal_inaccurate")
    assert result.solver in ("CLARABEL", "OSQP")


def test_long_only(snapshot: RiskModelSnapshot) -> None:
    assert min_variance_closed_form(snapshot).min() < -0.01  # the constraint binds
    weights = weight_vector(optimize(snapshot))
    assert weights.min() >= -TOL
    assert abs(weights.sum() - 1.0) <= TOL


def test_asset_bounds(snapshot: RiskModelSnapshot) -> None:
    lower, upper = -0.02, 0.06
    closed = min_variance_closed_form(snapshot)
    assert closed.min() < lower or closed.max() > upper  # the constraint binds
    weights = weight_vector(optimize(snapshot, constraints=Constraints(long_only=False, asset_bounds=(lower, upper))))
    assert weights.min() >= lower - TOL
    assert weights.max() <= upper + TOL
    assert abs(weights.sum() - 1.0) <= TOL


def test_gross_exposure(snapshot: RiskModelSnapshot) -> None:
    assert np.abs(min_variance_closed_form(snapshot)).sum() > 1.2  # the constraint binds
    weights = weight_vector(optimize(snapshot, constraints=Constraints(long_only=False, gross_exposure=1.2)))
    assert np.abs(weights).sum() <= 1.2 + TOL
    assert abs(weights.sum() - 1.0) <= TOL


def test_factor_bounds(snapshot: RiskModelSnapshot) -> None:
    bounds = {"market": (1.0, 1.0), "value": (-0.1, 0.1), "size": (0.2, 0.5)}
    result = optimize(snapshot, constraints=Constraints(long_only=False, factor_bounds=bounds))
    weights = weight_vector(result)
    exposures = snapshot.exposures.T @ weights
    for name, (lower, upper) in bounds.items():
        k = FACTORS.index(name)
        assert lower - TOL <= exposures[k] <= upper + TOL, name
    reported = dict(zip(result.factor_exposures["factor"], result.factor_exposures["exposure"], strict=True))
    np.testing.assert_allclose([reported[f] for f in FACTORS], exposures, atol=1e-12)


def test_factor_neutrality_without_benchmark(snapshot: RiskModelSnapshot) -> None:
    neutral = ["value", "momentum"]
    weights = weight_vector(optimize(snapshot, constraints=Constraints(long_only=False, neutral_factors=neutral)))
    exposures = snapshot.exposures.T @ weights
    for name in neutral:
        assert abs(exposures[FACTORS.index(name)]) <= TOL, name
    assert abs(weights.sum() - 1.0) <= TOL


def test_factor_neutrality_with_benchmark(snapshot: RiskModelSnapshot, expected_returns: dict[str, float]) -> None:
    benchmark = {symbol: 1.0 / snapshot.n_assets for symbol in snapshot.symbols}
    neutral = ["market", "value"]
    result = optimize(
        snapshot,
        objective="mean_variance",
        expected_returns=expected_returns,
        risk_aversion=5.0,
        constraints=Constraints(neutral_factors=neutral, benchmark=benchmark),
    )
    active = weight_vector(result) - np.full(snapshot.n_assets, 1.0 / snapshot.n_assets)
    assert np.abs(active).sum() > 0.1  # the optimum moved away from the benchmark
    active_exposures = snapshot.exposures.T @ active
    for name in neutral:
        assert abs(active_exposures[FACTORS.index(name)]) <= TOL, name
    covariance = explicit_covariance(snapshot)
    assert result.tracking_error is not None
    assert result.tracking_error == pytest.approx(np.sqrt(active @ covariance @ active), rel=1e-9)


def test_turnover(snapshot: RiskModelSnapshot) -> None:
    current = np.full(snapshot.n_assets, 1.0 / snapshot.n_assets)
    unconstrained = weight_vector(optimize(snapshot))
    assert np.abs(unconstrained - current).sum() > 0.2  # the constraint binds
    weights = weight_vector(optimize(snapshot, constraints=Constraints(current=current, max_turnover=0.2)))
    assert np.abs(weights - current).sum() <= 0.2 + TOL
    assert weights.min() >= -TOL


def test_min_variance_matches_closed_form(snapshot: RiskModelSnapshot) -> None:
    result = optimize(snapshot, constraints=Constraints(long_only=False))
    expected = min_variance_closed_form(snapshot)
    np.testing.assert_allclose(weight_vector(result), expected, atol=TOL)
    variance = expected @ explicit_covariance(snapshot) @ expected
    assert result.risk == pytest.approx(np.sqrt(variance), rel=1e-6)
    assert result.objective_value == pytest.approx(variance, rel=1e-6)


def test_mean_variance_matches_closed_form(snapshot: RiskModelSnapshot, expected_returns: dict[str, float]) -> None:
    risk_aversion = 3.0
    result = optimize(
        snapshot,
        objective="mean_variance",
        expected_returns=expected_returns,
        risk_aversion=risk_aversion,
        constraints=Constraints(long_only=False),
    )
    # maximize μᵀw − λ wᵀΣw s.t. 1ᵀw = 1  ⇒  w = Σ⁻¹(μ − ν1) / 2λ with ν fixed by the budget.
    covariance = explicit_covariance(snapshot)
    mu = np.array([expected_returns[s] for s in snapshot.symbols])
    ones = np.ones(snapshot.n_assets)
    inv_mu, inv_ones = np.linalg.solve(covariance, mu), np.linalg.solve(covariance, ones)
    nu = (ones @ inv_mu - 2 * risk_aversion) / (ones @ inv_ones)
    expected = (inv_mu - nu * inv_ones) / (2 * risk_aversion)
    np.testing.assert_allclose(weight_vector(result), expected, atol=TOL)
    utility = mu @ expected - risk_aversion * expected @ covariance @ expected
    assert result.objective_value == pytest.approx(utility, rel=1e-6)


def test_singular_factor_covariance_matches_closed_form() -> None:
    singular = make_snapshot(np.random.default_rng(13), 30, 5, rank=2)  # F has three zero eigenvalues
    result = optimize(singular, constraints=Constraints(long_only=False))
    np.testing.assert_allclose(weight_vector(result), min_variance_closed_form(singular), atol=TOL)


def test_permuting_symbols_permutes_the_solution(
    snapshot: RiskModelSnapshot, expected_returns: dict[str, float]
) -> None:
    order = np.random.default_rng(17).permutation(snapshot.n_assets)
    permuted = RiskModelSnapshot(
        factors=snapshot.factors,
        symbols=tuple(snapshot.symbols[i] for i in order),
        exposures=snapshot.exposures[order],
        factor_covariance=snapshot.factor_covariance,
        specific_vol=snapshot.specific_vol[order],
    )
    frame = pl.DataFrame({"symbol": list(expected_returns), "expected_return": list(expected_returns.values())})
    constraints = Constraints(asset_bounds=(0.0, 0.1), factor_bounds={"value": (-0.2, 0.2)})
    results = [
        optimize(model, objective="mean_variance", expected_returns=frame, risk_aversion=2.0, constraints=constraints)
        for model in (snapshot, permuted)
    ]
    by_symbol = [dict(zip(r.weights["symbol"], r.weights["weight"], strict=True)) for r in results]
    np.testing.assert_allclose(
        [by_symbol[1][s] for s in snapshot.symbols], [by_symbol[0][s] for s in snapshot.symbols], atol=TOL
    )


def test_min_variance_with_benchmark_only_returns_benchmark(snapshot: RiskModelSnapshot) -> None:
    benchmark = np.random.default_rng(3).dirichlet(np.ones(snapshot.n_assets))
    result = optimize(snapshot, constraints=Constraints(benchmark=benchmark))
    np.testing.assert_allclose(weight_vector(result), benchmark, atol=TOL)
    assert result.tracking_error == pytest.approx(0.0, abs=1e-5)


def test_infeasible_names_the_conflicting_constraints(snapshot: RiskModelSnapshot) -> None:
    betas = snapshot.exposures[:, 0]
    lower, upper = float(betas.max()) + 0.5, float(betas.max()) + 1.0  # beyond any long-only fully invested mix
    constraints = Constraints(factor_bounds={"market": (lower, upper)})
    with pytest.raises(
        OptimizationError, match=r"infeasible: factor_bounds\['market'\] = .* conflicts with long_only and budget"
    ):
        optimize(snapshot, constraints=constraints)


def test_infeasible_turnover(snapshot: RiskModelSnapshot) -> None:
    current = np.full(snapshot.n_assets, 0.5 / snapshot.n_assets)  # half invested; reaching 1 needs turnover 0.5
    constraints = Constraints(current=current, max_turnover=0.1)
    with pytest.raises(OptimizationError, match=r"infeasible: max_turnover = 0.1 conflicts with budget = 1.0"):
        optimize(snapshot, constraints=constraints)


def test_unbounded_mean_variance_raises() -> None:
    rng = np.random.default_rng(5)
    degenerate = RiskModelSnapshot(
        factors=("market",),
        symbols=("A", "B", "C"),
        exposures=np.ones((3, 1)),
        factor_covariance=np.array([[1e-4]]),
        specific_vol=np.zeros(3),
    )
    with pytest.raises(OptimizationError, match="unbounded"):
        optimize(
            degenerate,
            objective="mean_variance",
            expected_returns=rng.normal(size=3),
            constraints=Constraints(long_only=False),
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"constraints": Constraints(factor_bounds={"quality": (0.0, 1.0)})}, r"factor_bounds names unknown factor"),
        ({"constraints": Constraints(factor_bounds={"market": (1.0, 0.5)})}, r"factor_bounds\['market'\] has lower"),
        (
            {"constraints": Constraints(factor_bounds={"market": (np.nan, 1.0)})},
            r"factor_bounds\['market'\] lower is NaN",
        ),
        ({"constraints": Constraints(neutral_factors=["quality"])}, r"neutral_factors names unknown factor"),
        ({"constraints": Constraints(asset_bounds=(0.1, 0.0))}, r"asset_bounds has lower 0.1 > upper 0.0"),
        ({"constraints": Constraints(gross_exposure=-1.0)}, r"gross_exposure must be >= 0"),
        ({"constraints": Constraints(budget=float("nan"))}, r"budget is NaN"),
        ({"constraints": Constraints(max_turnover=0.1)}, r"max_turnover needs current weights"),
        ({"constraints": Constraints(current={"S000": 1.0}, max_turnover=-0.1)}, r"max_turnover must be >= 0"),
        ({"constraints": Constraints(benchmark={"S000": np.nan})}, r"benchmark weights are not finite"),
        ({"objective": "mean_variance"}, r"needs expected_returns"),
        ({"objective": "max_return"}, r"objective must be"),
        ({"expected_returns": {"S000": 0.1}}, r"only used with objective='mean_variance'"),
        ({"objective": "mean_variance", "expected_returns": {"S000": 0.1}}, r"expected_returns lack 29"),
        ({"objective": "mean_variance", "expected_returns": np.zeros(30), "risk_aversion": 0.0}, r"risk_aversion"),
    ],
)
def test_malformed_inputs_raise_before_solving(
    snapshot: RiskModelSnapshot, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(OptimizationError, match=match):
        optimize(snapshot, **kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_large_long_only_min_variance_is_fast() -> None:
    snapshot = make_snapshot(np.random.default_rng(1), 3000, 15)
    started = time.perf_counter()
    result = optimize(snapshot)
    elapsed = time.perf_counter() - started
    weights = weight_vector(result)
    assert weights.min() >= -TOL
    assert abs(weights.sum() - 1.0) <= TOL
    assert elapsed < 10.0, f"3000×15 long-only min variance took {elapsed:.2f}s"


# ---------------------------------------------------------------------------------------- solver hygiene


@pytest.fixture
def solver_settings(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``solver_settings(solvers, **options)``: the solvers tried and their options, for one test."""

    def use(solvers: tuple[str, ...], **options: dict[str, Any]) -> None:
        monkeypatch.setattr(optimizer, "SOLVERS", solvers)
        monkeypatch.setattr(optimizer, "_SOLVER_OPTIONS", {**optimizer._SOLVER_OPTIONS, **options})

    return use


# Clarabel asked for more accuracy than float64 gives and stopped after a few iterations, having met only its
# reduced tolerances, reports "AlmostSolved": cvxpy's optimal_inaccurate (Clarabel 0.11 no longer stops
# "AlmostSolved" on the tolerances alone)
CLARABEL_TOO_TIGHT = {
    "max_iter": 11,
    "tol_gap_abs": 1e-16,
    "tol_gap_rel": 1e-16,
    "tol_feas": 1e-16,
    "tol_ktratio": 1e-16,
}


def _solve_recording(snapshot: RiskModelSnapshot, **kwargs: Any) -> tuple[OptimizationResult, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = optimize(snapshot, **kwargs)
    return result, [f"{w.category.__name__}: {w.message}" for w in caught]


def test_an_inaccurate_solution_is_reported_in_our_words_not_leaked(
    snapshot: RiskModelSnapshot, solver_settings: Callable[..., None]
) -> None:
    accurate = weight_vector(optimize(snapshot))
    solver_settings(("CLARABEL",), CLARABEL=CLARABEL_TOO_TIGHT)
    result, leaked = _solve_recording(snapshot)
    assert leaked == []  # cvxpy's "Solution may be inaccurate" did not escape
    assert (result.status, result.solver) == ("optimal_inaccurate", "CLARABEL")
    assert result.warnings == (
        "the solver (CLARABEL) reports its solution as inaccurate (status optimal_inaccurate) and no other installed "
        "solver gave an accurate one: it meets every constraint within 1e-06 but may not be optimal",
    )
    weights = weight_vector(result)
    assert weights.min() >= 0.0 and abs(weights.sum() - 1.0) <= TOL
    np.testing.assert_allclose(weights, accurate, atol=1e-6)  # still the optimum, to the solver's accuracy


def test_another_solver_replaces_an_inaccurate_solution(
    snapshot: RiskModelSnapshot, solver_settings: Callable[..., None]
) -> None:
    solver_settings(("CLARABEL", "OSQP"), CLARABEL=CLARABEL_TOO_TIGHT)
    result, leaked = _solve_recording(snapshot)
    assert leaked == []
    assert (result.status, result.solver, result.warnings) == ("optimal", "OSQP", ())
    np.testing.assert_allclose(weight_vector(result), weight_vector(optimize(snapshot)), atol=1e-6)


def test_a_solution_breaking_the_constraints_is_an_error_naming_them(
    snapshot: RiskModelSnapshot, solver_settings: Callable[..., None]
) -> None:
    # OSQP told to stop at 1e-2 accuracy calls its answer optimal; it breaks the constraints by ~3e-4
    solver_settings(("OSQP",), OSQP={"max_iter": 25, "eps_abs": 1e-2, "eps_rel": 1e-2, "polishing": False})
    constraints = Constraints(factor_bounds={"market": (1.0, 1.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            OptimizationError,
            match=r"^the solver \(OSQP\) returned a solution \(status optimal\) that breaks factor_bounds\['market'\] "
            r"= \(1\.0, 1\.0\) \(by [0-9.e-]+\);.* budget = 1\.0 \(by [0-9.e-]+\), beyond the tolerance 1e-06: the "
            r"problem may be badly scaled or nearly infeasible; loosen or rescale the constraints$",
        ):
            optimize(snapshot, constraints=constraints)


def test_other_solver_warnings_are_carried_not_emitted(
    snapshot: RiskModelSnapshot, solver_settings: Callable[..., None]
) -> None:
    # osqp >= 1.0 warns that its option "polish" is deprecated (this module once passed it)
    solver_settings(("OSQP",), OSQP={**optimizer._SOLVER_OPTIONS["OSQP"], "polish": True})
    result, leaked = _solve_recording(snapshot)
    assert leaked == []
    assert result.warnings == (
        'a solver warning was caught (DeprecationWarning): "polish" is deprecated. Please use "polishing" instead.',
    )
    np.testing.assert_allclose(weight_vector(result), weight_vector(optimize(snapshot)), atol=1e-6)


@pytest.mark.parametrize("solvers", [("CLARABEL", "OSQP"), ("OSQP",)])
def test_no_warning_escapes_on_any_path(
    snapshot: RiskModelSnapshot, expected_returns: dict[str, float], solver_settings: Callable[..., None], solvers: Any
) -> None:
    solver_settings(solvers)
    betas = snapshot.exposures[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would fail the test
        assert optimize(snapshot).warnings == ()
        optimize(
            snapshot,
            objective="mean_variance",
            expected_returns=expected_returns,
            constraints=Constraints(long_only=False, gross_exposure=1.5, neutral_factors=["value"]),
        )
        with pytest.raises(OptimizationError, match="infeasible"):
            optimize(snapshot, constraints=Constraints(factor_bounds={"market": (betas.max() + 1, betas.max() + 2)}))


def test_dust_is_zeroed_and_the_rest_is_the_kkt_optimum(snapshot: RiskModelSnapshot) -> None:
    result = optimize(snapshot)
    weights = weight_vector(result)
    assert result.dust_zeroed > 0  # the long-only bound binds: the solver leaves noise on those assets
    assert not ((weights != 0) & (np.abs(weights) < optimizer.DUST_WEIGHT)).any()
    assert weights.min() == 0.0 and (weights == 0).sum() >= result.dust_zeroed
    # independent reference: the closed-form minimum variance on the held assets (KKT with the bound active)
    held = weights > 1e-6  # the solver's accuracy: an asset at its bound may keep ~1e-7 (not dust)
    sigma = explicit_covariance(snapshot)[np.ix_(held, held)]
    solved = np.linalg.solve(sigma, np.ones(held.sum()))
    np.testing.assert_allclose(weights[held], solved / solved.sum(), atol=1e-6)
    assert held.sum() < snapshot.n_assets - result.dust_zeroed + 1
    # zeroing moved the budget by at most (dust count) × DUST_WEIGHT, within the documented tolerance
    assert abs(weights.sum() - 1.0) <= result.dust_zeroed * optimizer.DUST_WEIGHT + 1e-9 <= optimizer.CONSTRAINT_TOL


def test_dust_that_carries_the_budget_is_kept_with_a_warning() -> None:
    # 300 assets capped at 9e-9 each and a budget of their sum: every weight is "dust", and zeroing them would
    # break the budget by 2.7e-6, more than the tolerance
    snapshot = make_snapshot(np.random.default_rng(2), 300, 3)
    constraints = Constraints(budget=300 * 9e-9, asset_bounds=(0.0, 9e-9))
    result, leaked = _solve_recording(snapshot, constraints=constraints)
    assert leaked == []
    weights = weight_vector(result)
    np.testing.assert_allclose(weights, 9e-9, rtol=1e-4)
    assert result.dust_zeroed == 0
    assert len(result.warnings) == 1
    assert re.fullmatch(
        r"300 weight\(s\) below 1e-08 in absolute value were kept: setting them to 0 would break budget = 2\.7e-06 "
        r"\(by 2\.7e-06\)",
        result.warnings[0],
    ), result.warnings


def test_percentage_benchmark_is_an_error_and_a_partial_one_a_warning(snapshot: RiskModelSnapshot) -> None:
    in_percent = dict.fromkeys(snapshot.symbols, 100.0 / snapshot.n_assets)
    with pytest.raises(
        OptimizationError,
        match=r"^benchmark weights look like percentages, not fractions of capital: they sum to 100 and 'S000' has "
        r"3\.33333 \(more than 150% of capital\)\. Weights are fractions \(0\.05 is 5 %\): divide percentages by "
        r"100, or set Constraints\(allow_unnormalized=True\) for a leveraged or long-short book$",
    ):
        optimize(snapshot, constraints=Constraints(benchmark=in_percent))
    with pytest.raises(
        OptimizationError, match=r"^current weights look like percentages.*they sum to 100 and 'S001' has 60"
    ):
        optimize(snapshot, constraints=Constraints(current={"S000": 40.0, "S001": 60.0}, max_turnover=1.0))
    half = {symbol: 0.5 / snapshot.n_assets for symbol in snapshot.symbols}
    result = optimize(snapshot, constraints=Constraints(benchmark=half))
    assert result.warnings == (
        "benchmark weights sum to 0.5, not 1 (tolerance 0.01): the figures are of these weights as given, not "
        "rescaled; scale them to sum to 1, or pass allow_unnormalized=True for a long-short, active or partly "
        "invested book",
    )
    # the opt-in: no check, the same optimum
    opted = optimize(snapshot, constraints=Constraints(benchmark=half, allow_unnormalized=True))
    assert opted.warnings == ()
    np.testing.assert_array_equal(weight_vector(opted), weight_vector(result))
