"""Helpers of the Interactive Brokers tests: a fake clock for the pacer (and the fake gateway's pacing rules), the
returns the gateway's closes imply (the reference the panels are checked against) and symbol files."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from ib_fake_gateway import FakeGateway

SYMBOLS_FILE = Path(__file__).with_name("symbols.txt")
#: ``fake_gateway(scenario=None, clock=None)`` (the fixture of ``conftest.py``).
GatewayFactory = Callable[..., FakeGateway]


class FakeClock:
    """Seconds that move only when somebody sleeps: ``clock()`` reads them, ``await clock.sleep(s)`` adds ``s``."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def expected_returns(gateway: FakeGateway, symbol: str, first: datetime.date) -> pl.DataFrame:
    """``date, expected``: the daily returns of the closes the gateway sends for ``symbol`` (rounded as sent) from
    ``first`` on, null on the first date — computed here from the gateway's series, not by the code under test."""
    days = gateway.market.days
    closes = np.round(gateway.market.series(symbol)[0], 4)
    start = days.index(first)
    kept = closes[start:]
    returns = [None, *(kept[1:] / kept[:-1] - 1.0)]
    return pl.DataFrame({"date": days[start:], "expected": returns}, schema={"date": pl.Date, "expected": pl.Float64})


def symbols_file(folder: Path, symbols: list[str], name: str = "symbols.txt") -> Path:
    path = folder / name
    path.write_text("\n".join(symbols) + "\n")
    return path
