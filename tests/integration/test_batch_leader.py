"""The batch flush when processes share a database: only the leader flushes; another
process follows the flush time the leader stored, and flushes itself once it leads.
The store is a stand-in recording the calls (what is released is
``test_batch.py``'s subject); the clock is the test's."""

from __future__ import annotations

from datetime import UTC

from almhookd.config import BatchConfig
from almhookd.delivery.flusher import BatchScheduler
from tests.support.clock import FakeClock
from tests.support.running import until

INTERVAL_S = 900.0


class FlushRecord:
    """``Maintenance``'s flush calls: the time of the last flush, and releases made."""

    def __init__(self, last_flush_ms: int | None) -> None:
        self.last = last_flush_ms
        self.releases: list[int] = []
        self.looks = 0  #: reads of the last flush time

    async def last_flush_ms(self) -> int | None:
        self.looks += 1
        return self.last

    async def release_held(self, *, now_ms: int) -> dict[str, int]:
        self.releases.append(now_ms)
        self.last = now_ms
        return {}


async def test_only_the_leader_flushes_and_a_follower_takes_over_when_it_leads() -> None:
    clock = FakeClock()
    grid = (int(clock()) // int(INTERVAL_S)) * INTERVAL_S
    clock.now = grid + INTERVAL_S + 1  # a flush time has just passed since the last one
    store = FlushRecord(last_flush_ms=int(grid * 1000))
    leading = False
    scheduler = BatchScheduler(
        store=store,  # type: ignore[arg-type]  # the two calls a scheduler makes
        clock=clock,
        config=BatchConfig(interval=INTERVAL_S),
        wake_workers=lambda: None,
        zone=UTC,
        leads=lambda: leading,
    )
    await scheduler.start()
    try:
        # The leader is late: the follower waits for it, flushing nothing.
        await until(lambda: store.looks >= 2, what="the follower's look at a late leader")
        assert store.releases == []
        # The leader flushes and stores its time: the follower moves on to the next one.
        store.last = int((grid + INTERVAL_S) * 1000)
        scheduler.reconfigure(BatchConfig(interval=INTERVAL_S))  # a look now, not in 2 s
        await until(
            lambda: scheduler.next_flush_at == grid + 2 * INTERVAL_S,
            what="the follower took the leader's flush time",
        )
        assert store.releases == []
        # The leader is gone by the next flush time: this process leads now and flushes.
        leading = True
        clock.now = grid + 2 * INTERVAL_S + 1
        scheduler.reconfigure(BatchConfig(interval=INTERVAL_S))  # wakes the loop
        await until(lambda: len(store.releases) == 1, what="the new leader's flush")
        assert store.releases == [int((grid + 2 * INTERVAL_S + 1) * 1000)]
    finally:
        await scheduler.stop()
