"""Shared cases of the optimize command and endpoint tests: one feasible case per constraint type (its spec keys,
the library call written out by hand, and an independent numpy check of the constraint on the explicit N×N Σ),
one infeasible case per type with the words its error must contain, and a small model with forecasts."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel, build_model
from factor_engine.panel import validate_panel
from factor_engine.portfolio import Constraints, OptimizationResult, RiskModelSnapshot, optimize
from factor_engine.synthetic import generate_market

#: the constraint types: one feasible and one infeasible case each
FEASIBLE = (
    "long_only",
    "neutral",
    "factor_bounds",
    "max_weight",
    "max_tracking_error",
    "max_turnover",
    "benchmark",
    "max_alpha",
)
TOL = 1e-6  # every constraint, fractions of capital or exposure units (daily sd for the tracking error)
SAME = 1e-8  # the command's and the endpoint's weights against the library's
ROOT_YEAR = math.sqrt(252)
# a short synthetic history that still has covariance and specific risk forecasts
MODEL_CONFIG: dict[str, Any] = {
    "styles": {"momentum": {"trailing_days": 20, "half_life": 10, "lag": 5}},
    "covariance": {"min_periods": 20},
    "adjustments": {"eigenfactor_simulations": 20},
    "specific_risk": {"min_periods": 10},
}


def small_model() -> RiskModel:
    """60 assets × 300 days (seed 7) built with MODEL_CONFIG: about 2 s."""
    panel = generate_market(60, 300, seed=7, start=datetime.date(2023, 1, 2)).panel
    return build_model(validate_panel(panel), ModelConfig.from_mapping(MODEL_CONFIG))


def sigma(snapshot: RiskModelSnapshot) -> np.ndarray:
    """The explicit daily asset covariance B F Bᵀ + diag(σ²), by hand."""
    b = snapshot.exposures
    return b @ snapshot.factor_covariance @ b.T + np.diag(snapshot.specific_vol**2)


def vector(snapshot: RiskModelSnapshot, weights: dict[str, float]) -> np.ndarray:
    return np.array([weights.get(symbol, 0.0) for symbol in snapshot.symbols])


def library_weights(result: OptimizationResult) -> np.ndarray:
    return result.weights.get_column("weight").to_numpy()


def by_symbol(snapshot: RiskModelSnapshot, rows: list[dict[str, Any]] | pl.DataFrame) -> np.ndarray:
    """Weights given as rows (or a frame) of nonzero ``symbol, weight`` as a vector in snapshot order."""
    frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows)
    mapping = dict(zip(frame.get_column("symbol").to_list(), frame.get_column("weight").to_list(), strict=True))
    assert len(mapping) == frame.height and set(mapping) <= set(snapshot.symbols)
    return vector(snapshot, mapping)


@dataclass(frozen=True)
class Case:
    """A feasible optimization: ``spec`` (the keys of OptimizeSpec), ``library`` (the same problem as a direct
    ``optimize`` call) and ``check`` (asserts the constraint on weights in snapshot order)."""

    name: str
    spec: dict[str, Any]
    library: Callable[[RiskModelSnapshot], OptimizationResult]
    check: Callable[[np.ndarray], None]


@dataclass(frozen=True)
class Infeasible:
    """An infeasible (or malformed) spec and the fragments its error message must contain."""

    name: str
    spec: dict[str, Any]
    words: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Inputs:
    """The weight tables of the cases (fractions of capital, by symbol) and two style factors of the model."""

    benchmark: dict[str, float]
    current: dict[str, float]
    alpha: dict[str, float]
    style: str
    other_style: str


def inputs(snapshot: RiskModelSnapshot, styles: tuple[str, ...]) -> Inputs:
    rng = np.random.default_rng(2024)
    symbols = list(snapshot.symbols)
    benchmark = dict(zip(symbols, rng.dirichlet(np.ones(len(symbols))).tolist(), strict=True))
    held = symbols[::3]
    current = {symbol: 1.0 / len(held) for symbol in held}
    alpha = dict(zip(symbols, rng.normal(scale=1e-3, size=len(symbols)).tolist(), strict=True))
    usable = [s for s in styles if s in snapshot.factors]
    return Inputs(benchmark, current, alpha, usable[0], usable[1])


def feasible_cases(snapshot: RiskModelSnapshot, given: Inputs) -> list[Case]:
    """One case per constraint type, each also fully invested (checked for every case by the tests)."""
    big_sigma = sigma(snapshot)
    exposures = snapshot.exposures
    k_style = snapshot.factors.index(given.style)
    k_other = snapshot.factors.index(given.other_style)
    bench = vector(snapshot, given.benchmark)
    current = vector(snapshot, given.current)
    alpha = vector(snapshot, given.alpha)

    def tracking_error(weights: np.ndarray) -> float:
        active = weights - bench
        return float(np.sqrt(active @ big_sigma @ active))

    # the free tracking error of the least-risk portfolio, to set a budget that binds
    free = library_weights(optimize(snapshot, constraints=Constraints(long_only=True)))
    te_budget = round(0.5 * tracking_error(free) * ROOT_YEAR, 4)  # annualized, in the spec

    def long_only(weights: np.ndarray) -> None:
        assert weights.min() >= -TOL

    def neutral(weights: np.ndarray) -> None:
        assert abs(exposures[:, k_style] @ weights) <= TOL

    def factor_bounds(weights: np.ndarray) -> None:
        exposure = exposures[:, k_style] @ weights
        assert 0.2 - TOL <= exposure <= 0.3 + TOL
        assert exposures[:, k_other] @ weights <= -0.1 + TOL

    def max_weight(weights: np.ndarray) -> None:
        assert np.abs(weights).max() <= 0.04 + TOL
        assert weights.min() >= -TOL

    def max_tracking_error(weights: np.ndarray) -> None:
        assert tracking_error(weights) <= te_budget / ROOT_YEAR + TOL
        assert tracking_error(weights) >= te_budget / ROOT_YEAR - 1e-5  # it binds: the least risk lies beyond

    def max_turnover(weights: np.ndarray) -> None:
        assert np.abs(weights - current).sum() <= 0.3 + TOL

    def benchmark(weights: np.ndarray) -> None:
        assert abs(exposures[:, k_style] @ (weights - bench)) <= TOL  # active neutrality
        assert weights.min() >= -TOL

    def max_alpha(weights: np.ndarray) -> None:
        assert weights.min() >= -TOL and np.abs(weights).max() <= 0.1 + TOL
        assert alpha @ weights > alpha @ np.full(len(weights), 1 / len(weights))  # it did tilt towards alpha

    return [
        Case(
            "long_only",
            {"long_only": True},
            lambda s: optimize(s, constraints=Constraints(long_only=True), objective_on="total"),
            long_only,
        ),
        Case(
            "neutral",
            {"neutral": [given.style]},
            lambda s: optimize(s, constraints=Constraints(long_only=False, neutral_factors=(given.style,))),
            neutral,
        ),
        Case(
            "factor_bounds",
            {"factor_bounds": {given.style: [0.2, 0.3], given.other_style: [None, -0.1]}},
            lambda s: optimize(
                s,
                constraints=Constraints(
                    long_only=False,
                    factor_bounds={given.style: (0.2, 0.3), given.other_style: (-math.inf, -0.1)},
                ),
            ),
            factor_bounds,
        ),
        Case(
            "max_weight",
            {"long_only": True, "max_weight": 0.04},
            lambda s: optimize(s, constraints=Constraints(long_only=True, asset_bounds=(-0.04, 0.04))),
            max_weight,
        ),
        Case(
            "max_tracking_error",
            {"long_only": True, "benchmark": given.benchmark, "max_tracking_error": te_budget},
            lambda s: optimize(
                s,
                constraints=Constraints(
                    long_only=True, benchmark=given.benchmark, max_tracking_error=te_budget / ROOT_YEAR
                ),
                objective_on="total",
            ),
            max_tracking_error,
        ),
        Case(
            "max_turnover",
            {"current": given.current, "max_turnover": 0.3},
            lambda s: optimize(s, constraints=Constraints(long_only=False, current=given.current, max_turnover=0.3)),
            max_turnover,
        ),
        Case(
            "benchmark",
            {
                "objective": "min-tracking-error",
                "benchmark": given.benchmark,
                "long_only": True,
                "neutral": [given.style],
            },
            lambda s: optimize(
                s,
                constraints=Constraints(long_only=True, benchmark=given.benchmark, neutral_factors=(given.style,)),
            ),
            benchmark,
        ),
        Case(
            "max_alpha",
            {
                "objective": "max-alpha",
                "alpha": given.alpha,
                "risk_aversion": 5.0,
                "long_only": True,
                "max_weight": 0.1,
            },
            lambda s: optimize(
                s,
                objective="mean_variance",
                expected_returns=given.alpha,
                risk_aversion=5.0,
                constraints=Constraints(long_only=True, asset_bounds=(-0.1, 0.1)),
            ),
            max_alpha,
        ),
    ]


def infeasible_cases(snapshot: RiskModelSnapshot, given: Inputs) -> list[Infeasible]:
    """One infeasible (or unusable) set per constraint type and the words its error must contain."""
    k_style = snapshot.factors.index(given.style)
    beyond = float(snapshot.exposures[:, k_style].max()) + 1.0  # no long-only fully invested mix reaches it
    first, second = snapshot.symbols[:2]
    short_benchmark = given.benchmark | {first: -0.02}  # a benchmark with a short position, summing to 1
    short_benchmark[second] = 1.0 - sum(v for k, v in short_benchmark.items() if k != second)
    half = {symbol: 0.5 / snapshot.n_assets for symbol in snapshot.symbols}
    b_style = float(snapshot.exposures[:, k_style] @ vector(snapshot, given.benchmark))
    return [
        Infeasible(
            "long_only",
            {"long_only": True, "factor_bounds": {given.style: [beyond, None]}},
            ("infeasible: ", f"factor_bounds['{given.style}']", "conflicts with long_only and fully invested"),
        ),
        Infeasible(
            "neutral",
            {"neutral": [given.style], "factor_bounds": {given.style: [0.5, 1.0]}},
            (
                "infeasible: ",
                f"factor_bounds['{given.style}'] = (0.5, 1.0) conflicts with neutral ['{given.style}']",
            ),
        ),
        Infeasible(
            "factor_bounds",
            {"factor_bounds": {"market": [0.5, 0.6]}},
            ("infeasible: factor_bounds['market'] = (0.5, 0.6) conflicts with fully invested (budget = 1)",),
        ),
        Infeasible(
            "max_weight",
            {"max_weight": 0.01},
            ("infeasible: max_weight = 0.01 conflicts with fully invested (budget = 1)",),
        ),
        Infeasible(
            "max_tracking_error",
            {
                "benchmark": given.benchmark,
                "max_tracking_error": 0.0,
                "factor_bounds": {given.style: [b_style + 0.1, b_style + 0.2]},
            },
            ("infeasible: ", f"factor_bounds['{given.style}']", "max_tracking_error = 0 (annualized)"),
        ),
        Infeasible(
            "max_turnover",
            {"current": half, "max_turnover": 0.1},
            ("infeasible: max_turnover = 0.1 conflicts with fully invested (budget = 1)",),
        ),
        Infeasible(
            "benchmark",
            {"benchmark": short_benchmark, "long_only": True, "max_tracking_error": 0.0, "allow_unnormalized": True},
            ("infeasible: ", "max_tracking_error = 0 (annualized)", "long_only"),
        ),
        Infeasible(
            "max_alpha",
            {"objective": "max-alpha", "alpha": {snapshot.symbols[0]: 0.001}},
            ("alpha lack", "model symbol(s)"),
        ),
    ]
