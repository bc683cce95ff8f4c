"""Hostile receivers against the real daemon (a subprocess): every event still arrives
once the receiver behaves, redirects are never followed, the daemon's memory stays
bounded, and a bad webhook does not hold up the others."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from tests.reliability.conftest import record
from tests.reliability.harness import (
    Ledger,
    call,
    create_webhook,
    events,
    fast_config,
    ingest,
    wait_for,
)
from tests.reliability.hostile import BEHAVIOURS, HostileReceiver, close_quietly
from tests.support.daemon_process import DaemonProcess
from tests.support.http_receiver import Receiver

#: What the request log says about each behaviour's failed attempts.
ERRORS = {
    "error_500": r"HTTP 500",
    "hang": r"timed out",
    "reset": r"closed the connection|reset",
    "redirect": r"HTTP 307: redirects are not followed",
    "drip": r"timed out",
    "not_http": r"not HTTP|closed the connection",
}
#: The daemon's peak resident memory may grow this much over its warmed-up size.
MEMORY_SLACK_KIB = 48 * 1024
EVENTS = 60


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
async def test_every_event_arrives_despite_a_hostile_receiver(
    tmp_path: Path, behaviour: str
) -> None:
    canary, good = await Receiver().start(), await Receiver().start()
    daemon = DaemonProcess(fast_config(tmp_path, delivery="max_events_per_request = 10\n"))
    hostile = HostileReceiver(behaviour, bad=8)
    try:
        await daemon.start_async()
        hostile.redirect_to = [f"{daemon.url}/v1/webhooks", canary.url]
        await hostile.start()
        async with aiohttp.ClientSession() as session:
            bad_hook = await create_webhook(
                session, daemon.url, hostile.url, ["COURSE_ENROLLMENT"], auth={"type": "signature"}
            )
            await create_webhook(session, daemon.url, good.url, ["COURSE_ENROLLMENT"])
            # Warm up (first connections, first deliveries) before taking the baseline.
            warm = events(5)
            assert (await ingest(session, daemon.url, warm))[0] == 202
            await wait_for(lambda: len(good.all_event_ids()) >= 5, what="warm-up delivered")
            baseline = daemon.memory_kib()["VmRSS"]
            sent = list(warm)
            for _ in range(EVENTS // 10):
                batch = events(10)
                assert (await ingest(session, daemon.url, batch))[0] == 202
                sent += batch
            expected = {event["eventId"] for event in sent}
            await wait_for(
                lambda: not Ledger.of(hostile, expected, {}).missing,
                timeout=60,
                what=f"every event acknowledged by the {behaviour} receiver",
            )
            await wait_for(lambda: expected <= set(good.all_event_ids()), what="good receiver")
            memory = daemon.memory_kib()
            status, attempts = await call(
                session, daemon.url, "GET", f"/v1/webhooks/{bad_hook['id']}/attempts?limit=1000"
            )
            assert status == 200
            status, health = await call(session, daemon.url, "GET", "/healthz", token=None)
            assert status == 200, health
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
        await close_quietly(hostile)
        await canary.stop()
        await good.stop()
    failed = [a for a in attempts["attempts"] if not 200 <= (a["status"] or 0) < 300]
    if behaviour in ERRORS:
        assert failed, "the hostile answers were not counted as failures"
        assert all(re.search(ERRORS[behaviour], a["error"] or "") for a in failed), failed[:3]
    else:
        assert not failed, failed[:3]  # a 2xx is an acknowledgement, however odd its body
    assert canary.received == [], "a redirect was followed"
    growth = memory["VmHWM"] - baseline
    assert growth < MEMORY_SLACK_KIB, f"peak memory grew {growth} KiB over {baseline} KiB"
    ledger = Ledger.of(hostile, expected, {})
    record(
        f"hostile_{behaviour}",
        events=len(expected),
        lost=len(ledger.missing),
        hostile_answers=len(hostile.requests) - len(hostile.accepted),
        failed_attempts=len(failed),
        peak_memory_growth_kib=growth,
        bytes_thrown_at_daemon=hostile.bytes_sent,
    )


@pytest.mark.parametrize("behaviour", ["hang", "drip"])
async def test_a_stuck_receiver_does_not_hold_up_other_webhooks(
    tmp_path: Path, behaviour: str
) -> None:
    """With a long read timeout one receiver holds its request for the whole test; the
    other webhook's whole backlog goes through meanwhile."""
    good = await Receiver().start()
    stuck = HostileReceiver(behaviour, bad=10**6, drip_interval=0.5)
    daemon = DaemonProcess(
        fast_config(tmp_path, delivery='read_timeout = "60s"\nmax_events_per_request = 5\n')
    )
    try:
        await stuck.start()
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            await create_webhook(session, daemon.url, stuck.url, ["COURSE_ENROLLMENT"])
            await create_webhook(session, daemon.url, good.url, ["COURSE_ENROLLMENT"])
            sent = events(100)
            for start in range(0, 100, 20):
                assert (await ingest(session, daemon.url, sent[start : start + 20]))[0] == 202
            expected = {event["eventId"] for event in sent}
            await wait_for(lambda: expected <= set(good.all_event_ids()), what="good receiver")
        # Still the first request, still held open: the good webhook never waited for it.
        assert len(stuck.requests) == 1 and stuck.open_connections == 1
        await stuck.stop()  # lets the daemon's request fail, so it stops without waiting
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
        await close_quietly(stuck)
        await good.stop()
    record(f"isolation_{behaviour}", good_webhook_events=len(expected), stuck_requests=1)
