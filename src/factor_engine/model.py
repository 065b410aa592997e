"""The risk model artifact: build it from a panel and a configuration, save it to a folder, load it back.

``build_model`` runs universe selection → style scores → factor returns (→ factor covariance → specific risk
as those stages are configured) and returns a :class:`RiskModel`. ``RiskModel.save(folder)`` writes these
tables, in daily units, as Parquet parts listed by ``model.json`` (the layout: :mod:`factor_engine.model_folder`):

- ``factor_returns``: ``date`` + one column per factor;
- ``exposures``: ``date, symbol`` + one column per factor — the exposures known at that date's close;
- ``residuals``: ``date, symbol, residual``;
- ``diagnostics``: the regression's per-date diagnostics;
- ``specific_risk``: ``date, symbol, specific_vol`` — the specific volatility forecast (daily sd) made at
  each date's close;
- ``factor_covariance``: ``date, factor`` + one column per factor — the forecast made at each date's close
  (daily units × the configured horizon), for every date once enough history exists;

and in ``model.json`` the effective configuration, factor list, date range, units and engine version.
``load_model(folder)`` reads them back with identical numbers (also from a folder of the single-file layout
before). ``append_model_dates`` extends a saved model by new dates without rewriting its large tables.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from factor_engine import __version__
from factor_engine._dense import single_threaded_blas
from factor_engine._missing_caps import leave_out_missing_caps
from factor_engine.config import ModelConfig, SectorsConfig
from factor_engine.model_folder import Manifest, ModelError, State, append_folder, read_folder, read_table, write_folder
from factor_engine.panel import DATE, MARKET_CAP, SECTOR, SYMBOL
from factor_engine.regression import MARKET, FactorReturns, estimate_from_panel
from factor_engine.risk import FactorCovariance
from factor_engine.risk.forecast import CovarianceAdjustments, CovarianceState, forecast_covariance
from factor_engine.risk.specific import RESIDUAL, SPECIFIC_VOL, SpecificRiskConfig, time_series_specific_risk
from factor_engine.risk.specific_state import finish_with_state
from factor_engine.styles import StyleFactor, compute_styles, get_style
from factor_engine.styles.fill import fill_context

__all__ = [
    "LARGE_TABLES",
    "SMALL_TABLES",
    "ModelError",
    "ModelExtension",
    "RiskModel",
    "append_model_dates",
    "apply_sectors",
    "build_model",
    "forecast_factor_covariance",
    "load_model",
    "select_universe",
]

# one row per date and asset: appending dates adds a part to each
LARGE_TABLES = ("exposures", "residuals", "specific_risk")
# one row per date (and factor): rewritten whole when dates are appended
SMALL_TABLES = ("factor_returns", "diagnostics", "factor_covariance")
_REQUIRED_TABLES = ("factor_returns", "exposures", "residuals", "diagnostics")
_TABLES = (*_REQUIRED_TABLES, "factor_covariance", "specific_risk")


@dataclass(frozen=True)
class RiskModel:
    """A built factor risk model (daily units).

    Attributes
    ----------
    factor_returns: ``date`` + one column per factor (daily returns, fractions).
    exposures: ``date, symbol`` + one column per factor, known at that date's close.
    residuals: ``date, symbol, residual`` (daily, fractions).
    diagnostics: per-date regression diagnostics (see :class:`factor_engine.FactorReturns`), plus ``n_filled``:
        the style exposures the regression used that were filled by regression on sectors and size (USE4).
    factors, sectors, styles: factor names in column order.
    factor_covariance: the forecast factor covariance of every date with enough history.
    specific_risk: ``date, symbol, specific_vol`` forecasts (daily sd, fraction).
    config: the effective configuration (JSON-compatible).
    notes: what the build did with the data (JSON-compatible): market cap use, universe, sectors with their
        asset counts, styles used and left out, factors left out, with reasons; ``warnings`` lists them.
    state: what extending the model by later dates continues from (component → array name → array: the
        covariance forecast's and specific risk's state after the last date), saved with the model; None for a
        model read from a folder (:func:`factor_engine.model_folder.read_state` reads it) or cut before its last
        date by :meth:`between`.
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
    notes: dict[str, Any] = field(default_factory=dict)
    state: State | None = field(default=None, compare=False, repr=False)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the build left out or found thin, one sentence each (also in ``notes["warnings"]``)."""
        return tuple(self.notes.get("warnings", ()))

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
            state=self._state_between(start, end),
        )

    def _state_between(self, start: datetime.date | None, end: datetime.date | None) -> State | None:
        """The update state of the model cut to ``[start, end]``: none when the cut drops its last date (the
        state belongs to it); with dates dropped before ``start``, their factor returns join the covariance
        state as the warm-up its later forecasts still need."""
        dates = self.factor_returns.get_column(DATE)
        if self.state is None or (end is not None and dates.len() and end < dates.max()):  # type: ignore[operator]
            return None
        state = dict(self.state)
        earlier = self.factor_returns.filter(pl.col(DATE) < start) if start is not None else None
        if earlier is not None and earlier.height and "factor_covariance" in state:
            warmed = CovarianceState.from_arrays(state["factor_covariance"]).with_warmup(earlier)
            state["factor_covariance"] = warmed.to_arrays()
        return state

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
            "build": self.notes,
        }

    def save(self, folder: str | Path, *, state: State | None = None) -> Path:
        """Write the model to ``folder`` (created if needed), replacing any model it held: the new files first,
        then ``model.json`` by an atomic rename, so an interrupted save leaves the previous model readable.

        Parameters
        ----------
        state: arrays an update continues from, by component (component → array name → array), saved as
            ``state/<component>-<generation>.npz`` (default: the model's own :attr:`state`); read them with
            :func:`factor_engine.model_folder.read_state`.
        """
        saved = self.state if state is None else state
        return write_folder(folder, self.metadata(), _tables(self), saved, legacy_tables=_TABLES)


def _tables(model: RiskModel) -> dict[str, pl.DataFrame]:
    """The model's tables by name, as saved (the covariance as its long ``date, factor`` frame)."""
    tables = {name: getattr(model, name) for name in _REQUIRED_TABLES}
    if model.factor_covariance is not None:
        tables["factor_covariance"] = model.factor_covariance.to_frame()
    if model.specific_risk is not None:
        tables["specific_risk"] = model.specific_risk
    return tables


def load_model(folder: str | Path) -> RiskModel:
    """Read a model written by :meth:`RiskModel.save` (and extended by :func:`append_model_dates`)."""
    return read_folder(folder, _read_model, _TABLES)


def _read_model(source: Path, manifest: Manifest) -> RiskModel:
    for name in _REQUIRED_TABLES:
        if name not in manifest.tables:
            raise ModelError(f"model folder {source} lacks the {name} table ({name}.parquet or {name}/ parts)")
    frames = {name: read_table(source, parts) for name, parts in manifest.tables.items()}
    meta = manifest.meta
    covariance = None
    if "factor_covariance" in frames:
        horizon = int(meta.get("covariance_horizon") or 1)
        covariance = FactorCovariance.from_frame(frames["factor_covariance"], horizon=horizon)
    return RiskModel(
        factor_returns=frames["factor_returns"],
        exposures=frames["exposures"],
        residuals=frames["residuals"],
        diagnostics=frames["diagnostics"],
        factor_covariance=covariance,
        specific_risk=frames.get("specific_risk"),
        factors=tuple(meta["factors"]),
        sectors=tuple(meta["sectors"]),
        styles=tuple(meta["styles"]),
        config=meta["config"],
        notes=meta.get("build", {}),
    )


@dataclass(frozen=True)
class ModelExtension:
    """What extending a saved model by new dates writes (daily units, as in :class:`RiskModel`).

    Attributes
    ----------
    exposures, residuals, specific_risk: the rows of the new dates only, all after the saved model's last
        date of that table, with the saved columns and dtypes (``specific_risk`` None: the model has none).
    factor_returns, diagnostics: the whole new tables, old dates included.
    factor_covariance: the whole new forecast series (None: the model has none).
    state: the update state by component (component → array name → array); the components given replace the
        saved ones, the others are kept.
    notes: the build notes to record (None keeps the saved ones).
    """

    exposures: pl.DataFrame
    residuals: pl.DataFrame
    factor_returns: pl.DataFrame
    diagnostics: pl.DataFrame
    specific_risk: pl.DataFrame | None = None
    factor_covariance: FactorCovariance | None = None
    state: State | None = None
    notes: dict[str, Any] | None = None

    @classmethod
    def after(cls, model: RiskModel, date: datetime.date) -> ModelExtension:
        """The extension that takes ``model.between(end=date)`` to ``model``: the large tables' rows after
        ``date``, the small tables whole (e.g. to append the new dates of a model rebuilt in memory)."""

        def new_rows(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.filter(pl.col(DATE) > date)

        return cls(
            exposures=new_rows(model.exposures),
            residuals=new_rows(model.residuals),
            factor_returns=model.factor_returns,
            diagnostics=model.diagnostics,
            specific_risk=None if model.specific_risk is None else new_rows(model.specific_risk),
            factor_covariance=model.factor_covariance,
        )

    def check(self, factors: Sequence[str], *, has_covariance: bool, has_specific_risk: bool, model: str) -> None:
        """ModelError unless the extension fits a saved model with ``factors`` (in order) and the forecasts it has
        or lacks; ``model`` names the saved model in the message. (Dates and dtypes are checked where saved.)"""
        expected = {
            "factor_returns": [DATE, *factors],
            "exposures": [DATE, SYMBOL, *factors],
            "residuals": [DATE, SYMBOL, RESIDUAL],
            "specific_risk": [DATE, SYMBOL, SPECIFIC_VOL],
        }
        for name, columns in expected.items():
            frame = getattr(self, name)
            if frame is not None and frame.columns != columns:
                raise ModelError(
                    f"the new {name} have columns {frame.columns}, {model} has {columns}: an update cannot add, "
                    "drop or reorder factors or columns; rebuild the model"
                )
        for name, given, saved in (
            ("factor_covariance", self.factor_covariance, has_covariance),
            ("specific_risk", self.specific_risk, has_specific_risk),
        ):
            if (given is not None) != saved:
                holds = "has" if given is not None else "lacks"
                raise ModelError(
                    f"{model} {'has' if saved else 'has no'} {name}, the extension {holds} it: give the new "
                    "forecasts of every forecast the model has, and no others"
                )
        covariance = self.factor_covariance
        if covariance is not None and tuple(covariance.factors) != tuple(factors):
            raise ModelError(
                f"the new factor covariance has factors {list(covariance.factors)}, {model} {list(factors)}"
            )


def append_model_dates(folder: str | Path, extension: ModelExtension, *, out: str | Path | None = None) -> Path:
    """Extend the model saved in ``folder`` by new dates: one new part per large table (exposures, residuals,
    specific risk), the small tables (factor returns, diagnostics, factor covariance) and the given state
    rewritten, then ``model.json`` replaced by an atomic rename; nothing already saved is rewritten.

    Parameters
    ----------
    folder: a model folder (either layout; one of the single-file layout keeps its files as the first parts).
    extension: the new dates' rows and the new small tables.
    out: write the extended model to this folder instead (None: in place); the saved parts are hard-linked
        into it (copied across filesystems) and ``folder`` is left unchanged.

    Raises ModelError when the extension does not fit the saved model (factors, columns, dtypes, a date not
    after the saved ones, a forecast the model has or lacks), naming what differs.
    """

    def metadata(source: Path, manifest: Manifest) -> dict[str, Any]:
        return _extended_metadata(source, manifest.meta, extension, has=set(manifest.tables))

    meta = read_folder(folder, metadata, _TABLES)
    appended = {"exposures": extension.exposures, "residuals": extension.residuals}
    if extension.specific_risk is not None:
        appended["specific_risk"] = extension.specific_risk
    replaced = {"factor_returns": extension.factor_returns, "diagnostics": extension.diagnostics}
    if extension.factor_covariance is not None:
        replaced["factor_covariance"] = extension.factor_covariance.to_frame()
    return append_folder(
        folder, meta, appended=appended, replaced=replaced, state=extension.state, legacy_tables=_TABLES, out=out
    )


def _extended_metadata(source: Path, meta: dict[str, Any], extension: ModelExtension, has: set[str]) -> dict[str, Any]:
    """The saved metadata updated for ``extension``; ModelError where the extension does not fit the model."""
    extension.check(
        tuple(meta["factors"]),
        has_covariance="factor_covariance" in has,
        has_specific_risk="specific_risk" in has,
        model=f"the model in {source}",
    )
    dates = extension.factor_returns.get_column(DATE)
    covariance = extension.factor_covariance
    return {
        **meta,
        "engine_version": __version__,
        "date_range": [str(dates.min()), str(dates.max())] if dates.len() else [None, None],
        "covariance_horizon": None if covariance is None else covariance.horizon,
        "build": meta.get("build", {}) if extension.notes is None else extension.notes,
        "updated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def select_universe(panel: pl.DataFrame, size: int, include: Sequence[str] = ()) -> pl.DataFrame:
    """The ``size`` largest assets on each date (all of them when ``size`` is 0 or there is no ``market_cap``),
    plus the rows of the ``include`` symbols, sorted by (date, symbol).

    Point in time: an asset is ranked by its market cap at its previous row's close, the cap known before the
    date's return; ranking by the same day's cap would drop assets after a bad day and bias the factor
    returns. An asset's first row (no previous cap) is kept only when the date has room for it, after the
    ranked assets. Ties keep the (date, symbol) order.
    """
    if size == 0 or MARKET_CAP not in panel.columns:
        return panel
    days = panel.get_column(DATE).to_physical().to_numpy()
    if days.size == 0 or np.bincount(days - days.min()).max() <= size:  # no date has more assets than size
        return panel
    previous_cap = "__previous_cap__"
    rank = pl.col(previous_cap).fill_null(-1.0).rank("ordinal", descending=True).over(DATE)
    kept = rank <= size
    if include:
        kept = kept | pl.col(SYMBOL).is_in(list(include))
    return (
        panel.lazy()
        .sort(DATE, SYMBOL)
        .with_columns(pl.col(MARKET_CAP).shift(1).over(SYMBOL).alias(previous_cap))
        .filter(kept)
        .drop(previous_cap)
        .collect()
    )


def apply_sectors(panel: pl.DataFrame, sectors: SectorsConfig) -> tuple[pl.DataFrame, dict[str, str]]:
    """The panel with its sector labels relabelled by ``sectors.relabel`` and checked against the allowed
    labels, if any; also the relabelling actually applied (label → new label, for the labels present).

    Raises ModelError naming the unknown labels, the allowed ones and the config key to change.
    """
    applied: dict[str, str] = {}
    if sectors.relabel:
        present = set(panel.get_column(SECTOR).unique().to_list())
        applied = {old: new for old, new in sectors.relabel.items() if old in present}
        if applied:
            panel = panel.with_columns(pl.col(SECTOR).replace(applied))
    allowed = sectors.allowed_labels
    if allowed is not None:
        labels = panel.get_column(SECTOR).unique().sort().to_list()
        unknown = [label for label in labels if label not in set(allowed)]
        if unknown:
            key = f'taxonomy = "{sectors.taxonomy}"' if sectors.taxonomy else "allowed"
            shown = ", ".join(repr(label) for label in unknown[:10]) + (" …" if len(unknown) > 10 else "")
            raise ModelError(
                f"sector label(s) {shown} are not allowed by [sectors] {key} (allowed: "
                f"{', '.join(repr(a) for a in allowed)}); map them with [sectors.relabel] or remove the restriction"
            )
    return panel, applied


def build_model(
    panel: pl.DataFrame,
    config: ModelConfig | None = None,
    *,
    stage: Callable[[str], AbstractContextManager[object]] | None = None,
) -> RiskModel:
    """Build a risk model from a validated panel (see :func:`factor_engine.validate_panel`).

    The model follows the data: the sector factors are the labels of its universe (after ``[sectors]``
    relabelling), the styles are those configured or, by default, every registered style whose inputs the
    panel has, and without ``market_cap`` the regression weights assets equally (each sector's constraint
    weight is then its number of assets, so the market factor is the equal-weighted market), the universe is
    every asset, the size style is left out and specific risk shrinks toward the mean of all assets. A row
    whose ``market_cap`` is missing (null or NaN) is left out of the model as if it were not in the panel (no
    exposure, residual or specific risk on that date; a symbol without a cap on any date is absent), and a
    panel without a cap on any row is built as one without ``market_cap``. A factor that cannot be estimated
    on any date is left out of the model. Each choice is recorded in :attr:`RiskModel.notes` with its reason
    (``notes["market_cap_missing"]``: the rows and symbols left out for a missing cap), and
    :attr:`RiskModel.warnings` lists what a user should know.

    Parameters
    ----------
    panel: long frame with ``date, symbol, asset_returns, sector`` and, optionally, ``market_cap`` and the
        style inputs.
    config: the model configuration; defaults when None.
    stage: called with the name of each stage (universe, styles, factor returns, exposures, specific risk,
        factor covariance) and entered around it, e.g. to show progress or time the stages. The factor
        covariance is forecast in the background from the end of "factor returns" on; its stage is the wait
        for it after specific risk.
    """
    config = config or ModelConfig()
    run = stage or (lambda _name: nullcontext())
    notes: dict[str, Any] = {}
    warnings: list[str] = []
    with run("universe"):
        panel, relabelled = apply_sectors(panel, config.sectors)
        # a row without a cap is left out as if it were not in the panel (no kernel sees a null cap)
        panel, missing = leave_out_missing_caps(panel)
        if missing.rows:
            notes["market_cap_missing"] = missing.note()
            warnings.append(missing.warning())
        has_caps = MARKET_CAP in panel.columns
        universe = select_universe(panel, config.universe.size, config.universe.include)
        if has_caps:
            notes["market_cap"] = "present: regression weights sqrt(market_cap), cap-weighted sector constraint"
            if missing.rows:
                notes["market_cap"] += f"; missing on {missing.summary()}: those rows are left out of the model"
        else:
            notes["market_cap"] = (
                "absent: equal regression weights, sector constraint weighted by asset counts (equal-weighted "
                "market), USE4 styles equal-weighted (beta on the equal-weighted market), no size or non-linear "
                "size style, no cap-ranked universe, specific risk shrunk toward all assets"
            )
            warnings.append(
                "no market_cap column: "
                + notes["market_cap"].removeprefix("absent: ")
                + "; add market caps (factor-engine prepare --caps or --shares) to weight by cap"
            )
            universe = universe.with_columns(pl.lit(1.0).alias(MARKET_CAP))
        notes["universe"] = _universe_note(panel, universe, config, has_caps)
    with run("styles"):
        style_names, skipped = config.styles.resolve(panel.columns)
        notes["styles"] = {"used": list(style_names), "skipped": skipped}
        # a style another one covers (book-to-price when value is used) is a choice, recorded in the notes; a
        # style missing its columns is worth a warning saying how to get it
        warnings.extend(
            f"style {name!r} left out: {reason}; add the column(s) to the panel to use it"
            for name, reason in skipped.items()
            if not reason.startswith("covered by style")
        )
        scores, filled_by_date = _styles_filled(universe, style_names, config, notes)
    regression = config.regression
    specific_config = specific_risk_config(config, has_caps)
    # In the background: the exposure columns, which need only the universe and the scores, while the regression
    # runs (its serial parts leave a core idle; the factors it leaves out are dropped afterwards); then the
    # factor covariance, which needs only the factor returns, and specific risk's time-series part, which needs
    # only the residuals (each parallel inside, with serial parts the other fills). BLAS runs single-threaded
    # meanwhile (the kernels parallelize themselves), restored afterwards.
    labels = universe.get_column(SECTOR).drop_nulls().unique().sort().to_list()
    score_columns = [c for c in scores.columns if c not in (DATE, SYMBOL)]
    with ThreadPoolExecutor(max_workers=3) as background:
        every_exposure = background.submit(_exposures_of, universe, scores, labels, score_columns)
        with run("factor returns"):
            result = estimate_configured(universe, scores if style_names else None, config)
            if result.factor_returns.height == 0:
                raise ModelError(f"no date could be estimated: {_why_no_date(result)}")
            dropped = _unestimable_factors(result)
            notes["factors_dropped"] = dropped
            warnings.extend(f"factor {name!r} left out of the model: {reason}" for name, reason in dropped.items())
            factors = tuple(f for f in result.factors if f not in dropped)
            sectors = tuple(f for f in result.sectors if f not in dropped)
            factor_returns = result.factor_returns.select(DATE, *factors)
            diagnostics = _with_fill_counts(result.diagnostics, filled_by_date, regression.effective_exposure_lag)
            styles = tuple(f for f in result.styles if f not in dropped)
            residuals = result.residuals
            del result, scores  # the regression's dense design (the styles on the grid) is not needed any more
        with single_threaded_blas():
            forecast = background.submit(
                forecast_covariance, factor_returns, config.covariance, covariance_adjustments(config)
            )
            time_series = background.submit(
                time_series_specific_risk, residuals, universe.select(DATE, SYMBOL, MARKET_CAP), specific_config
            )
            with run("exposures"):
                # the regression's factors are the universe's sectors and the scores' styles, less those dropped
                exposures = every_exposure.result().select(DATE, SYMBOL, *factors)
                del every_exposure
                notes["sectors"] = _sector_note(universe, sectors, relabelled, config.sectors.min_assets)
                warnings.extend(notes["sectors"]["warnings"])
            with run("specific risk"):
                specific, specific_state = finish_with_state(time_series.result(), exposures)
            with run("factor covariance"):
                covariance, covariance_state = forecast.result()
    notes["warnings"] = warnings
    state = {"specific_risk": specific_state.to_arrays(), "universe": universe_state(exposures)}
    if covariance_state is not None:
        state["factor_covariance"] = covariance_state.to_arrays()
    return RiskModel(
        factor_returns=factor_returns,
        exposures=exposures,
        residuals=residuals,
        diagnostics=diagnostics,
        factors=factors,
        sectors=sectors,
        styles=styles,
        factor_covariance=covariance,
        specific_risk=specific,
        config=config.effective(),
        notes=notes,
        state=state,
    )


def estimate_configured(universe: pl.DataFrame, scores: pl.DataFrame | None, config: ModelConfig) -> FactorReturns:
    """The cross-sectional regressions of ``universe`` on its style ``scores`` as ``config``'s ``[regression]``
    asks (a build's, and an update's on its new dates)."""
    regression = config.regression
    return estimate_from_panel(
        universe,
        scores,
        winsor_factor=regression.winsor_factor,
        residualize_styles=regression.residualize_styles,
        method="barra" if regression.method == "barra" else "toraniko",
        exposure_lag=regression.effective_exposure_lag,
    )


def specific_risk_config(config: ModelConfig, has_caps: bool) -> SpecificRiskConfig:
    """The specific risk configuration a model uses: without market caps, one size group for the shrinkage."""
    return config.specific_risk if has_caps else replace(config.specific_risk, n_size_groups=1)


def universe_state(exposures: pl.DataFrame, before: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The ``universe`` component of a model's update state: each asset's number of exposure rows so far (an
    update then knows when the recent rows it reads hold all of an asset's history), from ``exposures`` (rows
    added to those counted in ``before``)."""
    counts = exposures.group_by(SYMBOL).len()
    if before is not None:
        earlier = pl.DataFrame({SYMBOL: before["symbols"].tolist(), "earlier": before["rows"]})
        counts = earlier.join(counts, on=SYMBOL, how="full", coalesce=True).select(
            SYMBOL, (pl.col("earlier").fill_null(0) + pl.col("len").fill_null(0)).alias("len")
        )
    counts = counts.sort(SYMBOL)
    return {
        "symbols": np.asarray(counts.get_column(SYMBOL).cast(pl.String).to_list(), dtype=np.str_),
        "rows": counts.get_column("len").cast(pl.Int64).to_numpy(),
    }


def _styles_filled(
    universe: pl.DataFrame,
    style_names: Sequence[str],
    config: ModelConfig,
    notes: dict[str, Any],
    at: Sequence[datetime.date] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The style scores, USE4 styles' missing exposures filled (:mod:`factor_engine.styles.fill`) in each style's
    own thread as soon as it is computed; records the count per style in ``notes["styles"]["filled"]`` and
    returns the number filled per date (all styles). ``at``: only the scores of these dates (an update)."""
    notes["styles"]["filled"] = {}
    if at is not None:
        wanted = pl.col(DATE).is_in(pl.Series(list(at), dtype=pl.Date).implode())
    if not style_names:
        rows = universe if at is None else universe.filter(wanted)
        return rows.select(DATE, SYMBOL), None
    params = config.styles.effective_params(style_names)
    fillable = [get_style(name) for name in style_names if get_style(name).fill_missing]
    if not fillable:
        return compute_styles(universe, list(style_names), params=params, at=at), None
    counts: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(max_workers=1) as prepare:
        # the fill is per date: the rows of the dates scored (while the styles are computed)
        context = prepare.submit(fill_context, universe if at is None else universe.filter(wanted))

        def finish(style: StyleFactor, frame: pl.DataFrame) -> pl.DataFrame:
            if not style.fill_missing:
                return frame
            frame, counts[style.name] = context.result().fill(frame, style.score)
            return frame

        scores = compute_styles(universe, list(style_names), params=params, finish=finish, at=at)
        dates = context.result().dates
    notes["styles"]["filled"] = {style.name: int(counts[style.name].sum()) for style in fillable}
    total = np.sum([counts[style.name] for style in fillable], axis=0)
    return scores, pl.DataFrame({DATE: dates, "n_filled": total})


def _with_fill_counts(diagnostics: pl.DataFrame, filled: pl.DataFrame | None, lag: int) -> pl.DataFrame:
    """The regression diagnostics with ``n_filled``: the style exposures filled by regression among those the
    date's regression used (those of the close ``lag`` dates earlier)."""
    if filled is None:
        return diagnostics.with_columns(pl.lit(0, dtype=pl.Int64).alias("n_filled"))
    lagged = filled.with_columns(pl.col("n_filled").shift(lag).fill_null(0))
    return diagnostics.join(lagged, on=DATE, how="left").with_columns(pl.col("n_filled").fill_null(0))


def _universe_note(panel: pl.DataFrame, universe: pl.DataFrame, config: ModelConfig, has_caps: bool) -> str:
    size = config.universe.size
    if size == 0:
        return "every asset (universe size 0)"
    if not has_caps:
        return f"every asset: no market_cap to rank by (universe size {size} not applied)"
    if universe.height == panel.height:
        return f"every asset: no date has more than {size} assets"
    return (
        f"the {size} largest assets by the previous close's market cap on each date"
        + (f", plus {len(config.universe.include)} included symbol(s)" if config.universe.include else "")
        + f": {universe.height:,} of {panel.height:,} rows"
    )


def _unestimable_factors(result: FactorReturns) -> dict[str, str]:
    """Factors whose return is null on every solved date, with the reason (from the regression diagnostics)."""
    returns = result.factor_returns
    null_counts = returns.select(pl.col(result.factors).null_count()).row(0)
    dead = [f for f, n in zip(result.factors, null_counts, strict=True) if n == returns.height]
    if not dead:
        return {}
    solved = result.diagnostics.join(returns.select(DATE), on=DATE, how="semi").get_column("reason").to_list()
    reasons = {}
    for factor in dead:
        collinear = sum(1 for reason in solved if _named_in(reason, "collinear with earlier factors: ", factor))
        if collinear == 0:
            why = "no exposure on any date (a missing, constant or empty exposure)"
        elif collinear == len(solved):
            why = "collinear with earlier factors on every date"
        else:
            why = f"no exposure or collinear on every date (collinear on {collinear} of {len(solved)})"
        reasons[factor] = f"{why}; its return could not be estimated on any of the {len(solved):,} dates"
    return reasons


def _named_in(reason: str, prefix: str, factor: str) -> bool:
    return any(part.startswith(prefix) and factor in part[len(prefix) :].split(", ") for part in reason.split("; "))


def _sector_note(
    universe: pl.DataFrame, sectors: Sequence[str], relabelled: dict[str, str], min_assets: int
) -> dict[str, Any]:
    """The model's sectors with their asset counts per date (min / last), and a warning for each sector
    with fewer than ``min_assets`` assets on some date."""
    counts = (
        universe.lazy()
        .filter(pl.col(SECTOR).is_in(list(sectors)))
        .group_by(DATE, SECTOR)
        .len()
        .group_by(SECTOR)
        .agg(
            pl.col("len").min().alias("min_assets"),
            pl.col("len").sort_by(DATE).last().alias("last_assets"),
            pl.col(DATE).min().alias("first_date"),
            (pl.col("len") < min_assets).sum().alias("dates_below"),
            pl.len().alias("dates"),
        )
        .sort(SECTOR)
        .collect()
    )
    detail = {row[SECTOR]: {k: v for k, v in row.items() if k != SECTOR} for row in counts.iter_rows(named=True)}
    warnings = [
        f"sector {name!r} has fewer than {min_assets} assets on {d['dates_below']:,} of {d['dates']:,} dates "
        f"(as few as {d['min_assets']}): its factor absorbs most of those assets' specific returns; merge it into "
        "a related sector with [sectors.relabel] if that is not intended"
        for name, d in detail.items()
        if d["dates_below"]
    ]
    for d in detail.values():
        d["first_date"] = str(d["first_date"])
    return {"labels": list(sectors), "relabelled": relabelled, "assets": detail, "warnings": warnings}


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
    regime adjustments when enabled (:func:`factor_engine.risk.forecast.forecast_covariance`)."""
    return forecast_covariance(factor_returns, config.covariance, covariance_adjustments(config))[0]


def covariance_adjustments(config: ModelConfig) -> CovarianceAdjustments:
    """The covariance adjustments ``config`` asks for."""
    adjustments = config.adjustments
    return CovarianceAdjustments(
        eigenfactor=adjustments.eigenfactor,
        simulations=adjustments.eigenfactor_simulations,
        scale=adjustments.eigenfactor_scale,
        every=adjustments.eigenfactor_every,
        vra_half_life=adjustments.vra_half_life,
    )


def _exposures_at_close(universe: pl.DataFrame, scores: pl.DataFrame, result: FactorReturns) -> pl.DataFrame:
    """``date, symbol`` + one column per factor of ``result``: each asset's exposures as known at that date's
    close."""
    return _exposures_of(universe, scores, result.sectors, result.styles).select(DATE, SYMBOL, *result.factors)


def _exposures_of(
    universe: pl.DataFrame, scores: pl.DataFrame, sectors: Sequence[str], styles: Sequence[str]
) -> pl.DataFrame:
    """``date, symbol, market``, the ``sectors``' dummies and the ``styles``' scores of the universe's rows.

    The market and sector columns are numpy arrays polars takes without a copy: in a build they reuse the
    memory the styles freed (factor_engine._allocator) rather than adding a gigabyte at 3,000 × 2,520."""
    labels = universe.get_column(SECTOR)
    if labels.null_count():  # a row without a sector has missing (null) sector exposures
        dummies = [(pl.col(SECTOR) == name).cast(pl.Float64).alias(name) for name in sectors]
        base = universe.select(DATE, SYMBOL, pl.lit(1.0).alias(MARKET), *dummies)
    else:
        names = labels.unique().sort().to_list()
        codes = labels.cast(pl.Enum(names)).to_physical().to_numpy()
        columns = {name: np.equal(codes, names.index(name)).astype(np.float64) for name in sectors}
        base = universe.select(DATE, SYMBOL).with_columns(
            pl.Series(MARKET, np.ones(universe.height)), *(pl.Series(n, c) for n, c in columns.items())
        )
    if scores.select(DATE, SYMBOL).equals(base.select(DATE, SYMBOL)):  # same rows in the same order
        return base.hstack(scores.select(styles).get_columns())
    return base.join(scores.select(DATE, SYMBOL, *styles), on=[DATE, SYMBOL], how="left")
