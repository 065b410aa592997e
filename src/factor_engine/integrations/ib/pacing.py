"""Interactive Brokers' pacing limits for historical data requests, kept by waiting before each request.

IB treats as a pacing violation (error 162, the request is dropped):

* more than 60 historical data requests within any ten minutes;
* two identical requests (same contract, end, duration, bar size, data type) within 15 seconds;
* six or more requests for the same contract, exchange and data type within two seconds.

:class:`Pacer` remembers when each request was sent and, before the next one, sleeps until all three rules
hold. After a violation IB reports anyway (another client on the same account counts too),
:meth:`Pacer.penalize` holds every request back for a cool-down. The clock and the sleep are injectable, so
tests run the rules on a fake clock without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

__all__ = ["Pacer", "PacingLimits", "RequestKey"]


@dataclass(frozen=True)
class PacingLimits:
    """IB's historical data pacing limits (defaults: IB's documented values).

    Attributes
    ----------
    max_requests, window_seconds:
        At most ``max_requests`` requests within any ``window_seconds`` (60 in 600 s).
    identical_seconds:
        Minimum seconds between two identical requests (15 s).
    max_same_contract, same_contract_seconds:
        At most ``max_same_contract`` requests for one contract, exchange and data type within
        ``same_contract_seconds`` (IB: six or more within 2 s is a violation, so 5).
    cooldown_seconds:
        How long :meth:`Pacer.penalize` holds every request back after IB reported a violation.
    """

    max_requests: int = 60
    window_seconds: float = 600.0
    identical_seconds: float = 15.0
    max_same_contract: int = 5
    same_contract_seconds: float = 2.0
    cooldown_seconds: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_requests", "max_same_contract"):
            if getattr(self, name) < 1:
                raise ValueError(f"PacingLimits.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("window_seconds", "identical_seconds", "same_contract_seconds", "cooldown_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"PacingLimits.{name} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class RequestKey:
    """What IB's rules compare: ``contract`` (conId or symbol, exchange, data type) and the whole request
    (``contract`` plus end, duration and bar size) for the identical-request rule."""

    contract: Hashable
    request: Hashable


class Pacer:
    """Waits before each historical data request until IB's pacing limits hold.

    Parameters
    ----------
    limits:
        The limits to keep (:class:`PacingLimits`).
    clock:
        Seconds on a monotonic clock (default :func:`time.monotonic`).
    sleep:
        ``await sleep(seconds)`` (default :func:`asyncio.sleep`); a fake one advances a fake clock in tests.
    """

    def __init__(
        self,
        limits: PacingLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limits = limits or PacingLimits()
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[tuple[float, RequestKey]] = deque()
        self._blocked_until = -float("inf")
        self.waited_seconds = 0.0
        self.requests = 0

    def earliest(self, key: RequestKey, now: float) -> float:
        """The earliest time at or after ``now`` at which ``key`` may be sent without breaking a limit."""
        limits = self.limits
        self._forget(now)
        start = max(now, self._blocked_until)
        times = [sent for sent, _ in self._sent]
        if len(times) >= limits.max_requests:
            # the request that must leave the window before one more fits
            start = max(start, times[len(times) - limits.max_requests] + limits.window_seconds)
        same_contract = [sent for sent, other in self._sent if other.contract == key.contract]
        if len(same_contract) >= limits.max_same_contract:
            start = max(
                start, same_contract[len(same_contract) - limits.max_same_contract] + limits.same_contract_seconds
            )
        identical = [sent for sent, other in self._sent if other.request == key.request]
        if identical:
            start = max(start, identical[-1] + limits.identical_seconds)
        return start

    async def acquire(self, key: RequestKey) -> float:
        """Sleep until ``key`` may be sent, record it as sent, and return the seconds waited."""
        waited = 0.0
        while True:
            now = self._clock()
            start = self.earliest(key, now)
            if start <= now:
                break
            await self._sleep(start - now)
            waited += start - now
        self._sent.append((self._clock(), key))
        self.waited_seconds += waited
        self.requests += 1
        return waited

    def penalize(self) -> float:
        """After IB reported a pacing violation: hold every request back for ``cooldown_seconds``; returns the
        time until which requests wait."""
        self._blocked_until = max(self._blocked_until, self._clock() + self.limits.cooldown_seconds)
        return self._blocked_until

    def _forget(self, now: float) -> None:
        """Drop requests older than every window (they can no longer limit anything)."""
        horizon = max(self.limits.window_seconds, self.limits.identical_seconds, self.limits.same_contract_seconds)
        while self._sent and self._sent[0][0] <= now - horizon:
            self._sent.popleft()
