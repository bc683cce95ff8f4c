"""A worker's lease (``delivery.lease.LeaseHold``): a request starts only while the
lease leaves more than the margin, is cut short when the lease ends or is lost, and
goes on when renewed. The monotonic clock is the test's."""

from __future__ import annotations

import asyncio

import pytest

from almhookd.delivery.lease import LeaseHold
from almhookd.domain.ownership import Lease, LeasePolicy
from almhookd.errors import LeaseLost
from tests.support.running import until

POLICY = LeasePolicy.for_takeover(15)  # lease 12 s, margin 3 s
LEASE = Lease(webhook_id="wh_1", fence=7, expires_at_ms=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_request_does_not_start_within_the_margin_and_is_never_sent() -> None:
    clock = Clock()
    hold = LeaseHold(LEASE, expires_at=clock.now + 3.0, policy=POLICY, monotonic=clock)
    started = False

    async def send() -> int:
        nonlocal started
        started = True
        return 204

    assert not hold.sendable
    with pytest.raises(LeaseLost, match=r"wh_1: the lease \(fence 7\)"):
        await hold.guard(send())
    assert not started


async def test_a_request_within_the_lease_returns_its_answer() -> None:
    clock = Clock()
    hold = LeaseHold(LEASE, expires_at=clock.now + 12.0, policy=POLICY, monotonic=clock)

    async def send() -> int:
        return 204

    assert await hold.guard(send()) == 204


async def test_a_lost_lease_cuts_the_request_short() -> None:
    clock = Clock()
    hold = LeaseHold(LEASE, expires_at=clock.now + 12.0, policy=POLICY, monotonic=clock)
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def send() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return 204

    guarded = asyncio.ensure_future(hold.guard(send()))
    await asyncio.wait_for(started.wait(), 5)
    hold.lose()
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(guarded, 5)
    assert cancelled.is_set()


async def test_a_request_is_cut_when_the_clock_reaches_the_margin_unless_renewed() -> None:
    clock = Clock()
    hold = LeaseHold(LEASE, expires_at=clock.now + 12.0, policy=POLICY, monotonic=clock)
    answer = asyncio.Event()
    started = asyncio.Event()

    async def send() -> int:
        started.set()
        await answer.wait()
        return 204

    guarded = asyncio.ensure_future(hold.guard(send()))
    await asyncio.wait_for(started.wait(), 5)
    clock.now += 8.0  # 4 s left: still more than the margin
    hold.renew(clock.now + 12.0)  # renewed: 12 s again
    # The guard took the renewal in once it has cleared the change it was woken by.
    await until(lambda: not hold._changed.is_set(), what="the renewal taken in")
    assert not guarded.done()
    answer.set()
    assert await asyncio.wait_for(guarded, 5) == 204

    answer.clear()
    started.clear()
    guarded = asyncio.ensure_future(hold.guard(send()))
    await asyncio.wait_for(started.wait(), 5)
    clock.now += 9.5  # 2.5 s left, within the margin: the next look cuts it
    hold.renew(hold.expires_at)  # a look without a renewal
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(guarded, 5)
