"""Live intraday factor returns in the service: stored models prepared for live sessions (an in-process LRU),
``POST /live/factor-returns`` and the answers shared with the stream (:mod:`factor_engine.service.live_stream`).

A stored model does not hold the market caps of its last close (the regression weights, the sector constraint
and today's universe rank use them): they are read from the stored panel's rows of the model's last date, of the
symbols the model's build used when it was restricted to its ``universe_symbols``.
"""

from __future__ import annotations

import datetime
import math
import threading
from collections import OrderedDict
from typing import Literal

from starlette.requests import HTTPConnection

from factor_engine.live import (
    LiveBook,
    LiveError,
    LiveFactorReturns,
    LiveModel,
    LivePortfolio,
    LiveSession,
    live_book,
    live_portfolio,
)
from factor_engine.portfolio.analytics import ALLOW_UNNORMALIZED_HINT, TRADING_DAYS
from factor_engine.service.errors import InputError, ResourceNotFound
from factor_engine.service.live_schemas import (
    LiveFactorPnl,
    LiveFactorReturnsResponse,
    LivePortfolioResponse,
    LiveRequest,
    LiveResiduals,
)
from factor_engine.service.portfolios import _as_mapping, _figures
from factor_engine.service.runtime import ServiceState
from factor_engine.service.schemas import FactorExposure, Weights
from factor_engine.storage import ModelSummary, NotFound, Store

__all__ = [
    "LiveService",
    "factor_returns",
    "live_service",
    "load_live_model",
    "make_book",
    "portfolio_response",
    "result_fields",
]

#: Stored models kept prepared for live sessions (each about N × (K + 2) floats plus its risk snapshot).
LIVE_MODEL_CACHE = 8
_OPT_IN = 'send "allow_unnormalized": true'


def load_live_model(store: Store, summary: ModelSummary) -> LiveModel:
    """The stored model of ``summary`` at its last date, with the stored panel's caps of that close, prepared for
    live sessions. InputError for a model that cannot go live."""
    model_id = summary.id
    last = summary.last_date
    if last is None:
        raise InputError(f"model {model_id} has no dates")
    model = store.load_model(model_id, start=last, end=last)
    panel = None
    if not str(model.notes.get("market_cap", "")).startswith("absent"):
        request = summary.request or {}
        symbols = request.get("universe_symbols") if request.get("restrict_to_symbols") else None
        panel = store.load_panel(symbols=symbols, start=last, end=last)
    try:
        return LiveModel.from_model(model, panel)
    except LiveError as error:
        raise InputError(f"model {model_id} cannot give live factor returns: {error}") from None


class LiveService:
    """The stored models prepared for live sessions in one app (an LRU shared by requests and streams).

    Parameters
    ----------
    cache_size: prepared models kept.
    """

    def __init__(self, cache_size: int = LIVE_MODEL_CACHE) -> None:
        self._size = cache_size
        self._models: OrderedDict[tuple[str, datetime.date | None], LiveModel] = OrderedDict()
        self._lock = threading.Lock()

    def model(self, store: Store, model_id: str) -> LiveModel:
        """The stored model ``model_id`` as of its last date, prepared (loaded on a miss). The store is asked for
        the model every time: a deleted model is a 404 even when prepared, and a model extended by an update
        (its last date moved) is prepared afresh. Blocking: call it in a thread."""
        try:
            summary = store.get_model(model_id)
        except NotFound:
            raise ResourceNotFound(f"no model {model_id}") from None
        key = (model_id, summary.last_date)
        with self._lock:
            hit = self._models.get(key)
            if hit is not None:
                self._models.move_to_end(key)
                return hit
        live = load_live_model(store, summary)
        with self._lock:
            self._models[key] = live
            while len(self._models) > self._size:
                self._models.popitem(last=False)
        return live


def live_service(connection: HTTPConnection) -> LiveService:
    """The app's :class:`LiveService`, created on first use (a request or a WebSocket of the app)."""
    state = connection.app.state
    service: LiveService | None = getattr(state, "live", None)
    if service is None:
        service = LiveService()
        state.live = service
    return service


def make_book(
    model: LiveModel, weights: Weights, unknown: Literal["raise", "drop"], allow_unnormalized: bool
) -> LiveBook:
    """A request's weights as a :class:`LiveBook` (InputError, 422, naming what is wrong)."""
    mapping = _as_mapping(weights, "weights")
    try:
        return live_book(model, mapping, unknown=unknown, allow_unnormalized=allow_unnormalized)
    except ValueError as error:
        message = str(error).replace(ALLOW_UNNORMALIZED_HINT, _OPT_IN)
        raise InputError(message.replace("pass unknown='drop'", 'send "unknown": "drop"')) from None


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def result_fields(model_id: str, result: LiveFactorReturns, *, residuals: bool = False) -> dict[str, object]:
    """The fields of :class:`LiveFactorReturnsResponse` for one solve."""
    fields: dict[str, object] = {
        "model_id": model_id,
        "as_of": result.as_of,
        "factors": list(result.factors),
        "factor_returns": [_finite(v) for v in result.factor_returns.tolist()],
        "n_assets": result.n_assets,
        "n_priced": result.n_priced,
        "excluded": result.excluded,
        "r2": result.r2,
        "condition_number": result.condition_number,
        "dropped": list(result.dropped),
        "reason": result.reason,
        "updates": result.updates,
    }
    if residuals:
        frame = result.residuals
        fields["residuals"] = LiveResiduals(
            symbols=frame.get_column("symbol").to_list(), residuals=frame.get_column("residual").to_list()
        )
    return fields


def portfolio_response(book: LiveBook, live: LivePortfolio) -> LivePortfolioResponse:
    """A :class:`LivePortfolio` as its response (sent on every push of a client with a portfolio)."""
    daily = _figures(live.risk)
    # the risk figures × √252, as RiskDecomposition.annualized scales them, without rebuilding its frames (a third
    # of the cost of a push)
    scale = math.sqrt(TRADING_DAYS)
    annualized = {
        name: None if value is None else value * scale
        for name in ("total_risk", "factor_risk", "specific_risk", "tracking_error")
        for value in [getattr(daily, name)]
    }
    return LivePortfolioResponse(
        pnl=live.pnl,
        factor_pnl=[LiveFactorPnl(**row) for row in live.factor_pnl.iter_rows(named=True)],
        factor_total=live.factor_total,
        specific_pnl=live.specific_pnl,
        n_holdings=live.n_holdings,
        n_priced=live.n_priced,
        exposures=[FactorExposure(**row) for row in live.exposures.iter_rows(named=True)],
        daily=daily,
        annualized=daily.model_copy(update=annualized),
        periods_per_year=TRADING_DAYS,
        dropped_symbols=list(book.dropped_symbols),
        warnings=[message.replace(ALLOW_UNNORMALIZED_HINT, _OPT_IN) for message in live.warnings],
    )


def factor_returns(state: ServiceState, live: LiveService, request: LiveRequest) -> LiveFactorReturnsResponse:
    """``POST /live/factor-returns``: one update on a fresh session of the model (blocking: run in a thread)."""
    if request.returns is None and request.prices is None:
        raise InputError('give today\'s "returns" ({"SYM": r}) or "prices" with the previous "closes"')
    if request.prices is not None and request.closes is None:
        raise InputError('"prices" need the previous "closes" ({"SYM": close}) to be turned into returns')
    model = live.model(state.store(), request.model_id)
    unknown = request.unknown
    session = LiveSession(model)
    try:
        if request.closes is not None:
            session.set_closes(request.closes, unknown=unknown)
        result = session.update(prices=request.prices, returns=request.returns, unknown=unknown)
    except LiveError as error:
        raise InputError(str(error).replace("unknown='drop'", '"unknown": "drop"')) from None
    portfolio = None
    if request.weights is not None:
        book = make_book(model, request.weights, request.unknown, request.allow_unnormalized)
        portfolio = portfolio_response(book, live_portfolio(model, book, result))
    return LiveFactorReturnsResponse.model_validate(
        {**result_fields(request.model_id, result, residuals=request.include_residuals), "portfolio": portfolio}
    )
