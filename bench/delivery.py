"""Delivery throughput and latency of almhookd: events per second reaching a receiver.

Every scenario starts the real daemon (``python -m almhookd run``) on a fresh database
in a temporary directory. Its webhooks are written into the database through the store
before it starts (quicker than the admin API, and the same rows), all aimed at one
receiver: a separate process
serving aiohttp under uvloop that answers 202 at once and records each request's arrival
time (``time.time()``) and body, one path per webhook. The same receiver serves every
scenario. Afterwards the daemon is stopped with SIGTERM (it must exit 0) and each
webhook's eventIds are checked against the ingested ones: lost, duplicated and unexpected
events are counted, and a row that lost events shows that instead of a speed. Other
people may be running tests on the machine: before each scenario the script waits (at
most ``QUIET_WAIT_S``) for a quiet second, and it marks a row whose window saw other load.

Scenarios:

* ceiling: this script's aiohttp client posts the daemon's payloads (one event per
  request, signed, built before the clock starts) straight to the receiver, one request
  in flight: what one sender achieves here without a daemon.
* steady state, to one webhook and to five: ``delivery.max_events_per_request = 1``, so
  each request carries one event, while single events are ingested in a closed loop
  that keeps at most ``STEADY_AHEAD`` events per webhook ingested but not yet delivered:
  ingest runs at the delivery rate, as in a steady state, and the backlog never runs dry.
  ``STEADY_CONCURRENCY`` ingest requests are in flight: with 4, or with 16 once the
  daemon delivered faster, each waiting for its own commit, ingest could not keep 100
  events ahead and the row measured ingest.
* drains: events are ingested in 100-event envelopes while the webhook's port has no
  listener (each attempt fails at once; the backoff is 1 s, then 2 s), then the receiver
  opens that port. The rate runs from the first delivered request to the last arrival.
  Once with the default packing (up to 50 events per request), once at one event per
  request, which isolates the cost of a delivery from the cost of ingest.
* latency: single events ingested at a fixed pace; latency is the arrival at the
  receiver minus the moment the ingest request was sent.
* batch flush: non-real-time events held until ``POST /v1/batch/flush``; the rate runs
  from the flush request to the last arrival, and the daemon's peak RSS is its VmHWM,
  reset just before the flush.
* idle: five webhooks and nothing to do; the daemon's CPU time.

With ``--backend postgresql`` every daemon keeps its state in a new database of a
throwaway PostgreSQL cluster on this machine (its CPU counts as the daemon's), and the
report adds the cluster drains: a packed backlog for five webhooks drained by 1, 2 and
3 daemon processes sharing one database.

Run from the checkout: ``.venv/bin/python -m bench.delivery [--quick] [--backend
postgresql] [--output FILE]``; the report is Markdown on stdout, progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import shlex
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Literal, cast

import aiohttp
import uvloop
from aiohttp import web

from almhookd.config import Secret
from almhookd.delivery.worker import MAX_REQUEST_BYTES
from almhookd.domain.catalogue import CATALOGUE
from almhookd.domain.events import parse_ingest
from almhookd.domain.signing import generate_secret, signature_header
from almhookd.domain.webhooks import NewWebhook
from almhookd.logs import configure_logging
from almhookd.storage.interface import Storage
from almhookd.storage.postgres import PostgresStorage
from almhookd.storage.sqlite import SqliteStorage
from bench.ingest import (
    DISTURBED_CPU,
    ENROLLMENT,
    ENVELOPE_SIZE,
    EVENT_NAME,
    HEADERS,
    BenchError,
    Daemon,
    free_port,
    machine_cpu_s,
    machine_lines,
    percentiles_ms,
    process_cpu_s,
    running_daemon,
)
from tests.support.postgres import running_cluster

BATCH_EVENT_NAME: Final = "COURSE_ENROLLMENT_BATCH"
EVENT_DATA: Final = json.dumps(ENROLLMENT, separators=(",", ":"))
#: How the receiver counts the events of a request without decoding it.
EVENT_ID_KEY: Final = b'"eventId":'

CEILING_SHARE_TARGET: Final = 0.5
DRAIN_TARGET_EVENTS_PER_S: Final = 30_000
LATENCY_P99_TARGET_MS: Final = 25.0
#: Above this share of a core the idle daemon is not idle.
IDLE_CPU_LIMIT: Final = 0.01

FANOUT_WEBHOOKS: Final = 5
DEFAULT_EVENTS_PER_REQUEST: Final = 50
BATCH_EVENTS_PER_REQUEST: Final = 100
BACKOFF_INITIAL: Final = "1s"
BACKOFF_MAX: Final = "2s"
#: Steady state: ingested-but-undelivered events per webhook, ingest requests in flight,
#: and how often a blocked ingest request checks the delivered count again.
STEADY_AHEAD: Final = 100
STEADY_CONCURRENCY: Final = 32
STEADY_POLL_S: Final = 0.01
#: Envelope requests in flight while a backlog is built.
BACKLOG_CONCURRENCY: Final = 4
LATENCY_EVENTS_PER_S: Final = 200
LATENCY_CONNECTIONS: Final = 32
#: Requests the ceiling client prepares per second of its run: more than it can send.
CEILING_POOL_PER_S: Final = 6_000
#: How often this script checks the receiver's count while waiting for deliveries.
POLL_S: Final = 0.002
IDLE_SETTLE_S: Final = 1.0
DRAIN_TIMEOUT_S: Final = 180.0
#: Other people's tests come and go: before each scenario, wait up to QUIET_WAIT_S for a
#: QUIET_SAMPLE_S stretch in which the whole machine used less than QUIET_CPU of a core.
QUIET_WAIT_S: Final = 20.0
QUIET_SAMPLE_S: Final = 1.0
QUIET_CPU: Final = 0.1
RECEIVER_TIMEOUT_S: Final = 60.0

#: (arrival time, eventIds) of one request; the requests each webhook received.
Arrival = tuple[float, tuple[str, ...]]
Arrivals = dict[str, list[Arrival]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    warmup_s: float
    window_s: float  #: measured window of the ceiling and the steady states
    latency_s: float  #: measured window of the latency run, after the warm-up
    backlog_events: int  #: the packed drain and the batch flush
    single_backlog_events: int  #: the drain at one event per request
    idle_s: float


FULL: Final = Plan(
    warmup_s=2,
    window_s=10,
    latency_s=15,
    backlog_events=100_000,
    single_backlog_events=5_000,
    idle_s=10,
)
QUICK: Final = Plan(
    warmup_s=1,
    window_s=3,
    latency_s=5,
    backlog_events=20_000,
    single_backlog_events=2_000,
    idle_s=3,
)


# --- CPU accounting ------------------------------------------------------------------


#: ``--backend postgresql``: the throwaway cluster whose new databases the daemons use
POSTGRES: list[Any] = []
#: Processes of the cluster drains.
CLUSTER_SIZES: Final = (1, 2, 3)
CLUSTER_SETTLE_S: Final = 30.0


def new_dsn() -> str | None:
    """A new empty database of the ``--backend postgresql`` cluster (None: SQLite)."""
    return POSTGRES[0].new_database("bench") if POSTGRES else None


def postgres_cpu_s() -> float:
    """CPU seconds of the PostgreSQL server's processes now (0 without one)."""
    if not POSTGRES:
        return 0.0
    used = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # a backend that just ended
        if text.split(" (", 1)[1].startswith("postgres)"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                used += process_cpu_s(int(stat.parent.name))
    return used


@dataclass(frozen=True, kw_only=True, slots=True)
class Pids:
    daemon: int | None
    receiver: int
    #: more daemon processes (the cluster drains), counted with the first
    others: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class CpuSnapshot:
    wall: float  #: time.time(), comparable with the receiver's arrival times
    daemon: float | None
    receiver: float
    client: float  #: this process: the load generator
    machine: float


def cpu_snapshot(pids: Pids) -> CpuSnapshot:
    return CpuSnapshot(
        wall=time.time(),
        daemon=None
        if pids.daemon is None
        else sum(process_cpu_s(pid) for pid in (pids.daemon, *pids.others)) + postgres_cpu_s(),
        receiver=process_cpu_s(pids.receiver),
        client=time.process_time(),
        machine=machine_cpu_s(),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Cpu:
    """CPU seconds used over a window, by process."""

    start: float
    end: float
    daemon: float | None
    receiver: float
    client: float
    machine: float

    @classmethod
    def between(cls, first: CpuSnapshot, last: CpuSnapshot) -> Cpu:
        return cls(
            start=first.wall,
            end=last.wall,
            daemon=None
            if first.daemon is None or last.daemon is None
            else last.daemon - first.daemon,
            receiver=last.receiver - first.receiver,
            client=last.client - first.client,
            machine=last.machine - first.machine,
        )

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def other(self) -> float:
        """Everything else on the machine, kernel threads included."""
        return max(0.0, self.machine - (self.daemon or 0.0) - self.receiver - self.client)

    @property
    def disturbed(self) -> bool:
        return self.other / self.seconds > DISTURBED_CPU

    def share(self, used: float | None) -> str:
        return "—" if used is None else f"{used / self.seconds:.0%}"


# --- the receiver --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listen:
    """Receiver command: serve on this port as well."""

    port: int


@dataclass(frozen=True, slots=True)
class Close:
    """Receiver command: stop serving on this port and drop every open connection, as
    a receiver that went down (new connections are refused until ``Listen`` again)."""

    port: int


Command = Listen | Close | Literal["take", "stop"]


def serve_receiver(port: int, delivered: ctypes.c_int64, control: Connection) -> None:
    """The receiver process: serve until told to stop."""
    uvloop.run(_serve_receiver(port, delivered, control))


async def _serve_receiver(port: int, delivered: ctypes.c_int64, control: Connection) -> None:
    requests: list[tuple[float, str, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        requests.append((time.time(), request.match_info["name"], body))
        delivered.value += body.count(EVENT_ID_KEY)
        return web.Response(status=202)

    app = web.Application(client_max_size=2 * MAX_REQUEST_BYTES)
    app.router.add_post("/hook/{name}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sites = {port: web.TCPSite(runner, "127.0.0.1", port)}
    await sites[port].start()
    loop = asyncio.get_running_loop()
    control.send("ready")
    # A thread waits for commands: the loop's readers would make the pipe non-blocking.
    while (command := await loop.run_in_executor(None, control.recv)) != "stop":
        if isinstance(command, Listen):
            sites[command.port] = web.TCPSite(runner, "127.0.0.1", command.port)
            await sites[command.port].start()
            control.send("listening")
        elif isinstance(command, Close):
            await sites.pop(command.port).stop()
            if runner.server is not None:
                await runner.server.shutdown(0.1)
            control.send("closed")
        else:
            control.send(_by_webhook(requests))
            requests.clear()
            delivered.value = 0
    await runner.cleanup()


def _by_webhook(requests: list[tuple[float, str, bytes]]) -> Arrivals:
    arrivals: Arrivals = {}
    for at, name, body in requests:
        ids = tuple(event["eventId"] for event in json.loads(body)["events"])
        arrivals.setdefault(name, []).append((at, ids))
    return arrivals


class Receiver:
    """The receiver process, seen from here."""

    def __init__(self, *, port: int, pid: int, delivered: ctypes.c_int64, control: Connection):
        self.port = port
        self.pid = pid
        #: events received since the last ``take()``, all webhooks together
        self.delivered = delivered
        self._control = control

    def url(self, webhook: str, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}/hook/{webhook}"

    def ask(self, command: Command) -> object:
        self._control.send(command)
        return self.answer()

    def answer(self) -> object:
        try:
            if self._control.poll(RECEIVER_TIMEOUT_S):
                return self._control.recv()
        except (EOFError, OSError) as error:
            raise BenchError(f"the receiver process failed: {error}") from None
        raise BenchError(f"the receiver did not answer within {RECEIVER_TIMEOUT_S:.0f} s")

    def listen(self, port: int) -> None:
        self.ask(Listen(port))

    def close(self, port: int) -> None:
        """Go down on ``port``: its listener and every open connection are closed."""
        self.ask(Close(port))

    def take(self) -> Arrivals:
        """What arrived since the last call; the count starts again from zero."""
        return cast(Arrivals, self.ask("take"))


@contextlib.contextmanager
def running_receiver() -> Iterator[Receiver]:
    context = get_context("spawn")
    delivered = context.RawValue(ctypes.c_int64, 0)
    control, child_end = context.Pipe()
    port = free_port()
    process = context.Process(
        target=serve_receiver,
        args=(port, delivered, child_end),
        name="almhookd-bench-receiver",
        daemon=True,
    )
    process.start()
    child_end.close()
    if process.pid is None:
        raise BenchError("the receiver process did not start")
    receiver = Receiver(port=port, pid=process.pid, delivered=delivered, control=control)
    try:
        receiver.answer()  # "ready"
        yield receiver
    finally:
        with contextlib.suppress(OSError):
            control.send("stop")
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


# --- the daemon ----------------------------------------------------------------------


async def create_webhooks(database: Path, targets: Sequence[str], dsn: str | None = None) -> None:
    store: Storage = (
        await SqliteStorage.open(database, clock=time.time)
        if dsn is None
        else await PostgresStorage.open(Secret(dsn), clock=time.time)
    )
    try:
        for index, url in enumerate(targets):
            await store.create_webhook(
                NewWebhook(
                    name=f"bench-{index}",
                    target_url=url,
                    events=frozenset(CATALOGUE),
                    auth_type="signature",
                )
            )
    finally:
        await store.close()


def config_toml(events_per_request: int) -> str:
    """What the delivery scenarios add to ``bench.ingest.running_daemon``'s config."""
    # The one scheduled batch flush of the day is 12 h away: batches wait for the API.
    flush_at = (datetime.now() + timedelta(hours=12)).strftime("%H:%M")
    return (
        "[delivery]\nallow_private_targets = true\n"
        f"max_events_per_request = {events_per_request}\n"
        f'backoff_initial = "{BACKOFF_INITIAL}"\nbackoff_max = "{BACKOFF_MAX}"\n'
        f'[batch]\nat = ["{flush_at}"]\nmax_events_per_request = {BATCH_EVENTS_PER_REQUEST}\n'
    )


@contextlib.contextmanager
def fresh_daemon(
    targets: Sequence[str], *, events_per_request: int = DEFAULT_EVENTS_PER_REQUEST
) -> Iterator[Daemon]:
    """The daemon on a fresh database with one webhook per target; stopped on leaving."""
    with tempfile.TemporaryDirectory(prefix="almhookd-bench-") as name:
        directory = Path(name)
        dsn = new_dsn()
        uvloop.run(create_webhooks(directory / "almhookd.db", targets, dsn))
        with running_daemon(directory, config_toml(events_per_request), dsn=dsn) as daemon:
            print(f"  almhookd pid {daemon.process.pid}", file=sys.stderr)
            yield daemon


def vm_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size such as VmRSS or VmHWM, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Set VmHWM back to the current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def flush_batches(daemon: Daemon) -> int:
    """``POST /v1/batch/flush``; the number of events it released."""
    request = urllib.request.Request(  # noqa: S310 - the daemon on 127.0.0.1
        daemon.url + "/v1/batch/flush", data=b"", headers=HEADERS, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return int(json.load(response)["released"])


# --- load generation (this process) ----------------------------------------------------


def event_json(event_id: str, event_name: str) -> str:
    return f'{{"eventId":"{event_id}","eventName":"{event_name}","data":{EVENT_DATA}}}'


def ingest_session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers=HEADERS, connector=aiohttp.TCPConnector(limit=connections))


async def post_events(
    session: aiohttp.ClientSession, daemon: Daemon, event_ids: Sequence[str], event_name: str
) -> None:
    """Ingest one event, or an envelope; every one must be accepted."""
    events = [event_json(event_id, event_name) for event_id in event_ids]
    body = events[0] if len(events) == 1 else '{"events":[' + ",".join(events) + "]}"
    async with session.post(daemon.url + "/v1/events", data=body.encode()) as response:
        payload = await response.read()
    if response.status != 202:
        raise BenchError(f"POST /v1/events: HTTP {response.status}: {payload[:300]!r}")
    accepted = json.loads(payload)["accepted"]
    if accepted != len(event_ids):
        raise BenchError(f"POST /v1/events accepted {accepted} of {len(event_ids)} events")


async def ingest_envelopes(daemon: Daemon, count: int, event_name: str) -> list[str]:
    """Ingest ``count`` new events in full envelopes; their ids."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    envelopes = iter(range(0, count, ENVELOPE_SIZE))
    async with ingest_session(BACKLOG_CONCURRENCY) as session:

        async def worker() -> None:
            for start in envelopes:
                await post_events(session, daemon, ids[start : start + ENVELOPE_SIZE], event_name)

        await asyncio.gather(*(worker() for _ in range(BACKLOG_CONCURRENCY)))
    return ids


def wait_delivered(
    receiver: Receiver, expected: int, pids: Pids, start: CpuSnapshot | None = None
) -> Cpu:
    """Wait until ``expected`` events arrived (or the timeout passed, then a check finds
    the loss). CPU is measured from ``start``, else from the first arrival."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while receiver.delivered.value < expected and time.monotonic() < deadline:
        if start is None and receiver.delivered.value > 0:
            start = cpu_snapshot(pids)
        time.sleep(POLL_S)
    if receiver.delivered.value < expected:
        print(
            f"  timed out: {receiver.delivered.value:,} of {expected:,} events arrived",
            file=sys.stderr,
        )
    end = cpu_snapshot(pids)
    return Cpu.between(start or end, end)


def wait_for_quiet(limit_s: float = QUIET_WAIT_S) -> float:
    """Wait for a quiet stretch on the machine (at most ``limit_s``); seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = machine_cpu_s()
        time.sleep(QUIET_SAMPLE_S)
        if (machine_cpu_s() - before) / QUIET_SAMPLE_S < QUIET_CPU:
            break
    return time.monotonic() - started


# --- checks and rows -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    """What the receiver got against what was ingested."""

    expected: int  #: events ingested x webhooks subscribed
    arrived: int  #: of those, how many arrived (once or more)
    duplicates: int  #: arrivals of an event at a webhook beyond its first
    unexpected: int  #: events that arrived but were not ingested for that webhook

    @property
    def lost(self) -> int:
        return self.expected - self.arrived

    def __str__(self) -> str:
        text = f"{self.arrived:,} / {self.expected:,}"
        if self.duplicates:
            text += f", {self.duplicates:,} dup."
        if self.unexpected:
            text += f", {self.unexpected:,} unexpected"
        return text


def check_delivery(ingested: Collection[str], arrivals: Arrivals, webhooks: Sequence[str]) -> Check:
    expected = set(ingested)
    arrived = duplicates = unexpected = 0
    for name in set(arrivals) | set(webhooks):
        ids = [event_id for _at, request in arrivals.get(name, []) for event_id in request]
        distinct = set(ids)
        duplicates += len(ids) - len(distinct)
        if name in webhooks:
            arrived += len(distinct & expected)
            unexpected += len(distinct - expected)
        else:
            unexpected += len(distinct)
    return Check(
        expected=len(expected) * len(webhooks),
        arrived=arrived,
        duplicates=duplicates,
        unexpected=unexpected,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    scenario: str
    figure: str
    target: str = "—"
    ratio: str = "—"
    met: bool | None = None
    cpu: Cpu | None = None
    check: Check | None = None
    notes: str = ""


def lost(scenario: str, check: Check, cpu: Cpu | None = None) -> Row | None:
    """The row of a scenario that lost events: it shows the loss instead of a speed."""
    if not check.lost:
        return None
    return Row(
        scenario=scenario,
        figure=f"LOST {check.lost:,} of {check.expected:,} events",
        met=False,
        cpu=cpu,
        check=check,
        notes=f"not received before the daemon stopped (waiting at most {DRAIN_TIMEOUT_S:g} s)",
    )


def versus_ceiling(
    scenario: str,
    rate: float,
    ceiling_rate: float,
    *,
    target: bool,
    cpu: Cpu,
    check: Check,
    notes: str,
) -> Row:
    """A row comparing one-event-per-request deliveries with the ceiling."""
    floor = CEILING_SHARE_TARGET * ceiling_rate
    return lost(scenario, check, cpu) or Row(
        scenario=scenario,
        figure=f"{rate:,.0f} events/s",
        target=f"≥ {CEILING_SHARE_TARGET:.0%} of ceiling ({floor:,.0f}/s)" if target else "—",
        ratio=f"{rate / ceiling_rate:.0%} of ceiling",
        met=rate >= floor if target else None,
        cpu=cpu,
        check=check,
        notes=notes,
    )


def drain_rate(requests: list[Arrival], since: float | None) -> tuple[float, float]:
    """(events/s, events/request) of a drain: from ``since``, else from the first request
    (whose events then do not count), to the last arrival."""
    ordered = sorted(requests)
    counted = ordered if since is not None else ordered[1:]
    start = since if since is not None else ordered[0][0]
    events = sum(len(ids) for _at, ids in counted)
    return events / (ordered[-1][0] - start), events / len(counted)


# --- scenarios -----------------------------------------------------------------------


def prepared_deliveries(count: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """(eventId, body, headers) of requests such as the daemon sends, one event each."""
    secret, now = generate_secret(), time.time()
    prepared = []
    for _ in range(count):
        event_id = str(uuid.uuid4())
        (event,) = parse_ingest(
            {"eventId": event_id, "eventName": EVENT_NAME, "data": ENROLLMENT},
            now_ms=int(now * 1000),
            default_account_id=0,
            new_id=lambda: str(uuid.uuid4()),
        )
        # The daemon's payload (store.payload): the stored body, not re-encoded.
        body = f'{{"accountId":0,"events":[{event.body}]}}'.encode()
        message_id = "msg_" + uuid.uuid4().hex
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": signature_header(
                [secret], message_id=message_id, timestamp=int(now), body=body
            ),
        }
        prepared.append((event_id, body, headers))
    return prepared


async def ceiling_load(receiver: Receiver, plan: Plan) -> tuple[list[str], int, Cpu]:
    """(eventIds sent, requests in the window, CPU over the window)."""
    prepared = prepared_deliveries(round(CEILING_POOL_PER_S * (plan.warmup_s + plan.window_s)))
    url, pids = receiver.url("ceiling"), Pids(daemon=None, receiver=receiver.pid)
    sent: list[str] = []
    counted = 0
    first: CpuSnapshot | None = None
    measured_from = time.monotonic() + plan.warmup_s
    stop_at = measured_from + plan.window_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for event_id, body, headers in prepared:
            now = time.monotonic()
            if now >= stop_at:
                break
            if first is None and now >= measured_from:
                first = cpu_snapshot(pids)
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
            if response.status != 202:
                raise BenchError(f"the receiver answered {response.status}")
            sent.append(event_id)
            counted += first is not None
    if first is None:
        raise BenchError("the ceiling client ran out of prepared requests in its warm-up")
    return sent, counted, Cpu.between(first, cpu_snapshot(pids))


def ceiling(receiver: Receiver, plan: Plan) -> tuple[float, Row]:
    sent, counted, cpu = uvloop.run(ceiling_load(receiver, plan))
    check = check_delivery(sent, receiver.take(), ["ceiling"])
    rate = counted / cpu.seconds
    row = Row(
        scenario="Ceiling: plain aiohttp client → receiver, 1 in flight",
        figure=f"{rate:,.0f} req/s",
        cpu=cpu,
        check=check,
        notes="the daemon's payloads, 1 event each, prepared beforehand; no daemon",
    )
    return rate, row


async def steady_load(
    daemon: Daemon, receiver: Receiver, webhooks: int, plan: Plan
) -> tuple[list[str], Cpu]:
    """Single events, ingested while fewer than STEADY_AHEAD per webhook are undelivered."""
    ingested: list[str] = []
    sent = 0
    pids = Pids(daemon=daemon.process.pid, receiver=receiver.pid)
    stop_at = time.monotonic() + plan.warmup_s + plan.window_s
    async with ingest_session(STEADY_CONCURRENCY) as session:

        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < stop_at:
                if sent - receiver.delivered.value / webhooks >= STEADY_AHEAD:
                    await asyncio.sleep(STEADY_POLL_S)
                    continue
                sent += 1
                event_id = str(uuid.uuid4())
                await post_events(session, daemon, [event_id], EVENT_NAME)
                ingested.append(event_id)

        workers = asyncio.gather(*(worker() for _ in range(STEADY_CONCURRENCY)))
        await asyncio.wait([workers], timeout=plan.warmup_s)
        first = cpu_snapshot(pids)
        await asyncio.wait([workers], timeout=plan.window_s)
        last = cpu_snapshot(pids)
        await workers
    return ingested, Cpu.between(first, last)


def steady_state(receiver: Receiver, webhooks: int, plan: Plan, ceiling_rate: float) -> Row:
    names = [str(index) for index in range(webhooks)]
    with fresh_daemon([receiver.url(name) for name in names], events_per_request=1) as daemon:
        ingested, cpu = uvloop.run(steady_load(daemon, receiver, webhooks, plan))
        wait_delivered(
            receiver,
            len(ingested) * webhooks,
            Pids(daemon=daemon.process.pid, receiver=receiver.pid),
        )
    arrivals = receiver.take()
    per_webhook = [
        [ids for at, ids in arrivals.get(name, []) if cpu.start <= at < cpu.end] for name in names
    ]
    events = [sum(len(ids) for ids in requests) for requests in per_webhook]
    requests = sum(len(r) for r in per_webhook)
    rate = sum(events) / cpu.seconds
    notes = (
        f"max_events_per_request = 1; closed-loop ingest ≤ {STEADY_AHEAD} events ahead "
        f"per webhook, {STEADY_CONCURRENCY} requests in flight; "
        f"{sum(events) / max(requests, 1):.2f} events/request"
    )
    if webhooks > 1:
        notes += (
            f"; per webhook {min(events) / cpu.seconds:,.0f} to {max(events) / cpu.seconds:,.0f}/s"
        )
    label = "webhook" if webhooks == 1 else "webhooks (fan-out, summed)"
    return versus_ceiling(
        f"Steady state, 1 event/request, {webhooks} {label}",
        rate,
        ceiling_rate,
        target=True,
        cpu=cpu,
        check=check_delivery(ingested, arrivals, names),
        notes=notes,
    )


def drain(
    receiver: Receiver, events: int, events_per_request: int
) -> tuple[Check, list[Arrival], Cpu]:
    """A backlog built while the webhook's port has no listener, then delivered."""
    port = free_port()  # nobody listens here until the backlog is in
    with fresh_daemon([receiver.url("0", port)], events_per_request=events_per_request) as daemon:
        ingested = uvloop.run(ingest_envelopes(daemon, events, EVENT_NAME))
        receiver.listen(port)
        cpu = wait_delivered(
            receiver, events, Pids(daemon=daemon.process.pid, receiver=receiver.pid)
        )
    arrivals = receiver.take()
    return check_delivery(ingested, arrivals, ["0"]), arrivals.get("0", []), cpu


def single_drain(receiver: Receiver, plan: Plan, ceiling_rate: float) -> Row:
    events = plan.single_backlog_events
    check, requests, cpu = drain(receiver, events, 1)
    scenario = f"Drain of {events:,} events, 1 event/request, no ingest meanwhile"
    rate, per_request = drain_rate(requests, since=None) if not check.lost else (0.0, 0.0)
    return versus_ceiling(
        scenario,
        rate,
        ceiling_rate,
        target=False,
        cpu=cpu,
        check=check,
        notes=f"max_events_per_request = 1 ({per_request:.2f} events/request): the delivery "
        "path alone, for comparison with the steady state",
    )


def backlog_drain(receiver: Receiver, plan: Plan) -> Row:
    events = plan.backlog_events
    check, requests, cpu = drain(receiver, events, DEFAULT_EVENTS_PER_REQUEST)
    scenario = f"Backlog drain of {events:,} real-time events, packed"
    if (row := lost(scenario, check, cpu)) is not None:
        return row
    rate, per_request = drain_rate(requests, since=None)
    return Row(
        scenario=scenario,
        figure=f"{rate:,.0f} events/s",
        target=f"≥ {DRAIN_TARGET_EVENTS_PER_S:,} events/s",
        ratio=f"{rate / DRAIN_TARGET_EVENTS_PER_S:.2f}x",
        met=rate >= DRAIN_TARGET_EVENTS_PER_S,
        cpu=cpu,
        check=check,
        notes=f"max_events_per_request = {DEFAULT_EVENTS_PER_REQUEST} "
        f"({per_request:.1f} events/request, {len(requests):,} requests); "
        "from the first delivered request to the last arrival",
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Sent:
    event_id: str
    measured: bool  #: sent after the warm-up
    sent_at: float  #: time.time() before the ingest request
    acked_at: float  #: time.time() once its 202 was read


async def paced_load(daemon: Daemon, receiver: Receiver, plan: Plan) -> tuple[list[Sent], Cpu]:
    """Single events at LATENCY_EVENTS_PER_S, each sent on time whatever is in flight."""
    sent: list[Sent] = []
    pids = Pids(daemon=daemon.process.pid, receiver=receiver.pid)
    warmup = round(LATENCY_EVENTS_PER_S * plan.warmup_s)
    total = warmup + round(LATENCY_EVENTS_PER_S * plan.latency_s)
    first: CpuSnapshot | None = None
    async with ingest_session(LATENCY_CONNECTIONS) as session:

        async def one(event_id: str, measured: bool) -> None:
            sent_at = time.time()
            await post_events(session, daemon, [event_id], EVENT_NAME)
            sent.append(
                Sent(event_id=event_id, measured=measured, sent_at=sent_at, acked_at=time.time())
            )

        tasks = []
        start = time.monotonic()
        for index in range(total):
            delay = start + index / LATENCY_EVENTS_PER_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if index == warmup:
                first = cpu_snapshot(pids)
            tasks.append(asyncio.create_task(one(str(uuid.uuid4()), index >= warmup)))
        await asyncio.gather(*tasks)
    if first is None:
        raise BenchError("the latency run has no measured part")
    return sent, Cpu.between(first, cpu_snapshot(pids))


def latency(receiver: Receiver, plan: Plan) -> Row:
    with fresh_daemon([receiver.url("0")]) as daemon:
        sent, cpu = uvloop.run(paced_load(daemon, receiver, plan))
        wait_delivered(receiver, len(sent), Pids(daemon=daemon.process.pid, receiver=receiver.pid))
    arrivals = receiver.take()
    check = check_delivery([s.event_id for s in sent], arrivals, ["0"])
    scenario = f"Ingest → receive latency at {LATENCY_EVENTS_PER_S} events/s, 1 webhook"
    if (row := lost(scenario, check, cpu)) is not None:
        return row
    arrived_at: dict[str, float] = {}
    for at, ids in sorted(arrivals["0"]):
        for event_id in ids:
            arrived_at.setdefault(event_id, at)
    measured = [s for s in sent if s.measured]
    p50, p99 = percentiles_ms([arrived_at[s.event_id] - s.sent_at for s in measured])
    ack_p50, ack_p99 = percentiles_ms([arrived_at[s.event_id] - s.acked_at for s in measured])
    per_request = len(arrived_at) / len(arrivals["0"])
    return Row(
        scenario=scenario,
        figure=f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
        target=f"p99 ≤ {LATENCY_P99_TARGET_MS:g} ms",
        ratio=f"p99 at {p99 / LATENCY_P99_TARGET_MS:.2f}x the limit",
        met=p99 <= LATENCY_P99_TARGET_MS,
        cpu=cpu,
        check=check,
        notes=f"from sending the ingest request; from its 202: p50 {ack_p50:.1f} ms, "
        f"p99 {ack_p99:.1f} ms; {len(measured):,} events in {plan.latency_s:g} s after a "
        f"{plan.warmup_s:g} s warm-up, {per_request:.2f} events/request",
    )


def batch_flush(receiver: Receiver, plan: Plan) -> Row:
    with fresh_daemon([receiver.url("0")]) as daemon:
        pid = daemon.process.pid
        pids = Pids(daemon=pid, receiver=receiver.pid)
        ingested = uvloop.run(ingest_envelopes(daemon, plan.backlog_events, BATCH_EVENT_NAME))
        early = receiver.delivered.value  # none: they are held until the flush
        rss_at_flush = vm_kib(pid, "VmRSS")
        peak_reset = reset_peak_rss(pid)
        start = cpu_snapshot(pids)
        released = flush_batches(daemon)
        cpu = wait_delivered(receiver, len(ingested), pids, start)
        peak = vm_kib(pid, "VmHWM")
    arrivals = receiver.take()
    check = check_delivery(ingested, arrivals, ["0"])
    scenario = f"Batch flush of {len(ingested):,} held events ({BATCH_EVENT_NAME})"
    if (row := lost(scenario, check, cpu)) is not None:
        return row
    rate, per_request = drain_rate(arrivals["0"], since=start.wall)
    notes = (
        f"from the flush request to the last arrival; {per_request:.0f} events/request; "
        f"{released:,} released; RSS {rss_at_flush / 1024:.0f} MiB at the flush"
    )
    if not peak_reset:
        notes += "; peak is VmHWM since start (its reset was refused)"
    if early:
        notes += f"; {early:,} events arrived before the flush"
    return Row(
        scenario=scenario,
        figure=f"{rate:,.0f} events/s, peak RSS {peak / 1024:.0f} MiB",
        target=f"none given ({DRAIN_TARGET_EVENTS_PER_S:,}/s is the drain target)",
        ratio=f"{rate / DRAIN_TARGET_EVENTS_PER_S:.2f}x of {DRAIN_TARGET_EVENTS_PER_S:,}/s",
        cpu=cpu,
        check=check,
        notes=notes,
    )


def idle(receiver: Receiver, plan: Plan) -> Row:
    names = [str(index) for index in range(FANOUT_WEBHOOKS)]
    with fresh_daemon([receiver.url(name) for name in names]) as daemon:
        pids = Pids(daemon=daemon.process.pid, receiver=receiver.pid)
        time.sleep(IDLE_SETTLE_S)
        first = cpu_snapshot(pids)
        time.sleep(plan.idle_s)
        cpu = Cpu.between(first, cpu_snapshot(pids))
    used = cpu.daemon or 0.0
    return Row(
        scenario=f"Idle, {FANOUT_WEBHOOKS} webhooks",
        figure=f"{used:.2f} CPU s in {cpu.seconds:.0f} s",
        target=f"≈ 0 (≤ {IDLE_CPU_LIMIT:.0%} of a core)",
        ratio=f"{used / cpu.seconds:.2%} of a core",
        met=used / cpu.seconds <= IDLE_CPU_LIMIT,
        cpu=cpu,
        check=check_delivery([], receiver.take(), names),
        notes=f"measured {IDLE_SETTLE_S:g} s after start-up",
    )


def wait_owned(daemon: Daemon, webhooks: int, processes: int) -> None:
    """Wait until ``processes`` daemons share the database and every webhook is held."""
    request = urllib.request.Request(daemon.url + "/v1/status", headers=HEADERS)  # noqa: S310
    deadline = time.monotonic() + CLUSTER_SETTLE_S
    while time.monotonic() < deadline:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            cluster = json.load(response)["cluster"]
        if len(cluster["processes"]) == processes and len(cluster["owners"]) == webhooks:
            return
        time.sleep(0.1)
    raise BenchError(f"{processes} processes did not share {webhooks} webhooks in time")


def cluster_drain(receiver: Receiver, plan: Plan, processes: int) -> Row:
    """A packed backlog for five webhooks, drained by ``processes`` daemons on one
    PostgreSQL database (the webhooks spread over them)."""
    events = plan.backlog_events
    names = [str(index) for index in range(FANOUT_WEBHOOKS)]
    port = free_port()  # nobody listens here until the backlog is in
    with (
        tempfile.TemporaryDirectory(prefix="almhookd-bench-") as name,
        contextlib.ExitStack() as stack,
    ):
        directory = Path(name)
        dsn = new_dsn()
        uvloop.run(
            create_webhooks(directory / "unused.db", [receiver.url(n, port) for n in names], dsn)
        )
        daemons = []
        for index in range(processes):
            (directory / f"p{index}").mkdir()
            daemons.append(
                stack.enter_context(
                    running_daemon(
                        directory / f"p{index}", config_toml(DEFAULT_EVENTS_PER_REQUEST), dsn=dsn
                    )
                )
            )
        wait_owned(daemons[0], FANOUT_WEBHOOKS, processes)
        ingested = uvloop.run(ingest_envelopes(daemons[0], events, EVENT_NAME))
        receiver.listen(port)
        pids = Pids(
            daemon=daemons[0].process.pid,
            others=tuple(d.process.pid for d in daemons[1:]),
            receiver=receiver.pid,
        )
        cpu = wait_delivered(receiver, events * FANOUT_WEBHOOKS, pids)
    arrivals = receiver.take()
    check = check_delivery(ingested, arrivals, names)
    scenario = (
        f"Cluster drain, {processes} process{'es' if processes > 1 else ''}: "
        f"{events:,} events x {FANOUT_WEBHOOKS} webhooks, packed"
    )
    if (row := lost(scenario, check, cpu)) is not None:
        return row
    requests = [arrival for name in names for arrival in arrivals.get(name, [])]
    rate, per_request = drain_rate(requests, since=None)
    return Row(
        scenario=scenario,
        figure=f"{rate:,.0f} events/s",
        target=f"≥ {DRAIN_TARGET_EVENTS_PER_S:,} events/s",
        ratio=f"{rate / DRAIN_TARGET_EVENTS_PER_S:.2f}x",
        met=rate >= DRAIN_TARGET_EVENTS_PER_S,
        cpu=cpu,
        check=check,
        notes=f"deliveries summed over the webhooks; {per_request:.1f} events/request, "
        f"{len(requests):,} requests; the daemons' CPU summed",
    )


# --- the report ----------------------------------------------------------------------


def render(header: Sequence[str], rows: Sequence[Row]) -> str:
    out = [
        "## almhookd delivery benchmark",
        "",
        *header,
        "",
        "| Scenario | Figure | Ceiling / target | Ratio | Met | Daemon CPU | Receiver CPU | "
        "Client CPU | Other CPU | Arrived / expected | Notes |",
        "|---|--:|---|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        cpu = row.cpu
        disturbed = cpu is not None and cpu.disturbed
        shares = (
            [cpu.share(used) for used in (cpu.daemon, cpu.receiver, cpu.client, cpu.other)]
            if cpu is not None
            else ["—"] * 4
        )
        met = {None: "—", True: "yes", False: "**no**"}[row.met]
        out.append(
            f"| {row.scenario}{' (*)' if disturbed else ''} | {row.figure} | {row.target} | "
            f"{row.ratio} | {met} | {' | '.join(shares)} | "
            f"{row.check if row.check is not None else '—'} | {row.notes} |"
        )
    out += [
        "",
        "CPU columns are shares of one core over the row's window: the measured window "
        "(ceiling, steady state, latency), the first delivered request to the last arrival "
        "(drains), the flush to the last arrival (batch flush), the idle window (idle). "
        "Client CPU is this script: the ceiling client or the ingest load. Other CPU is "
        "everything else on the machine, kernel threads included (the block I/O of fsyncs "
        f"shows there); (*) marks a row where it exceeded {DISTURBED_CPU:.0%} of a core, "
        "so other work on the machine may have slowed it. Arrived / expected: distinct "
        "eventIds each webhook received against those ingested, summed over webhooks; "
        "dup. counts arrivals beyond the first at the same webhook. Ratios to the ceiling "
        "use this run's ceiling, one measurement, which varies from run to run.",
        "",
        f"Settings in every scenario: `allow_private_targets = true`, backoff "
        f"{BACKOFF_INITIAL} then {BACKOFF_MAX}, `batch.max_events_per_request = "
        f"{BATCH_EVENTS_PER_REQUEST}`, no scheduled batch flush during the run, log level "
        "warning, signature auth. Backlogs are ingested in "
        f"{ENVELOPE_SIZE}-event envelopes, {BACKLOG_CONCURRENCY} requests in flight.",
    ]
    return "\n".join(out) + "\n"


def progress(row: Row) -> Row:
    print(f"{row.scenario}: {row.figure}", file=sys.stderr)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.window_s:g} s windows and {QUICK.backlog_events:,}-event backlogs "
        f"instead of {FULL.window_s:g} s and {FULL.backlog_events:,}",
    )
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="also write the Markdown report to FILE"
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the daemons' storage (postgresql: a throwaway cluster of the machine's "
        "PostgreSQL server, a new database per daemon; adds the cluster drains)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    configure_logging(level="warning", stream=sys.stderr)  # the store, used here at set-up
    command = shlex.join([os.path.relpath(sys.executable), "-m", "bench.delivery", *sys.argv[1:]])
    header = machine_lines(())
    started, began = time.monotonic(), datetime.now().astimezone()
    try:
        with running_receiver() as receiver, contextlib.ExitStack() as stack:
            if args.backend == "postgresql":
                POSTGRES.append(stack.enter_context(running_cluster()))
                header.append(
                    "- Storage: PostgreSQL "
                    + POSTGRES[0].psql("SHOW server_version").strip()
                    + " (a throwaway cluster on this machine, the server's defaults); "
                    "Daemon CPU includes the PostgreSQL server's processes"
                )
            waited = wait_for_quiet()
            ceiling_rate, row = ceiling(receiver, plan)
            rows = [progress(row)]
            scenarios: list[Callable[[], Row]] = [
                partial(steady_state, receiver, 1, plan, ceiling_rate),
                partial(steady_state, receiver, FANOUT_WEBHOOKS, plan, ceiling_rate),
                partial(single_drain, receiver, plan, ceiling_rate),
                partial(backlog_drain, receiver, plan),
                partial(latency, receiver, plan),
                partial(batch_flush, receiver, plan),
                partial(idle, receiver, plan),
            ]
            if POSTGRES:
                scenarios += [partial(cluster_drain, receiver, plan, n) for n in CLUSTER_SIZES]
            for scenario in scenarios:
                waited += wait_for_quiet()
                rows.append(progress(scenario()))
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    header += [
        f"- Command: `{command}`, started {began:%Y-%m-%d %H:%M %Z}, took "
        f"{time.monotonic() - started:.0f} s, of which {waited:.0f} s waiting for a quiet "
        f"machine (below {QUIET_CPU:.0%} of a core for {QUIET_SAMPLE_S:g} s, at most "
        f"{QUIET_WAIT_S:g} s) before each scenario",
        "- Receiver: one process, aiohttp under uvloop, answers 202 at once; ceiling and "
        "load generators run in this script's process; the daemon in its own",
    ]
    report = render(header, rows)
    print(report, end="")
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
