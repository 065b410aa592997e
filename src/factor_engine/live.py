"""Live intraday factor returns: today's cross-sectional regression so far, on the exposures of the last close.

A model built through the close of date T−1 holds the exposures known at that close. With ``exposure_lag = 1``
(the default of ``method="barra"``) those are the exposures its regression uses to explain the returns of the
next date T. Given today's returns so far, either current prices over T−1's closes minus one or the returns
themselves, :class:`LiveSession` solves date T's regression with
:func:`factor_engine.regression.solve_cross_sections`. That is the solve
:func:`~factor_engine.regression.estimate_factor_returns` runs on every date, with the same row checks and
winsorization, the weights ``sqrt(market_cap)`` at T−1, the sector constraint and the treatment of absent
styles. So, fed every asset's full-day return, it gives the factor returns the next build reports for T
(``tests/test_live.py``).

Which assets enter today's regression, as the build would decide for a date whose rows are the assets priced
so far:

* an asset without a price (or return) yet has no row today and is left out. It does not enter the
  winsorization bounds, the weights or the sector constraint: the regression is that of the assets priced so
  far, re-solved as prices arrive;
* with a ``[universe] size`` smaller than the number of assets priced, today's universe is the ``size``
  largest of them by the last close's market cap, plus ``[universe] include``, as
  :func:`factor_engine.model.select_universe` ranks them;
* a priced asset the model has no exposures for at T−1 (it was outside the universe, or listed today), or
  one lacking a sector or a style exposure there, is left out with the reason, as in the build.

The market caps at T−1 (regression weights, cap-weighted sector constraint, universe rank) are not part of the
model folder: pass the panel the model was built on (or its rows of the last close) when the model weights by
cap. A session keeps the latest price or return of each asset, so an update may carry some assets only.

A portfolio's live figures (:meth:`LiveSession.portfolio`) come from the model's risk snapshot at T−1
(:func:`factor_engine.portfolio.snapshot.snapshot_at`):

* P&L: the holdings' return so far (``Σ w r``, an unpriced holding contributes 0), split into factor P&L
  ``x_k f_k`` with ``x = Σ w B`` over the priced holdings and a specific remainder;
* exposures and risk: :func:`~factor_engine.portfolio.portfolio_exposures` and
  :func:`~factor_engine.portfolio.decompose_risk` of the weights drifted by today's returns,
  ``w (1 + r) / (1 + Σ w r)``.

Units: daily fractions throughout (0.01 is +1 %); weights are fractions of capital.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import polars as pl

from factor_engine._dense import single_threaded_blas
from factor_engine._missing_caps import has_cap
from factor_engine.config import ModelConfig
from factor_engine.model import RiskModel
from factor_engine.panel import DATE, MARKET_CAP, SYMBOL
from factor_engine.portfolio import (
    PortfolioError,
    RiskDecomposition,
    RiskModelSnapshot,
    check_weights,
    decompose_risk,
    portfolio_exposures,
)
from factor_engine.portfolio.snapshot import snapshot_at
from factor_engine.regression import MARKET, dropped_factors, row_checks, solve_cross_sections, zero_absent_styles

__all__ = [
    "LiveBook",
    "LiveError",
    "LiveFactorReturns",
    "LiveModel",
    "LivePortfolio",
    "LiveSession",
    "live_book",
    "live_factor_returns",
    "live_portfolio",
]

Unknown = Literal["raise", "drop"]
Prices = Mapping[str, float] | pl.DataFrame
_SHOWN = 5
_NOT_IN_UNIVERSE = "outside today's universe (universe size, ranked by the last close's market cap)"


class LiveError(ValueError):
    """A live update or session that cannot be served; the message says which input and which symbols."""


def _examples(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:_SHOWN])
    return f"{shown}, ..." if len(names) > _SHOWN else shown


@dataclass(frozen=True, eq=False)
class LiveModel:
    """What a live session needs of a model, loaded once and read-only (shared by sessions and threads).

    Attributes
    ----------
    as_of: the model's last date: the close whose exposures (and caps) explain today's returns.
    factors, sectors, styles: the model's factors in regression order (market, sectors, styles).
    symbols: the N assets a session accepts: those with exposures at ``as_of`` and those of the panel's rows
        up to ``as_of`` (ranked for the universe, left out of the regression without exposures).
    index: symbol → row of the arrays below.
    cap: (N,) market cap at ``as_of`` (currency units; 1.0 for a model without caps), NaN without exposures.
    sector_codes: (N,) int index into ``sectors`` at ``as_of``, −1 without a sector.
    style_exposure: (N, P) style exposures at ``as_of``, NaN where missing.
    in_model: (N,) bool, the asset has exposures at ``as_of``.
    rank_order: row indices by descending last-close cap (ties by symbol) when ``universe_size`` binds, else None.
    universe_size: ``[universe] size`` of the model (0 keeps all).
    always: (N,) bool, the ``[universe] include`` symbols.
    method, winsor_factor, residualize_styles: the model's regression settings.
    snapshot: the risk model at ``as_of`` for portfolio figures, or None (then ``snapshot_error`` says why).
    snapshot_rows: (N_snapshot,) row of each snapshot symbol in ``symbols``.
    """

    as_of: datetime.date
    factors: tuple[str, ...]
    sectors: tuple[str, ...]
    styles: tuple[str, ...]
    symbols: tuple[str, ...]
    index: dict[str, int]
    cap: np.ndarray
    sector_codes: np.ndarray
    style_exposure: np.ndarray
    in_model: np.ndarray
    rank_order: np.ndarray | None
    universe_size: int
    always: np.ndarray
    method: Literal["barra", "toraniko"]
    winsor_factor: float | None
    residualize_styles: bool
    snapshot: RiskModelSnapshot | None
    snapshot_error: str | None
    snapshot_rows: np.ndarray

    @property
    def n_assets(self) -> int:
        """N, the number of symbols a session accepts."""
        return len(self.symbols)

    @classmethod
    def from_model(cls, model: RiskModel, panel: pl.DataFrame | None = None) -> LiveModel:
        """Prepare a model for live sessions.

        Parameters
        ----------
        model: a built or loaded model whose regression uses the previous close's exposures
            (``exposure_lag = 1``); its last date is the close today's returns are measured from.
        panel: the panel the model was built on, or at least its rows of the model's last date: its
            ``market_cap`` at that close weights the regression and ranks today's universe. Rows after the
            model's last date are ignored. Required when the model weights by market cap.
        """
        config = ModelConfig.from_mapping(model.config)
        regression = config.regression
        if regression.effective_exposure_lag != 1:
            raise LiveError(
                f"the model's regression uses exposures {regression.effective_exposure_lag} date(s) before the "
                "returns (exposure_lag); live factor returns explain today's returns by the exposures of the last "
                "close, as a model with exposure_lag = 1 does: rebuild it with [regression] exposure_lag = 1"
            )
        if model.exposures.height == 0:
            raise LiveError("the model has no exposures")
        as_of: datetime.date = model.exposures.get_column(DATE).max()  # type: ignore[assignment]
        at_close = model.exposures.filter(pl.col(DATE) == as_of).sort(SYMBOL)
        model_symbols = at_close.get_column(SYMBOL).cast(pl.String).to_list()
        caps_used = _caps_used(model, panel)
        last_caps = _last_caps(panel, as_of) if caps_used else None
        if last_caps is not None:
            extra = sorted(set(last_caps.get_column(SYMBOL).to_list()) - set(model_symbols))
            symbols = tuple(model_symbols + extra)
        else:
            symbols = tuple(model_symbols)
        index = {symbol: i for i, symbol in enumerate(symbols)}
        n, n_model = len(symbols), len(model_symbols)
        in_model = np.zeros(n, dtype=bool)
        in_model[:n_model] = True

        cap = np.full(n, np.nan)
        previous_cap = np.full(n, -1.0)
        if last_caps is None:
            cap[:n_model] = 1.0
        else:
            rows = np.fromiter((index[s] for s in last_caps.get_column(SYMBOL).to_list()), dtype=np.intp)
            previous_cap[rows] = last_caps.get_column("previous_cap").to_numpy()
            at_date = last_caps.get_column("cap_at_close").to_numpy()
            cap[rows] = at_date
            cap[n_model:] = np.nan  # as the build: no row at the close in the universe, no cap there
            if not np.isfinite(cap[:n_model]).any():
                raise LiveError(
                    f"the panel has no market_cap for the model's assets at its last close {as_of}: pass the "
                    "panel the model was built on (or its rows of that date)"
                )

        sectors = tuple(model.sectors)
        codes = np.full(n, -1, dtype=np.int64)
        if sectors:
            dummies = at_close.select(pl.col(list(sectors)).cast(pl.Float64).fill_null(0.0)).to_numpy()
            one = dummies == 1.0
            has = one.any(axis=1)
            codes[:n_model] = np.where(has, np.argmax(one, axis=1), -1)
        styles = tuple(model.styles)
        style_exposure = np.full((n, len(styles)), np.nan)
        if styles:
            style_exposure[:n_model] = at_close.select(
                pl.col(list(styles)).cast(pl.Float64).fill_null(np.nan)
            ).to_numpy()

        size = config.universe.size
        include = set(config.universe.include)
        always = np.array([symbol in include for symbol in symbols], dtype=bool)
        rank_order = None
        if caps_used and size and n > size:
            keys = np.array(symbols, dtype=object)
            rank_order = np.lexsort((keys, -previous_cap))  # descending cap, ties by symbol (polars' ordinal)

        snapshot: RiskModelSnapshot | None = None
        snapshot_error: str | None = None
        try:
            snapshot = snapshot_at(model, as_of)
        except ValueError as error:
            snapshot_error = f"the model has no risk forecast at its last close {as_of}: {error}"
        snapshot_rows = (
            np.fromiter((index[s] for s in snapshot.symbols), dtype=np.intp, count=len(snapshot.symbols))
            if snapshot is not None
            else np.zeros(0, dtype=np.intp)
        )
        for array in (cap, codes, style_exposure, in_model, always, snapshot_rows):
            array.flags.writeable = False
        return cls(
            as_of=as_of,
            factors=(MARKET, *sectors, *styles),
            sectors=sectors,
            styles=styles,
            symbols=symbols,
            index=index,
            cap=cap,
            sector_codes=codes,
            style_exposure=style_exposure,
            in_model=in_model,
            rank_order=rank_order,
            universe_size=size,
            always=always,
            method="barra" if regression.method == "barra" else "toraniko",
            winsor_factor=regression.winsor_factor,
            residualize_styles=regression.residualize_styles,
            snapshot=snapshot,
            snapshot_error=snapshot_error,
            snapshot_rows=snapshot_rows,
        )

    def locate(self, symbols: Sequence[str], what: str, unknown: Unknown = "raise") -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``symbols`` and the mask of those known; LiveError naming the unknown ones unless ``drop``."""
        index = self.index
        rows = np.fromiter((index.get(s, -1) for s in symbols), dtype=np.intp, count=len(symbols))
        known = rows >= 0
        if unknown == "raise" and not known.all():
            missing = [symbols[i] for i in np.flatnonzero(~known).tolist()]
            raise LiveError(
                f"{what} name {len(missing)} symbol(s) the model does not know at its last close {self.as_of}: "
                f"{_examples(missing)} (send unknown='drop' to ignore them)"
            )
        return rows, known


def _caps_used(model: RiskModel, panel: pl.DataFrame | None) -> bool:
    """Whether the model weights by market cap (then the panel's caps are required)."""
    note = str(model.notes.get("market_cap", ""))
    if note.startswith("absent"):
        return False
    if panel is None or MARKET_CAP not in panel.columns:
        raise LiveError(
            "the model weights its regression by market cap, which the model folder does not hold: pass the panel "
            "it was built on (or its rows of the model's last date) with its market_cap column"
        )
    return True


def _last_caps(panel: pl.DataFrame | None, as_of: datetime.date) -> pl.DataFrame:
    """``symbol, previous_cap, cap_at_close``: each symbol's last market cap up to ``as_of`` (its universe rank)
    and its cap on ``as_of`` (NaN without a row there). A row without a cap is left out, as the build leaves it
    out of the model: the last cap is that of the symbol's latest row with one."""
    if panel is None:  # pragma: no cover - checked by _caps_used
        raise LiveError("no panel")
    return (
        panel.lazy()
        .filter((pl.col(DATE) <= as_of) & has_cap())
        .select(DATE, pl.col(SYMBOL).cast(pl.String), pl.col(MARKET_CAP).cast(pl.Float64))
        .sort(DATE)
        .group_by(SYMBOL)
        .agg(
            pl.col(MARKET_CAP).last().alias("previous_cap"),
            pl.col(MARKET_CAP).filter(pl.col(DATE) == as_of).first().alias("cap_at_close"),
        )
        .with_columns(pl.col("previous_cap").fill_null(-1.0), pl.col("cap_at_close").fill_null(np.nan))
        .sort(SYMBOL)
        .collect()
    )


@dataclass(frozen=True)
class LiveFactorReturns:
    """Today's factor returns so far: one solve of :class:`LiveSession`.

    Attributes
    ----------
    as_of: the close whose exposures explain today's returns (the model's last date).
    factors: factor names (market, sectors, styles).
    factor_returns: (K,) today's factor returns so far (daily fractions); NaN for a factor dropped today
        (no exposure among the assets priced, collinear) and everywhere when the date cannot be solved.
    symbols: the session's symbols, the order of ``returns`` and ``residual``.
    returns: (N,) today's return so far of each asset (NaN without a price yet).
    residual: (N,) the part of each used return the factors do not explain (``barra``: raw return minus
        fitted); NaN for assets left out.
    n_assets: assets in the regression; n_priced: assets with a price or return so far.
    excluded: reason → priced assets left out for it (first reason that applies).
    r2: weighted uncentered R² (None when not solved); condition_number of the normal matrix.
    dropped: factors that could not be estimated today; reason: why (empty when none), or why the date
        could not be solved.
    updates: the number of updates applied to the session so far.
    """

    as_of: datetime.date
    factors: tuple[str, ...]
    factor_returns: np.ndarray
    symbols: tuple[str, ...]
    returns: np.ndarray
    residual: np.ndarray
    n_assets: int
    n_priced: int
    excluded: dict[str, int]
    r2: float | None
    condition_number: float | None
    dropped: tuple[str, ...]
    reason: str
    updates: int

    @property
    def solved(self) -> bool:
        """Whether today's regression could be solved (enough assets priced)."""
        return bool(np.isfinite(self.factor_returns).any())

    def as_dict(self) -> dict[str, float | None]:
        """factor → today's return so far (None where not estimated)."""
        return {
            f: (float(v) if math.isfinite(v) else None)
            for f, v in zip(self.factors, self.factor_returns.tolist(), strict=True)
        }

    def frame(self) -> pl.DataFrame:
        """``factor, factor_return`` (null where not estimated)."""
        return pl.DataFrame(
            {"factor": list(self.factors), "factor_return": self.factor_returns}, strict=False
        ).with_columns(pl.col("factor_return").fill_nan(None))

    @cached_property
    def residuals(self) -> pl.DataFrame:
        """``symbol, residual`` of the assets in today's regression."""
        used = np.flatnonzero(np.isfinite(self.residual))
        return pl.DataFrame(
            {SYMBOL: [self.symbols[i] for i in used.tolist()], "residual": self.residual[used]},
            schema={SYMBOL: pl.String, "residual": pl.Float64},
        )


@dataclass(frozen=True, eq=False)
class LiveBook:
    """A portfolio aligned to a live model's risk snapshot once (see :meth:`LiveSession.book`).

    Attributes
    ----------
    weights: (N_snapshot,) weights (fractions of capital) in the snapshot's symbol order, 0 where not held.
    dropped_symbols: symbols of the weights the snapshot does not cover, dropped with ``unknown="drop"``.
    warnings: what :func:`~factor_engine.portfolio.check_weights` said of the weights.
    allow_unnormalized: whether the weight checks were turned off.
    """

    weights: np.ndarray
    dropped_symbols: tuple[str, ...]
    warnings: tuple[str, ...]
    allow_unnormalized: bool


@dataclass(frozen=True)
class LivePortfolio:
    """A portfolio's live figures on today's factor returns so far (daily fractions of capital).

    Attributes
    ----------
    pnl: the holdings' return so far, ``Σ w r`` (a holding without a price contributes 0).
    factor_pnl: ``factor, exposure, factor_return, pnl``: ``exposure = Σ w B`` over the priced holdings
        (exposures at the last close), ``pnl = exposure × factor_return`` (0 for a factor not estimated).
    factor_total: ``Σ`` of ``factor_pnl.pnl``; specific_pnl: ``pnl − factor_total``.
    n_holdings: nonzero weights; n_priced: of them, with a price or return so far.
    exposures: :func:`~factor_engine.portfolio.portfolio_exposures` of the drifted weights.
    risk: :func:`~factor_engine.portfolio.decompose_risk` of the drifted weights (daily figures).
    drifted_weights: (N_snapshot,) ``w (1 + r) / (1 + pnl)`` in the snapshot's symbol order.
    warnings: the weight checks' messages.
    """

    pnl: float
    factor_pnl: pl.DataFrame
    factor_total: float
    specific_pnl: float
    n_holdings: int
    n_priced: int
    exposures: pl.DataFrame
    risk: RiskDecomposition
    drifted_weights: np.ndarray
    warnings: tuple[str, ...]


@dataclass
class LiveSession:
    """Today's live regression on one model: keeps the latest return of each asset and re-solves on update.

    Build it with ``LiveSession(LiveModel.from_model(model, panel))``, or :meth:`from_model`. Not thread-safe:
    one session per feed (the service gives each stream channel its own).
    """

    model: LiveModel
    closes: np.ndarray = field(init=False)
    returns: np.ndarray = field(init=False)
    updates: int = field(init=False, default=0)
    latest: LiveFactorReturns | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.closes = np.full(self.model.n_assets, np.nan)
        self.returns = np.full(self.model.n_assets, np.nan)

    @classmethod
    def from_model(cls, model: RiskModel, panel: pl.DataFrame | None = None) -> LiveSession:
        """A session on ``model`` (see :meth:`LiveModel.from_model` for ``panel``)."""
        return cls(LiveModel.from_model(model, panel))

    def reset(self) -> None:
        """Forget today's prices, returns and closes (a new day on the same model)."""
        self.closes[:] = np.nan
        self.returns[:] = np.nan
        self.updates = 0
        self.latest = None

    def set_closes(self, closes: Prices, *, unknown: Unknown = "raise") -> None:
        """The previous close of each asset (currency units, finite and > 0), against which prices are returns.

        ``closes``: a mapping symbol → close or a frame ``symbol, close``. Later calls add or replace closes."""
        symbols, values = _pairs(closes, "close", "closes")
        _check_values(symbols, values, "closes", positive=True)
        rows, known = self.model.locate(symbols, "closes", unknown)
        self.closes[rows[known]] = values[known]

    def apply(self, *, prices: Prices | None = None, returns: Prices | None = None, unknown: Unknown = "raise") -> None:
        """Record today's latest prices and/or returns of some assets (others keep theirs); nothing is solved.

        Parameters
        ----------
        prices: current prices (currency units, finite, > 0) as a mapping symbol → price or a frame
            ``symbol, price``; each becomes the return ``price / close − 1`` over the close set by
            :meth:`set_closes` (LiveError naming assets without one).
        returns: today's returns so far (fractions, finite, > −1) as a mapping or a frame ``symbol, return``.
        unknown: ``"raise"`` (LiveError naming them) or ``"drop"`` symbols the model does not know.

        A symbol in both takes its price. The whole update is checked before any of it is recorded: a bad value
        leaves the session unchanged.
        """
        staged: list[tuple[np.ndarray, np.ndarray]] = []
        if returns is not None:
            symbols, values = _pairs(returns, "return", "returns")
            _check_values(symbols, values, "returns", positive=False)
            rows, known = self.model.locate(symbols, "returns", unknown)
            staged.append((rows[known], values[known]))
        if prices is not None:
            symbols, values = _pairs(prices, "price", "prices")
            _check_values(symbols, values, "prices", positive=True)
            rows, known = self.model.locate(symbols, "prices", unknown)
            rows, values = rows[known], values[known]
            close = self.closes[rows]
            missing = np.flatnonzero(~np.isfinite(close))
            if missing.size:
                names = [self.model.symbols[rows[i]] for i in missing.tolist()]
                raise LiveError(
                    f"prices of {len(names)} symbol(s) without a previous close: {_examples(names)}; set the closes "
                    "first (or send returns)"
                )
            staged.append((rows, values / close - 1.0))
        for rows, values in staged:
            self.returns[rows] = values
        self.updates += 1

    def update(
        self, *, prices: Prices | None = None, returns: Prices | None = None, unknown: Unknown = "raise"
    ) -> LiveFactorReturns:
        """:meth:`apply` the update, then :meth:`solve`."""
        self.apply(prices=prices, returns=returns, unknown=unknown)
        return self.solve()

    def solve(self) -> LiveFactorReturns:
        """Today's regression on the returns recorded so far (one weighted least squares of N × K).

        BLAS runs single-threaded meanwhile: on matrices this small a multi-threaded BLAS is slower, and many
        times slower on a busy machine (a caller solving often holds :func:`single_threaded_blas` around its
        loop, which makes entering it here free)."""
        with single_threaded_blas():
            return self._solve()

    def _solve(self) -> LiveFactorReturns:
        live = self.model
        returns = self.returns.copy()
        priced = np.isfinite(returns)
        has_row = priced & _in_universe(live, priced)
        styles = live.style_exposure.copy()[None]
        if live.method == "barra" and live.styles:
            zero_absent_styles(styles, has_row[None])
        reasons = row_checks(returns[None], live.cap[None], live.sector_codes[None], None, styles, live.styles, 1)
        ok = has_row[None].copy()
        excluded: dict[str, int] = {}
        outside = int((priced & ~has_row).sum())
        if outside:
            excluded[_NOT_IN_UNIVERSE] = outside
        for reason, passes in reasons:
            left_out = int((ok & ~passes).sum())
            if left_out:
                excluded[reason] = left_out
            ok &= passes
        solved = solve_cross_sections(
            ok,
            returns[None],
            live.cap[None],
            live.sector_codes[None],
            None,
            styles,
            n_sectors=len(live.sectors),
            method=live.method,
            winsor_factor=live.winsor_factor,
            residualize_styles=live.residualize_styles,
        )
        skip = str(solved.skip_reason[0])
        dropped, reason = dropped_factors(live.factors, solved.dropped[0], skip)
        r2 = float(solved.r2[0])
        condition = float(solved.condition[0])
        result = LiveFactorReturns(
            as_of=live.as_of,
            factors=live.factors,
            factor_returns=solved.factor_returns[0],
            symbols=live.symbols,
            returns=returns,
            residual=solved.residual[0],
            n_assets=int(ok.sum()),
            n_priced=int(priced.sum()),
            excluded=excluded,
            r2=r2 if math.isfinite(r2) else None,
            condition_number=condition if math.isfinite(condition) and not skip else None,
            dropped=tuple(dropped),
            reason=reason,
            updates=self.updates,
        )
        self.latest = result
        return result

    def book(
        self,
        weights: Mapping[str, float] | pl.DataFrame,
        *,
        unknown: Unknown = "raise",
        allow_unnormalized: bool = False,
    ) -> LiveBook:
        """:func:`live_book` on this session's model."""
        return live_book(self.model, weights, unknown=unknown, allow_unnormalized=allow_unnormalized)

    def portfolio(self, book: LiveBook | Mapping[str, float] | pl.DataFrame) -> LivePortfolio:
        """A portfolio's live P&L, exposures and risk on the latest solve (solving first if none yet)."""
        if not isinstance(book, LiveBook):
            book = self.book(book)
        return live_portfolio(self.model, book, self.latest or self.solve())


def live_book(
    model: LiveModel,
    weights: Mapping[str, float] | pl.DataFrame,
    *,
    unknown: Unknown = "raise",
    allow_unnormalized: bool = False,
) -> LiveBook:
    """Align and check a portfolio once for :func:`live_portfolio`.

    Weights as in :func:`~factor_engine.portfolio.decompose_risk`: fractions of capital, a mapping symbol →
    weight or a frame ``symbol, weight``; ``unknown`` drops or raises on symbols the risk snapshot lacks.
    Raises PortfolioError (bad weights, percentage-like weights unless ``allow_unnormalized``, no snapshot).
    """
    snapshot = _snapshot(model)
    vector, dropped = snapshot._align(weights, "weights", unknown)
    messages = check_weights(vector, symbols=snapshot.symbols, allow_unnormalized=allow_unnormalized)
    vector.flags.writeable = False
    return LiveBook(vector, dropped, messages, allow_unnormalized)


def live_portfolio(model: LiveModel, book: LiveBook, result: LiveFactorReturns) -> LivePortfolio:
    """A portfolio's live figures on ``result`` (see the module docstring): P&L so far by factor and specific,
    and the exposures and daily risk of the weights drifted by today's returns. Pure: safe from any thread."""
    with single_threaded_blas():
        return _live_portfolio(model, book, result)


def _live_portfolio(model: LiveModel, book: LiveBook, result: LiveFactorReturns) -> LivePortfolio:
    snapshot = _snapshot(model)
    weights = book.weights
    returns = result.returns[model.snapshot_rows]
    priced = np.isfinite(returns)
    day_return = np.where(priced, returns, 0.0)
    pnl = float(weights @ day_return)
    order = [model.factors.index(f) for f in snapshot.factors]
    factor_returns = result.factor_returns[order]
    exposure = snapshot.exposures.T @ np.where(priced, weights, 0.0)
    factor_pnl = exposure * np.nan_to_num(factor_returns, nan=0.0)
    factor_total = float(factor_pnl.sum())
    growth = 1.0 + pnl
    drifted = weights * (1.0 + day_return) / (growth if growth > 0.0 else 1.0)
    held = weights != 0.0
    return LivePortfolio(
        pnl=pnl,
        factor_pnl=pl.DataFrame(  # no query (with_columns) on this path: it runs on every push of a stream
            [
                pl.Series("factor", snapshot.factors, dtype=pl.String),
                pl.Series("exposure", exposure),
                pl.Series("factor_return", factor_returns, nan_to_null=True),
                pl.Series("pnl", factor_pnl),
            ]
        ),
        factor_total=factor_total,
        specific_pnl=pnl - factor_total,
        n_holdings=int(held.sum()),
        n_priced=int((held & priced).sum()),
        exposures=portfolio_exposures(snapshot, drifted, allow_unnormalized=True),
        risk=decompose_risk(snapshot, drifted, allow_unnormalized=True),
        drifted_weights=drifted,
        warnings=book.warnings,
    )


def _snapshot(model: LiveModel) -> RiskModelSnapshot:
    if model.snapshot is None:
        raise PortfolioError(model.snapshot_error or "the model has no risk snapshot")
    return model.snapshot


def live_factor_returns(
    model: RiskModel | LiveModel,
    panel: pl.DataFrame | None = None,
    *,
    returns: Prices | None = None,
    prices: Prices | None = None,
    closes: Prices | None = None,
    unknown: Unknown = "raise",
) -> LiveFactorReturns:
    """Today's factor returns from one set of returns (or prices over ``closes``): a one-update
    :class:`LiveSession` (``panel`` as in :meth:`LiveModel.from_model`)."""
    live = model if isinstance(model, LiveModel) else LiveModel.from_model(model, panel)
    session = LiveSession(live)
    if closes is not None:
        session.set_closes(closes, unknown=unknown)
    return session.update(prices=prices, returns=returns, unknown=unknown)


def _in_universe(live: LiveModel, priced: np.ndarray) -> np.ndarray:
    """(N,) today's universe among the priced assets: the ``universe_size`` largest by the last close's cap
    (ordinal rank, as :func:`factor_engine.model.select_universe`), plus the include list."""
    if live.rank_order is None or int(priced.sum()) <= live.universe_size:
        return np.ones(priced.shape[0], dtype=bool)
    ranked = priced[live.rank_order]
    kept = np.zeros(priced.shape[0], dtype=bool)
    kept[live.rank_order] = ranked & (np.cumsum(ranked) <= live.universe_size)
    return kept | live.always


def _pairs(values: Prices, column: str, what: str) -> tuple[list[str], np.ndarray]:
    """(symbols, float values) of a mapping or a frame ``symbol, <column>``; LiveError for duplicates."""
    if isinstance(values, pl.DataFrame):
        if not {SYMBOL, column} <= set(values.columns):
            raise LiveError(f"{what} frame needs columns '{SYMBOL}', '{column}'; it has {values.columns}")
        symbols = values.get_column(SYMBOL).cast(pl.String).to_list()
        array = values.get_column(column).cast(pl.Float64).fill_null(np.nan).to_numpy()
        if len(set(symbols)) != len(symbols):
            seen: set[str] = set()
            twice = [s for s in symbols if s in seen or seen.add(s)]  # type: ignore[func-returns-value]
            raise LiveError(f"{what} name {len(set(twice))} symbol(s) more than once: {_examples(sorted(set(twice)))}")
        return symbols, array
    if not isinstance(values, Mapping):
        raise LiveError(f"{what} must be a mapping symbol → value or a polars frame, not {type(values).__name__}")
    symbols = [str(s) for s in values]
    try:
        array = np.fromiter(values.values(), dtype=np.float64, count=len(symbols))
    except (TypeError, ValueError):
        raise LiveError(f"{what} must be numbers") from None
    return symbols, array


def _check_values(symbols: Sequence[str], values: np.ndarray, what: str, *, positive: bool) -> None:
    """LiveError naming the symbols whose value is not finite, or not > 0 (prices) / > −1 (returns)."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | ((values <= 0.0) if positive else (values <= -1.0))
    if bad.any():
        names = [f"{symbols[i]}={float(values[i])!r}" for i in np.flatnonzero(bad).tolist()]
        rule = "finite and > 0" if positive else "finite fractions > -1"
        raise LiveError(f"{what} must be {rule}; {len(names)} are not: {', '.join(names[:_SHOWN])}")
