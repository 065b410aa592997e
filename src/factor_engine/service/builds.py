"""Risk model builds from the stored panel: request checks, the build itself (shared by the direct path and
the background jobs) with its progress and timings recorded on the run."""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import polars as pl

from factor_engine.config import ConfigError, ModelConfig
from factor_engine.model import build_model
from factor_engine.panel import DATE, SECTOR, SYMBOL, validate_panel
from factor_engine.service.errors import InputError
from factor_engine.service.limits import build_config_violations
from factor_engine.service.schemas import CreateModelRequest
from factor_engine.storage import ModelSummary, PanelExtent, Store

__all__ = [
    "BUILD_STAGES",
    "DEFAULT_UNIVERSE_SIZE",
    "INTERRUPTED",
    "BuildCancelled",
    "Progress",
    "check_build_extent",
    "frame_extent",
    "load_build_panel",
    "model_config",
    "run_build",
]

DEFAULT_UNIVERSE_SIZE = 3000
# stages in the order they run: "load panel", then build_model's stages, then "save"
BUILD_STAGES = (
    "load panel",
    "universe",
    "styles",
    "factor returns",
    "exposures",
    "specific risk",
    "factor covariance",
    "save",
)
INTERRUPTED = "interrupted: the service stopped during the build"
_SHOWN = 5


class BuildCancelled(RuntimeError):
    """The service is stopping: the build is abandoned at the next stage."""


def _shown(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(repr(name) for name in names[:_SHOWN]) + more


def model_config(
    request: CreateModelRequest,
    style_modules: Sequence[str] | None = None,
    build_limits: Mapping[str, float] | None = None,
) -> ModelConfig:
    """The configuration of a build: ``request.config`` (TOML tables; unknown keys raise ``ConfigError``)
    with ``universe.size`` set to ``universe_size`` (default: the config's, else 3000) and the
    ``universe_symbols`` added to ``universe.include`` (unless the universe is restricted to them).

    ``style_modules``: the modules the service imported at start-up; ``[styles] modules`` may name only those
    (InputError otherwise, before anything is imported). None skips the check (a run already accepted).
    ``build_limits``: upper bounds overriding :data:`factor_engine.service.limits.BUILD_CONFIG_BOUNDS`; every
    value outside the bounds is an InputError naming the key and the limit, before any data is loaded.
    """
    data: dict[str, Any] = dict(request.config or {})
    styles = data.get("styles", {})
    requested = styles.get("modules", []) if isinstance(styles, Mapping) else []
    if style_modules is not None and isinstance(requested, list | tuple):
        refused = [m for m in requested if m not in style_modules]
        if refused:
            allowed = ", ".join(style_modules) or "none"
            raise InputError(
                f"config: [styles] modules {refused} are not among the service's style modules ({allowed}); "
                "the service imports only the modules FACTOR_ENGINE_STYLE_MODULES names, at start-up"
            )
    universe = data.get("universe", {})
    if not isinstance(universe, Mapping):
        raise InputError(f"config: [universe] must be a table, got {universe!r}")
    size = request.universe_size
    if size is None:
        size = universe.get("size", DEFAULT_UNIVERSE_SIZE)
    include = list(universe.get("include", []))
    if request.universe_symbols and not request.restrict_to_symbols:
        include = list(dict.fromkeys([*include, *request.universe_symbols]))
    data["universe"] = {**universe, "size": size, "include": include}
    config = ModelConfig.from_mapping(data)
    problems = build_config_violations(config.effective(), dict(build_limits or {}))
    if problems:
        raise InputError("; ".join(problems))
    return config


def history_start(request: CreateModelRequest) -> datetime.date | None:
    """The first panel date a build loads: ``history_days`` calendar days before ``start_date``."""
    if request.start_date is None:
        return None
    return request.start_date - datetime.timedelta(days=request.history_days)


def check_request(request: CreateModelRequest) -> None:
    """Checks that need no data: the date range and an explicitly empty universe."""
    if request.universe_symbols is not None and not request.universe_symbols:
        raise InputError("universe is empty: universe_symbols is an empty list (send null for every stored symbol)")
    if request.start_date and request.end_date and request.start_date > request.end_date:
        raise InputError(f"start_date {request.start_date} is after end_date {request.end_date}")


def check_build_extent(
    store: Store, request: CreateModelRequest, config: ModelConfig
) -> tuple[PanelExtent, tuple[str, ...]]:
    """The checks of a build request that need only the size of its data, from aggregate queries (nothing is
    loaded): every requested symbol stored, rows in the date range, the inputs of the configured styles present
    and, on some date, at least as many assets as factors. Returns the extent of the rows the build would load
    and the styles it would use; raises InputError (422) naming what is wrong."""
    check_request(request)
    symbols = _requested_symbols(store, request)
    extent = store.panel_extent(
        symbols=symbols if request.restrict_to_symbols else None, start=history_start(request), end=request.end_date
    )
    return extent, _check_extent(extent, request, config, store, symbols)


def load_build_panel(store: Store, request: CreateModelRequest, config: ModelConfig) -> pl.DataFrame:
    """The stored panel a build uses, checked as :func:`check_build_extent` does and with the data contract
    (``validate_panel``). Raises InputError / PanelError (422) naming what is wrong."""
    check_request(request)
    symbols = _requested_symbols(store, request)
    panel = store.load_panel(
        symbols=symbols if request.restrict_to_symbols else None, start=history_start(request), end=request.end_date
    )
    # optional columns the stored rows of this range never fill are not loaded: the model follows the data
    _check_extent(frame_extent(panel), request, config, store, symbols)
    return validate_panel(panel)


def frame_extent(panel: pl.DataFrame) -> PanelExtent:
    """The :class:`PanelExtent` of a loaded panel."""
    per_date = panel.group_by(DATE).len().get_column("len")
    dates = panel.get_column(DATE)
    return PanelExtent(
        rows=panel.height,
        dates=per_date.len(),
        most_assets=int(per_date.max() or 0),  # type: ignore[arg-type]
        sectors=panel.get_column(SECTOR).drop_nulls().n_unique() if SECTOR in panel.columns else 0,
        first_date=dates.min() if panel.height else None,  # type: ignore[arg-type]
        last_date=dates.max() if panel.height else None,  # type: ignore[arg-type]
        columns=tuple(
            c for c in panel.columns if c not in (DATE, SYMBOL) and panel.get_column(c).null_count() < panel.height
        ),
    )


def _requested_symbols(store: Store, request: CreateModelRequest) -> list[str] | None:
    """The request's universe_symbols (deduplicated), each checked to be stored; None when not given."""
    if request.universe_symbols is None:
        return None
    symbols = list(dict.fromkeys(request.universe_symbols))
    stored = set(store.symbols())
    unknown = [symbol for symbol in symbols if symbol not in stored]
    if len(unknown) == len(symbols):
        raise InputError(
            f"universe is empty: none of the {len(symbols)} universe_symbols is in the store "
            f"({_shown(unknown)}); ingest their data first (POST /data/panel)"
        )
    if unknown:
        raise InputError(
            f"{len(unknown)} of the universe_symbols are not in the store: {_shown(unknown)}; "
            "remove them or ingest their data first"
        )
    return symbols


def _check_extent(
    extent: PanelExtent,
    request: CreateModelRequest,
    config: ModelConfig,
    store: Store,
    symbols: list[str] | None,
) -> tuple[str, ...]:
    """Rows in the requested range, the configured styles' inputs present and a solvable regression on some
    date (InputError naming what is wrong otherwise); returns the styles the build will use."""
    in_range = extent.rows > 0 and (
        request.start_date is None or (extent.last_date is not None and extent.last_date >= request.start_date)
    )
    if not in_range:
        summary = store.panel_summary()
        held = (
            f"the store holds {summary.first_date} → {summary.last_date}"
            if summary.rows
            else "the store holds no panel data"
        )
        which = "the requested symbols" if symbols is not None else "any symbol"
        raise InputError(
            f"the date range {request.start_date or 'start'} → {request.end_date or 'end'} has no data for "
            f"{which}; {held}"
        )
    try:
        style_names, _ = config.styles.resolve((DATE, SYMBOL, *extent.columns))
    except ConfigError as exc:
        raise InputError(f"the stored panel has no values in the requested range for {exc}") from None
    _check_solvable(extent, config, style_names)
    return style_names


def _check_solvable(extent: PanelExtent, config: ModelConfig, style_names: tuple[str, ...]) -> None:
    """Every date would be skipped when no date has at least as many assets as factors (market + sectors +
    styles): say so instead of building an empty model."""
    most = extent.most_assets
    if config.universe.size:
        most = min(most, config.universe.size + len(config.universe.include))
    n_factors = 1 + extent.sectors + len(style_names)
    if most < n_factors:
        raise InputError(
            f"cannot build a risk model: at most {most} assets on any date for {n_factors} factors "
            f"(market, {extent.sectors} sectors, styles {', '.join(style_names) or 'none'}); the cross-sectional "
            "regression needs at least as many assets as factors on a date, so every date would be skipped. "
            "Include more symbols, or build on the largest stored assets (restrict_to_symbols: false)"
        )


class Progress:
    """Times the stages of one job (a build, or an update with ``stages``) and records stage, progress (0–1)
    and timings on its run."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        cancelled: threading.Event | None,
        stages: Sequence[str] = BUILD_STAGES,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.cancelled = cancelled
        self.stages = tuple(stages)
        self.timings: dict[str, float] = {}
        self.done = 0

    def announce(self, name: str) -> None:
        """Record that stage ``name`` starts; raise BuildCancelled if the service is stopping."""
        if self.cancelled is not None and self.cancelled.is_set():
            raise BuildCancelled(INTERRUPTED)
        self.store.update_progress(self.run_id, name, min(1.0, self.done / len(self.stages)), dict(self.timings))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run stage ``name``, announced first and timed."""
        self.announce(name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 6)
        self.done += 1


def run_build(
    store: Store,
    run_id: str,
    request: CreateModelRequest,
    *,
    cancelled: threading.Event | None = None,
    started: bool = False,
) -> ModelSummary:
    """Build the model of the queued run ``run_id`` (loading its panel first) and save it (the run then
    succeeds), or fail the run with the error message and re-raise. The model keeps its update state (it can be
    extended by ``POST /models/{id}/update``) unless ``end_date`` cuts dates off what was built (a
    ``start_date`` keeps the warm-up's factor returns in the state). ``cancelled``: set when the service stops
    (the build is abandoned at its next stage); ``started``: the run was created running (a direct build)."""
    if not started:
        store.start_run(run_id)
    progress = Progress(store, run_id, cancelled)
    try:
        config = model_config(request)
        with progress.stage("load panel"):
            panel = load_build_panel(store, request, config)
        built = build_model(panel, config, stage=progress.stage)
        model = built.between(request.start_date, request.end_date)  # keeps the update state unless the end is cut
        progress.announce("save")
        return store.save_model(run_id, model, timings=dict(progress.timings))
    except BaseException as error:
        message = str(error) or type(error).__name__
        if not isinstance(error, ValueError | BuildCancelled):
            message = f"{type(error).__name__}: {message}"
        # if the database is gone the run stays running until its lease expires (service.jobs)
        with contextlib.suppress(Exception):
            store.fail_run(run_id, message)
        raise
