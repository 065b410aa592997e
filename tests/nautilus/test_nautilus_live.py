"""FactorRiskActor on intraday bars in NautilusTrader's BacktestEngine: the live factor returns it publishes after a
day's last bar are the build's factor returns of that date, every update before equals a LiveSession fed the bar
closes so far (computed here from the bars made here, on a model built through the previous close), and the
book's live P&L equals live_portfolio and a direct Σ shares × price move on the holdings the engine reports.

The market: daily bars from a synthetic panel (``panel_market``) and, on the last days, intraday paths per symbol
that open with an overnight gap away from the previous close and whose last bar closes at the day's daily close.
The panel's returns of those days are rewritten as the ratio of the bars' (tick-rounded) closes, so the build
sees exactly the returns the bars imply.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarSpecification, BarType
from nautilus_trader.model.enums import AggregationSource, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.objects import Quantity
from nautilus_trader.trading.strategy import Strategy

from factor_engine import _dense
from factor_engine._dense import single_threaded_blas
from factor_engine.config import ModelConfig
from factor_engine.integrations.nautilus import (
    LIVE_FACTOR_DATA_TYPE,
    LIVE_PORTFOLIO_DATA_TYPE,
    FactorRiskActor,
    FactorRiskActorConfig,
    LiveFactorReturn,
    LivePortfolioUpdate,
    SnapshotBook,
    market_engine,
    panel_market,
)
from factor_engine.integrations.nautilus.market import PRICE_PRECISION, date_of
from factor_engine.live import LiveError, LiveModel, LiveSession, live_book, live_portfolio
from factor_engine.model import RiskModel, build_model
from factor_engine.panel import DATE, RETURNS, SYMBOL
from factor_engine.synthetic import generate_market

CONFIG = ModelConfig.from_mapping(
    {
        "styles": {"momentum": {"trailing_days": 20, "half_life": 10, "lag": 5}},
        "covariance": {"min_periods": 20},
        "adjustments": {"eigenfactor_simulations": 20},
        "specific_risk": {"min_periods": 10},
    }
)
TOLERANCE = 1e-10
NANOS = 1_000_000_000
LAST_BAR = datetime.time(21, 0)  # a day's last intraday bar closes at 21:00 UTC, with the daily bar
SESSION_MINUTES = 385  # from 14:35 (the first 5-minute bar's close) to 21:00
HELD = {"S00003": 400, "S00011": 300, "S00017": 500, "S00024": 250, "S00032": 350, "S00041": 450}
TRADE_AT = datetime.time(17, 2, 30)  # on the second live day: sell S00011, buy S00050 (fills at the 17:00 close)


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max |got − want| over max |want| (NaN must match NaN)."""
    assert np.array_equal(np.isnan(got), np.isnan(want)), (got, want)
    finite = np.isfinite(want)
    return float(np.max(np.abs(got[finite] - want[finite])) / np.max(np.abs(want[finite])))


@dataclass
class IntradayMarket:
    """The test's market: the panel the model is built on, the daily market, the intraday bars and the bar
    closes by day as the test knows them."""

    panel: pl.DataFrame
    daily: Any  # PanelMarket
    bars: list[Bar]
    live_days: list[datetime.date]
    minutes: int
    previous_close: dict[datetime.date, dict[str, float]] = field(default_factory=dict)
    # day → (ts_event (n,), symbols (n,), closes (n,)) in the order the bars are fed
    day_bars: dict[datetime.date, tuple[np.ndarray, list[str], np.ndarray]] = field(default_factory=dict)


def intraday_market(n_assets: int, n_days: int, live_days: int, minutes: int, seed: int) -> IntradayMarket:
    raw = generate_market(n_assets, n_days, seed=seed).panel
    daily = panel_market(raw)
    closes = {
        (date_of(bar.ts_event), bar.bar_type.instrument_id.symbol.value): bar.close.as_double() for bar in daily.bars
    }
    dates = daily.dates.to_list()
    days = dates[-live_days:]
    rng = np.random.default_rng(seed + 1)
    n_bars = SESSION_MINUTES // minutes + 1
    market = IntradayMarket(panel=raw, daily=daily, bars=[], live_days=days, minutes=minutes)
    new_returns: list[dict[str, Any]] = []
    for day in days:
        before = dates[dates.index(day) - 1]
        rows = raw.filter((pl.col(DATE) == day) & pl.col(RETURNS).is_not_null())
        stamps = np.array(
            [
                int(datetime.datetime.combine(day, LAST_BAR, tzinfo=datetime.UTC).timestamp()) * NANOS
                - (n_bars - 1 - j) * minutes * 60 * NANOS
                for j in range(n_bars)
            ],
            dtype=np.uint64,
        )
        market.previous_close[day] = {}
        per_symbol: list[tuple[str, np.ndarray]] = []
        for symbol in sorted(rows.get_column(SYMBOL).to_list()):
            previous, target = closes[(before, symbol)], closes[(day, symbol)]
            market.previous_close[day][symbol] = previous
            new_returns.append({DATE: day, SYMBOL: symbol, "live_return": target / previous - 1.0})
            gap = rng.normal(0.0, 0.01)  # the first bar opens away from the previous close
            steps = rng.normal(0.0, 0.003, n_bars).cumsum()
            bridge = steps - np.arange(1, n_bars + 1) / n_bars * steps[-1]
            path = np.exp(
                math.log(previous)
                + gap
                + (math.log(target) - math.log(previous) - gap) * np.arange(1, n_bars + 1) / n_bars
                + bridge
            )
            path[-1] = target
            opens = np.concatenate([[previous * math.exp(gap)], path[:-1]])
            instrument_id = InstrumentId(Symbol(symbol), daily.venue)
            bar_type = BarType(
                instrument_id, BarSpecification.from_str(f"{minutes}-MINUTE-LAST"), AggregationSource.EXTERNAL
            )
            made = Bar.from_raw_arrays_to_list(
                bar_type,
                PRICE_PRECISION,
                0,
                opens.copy(),
                np.maximum(opens, path),
                np.minimum(opens, path),
                path.copy(),
                np.full(n_bars, 1e12),
                stamps,
                stamps,
            )
            assert made[-1].close.as_double() == target  # the last bar closes at the daily close, to the bit
            assert made[0].open.as_double() != previous
            market.bars.extend(made)
            per_symbol.append((symbol, np.array([bar.close.as_double() for bar in made])))
        # the order the engine feeds them: by time, then by symbol (a stable sort of this order)
        symbols = [s for _ in range(n_bars) for s, _ in per_symbol]
        market.day_bars[day] = (
            np.repeat(stamps, len(per_symbol)),
            symbols,
            np.array([path[j] for j in range(n_bars) for _, path in per_symbol]),
        )
    market.bars.sort(key=lambda bar: bar.ts_init)
    rewritten = pl.DataFrame(new_returns, schema={DATE: pl.Date, SYMBOL: pl.String, "live_return": pl.Float64})
    market.panel = (
        raw.with_columns(pl.col(SYMBOL).cast(pl.String))
        .join(rewritten, on=[DATE, SYMBOL], how="left")
        .with_columns(pl.coalesce("live_return", RETURNS).alias(RETURNS))
        .drop("live_return")
        .with_columns(pl.col(SYMBOL).cast(raw.schema[SYMBOL]))
    )
    return market


class Holder(Strategy):
    """Buys :data:`HELD` the evening before the first live day; on the second live day at :data:`TRADE_AT` sells
    S00011 and buys S00050."""

    def __init__(self, venue: Venue, buy_at: datetime.datetime, trade_at: datetime.datetime) -> None:
        super().__init__(StrategyConfig(strategy_id="Holder-001"))
        self.venue = venue
        self.buy_at, self.trade_at = buy_at, trade_at

    def on_start(self) -> None:
        self.clock.set_time_alert("buy", self.buy_at, callback=lambda _e: self._trade(HELD))
        self.clock.set_time_alert(
            "trade", self.trade_at, callback=lambda _e: self._trade({"S00011": -300, "S00050": 600})
        )

    def _trade(self, shares: dict[str, int]) -> None:
        for symbol, quantity in shares.items():
            side = OrderSide.BUY if quantity > 0 else OrderSide.SELL
            order = self.order_factory.market(
                InstrumentId(Symbol(symbol), self.venue), side, Quantity.from_int(abs(quantity))
            )
            self.submit_order(order)


class Witness(Actor):
    """Keeps the live updates and, at each, the positions and cash the engine reports."""

    def __init__(self) -> None:
        super().__init__(ActorConfig(component_id="LiveWitness"))
        self.updates: list[LivePortfolioUpdate] = []
        self.factors: list[dict[str, LiveFactorReturn]] = []
        self.holdings: list[tuple[dict[str, float], float]] = []

    def on_start(self) -> None:
        self.subscribe_data(LIVE_PORTFOLIO_DATA_TYPE)
        self.subscribe_data(LIVE_FACTOR_DATA_TYPE)

    def on_data(self, data: Any) -> None:
        if isinstance(data, LivePortfolioUpdate):
            self.updates.append(data)
            self.factors.append({})
            venue = Venue("SIM")
            quantities = {
                p.instrument_id.symbol.value: float(p.signed_qty)
                for p in self.cache.positions_open(venue=venue)
                if p.signed_qty != 0
            }
            self.holdings.append((quantities, self.cache.account_for_venue(venue).balance_total(USD).as_double()))
        elif isinstance(data, LiveFactorReturn):
            self.factors[-1][data.factor] = data


def run(market: IntradayMarket, model: RiskModel, **config: Any) -> tuple[Witness, FactorRiskActor]:
    engine, end_ns = market_engine(market.daily, capital=1_000_000.0)
    first = market.live_days[0]
    dates = market.daily.dates.to_list()
    evening = datetime.datetime.combine(dates[dates.index(first) - 1], datetime.time(21, 30), tzinfo=datetime.UTC)
    trade_at = datetime.datetime.combine(market.live_days[min(1, len(market.live_days) - 1)], TRADE_AT, datetime.UTC)
    actor = FactorRiskActor(
        FactorRiskActorConfig(
            component_id="FactorRiskActor", intraday_bar_spec=f"{market.minutes}-MINUTE-LAST", **config
        ),
        book=SnapshotBook(model),
        panel=market.panel,
    )
    witness = Witness()
    try:
        engine.add_data(market.bars, sort=True)
        engine.add_strategy(Holder(market.daily.venue, evening, trade_at))
        engine.add_actor(actor)
        engine.add_actor(witness)
        engine.run(end=end_ns)
    finally:
        engine.dispose()
    assert _dense._blas_users == 0  # the actor's single-threaded BLAS ended with the run
    return witness, actor


@pytest.fixture(scope="module")
def market() -> IntradayMarket:
    """80 assets × 120 days, 5-minute bars (78 a day) on the last 3 days."""
    return intraday_market(80, 120, live_days=3, minutes=5, seed=13)


@pytest.fixture(scope="module")
def full_model(market: IntradayMarket) -> RiskModel:
    """A build on the whole panel, the live days included."""
    return build_model(market.panel, CONFIG)


@pytest.fixture(scope="module")
def previous_models(market: IntradayMarket) -> dict[datetime.date, LiveModel]:
    """Per live day: a live model from a separate build through the previous close (not the actor's cut model)."""
    live: dict[datetime.date, LiveModel] = {}
    for day in market.live_days:
        before = market.panel.filter(pl.col(DATE) < day)
        live[day] = LiveModel.from_model(build_model(before, CONFIG), before)
    return live


@pytest.fixture(scope="module")
def witnessed(market: IntradayMarket, full_model: RiskModel) -> tuple[Witness, FactorRiskActor]:
    return run(market, full_model, intraday_update_on="timer", intraday_interval_secs=300)


@pytest.fixture
def blas_once() -> Iterator[None]:
    """BLAS limited once around a test's many small solves (entering the limit at each costs more than one)."""
    with single_threaded_blas():
        yield


def published_returns(witness: Witness, index: int, factors: tuple[str, ...]) -> np.ndarray:
    published = witness.factors[index]
    assert list(published) == list(factors)
    return np.array([published[f].factor_return for f in factors])


def session_so_far(market: IntradayMarket, live: LiveModel, day: datetime.date, n_bars: int) -> LiveSession:
    """A LiveSession fed the previous closes and the first ``n_bars`` intraday closes of ``day`` (latest wins)."""
    _, symbols, closes = market.day_bars[day]
    prices = dict(zip(symbols[:n_bars], closes[:n_bars].tolist(), strict=True))
    session = LiveSession(live)
    session.set_closes(market.previous_close[day], unknown="drop")
    session.update(prices=prices, unknown="drop")
    return session


def test_day_end_equals_the_build_of_the_date(
    witnessed: tuple[Witness, FactorRiskActor], market: IntradayMarket, full_model: RiskModel
) -> None:
    witness, _ = witnessed
    for day in market.live_days:
        at_day = [i for i, u in enumerate(witness.updates) if u.date == str(day)]
        last = at_day[-1]
        stamps, symbols, _ = market.day_bars[day]
        assert witness.updates[last].bars == len(symbols)
        assert witness.updates[last].ts_event == int(stamps[-1])
        want = full_model.factor_returns.filter(pl.col(DATE) == day).select(full_model.factors).to_numpy()[0]
        got = published_returns(witness, last, full_model.factors)
        assert relative_difference(got, want) <= TOLERANCE
        diagnostics = full_model.diagnostics.filter(pl.col(DATE) == day).row(0, named=True)
        assert witness.updates[last].n_assets == diagnostics["n_assets"]
        assert witness.updates[last].r2 == pytest.approx(diagnostics["r2"], rel=1e-10)
        dates = market.daily.dates.to_list()
        assert witness.updates[last].model_date == str(dates[dates.index(day) - 1])


@pytest.mark.usefixtures("blas_once")
def test_every_update_equals_a_live_session_on_the_bars_so_far(
    witnessed: tuple[Witness, FactorRiskActor],
    market: IntradayMarket,
    previous_models: dict[datetime.date, LiveModel],
) -> None:
    witness, actor = witnessed
    worst = 0.0
    for day in market.live_days:
        stamps, _, _ = market.day_bars[day]
        at_day = [i for i, u in enumerate(witness.updates) if u.date == str(day)]
        # the timer on multiples of 300 s fires after the bars stamped then: one update per bar time
        assert [witness.updates[i].ts_event for i in at_day] == sorted(set(stamps.tolist()))
        live = previous_models[day]
        for i in at_day:
            update = witness.updates[i]
            session = session_so_far(market, live, day, update.bars)
            assert update.bars == int(np.searchsorted(stamps, update.ts_event, side="right"))
            result = session.latest
            assert result is not None
            assert update.n_priced == result.n_priced and update.n_assets == result.n_assets
            worst = max(worst, relative_difference(published_returns(witness, i, live.factors), result.factor_returns))
    assert worst <= TOLERANCE
    assert (
        actor.live_updates
        == len(witness.updates)
        == sum(len(set(market.day_bars[d][0].tolist())) for d in market.live_days)
    )


@pytest.mark.usefixtures("blas_once")
def test_book_live_pnl_equals_live_portfolio(
    witnessed: tuple[Witness, FactorRiskActor],
    market: IntradayMarket,
    previous_models: dict[datetime.date, LiveModel],
) -> None:
    witness, _ = witnessed
    second = str(market.live_days[1])
    held_second = {
        tuple(sorted(q)) for (q, _), u in zip(witness.holdings, witness.updates, strict=True) if u.date == second
    }
    assert len(held_second) == 2  # the trade at 17:02:30 changed the book during the day
    for index, update in enumerate(witness.updates):
        day = datetime.date.fromisoformat(update.date)
        quantities, cash = witness.holdings[index]
        assert set(HELD) <= set(quantities) | {"S00011"}
        closes = market.previous_close[day]
        _, symbols, bar_closes = market.day_bars[day]
        latest = dict(zip(symbols[: update.bars], bar_closes[: update.bars].tolist(), strict=True))
        equity = cash + math.fsum(q * closes[s] for s, q in quantities.items())
        # directly: the holdings' move since the close over the book's value at the closes
        direct = math.fsum(q * (latest.get(s, closes[s]) - closes[s]) for s, q in quantities.items()) / equity
        assert update.equity == pytest.approx(equity, rel=1e-12)
        assert update.pnl == pytest.approx(direct, rel=1e-9, abs=1e-13)

        live = previous_models[day]
        weights = {s: q * closes[s] / equity for s, q in quantities.items()}
        expected = live_portfolio(
            live,
            live_book(live, weights, allow_unnormalized=True),
            session_so_far(market, live, day, update.bars).solve(),
        )
        assert update.pnl == pytest.approx(expected.pnl, rel=1e-10, abs=1e-14)
        assert update.factor_pnl == pytest.approx(expected.factor_total, rel=1e-9, abs=1e-13)
        assert update.specific_pnl == pytest.approx(expected.specific_pnl, rel=1e-9, abs=1e-13)
        assert update.total_risk == pytest.approx(expected.risk.total_risk, rel=1e-10)
        assert update.factor_risk == pytest.approx(expected.risk.factor_risk, rel=1e-10)
        assert update.specific_risk == pytest.approx(expected.risk.specific_risk, rel=1e-10)
        assert update.uncovered_weight == 0.0
        published = witness.factors[index]
        for factor, exposure, _, pnl in expected.factor_pnl.iter_rows():
            assert published[factor].exposure == pytest.approx(exposure, rel=1e-10, abs=1e-13)
            assert published[factor].pnl == pytest.approx(pnl, rel=1e-9, abs=1e-14)
        for factor, exposure_now in expected.exposures.select("factor", "portfolio").iter_rows():
            assert published[factor].exposure_now == pytest.approx(exposure_now, rel=1e-10, abs=1e-13)
        # the factor P&L by hand: Σ_k (Σ_i w_i B_ik) f_k over the priced holdings, B at the previous close
        factor_returns = np.array([published[f].factor_return for f in live.factors])
        exposures_at_close = np.zeros(len(live.factors))
        for symbol, weight in weights.items():
            if symbol in latest:
                row = live.index[symbol]
                sector = np.zeros(len(live.sectors))
                sector[live.sector_codes[row]] = 1.0
                exposures_at_close += weight * np.concatenate([[1.0], sector, live.style_exposure[row]])
        assert update.factor_pnl == pytest.approx(
            float(exposures_at_close @ np.nan_to_num(factor_returns)), rel=1e-9, abs=1e-13
        )


def test_update_on_every_bar(market: IntradayMarket, full_model: RiskModel) -> None:
    """``intraday_update_on="bar"`` on one day of 30-minute bars: an update after each bar once the regression
    can be solved, each the LiveSession of the bars before it; the last is the build's date."""
    small = intraday_market(80, 120, live_days=1, minutes=30, seed=13)
    model = build_model(small.panel, CONFIG)
    witness, actor = run(small, model, intraday_update_on="bar")
    day = small.live_days[0]
    _, symbols, _ = small.day_bars[day]
    counts = [u.bars for u in witness.updates]
    assert counts == list(range(counts[0], len(symbols) + 1))  # every bar from the first solvable one
    before = small.panel.filter(pl.col(DATE) < day)
    live = LiveModel.from_model(build_model(before, CONFIG), before)
    for index in range(0, len(counts), 37):
        want = session_so_far(small, live, day, counts[index]).latest
        assert want is not None
        assert relative_difference(published_returns(witness, index, live.factors), want.factor_returns) <= TOLERANCE
    row = model.factor_returns.filter(pl.col(DATE) == day).select(model.factors).to_numpy()[0]
    assert relative_difference(published_returns(witness, len(counts) - 1, model.factors), row) <= TOLERANCE
    assert actor.live_updates == len(counts)


def test_configuration_is_checked(full_model: RiskModel, market: IntradayMarket, tmp_path: Path) -> None:
    book = SnapshotBook(full_model)
    market.panel.write_parquet(tmp_path / "panel.parquet")
    from_file = FactorRiskActor(
        FactorRiskActorConfig(intraday_bar_spec="5-MINUTE-LAST", panel_path=str(tmp_path / "panel.parquet")), book=book
    )
    assert from_file.intraday is not None
    live = from_file.intraday.live_model(book.dates[-1])
    np.testing.assert_array_equal(live.cap, LiveModel.from_model(full_model, market.panel).cap)
    with pytest.raises(ValueError, match="intraday_bar_source must be one of"):
        FactorRiskActor(FactorRiskActorConfig(intraday_bar_spec="5-MINUTE-LAST", intraday_bar_source="X"), book=book)
    with pytest.raises(ValueError, match="intraday_update_on must be one of"):
        FactorRiskActor(FactorRiskActorConfig(intraday_bar_spec="5-MINUTE-LAST", intraday_update_on="tick"), book=book)
    with pytest.raises(ValueError, match="intraday_interval_secs must be positive"):
        FactorRiskActor(FactorRiskActorConfig(intraday_bar_spec="5-MINUTE-LAST", intraday_interval_secs=0), book=book)
    with pytest.raises(LiveError, match="weights its regression by market cap"):
        FactorRiskActor(FactorRiskActorConfig(intraday_bar_spec="5-MINUTE-LAST"), book=book)


def test_the_readme_intraday_example_runs(
    full_model: RiskModel, market: IntradayMarket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python example of the README's NautilusTrader section, as written, on a model folder and a panel file."""
    full_model.save(tmp_path / "model")
    market.panel.write_parquet(tmp_path / "panel.parquet")
    monkeypatch.chdir(tmp_path)
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## NautilusTrader\n") : text.index("## Report\n")]
    code = section[section.index("```python\n") + len("```python\n") :]

    added: list[Any] = []
    engine = SimpleNamespace(add_actor=added.append)  # the snippet's engine: it only adds the actor
    exec(compile(code[: code.index("```")], "README.md (NautilusTrader)", "exec"), {"engine": engine})
    (actor,) = added
    assert isinstance(actor, FactorRiskActor) and actor.intraday is not None
    assert actor.config.intraday_bar_spec == "5-MINUTE-LAST" and actor.config.intraday_interval_secs == 300
