"""``factor-engine ingest-ib`` end to end: the real ib_async client over a real socket against the fake gateway
(tests/ib_fake_gateway.py). 20 symbols × 10 years into a panel file, then ``build`` and ``risk`` on it; the store
as the default destination; and each error case: no market data permission, pacing violations, an unknown
symbol, a connection dropped mid-download (no partial symbol or panel written; the rerun resumes)."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from ib_helpers import SYMBOLS_FILE, FakeClock, GatewayFactory, expected_returns, symbols_file

from cli_runner import invoke
from factor_engine.integrations.ib import (
    GatewaySettings,
    IBIngestResult,
    IngestEvent,
    Pacer,
    PacingLimits,
    SymbolSpec,
    ingest_ib,
    read_symbols,
)
from factor_engine.model import load_model
from factor_engine.storage import connect
from ib_fake_gateway import LAST_DAY, FakeGateway, Scenario, market_cap_millions, years_before

SYMBOLS = [spec.symbol for spec in read_symbols(SYMBOLS_FILE)]


def run_ingest(gateway: FakeGateway, *args: str) -> tuple[int, str, str]:
    return invoke("ingest-ib", "--port", str(gateway.port), *args)


def ingest_to_file(gateway: FakeGateway, folder: Path, symbols: list[str], years: int = 2) -> tuple[int, str, str]:
    """``ingest-ib`` of ``symbols`` into ``folder/panel.parquet`` (work directory ``folder/work``)."""
    return run_ingest(
        gateway, "--symbols", str(symbols_file(folder, symbols)), "--years", str(years),
        "--out", str(folder / "panel.parquet"), "--work-dir", str(folder / "work"),
    )  # fmt: skip


def assert_returns_match_gateway(panel: pl.DataFrame, gateway: FakeGateway, symbols: list[str]) -> None:
    """Each symbol's returns equal those of the closes the gateway sent, from its first panel date on."""
    for symbol in symbols:
        rows = panel.filter(pl.col("symbol") == symbol).select("date", "asset_returns")
        expected = expected_returns(gateway, symbol, rows.item(0, "date"))
        joined = rows.join(expected, on="date", how="full", coalesce=True)
        assert joined.height == rows.height == expected.height, symbol
        assert joined.filter(pl.col("asset_returns").is_null() != pl.col("expected").is_null()).height == 0, symbol
        gap = joined.select((pl.col("asset_returns") - pl.col("expected")).abs().max()).item()
        assert gap is not None and gap < 1e-12, (symbol, gap)


# --------------------------------------------------------------------------------------------------
# 20 symbols × 10 years, then build and risk


@pytest.fixture(scope="module")
def ten_years(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeGateway, Path, str]]:
    folder = tmp_path_factory.mktemp("ib_ten_years")
    with FakeGateway() as gateway:
        code, stdout, stderr = run_ingest(
            gateway,
            "--symbols",
            str(SYMBOLS_FILE),
            "--years",
            "10",
            "--page-years",
            "5",
            "--work-dir",
            str(folder / "work"),
            "--out",
            str(folder / "panel.parquet"),
        )
        assert code == 0, stderr
        yield gateway, folder, stdout


def test_twenty_symbols_ten_years_follow_the_gateway(ten_years: tuple[FakeGateway, Path, str]) -> None:
    gateway, folder, stdout = ten_years
    panel = pl.read_parquet(folder / "panel.parquet")
    assert sorted(panel.get_column("symbol").unique()) == sorted(SYMBOLS)
    days = [day for day in gateway.market.days if day > years_before(LAST_DAY, 10)]
    assert (panel.get_column("date").min(), panel.get_column("date").max()) == (days[0], LAST_DAY)
    assert panel.height == 20 * len(days)
    assert_returns_match_gateway(panel, gateway, SYMBOLS)
    # paged: a 5-year and a 10-year request per symbol, none refused by the gateway's pacing rules
    assert gateway.requested("history") == [symbol for symbol in SYMBOLS for _ in range(2)]
    assert [r.duration for r in gateway.requests if r.kind == "history"][:2] == ["5 Y", "10 Y"]
    assert gateway.pacing_refusals == 0
    assert "20 downloaded, 0 resumed" in stdout and "0 left out" in stdout
    assert "panel: 52,180 rows, 20 assets" in stdout
    assert not (folder / "work").exists()  # checkpoints removed once the panel is written


def test_sectors_and_caps_of_the_ten_year_panel(ten_years: tuple[FakeGateway, Path, str]) -> None:
    gateway, folder, stdout = ten_years
    panel = pl.read_parquet(folder / "panel.parquet")
    sectors = dict(panel.select("symbol", "sector").unique().iter_rows())
    assert sectors["AAPL"] == "Information Technology"
    assert sectors["JPM"] == "Financials"
    assert sectors["XOM"] == "Energy"
    assert sectors["AMGN"] == "Health Care"  # by category: IB files biotech under "Consumer, Non-cyclical"
    # market_cap on the last date is MKTCAP (millions) and moves with the adjusted close before it
    for symbol in ("AAPL", "WFC"):
        rows = panel.filter(pl.col("symbol") == symbol).sort("date")
        assert rows.item(-1, "market_cap") == pytest.approx(market_cap_millions(gateway, symbol) * 1e6, rel=1e-12)
        closes = gateway.market.series(symbol)[0].round(4)
        ratio = rows.item(0, "market_cap") / rows.item(-1, "market_cap")
        assert ratio == pytest.approx(closes[-len(rows)] / closes[-1], rel=1e-9)
    assert "shares_outstanding" in panel.columns and "volume" in panel.columns
    assert "market cap: shares × close, shares from IB fundamental ratios" in stdout


def test_build_and_risk_work_on_the_ingested_panel(ten_years: tuple[FakeGateway, Path, str]) -> None:
    _, folder, _ = ten_years
    model_dir = folder / "model"
    code, _, stderr = invoke("build", "--data", str(folder / "panel.parquet"), "--out", str(model_dir))
    assert code == 0, stderr
    model = load_model(model_dir)
    assert {"market", "Information Technology", "Financials", "Energy", "Health Care"} <= set(model.factors)
    assert model.specific_risk.get_column("symbol").n_unique() == 20
    weights = folder / "weights.csv"
    weights.write_text("symbol,weight\nAAPL,0.25\nJPM,0.25\nXOM,0.25\nPFE,0.25\n")
    code, stdout, stderr = invoke("risk", "--model", str(model_dir), "--portfolio", str(weights))
    assert code == 0, stderr
    assert "total risk" in stdout and "specific risk" in stdout


# --------------------------------------------------------------------------------------------------
# the store, paging, sector map


def test_default_destination_is_the_store(fake_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = fake_gateway(Scenario(listed={"NVDA": datetime.date(2023, 3, 1)}, readjusted={"MSFT": 2.0}))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    sector_map = tmp_path / "sectors.toml"
    sector_map.write_text('[industry]\n"Technology" = "Tech"\n')
    symbols = ["AAPL", "MSFT", "NVDA", "JPM", "XOM"]
    code, stdout, stderr = run_ingest(
        gateway,
        "--symbols",
        str(symbols_file(tmp_path, symbols)),
        "--years",
        "4",
        "--page-years",
        "2",
        "--sector-map",
        str(sector_map),
        "--work-dir",
        str(tmp_path / "work"),
        "--database-url",
        url,
    )
    assert code == 0, stderr
    assert "ingested: " in stdout and "store: " in stdout
    store = connect(url)
    try:
        stored = store.load_panel()
    finally:
        store.close()
    assert sorted(stored.get_column("symbol").unique()) == sorted(symbols)
    assert_returns_match_gateway(stored, gateway, symbols)  # MSFT's closes doubled after its first page: returns intact
    assert stored.filter(pl.col("symbol") == "NVDA").get_column("date").min() == datetime.date(2023, 3, 1)
    assert dict(stored.select("symbol", "sector").unique().iter_rows())["AAPL"] == "Tech"
    assert stored.get_column("market_cap").null_count() == 0


# --------------------------------------------------------------------------------------------------
# error cases


def test_no_permission_for_fundamental_ratios_gives_a_prices_only_panel(
    fake_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = fake_gateway(Scenario(no_fundamentals_permission={"JPM"}))
    symbols = ["AAPL", "MSFT", "JPM", "XOM", "CVX"]
    out = tmp_path / "panel.parquet"
    code, stdout, stderr = ingest_to_file(gateway, tmp_path, symbols)
    assert code == 0, stderr
    panel = pl.read_parquet(out)
    assert "market_cap" not in panel.columns and "shares_outstanding" not in panel.columns
    assert sorted(panel.get_column("symbol").unique()) == sorted(symbols)
    assert "JPM: no market data permission for fundamental ratios (IB error 354" in stdout
    assert "a prices-only panel" in stdout
    assert gateway.requested("market data") == ["AAPL", "MSFT", "JPM"]  # not asked again after the refusal


def test_no_permission_for_daily_bars_leaves_the_symbol_out(fake_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = fake_gateway(Scenario(no_history_permission={"MSFT"}))
    out = tmp_path / "panel.parquet"
    code, stdout, stderr = ingest_to_file(gateway, tmp_path, ["AAPL", "MSFT", "JPM"])
    assert code == 0, stderr
    assert sorted(pl.read_parquet(out).get_column("symbol").unique()) == ["AAPL", "JPM"]
    assert "MSFT: no market data permission for its daily bars (IB error 162: Historical Market Data Service" in stdout
    assert "1 left out" in stdout


def test_unknown_symbol_is_reported_and_left_out(fake_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = fake_gateway(Scenario(unknown={"NOPE"}))
    out = tmp_path / "panel.parquet"
    code, stdout, stderr = ingest_to_file(gateway, tmp_path, ["AAPL", "NOPE", "JPM"])
    assert code == 0, stderr
    assert sorted(pl.read_parquet(out).get_column("symbol").unique()) == ["AAPL", "JPM"]
    assert "NOPE: unknown symbol: IB has no stock NOPE on SMART in USD (IB error 200: No security definition" in stdout
    assert "NOPE" not in gateway.requested("history")


def test_nothing_downloadable_is_an_error(fake_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = fake_gateway(Scenario(unknown={"NOPE", "NADA"}))
    out = tmp_path / "panel.parquet"
    code, _, stderr = ingest_to_file(gateway, tmp_path, ["NOPE", "NADA"], years=1)
    assert code == 1
    assert stderr.startswith("error: no symbol could be downloaded: NOPE: unknown symbol")
    assert not out.exists()


def test_disconnect_mid_download_writes_nothing_partial_and_the_rerun_resumes(
    fake_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = fake_gateway(Scenario(disconnect_on_history={"XOM"}))
    work, out = tmp_path / "work", tmp_path / "panel.parquet"
    args = ["--symbols", str(SYMBOLS_FILE), "--years", "2", "--work-dir", str(work), "--out", str(out)]
    code, _, stderr = run_ingest(gateway, *args)
    assert code == 1
    position = SYMBOLS.index("XOM")
    assert stderr.startswith(
        f"error: the connection to IB Gateway/TWS at 127.0.0.1:{gateway.port} was lost while downloading the daily "
        f"bars of XOM: {position} of 20 symbols are complete in {work} and XOM was not written; run the same command "
        "again to resume"
    ), stderr
    assert not out.exists()
    checkpoints = sorted(path.name for path in (work / "symbols").iterdir())
    assert checkpoints == sorted(f"{symbol}.parquet" for symbol in SYMBOLS[:position])
    before = len(gateway.requested("history"))

    code, stdout, stderr = run_ingest(gateway, *args)
    assert code == 0, stderr
    assert gateway.requested("history")[before:] == SYMBOLS[position:]  # complete symbols are not asked again
    assert f"{20 - position} downloaded, {position} resumed" in stdout
    panel = pl.read_parquet(out)
    assert panel.get_column("symbol").n_unique() == 20
    assert_returns_match_gateway(panel, gateway, SYMBOLS)


def test_a_work_dir_of_other_settings_is_refused(fake_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = fake_gateway()
    work = tmp_path / "work"
    work.mkdir()
    (work / "manifest.json").write_text(json.dumps({"years": 5}))
    code, _, stderr = run_ingest(
        gateway, "--symbols", str(symbols_file(tmp_path, ["AAPL"])), "--years", "2", "--work-dir", str(work),
        "--out", str(tmp_path / "panel.parquet"),
    )  # fmt: skip
    assert code == 1
    assert f"work directory {work} holds a download with other settings: years 5 (now 2)" in stderr


def test_connection_refused_says_what_to_start(tmp_path: Path) -> None:
    with FakeGateway() as gateway:
        port = gateway.port  # free once the gateway stops
    code, _, stderr = invoke(
        "ingest-ib", "--symbols", str(symbols_file(tmp_path, ["AAPL"])), "--years", "1", "--port", str(port),
        "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "panel.parquet"),
    )  # fmt: skip
    assert code == 1
    assert f"error: cannot connect to IB Gateway/TWS at 127.0.0.1:{port}: connection refused" in stderr


# --------------------------------------------------------------------------------------------------
# pacing, on a fake clock shared by the client's pacer and the gateway's rules


def ingest_paced(
    gateway: FakeGateway, clock: FakeClock, symbols: list[str], tmp_path: Path, *, years: int, limits: PacingLimits
) -> tuple[IBIngestResult, list[IngestEvent]]:
    events: list[IngestEvent] = []
    result = ingest_ib(
        [SymbolSpec(symbol) for symbol in symbols],
        years=years,
        page_years=1,
        work_dir=tmp_path / "work",
        settings=GatewaySettings(port=gateway.port),
        pacer=Pacer(limits, clock=clock, sleep=clock.sleep),
        on_event=events.append,
        caps=False,
    )
    return result, events


def test_pacing_violation_is_waited_out_and_retried(fake_gateway: GatewayFactory, tmp_path: Path) -> None:
    clock = FakeClock()
    gateway = fake_gateway(Scenario(pacing_violations={"MSFT": 2}), clock=clock)
    start = clock()
    result, events = ingest_paced(gateway, clock, ["AAPL", "MSFT"], tmp_path, years=1, limits=PacingLimits())
    assert result.download.pacing_violations == 2
    assert result.download.left_out == {}
    assert clock() - start >= 2 * 60.0  # two cool-downs
    pacing = [event.message for event in events if event.kind == "pacing"]
    assert len(pacing) == 2 and "IB reported a pacing violation" in pacing[0] and "waiting 60 s" in pacing[0]
    assert gateway.requested("history") == ["AAPL", "MSFT", "MSFT", "MSFT"]


def test_repeated_pacing_violations_leave_the_symbol_out(fake_gateway: GatewayFactory, tmp_path: Path) -> None:
    clock = FakeClock()
    gateway = fake_gateway(Scenario(pacing_violations={"MSFT": 10}), clock=clock)
    result, _ = ingest_paced(gateway, clock, ["AAPL", "MSFT"], tmp_path, years=1, limits=PacingLimits())
    assert list(result.download.left_out) == ["MSFT"]
    assert "4 pacing violations in a row" in result.download.left_out["MSFT"]


def test_the_pacer_keeps_the_gateways_limits_over_sixty_requests(fake_gateway: GatewayFactory, tmp_path: Path) -> None:
    clock = FakeClock()
    gateway = fake_gateway(clock=clock)
    symbols = [f"S{i:02d}" for i in range(21)]
    start = clock()
    result, _ = ingest_paced(gateway, clock, symbols, tmp_path, years=3, limits=PacingLimits())
    assert result.download.requests == 63
    assert gateway.pacing_refusals == 0 and result.download.pacing_violations == 0
    assert clock() - start >= 600.0  # the 61st request waited for the ten-minute window


def test_the_gateway_refuses_what_a_lax_pacer_sends(fake_gateway: GatewayFactory, tmp_path: Path) -> None:
    """The control of the test above: the same requests without the same-contract limit break IB's rule."""
    clock = FakeClock()
    gateway = fake_gateway(clock=clock)
    result, _ = ingest_paced(gateway, clock, ["AAPL"], tmp_path, years=7, limits=PacingLimits(max_same_contract=50))
    assert gateway.pacing_refusals >= 1
    assert result.download.pacing_violations >= 1


def test_importing_factor_engine_does_not_import_ib_async() -> None:
    code = (
        "import sys, factor_engine, factor_engine.cli, factor_engine.integrations.ib; "
        "assert 'ib_async' not in sys.modules, 'ib_async imported'"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
