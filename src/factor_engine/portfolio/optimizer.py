"""Factor-constrained portfolio optimization over a :class:`RiskModelSnapshot`, without the N×N covariance.

The asset covariance ``Σ = B F Bᵀ + diag(σ²)`` enters only in factored form: with an auxiliary variable
``y = Bᵀ h`` (K factor exposures) and ``F = L Lᵀ`` (from an eigen-decomposition, so a singular but positive
semi-definite ``F`` is fine), the variance of holdings ``h`` is ``‖Lᵀ y‖² + ‖σ ⊙ h‖²``. The problem has N + K
variables and O(NK) non-zeros, so thousands of assets solve in about a second.

Objectives (daily units, fractions of capital; ``h = w − benchmark`` with a benchmark, else ``h = w``):

- ``"min_variance"``: minimize ``hᵀ Σ h``.
- ``"mean_variance"``: maximize ``μᵀ h − λ hᵀ Σ h`` with daily expected returns ``μ`` and ``λ = risk_aversion``.

``objective_on="total"`` puts the objective on ``w`` itself even with a benchmark, which then only anchors the
active constraints (``neutral_factors``, ``max_tracking_error``): e.g. the least risky portfolio within a
tracking-error budget. The tracking-error constraint ``sqrt(hᵀ Σ h) ≤ max_tracking_error`` is a second-order cone
over the same factored form.

The problem is solved by cvxpy with Clarabel (OSQP as the fallback). Infeasible problems raise
:class:`OptimizationError` naming the first constraint group whose removal restores feasibility and the groups it
conflicts with; malformed constraints raise before any solve, naming the field.

Solver hygiene. No cvxpy or solver warning leaves :func:`optimize` (they are caught while it builds and solves
the problem, so do not run it from several threads at once). A solution the solver reports as inaccurate
(``optimal_inaccurate``) is used only when no other installed solver gives an accurate one, and only if it meets
every constraint within :data:`CONSTRAINT_TOL`; it then comes with a line in ``OptimizationResult.warnings``,
else the call raises :class:`OptimizationError` naming the constraints it breaks. Any other warning the solvers
emit is carried in ``warnings`` too.

Dust. Weights with ``|w| < DUST_WEIGHT`` (1e-8 of capital: solver noise, e.g. ``-5e-18`` on a long-only book)
are set to exactly 0. The constraints are checked again on the cleaned weights: zeroing changes the budget by
at most ``N × 1e-8``, and if that (or anything else) would break a constraint by more than
:data:`CONSTRAINT_TOL` the dust is kept and a warning says so. ``OptimizationResult.dust_zeroed`` counts them.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from factor_engine.portfolio.analytics import (
    ALLOW_UNNORMALIZED_HINT,
    FACTOR,
    WEIGHT,
    PortfolioError,
    RiskModelSnapshot,
    Weights,
    check_weights,
)

if TYPE_CHECKING:  # cvxpy is imported when an optimization runs: `import factor_engine` stays light
    import cvxpy as cp

__all__ = ["CONSTRAINT_TOL", "DUST_WEIGHT", "Constraints", "OptimizationError", "OptimizationResult", "optimize"]

SYMBOL = "symbol"
EXPECTED_RETURN = "expected_return"
Objective = Literal["min_variance", "mean_variance"]
ObjectiveOn = Literal["active", "total"]
# Solvers tried in order (those installed); the first that returns a usable status wins.
SOLVERS = ("CLARABEL", "OSQP")
# Tighter than the defaults: near-zero optima (e.g. tracking a benchmark) need a small absolute gap for the
# weights to be accurate to ~1e-6.
_SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "CLARABEL": {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-10, "tol_feas": 1e-10},
    "OSQP": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iter": 200_000},  # cvxpy turns OSQP's polishing on
}
_SOLVED = ("optimal", "optimal_inaccurate")
_INFEASIBLE = ("infeasible", "infeasible_inaccurate")
_UNBOUNDED = ("unbounded", "unbounded_inaccurate")
_ACCURATE = ("optimal", "infeasible", "unbounded")
_INACCURATE = ("optimal_inaccurate", "infeasible_inaccurate", "unbounded_inaccurate")
# What cvxpy warns for an inaccurate status: the status itself is handled (and reported) by optimize.
_CVXPY_INACCURATE = "Solution may be inaccurate."
#: How far (fractions of capital, or exposure units; times max(1, |bound|)) the weights may break a constraint.
CONSTRAINT_TOL = 1e-6
#: Weights with a smaller absolute value are solver noise and are set to 0 (fraction of capital).
DUST_WEIGHT = 1e-8
# Eigenvalues of F below this fraction of the largest are treated as zero.
_EIGEN_TOL = 1e-12


class OptimizationError(ValueError):
    """Malformed constraints, or an infeasible, unbounded or failed optimization; the message says which."""


@dataclass(frozen=True)
class Constraints:
    """Constraints on the weights ``w`` (fractions of capital, by symbol) of an optimized portfolio.

    Attributes
    ----------
    long_only: ``w_n ≥ 0`` for every asset.
    budget: ``Σ w = budget`` (1.0 fully invested, 0.0 dollar neutral); ``None`` for no budget constraint.
    gross_exposure: ``Σ |w_n| ≤ gross_exposure`` (≥ 0); ``None`` for no limit.
    asset_bounds: ``(lower, upper)`` with ``lower ≤ w_n ≤ upper`` for every asset (±inf allowed).
    factor_bounds: factor name → ``(lower, upper)`` bounds on the portfolio's exposure ``(Bᵀ w)_k`` (absolute,
        also with a benchmark), e.g. ``{"market": (1.0, 1.0)}``.
    neutral_factors: factor names with zero active exposure ``(Bᵀ (w − benchmark))_k = 0`` (``Bᵀ w = 0``
        without a benchmark).
    benchmark: benchmark weights (frame ``symbol, weight``, mapping or (N,) array); the objective is then on the
        active weights ``w − benchmark``.
    current: current holdings, in the same forms; needed by ``max_turnover``.
    max_turnover: ``Σ |w_n − current_n| ≤ max_turnover`` (≥ 0); ``None`` for no limit.
    max_tracking_error: ``sqrt((w − b)ᵀ Σ (w − b)) ≤ max_tracking_error`` (daily sd, fraction, ≥ 0) against
        ``benchmark`` ``b`` (needed); ``None`` for no limit.
    allow_unnormalized: False checks ``benchmark`` and ``current`` with
        :func:`factor_engine.portfolio.check_weights`: percentage-like weights (``|Σw|`` or some ``|w|`` above
        1.5) raise, a benchmark not summing to 1 adds a warning to the result. True turns the checks off.
    """

    long_only: bool = True
    budget: float | None = 1.0
    gross_exposure: float | None = None
    asset_bounds: tuple[float, float] | None = None
    factor_bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    neutral_factors: Sequence[str] = ()
    benchmark: Weights | None = None
    current: Weights | None = None
    max_turnover: float | None = None
    max_tracking_error: float | None = None
    allow_unnormalized: bool = False


@dataclass(frozen=True)
class OptimizationResult:
    """Result of :func:`optimize`.

    Attributes
    ----------
    weights: ``symbol, weight``, one row per model symbol in snapshot order (fractions of capital); dust
        (``|w| < DUST_WEIGHT``) is 0.
    status: the solver status reported by cvxpy (``"optimal"``, or ``"optimal_inaccurate"`` when no solver gave
        an accurate solution; ``warnings`` then says so).
    objective_value: the objective at the solution, daily: the variance ``hᵀΣh`` for ``"min_variance"``, the
        utility ``μᵀh − λ hᵀΣh`` for ``"mean_variance"`` (``h = w`` with ``objective_on="total"``).
    risk: daily standard deviation of the portfolio return, ``sqrt(wᵀΣw)``.
    tracking_error: daily standard deviation of the active return ``sqrt(hᵀΣh)`` with a benchmark, else None.
    factor_exposures: ``factor, exposure``: the portfolio's exposures ``Bᵀ w``.
    solver: name of the solver that produced the solution.
    solve_seconds: wall-clock seconds spent building and solving the problem.
    warnings: what the caller should know: an inaccurate solution, dust that had to be kept, a benchmark not
        summing to 1, warnings of the solvers (in our words; none of them is emitted).
    dust_zeroed: how many weights with ``0 < |w| < DUST_WEIGHT`` were set to 0.
    """

    weights: pl.DataFrame
    status: str
    objective_value: float
    risk: float
    tracking_error: float | None
    factor_exposures: pl.DataFrame
    solver: str
    solve_seconds: float
    warnings: tuple[str, ...] = ()
    dust_zeroed: int = 0


@dataclass(frozen=True)
class _Inputs:
    """Validated constraints as arrays in snapshot order."""

    factor_bounds: dict[int, tuple[float, float]]
    neutral: list[int]
    benchmark: np.ndarray | None
    current: np.ndarray | None
    expected_returns: np.ndarray | None
    warnings: tuple[str, ...]


def _finite(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptimizationError(f"{what} must be a number, not {value!r}") from None
    if math.isnan(number):
        raise OptimizationError(f"{what} is NaN")
    return number


def _bounds(pair: tuple[float, float], what: str) -> tuple[float, float]:
    if not isinstance(pair, Sequence) or len(pair) != 2:
        raise OptimizationError(f"{what} must be a (lower, upper) pair, not {pair!r}")
    lower, upper = _finite(pair[0], f"{what} lower"), _finite(pair[1], f"{what} upper")
    if lower > upper:
        raise OptimizationError(f"{what} has lower {lower} > upper {upper}")
    return lower, upper


def _factor_index(snapshot: RiskModelSnapshot, name: str, what: str) -> int:
    try:
        return snapshot.factors.index(name)
    except ValueError:
        raise OptimizationError(
            f"{what} names unknown factor {name!r}; the model has {list(snapshot.factors)}"
        ) from None


def _weights(snapshot: RiskModelSnapshot, weights: Weights, what: str) -> np.ndarray:
    try:
        return snapshot.align_weights(weights, what=what)
    except PortfolioError as error:
        raise OptimizationError(str(error)) from None


def _checked(vector: np.ndarray, snapshot: RiskModelSnapshot, what: str, allow_unnormalized: bool) -> tuple[str, ...]:
    """:func:`check_weights` of an aligned vector, raising OptimizationError for percentage-like weights."""
    try:
        return check_weights(vector, what=what, symbols=snapshot.symbols, allow_unnormalized=allow_unnormalized)
    except PortfolioError as error:
        raise OptimizationError(
            str(error).replace(ALLOW_UNNORMALIZED_HINT, "set Constraints(allow_unnormalized=True)")
        ) from None


def _expected_returns(snapshot: RiskModelSnapshot, expected_returns: object) -> np.ndarray:
    if isinstance(expected_returns, pl.DataFrame):
        if not {SYMBOL, EXPECTED_RETURN} <= set(expected_returns.columns):
            raise OptimizationError(
                f"expected_returns frame needs columns '{SYMBOL}', '{EXPECTED_RETURN}'; "
                f"it has {expected_returns.columns}"
            )
        expected_returns = dict(
            zip(
                expected_returns.get_column(SYMBOL).cast(pl.String).to_list(),
                expected_returns.get_column(EXPECTED_RETURN).cast(pl.Float64).fill_null(np.nan).to_list(),
                strict=True,
            )
        )
    if isinstance(expected_returns, Mapping):
        missing = [s for s in snapshot.symbols if s not in expected_returns]
        if missing:
            shown = ", ".join(repr(s) for s in missing[:5])
            raise OptimizationError(f"expected_returns lack {len(missing)} model symbol(s): {shown}")
    elif not isinstance(expected_returns, np.ndarray):
        raise OptimizationError(
            f"expected_returns must be a polars frame, a mapping or a numpy array, not {type(expected_returns)}"
        )
    return _weights(snapshot, expected_returns, "expected_returns")


def _validate(
    snapshot: RiskModelSnapshot,
    objective: str,
    expected_returns: object,
    risk_aversion: float,
    constraints: Constraints,
    objective_on: str = "active",
) -> _Inputs:
    if objective not in ("min_variance", "mean_variance"):
        raise OptimizationError(f"objective must be 'min_variance' or 'mean_variance', not {objective!r}")
    if objective_on not in ("active", "total"):
        raise OptimizationError(f"objective_on must be 'active' or 'total', not {objective_on!r}")
    mu: np.ndarray | None = None
    if objective == "mean_variance":
        if expected_returns is None:
            raise OptimizationError("objective='mean_variance' needs expected_returns")
        aversion = _finite(risk_aversion, "risk_aversion")
        if not aversion > 0 or math.isinf(aversion):
            raise OptimizationError(f"risk_aversion must be finite and > 0, not {risk_aversion}")
        mu = _expected_returns(snapshot, expected_returns)
    elif expected_returns is not None:
        raise OptimizationError("expected_returns are only used with objective='mean_variance'")
    c = constraints
    if c.budget is not None and math.isinf(_finite(c.budget, "budget")):
        raise OptimizationError(f"budget must be finite, not {c.budget}")
    if c.gross_exposure is not None:
        gross = _finite(c.gross_exposure, "gross_exposure")
        if gross < 0:
            raise OptimizationError(f"gross_exposure must be >= 0, not {gross}")
    if c.asset_bounds is not None:
        _bounds(c.asset_bounds, "asset_bounds")
    if not isinstance(c.factor_bounds, Mapping):
        raise OptimizationError(
            f"factor_bounds must be a mapping factor -> (lower, upper), not {type(c.factor_bounds)}"
        )
    factor_bounds = {
        _factor_index(snapshot, name, "factor_bounds"): _bounds(pair, f"factor_bounds[{name!r}]")
        for name, pair in c.factor_bounds.items()
    }
    if isinstance(c.neutral_factors, str):
        raise OptimizationError(
            f"neutral_factors must be a sequence of factor names, not the string {c.neutral_factors!r}"
        )
    neutral = [_factor_index(snapshot, name, "neutral_factors") for name in dict.fromkeys(c.neutral_factors)]
    if c.max_turnover is not None:
        turnover = _finite(c.max_turnover, "max_turnover")
        if turnover < 0:
            raise OptimizationError(f"max_turnover must be >= 0, not {turnover}")
        if c.current is None:
            raise OptimizationError("max_turnover needs current weights (constraints.current)")
    if c.max_tracking_error is not None:
        tracking = _finite(c.max_tracking_error, "max_tracking_error")
        if tracking < 0 or math.isinf(tracking):
            raise OptimizationError(f"max_tracking_error must be finite and >= 0, not {tracking}")
        if c.benchmark is None:
            raise OptimizationError("max_tracking_error needs benchmark weights (constraints.benchmark)")
    messages: tuple[str, ...] = ()
    benchmark = None
    if c.benchmark is not None:
        benchmark = _weights(snapshot, c.benchmark, "benchmark weights")
        messages += _checked(benchmark, snapshot, "benchmark weights", c.allow_unnormalized)
    current = None
    if c.current is not None:
        current = _weights(snapshot, c.current, "current weights")
        _checked(current, snapshot, "current weights", c.allow_unnormalized)  # holdings may be partly invested
    return _Inputs(factor_bounds, neutral, benchmark, current, mu, messages)


def _factor_root(covariance: np.ndarray) -> np.ndarray:
    """``L`` (K×r) with ``F = L Lᵀ``, dropping the null space of a positive semi-definite ``F``."""
    if covariance.shape[0] == 0:
        return np.zeros((0, 0))
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    keep = eigenvalues > _EIGEN_TOL * max(float(eigenvalues[-1]), 0.0)
    return eigenvectors[:, keep] * np.sqrt(eigenvalues[keep])


def _describe(value: object) -> str:
    return repr(value) if isinstance(value, tuple) else f"{value}"


@dataclass(frozen=True)
class _Group:
    """A constraint group: its label, its cvxpy constraints and how far given weights break it (≥ 0, in the
    group's units), with the tolerance ``CONSTRAINT_TOL × scale``."""

    label: str
    constraints: list[Any]
    excess: Callable[[np.ndarray], float]
    scale: float = 1.0

    def broken_by(self, weights: np.ndarray) -> float | None:
        """How far ``weights`` break the group beyond its tolerance, else None."""
        excess = float(self.excess(weights))
        return excess if not excess <= CONSTRAINT_TOL * self.scale else None


def _scale(*bounds: float) -> float:
    return max([1.0, *(abs(b) for b in bounds if math.isfinite(b))])


def _tracking_error(snapshot: RiskModelSnapshot, root: np.ndarray, active: np.ndarray) -> float:
    """``sqrt(hᵀ Σ h)`` of active weights ``h`` with ``F = L Lᵀ`` (daily sd)."""
    factor_part = root.T @ (snapshot.exposures.T @ active) if root.shape[1] else np.zeros(0)
    return float(np.sqrt(factor_part @ factor_part + np.sum((snapshot.specific_vol * active) ** 2)))


def _constraint_groups(
    snapshot: RiskModelSnapshot,
    constraints: Constraints,
    inputs: _Inputs,
    w: cp.Variable,
    y: cp.Variable,
    root: np.ndarray,
    scale: float,
) -> list[_Group]:
    """Constraint groups, most specific first (the order in which infeasibility is diagnosed). ``root`` is
    ``L`` with ``F = L Lᵀ``; ``scale`` is the objective's (1 / average asset variance), which also scales the
    tracking-error cone to O(1)."""
    import cvxpy as cp

    c = constraints
    exposures = snapshot.exposures
    groups: list[_Group] = []
    for k, (lower, upper) in inputs.factor_bounds.items():
        name = snapshot.factors[k]
        label = f"factor_bounds[{name!r}] = {_describe((lower, upper))}"
        cons = [y[k] == lower] if lower == upper else [y[k] >= lower, y[k] <= upper]

        def outside(weights: np.ndarray, k: int = k, lower: float = lower, upper: float = upper) -> float:
            x = float(exposures[:, k] @ weights)
            return max(lower - x, x - upper, 0.0)

        groups.append(_Group(label, cons, outside, _scale(lower, upper)))
    if inputs.neutral:
        index = np.array(inputs.neutral)
        target = np.zeros(len(index)) if inputs.benchmark is None else (exposures.T @ inputs.benchmark)[index]
        names = [snapshot.factors[k] for k in inputs.neutral]
        groups.append(
            _Group(
                f"neutral_factors {names}",
                [y[index] == target],
                lambda weights: float(np.abs(exposures[:, index].T @ weights - target).max()),
            )
        )
    bench = inputs.benchmark
    if c.max_tracking_error is not None and bench is not None:
        limit = float(c.max_tracking_error)
        unit = math.sqrt(scale)
        active = w - bench
        parts = [cp.multiply(unit * snapshot.specific_vol, active)]
        if root.shape[1]:
            parts.append((unit * root.T) @ (y - exposures.T @ bench))
        groups.append(
            _Group(
                f"max_tracking_error = {c.max_tracking_error}",
                [cp.norm(cp.hstack(parts), 2) <= unit * limit],
                lambda weights: max(_tracking_error(snapshot, root, weights - bench) - limit, 0.0),
                _scale(limit),
            )
        )
    current = inputs.current
    if c.max_turnover is not None and current is not None:
        turnover = float(c.max_turnover)
        groups.append(
            _Group(
                f"max_turnover = {c.max_turnover}",
                [cp.norm1(w - current) <= turnover],
                lambda weights: max(float(np.abs(weights - current).sum()) - turnover, 0.0),
                _scale(turnover),
            )
        )
    if c.gross_exposure is not None:
        gross = float(c.gross_exposure)
        groups.append(
            _Group(
                f"gross_exposure = {c.gross_exposure}",
                [cp.norm1(w) <= gross],
                lambda weights: max(float(np.abs(weights).sum()) - gross, 0.0),
                _scale(gross),
            )
        )
    if c.asset_bounds is not None:
        lower, upper = (float(b) for b in c.asset_bounds)
        bounds = ([w >= lower] if np.isfinite(lower) else []) + ([w <= upper] if np.isfinite(upper) else [])
        groups.append(
            _Group(
                f"asset_bounds = {_describe((lower, upper))}",
                bounds,
                lambda weights: max(lower - float(weights.min()), float(weights.max()) - upper, 0.0),
                _scale(lower, upper),
            )
        )
    if c.long_only:
        groups.append(_Group("long_only", [w >= 0], lambda weights: max(-float(weights.min()), 0.0)))
    if c.budget is not None:
        budget = float(c.budget)
        groups.append(
            _Group(
                f"budget = {c.budget}",
                [cp.sum(w) == budget],
                lambda weights: abs(float(weights.sum()) - budget),
                _scale(budget),
            )
        )
    return groups


def _broken(groups: Sequence[_Group], weights: np.ndarray) -> list[str]:
    """The groups ``weights`` break beyond the tolerance, each with by how much."""
    broken = []
    for group in groups:
        excess = group.broken_by(weights)
        if excess is not None:
            broken.append(f"{group.label} (by {excess:.3g})")
    return broken


@dataclass(frozen=True)
class _Outcome:
    """What :func:`_solve` settled on: the solver and its status (the problem's variables hold its solution)."""

    solver: str
    status: str


def _solve(problem: cp.Problem) -> _Outcome:
    """Solve with the installed solvers in order: the first accurate status (optimal, infeasible, unbounded)
    wins; an inaccurate one is kept (with its solution) in case no later solver does better."""
    import cvxpy as cp

    installed = set(cp.installed_solvers())
    candidates = [s for s in SOLVERS if s in installed]
    if not candidates:
        raise OptimizationError(f"no supported solver installed: need one of {list(SOLVERS)}")
    failures = []
    fallback: tuple[_Outcome, list[Any]] | None = None
    for solver in candidates:
        try:
            problem.solve(solver=solver, **_SOLVER_OPTIONS.get(solver, {}))
        except cp.error.SolverError as error:
            failures.append(f"{solver}: {error}")
            continue
        status = str(problem.status)
        if status in _ACCURATE:
            return _Outcome(solver, status)
        if status in _INACCURATE:
            if fallback is None:
                fallback = (_Outcome(solver, status), [variable.value for variable in problem.variables()])
            continue
        failures.append(f"{solver}: status {status}")
    if fallback is not None:
        outcome, values = fallback
        for variable, value in zip(problem.variables(), values, strict=True):
            variable.value = value
        return outcome
    raise OptimizationError(f"the solvers failed: {'; '.join(failures)}")


def _feasible(groups: Sequence[list[Any]], link: list[Any]) -> bool:
    import cvxpy as cp

    problem = cp.Problem(cp.Minimize(0), [*link, *(con for group in groups for con in group)])
    return _solve(problem).status in _SOLVED


def _diagnose(groups: list[_Group], link: list[Any]) -> str:
    """Name the first group whose removal makes the constraints feasible, and the groups it conflicts with."""
    labels = [group.label for group in groups]
    for i, group in enumerate(groups):
        others = groups[:i] + groups[i + 1 :]
        if not _feasible([g.constraints for g in others], link):
            continue
        partners = [
            other.label
            for j, other in enumerate(others)
            if _feasible([g.constraints for m, g in enumerate(others) if m != j] + [group.constraints], link)
        ]
        with_ = " and ".join(partners) if partners else "the other constraints"
        return f"infeasible: {group.label} conflicts with {with_}"
    return f"infeasible: no single constraint group's removal makes the problem feasible; groups: {'; '.join(labels)}"


def _solver_warnings(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """The warnings caught while building and solving, in our words (cvxpy's inaccuracy warning is left out: the
    status it repeats is reported by :func:`optimize` itself)."""
    messages: list[str] = []
    for item in caught:
        text = " ".join(str(item.message).split())
        if text.startswith(_CVXPY_INACCURATE):
            continue
        message = f"a solver warning was caught ({item.category.__name__}): {text}"
        if message not in messages:
            messages.append(message)
    return messages


def _clean_dust(weights: np.ndarray, groups: Sequence[_Group]) -> tuple[np.ndarray, int, str | None]:
    """``weights`` with the dust (``0 < |w| < DUST_WEIGHT``) set to 0, unless that breaks a constraint beyond
    the tolerance: then the weights unchanged and a warning."""
    dust = (weights != 0.0) & (np.abs(weights) < DUST_WEIGHT)
    count = int(dust.sum())
    if not count:
        return weights, 0, None
    cleaned = np.where(dust, 0.0, weights)
    broken = _broken(groups, cleaned)
    if broken:
        return (
            weights,
            0,
            f"{count} weight(s) below {DUST_WEIGHT:g} in absolute value were kept: setting them to 0 would break "
            f"{'; '.join(broken)}",
        )
    return cleaned, count, None


def optimize(
    snapshot: RiskModelSnapshot,
    *,
    objective: Objective = "min_variance",
    expected_returns: Mapping[str, float] | np.ndarray | pl.DataFrame | None = None,
    risk_aversion: float = 1.0,
    constraints: Constraints | None = None,
    objective_on: ObjectiveOn = "active",
) -> OptimizationResult:
    """Optimize a portfolio over a factor risk model without forming the N×N covariance.

    Parameters
    ----------
    snapshot: the date's risk model (daily units).
    objective: ``"min_variance"`` (minimize ``hᵀΣh``) or ``"mean_variance"`` (maximize ``μᵀh − λ hᵀΣh``), with
        ``h`` the active weights ``w − benchmark`` when ``constraints.benchmark`` is given, else ``w``.
    expected_returns: daily expected returns (fractions), by symbol: a mapping, a frame ``symbol,
        expected_return`` (every model symbol needed) or an (N,) array in snapshot order. Only for
        ``"mean_variance"``.
    risk_aversion: ``λ > 0`` of the mean-variance utility.
    constraints: :class:`Constraints`; default long-only and fully invested.
    objective_on: ``"active"`` (default): with a benchmark the objective is on ``w − benchmark``; ``"total"``:
        on ``w`` itself, the benchmark then anchoring only the active constraints (``neutral_factors``,
        ``max_tracking_error``) and the reported ``tracking_error``.

    Returns
    -------
    :class:`OptimizationResult`. Raises :class:`OptimizationError` for malformed inputs (before solving) and for
    infeasible (naming the conflicting constraints), unbounded or failed problems.
    """
    import cvxpy as cp

    constraints = Constraints() if constraints is None else constraints
    inputs = _validate(snapshot, objective, expected_returns, risk_aversion, constraints, objective_on)
    started = time.perf_counter()
    n, k = snapshot.n_assets, snapshot.n_factors
    exposures, specific_vol = snapshot.exposures, snapshot.specific_vol
    root = _factor_root(snapshot.factor_covariance)
    # Scale the objective to O(1) by the average asset variance so solver tolerances are meaningful.
    average_variance = (float(np.sum((exposures @ root) ** 2)) + float(specific_vol @ specific_vol)) / max(n, 1)
    scale = 1.0 / average_variance if average_variance > 0 else 1.0

    # every warning of cvxpy and the solvers, from building the problem to the last solve, is ours to report
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = cp.Variable(n, name="weights")
        y = cp.Variable(k, name="factor_exposures")
        link = [y == exposures.T @ w]
        bench = inputs.benchmark
        relative = bench is not None and objective_on == "active"
        active = w - bench if relative else w
        active_factor = y - exposures.T @ bench if relative else y
        variance = cp.sum_squares(cp.multiply(specific_vol, active))
        if root.shape[1]:
            variance = variance + cp.sum_squares(root.T @ active_factor)
        mu = inputs.expected_returns
        if mu is None:
            goal = cp.Minimize(scale * variance)
        else:
            goal = cp.Minimize(scale * (risk_aversion * variance - mu @ active))
        groups = _constraint_groups(snapshot, constraints, inputs, w, y, root, scale)
        problem = cp.Problem(goal, [*link, *(con for group in groups for con in group.constraints)])
        outcome = _solve(problem)
        if outcome.status in _INFEASIBLE:
            raise OptimizationError(_diagnose(groups, link))
    if outcome.status in _UNBOUNDED:
        raise OptimizationError(
            f"unbounded: the {objective} objective can grow without limit under the constraints "
            f"({'; '.join(group.label for group in groups) or 'none'}); add bounds such as gross_exposure"
        )
    solve_seconds = time.perf_counter() - started
    notes = [*inputs.warnings, *_solver_warnings(caught)]

    weights = np.asarray(w.value, dtype=np.float64)
    broken = _broken(groups, weights)
    if broken:
        accuracy = "an inaccurate" if outcome.status in _INACCURATE else "a"
        raise OptimizationError(
            f"the solver ({outcome.solver}) returned {accuracy} solution (status {outcome.status}) that breaks "
            f"{'; '.join(broken)}, beyond the tolerance {CONSTRAINT_TOL:g}: the problem may be badly scaled or "
            "nearly infeasible; loosen or rescale the constraints"
        )
    if outcome.status in _INACCURATE:
        notes.append(
            f"the solver ({outcome.solver}) reports its solution as inaccurate (status {outcome.status}) and no "
            f"other installed solver gave an accurate one: it meets every constraint within {CONSTRAINT_TOL:g} "
            "but may not be optimal"
        )
    weights, dust_zeroed, dust_note = _clean_dust(weights, groups)
    if dust_note is not None:
        notes.append(dust_note)
    x = exposures.T @ weights
    factor_part = root.T @ x if root.shape[1] else np.zeros(0)
    risk = float(np.sqrt(factor_part @ factor_part + np.sum((specific_vol * weights) ** 2)))
    tracking_error = None if bench is None else _tracking_error(snapshot, root, weights - bench)
    held = weights - bench if relative and bench is not None else weights
    active_variance = (tracking_error if relative and tracking_error is not None else risk) ** 2
    objective_value = active_variance if mu is None else float(mu @ held) - risk_aversion * active_variance
    return OptimizationResult(
        weights=pl.DataFrame([pl.Series(SYMBOL, snapshot.symbols, dtype=pl.String), pl.Series(WEIGHT, weights)]),
        status=outcome.status,
        objective_value=objective_value,
        risk=risk,
        tracking_error=tracking_error,
        factor_exposures=pl.DataFrame([pl.Series(FACTOR, snapshot.factors, dtype=pl.String), pl.Series("exposure", x)]),
        solver=outcome.solver,
        solve_seconds=solve_seconds,
        warnings=tuple(notes),
        dust_zeroed=dust_zeroed,
    )
