"""Supervision (issue #17): what escapes a worker's turn is a failed attempt with the
normal backoff, a worker whose loop dies anyway is restarted by the dispatcher (and
``/healthz`` says 503 meanwhile), a one-of-a-kind task that ends stops the daemon with
exit 1, and a running daemon disables a failing webhook by the clock, without traffic.

Delivery runs against real receivers on 127.0.0.1 and a real SQLite file; the engine
tests drive time with the fake clock and wake the running worker instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from almhookd.config import Config, ListenAddress
from almhookd.delivery import dispatcher as dispatcher_module
from almhookd.delivery.flusher import BatchScheduler
from almhookd.delivery.worker import Worker
from almhookd.domain.policy import Outcome
from almhookd.domain.webhooks import Webhook
from almhookd.service.daemon import TaskFailed, serve
from tests.support import samples
from tests.support.clock import FakeClock
from tests.support.daemon_process import write_config
from tests.support.engine import Engine, running_engine
from tests.support.http_receiver import Receiver, read_request
from tests.support.running import Running, daemon_config, eventually, until
from tests.support.tokens import INGEST_TOKEN

#: A value a secret-holding local variable would have: it must never reach a log line.
SECRET_LOCAL = "whsec_TOPSECRETLOCALVALUE"


@pytest.fixture
async def engine(db_path: Path, clock: FakeClock) -> AsyncIterator[Engine]:
    async with running_engine(
        db_path, clock, delivery="allow_private_targets = true\nmax_events_per_request = 1\n"
    ) as built:
        yield built


def error_lines(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["log_level"] in ("error", "critical")]


async def delivered(engine: Engine, webhook: Webhook, *event_ids: str) -> None:
    async def all_delivered() -> bool:
        for event_id in event_ids:
            event = await engine.store.get_event(event_id)
            assert event is not None
            if [d.state for d in event.deliveries if d.webhook_id == webhook.id] != ["delivered"]:
                return False
        return True

    await eventually(all_delivered, what=f"{list(event_ids)} delivered")


def running_worker(engine: Engine, webhook: Webhook) -> Worker:
    worker = engine.dispatcher.workers[webhook.id]
    assert worker.running
    return worker


# --- what escapes a turn is a failed attempt ------------------------------------------


@contextlib.asynccontextmanager
async def raw_receiver(answers: list[bytes]) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A raw HTTP server writing exact bytes: ``answers`` in turn (the last repeats),
    one request per connection; yields its URL and the request heads it read."""
    heads: list[bytes] = []

    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await read_request(reader))
            writer.write(answers[min(len(heads), len(answers)) - 1])
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve_one, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook", heads
    finally:
        server.close()


def webhook_id_header(head: bytes) -> bytes:
    return next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"webhook-id:")
    )


async def test_a_retry_after_of_superscript_two_is_a_failure_with_backoff(
    engine: Engine,
) -> None:
    """``Retry-After: ²`` (the byte 0xB2) passed ``str.isdigit()`` and made ``float()``
    raise out of the worker's loop: the task died without a line, and the daemon with
    the watchdog. Now it is an ordinary 503: backoff, then the next success delivers."""
    answers = [
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ]
    async with raw_receiver(answers) as (url, heads):
        with capture_logs() as logs:
            webhook = await engine.webhook(url, start=True)
            worker = running_worker(engine, webhook)
            started = engine.clock()
            [event_id] = await engine.ingest(1)
            await until(lambda: worker.schedule.consecutive_failures == 1, what="the 503")
            assert worker.running
            assert worker.schedule.last_error == "HTTP 503"
            retry_at = worker.schedule.next_attempt_at
            assert retry_at is not None
            assert started + 5 <= retry_at <= started + 5.5  # the backoff's 5 s, jittered
            engine.clock.advance(retry_at - started)
            worker.wake()
            await delivered(engine, webhook, event_id)
        assert worker.running
    assert error_lines(logs) == []
    [failed] = [line for line in logs if line["event"] == "delivery.failed"]
    assert failed["status"] == 503 and failed["log_level"] == "warning"
    assert len(heads) == 2 and webhook_id_header(heads[0]) == webhook_id_header(heads[1])


async def test_an_unexpected_error_in_a_turn_is_logged_and_retried_in_order(
    engine: Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = engine.dispatcher._sender
    send = sender.send
    raised: list[str] = []

    async def send_once_broken(webhook: Webhook, **kwargs: Any) -> Outcome:
        signing_key = SECRET_LOCAL  # a local the log must not show
        if not raised:
            raised.append(signing_key)
            raise RuntimeError("an answer nobody foresaw")
        return await send(webhook, **kwargs)

    monkeypatch.setattr(sender, "send", send_once_broken)
    with capture_logs() as logs:
        webhook = await engine.webhook(receiver.url, start=True)
        worker = running_worker(engine, webhook)
        started = engine.clock()
        event_ids = await engine.ingest(3)
        stored: Webhook | None = None

        async def failure_stored() -> bool:
            nonlocal stored
            stored = await engine.store.get_webhook(webhook.id)
            return stored is not None and stored.schedule.consecutive_failures == 1

        await eventually(failure_stored, what="the failed turn recorded")
        assert stored is not None
        assert receiver.received == []
        retry_at = worker.schedule.next_attempt_at
        assert retry_at is not None
        assert started + 5 <= retry_at <= started + 5.5  # the normal backoff, jittered
        assert worker.running
        engine.clock.advance(retry_at - started)
        worker.wake()
        await delivered(engine, webhook, *event_ids)
    assert receiver.all_event_ids() == event_ids  # nothing lost, in ingest order
    [line] = error_lines(logs)
    assert line["event"] == "worker.step_failed"
    assert line["webhook_id"] == webhook.id
    assert line["error_type"] == "builtins.RuntimeError"
    assert line["error"] == "an answer nobody foresaw"
    assert "RuntimeError: an answer nobody foresaw" in line["traceback"]
    assert "send_once_broken" in line["traceback"]
    assert SECRET_LOCAL not in json.dumps(logs, default=str)  # no frame's locals
    assert stored.schedule.last_error == "internal error (RuntimeError): see the daemon's log"


def break_the_loop_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first worker loop to take a turn dies outside the turn's own handler."""
    supervised_step = Worker._supervised_step
    deaths: list[int] = []

    async def dies_once(self: Worker) -> float | None:
        if not deaths:
            deaths.append(1)
            raise RuntimeError("the loop broke")
        return await supervised_step(self)

    monkeypatch.setattr(Worker, "_supervised_step", dies_once)


async def test_a_dead_worker_is_restarted_by_the_dispatcher(
    engine: Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop itself dies (outside the turn's handler): logged, counted as supervised
    for the watchdog while its restart waits, then started again; nothing is lost."""
    monkeypatch.setattr(dispatcher_module, "WORKER_RESTART_INITIAL", 0.5)
    break_the_loop_once(monkeypatch)
    with capture_logs() as logs:
        webhook = await engine.webhook(receiver.url, start=True)
        worker = engine.dispatcher.workers[webhook.id]
        await until(lambda: worker.dead, what="the worker's death")
        assert engine.dispatcher.dead_workers() == [webhook.id]
        assert engine.dispatcher.healthy()  # supervised: the watchdog keeps going
        await until(lambda: worker.running, what="the restart")
        assert engine.dispatcher.dead_workers() == []
        event_ids = await engine.ingest(2)
        await delivered(engine, webhook, *event_ids)
    [died] = [line for line in logs if line["event"] == "worker.died"]
    assert died["log_level"] == "error" and died["webhook_id"] == webhook.id
    assert died["restart_in_s"] == 0.5
    assert "RuntimeError: the loop broke" in died["traceback"]
    assert [line["webhook_id"] for line in logs if line["event"] == "worker.restarted"] == [
        webhook.id
    ]


async def test_a_worker_dying_again_soon_waits_longer(
    engine: Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "WORKER_RESTART_INITIAL", 0.05)

    async def always_dies(self: Worker) -> float | None:
        raise RuntimeError("the loop broke")

    monkeypatch.setattr(Worker, "_supervised_step", always_dies)
    with capture_logs() as logs:
        await engine.webhook(receiver.url, start=True)
        await until(
            lambda: sum(1 for line in logs if line["event"] == "worker.died") >= 3,
            what="three deaths",
        )
    delays = [line["restart_in_s"] for line in logs if line["event"] == "worker.died"]
    assert delays[:3] == [0.05, 0.1, 0.2]


# --- the daemon in-process ----------------------------------------------------------


@contextlib.asynccontextmanager
async def daemon(
    config: Config, *, clock: Callable[[], float] | None = None
) -> AsyncIterator[tuple[Running, asyncio.Task[None], asyncio.Event]]:
    """``serve()`` in the test's loop; yields the client, the serving task and its stop."""
    stop = asyncio.Event()
    ready: asyncio.Future[list[ListenAddress]] = asyncio.get_running_loop().create_future()
    options: dict[str, Any] = {"clock": clock} if clock is not None else {}
    task = asyncio.create_task(
        serve(config, shutdown_trigger=stop.wait, on_ready=ready.set_result, **options)
    )
    waiting: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(url=f"http://{ready.result()[0]}", session=session), task, stop
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)


async def add_webhook(running: Running, url: str) -> str:
    status, body, _ = await running.call(
        "POST",
        "/v1/webhooks",
        {"name": "lms", "targetUrl": url, "events": ["COURSE_ENROLLMENT"]},
    )
    assert status == 201, body
    return str(body["id"])


async def emit(running: Running) -> str:
    status, body, _ = await running.call(
        "POST",
        "/v1/events",
        samples.event("COURSE_ENROLLMENT"),
        token=INGEST_TOKEN,
    )
    assert status == 202, body
    return str(body["eventIds"][0])


async def health(running: Running) -> tuple[int, Any]:
    status, body, _ = await running.call("GET", "/healthz", token=None)
    return status, body


async def test_healthz_says_503_while_a_worker_is_dead(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher_module, "WORKER_RESTART_INITIAL", 1.5)
    break_the_loop_once(monkeypatch)
    async with daemon(daemon_config(tmp_path)) as (running, _, _):
        assert (await health(running))[0] == 200
        webhook_id = await add_webhook(running, receiver.url)
        seen: list[tuple[int, Any]] = []

        async def unhealthy() -> bool:
            seen.append(await health(running))
            return seen[-1][0] == 503

        await eventually(unhealthy, what="/healthz 503 while the worker is dead")
        assert seen[-1][1]["code"] == "worker_stopped"
        assert seen[-1][1]["webhooks"] == [webhook_id]

        async def healthy() -> bool:
            return (await health(running))[0] == 200

        await eventually(healthy, what="/healthz 200 once the worker is restarted")
        event_id = await emit(running)
        await running.until_delivered(webhook_id, event_id)


async def test_a_dying_flusher_stops_the_daemon_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_flush(self: BatchScheduler) -> dict[str, int]:
        signing_key = SECRET_LOCAL  # a local the log must not show
        raise RuntimeError(f"flush bug ({len(signing_key)})")

    monkeypatch.setattr(BatchScheduler, "flush", broken_flush)
    config = daemon_config(tmp_path, '[batch]\ninterval = "1s"\n')
    with capture_logs() as logs:
        async with daemon(config) as (_, task, _):
            done, _ = await asyncio.wait({task}, timeout=30)
            assert task in done, "the daemon kept running without its flusher"
            with pytest.raises(TaskFailed, match="almhookd-batch-scheduler"):
                task.result()
    [failed] = [line for line in logs if line["event"] == "daemon.task_failed"]
    assert failed["log_level"] == "error"
    assert failed["task"] == "almhookd-batch-scheduler"
    assert "RuntimeError: flush bug (25)" in failed["traceback"]
    assert SECRET_LOCAL not in json.dumps(logs, default=str)
    events = [line["event"] for line in logs]
    assert events.index("daemon.task_failed") < events.index("daemon.stopped")


def test_a_dying_maintenance_task_exits_1(tmp_path: Path) -> None:
    """``almhookd run`` in a subprocess whose maintenance pass raises: exit 1 at once,
    with the traceback logged (no locals), so systemd restarts it without waiting."""
    config_path = write_config(tmp_path)
    script = (
        "import sys\n"
        "from almhookd.cli import main as cli\n"
        "from almhookd.delivery import dispatcher\n"
        "async def broken(self):\n"
        f"    signing_key = {SECRET_LOCAL!r}\n"
        "    raise RuntimeError('maintenance bug %d' % len(signing_key))\n"
        "dispatcher.Dispatcher.maintain_once = broken\n"
        "sys.exit(cli.main(['run', '--config', sys.argv[1]]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    [failed] = [line for line in lines if line["event"] == "daemon.task_failed"]
    assert failed["task"] == "almhookd-maintenance"
    assert "RuntimeError: maintenance bug 25" in failed["traceback"]
    assert SECRET_LOCAL not in result.stdout + result.stderr
    assert "daemon.stopped" in [line["event"] for line in lines]
    assert "almhookd-maintenance task stopped unexpectedly" in result.stderr


async def test_a_running_daemon_disables_a_failing_webhook_without_new_events(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole daemon on a fake clock, retention 2 minutes, reminders every minute:
    one event, the receiver always 500, the worker waiting a real minute for its
    backoff; only the maintenance pass (every 20 ms here) sees the clock move."""
    monkeypatch.setattr(dispatcher_module, "MAINTENANCE_INTERVAL", 0.02)
    base = daemon_config(tmp_path)
    config = replace(
        base,
        delivery=replace(base.delivery, backoff_initial=60.0, backoff_max=60.0),
        storage=replace(base.storage, retention=120.0),
        notify=replace(base.notify, reminder_interval=60.0),
    )
    clock = FakeClock()
    receiver.respond(500)
    with capture_logs() as logs:
        async with daemon(config, clock=clock) as (running, _, _):
            webhook_id = await add_webhook(running, receiver.url)
            await emit(running)

            async def webhook_field(name: str) -> Any:
                status, body, _ = await running.call("GET", f"/v1/webhooks/{webhook_id}")
                assert status == 200, body
                return body[name]

            async def failed_once() -> bool:
                return bool(await webhook_field("consecutiveFailures") == 1)

            await eventually(failed_once, what="the first failure recorded")
            clock.advance(60)
            await until(
                lambda: any(line["event"] == "notify.reminder_logged" for line in logs),
                what="a reminder after a minute of failure",
            )
            assert await webhook_field("status") == "active"
            clock.advance(60)

            async def disabled() -> bool:
                return bool(await webhook_field("status") == "disabled")

            await eventually(disabled, what="the webhook disabled after the retention")
            reason = await webhook_field("disabledReason")
            assert (await health(running))[0] == 200  # disabled is not dead
    assert reason == "no successful delivery for 2 minutes: last error: HTTP 500"
    assert len(receiver.received) == 1  # no new attempt: only the clock moved
    reminders = [line for line in logs if line["event"] == "notify.reminder_logged"]
    assert len(reminders) == 1
    assert [line["reason"] for line in logs if line["event"] == "webhook.disabled"] == [reason]
    assert not any(line["event"] in ("worker.died", "worker.step_failed") for line in logs)
