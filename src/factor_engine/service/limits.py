"""Request limits: the body size as a pure ASGI middleware (413 on a Content-Length above the limit, and while
a body is streamed as soon as the bytes received pass it), and the bounds of a build's configuration."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "BUILD_CONFIG_BOUNDS",
    "MAX_LABEL_CHARS",
    "MAX_LISTED_SYMBOLS",
    "MAX_LIVE_MESSAGE_CHARS",
    "MAX_OPTIMIZE_FACTORS",
    "BodySizeLimit",
    "build_config_violations",
]


def _too_large(limit: int) -> str:
    return f"request body too large: the limit is {limit:,} bytes (FACTOR_ENGINE_MAX_BODY_BYTES)"


class BodySizeLimit:
    """Answer 413 to request bodies over ``max_bytes`` bytes.

    Parameters
    ----------
    app: the wrapped ASGI app.
    max_bytes: largest body accepted, bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    response = JSONResponse({"detail": _too_large(self.max_bytes)}, status_code=413)
                    await response(scope, receive, send)
                    return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from body reading; the exception middleware answers 413
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, counted, send)


# --------------------------------------------------------------------------------------------------
# build configuration bounds

#: Bounds of the build configuration a request may ask for: "section.key" (or "styles.params.<style>.<key>")
#: → (lowest, highest) allowed, None where unbounded. They cap what drives a build's time and memory
#: (simulations, lags, groups, windows, universe) well above what a sound model needs; the settings'
#: ``build_limits`` (FACTOR_ENGINE_BUILD_LIMITS, JSON) raise or lower any highest value.
BUILD_CONFIG_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "universe.size": (None, 20_000),
    "regression.exposure_lag": (None, 252),
    "covariance.vol_nw_lags": (None, 21),
    "covariance.corr_nw_lags": (None, 21),
    "covariance.min_periods": (None, 10_000),
    "covariance.horizon": (None, 252),
    "adjustments.eigenfactor_simulations": (None, 10_000),
    "adjustments.eigenfactor_every": (5, None),
    "specific_risk.nw_lags": (None, 21),
    "specific_risk.min_periods": (None, 10_000),
    "specific_risk.full_history": (None, 10_000),
    "specific_risk.n_size_groups": (None, 100),
    "specific_risk.robust_every": (5, None),
    "specific_risk.blend_start": (None, 10_000),
    "styles.params.momentum.trailing_days": (None, 5_040),
    "styles.params.momentum.lag": (None, 5_040),
    "styles.params.beta.window": (None, 5_040),
    "styles.params.resvol.window": (None, 5_040),
    "styles.params.liquidity.month_days": (None, 420),
}
#: Symbols a build request may list in universe_symbols or [universe] include.
MAX_LISTED_SYMBOLS = 20_000


def build_config_violations(effective: dict[str, Any], highest: dict[str, float] | None = None) -> list[str]:
    """What in an effective model configuration (:meth:`factor_engine.config.ModelConfig.effective`) lies
    outside :data:`BUILD_CONFIG_BOUNDS` (with ``highest`` overriding upper bounds), one message per key naming
    the key, its value and the limit; empty when everything is within bounds."""
    bounds = {key: (low, (highest or {}).get(key, high)) for key, (low, high) in BUILD_CONFIG_BOUNDS.items()}
    problems = []
    for key, (low, high) in bounds.items():
        value: Any = effective
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # absent, disabled (None) or not a number: the configuration's own checks apply
        section, _, name = key.rpartition(".")
        where = f"[{section}] {name}"
        if high is not None and value > high:
            problems.append(f"config: {where} = {value} is above the service's limit {high:g}")
        if low is not None and value < low:
            problems.append(f"config: {where} = {value} is below the service's limit {low:g}")
    include = effective.get("universe", {}).get("include", [])
    if len(include) > MAX_LISTED_SYMBOLS:
        problems.append(
            f"config: [universe] include lists {len(include):,} symbols; the limit is {MAX_LISTED_SYMBOLS:,}"
        )
    return problems


#: Longest symbol or sector label accepted, characters (JSON rows and uploads alike; longer is a 422). The
#: labels are the panel's primary key and indexed columns: PostgreSQL refuses an index row above about 2.7 KB
#: ("index row size exceeds maximum"), and no real ticker or sector name comes near 200 characters.
MAX_LABEL_CHARS = 200

#: Factors an optimization request may name in ``neutral`` or ``factor_bounds`` (each). A model has a few dozen
#: factors; every bound is a constraint group, and diagnosing an infeasible set solves up to (groups)² problems.
MAX_OPTIMIZE_FACTORS = 200

#: Longest text frame the live stream accepts, characters (a larger one is refused with an error message; the
#: connection stays open). An update of 20,000 prices takes about 600,000.
MAX_LIVE_MESSAGE_CHARS = 2 * 1024 * 1024
