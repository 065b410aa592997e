"""Panel data: POST /data/panel (JSON rows), POST /data/panel/upload (Parquet / Arrow IPC body),
DELETE /data/panel, GET /data/summary, GET /data/symbols."""

from __future__ import annotations

import datetime
import tempfile
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from starlette.concurrency import run_in_threadpool

from factor_engine.service.deps import State
from factor_engine.service.fastjson import FastJSONRoute
from factor_engine.service.panel_data import (
    UPLOAD_FORMATS,
    UploadLimits,
    UploadTooLarge,
    delete_rows,
    ingest_rows,
    ingest_upload,
    upload_format,
)
from factor_engine.service.schemas import (
    DeletedResponse,
    IngestResponse,
    PanelRowsRequest,
    PanelSummaryResponse,
    SymbolsResponse,
)

router = APIRouter(prefix="/data", tags=["data"], route_class=FastJSONRoute)

# bodies up to this size stay in memory while streamed; larger ones spill to a temporary file
_SPOOL_BYTES = 64 * 1024 * 1024


def _too_large(error: UploadTooLarge) -> HTTPException:
    """The 413 answer of an upload or JSON batch above the settings' upload limits."""
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(error))


@router.post(
    "/panel",
    response_model=IngestResponse,
    responses={
        413: {
            "description": "more rows than FACTOR_ENGINE_MAX_UPLOAD_ROWS, or a body above FACTOR_ENGINE_MAX_BODY_BYTES"
        },
        422: {"description": "rows that fail the data contract, labels over 200 characters or holding NUL"},
    },
)
def post_panel(request: PanelRowsRequest, state: State) -> IngestResponse:
    """Upsert a small batch of panel rows (validated with the data contract), at most max_upload_rows rows."""
    try:
        result = ingest_rows(state.store(), request.rows, state.settings.max_upload_rows)
    except UploadTooLarge as error:
        raise _too_large(error) from error
    return IngestResponse(**asdict(result))


@router.delete(
    "/panel",
    response_model=DeletedResponse,
    responses={422: {"description": "no selector given, all=true combined with one, or start after end"}},
)
def delete_panel(
    state: State,
    symbol: Annotated[list[str] | None, Query(description="symbol whose rows to delete; repeat for several")] = None,
    start: Annotated[datetime.date | None, Query(description="first date deleted (inclusive)")] = None,
    end: Annotated[datetime.date | None, Query(description="last date deleted (inclusive)")] = None,
    all_rows: Annotated[
        bool, Query(alias="all", description="true: delete every row (alone, without a selector)")
    ] = False,
) -> DeletedResponse:
    """Delete stored panel rows, in one transaction: those of the symbols in [start, end] (any of the three
    selectors), or every row with all=true. Stored models are not touched."""
    return DeletedResponse(deleted=delete_rows(state.store(), symbol, start, end, all_rows))


@router.post(
    "/panel/upload",
    response_model=IngestResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in UPLOAD_FORMATS},
        }
    },
    responses={
        413: {
            "description": "body above FACTOR_ENGINE_MAX_BODY_BYTES, or a panel that decodes to more rows than "
            "FACTOR_ENGINE_MAX_UPLOAD_ROWS or more bytes than FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES (decided "
            "from the Parquet or Arrow metadata, else while decoding in batches: nothing is stored)"
        },
        415: {"description": "media type"},
        422: {
            "description": "an unreadable body, unknown columns, rows that fail the data contract, labels over "
            "200 characters or holding NUL"
        },
    },
)
async def upload_panel(request: Request, state: State) -> IngestResponse:
    """Upsert a panel sent as the raw body: Parquet (application/vnd.apache.parquet or
    application/octet-stream) or Arrow IPC (application/vnd.apache.arrow.file / .stream), decoded in batches
    under the settings' max_upload_rows and max_upload_decoded_bytes (413 above either)."""
    body_format = upload_format(request.headers.get("content-type"))
    if not body_format:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"unsupported Content-Type {request.headers.get('content-type')!r}; use one of {sorted(UPLOAD_FORMATS)}",
        )
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as body:
        async for chunk in request.stream():
            body.write(chunk)
        if body.tell() == 0:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the request body is empty: send the panel file")
        body.seek(0)
        limits = UploadLimits(state.settings.max_upload_rows, state.settings.max_upload_decoded_bytes)
        try:
            result = await run_in_threadpool(lambda: ingest_upload(state.store(), body, body_format, limits))
        except UploadTooLarge as error:
            raise _too_large(error) from error
    return IngestResponse(**asdict(result))


@router.get("/summary", response_model=PanelSummaryResponse)
def panel_summary(state: State) -> PanelSummaryResponse:
    """Rows, symbols, date range and the columns holding values."""
    summary = state.store().panel_summary()
    return PanelSummaryResponse(
        rows=summary.rows,
        symbols=summary.symbols,
        first_date=summary.first_date,
        last_date=summary.last_date,
        columns=list(summary.columns),
    )


@router.get("/symbols", response_model=SymbolsResponse)
def symbols(state: State) -> SymbolsResponse:
    """Every stored symbol, sorted."""
    stored = state.store().symbols()
    return SymbolsResponse(count=len(stored), symbols=stored)
