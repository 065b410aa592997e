"""The Factor Engine REST service (FastAPI): style scores, panel ingestion, risk model builds (directly or as
background jobs), model reads and portfolio analytics, on the store of :mod:`factor_engine.storage`.

Run it with ``factor-engine serve`` or ``uvicorn --factory factor_engine.service:create_app``.
"""

from factor_engine.service.app import create_app
from factor_engine.service.settings import Settings, get_settings

__all__ = ["Settings", "create_app", "get_settings"]
