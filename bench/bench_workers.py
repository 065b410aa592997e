"""``factor-engine serve --workers 2``: a build on one worker survives the other's restart; portfolio load.

Steps (PostgreSQL by default, in a schema of its own dropped at the end; ``--database sqlite`` for a SQLite
file in a temporary folder):

1. start ``factor-engine serve --workers 2`` on a free port with a short build lease
   (FACTOR_ENGINE_RUN_LEASE_SECONDS = ``--lease``, 6 s) so that a lease wrongly expired shows within the
   bench, and find its two worker processes (the uvicorn supervisor's children, from /proc); each must
   answer ``GET /health`` (the server end of a connection is looked up in /proc to know which one answered);
2. upload a synthetic panel (``--assets`` × ``--days``, seed 0) with ``POST /data/panel/upload`` (Parquet);
   the default 2,000 × 1,500 makes the build last about 40 s on the 2-core machine, long enough for the
   restart and two leases;
3. start a background build of all of it (``POST /risk-model/create``, ``background: true``) and wait until
   it runs; read its ``model_runs.worker`` from the database (not through the API) to learn which worker
   builds it; SIGKILL the other worker; wait until the supervisor's replacement answers /health (its
   start-up fails the runs whose lease expired, and must leave this one alone), then at least two lease
   periods more while the build goes on. ``GET /jobs/{id}`` is polled every 0.2 s throughout, and the run's
   lease is read from the database every 0.5 s during the wait;
4. ``--clients`` clients (threads, one keep-alive HTTP connection each, 20 by default) post
   ``POST /portfolio/exposures`` on the model built in step 3 for ``--seconds`` seconds after a warm-up, each
   with its own long-only portfolio of 100–500 names; one answer is first checked against the library
   (:func:`factor_engine.portfolio.portfolio_exposures` on the stored snapshot). The kernel spreads the
   connections over the two workers: the bench reports how many each held and the CPU seconds each used.

Prints a line per figure. Targets: the build ends succeeded and is never seen failed, although a worker was
killed and restarted during it; p95 ≤ 50 ms for 20 clients on ``/portfolio/exposures``. Exits 1 when the
build does not survive (after the load part, run then on a small model built directly).

Usage::

    python bench/bench_workers.py                              # PostgreSQL, 2000 assets x 1500 days, lease 6 s
    python bench/bench_workers.py --database sqlite --assets 1000 --days 1000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from factor_engine.portfolio import portfolio_exposures
from factor_engine.storage import connect
from factor_engine.synthetic import generate_market
from service_harness import BIN, PREFIX, Server, drop_schema, empty_store, free_port, service_env

SCHEMA = "bench_workers"
EXPOSURES = f"{PREFIX}/portfolio/exposures"
JSON_HEADERS = {"Content-Type": "application/json"}
P95_TARGET_MS = 50.0


class WorkersServer(Server):
    """``factor-engine serve --workers N`` on a free port: ``process`` is uvicorn's supervisor; waited for
    until ``/health`` answers."""

    def __init__(self, env: dict[str, str], workers: int, log: IO[bytes], timeout: float = 120.0) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [str(BIN / "factor-engine"), "serve", "--port", str(self.port), "--workers", str(workers)]
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode}")
            with contextlib.suppress(OSError):
                if self.call("GET", "/health")[0] == 200:
                    return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError("the server did not become healthy")


# ---- processes and sockets, from /proc ------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (the first is the state, the second the ppid)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def worker_pids(supervisor: int) -> list[int]:
    """The uvicorn workers of ``supervisor``: its children started by multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(int(entry.name))
            if int(fields[1]) == supervisor and fields[0] != "Z" and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the machine has spent not idle since boot, all cores together (from /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def server_ends(port: int, pids: list[int]) -> dict[int, int]:
    """``{client port: pid}`` of the established connections to ``port`` whose server end one of ``pids``
    holds (from /proc/net/tcp and the processes' file descriptors)."""
    client_port_of_inode = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == "01" and int(local.split(":")[1], 16) == port:
            client_port_of_inode[f"socket:[{inode}]"] = int(remote.split(":")[1], 16)
    owners = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for descriptor in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(descriptor)
                    if link in client_port_of_inode:
                        owners[client_port_of_inode[link]] = pid
    return owners


def wait_answering(port: int, pid: int, timeout: float) -> bool:
    """Open keep-alive connections and ``GET /health`` on each until worker ``pid`` answers one with 200
    (True), or ``timeout`` seconds pass (False). Up to 16 connections are held open at once, so that new ones
    are accepted by whichever worker is free."""
    deadline = time.monotonic() + timeout
    held: list[http.client.HTTPConnection] = []
    try:
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", f"{PREFIX}/health")
                response = connection.getresponse()
                response.read()
            except OSError:
                connection.close()
                time.sleep(0.1)
                continue
            held.append(connection)
            client_port = connection.sock.getsockname()[1] if connection.sock is not None else 0
            if response.status == 200 and server_ends(port, [pid]).get(client_port) == pid:
                return True
            if len(held) >= 16:
                held.pop(0).close()
            time.sleep(0.02)
        return False
    finally:
        for connection in held:
            connection.close()


def startups(log_path: Path) -> int:
    """How many times the server's log says "Application startup complete" (once per worker start)."""
    return log_path.read_text(errors="replace").count("Application startup complete")


# ---- the build job ---------------------------------------------------------------------------------------------
class JobWatcher:
    """Polls ``GET /jobs/{id}`` every 0.2 s in a thread: ``history`` holds each change of (status, stage) with
    its seconds since the watch began, ``last`` the last answer, ``failed_seen`` whether any said failed."""

    def __init__(self, server: Server, job_id: str) -> None:
        self.server, self.job_id = server, job_id
        self.started = time.monotonic()
        self.history: list[tuple[float, str, str | None]] = []
        self.last: dict[str, Any] = {}
        self.failed_seen = False
        self.poll_errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, job = self.server.call("GET", f"/jobs/{self.job_id}")
            except OSError as error:  # e.g. a connection the killed worker had accepted
                self.poll_errors.append(f"{time.monotonic() - self.started:.1f} s: {error}")
                status, job = 0, None
            if status == 200 and job is not None:
                self.last = job
                self.failed_seen |= job["status"] == "failed"
                if not self.history or self.history[-1][1:] != (job["status"], job.get("stage")):
                    self.history.append((time.monotonic() - self.started, job["status"], job.get("stage")))
            elif status:
                self.poll_errors.append(f"{time.monotonic() - self.started:.1f} s: HTTP {status}: {job}")
            self._stop.wait(0.2)

    @property
    def status(self) -> str:
        return str(self.last.get("status", "unknown"))

    def wait(self, until: tuple[str, ...], timeout: float, need_stage: bool = False) -> bool:
        """Wait until the job's status is one of ``until`` (with a stage reported, if ``need_stage``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status in until and (not need_stage or self.last.get("stage") or self.status != "running"):
                return True
            time.sleep(0.05)
        return False

    def __enter__(self) -> JobWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def upload_panel(port: int, assets: int, days: int) -> tuple[int, str, str, float]:
    """Upload the synthetic panel (seed 0) as Parquet; returns (rows, first date, last date, seconds)."""
    panel = generate_market(assets, days, seed=0).panel
    buffer = io.BytesIO()
    panel.write_parquet(buffer)
    tic = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1800)
    connection.request(
        "POST",
        f"{PREFIX}/data/panel/upload",
        body=buffer.getvalue(),
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"the upload answered {response.status}: {answer[:500]!r}")
    return panel.height, str(panel["date"].min()), str(panel["date"].max()), time.perf_counter() - tic


# ---- the load ---------------------------------------------------------------------------------------------------
class Load:
    """``clients`` threads, each with one keep-alive connection posting its own body to /portfolio/exposures:
    until ``warm_until`` (monotonic) unmeasured, then, once all are warm, for ``seconds`` seconds measured."""

    def __init__(self, port: int, bodies: list[bytes], warmup: float, seconds: float) -> None:
        self.port, self.bodies, self.seconds = port, bodies, seconds
        self.warm_until = time.monotonic() + warmup
        self.window: dict[str, float] = {}
        self.barrier = threading.Barrier(len(bodies), action=self._open_window)
        self.latencies: list[list[float]] = [[] for _ in bodies]
        self.client_ports: list[int] = [0] * len(bodies)
        self.errors: list[str] = []

    def _open_window(self) -> None:
        now = time.perf_counter()
        self.window.update(start=now, end=now + self.seconds)

    def _client(self, index: int) -> None:
        body, latencies = self.bodies[index], self.latencies[index]
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while time.monotonic() < self.warm_until:
            self._post(connection, body, None, index)
        self.barrier.wait()
        end = self.window["end"]
        while time.perf_counter() < end:
            self._post(connection, body, latencies, index)
        connection.close()

    def _post(self, connection: http.client.HTTPConnection, body: bytes, into: list[float] | None, index: int) -> None:
        start = time.perf_counter()
        try:
            connection.request("POST", EXPOSURES, body=body, headers=JSON_HEADERS)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.errors.append(f"client {index}: {error!r}")
            connection.close()  # http.client reconnects on the next request
            return
        if into is not None:
            into.append(time.perf_counter() - start)
            if response.status != 200:
                self.errors.append(f"{response.status}: {payload[:200]!r}")
        if connection.sock is not None:
            self.client_ports[index] = connection.sock.getsockname()[1]

    def run(self, workers: list[int]) -> tuple[float, dict[int, int], dict[int, float]]:
        """Run the clients; returns (measured seconds, connections held per worker one second into the
        window, CPU seconds over the window: per worker pid, 0 for this process (the clients), -1 for the
        whole machine)."""
        threads = [threading.Thread(target=self._client, args=(index,)) for index in range(len(self.bodies))]
        for thread in threads:
            thread.start()
        while "start" not in self.window:
            time.sleep(0.01)
        cpu_before = {pid: cpu_seconds(pid) for pid in workers}
        clients_before, machine_before = time.process_time(), machine_busy()
        time.sleep(min(1.0, self.seconds / 2))
        owners = server_ends(self.port, workers)
        held = {pid: sum(owners.get(port) == pid for port in self.client_ports) for pid in workers}
        for thread in threads:
            thread.join()
        cpu = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in workers}
        cpu[0] = time.process_time() - clients_before
        cpu[-1] = machine_busy() - machine_before
        return self.window["end"] - self.window["start"], held, cpu


def portfolio_bodies(model_id: str, symbols: list[str], clients: int) -> tuple[list[bytes], list[dict[str, float]]]:
    """One request body per client: a long-only portfolio of 100–500 names drawn at random (seed 1)."""
    rng = np.random.default_rng(1)
    portfolios = []
    for _ in range(clients):
        names = rng.choice(np.array(symbols), size=min(len(symbols), int(rng.integers(100, 501))), replace=False)
        weights = rng.dirichlet(np.ones(names.size))
        portfolios.append(dict(zip(names.tolist(), weights.tolist(), strict=True)))
    bodies = [json.dumps({"model_id": model_id, "weights": weights}).encode() for weights in portfolios]
    return bodies, portfolios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--lease", type=float, default=6.0, help="FACTOR_ENGINE_RUN_LEASE_SECONDS of the server")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds of the load")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured requests first")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fe_workers_"))
    url, schema = empty_store(args.database, SCHEMA, workdir)
    env = {**service_env(url, schema), "FACTOR_ENGINE_RUN_LEASE_SECONDS": str(args.lease)}
    log_path = workdir / "serve.log"
    survived = False
    known_workers: set[int] = set()
    with log_path.open("wb") as log:
        server = WorkersServer(env, 2, log)
        supervisor, port = server.process.pid, server.port
        try:
            deadline = time.monotonic() + 120
            while len(workers := worker_pids(supervisor)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            known_workers.update(workers)
            if len(workers) != 2:
                raise RuntimeError(f"expected 2 worker processes of supervisor {supervisor}, found {workers}")
            answering = [pid for pid in workers if wait_answering(port, pid, 60)]
            where = f"schema {schema}" if schema else url
            print(
                f"serve --workers 2 on port {port} ({args.database}, {where}), lease {args.lease:g} s: supervisor "
                f"{supervisor}, workers {workers[0]} and {workers[1]}; answering /health: {answering}",
                flush=True,
            )

            rows, first, last, seconds = upload_panel(port, args.assets, args.days)
            print(
                f"uploaded {rows:,} rows ({args.assets:,} assets x {args.days:,} days) in {seconds:.1f} s", flush=True
            )

            request = {"start_date": first, "end_date": last, "universe_size": args.assets, "background": True}
            status, accepted = server.call("POST", "/risk-model/create", request)
            if status != 202:
                raise RuntimeError(f"POST /risk-model/create answered {status}: {accepted}")
            job_id = accepted["job_id"]
            store = connect(url, schema=schema, migrate=False)
            try:
                with JobWatcher(server, job_id) as watcher:
                    if not watcher.wait(("running", "succeeded", "failed"), 600, need_stage=True):
                        raise RuntimeError(f"job {job_id} did not start running: {watcher.last}")
                    started = time.monotonic() - watcher.started
                    run = store.get_run(job_id)  # model_runs, read from the database
                    builder = int(str(run.worker).rsplit(":", 2)[1]) if run.worker else -1
                    victim = next((pid for pid in workers if pid != builder), -1)
                    print(
                        f"build worker pid: {builder} (model_runs.worker {run.worker!r}; job {job_id} "
                        f"{watcher.status} at stage {watcher.last.get('stage')!r} {started:.1f} s after the request)",
                        flush=True,
                    )
                    if watcher.status != "running" or builder not in workers:
                        raise RuntimeError(f"cannot test: job {watcher.status}, builder {builder}, workers {workers}")

                    startups_before = startups(log_path)
                    killed_at = time.monotonic()
                    os.kill(victim, signal.SIGKILL)
                    print(f"killed worker pid: {victim} (SIGKILL)", flush=True)
                    replacement = -1
                    while time.monotonic() - killed_at < 120:
                        fresh = [pid for pid in worker_pids(supervisor) if pid not in (builder, victim)]
                        if fresh:
                            replacement = fresh[0]
                            break
                        time.sleep(0.02)
                    if replacement < 0:
                        raise RuntimeError("the supervisor started no replacement worker within 120 s")
                    known_workers.add(replacement)
                    appeared = time.monotonic() - killed_at
                    while startups(log_path) <= startups_before and time.monotonic() - killed_at < 120:
                        time.sleep(0.02)
                    started_up = time.monotonic() - killed_at
                    ready = wait_answering(port, replacement, 120)
                    restart = time.monotonic() - killed_at
                    print(
                        f"new worker pid: {replacement} (process seen {appeared:.2f} s after the kill, "
                        f"'Application startup complete' logged after {started_up:.2f} s)",
                        flush=True,
                    )
                    print(
                        f"restart time: {restart:.2f} s from the kill to the new worker answering /health"
                        + ("" if ready else " (it did NOT answer /health within 120 s)"),
                        flush=True,
                    )

                    # two lease periods (and more) while the build goes on; its lease is read every 0.5 s
                    wait_until = time.monotonic() + 2 * args.lease
                    leases: set[datetime.datetime] = set()
                    least_left = float("inf")
                    while time.monotonic() < wait_until and watcher.status == "running":
                        run = store.get_run(job_id)
                        if run.status == "running" and run.lease_expires_at is not None:
                            leases.add(run.lease_expires_at)
                            left = (run.lease_expires_at - datetime.datetime.now(datetime.UTC)).total_seconds()
                            least_left = min(least_left, left)
                        time.sleep(0.5)
                    waited = time.monotonic() - killed_at - restart
                    print(
                        f"build during {waited:.1f} s after the restart ({2 * args.lease:g} s = 2 leases wanted): "
                        f"{watcher.status}; {len(leases)} lease expiry times seen in model_runs, least time left "
                        f"{least_left:.1f} s (lease {args.lease:g} s)",
                        flush=True,
                    )
                    if watcher.status == "running" and waited < 2 * args.lease:
                        print("  (the wait was cut short)")
                    watcher.wait(("succeeded", "failed"), 1800)
                    took = time.monotonic() - watcher.started
                    run = store.get_run(job_id)
                builder_alive = builder in worker_pids(supervisor)
                survived = watcher.status == "succeeded" and not watcher.failed_seen and builder_alive
                print(
                    f"job status: {watcher.status} {took:.1f} s after the request (model_runs: {run.status}); "
                    f"failed seen while polling: {'yes' if watcher.failed_seen else 'no'}; build worker {builder} "
                    f"{'still alive' if builder_alive else 'GONE'} "
                    f"(target succeeded, never failed: {'ok' if survived else 'NOT MET'})",
                    flush=True,
                )
                print(f"job error: {watcher.last.get('error')!r}")
                print(
                    "job statuses seen: "
                    + " → ".join(f"{status}/{stage} at {at:.1f} s" for at, status, stage in watcher.history)
                )
                if watcher.poll_errors:
                    print(f"job polls that failed: {len(watcher.poll_errors)}, first: {watcher.poll_errors[:3]}")

                # ---- the load on /portfolio/exposures ---------------------------------------------------------
                model_id = job_id
                if watcher.status != "succeeded":
                    small = {"universe_size": 300, "start_date": first, "end_date": last, "background": False}
                    status, summary = server.call("POST", "/risk-model/create", small)
                    if status != 200:
                        raise RuntimeError(f"the direct build of a small model answered {status}: {summary}")
                    model_id = summary["id"]
                    print(f"load on a small model built directly instead: {model_id}")
                snapshot = store.snapshot(model_id)
            finally:
                store.close()

            workers = worker_pids(supervisor)
            bodies, portfolios = portfolio_bodies(model_id, list(snapshot.symbols), args.clients)
            check = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            check.request("POST", EXPOSURES, body=bodies[0], headers=JSON_HEADERS)
            response = check.getresponse()
            answer = json.loads(response.read())
            check.close()
            if response.status != 200:
                raise RuntimeError(f"portfolio/exposures answered {response.status}: {answer}")
            expected = portfolio_exposures(snapshot, portfolios[0])
            served = {row["factor"]: row["portfolio"] for row in answer["exposures"]}
            library = dict(zip(expected["factor"], expected["portfolio"], strict=True))
            difference = max(abs(served[factor] - value) for factor, value in library.items())
            same = served.keys() == library.keys() and difference <= 1e-12
            print(
                f"one answer vs portfolio_exposures on the stored snapshot: {len(served)} factors, largest "
                f"difference {difference:.1e} ({'ok' if same else 'DIFFERS'})"
            )

            load = Load(port, bodies, args.warmup, args.seconds)
            elapsed, held, cpu = load.run(workers)
            values = np.array([x for per_client in load.latencies for x in per_client]) * 1000
            p50, p95, p99 = np.percentile(values, [50, 95, 99])
            sizes = [len(weights) for weights in portfolios]
            print(
                f"load: {args.clients} clients for {elapsed:.1f} s after a {args.warmup:g} s warm-up, portfolios of "
                f"{min(sizes)}–{max(sizes)} names (mean {np.mean(sizes):.0f}) on model {model_id}"
            )
            print(f"requests: {values.size:,}")
            print(f"throughput: {values.size / elapsed:.0f} requests/s")
            print(f"latency p50: {p50:.1f} ms")
            verdict = "ok" if p95 <= P95_TARGET_MS else "OVER TARGET"
            print(f"latency p95: {p95:.1f} ms (target <= {P95_TARGET_MS:g} ms: {verdict})")
            print(f"latency p99: {p99:.1f} ms, max {values.max():.1f} ms")
            print(f"errors: {len(load.errors)}" + (f", first: {load.errors[:3]}" if load.errors else ""))
            print("connections held per worker: " + ", ".join(f"{pid}: {count}" for pid, count in held.items()))
            clients, machine = cpu.pop(0), cpu.pop(-1)
            print(
                "CPU seconds during the load: "
                + ", ".join(f"worker {pid}: {seconds:.1f}" for pid, seconds in cpu.items())
                + f", the clients (this process): {clients:.1f}, other processes: "
                f"{machine - clients - sum(cpu.values()):.1f}; the whole machine: {machine:.1f} of "
                f"{elapsed * (os.cpu_count() or 1):.1f}"
            )
        finally:
            server.stop()
            for pid in known_workers:  # a worker the supervisor left behind
                with contextlib.suppress(OSError):
                    if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
            if schema:
                drop_schema(url, schema)
    events = [
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if "died" in line or "lease expired" in line or "failed" in line.lower()
    ]
    print(f"server log ({log_path}): {len(events)} lines on deaths, lease expiries or failures")
    for line in events[:10]:
        print(f"  {line}")
    if not survived:
        sys.exit(1)


if __name__ == "__main__":
    main()
