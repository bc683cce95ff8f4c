"""Crash loop: ``kill -9`` the real daemon at random moments under a steady ingest to
three webhooks, restart it each time, then check every acknowledged event arrived at
every subscribed receiver, duplicates stayed within the batches in flight at the kills,
and each webhook saw its events first in ingest order.

25 kills in ``make test``, 200 in ``make soak``. The seed is printed and recorded, so a
failing run can be replayed with ``ALMHOOKD_CRASH_SEED``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import aiohttp
import pytest

from tests.reliability.conftest import SOAK, record
from tests.reliability.harness import (
    Ledger,
    Producer,
    assert_no_secrets,
    create_webhook,
    database,
    fast_config,
    sending_batches,
    stored_sequence,
    undelivered,
    wait_for,
)
from tests.support import samples
from tests.support.daemon_process import DaemonProcess
from tests.support.http_receiver import Receiver
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

KILLS = 200 if SOAK else 25
MAX_EVENTS_PER_REQUEST = 5
#: What the producer sends, and what each of the three webhooks subscribes to.
PRODUCED = (
    "COURSE_ENROLLMENT",
    "COURSE_COMPLETED",
    "CI_STATS",
    "LEARNING_OBJECT_MODIFICATION",
    "LEARNING_PATH_ENROLLMENT",
)
SUBSCRIPTIONS = (
    ("everything", frozenset(samples.REALTIME), "signature"),
    ("courses", frozenset({"COURSE_ENROLLMENT", "COURSE_COMPLETED"}), "none"),
    (
        "catalogue",
        frozenset({"CI_STATS", "LEARNING_OBJECT_MODIFICATION", "COURSE_COMPLETED"}),
        "none",
    ),
)


@pytest.mark.timeout(3600 if SOAK else 240)
async def test_kill_9_at_random_moments_loses_no_acknowledged_event(tmp_path: Path) -> None:
    seed = int(os.environ.get("ALMHOOKD_CRASH_SEED", random.randrange(2**32)))  # noqa: S311
    print(f"\ncrash loop seed {seed} ({KILLS} kills)")
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    started = time.monotonic()
    receivers = [await Receiver(delay=0.002).start() for _ in SUBSCRIPTIONS]
    daemon = DaemonProcess(
        fast_config(tmp_path, delivery=f"max_events_per_request = {MAX_EVENTS_PER_REQUEST}\n")
    )
    db_path = database(tmp_path)
    producer = Producer(daemon.url, rng, PRODUCED)
    in_flight_at_kills: dict[str, int] = {}
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            webhooks = [
                await create_webhook(
                    session, daemon.url, receiver.url, events, name=name, auth={"type": auth}
                )
                for receiver, (name, events, auth) in zip(receivers, SUBSCRIPTIONS, strict=True)
            ]
        for _kill in range(KILLS):
            stop = asyncio.Event()
            producing = asyncio.create_task(producer.run(stop))
            # A random moment: ingest requests and deliveries are under way.
            await asyncio.sleep(rng.uniform(0.02, 0.6))
            daemon.kill()
            stop.set()
            await producing
            for webhook_id, count in sending_batches(db_path).items():
                in_flight_at_kills[webhook_id] = in_flight_at_kills.get(webhook_id, 0) + count
            await daemon.start_async()
            await producer.resend()

        def all_delivered() -> bool:
            return all(
                {i for i, name in producer.acknowledged.items() if name in events}
                <= set(receiver.all_event_ids())
                for receiver, (_, events, _) in zip(receivers, SUBSCRIPTIONS, strict=True)
            )

        await wait_for(all_delivered, timeout=120, what="every acknowledged event delivered")
        await wait_for(lambda: undelivered(db_path) == 0, timeout=60, what="no delivery left")
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
        for receiver in receivers:
            await receiver.stop()

    seq = stored_sequence(db_path)
    lost_at_ingest = set(producer.acknowledged) - set(seq)
    assert not lost_at_ingest, f"{len(lost_at_ingest)} acknowledged events not stored"
    names = {event_id: producer.acknowledged.get(event_id) for event_id in seq}
    totals = {"expected": 0, "lost": 0, "duplicates": 0, "redelivered": 0}
    for receiver, webhook, (_, events, _) in zip(receivers, webhooks, SUBSCRIPTIONS, strict=True):
        # Every stored event, acknowledged or not, had its deliveries made in the same
        # transaction: all of them must arrive, not only the acknowledged ones.
        expected = {i for i in seq if names[i] is None or names[i] in events}
        expected |= {i for i, name in producer.acknowledged.items() if name in events}
        ledger = Ledger.of(receiver, expected, seq)
        bound = in_flight_at_kills.get(webhook["id"], 0)
        assert not ledger.missing, f"{webhook['name']}: {len(ledger.missing)} events lost"
        assert ledger.out_of_order == 0, f"{webhook['name']}: first deliveries out of order"
        assert ledger.foreign_batches == 0, "a batch id was reused for other events"
        # Only a batch recorded as being sent when the daemon died can come again.
        assert ledger.redelivered_batches <= bound, (webhook["name"], ledger, bound)
        assert ledger.duplicate_events <= bound * MAX_EVENTS_PER_REQUEST, (ledger, bound)
        totals["expected"] += ledger.expected
        totals["lost"] += len(ledger.missing)
        totals["duplicates"] += ledger.duplicate_events
        totals["redelivered"] += ledger.redelivered_batches
    assert_no_secrets(daemon.log(), [ADMIN_TOKEN, INGEST_TOKEN])
    figures = {
        "seed": seed,
        "kills_survived": KILLS,
        "events_acknowledged": len(producer.acknowledged),
        "events_stored": len(seq),
        "deliveries_checked": totals["expected"],
        "lost": totals["lost"],
        "duplicate_events": totals["duplicates"],
        "redelivered_batches": totals["redelivered"],
        "batches_in_flight_at_kills": sum(in_flight_at_kills.values()),
        "seconds": round(time.monotonic() - started, 1),
    }
    record("crash_loop", **figures)
    print(figures)
