"""Ingest against the wire (issue 22): almhookd beside a bare endpoint, in the same run.

How it measures. Three processes besides this one: a bare endpoint
(``bench/bare_endpoint.py``: aiohttp under uvloop, reads the body, ``json.loads`` it and
answers 202 with almhookd's answer shape, nothing validated or stored, access log off),
the webhook receiver of ``bench.delivery`` (a separate aiohttp + uvloop process answering
202 at once and recording each request's arrival time and eventIds), and the load
generator. For every almhookd measurement the real daemon (``python -m almhookd run``,
``bench.ingest.running_daemon``) starts on a fresh database in a temporary directory, log
level warning; afterwards it is stopped with SIGTERM (it must exit 0) and the rows of its
``events`` table must equal the events acknowledged with 202 (warm-up included).

Load generators, both driving almhookd and the bare endpoint with the same bodies and the
same concurrency, one after the other (almhookd first in odd runs, the bare endpoint first
in even ones, so a drift of the machine does not always favour the same side):

* ``python`` (the default, and the p99 scenario's whatever ``--generator`` says):
  aiohttp's client under uvloop in a child process, one keep-alive pool of
  ``concurrency`` connections, the cyclic garbage collector off while it runs (its full
  passes paused the client for tens of milliseconds). Bodies are made as they are sent
  from a template (the eventIds are a random prefix and a counter, so none is a
  duplicate), a microsecond per event: every request body is new, whatever the rate.
* ``wrk`` (in addition, when on PATH: ``make bench`` installs Debian's package): one
  thread, the same template in its Lua script (``bench.ingest``'s). It costs the servers'
  cores less than the Python client, which matters on a 2-core machine.

Scenarios (``--scenario``, repeatable; all by default):

* ``single``: single-event requests, 16 in flight, closed loop, no webhook. almhookd
  req/s against the bare endpoint's; target almhookd >= 0.6x the bare endpoint.
* ``envelope``: 500-event envelopes, 4 in flight, with one active webhook subscribed to
  the ingested event (created with ``POST /v1/webhooks`` before the warm-up, aimed at the
  receiver, ``delivery.allow_private_targets = true``, default packing): its deliveries
  rows are written with the events and it delivers meanwhile. almhookd events/s (target
  >= 60,000) beside the bare endpoint's for the same bodies.
* ``p99``: single events paced open loop at 80% of the maximum measured in the same run
  (almhookd's python req/s of ``single``; measured first when ``single`` is not run), one
  webhook with ``delivery.max_events_per_request = 1``. Ingest latency runs from each
  request's scheduled send time to its 202 (no coordinated omission: a request waiting
  for a free connection counts against the daemon), p50 and p99 over the requests
  scheduled in the window (target p99 <= 10 ms); the client's own lateness (send lag: a
  request's task started after its time, the client starved of CPU) is reported beside
  it. Deliveries that arrived at the receiver in the window, per second, against the
  plain-client ceiling measured in the same run just before (``bench.delivery.ceiling``:
  the daemon's payloads posted straight to the receiver, one in flight; target >= 0.5x).
  Once the window is over, every acknowledged event must arrive at the receiver, once.
  The python generator only: wrk cannot pace.

Each scenario runs ``--runs`` times (3 by default, 1 with ``--quick``); the report gives
every run and the median. The full benchmark (2 s warm-up, 10 s windows, 3 runs, both
generators) takes about 7 minutes on a 2-core machine; ``--quick`` (1 s and 3 s, 1 run)
under a minute. CPU: from ``/proc``, over the measured window, of the server (daemon or
bare endpoint), the generator, the receiver and the idle server, and the whole machine;
what is left (other people's work, kernel threads: the fsyncs' block I/O shows there) is
Other CPU, and a row where it exceeded 20% of a core is marked (*), disturbed.

Usage, from the checkout: ``.venv/bin/python -m bench.ingest_wire [--quick] [--runs N]
[--scenario NAME] [--generator python|wrk] [--daemon-python PATH] [--daemon-checkout DIR]
[--output FILE]``; the report is Markdown on stdout, progress goes to stderr. With
``--daemon-checkout DIR`` the daemon runs that checkout's almhookd (another clone, for
back to back comparisons) while this checkout's benchmark drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from importlib.metadata import version
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Final

import aiohttp
import uvloop

from bench.delivery import (
    CEILING_SHARE_TARGET,
    QUICK,
    Check,
    Pids,
    Receiver,
    ceiling,
    check_delivery,
    running_receiver,
    wait_delivered,
)
from bench.ingest import (
    DISTURBED_CPU,
    EVENT_HEAD,
    EVENT_TAIL,
    HEADERS,
    BenchError,
    Daemon,
    Scenario,
    Timing,
    _run_wrk,
    _wrk_version,
    create_webhook,
    free_port,
    machine_cpu_s,
    percentiles_ms,
    process_cpu_s,
    running_daemon,
    source_revision,
    wait_healthy,
)
from tests.support.postgres import running_cluster

SINGLE_CONCURRENCY: Final = 16
ENVELOPE_EVENTS: Final = 500
ENVELOPE_CONCURRENCY: Final = 4
SINGLE_RATIO_TARGET: Final = 0.6
ENVELOPE_TARGET_EVENTS_PER_S: Final = 60_000
P99_TARGET_MS: Final = 10.0
#: The p99 scenario's pace, as a share of the single-event maximum of the same run.
PACE_SHARE: Final = 0.8
#: Connections the paced client may open: enough that requests wait in the daemon,
#: not in the client, unless the daemon falls far behind.
PACED_CONNECTIONS: Final = 64
FULL_TIMING: Final = Timing(warmup_s=2, duration_s=10)
QUICK_TIMING: Final = Timing(warmup_s=1, duration_s=3)
FULL_RUNS: Final = 3
SCENARIOS: Final = ("single", "envelope", "p99")
GENERATORS: Final = ("python", "wrk")
BARE_SCRIPT: Final = Path(__file__).with_name("bare_endpoint.py")
ENVELOPE_HOOK: Final = "envelope"
PACED_HOOK: Final = "paced"
STOP_TIMEOUT_S: Final = 30.0


# --- what a generator measured ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """CPU seconds so far, taken at the edges of the measured window."""

    wall: float  #: time.time(), comparable with the receiver's arrival times
    client: float  #: the generator (this process's CPU time, or wrk's)
    server: float
    helpers: float  #: our other processes: the receiver, the idle server
    machine: float


def snapshot(server_pid: int, helper_pids: Sequence[int]) -> Snapshot:
    return Snapshot(
        wall=time.time(),
        client=time.process_time(),
        server=process_cpu_s(server_pid),
        helpers=sum(process_cpu_s(pid) for pid in helper_pids),
        machine=machine_cpu_s(),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """What one generator measured against one server over the measured window."""

    generator: str
    events_per_request: int
    requests: int  #: acknowledged within the window
    started_at: float  #: time.time()
    ended_at: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float
    server_cpu_s: float
    helpers_cpu_s: float
    machine_cpu_s: float
    acknowledged: int  #: events acknowledged over the whole run, warm-up included
    cut_off: int  #: at most this many events were in flight when the generator quit
    offered_per_s: float | None = None  #: the pace of an open-loop run
    #: open-loop runs: p99 of how late a request started against its schedule, in the
    #: client (a late client, not the daemon, if it is large)
    send_lag_p99_ms: float | None = None
    event_ids: tuple[str, ...] = ()  #: every acknowledged event (open-loop runs only)

    @classmethod
    def between(
        cls,
        first: Snapshot,
        last: Snapshot,
        *,
        generator: str,
        events_per_request: int,
        requests: int,
        p50_ms: float,
        p99_ms: float,
        acknowledged: int,
        cut_off: int,
        offered_per_s: float | None = None,
        send_lag_p99_ms: float | None = None,
        event_ids: tuple[str, ...] = (),
    ) -> Window:
        return cls(
            generator=generator,
            events_per_request=events_per_request,
            requests=requests,
            started_at=first.wall,
            ended_at=last.wall,
            p50_ms=p50_ms,
            p99_ms=p99_ms,
            client_cpu_s=last.client - first.client,
            server_cpu_s=last.server - first.server,
            helpers_cpu_s=last.helpers - first.helpers,
            machine_cpu_s=last.machine - first.machine,
            acknowledged=acknowledged,
            cut_off=cut_off,
            offered_per_s=offered_per_s,
            send_lag_p99_ms=send_lag_p99_ms,
            event_ids=event_ids,
        )

    @property
    def seconds(self) -> float:
        return self.ended_at - self.started_at

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def events_per_s(self) -> float:
        return self.requests_per_s * self.events_per_request

    @property
    def server_us_per_event(self) -> float:
        return self.server_cpu_s / max(1, self.requests * self.events_per_request) * 1e6

    @property
    def other_cpu(self) -> float:
        """Share of a core used by everything else on the machine."""
        used = self.client_cpu_s + self.server_cpu_s + self.helpers_cpu_s
        return max(0.0, self.machine_cpu_s - used) / self.seconds

    @property
    def disturbed(self) -> bool:
        return self.other_cpu > DISTURBED_CPU


# --- bodies -------------------------------------------------------------------------------


class Bodies:
    """Request bodies with fresh eventIds: a random prefix and a counter."""

    def __init__(self, events_per_request: int) -> None:
        self.events_per_request = events_per_request
        self._prefix = f"{uuid.uuid4()}-"
        self._count = 0

    def ids(self) -> list[str]:
        first = self._count
        self._count += self.events_per_request
        return [f"{self._prefix}{n}" for n in range(first, self._count)]

    @staticmethod
    def body(ids: Sequence[str]) -> bytes:
        if len(ids) == 1:
            return (EVENT_HEAD + ids[0] + EVENT_TAIL).encode()
        events = ",".join([EVENT_HEAD + event_id + EVENT_TAIL for event_id in ids])
        return ('{"events":[' + events + "]}").encode()


async def post(session: aiohttp.ClientSession, url: str, body: bytes, expected: int) -> None:
    """POST one body; it must be answered 202 with every event accepted."""
    try:
        async with session.post(url, data=body) as response:
            payload = await response.read()
    except aiohttp.ClientError as error:
        raise BenchError(f"POST {url}: {error!r}") from None
    if response.status != 202:
        raise BenchError(f"POST {url}: HTTP {response.status}: {payload[:300]!r}")
    accepted = json.loads(payload)["accepted"]
    if accepted != expected:
        raise BenchError(f"POST {url}: accepted {accepted} of {expected}")


# --- the python generator (runs in the child process) -------------------------------------


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """No cyclic garbage collection while the generator runs: a full collection over the
    client's heap (aiohttp, the requests' tasks) pauses it for tens of milliseconds, late
    sends that an open-loop run would charge to the server."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def closed_loop(
    url: str,
    events_per_request: int,
    concurrency: int,
    timing: Timing,
    server_pid: int,
    helper_pids: tuple[int, ...],
) -> Window:
    """``concurrency`` requests in flight, each sent as soon as the last one came back."""
    with collector_off():
        return uvloop.run(
            _closed_loop(url, events_per_request, concurrency, timing, server_pid, helper_pids)
        )


async def _closed_loop(
    url: str,
    events_per_request: int,
    concurrency: int,
    timing: Timing,
    server_pid: int,
    helper_pids: tuple[int, ...],
) -> Window:
    bodies = Bodies(events_per_request)
    finished: list[tuple[float, float]] = []  # (end, latency) of each acknowledged request
    acknowledged = 0
    stop_at = time.perf_counter() + timing.warmup_s + timing.duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def worker() -> None:
            nonlocal acknowledged
            while True:
                body = bodies.body(bodies.ids())
                start = time.perf_counter()
                if start >= stop_at:
                    return
                await post(session, url, body, events_per_request)
                end = time.perf_counter()
                acknowledged += events_per_request
                finished.append((end, end - start))

        workers = asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.wait([workers], timeout=timing.warmup_s)
        window_start, first = time.perf_counter(), snapshot(server_pid, helper_pids)
        await asyncio.wait([workers], timeout=max(0.0, stop_at - window_start))
        window_end, last = time.perf_counter(), snapshot(server_pid, helper_pids)
        await workers  # the last requests in flight, and the first error if any
    latencies = [latency for end, latency in finished if window_start <= end <= window_end]
    p50, p99 = percentiles_ms(latencies)
    return Window.between(
        first,
        last,
        generator="python",
        events_per_request=events_per_request,
        requests=len(latencies),
        p50_ms=p50,
        p99_ms=p99,
        acknowledged=acknowledged,
        cut_off=0,
    )


def open_loop(
    url: str, rate: float, timing: Timing, server_pid: int, helper_pids: tuple[int, ...]
) -> Window:
    """Single events sent on a fixed schedule, whatever is in flight."""
    with collector_off():
        return uvloop.run(_open_loop(url, rate, timing, server_pid, helper_pids))


async def _open_loop(
    url: str, rate: float, timing: Timing, server_pid: int, helper_pids: tuple[int, ...]
) -> Window:
    bodies = Bodies(1)
    warmup = round(rate * timing.warmup_s)
    total = warmup + round(rate * timing.duration_s)
    done: list[tuple[float, float, str]] = []  # (scheduled, end, eventId), acknowledged
    lags: list[float] = []  # of the requests scheduled in the window
    connector = aiohttp.TCPConnector(limit=PACED_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def one(scheduled: float, event_id: str, measured: bool) -> None:
            if measured:
                lags.append(time.perf_counter() - scheduled)
            await post(session, url, Bodies.body([event_id]), 1)
            done.append((scheduled, time.perf_counter(), event_id))

        tasks: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            error = None if task.cancelled() else task.exception()
            if error is not None:
                failed.append(error)

        first: tuple[float, Snapshot] | None = None
        start = time.perf_counter() + 0.01
        for index in range(total):
            scheduled = start + index / rate
            # Also when late: a yield lets the requests already due go out.
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            if index == warmup:
                first = scheduled, snapshot(server_pid, helper_pids)
            if failed:
                break
            task = asyncio.create_task(one(scheduled, bodies.ids()[0], index >= warmup))
            tasks.add(task)
            task.add_done_callback(finished)
        await asyncio.sleep(max(0.0, start + total / rate - time.perf_counter()))
        window_end, last = time.perf_counter(), snapshot(server_pid, helper_pids)
        await asyncio.gather(*tasks, return_exceptions=True)
    if failed:
        raise failed[0]
    if first is None:
        raise BenchError("the paced run has no measured part")
    window_start = first[0]
    p50, p99 = percentiles_ms(
        [end - scheduled for scheduled, end, _ in done if scheduled >= window_start]
    )
    _lag_p50, lag_p99 = percentiles_ms(lags)
    return Window.between(
        first[1],
        last,
        generator="python",
        events_per_request=1,
        requests=sum(window_start <= end <= window_end for _, end, _ in done),
        p50_ms=p50,
        p99_ms=p99,
        acknowledged=len(done),
        cut_off=0,
        offered_per_s=rate,
        send_lag_p99_ms=lag_p99,
        event_ids=tuple(event_id for _, _, event_id in done),
    )


# --- wrk (runs here) ------------------------------------------------------------------------


def wrk_window(
    wrk: str,
    directory: Path,
    url: str,
    scenario: Scenario,
    timing: Timing,
    server_pid: int,
    helper_pids: tuple[int, ...],
) -> Window:
    """A wrk warm-up, then the measured wrk run; wrk's CPU is this process's children's."""
    warmup = _run_wrk(wrk, directory, url, scenario, timing.warmup_s)

    def wrk_snapshot() -> Snapshot:
        children = os.times()
        return replace(
            snapshot(server_pid, helper_pids),
            client=children.children_user + children.children_system,
        )

    first = wrk_snapshot()
    measured = _run_wrk(wrk, directory, url, scenario, timing.duration_s)
    last = wrk_snapshot()
    window = Window.between(
        first,
        last,
        generator="wrk",
        events_per_request=scenario.events_per_request,
        requests=measured.requests,
        p50_ms=measured.p50_ms,
        p99_ms=measured.p99_ms,
        acknowledged=(warmup.requests + measured.requests) * scenario.events_per_request,
        # wrk drops the requests in flight when its time is up; the daemon may still
        # commit them.
        cut_off=2 * scenario.concurrency * scenario.events_per_request,
    )
    # wrk's own duration: the snapshots also hold its start-up and exit.
    return replace(window, ended_at=window.started_at + measured.seconds)


# --- the servers -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Server:
    """A server under load, seen from here."""

    name: str  #: "almhookd" or "bare"
    url: str
    pid: int


@contextlib.contextmanager
def bare_endpoint() -> Iterator[Server]:
    """``bench/bare_endpoint.py`` in its own process; SIGTERM on leaving, exit 0."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(BARE_SCRIPT), "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, "the bare endpoint", 30.0)
        yield Server(name="bare", url=url, pid=process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        code: int | None = None
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if code != 0:
        raise BenchError(f"the bare endpoint ended with {code} after SIGTERM")


@dataclass(frozen=True, kw_only=True, slots=True)
class DaemonCode:
    """Which almhookd the daemon runs."""

    python: str
    checkout: Path | None  #: run from this directory: its almhookd package

    def describe(self) -> str:
        """Where its almhookd package is, the version and the commit of that checkout."""
        probe = subprocess.run(
            [
                self.python,
                "-c",
                "import almhookd, importlib.metadata as m; "
                "print(almhookd.__file__); print(m.version('almhookd'))",
            ],
            capture_output=True,
            text=True,
            cwd=self.checkout,
            check=False,
        )
        lines = probe.stdout.split()
        if probe.returncode != 0 or len(lines) != 2:
            raise BenchError(f"{self.python} cannot import almhookd: {probe.stderr.strip()}")
        package = Path(lines[0]).parent
        return (
            f"almhookd {lines[1]} from {package}, commit {source_revision(package.parent)}, "
            f"run by {self.python}"
        )


# --- one run of a scenario ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Bench:
    """What every scenario uses."""

    timing: Timing
    generators: tuple[str, ...]
    code: DaemonCode
    client: ProcessPoolExecutor
    bare: Server
    receiver: Receiver
    wrk: str | None
    directory: Path  #: wrk's scripts
    #: the PostgreSQL cluster of ``--backend postgresql`` (a new database per daemon)
    postgres: Any = None

    def helpers(self, server: Server) -> tuple[int, ...]:
        return tuple(pid for pid in (self.receiver.pid, self.bare.pid) if pid != server.pid)

    def drive(self, generator: str, server: Server, scenario: Scenario) -> Window:
        """One closed-loop measurement of ``server``."""
        if generator == "python":
            return self.client.submit(
                closed_loop,
                server.url + "/v1/events",
                scenario.events_per_request,
                scenario.concurrency,
                self.timing,
                server.pid,
                self.helpers(server),
            ).result()
        if self.wrk is None:
            raise BenchError("wrk is not installed")
        return wrk_window(
            self.wrk,
            self.directory,
            server.url,
            scenario,
            self.timing,
            server.pid,
            self.helpers(server),
        )


def on_daemon(
    bench: Bench,
    measure: Callable[[Server], Window],
    *,
    extra_toml: str = "",
    webhook: tuple[str, str] | None = None,
    after: Callable[[Daemon, Window], None] | None = None,
) -> tuple[Window, int]:
    """``measure`` on a fresh daemon (with one webhook (name, target)); then ``after``, the
    daemon's SIGTERM and the stored-events check. (window, events stored)."""
    with tempfile.TemporaryDirectory(prefix="almhookd-bench-") as name:
        dsn = None if bench.postgres is None else bench.postgres.new_database("bench")
        with running_daemon(
            Path(name),
            extra_toml,
            python=bench.code.python,
            checkout=bench.code.checkout,
            dsn=dsn,
        ) as daemon:
            if webhook is not None:
                create_webhook(daemon.url, *webhook, description="bench/ingest_wire.py")
            window = measure(Server(name="almhookd", url=daemon.url, pid=daemon.process.pid))
            if after is not None:
                after(daemon, window)
        stored = daemon.stored_events()
    if not window.acknowledged <= stored <= window.acknowledged + window.cut_off:
        raise BenchError(
            f"almhookd ({window.generator}): {stored:,} events stored, "
            f"{window.acknowledged:,} acknowledged"
        )
    return window, stored


@dataclass(frozen=True, kw_only=True, slots=True)
class Pair:
    """One run of a closed-loop scenario with one generator: almhookd and the bare endpoint."""

    run: int
    generator: str
    almhookd: Window
    bare: Window
    stored: int
    delivered_per_s: float | None = None  #: to the webhook, in almhookd's window

    @property
    def ratio(self) -> float:
        return self.almhookd.events_per_s / self.bare.events_per_s


def pair(
    bench: Bench,
    run: int,
    generator: str,
    scenario: Scenario,
    *,
    extra_toml: str = "",
    webhook: tuple[str, str] | None = None,
) -> Pair:
    """almhookd and the bare endpoint under the same load, in turn."""
    daemon: tuple[Window, int] | None = None
    bare: Window | None = None
    for side in ("almhookd", "bare") if run % 2 else ("bare", "almhookd"):
        if side == "almhookd":
            daemon = on_daemon(
                bench,
                lambda server: bench.drive(generator, server, scenario),
                extra_toml=extra_toml,
                webhook=webhook,
            )
        else:
            bare = bench.drive(generator, bench.bare, scenario)
    if daemon is None or bare is None:
        raise BenchError("a side was not measured")
    delivered = None
    if webhook is not None:
        window = daemon[0]
        arrivals = bench.receiver.take().get(webhook[0], [])
        events = sum(len(ids) for at, ids in arrivals if window.started_at <= at <= window.ended_at)
        delivered = events / window.seconds
    result = Pair(
        run=run,
        generator=generator,
        almhookd=daemon[0],
        bare=bare,
        stored=daemon[1],
        delivered_per_s=delivered,
    )
    print(
        f"  run {run} {generator}: almhookd {result.almhookd.requests_per_s:,.0f} req/s "
        f"({result.almhookd.events_per_s:,.0f} events/s), bare "
        f"{result.bare.requests_per_s:,.0f} req/s: {result.ratio:.2f}x",
        file=sys.stderr,
    )
    return result


SINGLE: Final = Scenario(events_per_request=1, concurrency=SINGLE_CONCURRENCY)
ENVELOPE: Final = Scenario(events_per_request=ENVELOPE_EVENTS, concurrency=ENVELOPE_CONCURRENCY)


def single_run(bench: Bench, run: int) -> list[Pair]:
    return [pair(bench, run, generator, SINGLE) for generator in bench.generators]


def envelope_run(bench: Bench, run: int) -> list[Pair]:
    return [
        pair(
            bench,
            run,
            generator,
            ENVELOPE,
            extra_toml="[delivery]\nallow_private_targets = true\n",
            webhook=(ENVELOPE_HOOK, bench.receiver.url(ENVELOPE_HOOK)),
        )
        for generator in bench.generators
    ]


@dataclass(frozen=True, kw_only=True, slots=True)
class Paced:
    """One run of the p99 scenario."""

    run: int
    maximum: float  #: almhookd's single-event req/s at 16 in flight, this run
    maximum_measured_here: bool  #: measured for this scenario (``single`` was not run)
    ceiling: float  #: the plain client's req/s to the receiver, this run
    window: Window
    stored: int
    check: Check
    delivered_per_s: float  #: events that arrived at the webhook in the window

    @property
    def delivery_ratio(self) -> float:
        return self.delivered_per_s / self.ceiling


def paced_run(bench: Bench, run: int, maximum: float | None) -> Paced:
    measured_here = maximum is None
    if maximum is None:
        window, _ = on_daemon(bench, lambda server: bench.drive("python", server, SINGLE))
        maximum = window.requests_per_s
        print(f"  run {run}: single-event maximum {maximum:,.0f} req/s", file=sys.stderr)
    plan = replace(QUICK, warmup_s=bench.timing.warmup_s, window_s=bench.timing.duration_s)
    ceiling_rate, _row = ceiling(bench.receiver, plan)
    print(f"  run {run}: ceiling {ceiling_rate:,.0f} req/s", file=sys.stderr)
    rate = PACE_SHARE * maximum

    def measure(server: Server) -> Window:
        return bench.client.submit(
            open_loop,
            server.url + "/v1/events",
            rate,
            bench.timing,
            server.pid,
            bench.helpers(server),
        ).result()

    def drained(daemon: Daemon, window: Window) -> None:
        wait_delivered(
            bench.receiver,
            len(window.event_ids),
            Pids(daemon=daemon.process.pid, receiver=bench.receiver.pid),
        )

    window, stored = on_daemon(
        bench,
        measure,
        extra_toml="[delivery]\nallow_private_targets = true\nmax_events_per_request = 1\n",
        webhook=(PACED_HOOK, bench.receiver.url(PACED_HOOK)),
        after=drained,
    )
    arrivals = bench.receiver.take()
    check = check_delivery(window.event_ids, arrivals, [PACED_HOOK])
    in_window = sum(
        len(ids)
        for at, ids in arrivals.get(PACED_HOOK, [])
        if window.started_at <= at <= window.ended_at
    )
    result = Paced(
        run=run,
        maximum=maximum,
        maximum_measured_here=measured_here,
        ceiling=ceiling_rate,
        window=window,
        stored=stored,
        check=check,
        delivered_per_s=in_window / window.seconds,
    )
    print(
        f"  run {run}: paced at {rate:,.0f} req/s: p50 {window.p50_ms:.2f} ms, p99 "
        f"{window.p99_ms:.2f} ms; delivered {result.delivered_per_s:,.0f} events/s, "
        f"{result.delivery_ratio:.2f}x the ceiling; {check}",
        file=sys.stderr,
    )
    return result


# --- the report -------------------------------------------------------------------------------


def host_lines(bench: Bench) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    lines = [
        f"- Daemon: {bench.code.describe()}",
        f"- CPUs: {len(os.sched_getaffinity(0))} usable ({model.group(1) if model else '?'})",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"aiohttp {version('aiohttp')}, uvloop {version('uvloop')} (this side: generator, "
        "bare endpoint, receiver)",
        f"- OS: {platform.platform()}; databases in {tempfile.gettempdir()}",
        "- Load average at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]
    if bench.postgres is not None:
        lines.append(
            "- Storage: PostgreSQL "
            + bench.postgres.psql("SHOW server_version").strip()
            + " (a throwaway cluster on this machine, the server's defaults)"
        )
    if bench.wrk is not None and "wrk" in bench.generators:
        lines.append(f"- {_wrk_version(bench.wrk)}")
    return lines


def mark(window: Window) -> str:
    return " (*)" if window.disturbed else ""


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def pair_table(pairs: Sequence[Pair], *, events: bool) -> list[str]:
    unit = "events/s" if events else "req/s"
    delivering = any(p.delivered_per_s is not None for p in pairs)
    out = [
        f"| Run | Generator | almhookd {unit} | bare {unit} | Ratio | almhookd p50 / p99 ms | "
        "bare p50 / p99 ms | almhookd CPU µs/event | bare CPU µs/event | Client CPU | "
        "Other CPU | " + ("Delivered events/s | " if delivering else "") + "Stored / acked |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if delivering else "") + "--:|",
    ]

    def rate(window: Window) -> float:
        return window.events_per_s if events else window.requests_per_s

    for p in pairs:
        a, b = p.almhookd, p.bare
        out.append(
            f"| {p.run} | {p.generator} | {rate(a):,.0f}{mark(a)} | {rate(b):,.0f}{mark(b)} | "
            f"{p.ratio:.2f}x | {a.p50_ms:.2f} / {a.p99_ms:.2f} | {b.p50_ms:.2f} / {b.p99_ms:.2f} | "
            f"{a.server_us_per_event:.1f} | {b.server_us_per_event:.1f} | "
            f"{a.client_cpu_s / a.seconds:.0%} / {b.client_cpu_s / b.seconds:.0%} | "
            f"{a.other_cpu:.0%} / {b.other_cpu:.0%} | "
            + (f"{p.delivered_per_s or 0:,.0f} | " if delivering else "")
            + f"{p.stored:,} / {a.acknowledged:,} |"
        )
    for generator in dict.fromkeys(p.generator for p in pairs):
        mine = [p for p in pairs if p.generator == generator]
        if len(mine) < 2:
            continue
        out.append(
            f"| **median** | {generator} | {median([rate(p.almhookd) for p in mine]):,.0f} | "
            f"{median([rate(p.bare) for p in mine]):,.0f} | "
            f"**{median([p.ratio for p in mine]):.2f}x** | "
            f"{median([p.almhookd.p50_ms for p in mine]):.2f} / "
            f"{median([p.almhookd.p99_ms for p in mine]):.2f} | "
            f"{median([p.bare.p50_ms for p in mine]):.2f} / "
            f"{median([p.bare.p99_ms for p in mine]):.2f} | "
            f"{median([p.almhookd.server_us_per_event for p in mine]):.1f} | "
            f"{median([p.bare.server_us_per_event for p in mine]):.1f} | | | "
            + (f"{median([p.delivered_per_s or 0 for p in mine]):,.0f} | " if delivering else "")
            + " |"
        )
    return out


def paced_table(runs: Sequence[Paced]) -> list[str]:
    out = [
        "| Run | Maximum req/s | Pace req/s | Achieved req/s | p50 ms | p99 ms | Send lag p99 ms | "
        "Ceiling req/s | Delivered events/s | vs ceiling | Delivered / achieved | "
        "almhookd CPU | almhookd CPU µs/event | Client CPU | Receiver CPU | Other CPU | "
        "Arrived / acked | Stored / acked |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in runs:
        w = r.window
        out.append(
            f"| {r.run} | {r.maximum:,.0f}{' (m)' if r.maximum_measured_here else ''} | "
            f"{w.offered_per_s or 0.0:,.0f} | {w.requests_per_s:,.0f}{mark(w)} | "
            f"{w.p50_ms:.2f} | {w.p99_ms:.2f} | {w.send_lag_p99_ms or 0.0:.2f} | "
            f"{r.ceiling:,.0f} | {r.delivered_per_s:,.0f} | {r.delivery_ratio:.2f}x | "
            f"{r.delivered_per_s / w.requests_per_s:.2f}x | "
            f"{w.server_cpu_s / w.seconds:.0%} | {w.server_us_per_event:.1f} | "
            f"{w.client_cpu_s / w.seconds:.0%} | {w.helpers_cpu_s / w.seconds:.0%} | "
            f"{w.other_cpu:.0%} | {r.check} | {r.stored:,} / {w.acknowledged:,} |"
        )
    if len(runs) > 1:
        out.append(
            f"| **median** | {median([r.maximum for r in runs]):,.0f} | "
            f"{median([r.window.offered_per_s or 0.0 for r in runs]):,.0f} | "
            f"{median([r.window.requests_per_s for r in runs]):,.0f} | "
            f"{median([r.window.p50_ms for r in runs]):.2f} | "
            f"**{median([r.window.p99_ms for r in runs]):.2f}** | | "
            f"{median([r.ceiling for r in runs]):,.0f} | "
            f"{median([r.delivered_per_s for r in runs]):,.0f} | "
            f"**{median([r.delivery_ratio for r in runs]):.2f}x** | | | "
            f"{median([r.window.server_us_per_event for r in runs]):.1f} | | | | | |"
        )
    return out


def summary(
    singles: Sequence[Pair], envelopes: Sequence[Pair], paced: Sequence[Paced]
) -> list[str]:
    out = ["| Target | Median | Runs | Met |", "|---|--:|---|---|"]

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    for generator in dict.fromkeys(p.generator for p in singles):
        mine = [p for p in singles if p.generator == generator]
        ratio = median([p.ratio for p in mine])
        out.append(
            f"| Single events, {SINGLE_CONCURRENCY} in flight: almhookd ≥ "
            f"{SINGLE_RATIO_TARGET}x the bare endpoint ({generator}) | {ratio:.2f}x "
            f"({median([p.almhookd.requests_per_s for p in mine]):,.0f} against "
            f"{median([p.bare.requests_per_s for p in mine]):,.0f} req/s) | "
            + " / ".join(f"{p.ratio:.2f}x" for p in mine)
            + f" | {met(ratio >= SINGLE_RATIO_TARGET)} |"
        )
    for generator in dict.fromkeys(p.generator for p in envelopes):
        mine = [p for p in envelopes if p.generator == generator]
        rate = median([p.almhookd.events_per_s for p in mine])
        out.append(
            f"| {ENVELOPE_EVENTS}-event envelopes, {ENVELOPE_CONCURRENCY} in flight, 1 webhook: "
            f"≥ {ENVELOPE_TARGET_EVENTS_PER_S:,} events/s ({generator}) | {rate:,.0f} events/s "
            f"({median([p.ratio for p in mine]):.2f}x the bare endpoint's "
            f"{median([p.bare.events_per_s for p in mine]):,.0f}) | "
            + " / ".join(f"{p.almhookd.events_per_s:,.0f}" for p in mine)
            + f" | {met(rate >= ENVELOPE_TARGET_EVENTS_PER_S)} |"
        )
    if paced:
        p99 = median([r.window.p99_ms for r in paced])
        ratio = median([r.delivery_ratio for r in paced])
        out += [
            f"| Single events paced at {PACE_SHARE:.0%} of the maximum: p99 ≤ "
            f"{P99_TARGET_MS:g} ms | p99 {p99:.2f} ms (p50 "
            f"{median([r.window.p50_ms for r in paced]):.2f} ms) | "
            + " / ".join(f"{r.window.p99_ms:.2f}" for r in paced)
            + f" | {met(p99 <= P99_TARGET_MS)} |",
            f"| Meanwhile, deliveries to 1 webhook (1 event/request) ≥ "
            f"{CEILING_SHARE_TARGET}x the plain-client ceiling | {ratio:.2f}x "
            f"({median([r.delivered_per_s for r in paced]):,.0f} against "
            f"{median([r.ceiling for r in paced]):,.0f}/s) | "
            + " / ".join(f"{r.delivery_ratio:.2f}x" for r in paced)
            + f" | {met(ratio >= CEILING_SHARE_TARGET)} |",
        ]
    return out


def render(
    bench: Bench,
    header: Sequence[str],
    singles: Sequence[Pair],
    envelopes: Sequence[Pair],
    paced: Sequence[Paced],
) -> str:
    t = bench.timing
    out = [
        "## Ingest against a bare endpoint (`bench/ingest_wire.py`, issue 22)",
        "",
        *header,
        f"- Every measurement: {t.warmup_s} s warm-up, {t.duration_s} s measured; almhookd "
        "on a fresh database each time, stopped with SIGTERM (exit 0), its `events` rows "
        "checked against the events acknowledged",
        "- Full: `.venv/bin/python -m bench.ingest_wire` (3 runs, about 7 minutes on 2 cores); "
        "quick, for development: `.venv/bin/python -m bench.ingest_wire --quick` (1 run, 3 s "
        "windows, under a minute)",
        "",
        "### Against the targets",
        "",
        *summary(singles, envelopes, paced),
        "",
    ]
    if singles:
        out += [
            f"### Single-event requests, {SINGLE_CONCURRENCY} in flight, no webhook",
            "",
            *pair_table(singles, events=False),
            "",
        ]
    if envelopes:
        out += [
            f"### {ENVELOPE_EVENTS}-event envelopes, {ENVELOPE_CONCURRENCY} in flight, one "
            "webhook subscribed (default packing)",
            "",
            *pair_table(envelopes, events=True),
            "",
            "almhookd's CPU per event includes the deliveries it made meanwhile; Delivered: "
            "events that arrived at the receiver in almhookd's window, per second.",
            "",
        ]
    if paced:
        out += [
            f"### Single events paced at {PACE_SHARE:.0%} of the maximum, one webhook at 1 "
            "event/request",
            "",
            *paced_table(paced),
            "",
            f"Maximum: almhookd's single-event req/s at {SINGLE_CONCURRENCY} in flight (python "
            "generator, no webhook) of the same run; (m): measured for this scenario. "
            "Latency from each request's scheduled send time to its 202, over the requests "
            "scheduled in the window; python generator, up to "
            f"{PACED_CONNECTIONS} connections. Ceiling: `bench.delivery`'s plain aiohttp "
            "client posting the daemon's payloads to the receiver, one in flight, just before. "
            "Delivered: events that arrived at the webhook in the window, per second; "
            "Delivered / achieved (ingest) above 1 is a backlog of the warm-up being caught up, "
            "below 1 a backlog growing. Send lag: how late the client started a request "
            "against its schedule (large: the client, not the daemon, fell behind). Receiver "
            "CPU: the webhook receiver's share of a core. Arrived / acked: distinct eventIds "
            "received after the window once the backlog drained, against those acknowledged.",
            "",
        ]
    out += [
        "Ratio: almhookd's rate over the bare endpoint's, same run and generator. CPU µs per "
        "event: the server's CPU over the window per event acknowledged in it. Client CPU "
        "(almhookd / bare): the generator's share of a core; Other CPU: everything else on "
        "the machine (kernel threads included, the fsyncs' block I/O shows there); (*) marks "
        f"a window where it exceeded {DISTURBED_CPU:.0%} of a core. Stored / acked: rows in "
        "`events` after SIGTERM against events acknowledged with 202, warm-up included (wrk "
        "drops the requests in flight when its time is up: up to 2 x concurrency x "
        "events/request more may be stored).",
    ]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_TIMING.warmup_s} s warm-up and {QUICK_TIMING.duration_s} s windows, "
        f"1 run, instead of {FULL_TIMING.warmup_s} s, {FULL_TIMING.duration_s} s and "
        f"{FULL_RUNS} runs",
    )
    parser.add_argument(
        "--runs", type=int, metavar="N", help=f"runs of each scenario (default {FULL_RUNS})"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario, repeatable (default: all)",
    )
    parser.add_argument(
        "--generator",
        action="append",
        choices=GENERATORS,
        help="load generator, repeatable (default: python, and wrk when it is installed)",
    )
    parser.add_argument(
        "--daemon-python",
        default=sys.executable,
        metavar="PATH",
        help="the interpreter that runs the daemon (default: this one)",
    )
    parser.add_argument(
        "--daemon-checkout",
        type=Path,
        metavar="DIR",
        help="run the daemon from DIR, another checkout: its almhookd package",
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="also write the Markdown report to FILE"
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the daemon's storage (postgresql: a throwaway cluster of the machine's "
        "PostgreSQL server, a new database per daemon)",
    )
    args = parser.parse_args(argv)
    runs: int = args.runs or (1 if args.quick else FULL_RUNS)
    if runs < 1:
        parser.error("--runs must be at least 1")
    scenarios: list[str] = args.scenario or list(SCENARIOS)
    wrk = shutil.which("wrk")
    generators: tuple[str, ...] = tuple(
        dict.fromkeys(args.generator or (["python", "wrk"] if wrk else ["python"]))
    )
    checkout = args.daemon_checkout.resolve() if args.daemon_checkout else None
    command = shlex.join(
        [os.path.relpath(sys.executable), "-m", "bench.ingest_wire", *sys.argv[1:]]
    )
    started, began = time.monotonic(), datetime.now().astimezone()
    singles: list[Pair] = []
    envelopes: list[Pair] = []
    paced: list[Paced] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="almhookd-bench-") as directory,
            ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as client,
            running_receiver() as receiver,
            bare_endpoint() as bare,
            contextlib.ExitStack() as stack,
        ):
            postgres = (
                stack.enter_context(running_cluster()) if args.backend == "postgresql" else None
            )
            bench = Bench(
                timing=QUICK_TIMING if args.quick else FULL_TIMING,
                generators=generators,
                code=DaemonCode(python=args.daemon_python, checkout=checkout),
                client=client,
                bare=bare,
                receiver=receiver,
                wrk=wrk,
                directory=Path(directory),
                postgres=postgres,
            )
            header = host_lines(bench)
            for run in range(1, runs + 1):
                if "single" in scenarios:
                    print(f"run {run}: single", file=sys.stderr)
                    singles += single_run(bench, run)
                if "envelope" in scenarios:
                    print(f"run {run}: envelope", file=sys.stderr)
                    envelopes += envelope_run(bench, run)
                if "p99" in scenarios:
                    print(f"run {run}: p99", file=sys.stderr)
                    maximum = next(
                        (
                            p.almhookd.requests_per_s
                            for p in singles
                            if p.run == run and p.generator == "python"
                        ),
                        None,
                    )
                    paced.append(paced_run(bench, run, maximum))
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    header += [
        f"- Command: `{command}`, started {began:%Y-%m-%d %H:%M %Z}, took "
        f"{time.monotonic() - started:.0f} s; generators: {', '.join(generators)}",
    ]
    report = render(bench, header, singles, envelopes, paced)
    print(report, end="")
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
