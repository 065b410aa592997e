"""Registry of style factors: the built-ins and the ones users add.

A style factor is a function from the long panel (a polars LazyFrame with at least ``date, symbol`` and the
columns it reads) to a frame ``date, symbol, <score>``. There are two ways to add one.

**From descriptors**, with USE4's pipeline (:mod:`factor_engine.styles.composite`): each descriptor (a panel
column or a polars expression) trimmed at 3σ and standardized to a cap-weighted mean of 0 and an
equal-weighted std of 1, the descriptors combined with their weights (renormalized over those an asset has),
standardized, orthogonalized to USE4's size and/or beta when named, standardized again. A model fills the
missing exposures of such a style by regression on sectors and size. USE4's earnings yield, growth, leverage,
dividend yield and book-to-price styles are declared this way (:mod:`factor_engine.styles.fundamental`)::

    import polars as pl
    from factor_engine import styles
    from factor_engine.styles import Descriptor

    styles.register_descriptor_style(
        "quality",
        descriptors=[
            Descriptor("roe", weight=0.6),                                  # the panel column "roe"
            Descriptor("accruals", weight=0.4, expr=-pl.col("accruals")),   # low accruals is high quality
        ],
        orthogonal_to=("size",),
        score="quality_score",
    )
    scores = styles.compute_styles(panel, ["size", "quality"])

**Any function** with :func:`register_style`::

    from factor_engine import xsection

    @styles.register_style("short_interest", score="si_score", inputs=("short_interest", "market_cap"))
    def short_interest(df, *, window=20):
        ratio = pl.col("short_interest") / pl.col("market_cap")
        return (
            df.lazy()
            .sort("date")
            .with_columns(ratio.rolling_mean(window).over("symbol").alias("si_score"))
            .with_columns(xsection.winsorize_xsection("si_score", percentile=0.01))
            .select("date", "symbol", xsection.center_xsection("si_score", standardize=True))
        )

    scores = styles.compute_styles(panel, ["momentum", "value", "short_interest"],
                                   params={"short_interest": {"window": 60}})

A style needs every column of ``inputs`` and, when ``any_of`` is given, one of its alternatives (each a column
or a group of columns). ``unless`` names styles that cover it: without explicit names it is left out when one
of them is used (USE4's book-to-price when toraniko's value is).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from factor_engine._dense import worker_count
from factor_engine._grid import is_sorted_by_keys
from factor_engine.panel import (
    DATE,
    MARKET_CAP,
    RETURNS,
    SHARES_OUTSTANDING,
    SYMBOL,
    TURNOVER,
    VALUE_FEATURES,
    VOLUME,
)
from factor_engine.styles import fundamental
from factor_engine.styles._shared import shared_work
from factor_engine.styles.composite import Descriptor, DescriptorStyle
from factor_engine.styles.liquidity import LIQUIDITY_MONTHS, LIQUIDITY_SCORE, liquidity
from factor_engine.styles.momentum import SCORE as MOMENTUM_SCORE
from factor_engine.styles.momentum import momentum
from factor_engine.styles.size import SCORE as SIZE_SCORE
from factor_engine.styles.size import size
from factor_engine.styles.use4 import (
    BETA_DEFAULTS,
    BETA_SCORE,
    CMRA_DAYS,
    NLSIZE_SCORE,
    RESVOL_SCORE,
    beta,
    nlsize,
    resvol,
)
from factor_engine.styles.value import SCORE as VALUE_SCORE
from factor_engine.styles.value import value

StyleFunction = Callable[..., pl.DataFrame | pl.LazyFrame]


@dataclass(frozen=True)
class Lookback:
    """The history a style's scores of a date need (a model extended by new dates recomputes the styles on the
    panel's latest rows only): the ``dates`` latest dates up to and including it, and each asset's ``rows``
    latest rows. ``Lookback()`` is a cross-sectional style (the date's rows only)."""

    dates: int = 0
    rows: int = 0


LookbackRule = Callable[[Mapping[str, Any]], Lookback]


def history_start(
    keys: pl.DataFrame, first: Any, needs: Sequence[Lookback], symbols: Collection[str] | None = None
) -> Any:
    """The earliest date whose rows the scores of dates from ``first`` on need (the earliest of ``keys``' dates
    when the history is shorter), for styles needing the :class:`Lookback` s ``needs``.

    Parameters
    ----------
    keys: ``date, symbol`` of the rows the styles are computed on (the history; rows from ``first`` on may be
        present or not).
    first: the first date whose scores are wanted.
    needs: the styles' lookbacks.
    symbols: the assets whose scores are wanted (None: every asset of ``keys``); an asset's own rows matter only
        for them.
    """
    before = keys.filter(pl.col(DATE) < first)
    owned = before if symbols is None else before.filter(pl.col(SYMBOL).cast(pl.String).is_in(list(symbols)))
    if before.height == 0:
        return first
    n_dates = max((need.dates for need in needs), default=0)
    n_rows = max((need.rows for need in needs), default=0)
    start = first
    dates = before.get_column(DATE).unique().sort(descending=True)
    if n_dates > 1:  # the window of `first` holds it and the n_dates − 1 dates before it
        start = min(start, dates[min(n_dates - 2, dates.len() - 1)])
    if n_rows > 1 and owned.height:  # each asset's own n_rows − 1 rows before `first`
        # an asset with a row on each of the last n_rows − 1 dates starts on the earliest of them; the others'
        # rows are searched further back
        cut = dates[min(n_rows - 2, dates.len() - 1)]
        counts = owned.filter(pl.col(DATE) >= cut).group_by(SYMBOL).len()
        every_day = counts.filter(pl.col("len") >= n_rows - 1)
        if every_day.height:
            start = min(start, cut)
        others = owned.join(every_day, on=SYMBOL, how="anti")
        if others.height:
            per_symbol = others.sort(DATE, descending=True).group_by(SYMBOL).head(n_rows - 1)
            start = min(start, per_symbol.get_column(DATE).min())
    return start


def _cross_section(_params: Mapping[str, Any]) -> Lookback:
    return Lookback()


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
    any_of: alternatives of which the panel needs at least one besides ``inputs``, each a group of columns
        that must all be present (e.g. ``(("turnover",), ("volume", "shares_outstanding"))``); empty: none.
    unless: styles that cover this one: when the styles are not named explicitly (defaults or a preset), it is
        left out if one of them is used (e.g. book-to-price ``unless=("value",)``).
    lookback: the history a date's score needs, given the style's parameters (defaults filled in); None:
        unknown, a model update then recomputes the style on the whole history.
    at_dates: the function takes ``at=`` (dates) and returns the scores of those dates only.
    caps_as_weights: ``market_cap`` only weights the style's means and regressions (USE4's cap-weighted mean,
        the cap-weighted market of beta): a panel without it still gets the style, computed with every cap
        equal to 1 (equal weights, the equal-weighted market), as a model without caps weights its regression.
    """

    name: str
    score: str
    function: StyleFunction
    inputs: tuple[str, ...]
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    default: bool = True
    fill_missing: bool = False
    any_of: tuple[tuple[str, ...], ...] = ()
    unless: tuple[str, ...] = ()
    lookback: LookbackRule | None = None
    at_dates: bool = False
    caps_as_weights: bool = False

    def history(self, params: Mapping[str, Any] | None = None) -> Lookback | None:
        """The history a date's score needs with ``params`` (the style's defaults for those not given); None
        when the style does not say."""
        if self.lookback is None:
            return None
        return self.lookback({**self.defaults, **dict(params or {})})

    @property
    def requirement(self) -> str:
        """The columns the style needs, in words (for listings), e.g. ``"one of turnover, volume +
        shares_outstanding (market_cap optional: equal weights without it)"``."""
        optional = self.caps_as_weights and MARKET_CAP in self.inputs
        needed = [c for c in self.inputs if c not in (DATE, SYMBOL) and not (optional and c == MARKET_CAP)]
        parts = [", ".join(needed)] if needed else []
        if self.any_of:
            parts.append(f"one of {_alternatives(self.any_of)}")
        return " and ".join(parts) + (" (market_cap optional: equal weights without it)" if optional else "")

    def _lacking(self, columns: Collection[str]) -> tuple[list[str], bool]:
        """The ``inputs`` a panel with ``columns`` lacks, and whether it lacks every ``any_of`` alternative."""
        present = set(columns)
        if self.caps_as_weights:
            present.add(MARKET_CAP)  # given as 1 when absent (equal weights)
        missing = [c for c in self.inputs if c not in present]
        no_alternative = bool(self.any_of) and not any(all(c in present for c in group) for group in self.any_of)
        return missing, no_alternative

    def unmet(self, columns: Collection[str]) -> str | None:
        """What a panel with ``columns`` lacks for this style, as "column(s) [...]" and/or "one of ...";
        None when it has everything."""
        missing, no_alternative = self._lacking(columns)
        parts = [f"column(s) {missing}"] if missing else []
        if no_alternative:
            parts.append(f"one of the columns {_alternatives(self.any_of)}")
        return " and ".join(parts) or None

    def skip_reason(self, columns: Collection[str]) -> str | None:
        """Why a panel with ``columns`` cannot give this style ("the panel has no ... column"), or None."""
        missing, no_alternative = self._lacking(columns)
        parts = [f"no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}"] if missing else []
        if no_alternative:
            parts.append(f"none of {_alternatives(self.any_of)}")
        return "the panel has " + " and ".join(parts) if parts else None


def _alternatives(any_of: Sequence[Sequence[str]]) -> str:
    """``turnover, volume + shares_outstanding``: the alternatives, each group's columns joined by ``+``."""
    return ", ".join(" + ".join(group) for group in any_of)


def _groups(any_of: Sequence[str | Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    """``any_of`` as a tuple of column groups (a single column is a group of one)."""
    if isinstance(any_of, str):
        raise TypeError(f"any_of must be a sequence of column names or groups of them, not the string {any_of!r}")
    groups = tuple((alternative,) if isinstance(alternative, str) else tuple(alternative) for alternative in any_of)
    if any(not group or not all(isinstance(c, str) and c for c in group) for group in groups):
        raise ValueError(f"any_of must hold non-empty column names or groups of them, got {any_of!r}")
    return groups


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
    any_of: Sequence[str | Sequence[str]] = (),
    unless: Sequence[str] = (),
    lookback: LookbackRule | None = None,
    at_dates: bool = False,
    caps_as_weights: bool = False,
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
    any_of: alternatives of which the panel needs one (each a column or a sequence of columns all needed).
    unless: styles covering this one: it is left out of the defaults and presets when one of them is used.
    lookback: ``lookback(params) -> Lookback``, the history a date's score needs (:class:`Lookback`); None
        (unknown) makes a model update recompute the style on the whole history.
    at_dates: ``function`` takes ``at=`` (a list of dates) and returns only the scores of those dates (computed
        from the history it looks back on), in the panel's row order.
    caps_as_weights: ``market_cap`` (in ``inputs``) only weights the style: without it the function gets caps
        of 1 (equal weights) instead of the style being left out.
    """
    groups = _groups(any_of)
    if isinstance(unless, str):
        raise TypeError(f"unless must be a sequence of style names, not the string {unless!r}")

    def decorate(fn: StyleFunction) -> StyleFunction:
        if not name or not name.isidentifier():
            raise ValueError(f"style name must be a non-empty identifier, got {name!r}")
        if name in _REGISTRY and not replace:
            raise ValueError(f"style {name!r} is already registered; pass replace=True to overwrite it")
        if name in unless:
            raise ValueError(f"style {name!r} cannot be left out because of itself (unless={list(unless)})")
        _REGISTRY[name] = StyleFactor(
            name=name,
            score=score or f"{name}_score",
            function=fn,
            inputs=tuple(inputs),
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            defaults=dict(defaults or {}),
            default=default,
            fill_missing=fill_missing,
            any_of=groups,
            unless=tuple(unless),
            lookback=lookback,
            at_dates=at_dates,
            caps_as_weights=caps_as_weights,
        )
        return fn

    if function is not None:
        return decorate(function)
    return decorate


def register_descriptor_style(
    name: str,
    descriptors: Sequence[Descriptor],
    *,
    score: str | None = None,
    orthogonal_to: Sequence[str] = (),
    any_of: Sequence[str | Sequence[str]] = (),
    description: str = "",
    default: bool = True,
    unless: Sequence[str] = (),
    fill_missing: bool = True,
    replace: bool = False,
) -> StyleFactor:
    """Register the style ``name`` computed from ``descriptors`` by USE4's pipeline (the module docstring;
    :class:`factor_engine.styles.composite.DescriptorStyle`) and return its registration.

    Parameters
    ----------
    name: registry key.
    descriptors: :class:`Descriptor` s (a panel column or a polars expression, a positive weight, optional or
        not). The style needs ``date, symbol`` and every required descriptor's columns; optional descriptors
        enter when their columns are present. ``market_cap`` weights its means and regressions; without it they
        are equal-weighted (unless a descriptor reads ``market_cap``, which the style then needs).
    score: output column name (default ``f"{name}_score"``).
    orthogonal_to: ``"size"`` (USE4's log cap) and/or ``"beta"`` (USE4's beta; needs ``asset_returns``): the
        style is made orthogonal to them by a cap-weighted regression and standardized again.
    any_of: columns (or groups of columns) of which the panel needs one, for styles whose descriptors are all
        optional; each must be read by a descriptor.
    description: one line for listings (default: the weighted descriptors).
    default, unless, fill_missing, replace: as in :func:`register_style` (``fill_missing`` True by default, as
        for USE4's styles).
    """
    score = score or f"{name}_score"
    style = DescriptorStyle(name=name, score=score, descriptors=tuple(descriptors), orthogonal_to=tuple(orthogonal_to))
    groups = _groups(any_of)
    read = {c for d in style.descriptors for c in d.columns}
    unread = sorted({c for group in groups for c in group} - read)
    if unread:
        raise ValueError(f"style {name!r}: any_of names column(s) {unread} that no descriptor reads")
    if all(d.optional for d in style.descriptors) and not groups:
        raise ValueError(f"style {name!r}: every descriptor is optional; give any_of (the columns it needs one of)")
    register_style(
        name,
        style,
        score=score,
        inputs=(DATE, SYMBOL, *style.required_columns),
        description=description or style.describe(),
        defaults={},
        replace=replace,
        default=default,
        fill_missing=fill_missing,
        any_of=groups,
        unless=unless,
        lookback=_descriptor_lookback(style),
        caps_as_weights=MARKET_CAP not in read,
    )
    return get_style(name)


def _descriptor_lookback(style: DescriptorStyle) -> LookbackRule | None:
    """A descriptor style of plain columns is cross-sectional, plus beta's history when made orthogonal to it; an
    expression may reach other rows (a rolling window, a shift), so its history is unknown."""
    if not all(d.expression.meta.is_column() for d in style.descriptors):
        return None
    return _beta_lookback if "beta" in style.orthogonal_to else _cross_section


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


def select_styles(
    candidates: Sequence[StyleFactor], columns: Collection[str]
) -> tuple[tuple[StyleFactor, ...], dict[str, str]]:
    """The candidate styles a panel with ``columns`` supports, in order, and each other candidate with the reason
    it is left out: a missing column (:meth:`StyleFactor.skip_reason`) or a supported style of its ``unless``."""
    reasons = {style.name: style.skip_reason(columns) for style in candidates}
    supported = {name for name, reason in reasons.items() if reason is None}
    used: list[StyleFactor] = []
    skipped: dict[str, str] = {}
    for style in candidates:
        covering = [other for other in style.unless if other in supported]
        reason = reasons[style.name] or (
            f"covered by style {covering[0]!r}, which is used (name both styles to use both)" if covering else None
        )
        if reason is None:
            used.append(style)
        else:
            skipped[style.name] = reason
    return tuple(used), skipped


def compute_styles(
    panel: pl.DataFrame | pl.LazyFrame,
    names: Sequence[str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    finish: Callable[[StyleFactor, pl.DataFrame], pl.DataFrame] | None = None,
    at: Sequence[Any] | None = None,
) -> pl.DataFrame:
    """Compute several style factors on one panel and join their scores.

    Parameters
    ----------
    panel: long frame with ``date, symbol`` and every input column of the requested styles (``market_cap``
        optional for the styles it only weights, :attr:`StyleFactor.caps_as_weights`: equal weights without it).
    names: registry keys (default: the default styles whose inputs the panel has, less those covered by
        another one used: :func:`select_styles`).
    params: per-style keyword arguments, e.g. ``{"momentum": {"trailing_days": 504}}``.
    finish: called with each style and its scores (``date, symbol, score``) in the thread that computed them,
        returning the scores to use (same rows), e.g. a model filling missing exposures while other styles are
        still being computed.
    at: only the scores of these dates (a model extended by new dates; the panel holds the history they look
        back on): a style that computes at given dates (``at_dates``) does so, a cross-sectional one is
        computed on those dates' rows, any other on the whole panel.

    Returns
    -------
    DataFrame ``date, symbol`` + one score column per style, one row per (date, symbol) of the panel (of the
    dates ``at``), sorted by (date, symbol); a score that could not be computed is null.
    """
    lazy = panel.lazy()
    columns = lazy.collect_schema().names()
    params = dict(params or {})
    if names is None:
        names = [s.name for s in select_styles([s for s in available_styles() if s.default], columns)[0]]
    unknown_params = sorted(set(params) - set(names))
    if unknown_params:
        raise ValueError(f"params given for style(s) {unknown_params} that are not requested ({list(names)})")
    factors = [get_style(name) for name in names]
    for factor in factors:
        unmet = factor.unmet(columns)
        if unmet:
            raise ValueError(f"style {factor.name!r} needs {unmet}, which the panel lacks")
    if MARKET_CAP not in columns and any(f.caps_as_weights and MARKET_CAP in f.inputs for f in factors):
        lazy = lazy.with_columns(pl.lit(1.0).alias(MARKET_CAP))  # no caps: equal weights (caps_as_weights)

    on_dates = None if at is None else pl.col(DATE).is_in(pl.Series(list(at)).implode())

    def on_their_dates(factor: StyleFactor) -> bool:
        """Whether a cross-sectional style is computed on the rows of the dates ``at`` only."""
        return on_dates is not None and not factor.at_dates and factor.history(params.get(factor.name)) == Lookback()

    def score(factor: StyleFactor) -> pl.DataFrame:
        kwargs = dict(params.get(factor.name, {}))
        source = lazy
        if at is not None and factor.at_dates:
            kwargs["at"] = list(at)
        elif on_dates is not None and on_their_dates(factor):
            source = lazy.filter(on_dates)  # a cross-section: the dates' own rows are enough
        scores = factor.function(source, **kwargs)
        scores = scores.collect() if isinstance(scores, pl.LazyFrame) else scores
        if on_dates is not None and not factor.at_dates:
            scores = scores.filter(on_dates)
        scores = scores.select(DATE, SYMBOL, factor.score)
        return scores if finish is None else finish(factor, scores).select(DATE, SYMBOL, factor.score)

    # styles are independent and their kernels release the GIL: computed side by side, sharing the
    # intermediate results several of them need (styles._shared); the styles computed on the dates' rows only
    # share theirs apart (another panel)
    contexts = {False: _shared_context(), True: _shared_context()}

    def in_context(factor: StyleFactor) -> pl.DataFrame:
        return contexts[on_their_dates(factor)].copy().run(score, factor)  # each thread in a copy of its cache

    if len(factors) > 1 and worker_count() > 1:
        # the time-series styles (momentum, beta, residual volatility: the longest) start first and the
        # cross-sections fill in after them; beta before residual volatility, which reuses its regression
        order = sorted(range(len(factors)), key=lambda i: not factors[i].at_dates)
        with ThreadPoolExecutor(max_workers=min(len(factors), worker_count())) as pool:
            computed = dict(zip(order, pool.map(in_context, [factors[i] for i in order]), strict=True))
        score_frames = [computed[i] for i in range(len(factors))]
    else:
        score_frames = [in_context(factor) for factor in factors]
    rows = lazy if on_dates is None else lazy.filter(on_dates)
    n_rows = rows.select(pl.len()).collect().item()
    if score_frames and all(f.height == n_rows for f in score_frames):
        first = score_frames[0]
        if all(f.select(DATE, SYMBOL).equals(first.select(DATE, SYMBOL)) for f in score_frames[1:]):
            # the built-ins keep the panel's row order: columns line up, no join needed
            result = first.hstack([f.to_series(2) for f in score_frames[1:]])
            return result if is_sorted_by_keys(result) else result.sort(DATE, SYMBOL)
    result = rows.select(DATE, SYMBOL).unique().collect()
    for scores in score_frames:
        result = result.join(scores, on=[DATE, SYMBOL], how="left")
    return result.sort(DATE, SYMBOL)


def _shared_context() -> contextvars.Context:
    """A context holding a fresh cache of shared intermediate results (:func:`shared_work`)."""
    with shared_work():
        return contextvars.copy_context()


def _beta_lookback(params: Mapping[str, Any]) -> Lookback:
    """Beta's regression over ``window`` dates; its first date's market return needs the caps of the date before."""
    return Lookback(dates=int(params.get("window", BETA_DEFAULTS["window"])) + 1)


register_style(
    "momentum",
    momentum,
    score=MOMENTUM_SCORE,
    inputs=(DATE, SYMBOL, RETURNS),
    description="Exponentially weighted trailing return skipping the last month (toraniko definition).",
    defaults={"trailing_days": 252, "half_life": 126, "lag": 20, "winsor_factor": 0.01},
    lookback=lambda p: Lookback(rows=int(p["trailing_days"]) + int(p["lag"])),  # the symbol's own rows
    at_dates=True,
)
register_style(
    "value",
    value,
    score=VALUE_SCORE,
    inputs=(DATE, SYMBOL, *VALUE_FEATURES),
    description="Mean of standardized log book/price, log sales/price and cash flow/price.",
    defaults={"winsorize_features": None},
    lookback=_cross_section,
)
register_style(
    "size",
    size,
    score=SIZE_SCORE,
    inputs=(DATE, SYMBOL, MARKET_CAP),
    description="Standardized -log(market cap), middle quantiles zeroed (small minus big).",
    defaults={"lower_decile": 0.2, "upper_decile": 0.8},
    lookback=_cross_section,
)
# Barra USE4 styles (factor_engine.styles.use4): in the default set when their inputs are present; a model fills
# their missing exposures by regression on sectors and size
register_style(
    "beta",
    beta,
    score=BETA_SCORE,
    inputs=(DATE, SYMBOL, RETURNS, MARKET_CAP),
    description="USE4 beta: exponentially weighted (half-life 63) 252-day regression slope on the cap-weighted market "
    "(equal-weighted without caps).",
    defaults=BETA_DEFAULTS,
    fill_missing=True,
    lookback=_beta_lookback,
    at_dates=True,
    caps_as_weights=True,
)
register_style(
    "resvol",
    resvol,
    score=RESVOL_SCORE,
    inputs=(DATE, SYMBOL, RETURNS, MARKET_CAP),
    description="USE4 residual volatility: 0.74 DASTD + 0.16 CMRA + 0.10 HSIGMA, orthogonal to beta and size.",
    defaults={"window": 252, "beta_half_life": 63, "dastd_half_life": 42, "min_observations": 63},
    fill_missing=True,
    # DASTD and the beta regression over `window` dates, CMRA over 12 months of 21; the market return of a
    # window's first date needs the caps of the date before it
    lookback=lambda p: Lookback(dates=max(int(p["window"]), CMRA_DAYS, int(BETA_DEFAULTS["window"])) + 1),
    at_dates=True,
    caps_as_weights=True,
)
register_style(
    "nlsize",
    nlsize,
    score=NLSIZE_SCORE,
    inputs=(DATE, SYMBOL, MARKET_CAP),
    description="USE4 non-linear size: the cube of standardized log cap, orthogonal to it.",
    defaults={},
    fill_missing=True,
    lookback=_cross_section,
)
register_style(
    "liquidity",
    liquidity,
    score=LIQUIDITY_SCORE,
    inputs=(DATE, SYMBOL, MARKET_CAP),
    any_of=((TURNOVER,), (VOLUME, SHARES_OUTSTANDING)),
    description="USE4 liquidity: 0.35 STOM + 0.35 STOQ + 0.30 STOA (log share turnover over 1, 3, 12 months), "
    "orthogonal to size.",
    defaults={"month_days": 21, "min_fraction": 0.5},
    fill_missing=True,
    lookback=lambda p: Lookback(dates=max(LIQUIDITY_MONTHS) * int(p["month_days"])),  # turnover over 12 months
    caps_as_weights=True,
)
# USE4's fundamental styles (factor_engine.styles.fundamental), declared from descriptors
register_descriptor_style(
    "earnings_yield",
    fundamental.EARNINGS_YIELD_DESCRIPTORS,
    score=fundamental.EARNINGS_YIELD_SCORE,
    description="USE4 earnings yield: 0.68 EPIBS + 0.21 ETOP + 0.11 CETOP (forward and trailing E/P, CF/P).",
)
register_descriptor_style(
    "growth",
    fundamental.GROWTH_DESCRIPTORS,
    score=fundamental.GROWTH_SCORE,
    any_of=fundamental.GROWTH_ANY_OF,
    description="USE4 growth: 0.18 EGRLF + 0.24 EGRO + 0.47 SGRO (EGRSF has no column; weights renormalized).",
)
register_descriptor_style(
    "leverage",
    fundamental.LEVERAGE_DESCRIPTORS,
    score=fundamental.LEVERAGE_SCORE,
    any_of=fundamental.LEVERAGE_ANY_OF,
    description="USE4 leverage: 0.38 MLEV + 0.35 DTOA + 0.27 BLEV.",
)
register_descriptor_style(
    "dividend_yield",
    fundamental.DIVIDEND_YIELD_DESCRIPTORS,
    score=fundamental.DIVIDEND_YIELD_SCORE,
    description="USE4 dividend yield: DYLD, trailing 12-month dividends per share / price.",
)
register_descriptor_style(
    "btop",
    fundamental.BTOP_DESCRIPTORS,
    score=fundamental.BTOP_SCORE,
    unless=("value",),
    description="USE4 book-to-price: BTOP (left out of the defaults when toraniko's value, which holds it, is used).",
)
