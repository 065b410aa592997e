"""Extend a saved model by the dates of a panel after its last date, without a rebuild.

Every estimator of the model is point in time, so an update only computes the new dates
(``docs/design/update.md``):

- the universe of the new dates is ranked as :func:`~factor_engine.model.select_universe` ranks it (each
  asset's previous row's cap); the universe of the earlier dates is the saved model's (its exposure rows);
- the styles are recomputed on the universe's rows from :func:`~factor_engine.styles.history_start` on: the
  dates and each asset's own rows their scores of the new dates (and of the date before, whose exposures the
  regression of the first new date uses) need, as each style declares (:class:`~factor_engine.styles.Lookback`);
  a style that declares none is recomputed on the whole history;
- the cross-sectional regression of each new date is the build's (per date);
- the factor covariance and specific risk continue from the state saved with the model
  (:mod:`factor_engine.risk.forecast`, :mod:`factor_engine.risk.specific_state`).

The result equals a build on the whole panel up to rounding. The panel may hold the whole history or only
its recent rows: those from the history start on (:attr:`UpdateResult.history_start`; an error names it when
the panel starts later) and each asset's latest row before the new dates (for its previous cap). What an
update cannot do, it refuses with the reason (rebuild instead): a sector label or style factor that is new in
the new dates, a factor the build left out becoming estimable.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from factor_engine.config import ModelConfig
from factor_engine.model import (
    ModelExtension,
    _exposures_at_close,
    _styles_filled,
    _with_fill_counts,
    append_model_dates,
    apply_sectors,
    covariance_adjustments,
    select_universe,
)
from factor_engine.model_folder import Manifest, ModelError, read_folder, read_state, read_table
from factor_engine.panel import DATE, MARKET_CAP, SYMBOL
from factor_engine.regression import MARKET, estimate_from_panel
from factor_engine.risk import FactorCovariance
from factor_engine.risk.forecast import CovarianceState, forecast_covariance
from factor_engine.risk.specific_state import SpecificState, extend_specific_risk
from factor_engine.styles import Lookback, get_style, history_start

__all__ = ["UpdateResult", "update_model"]

_TABLES = ("factor_returns", "exposures", "residuals", "diagnostics", "factor_covariance", "specific_risk")
_ABSENT_CAPS = "absent"


@dataclass(frozen=True)
class UpdateResult:
    """What :func:`update_model` did.

    Attributes
    ----------
    folder: the model folder written (None when the panel had no later date).
    new_dates: the dates added, in order.
    history_start: the first date whose rows the styles were recomputed on.
    """

    folder: Path | None
    new_dates: tuple[datetime.date, ...]
    history_start: datetime.date | None


@dataclass(frozen=True)
class _Saved:
    """The parts of a saved model an update reads (not the large tables' rows)."""

    meta: dict[str, Any]
    factor_returns: pl.DataFrame
    diagnostics: pl.DataFrame
    covariance: FactorCovariance | None
    keys: pl.DataFrame  # date, symbol of the exposure rows from `since` on
    state: dict[str, dict[str, np.ndarray]]


def update_model(
    model_dir: str | Path,
    panel: pl.DataFrame,
    *,
    out: str | Path | None = None,
    stage: Callable[[str], AbstractContextManager[object]] | None = None,
) -> UpdateResult:
    """Extend the model saved in ``model_dir`` by the dates of ``panel`` after its last date (see the module
    docstring), writing it in place or to ``out``.

    Parameters
    ----------
    model_dir: a model folder written by ``factor-engine build`` (or a previous update).
    panel: the panel the model was built from, extended by the new dates: the whole history or its recent rows.
    out: write the extended model here instead of in place (``model_dir`` is left unchanged).
    stage: called with the name of each stage and entered around it (progress, timing).

    Raises ModelError naming what stops the update (a model without update state, a panel starting too late,
    a new sector or factor).
    """
    run = stage or (lambda _name: nullcontext())
    source = Path(model_dir)
    with run("read model"):
        meta = read_folder(source, lambda _folder, manifest: manifest.meta, _TABLES)
        last_date = datetime.date.fromisoformat(meta["date_range"][1])
        new_dates = panel.filter(pl.col(DATE) > last_date).get_column(DATE).unique().sort()
        if new_dates.len() == 0:
            return UpdateResult(None, (), None)
        config = _model_config(meta)
        styles = tuple(meta["build"].get("styles", {}).get("used", ()))
        needs = _lookbacks(styles, config)
        saved = _read_saved(source, needs, lag=config.regression.effective_exposure_lag)
    factors, model_sectors = tuple(meta["factors"]), tuple(meta["sectors"])
    has_caps = not str(meta["build"].get("market_cap", "")).startswith(_ABSENT_CAPS)
    lag = config.regression.effective_exposure_lag
    with run("universe"):
        panel, _ = apply_sectors(panel, config.sectors)
        anchor = _anchor(saved.factor_returns, new_dates[0], lag)
        new_symbols = panel.filter(pl.col(DATE) >= anchor).get_column(SYMBOL).unique().to_list()
        start = _as_date(
            saved.keys.get_column(DATE).min()
            if any(need is None for need in needs)
            else history_start(saved.keys, anchor, [need for need in needs if need is not None], new_symbols)
        )
        universe = _universe(panel, saved.keys, start, last_date, config, has_caps)
    with run("styles"):
        notes: dict[str, Any] = {"styles": {}}
        style_frame = universe if has_caps else universe.drop(MARKET_CAP)
        scores, filled_by_date = _styles_filled(universe, style_frame, styles, config, notes)
    with run("factor returns"):
        regression = config.regression
        result = estimate_from_panel(
            universe,
            scores if styles else None,
            winsor_factor=regression.winsor_factor,
            residualize_styles=regression.residualize_styles,
            method="barra" if regression.method == "barra" else "toraniko",
            exposure_lag=lag,
        )
        _check_factors(result.factors, result.factor_returns, factors, meta, last_date)
        later = pl.col(DATE) > last_date
        factor_returns_new = _with_columns(result.factor_returns.filter(later), factors, None)
        diagnostics = _with_fill_counts(result.diagnostics, filled_by_date, lag).filter(later)
        exposures = _exposures_at_close(universe, scores, result).filter(later)
        exposures = _with_columns(exposures, (SYMBOL, *factors), dict.fromkeys(model_sectors, 0.0), keys=(DATE,))
        residuals = result.residuals.filter(later)
    factor_returns = pl.concat([saved.factor_returns, factor_returns_new.cast(saved.factor_returns.schema)])
    state: dict[str, dict[str, np.ndarray]] = {}
    covariance = saved.covariance
    if covariance is not None:
        with run("factor covariance"):
            covariance_state = CovarianceState.from_arrays(_component(saved.state, "factor_covariance", source))
            added, after = forecast_covariance(
                factor_returns, config.covariance, covariance_adjustments(config), state=covariance_state
            )
            covariance = _concatenated(covariance, added)
            if after is not None:
                state["factor_covariance"] = after.to_arrays()
    specific_new = None
    if "specific_risk" in saved.state:
        with run("specific risk"):
            specific_config = config.specific_risk if has_caps else replace(config.specific_risk, n_size_groups=1)
            specific_state = SpecificState.from_arrays(saved.state["specific_risk"], specific_config)
            caps = universe.filter(later).select(DATE, SYMBOL, MARKET_CAP)
            specific_new, specific_after = extend_specific_risk(specific_state, residuals, caps, exposures)
            state["specific_risk"] = specific_after.to_arrays()
    with run("write model"):
        notes_after = dict(meta["build"])
        extension = ModelExtension(
            exposures=exposures.select(DATE, SYMBOL, *factors),
            residuals=residuals,
            factor_returns=factor_returns,
            diagnostics=pl.concat([saved.diagnostics, diagnostics.select(saved.diagnostics.columns)], how="vertical"),
            specific_risk=specific_new,
            factor_covariance=covariance,
            state=state,
            notes={**notes_after, "updated": {"dates": new_dates.len(), "through": str(new_dates[-1])}},
        )
        folder = append_model_dates(source, extension, out=out)
    return UpdateResult(folder, tuple(new_dates.to_list()), start)


def _as_date(value: object) -> datetime.date:
    if not isinstance(value, datetime.date):
        raise ModelError(f"expected a date, got {value!r}")
    return value


def _model_config(meta: dict[str, Any]) -> ModelConfig:
    """The saved model's effective configuration, its styles fixed to those it used."""
    config = ModelConfig.from_mapping(meta["config"])
    used = tuple(meta["build"].get("styles", {}).get("used", ()))
    params = {name: value for name, value in config.styles.params.items() if name in used}
    return replace(config, styles=replace(config.styles, names=used, params=params, preset=None))


def _lookbacks(styles: tuple[str, ...], config: ModelConfig) -> list[Lookback | None]:
    params = config.styles.effective_params(styles)
    return [get_style(name).history(params.get(name, {})) for name in styles]


def _read_saved(source: Path, needs: list[Lookback | None], *, lag: int) -> _Saved:
    """The small tables, the state and the exposure rows' keys an update needs from the model in ``source``
    (the keys of the latest dates the styles' lookbacks can reach, all of them when a style declares none)."""

    def read(folder: Path, manifest: Manifest) -> _Saved:
        tables = manifest.tables
        if not manifest.state:
            raise ModelError(
                f"the model in {folder} has no update state (built before updates were possible, or cut by "
                "between()): rebuild it with factor-engine build"
            )
        factor_returns = read_table(folder, tables["factor_returns"])
        dates = factor_returns.get_column(DATE).sort()
        reach = None if any(need is None for need in needs) else _reach(needs, lag)
        keys = _exposure_keys(folder, manifest, None if reach is None or reach >= dates.len() else dates[-reach])
        covariance = None
        if "factor_covariance" in tables:
            horizon = int(manifest.meta.get("covariance_horizon") or 1)
            covariance = FactorCovariance.from_frame(read_table(folder, tables["factor_covariance"]), horizon=horizon)
        return _Saved(
            meta=manifest.meta,
            factor_returns=factor_returns,
            diagnostics=read_table(folder, tables["diagnostics"]),
            covariance=covariance,
            keys=keys,
            state=read_state(folder),
        )

    return read_folder(source, read, _TABLES)


def _reach(needs: list[Lookback | None], lag: int) -> int:
    """Dates of history read for the lookbacks: their dates, and twice their rows (an asset's own rows reach
    further back when it misses dates; an asset with fewer rows there makes the update read them all)."""
    dates = max((need.dates for need in needs if need is not None), default=0)
    rows = max((need.rows for need in needs if need is not None), default=0)
    return max(dates, 2 * rows) + lag + 2


def _exposure_keys(folder: Path, manifest: Manifest, since: datetime.date | None) -> pl.DataFrame:
    """``date, symbol`` of the saved exposure rows from ``since`` on (all when None), read from the parts that
    reach it."""
    parts = [part for part in manifest.tables["exposures"] if since is None or part.last_date is None
             or datetime.date.fromisoformat(str(part.last_date)) >= since]  # fmt: skip
    frame = pl.scan_parquet([folder / part.path for part in parts]).select(DATE, SYMBOL)
    if since is not None:
        frame = frame.filter(pl.col(DATE) >= since)
    return frame.collect()


def _anchor(factor_returns: pl.DataFrame, first_new: datetime.date, lag: int) -> datetime.date:
    """The first date whose styles the update needs: the exposure date of the first new date's regression,
    ``lag`` dates before it (the new date itself without a lag)."""
    if lag == 0:
        return first_new
    dates = factor_returns.get_column(DATE).sort()
    return dates[max(0, dates.len() - lag)] if dates.len() else first_new


def _universe(
    panel: pl.DataFrame,
    saved_keys: pl.DataFrame,
    start: datetime.date,
    last_date: datetime.date,
    config: ModelConfig,
    has_caps: bool,
) -> pl.DataFrame:
    """The universe's rows from ``start`` on: the saved model's up to ``last_date``, then the new dates' ranked
    by each asset's previous cap (its latest panel row before them included for the ranking, then dropped)."""
    first = _as_date(panel.get_column(DATE).min())
    if first > start:
        raise ModelError(
            f"the panel starts on {first}; updating this model needs its rows from {start} on (the history its "
            "styles look back on), or the whole history"
        )
    history = panel.filter((pl.col(DATE) >= start) & (pl.col(DATE) <= last_date)).join(
        saved_keys.filter(pl.col(DATE) >= start), on=[DATE, SYMBOL], how="semi"
    )
    missing = saved_keys.filter(pl.col(DATE) >= start).height - history.height
    if missing:
        raise ModelError(
            f"the panel lacks {missing} of the model's rows from {start} to {last_date}: give the panel the model "
            "was built from, extended by the new dates"
        )
    before = panel.filter(pl.col(DATE) <= last_date)
    previous = before.sort(DATE).group_by(SYMBOL, maintain_order=True).last()  # each asset's latest earlier row
    recent = pl.concat([previous.select(panel.columns), panel.filter(pl.col(DATE) > last_date)], how="vertical_relaxed")
    new = select_universe(recent, config.universe.size, config.universe.include).filter(pl.col(DATE) > last_date)
    universe = pl.concat([history, new.select(history.columns)], how="vertical_relaxed").sort(DATE, SYMBOL)
    if not has_caps:
        universe = universe.with_columns(pl.lit(1.0).alias(MARKET_CAP))
    return universe


def _check_factors(
    estimated: tuple[str, ...],
    factor_returns: pl.DataFrame,
    factors: tuple[str, ...],
    meta: dict[str, Any],
    last_date: datetime.date,
) -> None:
    """ModelError when the new dates bring a factor the model lacks: a new sector label, or a factor the build
    left out (no exposure on any date) now estimable."""
    dropped = set(meta["build"].get("factors_dropped", {}))
    later = factor_returns.filter(pl.col(DATE) > last_date)
    for name in estimated:
        if name in factors:
            continue
        if name in dropped:
            if later.get_column(name).drop_nulls().len():
                raise ModelError(
                    f"factor {name!r}, left out of the model when it was built, can now be estimated: rebuild "
                    "the model to include it"
                )
            continue
        kind = "sector" if name not in (MARKET,) else "factor"
        raise ModelError(f"{kind} {name!r} appears in the new dates but is not in the model: rebuild the model")


def _with_columns(
    frame: pl.DataFrame,
    columns: tuple[str, ...],
    fill: dict[str, float] | None,
    keys: tuple[str, ...] = (DATE,),
) -> pl.DataFrame:
    """``frame`` with ``keys`` and ``columns`` in that order, a column it lacks added as ``fill[column]`` (a sector
    without an asset on the new dates: exposure 0) or null Float64."""
    fill = fill or {}
    added = [pl.lit(fill.get(name), dtype=pl.Float64).alias(name) for name in columns if name not in frame.columns]
    return frame.with_columns(added).select(*keys, *columns)


def _component(state: dict[str, dict[str, np.ndarray]], name: str, folder: Path) -> dict[str, np.ndarray]:
    if name not in state:
        raise ModelError(f"the model in {folder} has no {name} state: rebuild it with factor-engine build")
    return state[name]


def _concatenated(saved: FactorCovariance, added: FactorCovariance) -> FactorCovariance:
    """The saved forecasts followed by the new ones (the same factors)."""
    if added.dates.len() == 0:
        return saved
    return FactorCovariance(
        dates=pl.concat([saved.dates, added.dates.cast(saved.dates.dtype)]),
        factors=saved.factors,
        values=np.concatenate([saved.values, added.values]),
        horizon=saved.horizon,
    )
