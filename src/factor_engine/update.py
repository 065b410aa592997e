"""Extend a saved model by the dates of a panel after its last date, without a rebuild.

Every estimator of the model is point in time, so an update only computes the new dates
(``docs/design/update.md``):

- the panel is taken as the build took it: a row without a market cap is left out, as if it were not in the
  panel (the rows of the new dates left out are counted in ``notes["updated"]`` and
  :attr:`UpdateResult.warnings`), and a model built without caps ignores the panel's;
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
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from factor_engine._grid import is_sorted_by_keys
from factor_engine._missing_caps import MissingCaps, leave_out_missing_caps, missing_caps
from factor_engine.config import ModelConfig
from factor_engine.model import (
    ModelExtension,
    RiskModel,
    _exposures_at_close,
    _styles_filled,
    _with_fill_counts,
    append_model_dates,
    apply_sectors,
    covariance_adjustments,
    estimate_configured,
    select_universe,
    specific_risk_config,
    universe_state,
)
from factor_engine.model_folder import Manifest, ModelError, read_folder, read_state, read_table
from factor_engine.panel import DATE, MARKET_CAP, SYMBOL
from factor_engine.risk import FactorCovariance
from factor_engine.risk.forecast import CovarianceState, forecast_covariance
from factor_engine.risk.specific_state import SpecificState, extend_specific_risk
from factor_engine.styles import Lookback, get_style, history_start

__all__ = [
    "ShortKeys",
    "UpdateInputs",
    "UpdateResult",
    "differences",
    "extend_model",
    "keys_reach",
    "model_config",
    "read_update_inputs",
    "update_model",
]

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
    warnings: what the update left out, one sentence each (rows of the new dates without a market cap); also in
        the model's ``notes["updated"]["warnings"]``.
    """

    folder: Path | None
    new_dates: tuple[datetime.date, ...]
    history_start: datetime.date | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpdateInputs:
    """What an update reads from a saved model (not the large tables' rows): its metadata (``model.json``), its
    factor returns, diagnostics and factor covariance, the ``date, symbol`` keys of its exposure rows over the
    dates its styles look back on (all of them when a style declares no lookback), and its update state."""

    meta: dict[str, Any]
    factor_returns: pl.DataFrame
    diagnostics: pl.DataFrame
    covariance: FactorCovariance | None
    keys: pl.DataFrame
    state: dict[str, dict[str, np.ndarray]]
    all_keys: bool = True  # whether ``keys`` reach the model's first date

    @property
    def last_date(self) -> datetime.date:
        return datetime.date.fromisoformat(self.meta["date_range"][1])

    @property
    def config(self) -> ModelConfig:
        """The saved model's effective configuration, its styles fixed to those it used."""
        return model_config(self.meta)


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
        if panel.filter(pl.col(DATE) > last_date).height == 0:
            return UpdateResult(None, (), None)
        inputs = read_update_inputs(source)
    try:
        extension, result = extend_model(inputs, panel, stage=stage)
    except ShortKeys:  # an asset's own rows reach further back than the keys read: read them all
        extension, result = extend_model(read_update_inputs(source, all_keys=True), panel, stage=stage)
    if extension is None:
        return result
    with run("write model"):
        folder = append_model_dates(source, extension, out=out)
    return replace(result, folder=folder)


def read_update_inputs(model_dir: str | Path, *, all_keys: bool = False) -> UpdateInputs:
    """The :class:`UpdateInputs` of the model saved in ``model_dir`` (ModelError when it has no update state);
    ``all_keys`` reads the keys of every date rather than those the lookbacks usually reach."""

    def read(folder: Path, manifest: Manifest) -> UpdateInputs:
        tables = manifest.tables
        if not manifest.state:
            raise ModelError(
                f"the model in {folder} has no update state (built before updates were possible, or cut before "
                "its last date by between()): rebuild it with factor-engine build"
            )
        factor_returns = read_table(folder, tables["factor_returns"])
        config = model_config(manifest.meta)
        reach = None if all_keys else keys_reach(config)
        dates = factor_returns.get_column(DATE).sort()
        since = None if reach is None or reach >= dates.len() else dates[-reach]
        keys = _exposure_keys(folder, manifest, since)
        covariance = None
        if "factor_covariance" in tables:
            horizon = int(manifest.meta.get("covariance_horizon") or 1)
            covariance = FactorCovariance.from_frame(read_table(folder, tables["factor_covariance"]), horizon=horizon)
        return UpdateInputs(
            meta=manifest.meta,
            factor_returns=factor_returns,
            diagnostics=read_table(folder, tables["diagnostics"]),
            covariance=covariance,
            keys=keys,
            state=read_state(folder),
            all_keys=since is None,
        )

    return read_folder(Path(model_dir), read, _TABLES)


def extend_model(
    inputs: UpdateInputs,
    panel: pl.DataFrame,
    *,
    stage: Callable[[str], AbstractContextManager[object]] | None = None,
) -> tuple[ModelExtension | None, UpdateResult]:
    """The extension of a saved model (read as ``inputs``) by the dates of ``panel`` after its last date (None
    when there is none), ready for :func:`~factor_engine.model.append_model_dates` or a store's append; the
    result's ``folder`` is None (nothing is written here)."""
    run = stage or (lambda _name: nullcontext())
    meta = inputs.meta
    last_date = inputs.last_date
    has_caps = not str(meta["build"].get("market_cap", "")).startswith(_ABSENT_CAPS)
    panel, missing = _caps_as_built(panel, has_caps, last_date)
    new_dates = panel.filter(pl.col(DATE) > last_date).get_column(DATE).unique().sort()
    if new_dates.len() == 0:
        return None, UpdateResult(None, (), None)
    config = inputs.config
    styles = tuple(meta["build"].get("styles", {}).get("used", ()))
    needs = _lookbacks(styles, config)
    factors, model_sectors = tuple(meta["factors"]), tuple(meta["sectors"])
    lag = config.regression.effective_exposure_lag
    with run("universe"):
        anchor = _anchor(inputs.factor_returns, new_dates[0], lag)
        new_symbols = panel.filter(pl.col(DATE) >= anchor).get_column(SYMBOL).unique().to_list()
        start = _as_date(
            inputs.keys.get_column(DATE).min()
            if any(need is None for need in needs)
            else history_start(inputs.keys, anchor, [need for need in needs if need is not None], new_symbols)
        )
        _check_keys_reach(inputs.keys, anchor, needs, new_symbols, inputs.state.get("universe"), inputs.all_keys)
        _check_dates_reach(inputs.keys, anchor, needs, inputs)
        universe = _universe(panel, inputs.keys, start, last_date, config, has_caps)
    with run("styles"):
        notes: dict[str, Any] = {"styles": {}}
        scored = universe.filter(pl.col(DATE) >= anchor).get_column(DATE).unique().sort().to_list()
        scores, filled_by_date = _styles_filled(universe, styles, config, notes, at=scored)
    with run("factor returns"):
        # the regression of each date is on its own: only the new dates and their exposure dates are solved
        universe = universe.filter(pl.col(DATE) >= anchor)
        result = estimate_configured(universe, scores if styles else None, config)
        _check_factors(result.factors, result.factor_returns, factors, meta, last_date)
        later = pl.col(DATE) > last_date
        factor_returns_new = _with_columns(result.factor_returns.filter(later), factors, None)
        diagnostics = _with_fill_counts(result.diagnostics, filled_by_date, lag).filter(later)
        exposures = _exposures_at_close(universe, scores, result).filter(later)
        exposures = _with_columns(exposures, (SYMBOL, *factors), dict.fromkeys(model_sectors, 0.0), keys=(DATE,))
        residuals = result.residuals.filter(later)
    factor_returns = pl.concat([inputs.factor_returns, factor_returns_new.cast(inputs.factor_returns.schema)])
    state: dict[str, dict[str, np.ndarray]] = {}
    covariance = inputs.covariance
    if covariance is not None:
        with run("factor covariance"):
            covariance_state = CovarianceState.from_arrays(_component(inputs.state, "factor_covariance"))
            added, after = forecast_covariance(
                factor_returns, config.covariance, covariance_adjustments(config), state=covariance_state
            )
            covariance = _concatenated(covariance, added)
            if after is not None:
                state["factor_covariance"] = after.to_arrays()
    specific_new = None
    if "specific_risk" in inputs.state:
        with run("specific risk"):
            specific_state = SpecificState.from_arrays(
                inputs.state["specific_risk"], specific_risk_config(config, has_caps)
            )
            caps = universe.filter(later).select(DATE, SYMBOL, MARKET_CAP)
            specific_new, specific_after = extend_specific_risk(specific_state, residuals, caps, exposures)
            state["specific_risk"] = specific_after.to_arrays()
    if "universe" in inputs.state:
        state["universe"] = universe_state(exposures, inputs.state["universe"])
    notes_after = dict(meta["build"])
    updated: dict[str, Any] = {"dates": new_dates.len(), "through": str(new_dates[-1])}
    warnings = (missing.warning(" of the new dates"),) if missing.rows else ()
    if missing.rows:
        updated |= {"market_cap_missing": missing.note(), "warnings": list(warnings)}
    extension = ModelExtension(
        exposures=exposures.select(DATE, SYMBOL, *factors),
        residuals=residuals,
        factor_returns=factor_returns,
        diagnostics=pl.concat([inputs.diagnostics, diagnostics.select(inputs.diagnostics.columns)], how="vertical"),
        specific_risk=specific_new,
        factor_covariance=covariance,
        state=state,
        notes={**notes_after, "updated": updated},
    )
    return extension, UpdateResult(None, tuple(new_dates.to_list()), start, warnings)


def _caps_as_built(panel: pl.DataFrame, has_caps: bool, last_date: datetime.date) -> tuple[pl.DataFrame, MissingCaps]:
    """The panel as the model's build takes it: without ``market_cap`` for a model built without caps (its caps
    are not used), else without the rows lacking a cap (as if they were not in the panel); and the rows of the
    new dates (after ``last_date``) left out for it. ModelError for a model weighted by cap when the panel has
    no cap at all or none on the new dates."""
    if not has_caps:
        return panel.drop(MARKET_CAP, strict=False), MissingCaps(0, panel.height)
    later = panel.filter(pl.col(DATE) > last_date)
    if later.height == 0:  # nothing to add
        return panel, MissingCaps(0, 0)
    if MARKET_CAP not in panel.columns:
        raise ModelError(
            "the model weights by market cap but the panel has no market_cap column: give the panel with its caps, "
            "or rebuild the model on a panel without them"
        )
    missing = missing_caps(later)
    if missing.every_row:
        raise ModelError(
            f"the model weights by market cap but market_cap is missing on every one of the panel's "
            f"{missing.panel_rows:,} rows after the model's last date {last_date}: give their caps"
        )
    panel, _ = leave_out_missing_caps(panel)
    return panel, missing


def _as_date(value: object) -> datetime.date:
    if not isinstance(value, datetime.date):
        raise ModelError(f"expected a date, got {value!r}")
    return value


def model_config(meta: dict[str, Any]) -> ModelConfig:
    """The saved model's effective configuration, its styles fixed to those it used."""
    config = ModelConfig.from_mapping(meta["config"])
    used = tuple(meta["build"].get("styles", {}).get("used", ()))
    params = {name: value for name, value in config.styles.params.items() if name in used}
    return replace(config, styles=replace(config.styles, names=used, params=params, preset=None))


def _lookbacks(styles: tuple[str, ...], config: ModelConfig) -> list[Lookback | None]:
    params = config.styles.effective_params(styles)
    return [get_style(name).history(params.get(name, {})) for name in styles]


class ShortKeys(ModelError):
    """The exposure keys read do not reach back to every row an asset's lookback needs: read them all
    (:func:`read_update_inputs` with ``all_keys``) and extend again."""


def _check_keys_reach(
    keys: pl.DataFrame,
    anchor: datetime.date,
    needs: list[Lookback | None],
    symbols: list[str],
    universe: Mapping[str, np.ndarray] | None,
    all_keys: bool = False,
) -> None:
    """ShortKeys when an asset of ``symbols`` has fewer of its own rows before ``anchor`` in ``keys`` than the
    lookbacks need, unless ``keys`` hold all its rows (``universe``: each asset's row count in the model,
    before any cut at a start date); ModelError when ``keys`` are all the model has (``all_keys``): rows its
    styles look back on were cut off with the dates before its start."""
    rows = max((need.rows for need in needs if need is not None), default=0)
    if rows <= 1:
        return
    held = (
        keys.filter(pl.col(SYMBOL).is_in(symbols))
        .group_by(SYMBOL)
        .agg(pl.len().alias("held"), (pl.col(DATE) < anchor).sum().alias("before"))
    )
    wanted = pl.DataFrame({SYMBOL: sorted(set(symbols))}).with_columns(pl.col(SYMBOL).cast(keys.schema[SYMBOL]))
    counts = wanted.join(held, on=SYMBOL, how="left").fill_null(0)
    short = counts.filter(pl.col("before") < rows - 1)
    if universe is not None:  # an asset whose every row the keys hold (a recent listing) has no more
        total = pl.DataFrame({SYMBOL: universe["symbols"].tolist(), "total": universe["rows"]})
        total = total.with_columns(pl.col(SYMBOL).cast(keys.schema[SYMBOL]))
        short = short.join(total, on=SYMBOL, how="left").filter(pl.col("held") < pl.col("total").fill_null(0))
    if short.height and all_keys:
        if universe is None:
            return  # every row of the model is read; nothing is known of rows before it
        raise ModelError(
            f"{short.height} asset(s) need rows from before the model's first date ({_as_date(keys[DATE].min())}),"
            " which were cut off when it was built: rebuild it with an earlier start"
        )
    if short.height:
        raise ShortKeys(f"{short.height} asset(s)' rows reach further back than the keys read")


def _check_dates_reach(
    keys: pl.DataFrame, anchor: datetime.date, needs: list[Lookback | None], inputs: UpdateInputs
) -> None:
    """ModelError when the styles look back on more dates than a model cut at a start date kept (its warm-up's
    rows are not stored); a model that starts where its data started needs none before it."""
    n_dates = max((need.dates for need in needs if need is not None), default=0)
    warmed = "warmup_dates" in inputs.state.get("factor_covariance", {})
    if not (inputs.all_keys and warmed and n_dates > 1):
        return
    held = keys.filter(pl.col(DATE) < anchor).get_column(DATE).n_unique()
    if held < n_dates - 1:
        raise ModelError(
            f"the styles look back on {n_dates} dates but the model keeps {held + 1} up to {anchor} (its start was "
            "cut off when it was built): rows from before the model's first date are needed; rebuild it with an "
            "earlier start"
        )


def keys_reach(config: ModelConfig) -> int | None:
    """Dates of saved exposure keys an update reads: the styles' lookback dates, twice their rows (an asset's
    own rows reach further back when it misses dates; history_start then finds the start within them) and
    the regression's lag; None (all of them) when a style declares no lookback."""
    styles = tuple(config.styles.names or ())
    needs = _lookbacks(styles, config)
    if any(need is None for need in needs):
        return None
    dates = max((need.dates for need in needs if need is not None), default=0)
    rows = max((need.rows for need in needs if need is not None), default=0)
    return max(dates, 2 * rows) + config.regression.effective_exposure_lag + 2


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
    window = panel.filter(pl.col(DATE) >= start)
    history_keys = saved_keys.filter(pl.col(DATE) >= start)
    history = window.filter(pl.col(DATE) <= last_date)
    per_date = [frame.group_by(DATE).len().sort(DATE) for frame in (history, history_keys)]
    if not per_date[0].equals(per_date[1]):  # the universe left some of the panel's rows out: its rows only
        history = history.join(history_keys, on=[DATE, SYMBOL], how="semi")
    if history.height < history_keys.height:
        raise ModelError(
            f"the panel lacks {history_keys.height - history.height} of the model's rows from {start} to "
            f"{last_date}: give the panel the model was built from, extended by the new dates"
        )
    new_rows = window.filter(pl.col(DATE) > last_date)
    # each asset's latest row before the new dates, for its previous cap: in the window, or earlier for one
    # that has none there
    previous = window.filter(pl.col(DATE) == last_date)  # most assets' latest row; the others' searched for
    unseen = new_rows.join(previous, on=SYMBOL, how="anti").get_column(SYMBOL).unique()
    if unseen.len():
        before = panel.filter((pl.col(DATE) < last_date) & pl.col(SYMBOL).is_in(unseen.implode()))
        latest = before.sort(DATE).group_by(SYMBOL, maintain_order=True).last()
        previous = pl.concat([previous, latest.select(previous.columns)])
    ranked = pl.concat([previous.select(panel.columns), new_rows], how="vertical_relaxed")
    ranked, _ = apply_sectors(ranked, config.sectors)
    new = select_universe(ranked, config.universe.size, config.universe.include).filter(pl.col(DATE) > last_date)
    history, _ = apply_sectors(history, config.sectors)
    universe = pl.concat([history, new.select(history.columns)], how="vertical_relaxed")
    if not is_sorted_by_keys(universe):
        universe = universe.sort(DATE, SYMBOL)
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
        # the market and the styles are the model's: what is new is a sector label
        raise ModelError(f"sector {name!r} appears in the new dates but is not in the model: rebuild the model")


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


def _component(state: dict[str, dict[str, np.ndarray]], name: str) -> dict[str, np.ndarray]:
    if name not in state:
        raise ModelError(f"the model has no {name} state: rebuild it with factor-engine build")
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


def differences(model: RiskModel, reference: RiskModel, since: datetime.date) -> dict[str, float]:
    """How far ``model`` (e.g. updated) is from ``reference`` (e.g. rebuilt on the whole panel) on the dates after
    ``since``: for factor returns, exposures, specific risk and factor covariance, the largest absolute difference
    over the largest absolute value of the reference, infinite where their dates, rows, factors or missing values
    differ; and the same for the exposures up to ``since`` ("earlier exposures": an update keeps the saved
    model's, which a rebuild reproduces up to rounding)."""

    def relative(ours: pl.DataFrame, theirs: pl.DataFrame, columns: list[str]) -> float:
        keys = [DATE, SYMBOL] if SYMBOL in theirs.columns else [DATE]
        ours, theirs = ours.sort(keys), theirs.sort(keys)
        if not ours.select(keys).equals(theirs.select(keys)) or not set(columns) <= set(ours.columns):
            return float("inf")
        x = ours.select(columns).to_numpy().astype(np.float64)
        y = theirs.select(columns).to_numpy().astype(np.float64)
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return float("inf")
        scale = np.nanmax(np.abs(y)) if np.isfinite(y).any() else 0.0
        return float(np.nanmax(np.abs(x - y)) / scale) if scale > 0 else 0.0

    later, earlier = pl.col(DATE) > since, pl.col(DATE) <= since
    factors = list(reference.factors)
    result = {
        "factor returns": relative(model.factor_returns.filter(later), reference.factor_returns.filter(later), factors),
        "exposures": relative(model.exposures.filter(later), reference.exposures.filter(later), factors),
    }
    if model.factors != reference.factors:
        result["factors"] = float("inf")
    if reference.specific_risk is not None:
        specific = model.specific_risk if model.specific_risk is not None else reference.specific_risk.clear()
        result["specific risk"] = relative(
            specific.filter(later), reference.specific_risk.filter(later), ["specific_vol"]
        )
    ours, theirs = model.factor_covariance, reference.factor_covariance
    if theirs is not None:
        if ours is None or not ours.dates.equals(theirs.dates):
            result["factor covariance"] = float("inf")
        else:
            rows = (theirs.dates > since).to_numpy()
            mine, other = ours.values[rows], theirs.values[rows]
            same_missing = np.array_equal(np.isnan(mine), np.isnan(other))
            scale = np.nanmax(np.abs(other)) if np.isfinite(other).any() else 0.0
            gap = np.nanmax(np.abs(mine - other)) / scale if scale > 0 else 0.0
            result["factor covariance"] = float(gap) if same_missing else float("inf")
    result["earlier exposures"] = relative(
        model.exposures.filter(earlier), reference.exposures.filter(earlier), factors
    )
    return result
