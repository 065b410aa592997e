"""``factor-engine ingest`` and ``delete-panel`` on a SQLite file, and ``factor-engine serve`` in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from service_helpers import API, ARBITRARY_SECTORS, relabel_sectors

from cli_runner import invoke
from db_fixtures import IsolatedDatabase
from factor_engine.panel import GICS_SECTORS, SEED_SECTORS, validate_panel
from factor_engine.storage import connect
from stored_panels import use4_panel


def test_ingest_parquet_into_sqlite(
    tmp_path: Path, market_panel: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    panel_path = tmp_path / "panel.parquet"
    market_panel.write_parquet(panel_path)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("FACTOR_ENGINE_DATABASE_URL", url)
    monkeypatch.delenv("FACTOR_ENGINE_DATABASE_SCHEMA", raising=False)
    code, out, err = invoke("ingest", str(panel_path))
    assert code == 0, err
    first, last = market_panel["date"].min(), market_panel["date"].max()
    text = " ".join(out.split())
    assert f"ingested: {market_panel.height:,} rows ({market_panel.height:,} inserted, 0 updated)" in text
    assert f"{market_panel['symbol'].n_unique()} symbols, {first} → {last}" in text
    assert "seconds" in text
    store = connect(url)
    try:
        summary = store.panel_summary()
        assert (summary.rows, summary.symbols, summary.first_date, summary.last_date) == (
            market_panel.height,
            market_panel["symbol"].n_unique(),
            first,
            last,
        )
        assert store.load_panel().equals(validate_panel(market_panel))
    finally:
        store.close()
    # again from CSV with only returns for 10 rows: updated, nothing inserted
    csv_path = tmp_path / "returns.csv"
    market_panel.head(10).select("date", "symbol", "asset_returns").write_csv(csv_path)
    code, out, err = invoke("ingest", str(csv_path), "--database-url", url)
    assert code == 0, err
    assert "10 rows (0 inserted, 10 updated)" in " ".join(out.split())


def test_ingest_use4_csv_on_both_backends(tmp_path: Path, database: IsolatedDatabase) -> None:
    """A CSV with the USE4 trading and fundamental columns: every column stored, read back exactly."""
    panel = use4_panel(30, 60, seed=2)
    panel = validate_panel(panel.with_columns((pl.col("volume") / pl.col("shares_outstanding")).alias("turnover")))
    csv_path = tmp_path / "use4.csv"
    panel.write_csv(csv_path)
    schema = ["--schema", database.schema] if database.schema else []
    code, out, err = invoke("ingest", str(csv_path), "--database-url", database.url, *schema)
    assert code == 0, err
    text = " ".join(out.split())
    assert f"ingested: {panel.height:,} rows ({panel.height:,} inserted, 0 updated)" in text
    assert f"columns: {', '.join(panel.columns[2:])}" in text
    assert "volume, shares_outstanding, turnover, earnings_price" in text
    store = connect(database.url, schema=database.schema)
    try:
        assert_frame_equal(store.load_panel(), panel, check_exact=True)
    finally:
        store.close()


def test_ingest_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,symbol,asset_returns\n2024-01-02,A,0.1\n2024-01-02,A,0.2\n")
    code, _, err = invoke("ingest", str(bad), "--database-url", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 1
    assert "error: (date, symbol) must be unique" in " ".join(err.split())
    code, _, err = invoke(
        "ingest", str(tmp_path / "missing.parquet"), "--database-url", f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert code == 1
    assert "no such file" in err


@pytest.mark.parametrize("taxonomy", ["seed", "gics", "arbitrary"])
def test_ingest_accepts_any_sector_labels(tmp_path: Path, market_panel: pl.DataFrame, taxonomy: str) -> None:
    labels = {"seed": SEED_SECTORS, "gics": GICS_SECTORS, "arbitrary": ARBITRARY_SECTORS}[taxonomy]
    panel = relabel_sectors(market_panel, labels)
    panel_path = tmp_path / "panel.csv"
    panel.write_csv(panel_path)
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    code, out, err = invoke("ingest", str(panel_path), "--database-url", url)
    assert code == 0, err
    assert f"ingested: {panel.height:,} rows" in " ".join(out.split())
    store = connect(url)
    try:
        assert [sector.sector for sector in store.panel_sectors()] == sorted(set(labels))
        assert store.load_panel().equals(validate_panel(panel))
    finally:
        store.close()
    blank = tmp_path / "blank.csv"
    blank.write_text('date,symbol,asset_returns,sector\n2024-01-02,A,0.01,Widgets\n2024-01-02,B,0.02," "\n')
    code, _, err = invoke("ingest", str(blank), "--database-url", url)
    assert code == 1
    assert "error: sector must be a non-empty label (not null or blank): 1 bad row, e.g. (2024-01-02, B)" in " ".join(
        err.split()
    )


def test_delete_panel_command(tmp_path: Path, market_panel: pl.DataFrame) -> None:
    url = f"sqlite:///{tmp_path / 'delete.db'}"
    store = connect(url)
    try:
        store.ingest_panel(validate_panel(market_panel))
    finally:
        store.close()
    dates = market_panel["date"].unique().sort()
    start, end = dates[10], dates[19]
    code, out, err = invoke(
        "delete-panel", "--symbol", "S00001", "--symbol", "S00002", "--start", str(start), "--end", str(end),
        "--database-url", url,
    )  # fmt: skip
    assert code == 0, err
    assert "deleted: 20 panel rows" in " ".join(out.split())
    assert f"store: sqlite:///{tmp_path / 'delete.db'}" in "".join(out.split("\n"))
    code, out, err = invoke("delete-panel", "--symbol", "S00003", "--database-url", url)
    assert "deleted: 300 panel rows" in " ".join(out.split())
    kept = market_panel.filter(
        pl.col("symbol") != "S00003",
        ~(pl.col("symbol").is_in(["S00001", "S00002"]) & pl.col("date").is_between(start, end)),
    )
    store = connect(url)
    try:
        assert store.load_panel().equals(validate_panel(kept))
    finally:
        store.close()
    for args, message in (
        ((), "error: say which rows to delete: --symbol (repeatable), --start and/or --end, or --all"),
        (("--all", "--symbol", "S00004"), "error: --all deletes every row: do not combine it with --symbol"),
        (("--start", "2023-02-30"), "error: --start must be a date YYYY-MM-DD, got '2023-02-30'"),
    ):
        code, _, err = invoke("delete-panel", *args, "--database-url", url)
        assert code == 1, args
        assert message in " ".join(err.split())
    code, out, err = invoke("delete-panel", "--all", "--database-url", url)
    assert code == 0, err
    assert f"deleted: {kept.height:,} panel rows" in " ".join(out.split())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_health(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "FACTOR_ENGINE_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
    for name in ("REDIS_URL", "FACTOR_ENGINE_API_KEY", "FACTOR_ENGINE_DATABASE_SCHEMA"):
        env.pop(name, None)
    command = [str(Path(sys.executable).parent / "factor-engine"), "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{API}/health", timeout=2) as response:
                    assert response.status == 200
                    assert json.loads(response.read()) == {"status": "ok", "database": "ok", "cache": "not configured"}
                    break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    raise AssertionError(f"factor-engine serve did not answer /health: {output}") from None
                time.sleep(0.2)
        assert (tmp_path / "serve.db").is_file()  # the configured store was opened (and migrated)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    # uvicorn shuts down gracefully on SIGTERM (lifespan shutdown ran), then re-raises the signal
    assert process.returncode in (0, -15)
    assert "Application shutdown complete" in output.decode()


def test_top_level_help_describes_every_command() -> None:
    """The tool's --help names each command in its description of the whole tool (data, models, portfolios,
    service), so a new command needs a word there too."""
    from factor_engine.cli import app

    help_text = app.info.help or ""
    commands = {
        command.name or command.callback.__name__.replace("_", "-")  # Typer's default name
        for command in app.registered_commands
        if command.callback
    }
    assert {"prepare", "build", "risk", "serve", "delete-panel"} <= commands
    described = {name for name in commands if f"`{name}`" in help_text}
    assert described == commands, sorted(commands - described)
    code, out, _ = invoke("--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Factor Engine: a Barra-style equity factor risk model built from your own data" in text
    for heading in ("Data:", "Risk models:", "Portfolios:", "Service:"):
        assert heading in text


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_serve_warns_when_bound_beyond_loopback_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, warned: bool
) -> None:
    import uvicorn

    served: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, **_: served.append(host))
    monkeypatch.delenv("FACTOR_ENGINE_API_KEY", raising=False)
    code, _, stderr = invoke("serve", "--host", host, "--database-url", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 0 and served == [host]
    flat = " ".join(stderr.split())
    assert (f"warning: serving on {host} without an API key" in flat) is warned
    assert ("set FACTOR_ENGINE_API_KEY" in flat) is warned
    monkeypatch.setenv("FACTOR_ENGINE_API_KEY", "k3y")  # with a key: no warning
    code, _, stderr = invoke("serve", "--host", host, "--database-url", f"sqlite:///{tmp_path / 'x.db'}")
    assert code == 0 and "warning" not in stderr
