"""An optimization as plain data: :class:`OptimizeSpec`, the one translation from a mapping (a TOML table, a
JSON body, command-line options) to :func:`factor_engine.portfolio.optimize`.

The keys (every one optional):

==================== ======================================================================================
key                  meaning
==================== ======================================================================================
objective            ``"min-variance"`` (default: the least total risk ``wᵀΣw``; a benchmark then only
                     anchors ``neutral`` and ``max_tracking_error``), ``"min-tracking-error"`` (the least
                     active risk against ``benchmark``), ``"max-alpha"`` (the most ``alphaᵀh − λ hᵀΣh``,
                     with ``h = w − benchmark`` when there is one, else ``w``)
benchmark            benchmark weights, fractions of capital: ``{symbol: weight}`` or ``[{symbol, weight}]``
alpha                daily expected (active) returns, fractions: ``{symbol: alpha}`` or ``[{symbol, alpha}]``,
                     one for every symbol of the model on the date; only with ``"max-alpha"``
risk_aversion        ``λ > 0`` of ``"max-alpha"`` (default 1)
long_only            ``w ≥ 0`` (default false)
neutral              factor names with zero active exposure (zero exposure without a benchmark)
factor_bounds        ``{factor: [lower, upper]}`` bounds on the portfolio's exposure (``null`` for an open side)
max_weight           ``|w_n| ≤ max_weight`` for every asset (fraction of capital, > 0)
max_tracking_error   annualized tracking error against ``benchmark`` (fraction, daily sd × √252), ≥ 0
max_turnover         ``Σ |w_n − current_n| ≤ max_turnover`` (fraction of capital, ≥ 0); needs ``current``
current              current holdings, in the weights forms
allow_unnormalized   do not check ``benchmark`` and ``current`` for percentage-like weights (default false)
==================== ======================================================================================

The portfolio is always fully invested (``Σw = 1``). Malformed values raise :class:`OptimizationError` naming
the key (as ``names`` says, e.g. the command-line option it came from) and what is wrong, before any solve. An
infeasible set raises :class:`OptimizationError` naming, in these keys, the constraint whose removal restores
feasibility and those it conflicts with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from factor_engine.portfolio.analytics import TRADING_DAYS, RiskModelSnapshot
from factor_engine.portfolio.optimizer import Constraints, OptimizationError, OptimizationResult, optimize

__all__ = ["OBJECTIVES", "SPEC_KEYS", "OptimizeSpec"]

#: The objectives a spec names.
OBJECTIVES = ("min-variance", "min-tracking-error", "max-alpha")
#: Every key of a spec mapping.
SPEC_KEYS = (
    "objective",
    "benchmark",
    "alpha",
    "risk_aversion",
    "long_only",
    "neutral",
    "factor_bounds",
    "max_weight",
    "max_tracking_error",
    "max_turnover",
    "current",
    "allow_unnormalized",
)
_SHOWN = 5


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise OptimizationError(f"{name} must be true or false, not {value!r}")
    return value


def _number(value: object, name: str, *, open_ok: bool = False) -> float:
    """A finite number (``±inf`` too with ``open_ok``); booleans and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptimizationError(f"{name} must be a number, not {value!r}")
    number = float(value)
    if math.isnan(number) or (math.isinf(number) and not open_ok):
        raise OptimizationError(f"{name} must be a finite number, not {value!r}")
    return number


def _at_least(value: object, name: str, lowest: float, *, strict: bool = False) -> float:
    number = _number(value, name)
    if number < lowest or (strict and number == lowest):
        raise OptimizationError(f"{name} must be {'>' if strict else '>='} {lowest:g}, not {number:g}")
    return number


def _by_symbol(value: object, name: str, column: str) -> dict[str, float]:
    """``{symbol: number}`` from a mapping or a list of ``{"symbol": ..., column: ...}`` items."""
    if isinstance(value, Mapping):
        items = [(key, number) for key, number in value.items()]
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = []
        for position, item in enumerate(value):
            if not isinstance(item, Mapping) or set(item) != {"symbol", column}:
                raise OptimizationError(
                    f"{name}[{position}] must be {{'symbol': ..., '{column}': ...}}, not {item!r}"[:300]
                )
            items.append((item["symbol"], item[column]))
    else:
        raise OptimizationError(f"{name} must map symbols to {column}s, not {type(value).__name__}")
    mapping: dict[str, float] = {}
    duplicates: list[str] = []
    for symbol, number in items:
        if not isinstance(symbol, str) or not symbol:
            raise OptimizationError(f"{name}: a symbol must be non-empty text, not {symbol!r}")
        if symbol in mapping:
            duplicates.append(symbol)
        mapping[symbol] = _number(number, f"{name}[{symbol!r}]")
    if duplicates:
        raise OptimizationError(f"{name} name {len(duplicates)} symbol(s) more than once: {duplicates[:_SHOWN]}")
    if not mapping:
        raise OptimizationError(f"{name} are empty: give at least one symbol")
    return mapping


def _factor_bounds(value: object, name: str) -> dict[str, tuple[float, float]]:
    if not isinstance(value, Mapping):
        raise OptimizationError(f"{name} must map factor names to [lower, upper], not {type(value).__name__}")
    bounds: dict[str, tuple[float, float]] = {}
    for factor, pair in value.items():
        where = f"{name}[{factor!r}]"
        if not isinstance(factor, str) or not factor:
            raise OptimizationError(f"{name}: a factor name must be non-empty text, not {factor!r}")
        if not isinstance(pair, Sequence) or isinstance(pair, str | bytes) or len(pair) != 2:
            raise OptimizationError(f"{where} must be [lower, upper] (null for an open side), not {pair!r}"[:300])
        lower = -math.inf if pair[0] is None else _number(pair[0], f"{where} lower", open_ok=True)
        upper = math.inf if pair[1] is None else _number(pair[1], f"{where} upper", open_ok=True)
        if lower > upper:
            raise OptimizationError(f"{where} has lower {lower:g} > upper {upper:g}")
        if lower == -math.inf and upper == math.inf:
            raise OptimizationError(f"{where} bounds nothing: give a lower or an upper bound")
        bounds[factor] = (lower, upper)
    return bounds


def _names(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise OptimizationError(f"{name} must be a list of factor names, not {value!r}"[:300])
    for item in value:
        if not isinstance(item, str) or not item:
            raise OptimizationError(f"{name}: a factor name must be non-empty text, not {item!r}")
    return tuple(dict.fromkeys(value))


def _bound_text(value: float) -> str:
    return "null" if math.isinf(value) else f"{value:g}"


@dataclass(frozen=True)
class OptimizeSpec:
    """A validated optimization request (the keys of the module docstring; weights as ``{symbol: fraction}``).

    Build it with :meth:`from_mapping`; :meth:`run` solves it on a snapshot with :func:`optimize`.
    """

    objective: str = "min-variance"
    benchmark: dict[str, float] | None = None
    alpha: dict[str, float] | None = None
    risk_aversion: float = 1.0
    long_only: bool = False
    neutral: tuple[str, ...] = ()
    factor_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    max_weight: float | None = None
    max_tracking_error: float | None = None
    max_turnover: float | None = None
    current: dict[str, float] | None = None
    allow_unnormalized: bool = False

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], names: Mapping[str, str] | None = None) -> OptimizeSpec:
        """Validate a spec mapping (a key whose value is None counts as absent).

        Parameters
        ----------
        data: the keys of the module docstring.
        names: how messages name each key (default the key itself), e.g. ``{"max_weight": "--max-weight"}``.
        """
        if not isinstance(data, Mapping):
            raise OptimizationError(f"an optimization spec must be a table of keys, not {type(data).__name__}")
        shown = dict(names or {})

        def name(key: str) -> str:
            return shown.get(key, key)

        unknown = [str(key) for key in data if key not in SPEC_KEYS]
        if unknown:
            raise OptimizationError(f"unknown key(s) {unknown[:_SHOWN]}; the keys are {', '.join(SPEC_KEYS)}")
        given = {key: value for key, value in data.items() if value is not None}
        objective = given.get("objective", "min-variance")
        if not isinstance(objective, str) or objective.replace("_", "-") not in OBJECTIVES:
            raise OptimizationError(f"{name('objective')} must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
        objective = objective.replace("_", "-")
        spec = cls(
            objective=objective,
            benchmark=None if "benchmark" not in given else _by_symbol(given["benchmark"], name("benchmark"), "weight"),
            alpha=None if "alpha" not in given else _by_symbol(given["alpha"], name("alpha"), "alpha"),
            risk_aversion=_at_least(given.get("risk_aversion", 1.0), name("risk_aversion"), 0.0, strict=True),
            long_only=_bool(given.get("long_only", False), name("long_only")),
            neutral=_names(given.get("neutral", ()), name("neutral")),
            factor_bounds=_factor_bounds(given.get("factor_bounds", {}), name("factor_bounds")),
            max_weight=None
            if "max_weight" not in given
            else _at_least(given["max_weight"], name("max_weight"), 0.0, strict=True),
            max_tracking_error=None
            if "max_tracking_error" not in given
            else _at_least(given["max_tracking_error"], name("max_tracking_error"), 0.0),
            max_turnover=None
            if "max_turnover" not in given
            else _at_least(given["max_turnover"], name("max_turnover"), 0.0),
            current=None if "current" not in given else _by_symbol(given["current"], name("current"), "weight"),
            allow_unnormalized=_bool(given.get("allow_unnormalized", False), name("allow_unnormalized")),
        )
        needs = [
            (
                spec.objective == "min-tracking-error" and spec.benchmark is None,
                "objective",
                "min-tracking-error",
                "benchmark",
            ),
            (spec.objective == "max-alpha" and spec.alpha is None, "objective", "max-alpha", "alpha"),
            (spec.max_tracking_error is not None and spec.benchmark is None, "max_tracking_error", None, "benchmark"),
            (spec.max_turnover is not None and spec.current is None, "max_turnover", None, "current"),
        ]
        for missing, key, value, needed in needs:
            if missing:
                what = name(key) if value is None else f"{name(key)} {value}"
                raise OptimizationError(f"{what} needs {name(needed)}")
        if spec.alpha is not None and spec.objective != "max-alpha":
            raise OptimizationError(f"{name('alpha')} is used only by {name('objective')} max-alpha")
        if "risk_aversion" in given and spec.objective != "max-alpha":
            raise OptimizationError(f"{name('risk_aversion')} is used only by {name('objective')} max-alpha")
        return spec

    def as_dict(self) -> dict[str, Any]:
        """The spec as plain JSON/TOML-compatible data (open bounds as None), without the weight tables."""
        return {
            "objective": self.objective,
            "benchmark": self.benchmark is not None,
            "alpha": self.alpha is not None,
            "risk_aversion": self.risk_aversion if self.objective == "max-alpha" else None,
            "long_only": self.long_only,
            "neutral": list(self.neutral),
            "factor_bounds": {
                factor: [None if math.isinf(lower) else lower, None if math.isinf(upper) else upper]
                for factor, (lower, upper) in self.factor_bounds.items()
            },
            "max_weight": self.max_weight,
            "max_tracking_error": self.max_tracking_error,
            "max_turnover": self.max_turnover,
            "current": self.current is not None,
            "allow_unnormalized": self.allow_unnormalized,
        }

    def describe(self) -> list[str]:
        """One line per constraint and the objective, in the spec's words (for tables and reports)."""
        lines = [f"objective {self.objective}" + (f", risk aversion {self.risk_aversion:g}" if self.alpha else "")]
        lines.append("fully invested (weights sum to 1)")
        if self.benchmark is not None:
            lines.append(f"benchmark of {len(self.benchmark)} symbol(s)")
        if self.long_only:
            lines.append("long only")
        if self.neutral:
            lines.append(f"neutral to {', '.join(self.neutral)}" + (" (active)" if self.benchmark else ""))
        for factor, (lower, upper) in self.factor_bounds.items():
            lines.append(f"exposure to {factor} in [{_bound_text(lower)}, {_bound_text(upper)}]")
        if self.max_weight is not None:
            lines.append(f"|weight| ≤ {self.max_weight:g} per asset")
        if self.max_tracking_error is not None:
            lines.append(f"tracking error ≤ {self.max_tracking_error:g} annualized")
        if self.max_turnover is not None and self.current is not None:
            lines.append(f"turnover ≤ {self.max_turnover:g} from current holdings of {len(self.current)} symbol(s)")
        return lines

    def library_call(self) -> dict[str, Any]:
        """The keyword arguments of :func:`optimize` (after the snapshot) this spec stands for."""
        bounds = None if self.max_weight is None else (-self.max_weight, self.max_weight)
        tracking = None if self.max_tracking_error is None else self.max_tracking_error / math.sqrt(TRADING_DAYS)
        constraints = Constraints(
            long_only=self.long_only,
            budget=1.0,
            asset_bounds=bounds,
            factor_bounds=dict(self.factor_bounds),
            neutral_factors=self.neutral,
            benchmark=self.benchmark,
            current=self.current,
            max_turnover=self.max_turnover,
            max_tracking_error=tracking,
            allow_unnormalized=self.allow_unnormalized,
        )
        call: dict[str, Any] = {"constraints": constraints, "objective_on": "active"}
        if self.objective == "max-alpha":
            call |= {"objective": "mean_variance", "expected_returns": self.alpha, "risk_aversion": self.risk_aversion}
        else:
            call["objective"] = "min_variance"
            if self.objective == "min-variance":
                call["objective_on"] = "total"
        return call

    def run(self, snapshot: RiskModelSnapshot) -> OptimizationResult:
        """:func:`optimize` on ``snapshot``; an :class:`OptimizationError` is worded in this spec's keys."""
        call = self.library_call()
        try:
            return optimize(snapshot, **call)
        except OptimizationError as error:
            raise OptimizationError(self._in_spec_words(str(error), call["constraints"])) from None

    def _in_spec_words(self, message: str, constraints: Constraints) -> str:
        """The library's constraint labels and argument names in this spec's keys."""
        replacements = {
            "neutral_factors": "neutral",
            "expected_returns": "alpha",
            " (pass unknown='drop' to drop them)": "",
            "set Constraints(allow_unnormalized=True)": "set allow_unnormalized = true",
        }
        if constraints.asset_bounds is not None and self.max_weight is not None:
            replacements[f"asset_bounds = {constraints.asset_bounds!r}"] = f"max_weight = {self.max_weight:g}"
        if constraints.max_tracking_error is not None and self.max_tracking_error is not None:
            replacements[f"max_tracking_error = {constraints.max_tracking_error}"] = (
                f"max_tracking_error = {self.max_tracking_error:g} (annualized)"
            )
        replacements["budget = 1.0"] = "fully invested (budget = 1)"
        for library, ours in replacements.items():
            message = message.replace(library, ours)
        return message
