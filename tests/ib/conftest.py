"""Fixtures of the Interactive Brokers tests: fake gateways on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from ib_helpers import GatewayFactory

from ib_fake_gateway import FakeGateway, Scenario


@pytest.fixture
def fake_gateway() -> Iterator[GatewayFactory]:
    """``fake_gateway(scenario=None, clock=None)``: a started :class:`FakeGateway` on a free port, stopped after the
    test."""
    started: list[FakeGateway] = []

    def start(scenario: Scenario | None = None, clock: Callable[[], float] | None = None) -> FakeGateway:
        gateway = FakeGateway(scenario=scenario, **({"clock": clock} if clock is not None else {}))
        started.append(gateway.start())
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
