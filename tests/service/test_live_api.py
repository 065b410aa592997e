"""POST /live/factor-returns and the WebSocket /live/stream/{model_id}: the answers equal the next build's factor
returns for the date and the library's live session (portfolio figures included); the stream pushes every
update to every client of the channel; a client that does not read loses only its own oldest results; a client
that leaves is cleaned up; hostile requests and messages get clean 4xx answers or error messages."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from service_helpers import API, TEST_CONFIG, ClientFactory
from starlette.websockets import WebSocketDisconnect

from factor_engine.config import ModelConfig
from factor_engine.live import LiveModel, LiveSession, live_portfolio
from factor_engine.model import RiskModel, build_model
from factor_engine.portfolio.analytics import TRADING_DAYS
from factor_engine.service import Settings, create_app
from factor_engine.service.errors import ResourceNotFound
from factor_engine.service.limits import MAX_LISTED_SYMBOLS, MAX_LIVE_MESSAGE_CHARS
from factor_engine.service.live import LiveService
from factor_engine.service.live_schemas import LiveUpdateMessage
from factor_engine.service.live_stream import RESULT_QUEUE, LiveChannel, Subscriber
from factor_engine.storage import NotFound, connect
from factor_engine.synthetic import generate_market

LIVE = f"{API}/live/factor-returns"
KEY = "live-secret"


@pytest.fixture(scope="module")
def market() -> dict[str, Any]:
    """A model built through the previous close, the full build of the last date, and today's returns."""
    panel = generate_market(120, 160, seed=5, start=datetime.date(2023, 1, 2)).panel
    last = panel.get_column("date").max()
    before = panel.filter(pl.col("date") < last)
    today = panel.filter((pl.col("date") == last) & pl.col("asset_returns").is_not_null())
    config = ModelConfig.from_mapping(TEST_CONFIG)
    model = build_model(before, config)
    known = set(model.exposures.filter(pl.col("date") == before.get_column("date").max())["symbol"].to_list())
    today = today.filter(pl.col("symbol").is_in(list(known)))
    returns = dict(zip(today["symbol"].to_list(), today["asset_returns"].to_list(), strict=True))
    rng = np.random.default_rng(3)
    closes = {s: float(rng.uniform(5, 300)) for s in returns}
    return {
        "panel": panel,
        "before": before,
        "last": last,
        "model": model,
        "full": build_model(panel, config),
        "returns": returns,
        "closes": closes,
        "prices": {s: closes[s] * (1.0 + r) for s, r in returns.items()},
    }


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, market: dict[str, Any]) -> tuple[str, str]:
    """(SQLite URL, model id): the panel through the previous close and the model, as the service holds them."""
    url = f"sqlite:///{tmp_path_factory.mktemp('live_api') / 'store.db'}"
    store = connect(url)
    try:
        store.ingest_panel(market["before"])
        run = store.create_run({"source": "test_live_api"})
        store.start_run(run.id)
        store.save_model(run.id, market["model"], timings={})
    finally:
        store.close()
    return url, run.id


@pytest.fixture(scope="module")
def client(stored: tuple[str, str]) -> Iterator[TestClient]:
    settings = Settings(database_url=stored[0], database_schema=None, redis_url=None, api_key=None)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def keyed(stored: tuple[str, str]) -> Iterator[TestClient]:
    settings = Settings(database_url=stored[0], database_schema=None, redis_url=None, api_key=KEY)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def live_model(market: dict[str, Any]) -> LiveModel:
    """The library's live model on the same model and panel (the reference)."""
    return LiveModel.from_model(market["model"], market["before"])


def build_row(full: RiskModel, day: datetime.date) -> np.ndarray:
    return full.factor_returns.filter(pl.col("date") == day).select(full.factors).to_numpy()[0]


def as_array(values: list[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values])


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    return float(np.max(np.abs(got[finite] - want[finite])) / np.max(np.abs(want[finite])))


def test_post_equals_the_next_build(client: TestClient, stored: tuple[str, str], market: dict[str, Any]) -> None:
    body = {"model_id": stored[1], "returns": market["returns"], "include_residuals": True}
    response = client.post(LIVE, json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    full: RiskModel = market["full"]
    assert data["factors"] == list(full.factors)
    assert data["as_of"] == str(market["before"].get_column("date").max())
    assert relative_difference(as_array(data["factor_returns"]), build_row(full, market["last"])) <= 1e-10
    residuals = full.residuals.filter(pl.col("date") == market["last"]).sort("symbol")
    assert data["residuals"]["symbols"] == residuals["symbol"].to_list()
    np.testing.assert_allclose(data["residuals"]["residuals"], residuals["residual"], rtol=0, atol=1e-12)
    assert data["portfolio"] is None


def test_post_prices_with_a_portfolio(
    client: TestClient, stored: tuple[str, str], market: dict[str, Any], live_model: LiveModel
) -> None:
    assert live_model.snapshot is not None
    symbols = [s for s in live_model.snapshot.symbols if s in market["prices"]][:30]
    weights = {s: 1.0 / 30 for s in symbols}
    body = {"model_id": stored[1], "prices": market["prices"], "closes": market["closes"], "weights": weights}
    response = client.post(LIVE, json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    session = LiveSession(live_model)
    session.set_closes(market["closes"])
    result = session.update(prices=market["prices"])
    np.testing.assert_allclose(as_array(data["factor_returns"]), result.factor_returns, rtol=1e-13, atol=0)
    want = live_portfolio(live_model, session.book(weights), result)
    portfolio = data["portfolio"]
    assert portfolio["pnl"] == pytest.approx(want.pnl, rel=1e-12)
    assert portfolio["specific_pnl"] == pytest.approx(want.specific_pnl, rel=1e-9, abs=1e-15)
    assert [row["pnl"] for row in portfolio["factor_pnl"]] == pytest.approx(want.factor_pnl["pnl"].to_list())
    assert portfolio["n_holdings"] == portfolio["n_priced"] == 30
    assert portfolio["daily"]["total_risk"] == pytest.approx(want.risk.total_risk, rel=1e-12)
    assert portfolio["annualized"]["total_risk"] == pytest.approx(want.risk.total_risk * math.sqrt(TRADING_DAYS))
    exposures = {row["factor"]: row["portfolio"] for row in portfolio["exposures"]}
    assert list(exposures.values()) == pytest.approx(want.exposures["portfolio"].to_list())


HOSTILE: list[tuple[str, Any, int, str]] = [
    ("no returns or prices", {}, 422, "give today's"),
    ("prices without closes", {"prices": {"S00001": 10.0}}, 422, "need the previous"),
    (
        "a negative price",
        {"prices": {"S00001": -1.0}, "closes": {"S00001": 10.0}},
        422,
        "prices must be finite and > 0",
    ),
    ("a return of -100 %", {"returns": {"S00001": -1.0}}, 422, "returns must be finite fractions > -1"),
    ("an unknown symbol", {"returns": {"NOPE": 0.01}}, 422, "does not know .* 'NOPE'"),
    ("percentage weights", {"returns": {}, "weights": {"FIRST": 50.0}}, 422, '"allow_unnormalized": true'),
    ("an uncovered holding", {"returns": {}, "weights": {"NOPE": 1.0}}, 422, r"'NOPE' \(send .unknown.: .drop."),
    ("an unknown field", {"returns": {}, "price": {}}, 422, "Extra inputs are not permitted"),
    ("a long symbol", {"returns": {"x" * 201: 0.0}}, 422, "at most 200 characters"),
    ("a string return", {"returns": {"S00001": "1%"}}, 422, "valid number"),
]


@pytest.mark.parametrize(("what", "extra", "status", "detail"), HOSTILE, ids=[case[0] for case in HOSTILE])
def test_post_hostile(client: TestClient, stored: tuple[str, str], what: str, extra: Any, status: int, detail: str):
    body = {"model_id": stored[1], **extra}
    if "weights" in body and "FIRST" in body["weights"]:
        body["weights"] = {client.get(f"{API}/models/{stored[1]}/exposures").json()["symbols"][0]: 50.0}
    response = client.post(LIVE, json=body)
    assert response.status_code == status, response.text
    answer = response.json()["detail"]
    assert re.search(detail, answer if isinstance(answer, str) else json.dumps(answer)), answer


def test_post_hostile_bodies(client: TestClient, stored: tuple[str, str], app_client: ClientFactory) -> None:
    nan = b'{"model_id": "%s", "returns": {"S00001": NaN}}' % stored[1].encode()
    response = client.post(LIVE, content=nan, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "finite_number"
    too_many = {"model_id": stored[1], "returns": {f"S{i}": 0.0 for i in range(MAX_LISTED_SYMBOLS + 1)}}
    response = client.post(LIVE, json=too_many)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "too_long"
    response = client.post(LIVE, json={"model_id": "no-such-model", "returns": {"S00001": 0.0}})
    assert response.status_code == 404
    assert response.json()["detail"] == "no model no-such-model"
    dropped = client.post(LIVE, json={"model_id": stored[1], "returns": {"NOPE": 0.1}, "unknown": "drop"})
    assert dropped.status_code == 200
    assert dropped.json()["n_priced"] == 0
    assert dropped.json()["reason"] == "no usable assets"
    with app_client(max_body_bytes=10_000) as small:
        response = small.post(LIVE, json={"model_id": "x", "returns": {f"S{i}": 0.0 for i in range(2000)}})
        assert response.status_code == 413


def test_post_needs_the_key(keyed: TestClient, stored: tuple[str, str], market: dict[str, Any]) -> None:
    body = {"model_id": stored[1], "returns": market["returns"]}
    assert keyed.post(LIVE, json=body).status_code == 401
    assert keyed.post(LIVE, json=body, headers={"X-API-Key": KEY}).status_code == 200


# --------------------------------------------------------------------------------------------------
# the stream


def stream_path(model_id: str, channel: str = "default") -> str:
    return f"{API}/live/stream/{model_id}?channel={channel}"


def receive(websocket: Any, kind: str) -> dict[str, Any]:
    """The next message, which must be of type ``kind``."""
    message: dict[str, Any] = websocket.receive_json()
    assert message["type"] == kind, message
    return message


def test_stream_pushes_to_every_client(
    client: TestClient, stored: tuple[str, str], market: dict[str, Any], live_model: LiveModel
) -> None:
    reference = LiveSession(live_model)
    symbols = sorted(market["returns"])
    half = {s: market["prices"][s] for s in symbols[: len(symbols) // 2]}
    rest = {s: market["returns"][s] for s in symbols[len(symbols) // 2 :]}
    path = stream_path(stored[1], "every-client")
    with client.websocket_connect(path) as feed, client.websocket_connect(path) as viewer:
        ready = receive(feed, "ready")
        assert ready["factors"] == list(market["full"].factors)
        assert ready["queue_size"] == RESULT_QUEUE
        receive(viewer, "ready")
        feed.send_json({"type": "closes", "closes": market["closes"]})
        assert receive(feed, "ok")["count"] == len(market["closes"])
        feed.send_json({"type": "update", "id": 1, "prices": half})
        reference.set_closes(market["closes"])
        first = reference.update(prices=half)
        for websocket in (feed, viewer):
            pushed = receive(websocket, "factor_returns")
            assert pushed["update_id"] == 1
            assert pushed["n_priced"] == first.n_priced
            np.testing.assert_allclose(as_array(pushed["factor_returns"]), first.factor_returns, rtol=1e-13)
        viewer.send_json({"type": "update", "id": "two", "returns": rest})  # any client may feed
        final = reference.update(returns=rest)
        for websocket in (feed, viewer):
            pushed = receive(websocket, "factor_returns")
            assert pushed["update_id"] == "two"
            assert pushed["updates"] == 2
            full_day = build_row(market["full"], market["last"])
            assert relative_difference(as_array(pushed["factor_returns"]), full_day) <= 1e-10
            np.testing.assert_allclose(as_array(pushed["factor_returns"]), final.factor_returns, rtol=1e-13)

        weights = {s: 1.0 / 20 for s in symbols[:20]}
        viewer.send_json({"type": "portfolio", "weights": weights})
        assert receive(viewer, "ok")["holdings"] == 20
        own = receive(viewer, "factor_returns")  # its figures on the latest result, at once
        want = live_portfolio(live_model, reference.book(weights), final)
        assert own["portfolio"]["pnl"] == pytest.approx(want.pnl, rel=1e-12)
        feed.send_json({"type": "update", "id": 3, "returns": {symbols[0]: 0.5}})
        assert receive(feed, "factor_returns")["portfolio"] is None  # the feed has no portfolio
        assert receive(viewer, "factor_returns")["portfolio"]["n_holdings"] == 20

        feed.send_json({"type": "reset"})
        assert receive(feed, "ok")["of"] == "reset"
        cleared = receive(feed, "factor_returns")
        assert cleared["n_priced"] == 0
        assert cleared["reason"] == "no usable assets"
        receive(viewer, "factor_returns")


STREAM_HOSTILE: list[tuple[str, str, str]] = [
    ("not JSON", "{prices", "Invalid JSON"),
    ("NaN", '{"type": "update", "returns": {"S00001": NaN}}', "finite number"),
    ("an unknown type", '{"type": "buy", "returns": {}}', "does not match any of the expected tags"),
    ("an unknown field", '{"type": "update", "price": {}}', "Extra inputs are not permitted"),
    ("a negative price", '{"type": "update", "id": 9, "prices": {"FIRST": -2}}', "prices must be finite and > 0"),
    ("an unknown symbol", '{"type": "update", "returns": {"NOPE": 0.1}}', r"'NOPE' \(send \"unknown\": \"drop\""),
    ("a price without a close", '{"type": "update", "prices": {"FIRST": 2}}', "without a previous close"),
    ("a return of -150 %", '{"type": "update", "returns": {"FIRST": -1.5}}', "finite fractions > -1"),
    ("a bad portfolio", '{"type": "portfolio", "weights": {"NOPE": 1}}', "does not cover: 'NOPE'"),
    ("percentage weights", '{"type": "portfolio", "weights": {"FIRST": 60}}', '"allow_unnormalized": true'),
]


def test_stream_hostile_messages(client: TestClient, stored: tuple[str, str], market: dict[str, Any]) -> None:
    first = sorted(market["returns"])[0]
    with client.websocket_connect(stream_path(stored[1], "hostile")) as websocket:
        receive(websocket, "ready")
        for what, text, detail in STREAM_HOSTILE:
            websocket.send_text(text.replace("FIRST", first))
            error = receive(websocket, "error")
            assert re.search(detail, error["detail"]), (what, error)
        websocket.send_bytes(b"\x00\x01")
        assert "JSON text frames" in receive(websocket, "error")["detail"]
        websocket.send_text(" " * (MAX_LIVE_MESSAGE_CHARS + 1))
        assert "message too large" in receive(websocket, "error")["detail"]
        # the connection is still good, and nothing of the refused updates was recorded
        websocket.send_json({"type": "update", "id": 10, "returns": {first: 0.01}})
        pushed = receive(websocket, "factor_returns")
        assert pushed["update_id"] == 10
        assert pushed["n_priced"] == 1


def test_stream_unknown_model_and_bad_channel(client: TestClient, stored: tuple[str, str]) -> None:
    with client.websocket_connect(stream_path("no-such-model")) as websocket:
        assert receive(websocket, "error")["detail"] == "no model no-such-model"
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_json()
        assert closed.value.code == 4404
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(stream_path(stored[1], "no spaces/here")):
        pass


def test_stream_api_key(keyed: TestClient, stored: tuple[str, str]) -> None:
    path = stream_path(stored[1], "keyed")
    with keyed.websocket_connect(path, headers={"X-API-Key": KEY}) as websocket:
        receive(websocket, "ready")
    with keyed.websocket_connect(path) as websocket:  # a browser: the key as the first message
        websocket.send_json({"type": "auth", "api_key": KEY})
        receive(websocket, "ready")
    with keyed.websocket_connect(path) as websocket:
        websocket.send_json({"type": "update", "returns": {}})
        assert "missing API key" in receive(websocket, "error")["detail"]
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_json()
        assert closed.value.code == 1008
    with keyed.websocket_connect(path) as websocket:
        websocket.send_json({"type": "auth", "api_key": "wrong"})
        assert receive(websocket, "error")["detail"] == "invalid API key"
    with pytest.raises(WebSocketDisconnect) as refused, keyed.websocket_connect(path, headers={"X-API-Key": "wrong"}):
        pass
    assert refused.value.code == 1008


def test_a_client_that_leaves_is_cleaned_up(client: TestClient, stored: tuple[str, str], market: dict) -> None:
    first = sorted(market["returns"])[0]
    path = stream_path(stored[1], "leaving")
    with client.websocket_connect(path) as staying:
        receive(staying, "ready")
        with client.websocket_connect(path) as leaving:
            receive(leaving, "ready")
            channels = client.app.state.live_channels._channels  # type: ignore[attr-defined]
            (channel,) = [c for key, c in channels.items() if key[0] == stored[1] and key[2] == "leaving"]
            assert len(channel.subscribers) == 2
        staying.send_json({"type": "update", "id": 1, "returns": {first: 0.01}})
        assert receive(staying, "factor_returns")["update_id"] == 1
        assert len(channel.subscribers) == 1
    assert not channel.subscribers


class _Socket:
    """A stand-in for a client's WebSocket: records what it is sent, or never finishes a send (stalled)."""

    def __init__(self, stalled: bool) -> None:
        self.stalled = stalled
        self.sent: list[dict[str, Any]] = []
        self.forever = asyncio.Event()

    async def send_text(self, text: str) -> None:
        if self.stalled:
            await self.forever.wait()
        self.sent.append(json.loads(text))


def test_a_stalled_client_drops_its_oldest_results_and_blocks_nobody(live_model: LiveModel, market: dict) -> None:
    """One channel, a fast client and one whose sends never complete: every update reaches the fast client as
    soon as it is solved, while the stalled one keeps only its RESULT_QUEUE newest results."""
    symbols = sorted(market["returns"])
    updates = 40

    async def scenario() -> tuple[list[dict[str, Any]], Subscriber, int]:
        channel = LiveChannel("m", "c", live_model)
        fast_socket, stalled_socket = _Socket(stalled=False), _Socket(stalled=True)
        fast, stalled = Subscriber(fast_socket), Subscriber(stalled_socket)  # type: ignore[arg-type]
        pumps = [asyncio.create_task(s.pump()) for s in (fast, stalled)]
        channel.join(fast)
        channel.join(stalled)
        for i in range(updates):
            channel.submit(fast, LiveUpdateMessage(type="update", id=i, returns={symbols[i]: 0.01 * (i % 5)}))
            for _ in range(20):  # the engine solves, then the fast client's pump sends
                await asyncio.sleep(0)
                if fast_socket.sent and fast_socket.sent[-1].get("update_id") == i:
                    break
        in_flight = len(stalled_socket.sent)
        for pump in pumps:
            pump.cancel()
        channel.leave(fast)
        channel.leave(stalled)
        return fast_socket.sent, stalled, in_flight

    sent, stalled, in_flight = asyncio.run(scenario())
    assert [message["update_id"] for message in sent] == list(range(updates))
    assert all(message["dropped_results"] == 0 for message in sent)
    assert in_flight == 0
    assert len(stalled.results) == RESULT_QUEUE
    assert [payload["update_id"] for payload, _ in stalled.results] == list(range(updates - RESULT_QUEUE, updates))
    # one result is stuck in the stalled send, RESULT_QUEUE wait: the rest were dropped, oldest first
    assert stalled.dropped == updates - RESULT_QUEUE - 1


def test_a_model_whose_last_date_moves_is_prepared_again(stored: tuple[str, str], market: dict[str, Any]) -> None:
    """The prepared models are keyed by the model's last date: after an update moves it, the next request
    prepares the model afresh (as of the new close), and a deleted model is a 404 even when prepared."""
    store = connect(stored[0])
    try:
        summary = store.get_model(stored[1])

        class Moving:
            """The store, with the model's last date as the test sets it and the loads counted."""

            def __init__(self) -> None:
                self.summary, self.loads = summary, 0

            def get_model(self, model_id: str) -> Any:
                if self.summary is None:
                    raise NotFound(f"no model {model_id}")
                return self.summary

            def load_model(self, model_id: str, **dates: Any) -> RiskModel:
                self.loads += 1
                return store.load_model(model_id, **dates)

            def load_panel(self, **selection: Any) -> pl.DataFrame:
                return store.load_panel(**selection)

        moving = Moving()
        service = LiveService()
        first = service.model(moving, stored[1])  # type: ignore[arg-type]
        assert service.model(moving, stored[1]) is first  # type: ignore[arg-type]
        assert moving.loads == 1
        earlier = market["before"].get_column("date").unique().sort()[-2]
        moving.summary = dataclasses.replace(summary, last_date=earlier)
        moved = service.model(moving, stored[1])  # type: ignore[arg-type]
        assert moving.loads == 2
        assert (first.as_of, moved.as_of) == (summary.last_date, earlier)
        moving.summary = None
        with pytest.raises(ResourceNotFound, match="no model"):
            service.model(moving, stored[1])  # type: ignore[arg-type]
    finally:
        store.close()
