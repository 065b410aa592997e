"""FactorRiskActor in NautilusTrader's BacktestEngine: what it publishes equals the library's figures on the
holdings the engine reports, computed here from the cache and ``snapshot_at`` (not the actor's helpers)."""

from __future__ import annotations

import datetime
import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.identifiers import Venue

from factor_engine.integrations.nautilus import (
    EXPOSURE_DATA_TYPE,
    RISK_DATA_TYPE,
    FactorExposure,
    FactorPortfolioStrategy,
    FactorPortfolioStrategyConfig,
    FactorRiskActor,
    FactorRiskActorConfig,
    PortfolioFactorRisk,
    SnapshotBook,
    bar_type,
    market_engine,
    panel_market,
)
from factor_engine.model import RiskModel
from factor_engine.panel import SYMBOL
from factor_engine.portfolio import decompose_risk, portfolio_exposures
from factor_engine.portfolio.snapshot import forecast_dates, snapshot_at


class Witness(Actor):
    """Subscribes to the actor's data; at each risk update it reads the holdings from the engine itself."""

    def __init__(self) -> None:
        super().__init__(ActorConfig(component_id="Witness"))
        self.risks: list[PortfolioFactorRisk] = []
        self.exposures: dict[str, dict[str, float]] = {}
        self.holdings: dict[str, tuple[dict[str, float], float]] = {}

    def on_start(self) -> None:
        self.subscribe_data(RISK_DATA_TYPE)
        self.subscribe_data(EXPOSURE_DATA_TYPE)

    def on_data(self, data: Any) -> None:
        if isinstance(data, PortfolioFactorRisk):
            self.risks.append(data)
            venue = Venue("SIM")
            cash = self.cache.account_for_venue(venue).balance_total(USD).as_double()
            values = {
                p.instrument_id.symbol.value: p.signed_qty * self.cache.bar(bar_type(p.instrument_id)).close.as_double()
                for p in self.cache.positions_open(venue=venue)
                if p.signed_qty != 0
            }
            self.holdings[data.date] = (values, cash + math.fsum(values.values()))
        elif isinstance(data, FactorExposure):
            self.exposures.setdefault(data.date, {})[data.factor] = data.exposure


def _run(model: RiskModel, panel: pl.DataFrame, update_on: str = "timer") -> tuple[Witness, FactorRiskActor]:
    market = panel_market(panel)
    book = SnapshotBook(model)
    engine, end_ns = market_engine(market, capital=1_000_000.0)
    strategy = FactorPortfolioStrategy(
        FactorPortfolioStrategyConfig(strategy_id="FactorPortfolio-001", rebalance_days=7), book=book
    )
    actor = FactorRiskActor(FactorRiskActorConfig(component_id="FactorRiskActor", update_on=update_on), book=book)
    witness = Witness()
    try:
        engine.add_strategy(strategy)
        engine.add_actor(actor)
        engine.add_actor(witness)
        engine.run(end=end_ns)
        assert strategy.orders_filled > 0
    finally:
        engine.dispose()
    return witness, actor


@pytest.fixture(scope="module")
def witnessed(small_model: RiskModel, small_panel: pl.DataFrame) -> Witness:
    return _run(small_model, small_panel)[0]


def test_published_exposures_equal_portfolio_exposures(witnessed: Witness, small_model: RiskModel) -> None:
    available = forecast_dates(small_model).to_list()
    held_days = [r for r in witnessed.risks if witnessed.holdings[r.date][0]]
    assert len(held_days) > 100  # one update per close from the first forecast on, holding from the first trade
    for risk in held_days:
        day = datetime.date.fromisoformat(risk.date)
        model_date = max(d for d in available if d <= day)  # the latest forecast at or before the close: no look-ahead
        assert risk.model_date == str(model_date)
        snapshot = snapshot_at(small_model, model_date)
        values, equity = witnessed.holdings[risk.date]
        covered = {symbol: value / equity for symbol, value in values.items() if symbol in snapshot.symbols}
        expected = portfolio_exposures(snapshot, covered, allow_unnormalized=True)
        published = witnessed.exposures[risk.date]
        assert list(published) == expected.get_column("factor").to_list()
        np.testing.assert_allclose(
            [published[f] for f in expected.get_column("factor")],
            expected.get_column("portfolio").to_numpy(),
            rtol=1e-9,
            atol=1e-12,
        )
        reference = decompose_risk(snapshot, covered, allow_unnormalized=True)
        assert risk.total_risk == pytest.approx(reference.total_risk, rel=1e-9)
        assert risk.factor_risk == pytest.approx(reference.factor_risk, rel=1e-9)
        assert risk.specific_risk == pytest.approx(reference.specific_risk, rel=1e-9)
        assert risk.equity == pytest.approx(equity, rel=1e-12)
        assert risk.invested == pytest.approx(math.fsum(values.values()) / equity, rel=1e-9)


def test_nothing_is_published_before_the_first_forecast(witnessed: Witness, small_model: RiskModel) -> None:
    first = forecast_dates(small_model)[0]
    assert witnessed.risks[0].date == str(first)
    assert all(datetime.date.fromisoformat(r.date) >= first for r in witnessed.risks)


def test_update_on_bar_publishes_on_every_bar(small_model: RiskModel, small_panel: pl.DataFrame) -> None:
    symbols = small_panel.get_column(SYMBOL).unique().sort().head(6)
    panel = small_panel.filter(pl.col(SYMBOL).is_in(symbols.implode()))
    witness, actor = _run(small_model, panel, update_on="bar")
    first = forecast_dates(small_model)[0]
    bars_after = panel.filter(pl.col("date") >= first).height
    assert actor.updates == bars_after == len(witness.risks)


def test_unknown_update_mode_is_refused(small_model: RiskModel) -> None:
    with pytest.raises(ValueError, match="update_on must be one of"):
        FactorRiskActor(FactorRiskActorConfig(update_on="tick"), book=SnapshotBook(small_model))
