"""The risk model artifact: build it from a panel and a configuration, save it to a folder, load it back.

``build_model`` runs universe selection → style scores → factor returns (→ factor covariance → specific risk
as those stages are configured) and returns a :class:`RiskModel`. ``RiskModel.save(folder)`` writes, in daily
units:

- ``factor_returns.parquet``: ``date`` + one column per factor;
- ``exposures.parquet``: ``date, symbol`` + one column per factor — the exposures known at that date's close;
- ``residuals.parquet``: ``date, symbol, residual``;
- ``diagnostics.parquet``: the regression's per-date diagnostics;
- ``specific_risk.parquet``: ``date, symbol, specific_vol`` — the specific volatility forecast (daily sd)
  made at each date's close;
- ``factor_covariance.parquet``: ``date, factor`` + one column per factor — the forecast made at each date's
  close (daily units × the configured horizon), for every date once enough history exists;
- ``model.json``: the effective configuration, factor list, date range, units and engine version.

``load_model(folder)`` reads them back with identical numbers.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from factor_engine import __version__
from factor_engine._dense import run_parallel
from factor_engine.config import ModelConfig
from factor_engine.panel import DATE, MARKET_CAP, SECTOR, SYMBOL
from factor_engine.regression import MARKET, FactorReturns, estimate_from_panel
from factor_engine.risk import (
    FactorCovariance,
    eigenfactor_adjustment,
    factor_covariance,
    specific_risk,
    volatility_regime_adjustment,
)
from factor_engine.styles import compute_styles
from factor_engine.xsection import top_n_by_group

__all__ = [
    "ModelError",
    "RiskModel",
    "build_model",
    "forecast_factor_covariance",
    "load_model",
    "select_universe",
]

_FILES = ("factor_returns", "exposures", "residuals", "diagnostics")
COVARIANCE_FILE = "factor_covariance.parquet"
SPECIFIC_FILE = "specific_risk.parquet"


class ModelError(ValueError):
    """A model folder that cannot be read, or a build that cannot run; the message says which file or step."""


@dataclass(frozen=True)
class RiskModel:
    """A built factor risk model (daily units).

    Attributes
    ----------
    factor_returns: ``date`` + one column per factor (daily returns, fractions).
    exposures: ``date, symbol`` + one column per factor, known at that date's close.
    residuals: ``date, symbol, residual`` (daily, fractions).
    diagnostics: per-date regression diagnostics (see :class:`factor_engine.FactorReturns`).
    factors, sectors, styles: factor names in column order.
    factor_covariance: the forecast factor covariance of every date with enough history.
    specific_risk: ``date, symbol, specific_vol`` forecasts (daily sd, fraction).
    config: the effective configuration (JSON-compatible).
    """

    factor_returns: pl.DataFrame
    exposures: pl.DataFrame
    residuals: pl.DataFrame
    diagnostics: pl.DataFrame
    factors: tuple[str, ...]
    sectors: tuple[str, ...]
    styles: tuple[str, ...]
    factor_covariance: FactorCovariance | None = None
    specific_risk: pl.DataFrame | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def between(self, start: datetime.date | None = None, end: datetime.date | None = None) -> RiskModel:
        """The model restricted to the dates in ``[start, end]`` (inclusive; None = open): every frame and
        forecast keeps the rows of those dates, nothing is recomputed — e.g. to drop the warm-up history a
        build used for style look-backs and covariance half-lives."""

        def window(frame: pl.DataFrame) -> pl.DataFrame:
            keep = pl.lit(True)
            if start is not None:
                keep &= pl.col(DATE) >= start
            if end is not None:
                keep &= pl.col(DATE) <= end
            return frame.filter(keep) if DATE in frame.columns else frame

        covariance = self.factor_covariance
        if covariance is not None:
            mask = np.ones(covariance.dates.len(), dtype=bool)
            if start is not None:
                mask &= (covariance.dates >= start).to_numpy()
            if end is not None:
                mask &= (covariance.dates <= end).to_numpy()
            covariance = FactorCovariance(
                dates=covariance.dates.filter(pl.Series(mask)),
                factors=covariance.factors,
                values=covariance.values[mask],
                horizon=covariance.horizon,
            )
        return replace(
            self,
            factor_returns=window(self.factor_returns),
            exposures=window(self.exposures),
            residuals=window(self.residuals),
            diagnostics=window(self.diagnostics),
            factor_covariance=covariance,
            specific_risk=None if self.specific_risk is None else window(self.specific_risk),
        )

    def metadata(self) -> dict[str, Any]:
        """What ``model.json`` records."""
        dates = self.factor_returns[DATE]
        return {
            "engine": "factor_engine",
            "engine_version": __version__,
            "units": "daily; returns and volatilities as fractions",
            "factors": list(self.factors),
            "sectors": list(self.sectors),
            "styles": list(self.styles),
            "date_range": [str(dates.min()), str(dates.max())] if dates.len() else [None, None],
            "covariance_horizon": None if self.factor_covariance is None else self.factor_covariance.horizon,
            "config": self.config,
        }

    def save(self, folder: str | Path) -> Path:
        """Write the model to ``folder`` (created if needed); files are written to a temporary name and
        renamed, so an interrupted save never leaves a half-written file under a final name."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        frames = {f"{name}.parquet": getattr(self, name) for name in _FILES}
        if self.factor_covariance is not None:
            frames[COVARIANCE_FILE] = self.factor_covariance.to_frame()
        if self.specific_risk is not None:
            frames[SPECIFIC_FILE] = self.specific_risk
        # polars writes without the GIL: the files are written side by side
        run_parallel(
            lambda item: _atomic_write(target / item[0], item[1].write_parquet),
            sorted(frames.items(), key=lambda item: -item[1].estimated_size()),
        )
        text = json.dumps(self.metadata(), indent=2)
        _atomic_write(target / "model.json", lambda path: path.write_text(text))
        return target


def _atomic_write(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    temporary.replace(path)


def load_model(folder: str | Path) -> RiskModel:
    """Read a model written by :meth:`RiskModel.save`."""
    source = Path(folder)
    meta_path = source / "model.json"
    if not meta_path.is_file():
        raise ModelError(f"{source} is not a model folder: {meta_path.name} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta_path} is not valid JSON: {exc}") from exc
    frames = {}
    for name in _FILES:
        path = source / f"{name}.parquet"
        if not path.is_file():
            raise ModelError(f"model folder {source} lacks {path.name}")
        frames[name] = pl.read_parquet(path)
    covariance_path = source / COVARIANCE_FILE
    covariance = None
    if covariance_path.is_file():
        covariance = FactorCovariance.from_frame(
            pl.read_parquet(covariance_path), horizon=int(meta.get("covariance_horizon") or 1)
        )
    specific_path = source / SPECIFIC_FILE
    return RiskModel(
        **frames,
        factor_covariance=covariance,
        specific_risk=pl.read_parquet(specific_path) if specific_path.is_file() else None,
        factors=tuple(meta["factors"]),
        sectors=tuple(meta["sectors"]),
        styles=tuple(meta["styles"]),
        config=meta["config"],
    )


def select_universe(panel: pl.DataFrame, size: int, include: Sequence[str] = ()) -> pl.DataFrame:
    """The ``size`` largest assets by market cap on each date (all of them when ``size`` is 0), plus the rows
    of the ``include`` symbols, sorted by (date, symbol)."""
    if size == 0:
        return panel
    if not include:
        return top_n_by_group(panel, size, rank_col=MARKET_CAP, over=DATE).sort(DATE, SYMBOL).collect()
    ranked = top_n_by_group(panel, size, rank_col=MARKET_CAP, over=DATE, keep_only=False)
    kept = (pl.col("rank_mask") == 1) | pl.col(SYMBOL).is_in(list(include))
    return ranked.filter(kept).drop("rank_mask").sort(DATE, SYMBOL).collect()


def build_model(
    panel: pl.DataFrame,
    config: ModelConfig | None = None,
    *,
    stage: Callable[[str], AbstractContextManager[object]] | None = None,
) -> RiskModel:
    """Build a risk model from a validated panel (see :func:`factor_engine.validate_panel`).

    Parameters
    ----------
    panel: long frame with ``date, symbol, asset_returns, market_cap, sector`` and the style inputs.
    config: the model configuration; defaults when None.
    stage: called with the name of each stage (universe, styles, factor returns, exposures, factor
        covariance, specific risk) and entered around it, e.g. to show progress or time the stages.
    """
    config = config or ModelConfig()
    run = stage or (lambda _name: nullcontext())
    with run("universe"):
        universe = select_universe(panel, config.universe.size, config.universe.include)
    with run("styles"):
        scores = compute_styles(universe, list(config.styles.names), params=config.styles.effective_params())
    regression = config.regression
    with run("factor returns"):
        result: FactorReturns = estimate_from_panel(
            universe,
            scores,
            winsor_factor=regression.winsor_factor,
            residualize_styles=regression.residualize_styles,
            method="barra" if regression.method == "barra" else "toraniko",
            exposure_lag=regression.effective_exposure_lag,
        )
    if result.factor_returns.height == 0:
        raise ModelError(f"no date could be estimated: {_why_no_date(result)}")
    with run("exposures"):
        exposures = _exposures_at_close(universe, scores, result)
    with run("factor covariance"):
        covariance = forecast_factor_covariance(result.factor_returns, config)
    with run("specific risk"):
        specific = specific_risk(
            result.residuals, universe.select(DATE, SYMBOL, MARKET_CAP), exposures, config.specific_risk
        )
    return RiskModel(
        factor_returns=result.factor_returns,
        exposures=exposures,
        residuals=result.residuals,
        diagnostics=result.diagnostics,
        factors=result.factors,
        sectors=result.sectors,
        styles=result.styles,
        factor_covariance=covariance,
        specific_risk=specific,
        config=config.effective(),
    )


def _why_no_date(result: FactorReturns) -> str:
    """The reasons no date had a factor-return estimate: skipped dates and excluded rows, most frequent first."""
    parts = []
    if result.diagnostics.height:
        reasons = result.diagnostics.group_by("reason").len().sort("len", descending=True)
        shown = ", ".join(f"{r['reason']!r} on {r['len']} date(s)" for r in reasons.head(3).iter_rows(named=True))
        parts.append(f"{result.diagnostics.height} date(s) skipped ({shown})")
    if result.excluded.height:
        rows = result.excluded.sort("n_rows", descending=True).head(3)
        parts.append("rows left out: " + ", ".join(f"{r['reason']} ×{r['n_rows']}" for r in rows.iter_rows(named=True)))
    return "; ".join(parts) or "the panel has no usable rows"


def forecast_factor_covariance(factor_returns: pl.DataFrame, config: ModelConfig) -> FactorCovariance:
    """The configured factor covariance forecast: EWMA + Newey-West, then the eigenfactor and volatility
    regime adjustments when enabled."""
    covariance = factor_covariance(factor_returns, config.covariance)
    adjustments = config.adjustments
    if adjustments.eigenfactor and covariance.values.shape[0]:
        decay = 0.5 ** (1.0 / config.covariance.corr_half_life)
        covariance = eigenfactor_adjustment(
            covariance,
            effective_observations=max((1 + decay) / (1 - decay), len(covariance.factors) + 1.0),
            n_simulations=adjustments.eigenfactor_simulations,
            scale=adjustments.eigenfactor_scale,
            every=adjustments.eigenfactor_every,
        )
    if adjustments.vra_half_life is not None and covariance.values.shape[0]:
        covariance = volatility_regime_adjustment(covariance, factor_returns, half_life=adjustments.vra_half_life)
    return covariance


def _exposures_at_close(universe: pl.DataFrame, scores: pl.DataFrame, result: FactorReturns) -> pl.DataFrame:
    """``date, symbol`` + one column per factor: each asset's exposures as known at that date's close."""
    sector_dummies = [(pl.col(SECTOR) == name).cast(pl.Float64).alias(name) for name in result.sectors]
    base = universe.select(DATE, SYMBOL, pl.lit(1.0).alias(MARKET), *sector_dummies)
    if scores.select(DATE, SYMBOL).equals(base.select(DATE, SYMBOL)):  # same rows in the same order
        combined = base.hstack(scores.select(result.styles).get_columns())
    else:
        combined = base.join(scores.select(DATE, SYMBOL, *result.styles), on=[DATE, SYMBOL], how="left")
    return combined.select(DATE, SYMBOL, *result.factors)
