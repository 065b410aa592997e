"""Registry of style factors: the built-ins and the ones users add.

A style factor is a function from the long panel (a polars LazyFrame with at least ``date, symbol`` and the
columns it reads) to a frame ``date, symbol, <score>``. Register one with :func:`register_style`::

    from factor_engine import styles, xsection
    import polars as pl

    @styles.register_style("liquidity", score="liq_score", inputs=("volume", "market_cap"))
    def liquidity(df, *, window=20):
        turnover = pl.col("volume") / pl.col("market_cap")
        return (
            df.lazy()
            .sort("date")
            .with_columns(turnover.rolling_mean(window).over("symbol").log().alias("liq_score"))
            .with_columns(xsection.winsorize_xsection("liq_score", percentile=0.01))
            .select("date", "symbol", xsection.center_xsection("liq_score", standardize=True))
        )

    scores = styles.compute_styles(panel, ["momentum", "value", "liquidity"],
                                   params={"liquidity": {"window": 60}})
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from factor_engine._dense import worker_count
from factor_engine._grid import is_sorted_by_keys
from factor_engine.panel import DATE, MARKET_CAP, RETURNS, SYMBOL, VALUE_FEATURES
from factor_engine.styles._shared import shared_work
from factor_engine.styles.momentum import SCORE as MOMENTUM_SCORE
from factor_engine.styles.momentum import momentum
from factor_engine.styles.size import SCORE as SIZE_SCORE
from factor_engine.styles.size import size
from factor_engine.styles.use4 import BETA_SCORE, NLSIZE_SCORE, RESVOL_SCORE, beta, nlsize, resvol
from factor_engine.styles.value import SCORE as VALUE_SCORE
from factor_engine.styles.value import value

StyleFunction = Callable[..., pl.DataFrame | pl.LazyFrame]


@dataclass(frozen=True)
class StyleFactor:
    """A registered style factor.

    Attributes
    ----------
    name: registry key, e.g. ``"momentum"``.
    score: name of the score column the function returns, e.g. ``"mom_score"``.
    function: ``function(panel, **params) -> frame(date, symbol, score)``.
    inputs: panel columns the function reads (checked before it is called).
    description: one line shown in listings.
    defaults: the function's default parameters, for documentation and listings.
    default: whether a model uses it, when its inputs are present, without naming it (``[styles] names``)
        or choosing a preset that holds it (``[styles] preset``).
    fill_missing: whether a model fills the exposure of an asset that has none (on a date where others have
        one) by a cap-weighted regression on sectors and size, as USE4 does (its styles); the toraniko styles
        keep their missing values.
    """

    name: str
    score: str
    function: StyleFunction
    inputs: tuple[str, ...]
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    default: bool = True
    fill_missing: bool = False


_REGISTRY: dict[str, StyleFactor] = {}


def register_style(
    name: str,
    function: StyleFunction | None = None,
    *,
    score: str | None = None,
    inputs: Sequence[str] = (),
    description: str = "",
    defaults: Mapping[str, Any] | None = None,
    replace: bool = False,
    default: bool = True,
    fill_missing: bool = False,
) -> Any:
    """Register ``function`` as the style factor ``name`` (usable as a decorator).

    Parameters
    ----------
    name: registry key.
    function: ``function(panel, **params)`` returning ``date, symbol, score``.
    score: output column name (default ``f"{name}_score"``).
    inputs: panel columns the function needs; a missing one is reported before the call.
    description: one line for listings.
    defaults: documented default parameters.
    replace: allow overwriting an existing registration.
    default: used by a model whose inputs are present without being named (False: only when named or in the
        chosen preset).
    fill_missing: a model fills this style's missing exposures by regression on sectors and size (USE4).
    """

    def decorate(fn: StyleFunction) -> StyleFunction:
        if not name or not name.isidentifier():
            raise ValueError(f"style name must be a non-empty identifier, got {name!r}")
        if name in _REGISTRY and not replace:
            raise ValueError(f"style {name!r} is already registered; pass replace=True to overwrite it")
        _REGISTRY[name] = StyleFactor(
            name=name,
            score=score or f"{name}_score",
            function=fn,
            inputs=tuple(inputs),
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            defaults=dict(defaults or {}),
            default=default,
            fill_missing=fill_missing,
        )
        return fn

    if function is not None:
        return decorate(function)
    return decorate


def unregister_style(name: str) -> None:
    """Remove a registered style factor."""
    if name not in _REGISTRY:
        raise KeyError(f"no style factor named {name!r}; registered: {sorted(_REGISTRY)}")
    del _REGISTRY[name]


def get_style(name: str) -> StyleFactor:
    """The registered style factor ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no style factor named {name!r}; registered: {sorted(_REGISTRY)}") from None


def available_styles() -> tuple[StyleFactor, ...]:
    """Every registered style factor, built-ins first."""
    return tuple(_REGISTRY.values())


def compute_styles(
    panel: pl.DataFrame | pl.LazyFrame,
    names: Sequence[str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> pl.DataFrame:
    """Compute several style factors on one panel and join their scores.

    Parameters
    ----------
    panel: long frame with ``date, symbol`` and every input column of the requested styles.
    names: registry keys (default: the default styles, e.g. momentum, value and size, whose inputs the panel
        has).
    params: per-style keyword arguments, e.g. ``{"momentum": {"trailing_days": 504}}``.

    Returns
    -------
    DataFrame ``date, symbol`` + one score column per style, one row per (date, symbol) of the panel,
    sorted by (date, symbol); a score that could not be computed is null.
    """
    lazy = panel.lazy()
    columns = lazy.collect_schema().names()
    params = dict(params or {})
    if names is None:
        names = [s.name for s in available_styles() if s.default and all(c in columns for c in s.inputs)]
    unknown_params = sorted(set(params) - set(names))
    if unknown_params:
        raise ValueError(f"params given for style(s) {unknown_params} that are not requested ({list(names)})")
    factors = [get_style(name) for name in names]
    for factor in factors:
        missing = [c for c in factor.inputs if c not in columns]
        if missing:
            raise ValueError(f"style {factor.name!r} needs column(s) {missing}, which the panel lacks")

    def score(factor: StyleFactor) -> pl.DataFrame:
        scores = factor.function(lazy, **dict(params.get(factor.name, {})))
        scores = scores.collect() if isinstance(scores, pl.LazyFrame) else scores
        return scores.select(DATE, SYMBOL, factor.score)

    # styles are independent and their kernels release the GIL: computed side by side, sharing the
    # intermediate results several of them need (styles._shared)
    with shared_work():
        if len(factors) > 1 and worker_count() > 1:
            with ThreadPoolExecutor(max_workers=min(len(factors), worker_count())) as pool:
                context = contextvars.copy_context()  # each thread runs in a copy holding the shared cache
                score_frames = list(pool.map(lambda factor: context.copy().run(score, factor), factors))
        else:
            score_frames = [score(factor) for factor in factors]
    n_rows = lazy.select(pl.len()).collect().item()
    if score_frames and all(f.height == n_rows for f in score_frames):
        first = score_frames[0]
        if all(f.select(DATE, SYMBOL).equals(first.select(DATE, SYMBOL)) for f in score_frames[1:]):
            # the built-ins keep the panel's row order: columns line up, no join needed
            result = first.hstack([f.to_series(2) for f in score_frames[1:]])
            return result if is_sorted_by_keys(result) else result.sort(DATE, SYMBOL)
    result = lazy.select(DATE, SYMBOL).unique().collect()
    for scores in score_frames:
        result = result.join(scores, on=[DATE, SYMBOL], how="left")
    return result.sort(DATE, SYMBOL)


register_style(
    "momentum",
    momentum,
    score=MOMENTUM_SCORE,
    inputs=(DATE, SYMBOL, RETURNS),
    description="Exponentially weighted trailing return skipping the last month (toraniko definition).",
    defaults={"trailing_days": 252, "half_life": 126, "lag": 20, "winsor_factor": 0.01},
)
register_style(
    "value",
    value,
    score=VALUE_SCORE,
    inputs=(DATE, SYMBOL, *VALUE_FEATURES),
    description="Mean of standardized log book/price, log sales/price and cash flow/price.",
    defaults={"winsorize_features": None},
)
register_style(
    "size",
    size,
    score=SIZE_SCORE,
    inputs=(DATE, SYMBOL, MARKET_CAP),
    description="Standardized -log(market cap), middle quantiles zeroed (small minus big).",
    defaults={"lower_decile": 0.2, "upper_decile": 0.8},
)
# Barra USE4 styles (factor_engine.styles.use4): in the default set when their inputs are present; a model fills
# their missing exposures by regression on sectors and size
register_style(
    "beta",
    beta,
    score=BETA_SCORE,
    inputs=(DATE, SYMBOL, RETURNS, MARKET_CAP),
    description="USE4 beta: exponentially weighted (half-life 63) 252-day regression slope on the cap-weighted market.",
    defaults={"window": 252, "half_life": 63, "min_observations": 63},
    fill_missing=True,
)
register_style(
    "resvol",
    resvol,
    score=RESVOL_SCORE,
    inputs=(DATE, SYMBOL, RETURNS, MARKET_CAP),
    description="USE4 residual volatility: 0.74 DASTD + 0.16 CMRA + 0.10 HSIGMA, orthogonal to beta and size.",
    defaults={"window": 252, "beta_half_life": 63, "dastd_half_life": 42, "min_observations": 63},
    fill_missing=True,
)
register_style(
    "nlsize",
    nlsize,
    score=NLSIZE_SCORE,
    inputs=(DATE, SYMBOL, MARKET_CAP),
    description="USE4 non-linear size: the cube of standardized log cap, orthogonal to it.",
    defaults={},
    fill_missing=True,
)
