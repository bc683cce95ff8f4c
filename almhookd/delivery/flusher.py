"""The batch scheduler: releases held non-real-time deliveries at flush times.

The times come from the pure :func:`almhookd.domain.schedule.next_flush`; the last flush is
stored with the release itself, so a restart neither skips nor repeats one. When
processes share the database, only the leader flushes; the others follow its record. Workers
then send the released events packed up to ``batch.max_events_per_request`` per
request, under the same retry, retention and crash-safety rules as real-time events.

A storage error is retried; anything else ends the flush task, which the daemon
watches: it logs the traceback and stops with exit 1, so systemd restarts it at once
rather than run on with batch events held for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Final

import structlog

from almhookd.config import BatchConfig
from almhookd.domain.schedule import FlushSchedule, next_flush
from almhookd.errors import StorageError
from almhookd.protocols import Clock
from almhookd.storage.interface import Maintenance

log = structlog.get_logger("almhookd.flusher")

#: Pause after a failed flush before trying again.
FLUSH_RETRY_SECONDS: Final = 5.0
#: When another process runs the flush and its flush is due: the pause before looking
#: whether it flushed (or whether this process leads now).
FOLLOWER_LOOK_SECONDS: Final = 2.0


def local_zone() -> tzinfo:
    """The machine's time zone, for ``batch.at`` local times."""
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else UTC


class BatchScheduler:
    def __init__(
        self,
        *,
        store: Maintenance,
        clock: Clock,
        config: BatchConfig,
        wake_workers: Callable[[], None],
        zone: tzinfo | None = None,
        leads: Callable[[], bool] | None = None,
    ) -> None:
        self._store = store
        #: when processes share the database: whether this one runs the flush
        self._leads = leads
        self._clock = clock
        self._schedule = FlushSchedule(
            interval=config.interval, at=config.at, zone=zone or local_zone()
        )
        self._wake_workers = wake_workers
        self._previous: float | None = None
        self._trigger = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: when the next flush is due (epoch seconds), for status
        self.next_flush_at: float | None = None

    async def start(self) -> None:
        last = await self._store.last_flush_ms()
        self._previous = None if last is None else last / 1000
        self.next_flush_at = next_flush(self._previous, now=self._clock(), schedule=self._schedule)
        self._task = asyncio.create_task(self._run(), name="almhookd-batch-scheduler")

    def reconfigure(self, config: BatchConfig) -> None:
        """A new schedule, effective from the last flush (a reload)."""
        self._schedule = FlushSchedule(
            interval=config.interval, at=config.at, zone=self._schedule.zone
        )
        self.next_flush_at = next_flush(self._previous, now=self._clock(), schedule=self._schedule)
        self._trigger.set()

    async def flush(self) -> dict[str, int]:
        """Release every held non-real-time delivery now; returns counts per webhook."""
        async with self._lock:
            now = self._clock()
            released = await self._store.release_held(now_ms=int(now * 1000))
            self._previous = now
            self.next_flush_at = next_flush(now, now=now, schedule=self._schedule)
        log.info(
            "batch.flush",
            released=released,
            events=sum(released.values()),
            next_flush_at=self.next_flush_at,
        )
        self._trigger.set()  # the loop sleeps towards the new next_flush_at
        if released:
            self._wake_workers()
        return released

    async def _run(self) -> None:
        while True:
            due = self.next_flush_at if self.next_flush_at is not None else self._clock()
            delay = due - self._clock()
            if delay > 0:
                self._trigger.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._trigger.wait(), timeout=delay)
                continue  # re-check: the clock may have been changed, or a flush forced
            try:
                if self._leads is not None and not self._leads():
                    await self._follow()
                    continue
                await self.flush()
            except StorageError as error:
                log.error("batch.flush_failed", error=error.message)
                await asyncio.sleep(FLUSH_RETRY_SECONDS)

    async def _follow(self) -> None:
        """Another process runs the flush: take the time of its last one, and look again
        a little later should it be late (it may have died; the next leader flushes)."""
        last = await self._store.last_flush_ms()
        self._previous = None if last is None else last / 1000
        now = self._clock()
        self.next_flush_at = next_flush(self._previous, now=now, schedule=self._schedule)
        if self.next_flush_at <= now:
            self._trigger.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._trigger.wait(), timeout=FOLLOWER_LOOK_SECONDS)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The flush loop, which the daemon watches: should it end, the daemon stops."""
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # A loop that died has already been reported by the daemon, which watches it.
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
