"""Delivery through the real daemon (a subprocess): kill -9 mid-delivery, SIGTERM."""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from almhookd.domain.webhooks import NewWebhook
from almhookd.storage.sqlite import SqliteStorage
from tests.support import samples
from tests.support.clock import FakeClock
from tests.support.daemon_process import DaemonProcess, write_config
from tests.support.http_receiver import Receiver
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

_ids = itertools.count()
HEADERS = {"Authorization": f"Bearer {INGEST_TOKEN}"}


async def _create_webhook(tmp_path: Path, url: str) -> str:
    store = await SqliteStorage.open(
        tmp_path / "data" / "almhookd.db", clock=FakeClock(time.time())
    )
    try:
        webhook = await store.create_webhook(
            NewWebhook(
                name="receiver",
                target_url=url,
                events=frozenset(samples.ALL),
                auth_type="signature",
            )
        )
    finally:
        await store.close()
    return webhook.id


async def _ingest(
    session: aiohttp.ClientSession, daemon: DaemonProcess, count: int, acknowledged: list[str]
) -> None:
    ids = [f"k-{next(_ids)}" for _ in range(count)]
    body = {"events": [samples.event(eventId=i) for i in ids]}
    try:
        async with session.post(daemon.url + "/v1/events", json=body, headers=HEADERS) as response:
            if response.status == 202:
                acknowledged.extend(ids)
    except aiohttp.ClientError:
        pass


def _more_than(receiver: Receiver, count: int) -> bool:
    return len(receiver.received) >= count


async def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_kill_9_in_the_middle_of_deliveries_loses_nothing(tmp_path: Path) -> None:
    receiver = await Receiver(delay=0.005).start()
    config = write_config(
        tmp_path, extra="[delivery]\nallow_private_targets = true\nmax_events_per_request = 5\n"
    )
    await _create_webhook(tmp_path, receiver.url)
    daemon = DaemonProcess(config)
    acknowledged: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            for _round in range(10):
                await daemon.start_async()
                seen = len(receiver.received)
                ingest = asyncio.gather(
                    *(_ingest(session, daemon, 3, acknowledged) for _ in range(40))
                )
                await _wait_for(functools.partial(_more_than, receiver, seen + 5), 20)
                daemon.kill()  # deliveries are under way: requests in flight or queued
                await ingest
            await daemon.start_async()
            delivered = await _wait_for(
                lambda: set(acknowledged) <= set(receiver.all_event_ids()), 60
            )
            assert daemon.stop() == 0
    finally:
        await receiver.stop()
    received = receiver.all_event_ids()
    missing = set(acknowledged) - set(received)
    assert delivered and not missing, f"{len(missing)} acknowledged events never delivered"
    duplicates = sum(n - 1 for n in collections.Counter(received).values())
    print(
        f"\n10 kills: {len(acknowledged)} acknowledged, {len(received)} received, "
        f"{duplicates} duplicates"
    )
    # Redeliveries after a kill repeat a batch with its id: count by batch, not by event.
    batches: dict[str, list[str]] = {}
    for request in receiver.received:
        previous = batches.setdefault(request.headers["webhook-id"], request.event_ids)
        assert previous == request.event_ids, "a batch id was reused for other events"


async def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path) -> None:
    receiver = await Receiver(delay=0.8).start()
    config = write_config(
        tmp_path, extra='[delivery]\nallow_private_targets = true\nread_timeout = "5s"\n'
    )
    webhook_id = await _create_webhook(tmp_path, receiver.url)
    daemon = DaemonProcess(config)
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            acknowledged: list[str] = []
            await _ingest(session, daemon, 1, acknowledged)
        assert await _wait_for(lambda: len(receiver.received) == 1, 10)
        daemon.signal(signal.SIGTERM)  # while the receiver is still answering
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, daemon.wait) == 0
    finally:
        await receiver.stop()
    store = await SqliteStorage.open(tmp_path / "data" / "almhookd.db", clock=FakeClock())
    try:
        event = await store.get_event(acknowledged[0])
        assert event is not None
        assert [d.state for d in event.deliveries] == ["delivered"]
        assert event.deliveries[0].webhook_id == webhook_id
    finally:
        await store.close()


async def test_batch_events_arrive_only_at_flush_times_packed(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    config = write_config(
        tmp_path, extra='[delivery]\nallow_private_targets = true\n[batch]\ninterval = "2s"\n'
    )
    await _create_webhook(tmp_path, receiver.url)
    daemon = DaemonProcess(config)
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            held: list[str] = []
            for _ in range(4):
                ids = [f"b-{next(_ids)}" for _ in range(10)]
                body = {
                    "events": [samples.event("COURSE_ENROLLMENT_BATCH", eventId=i) for i in ids]
                }
                async with session.post(
                    daemon.url + "/v1/events", json=body, headers=HEADERS
                ) as response:
                    assert response.status == 202
                held += ids
            assert await _wait_for(lambda: set(held) <= set(receiver.all_event_ids()), 15)
            # An admin can flush now, too.
            async with session.post(
                daemon.url + "/v1/batch/flush", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as response:
                assert response.status == 202
                assert "nextFlushAt" in await response.json()
            async with session.post(daemon.url + "/v1/batch/flush", headers=HEADERS) as response:
                assert response.status == 403
        assert daemon.stop() == 0
    finally:
        await receiver.stop()
    flushes = [e for e in daemon.log_events() if e["event"] == "batch.flush"]
    released = sum(e["events"] for e in flushes)
    assert released == 40
    # Each delivery of held events came after a flush that released them, in payloads
    # that carry several events: fewer requests than the 4 ingest requests' 40 events.
    assert len(receiver.received) <= len([e for e in flushes if e["events"]])
    assert all(len(r.event_ids) > 1 for r in receiver.received)
    assert sorted(receiver.all_event_ids()) == sorted(held)
