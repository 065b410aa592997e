"""The live stream: ``WebSocket {API_PREFIX}/live/stream/{model_id}?channel=NAME``.

Clients of one (model, channel) share one :class:`~factor_engine.live.LiveSession`. Any of them may send price
updates (a feed handler), and every one of them gets the fresh factor returns (dashboards, risk monitors), its
own portfolio's live figures included when it set one. The protocol is JSON text frames with a ``type``
(:mod:`factor_engine.service.live_schemas`):

* client → service: ``closes``, ``update`` (prices and/or returns of some assets, an optional ``id``),
  ``portfolio``, ``reset``, and ``auth`` (the API key as the first message, when the handshake carried none);
* service → client: ``ready`` once subscribed, ``factor_returns`` after updates (``update_id``: the last update
  it includes), ``ok`` acknowledging closes, portfolio and reset, and ``error`` (the message is refused, the
  connection stays open; ``id`` names the update).

One engine task per channel applies the pending updates in order and solves once for all of them (updates that
arrive during a solve are coalesced into the next one). It runs on the event loop: a solve takes a few
milliseconds of small numpy operations that hold the GIL, which a worker thread would only contend for. Each
client has its own bounded queue of results, drained by its own sender task: when a client
reads too slowly its oldest pending results are dropped (each result supersedes the previous one: factor
returns so far), never the producer or the other clients blocked; it is told how many it missed
(``dropped_results``). A client's portfolio figures are computed when its result is sent, so the results it
drops cost nothing. A client that disconnects leaves its channel; a channel without clients keeps its
prices for the next one (at most :data:`MAX_CHANNELS` channels, idle ones evicted first).

Close codes: 1008 missing or invalid API key, 4404 unknown model, 4422 a model that cannot go live, 1011 the
database is unavailable, 1013 every channel is busy.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from factor_engine._dense import single_threaded_blas
from factor_engine.live import LiveBook, LiveError, LiveFactorReturns, LiveModel, LiveSession, live_portfolio
from factor_engine.model import ModelError
from factor_engine.service.auth import INVALID_KEY, MISSING_KEY, presented_key
from factor_engine.service.errors import InputError, ResourceNotFound
from factor_engine.service.limits import MAX_LIVE_MESSAGE_CHARS
from factor_engine.service.live import LiveService, make_book, portfolio_response, result_fields
from factor_engine.service.live_schemas import (
    LIVE_MESSAGE,
    LiveAuthMessage,
    LiveClosesMessage,
    LivePortfolioMessage,
    LiveResetMessage,
    LiveStreamReady,
    LiveStreamResult,
    LiveUpdateMessage,
)
from factor_engine.service.runtime import ServiceState
from factor_engine.storage import NotFound, StoreUnavailable

__all__ = ["MAX_CHANNELS", "RESULT_QUEUE", "LiveChannel", "LiveChannels", "Subscriber", "live_channels", "serve"]

logger = logging.getLogger(__name__)

#: Results kept per client: when it lags, older ones are dropped (each result supersedes the previous one).
RESULT_QUEUE = 4
#: Acknowledgements and errors kept per client (oldest dropped beyond it).
NOTICE_QUEUE = 64
#: Updates a channel holds while it solves; a client sending more is told to slow down.
MAX_PENDING = 1000
#: Channels (model, name) held by one service process; idle ones are evicted first.
MAX_CHANNELS = 64
#: Seconds a client without a key in its handshake has to send the ``auth`` message.
AUTH_SECONDS = 10.0
CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_BUSY = 1008, 1011, 1013
CLOSE_NOT_FOUND, CLOSE_UNPROCESSABLE = 4404, 4422
_SHOWN_ERRORS = 5

StreamMessage = LiveAuthMessage | LiveClosesMessage | LiveUpdateMessage | LivePortfolioMessage | LiveResetMessage


class Subscriber:
    """One client of a channel: its bounded result queue, its notices and its sender task's wake-up.

    Parameters
    ----------
    websocket: the client's connection (accepted).
    queue_size: results kept while the client lags (the oldest is dropped beyond it).
    """

    def __init__(self, websocket: WebSocket, model: LiveModel | None = None, queue_size: int = RESULT_QUEUE) -> None:
        self.websocket = websocket
        self.model = model
        self.results: deque[tuple[dict[str, Any], LiveFactorReturns | None]] = deque(maxlen=queue_size)
        self.notices: deque[str] = deque(maxlen=NOTICE_QUEUE)
        self.wake = asyncio.Event()
        self.dropped = 0
        self.book: LiveBook | None = None

    def push_result(self, payload: dict[str, Any], result: LiveFactorReturns | None = None) -> None:
        """Queue a result for this client, dropping its oldest pending one when the queue is full. Its portfolio's
        figures are computed when the result is sent: a dropped result costs nothing."""
        if len(self.results) == self.results.maxlen:
            self.dropped += 1
        self.results.append((payload, result))
        self.wake.set()

    def render(self, payload: dict[str, Any], result: LiveFactorReturns | None) -> str:
        """The text of a queued result, with this client's portfolio figures when it set a portfolio."""
        portfolio = None
        if self.book is not None and result is not None and self.model is not None:
            try:
                figures = portfolio_response(self.book, live_portfolio(self.model, self.book, result))
            except ValueError as error:  # a defect, not the client's input (its weights were checked)
                self.error(f"portfolio: {error}")
            else:
                portfolio = figures.model_dump(mode="json")
        return json.dumps({**payload, "portfolio": portfolio, "dropped_results": self.dropped})

    def notify(self, payload: dict[str, Any]) -> None:
        """Queue an acknowledgement, an error or the ready message (sent before pending results)."""
        self.notices.append(json.dumps(payload))
        self.wake.set()

    def error(self, detail: str, message_id: object = None) -> None:
        """Queue an error message (the client's message was refused; the connection stays open)."""
        self.notify({"type": "error", "detail": detail, "id": message_id})

    async def pump(self) -> None:
        """Send what is queued, notices first, for as long as the connection lives (this client's task only:
        a slow reader blocks nothing but itself)."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.notices or self.results:
                text = self.notices.popleft() if self.notices else self.render(*self.results.popleft())
                await self.websocket.send_text(text)


@dataclass
class _Outcome:
    """What one engine round produced: the notices for the senders and the result (payload and solve)."""

    notices: list[tuple[Subscriber, dict[str, Any]]] = field(default_factory=list)
    result: LiveFactorReturns | None = None
    payload: dict[str, Any] | None = None


class LiveChannel:
    """The clients of one (model, channel) and their shared session; one engine task solves for them.

    Parameters
    ----------
    model_id, name: the stored model and the channel's name.
    model: the model prepared for live sessions.
    """

    def __init__(self, model_id: str, name: str, model: LiveModel) -> None:
        self.model_id = model_id
        self.name = name
        self.model = model
        self.session = LiveSession(model)
        self.subscribers: set[Subscriber] = set()
        self.pending: deque[tuple[Subscriber, StreamMessage]] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.latest: LiveFactorReturns | None = None
        self.latest_payload: dict[str, Any] | None = None

    def join(self, subscriber: Subscriber) -> None:
        """Add a client (it gets the latest result at once) and start the engine if it is not running."""
        subscriber.model = self.model
        self.subscribers.add(subscriber)
        if self.latest_payload is not None:
            subscriber.push_result(self.latest_payload, self.latest)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"live-{self.model_id}-{self.name}")

    def leave(self, subscriber: Subscriber) -> None:
        """Remove a client; the engine stops when none is left."""
        self.subscribers.discard(subscriber)
        self.wake.set()

    def submit(self, subscriber: Subscriber, message: StreamMessage) -> None:
        """Queue an update, closes or reset for the engine (refused when too many are pending)."""
        if len(self.pending) >= MAX_PENDING:
            subscriber.error(
                f"{MAX_PENDING} updates are pending on this channel: send fewer, larger updates",
                getattr(message, "id", None),
            )
            return
        self.pending.append((subscriber, message))
        self.wake.set()

    def set_portfolio(self, subscriber: Subscriber, message: LivePortfolioMessage) -> None:
        """Set (or clear) a client's portfolio; with a result already out, send it its figures at once."""
        if message.weights is None:
            subscriber.book = None
            subscriber.notify({"type": "ok", "of": "portfolio", "holdings": 0})
            return
        try:
            book = make_book(self.model, message.weights, message.unknown, message.allow_unnormalized)
        except InputError as error:
            subscriber.error(str(error))
            return
        subscriber.book = book
        subscriber.notify(
            {
                "type": "ok",
                "of": "portfolio",
                "holdings": int((book.weights != 0).sum()),
                "dropped_symbols": list(book.dropped_symbols),
                "warnings": list(book.warnings),
            }
        )
        if self.latest_payload is not None:
            subscriber.push_result(self.latest_payload, self.latest)

    async def _run(self) -> None:
        # BLAS single-threaded while the channel lives: the solves are small, and a multi-threaded BLAS makes
        # them many times slower on a busy machine (entering it per solve would cost more than the solve)
        with single_threaded_blas():
            while self.subscribers:
                await self.wake.wait()
                self.wake.clear()
                if not self.pending:
                    continue
                batch = list(self.pending)
                self.pending.clear()
                try:
                    outcome = self._process(batch)
                except Exception:  # a defect: say so to the senders, keep the channel alive
                    logger.exception("live channel %s/%s failed on an update", self.model_id, self.name)
                    for sender in {s for s, _ in batch}:
                        sender.error("internal error while applying the update (logged by the service)")
                    continue
                self._deliver(outcome)
                await asyncio.sleep(0)  # let the loop receive and send before the next round

    def _process(self, batch: list[tuple[Subscriber, StreamMessage]]) -> _Outcome:
        """Apply the batch in order and solve once (the engine task alone touches the session)."""
        tic = time.perf_counter()
        outcome = _Outcome()
        session = self.session
        changed = False
        update_id: object = None
        for sender, message in batch:
            try:
                if isinstance(message, LiveClosesMessage):
                    session.set_closes(message.closes, unknown=message.unknown)
                    outcome.notices.append((sender, {"type": "ok", "of": "closes", "count": len(message.closes)}))
                elif isinstance(message, LiveResetMessage):
                    session.reset()
                    changed, update_id = True, None
                    outcome.notices.append((sender, {"type": "ok", "of": "reset"}))
                elif isinstance(message, LiveUpdateMessage):
                    session.apply(prices=message.prices, returns=message.returns, unknown=message.unknown)
                    changed, update_id = True, message.id
            except LiveError as error:
                detail = str(error).replace("unknown='drop'", '"unknown": "drop"')
                message_id = getattr(message, "id", None)
                outcome.notices.append((sender, {"type": "error", "detail": detail, "id": message_id}))
        if not changed:
            return outcome
        result = session.solve()
        self.latest = result
        payload = LiveStreamResult.model_validate(
            {
                **result_fields(self.model_id, result),
                "channel": self.name,
                "update_id": update_id,
                "solve_ms": round(1e3 * (time.perf_counter() - tic), 3),
                "dropped_results": 0,
            }
        ).model_dump(mode="json")
        outcome.result, outcome.payload = result, payload
        return outcome

    def _deliver(self, outcome: _Outcome) -> None:
        for subscriber, notice in outcome.notices:
            if subscriber in self.subscribers:
                subscriber.notify(notice)
        if outcome.payload is None:
            return
        self.latest_payload = outcome.payload
        for subscriber in self.subscribers:
            subscriber.push_result(outcome.payload, outcome.result)


class LiveChannels:
    """The channels of one service process, keyed by (model id, its last close, channel name); used on the event
    loop only.

    Parameters
    ----------
    max_channels: channels held at once; idle ones (no client) are evicted, oldest first, to make room.
    """

    def __init__(self, max_channels: int = MAX_CHANNELS) -> None:
        self.max_channels = max_channels
        self._channels: OrderedDict[tuple[str, datetime.date, str], LiveChannel] = OrderedDict()

    def get(self, model_id: str, name: str, model: LiveModel) -> LiveChannel | None:
        """The channel of the model as of ``model.as_of`` (created if needed), or None when every channel is busy.
        After an update extends the model, new clients get a fresh channel on the new close; those connected
        before keep the previous day's."""
        key = (model_id, model.as_of, name)
        channel = self._channels.get(key)
        if channel is not None:
            self._channels.move_to_end(key)
            return channel
        if len(self._channels) >= self.max_channels:
            idle = [k for k, c in self._channels.items() if not c.subscribers]
            for stale in idle[: len(self._channels) - self.max_channels + 1]:
                del self._channels[stale]
            if len(self._channels) >= self.max_channels:
                return None
        channel = self._channels[key] = LiveChannel(model_id, name, model)
        return channel

    def __len__(self) -> int:
        return len(self._channels)


def live_channels(connection: HTTPConnection) -> LiveChannels:
    """The app's :class:`LiveChannels`, created on first use."""
    state = connection.app.state
    channels: LiveChannels | None = getattr(state, "live_channels", None)
    if channels is None:
        channels = LiveChannels()
        state.live_channels = channels
    return channels


def _errors(error: ValidationError) -> str:
    """Pydantic's errors as ``loc: msg`` (never the input: it may be huge)."""
    parts = [
        f"{'.'.join(str(p) for p in item['loc']) or 'message'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    ]
    more = f" (+{len(parts) - _SHOWN_ERRORS} more)" if len(parts) > _SHOWN_ERRORS else ""
    return "; ".join(parts[:_SHOWN_ERRORS]) + more


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Send the reason as an error message, then close with ``code`` (the close reason is cut to 120 bytes)."""
    with suppress(Exception):
        await websocket.send_text(json.dumps({"type": "error", "detail": reason, "id": None}))
        await websocket.close(code=code, reason=reason.encode()[:120].decode(errors="ignore"))


async def _authenticated(websocket: WebSocket, expected: str | None) -> bool:
    """Check the API key: from the handshake's headers, else the first message (``auth``) within
    :data:`AUTH_SECONDS`. Accepts the connection unless a presented header key is wrong."""
    if not expected:
        await websocket.accept()
        return True
    presented = presented_key({name.lower(): value for name, value in websocket.headers.items()})
    if presented is not None:
        if secrets.compare_digest(presented.encode(), expected.encode()):
            await websocket.accept()
            return True
        await websocket.close(code=CLOSE_POLICY, reason=INVALID_KEY)  # before accepting: the handshake fails
        return False
    await websocket.accept()
    try:
        text = await asyncio.wait_for(websocket.receive_text(), AUTH_SECONDS)
        message = LIVE_MESSAGE.validate_json(text)
    except (TimeoutError, ValidationError, KeyError, RuntimeError, WebSocketDisconnect):
        message = None
    if not isinstance(message, LiveAuthMessage):
        await _close(websocket, CLOSE_POLICY, f'{MISSING_KEY}, or send {{"type": "auth", "api_key": ...}} first')
        return False
    if not secrets.compare_digest(message.api_key.encode(), expected.encode()):
        await _close(websocket, CLOSE_POLICY, INVALID_KEY)
        return False
    return True


def _prepared(state: ServiceState, live: LiveService, model_id: str) -> LiveModel:
    return live.model(state.store(), model_id)


async def serve(websocket: WebSocket, state: ServiceState, live: LiveService, model_id: str, name: str) -> None:
    """One client's connection to channel ``name`` of ``model_id``, from the handshake to its clean-up."""
    if not await _authenticated(websocket, state.settings.api_key):
        return
    try:
        model = await run_in_threadpool(_prepared, state, live, model_id)
    except (ResourceNotFound, NotFound):
        await _close(websocket, CLOSE_NOT_FOUND, f"no model {model_id}")
        return
    except (InputError, ModelError) as error:
        await _close(websocket, CLOSE_UNPROCESSABLE, str(error))
        return
    except StoreUnavailable as error:
        await _close(websocket, CLOSE_INTERNAL, f"database unavailable: {error}")
        return
    channel = live_channels(websocket).get(model_id, name, model)
    if channel is None:
        await _close(websocket, CLOSE_BUSY, f"every one of the {MAX_CHANNELS} live channels has clients: try later")
        return
    subscriber = Subscriber(websocket)
    ready = LiveStreamReady(
        model_id=model_id,
        channel=name,
        as_of=model.as_of,
        factors=list(model.factors),
        n_assets=model.n_assets,
        queue_size=RESULT_QUEUE,
    )
    subscriber.notify(ready.model_dump(mode="json"))
    channel.join(subscriber)
    sender = asyncio.get_running_loop().create_task(subscriber.pump())
    try:
        await _receive(websocket, channel, subscriber)
    finally:
        channel.leave(subscriber)
        sender.cancel()
        with suppress(BaseException):
            await sender
        if websocket.application_state != WebSocketState.DISCONNECTED:
            with suppress(Exception):
                await websocket.close()


async def _receive(websocket: WebSocket, channel: LiveChannel, subscriber: Subscriber) -> None:
    """Read the client's messages until it disconnects: refuse bad ones with an error, pass the rest on."""
    while True:
        frame = await websocket.receive()
        if frame["type"] == "websocket.disconnect":
            return
        text = frame.get("text")
        if text is None:
            subscriber.error("send JSON text frames, not binary ones")
            continue
        if len(text) > MAX_LIVE_MESSAGE_CHARS:
            subscriber.error(
                f"message too large: {len(text):,} characters; the limit is {MAX_LIVE_MESSAGE_CHARS:,} "
                "(send several updates)"
            )
            continue
        try:
            message = LIVE_MESSAGE.validate_json(text)
        except ValidationError as error:
            subscriber.error(f"invalid message: {_errors(error)}")
            continue
        if isinstance(message, LiveAuthMessage):
            subscriber.notify({"type": "ok", "of": "auth"})
        elif isinstance(message, LivePortfolioMessage):
            channel.set_portfolio(subscriber, message)
        else:
            channel.submit(subscriber, message)
