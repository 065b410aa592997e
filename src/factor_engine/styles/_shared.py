"""Work shared by the styles of one :func:`factor_engine.styles.compute_styles` call.

Several styles start from the same intermediate results (the panel's returns and caps on the dates × symbols
grid, the beta regression that both beta and residual volatility need). Inside :func:`shared_work` each is
computed once, by the first style that asks, while the others wait for it; outside, every call computes
its own. The cache lives in a context variable, so it holds one panel only and never outlives the call.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["shared", "shared_work"]

_Value = TypeVar("_Value")


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    value: Any = None


@dataclass
class _Cache:
    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: dict[Hashable, _Entry] = field(default_factory=dict)


_CACHE: contextvars.ContextVar[_Cache | None] = contextvars.ContextVar("factor_engine_style_cache", default=None)


@contextmanager
def shared_work() -> Iterator[None]:
    """Share intermediate results between the styles computed inside the block (on one panel). Threads that
    compute styles must run in a copy of this context (:func:`contextvars.copy_context`)."""
    token = _CACHE.set(_Cache())
    try:
        yield
    finally:
        _CACHE.reset(token)


def shared(key: Hashable, compute: Callable[[], _Value]) -> _Value:
    """``compute()``, computed once per ``key`` inside :func:`shared_work` (the other callers wait for the
    first one and get its result), or simply called outside it. Results must not be modified in place."""
    cache = _CACHE.get()
    if cache is None:
        return compute()
    with cache.lock:
        entry = cache.entries.setdefault(key, _Entry())
    with entry.lock:
        if not entry.done:
            entry.value = compute()
            entry.done = True
    result: _Value = entry.value
    return result
