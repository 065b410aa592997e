"""Hostile requests against a real ``factor-engine serve`` (issue 10): what each attack costs the server.

For each attack the bench prints the status code, the time to answer and the server's peak RSS increase over
its resting RSS (sampled every few milliseconds from /proc), and the p95 of ``GET /health`` polled during the
attack. Attacks so far:

* ``unauthenticated body``: three clients at once each declare and start streaming a 200 MB JSON body to
  ``POST /factors/momentum`` without the API key. Target: 401 in ≤ 50 ms, ≤ 20 MB RSS increase, /health p95
  ≤ 50 ms.
* ``out-of-bounds config``: ``POST /risk-model/create`` (with the key) asking for 10^9 eigenfactor simulations
  and 10^9 size groups. Target: 422 without starting a build (``GET /jobs`` stays empty), /health p95 ≤ 50 ms.
* ``sparse rows``: ``POST /factors/momentum`` and ``POST /factors/beta`` (with the key) of 20,000 JSON rows, each
  on a date and a symbol of its own (1.4 MB): 400 million (date, symbol) cells for the kernels' dense grids
  (before the cell limit, momentum took 40 s and 13 GB on them). Target: 422 naming
  FACTOR_ENGINE_MAX_SCORE_CELLS in ≤ 0.5 s, ≤ 50 MB RSS increase, /health p95 ≤ 50 ms.
* ``decompression bomb``: ``POST /data/panel/upload`` (with the key) of a zstd Parquet file of 20,000,000
  identical (date, symbol, asset_returns) rows, a few hundred KB on the wire and about 400 MB once decoded.
  Target: 413 (above FACTOR_ENGINE_MAX_UPLOAD_ROWS, decided from the file's metadata), ≤ 100 MB RSS increase,
  /health p95 ≤ 50 ms, nothing stored.
* ``NUL and over-long labels``: ``POST /data/panel`` with the symbol "A\\u0000B", the same with a
  10,000-character symbol, and an upload with a 10,000-character sector. Target: 422 each (not a 500 from
  PostgreSQL's "index row size exceeds maximum"), nothing stored.
* ``concurrent builds`` (on a second server, FACTOR_ENGINE_MAX_QUEUED_BUILDS=2, one build slot, a 600 × 500
  synthetic panel whose build takes a few seconds): 3 direct (``"background": false``) and 6 background build
  requests at once; then, while a build runs and the queue is full, one more background and one more direct
  request. Target: one build running at a time, at most 2 queued, every other request 503 with
  ``Retry-After``; the probes on the full service refused before their data is looked at: background in
  ≤ 50 ms, direct in ≤ 0.6 s (they wait 0.5 s for a slot a finishing build may free); runs created
  (``GET /jobs``) = requests accepted, every accepted job succeeded, the server's peak RSS increase within
  one build's estimate (``estimate_build_bytes``). The burst's own refusals are printed: they come after the
  data checks of the requests that arrived with them (all see a free queue at first).
* ``memory budget``: FACTOR_ENGINE_BUILD_MEMORY_BUDGET_BYTES between the estimates of a default build and of
  one with 10,000 eigenfactor simulations; the latter requested. Target: 422 naming the budget, no run created.
* ``redis failures`` (REDIS_URL to a throwaway ``redis-server``): a small direct build, ``GET /models/{id}``
  and ``/models/{id}/covariance`` twice each, redis-server killed, the same reads again, ``/health``,
  ``DELETE /models/{id}``, the reads again. Target: X-Cache miss then hit; after the kill 200 with the same
  bodies (X-Cache bypass), /health 200 "degraded", DELETE 204, then 404.
* ``database lost mid-build`` (PostgreSQL only; the SQLite store is a local file): a server reaching
  PostgreSQL through a TCP proxy (``tests/tcp_proxy.py``) with FACTOR_ENGINE_RUN_LEASE_SECONDS=3, a
  background build cut off while running for two leases, then the network restored. Target: the run still
  "running" in the database after the two leases, "failed" ≤ one lease after the restore, its retry
  succeeded; /health 503 meanwhile without the database's user, host, port, schema or name.
* ``leaks and exemptions``: without the key ``/docs``, ``/redoc``, ``/openapi.json``, ``/info``, ``/models``
  401 and the public ``/health`` and ``/dashboard`` 200; ``factor-engine serve --host 0.0.0.0`` without a key
  warns on stderr; /health with the database down (PostgreSQL: from the database-lost attack) leaks nothing.

The exit code is 1 when any attack is over its target.

Usage::

    python bench/bench_hostile.py                      # SQLite store in a temporary folder
    python bench/bench_hostile.py --database postgresql # PostgreSQL at 127.0.0.1:5432, a schema of its own
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import make_url

from factor_engine.service.budget import estimate_build_bytes
from factor_engine.service.builds import check_build_extent, model_config
from factor_engine.service.schemas import CreateModelRequest
from factor_engine.storage import connect
from factor_engine.synthetic import generate_market
from service_harness import BIN, PG_URL, PREFIX, Server, drop_schema, free_port, service_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tcp_proxy import TcpProxy  # the tests' TCP proxy, found through the path above

API_KEY = "bench-hostile-key"
BODY_BYTES = 200_000_000
ATTACKERS = 3
CHUNK = b"[" + b"0," * 32_767 + b"0]"  # 64 KiB of JSON-looking bytes
BOMB_ROWS = 20_000_000
SPARSE_ROWS = 20_000
BOMB_GROUP_ROWS = 1_000_000
LONG_LABEL = "A" * 10_000
MARKET_ASSETS, MARKET_DAYS = 600, 500  # one build of this synthetic panel takes a few seconds
DIRECT_BUILDS, BACKGROUND_BUILDS = 3, 6
QUEUED_BUILDS = 2  # FACTOR_ENGINE_MAX_QUEUED_BUILDS of the builds server
EIGEN_SIMULATIONS = 10_000
HEAVY_CONFIG: dict[str, Any] = {"adjustments": {"eigenfactor_simulations": EIGEN_SIMULATIONS}}
SMALL_BUILD: dict[str, Any] = {
    "background": False,
    "universe_size": 100,
    "start_date": "2016-06-01",
    "history_days": 365,
}
LEASE_SECONDS = 3.0  # FACTOR_ENGINE_RUN_LEASE_SECONDS of the database-lost server
CLOSED_PATHS = ("/docs", "/redoc", "/openapi.json", f"{PREFIX}/info", f"{PREFIX}/models")
PUBLIC = (f"{PREFIX}/health", "/dashboard")
OPEN_SERVER_SECONDS = 3.0


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
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    response.read()
            except urllib.error.HTTPError as error:  # 503 while the database is down: an answer all the same
                error.read()
            except OSError:
                pass  # no answer within the timeout: counted at its full time
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


def sparse_rows_body(n: int) -> bytes:
    """The JSON body of ``n`` score rows, each on a date and a symbol of its own (``n`` × ``n`` cells)."""
    start = datetime.date(1950, 1, 2)
    rows = [
        {"symbol": f"S{i:05d}", "date": str(start + datetime.timedelta(days=i)), "asset_returns": 0.01}
        for i in range(n)
    ]
    return json.dumps({"data": rows}).encode()


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


# --------------------------------------------------------------------------------------------------
# requests


class Answer(NamedTuple):
    """One HTTP answer: status, headers, body and seconds from the request to the end of the body."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def detail(self) -> str:
        try:
            detail = self.json().get("detail", "")
        except (ValueError, AttributeError):
            return self.body[:160].decode(errors="replace")
        return detail if isinstance(detail, str) else json.dumps(detail)


def request(
    base: str, method: str, path: str, body: dict[str, Any] | None = None, *, key: bool = True, prefix: str = PREFIX
) -> Answer:
    """One request to ``base + prefix + path`` (with the API key unless ``key`` is false)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = API_KEY
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(f"{base}{prefix}{path}", data=data, headers=headers, method=method)
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(call, timeout=300) as response:
            status, headers_out, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers_out, raw = error.code, dict(error.headers), error.read()
    return Answer(
        status, {name.lower(): value for name, value in headers_out.items()}, raw, time.perf_counter() - start
    )


def wait_for_jobs(base: str, job_ids: list[str], timeout: float = 600.0) -> dict[str, dict[str, Any]]:
    """The final state of each job (succeeded or failed), polled until all have ended."""
    ended: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < len(job_ids) and time.monotonic() < deadline:
        for job_id in job_ids:
            if job_id not in ended:
                answer = request(base, "GET", f"/jobs/{job_id}")
                if answer.status == 200 and answer.json()["status"] in ("succeeded", "failed"):
                    ended[job_id] = answer.json()
        time.sleep(0.2)
    return ended


def verdict(ok: bool) -> str:
    return "ok" if ok else "OVER TARGET"


class Attack:
    """The RSS peak and /health latencies around one attack on ``server``."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __enter__(self) -> Attack:
        time.sleep(0.3)
        self.resting = rss_bytes(self.server.process.pid)
        self.peak = PeakRss(self.server.process.pid).__enter__()
        self.health = HealthPoller(self.server.base).__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.2)
        self.health.__exit__()
        self.peak.__exit__()

    @property
    def increase_mib(self) -> float:
        return (self.peak.peak - self.resting) / 2**20

    def figures(self) -> str:
        return (
            f"server RSS +{self.increase_mib:.1f} MiB (resting {self.resting / 2**20:.0f} MiB), /health p95 "
            f"{1000 * self.health.p95():.1f} ms over {len(self.health.latencies)} calls"
        )


# --------------------------------------------------------------------------------------------------
# concurrent builds and the memory budget (issue item 3)


def build_estimates(url: str, schema: str | None) -> tuple[int, int]:
    """(estimated bytes of a default build, of a build with EIGEN_SIMULATIONS simulations) on the stored panel,
    as the service's admission computes them."""
    store = connect(url, schema=schema)
    try:
        estimates = []
        for config in (None, HEAVY_CONFIG):
            build = CreateModelRequest(config=config)
            model = model_config(build)
            extent, styles = check_build_extent(store, build, model)
            estimates.append(estimate_build_bytes(extent, model, len(styles)))
        return estimates[0], estimates[1]
    finally:
        store.close()


def concurrent_builds(server: Server, database: str, one_build_bytes: int) -> bool:
    """Fire DIRECT_BUILDS direct and BACKGROUND_BUILDS background builds at once; check the admission."""
    requests = [False] * DIRECT_BUILDS + [True] * BACKGROUND_BUILDS
    answers: list[Answer | None] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))
    most_running = most_queued = 0
    watching = threading.Event()

    def fire(index: int) -> None:
        barrier.wait()
        answers[index] = request(server.base, "POST", "/risk-model/create", {"background": requests[index]})

    def watch() -> None:
        nonlocal most_running, most_queued
        while not watching.is_set():
            answer = request(server.base, "GET", "/jobs?limit=1000")
            if answer.status == 200:
                states = [job["status"] for job in answer.json()]
                most_running = max(most_running, states.count("running"))
                most_queued = max(most_queued, states.count("queued"))
            time.sleep(0.02)

    with Attack(server) as attack:
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        threads = [threading.Thread(target=fire, args=(index,)) for index in range(len(requests))]
        for thread in threads:
            thread.start()
        # probes once a build runs and the queue is full (while the burst's direct build may still hold the slot)
        deadline = time.monotonic() + 120
        full = False
        while time.monotonic() < deadline and not full:
            states = [job["status"] for job in request(server.base, "GET", "/jobs?limit=1000").json()]
            full = states.count("running") == 1 and states.count("queued") == QUEUED_BUILDS
            time.sleep(0.01)
        late = request(server.base, "POST", "/risk-model/create", {"background": True})
        late_direct = request(server.base, "POST", "/risk-model/create", {"background": False})
        for thread in threads:
            thread.join()
        job_ids = [a.json()["job_id"] for a in answers if a is not None and a.status == 202]
        for probe in (late, late_direct):
            if probe.status == 202:
                job_ids.append(probe.json()["job_id"])
        ended = wait_for_jobs(server.base, job_ids)
        watching.set()
        watcher.join()
    done = [a for a in answers if a is not None]
    direct = done[:DIRECT_BUILDS]
    background = done[DIRECT_BUILDS:]
    accepted = [a for a in (*done, late, late_direct) if a.status in (200, 202)]
    refused = [a for a in (*done, late, late_direct) if a.status not in (200, 202)]
    runs = request(server.base, "GET", "/jobs?limit=1000").json()
    succeeded = [job_id for job_id, job in ended.items() if job["status"] == "succeeded"]
    slowest_direct = max((a.seconds for a in direct if a.status == 503), default=0.0)
    slowest_background = max((a.seconds for a in background if a.status == 503), default=0.0)
    checks = {
        "every request answered": len(done) == len(requests),
        "one build running at a time": most_running == 1,
        f"at most {QUEUED_BUILDS} queued at once": most_queued <= QUEUED_BUILDS,
        "refusals are 503 with Retry-After": all(a.status == 503 and "retry-after" in a.headers for a in refused),
        "the queue was seen full": full,
        "background refused on the full service ≤ 50 ms": late.status == 503 and late.seconds <= 0.050,
        "direct refused on the full service ≤ 0.6 s": late_direct.status == 503 and late_direct.seconds <= 0.6,
        "runs created = accepted": len(runs) == len(accepted),
        "accepted jobs succeeded": len(succeeded) == len(job_ids),
        "RSS increase ≤ one build's estimate": attack.increase_mib * 2**20 <= one_build_bytes,
    }
    ok = all(checks.values())
    missed = [name for name, held in checks.items() if not held]
    print(
        f"concurrent builds ({database}): {DIRECT_BUILDS} direct + {BACKGROUND_BUILDS} background at once "
        f"(FACTOR_ENGINE_MAX_QUEUED_BUILDS={QUEUED_BUILDS}, 1 slot): {len(accepted)} accepted, {len(runs)} run(s) "
        f"created, most running at once {most_running}, most queued at once {most_queued}, "
        f"{len(succeeded)}/{len(job_ids)} background job(s) succeeded; on the full service background refused "
        f"in {1000 * late.seconds:.1f} ms ({late.status}; target ≤ 50), direct in {1000 * late_direct.seconds:.0f} ms "
        f"({late_direct.status}; target ≤ 600); slowest refusal of the burst: direct {1000 * slowest_direct:.0f} ms, "
        f"background {1000 * slowest_background:.0f} ms; {attack.figures()}; one build estimated at "
        f"{one_build_bytes / 2**20:.0f} MiB: {verdict(ok)}{' (' + '; '.join(missed) + ')' if missed else ''}\n"
        "  direct: "
        + ", ".join(f"{a.status} in {1000 * a.seconds:.0f} ms" for a in direct)
        + "\n  background: "
        + ", ".join(f"{a.status} in {1000 * a.seconds:.1f} ms" for a in background)
    )
    shown = {a.detail() for a in refused}
    for detail in sorted(shown):
        print(f"  503 (Retry-After {refused[0].headers.get('retry-after')}): {detail[:200]}")
    return ok


def memory_budget(server: Server, database: str, budget: int, heavy_bytes: int) -> bool:
    """A build estimated above the budget: 422 and no run."""
    before = len(request(server.base, "GET", "/jobs?limit=1000").json())
    with Attack(server) as attack:
        answer = request(server.base, "POST", "/risk-model/create", {"config": HEAVY_CONFIG, "background": True})
    after = len(request(server.base, "GET", "/jobs?limit=1000").json())
    ok = answer.status == 422 and after == before
    print(
        f"memory budget ({database}): {EIGEN_SIMULATIONS:,} eigenfactor simulations, estimated "
        f"{heavy_bytes / 2**30:.2f} GiB, budget {budget / 2**30:.2f} GiB: status {answer.status} in "
        f"{1000 * answer.seconds:.1f} ms, {after - before} run(s) created, {attack.figures()}: {verdict(ok)}\n"
        f"  {answer.detail()}"
    )
    return ok


# --------------------------------------------------------------------------------------------------
# Redis failures (issue item 6)


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on ``port`` (no persistence), waited for until it accepts connections."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def redis_failures(server: Server, database: str, redis: subprocess.Popen[bytes]) -> bool:
    """Reads cached in Redis, Redis killed: reads from the database, /health degraded, delete → 404."""
    with Attack(server) as attack:
        built = request(server.base, "POST", "/risk-model/create", SMALL_BUILD)
        if built.status != 200:
            print(f"redis failures ({database}): the direct build answered {built.status}: {built.detail()}")
            return False
        model_id = built.json()["id"]
        paths = [f"/models/{model_id}", f"/models/{model_id}/covariance"]
        warm = {path: [request(server.base, "GET", path) for _ in range(2)] for path in paths}
        redis.kill()
        redis.wait()
        cold = {path: [request(server.base, "GET", path) for _ in range(2)] for path in paths}
        health = request(server.base, "GET", "/health", key=False)
        deleted = request(server.base, "DELETE", f"/models/{model_id}")
        gone = {path: request(server.base, "GET", path) for path in paths}
    cached_ok = all([a.headers.get("x-cache") for a in warm[path]] == ["miss", "hit"] for path in paths)
    same = all(
        a.status == 200 and a.body == warm[path][0].body and a.headers.get("x-cache") == "bypass"
        for path in paths
        for a in cold[path]
    )
    healthy = health.status == 200 and health.json().get("status") == "degraded"
    ok = cached_ok and same and healthy and deleted.status == 204 and all(a.status == 404 for a in gone.values())
    print(
        f"redis failures ({database}): model {model_id} built directly in {built.seconds:.1f} s; before the kill "
        + "; ".join(
            f"{path.split(model_id)[1] or '/models/{id}'} "
            + ", ".join(f"{a.status} {a.headers.get('x-cache')} {1000 * a.seconds:.1f} ms" for a in warm[path])
            for path in paths
        )
        + "; redis-server killed: "
        + "; ".join(
            f"{path.split(model_id)[1] or '/models/{id}'} "
            + ", ".join(f"{a.status} {a.headers.get('x-cache')} {1000 * a.seconds:.1f} ms" for a in cold[path])
            for path in paths
        )
        + f" ({'same bodies' if same else 'DIFFERENT bodies or statuses'}); /health {health.status} "
        f"{health.body.decode()} in {1000 * health.seconds:.1f} ms; DELETE {deleted.status}; then "
        + ", ".join(f"{path.split(model_id)[1] or '/models/{id}'} {a.status}" for path, a in gone.items())
        + f"; {attack.figures()}: {verdict(ok)}"
    )
    return ok


# --------------------------------------------------------------------------------------------------
# database lost mid-build (issue item 5)


class HealthWhileDown(NamedTuple):
    """What /health answered while the database was cut off, and the strings of the address it contained."""

    status: int
    body: str
    seconds: float
    leaked: list[str]


def database_lost(url: str, schema: str, database: str) -> tuple[bool, HealthWhileDown | None]:
    """A background build cut from PostgreSQL (TCP proxy) for two leases: failed within one lease of the
    network's return, then retried to success."""
    target = make_url(url)
    with TcpProxy(target.port or 5432) as proxy:
        proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        env = {
            **service_env(proxied, schema),
            "FACTOR_ENGINE_API_KEY": API_KEY,
            "FACTOR_ENGINE_RUN_LEASE_SECONDS": str(LEASE_SECONDS),
        }
        server = Server(env)
        direct = connect(url, schema=schema, migrate=False)  # the database seen around the proxy
        try:
            with Attack(server) as attack:
                accepted = request(server.base, "POST", "/risk-model/create", {"background": True})
                if accepted.status != 202:
                    print(f"database lost ({database}): the build answered {accepted.status}: {accepted.detail()}")
                    return False, None
                job_id = accepted.json()["job_id"]
                deadline = time.monotonic() + 60
                while request(server.base, "GET", f"/jobs/{job_id}").json()["status"] != "running":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"job {job_id} never started")
                    time.sleep(0.02)
                proxy.cut()
                cut_at = time.monotonic()
                health = request(server.base, "GET", "/health", key=False)
                job_during = request(server.base, "GET", f"/jobs/{job_id}")
                time.sleep(max(0.0, cut_at + 2 * LEASE_SECONDS - time.monotonic()))
                stored = direct.get_run(job_id)
                proxy.restore()
                restored_at = time.monotonic()
                status, error = "running", ""
                while status == "running" and time.monotonic() < restored_at + 10 * LEASE_SECONDS:
                    answer = request(server.base, "GET", f"/jobs/{job_id}")
                    if answer.status == 200:
                        status = answer.json()["status"]
                        error = answer.json()["error"] or ""
                    time.sleep(0.02)
                to_failed = time.monotonic() - restored_at
                retry = request(server.base, "POST", f"/jobs/{job_id}/retry")
                retried = wait_for_jobs(server.base, [retry.json()["job_id"]]) if retry.status == 202 else {}
        finally:
            direct.close()
            server.stop()
    body = health.body.decode(errors="replace")
    forbidden = ["postgres", "psycopg", "127.0.0.1", str(target.port or 5432), str(proxy.port), schema]
    forbidden.append(f"/{target.database}")
    leaked = [text for text in forbidden if text.lower() in body.lower()]
    retry_status = next(iter(retried.values()))["status"] if retried else f"not accepted ({retry.status})"
    ok = (
        stored.status == "running"
        and status == "failed"
        and to_failed <= LEASE_SECONDS
        and retry_status == "succeeded"
        and health.status == 503
        and not leaked
    )
    print(
        f"database lost mid-build ({database}): job {job_id} running, proxy cut for {2 * LEASE_SECONDS:.0f} s "
        f"(lease {LEASE_SECONDS:.0f} s): GET /jobs/{{id}} meanwhile {job_during.status} in "
        f"{1000 * job_during.seconds:.0f} ms, the database said {stored.status!r} after 2 leases; restored → "
        f"{status} in {to_failed:.2f} s (target ≤ {LEASE_SECONDS:.0f}); retry {retry.status} → {retry_status}; "
        f"/health while cut {health.status} in {1000 * health.seconds:.1f} ms, "
        f"{'leaks ' + ', '.join(leaked) if leaked else 'no address, port, schema or database name'}; "
        f"{attack.figures()}: {verdict(ok)}\n  /health body: {body}\n  job error: {error[:300]}"
    )
    return ok, HealthWhileDown(health.status, body, health.seconds, leaked)


# --------------------------------------------------------------------------------------------------
# leaks and exemptions (issue item 8)


def open_server_warning(folder: Path) -> tuple[str, float]:
    """Start ``factor-engine serve --host 0.0.0.0`` without a key and read its stderr until the server is up
    and OPEN_SERVER_SECONDS more have passed; (the warning line or "", seconds from the start to it)."""
    env = service_env(f"sqlite:///{folder / 'open.db'}", None)
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "factor-engine"), "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[tuple[str, float]] = []
    up = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if "without an API key" in line and not found:
                found.append((line.strip(), time.perf_counter() - start))
            if "Uvicorn running" in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    up.wait(60)
    time.sleep(OPEN_SERVER_SECONDS)
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    reader.join(5)
    return found[0] if found else ("", 0.0)


def leaks_and_exemptions(server: Server, database: str, folder: Path, down: HealthWhileDown | None) -> bool:
    """Without the key: the docs, the schema and the data routes 401, the public ones 200; the warning of a
    server on 0.0.0.0 without a key; /health while the database is down (from the database-lost attack)."""
    with Attack(server) as attack:
        closed = {path: request(server.base, "GET", path, key=False, prefix="") for path in CLOSED_PATHS}
        public = {path: request(server.base, "GET", path, key=False, prefix="") for path in PUBLIC}
    ok = all(a.status == 401 for a in closed.values()) and all(a.status == 200 for a in public.values())
    print(
        f"leaks and exemptions ({database}): without the key "
        + ", ".join(f"{path} {a.status}" for path, a in closed.items())
        + "; public "
        + ", ".join(
            f"{path} {a.status} ({a.headers.get('content-type')}, {len(a.body):,} B)" for path, a in public.items()
        )
        + f"; {attack.figures()}: {verdict(ok)}"
    )
    print(f"  {PUBLIC[0]}: {public[PUBLIC[0]].body.decode()}")
    warning, seconds = open_server_warning(folder)
    ok_warning = bool(warning)
    print(
        f"  serve --host 0.0.0.0 without a key: {'warned' if warning else 'NO warning'} on stderr "
        f"{f'after {seconds:.1f} s' if warning else f'within {OPEN_SERVER_SECONDS:.0f} s of its start-up'}: "
        f"{verdict(ok_warning)}\n    {warning}"
    )
    ok_down = True
    if down is None:
        print("  /health with the database down: not applicable on SQLite (the store is a local file)")
    else:
        ok_down = down.status == 503 and not down.leaked
        print(
            f"  /health with the database down: {down.status} in {1000 * down.seconds:.1f} ms, "
            f"{'leaks ' + ', '.join(down.leaked) if down.leaked else 'no address, port, schema or database name'}: "
            f"{verdict(ok_down)}"
        )
    return ok and ok_warning and ok_down


def basic_attacks(server: Server, database: str, folder: Path) -> int:
    """The body, config, sparse rows, bomb and label attacks on ``server``; how many were over target."""
    failures = 0
    time.sleep(0.5)
    resting = rss_bytes(server.process.pid)
    results: list[tuple[int, float]] = []
    with PeakRss(server.process.pid) as peak, HealthPoller(server.base) as health:
        threads = [
            threading.Thread(target=lambda: results.append(unauthenticated_body(server.port))) for _ in range(ATTACKERS)
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
        f"unauthenticated body ({database}): {ATTACKERS} x {BODY_BYTES / 1e6:.0f} MB, status {statuses}, "
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
        f"out-of-bounds config ({database}): status {status} in {1000 * seconds:.1f} ms, {runs} build "
        f"run(s) created, server RSS +{increase:.1f} MiB, /health p95 {1000 * health.p95():.1f} ms: "
        f"{'ok' if ok else 'OVER TARGET'}"
    )
    sparse = sparse_rows_body(SPARSE_ROWS)
    for path in ("/factors/momentum", "/factors/beta"):
        time.sleep(0.3)
        resting = rss_bytes(server.process.pid)
        with PeakRss(server.process.pid) as peak, HealthPoller(server.base) as health:
            status, seconds, detail = post(server.base, path, sparse, "application/json")
            time.sleep(0.2)
        increase = (peak.peak - resting) / 2**20
        ok = (
            status == 422
            and "FACTOR_ENGINE_MAX_SCORE_CELLS" in detail
            and seconds <= 0.5
            and increase <= 50
            and health.p95() <= 0.050
        )
        failures += not ok
        print(
            f"sparse rows ({database}, {path}): {SPARSE_ROWS:,} rows on as many dates and symbols in "
            f"{len(sparse) / 1e6:.1f} MB of JSON, status {status} in {1000 * seconds:.1f} ms, server RSS "
            f"+{increase:.1f} MiB, /health p95 {1000 * health.p95():.1f} ms over {len(health.latencies)} calls: "
            f"{'ok' if ok else 'OVER TARGET'}\n  {detail}"
        )
    bomb = Path(folder) / "bomb.parquet"
    size = write_bomb(bomb)
    body = bomb.read_bytes()
    time.sleep(0.5)
    resting = rss_bytes(server.process.pid)
    with PeakRss(server.process.pid) as peak, HealthPoller(server.base) as health:
        status, seconds, detail = post(server.base, "/data/panel/upload", body, "application/vnd.apache.parquet")
        time.sleep(0.2)
    increase = (peak.peak - resting) / 2**20
    rows = stored_rows(server.base)
    ok = status == 413 and increase <= 100 and health.p95() <= 0.050 and rows == 0
    failures += not ok
    print(
        f"decompression bomb ({database}): {BOMB_ROWS:,} rows in {size / 1e3:.0f} KB of zstd Parquet, "
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
        f"NUL and over-long labels ({database}): "
        + ", ".join(f"{name} {status} in {1000 * seconds:.1f} ms" for name, status, seconds, _ in answers)
        + f"; server RSS +{increase:.1f} MiB, /health p95 {1000 * health.p95():.1f} ms, {rows} rows stored: "
        f"{'ok' if ok else 'OVER TARGET'}"
    )
    for name, _, _, detail in answers:
        print(f"  {name}: {detail[:160]}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    database = args.database
    schemas: list[str] = []
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)

        def store(name: str) -> tuple[str, str | None]:
            if database != "postgresql":
                return f"sqlite:///{workdir / f'{name}.db'}", None
            schemas.append(f"bench_hostile_{name}_{uuid.uuid4().hex[:8]}")
            return PG_URL, schemas[-1]

        try:
            url, schema = store("hostile")
            server = Server({**service_env(url, schema), "FACTOR_ENGINE_API_KEY": API_KEY})
            try:
                failures += basic_attacks(server, database, workdir)
                leaks_server = server
                # the leak attack runs last, once /health with the database down is known (PostgreSQL)
                market = generate_market(MARKET_ASSETS, MARKET_DAYS, seed=0).panel
                url, schema = store("builds")
                builds_store = connect(url, schema=schema)
                try:
                    builds_store.ingest_panel(market)
                finally:
                    builds_store.close()
                default_bytes, heavy_bytes = build_estimates(url, schema)
                budget = int(math.sqrt(default_bytes * heavy_bytes))  # between the two estimates
                redis_port = free_port()
                redis = start_redis(redis_port)
                builds = Server(
                    {
                        **service_env(url, schema),
                        "FACTOR_ENGINE_API_KEY": API_KEY,
                        "FACTOR_ENGINE_MAX_QUEUED_BUILDS": str(QUEUED_BUILDS),
                        "FACTOR_ENGINE_BUILD_MEMORY_BUDGET_BYTES": str(budget),
                        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                    }
                )
                try:
                    print(
                        f"builds server: {MARKET_ASSETS} x {MARKET_DAYS} synthetic panel ({market.height:,} rows), "
                        f"Redis at port {redis_port}"
                    )
                    failures += not concurrent_builds(builds, database, default_bytes)
                    failures += not memory_budget(builds, database, budget, heavy_bytes)
                    failures += not redis_failures(builds, database, redis)
                finally:
                    builds.stop()
                    if redis.poll() is None:
                        redis.kill()
                        redis.wait()
                down = None
                if database == "postgresql":
                    url, schema = store("lease")
                    lease_store = connect(url, schema=schema)
                    try:
                        lease_store.ingest_panel(market)
                    finally:
                        lease_store.close()
                    assert schema is not None
                    ok, down = database_lost(url, schema, database)
                    failures += not ok
                else:
                    print("database lost mid-build (sqlite): not applicable: the SQLite store is a local file")
                failures += not leaks_and_exemptions(leaks_server, database, workdir, down)
            finally:
                server.stop()
        finally:
            for name in schemas:
                drop_schema(PG_URL, name)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
