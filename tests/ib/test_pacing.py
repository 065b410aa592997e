"""The pacer keeps IB's historical data limits on a fake clock: each rule alone, the penalty after a violation, and
a random request stream checked against an independent, obvious check of the three rules (and that no request
waited longer than a rule required)."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from ib_helpers import FakeClock

from factor_engine.integrations.ib.pacing import Pacer, PacingLimits, RequestKey


def send_all(pacer: Pacer, keys: list[RequestKey], clock: FakeClock) -> list[float]:
    """Acquire every key in turn; the clock time each was sent at."""

    async def run() -> list[float]:
        times = []
        for key in keys:
            await pacer.acquire(key)
            times.append(clock())
        return times

    return asyncio.run(run())


def key(contract: str, duration: str = "1 Y") -> RequestKey:
    return RequestKey(contract=contract, request=(contract, duration))


def test_sixty_requests_in_ten_minutes_then_the_next_waits() -> None:
    clock = FakeClock()
    pacer = Pacer(PacingLimits(max_same_contract=100), clock=clock, sleep=clock.sleep)
    start = clock()
    times = send_all(pacer, [key(f"C{i % 7}", f"{i} Y") for i in range(61)], clock)
    assert times[:60] == [start] * 60
    assert times[60] == pytest.approx(start + 600.0)
    assert pacer.waited_seconds == pytest.approx(600.0)
    assert pacer.requests == 61


def test_identical_requests_are_fifteen_seconds_apart() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    times = send_all(pacer, [key("AAPL"), key("MSFT"), key("AAPL")], clock)
    assert times[1] == times[0]
    assert times[2] == pytest.approx(times[0] + 15.0)


def test_at_most_five_requests_per_contract_in_two_seconds() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    times = send_all(pacer, [key("AAPL", f"{years} Y") for years in range(1, 12)], clock)
    assert times[:5] == [times[0]] * 5
    assert times[5] == pytest.approx(times[0] + 2.0)
    assert times[10] == pytest.approx(times[0] + 4.0)


def test_penalize_holds_every_request_for_the_cooldown() -> None:
    clock = FakeClock()
    pacer = Pacer(PacingLimits(cooldown_seconds=45.0), clock=clock, sleep=clock.sleep)
    first = send_all(pacer, [key("AAPL")], clock)[0]
    assert pacer.penalize() == pytest.approx(first + 45.0)
    assert send_all(pacer, [key("MSFT")], clock)[0] == pytest.approx(first + 45.0)


def rules_hold(times: list[float], keys: list[RequestKey], limits: PacingLimits) -> list[str]:
    """Every broken rule, by brute force over all pairs and windows."""
    broken = []
    for i, (at, request) in enumerate(zip(times, keys, strict=True)):
        before = [(times[j], keys[j]) for j in range(i)]
        if sum(1 for t, _ in before if t > at - limits.window_seconds) + 1 > limits.max_requests:
            broken.append(f"request {i}: more than {limits.max_requests} in {limits.window_seconds} s")
        if any(k.request == request.request and t > at - limits.identical_seconds for t, k in before):
            broken.append(f"request {i}: identical within {limits.identical_seconds} s")
        same = sum(1 for t, k in before if k.contract == request.contract and t > at - limits.same_contract_seconds)
        if same + 1 > limits.max_same_contract:
            broken.append(f"request {i}: more than {limits.max_same_contract} per contract")
    return broken


def test_random_stream_keeps_every_rule_and_waits_no_longer_than_needed() -> None:
    rng = np.random.default_rng(3)
    limits = PacingLimits(max_requests=12, window_seconds=60.0, identical_seconds=5.0, same_contract_seconds=2.0)
    clock = FakeClock()
    pacer = Pacer(limits, clock=clock, sleep=clock.sleep)
    keys = [key(f"C{rng.integers(3)}", f"{rng.integers(2)} Y") for _ in range(80)]
    times = send_all(pacer, keys, clock)
    assert rules_hold(times, keys, limits) == []
    assert all(later >= earlier for earlier, later in itertools.pairwise(times))
    # as early as possible: a request sent after its predecessor would have broken a rule a moment sooner
    for i in range(1, len(times)):
        if times[i] > times[i - 1]:
            nudged = [*times[:i], times[i] - 1e-6]
            assert rules_hold(nudged, keys[: i + 1], limits), f"request {i} waited longer than needed"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("max_requests", 0, "max_requests must be at least 1"), ("window_seconds", -1.0, "must not be negative")],
)
def test_limits_are_checked(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PacingLimits(**{field: value})
