"""Style factor scores of rows posted as JSON: validated with the data contract, computed by the library.

The style kernels work on dense (dates × symbols) arrays, so what a request costs grows with the cells its rows
span, not with its rows: 20,000 rows on 20,000 dates of 20,000 symbols (one row each, 1.3 MB of JSON) span 400
million cells, 13 GB and 40 s of momentum. A request whose rows span more than the settings'
``max_score_cells`` is refused before anything is computed."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import polars as pl
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from factor_engine.config import StylesConfig
from factor_engine.panel import DATE, MARKET_CAP, RETURNS, SYMBOL, VALUE_FEATURES, validate_panel
from factor_engine.service.errors import InputError, ResourceNotFound
from factor_engine.service.limits import build_config_violations
from factor_engine.service.panel_data import rows_frame
from factor_engine.service.schemas import (
    MomentumRequest,
    MomentumRow,
    PanelRow,
    SizeRequest,
    SizeRow,
    StyleScoresRequest,
    ValueRequest,
    ValueRow,
)
from factor_engine.styles import available_styles, compute_styles, get_style, momentum, size, value
from factor_engine.styles.momentum import SCORE as MOMENTUM_SCORE
from factor_engine.styles.size import SCORE as SIZE_SCORE
from factor_engine.styles.value import SCORE as VALUE_SCORE

__all__ = ["STYLE_ENDPOINTS", "StyleEndpoint", "check_cells", "scores_json", "style_scores_json", "validated_rows"]

ScoreRequest = MomentumRequest | ValueRequest | SizeRequest

# rows validated at a time (1-2 ms): between batches the event loop gets the interpreter back
_ROWS_PER_BATCH = 1_000


@dataclass(frozen=True)
class StyleEndpoint:
    """A factor-score endpoint: the library function, its score column, its input columns and parameters."""

    function: Callable[..., pl.DataFrame]
    score: str
    inputs: tuple[str, ...]
    parameters: tuple[str, ...]
    row: type[BaseModel]


STYLE_ENDPOINTS: dict[str, StyleEndpoint] = {
    "momentum": StyleEndpoint(
        momentum, MOMENTUM_SCORE, (RETURNS,), ("trailing_days", "half_life", "lag", "winsor_factor"), MomentumRow
    ),
    "value": StyleEndpoint(value, VALUE_SCORE, VALUE_FEATURES, ("winsorize_features",), ValueRow),
    "size": StyleEndpoint(size, SIZE_SCORE, (MARKET_CAP,), ("lower_decile", "upper_decile"), SizeRow),
}


def check_cells(frame: pl.DataFrame, max_cells: int) -> None:
    """InputError (422) when the rows of ``frame`` span more than ``max_cells`` (date, symbol) cells (the dense
    arrays the kernels work on), naming the dates, symbols and the setting."""
    dates, symbols = frame.select(pl.col(DATE).n_unique(), pl.col(SYMBOL).n_unique()).row(0)
    if dates * symbols > max_cells:
        raise InputError(
            f"the {frame.height:,} rows span {dates:,} dates × {symbols:,} symbols = {dates * symbols:,} (date, "
            f"symbol) cells; the limit is {max_cells:,} (FACTOR_ENGINE_MAX_SCORE_CELLS): the scores are computed "
            "on the dense (dates × symbols) grid, so post fewer dates or symbols per request"
        )


def scores_json(style: str, request: ScoreRequest, max_cells: int) -> bytes:
    """The JSON response ``{"factor", "rows", "scores": [{"symbol", "date", "score"}]}`` of ``style`` on the
    request's rows (sorted by date, symbol; score null where the library gives null or NaN).

    Raises PanelError (duplicate rows, ...) or InputError (parameters the library rejects, rows spanning more
    than ``max_cells`` (date, symbol) cells), both 422.
    """
    endpoint = STYLE_ENDPOINTS[style]
    frame = rows_frame(validated_rows(request.data, endpoint.row))
    check_cells(frame, max_cells)
    panel = validate_panel(frame, require=(DATE, SYMBOL, *endpoint.inputs), sectors=None)
    parameters = {name: getattr(request, name) for name in endpoint.parameters}
    try:
        scores = endpoint.function(panel, **parameters)
    except ValueError as error:
        raise InputError(f"{style}: {error}") from error
    return _response(scores, endpoint.score)


def style_scores_json(
    style: str, request: StyleScoresRequest, max_cells: int, limits: dict[str, float] | None = None
) -> bytes:
    """:func:`scores_json` of any registered style (the USE4 styles, custom ones): the request's rows in the data
    contract's columns and the style's keyword parameters (``params``), checked against the style's signature
    and the service's bounds (``limits`` overriding :data:`~factor_engine.service.limits.BUILD_CONFIG_BOUNDS`'
    highest values, as for a build). The raw scores of the library (no missing exposure filled).

    Raises ResourceNotFound (404) for a style that is not registered; PanelError, ConfigError or InputError
    (422) for rows, parameters or inputs the style cannot use.
    """
    try:
        factor = get_style(style)
    except KeyError:
        known = ", ".join(sorted(s.name for s in available_styles()))
        raise ResourceNotFound(f"no style {style[:100]!r}; the registered styles are {known}") from None
    styles = StylesConfig(names=(factor.name,), params={factor.name: request.params})
    effective = styles.effective_params()[factor.name]
    problems = build_config_violations({"styles": {"params": {factor.name: effective}}}, limits)
    if problems:
        raise InputError("; ".join(p.replace("config: [styles.params.", "params: [") for p in problems))
    frame = rows_frame(validated_rows(request.data, PanelRow))
    check_cells(frame, max_cells)
    panel = validate_panel(frame, require=(DATE, SYMBOL), sectors=None)
    try:
        scores = compute_styles(panel, [factor.name], params={factor.name: request.params})
    except (ValueError, TypeError) as error:
        message = str(error)
        raise InputError(message if repr(factor.name) in message else f"{factor.name}: {message}") from error
    return _response(scores, factor.score)


_Row = TypeVar("_Row", bound=BaseModel)


@functools.cache
def _list_of(row: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[row])  # type: ignore[valid-type]


def validated_rows(data: Sequence[dict[str, Any]], row: type[_Row]) -> list[_Row]:
    """A request's ``data`` validated as ``row`` models in batches of ``_ROWS_PER_BATCH`` (in the endpoint's
    worker thread: between batches the event loop can run). RequestValidationError (422) with every batch's
    errors, each located at ``body → data → row → field`` as FastAPI locates them."""
    adapter = _list_of(row)
    rows: list[_Row] = []
    errors: list[dict[str, Any]] = []
    for start in range(0, len(data), _ROWS_PER_BATCH):
        try:
            rows.extend(adapter.validate_python(data[start : start + _ROWS_PER_BATCH]))
        except ValidationError as error:
            errors.extend(
                {**e, "loc": ("body", "data", start + int(e["loc"][0]), *e["loc"][1:])} for e in error.errors()
            )
    if errors:
        raise RequestValidationError(errors)
    return rows


def _response(scores: pl.DataFrame, score: str) -> bytes:
    records = (
        scores.sort(DATE, SYMBOL)
        .select(
            pl.col(SYMBOL),
            pl.col(DATE).cast(pl.String),
            pl.col(score).cast(pl.Float64).fill_nan(None).alias("score"),
        )
        .to_dicts()
    )
    return json.dumps({"factor": score, "rows": len(records), "scores": records}).encode()
