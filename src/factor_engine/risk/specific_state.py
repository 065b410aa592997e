"""Specific risk extended to later dates from the state of an earlier run (a model update).

The state after a run (:class:`SpecificState`) holds, per asset, what the forecast of a later date needs from
the dates before it (see :mod:`factor_engine.risk.specific` for the method):

- the Newey–West EWMA sums of ``u²``, ``P`` and, per lag, ``u_s u_{s−l}`` and ``P_s P_{s−l}`` after the last date
  (the time-series estimate continues the recursion from them);
- the residuals of the last ``max(full_history, nw_lags)`` dates: the lagged terms of the first new dates, the
  observation count of the blend weight's window and the window of the fat-tail factor;
- the observations so far, the latest fat-tail factor, and the last date's shrunk forecast and cap with the
  regime adjustment's EWMA sums (the bias statistic of the first new date compares its residuals with them).

:func:`extend_specific_risk` forecasts the later dates with the same kernels as the full run, so the result
equals a run over all the dates up to rounding (the EWMA sums are continued rather than recomputed).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from factor_engine._grid import Grid, build_grid, sort_by_keys
from factor_engine.panel import DATE, MARKET_CAP
from factor_engine.risk.specific import (
    RESIDUAL,
    RegimeContext,
    SpecificRiskConfig,
    TimeSeriesState,
    _check_frame,
    _fat_tail_factor,
    _finish,
    _gridded,
    _newey_west_variance,
    time_series_specific_risk,
)

__all__ = ["SpecificState", "extend_specific_risk", "specific_risk_with_state"]


@dataclass(frozen=True, eq=False)
class SpecificState:
    """Specific risk's state after ``last_date`` (see the module docstring); arrays are per asset of
    ``symbols`` (sorted), rows of ``recent`` oldest first.

    Attributes
    ----------
    symbols: (N,) the assets with a residual so far.
    last_date: the last date forecast.
    n_dates: dates on the residuals' axis so far (the next date's position, for the fat-tail schedule).
    sums: (2 + 2 nw_lags, N) EWMA sums after the last date: ``u²``, ``P``, then per lag ``u u₋ₗ``, ``P P₋ₗ``.
    recent: (W, N) residuals of the last ``W = max(full_history, nw_lags)`` dates, NaN where unobserved or
        before the first date.
    count: (N,) observed residuals so far.
    fat_tail: (N,) the fat-tail factor of the latest evaluation (1 without the structural blend).
    regime: the regime adjustment's view of the last date.
    config: the configuration the state was made with.
    """

    symbols: pl.Series
    last_date: datetime.date
    n_dates: int
    sums: np.ndarray
    recent: np.ndarray
    count: np.ndarray
    fat_tail: np.ndarray
    regime: RegimeContext
    config: SpecificRiskConfig

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The state as named arrays (a model folder keeps them in an ``.npz`` file); :meth:`from_arrays` inverts
        given the same configuration."""
        return {
            "symbols": np.asarray(self.symbols.to_list(), dtype=np.str_),
            "last_date": np.array([self.last_date.toordinal()], dtype=np.int64),
            "n_dates": np.array([self.n_dates], dtype=np.int64),
            "sums": self.sums,
            "recent": self.recent,
            "count": self.count,
            "fat_tail": self.fat_tail,
            "regime_shrunk": self.regime.shrunk,
            "regime_cap": self.regime.cap,
            "regime_sums": self.regime.sums,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], config: SpecificRiskConfig) -> SpecificState:
        """The state saved by :meth:`to_arrays` (made with ``config``: its lags and window fix the shapes)."""
        n_sums, width = 2 + 2 * config.nw_lags, _context_rows(config)
        if arrays["sums"].shape[0] != n_sums or arrays["recent"].shape[0] != width:
            raise ValueError(
                f"the specific risk state has {arrays['sums'].shape[0]} sums and {arrays['recent'].shape[0]} "
                f"recent dates; the configuration needs {n_sums} and {width}"
            )
        return cls(
            symbols=pl.Series("symbol", arrays["symbols"].tolist(), dtype=pl.String),
            last_date=datetime.date.fromordinal(int(arrays["last_date"][0])),
            n_dates=int(arrays["n_dates"][0]),
            sums=np.asarray(arrays["sums"], dtype=np.float64),
            recent=np.asarray(arrays["recent"], dtype=np.float64),
            count=np.asarray(arrays["count"], dtype=np.int64),
            fat_tail=np.asarray(arrays["fat_tail"], dtype=np.float64),
            regime=RegimeContext(
                shrunk=np.asarray(arrays["regime_shrunk"], dtype=np.float64),
                cap=np.asarray(arrays["regime_cap"], dtype=np.float64),
                sums=np.asarray(arrays["regime_sums"], dtype=np.float64),
            ),
            config=config,
        )


def _context_rows(config: SpecificRiskConfig) -> int:
    return max(config.full_history, config.nw_lags)


def specific_risk_with_state(
    residuals: pl.DataFrame,
    market_cap: pl.DataFrame,
    exposures: pl.DataFrame | None = None,
    config: SpecificRiskConfig | None = None,
) -> tuple[pl.DataFrame, SpecificState]:
    """:func:`factor_engine.risk.specific.specific_risk` (same parameters and result), also returning the
    :class:`SpecificState` after its last date."""
    return finish_with_state(time_series_specific_risk(residuals, market_cap, config), exposures)


def finish_with_state(
    state: TimeSeriesState, exposures: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, SpecificState]:
    """:func:`factor_engine.risk.specific.finish_specific_risk`, also returning the :class:`SpecificState`."""
    frame, shrunk, regime = _finish(state, exposures)
    config = state.config
    resid = state.resid
    n_dates = resid.shape[0]
    width = _context_rows(config)
    recent = np.full((width, resid.shape[1]), np.nan)
    kept = min(width, n_dates)
    recent[width - kept :] = resid[n_dates - kept :]
    if config.structural:
        evaluated = (n_dates - 1) // config.robust_every * config.robust_every
        fat_tail = _fat_tail_factor(resid[max(0, evaluated - config.full_history + 1) : evaluated + 1])
    else:
        fat_tail = np.ones(resid.shape[1])
    return frame, SpecificState(
        symbols=state.grid.symbols,
        last_date=state.grid.date_series()[-1],
        n_dates=n_dates,
        sums=state.sums,
        recent=recent,
        count=state.count[-1].astype(np.int64),
        fat_tail=fat_tail,
        regime=RegimeContext(shrunk=shrunk[-1].copy(), cap=state.cap[-1].copy(), sums=regime),
        config=config,
    )


def extend_specific_risk(
    before: SpecificState,
    residuals: pl.DataFrame,
    market_cap: pl.DataFrame,
    exposures: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, SpecificState]:
    """The specific risk forecasts of the dates after ``before.last_date`` and the state after them.

    Parameters
    ----------
    before: the state of a run over the earlier dates (:func:`specific_risk_with_state` or an extension).
    residuals, market_cap, exposures: as in :func:`factor_engine.risk.specific.specific_risk`; rows up to
        ``before.last_date`` are ignored (the whole history may be passed).

    Returns
    -------
    ``date, symbol, specific_vol`` of the later dates (as a run over all dates would forecast them) and the
    :class:`SpecificState` after the last of them (``before`` when there is no later date).
    """
    config = before.config
    residuals = sort_by_keys(_check_frame(residuals, "residuals", (RESIDUAL,)))
    residuals = residuals.filter(pl.col(DATE) > before.last_date)
    if residuals.height == 0:
        return pl.DataFrame(schema={DATE: pl.Date, "symbol": pl.String, "specific_vol": pl.Float64}), before
    market_cap = _check_frame(market_cap, "market_cap", (MARKET_CAP,))
    later = build_grid([residuals])
    symbols = pl.concat([before.symbols, later.symbols]).unique().sort()
    grid = Grid(days=later.days, symbols=symbols)
    t, n, has_row, resid, present, cap_cells, cap = _gridded(grid, residuals, market_cap)
    n_dates, n_symbols = grid.n_dates, grid.n_symbols

    # the earlier state on the assets of this run (an asset new here starts from nothing)
    position = (
        pl.DataFrame({"symbol": symbols})
        .with_row_index("at")
        .join(
            pl.DataFrame({"symbol": before.symbols}).with_row_index("was"),
            on="symbol",
            how="left",
            maintain_order="left",
        )
    )
    was = position["was"].fill_null(-1).cast(pl.Int64).to_numpy()
    known = was >= 0

    def widen(values: np.ndarray, fill: float) -> np.ndarray:
        wide = np.full((*values.shape[:-1], n_symbols), fill, dtype=values.dtype)
        wide[..., known] = values[..., was[known]]
        return wide

    sums = widen(before.sums, 0.0)
    recent = widen(before.recent, np.nan)
    context = recent.shape[0]
    extended = np.vstack([recent, resid])
    observed = np.isfinite(extended)
    decay = 0.5 ** (1.0 / config.half_life)
    after_sums = np.zeros_like(sums)
    with np.errstate(invalid="ignore"):
        variance = _newey_west_variance(
            extended, observed, decay, config.nw_lags, context=context, initial=sums, final=after_sums
        )
    count = widen(before.count, 0) + np.cumsum(present, axis=0)
    with np.errstate(invalid="ignore"):
        sigma_ts = np.where(count >= config.min_periods, np.sqrt(variance), np.nan)

    fat_tail = widen(before.fat_tail, 1.0)
    if config.structural:
        window, start = config.full_history, config.effective_blend_start
        running = np.cumsum(observed, axis=0)
        in_window = running[context:] - running[context - window : context - window + n_dates]
        history = np.clip((in_window - start) / (window - start), 0.0, 1.0)
        gamma = np.empty((n_dates, n_symbols))
        for row in range(n_dates):
            if (before.n_dates + row) % config.robust_every == 0:
                fat_tail = _fat_tail_factor(extended[context + row - window + 1 : context + row + 1])
            gamma[row] = history[row] * fat_tail
    else:
        gamma = np.ones_like(sigma_ts)

    state = TimeSeriesState(
        grid, t, n, has_row, resid, present, market_cap, cap_cells, cap, sigma_ts, count, gamma, after_sums, config
    )
    regime_before = RegimeContext(
        shrunk=widen(before.regime.shrunk, np.nan), cap=widen(before.regime.cap, np.nan), sums=before.regime.sums
    )
    frame, shrunk, regime = _finish(state, exposures, regime_before)
    return frame, SpecificState(
        symbols=symbols,
        last_date=grid.date_series()[-1],
        n_dates=before.n_dates + n_dates,
        sums=after_sums,
        recent=extended[-context:],
        count=count[-1].astype(np.int64),
        fat_tail=fat_tail,
        regime=RegimeContext(shrunk=shrunk[-1].copy(), cap=cap[-1].copy(), sums=regime),
        config=config,
    )
