"""Style factors: toraniko's momentum, value and size, Barra USE4's styles, and a registry for custom ones.

``styles.momentum(df)``, ``styles.value(df)`` and ``styles.size(df)`` return ``date, symbol, <x>_score``;
USE4's beta, residual volatility and non-linear size (:mod:`~factor_engine.styles.use4`), liquidity
(:mod:`~factor_engine.styles.liquidity`) and the fundamental styles (:mod:`~factor_engine.styles.fundamental`)
are registered too. :func:`register_style` adds a user factor from any function,
:func:`register_descriptor_style` one from :class:`Descriptor` s through USE4's descriptor pipeline, and
:func:`compute_styles` computes several at once.
"""

from factor_engine.styles.composite import Descriptor, DescriptorStyle
from factor_engine.styles.liquidity import liquidity
from factor_engine.styles.momentum import momentum
from factor_engine.styles.registry import (
    Lookback,
    StyleFactor,
    available_styles,
    compute_styles,
    get_style,
    history_start,
    register_descriptor_style,
    register_style,
    select_styles,
    unregister_style,
)
from factor_engine.styles.size import size
from factor_engine.styles.value import value

__all__ = [
    "Descriptor",
    "DescriptorStyle",
    "Lookback",
    "StyleFactor",
    "available_styles",
    "compute_styles",
    "get_style",
    "history_start",
    "liquidity",
    "momentum",
    "register_descriptor_style",
    "register_style",
    "select_styles",
    "size",
    "unregister_style",
    "value",
]
