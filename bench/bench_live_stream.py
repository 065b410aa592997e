"""Bench of the live stream (``WebSocket /live/stream/{model_id}``): message → pushed factor returns latency.

Builds a risk model of a synthetic market (``--assets`` × ``--days``, seed 0, default configuration) through the
close of the day before its last date, saves its last date (what a live session reads) and that close's panel
rows (the caps) in a fresh SQLite store, and starts ``factor-engine serve`` on it in a subprocess on loopback.

Then, on one channel:

* a producer connection sets the closes and sends ``--rate`` update messages per second for ``--seconds``
  seconds, each the prices of ``--batch`` random assets (the last date's returns, scaled by how far into the
  "day" the message is), with an increasing ``id``; it reads its own pushes on a reader thread;
* a second fast client only reads.

For every message the latency is the time from its send to the receipt of the first pushed result whose
``update_id`` is at least its id (updates arriving during a solve are coalesced into the next result, which
includes them). Printed: p50 / p95 / p99 / max in milliseconds and the counts, for both clients. The run is done
twice: with these two clients alone, then with a third, slow client that sets a portfolio (its pushes carry
the portfolio's figures, about 5 KB each) and never reads during the run (its socket's receive buffer shrunk,
so the socket buffers fill and the service's sends to it block). The producer's and the watcher's latencies
should not change; the slow client's ``dropped_results`` is read at the end.

``--reading-portfolio`` adds to the first run a third client with the same portfolio that reads like the
others: the service then computes the portfolio's live figures on every push, a heavier load than the target's.

Target: p95 ≤ 50 ms at 100 messages per second on 3,000 assets.

Usage::

    python bench/bench_live_stream.py                          # 3000 assets x 600 days, 100 msg/s, 20 s
    python bench/bench_live_stream.py --assets 500 --seconds 5
    python bench/bench_live_stream.py --reading-portfolio
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import websocket  # websocket-client

from factor_engine.config import ModelConfig
from factor_engine.model import build_model
from factor_engine.storage import connect
from factor_engine.synthetic import generate_market
from service_harness import PREFIX, Server, service_env


def prepare(url: str, assets: int, days: int) -> tuple[str, dict[str, float], pl.DataFrame]:
    """Build the model through the previous close and store its last date; returns (model id, closes, the
    last date's rows with their returns)."""
    market = generate_market(assets, days, seed=0)
    panel = market.panel
    last = panel.get_column("date").max()
    before = panel.filter(pl.col("date") < last)
    tic = time.perf_counter()
    model = build_model(before, ModelConfig())
    close = before.get_column("date").max()
    built = time.perf_counter() - tic
    store = connect(url)
    try:
        store.ingest_panel(before.filter(pl.col("date") == close))
        run = store.create_run({"source": "bench_live_stream", "assets": assets, "days": days})
        store.start_run(run.id)
        store.save_model(run.id, model.between(start=close), timings={})
    finally:
        store.close()
    today = panel.filter((pl.col("date") == last) & pl.col("asset_returns").is_not_null())
    symbols = set(model.exposures.filter(pl.col("date") == close).get_column("symbol").to_list())
    today = today.filter(pl.col("symbol").is_in(list(symbols)))
    rng = np.random.default_rng(1)
    closes = {symbol: float(rng.uniform(5.0, 500.0)) for symbol in today.get_column("symbol").to_list()}
    print(
        f"model {run.id}: {assets:,} assets x {days} days built through {close} in {built:.1f} s; "
        f"{len(model.factors)} factors; {len(closes):,} assets priced today"
    )
    return run.id, closes, today


class Reader(threading.Thread):
    """Reads a connection's pushes and records when each update id was first covered by a result."""

    def __init__(self, connection: websocket.WebSocket, name: str, first_id: int) -> None:
        super().__init__(name=name, daemon=True)
        self.connection = connection
        self.covered: dict[int, float] = {}
        self.highest = first_id - 1  # ids below the run's first are not this run's
        self.results = 0
        self.errors: list[str] = []
        self.solve_ms: list[float] = []
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            try:
                text = self.connection.recv()
            except (websocket.WebSocketTimeoutException, TimeoutError):
                continue
            except (websocket.WebSocketConnectionClosedException, OSError):
                return
            now = time.perf_counter()
            if not text:  # the connection is closing
                return
            message = json.loads(text)
            if message["type"] == "error":
                self.errors.append(message["detail"])
            if message["type"] != "factor_returns" or not isinstance(message.get("update_id"), int):
                continue
            self.results += 1
            self.solve_ms.append(message["solve_ms"])
            update_id = message["update_id"]
            if update_id < self.highest:  # a result pushed before this run's messages
                continue
            for covered in range(self.highest + 1, update_id + 1):
                self.covered[covered] = now
            self.highest = max(self.highest, update_id)


def open_client(url: str, *, receive_buffer: int | None = None) -> websocket.WebSocket:
    options: tuple[tuple[int, int, int], ...] = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
    if receive_buffer is not None:
        options += ((socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer),)
    connection = websocket.create_connection(url, timeout=30, sockopt=options)
    ready = json.loads(connection.recv())
    if ready["type"] != "ready":
        raise RuntimeError(f"expected the ready message, got {ready}")
    connection.settimeout(0.5)
    return connection


def percentiles(latencies: list[float]) -> str:
    values = 1e3 * np.asarray(latencies)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return f"p50 {p50:6.2f}  p95 {p95:6.2f}  p99 {p99:6.2f}  max {values.max():7.2f} ms  (n={values.size})"


def run_phase(
    base: str, closes: dict[str, float], today: pl.DataFrame, args: argparse.Namespace, *, slow: bool, first_id: int
) -> dict[str, Any]:
    """One timed run on a fresh channel: a producer and a watcher, with a third client with a portfolio that
    never reads (``slow``; its receive buffer shrunk) or, with ``--reading-portfolio``, reads like the others.
    Returns the latencies of the reading clients and what the slow one saw."""
    channel = f"bench-{'slow' if slow else 'alone'}"
    url = f"{base}{PREFIX}/live/stream/{args.model_id}?channel={channel}"
    producer = open_client(url)
    watcher = open_client(url)
    readers = [Reader(producer, "producer", first_id), Reader(watcher, "watcher", first_id)]
    third = None
    if slow or args.reading_portfolio:
        third = open_client(url, receive_buffer=4096 if slow else None)
        # a portfolio: its pushes (~5 KB) fill the slow client's socket buffers sooner
        held = today.get_column("symbol").to_list()[: args.batch]
        weights = dict.fromkeys(held, 1.0 / len(held))
        portfolio = {"type": "portfolio", "weights": weights, "unknown": "drop", "allow_unnormalized": True}
        third.send(json.dumps(portfolio))
        if not slow:
            readers.append(Reader(third, "portfolio", first_id))
    for reader in readers:
        reader.start()
    producer.send(json.dumps({"type": "closes", "closes": closes}))
    symbols = today.get_column("symbol").to_list()
    day_returns = today.get_column("asset_returns").to_numpy()
    close_values = np.array([closes[s] for s in symbols])
    rng = np.random.default_rng(7)
    n_messages = int(args.rate * args.seconds)
    texts = []  # encoded before the run: the producer's own work does not take CPU from the service meanwhile
    for i in range(n_messages):
        chosen = rng.choice(len(symbols), size=min(args.batch, len(symbols)), replace=False)
        progress = (i + 1) / n_messages  # the day's move unfolds over the run
        prices = close_values[chosen] * (1.0 + progress * day_returns[chosen] + rng.normal(0, 1e-4, chosen.size))
        batch = dict(zip([symbols[j] for j in chosen], prices.tolist(), strict=True))
        texts.append(json.dumps({"type": "update", "id": first_id + i, "prices": batch}))
    sent: dict[int, float] = {}
    start = time.perf_counter() + 0.2
    for i, text in enumerate(texts):
        due = start + i / args.rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        sent[first_id + i] = time.perf_counter()
        producer.send(text)
    deadline = time.perf_counter() + 5.0
    last_id = first_id + n_messages - 1
    while time.perf_counter() < deadline and any(r.highest < last_id for r in readers):
        time.sleep(0.01)
    for reader in readers:
        reader.stop = True
    dropped = None
    if slow and third is not None:  # read what the slow client has now: its pushes say how many results it missed
        third.settimeout(5.0)
        with_drops = [0]
        try:
            while True:
                message = json.loads(third.recv())
                if message["type"] == "factor_returns":
                    with_drops.append(message["dropped_results"])
                    if message.get("update_id") == last_id:
                        break
        except (websocket.WebSocketTimeoutException, TimeoutError):
            pass
        dropped = max(with_drops), len(with_drops) - 1
    for connection in (producer, watcher, third):
        if connection is not None:
            connection.close()
    for reader in readers:
        reader.join(timeout=2)
    out: dict[str, Any] = {"dropped": dropped, "messages": n_messages}
    for reader in readers:
        out[reader.name] = {
            "latencies": [reader.covered[i] - sent[i] for i in sent if i in reader.covered],
            "missing": sum(1 for i in sent if i not in reader.covered),
            "results": reader.results,
            "errors": reader.errors,
            "solve_ms": reader.solve_ms,
        }
    return out


def report(title: str, phase: dict[str, Any]) -> float:
    print(f"\n{title}: {phase['messages']} messages sent")
    worst = 0.0
    for name in ("producer", "watcher", "portfolio"):
        if name not in phase:
            continue
        data = phase[name]
        print(
            f"  {name:8s} {percentiles(data['latencies'])}; {data['results']} pushes received, "
            f"{data['missing']} messages never covered, {len(data['errors'])} errors"
        )
        if data["errors"]:
            print(f"           first error: {data['errors'][0]}")
        worst = max(worst, float(np.percentile(1e3 * np.asarray(data["latencies"]), 95)))
    solve = np.asarray(phase["watcher"]["solve_ms"])
    print(
        f"  service time per result (updates applied + solve + payload): median {np.median(solve):.2f} ms, "
        f"p95 {np.percentile(solve, 95):.2f} ms"
    )
    if phase["dropped"] is not None:
        dropped, read = phase["dropped"]
        print(
            f"  slow client (portfolio, never read during the run): {dropped} results dropped from its queue; "
            f"{read} were waiting in its socket buffers and queue when it finally read"
        )
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=3000)
    parser.add_argument("--days", type=int, default=600)
    parser.add_argument("--rate", type=float, default=100.0, help="update messages per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each of the two runs")
    parser.add_argument("--batch", type=int, default=300, help="asset prices per message")
    parser.add_argument(
        "--reading-portfolio", action="store_true", help="first run: a third client with a portfolio that reads"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_live_") as folder:
        url = f"sqlite:///{Path(folder) / 'fe.db'}"
        args.model_id, closes, today = prepare(url, args.assets, args.days)
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            try:
                server = Server(service_env(url, None), log=log)
            except RuntimeError:
                print(log_path.read_text()[-3000:])
                raise
        try:
            base = server.base.replace("http://", "ws://")
            # warm up: the service prepares the model for live sessions on the first connection
            run_phase(base, closes, today, argparse.Namespace(**{**vars(args), "seconds": 1.0}), slow=False, first_id=0)
            alone = run_phase(base, closes, today, args, slow=False, first_id=1_000_000)
            crowded = run_phase(base, closes, today, args, slow=True, first_id=2_000_000)
        finally:
            server.stop()
    print(f"\n{args.assets:,} assets, {args.rate:g} messages/s of {args.batch} prices, {args.seconds:g} s per run")
    print(f"load average at the end (1, 5, 15 min; {os.cpu_count()} cores): {os.getloadavg()}")
    first = "with a third client with a portfolio that reads" if args.reading_portfolio else "without a slow client"
    p95_alone = report(first, alone)
    p95_crowded = report("with a slow client that never reads", crowded)
    verdict = "met" if max(p95_alone, p95_crowded) <= 50.0 else "NOT met"
    print(f"\ntarget p95 <= 50 ms: {verdict} (worst p95 {max(p95_alone, p95_crowded):.2f} ms)")


if __name__ == "__main__":
    main()
