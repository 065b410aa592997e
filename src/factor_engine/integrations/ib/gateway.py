"""The requests ``ingest-ib`` makes to IB Gateway or TWS, over ib_async: connect, contract details, daily
adjusted bars (paced, paged, retried after a pacing violation) and the market cap from the fundamental ratios
tick.

Each problem of one symbol raises :class:`SymbolProblem` with a message for the user (the caller leaves the
symbol out and goes on); a lost or refused connection raises :class:`GatewayConnectionError`, which ends the
download. ib_async is imported when a :class:`Gateway` is created, not before.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from factor_engine.integrations.ib.pacing import Pacer, RequestKey

__all__ = [
    "BAR_SIZE",
    "FUNDAMENTAL_RATIOS_TICK",
    "WHAT_TO_SHOW",
    "ContractInfo",
    "Gateway",
    "GatewayConnectionError",
    "GatewaySettings",
    "SymbolProblem",
    "import_ib_async",
]

WHAT_TO_SHOW = "ADJUSTED_LAST"
BAR_SIZE = "1 day"
#: Generic tick of the fundamental ratios (tick type 47, a ``TAG=value;`` string holding MKTCAP in millions).
FUNDAMENTAL_RATIOS_TICK = "258"
#: IB error codes of a missing market data subscription or permission.
PERMISSION_CODES = frozenset({354, 10089, 10090, 10091, 10167, 10168, 10197})
#: IB error code of a request that matches no contract.
NO_SECURITY_DEFINITION = 200
#: IB error code of historical data service errors (pacing violations, no permission, no data).
HISTORICAL_DATA_ERROR = 162
INSTALL_HINT = "pip install 'factor-engine[ib]'"


def import_ib_async() -> Any:
    """The ``ib_async`` module, or ImportError saying how to install it."""
    try:
        import ib_async
    except ImportError as error:
        raise ImportError(f"Interactive Brokers data needs ib_async: {INSTALL_HINT}") from error
    return ib_async


class GatewayConnectionError(ConnectionError):
    """IB Gateway / TWS cannot be reached, or the connection was lost."""


class SymbolProblem(Exception):
    """A symbol cannot be downloaded (unknown, no permission, no data, pacing retries spent); ``str()`` says why."""


@dataclass(frozen=True)
class GatewaySettings:
    """Where IB Gateway or TWS listens and how long to wait for it.

    Attributes
    ----------
    host, port, client_id:
        The API socket (IB Gateway: 4001 live, 4002 paper; TWS: 7496 live, 7497 paper) and a client id that no
        other connection uses.
    exchange, currency:
        Of the stock contracts asked for (``SMART`` routing, ``USD``); a symbol's primary exchange may be given
        in the symbols file.
    connect_timeout, request_timeout, fundamentals_timeout:
        Seconds to wait for the API handshake, for one page of historical bars, and for the fundamental ratios
        tick of one stock.
    pacing_retries:
        Attempts after a pacing violation (each after the pacer's cool-down) before the symbol is left out.
    """

    host: str = "127.0.0.1"
    port: int = 4002
    client_id: int = 1
    exchange: str = "SMART"
    currency: str = "USD"
    connect_timeout: float = 10.0
    request_timeout: float = 120.0
    fundamentals_timeout: float = 10.0
    pacing_retries: int = 3

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ContractInfo:
    """A qualified stock: the ib_async contract and the contract details ``ingest-ib`` uses."""

    symbol: str
    con_id: int
    primary_exchange: str
    industry: str
    category: str
    contract: Any


def _is_pacing_violation(code: int, message: str) -> bool:
    return code == HISTORICAL_DATA_ERROR and "pacing violation" in message.lower()


def _is_permission_error(code: int, message: str) -> bool:
    text = message.lower()
    return code in PERMISSION_CODES or (
        code == HISTORICAL_DATA_ERROR and ("permission" in text or "not subscribed" in text)
    )


def _years(years: int) -> str:
    return f"{years} Y"


class Gateway:
    """One API connection to IB Gateway or TWS (use ``async with``), its requests paced by ``pacer``.

    ``on_pacing(symbol, message)`` is called when IB reports a pacing violation and the request is retried.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        pacer: Pacer,
        *,
        on_pacing: Callable[[str, str], None] | None = None,
    ) -> None:
        self.ib_async = import_ib_async()
        self.settings = settings
        self.pacer = pacer
        self.pacing_violations = 0
        self._on_pacing = on_pacing
        self.ib = self.ib_async.IB()
        self.ib.RaiseRequestErrors = True  # a request's error raises RequestError instead of an empty result

    async def __aenter__(self) -> Gateway:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.ib.disconnect()

    async def connect(self) -> None:
        """Open the API connection (read-only; nothing but positions is synchronized)."""
        settings = self.settings
        try:
            await self.ib.connectAsync(
                settings.host,
                settings.port,
                clientId=settings.client_id,
                timeout=settings.connect_timeout,
                readonly=True,
                fetchFields=self.ib_async.StartupFetchNONE,
            )
        except ConnectionRefusedError:
            raise GatewayConnectionError(
                f"cannot connect to IB Gateway/TWS at {settings.address}: connection refused; start IB Gateway or "
                "TWS and enable API socket clients on that port (IB Gateway 4001 live / 4002 paper, TWS 7496 / 7497)"
            ) from None
        except TimeoutError:
            raise GatewayConnectionError(
                f"IB Gateway/TWS at {settings.address} did not complete the API handshake within "
                f"{settings.connect_timeout:g} s (is client id {settings.client_id} already connected?)"
            ) from None
        except OSError as error:
            raise GatewayConnectionError(f"cannot connect to IB Gateway/TWS at {settings.address}: {error}") from None

    def _lost(self, doing: str) -> GatewayConnectionError:
        return GatewayConnectionError(f"the connection to IB Gateway/TWS at {self.settings.address} was lost {doing}")

    def _check_connected(self, doing: str) -> None:
        if not self.ib.isConnected():
            raise self._lost(doing)

    # ----------------------------------------------------------------------------------------------
    # contract details

    async def contract(self, symbol: str, primary_exchange: str = "") -> ContractInfo:
        """The stock ``symbol`` (on ``primary_exchange`` when given) and its industry and category."""
        settings = self.settings
        self._check_connected(f"before the contract details of {symbol}")
        stock = self.ib_async.Stock(symbol, settings.exchange, settings.currency, primaryExchange=primary_exchange)
        where = f"{settings.exchange}" + (f"/{primary_exchange}" if primary_exchange else "")
        try:
            details = await self.ib.reqContractDetailsAsync(stock)
        except self.ib_async.RequestError as error:
            if error.code == NO_SECURITY_DEFINITION:
                raise SymbolProblem(
                    f"unknown symbol: IB has no stock {symbol} on {where} in {settings.currency} "
                    f"(IB error {error.code}: {error.message})"
                ) from None
            raise SymbolProblem(f"contract details failed (IB error {error.code}: {error.message})") from None
        except ConnectionError:
            raise self._lost(f"while asking for the contract details of {symbol}") from None
        if not details:
            self._check_connected(f"while asking for the contract details of {symbol}")
            raise SymbolProblem(f"unknown symbol: IB has no stock {symbol} on {where} in {settings.currency}")
        if len(details) > 1:
            exchanges = sorted({d.contract.primaryExchange for d in details})
            raise SymbolProblem(
                f"ambiguous: {len(details)} stocks match (primary exchanges {', '.join(exchanges)}); write "
                f"'{symbol},EXCHANGE' in the symbols file"
            )
        found = details[0]
        return ContractInfo(
            symbol=symbol,
            con_id=int(found.contract.conId),
            primary_exchange=str(found.contract.primaryExchange or ""),
            industry=str(found.industry or ""),
            category=str(found.category or ""),
            contract=found.contract,
        )

    # ----------------------------------------------------------------------------------------------
    # daily adjusted bars

    async def _page(self, info: ContractInfo, years: int) -> list[Any]:
        """One historical data request: the daily adjusted bars of the last ``years`` years, ending now."""
        duration = _years(years)
        key = RequestKey(
            contract=(info.con_id, info.primary_exchange, WHAT_TO_SHOW),
            request=(info.con_id, WHAT_TO_SHOW, "", duration, BAR_SIZE),
        )
        for attempt in range(self.settings.pacing_retries + 1):
            await self.pacer.acquire(key)
            self._check_connected(f"while downloading the daily bars of {info.symbol}")
            try:
                bars = await self.ib.reqHistoricalDataAsync(
                    info.contract,
                    endDateTime="",  # IB refuses an end date with ADJUSTED_LAST: every page ends now
                    durationStr=duration,
                    barSizeSetting=BAR_SIZE,
                    whatToShow=WHAT_TO_SHOW,
                    useRTH=True,
                    formatDate=1,
                    timeout=self.settings.request_timeout,
                )
            except self.ib_async.RequestError as error:
                if _is_pacing_violation(error.code, error.message):
                    self.pacing_violations += 1
                    self.pacer.penalize()
                    if self._on_pacing is not None:
                        self._on_pacing(
                            info.symbol,
                            f"IB reported a pacing violation ({error.message}); waiting "
                            f"{self.pacer.limits.cooldown_seconds:g} s, attempt {attempt + 2} of "
                            f"{self.settings.pacing_retries + 1}",
                        )
                    continue
                if _is_permission_error(error.code, error.message):
                    raise SymbolProblem(
                        f"no market data permission for its daily bars (IB error {error.code}: {error.message})"
                    ) from None
                raise SymbolProblem(f"daily bars failed (IB error {error.code}: {error.message})") from None
            except ConnectionError:
                raise self._lost(f"while downloading the daily bars of {info.symbol}") from None
            self._check_connected(f"while downloading the daily bars of {info.symbol}")
            return list(bars)
        raise SymbolProblem(
            f"daily bars refused: {self.settings.pacing_retries + 1} pacing violations in a row (another client on "
            "this account may be using up the historical data allowance)"
        )

    async def daily_bars(
        self, info: ContractInfo, years: int, page_years: int, on_page: Callable[[int, int], None] | None = None
    ) -> pl.DataFrame:
        """The daily adjusted bars of the last ``years`` years: ``date, close, volume`` (volume null when IB gives
        none), sorted by date.

        IB refuses an end date for ADJUSTED_LAST, so the history is paged back in time by duration: page k asks
        for the last ``k × page_years`` years (the last page for ``years``) and adds only its bars older than
        those already held, rescaled so that its close on the previous page's first date equals that page's (a
        dividend adjusted between two pages then leaves the returns intact). Paging stops early when a page
        adds nothing older (the stock's history is shorter). ``on_page(page, pages)`` is called before each page.
        """
        if years < 1 or page_years < 1:
            raise ValueError(f"years and page_years must be at least 1, got {years} and {page_years}")
        pages = math.ceil(years / page_years)
        held: pl.DataFrame | None = None
        for page in range(1, pages + 1):
            if on_page is not None:
                on_page(page, pages)
            bars = _bars_frame(await self._page(info, min(page * page_years, years)))
            if held is None:
                if bars.height == 0:
                    raise SymbolProblem(
                        f"no daily bars returned within {self.settings.request_timeout:g} s (no data for "
                        f"{WHAT_TO_SHOW}, or the request timed out)"
                    )
                held = bars
                continue
            first_date = held.item(0, "date")
            older = bars.filter(pl.col("date") < first_date)
            if older.height == 0:
                break
            overlap = bars.filter(pl.col("date") == first_date)
            if overlap.height == 0:
                raise SymbolProblem(
                    f"page {page} of its daily bars does not reach back to {first_date}, the first date of the "
                    "page before: cannot join them"
                )
            scale = held.item(0, "close") / overlap.item(0, "close")
            held = pl.concat([older.with_columns(pl.col("close") * scale), held])
        if held is None:  # pages >= 1, so the loop ran
            raise SymbolProblem("no daily bars")
        return held

    # ----------------------------------------------------------------------------------------------
    # market cap

    async def market_cap_millions(self, info: ContractInfo) -> tuple[float | None, str]:
        """The stock's market cap (millions of its currency) from the fundamental ratios tick (generic tick 258,
        ``MKTCAP``), or None and why not (no permission, no ratios within the timeout)."""
        self._check_connected(f"before the fundamental ratios of {info.symbol}")
        errors: list[tuple[int, str]] = []

        def on_error(req_id: int, code: int, message: str, contract: Any) -> None:
            if contract is not None and getattr(contract, "conId", None) == info.con_id:
                errors.append((code, message))

        self.ib.errorEvent += on_error
        ticker = self.ib.reqMktData(info.contract, FUNDAMENTAL_RATIOS_TICK, False, False)
        try:
            deadline = time.monotonic() + self.settings.fundamentals_timeout
            while time.monotonic() < deadline:
                ratios = ticker.fundamentalRatios
                if ratios is not None and hasattr(ratios, "MKTCAP"):
                    value = float(ratios.MKTCAP)
                    if math.isfinite(value) and value > 0:
                        return value, f"MKTCAP {value:,.1f} million"
                    return None, f"fundamental ratios without a usable MKTCAP ({ratios.MKTCAP!r})"
                if errors:
                    code, message = errors[0]
                    if _is_permission_error(code, message):
                        return None, f"no market data permission for fundamental ratios (IB error {code}: {message})"
                    return None, f"fundamental ratios failed (IB error {code}: {message})"
                self._check_connected(f"while waiting for the fundamental ratios of {info.symbol}")
                await asyncio.sleep(0.01)
            return None, f"no fundamental ratios within {self.settings.fundamentals_timeout:g} s"
        finally:
            self.ib.errorEvent -= on_error
            if self.ib.isConnected():
                self.ib.cancelMktData(info.contract)


def _bars_frame(bars: list[Any]) -> pl.DataFrame:
    """ib_async BarData → ``date, close, volume`` (volume null where IB sends a negative one)."""
    return pl.DataFrame(
        {
            "date": [_as_date(bar.date) for bar in bars],
            "close": [float(bar.close) for bar in bars],
            "volume": [float(bar.volume) if bar.volume is not None and bar.volume >= 0 else None for bar in bars],
        },
        schema={"date": pl.Date, "close": pl.Float64, "volume": pl.Float64},
    ).sort("date")


def _as_date(value: datetime.date | datetime.datetime | str) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(str(value)[:10])
