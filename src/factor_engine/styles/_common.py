"""Input handling shared by the style factors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from factor_engine._dense import dates_sorted
from factor_engine.panel import DATE, SYMBOL


def to_lazy(df: pl.DataFrame | pl.LazyFrame, what: str, columns: Sequence[str]) -> pl.LazyFrame:
    """``df`` as a LazyFrame after checking it is a polars frame holding ``columns``."""
    if isinstance(df, pl.DataFrame):
        present = df.columns
    elif isinstance(df, pl.LazyFrame):
        present = df.collect_schema().names()
    else:
        raise TypeError(f"{what}: expected a polars DataFrame or LazyFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; the frame has {present}")
    return df.lazy()


def load_inputs(df: pl.DataFrame | pl.LazyFrame, what: str, features: Sequence[str]) -> pl.DataFrame:
    """``date, symbol`` and ``features`` (as Float64) of ``df``, with rows in date order.

    Rows keep their input order within a date; input not sorted by date is sorted by (date, symbol).
    """
    return load_expressions(df, what, features, {c: pl.col(c) for c in features})


def load_expressions(
    df: pl.DataFrame | pl.LazyFrame, what: str, columns: Sequence[str], expressions: Mapping[str, pl.Expr]
) -> pl.DataFrame:
    """``date, symbol`` and each expression of ``expressions`` (as Float64, named by its key) evaluated on
    ``df``, which must hold ``columns``; rows in the order of :func:`load_inputs` (the same input gives the
    same order, so results of several loads line up row by row)."""
    frame = (
        to_lazy(df, what, (DATE, SYMBOL, *columns))
        .select(
            pl.col(DATE).cast(pl.Date),
            SYMBOL,
            *(expression.cast(pl.Float64).alias(name) for name, expression in expressions.items()),
        )
        .collect()
    )
    return frame if dates_sorted(frame) else frame.sort(DATE, SYMBOL)


def with_score(frame: pl.DataFrame, name: str, values: np.ndarray) -> pl.DataFrame:
    """``date, symbol`` of ``frame`` with the score column ``name`` (NaN stored as null)."""
    return frame.select(DATE, SYMBOL).with_columns(pl.Series(name, values, nan_to_null=True))
