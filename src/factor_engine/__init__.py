"""Factor Engine: a characteristic factor equity risk model (style scores, factor returns, risk).

Quick use::

    from factor_engine import styles, estimate_factor_returns
    mom = styles.momentum(panel)
    result = estimate_factor_returns(returns_df, mkt_cap_df, sector_df, style_df)
    factor_returns, residuals = result

The names below load on first use (PEP 562), so ``import factor_engine`` itself loads neither numpy nor
polars: the command line sets the process up (its memory allocator, :mod:`factor_engine._allocator`) before
they load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# exported name -> (module, attribute or None for the module itself)
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "FactorReturns": ("factor_engine.regression", "FactorReturns"),
    "PanelError": ("factor_engine.panel", "PanelError"),
    "estimate_factor_returns": ("factor_engine.regression", "estimate_factor_returns"),
    "load_panel": ("factor_engine.panel", "load_panel"),
    "styles": ("factor_engine.styles", None),
    "validate_panel": ("factor_engine.panel", "validate_panel"),
    "xsection": ("factor_engine.xsection", None),
}

__all__ = [
    "FactorReturns",
    "PanelError",
    "__version__",
    "estimate_factor_returns",
    "load_panel",
    "styles",
    "validate_panel",
    "xsection",
]

if TYPE_CHECKING:
    from factor_engine import styles, xsection
    from factor_engine.panel import PanelError, load_panel, validate_panel
    from factor_engine.regression import FactorReturns, estimate_factor_returns


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'factor_engine' has no attribute {name!r}")
    module_name, attribute = _EXPORTS[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
