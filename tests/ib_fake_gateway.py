"""A local stand-in for IB Gateway that speaks the TWS API wire protocol, for the messages ``ingest-ib`` uses.

It accepts the API handshake (``API\\0`` and the client's version range; it answers server version 176 and a
connection time), ``startApi`` (answered with ``nextValidId`` and ``managedAccounts``), ``reqPositions``
(``positionEnd``), ``reqContractDetails`` (``contractDetails`` + ``contractDetailsEnd``), ``reqHistoricalData``
(``historicalData`` with its bars, which ends the request at this server version), ``reqMktData`` with generic
tick 258 (``tickString`` of type 47, the fundamental ratios with ``MKTCAP`` in millions) and the cancels, and
sends ``error`` messages as IB does. Every message is a 4-byte big-endian length and NUL-terminated fields; the
field layouts are those ib_async's client writes and its decoder reads at server version 176.

Prices are a deterministic synthetic market: business days up to ``last_day``, each stock's daily return =
beta × market + its industry's factor + its own noise, from seeded generators, so that a risk model built on
them has a factor structure to find. The market cap is shares × the last close.

Like IB it enforces the historical data pacing rules (60 requests in 10 minutes, identical requests 15 s apart,
at most 5 per contract in 2 s) on its ``clock``; tests pass the fake clock of the client's pacer. Scripted
failures, per symbol: unknown symbols (error 200), no permission for historical data (162) or for fundamental
ratios (354), pacing violations on the first N requests (162), a connection dropped when a symbol's bars are
asked for (once), a short history, and closes adjusted anew between two requests of one symbol (a dividend).

Run it for a demo: ``python tests/ib_fake_gateway.py --port 4002`` (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime
import socket
import socketserver
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SERVER_VERSION = 176
ACCOUNT = "DU0000001"
LAST_DAY = datetime.date(2025, 6, 30)

PACING_MESSAGE = "Historical Market Data Service error message:Historical data request pacing violation"
NO_HISTORY_PERMISSION = "Historical Market Data Service error message:No market data permissions for NYSE STK"
NO_SECURITY = "No security definition has been found for the request"
NO_TICKS_PERMISSION = (
    "Requested market data is not subscribed.Check API status by selecting the Account menu then under Management "
    "choose Market Data Subscription Manager and browse to the specific subscription you need"
)
ADJUSTED_LAST_END = "Error validating request.-'bP' : cause - End date not supported with adjusted last"

#: Stocks with their IB contract-details labels: industry, category, primary exchange.
KNOWN_STOCKS: dict[str, tuple[str, str, str]] = {
    "AAPL": ("Technology", "Computers", "NASDAQ"),
    "MSFT": ("Technology", "Software", "NASDAQ"),
    "NVDA": ("Technology", "Semiconductors", "NASDAQ"),
    "INTC": ("Technology", "Semiconductors", "NASDAQ"),
    "ORCL": ("Technology", "Software", "NYSE"),
    "JPM": ("Financial", "Banks", "NYSE"),
    "BAC": ("Financial", "Banks", "NYSE"),
    "GS": ("Financial", "Banks", "NYSE"),
    "WFC": ("Financial", "Banks", "NYSE"),
    "MET": ("Financial", "Insurance", "NYSE"),
    "SPG": ("Financial", "REITS", "NYSE"),
    "XOM": ("Energy", "Oil&Gas", "NYSE"),
    "CVX": ("Energy", "Oil&Gas", "NYSE"),
    "COP": ("Energy", "Oil&Gas", "NYSE"),
    "SLB": ("Energy", "Oil&Gas Services", "NYSE"),
    "EOG": ("Energy", "Oil&Gas", "NYSE"),
    "JNJ": ("Consumer, Non-cyclical", "Pharmaceuticals", "NYSE"),
    "PFE": ("Consumer, Non-cyclical", "Pharmaceuticals", "NYSE"),
    "MRK": ("Consumer, Non-cyclical", "Pharmaceuticals", "NYSE"),
    "AMGN": ("Consumer, Non-cyclical", "Biotechnology", "NASDAQ"),
    "ABT": ("Consumer, Non-cyclical", "Healthcare-Products", "NYSE"),
    "KO": ("Consumer, Non-cyclical", "Beverages", "NYSE"),
    "PG": ("Consumer, Non-cyclical", "Cosmetics/Personal Care", "NYSE"),
    "HD": ("Consumer, Cyclical", "Retail", "NYSE"),
    "F": ("Consumer, Cyclical", "Auto Manufacturers", "NYSE"),
    "DUK": ("Utilities", "Electric", "NYSE"),
    "BA": ("Industrial", "Aerospace/Defense", "NYSE"),
    "CAT": ("Industrial", "Machinery-Constr&Mining", "NYSE"),
    "DOW": ("Basic Materials", "Chemicals", "NYSE"),
}
_OTHER_LABELS = [labels for labels in KNOWN_STOCKS.values()]
_FACTOR_VOL = {"market": 0.010, "industry": 0.006}


def business_days(first: datetime.date, last: datetime.date) -> list[datetime.date]:
    """Monday-to-Friday dates from ``first`` to ``last`` inclusive."""
    days = np.arange(np.datetime64(first, "D"), np.datetime64(last, "D") + 1)
    weekdays = (days.astype("datetime64[D]").view("int64") + 3) % 7  # 1970-01-01 was a Thursday (3)
    return [day.item() for day in days[weekdays < 5]]


def years_before(day: datetime.date, years: int) -> datetime.date:
    """The same calendar day ``years`` earlier (28 February for 29 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


@dataclass
class Scenario:
    """Scripted failures (symbols are upper case)."""

    unknown: set[str] = field(default_factory=set)
    no_history_permission: set[str] = field(default_factory=set)
    no_fundamentals_permission: set[str] = field(default_factory=set)
    pacing_violations: dict[str, int] = field(default_factory=dict)  # symbol -> first N bar requests refused
    disconnect_on_history: set[str] = field(default_factory=set)  # drop the connection (once per symbol)
    listed: dict[str, datetime.date] = field(default_factory=dict)  # first trading day, for a short history
    readjusted: dict[str, float] = field(default_factory=dict)  # closes × factor after the first bars request


@dataclass(frozen=True)
class Request:
    """One request the gateway received: ``kind`` (contract details, history, market data), the symbol and,
    for history, the duration and the clock time."""

    kind: str
    symbol: str
    duration: str = ""
    at: float = 0.0


class Market:
    """The synthetic prices: every series is drawn once per symbol, from ``first_day`` to ``last_day``."""

    def __init__(self, seed: int, first_day: datetime.date, last_day: datetime.date) -> None:
        self.seed = seed
        self.days = business_days(first_day, last_day)
        self._factors: dict[str, np.ndarray] = {}
        self._series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def labels(self, symbol: str) -> tuple[str, str, str]:
        if symbol in KNOWN_STOCKS:
            return KNOWN_STOCKS[symbol]
        return _OTHER_LABELS[_seed(symbol) % len(_OTHER_LABELS)]

    def _factor(self, name: str) -> np.ndarray:
        if name not in self._factors:
            rng = np.random.default_rng(_seed(self.seed, "factor", name))
            vol = _FACTOR_VOL["market" if name == "market" else "industry"]
            drift = 0.0003 if name == "market" else 0.0
            self._factors[name] = rng.normal(drift, vol, len(self.days))
        return self._factors[name]

    def series(self, symbol: str) -> tuple[np.ndarray, np.ndarray]:
        """Closes and volumes of ``symbol`` over :attr:`days`."""
        with self._lock:
            if symbol not in self._series:
                rng = np.random.default_rng(_seed(self.seed, "stock", symbol))
                industry = self.labels(symbol)[0]
                beta = rng.uniform(0.6, 1.4)
                specific = rng.uniform(0.010, 0.022)
                returns = (
                    beta * self._factor("market") + self._factor(industry) + rng.normal(0.0, specific, len(self.days))
                )
                closes = rng.uniform(20.0, 300.0) * np.exp(np.cumsum(np.log1p(np.clip(returns, -0.5, None))))
                volumes = np.round(rng.uniform(2e6, 2e7) * np.exp(rng.normal(0.0, 0.3, len(self.days))))
                self._series[symbol] = (closes, volumes)
            return self._series[symbol]

    def shares(self, symbol: str) -> float:
        return float(np.random.default_rng(_seed(self.seed, "shares", symbol)).uniform(2e8, 5e9))


class FakeGateway:
    """The fake IB Gateway on ``host:port`` (port 0 picks a free one; see :attr:`port`), in a thread.

    Parameters
    ----------
    scenario:
        Scripted failures (:class:`Scenario`).
    clock:
        Seconds for the pacing rules (default :func:`time.monotonic`); tests pass the pacer's fake clock.
    seed, last_day, history_years:
        The synthetic market: its seed, its last day (the "now" of every request) and how many years it spans.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        scenario: Scenario | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        last_day: datetime.date = LAST_DAY,
        history_years: int = 12,
    ) -> None:
        self.scenario = scenario or Scenario()
        self.clock = clock
        self.market = Market(seed, years_before(last_day, history_years), last_day)
        self.last_day = last_day
        self.requests: list[Request] = []
        self.pacing_refusals = 0
        self._history_times: list[tuple[float, tuple[Any, ...], tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self._server = _Server((host, port), _Connection)
        self._server.gateway = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> FakeGateway:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-ib-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeGateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def requested(self, kind: str) -> list[str]:
        """Symbols of the requests of ``kind`` received so far, in order."""
        with self._lock:
            return [request.symbol for request in self.requests if request.kind == kind]

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def pacing_refusal(self, contract: tuple[Any, ...], identity: tuple[Any, ...]) -> bool:
        """Whether a historical request now breaks one of IB's pacing rules; a request that does not is
        counted towards the rules."""
        now = self.clock()
        with self._lock:
            recent = [(at, c, i) for at, c, i in self._history_times if at > now - 600.0]
            self._history_times = recent
            too_many = len(recent) >= 60
            identical = any(i == identity and at > now - 15.0 for at, _, i in recent)
            same_contract = sum(1 for at, c, _ in recent if c == contract and at > now - 2.0) >= 5
            if too_many or identical or same_contract:
                self.pacing_refusals += 1
                return True
            self._history_times.append((now, contract, identity))
            return False


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    gateway: FakeGateway

    def __init__(self, address: tuple[str, int], handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()

    def close_connections(self) -> None:
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


class _Dropped(Exception):
    """The scenario drops the connection."""


class _Connection(socketserver.BaseRequestHandler):
    """One API client: the handshake, then one message at a time."""

    server: _Server

    def setup(self) -> None:
        self.gateway = self.server.gateway
        self.server.connections.add(self.request)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.contracts: dict[int, str] = {}  # conId -> symbol
        self.bars_sent: set[str] = set()

    def finish(self) -> None:
        self.server.connections.discard(self.request)

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.request.recv(size - len(data))
            if not chunk:
                raise ConnectionResetError("client closed the connection")
            data += chunk
        return data

    def _message(self) -> list[str]:
        (length,) = struct.unpack(">I", self._read(4))
        return self._read(length).decode().split("\0")[:-1]

    def _send(self, *fields: object) -> None:
        self._send_many([fields])

    def _send_many(self, messages: Iterable[Iterable[object]]) -> None:
        payload = bytearray()
        for fields in messages:
            body = "".join(f"{value}\0" for value in fields).encode()
            payload += struct.pack(">I", len(body)) + body
        self.request.sendall(bytes(payload))

    def _error(self, req_id: int, code: int, message: str) -> None:
        self._send(4, 2, req_id, code, message, "")

    def handle(self) -> None:
        try:
            if self._read(4) != b"API\0":
                return
            (length,) = struct.unpack(">I", self._read(4))
            self._read(length)  # "v157..178": this server answers one version inside any range ib_async sends
            now = datetime.datetime.now().strftime("%Y%m%d %H:%M:%S")
            self._send_many([[SERVER_VERSION, f"{now} US/Eastern"]])
            while True:
                self._dispatch(self._message())
        except (ConnectionError, OSError, _Dropped):
            return

    def _dispatch(self, fields: list[str]) -> None:
        message = int(fields[0])
        if message == 71:  # startApi
            self._send_many([[9, 1, 1], [15, 1, ACCOUNT]])
        elif message == 61:  # reqPositions
            self._send(62, 1)
        elif message == 9:  # reqContractDetails
            self._contract_details(fields)
        elif message == 20:  # reqHistoricalData
            self._historical_data(fields)
        elif message == 1:  # reqMktData
            self._market_data(fields)
        # cancelMktData (2), cancelHistoricalData (25) and anything else: nothing to answer

    def _contract_details(self, fields: list[str]) -> None:
        req_id, symbol, currency = int(fields[2]), fields[4].upper(), fields[12]
        self.gateway._record(Request("contract details", symbol))
        scenario = self.gateway.scenario
        if symbol in scenario.unknown or fields[5] != "STK":
            self._error(req_id, 200, NO_SECURITY)
            return
        industry, category, primary = self.gateway.market.labels(symbol)
        if fields[11] and fields[11] != primary:
            self._error(req_id, 200, NO_SECURITY)
            return
        con_id = 100_000 + _seed(symbol) % 900_000
        self.contracts[con_id] = symbol
        details = [
            10, req_id, symbol, "STK", "", 0.0, "", "SMART", currency or "USD", symbol, "NMS", "NMS", con_id, 0.01,
            "", "LMT,MKT", "SMART,NYSE,NASDAQ", 1, 0, f"{symbol} INC", primary, "", industry, category, "",
            "US/Eastern", "", "", "", "", 0, 1, "", "", "26", "", "COMMON", 1, 1, 100,
        ]  # fmt: skip
        self._send_many([details, [52, 1, req_id]])

    def _historical_data(self, fields: list[str]) -> None:
        req_id, con_id = int(fields[1]), int(fields[2] or 0)
        symbol = self.contracts.get(con_id, fields[3].upper())
        end, bar_size, duration, what = fields[15], fields[16], fields[17], fields[19]
        gateway, scenario = self.gateway, self.gateway.scenario
        gateway._record(Request("history", symbol, duration, gateway.clock()))
        if symbol in scenario.disconnect_on_history:
            scenario.disconnect_on_history.discard(symbol)
            self.request.shutdown(socket.SHUT_RDWR)
            raise _Dropped
        if what == "ADJUSTED_LAST" and end:
            self._error(req_id, 321, ADJUSTED_LAST_END)
            return
        if scenario.pacing_violations.get(symbol, 0) > 0:
            scenario.pacing_violations[symbol] -= 1
            self._error(req_id, 162, PACING_MESSAGE)
            return
        if gateway.pacing_refusal((con_id, what), (con_id, what, end, duration, bar_size)):
            self._error(req_id, 162, PACING_MESSAGE)
            return
        if symbol in scenario.no_history_permission:
            self._error(req_id, 162, NO_HISTORY_PERMISSION)
            return
        count, unit = duration.split()
        if unit != "Y" or bar_size != "1 day":
            self._error(req_id, 321, f"Error validating request: this fake serves 'N Y' of '1 day', got {duration!r}")
            return
        first = years_before(gateway.last_day, int(count))
        days = gateway.market.days
        series, volumes = gateway.market.series(symbol)
        closes = np.round(series, 4)  # prices to 4 decimals, as IB sends them
        if symbol in scenario.readjusted and symbol in self.bars_sent:  # adjusted anew between two requests
            closes = closes * scenario.readjusted[symbol]
        self.bars_sent.add(symbol)
        start = bisect.bisect_right(days, first)
        if symbol in scenario.listed:
            start = max(start, bisect.bisect_left(days, scenario.listed[symbol]))
        rows: list[object] = []
        for i in range(start, len(days)):
            close = float(closes[i])
            previous = float(closes[i - 1]) if i else close
            high, low = max(close, previous) * 1.004, min(close, previous) * 0.996
            rows += [days[i].strftime("%Y%m%d"), previous, round(high, 4), round(low, 4), close,
                     int(volumes[i]), round((high + low + close) / 3, 4), int(volumes[i] // 400)]  # fmt: skip
        header = [
            17,
            req_id,
            f"{days[start]:%Y%m%d}  16:00:00",
            f"{gateway.last_day:%Y%m%d}  16:00:00",
            len(days) - start,
        ]
        self._send_many([header + rows])

    def _market_data(self, fields: list[str]) -> None:
        req_id, con_id = int(fields[2]), int(fields[3] or 0)
        symbol = self.contracts.get(con_id, fields[4].upper())
        generic_ticks = fields[16].split(",") if fields[16] else []
        self.gateway._record(Request("market data", symbol))
        if symbol in self.gateway.scenario.no_fundamentals_permission:
            self._error(req_id, 354, NO_TICKS_PERMISSION)
            return
        if "258" not in generic_ticks:
            return
        closes, _ = self.gateway.market.series(symbol)
        market_cap = self.gateway.market.shares(symbol) * float(closes[-1]) / 1e6
        ratios = f"MKTCAP={market_cap:.4f};PEEXCLXOR={15 + _seed(symbol) % 20}.5;NPRICE={closes[-1]:.4f};"
        self._send(46, 6, req_id, 47, ratios)


def market_cap_millions(gateway: FakeGateway, symbol: str) -> float:
    """The MKTCAP the gateway sends for ``symbol`` (as it rounds it)."""
    closes, _ = gateway.market.series(symbol)
    return float(f"{gateway.market.shares(symbol) * float(closes[-1]) / 1e6:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake IB Gateway (TWS API protocol) serving synthetic prices.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4002)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    with FakeGateway(arguments.host, arguments.port, seed=arguments.seed) as gateway:
        print(f"fake IB gateway on {arguments.host}:{gateway.port} (server version {SERVER_VERSION}); Ctrl-C stops it")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
