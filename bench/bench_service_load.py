"""Load test of ``POST /portfolio/exposures``: latency percentiles under concurrent clients.

Builds a risk model of a synthetic market (``--assets`` × ``--days``, seed 0) straight into the store (an
isolated PostgreSQL schema by default), starts ``factor-engine serve`` on it in a subprocess, warms it up,
then runs ``--clients`` concurrent clients (threads, one keep-alive HTTP connection each) that each send
``--requests`` portfolio-exposure requests for a portfolio of every asset of the model's last date
(random long-only weights, a fresh portfolio per client). Prints p50 / p95 / p99 / max latency in
milliseconds, throughput, and checks one response against the library
(:func:`factor_engine.portfolio.portfolio_exposures` on the stored snapshot).

Also times ``GET /models/{id}/factor-returns`` (the model's whole history, best of 20).

Targets: p95 ≤ 50 ms for a 3,000-asset portfolio under 20 concurrent clients; reading ten years of factor
returns ≤ 200 ms.

Usage::

    python bench/bench_service_load.py                                # PostgreSQL, 3000 assets x 2520 days
    python bench/bench_service_load.py --database sqlite --assets 500 --days 300 --requests 20
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from factor_engine.portfolio import portfolio_exposures
from factor_engine.storage import connect
from service_harness import PREFIX, Server, drop_schema, empty_store, prepare_store, service_env

SCHEMA = "bench_service_load"


def client(port: int, bodies: list[bytes], latencies: list[float], errors: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    for body in bodies:
        start = time.perf_counter()
        connection.request("POST", f"{PREFIX}/portfolio/exposures", body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        latencies.append(time.perf_counter() - start)
        if response.status != 200:
            errors.append(f"{response.status}: {payload[:200]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=3000)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fe_load_"))
    url, schema = empty_store(args.database, SCHEMA, workdir)
    model_id, day, symbols = prepare_store(url, schema, args.assets, args.days, "bench_service_load")

    server = Server(service_env(url, schema))
    port = server.port
    try:
        rng = np.random.default_rng(1)

        def body(weights: np.ndarray) -> bytes:
            portfolio = dict(zip(symbols, weights.tolist(), strict=True))
            return json.dumps({"model_id": model_id, "date": day, "weights": portfolio}).encode()

        portfolios = [rng.dirichlet(np.ones(len(symbols))) for _ in range(args.clients)]
        # correctness: one response against the library on the stored snapshot
        check = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        check.request("POST", f"{PREFIX}/portfolio/exposures", body=body(portfolios[0]),
                      headers={"Content-Type": "application/json"})  # fmt: skip
        response = check.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"portfolio/exposures answered {response.status}: {answer}")
        store = connect(url, schema=schema, migrate=False)
        snapshot = store.snapshot(model_id)
        store.close()
        expected = portfolio_exposures(snapshot, dict(zip(symbols, portfolios[0].tolist(), strict=True)))
        served = {row["factor"]: row["portfolio"] for row in answer["exposures"]}
        library = dict(zip(expected["factor"], expected["portfolio"], strict=True))
        if served != library:
            raise RuntimeError(f"portfolio/exposures differs from the library: {served} != {library}")
        print(f"one response equals portfolio_exposures on the stored snapshot ({len(served)} factors)")

        # reading the model's whole history of factor returns over HTTP (no cache configured)
        reads = []
        for _ in range(20):
            tic = time.perf_counter()
            check.request("GET", f"{PREFIX}/models/{model_id}/factor-returns")
            read = check.getresponse()
            history = json.loads(read.read())
            reads.append(time.perf_counter() - tic)
        print(
            f"GET /models/{{id}}/factor-returns: {len(history['dates']):,} dates x {len(history['factors'])} factors, "
            f"best of 20 {min(reads) * 1000:.1f} ms, median {np.median(reads) * 1000:.1f} ms (target <= 200 ms)"
        )

        warm: list[float] = []
        client(port, [body(portfolios[0])] * 20, warm, [])
        latencies: list[list[float]] = [[] for _ in range(args.clients)]
        errors: list[str] = []
        threads = [
            threading.Thread(target=client, args=(port, [body(portfolios[c])] * args.requests, latencies[c], errors))
            for c in range(args.clients)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        values = np.array([x for per_client in latencies for x in per_client]) * 1000
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        print(
            f"{args.clients} clients x {args.requests} requests, {len(symbols):,}-asset portfolio "
            f"({args.database}): p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {values.max():.1f} ms, "
            f"{values.size / elapsed:.0f} requests/s, {len(errors)} errors (target p95 <= 50 ms: "
            f"{'ok' if p95 <= 50 else 'OVER TARGET'})"
        )
        if errors:
            print("first errors:", errors[:3])
    finally:
        server.stop()
        if schema:
            drop_schema(url, schema)


if __name__ == "__main__":
    main()
