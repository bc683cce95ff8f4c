"""almhookd side by side with what users would pick instead, on one machine and workload.

Systems, each posting one ALM payload (``{"accountId", "events": [one event]}``) per
request to the same receiver (``bench.delivery``'s: a separate process, aiohttp under
uvloop, answering 202 at once and recording arrival times and eventIds):

* ceiling: a plain aiohttp client posting each event, no persistence, one request in
  flight per webhook; it is its own producer.
* almhookd: the real daemon as a subprocess (``bench.ingest.running_daemon``), webhooks
  created through ``POST /v1/webhooks`` (signature auth), events handed over through
  ``POST /v1/events``: bursts in 100-event envelopes (4 in flight), paced events one per
  request; ``delivery.max_events_per_request = 1``, other settings at their defaults.
* Celery + Redis: Debian's ``redis-server`` started here on a free loopback port without
  persistence, a Celery worker (prefork, concurrency = CPU count, Celery's default) running
  ``bench.compare_celery.deliver`` (one task per event and webhook, ``requests``,
  ``autoretry_for`` with django-webhook's backoff); the producer calls ``.delay()``.
* lazyhooks: ``WebhookSender`` with ``SQLiteStorage`` and its ``retry_worker`` task, as
  its documentation shows; the producer awaits ``sender.send(url, payload)``, one
  coroutine per webhook for bursts, one task per event when paced.

Scenarios: a burst of N events to one webhook; N events fanned out to five webhooks;
200 events/s for 30 s to one webhook (latency from hand-over to arrival); 200 events/s
while the receiver goes down for 20 s and comes back (time until everything arrived,
lost, duplicates). Every run has a fresh sender side (daemon, Redis and worker, SQLite
file) and starts with the same warm-up, not measured: a burst of ``warmup_events``
deliveries spread over the run's webhooks, all delivered. Each figure is the median of
the runs. The issue's counts (``--full``: 20,000-event bursts, 30 s paced, 3 runs of
everything) take about two hours on a 2-core machine, because Celery and lazyhooks deliver
100 to 250 events/s there; ``make bench`` runs a standard plan with smaller bursts, a
10 s paced window and one outage run in about a quarter of an hour.

Sender side, whose CPU and peak RSS (sum of VmHWM) are reported: the daemon; the Celery
worker's processes plus redis-server; the lazyhooks or ceiling process (sender and
producer are one process there). The producer (this benchmark's aiohttp client to the
ingest API, or the process calling ``.delay()``) is reported apart.

Run from the checkout: ``.venv/bin/python -m bench.compare [--quick] [--output FILE]``.
The section is printed (Markdown) and replaces the part of ``--output`` (default
``BENCHMARKS.md``; none with ``--quick``) between ``<!-- compare:start -->`` and
``<!-- compare:end -->``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib.metadata import version
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import aiohttp
import uvloop

from almhookd.domain.events import parse_ingest
from bench.delivery import (
    Arrivals,
    Check,
    Receiver,
    check_delivery,
    event_json,
    running_receiver,
    vm_kib,
    wait_for_quiet,
)
from bench.ingest import (
    DISTURBED_CPU,
    ENROLLMENT,
    ENVELOPE_SIZE,
    EVENT_NAME,
    HEADERS,
    BenchError,
    create_webhook,
    free_port,
    machine_cpu_s,
    machine_lines,
    percentiles_ms,
    process_cpu_s,
    running_daemon,
)

System = Literal["ceiling", "almhookd", "almhookd-packed", "celery", "lazyhooks"]
SYSTEMS: Final[tuple[System, ...]] = (
    "ceiling",
    "almhookd",
    "almhookd-packed",
    "celery",
    "lazyhooks",
)
LABELS: Final[dict[System, str]] = {
    "ceiling": "ceiling (plain aiohttp)",
    "almhookd": "almhookd, 1 event/request",
    "almhookd-packed": "almhookd, default packing (≤ 50 events/request)",
    "celery": "Celery + Redis",
    "lazyhooks": "lazyhooks (SQLite)",
}
ScenarioKind = Literal["burst", "paced", "outage"]

START_MARKER: Final = "<!-- compare:start -->"
END_MARKER: Final = "<!-- compare:end -->"
CHECKOUT: Final = Path(__file__).resolve().parent.parent
SIGNING_SECRET: Final = "bench-signing-secret-0123456789"  # noqa: S105 - throw-away
FANOUT_WEBHOOKS: Final = 5
#: almhookd's ingest while a burst is handed over: envelopes, requests in flight.
BURST_INGEST_CONCURRENCY: Final = 4
#: Connections of the aiohttp clients that hand over (or, ceiling, send) paced events.
PACED_CONNECTIONS: Final = 32
POLL_S: Final = 0.002
QUIET_LIMIT_S: Final = 3.0
PRODUCER_TIMEOUT_S: Final = 600.0
STOP_TIMEOUT_S: Final = 15.0

#: The issue's targets for almhookd: (what, comparison).
TARGET_SPEED_VS_CELERY: Final = 5.0
TARGET_CPU_VS_CELERY: Final = 0.2
TARGET_CEILING_SHARE: Final = 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    events: int  #: burst to one webhook
    fanout_events: int  #: burst to each of the fan-out's five webhooks
    rate: float  #: events per second of the paced and outage scenarios
    paced_s: float
    outage_before_s: float  #: paced, receiver up, before it goes down
    outage_down_s: float
    outage_after_s: float  #: paced, receiver back, before the hand-over stops
    warmup_events: int
    runs: int
    outage_runs: int
    #: at most this long for everything to arrive after the last hand-over
    settle_s: float


#: The issue's counts: about two hours on this project's 2-core machine.
FULL: Final = Plan(
    events=20_000,
    fanout_events=20_000,
    rate=200,
    paced_s=30,
    outage_before_s=5,
    outage_down_s=20,
    outage_after_s=5,
    warmup_events=200,
    runs=3,
    outage_runs=3,
    settle_s=300,
)
#: What ``make bench`` runs in about a quarter of an hour: the issue's rate and outage,
#: smaller bursts and a shorter paced window, the outage once.
STANDARD: Final = Plan(
    events=1_500,
    fanout_events=250,
    rate=200,
    paced_s=10,
    outage_before_s=5,
    outage_down_s=20,
    outage_after_s=5,
    warmup_events=100,
    runs=3,
    outage_runs=1,
    settle_s=240,
)
QUICK: Final = Plan(
    events=1_000,
    fanout_events=200,
    rate=200,
    paced_s=5,
    outage_before_s=2,
    outage_down_s=5,
    outage_after_s=2,
    warmup_events=50,
    runs=1,
    outage_runs=1,
    settle_s=150,
)
PLANS: Final = {"quick": QUICK, "standard": STANDARD, "full": FULL}


@dataclass(frozen=True, kw_only=True, slots=True)
class Scenario:
    key: str
    kind: ScenarioKind
    webhooks: int
    title: str
    systems: tuple[System, ...]
    runs: int


def scenarios(plan: Plan) -> list[Scenario]:
    return [
        Scenario(
            key="burst-1",
            kind="burst",
            webhooks=1,
            title=f"Burst of {plan.events:,} events to 1 webhook",
            systems=SYSTEMS,
            runs=plan.runs,
        ),
        Scenario(
            key="burst-5",
            kind="burst",
            webhooks=FANOUT_WEBHOOKS,
            title=f"Burst of {plan.fanout_events:,} events fanned out to {FANOUT_WEBHOOKS} "
            f"webhooks ({plan.fanout_events * FANOUT_WEBHOOKS:,} deliveries)",
            systems=SYSTEMS,
            runs=plan.runs,
        ),
        Scenario(
            key="paced",
            kind="paced",
            webhooks=1,
            title=f"{plan.rate:g} events/s for {plan.paced_s:g} s to 1 webhook",
            systems=SYSTEMS,
            runs=plan.runs,
        ),
        Scenario(
            key="outage",
            kind="outage",
            webhooks=1,
            title=f"Receiver down for {plan.outage_down_s:g} s under {plan.rate:g} events/s",
            # The ceiling keeps nothing: every event sent while the receiver is down is lost.
            systems=SYSTEMS[1:],
            runs=plan.outage_runs,
        ),
    ]


# --- the ALM payloads ------------------------------------------------------------------


def alm_payload(event_id: str, now_ms: int) -> dict[str, Any]:
    """The payload almhookd would deliver for this event (its stored body, parsed)."""
    (event,) = parse_ingest(
        {"eventId": event_id, "eventName": EVENT_NAME, "data": ENROLLMENT, "timestamp": now_ms},
        now_ms=now_ms,
        default_account_id=0,
        new_id=lambda: str(uuid.uuid4()),
    )
    return {"accountId": 0, "events": [json.loads(event.body)]}


# --- producers (a child process per run) ---------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """What the producer process does: set up, a warm-up burst, then the measured part."""

    system: System
    kind: ScenarioKind
    urls: tuple[str, ...]
    warmup_events: int
    events: int  #: measured events: the burst, or rate x seconds
    rate: float
    ingest_url: str = ""  #: almhookd
    broker_url: str = ""  #: Celery
    database: str = ""  #: lazyhooks
    log: str = ""  #: the producer's stdout and stderr go here


@dataclass(slots=True)
class Handed:
    """The producer's account of the measured part."""

    at: dict[str, float] = field(default_factory=dict)  #: eventId → time.time() of hand-over
    errors: int = 0  #: hand-overs that raised: those events are lost
    first_error: str = ""

    def as_tuple(self) -> tuple[dict[str, float], int, str]:
        """Plain data for the pipe: the child's classes live in another module name."""
        return self.at, self.errors, self.first_error


class Producer(Protocol):
    """Hands events over to one system; ``burst`` as fast as it goes, ``one`` for pacing."""

    async def burst(self, ids: Sequence[str], handed: Handed) -> None: ...

    async def one(self, event_id: str, handed: Handed) -> None: ...

    async def close(self) -> None: ...


class Payloads:
    """The payloads of a run, built before the clock starts."""

    def __init__(self, ids: Sequence[str]) -> None:
        now_ms = time.time_ns() // 1_000_000
        self.dicts = {event_id: alm_payload(event_id, now_ms) for event_id in ids}
        self.bodies = {
            event_id: json.dumps(payload, separators=(",", ":")).encode()
            for event_id, payload in self.dicts.items()
        }


async def _guard(handed: Handed, action: Callable[[], Any]) -> None:
    """Run one hand-over; an exception is counted (the event is lost), not raised."""
    try:
        await action()
    except Exception as error:  # a library that raises at hand-over loses the event
        handed.errors += 1
        handed.first_error = handed.first_error or f"{type(error).__name__}: {error}"


class CeilingProducer:
    def __init__(self, job: Job, payloads: Payloads) -> None:
        self.job, self.payloads = job, payloads
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(len(job.urls), PACED_CONNECTIONS))
        )

    async def _post(self, url: str, event_id: str) -> None:
        async with self.session.post(
            url,
            data=self.payloads.bodies[event_id],
            headers={"Content-Type": "application/json"},
        ) as response:
            await response.read()
        if response.status != 202:
            raise BenchError(f"the receiver answered {response.status}")

    async def burst(self, ids: Sequence[str], handed: Handed) -> None:
        async def webhook(url: str) -> None:
            for event_id in ids:
                handed.at.setdefault(event_id, time.time())
                await self._post(url, event_id)

        await asyncio.gather(*(webhook(url) for url in self.job.urls))

    async def one(self, event_id: str, handed: Handed) -> None:
        await asyncio.gather(*(self._post(url, event_id) for url in self.job.urls))

    async def close(self) -> None:
        await self.session.close()


class AlmhookdProducer:
    def __init__(self, job: Job, payloads: Payloads) -> None:
        self.job = job
        self.session = aiohttp.ClientSession(
            headers=HEADERS, connector=aiohttp.TCPConnector(limit=PACED_CONNECTIONS)
        )

    async def _post(self, ids: Sequence[str]) -> None:
        events = [event_json(event_id, EVENT_NAME) for event_id in ids]
        body = events[0] if len(events) == 1 else '{"events":[' + ",".join(events) + "]}"
        async with self.session.post(self.job.ingest_url, data=body.encode()) as response:
            answer = await response.read()
        if response.status != 202:
            raise BenchError(f"POST /v1/events: HTTP {response.status}: {answer[:300]!r}")

    async def burst(self, ids: Sequence[str], handed: Handed) -> None:
        envelopes = iter(range(0, len(ids), ENVELOPE_SIZE))

        async def worker() -> None:
            for start in envelopes:
                chunk = ids[start : start + ENVELOPE_SIZE]
                now = time.time()
                handed.at.update(dict.fromkeys(chunk, now))
                await self._post(chunk)

        await asyncio.gather(*(worker() for _ in range(BURST_INGEST_CONCURRENCY)))

    async def one(self, event_id: str, handed: Handed) -> None:
        await self._post([event_id])

    async def close(self) -> None:
        await self.session.close()


class CeleryProducer:
    def __init__(self, job: Job, payloads: Payloads) -> None:
        os.environ["ALMHOOKD_BENCH_BROKER"] = job.broker_url
        from bench.compare_celery import deliver  # the broker URL is read at import

        self.job, self.payloads, self.deliver = job, payloads, deliver

    async def burst(self, ids: Sequence[str], handed: Handed) -> None:
        for event_id in ids:
            handed.at[event_id] = time.time()
            for url in self.job.urls:
                self.deliver.delay(url, self.payloads.dicts[event_id])

    async def one(self, event_id: str, handed: Handed) -> None:
        for url in self.job.urls:
            self.deliver.delay(url, self.payloads.dicts[event_id])

    async def close(self) -> None:
        self.deliver.app.close()


class LazyhooksProducer:
    def __init__(self, job: Job, payloads: Payloads) -> None:
        import logging

        import structlog
        from lazyhooks import WebhookSender
        from lazyhooks.storage.sqlite import SQLiteStorage

        # structlog is installed here (almhookd uses it), so lazyhooks logs through it:
        # at warning level, as every system here.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        self.job, self.payloads = job, payloads
        self.sender = WebhookSender(SIGNING_SECRET, storage=SQLiteStorage(job.database))
        self.retries = asyncio.get_running_loop().create_task(self.sender.retry_worker())

    async def burst(self, ids: Sequence[str], handed: Handed) -> None:
        async def webhook(url: str) -> None:
            for event_id in ids:
                handed.at.setdefault(event_id, time.time())
                payload = self.payloads.dicts[event_id]
                await _guard(handed, partial_send(self.sender, url, payload))

        await asyncio.gather(*(webhook(url) for url in self.job.urls))

    async def one(self, event_id: str, handed: Handed) -> None:
        payload = self.payloads.dicts[event_id]
        await asyncio.gather(
            *(_guard(handed, partial_send(self.sender, url, payload)) for url in self.job.urls)
        )

    async def close(self) -> None:
        self.retries.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.retries


def partial_send(sender: Any, url: str, payload: dict[str, Any]) -> Callable[[], Any]:
    return lambda: sender.send(url, payload)


PRODUCERS: Final[dict[System, Callable[[Job, Payloads], Producer]]] = {
    "ceiling": CeilingProducer,
    "almhookd": AlmhookdProducer,
    "almhookd-packed": AlmhookdProducer,
    "celery": CeleryProducer,
    "lazyhooks": LazyhooksProducer,
}


def produce(job: Job, control: Connection) -> None:
    """The producer process: its output goes to ``job.log``, its results to ``control``."""
    with open(job.log, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        runner = asyncio.run if job.system == "lazyhooks" else uvloop.run
        runner(_produce(job, control))


async def _produce(job: Job, control: Connection) -> None:
    loop = asyncio.get_running_loop()
    warmup = [str(uuid.uuid4()) for _ in range(job.warmup_events)]
    measured = [str(uuid.uuid4()) for _ in range(job.events)]
    payloads = Payloads(warmup + measured)
    producer = PRODUCERS[job.system](job, payloads)
    try:
        control.send(("ready", None))
        await loop.run_in_executor(None, control.recv)  # "warm-up"
        warm = Handed()
        await producer.burst(warmup, warm)
        control.send(("warmed", warm.as_tuple()))
        await loop.run_in_executor(None, control.recv)  # "go"
        handed = Handed()
        if job.kind == "burst":
            await producer.burst(measured, handed)
        else:
            await paced(producer, measured, job.rate, handed)
        control.send(("handed", handed.as_tuple()))
        # The sender may still be working (lazyhooks' retries run in this process).
        await loop.run_in_executor(None, control.recv)  # "stop"
    finally:
        await producer.close()


async def paced(producer: Producer, ids: Sequence[str], rate: float, handed: Handed) -> None:
    """One event every 1/rate s, each handed over on time whatever is in flight."""
    tasks = []
    start = time.monotonic()
    for index, event_id in enumerate(ids):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        handed.at[event_id] = time.time()
        tasks.append(asyncio.create_task(_guard(handed, partial_one(producer, event_id, handed))))
    await asyncio.gather(*tasks)


def partial_one(producer: Producer, event_id: str, handed: Handed) -> Callable[[], Any]:
    return lambda: producer.one(event_id, handed)


class ProducerProcess:
    """The producer child, seen from here."""

    def __init__(self, job: Job) -> None:
        context = get_context("spawn")
        self._control, child_end = context.Pipe()
        self.process = context.Process(
            target=produce, args=(job, child_end), name="almhookd-bench-producer", daemon=True
        )
        self.process.start()
        child_end.close()
        if self.process.pid is None:
            raise BenchError("the producer process did not start")
        self.pid: int = self.process.pid
        self.log = Path(job.log)

    def send(self, command: str) -> None:
        self._control.send(command)

    def poll(self, timeout_s: float) -> bool:
        return self._control.poll(timeout_s)

    def expect(self, what: str, timeout_s: float = PRODUCER_TIMEOUT_S) -> Any:
        try:
            if self._control.poll(timeout_s):
                tag, value = self._control.recv()
                if tag != what:
                    raise BenchError(f"the producer said {tag!r}, expected {what!r}")
                return value
        except (EOFError, OSError):
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise BenchError(f"the producer process failed:\n{tail}") from None
        raise BenchError(f"the producer did not say {what!r} within {timeout_s:.0f} s")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._control.send("stop")
        self.process.join(timeout=STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


@contextlib.contextmanager
def running_producer(job: Job) -> Iterator[ProducerProcess]:
    producer = ProducerProcess(job)
    try:
        yield producer
    finally:
        producer.stop()


# --- sender sides ----------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found = [pid]
    for child in _child_pids(pid):
        found += children(child)
    return found


def _child_pids(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        text = " ".join((task / "children").read_text() for task in tasks)
    except OSError:
        return []
    return [int(child) for child in text.split()]


@dataclass(kw_only=True, slots=True)
class Side:
    """The sender side of one run: its processes and what the producer needs."""

    pids: Callable[[], list[int]]  #: the sender's processes, the producer's excepted
    producer_is_sender: bool
    ingest_url: str = ""
    broker_url: str = ""
    database: str = ""


def terminate(process: subprocess.Popen[bytes], name: str) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after a while."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"  {name} did not stop on SIGTERM: killed", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def almhookd_side(urls: Sequence[str], directory: Path, *, packed: bool) -> Iterator[Side]:
    extra = "[delivery]\nallow_private_targets = true\n"
    if not packed:
        extra += "max_events_per_request = 1\n"
    with running_daemon(directory, extra) as daemon:
        for index, url in enumerate(urls):
            create_webhook(daemon.url, f"bench-{index}", url, description="bench/compare.py")
        pid = daemon.process.pid
        yield Side(
            pids=lambda: [pid], producer_is_sender=False, ingest_url=daemon.url + "/v1/events"
        )


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise BenchError("redis-server is not installed: apt-get install -y redis-server")
    return found


@contextlib.contextmanager
def celery_side(directory: Path) -> Iterator[Side]:
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    processes: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        with (directory / "redis.log").open("wb") as log:
            redis = subprocess.Popen(
                [
                    *(redis_server(), "--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(directory)),
                    *("--loglevel", "warning", "--daemonize", "no"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.append((redis, "redis-server"))
        wait_port(port, redis, "redis-server")
        with (directory / "celery.log").open("wb") as log:
            worker = subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "bench.compare_celery", "worker"),
                    *("--pool", "prefork", "--concurrency", str(os.cpu_count() or 1)),
                    *("--loglevel", "WARNING", "--hostname", f"bench-{port}@%h"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=CHECKOUT,
                env={**os.environ, "ALMHOOKD_BENCH_BROKER": broker},
                start_new_session=True,
            )
        processes.append((worker, "the Celery worker"))
        yield Side(
            pids=lambda: [*children(worker.pid), redis.pid],
            producer_is_sender=False,
            broker_url=broker,
        )
        for process, name in processes:
            if process.poll() is not None:
                raise BenchError(f"{name} exited early with {process.returncode}")
    finally:
        for process, name in reversed(processes):
            terminate(process, name)


def wait_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode} at start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.02)
    raise BenchError(f"{name} did not listen on port {port} within 20 s")


@contextlib.contextmanager
def sender_side(system: System, urls: Sequence[str], directory: Path) -> Iterator[Side]:
    if system in ("almhookd", "almhookd-packed"):
        with almhookd_side(urls, directory, packed=system == "almhookd-packed") as side:
            yield side
    elif system == "celery":
        with celery_side(directory) as side:
            yield side
    else:
        yield Side(
            pids=list,
            producer_is_sender=True,
            database=str(directory / "lazyhooks.db"),
        )


# --- one run -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    wall: float
    sender: float
    producer: float
    receiver: float
    machine: float


def snapshot(sender: Sequence[int], producer: int, receiver: int) -> Snapshot:
    def cpu(pid: int) -> float:
        try:
            return process_cpu_s(pid)
        except OSError:  # gone: a pool process replaced, or the producer ended
            return 0.0

    return Snapshot(
        wall=time.time(),
        sender=sum(cpu(pid) for pid in sender),
        producer=cpu(producer),
        receiver=cpu(receiver),
        machine=machine_cpu_s(),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Run:
    """The figures of one run of one system in one scenario."""

    check: Check
    deliveries: int  #: events x webhooks expected
    events_per_s: float
    p50_ms: float
    p99_ms: float
    sender_cpu_s: float
    producer_cpu_s: float
    peak_rss_kib: int
    recovery_s: float | None  #: outage: from the receiver's return to the last arrival
    handover_errors: int
    first_error: str
    other_cpu_share: float  #: everything else on the machine, share of a core

    @property
    def lost(self) -> int:
        return self.check.lost

    @property
    def cpu_per_1000(self) -> float:
        return self.sender_cpu_s / self.deliveries * 1000

    @property
    def producer_cpu_per_1000(self) -> float:
        return self.producer_cpu_s / self.deliveries * 1000


def merge(into: Arrivals, more: Arrivals) -> None:
    for name, requests in more.items():
        into.setdefault(name, []).extend(requests)


def collect(
    receiver: Receiver,
    ids: Sequence[str],
    names: Sequence[str],
    deadline: float,
    refused: int = 0,
) -> tuple[Arrivals, Check]:
    """Wait until every event reached every webhook (but the ``refused`` deliveries, whose
    hand-over raised), or the deadline passed."""
    arrivals: Arrivals = {}
    needed = len(ids) * len(names) - refused
    while True:
        while receiver.delivered.value < needed and time.monotonic() < deadline:
            time.sleep(POLL_S)
        merge(arrivals, receiver.take())
        check = check_delivery(ids, arrivals, names)
        if check.lost <= refused or time.monotonic() >= deadline:
            return arrivals, check
        needed = check.lost - refused


def first_arrivals(arrivals: Arrivals, names: Sequence[str]) -> dict[tuple[str, str], float]:
    first: dict[tuple[str, str], float] = {}
    for name in names:
        for at, ids in sorted(arrivals.get(name, [])):
            for event_id in ids:
                first.setdefault((name, event_id), at)
    return first


def run_once(
    system: System, scenario: Scenario, plan: Plan, receiver: Receiver, directory: Path
) -> Run:
    port = free_port()
    receiver.listen(port)
    names = [f"{system}-{index}" for index in range(scenario.webhooks)]
    urls = tuple(receiver.url(name, port) for name in names)
    events = plan.events if scenario.webhooks == 1 else plan.fanout_events
    if scenario.kind == "paced":
        events = round(plan.rate * plan.paced_s)
    elif scenario.kind == "outage":
        seconds = plan.outage_before_s + plan.outage_down_s + plan.outage_after_s
        events = round(plan.rate * seconds)
    with sender_side(system, urls, directory) as side:
        job = Job(
            system=system,
            kind=scenario.kind,
            urls=urls,
            # The same warm-up deliveries in every scenario, spread over its webhooks.
            warmup_events=-(-plan.warmup_events // scenario.webhooks),
            events=events,
            rate=plan.rate,
            ingest_url=side.ingest_url,
            broker_url=side.broker_url,
            database=side.database,
            log=str(directory / "producer.log"),
        )
        with running_producer(job) as producer:
            producer.expect("ready")
            producer.send("warm-up")
            warm = Handed(*producer.expect("warmed"))
            _, warm_check = collect(
                receiver, list(warm.at), names, time.monotonic() + plan.settle_s
            )
            if warm_check.lost:
                raise BenchError(f"{system}: the warm-up lost {warm_check.lost} events")
            sender_pids = side.pids() + ([producer.pid] if side.producer_is_sender else [])
            first = snapshot(sender_pids, producer.pid, receiver.pid)
            producer.send("go")
            reopened = outage(receiver, producer, port, plan, first.wall, scenario.kind)
            handed = Handed(*producer.expect("handed"))
            arrivals, check = collect(
                receiver,
                list(handed.at),
                names,
                time.monotonic() + plan.settle_s,
                refused=handed.errors,
            )
            last = snapshot(sender_pids, producer.pid, receiver.pid)
            peak = sum(vm_kib(pid, "VmHWM") for pid in sender_pids)
        # Late duplicates: whatever the sender still sent before it stopped.
    merge(arrivals, receiver.take())
    receiver.close(port)
    check = check_delivery(list(handed.at), arrivals, names)
    return figures(scenario, handed, arrivals, names, check, first, last, peak, reopened)


def outage(
    receiver: Receiver,
    producer: ProducerProcess,
    port: int,
    plan: Plan,
    start: float,
    kind: ScenarioKind,
) -> float | None:
    """In the outage scenario, take the receiver down and back on time; when it was back."""
    if kind != "outage":
        return None
    for at, action in (
        (start + plan.outage_before_s, receiver.close),
        (start + plan.outage_before_s + plan.outage_down_s, receiver.listen),
    ):
        time.sleep(max(0.0, at - time.time()))
        if producer.poll(0):
            raise BenchError("the producer finished before the outage was over")
        action(port)
    return time.time()


def figures(
    scenario: Scenario,
    handed: Handed,
    arrivals: Arrivals,
    names: Sequence[str],
    check: Check,
    first: Snapshot,
    last: Snapshot,
    peak_kib: int,
    reopened: float | None,
) -> Run:
    arrived = {
        key: at for key, at in first_arrivals(arrivals, names).items() if key[1] in handed.at
    }
    start = min(handed.at.values())
    # In a burst every event is ready at its start: lazyhooks' send() holds the
    # application back where Celery and almhookd queue, so latency counts from there.
    ready = {e: start for e in handed.at} if scenario.kind == "burst" else handed.at
    latencies = [
        arrived[(name, event_id)] - at
        for event_id, at in ready.items()
        for name in names
        if (name, event_id) in arrived
    ]
    p50, p99 = percentiles_ms(latencies) if len(latencies) >= 2 else (0.0, 0.0)
    end = max(arrived.values()) if arrived else last.wall
    seconds = last.wall - first.wall
    used = (last.sender - first.sender) + (last.producer - first.producer)
    other = max(0.0, (last.machine - first.machine) - used - (last.receiver - first.receiver))
    return Run(
        check=check,
        deliveries=len(handed.at) * len(names),
        events_per_s=len(arrived) / (end - start),
        p50_ms=p50,
        p99_ms=p99,
        sender_cpu_s=last.sender - first.sender,
        producer_cpu_s=last.producer - first.producer,
        peak_rss_kib=peak_kib,
        recovery_s=None if reopened is None else max(0.0, end - reopened),
        handover_errors=handed.errors,
        first_error=handed.first_error,
        other_cpu_share=other / seconds,
    )


# --- the report ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Column:
    title: str
    value: Callable[[Run], float]
    fmt: str
    speed: bool  #: a speed, replaced by the loss when a run lost events
    higher_is_better: bool


COLUMNS: Final = {
    "events/s": Column(
        title="Events/s",
        value=lambda r: r.events_per_s,
        fmt="{:,.0f}",
        speed=True,
        higher_is_better=True,
    ),
    "p50": Column(
        title="p50 ms", value=lambda r: r.p50_ms, fmt="{:,.1f}", speed=True, higher_is_better=False
    ),
    "p99": Column(
        title="p99 ms", value=lambda r: r.p99_ms, fmt="{:,.1f}", speed=True, higher_is_better=False
    ),
    "recovery": Column(
        title="Everything arrived, s after the receiver's return",
        value=lambda r: r.recovery_s or 0.0,
        fmt="{:,.1f}",
        speed=True,
        higher_is_better=False,
    ),
    "cpu": Column(
        title="Sender CPU s / 1,000 deliveries",
        value=lambda r: r.cpu_per_1000,
        fmt="{:,.3f}",
        speed=False,
        higher_is_better=False,
    ),
    "rss": Column(
        title="Sender peak RSS MiB",
        value=lambda r: r.peak_rss_kib / 1024,
        fmt="{:,.0f}",
        speed=False,
        higher_is_better=False,
    ),
}
SCENARIO_COLUMNS: Final[dict[ScenarioKind, tuple[str, ...]]] = {
    "burst": ("events/s", "p50", "p99", "cpu", "rss"),
    "paced": ("p50", "p99", "cpu", "rss"),
    "outage": ("recovery", "p50", "p99", "cpu", "rss"),
}

Results = dict[str, dict[System, list[Run]]]


def median(runs: Sequence[Run], column: Column) -> float:
    return statistics.median(column.value(run) for run in runs)


def losses(runs: Sequence[Run]) -> str | None:
    """'LOST n of m' when a run lost events (every such run), else None."""
    lost = [f"LOST {run.lost:,} of {run.deliveries:,}" for run in runs if run.lost]
    return "; ".join(lost) if lost else None


def cell(runs: Sequence[Run], base: Sequence[Run] | None, column: Column) -> str:
    if column.speed and (lost := losses(runs)):
        return lost
    value = median(runs, column)
    text = column.fmt.format(value)
    if base is not None and base is not runs and not (column.speed and losses(base)):
        reference = median(base, column)
        if reference > 0:
            text += f" ({times(value / reference)})"
    return text


def times(value: float) -> str:
    """A ratio with two significant digits: 0.0041x, 0.22x, 4.6x, 17x."""
    return f"{value:#.2g}".rstrip(".") + "x" if value < 100 else f"{value:,.0f}x"


def per_run(values: Sequence[int]) -> str:
    if len(set(values)) == 1:
        return f"{values[0]:,}"
    return " / ".join(f"{value:,}" for value in values)


def render_table(scenario: Scenario, results: dict[System, list[Run]]) -> list[str]:
    columns = [COLUMNS[key] for key in SCENARIO_COLUMNS[scenario.kind]]
    base = results.get("almhookd")
    counts = {len(r) for r in results.values()}
    count = "/".join(str(n) for n in sorted(counts))
    out = [
        f"### {scenario.title} (median of {count} run{'s' if counts != {1} else ''})",
        "",
        "| System | " + " | ".join(c.title for c in columns) + " | Lost | Dup. | Producer CPU s "
        "/ 1,000 | Notes |",
        "|---|" + "--:|" * len(columns) + "--:|--:|--:|---|",
    ]
    for system, runs in results.items():
        disturbed = any(run.other_cpu_share > DISTURBED_CPU for run in runs)
        notes = []
        errors = sum(run.handover_errors for run in runs)
        if errors:
            first = next(run.first_error for run in runs if run.first_error)
            notes.append(f"{errors:,} hand-overs raised ({first[:80]})")
        producer = (
            "(in the sender)"
            if system in ("ceiling", "lazyhooks")
            else f"{statistics.median(r.producer_cpu_per_1000 for r in runs):.3f}"
        )
        out.append(
            f"| {LABELS[system]}{' (*)' if disturbed else ''} | "
            + " | ".join(cell(runs, base, column) for column in columns)
            + f" | {per_run([r.lost for r in runs])}"
            f" | {per_run([r.check.duplicates for r in runs])}"
            f" | {producer} | {'; '.join(notes)} |"
        )
    return [*out, ""]


def ratio(results: Results, key: str, system: System, column: str) -> float | None:
    """almhookd's median over ``system``'s, or None when either lost events or is missing."""
    runs = results.get(key, {})
    ours, theirs = runs.get("almhookd"), runs.get(system)
    if not ours or not theirs or losses(ours) or losses(theirs):
        return None
    denominator = median(theirs, COLUMNS[column])
    return median(ours, COLUMNS[column]) / denominator if denominator else None


def render_targets(results: Results) -> list[str]:
    def row(what: str, value: float | None, good: Callable[[float], bool]) -> list[str]:
        if value is None:
            return [what, "—", "—"]
        return [what, times(value), yes(good(value))]

    rows = []
    for key, name in (("burst-1", "1 webhook"), ("burst-5", "5 webhooks")):
        speed = ratio(results, key, "celery", "events/s")
        rows.append(
            row(
                f"events/s ≥ {TARGET_SPEED_VS_CELERY:g}x Celery + Redis ({name})",
                speed,
                lambda v: v >= TARGET_SPEED_VS_CELERY,
            )
        )
        cpu = ratio(results, key, "celery", "cpu")
        rows.append(
            row(
                f"CPU per 1,000 ≤ {TARGET_CPU_VS_CELERY:g}x Celery + Redis ({name})",
                cpu,
                lambda v: v <= TARGET_CPU_VS_CELERY,
            )
        )
    rows.append(
        row(
            f"events/s ≥ {TARGET_CEILING_SHARE:.0%} of the ceiling "
            "(1 webhook, 1 event/request, 1 in flight)",
            ratio(results, "burst-1", "ceiling", "events/s"),
            lambda v: v >= TARGET_CEILING_SHARE,
        )
    )
    ahead, behind = 0, []
    for key, per in results.items():
        kind = next(s.kind for s in scenarios(FULL) if s.key == key)
        figures = [
            (column, ratio(results, key, "lazyhooks", column)) for column in SCENARIO_COLUMNS[kind]
        ]
        ours, theirs = per.get("almhookd", []), per.get("lazyhooks", [])
        for column, value in figures:
            if value is None:
                continue
            if value >= 1 if COLUMNS[column].higher_is_better else value <= 1:
                ahead += 1
            else:
                behind.append(f"{key} {COLUMNS[column].title}")
        for name, attribute in (("lost", "lost"), ("dup.", "duplicates")):
            if ours and theirs:
                mine = sum(getattr(r.check, attribute) for r in ours)
                if mine <= sum(getattr(r.check, attribute) for r in theirs):
                    ahead += 1
                else:
                    behind.append(f"{key} {name}")
    measured = f"ahead on {ahead} of {ahead + len(behind)}"
    if behind:
        measured += "; behind on " + ", ".join(behind)
    rows.append(
        [
            "ahead of lazyhooks on every figure",
            measured if ahead or behind else "—",
            yes(not behind) if ahead or behind else "—",
        ]
    )
    outage_runs = results.get("outage", {}).get("almhookd")
    if outage_runs:
        lost = sum(r.lost for r in outage_runs)
        rows.append(["zero events lost in the outage", f"{lost} lost", yes(lost == 0)])
    return [
        "| Target for almhookd | Measured | Met |",
        "|---|--:|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
    ]


def yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def versions() -> list[str]:
    redis = subprocess.run(
        [redis_server(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return [
        f"- Celery {version('celery')} (kombu {version('kombu')}, billiard {version('billiard')},"
        f" redis-py {version('redis')}), requests {version('requests')}; {redis}",
        f"- lazyhooks {version('lazyhooks')}",
    ]


def render(
    header: Sequence[str], plan: Plan, results: Results, checks: Sequence[str], command: str
) -> str:
    out = [
        START_MARKER,
        "## Side by side: almhookd, Celery + Redis, lazyhooks and the ceiling (`bench/compare.py`)",
        "",
        *header,
        *versions(),
        f"- Command: `{command}`",
        "",
        "Each figure is the median of the runs its table names; a ratio in brackets is the "
        "system's figure over almhookd's at one event per request (events/s: above 1 is "
        "faster than almhookd; latency, CPU and memory: above 1 is more than almhookd). "
        "The targets compare almhookd at one event per request (its median over the other "
        "system's).",
        "",
        *render_targets(results),
    ]
    for scenario in scenarios(plan):
        if scenario.key in results:
            out += render_table(scenario, results[scenario.key])
    out += [
        "How it is measured. Every system posts the same ALM payload "
        '(`{"accountId": 0, "events": [one COURSE_ENROLLMENT event]}`, signed) per request to '
        "the same receiver process (aiohttp under uvloop, answers 202 at once, records "
        "arrival times and eventIds). Every run starts a fresh sender side and hands over a "
        f"warm-up burst of {plan.warmup_events} deliveries (spread over its webhooks), waits "
        "until they "
        "arrived, and only then starts the clock. Events/s: deliveries (events x webhooks) "
        "from the first hand-over to the last first arrival. Latency: first arrival at a "
        "webhook minus the event's hand-over (paced, outage), or minus the burst's start "
        "(bursts: every event is ready then; as lazyhooks' `send()` returns only after "
        "the first attempt, its bursts wait in the application, where Celery and almhookd "
        "queue them). "
        "Sender CPU: user + system CPU of the sender's processes from the start of the "
        "measured part until every event arrived; per 1,000 deliveries. Peak RSS: the sum "
        "of the sender processes' VmHWM at the end (forked processes count their shared "
        "pages each). Producer CPU: the process handing events over when it is not the "
        "sender (the aiohttp client posting to almhookd's ingest API; the process calling "
        "`.delay()`). Lost: events that did not reach a webhook within "
        f"{plan.settle_s:g} s of the last hand-over; a figure from a run that lost events "
        "shows the loss instead. Dup.: arrivals beyond the first of an event at a webhook. "
        f"(*) marks a system whose runs saw more than {DISTURBED_CPU:.0%} of a core used by "
        "other processes.",
        "",
        "Configurations:",
        "",
        "- ceiling: one aiohttp `ClientSession` under uvloop, one request in flight per "
        f"webhook in bursts, paced events each sent at once ({PACED_CONNECTIONS} "
        "connections); no persistence, no retries (so no outage row: it would lose every "
        "event sent while the receiver is down).",
        "- almhookd: the daemon (`python -m almhookd run`) on a fresh database, "
        "`delivery.max_events_per_request = 1` (one event per request, like the others), "
        "`allow_private_targets = true`, every other setting at its default (backoff 5 s "
        "doubling to 5 min, one request in flight per webhook), log level warning; webhooks "
        "created with `POST /v1/webhooks`, signature auth. Hand-over: bursts as "
        f"{ENVELOPE_SIZE}-event envelopes to `POST /v1/events`, {BURST_INGEST_CONCURRENCY} "
        "requests in flight; paced events one per request; an event is handed over once "
        "its 202 says it is on disk (fsync).",
        '- Celery + Redis: `redis-server` on a loopback port, no persistence (`--save ""`, '
        "no AOF: more generous to Celery than a durable broker); one Celery worker, prefork "
        f"pool, concurrency {os.cpu_count()} (Celery's default, the CPU count; "
        "django-webhook sets none), default prefetch (4), acks on receipt, log level "
        "WARNING; task `bench.compare_celery.deliver`, one per event and webhook, as "
        "django-webhook's `fire_webhook`: `requests` POST with a (10 s, 5 s) timeout, "
        "HMAC-SHA256 signature, `autoretry_for=(RequestException,)`, `max_retries=5`, "
        "`retry_backoff=True` (1, 2, 4, 8, 16 s), `retry_backoff_max=3600`, "
        "`retry_jitter=False`; one keep-alive `requests.Session` per worker process "
        "(django-webhook opens one per task). Hand-over: `.delay(url, payload)`, JSON "
        "serialiser, from a separate producer process.",
        "- lazyhooks: `WebhookSender(secret, storage=SQLiteStorage(path))` with "
        "`asyncio.create_task(sender.retry_worker())`, as its storage documentation shows; "
        "default retry delays (60 s, 5 min, 30 min, 1 h) and timeout (10 s); logs at "
        "warning level. Hand-over: `await sender.send(url, payload)`, which stores the event "
        "and then attempts it; bursts: one coroutine per webhook sending one event after "
        "the other (one request in flight per webhook, like almhookd); paced: one task per "
        "event. Sender and producer are one process, under asyncio's default loop.",
        "",
        "Checks: " + "; ".join(checks) + ".",
        END_MARKER,
    ]
    return "\n".join(out) + "\n"


def checks_line(results: Results) -> list[str]:
    """Did every system deliver every event, scenario by scenario?"""
    lines = []
    for system in SYSTEMS:
        if not any(per.get(system) for per in results.values()):
            continue
        lost = [
            f"{key} run {index + 1}: {run.lost:,} of {run.deliveries:,} lost"
            for key, per in results.items()
            for index, run in enumerate(per.get(system, []))
            if run.lost
        ]
        lines.append(f"{LABELS[system]}: " + (", ".join(lost) if lost else "every event delivered"))
    return lines


def update_section(path: Path, section: str) -> None:
    """Replace the lines from the start marker to the end marker (each alone on its line)
    in ``path``, or append the section."""
    text = path.read_text() if path.exists() else ""
    found = re.search(
        f"^{re.escape(START_MARKER)}$.*?^{re.escape(END_MARKER)}$", text, re.MULTILINE | re.DOTALL
    )
    if found:
        text = text[: found.start()] + section.rstrip("\n") + text[found.end() :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# --- main ------------------------------------------------------------------------------


def run_all(plan: Plan, chosen: Sequence[System], keys: Sequence[str]) -> Results:
    results: Results = {}
    with running_receiver() as receiver:
        for scenario in scenarios(plan):
            if scenario.key not in keys:
                continue
            for system in (s for s in scenario.systems if s in chosen):
                for index in range(scenario.runs):
                    wait_for_quiet(QUIET_LIMIT_S)
                    started = time.monotonic()
                    with tempfile.TemporaryDirectory(prefix="almhookd-compare-") as name:
                        run = run_once(system, scenario, plan, receiver, Path(name))
                    results.setdefault(scenario.key, {}).setdefault(system, []).append(run)
                    print(
                        f"{scenario.key} {system} run {index + 1}: "
                        f"{run.events_per_s:,.0f} events/s, p50 {run.p50_ms:.1f} ms, "
                        f"p99 {run.p99_ms:.1f} ms, {run.cpu_per_1000:.3f} CPU s/1000, "
                        f"{run.peak_rss_kib / 1024:.0f} MiB, lost {run.lost}, "
                        f"dup. {run.check.duplicates}"
                        + (f", recovery {run.recovery_s:.1f} s" if run.recovery_s else "")
                        + f" ({time.monotonic() - started:.0f} s)",
                        file=sys.stderr,
                    )
    return results


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.events:,}-event bursts, {QUICK.paced_s:g} s paced, a "
        f"{QUICK.outage_down_s:g} s outage, 1 run: for development (about 5 minutes)",
    )
    sizes.add_argument(
        "--full",
        action="store_true",
        help=f"the issue's counts: {FULL.events:,}-event bursts, {FULL.paced_s:g} s paced, "
        f"{FULL.runs} runs of everything (about two hours here)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help=f"the Markdown file whose section between {START_MARKER} and {END_MARKER} is "
        "replaced, the rest kept (appended if it has none; default: BENCHMARKS.md of the "
        "checkout, none with --quick)",
    )
    parser.add_argument(
        "--system", action="append", choices=SYSTEMS, help="only these systems (repeatable)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.key for s in scenarios(FULL)],
        help="only these scenarios (repeatable)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        help=f"runs per figure, every scenario (default: {STANDARD.runs}, the outage "
        f"{STANDARD.outage_runs}; --quick: {QUICK.runs}; --full: {FULL.runs})",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL if args.full else STANDARD
    if args.runs:
        plan = replace(plan, runs=args.runs, outage_runs=args.runs)
    signal.signal(signal.SIGTERM, _interrupt)
    command = shlex.join([os.path.relpath(sys.executable), "-m", "bench.compare", *sys.argv[1:]])
    header = machine_lines(())
    started, began = time.monotonic(), datetime.now().astimezone()
    try:
        redis_server()
        results = run_all(
            plan, args.system or SYSTEMS, args.scenario or [s.key for s in scenarios(plan)]
        )
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    header.append(
        f"- Started {began:%Y-%m-%d %H:%M %Z}, took {time.monotonic() - started:.0f} s; "
        "load generators, producers and the receiver run on the same 2 cores"
    )
    checks = checks_line(results)
    section = render(header, plan, results, checks, command)
    print(section, end="")
    output = args.output or (None if args.quick else CHECKOUT / "BENCHMARKS.md")
    if output is not None:
        update_section(output, section)
        print(f"bench: wrote the comparison into {output}", file=sys.stderr)
    for line in checks:
        print(f"check: {line}", file=sys.stderr)
    ours = [run for per in results.values() for run in per.get("almhookd", [])]
    return 1 if any(run.lost for run in ours) else 0


if __name__ == "__main__":
    sys.exit(main())
