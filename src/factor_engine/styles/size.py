"""Size: standardized negative log market cap, kept only in the small and large tails (small-minus-big)."""

from __future__ import annotations

import numpy as np
import polars as pl

from factor_engine._dense import date_bounds, quantile_nearest_rows, standardize_rows
from factor_engine.panel import MARKET_CAP
from factor_engine.styles._common import load_inputs, with_score

SCORE = "sze_score"


def size(df: pl.DataFrame | pl.LazyFrame, *, lower_decile: float = 0.2, upper_decile: float = 0.8) -> pl.DataFrame:
    """Size score per date and symbol (toraniko 1.1.1's definition).

    ``-log(market_cap)`` standardized per date; scores strictly between the ``lower_decile`` and
    ``upper_decile`` quantiles of the date are set to 0, so the factor is a small-minus-big tail spread.

    Parameters
    ----------
    df: long frame with ``date, symbol, market_cap`` (currency units, positive; a null cap gives a null score
        and is left out of its date's standardization).
    lower_decile, upper_decile: quantile fractions (0–1) bounding the zeroed middle of the distribution.

    Returns
    -------
    DataFrame ``date, symbol, sze_score`` in date order (input order within a date).
    """
    if not (0.0 <= lower_decile <= upper_decile <= 1.0):
        raise ValueError(
            f"need 0 <= lower_decile <= upper_decile <= 1, got lower_decile={lower_decile}, upper_decile={upper_decile}"
        )
    frame = load_inputs(df, "size", (MARKET_CAP,))
    bounds = date_bounds(frame)  # each date's rows: the statistics run date by date on the rows
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = standardize_rows(-np.log(frame[MARKET_CAP].to_numpy()), bounds)
    quantiles = quantile_nearest_rows(scores, bounds, (lower_decile, upper_decile))
    low, high = (np.repeat(q, np.diff(bounds)) for q in quantiles)  # each row's date's quantiles
    # a missing cap (NaN score) stays missing, as in toraniko (its between-test is null there, not true)
    tails = np.where((scores <= low) | (scores >= high) | np.isnan(scores), scores, 0.0)
    return with_score(frame, SCORE, tails)
