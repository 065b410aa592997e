"""The factor covariance forecast of a model: EWMA + Newey-West, then the eigenfactor and volatility regime
adjustments, on every date or, from the state of an earlier run, on the dates after it only.

A model extended by new dates needs their forecasts exactly as a run over all the dates makes them. The raw
forecasts are evaluated at the new dates directly (:func:`factor_covariance` with ``at``: each EWMA sum is a
weighted sum over the history, no recursion); the eigenfactor adjustment continues from the simulations of
the earlier run (:class:`EigenfactorState`: the same bias profiles, a new simulation replaying the earlier
ones' stops) and the regime adjustment from its EWMA sums (:class:`RegimeState`).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from factor_engine.panel import DATE
from factor_engine.risk.adjustments import (
    EigenfactorBlock,
    EigenfactorState,
    RegimeState,
    eigenfactor_with_state,
    volatility_regime_with_state,
)
from factor_engine.risk.covariance import CovarianceConfig, FactorCovariance, factor_covariance

__all__ = ["CovarianceAdjustments", "CovarianceState", "forecast_covariance"]


@dataclass(frozen=True)
class CovarianceAdjustments:
    """Which adjustments the forecast gets (the model configuration's ``[adjustments]``).

    eigenfactor: apply the eigenfactor risk adjustment with ``simulations`` paths, scaling ``scale`` and
        bias profiles at most ``every`` dates apart.
    vra_half_life: half-life (trading days) of the volatility regime adjustment; None disables it.
    seed: seed of the eigenfactor simulation.
    """

    eigenfactor: bool = True
    simulations: int = 1000
    scale: float = 1.4
    every: int = 126
    vra_half_life: float | None = 42.0
    seed: int = 0


@dataclass(frozen=True)
class CovarianceState:
    """The forecast's state after ``last_date`` (the last forecast date): what extending it needs."""

    last_date: datetime.date
    eigenfactor: EigenfactorState | None
    regime: RegimeState | None
    warmup: pl.DataFrame | None = None  # factor returns before a model's first date (a model cut at a start)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The state as named arrays (a model folder keeps them in an ``.npz`` file); :meth:`from_arrays` inverts."""
        arrays: dict[str, np.ndarray] = {"last_date": np.array([self.last_date.toordinal()], dtype=np.int64)}
        if self.warmup is not None:
            factors = [c for c in self.warmup.columns if c != DATE]
            arrays["warmup_dates"] = np.array([d.toordinal() for d in self.warmup[DATE].to_list()], dtype=np.int64)
            arrays["warmup_factors"] = np.asarray(factors, dtype=np.str_)
            arrays["warmup_values"] = self.warmup.select(pl.col(factors).cast(pl.Float64)).to_numpy()
        if self.eigenfactor is not None:
            eigen = self.eigenfactor
            arrays["eigen_settings"] = np.array([eigen.n_simulations, eigen.scale, eigen.every, eigen.seed])
            for i, block in enumerate(eigen.blocks):
                arrays[f"eigen_{i}_pattern"] = block.pattern
                arrays[f"eigen_{i}_n_dates"] = np.array([block.n_dates], dtype=np.int64)
                arrays[f"eigen_{i}_positions"] = block.positions
                arrays[f"eigen_{i}_histories"] = block.histories
                arrays[f"eigen_{i}_profiles"] = block.profiles
        if self.regime is not None:
            arrays["regime_vol"] = self.regime.vol
            arrays["regime_sums"] = np.array([self.regime.weighted, self.regime.weights])
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> CovarianceState:
        """The state saved by :meth:`to_arrays`."""
        eigenfactor = None
        if "eigen_settings" in arrays:
            n_simulations, scale, every, seed = arrays["eigen_settings"].tolist()
            blocks = []
            i = 0
            while f"eigen_{i}_pattern" in arrays:
                blocks.append(
                    EigenfactorBlock(
                        pattern=np.asarray(arrays[f"eigen_{i}_pattern"], dtype=bool),
                        n_dates=int(arrays[f"eigen_{i}_n_dates"][0]),
                        positions=np.asarray(arrays[f"eigen_{i}_positions"], dtype=np.int64),
                        histories=np.asarray(arrays[f"eigen_{i}_histories"]),
                        profiles=np.asarray(arrays[f"eigen_{i}_profiles"], dtype=np.float64),
                    )
                )
                i += 1
            eigenfactor = EigenfactorState(tuple(blocks), int(n_simulations), float(scale), int(every), int(seed))
        regime = None
        if "regime_vol" in arrays:
            weighted, weights = arrays["regime_sums"].tolist()
            regime = RegimeState(
                vol=np.asarray(arrays["regime_vol"], dtype=np.float64), weighted=weighted, weights=weights
            )
        last_date = datetime.date.fromordinal(int(arrays["last_date"][0]))
        warmup = None
        if "warmup_dates" in arrays:
            dates = [datetime.date.fromordinal(int(d)) for d in arrays["warmup_dates"]]
            values = np.asarray(arrays["warmup_values"], dtype=np.float64).reshape(len(dates), -1)
            factors = arrays["warmup_factors"].tolist()
            warmup = pl.DataFrame(
                {DATE: pl.Series(DATE, dates, dtype=pl.Date)}
                | {name: pl.Series(name, values[:, i], nan_to_null=True) for i, name in enumerate(factors)}
            )
        return cls(last_date=last_date, eigenfactor=eigenfactor, regime=regime, warmup=warmup)

    def with_warmup(self, earlier: pl.DataFrame) -> CovarianceState:
        """The state of a model whose dates before its first now start with ``earlier`` factor returns (``date`` +
        a column per factor): they are still needed, as the history of its later forecasts."""
        warmup = earlier if self.warmup is None else pl.concat([self.warmup, earlier], how="diagonal_relaxed")
        return dataclasses.replace(self, warmup=warmup)


def forecast_covariance(
    factor_returns: pl.DataFrame,
    config: CovarianceConfig,
    adjustments: CovarianceAdjustments,
    *,
    state: CovarianceState | None = None,
) -> tuple[FactorCovariance, CovarianceState | None]:
    """The adjusted factor covariance forecasts and the state after the last one (None when there is none).

    Parameters
    ----------
    factor_returns: ``date`` + one column per factor, the whole history (daily fractions).
    config: the covariance estimator.
    adjustments: the adjustments applied.
    state: the state of a run over the dates up to ``state.last_date``: only the later dates are forecast,
        equal to a run over all the dates (up to rounding); ``factor_returns`` then holds at least the dates
        since the state's warm-up (:meth:`CovarianceState.with_warmup`).
    """
    if state is None:
        covariance = factor_covariance(factor_returns, config)
    else:
        later = factor_returns.filter(pl.col(DATE) > state.last_date).get_column(DATE)
        if state.warmup is not None:  # a model cut at a start date: its earlier returns are history still
            factor_returns = pl.concat(
                [state.warmup.select(DATE, *[c for c in factor_returns.columns if c != DATE]), factor_returns],
                how="vertical_relaxed",
            )
        covariance = factor_covariance(factor_returns, config, at=later)
    if covariance.dates.len() == 0:
        return covariance, state
    eigen_state = None if state is None else state.eigenfactor
    if adjustments.eigenfactor:
        covariance, eigen_state = eigenfactor_with_state(
            covariance,
            n_simulations=adjustments.simulations,
            scale=adjustments.scale,
            every=adjustments.every,
            seed=adjustments.seed,
            state=eigen_state,
        )
    regime_state = None if state is None else state.regime
    if adjustments.vra_half_life is not None:
        covariance, regime_state = volatility_regime_with_state(
            covariance, factor_returns, half_life=adjustments.vra_half_life, state=regime_state
        )
    warmup = None if state is None else state.warmup
    return covariance, CovarianceState(covariance.dates[-1], eigen_state, regime_state, warmup)
