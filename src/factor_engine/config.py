"""Model configuration: one TOML file with documented defaults.

Every section and key is optional; what is left out takes the default below. The effective configuration
(defaults filled in) is what a model records, so a result can be reproduced from it::

    [universe]
    size = 3000                 # keep the N largest assets by the previous close's market cap; 0 keeps all
    include = []                # symbols always kept on top of those (e.g. holdings)

    [sectors]                   # the sector labels are the user's data: any label is accepted by default
    taxonomy = "gics"           # optional: "gics" (GICS level 1) or "seed" (the seed's 11 names) ...
    allowed = ["Tech", "Energy"]   # ... or an explicit list (not both); labels outside it are an error
    min_assets = 5              # warn when a sector has fewer assets than this on some date
    [sectors.relabel]           # optional map applied first, e.g. broker industry code -> sector
    "4510" = "Technology"

    [styles]
    names = ["momentum", "value", "size"]   # registered style factors; leave out to use every default
                                            # style whose input columns the panel has
    preset = "toraniko"         # or "use4": the candidate styles when names is left out (see STYLE_PRESETS)
    modules = ["my_factors"]    # Python modules imported first (they register custom styles)

    [styles.momentum]           # keyword arguments of each style function
    trailing_days = 252
    half_life = 126
    lag = 20
    winsor_factor = 0.01

    [regression]
    method = "barra"            # "barra" (joint WLS, cap-weighted sector constraint) or "toraniko"
    exposure_lag = 1            # dates between exposures and the returns they explain
    winsor_factor = 0.05        # fraction of returns clipped at each tail per date; false disables
    residualize_styles = true   # toraniko method only

    [covariance]                # factor covariance forecast (factor_engine.risk.CovarianceConfig)
    vol_half_life = 84          # trading days
    corr_half_life = 504
    vol_nw_lags = 5
    corr_nw_lags = 2
    min_periods = 63
    shrinkage = "none"          # or "ledoit_wolf"
    horizon = 1                 # forecast horizon in trading days (21 monthly, 252 annual)

    [adjustments]
    eigenfactor = true          # eigenfactor risk adjustment (simulates the covariance estimator itself)
    eigenfactor_simulations = 1000
    eigenfactor_scale = 1.4
    eigenfactor_every = 126     # simulate the bias profile at most N dates apart (sooner while the history is short)
    vra_half_life = 42          # factor volatility regime adjustment; false disables

    [specific_risk]             # factor_engine.risk.SpecificRiskConfig
    half_life = 84              # trading days, EWMA of squared residuals
    nw_lags = 5
    min_periods = 21            # observations before an asset gets a time-series estimate
    full_history = 180          # window (dates) of the blend weight: full weight on the time-series estimate
    blend_start = 60            # observations in the window below which it has no weight (default full_history / 3)
    robust_every = 21           # dates between evaluations of the blend's fat-tail factor (USE4)
    shrinkage = 0.1             # Bayesian shrinkage toward the size-decile cap-weighted mean
    n_size_groups = 10
    structural = true           # structural estimate (log vol on exposures) for short histories
    vra_half_life = 42          # specific volatility regime adjustment; false disables
"""

from __future__ import annotations

import importlib
import inspect
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from factor_engine.panel import TAXONOMIES
from factor_engine.risk import CovarianceConfig, SpecificRiskConfig
from factor_engine.styles import StyleFactor, available_styles, get_style, select_styles

__all__ = [
    "STYLE_PRESETS",
    "STYLE_PRESET_PARAMS",
    "AdjustmentConfig",
    "ConfigError",
    "ModelConfig",
    "RegressionConfig",
    "SectorsConfig",
    "StylesConfig",
    "UniverseConfig",
    "load_config",
]

#: Style presets of ``[styles] preset``: the candidate styles, in order (each used when its inputs are present).
STYLE_PRESETS: dict[str, tuple[str, ...]] = {
    "toraniko": ("momentum", "value", "size"),
    # Barra USE4's styles (Menchero, Orr, Wang, "The Barra US Equity Model (USE4): Methodology Notes", MSCI 2011);
    # book-to-price stands for value (toraniko's value is not in it)
    "use4": (
        "momentum",
        "size",
        "beta",
        "resvol",
        "nlsize",
        "liquidity",
        "earnings_yield",
        "growth",
        "leverage",
        "dividend_yield",
        "btop",
    ),
}
#: Parameters a preset sets (over each style's defaults; ``[styles.<name>]`` keys override them): USE4's size is
#: the plain log market cap (LNCAP), toraniko's size with no middle quantiles zeroed (its sign, small minus big,
#: is immaterial to the model).
STYLE_PRESET_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "use4": {"size": {"lower_decile": 0.0, "upper_decile": 0.0}},
}


class ConfigError(ValueError):
    """A model configuration that cannot be used; the message names the section and key."""


@dataclass(frozen=True)
class UniverseConfig:
    """Which assets enter the model on each date.

    size: the number of largest assets kept per date, ranked by each asset's market cap at its previous
        close (point in time: a day's own return never decides whether that day is in the model); 0 keeps
        every asset. Without a ``market_cap`` column every asset is kept (and the model says so).
    include: symbols always kept on the dates they have data, on top of the ``size`` largest (the assets a
        user must have covered, e.g. their holdings; Barra's estimation universe plus coverage).
    """

    size: int = 3000
    include: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ConfigError(f"[universe] size must be a non-negative integer, got {self.size!r}")
        if isinstance(self.include, str) or not all(isinstance(s, str) for s in self.include):
            raise ConfigError(f"[universe] include must be a list of symbols, got {self.include!r}")
        object.__setattr__(self, "include", tuple(dict.fromkeys(self.include)))


@dataclass(frozen=True)
class SectorsConfig:
    """The sector taxonomy: the labels are the user's data, and any non-empty label is accepted by default.

    taxonomy: optional name of a known taxonomy whose labels are the only ones allowed ("gics": GICS level 1,
        "seed": the seed's 11 names); see :data:`factor_engine.panel.TAXONOMIES`.
    allowed: optional explicit list of allowed labels (not together with ``taxonomy``).
    relabel: map applied to the panel's labels before anything else (e.g. broker industry code → sector);
        labels not in the map are kept.
    min_assets: a model warns about a sector with fewer assets than this on some date of its universe (its
        factor then absorbs most of those assets' specific returns).
    """

    taxonomy: str | None = None
    allowed: tuple[str, ...] | None = None
    relabel: Mapping[str, str] = field(default_factory=dict)
    min_assets: int = 5

    def __post_init__(self) -> None:
        if self.taxonomy is not None and self.taxonomy not in TAXONOMIES:
            raise ConfigError(f"[sectors] taxonomy must be one of {sorted(TAXONOMIES)}, got {self.taxonomy!r}")
        if self.allowed is not None:
            if isinstance(self.allowed, str) or not all(isinstance(s, str) and s.strip() for s in self.allowed):
                raise ConfigError(f"[sectors] allowed must be a list of non-empty labels, got {self.allowed!r}")
            if self.taxonomy is not None:
                raise ConfigError("[sectors] give either taxonomy or allowed, not both")
            object.__setattr__(self, "allowed", tuple(dict.fromkeys(self.allowed)))
        if not isinstance(self.relabel, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in self.relabel.items()
        ):
            raise ConfigError(f"[sectors] relabel must map labels to non-empty labels, got {self.relabel!r}")
        if isinstance(self.min_assets, bool) or not isinstance(self.min_assets, int) or self.min_assets < 0:
            raise ConfigError(f"[sectors] min_assets must be a non-negative integer, got {self.min_assets!r}")

    @property
    def allowed_labels(self) -> tuple[str, ...] | None:
        """The labels allowed after relabelling (None: any label)."""
        if self.taxonomy is not None:
            return TAXONOMIES[self.taxonomy]
        return self.allowed


@dataclass(frozen=True)
class StylesConfig:
    """Style factors and their parameters.

    names: registered style names, in order; None (the default) uses every candidate style whose input
        columns the panel has (:meth:`resolve` says which and why the others were left out).
    preset: the candidates when ``names`` is None: a key of :data:`STYLE_PRESETS` ("toraniko": momentum, value
        and size; "use4": USE4's momentum, size, beta, residual volatility, non-linear size, liquidity, earnings
        yield, growth, leverage, dividend yield and book-to-price); None (the default): every registered style
        marked ``default`` (all the built-ins and custom styles unless registered with ``default=False``).
        Among the candidates, a style is left out when the panel lacks its inputs or when a style of its
        ``unless`` is used (book-to-price when value is). A preset may also set parameters
        (:data:`STYLE_PRESET_PARAMS`: "use4" makes size the plain log cap, USE4's LNCAP).
    params: per-style keyword arguments (merged over each style's documented defaults and the preset's).
    modules: Python modules imported before the names are checked; importing them registers custom styles
        (e.g. ``["my_factors"]``, importable from the current directory or the environment).
    """

    names: tuple[str, ...] | None = None
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    modules: tuple[str, ...] = ()
    preset: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.modules, str) or not all(isinstance(m, str) and m for m in self.modules):
            raise ConfigError(f"[styles] modules must be a list of module names, got {self.modules!r}")
        object.__setattr__(self, "modules", tuple(self.modules))
        import_style_modules(self.modules)
        for name in self.names or ():
            try:
                get_style(name)
            except KeyError as exc:
                raise ConfigError(f"[styles] names: {exc.args[0]}") from None
        if self.preset is not None and self.preset not in STYLE_PRESETS:
            raise ConfigError(f"[styles] preset must be one of {sorted(STYLE_PRESETS)}, got {self.preset!r}")
        if self.preset is not None and self.names is not None:
            raise ConfigError("[styles] give names or a preset, not both")
        candidates = set(self.names) if self.names is not None else {s.name for s in available_styles()}
        unknown = sorted(set(self.params) - candidates)
        if unknown:
            where = "[styles] names" if self.names is not None else "the registered styles"
            raise ConfigError(f"[styles.{unknown[0]}] configures a style that is not in {where}")
        for name, params in self.params.items():
            style = get_style(name)
            accepted = {
                p.name
                for p in inspect.signature(style.function).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and not (style.at_dates and p.name == "at")
            }  # a style's ``at`` (the dates an update scores) is compute_styles' to pass, not a parameter
            extra = sorted(set(params) - accepted)
            if extra:
                raise ConfigError(f"[styles.{name}] unknown parameter(s) {extra}; accepted: {sorted(accepted)}")

    def resolve(self, columns: Sequence[str]) -> tuple[tuple[str, ...], dict[str, str]]:
        """The styles a panel with ``columns`` gets, and each registered style left out with the reason.

        With ``names`` configured every one must have its inputs (ConfigError naming the missing columns and
        the key to change); otherwise every candidate style whose inputs (and one of its ``any_of``
        alternatives) are present is used, unless a style of its ``unless`` is used too
        (:func:`factor_engine.styles.select_styles`).
        """
        if self.names is not None:
            for name in self.names:
                unmet = get_style(name).unmet(columns)
                if unmet:
                    raise ConfigError(
                        f"style {name!r} needs {unmet}, which the panel lacks; remove it from "
                        "[styles] names (or leave names out to use every style the data supports)"
                    )
            return tuple(self.names), {}
        used, skipped = select_styles(self.candidates(), columns)
        return tuple(style.name for style in used), skipped

    def candidates(self) -> tuple[StyleFactor, ...]:
        """The styles a model may use when ``names`` is not given: the preset's, else the default ones."""
        if self.preset is not None:
            return tuple(get_style(name) for name in STYLE_PRESETS[self.preset])
        return tuple(style for style in available_styles() if style.default)

    def effective_params(self, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Each style's parameters (of ``names``, default the configured names or the candidate styles): its
        defaults overridden by the preset's (:data:`STYLE_PRESET_PARAMS`), then by the configured values."""
        chosen = names if names is not None else (self.names or [s.name for s in self.candidates()])
        preset = STYLE_PRESET_PARAMS.get(self.preset or "", {})
        return {
            name: {**get_style(name).defaults, **preset.get(name, {}), **dict(self.params.get(name, {}))}
            for name in chosen
        }


def import_style_modules(modules: Sequence[str], search: Sequence[str | Path] = ()) -> None:
    """Import each module (which registers its styles); ConfigError naming a module that cannot be imported.

    search: folders tried too, ahead of ``sys.path``, while importing (the configuration file's folder and the
        working directory for ``factor-engine build --config``), so a ``my_factors.py`` next to the
        configuration is found; ``sys.path`` is restored afterwards.
    """
    extra = [str(Path(folder).resolve()) for folder in (*search, Path.cwd())]
    added = [folder for folder in dict.fromkeys(extra) if folder not in sys.path]
    sys.path[:0] = added
    try:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # any import-time failure of user code is reported the same way
                raise ConfigError(f"[styles] modules: cannot import {module!r}: {type(exc).__name__}: {exc}") from exc
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


@dataclass(frozen=True)
class RegressionConfig:
    """Cross-sectional regression settings (see :func:`factor_engine.estimate_factor_returns`).

    method: "barra" or "toraniko".
    exposure_lag: dates between exposures and returns; None means the method's default (barra 1, toraniko 0).
    winsor_factor: fraction clipped at each tail of the returns per date; None disables.
    residualize_styles: toraniko method only.
    """

    method: str = "barra"
    exposure_lag: int | None = None
    winsor_factor: float | None = 0.05
    residualize_styles: bool = True

    def __post_init__(self) -> None:
        if self.method not in ("barra", "toraniko"):
            raise ConfigError(f"[regression] method must be 'barra' or 'toraniko', got {self.method!r}")
        if self.exposure_lag is not None and (
            isinstance(self.exposure_lag, bool) or not isinstance(self.exposure_lag, int) or self.exposure_lag < 0
        ):
            raise ConfigError(f"[regression] exposure_lag must be a non-negative integer, got {self.exposure_lag!r}")
        if self.winsor_factor is not None and not (
            isinstance(self.winsor_factor, int | float) and 0.0 <= self.winsor_factor <= 0.5
        ):
            raise ConfigError(f"[regression] winsor_factor must be a fraction in [0, 0.5], got {self.winsor_factor!r}")

    @property
    def effective_exposure_lag(self) -> int:
        """The lag in force: the configured one, or the method's default."""
        if self.exposure_lag is not None:
            return self.exposure_lag
        return 1 if self.method == "barra" else 0


@dataclass(frozen=True)
class AdjustmentConfig:
    """Adjustments of the factor covariance forecast (see :mod:`factor_engine.risk.adjustments`).

    eigenfactor: apply the eigenfactor risk adjustment.
    eigenfactor_simulations, eigenfactor_scale, eigenfactor_every: its simulations per date, scaling ``a``
        and the spacing (dates) of the simulated bias profiles.
    vra_half_life: half-life (trading days) of the volatility regime adjustment; None disables it.
    """

    eigenfactor: bool = True
    eigenfactor_simulations: int = 1000
    eigenfactor_scale: float = 1.4
    eigenfactor_every: int = 126
    vra_half_life: float | None = 42.0

    def __post_init__(self) -> None:
        if self.eigenfactor_simulations < 2 or self.eigenfactor_every < 1 or self.eigenfactor_scale < 0:
            raise ConfigError(
                "[adjustments] need eigenfactor_simulations >= 2, eigenfactor_every >= 1 and eigenfactor_scale >= 0"
            )
        if self.vra_half_life is not None and not self.vra_half_life > 0:
            raise ConfigError(f"[adjustments] vra_half_life must be positive or false, got {self.vra_half_life!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The whole model configuration."""

    universe: UniverseConfig = field(default_factory=UniverseConfig)
    sectors: SectorsConfig = field(default_factory=SectorsConfig)
    styles: StylesConfig = field(default_factory=StylesConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    covariance: CovarianceConfig = field(default_factory=CovarianceConfig)
    adjustments: AdjustmentConfig = field(default_factory=AdjustmentConfig)
    specific_risk: SpecificRiskConfig = field(default_factory=SpecificRiskConfig)

    def effective(self) -> dict[str, Any]:
        """The configuration with every default filled in, as plain JSON-compatible data."""
        return {
            "universe": {"size": self.universe.size, "include": list(self.universe.include)},
            "sectors": {
                "taxonomy": self.sectors.taxonomy,
                "allowed": None if self.sectors.allowed is None else list(self.sectors.allowed),
                "relabel": dict(self.sectors.relabel),
                "min_assets": self.sectors.min_assets,
            },
            "styles": {
                "names": None if self.styles.names is None else list(self.styles.names),
                "preset": self.styles.preset,
                "params": self.styles.effective_params(),
                "modules": list(self.styles.modules),
            },
            "regression": {
                **asdict(self.regression),
                "exposure_lag": self.regression.effective_exposure_lag,
            },
            "covariance": asdict(self.covariance),
            "adjustments": asdict(self.adjustments),
            "specific_risk": asdict(self.specific_risk),
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from parsed TOML/JSON data; unknown sections or keys are errors naming them."""
        known_sections = {"universe", "sectors", "styles", "regression", "covariance", "adjustments", "specific_risk"}
        unknown = sorted(set(data) - known_sections)
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; known: {sorted(known_sections)}")
        universe = _section(UniverseConfig, "universe", data.get("universe", {}))
        sectors_data = dict(data.get("sectors", {}))
        if isinstance(sectors_data.get("allowed"), list):
            sectors_data["allowed"] = tuple(sectors_data["allowed"])
        sectors = _section(SectorsConfig, "sectors", sectors_data)
        styles_data = dict(data.get("styles", {}))
        names = styles_data.pop("names", None)
        if names is not None and (not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names)):
            raise ConfigError(f"[styles] names must be a list of style names, got {names!r}")
        preset = styles_data.pop("preset", None)
        if preset is not None and not isinstance(preset, str):
            raise ConfigError(f"[styles] preset must be a string, got {preset!r}")
        modules = styles_data.pop("modules", [])
        if not isinstance(modules, list | tuple):
            raise ConfigError(f"[styles] modules must be a list of module names, got {modules!r}")
        # per-style tables, either as [styles.<name>] or (in a recorded effective configuration) under params
        params: dict[str, Mapping[str, Any]] = dict(styles_data.pop("params", {}))
        for name, value in styles_data.items():
            if not isinstance(value, Mapping):
                raise ConfigError(f"[styles] unknown key {name!r}: expected names or a [styles.<name>] table")
            params[name] = dict(value)
        styles = StylesConfig(
            names=None if names is None else tuple(names), params=params, modules=tuple(modules), preset=preset
        )
        regression_data = {
            key: (None if key == "winsor_factor" and value is False else value)
            for key, value in dict(data.get("regression", {})).items()
        }
        regression = _section(RegressionConfig, "regression", regression_data)
        covariance = _section(CovarianceConfig, "covariance", data.get("covariance", {}))
        adjustments_data = {
            key: (None if key == "vra_half_life" and value is False else value)
            for key, value in dict(data.get("adjustments", {})).items()
        }
        adjustments = _section(AdjustmentConfig, "adjustments", adjustments_data)
        specific_data = {
            key: (None if key == "vra_half_life" and value is False else value)
            for key, value in dict(data.get("specific_risk", {})).items()
        }
        specific = _section(SpecificRiskConfig, "specific_risk", specific_data)
        return cls(
            universe=universe,
            sectors=sectors,
            styles=styles,
            regression=regression,
            covariance=covariance,
            adjustments=adjustments,
            specific_risk=specific,
        )


def _section(kind: Any, name: str, data: Mapping[str, Any]) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{name}] must be a table, got {data!r}")
    allowed = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"[{name}] unknown key(s) {unknown}; known: {sorted(allowed)}")
    try:
        return kind(**data)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[{name}] {exc}") from exc


def load_config(path: str | Path | None = None) -> ModelConfig:
    """Read a model configuration TOML file; ``None`` gives the defaults."""
    if path is None:
        return ModelConfig()
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"configuration file {file} does not exist")
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from exc
    modules = data.get("styles", {}).get("modules", []) if isinstance(data.get("styles"), dict) else []
    if isinstance(modules, list):  # a module next to the configuration file is found too
        import_style_modules([str(m) for m in modules], search=(file.parent,))
    return ModelConfig.from_mapping(data)
