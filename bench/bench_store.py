"""Benchmark of the PostgreSQL store: panel ingest (and idempotent re-ingest), panel load, save_model of a
model built on that panel, factor_returns and snapshot reads. Prints figures; not a test.

Usage: ``python bench/bench_store.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--assets 3000]
[--days 2520]``. Works in the schema ``bench_store`` (dropped at the start and at the end).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import psycopg

from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.panel import validate_panel
from factor_engine.storage import connect
from factor_engine.synthetic import generate_market

SCHEMA = "bench_store"


def best_of(repeat: int, call: Callable[[], Any]) -> float:
    """The fastest of ``repeat`` calls, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best * 1000.0


def drop_schema(url: str) -> None:
    """Drop the benchmark schema (and everything in it)."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--assets", type=int, default=3000)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--no-model", action="store_true", help="skip build/save_model and the model reads")
    args = parser.parse_args()

    started = time.perf_counter()
    panel = validate_panel(generate_market(args.assets, args.days, seed=0).panel)
    print(f"generate + validate {panel.height:,} rows: {time.perf_counter() - started:.1f} s")
    drop_schema(args.url)
    store = connect(args.url, schema=SCHEMA)
    try:
        first = store.ingest_panel(panel)
        print(
            f"ingest_panel (new rows): {first.seconds:.1f} s, {first.rows / first.seconds:,.0f} rows/s "
            f"(inserted {first.inserted:,}, updated {first.updated:,})"
        )
        second = store.ingest_panel(panel)
        print(
            f"ingest_panel again (idempotent): {second.seconds:.1f} s, {second.rows / second.seconds:,.0f} rows/s "
            f"(inserted {second.inserted:,}, updated {second.updated:,})"
        )
        started = time.perf_counter()
        loaded = store.load_panel()
        seconds = time.perf_counter() - started
        print(f"load_panel (all {loaded.height:,} rows): {seconds:.1f} s; equals the input: {loaded.equals(panel)}")
        if args.no_model:
            return
        started = time.perf_counter()
        model = build_model(panel, ModelConfig())
        print(f"build_model: {time.perf_counter() - started:.1f} s (not storage)")
        run = store.create_run({"bench": True})
        store.start_run(run.id)
        started = time.perf_counter()
        summary = store.save_model(run.id, model, timings={})
        print(
            f"save_model ({summary.n_dates} dates, {summary.n_assets} assets, {len(summary.factors)} factors): "
            f"{time.perf_counter() - started:.1f} s"
        )
        print(f"factor_returns (best of 20): {best_of(20, lambda: store.factor_returns(run.id)):.1f} ms")
        print(f"snapshot, last date (best of 20): {best_of(20, lambda: store.snapshot(run.id)):.1f} ms")
        started = time.perf_counter()
        store.load_model(run.id)
        print(f"load_model (everything): {time.perf_counter() - started:.1f} s")
    finally:
        store.close()
        drop_schema(args.url)


if __name__ == "__main__":
    main()
