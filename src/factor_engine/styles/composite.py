"""Styles declared from descriptors: panel columns or polars expressions run through USE4's pipeline.

A :class:`Descriptor` names one input of a style (a panel column, or a polars expression of columns) and its
weight. A :class:`DescriptorStyle` is the style function: on each date every descriptor is trimmed at 3σ and
standardized (cap-weighted mean 0, equal-weighted std 1), the descriptors are combined with their weights (an
asset missing some gets the weighted mean of those it has), the result is standardized, orthogonalized by a
cap-weighted regression to USE4's size and/or beta when asked, and standardized again
(:func:`factor_engine.styles.descriptors.descriptor_to_style`). Register one with
:func:`factor_engine.styles.register_descriptor_style`; USE4's fundamental styles (earnings yield, growth,
leverage, dividend yield, book-to-price: :mod:`factor_engine.styles.fundamental`) are declared this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from factor_engine.panel import MARKET_CAP, RETURNS
from factor_engine.styles import use4
from factor_engine.styles._common import to_lazy, with_score
from factor_engine.styles._panel_grid import panel_grid
from factor_engine.styles.descriptors import descriptor_to_style

__all__ = ["ORTHOGONAL_TO", "Descriptor", "DescriptorStyle"]

#: Styles a descriptor style can be made orthogonal to: USE4's size (log cap, trimmed and standardized) and
#: beta (the beta style with its registered defaults: 252 days, half-life 63, 63 returns at least).
ORTHOGONAL_TO = ("size", "beta")


@dataclass(frozen=True)
class Descriptor:
    """One descriptor of a style.

    Attributes
    ----------
    name: the descriptor's name (e.g. ``"ETOP"``); also the panel column read when ``expr`` is None.
    weight: its positive weight in the style (weights are renormalized over the descriptors an asset has).
    expr: a polars expression of panel columns giving the raw descriptor per row (e.g. ``-pl.col("accruals")``,
        ``pl.col("assets").log()``); default ``pl.col(name)``. Null or NaN is a missing value; ±∞ an extreme one
        (trimmed to ±3σ).
    optional: a style still computes without this descriptor's columns (it is left out, the weights of the
        others renormalized); required descriptors' columns must be in the panel.
    """

    name: str
    weight: float = 1.0
    expr: pl.Expr | None = field(default=None, compare=False)
    optional: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"descriptor name must be a non-empty string, got {self.name!r}")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"descriptor {self.name!r}: weight must be a positive number, got {weight!r}")
        if self.expr is not None and not isinstance(self.expr, pl.Expr):
            raise TypeError(
                f"descriptor {self.name!r}: expr must be a polars expression, got {type(self.expr).__name__}"
            )
        if not self.columns:
            raise ValueError(f"descriptor {self.name!r}: its expression reads no column")

    @property
    def expression(self) -> pl.Expr:
        """The polars expression giving the raw descriptor."""
        return self.expr if self.expr is not None else pl.col(self.name)

    @property
    def columns(self) -> tuple[str, ...]:
        """The panel columns the descriptor reads."""
        return tuple(dict.fromkeys(self.expression.meta.root_names()))


@dataclass(frozen=True)
class DescriptorStyle:
    """A style function ``style(df) -> frame(date, symbol, score)`` built from descriptors (module docstring).

    Attributes
    ----------
    name: the style's name (in messages).
    score: the score column it returns.
    descriptors: its descriptors, in order.
    orthogonal_to: styles it is made orthogonal to, among :data:`ORTHOGONAL_TO`.
    """

    name: str
    score: str
    descriptors: tuple[Descriptor, ...]
    orthogonal_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.descriptors or not all(isinstance(d, Descriptor) for d in self.descriptors):
            raise TypeError(f"style {self.name!r}: descriptors must be a non-empty sequence of Descriptor")
        names = [d.name for d in self.descriptors]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"style {self.name!r}: descriptor name(s) {repeated} appear more than once")
        unknown = [s for s in self.orthogonal_to if s not in ORTHOGONAL_TO]
        if unknown:
            raise ValueError(
                f"style {self.name!r}: cannot be made orthogonal to {unknown}; choose among {list(ORTHOGONAL_TO)}"
            )

    @property
    def required_columns(self) -> tuple[str, ...]:
        """The panel columns the style always needs: ``market_cap``, ``asset_returns`` when orthogonal to beta,
        and the columns of its required descriptors."""
        base = (MARKET_CAP, *((RETURNS,) if "beta" in self.orthogonal_to else ()))
        return tuple(dict.fromkeys([*base, *(c for d in self.descriptors if not d.optional for c in d.columns)]))

    def describe(self) -> str:
        """One line: the weighted descriptors and what the style is orthogonal to."""
        terms = " + ".join(f"{d.weight:g} {d.name}" for d in self.descriptors)
        return terms + (f", orthogonal to {' and '.join(self.orthogonal_to)}" if self.orthogonal_to else "")

    def __call__(self, df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
        """The style's score per date and symbol from the descriptors whose columns ``df`` holds.

        Parameters
        ----------
        df: long frame with ``date, symbol, market_cap`` (currency units), the required descriptors' columns
            (and ``asset_returns`` when orthogonal to beta).

        Returns
        -------
        DataFrame ``date, symbol, <score>`` in date order (input order within a date); null where the asset has
        no descriptor (or the date too few assets).
        """
        columns = to_lazy(df, self.name, self.required_columns).collect_schema().names()
        used = [d for d in self.descriptors if all(c in columns for c in d.columns)]
        if not used:
            wanted = sorted({c for d in self.descriptors for c in d.columns})
            raise ValueError(f"style {self.name!r}: the panel has none of its descriptors' columns {wanted}")
        panel = panel_grid(df, self.name)
        read = list(dict.fromkeys(c for d in used for c in d.columns))
        values = panel.load(df, self.name, read, {f"__descriptor_{i}__": d.expression for i, d in enumerate(used)})
        against = [_beta_exposure(df, self.name)] if "beta" in self.orthogonal_to else []
        style = descriptor_to_style(
            values, [d.weight for d in used], panel.caps, against=against, against_size="size" in self.orthogonal_to
        )
        return with_score(panel.rows, self.score, panel.gather(style))


def _beta_exposure(df: pl.DataFrame | pl.LazyFrame, what: str) -> np.ndarray:
    """USE4's beta exposure (T, N) with the beta style's defaults, shared with the beta style itself."""
    panel, returns = use4._dense_inputs(df, what)
    return use4._beta_style(returns, panel, **use4.BETA_DEFAULTS)
