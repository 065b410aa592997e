"""Rows without a market cap: a model leaves them out, as if they were not in the panel.

The data contract accepts a null ``market_cap`` (NaN is read as null) as a missing observation. A model weights
its regression, ranks its universe and groups specific risk by cap, so a row without one cannot enter it: the
build (:func:`factor_engine.model.build_model`), an update (:mod:`factor_engine.update`) and a live session
(:mod:`factor_engine.live`) drop such rows before anything else sees them. A symbol without a cap on any date
is then absent from the model; a panel without a cap on any row is a panel without ``market_cap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from factor_engine.panel import MARKET_CAP, SYMBOL

__all__ = ["MissingCaps", "has_cap", "leave_out_missing_caps", "missing_caps"]

_SHOWN = 5


def has_cap() -> pl.Expr:
    """True on the rows whose ``market_cap`` is present (not null, not NaN)."""
    cap = pl.col(MARKET_CAP).cast(pl.Float64)
    return cap.is_not_null() & cap.is_not_nan()


@dataclass(frozen=True)
class MissingCaps:
    """The rows of a panel without a market cap (null or NaN ``market_cap``), which a model leaves out.

    Attributes
    ----------
    rows: rows without a cap (0 when every row has one or the panel has no ``market_cap`` column).
    panel_rows: rows of the panel.
    symbols: the symbols with at least one row without a cap, sorted.
    symbols_left_out: those without a cap on any of their rows (absent from the model), sorted.
    """

    rows: int
    panel_rows: int
    symbols: tuple[str, ...] = ()
    symbols_left_out: tuple[str, ...] = ()

    @property
    def every_row(self) -> bool:
        """Whether no row of a non-empty panel has a cap (the model then has no ``market_cap``)."""
        return self.panel_rows > 0 and self.rows == self.panel_rows

    def note(self) -> dict[str, Any]:
        """The counts and symbols, as the model's notes record them (JSON-compatible)."""
        return {
            "rows": self.rows,
            "symbols": list(self.symbols),
            "symbols_left_out": list(self.symbols_left_out),
        }

    def summary(self) -> str:
        """``600 rows of 2 symbols``."""
        return f"{_count(self.rows, 'row')} of {_count(len(self.symbols), 'symbol')}"

    def warning(self, where: str = "") -> str:
        """One sentence on what was left out (``where``: e.g. ``" of the new dates"``), naming the first symbols."""
        if self.every_row:
            return (
                f"market_cap is missing on every one of the {_count(self.panel_rows, 'row')}{where}: the panel is "
                "treated as having no market_cap column"
            )
        sentence = (
            f"market_cap missing on {self.summary()}{where} ({_shown(self.symbols)}): those rows are left out of "
            "the model (no exposure, residual or specific risk on those dates; their returns do not enter the "
            "regression)"
        )
        if self.symbols_left_out:
            left_out = len(self.symbols_left_out)
            sentence += (
                f"; {_count(left_out, 'symbol')} without a cap on any date{where} {'is' if left_out == 1 else 'are'} "
                f"left out entirely ({_shown(self.symbols_left_out)})"
            )
        return sentence + "; give their caps (factor-engine prepare --caps or --shares) to include them"


def missing_caps(panel: pl.DataFrame) -> MissingCaps:
    """The rows of ``panel`` without a market cap, counted (one pass when every row has one)."""
    if MARKET_CAP not in panel.columns:
        return MissingCaps(0, panel.height)
    rows = int(panel.select(has_cap().not_().sum()).item())
    if rows == 0:
        return MissingCaps(0, panel.height)
    counts = (
        panel.lazy()
        .select(pl.col(SYMBOL).cast(pl.String), has_cap().alias("has_cap"))
        .group_by(SYMBOL)
        .agg(pl.col("has_cap").not_().sum().alias("missing"), pl.col("has_cap").any().alias("any_cap"))
        .filter(pl.col("missing") > 0)
        .sort(SYMBOL)
        .collect()
    )
    return MissingCaps(
        rows=rows,
        panel_rows=panel.height,
        symbols=tuple(counts.get_column(SYMBOL).to_list()),
        symbols_left_out=tuple(counts.filter(pl.col("any_cap").not_()).get_column(SYMBOL).to_list()),
    )


def leave_out_missing_caps(panel: pl.DataFrame) -> tuple[pl.DataFrame, MissingCaps]:
    """``panel`` without its rows lacking a market cap (without its ``market_cap`` column when no row has one;
    unchanged when every row has one), and what was left out."""
    missing = missing_caps(panel)
    if missing.rows == 0:
        return panel, missing
    if missing.every_row:
        return panel.drop(MARKET_CAP), missing
    return panel.filter(has_cap()), missing


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _shown(symbols: tuple[str, ...]) -> str:
    shown = ", ".join(symbols[:_SHOWN])
    return shown + (f" and {len(symbols) - _SHOWN:,} more" if len(symbols) > _SHOWN else "")
