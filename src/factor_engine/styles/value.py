"""Value: the average of standardized log book-to-price, log sales-to-price and cash-flow-to-price."""

from __future__ import annotations

import numpy as np
import polars as pl

from factor_engine._dense import date_bounds, standardize_rows, winsorize_rows
from factor_engine.panel import VALUE_FEATURES
from factor_engine.styles._common import load_inputs, with_score

SCORE = "val_score"


def value(df: pl.DataFrame | pl.LazyFrame, *, winsorize_features: float | None = None) -> pl.DataFrame:
    """Value score per date and symbol (toraniko 1.1.1's definition).

    ``log(book_price)``, ``log(sales_price)`` and ``cf_price`` are each standardized per date, averaged
    (ignoring a null one; a NaN, infinite or non-positive ratio makes the score missing) and the average
    standardized again.

    Parameters
    ----------
    df: long frame with ``date, symbol, book_price, sales_price, cf_price`` (ratios to price).
    winsorize_features: if given, the fraction clipped at each tail of each feature per date first.
        (toraniko 1.1.1 clips at 0.05 whatever value is passed; here the value passed is used.)

    Returns
    -------
    DataFrame ``date, symbol, val_score`` in date order (input order within a date).
    """
    if winsorize_features is not None and not 0.0 <= winsorize_features <= 0.5:
        raise ValueError(f"winsorize_features must be a fraction in [0, 0.5], got {winsorize_features}")
    frame = load_inputs(df, "value", VALUE_FEATURES)
    bounds = date_bounds(frame)  # each date's rows: the statistics run date by date on the rows
    # the average of the standardized features present, accumulated feature by feature (no stacked copy)
    total = np.zeros(frame.height)
    present = np.zeros(frame.height)
    # a feature that is present but not a finite number after the transform (NaN, ±inf, log of a
    # non-positive ratio) makes the score missing, as in toraniko; a null feature is skipped
    invalid = np.zeros(frame.height, dtype=bool)
    for position, name in enumerate(VALUE_FEATURES):
        feature = frame[name].to_numpy()
        if winsorize_features is not None:
            feature = winsorize_rows(feature, bounds, winsorize_features)
        if position < 2:  # book and sales ratios enter in logs
            with np.errstate(invalid="ignore", divide="ignore"):
                feature = np.log(feature)
        invalid |= frame[name].is_not_null().to_numpy() & ~np.isfinite(feature)
        feature = standardize_rows(feature, bounds)
        finite = np.isfinite(feature)
        present += finite
        total += np.where(finite, feature, 0.0)
        del feature, finite
    with np.errstate(invalid="ignore", divide="ignore"):
        average = np.divide(total, present, out=total)
    average[invalid] = np.nan
    return with_score(frame, SCORE, standardize_rows(average, bounds))
