"""Hostile requests against a real ``factor-engine serve`` (issue 10): what each attack costs the server.

For each attack the bench prints the status code, the time to answer and the server's peak RSS increase over
its resting RSS (sampled every few milliseconds from /proc), and the p95 of ``GET /health`` polled during the
attack. Attacks so far:

* ``unauthenticated body``: three clients at once each declare and start streaming a 200 MB JSON body to
  ``POST /factors/momentum`` without the API key. Target: 401 in ≤ 50 ms, ≤ 20 MB RSS increase, /health p95
  ≤ 50 ms.
* ``out-of-bounds config``: ``POST /risk-model/create`` (with the key) asking for 10^9 eigenfactor simulations
  and 10^9 size groups. Target: 422 without starting a build (``GET /jobs`` stays empty), /health p95 ≤ 50 ms.
* ``decompression bomb``: ``POST /data/panel/upload`` (with the key) of a zstd Parquet file of 20,000,000
  identical (date, symbol, asset_returns) rows, a few hundred KB on the wire and about 400 MB once decoded.
  Target: 413 (above FACTOR_ENGINE_MAX_UPLOAD_ROWS, decided from the file's metadata), ≤ 100 MB RSS increase,
  /health p95 ≤ 50 ms, nothing stored.
* ``NUL and over-long labels``: ``POST /data/panel`` with the symbol "A\\u0000B", the same with a
  10,000-character symbol, and an upload with a 10,000-character sector. Target: 422 each (not a 500 from
  PostgreSQL's "index row size exceeds maximum"), nothing stored.

Usage::

    python bench/bench_hostile.py                      # SQLite store in a temporary folder
    python bench/bench_hostile.py --database postgresql # PostgreSQL at 127.0.0.1:5432, a schema of its own
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from service_harness import PG_URL, PREFIX, Server, drop_schema, service_env

API_KEY = "bench-hostile-key"
BODY_BYTES = 200_000_000
ATTACKERS = 3
CHUNK = b"[" + b"0," * 32_767 + b"0]"  # 64 KiB of JSON-looking bytes
BOMB_ROWS = 20_000_000
BOMB_GROUP_ROWS = 1_000_000
LONG_LABEL = "A" * 10_000


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (bytes), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class PeakRss:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self.pid, self.interval = pid, interval
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class HealthPoller:
    """Polls ``GET /health`` until stopped; ``latencies`` holds each answer's seconds."""

    def __init__(self, base: str) -> None:
        self.url = f"{base}{PREFIX}/health"
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as response:
                response.read()
            self.latencies.append(time.perf_counter() - start)
            time.sleep(0.005)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def p95(self) -> float:
        return statistics.quantiles(self.latencies, n=20)[-1] if len(self.latencies) >= 2 else float("nan")


def unauthenticated_body(port: int) -> tuple[int, float]:
    """Declare a BODY_BYTES body without a key and stream it until the server answers: (status, seconds from
    the end of the headers to the status line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (
            f"POST {PREFIX}/factors/momentum HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {BODY_BYTES}\r\n\r\n"
        ).encode()
        sock.sendall(head)
        start = time.perf_counter()
        answered = threading.Event()

        def stream() -> None:
            sent = 0
            try:
                while sent < BODY_BYTES and not answered.is_set():
                    sock.sendall(CHUNK)
                    sent += len(CHUNK)
            except OSError:
                pass  # the server answered and closed the connection

        sender = threading.Thread(target=stream, daemon=True)
        sender.start()
        reply = sock.recv(256)
        elapsed = time.perf_counter() - start
        answered.set()
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else -1
    return status, elapsed


def out_of_bounds_config(base: str) -> tuple[int, float, int]:
    """(status, seconds, runs created) of a build request whose config is far outside the service's bounds."""
    body = json.dumps(
        {"config": {"adjustments": {"eigenfactor_simulations": 10**9}, "specific_risk": {"n_size_groups": 10**9}}}
    ).encode()
    headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
    request = urllib.request.Request(f"{base}{PREFIX}/risk-model/create", data=body, headers=headers, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    elapsed = time.perf_counter() - start
    jobs = urllib.request.Request(f"{base}{PREFIX}/jobs", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(jobs, timeout=10) as response:
        runs = len(json.loads(response.read()))
    return status, elapsed, runs


def write_bomb(path: Path) -> int:
    """Write BOMB_ROWS identical rows as a zstd Parquet file at ``path``, one repeated BOMB_GROUP_ROWS-row
    table per row group (so building it needs one group in memory, not the whole file); its size in bytes."""
    group = pa.table(
        {
            "date": pa.array([datetime.date(2024, 1, 2)] * BOMB_GROUP_ROWS, pa.date32()),
            "symbol": pa.array(["AAPL"] * BOMB_GROUP_ROWS, pa.string()),
            "asset_returns": pa.array([0.01] * BOMB_GROUP_ROWS, pa.float64()),
        }
    )
    with pq.ParquetWriter(path, group.schema, compression="zstd") as writer:
        for _ in range(BOMB_ROWS // BOMB_GROUP_ROWS):
            writer.write_table(group, row_group_size=BOMB_GROUP_ROWS)
    return path.stat().st_size


def post(base: str, path: str, body: bytes, content_type: str) -> tuple[int, float, str]:
    """(status, seconds, detail) of one POST with the API key."""
    headers = {"Content-Type": content_type, "X-API-Key": API_KEY}
    request = urllib.request.Request(f"{base}{PREFIX}{path}", data=body, headers=headers, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    elapsed = time.perf_counter() - start
    detail = json.loads(raw).get("detail", "") if raw else ""
    return status, elapsed, detail if isinstance(detail, str) else json.dumps(detail)


def stored_rows(base: str) -> int:
    """Rows of the stored panel (GET /data/summary)."""
    request = urllib.request.Request(f"{base}{PREFIX}/data/summary", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        rows: int = json.loads(response.read())["rows"]
    return rows


def label_attacks(base: str) -> list[tuple[str, int, float, str]]:
    """(name, status, seconds, detail) of the NUL and over-long label requests."""
    row = {"date": "2024-01-02", "symbol": "AAPL", "asset_returns": 0.01, "sector": "Widgets"}
    answers = []
    for name, changed in (("NUL symbol", {"symbol": "A\u0000B"}), ("10,000-char symbol", {"symbol": LONG_LABEL})):
        body = json.dumps({"rows": [{**row, **changed}]}).encode()
        answers.append((f"JSON {name}", *post(base, "/data/panel", body, "application/json")))
    buffer = io.BytesIO()
    pq.write_table(
        pa.table(
            {
                "date": pa.array([datetime.date(2024, 1, 2)], pa.date32()),
                "symbol": ["AAPL"],
                "asset_returns": [0.01],
                "sector": [LONG_LABEL],
            }
        ),
        buffer,
    )
    answers.append(
        (
            "upload 10,000-char sector",
            *post(base, "/data/panel/upload", buffer.getvalue(), "application/vnd.apache.parquet"),
        )
    )
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    schema = None
    with tempfile.TemporaryDirectory() as folder:
        if args.database == "postgresql":
            url, schema = PG_URL, f"bench_hostile_{uuid.uuid4().hex[:8]}"
        else:
            url = f"sqlite:///{Path(folder) / 'hostile.db'}"
        env = {**service_env(url, schema), "FACTOR_ENGINE_API_KEY": API_KEY}
        server = Server(env)
        failures = 0
        try:
            time.sleep(0.5)
            resting = rss_bytes(server.process.pid)
            results: list[tuple[int, float]] = []
            with PeakRss(server.process.pid) as peak, HealthPoller(server.base) as health:
                threads = [
                    threading.Thread(target=lambda: results.append(unauthenticated_body(server.port)))
                    for _ in range(ATTACKERS)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                time.sleep(0.2)
            increase = (peak.peak - resting) / 2**20
            slowest = max(seconds for _, seconds in results)
            statuses = sorted({status for status, _ in results})
            ok = statuses == [401] and slowest <= 0.050 and increase <= 20 and health.p95() <= 0.050
            failures += not ok
            print(
                f"unauthenticated body ({args.database}): {ATTACKERS} x {BODY_BYTES / 1e6:.0f} MB, status {statuses}, "
                f"answered in ≤ {1000 * slowest:.1f} ms, server RSS +{increase:.1f} MiB (resting "
                f"{resting / 2**20:.0f} MiB), /health p95 {1000 * health.p95():.1f} ms over "
                f"{len(health.latencies)} calls: {'ok' if ok else 'OVER TARGET'}"
            )
            resting = rss_bytes(server.process.pid)
            with PeakRss(server.process.pid) as peak, HealthPoller(server.base) as health:
                status, seconds, runs = out_of_bounds_config(server.base)
                time.sleep(0.2)
            increase = (peak.peak - resting) / 2**20
            ok = status == 422 and runs == 0 and health.p95() <= 0.050
            failures += not ok
            print(
                f"out-of-bounds config ({args.database}): status {status} in {1000 * seconds:.1f} ms, {runs} build "
                f"run(s) created, server RSS +{increase:.1f} MiB, /health p95 {1000 * health.p95():.1f} ms: "
                f"{'ok' if ok else 'OVER TARGET'}"
            )
            bomb = Path(folder) / "bomb.parquet"
            size = write_bomb(bomb)
            body = bomb.read_bytes()
            time.sleep(0.5)
            resting = rss_bytes(server.process.pid)
            with PeakRss(server.process.pid) as peak, HealthPoller(server.base) as health:
                status, seconds, detail = post(
                    server.base, "/data/panel/upload", body, "application/vnd.apache.parquet"
                )
                time.sleep(0.2)
            increase = (peak.peak - resting) / 2**20
            rows = stored_rows(server.base)
            ok = status == 413 and increase <= 100 and health.p95() <= 0.050 and rows == 0
            failures += not ok
            print(
                f"decompression bomb ({args.database}): {BOMB_ROWS:,} rows in {size / 1e3:.0f} KB of zstd Parquet, "
                f"status {status} in {1000 * seconds:.1f} ms, server RSS +{increase:.1f} MiB, /health p95 "
                f"{1000 * health.p95():.1f} ms over {len(health.latencies)} calls, {rows} rows stored: "
                f"{'ok' if ok else 'OVER TARGET'}\n  {detail}"
            )
            resting = rss_bytes(server.process.pid)
            with PeakRss(server.process.pid) as peak, HealthPoller(server.base) as health:
                answers = label_attacks(server.base)
                time.sleep(0.2)
            increase = (peak.peak - resting) / 2**20
            rows = stored_rows(server.base)
            ok = all(status == 422 for _, status, _, _ in answers) and rows == 0
            failures += not ok
            print(
                f"NUL and over-long labels ({args.database}): "
                + ", ".join(f"{name} {status} in {1000 * seconds:.1f} ms" for name, status, seconds, _ in answers)
                + f"; server RSS +{increase:.1f} MiB, /health p95 {1000 * health.p95():.1f} ms, {rows} rows stored: "
                f"{'ok' if ok else 'OVER TARGET'}"
            )
            for name, _, _, detail in answers:
                print(f"  {name}: {detail[:160]}")
        finally:
            server.stop()
            if schema is not None:
                drop_schema(url, schema)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
