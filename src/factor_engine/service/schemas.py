"""Request and response models of the REST service (pydantic v2), separate from the storage tables.

Units follow the library: returns and volatilities are daily fractions unless a field says ``annualized``;
weights are fractions of capital; dates are ISO ``YYYY-MM-DD``.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from factor_engine.service.limits import (
    BUILD_CONFIG_BOUNDS,
    MAX_LABEL_CHARS,
    MAX_LISTED_SYMBOLS,
    MAX_OPTIMIZE_FACTORS,
)

__all__ = [
    "CovarianceResponse",
    "CreateModelRequest",
    "DeletedResponse",
    "DiagnosticsResponse",
    "ExposuresResponse",
    "FactorInfo",
    "FactorReturnsResponse",
    "FactorsListResponse",
    "HealthResponse",
    "InfoResponse",
    "IngestResponse",
    "JobAccepted",
    "JobResponse",
    "ModelDatesResponse",
    "ModelSummaryResponse",
    "MomentumRequest",
    "OptimizeRequest",
    "OptimizeResponse",
    "PanelRow",
    "PanelRowsRequest",
    "PanelSummaryResponse",
    "PortfolioExposuresResponse",
    "PortfolioRequest",
    "PortfolioRiskResponse",
    "ScoresResponse",
    "SectorFactorInfo",
    "SizeRequest",
    "SpecificRiskResponse",
    "StyleInfo",
    "StyleScoresRequest",
    "SymbolsResponse",
    "UpdateModelRequest",
    "ValueRequest",
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _rows(row: type[BaseModel]) -> Any:
    """A request's ``data``: a non-empty list of JSON objects, documented as ``row`` objects (its schema inlined)
    and validated as such by the endpoint, in batches in a worker thread
    (:func:`factor_engine.service.factor_scores.validated_rows`): validated as part of the body, 20,000 rows
    would hold the event loop, and with it every other request, for 20–40 ms."""
    schema: JsonDict = {"items": row.model_json_schema()}
    return Field(min_length=1, description=f"rows: {row.__name__}", json_schema_extra=schema)


# --------------------------------------------------------------------------------------------------
# factor scores


class MomentumRow(BaseModel):
    """One observation: ``asset_returns`` is the daily simple return (fraction); null = missing."""

    model_config = ConfigDict(extra="ignore")
    symbol: str
    date: datetime.date
    asset_returns: FiniteFloat | None


class ValueRow(BaseModel):
    """One observation of the value ratios (book/price, sales/price, cash flow/price; unitless); null = missing."""

    model_config = ConfigDict(extra="ignore")
    symbol: str
    date: datetime.date
    book_price: FiniteFloat | None
    sales_price: FiniteFloat | None
    cf_price: FiniteFloat | None


class SizeRow(BaseModel):
    """One observation: ``market_cap`` in currency units (> 0)."""

    model_config = ConfigDict(extra="ignore")
    symbol: str
    date: datetime.date
    market_cap: Annotated[float, Field(allow_inf_nan=False, gt=0)]


class MomentumRequest(BaseModel):
    """Rows and the parameters of :func:`factor_engine.styles.momentum` (windows in observations)."""

    model_config = ConfigDict(extra="forbid")
    data: list[dict[str, Any]] = _rows(MomentumRow)
    trailing_days: int = Field(252, gt=0, le=100_000, description="window length, observations of the symbol")
    half_life: float = Field(126, gt=0, le=1e9, allow_inf_nan=False, description="weight half-life, observations")
    lag: int = Field(20, ge=0, le=100_000, description="latest observations skipped")
    winsor_factor: float | None = Field(0.01, ge=0, le=0.5, description="fraction clipped per tail; null disables")


class ValueRequest(BaseModel):
    """Rows and the parameters of :func:`factor_engine.styles.value`."""

    model_config = ConfigDict(extra="forbid")
    data: list[dict[str, Any]] = _rows(ValueRow)
    winsorize_features: float | None = Field(None, ge=0, le=0.5, description="fraction clipped per tail, or null")


class SizeRequest(BaseModel):
    """Rows and the parameters of :func:`factor_engine.styles.size` (quantile fractions)."""

    model_config = ConfigDict(extra="forbid")
    data: list[dict[str, Any]] = _rows(SizeRow)
    lower_decile: float = Field(0.2, ge=0, le=1)
    upper_decile: float = Field(0.8, ge=0, le=1)


class Score(BaseModel):
    """A style score (cross-sectionally standardized, unitless); null where the library gives none."""

    symbol: str
    date: datetime.date
    score: float | None


class ScoresResponse(BaseModel):
    """The scores of one style factor, sorted by (date, symbol)."""

    factor: str = Field(description="score column, e.g. mom_score")
    rows: int
    scores: list[Score]


class StyleInfo(BaseModel):
    """A registered style factor and the panel columns it needs: every one of ``inputs`` and, when ``any_of`` is
    not empty, every column of one of its alternatives; ``requirement`` says both in words. ``unless``: styles
    that cover it (it is left out of a model's default styles when one of them is used)."""

    name: str
    score: str
    description: str
    defaults: dict[str, Any]
    inputs: list[str]
    any_of: list[list[str]] = Field(
        description="alternatives of which the panel needs one, each a group of columns, e.g. "
        "[['turnover'], ['volume', 'shares_outstanding']]; empty: none"
    )
    unless: list[str] = Field(description="styles that cover this one, e.g. ['value'] for btop")
    requirement: str = Field(
        description="the columns needed, in words, e.g. 'one of turnover, volume + shares_outstanding (market_cap "
        "optional: equal weights without it)'"
    )
    default: bool = Field(description="whether a model uses it, when the panel supports it, without naming it")
    caps_as_weights: bool = Field(
        description="market_cap only weights the style (cap-weighted means and regressions): without it the style "
        "is still computed, equal-weighted"
    )


class FactorInfo(BaseModel):
    """The market factor."""

    name: str
    description: str


class SectorFactorInfo(BaseModel):
    """A sector label of the stored panel: a model built on the store has one sector factor per label its
    universe holds. ``symbols``: distinct symbols with a row under the label; ``rows``: such rows;
    ``first_date``, ``last_date``: where the label is seen."""

    name: str
    description: str
    symbols: int
    rows: int
    first_date: datetime.date
    last_date: datetime.date


class FactorsListResponse(BaseModel):
    """The factors a model built on the store can contain: the market, one factor per sector label of the
    stored panel (the user's taxonomy, whatever it is; empty for an empty store) and the registered styles."""

    market: FactorInfo
    sectors: list[SectorFactorInfo]
    styles: list[StyleInfo]


# --------------------------------------------------------------------------------------------------
# service


class HealthResponse(BaseModel):
    """``status`` ok when the database (and Redis, if configured) answer; degraded when only Redis does not
    (requests are answered from the database, uncached); unavailable when the database does not."""

    status: Literal["ok", "degraded", "unavailable"]
    database: str
    cache: str


class StoreInfo(BaseModel):
    dialect: str | None
    url: str


class Limits(BaseModel):
    """The service's limits: ``max_body_bytes`` (bytes), ``max_upload_rows`` (rows of one upload or JSON
    batch), ``max_upload_decoded_bytes`` (bytes an upload may decode to), ``sync_build_max_rows`` (rows),
    ``cache_ttl_seconds`` (seconds), ``max_concurrent_builds`` and ``max_queued_builds`` (per worker process),
    ``build_memory_budget_bytes`` (largest estimated peak memory of a build, bytes), ``run_lease_seconds``,
    ``max_score_cells`` (distinct dates × symbols the rows of one ``POST /factors/...`` may span)."""

    max_body_bytes: int
    max_upload_rows: int
    max_upload_decoded_bytes: int
    sync_build_max_rows: int
    cache_ttl_seconds: int
    max_concurrent_builds: int
    max_queued_builds: int
    build_memory_budget_bytes: int
    run_lease_seconds: float
    max_score_cells: int


class Capabilities(BaseModel):
    endpoint_groups: list[str]
    methods: list[str]
    adjustments: list[str]
    styles: list[str]
    upload_media_types: list[str]


class InfoResponse(BaseModel):
    """Engine version, capabilities, the configured store and cache, and the limits. ``sectors``: the sector
    labels of the stored panel, sorted (null, like ``n_sectors``, when the database cannot be reached)."""

    engine: str
    version: str
    api_prefix: str
    capabilities: Capabilities
    store: StoreInfo
    sectors: list[str] | None
    n_sectors: int | None
    cache_configured: bool
    auth_required: bool
    limits: Limits


# --------------------------------------------------------------------------------------------------
# panel data


class PanelRow(BaseModel):
    """One (date, symbol) row of the data contract (:mod:`factor_engine.panel`); a column no row of the batch
    sets is not touched in the store. Units: daily simple returns (fractions), market cap in currency units,
    ratios to price; ``volume`` and ``shares_outstanding`` in shares, ``turnover`` their ratio (fraction);
    growth rates as fractions per year; leverage as ratios. ``symbol`` and ``sector`` are labels of at most
    :data:`~factor_engine.service.limits.MAX_LABEL_CHARS` characters, without NUL characters."""

    model_config = ConfigDict(extra="forbid")
    date: datetime.date
    symbol: str = Field(max_length=MAX_LABEL_CHARS)
    asset_returns: FiniteFloat | None = None
    market_cap: FiniteFloat | None = None
    sector: str | None = Field(default=None, max_length=MAX_LABEL_CHARS)
    book_price: FiniteFloat | None = None
    sales_price: FiniteFloat | None = None
    cf_price: FiniteFloat | None = None
    volume: FiniteFloat | None = None
    shares_outstanding: FiniteFloat | None = None
    turnover: FiniteFloat | None = None
    earnings_price: FiniteFloat | None = None
    forecast_earnings_price: FiniteFloat | None = None
    dividend_yield: FiniteFloat | None = None
    earnings_growth: FiniteFloat | None = None
    sales_growth: FiniteFloat | None = None
    forecast_growth: FiniteFloat | None = None
    market_leverage: FiniteFloat | None = None
    book_leverage: FiniteFloat | None = None
    debt_to_assets: FiniteFloat | None = None


class PanelRowsRequest(BaseModel):
    """A small batch of panel rows as JSON (use /data/panel/upload for millions of rows); at most the
    service's ``max_upload_rows`` rows (413 above)."""

    model_config = ConfigDict(extra="forbid")
    rows: list[PanelRow] = Field(min_length=1)


#: A style parameter's value: a JSON number (finite), boolean, string or null.
StyleParameter = bool | int | FiniteFloat | Annotated[str, Field(max_length=200)] | None


class StyleScoresRequest(BaseModel):
    """Rows in the data contract's columns (those the style reads; see ``GET /factors/list``) and the keyword
    parameters of the style's function (its ``defaults`` in ``GET /factors/list``; a window above the
    service's build limits is refused as for a build).

    Each row is a :class:`PanelRow`."""

    model_config = ConfigDict(extra="forbid")
    data: list[dict[str, Any]] = _rows(PanelRow)
    params: dict[Annotated[str, Field(max_length=100)], StyleParameter] = Field(
        default_factory=dict, max_length=50, description='e.g. {"window": 126, "half_life": 42}'
    )


class IngestResponse(BaseModel):
    """What an ingestion did."""

    rows: int
    inserted: int
    updated: int
    symbols: int
    first_date: datetime.date
    last_date: datetime.date
    seconds: float


class PanelSummaryResponse(BaseModel):
    """What the store holds."""

    rows: int
    symbols: int
    first_date: datetime.date | None
    last_date: datetime.date | None
    columns: list[str]


class SymbolsResponse(BaseModel):
    count: int
    symbols: list[str]


class DeletedResponse(BaseModel):
    """Panel rows deleted."""

    deleted: int


# --------------------------------------------------------------------------------------------------
# models and jobs


class CreateModelRequest(BaseModel):
    """Build a risk model from the stored panel.

    universe_symbols: symbols the model must cover (e.g. your holdings); every one must be in the store. They
        are always in the model's universe, on top of the ``universe_size`` largest assets by market cap of
        each date (a factor model is estimated on a broad universe, as Barra's estimation universe). With
        ``restrict_to_symbols`` the universe is these symbols only. null = the largest assets only.
    restrict_to_symbols: true = the universe is ``universe_symbols`` only (then at least as many assets as
        factors are needed on a date).
    start_date, end_date: inclusive range of the model's dates (null = unbounded).
    history_days: calendar days of stored history before ``start_date`` also loaded to warm up the style
        look-backs (momentum needs about 13 months) and the covariance and specific-risk estimates; the
        model keeps only the dates from ``start_date`` on.
    universe_size: largest assets by market cap kept per date (0 = all); null = the config's
        ``universe.size`` if given, else 3000.
    config: the model configuration as the TOML tables of :mod:`factor_engine.config` (null = defaults).
    background: true = always a job (202); false = build now even when large; null = by panel size.
    """

    model_config = ConfigDict(extra="forbid")
    universe_symbols: list[str] | None = Field(None, max_length=MAX_LISTED_SYMBOLS)
    restrict_to_symbols: bool = False
    start_date: datetime.date | None = None
    end_date: datetime.date | None = None
    history_days: int = Field(730, ge=0, le=36_500)
    universe_size: int | None = Field(None, ge=0, le=int(BUILD_CONFIG_BOUNDS["universe.size"][1] or 0))
    config: dict[str, Any] | None = None
    background: bool | None = None


class ModelSummaryResponse(BaseModel):
    """A built model. Factor returns are daily; the covariance forecast is daily × ``horizon``."""

    id: str
    model_url: str
    created_at: datetime.datetime
    updated_at: datetime.datetime | None = Field(
        None, description="when dates were last added by POST /models/{id}/update (UTC); null: never updated"
    )
    factors: list[str]
    sectors: list[str]
    styles: list[str]
    first_date: datetime.date | None
    last_date: datetime.date | None
    n_dates: int
    n_assets: int
    covariance_dates: int
    horizon: int
    config: dict[str, Any]
    request: dict[str, Any]
    timings: dict[str, float]
    engine_version: str
    build: dict[str, Any] = Field(
        default_factory=dict,
        description="What the build did with the data: market cap use, universe, sectors with their asset counts, "
        "styles used and left out, factors left out with reasons, and the warnings.",
    )
    warnings: list[str] = Field(default_factory=list, description="The build's warnings, one sentence each.")


class JobAccepted(BaseModel):
    """A build or model update queued as a background job."""

    job_id: str
    status: str
    status_url: str


class JobResponse(BaseModel):
    """A job: a build (its id is the id of the model it makes) or an update (it adds dates to ``model_id``).
    ``progress`` is 0–1; ``timings`` in seconds."""

    id: str
    kind: Literal["build", "update"] = "build"
    model_id: str = Field(description="the model the job builds (its own id) or updates")
    status: Literal["queued", "running", "succeeded", "failed"]
    stage: str | None
    progress: float
    error: str | None
    timings: dict[str, float]
    request: dict[str, Any]
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    status_url: str
    model_url: str | None = Field(description="set when the job succeeded")


class UpdateModelRequest(BaseModel):
    """POST /models/{id}/update: extend a stored model by the dates of the stored panel after its last date.

    Attributes
    ----------
    end_date: the last date to add (inclusive; null = every later date of the stored panel).
    """

    model_config = ConfigDict(extra="forbid")
    end_date: datetime.date | None = None


class ModelDatesResponse(BaseModel):
    """Dates with a covariance forecast, specific risk and exposures (those the portfolio endpoints accept)."""

    model_id: str
    dates: list[datetime.date]


class DiagnosticsResponse(BaseModel):
    """Per-date regression diagnostics in columnar form: ``n_assets[i]`` assets used and ``r2[i]`` (weighted,
    uncentered R², 0–1; null on a skipped date) of the cross-sectional regression on ``dates[i]``."""

    model_id: str
    dates: list[datetime.date]
    n_assets: list[int]
    n_excluded: list[int]
    r2: list[float | None]


class FactorReturnsResponse(BaseModel):
    """Daily factor returns (fractions) in columnar form: ``returns[i][k]`` is factor ``factors[k]`` on
    ``dates[i]``; null where the factor was not estimated that date."""

    model_id: str
    factors: list[str]
    dates: list[datetime.date]
    returns: list[list[float | None]]


class CovarianceResponse(BaseModel):
    """The factor covariance forecast made at the close of ``date``: daily fractions² × ``horizon``;
    ``covariance[i][j]`` pairs ``factors[i]`` and ``factors[j]``; null for a factor without enough history."""

    model_id: str
    date: datetime.date
    horizon: int
    factors: list[str]
    covariance: list[list[float | None]]


class SpecificRiskResponse(BaseModel):
    """Specific volatility forecasts made at the close of ``date`` (daily sd, fraction), by symbol."""

    model_id: str
    date: datetime.date
    symbols: list[str]
    specific_vol: list[float | None]


class ExposuresResponse(BaseModel):
    """Exposures known at the close of ``date``: ``exposures[n][k]`` of ``symbols[n]`` to ``factors[k]``."""

    model_id: str
    date: datetime.date
    factors: list[str]
    symbols: list[str]
    exposures: list[list[float | None]]


# --------------------------------------------------------------------------------------------------
# portfolios


class Weight(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: str
    weight: FiniteFloat


Weights = dict[str, FiniteFloat] | list[Weight]


class PortfolioRequest(BaseModel):
    """A portfolio on a model date. Weights are fractions of capital (0.05 is 5 %; negative = short), as
    ``{"SYM": w}`` or ``[{"symbol", "weight"}]``. ``unknown``: ``raise`` answers 422 listing symbols the
    model does not cover on that date; ``drop`` ignores them and lists them in ``dropped_symbols``.

    Weights (and the benchmark) that look like percentages, ``|Σw| > 1.5`` or some ``|w| > 1.5``, are a 422;
    weights whose sum differs from 1 by more than 0.01 are used as given, with a line in ``warnings``.
    ``allow_unnormalized: true`` turns both checks off for long-short, leveraged, partly invested books or
    active weights."""

    model_config = ConfigDict(extra="forbid")
    model_id: str
    date: datetime.date | None = Field(None, description="model date; null = the last one")
    weights: Weights
    benchmark: Weights | None = None
    unknown: Literal["raise", "drop"] = "raise"
    allow_unnormalized: bool = Field(
        False, description="true: weights need not look like a fully invested book of fractions (no checks)"
    )
    top: int = Field(10, ge=1, le=1000, description="/portfolio/risk: largest asset contributions returned")


class FactorExposure(BaseModel):
    factor: str
    portfolio: float
    benchmark: float
    active: float


class PortfolioExposuresResponse(BaseModel):
    """Portfolio exposures ``Bᵀw`` per factor; ``benchmark`` is 0 and ``active`` = ``portfolio`` without one."""

    model_id: str
    date: datetime.date
    exposures: list[FactorExposure]
    dropped_symbols: list[str]
    warnings: list[str] = Field(description="weights or benchmark not summing to 1 (used as given)")


class RiskFigures(BaseModel):
    """Standard deviations (fractions) over the period; shares of variance 0–1."""

    total_risk: float
    factor_risk: float
    specific_risk: float
    tracking_error: float | None
    factor_variance_share: float | None
    specific_variance_share: float | None


class FactorContribution(BaseModel):
    """Daily: exposure, factor volatility, correlation with the factor part, contribution (adds up to the
    factor risk) and share of the total variance."""

    factor: str
    exposure: float
    volatility: float
    correlation: float | None
    contribution: float
    variance_share: float | None


class AssetContribution(BaseModel):
    """Daily: (active) weight, marginal contribution, contribution (adds up to the total risk) and share."""

    symbol: str
    weight: float
    mcr: float | None
    contribution: float | None
    share: float | None


class PortfolioRiskResponse(BaseModel):
    """:func:`factor_engine.portfolio.decompose_risk` of the portfolio (active weights with a benchmark)."""

    model_id: str
    date: datetime.date
    periods_per_year: int = Field(description="annualized = daily × √periods_per_year")
    daily: RiskFigures
    annualized: RiskFigures
    factor_contributions: list[FactorContribution]
    top_assets: list[AssetContribution] = Field(description="largest |contribution| first")
    dropped_symbols: list[str]
    warnings: list[str] = Field(description="weights or benchmark not summing to 1 (used as given)")


# --------------------------------------------------------------------------------------------------
# optimization

FactorName = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
# a bound of a factor exposure; null leaves that side open
Bound = FiniteFloat | None


class Alpha(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: str
    alpha: FiniteFloat


class OptimizeRequest(BaseModel):
    """An optimization on a model date: the keys of :class:`factor_engine.portfolio.spec.OptimizeSpec` (the
    command line's ``optimize.toml`` keys) plus ``model_id`` and ``date``. The portfolio is fully invested;
    weights and alphas are fractions (``{"SYM": x}`` or ``[{"symbol", "weight"|"alpha"}]``); ranges and the
    combinations of keys are checked by the spec (422 naming the key)."""

    model_config = ConfigDict(extra="forbid")
    model_id: str
    date: datetime.date | None = Field(None, description="model date; null = the last one")
    objective: Literal["min-variance", "min-tracking-error", "max-alpha"] = Field(
        "min-variance",
        description="min-variance: least total risk (a benchmark only anchors neutral and max_tracking_error); "
        "min-tracking-error: least active risk (needs benchmark); max-alpha: most alphaᵀh − λ·hᵀΣh (needs alpha; "
        "h active with a benchmark)",
    )
    benchmark: Weights | None = None
    alpha: dict[str, FiniteFloat] | list[Alpha] | None = Field(
        None, description="daily expected returns (fractions) of every model symbol on the date; max-alpha only"
    )
    risk_aversion: FiniteFloat | None = Field(None, description="λ > 0 of max-alpha (default 1)")
    long_only: bool = False
    neutral: list[FactorName] = Field(
        default_factory=list, max_length=MAX_OPTIMIZE_FACTORS, description="factors with zero (active) exposure"
    )
    factor_bounds: dict[FactorName, tuple[Bound, Bound]] = Field(
        default_factory=dict,
        max_length=MAX_OPTIMIZE_FACTORS,
        description='bounds on the portfolio\'s exposure, e.g. {"market": [0.9, 1.1], "sze_score": [null, 0]}',
    )
    max_weight: FiniteFloat | None = Field(None, description="|w| ≤ max_weight per asset (fraction, > 0)")
    max_tracking_error: FiniteFloat | None = Field(
        None, description="annualized tracking error against benchmark (fraction, daily sd × √252)"
    )
    max_turnover: FiniteFloat | None = Field(None, description="Σ|w − current| ≤ max_turnover; needs current")
    current: Weights | None = None
    allow_unnormalized: bool = Field(False, description="no percentage check of benchmark and current")


class OptimizeResponse(BaseModel):
    """The optimized portfolio: its nonzero weights (fractions, by symbol), the ex-ante risk of the portfolio
    (``tracking_error`` against the benchmark when there is one), its exposures (benchmark and active with a
    benchmark), the constraints in words and the solver's status."""

    model_id: str
    date: datetime.date
    objective: str
    constraints: list[str]
    status: str
    solver: str
    solve_seconds: float
    weights: list[Weight] = Field(description="nonzero weights in symbol order; other model symbols hold 0")
    periods_per_year: int = Field(description="annualized = daily × √periods_per_year")
    daily: RiskFigures
    annualized: RiskFigures
    exposures: list[FactorExposure]
    warnings: list[str]
