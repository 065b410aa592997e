"""The browser dashboard: GET /dashboard (and / redirecting to it) serves a static page whose plain JS reads
every figure through the public API under ``/api/v1/factor-engine``; plotly.js comes from the python plotly
package (offline, no CDN, no front-end build step)."""

from __future__ import annotations

from factor_engine.service.dashboard.router import router

__all__ = ["router"]
