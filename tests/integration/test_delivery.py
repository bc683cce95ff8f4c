"""The delivery engine against real receivers on 127.0.0.1, on a real SQLite file.

Workers are driven through ``step()`` on a fake clock, so schedules of seconds to days
are checked without sleeping; the HTTP requests themselves are real.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from almhookd.config import DeliveryConfig, Secret, parse_config
from almhookd.delivery import worker as worker_module
from almhookd.delivery.lease import LeaseHold
from almhookd.delivery.sender import Sender
from almhookd.delivery.worker import CLAIMED_BATCHES, CLAIMED_BATCHES_SHARED, Worker
from almhookd.domain.batching import Claim, RequestBatch
from almhookd.domain.events import parse_ingest
from almhookd.domain.ownership import Lease, LeasePolicy
from almhookd.domain.policy import FIRST_REMINDER_AFTER, Outcome
from almhookd.domain.webhooks import NewWebhook, Webhook, unsaved_webhook
from almhookd.errors import StorageError
from tests.support import samples
from tests.support.clock import FakeClock
from tests.support.engine import Engine, running_engine
from tests.support.http_receiver import Receiver
from tests.support.net import free_port
from tests.support.running import until
from tests.support.verifier import verify

DAY = 86_400.0


@pytest.fixture
async def engine(db_path: Path, clock: FakeClock) -> AsyncIterator[Engine]:
    async with running_engine(db_path, clock) as built:
        yield built


#: Workers that send one event per request: every event is a batch of its own.
ONE_EVENT_PER_REQUEST = "allow_private_targets = true\nmax_events_per_request = 1\n"


@pytest.fixture
async def one_event_engine(db_path: Path, clock: FakeClock) -> AsyncIterator[Engine]:
    async with running_engine(db_path, clock, delivery=ONE_EVENT_PER_REQUEST) as built:
        yield built


# --- what the receiver sees ---------------------------------------------------------


async def test_auth_none_payload_and_headers(engine: Engine, receiver: Receiver) -> None:
    webhook = await engine.webhook(receiver.url)
    [event_id] = await engine.ingest(1)
    assert await engine.drain(engine.worker(webhook)) == 1
    [request] = receiver.received
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("almhookd/")
    assert request.headers["webhook-id"].startswith("msg_")
    assert request.headers["webhook-timestamp"] == str(int(engine.clock()))
    assert "webhook-signature" not in request.headers
    assert "Authorization" not in request.headers
    payload = request.payload
    assert payload["accountId"] == 1010
    [event] = payload["events"]
    assert event["eventId"] == event_id and event["eventName"] == "COURSE_ENROLLMENT"
    assert set(event) == {"eventId", "eventName", "timestamp", "eventInfo", "data"}


async def test_auth_basic(engine: Engine, receiver: Receiver) -> None:
    webhook = await engine.webhook(
        receiver.url, auth_type="basic", auth_username="lms", auth_password=Secret("pa:ss wörd")
    )
    await engine.ingest(1)
    await engine.drain(engine.worker(webhook))
    scheme, _, encoded = receiver.received[0].headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "lms:pa:ss wörd"


async def test_auth_signature_verified_independently(engine: Engine, receiver: Receiver) -> None:
    webhook = await engine.webhook(receiver.url, auth_type="signature")
    [secret] = webhook.secrets_in_force(int(engine.clock() * 1000))
    await engine.ingest(3)
    await engine.drain(engine.worker(webhook))
    [request] = receiver.received
    assert verify(secret, request.headers, request.body)
    assert not verify(secret, request.headers, request.body.replace(b"1010", b"1011"))
    assert not verify(
        "whsec_" + base64.b64encode(b"x" * 32).decode(), request.headers, request.body
    )


# --- order and packing --------------------------------------------------------------


async def test_events_arrive_in_ingest_order_one_request_at_a_time(
    db_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    async with running_engine(db_path, clock, delivery=ONE_EVENT_PER_REQUEST) as engine:
        webhook = await engine.webhook(receiver.url)
        ids: list[str] = []
        for _ in range(5):
            ids += await engine.ingest(4)
        assert await engine.drain(engine.worker(webhook)) == 20
    assert [r.event_ids for r in receiver.received] == [[i] for i in ids]


async def test_a_backlog_is_packed_after_an_outage(engine: Engine, receiver: Receiver) -> None:
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    receiver.respond(500, 202)
    first = await engine.ingest(3)
    assert await worker.step() == 5.0  # the first batch failed: back off
    backlog = await engine.ingest(117)
    engine.clock.advance(5)
    assert await engine.drain(worker) == 4  # the failed batch again, then 117 in 50s
    sizes = [len(r.event_ids) for r in receiver.received]
    assert sizes == [3, 3, 50, 50, 17]
    assert receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]
    assert receiver.received[0].body == receiver.received[1].body
    assert receiver.all_event_ids()[3:] == first + backlog
    assert await engine.store.backlog(webhook.id) == 0


async def test_only_subscribed_events_and_active_webhooks_get_deliveries(
    engine: Engine, receiver: Receiver
) -> None:
    subscribed = await engine.webhook(receiver.url, events=frozenset({"COURSE_COMPLETED"}))
    archived = await engine.webhook(receiver.url, active=False)
    await engine.ingest(2, name="COURSE_ENROLLMENT")
    [completed] = await engine.ingest(1, name="COURSE_COMPLETED")
    assert await engine.store.backlog(subscribed.id) == 1
    assert await engine.store.backlog(archived.id) == 0
    await engine.drain(engine.worker(subscribed))
    assert receiver.all_event_ids() == [completed]


# --- failures -----------------------------------------------------------------------


async def _reset(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (500, "HTTP 500"),
        ("sleep:2", "timed out"),
        ("reset", "closed the connection"),
        ("redirect", "HTTP 302: redirects are not followed"),
        (404, "HTTP 404"),
    ],
)
async def test_failures_are_retried_with_the_same_batch(
    engine: Engine, receiver: Receiver, db_path: Path, behaviour: object, error: str
) -> None:
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    receiver.respond(behaviour, 202)  # type: ignore[arg-type]
    [event_id] = await engine.ingest(1)
    assert await worker.step() == 5.0
    assert worker.schedule.last_error is not None
    assert error in worker.schedule.last_error
    attempts = await engine.store.attempts(webhook.id)
    assert attempts[0]["error"] is not None and error in attempts[0]["error"]
    engine.clock.advance(5)
    assert await engine.drain(worker) == 1
    assert receiver.received[-1].event_ids == [event_id]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert worker.schedule.consecutive_failures == 0
    stored = await engine.store.get_event(event_id)
    assert stored is not None and stored.deliveries[0].state == "delivered"
    assert stored.deliveries[0].attempts == 2
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        batches = db.execute("SELECT id, state, attempts FROM request_batches").fetchall()
    assert batches == [(receiver.received[-1].headers["webhook-id"], "delivered", 2)]


async def test_connection_refused_is_retried(engine: Engine) -> None:
    webhook = await engine.webhook(f"http://127.0.0.1:{free_port()}/hook")
    worker = engine.worker(webhook)
    await engine.ingest(1)
    assert await worker.step() == 5.0
    assert "cannot connect" in (worker.schedule.last_error or "")


async def test_the_backoff_schedule_on_a_fake_clock(engine: Engine, receiver: Receiver) -> None:
    receiver.respond(503)
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    await engine.ingest(1)
    delays = []
    for _ in range(9):
        delay = await worker.step()
        assert delay is not None
        delays.append(delay)
        assert await worker.step() == delay  # not due yet: nothing is sent
        engine.clock.advance(delay)
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert len(receiver.received) == 9


async def test_retry_after_is_honoured_within_the_cap(engine: Engine, receiver: Receiver) -> None:
    async def limited(seconds: str) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": seconds})

    receiver.respond(lambda r: limited("60"), lambda r: limited("86400"))
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    await engine.ingest(1)
    assert await worker.step() == 60
    engine.clock.advance(60)
    assert await worker.step() == 300


async def test_a_410_disables_the_webhook(engine: Engine, receiver: Receiver) -> None:
    receiver.respond(410)
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    [event_id] = await engine.ingest(1)
    with capture_logs() as logs:
        assert await worker.step() is None
    stored = await engine.store.get_webhook(webhook.id)
    assert stored is not None and stored.status == "disabled"
    assert stored.disabled_reason == "the receiver answered 410 Gone"
    assert any(e["event"] == "webhook.disabled" for e in logs)
    # Its pending event is kept for when it is re-enabled.
    event = await engine.store.get_event(event_id)
    assert event is not None and event.deliveries[0].state == "sending"


# --- retention, auto-disable, reminders ---------------------------------------------


async def test_events_expire_after_the_retention_and_are_counted(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.respond(500)
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    old = await engine.ingest(2)
    await worker.step()
    engine.clock.advance(6 * DAY)
    recent = await engine.ingest(1)
    engine.clock.advance(1 * DAY + 1)
    receiver.respond(202)
    with capture_logs() as logs:
        assert await engine.drain(worker) == 1
    expired = [e for e in logs if e["event"] == "delivery.expired"]
    assert expired == [
        {
            "event": "delivery.expired",
            "log_level": "warning",
            "webhook_id": webhook.id,
            "events": 2,
            "retention_s": 7 * DAY,
        }
    ]
    assert engine.dispatcher.expired_events == 2
    assert receiver.received[-1].event_ids == recent  # the old batch was not re-sent
    for event_id in old:
        event = await engine.store.get_event(event_id)
        assert event is not None and event.deliveries[0].state == "expired"


async def test_pruning_removes_what_outlived_the_retention(
    engine: Engine, receiver: Receiver
) -> None:
    webhook = await engine.webhook(receiver.url)
    [delivered] = await engine.ingest(1)
    await engine.drain(engine.worker(webhook))
    engine.clock.advance(7 * DAY + 1)
    [fresh] = await engine.ingest(1)
    await engine.dispatcher.maintain_once()
    assert await engine.store.get_event(delivered) is None
    assert await engine.store.get_event(fresh) is not None
    assert await engine.store.attempts(webhook.id) == []


async def test_a_webhook_failing_for_the_whole_retention_is_disabled(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.respond(500)
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    await engine.ingest(1)
    steps = 0
    for steps in range(1, 3000):  # about 2,020 are due in 7 days; more means no disable
        delay = await worker.step()
        if worker.disabled or delay is None:
            break
        engine.clock.advance(delay)
        if steps % 50 == 0:
            await engine.ingest(1)  # new events keep arriving during the outage
    assert worker.disabled, f"still active after {steps} failed attempts"
    stored = await engine.store.get_webhook(webhook.id)
    assert stored is not None and stored.status == "disabled"
    assert stored.disabled_reason is not None
    assert stored.disabled_reason.startswith("no successful delivery for 7 days")
    assert stored.schedule.failing_since is not None
    # About one attempt every 5 minutes for 7 days.
    assert 2000 < steps < 2030, steps


class Inbox:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) keeping what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(  # noqa: N802 - the name aiosmtpd calls
        self, server: object, session: object, envelope: object
    ) -> str:
        content = envelope.content  # type: ignore[attr-defined]
        self.messages.append(
            (
                list(envelope.rcpt_tos),  # type: ignore[attr-defined]
                content.decode() if isinstance(content, bytes) else content,
            )
        )
        return "250 OK"


@contextlib.contextmanager
def smtp_inbox() -> Iterator[tuple[Inbox, str]]:
    """The inbox and the ``[notify]`` section that sends reminders to it, daily."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield (
            inbox,
            f'[notify]\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\n'
            'smtp_starttls = false\nadmin_email = "ops@example.org"\n'
            'reminder_interval = "24h"\n',
        )
    finally:
        controller.stop()


async def test_reminders_reach_a_real_smtp_server(
    db_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    with smtp_inbox() as (inbox, toml):
        async with running_engine(db_path, clock, toml) as engine:
            receiver.respond(500)
            webhook = await engine.webhook(
                receiver.url, contact_email="lms@example.org", name="LMS sync"
            )
            worker = engine.worker(webhook)
            await engine.ingest(4)
            started = engine.clock()
            reminded_at: list[float] = []
            for _ in range(3 * 288 + 50):  # one attempt per 5 minutes for 3 days
                if engine.clock() - started >= 3 * DAY:
                    break
                delay = await worker.step()
                last = worker.schedule.last_reminder_at
                if last is not None and last - started not in reminded_at:
                    reminded_at.append(last - started)
                assert delay is not None
                engine.clock.advance(delay)
            else:
                raise AssertionError("3 days of retries took more attempts than the backoff")
            await engine.notifier.close()
        assert engine.notifier.failed == 0
    # First after 15 minutes of failure, then every 24 hours (to within one 5-min retry).
    assert len(inbox.messages) == 3
    assert FIRST_REMINDER_AFTER <= reminded_at[0] < FIRST_REMINDER_AFTER + 300
    gaps = [b - a for a, b in itertools.pairwise(reminded_at)]
    assert len(gaps) == 2 and all(DAY <= gap < DAY + 300 for gap in gaps), gaps
    recipients, text = inbox.messages[0]
    assert sorted(recipients) == ["lms@example.org", "ops@example.org"]
    assert "LMS sync" in text and receiver.url in text and "HTTP 500" in text
    assert "Backlog:         4 events waiting" in text


async def test_a_webhook_failing_for_the_retention_is_disabled_without_new_events(
    db_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    """Issue #17: the outage is measured by the clock. One event, then nothing: the
    worker waits for its backoff and only the maintenance pass runs; reminders keep
    coming every day and the webhook is disabled once it has failed for 7 days."""
    with smtp_inbox() as (inbox, toml):
        async with running_engine(db_path, clock, toml) as engine:
            receiver.respond(500)
            webhook = await engine.webhook(receiver.url, contact_email="lms@example.org")
            worker = engine.worker(webhook, maintained=True)
            await engine.ingest(1)
            started = engine.clock()
            assert await worker.step() == 5  # failed; the backoff says wait
            reminded_at: list[float] = []
            with capture_logs() as logs:
                for _tick in range(7 * 144 + 10):  # every 10 minutes for 7 days
                    engine.clock.advance(600)
                    await engine.dispatcher.maintain_once()
                    last = worker.schedule.last_reminder_at
                    if last is not None and last - started not in reminded_at:
                        reminded_at.append(last - started)
                    if worker.disabled:
                        break
            disabled_after = engine.clock() - started
            await engine.notifier.close()
            stored = await engine.store.get_webhook(webhook.id)
    assert worker.disabled, "still active after 7 days of failure and 10 minutes more"
    assert disabled_after == 7 * DAY
    assert len(receiver.received) == 1  # nothing but the maintenance pass ran
    # Reminders by the clock: at the first pass from 15 minutes on, then daily.
    assert reminded_at == [1200 + day * DAY for day in range(7)]
    assert len(inbox.messages) == 7
    assert engine.notifier.failed == 0
    # The same effects as a disable after an attempt: stored, logged, counted, stopped.
    assert stored is not None and stored.status == "disabled"
    assert stored.disabled_reason == "no successful delivery for 7 days: last error: HTTP 500"
    assert stored.schedule.last_reminder_at == started + reminded_at[-1]
    disabled = [e for e in logs if e["event"] == "webhook.disabled"]
    assert disabled == [
        {
            "event": "webhook.disabled",
            "log_level": "error",
            "webhook_id": webhook.id,
            "reason": stored.disabled_reason,
        }
    ]
    assert engine.dispatcher.disabled_webhooks == 1
    assert engine.dispatcher.metrics.webhooks_disabled._value.get() == 1
    assert webhook.id not in engine.dispatcher.workers


async def test_a_reminder_is_decided_once_by_the_attempt_or_the_maintenance_pass(
    engine: Engine, receiver: Receiver
) -> None:
    receiver.respond(500)
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook, maintained=True)
    await engine.ingest(1)
    started = engine.clock()
    delay = await worker.step()
    while delay is not None and engine.clock() + delay - started < FIRST_REMINDER_AFTER:
        engine.clock.advance(delay)
        delay = await worker.step()
    assert delay is not None
    engine.clock.advance(delay)  # 15 minutes failing: a reminder is due; both look
    await engine.dispatcher.maintain_once()
    assert await worker.step() is not None
    await engine.dispatcher.maintain_once()
    assert engine.notifier.sent == 1
    # And after the attempt took it, the maintenance pass has nothing to send.
    engine.clock.advance(DAY)
    assert await worker.step() is not None
    await engine.dispatcher.maintain_once()
    await engine.notifier.close()
    assert engine.notifier.sent == 2
    stored = await engine.store.get_webhook(webhook.id)
    assert stored is not None
    assert stored.schedule.last_reminder_at == worker.schedule.last_reminder_at == engine.clock()


async def test_a_maintenance_look_waits_for_no_turn_under_way(
    engine: Engine, receiver: Receiver
) -> None:
    """A turn in flight decides for itself after its attempt; the maintenance pass
    skips that worker rather than decide the same reminder beside it."""
    receiver.respond(500)
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook, maintained=True)
    await engine.ingest(1)
    await worker.step()
    engine.clock.advance(FIRST_REMINDER_AFTER)
    release = asyncio.Event()

    async def held(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=500)

    receiver.respond(held)
    turn = asyncio.create_task(worker.step())
    await until(lambda: len(receiver.received) == 2, what="the retry in flight")
    # Bounded: a maintenance pass that waited for the turn would wait for ever here.
    await asyncio.wait_for(engine.dispatcher.maintain_once(), timeout=10)
    assert engine.notifier.sent == 0 and worker.schedule.last_reminder_at is None
    release.set()
    await turn
    await engine.notifier.close()
    assert engine.notifier.sent == 1


async def test_a_dead_smtp_server_never_blocks_delivery(
    db_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    toml = (
        f'[notify]\nsmtp_host = "127.0.0.1"\nsmtp_port = {free_port()}\n'
        'smtp_starttls = false\nadmin_email = "ops@example.org"\n'
    )
    async with running_engine(db_path, clock, toml) as engine:
        receiver.respond(500)
        webhook = await engine.webhook(receiver.url)
        worker = engine.worker(webhook)
        await engine.ingest(1)
        deadline = time.monotonic() + 30  # the reminder goes out on its own task
        while engine.notifier.failed == 0:
            assert time.monotonic() < deadline, "no failed reminder was counted"
            delay = await worker.step()
            assert delay is not None
            engine.clock.advance(delay)
            await asyncio.sleep(0.01)
        receiver.respond(202)
        engine.clock.advance(300)
        assert await engine.drain(worker) == 1
    assert engine.notifier.failed >= 1


# --- the target guard ---------------------------------------------------------------


def _hook(url: str) -> Webhook:
    return unsaved_webhook(NewWebhook(name="x", target_url=url, events=frozenset()), now_ms=0)


async def _send_with_default_guard(url: str, clock: FakeClock) -> Outcome:
    sender = Sender(parse_config("", env={}).delivery, clock=clock)
    await sender.start()
    try:
        return await sender.send(_hook(url), message_id="msg_1", body=b"{}")
    finally:
        await sender.close()


async def test_a_reload_gives_the_sender_its_new_timeouts(
    clock: FakeClock, receiver: Receiver
) -> None:
    def delivery(read_timeout: str) -> DeliveryConfig:
        toml = f'[delivery]\nallow_private_targets = true\nread_timeout = "{read_timeout}"\n'
        return parse_config(toml, env={}).delivery

    receiver.respond("sleep:1.5")
    sender = Sender(delivery("500ms"), clock=clock)
    await sender.start()
    try:
        first = await sender.send(_hook(receiver.url), message_id="msg_1", body=b"{}")
        sender.reconfigure(delivery("10s"))
        second = await sender.send(_hook(receiver.url), message_id="msg_2", body=b"{}")
    finally:
        await sender.close()
    assert not first.ok and "timed out" in (first.error or "")
    assert second.ok


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/hook", "http://[::1]:9/hook"],
)
async def test_the_guard_refuses_private_targets_at_connect_time(
    clock: FakeClock, url: str
) -> None:
    outcome = await _send_with_default_guard(url, clock)
    assert not outcome.ok and outcome.status is None
    assert outcome.error is not None and "not allowed" in outcome.error


async def test_the_guard_checks_resolved_names(clock: FakeClock, receiver: Receiver) -> None:
    outcome = await _send_with_default_guard(f"http://localhost:{receiver.port}/hook", clock)
    assert not outcome.ok
    assert outcome.error is not None and "127.0.0.1" in outcome.error
    assert "not allowed" in outcome.error
    assert receiver.received == []


async def test_creating_a_webhook_applies_the_guard(db_path: Path, clock: FakeClock) -> None:
    from almhookd.domain.targets import TargetRefused
    from almhookd.domain.webhooks import NewWebhook

    async with running_engine(db_path, clock, delivery="allow_private_targets = false\n") as engine:
        for url in ("http://169.254.169.254/", "http://localhost:8787/v1/events"):
            with pytest.raises(TargetRefused, match="not allowed"):
                await engine.dispatcher.add_webhook(
                    NewWebhook(name="metadata", target_url=url, events=frozenset({"CI_STATS"}))
                )
        assert await engine.store.list_webhooks() == []


async def test_an_idle_worker_claims_again_only_once_woken(
    engine: Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    calls: list[str] = []
    for name in ("claim_batches", "record_attempts"):
        original = getattr(engine.store, name)

        def counting(*args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kw)

        monkeypatch.setattr(engine.store, name, counting)
    [first] = await engine.ingest(1)
    assert await worker.step() == 0.0  # sent; its record (and claim) runs in the background
    [second] = await engine.ingest(1)  # committed after that claim: only the wake tells
    assert await engine.drain(worker) == 1
    assert receiver.all_event_ids() == [first, second]
    assert await engine.store.backlog(webhook.id) == 0
    calls.clear()
    assert await worker.step() is None
    assert calls == []  # the last claim found nothing and no commit woke the worker since
    worker.wake()
    assert await worker.step() is None
    assert calls == ["claim_batches"]


async def test_connections_are_kept_alive(engine: Engine, receiver: Receiver) -> None:
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    for _ in range(3):
        await engine.ingest(1)
        await engine.drain(worker)
    assert len(receiver.received) == 3
    assert len({r.peer for r in receiver.received}) == 1


async def test_a_huge_answer_is_capped_in_the_attempts_log(
    engine: Engine, receiver: Receiver
) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        for _ in range(64):  # 4 MiB: far more than is read
            await response.write(b"x" * 65_536)
        return response

    receiver.respond(huge)
    webhook = await engine.webhook(receiver.url)
    worker = engine.worker(webhook)
    await engine.ingest(1)
    assert await worker.step() == 5.0
    [attempt] = await engine.store.attempts(webhook.id)
    assert attempt["status"] == 500
    assert attempt["responseBody"] == "x" * 4096


# --- crash safety and the running loop ----------------------------------------------


async def test_a_batch_recorded_but_not_acknowledged_is_sent_again_with_its_id(
    db_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    async with running_engine(db_path, clock) as engine:
        webhook = await engine.webhook(receiver.url)
        ids = await engine.ingest(3)
        [batch] = await engine.store.claim_batches(
            webhook.id,
            Claim(
                now_ms=int(clock() * 1000),
                retained_since_ms=0,
                max_events=50,
                max_batch_events=50,
                max_bytes=1 << 20,
            ),
        )
        # "sent", then the process died before recording it
    async with running_engine(db_path, clock) as engine:
        more = await engine.ingest(2)
        stored = await engine.store.get_webhook(webhook.id)
        assert stored is not None
        assert await engine.drain(engine.worker(stored)) == 2
    assert receiver.received[0].headers["webhook-id"] == batch.id
    assert receiver.received[0].event_ids == ids
    assert receiver.received[1].event_ids == more


async def test_batches_claimed_ahead_are_sent_again_in_order_after_a_crash(
    db_path: Path, clock: FakeClock, receiver: Receiver
) -> None:
    async with running_engine(db_path, clock, delivery=ONE_EVENT_PER_REQUEST) as engine:
        webhook = await engine.webhook(receiver.url)
        ids = await engine.ingest(5)
        claimed = await engine.store.claim_batches(
            webhook.id,
            Claim(
                now_ms=int(clock() * 1000),
                retained_since_ms=0,
                max_events=1,
                max_batch_events=1,
                max_bytes=1 << 20,
                batches=3,
            ),
        )
        # the process died with three batches claimed, none of them acknowledged
    async with running_engine(db_path, clock, delivery=ONE_EVENT_PER_REQUEST) as engine:
        stored = await engine.store.get_webhook(webhook.id)
        assert stored is not None
        assert await engine.drain(engine.worker(stored)) == 5
        assert await engine.store.backlog(webhook.id) == 0
    assert [r.headers["webhook-id"] for r in receiver.received[:3]] == [b.id for b in claimed]
    assert [r.event_ids[0] for r in receiver.received] == ids


async def _drain_counting_sending(worker: Worker, db_path: Path) -> list[tuple[float, int]]:
    """Step ``worker`` until nothing is due; after each step, its delay and the batches
    recorded as sending (what a crash then would re-send)."""
    steps = []
    with sqlite3.connect(db_path) as db:
        for _ in range(1000):
            if (delay := await worker.step()) is None:
                break
            recording = worker._recording  # a background record's commit, if one runs
            if recording is not None:
                await asyncio.wait({recording})
            [(sending,)] = db.execute(
                "SELECT count(*) FROM request_batches WHERE webhook_id = ? AND state = 'sending'",
                (worker.webhook.id,),
            )
            steps.append((delay, sending))
        else:
            raise AssertionError("the worker did not drain in 1,000 steps")
    return steps


@pytest.mark.parametrize("claimed", [CLAIMED_BATCHES, CLAIMED_BATCHES_SHARED])
async def test_no_more_than_the_claimed_batches_are_recorded_as_sending_while_draining(
    one_event_engine: Engine, receiver: Receiver, db_path: Path, claimed: int
) -> None:
    """What a crash could re-send: the pipeline keeps batches claimed ahead, never more
    than CLAIMED_BATCHES recorded as sending (CLAIMED_BATCHES_SHARED on PostgreSQL),
    acknowledged ones included."""
    engine = one_event_engine
    webhook = await engine.webhook(receiver.url)
    ids = await engine.ingest(2 * claimed + 5)
    worker = engine.worker(webhook, claimed_batches=claimed)
    steps = await _drain_counting_sending(worker, db_path)
    assert all(delay == 0 for delay, _ in steps)
    assert max(sending for _, sending in steps) == claimed
    assert [r.event_ids[0] for r in receiver.received] == ids
    assert await engine.store.backlog(webhook.id) == 0


async def test_the_batches_claimed_ahead_stop_at_the_byte_budget(
    one_event_engine: Engine, receiver: Receiver, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large events: a worker holds about CLAIMED_BYTES of bodies claimed, not
    CLAIMED_BATCHES requests of up to 1 MiB each."""
    monkeypatch.setattr(worker_module, "CLAIMED_BYTES", 20_000)
    engine = one_event_engine
    webhook = await engine.webhook(receiver.url)
    documents = [samples.event("COURSE_ENROLLMENT", eventId=f"large-{i}") for i in range(12)]
    for document in documents:
        document["data"]["padding"] = "x" * 5000
    await engine.store.append(
        parse_ingest(
            {"events": documents},
            now_ms=int(engine.clock() * 1000),
            default_account_id=1010,
            new_id=lambda: "unused",
        )
    )
    worker = engine.worker(webhook)
    steps = await _drain_counting_sending(worker, db_path)
    size = max(len(request.body) for request in receiver.received)
    most = max(sending for _, sending in steps)
    assert most <= math.ceil(20_000 / size) + 1 < 12  # one more: the one being sent
    assert [r.event_ids[0] for r in receiver.received] == [d["eventId"] for d in documents]


async def test_a_failed_background_record_sends_its_batches_again(
    one_event_engine: Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = one_event_engine
    webhook = await engine.webhook(receiver.url)
    ids = await engine.ingest(6)
    worker = engine.worker(webhook)
    record_attempts = engine.store.record_attempts
    failures = iter([StorageError("disk I/O error")])

    async def failing_once(*args: Any, **kwargs: Any) -> list[RequestBatch]:
        for error in failures:
            raise error
        return await record_attempts(*args, **kwargs)

    monkeypatch.setattr(engine.store, "record_attempts", failing_once)
    sent = 0
    with capture_logs() as logs:
        for _ in range(20):
            try:
                delay = await worker.step()
            except StorageError:
                continue  # the running loop logs it and tries again
            sent += 1
            if delay is None:
                break
    assert await engine.store.backlog(webhook.id) == 0
    arrived = [r.event_ids[0] for r in receiver.received]
    assert set(arrived) == set(ids)
    assert len(arrived) > len(ids)  # the batches of the lost record went out again
    first = [arrived.index(event_id) for event_id in ids]
    assert first == sorted(first)  # first deliveries in ingest order
    assert not [e for e in logs if e["log_level"] == "error"]


async def test_running_workers_wake_on_commit_and_idle_without_polling(
    db_path: Path, receiver: Receiver
) -> None:
    real_clock = FakeClock(time.time())
    async with running_engine(db_path, real_clock) as engine:
        webhook = await engine.webhook(receiver.url, start=True)
        worker = engine.dispatcher.workers[webhook.id]
        steps = 0
        delays: list[float | None] = []
        original = worker.step

        async def counting_step() -> float | None:
            nonlocal steps
            steps += 1
            delays.append(await original())
            return delays[-1]

        worker.step = counting_step  # type: ignore[method-assign]
        ids = await engine.ingest(5)
        await until(lambda: len(receiver.all_event_ids()) == 5)
        assert receiver.all_event_ids() == ids
        # The step after the last acknowledgement finds nothing and goes to sleep; from
        # then on an idle worker takes no step at all, however long it is watched.
        await until(lambda: bool(delays) and delays[-1] is None and steps == len(delays))
        settled = steps
        # Parked on its wake-up event itself, not in a wait_for or a sleep: nothing but
        # a wake brings it back, so it cannot poll.
        await until(lambda: _parked_without_a_timer(worker), what="the worker parked")
        assert steps == settled, "an idle worker must not poll"
        await engine.dispatcher.refresh(webhook.id)
        assert webhook.id in engine.dispatcher.workers
        await engine.store.set_webhook_status(webhook.id, "inactive")
        await engine.dispatcher.refresh(webhook.id)
        assert webhook.id not in engine.dispatcher.workers


def _parked_without_a_timer(worker: Worker) -> bool:
    """Whether the worker's loop awaits its wake-up event directly (no timeout)."""
    task = worker._task
    awaited = task.get_coro().cr_await if task is not None else None  # type: ignore[union-attr]
    return getattr(getattr(awaited, "cr_code", None), "co_qualname", "") == "Event.wait"


class _Follower:
    """An ``Ownership`` that holds no webhook and does not lead (another process does)."""

    def hold_of(self, webhook_id: str) -> None:
        return None

    def outbox_for(self, hold: object) -> None:
        raise AssertionError("no lease is held")

    def leads(self) -> bool:
        return False

    def kick(self) -> None:
        pass


async def test_expiry_and_pruning_are_left_to_the_leader_when_processes_share_a_database(
    engine: Engine, receiver: Receiver
) -> None:
    webhook = await engine.webhook(receiver.url)
    [old] = await engine.ingest(1)
    engine.clock.advance(7 * DAY + 1)
    engine.dispatcher.ownership = _Follower()  # type: ignore[assignment]
    await engine.dispatcher.maintain_once()
    assert engine.dispatcher.expired_events == 0
    event = await engine.store.get_event(old)
    assert event is not None and event.deliveries[0].state == "pending"
    await engine.dispatcher.refresh(webhook.id)
    assert webhook.id not in engine.dispatcher.workers  # another process delivers to it


def _held_lease(webhook: Webhook) -> LeaseHold:
    """A lease held for the next hour, as a process sharing the database holds one."""
    return LeaseHold(
        Lease(webhook_id=webhook.id, fence=1, expires_at_ms=0),
        expires_at=time.monotonic() + 3600,
        policy=LeasePolicy.for_takeover(15),
    )


async def test_a_delivery_written_by_a_clock_ahead_is_sent_when_due_not_at_the_next_wake(
    engine: Engine, receiver: Receiver
) -> None:
    """Processes sharing a database: the event was stored by one whose clock is 2 s
    ahead of this worker's, so by this worker's clock it is due 2 s from now. Its claim
    finds nothing; it looks again at that time instead of waiting for another event."""
    webhook = await engine.webhook(receiver.url)
    behind = FakeClock(engine.clock() - 2.0)
    worker = engine.worker(webhook, clock=behind, lease=_held_lease(webhook))
    await engine.ingest(1)
    assert await worker.step() == pytest.approx(2.0)
    assert receiver.received == []
    behind.advance(2.0)  # what the worker's wait for those 2 s lets pass
    assert await worker.step() == 0.0
    assert len(receiver.received) == 1
    assert await worker.step() is None  # nothing due later: it waits to be woken


async def test_one_process_waits_to_be_woken_when_nothing_is_due(
    engine: Engine, receiver: Receiver
) -> None:
    """Without a lease (one process, one clock) a claim that finds nothing asks no more."""
    webhook = await engine.webhook(receiver.url)
    behind = FakeClock(engine.clock() - 2.0)
    worker = engine.worker(webhook, clock=behind)
    await engine.ingest(1)
    assert await worker.step() is None
