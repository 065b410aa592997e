"""Style factors: momentum, value, size, and a registry for custom ones.

``styles.momentum(df)``, ``styles.value(df)`` and ``styles.size(df)`` return ``date, symbol, <x>_score``;
:func:`register_style` adds a user factor and :func:`compute_styles` computes several at once.
"""

from factor_engine.styles.momentum import momentum
from factor_engine.styles.registry import (
    StyleFactor,
    available_styles,
    compute_styles,
    get_style,
    register_style,
    unregister_style,
)
from factor_engine.styles.size import size
from factor_engine.styles.value import value

__all__ = [
    "StyleFactor",
    "available_styles",
    "compute_styles",
    "get_style",
    "momentum",
    "register_style",
    "size",
    "unregister_style",
    "value",
]
