"""Request, response and stream-message models of the live endpoints (pydantic v2): ``POST /live/factor-returns``
and the WebSocket ``/live/stream/{model_id}``.

Units: returns and P&L are daily fractions (0.01 is +1 %) of today so far; prices and closes in currency units;
weights fractions of capital.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from factor_engine.service.limits import MAX_LABEL_CHARS, MAX_LISTED_SYMBOLS
from factor_engine.service.schemas import FactorExposure, FiniteFloat, RiskFigures, Weights

__all__ = [
    "LIVE_MESSAGE",
    "LiveAuthMessage",
    "LiveClosesMessage",
    "LiveFactorPnl",
    "LiveFactorReturnsResponse",
    "LivePortfolioMessage",
    "LivePortfolioResponse",
    "LiveRequest",
    "LiveResetMessage",
    "LiveResiduals",
    "LiveStreamReady",
    "LiveStreamResult",
    "LiveUpdateMessage",
]

Symbol = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
#: symbol → value (a price, a close or a return); at most MAX_LISTED_SYMBOLS entries, finite numbers only.
Values = Annotated[dict[Symbol, FiniteFloat], Field(max_length=MAX_LISTED_SYMBOLS)]
Unknown = Literal["raise", "drop"]
_UNKNOWN = "raise: a symbol the model does not know is an error naming it; drop: ignore it"


class LiveRequest(BaseModel):
    """Today's factor returns from today's returns so far, or current prices over the previous closes.

    ``returns``: ``{"SYM": r}`` today's return so far (fraction, > −1). ``prices`` with ``closes``:
    ``{"SYM": price}`` and the previous close of each priced symbol; the return is ``price / close − 1``. Give
    ``returns``, ``prices`` or both (a symbol in both takes its price). Symbols without either are left out of
    today's regression. ``weights`` (optional): a portfolio whose live P&L, exposures and risk are returned.
    """

    model_config = ConfigDict(extra="forbid")
    model_id: str = Field(max_length=MAX_LABEL_CHARS)
    returns: Values | None = None
    prices: Values | None = None
    closes: Values | None = None
    unknown: Unknown = Field("raise", description=_UNKNOWN)
    weights: Weights | None = None
    allow_unnormalized: bool = Field(
        False, description="true: weights need not look like a fully invested book of fractions (no checks)"
    )
    include_residuals: bool = Field(False, description="true: return each used asset's residual return")


class LiveFactorPnl(BaseModel):
    """One factor's share of a portfolio's P&L today: ``pnl = exposure × factor_return``."""

    factor: str
    exposure: float = Field(description="Σ w B over the holdings priced so far (exposures at the last close)")
    factor_return: float | None = Field(description="today's return so far; null when not estimated (pnl 0)")
    pnl: float


class LivePortfolioResponse(BaseModel):
    """A portfolio's live figures: P&L so far split into factors and specific, and the exposures and risk of
    its weights drifted by today's returns (``w (1 + r) / (1 + pnl)``)."""

    pnl: float = Field(description="Σ w r over the holdings (a holding without a price counts 0)")
    factor_pnl: list[LiveFactorPnl]
    factor_total: float = Field(description="Σ of factor_pnl")
    specific_pnl: float = Field(description="pnl − factor_total")
    n_holdings: int
    n_priced: int = Field(description="holdings with a price or return so far")
    exposures: list[FactorExposure]
    daily: RiskFigures
    annualized: RiskFigures
    periods_per_year: int
    dropped_symbols: list[str]
    warnings: list[str]


class LiveResiduals(BaseModel):
    symbols: list[str]
    residuals: list[float]


class LiveFactorReturnsResponse(BaseModel):
    """Today's cross-sectional regression so far, on the exposures of the model's last close (``as_of``)."""

    model_id: str
    as_of: datetime.date = Field(description="the close whose exposures explain today's returns")
    factors: list[str]
    factor_returns: list[float | None] = Field(description="today's factor returns so far, in factor order")
    n_assets: int = Field(description="assets in today's regression")
    n_priced: int = Field(description="assets with a price or return so far")
    excluded: dict[str, int] = Field(description="priced assets left out, by reason")
    r2: float | None
    condition_number: float | None
    dropped: list[str] = Field(description="factors not estimated today")
    reason: str
    updates: int = Field(description="updates applied to the session")
    residuals: LiveResiduals | None = None
    portfolio: LivePortfolioResponse | None = None


# --------------------------------------------------------------------------------------------------
# the stream: messages a client sends (JSON text frames, told apart by "type")


class LiveAuthMessage(BaseModel):
    """The API key, as the first message, when the handshake carried none (browsers cannot set headers)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["auth"]
    api_key: str = Field(max_length=1000)


class LiveClosesMessage(BaseModel):
    """The previous closes prices are measured against (added to or replacing earlier ones)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["closes"]
    closes: Values
    unknown: Unknown = "raise"


class LiveUpdateMessage(BaseModel):
    """Latest prices and/or returns of some assets; every channel subscriber gets fresh factor returns."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["update"]
    id: int | Annotated[str, Field(max_length=64)] | None = Field(
        None, description="echoed as update_id by the first result that includes this update"
    )
    prices: Values | None = None
    returns: Values | None = None
    unknown: Unknown = "raise"


class LivePortfolioMessage(BaseModel):
    """This client's portfolio (null clears it): its pushes then carry the portfolio's live figures."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["portfolio"]
    weights: Weights | None
    unknown: Unknown = "raise"
    allow_unnormalized: bool = False


class LiveResetMessage(BaseModel):
    """Forget the channel's prices, returns and closes (a new day)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["reset"]


LiveMessage = Annotated[
    LiveAuthMessage | LiveClosesMessage | LiveUpdateMessage | LivePortfolioMessage | LiveResetMessage,
    Field(discriminator="type"),
]
#: Validates one text frame of a client (JSON; NaN and Infinity are parsed, then refused as not finite).
LIVE_MESSAGE: TypeAdapter[
    LiveAuthMessage | LiveClosesMessage | LiveUpdateMessage | LivePortfolioMessage | LiveResetMessage
] = TypeAdapter(LiveMessage)


# --------------------------------------------------------------------------------------------------
# the stream: what the service pushes


class LiveStreamReady(BaseModel):
    """Sent once the client is subscribed to its channel."""

    type: Literal["ready"] = "ready"
    model_id: str
    channel: str
    as_of: datetime.date
    factors: list[str]
    n_assets: int = Field(description="symbols the session accepts")
    queue_size: int = Field(description="results kept for this client; older ones are dropped when it lags")


class LiveStreamResult(LiveFactorReturnsResponse):
    """Fresh factor returns after one or more updates of the channel."""

    type: Literal["factor_returns"] = "factor_returns"
    channel: str
    update_id: int | str | None = Field(description="id of the last update this result includes")
    solve_ms: float = Field(description="milliseconds the service spent on the updates and the solve")
    dropped_results: int = Field(description="results this client missed so far because it read too slowly")
