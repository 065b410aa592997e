"""Style factor scores of rows posted as JSON: validated with the data contract, computed by the library."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from factor_engine.panel import DATE, MARKET_CAP, RETURNS, SYMBOL, VALUE_FEATURES, validate_panel
from factor_engine.service.errors import InputError
from factor_engine.service.schemas import MomentumRequest, SizeRequest, ValueRequest
from factor_engine.styles import momentum, size, value
from factor_engine.styles.momentum import SCORE as MOMENTUM_SCORE
from factor_engine.styles.size import SCORE as SIZE_SCORE
from factor_engine.styles.value import SCORE as VALUE_SCORE

__all__ = ["STYLE_ENDPOINTS", "StyleEndpoint", "scores_json"]

ScoreRequest = MomentumRequest | ValueRequest | SizeRequest


@dataclass(frozen=True)
class StyleEndpoint:
    """A factor-score endpoint: the library function, its score column, its input columns and parameters."""

    function: Callable[..., pl.DataFrame]
    score: str
    inputs: tuple[str, ...]
    parameters: tuple[str, ...]


STYLE_ENDPOINTS: dict[str, StyleEndpoint] = {
    "momentum": StyleEndpoint(
        momentum, MOMENTUM_SCORE, (RETURNS,), ("trailing_days", "half_life", "lag", "winsor_factor")
    ),
    "value": StyleEndpoint(value, VALUE_SCORE, VALUE_FEATURES, ("winsorize_features",)),
    "size": StyleEndpoint(size, SIZE_SCORE, (MARKET_CAP,), ("lower_decile", "upper_decile")),
}


def rows_frame(rows: Sequence[Any], columns: Sequence[str]) -> pl.DataFrame:
    """A frame of ``date, symbol`` and ``columns`` (Float64) from parsed row models."""
    data: dict[str, list[Any]] = {DATE: [row.date for row in rows], SYMBOL: [row.symbol for row in rows]}
    for column in columns:
        data[column] = [getattr(row, column) for row in rows]
    schema = {DATE: pl.Date, SYMBOL: pl.String, **dict.fromkeys(columns, pl.Float64)}
    return pl.DataFrame(data, schema=schema)


def scores_json(style: str, request: ScoreRequest) -> bytes:
    """The JSON response ``{"factor", "rows", "scores": [{"symbol", "date", "score"}]}`` of ``style`` on the
    request's rows (sorted by date, symbol; score null where the library gives null or NaN).

    Raises PanelError (duplicate rows, ...) or InputError (parameters the library rejects), both 422.
    """
    endpoint = STYLE_ENDPOINTS[style]
    panel = validate_panel(
        rows_frame(request.data, endpoint.inputs), require=(DATE, SYMBOL, *endpoint.inputs), sectors=None
    )
    parameters = {name: getattr(request, name) for name in endpoint.parameters}
    try:
        scores = endpoint.function(panel, **parameters)
    except ValueError as error:
        raise InputError(f"{style}: {error}") from error
    records = (
        scores.sort(DATE, SYMBOL)
        .select(
            pl.col(SYMBOL),
            pl.col(DATE).cast(pl.String),
            pl.col(endpoint.score).cast(pl.Float64).fill_nan(None).alias("score"),
        )
        .to_dicts()
    )
    return json.dumps({"factor": endpoint.score, "rows": len(records), "scores": records}).encode()
