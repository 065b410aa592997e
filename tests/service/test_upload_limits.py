"""Issue 10: uploads are decoded in batches under max_upload_rows / max_upload_decoded_bytes (413 from the Parquet
metadata or while decoding, nothing stored), JSON batches obey max_upload_rows, /info shows the limits, and
labels the database cannot store (over MAX_LABEL_CHARS characters, NUL) are 422 on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from service_helpers import API, ClientFactory

from db_fixtures import IsolatedDatabase
from factor_engine.panel import validate_panel
from factor_engine.service import panel_data
from factor_engine.service.limits import MAX_LABEL_CHARS
from factor_engine.storage import connect

UPLOAD = f"{API}/data/panel/upload"
MEDIA = {
    "parquet": "application/vnd.apache.parquet",
    "arrow file": "application/vnd.apache.arrow.file",
    "arrow stream": "application/vnd.apache.arrow.stream",
}


def _stored(database: IsolatedDatabase) -> pl.DataFrame:
    store = connect(database.url, schema=database.schema)
    try:
        return store.load_panel()
    finally:
        store.close()


def _identical_rows(rows: int) -> pa.Table:
    """``rows`` copies of one (date, symbol, asset_returns) row: tiny once compressed, large once decoded."""
    return pa.table(
        {
            "date": pa.array([datetime.date(2024, 1, 2)] * rows, pa.date32()),
            "symbol": pa.array(["AAPL"] * rows, pa.string()),
            "asset_returns": pa.array([0.01] * rows, pa.float64()),
        }
    )


def _parquet(table: pa.Table, **options: object) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def _ipc(table: pa.Table, body_format: str, batch_rows: int, compression: str | None = None) -> bytes:
    buffer = io.BytesIO()
    opener = pa_ipc.new_file if body_format == "arrow file" else pa_ipc.new_stream
    options = pa_ipc.IpcWriteOptions(compression=compression)
    with opener(buffer, table.schema, options=options) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return buffer.getvalue()


def _body(frame: pl.DataFrame, body_format: str) -> bytes:
    buffer = io.BytesIO()
    if body_format == "parquet":
        frame.write_parquet(buffer)
    elif body_format == "arrow file":
        frame.write_ipc(buffer)
    else:
        frame.write_ipc_stream(buffer)
    return buffer.getvalue()


def _post(client: TestClient, body: bytes, body_format: str) -> tuple[int, object]:
    response = client.post(UPLOAD, content=body, headers={"Content-Type": MEDIA[body_format]})
    return response.status_code, response.json()


def _stored_rows(client: TestClient) -> int:
    rows: int = client.get(f"{API}/data/summary").json()["rows"]
    return rows


# --------------------------------------------------------------------------------------------------
# upload limits


def test_parquet_rows_above_the_limit_are_refused_from_the_metadata(app_client: ClientFactory) -> None:
    body = _parquet(_identical_rows(5_000), row_group_size=1_000)
    with app_client(max_upload_rows=4_999) as client:
        status, answer = _post(client, body, "parquet")
        assert status == 413
        assert answer == {
            "detail": "the upload decodes to 5,000 rows; the limit is 4,999 rows (FACTOR_ENGINE_MAX_UPLOAD_ROWS): "
            "upload the panel in several requests (ingestion upserts)"
        }
        assert _stored_rows(client) == 0


def test_parquet_uncompressed_bytes_above_the_limit_are_refused_from_the_metadata(app_client: ClientFactory) -> None:
    body = _parquet(_identical_rows(2_000), use_dictionary=False)
    metadata = pq.ParquetFile(io.BytesIO(body)).metadata
    declared = sum(
        metadata.row_group(group).column(column).total_uncompressed_size
        for group in range(metadata.num_row_groups)
        for column in range(metadata.num_columns)
    )
    assert declared > 2_000 * (4 + 8)  # plain encoding: at least the dates and the returns
    with app_client(max_upload_decoded_bytes=declared - 1) as client:
        status, answer = _post(client, body, "parquet")
        assert status == 413
        assert answer == {
            "detail": f"the upload decodes to {declared:,} bytes; the limit is {declared - 1:,} bytes "
            "(FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES): upload the panel in several requests (ingestion upserts)"
        }
        assert _stored_rows(client) == 0


def test_parquet_decoded_bytes_are_counted_while_decoding(app_client: ClientFactory) -> None:
    """Dictionary-encoded identical rows declare few uncompressed bytes in the metadata; the decoded batches
    are counted and decoding stops once they pass the limit."""
    table = _identical_rows(200_000)
    body = _parquet(table, row_group_size=50_000)
    metadata = pq.ParquetFile(io.BytesIO(body)).metadata
    declared = sum(
        metadata.row_group(group).column(column).total_uncompressed_size
        for group in range(metadata.num_row_groups)
        for column in range(metadata.num_columns)
    )
    decoded = table.nbytes  # 200,000 x (4 date + 8 return + 4 offset + 4 text) bytes
    assert declared < decoded // 4
    limit = decoded // 2
    with app_client(max_upload_decoded_bytes=limit) as client:
        status, answer = _post(client, body, "parquet")
        assert status == 413
        assert isinstance(answer, dict)
        assert answer["detail"].startswith(f"the upload decodes to more than {limit:,} bytes (")
        assert "decoded before stopping); the limit is" in answer["detail"]
        assert "(FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES)" in answer["detail"]
        assert _stored_rows(client) == 0


@pytest.mark.parametrize("compression", [None, "zstd"])
@pytest.mark.parametrize("body_format", ["arrow file", "arrow stream"])
def test_arrow_limits_are_decided_from_the_message_metadata(
    app_client: ClientFactory, body_format: str, compression: str | None
) -> None:
    """One compressed batch of identical rows: its rows and uncompressed bytes are read from the message
    metadata (and the buffers' length prefixes) before it is decompressed."""
    table = _identical_rows(300_000)
    body = _ipc(table, body_format, batch_rows=300_000, compression=compression)
    if compression:
        assert len(body) < table.nbytes // 5
    # 300,000 x 4 bytes of dates, 300,001 x 4 of text offsets, 300,000 x 4 of text ("AAPL"), 300,000 x 8 of returns
    decoded = 1_200_000 + 1_200_004 + 1_200_000 + 2_400_000
    with app_client(max_upload_rows=299_999) as client:
        status, answer = _post(client, body, body_format)
        assert status == 413
        assert answer == {
            "detail": "the upload decodes to 300,000 rows; the limit is 299,999 rows (FACTOR_ENGINE_MAX_UPLOAD_ROWS): "
            "upload the panel in several requests (ingestion upserts)"
        }
        assert _stored_rows(client) == 0
    with app_client(max_upload_decoded_bytes=decoded - 1) as client:
        status, answer = _post(client, body, body_format)
        assert status == 413
        assert answer == {
            "detail": f"the upload decodes to {decoded:,} bytes; the limit is {decoded - 1:,} bytes "
            "(FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES): upload the panel in several requests (ingestion upserts)"
        }
        assert _stored_rows(client) == 0


@pytest.fixture
def metadata_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow bodies whose metadata check passes whatever they hold (metadata can lie): only the running counts
    while decoding stand between them and memory."""
    monkeypatch.setattr(panel_data, "_check_ipc_file_metadata", lambda body, limits: None)
    monkeypatch.setattr(panel_data, "_check_ipc_stream_metadata", lambda body, limits: None)


@pytest.mark.usefixtures("metadata_unchecked")
@pytest.mark.parametrize("body_format", ["arrow file", "arrow stream"])
def test_arrow_rows_are_counted_while_decoding(app_client: ClientFactory, body_format: str) -> None:
    body = _ipc(_identical_rows(3_000), body_format, batch_rows=1_000)
    with app_client(max_upload_rows=1_500) as client:
        status, answer = _post(client, body, body_format)
        assert status == 413
        # the second batch passes the limit: two of the three are decoded
        assert answer == {
            "detail": "the upload decodes to more than 1,500 rows (2,000 decoded before stopping); the limit is "
            "1,500 rows (FACTOR_ENGINE_MAX_UPLOAD_ROWS): upload the panel in several requests (ingestion upserts)"
        }
        assert _stored_rows(client) == 0


@pytest.mark.usefixtures("metadata_unchecked")
@pytest.mark.parametrize("body_format", ["arrow file", "arrow stream"])
def test_arrow_decoded_bytes_are_counted_while_decoding(app_client: ClientFactory, body_format: str) -> None:
    table = _identical_rows(3_000)
    body = _ipc(table, body_format, batch_rows=1_000)
    batch_bytes = pa_ipc.open_stream(_ipc(table.slice(0, 1_000), "arrow stream", 1_000)).read_next_batch().nbytes
    with app_client(max_upload_decoded_bytes=batch_bytes) as client:
        status, answer = _post(client, body, body_format)
        assert status == 413
        assert answer == {
            "detail": f"the upload decodes to more than {batch_bytes:,} bytes ({2 * batch_bytes:,} decoded before "
            f"stopping); the limit is {batch_bytes:,} bytes (FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES): upload the "
            "panel in several requests (ingestion upserts)"
        }
        assert _stored_rows(client) == 0


@pytest.mark.parametrize("body_format", ["parquet", "arrow file", "arrow stream"])
def test_an_upload_at_the_limits_is_stored(
    app_client: ClientFactory, market_panel: pl.DataFrame, body_format: str
) -> None:
    body = _body(market_panel, body_format)
    decoded = market_panel.to_arrow().nbytes
    with app_client(max_upload_rows=market_panel.height - 1) as client:
        status, answer = _post(client, body, body_format)
        assert status == 413, answer
        assert _stored_rows(client) == 0
    with app_client(max_upload_rows=market_panel.height, max_upload_decoded_bytes=2 * decoded) as client:
        status, answer = _post(client, body, body_format)
        assert status == 200, answer
        assert isinstance(answer, dict) and answer["rows"] == answer["inserted"] == market_panel.height
        assert _stored_rows(client) == market_panel.height


def test_upload_decoded_in_many_batches_is_stored_whole(
    app_client: ClientFactory, tmp_path: Path, market_panel: pl.DataFrame
) -> None:
    sqlite = IsolatedDatabase("sqlite", f"sqlite:///{tmp_path / 'batches.db'}", None)
    body = _parquet(market_panel.to_arrow(), row_group_size=1_000)
    assert pq.ParquetFile(io.BytesIO(body)).metadata.num_row_groups == -(-market_panel.height // 1_000)
    with app_client(sqlite) as client:
        status, answer = _post(client, body, "parquet")
        assert status == 200, answer
    assert _stored(sqlite).equals(validate_panel(market_panel))


@pytest.mark.parametrize("body_format", ["parquet", "arrow file", "arrow stream"])
def test_a_corrupt_body_is_still_422(app_client: ClientFactory, market_panel: pl.DataFrame, body_format: str) -> None:
    body = _body(market_panel.head(500), body_format)
    truncated = body[: len(body) // 2]
    with app_client() as client:
        status, answer = _post(client, truncated, body_format)
        assert status == 422
        assert isinstance(answer, dict)
        assert answer["detail"].startswith(f"cannot read the request body as {body_format}: ")
        assert _stored_rows(client) == 0


@pytest.mark.parametrize("body_format", ["parquet", "arrow stream"])
def test_unknown_columns_are_refused_before_decoding(app_client: ClientFactory, body_format: str) -> None:
    table = _identical_rows(3_000).append_column("short_interest", pa.array([1.0] * 3_000))
    body = _parquet(table) if body_format == "parquet" else _ipc(table, body_format, 1_000)
    # the rows limit would refuse the body once decoded: the columns are checked first
    with app_client(max_upload_rows=2_999) as client:
        status, answer = _post(client, body, body_format)
        assert status == 422
        assert isinstance(answer, dict)
        assert "column(s) ['short_interest'] the store does not keep" in answer["detail"]


def test_json_rows_above_the_limit_are_413(app_client: ClientFactory) -> None:
    rows = [{"date": "2024-01-02", "symbol": symbol, "asset_returns": 0.01} for symbol in ("A", "B", "C")]
    with app_client(max_upload_rows=2) as client:
        response = client.post(f"{API}/data/panel", json={"rows": rows})
        assert response.status_code == 413
        assert response.json() == {
            "detail": "the request holds 3 rows; the limit is 2 rows (FACTOR_ENGINE_MAX_UPLOAD_ROWS): send the "
            "panel in several requests (ingestion upserts)"
        }
        assert _stored_rows(client) == 0
        response = client.post(f"{API}/data/panel", json={"rows": rows[:2]})
        assert response.status_code == 200, response.text
        assert _stored_rows(client) == 2


def test_info_shows_the_upload_limits(app_client: ClientFactory) -> None:
    with app_client(max_upload_rows=1234, max_upload_decoded_bytes=5678) as client:
        limits = client.get(f"{API}/info").json()["limits"]
    assert limits["max_upload_rows"] == 1234
    assert limits["max_upload_decoded_bytes"] == 5678
    with app_client() as client:
        limits = client.get(f"{API}/info").json()["limits"]
    assert (limits["max_upload_rows"], limits["max_upload_decoded_bytes"]) == (10_000_000, 1024 * 1024 * 1024)


def test_openapi_documents_the_413(app_client: ClientFactory) -> None:
    with app_client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "FACTOR_ENGINE_MAX_UPLOAD_ROWS" in paths[UPLOAD]["post"]["responses"]["413"]["description"]
    assert "FACTOR_ENGINE_MAX_UPLOAD_DECODED_BYTES" in paths[UPLOAD]["post"]["responses"]["413"]["description"]
    assert "FACTOR_ENGINE_MAX_UPLOAD_ROWS" in paths[f"{API}/data/panel"]["post"]["responses"]["413"]["description"]


# --------------------------------------------------------------------------------------------------
# labels the database cannot store

LONG = "A" * 10_000


def _row(symbol: str = "AAPL", sector: str = "Widgets") -> dict[str, object]:
    return {"date": "2024-01-02", "symbol": symbol, "asset_returns": 0.01, "sector": sector}


def _frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows).with_columns(pl.col("date").str.to_date())


def test_json_labels_over_the_limit_are_422(app_client: ClientFactory, database: IsolatedDatabase) -> None:
    with app_client(database) as client:
        for column, row in (("symbol", _row(symbol=LONG)), ("sector", _row(sector=LONG))):
            response = client.post(f"{API}/data/panel", json={"rows": [_row("MSFT"), row]})
            assert response.status_code == 422, response.text
            (detail,) = response.json()["detail"]
            assert detail["loc"] == ["body", "rows", 1, column]
            assert detail["type"] == "string_too_long"
            assert detail["ctx"] == {"max_length": MAX_LABEL_CHARS}
        too_long = client.post(f"{API}/data/panel", json={"rows": [_row(symbol="B" * (MAX_LABEL_CHARS + 1))]})
        assert too_long.status_code == 422
        assert _stored_rows(client) == 0


@pytest.mark.parametrize("column", ["symbol", "sector"])
def test_json_labels_with_nul_are_422(app_client: ClientFactory, database: IsolatedDatabase, column: str) -> None:
    row = _row(**{column: "A\x00B"})
    with app_client(database) as client:
        response = client.post(f"{API}/data/panel", json={"rows": [row]})
        assert response.status_code == 422, response.text
        shown = "'A\\x00B'" if column == "symbol" else "'AAPL'"
        assert response.json()["detail"] == (
            f"the database cannot take a value: {column} labels may not contain NUL (0x00) characters "
            f"(PostgreSQL text cannot hold them): 1 row(s) do, e.g. (2024-01-02, {shown})"
        )
        assert _stored_rows(client) == 0


@pytest.mark.parametrize("column", ["symbol", "sector"])
def test_uploaded_labels_over_the_limit_are_422(
    app_client: ClientFactory, database: IsolatedDatabase, column: str
) -> None:
    rows = [_row("MSFT"), _row(**{column: LONG}), _row("ZZZ", **({"sector": "B" * 300} if column == "sector" else {}))]
    if column == "symbol":
        rows[2]["symbol"] = "C" * 300
    with app_client(database) as client:
        status, answer = _post(client, _body(_frame(rows), "parquet"), "parquet")
        assert status == 422, answer
        shown = "'AAAAAAAAAAAAAAAAAAAA'..." if column == "symbol" else "'AAPL'"
        assert answer == {
            "detail": f"{column} labels may have at most {MAX_LABEL_CHARS} characters: 2 row(s) are longer, the "
            f"longest has 10,000 characters, e.g. (2024-01-02, {shown})"
        }
        assert _stored_rows(client) == 0


@pytest.mark.parametrize("column", ["symbol", "sector"])
def test_uploaded_labels_with_nul_are_422(app_client: ClientFactory, database: IsolatedDatabase, column: str) -> None:
    rows = [_row("MSFT"), _row(**{column: "A\x00B"})]
    with app_client(database) as client:
        status, answer = _post(client, _body(_frame(rows), "arrow file"), "arrow file")
        assert status == 422, answer
        assert isinstance(answer, dict)
        assert answer["detail"].startswith(
            f"the database cannot take a value: {column} labels may not contain NUL (0x00) characters"
        )
        assert _stored_rows(client) == 0


def test_labels_at_the_limit_round_trip(app_client: ClientFactory, database: IsolatedDatabase) -> None:
    symbol, sector = "S" * MAX_LABEL_CHARS, "Sector " + "x" * (MAX_LABEL_CHARS - 7)
    uploaded = _frame([_row("T" * MAX_LABEL_CHARS, sector)])
    with app_client(database) as client:
        response = client.post(f"{API}/data/panel", json={"rows": [_row(symbol, sector)]})
        assert response.status_code == 200, response.text
        status, answer = _post(client, _body(uploaded, "parquet"), "parquet")
        assert status == 200, answer
    stored = _stored(database).select("date", "symbol", "asset_returns", "sector")
    expected = validate_panel(pl.concat([_frame([_row(symbol, sector)]), uploaded]))
    assert stored.equals(expected.select("date", "symbol", "asset_returns", "sector"))
    assert stored["symbol"].str.len_chars().to_list() == [MAX_LABEL_CHARS, MAX_LABEL_CHARS]
