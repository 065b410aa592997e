"""Panel ingestion over HTTP (JSON rows, Parquet and Arrow IPC bodies) on SQLite and PostgreSQL, the body
size limit, and 503 when the database is unreachable."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from service_helpers import API, ARBITRARY_SECTORS, ClientFactory, json_rows, relabel_sectors

from db_fixtures import IsolatedDatabase
from factor_engine.panel import GICS_SECTORS, SEED_SECTORS, validate_panel
from factor_engine.storage import connect

PANEL_COLUMNS = ["asset_returns", "market_cap", "sector", "book_price", "sales_price", "cf_price"]


def _stored(database: IsolatedDatabase) -> pl.DataFrame:
    store = connect(database.url, schema=database.schema)
    try:
        return store.load_panel()
    finally:
        store.close()


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def test_json_rows_are_stored_and_summarized(
    app_client: ClientFactory, database: IsolatedDatabase, market_panel: pl.DataFrame
) -> None:
    batch = market_panel.head(500)
    with app_client(database) as client:
        response = client.post(f"{API}/data/panel", json={"rows": json_rows(batch, PANEL_COLUMNS)})
        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["rows"], result["inserted"], result["updated"]) == (500, 500, 0)
        assert result["symbols"] == batch["symbol"].n_unique()
        assert result["first_date"] == str(batch["date"].min())
        assert result["last_date"] == str(batch["date"].max())
        # only returns for the same rows: updated, fundamentals kept
        again = client.post(f"{API}/data/panel", json={"rows": json_rows(batch.head(10), ["asset_returns"])}).json()
        assert (again["inserted"], again["updated"]) == (0, 10)
        summary = client.get(f"{API}/data/summary").json()
        symbols = client.get(f"{API}/data/symbols").json()
    assert summary["rows"] == 500
    assert summary["symbols"] == batch["symbol"].n_unique()
    assert summary["first_date"] == str(batch["date"].min()) and summary["last_date"] == str(batch["date"].max())
    assert set(summary["columns"]) == set(PANEL_COLUMNS)
    assert symbols == {"count": batch["symbol"].n_unique(), "symbols": sorted(batch["symbol"].unique().to_list())}
    assert _stored(database).select("date", "symbol", *PANEL_COLUMNS).equals(validate_panel(batch))


_MEDIA = {
    "parquet": "application/vnd.apache.parquet",
    "octet-stream": "application/octet-stream",
    "arrow file": "application/vnd.apache.arrow.file",
    "arrow stream": "application/vnd.apache.arrow.stream",
}


def _upload(client: TestClient, panel: pl.DataFrame, body_format: str) -> dict[str, object]:
    buffer = io.BytesIO()
    if body_format in ("parquet", "octet-stream"):
        panel.write_parquet(buffer)
    elif body_format == "arrow file":
        panel.write_ipc(buffer)
    else:
        panel.write_ipc_stream(buffer)
    response = client.post(
        f"{API}/data/panel/upload", content=buffer.getvalue(), headers={"Content-Type": _MEDIA[body_format]}
    )
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


@pytest.mark.parametrize("body_format", ["parquet", "arrow file"])
def test_upload_on_both_backends(
    app_client: ClientFactory, database: IsolatedDatabase, market_panel: pl.DataFrame, body_format: str
) -> None:
    with app_client(database) as client:
        result = _upload(client, market_panel, body_format)
    assert result["rows"] == result["inserted"] == market_panel.height
    assert _stored(database).equals(validate_panel(market_panel))


@pytest.mark.parametrize("body_format", ["octet-stream", "arrow stream"])
def test_upload_other_media_types(
    app_client: ClientFactory, tmp_path: Path, market_panel: pl.DataFrame, body_format: str
) -> None:
    sqlite = IsolatedDatabase("sqlite", f"sqlite:///{tmp_path / 'upload.db'}", None)
    with app_client(sqlite) as client:
        result = _upload(client, market_panel, body_format)
        again = _upload(client, market_panel.head(100), body_format)
    assert result["inserted"] == market_panel.height
    assert (again["inserted"], again["updated"]) == (0, 100)
    assert _stored(sqlite).equals(validate_panel(market_panel))


def test_upload_errors(app_client: ClientFactory, market_panel: pl.DataFrame) -> None:
    with app_client() as client:
        url = f"{API}/data/panel/upload"
        response = client.post(url, content=b"date,symbol\n", headers={"Content-Type": "text/csv"})
        assert response.status_code == 415
        assert "unsupported Content-Type 'text/csv'" in response.json()["detail"]
        response = client.post(url, content=b"not parquet", headers={"Content-Type": "application/vnd.apache.parquet"})
        assert response.status_code == 422
        assert response.json()["detail"].startswith("cannot read the request body as parquet")
        response = client.post(url, content=b"", headers={"Content-Type": "application/vnd.apache.parquet"})
        assert response.status_code == 422
        assert "the request body is empty" in response.json()["detail"]
        bad = market_panel.head(20).with_columns(
            pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("  ")).otherwise(pl.col("sector")).alias("sector")
        )
        response = client.post(url, content=_parquet(bad), headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 422
        date, symbol = bad.row(7, named=True)["date"], bad.row(7, named=True)["symbol"]
        assert response.json()["detail"] == (
            f"sector must be a non-empty label (not null or blank): 1 bad row, e.g. ({date}, {symbol})"
        )
        extra = market_panel.head(5).with_columns(pl.lit(1.0).alias("short_interest"))
        response = client.post(url, content=_parquet(extra), headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 422
        assert "column(s) ['short_interest'] the store does not keep" in response.json()["detail"]
        assert "'volume', 'shares_outstanding', 'turnover', 'earnings_price'" in response.json()["detail"]
        negative = market_panel.head(5).with_columns(pl.lit(-1.0).alias("turnover"))
        response = client.post(url, content=_parquet(negative), headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 422
        assert response.json()["detail"].startswith("turnover must not be negative (null is allowed): 5 bad rows")
        assert client.get(f"{API}/data/summary").json()["rows"] == 0  # nothing half-stored


@pytest.mark.parametrize("taxonomy", ["seed", "gics", "arbitrary"])
def test_any_sector_labels_are_accepted_and_stored(
    app_client: ClientFactory, database: IsolatedDatabase, market_panel: pl.DataFrame, taxonomy: str
) -> None:
    """The seed's sector names, GICS names and labels of no taxonomy are all the user's data: JSON rows and an
    upload store them as sent, and /factors/list lists them."""
    labels = {"seed": SEED_SECTORS, "gics": GICS_SECTORS, "arbitrary": ARBITRARY_SECTORS}[taxonomy]
    panel = relabel_sectors(market_panel, labels)
    dates = panel["date"].unique().sort()
    as_json, as_upload = panel.filter(pl.col("date") <= dates[4]), panel.filter(pl.col("date") > dates[4])
    with app_client(database) as client:
        response = client.post(f"{API}/data/panel", json={"rows": json_rows(as_json, PANEL_COLUMNS)})
        assert response.status_code == 200, response.text
        assert response.json()["inserted"] == as_json.height
        assert _upload(client, as_upload, "parquet")["inserted"] == as_upload.height
        listed = [sector["name"] for sector in client.get(f"{API}/factors/list").json()["sectors"]]
    assert listed == sorted(set(labels))
    stored = _stored(database)
    assert stored.equals(validate_panel(panel))
    assert sorted(stored["sector"].unique().to_list()) == sorted(set(labels))


def test_json_panel_rows_errors(app_client: ClientFactory) -> None:
    with app_client() as client:
        rows = [
            {"date": "2024-01-02", "symbol": "A", "asset_returns": 0.01},
            {"date": "2024-01-02", "symbol": "A", "asset_returns": 0.02},
        ]
        response = client.post(f"{API}/data/panel", json={"rows": rows})
        assert response.status_code == 422
        assert "(date, symbol) must be unique" in response.json()["detail"]
        rows = [{"date": "2024-01-02", "symbol": "A", "short_interest": 3}]
        response = client.post(f"{API}/data/panel", json={"rows": rows})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "rows", 0, "short_interest"]
        assert response.json()["detail"][0]["msg"] == "Extra inputs are not permitted"
        response = client.post(
            f"{API}/data/panel", json={"rows": [{"date": "2024-01-02", "symbol": "A", "volume": -3}]}
        )
        assert response.status_code == 422
        assert response.json()["detail"] == (
            "volume must not be negative (null is allowed): 1 bad row, e.g. (2024-01-02, A) = -3.0"
        )
        rows = [{"date": "2024-01-02", "symbol": "A", "asset_returns": -1.5}]
        response = client.post(f"{API}/data/panel", json={"rows": rows})
        assert response.status_code == 422
        assert "asset_returns must be finite and > -1" in response.json()["detail"]
        assert "(2024-01-02, A)" in response.json()["detail"]
        rows = [
            {"date": "2024-01-02", "symbol": "A", "sector": "Widgets"},
            {"date": "2024-01-02", "symbol": "B", "sector": ""},
        ]
        response = client.post(f"{API}/data/panel", json={"rows": rows})
        assert response.status_code == 422
        assert response.json()["detail"] == (
            "sector must be a non-empty label (not null or blank): 1 bad row, e.g. (2024-01-02, B)"
        )
        assert client.get(f"{API}/data/summary").json()["rows"] == 0


def _chunks(size: int, chunk: int = 4096) -> Iterator[bytes]:
    for _ in range(size // chunk):
        yield b"x" * chunk


def test_body_size_limit(app_client: ClientFactory) -> None:
    with app_client(max_body_bytes=10_000) as client:
        body = b"{" + b" " * 20_000 + b"}"
        response = client.post(f"{API}/factors/momentum", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert "request body too large: the limit is 10,000 bytes" in response.json()["detail"]
        # streamed without Content-Length: counted while read
        response = client.post(
            f"{API}/data/panel/upload", content=_chunks(40_000), headers={"Content-Type": "application/octet-stream"}
        )
        assert response.status_code == 413
        assert "the limit is 10,000 bytes" in response.json()["detail"]
        response = client.post(
            f"{API}/factors/momentum", content=_chunks(40_000), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        small = client.post(
            f"{API}/factors/momentum", json={"data": [{"symbol": "A", "date": "2024-01-01", "asset_returns": 0.0}]}
        )
        assert small.status_code == 200


def test_database_unreachable_is_503(app_client: ClientFactory) -> None:
    closed = IsolatedDatabase("postgresql", "postgresql+psycopg://postgres@127.0.0.1:1/test", None)
    with app_client(closed) as client:
        health = client.get(f"{API}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        # what is down, without the user, host, port or database name (/health needs no key)
        assert health.json()["database"] == "unavailable (StoreUnavailable; details in the server log)"
        assert not any(secret in health.text for secret in ("postgres", "127.0.0.1", ":1", "test"))
        for method, path, body in (
            ("GET", "/data/summary", None),
            ("GET", "/models", None),
            ("GET", "/jobs/abc", None),
            ("POST", "/risk-model/create", {}),
            ("POST", "/data/panel", {"rows": [{"date": "2024-01-02", "symbol": "A"}]}),
            ("DELETE", "/data/panel?symbol=A", None),
            ("GET", "/factors/list", None),
        ):
            response = client.request(method, f"{API}{path}", json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["detail"].startswith("database unavailable: ")
        # the score endpoints need no database
        rows = [{"symbol": "A", "date": "2024-01-01", "asset_returns": 0.0}]
        assert client.post(f"{API}/factors/momentum", json={"data": rows}).status_code == 200


def test_health_ok(app_client: ClientFactory, database: IsolatedDatabase) -> None:
    with app_client(database) as client:
        response = client.get(f"{API}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "not configured"}


def test_delete_panel_rows(app_client: ClientFactory, database: IsolatedDatabase, market_panel: pl.DataFrame) -> None:
    dates = market_panel["date"].unique().sort()
    start, end = dates[10], dates[19]
    with app_client(database) as client:
        assert _upload(client, market_panel, "parquet")["inserted"] == market_panel.height
        url = f"{API}/data/panel"
        one = client.delete(url, params={"symbol": "S00001"})
        assert one.status_code == 200, one.text
        assert one.json() == {"deleted": 300}  # its 300 days
        both = client.delete(url, params=[("symbol", "S00002"), ("symbol", "S00003"), ("start", start), ("end", end)])
        assert both.json() == {"deleted": 2 * 10}
        window = client.delete(url, params={"start": str(dates[-5])})
        kept = market_panel.filter(
            pl.col("symbol") != "S00001",
            ~(pl.col("symbol").is_in(["S00002", "S00003"]) & pl.col("date").is_between(start, end)),
        )
        assert window.json() == {"deleted": kept.filter(pl.col("date") >= dates[-5]).height}
        kept = kept.filter(pl.col("date") < dates[-5])
        assert client.get(f"{API}/data/summary").json()["rows"] == kept.height
        assert _stored(database).equals(validate_panel(kept))
        assert client.delete(url, params={"symbol": "NOPE"}).json() == {"deleted": 0}
        everything = client.delete(url, params={"all": "true"})
        assert everything.json() == {"deleted": kept.height}
        assert client.get(f"{API}/data/summary").json()["rows"] == 0


def test_delete_panel_needs_a_selector(app_client: ClientFactory, market_panel: pl.DataFrame) -> None:
    with app_client() as client:
        _upload(client, market_panel.head(120), "parquet")
        url = f"{API}/data/panel"
        for params, message in (
            ({}, "say which panel rows to delete: symbol (repeatable), start and/or end (YYYY-MM-DD, inclusive), "),
            ({"all": "false"}, "say which panel rows to delete"),
            ({"all": "true", "symbol": "S00001"}, "all=true deletes every row: do not combine it with symbol"),
            ({"all": "true", "start": "2023-01-01"}, "all=true deletes every row: do not combine it with start"),
            ({"symbol": " "}, "symbol is empty: give a symbol (?symbol=AAPL, repeatable)"),
            ({"start": "2023-02-01", "end": "2023-01-01"}, "start 2023-02-01 is after end 2023-01-01"),
        ):
            response = client.delete(url, params=params)
            assert response.status_code == 422, params
            assert response.json()["detail"].startswith(message), response.json()
        response = client.delete(url, params={"start": "2023-13-01"})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "start"]
        assert client.get(f"{API}/data/summary").json()["rows"] == 120  # nothing deleted


def test_text_postgresql_cannot_hold_is_422_not_500(
    app_client: ClientFactory, postgres_database: IsolatedDatabase
) -> None:
    with app_client(postgres_database) as client:
        rows = [{"date": "2024-01-02", "symbol": "A\x00", "asset_returns": 0.01, "sector": "Widgets"}]
        response = client.post(f"{API}/data/panel", json={"rows": rows})
        assert response.status_code == 422
        assert response.json()["detail"].startswith("the database cannot take a value: ")
        response = client.delete(f"{API}/data/panel", params={"symbol": "A\x00"})
        assert response.status_code == 422
        assert response.json()["detail"] == (
            "the database cannot take a value: PostgreSQL text fields cannot contain NUL (0x00) bytes"
        )
        assert client.get(f"{API}/data/summary").json()["rows"] == 0
