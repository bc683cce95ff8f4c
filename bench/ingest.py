"""Ingest throughput of almhookd: acknowledged events per second.

Every scenario starts the real daemon (``python -m almhookd run``) on a fresh database
in a temporary directory, drives ``POST /v1/events`` from a separate process for a
warm-up and then a measured window, stops the daemon with SIGTERM (it must exit 0) and
counts the rows in its ``events`` table, which must match what was acknowledged.

Load generators:

* ``python``: aiohttp's client under uvloop in a child process, one keep-alive pool
  of ``concurrency`` connections; every request body is serialised before the clock
  starts. Each request carries events with fresh UUIDs, so none is a duplicate.
* ``wrk``: used as well when ``wrk`` is on PATH (Debian package ``wrk``). It costs
  the server less CPU than a Python client, which matters on a 2-core machine. Its Lua
  script builds each body from a prefix and a counter.

A reference row runs a plain stdlib ``sqlite3`` insert loop on the same schema, WAL
and ``synchronous = FULL``: one row per transaction, then 100 and 1,000.

Usage: ``.venv/bin/python bench/ingest.py [--quick] [--output FILE]``; the report is
Markdown on stdout, progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from multiprocessing import get_context
from pathlib import Path
from typing import Final

import aiohttp
import uvloop

from almhookd.storage.sqlite.migrations import MIGRATIONS
from almhookd.storage.sqlite.queries import event_key

TOKEN: Final = "bench-admin-token-0123456789"  # noqa: S105 - a throw-away benchmark token
HEADERS: Final = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
EVENT_NAME: Final = "COURSE_ENROLLMENT"
ENROLLMENT: Final = {
    "userId": 4279332,
    "loId": "course:7374992",
    "loInstanceId": "course:7376092_10250977",
    "loType": "course",
    "enrollmentSource": "ADMIN_ENROLL",
    "dateEnrolled": 1727414643,
}
#: One event as JSON is ``EVENT_HEAD + eventId + EVENT_TAIL``.
EVENT_HEAD: Final = '{"eventId":"'
EVENT_TAIL: Final = (
    f'","eventName":"{EVENT_NAME}","data":' + json.dumps(ENROLLMENT, separators=(",", ":")) + "}"
)

SINGLE_TARGET_REQUESTS_PER_S: Final = 3_000
ENVELOPE_TARGET_EVENTS_PER_S: Final = 30_000
ENVELOPE_SIZE: Final = 100
SINGLE_CONCURRENCY: Final = (1, 16, 64, 256)
ENVELOPE_CONCURRENCY: Final = (1, 4, 16)
#: Bodies the Python client prepares, as events per second of the whole run: a rate
#: above what the daemon reaches here, so the pool lasts the window.
POOL_EVENTS_PER_S: Final = {1: 10_000, ENVELOPE_SIZE: 60_000}
#: Above this share of a core used by other processes, a row is marked as disturbed.
DISTURBED_CPU: Final = 0.2
#: Rows per transaction of the reference loop; group commit makes transactions this big.
REFERENCE_BATCHES: Final = (1, ENVELOPE_SIZE, 1_000)
INSERT: Final = (
    "INSERT INTO events (event_key, event_id, event_name, account_id, timestamp_ms, realtime,"
    " ingested_at_ms, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class BenchError(Exception):
    """The benchmark could not run or a check failed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Timing:
    """Whole seconds: wrk takes no fractions."""

    warmup_s: int
    duration_s: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Scenario:
    events_per_request: int
    concurrency: int

    @property
    def label(self) -> str:
        if self.events_per_request == 1:
            return "single event"
        return f"{self.events_per_request}-event envelope"


@dataclass(frozen=True, kw_only=True, slots=True)
class Load:
    """What one generator measured against one daemon."""

    generator: str
    requests: int  #: acknowledged in the measured window
    seconds: float  #: length of the measured window
    p50_ms: float
    p99_ms: float
    client_cpu_s: float  #: the generator's CPU time in the window
    server_cpu_s: float  #: the daemon's CPU time in the window
    machine_cpu_s: float  #: the CPU time of every process on the machine in the window
    acknowledged: int  #: events acknowledged over the whole run, warm-up included
    cut_off: int  #: at most this many events were in flight when the generator quit


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    scenario: Scenario
    load: Load
    stored: int

    @property
    def requests_per_s(self) -> float:
        return self.load.requests / self.load.seconds

    @property
    def events_per_s(self) -> float:
        return self.requests_per_s * self.scenario.events_per_request

    @property
    def target(self) -> tuple[str, float, float]:
        """(what is measured, target, measured) for this scenario."""
        if self.scenario.events_per_request == 1:
            return "req/s", SINGLE_TARGET_REQUESTS_PER_S, self.requests_per_s
        return "events/s", ENVELOPE_TARGET_EVENTS_PER_S, self.events_per_s


@dataclass(frozen=True, kw_only=True, slots=True)
class Reference:
    rows_per_transaction: int
    transactions: int
    seconds: float  #: time spent between BEGIN and COMMIT
    p50_ms: float
    p99_ms: float


# --- shared helpers --------------------------------------------------------------------


def event_json(event_id: str) -> str:
    return EVENT_HEAD + event_id + EVENT_TAIL


def request_body(events_per_request: int) -> bytes:
    """A request body: one event, or an envelope of fresh events."""
    if events_per_request == 1:
        return event_json(str(uuid.uuid4())).encode()
    events = ",".join(event_json(str(uuid.uuid4())) for _ in range(events_per_request))
    return ('{"events":[' + events + "]}").encode()


def percentiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of durations given in seconds, in milliseconds."""
    if len(seconds) < 2:
        raise BenchError("too few requests in the measured window for percentiles")
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine, all cores: user, nice, system, irq, softirq."""
    ticks = [int(tick) for tick in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


# --- the daemon --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, kw_only=True, slots=True)
class Daemon:
    process: subprocess.Popen[bytes]
    url: str
    database: Path
    log: Path
    dsn: str | None = None  #: on PostgreSQL: the daemon's database

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        wait_healthy(self.url, self.process, "almhookd", timeout_s, tail=self.log_tail)

    def stop(self) -> None:
        """SIGTERM, and insist on a clean exit."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise BenchError(
                f"almhookd did not stop within 30 s of SIGTERM:\n{self.log_tail()}"
            ) from None
        if code != 0:
            raise BenchError(f"almhookd exited with {code} after SIGTERM:\n{self.log_tail()}")

    def stored_events(self) -> int:
        """Rows in ``events``, read from the database once the daemon has stopped."""
        if self.dsn is not None:
            return _postgres_events(self.dsn)
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            (count,) = db.execute("SELECT count(*) FROM events").fetchone()
        return int(count)


@contextlib.contextmanager
def running_daemon(
    directory: Path,
    extra_toml: str = "",
    *,
    python: str = sys.executable,
    checkout: Path | None = None,
    dsn: str | None = None,
) -> Iterator[Daemon]:
    """The daemon on the database ``directory/almhookd.db``, with ``extra_toml`` added to
    its configuration; stopped (exit 0) on leaving. ``python`` runs it; with ``checkout``
    it runs the almhookd package of that directory (its working directory, first on
    ``sys.path`` under ``-m``) instead of the one this interpreter imports. With ``dsn``
    its state is in that (empty) PostgreSQL database instead."""
    port = free_port()
    if dsn is not None:
        extra_toml = f'[storage]\nbackend = "postgresql"\ndsn = "{dsn}"\n' + extra_toml
    config = directory / "almhookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_token = "{TOKEN}"\n'
        f'[log]\nlevel = "warning"\n{extra_toml}'
    )
    log = directory / "almhookd.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                python,
                "-m",
                "almhookd",
                "run",
                "--config",
                str(config),
                "--database",
                str(directory / "almhookd.db"),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=checkout,
        )
    daemon = Daemon(
        process=process,
        url=f"http://127.0.0.1:{port}",
        database=directory / "almhookd.db",
        log=log,
        dsn=dsn,
    )
    try:
        daemon.wait_ready()
        yield daemon
    except BaseException:
        process.kill()
        process.wait()
        raise
    daemon.stop()


def _postgres_events(dsn: str) -> int:
    import asyncpg  # only for a PostgreSQL run

    async def count() -> int:
        connection = await asyncpg.connect(dsn)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM events"))
        finally:
            await connection.close()

    return asyncio.run(count())


# --- generator: aiohttp in a child process ---------------------------------------------


def python_load(url: str, scenario: Scenario, timing: Timing, daemon_pid: int) -> Load:
    """Runs in the client process: prepare the bodies, then drive the daemon."""
    pool_events = POOL_EVENTS_PER_S[scenario.events_per_request] * (
        timing.warmup_s + timing.duration_s
    )
    bodies = [
        request_body(scenario.events_per_request)
        for _ in range(math.ceil(pool_events / scenario.events_per_request))
    ]
    return uvloop.run(_drive(url + "/v1/events", bodies, scenario, timing, daemon_pid))


async def _drive(
    url: str, bodies: list[bytes], scenario: Scenario, timing: Timing, daemon_pid: int
) -> Load:
    pending = iter(bodies)
    finished: list[tuple[float, float]] = []  # (end, latency) of each acknowledged request
    acknowledged = 0
    stop_at = time.perf_counter() + timing.warmup_s + timing.duration_s
    connector = aiohttp.TCPConnector(limit=scenario.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def worker() -> None:
            nonlocal acknowledged
            for body in pending:
                start = time.perf_counter()
                if start >= stop_at:
                    return
                async with session.post(url, data=body) as response:
                    payload = await response.read()
                end = time.perf_counter()
                if response.status != 202:
                    raise BenchError(f"POST /v1/events: HTTP {response.status}: {payload[:300]!r}")
                accepted = json.loads(payload)["accepted"]
                if accepted != scenario.events_per_request:
                    raise BenchError(f"accepted {accepted} of {scenario.events_per_request}")
                acknowledged += accepted
                finished.append((end, end - start))

        workers = asyncio.gather(*(worker() for _ in range(scenario.concurrency)))
        await asyncio.wait([workers], timeout=timing.warmup_s)
        window_start = time.perf_counter()
        cpu_start = time.process_time(), process_cpu_s(daemon_pid), machine_cpu_s()
        await asyncio.wait([workers], timeout=max(0.0, stop_at - window_start))
        window_end = time.perf_counter()
        cpu_end = time.process_time(), process_cpu_s(daemon_pid), machine_cpu_s()
        await workers  # the last requests in flight, and the first error if any
    latencies = [latency for end, latency in finished if window_start <= end <= window_end]
    p50, p99 = percentiles_ms(latencies)
    return Load(
        generator="python (aiohttp)",
        requests=len(latencies),
        seconds=window_end - window_start,
        p50_ms=p50,
        p99_ms=p99,
        client_cpu_s=cpu_end[0] - cpu_start[0],
        server_cpu_s=cpu_end[1] - cpu_start[1],
        machine_cpu_s=cpu_end[2] - cpu_start[2],
        acknowledged=acknowledged,
        cut_off=0,
    )


# --- generator: wrk ----------------------------------------------------------------------

WRK_SCRIPT: Final = """\
-- written by bench/ingest.py: POST events with unique ids (prefix .. counter)
local prefix, per_request = "{prefix}", {per_request}
local head, tail = [[{head}]], [[{tail}]]
local counter = 0
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "application/json"

local function event()
  counter = counter + 1
  return head .. prefix .. counter .. tail
end

function request()
  local body
  if per_request == 1 then
    body = event()
  else
    local events = {{}}
    for i = 1, per_request do events[i] = event() end
    body = '{{"events":[' .. table.concat(events, ",") .. ']}}'
  end
  return wrk.format(nil, "/v1/events", nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
    .. '"p50_us": %.0f, "p99_us": %.0f}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float


def _run_wrk(wrk: str, directory: Path, url: str, scenario: Scenario, seconds: int) -> WrkRun:
    """One wrk run on one thread; any HTTP status >= 400 or socket error fails it."""
    script = directory / f"post-{uuid.uuid4().hex}.lua"
    script.write_text(
        WRK_SCRIPT.format(
            prefix=f"{uuid.uuid4()}-",
            per_request=scenario.events_per_request,
            head=EVENT_HEAD,
            tail=EVENT_TAIL,
            token=TOKEN,
        )
    )
    completed = subprocess.run(
        [
            wrk,
            "--threads",
            "1",
            "--connections",
            str(scenario.concurrency),
            "--duration",
            f"{seconds}s",
            "--timeout",
            "10s",
            "--script",
            str(script),
            url + "/v1/events",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH ")]
    if completed.returncode != 0 or not lines:
        raise BenchError(
            f"wrk failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}"
        )
    summary = json.loads(lines[0].removeprefix("BENCH "))
    if summary["status_errors"] or summary["socket_errors"]:
        raise BenchError(f"wrk saw errors: {summary}")
    return WrkRun(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
    )


def wrk_load(
    wrk: str, directory: Path, url: str, scenario: Scenario, timing: Timing, daemon_pid: int
) -> Load:
    warmup = _run_wrk(wrk, directory, url, scenario, timing.warmup_s)
    client_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_start, machine_start = process_cpu_s(daemon_pid), machine_cpu_s()
    measured = _run_wrk(wrk, directory, url, scenario, timing.duration_s)
    server_cpu = process_cpu_s(daemon_pid) - server_start
    machine_cpu = machine_cpu_s() - machine_start
    client_end = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (
        client_end.ru_utime + client_end.ru_stime - client_start.ru_utime - client_start.ru_stime
    )
    return Load(
        generator="wrk",
        requests=measured.requests,
        seconds=measured.seconds,
        p50_ms=measured.p50_ms,
        p99_ms=measured.p99_ms,
        client_cpu_s=client_cpu,
        server_cpu_s=server_cpu,
        machine_cpu_s=machine_cpu,
        acknowledged=(warmup.requests + measured.requests) * scenario.events_per_request,
        # wrk drops the requests in flight when its time is up; the daemon may
        # still commit them.
        cut_off=2 * scenario.concurrency * scenario.events_per_request,
    )


def _wrk_version(wrk: str) -> str:
    output = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout
    return output.split(" Copyright", 1)[0].strip()


# --- one scenario ------------------------------------------------------------------------


def run_scenario(
    scenario: Scenario, generator: str, timing: Timing, client: ProcessPoolExecutor
) -> Result:
    with tempfile.TemporaryDirectory(prefix="almhookd-bench-") as name:
        directory = Path(name)
        with running_daemon(directory) as daemon:
            pid = daemon.process.pid
            if generator == "python":
                load = client.submit(python_load, daemon.url, scenario, timing, pid).result()
            else:
                wrk = shutil.which("wrk")
                if wrk is None:
                    raise BenchError("wrk is not installed")
                load = wrk_load(wrk, directory, daemon.url, scenario, timing, pid)
        stored = daemon.stored_events()
    if not load.acknowledged <= stored <= load.acknowledged + load.cut_off:
        raise BenchError(
            f"{scenario.label} x{scenario.concurrency} ({load.generator}): "
            f"{stored} events stored, {load.acknowledged} acknowledged"
        )
    return Result(scenario=scenario, load=load, stored=stored)


# --- the sqlite3 reference ---------------------------------------------------------------


def sqlite_reference(directory: Path, rows_per_transaction: int, seconds: float) -> Reference:
    """Insert rows like the daemon's for ``seconds``; only BEGIN..COMMIT is timed."""
    with contextlib.closing(
        sqlite3.connect(directory / f"reference-{rows_per_transaction}.db", isolation_level=None)
    ) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        for migration in MIGRATIONS:
            db.executescript(migration)
        durations: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            now_ms = time.time_ns() // 1_000_000
            rows = []
            for _ in range(rows_per_transaction):
                event_id = str(uuid.uuid4())
                rows.append(
                    (
                        event_key(event_id),
                        event_id,
                        EVENT_NAME,
                        0,
                        now_ms,
                        1,
                        now_ms,
                        event_json(event_id),
                    )
                )
            start = time.perf_counter()
            db.execute("BEGIN")
            db.executemany(INSERT, rows)
            db.execute("COMMIT")
            durations.append(time.perf_counter() - start)
    p50, p99 = percentiles_ms(durations)
    return Reference(
        rows_per_transaction=rows_per_transaction,
        transactions=len(durations),
        seconds=sum(durations),
        p50_ms=p50,
        p99_ms=p99,
    )


# --- the report --------------------------------------------------------------------------


def wait_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    name: str,
    timeout_s: float,
    tail: Callable[[], str] = str,
) -> None:
    """Until ``GET url/healthz`` answers 200; a process that exits first, or no answer
    within ``timeout_s``, is an error (with ``tail()``, e.g. the end of its log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode} at start-up:\n{tail()}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url + "/healthz", timeout=2) as response,  # noqa: S310
        ):
            if response.status == 200:
                return
        time.sleep(0.05)
    raise BenchError(f"{name} was not ready within {timeout_s:.0f} s:\n{tail()}")


def create_webhook(daemon_url: str, name: str, target: str, *, description: str) -> None:
    """One active webhook, signed, subscribed to EVENT_NAME, through the admin API."""
    body = {
        "name": name,
        "description": description,
        "targetUrl": target,
        "auth": {"type": "signature"},
        "events": [EVENT_NAME],
        "active": True,
    }
    request = urllib.request.Request(  # noqa: S310 - the daemon on 127.0.0.1
        daemon_url + "/v1/webhooks", data=json.dumps(body).encode(), headers=HEADERS
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as error:
        raise BenchError(f"POST /v1/webhooks: HTTP {error.code}: {error.read()[:300]!r}") from None
    if status != 201:
        raise BenchError(f"POST /v1/webhooks: HTTP {status}")


#: The checkout this script belongs to.
CHECKOUT: Final = Path(__file__).resolve().parent.parent


def source_revision(checkout: Path = CHECKOUT) -> str:
    """The git commit of a checkout (this one by default), marked when its almhookd/ has
    local changes."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    head = subprocess.run(
        [git, "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    changed = subprocess.run(
        [git, "-C", str(checkout), "status", "--porcelain", "--", "almhookd"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (head or "unknown") + (" with local changes in almhookd/" if changed else "")


def machine_lines(generators: Sequence[str]) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    lines = [
        f"- almhookd {version('almhookd')}, commit {source_revision()}",
        f"- CPUs: {len(os.sched_getaffinity(0))} usable ({model.group(1) if model else '?'})",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"aiohttp {version('aiohttp')}, uvloop {version('uvloop')}",
        f"- OS: {platform.platform()}; databases in {tempfile.gettempdir()}",
        "- Load average at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
    wrk = shutil.which("wrk")
    if "wrk" in generators and wrk is not None:
        lines.append(f"- {_wrk_version(wrk)}")
    return lines


def render(
    machine: Sequence[str],
    timing: Timing,
    results: Sequence[Result],
    references: Sequence[Reference],
) -> str:
    out = [
        "## almhookd ingest benchmark",
        "",
        *machine,
        f"- Each scenario: fresh database, {timing.warmup_s:g} s warm-up, "
        f"{timing.duration_s:g} s measured",
        "",
        "| Scenario | Generator | Concurrency | Requests | Req/s | Events/s | p50 ms | "
        "p99 ms | Server CPU | Client CPU | Other CPU | Target | vs target | Stored / acked |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        load, scenario = result.load, result.scenario
        unit, target, measured = result.target
        other_cpu_s = max(0.0, load.machine_cpu_s - load.server_cpu_s - load.client_cpu_s)
        disturbed = other_cpu_s / load.seconds > DISTURBED_CPU
        out.append(
            f"| {scenario.label}{' (*)' if disturbed else ''} | {load.generator} | "
            f"{scenario.concurrency} | "
            f"{load.requests:,} | {result.requests_per_s:,.0f} | {result.events_per_s:,.0f} | "
            f"{load.p50_ms:.2f} | {load.p99_ms:.2f} | "
            f"{load.server_cpu_s / load.seconds:.0%} | {load.client_cpu_s / load.seconds:.0%} | "
            f"{other_cpu_s / load.seconds:.0%} | "
            f"{target:,} {unit} | {measured / target:.2f}x | "
            f"{result.stored:,} / {load.acknowledged:,} |"
        )
    out += [
        "",
        "CPU is a share of one core over the measured window (the machine has "
        f"{os.cpu_count()} cores); Other CPU is everything else on the machine, kernel "
        "threads included (the block I/O of the daemon's fsyncs shows there), which "
        f"should be small: (*) marks a row where it exceeded {DISTURBED_CPU:.0%}, "
        "so other work on the machine may have slowed it. Stored / acked: rows in "
        "the `events` table after SIGTERM vs. events acknowledged with 202 (warm-up "
        "included). wrk drops requests still in flight when its time is up, so with wrk "
        "the daemon may have stored up to 2 x concurrency x events/request more.",
        "",
        "### Reference: stdlib sqlite3 insert loop (same schema, WAL, synchronous=FULL)",
        "",
        "| Rows per transaction | Transactions | Transactions/s | Rows/s | p50 ms | p99 ms |",
        "|--:|--:|--:|--:|--:|--:|",
    ]
    for reference in references:
        per_s = reference.transactions / reference.seconds
        out.append(
            f"| {reference.rows_per_transaction} | {reference.transactions:,} | "
            f"{per_s:,.0f} | {per_s * reference.rows_per_transaction:,.0f} | "
            f"{reference.p50_ms:.2f} | {reference.p99_ms:.2f} |"
        )
    out += [
        "",
        "Reference rates count only the time between BEGIN and COMMIT; "
        "p50/p99 are per transaction.",
    ]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="1 s warm-up and 2 s windows instead of 1 s and 5 s"
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="also write the Markdown report to FILE"
    )
    parser.add_argument(
        "--generator",
        action="append",
        choices=("python", "wrk"),
        help="load generator, repeatable (default: python, and wrk when it is installed)",
    )
    args = parser.parse_args(argv)
    generators: list[str] = args.generator or (
        ["python", "wrk"] if shutil.which("wrk") else ["python"]
    )
    timing = Timing(warmup_s=1, duration_s=2) if args.quick else Timing(warmup_s=1, duration_s=5)
    scenarios = [Scenario(events_per_request=1, concurrency=c) for c in SINGLE_CONCURRENCY] + [
        Scenario(events_per_request=ENVELOPE_SIZE, concurrency=c) for c in ENVELOPE_CONCURRENCY
    ]
    machine = machine_lines(generators)
    results = []
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as client:
            for scenario in scenarios:
                for generator in generators:
                    result = run_scenario(scenario, generator, timing, client)
                    print(
                        f"{scenario.label} x{scenario.concurrency} ({result.load.generator}):"
                        f" {result.requests_per_s:,.0f} req/s, "
                        f"{result.events_per_s:,.0f} events/s",
                        file=sys.stderr,
                    )
                    results.append(result)
        with tempfile.TemporaryDirectory(prefix="almhookd-bench-") as name:
            references = [
                sqlite_reference(Path(name), rows, timing.duration_s) for rows in REFERENCE_BATCHES
            ]
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    report = render(machine, timing, results, references)
    print(report, end="")
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
