"""The dispatcher: one :class:`Worker` per active webhook, expiry and pruning.

It starts and stops workers as webhooks are created, archived, disabled or deleted,
wakes them when the store commits new events, and once a minute expires what outlived
the retention (logged and counted, never silently gone), prunes old rows and lets each
worker remind or disable its failing webhook by the clock, without waiting for traffic.

It supervises the workers: a worker whose loop dies is logged and started again after
a pause that doubles while it keeps dying, so one receiver never stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

import structlog

from almhookd.config import Config
from almhookd.delivery.lease import Ownership
from almhookd.delivery.notify import Notifier
from almhookd.delivery.resolver import check_target
from almhookd.delivery.sender import Sender
from almhookd.delivery.worker import CLAIMED_BATCHES, CLAIMED_BATCHES_SHARED, Worker
from almhookd.domain.backoff import retry_delay
from almhookd.domain.targets import TargetPolicy
from almhookd.domain.webhooks import NewWebhook, SigningSecret, Webhook, WebhookChanges
from almhookd.errors import LeaseLost, StorageError
from almhookd.logs import crash_fields
from almhookd.metrics import Metrics
from almhookd.protocols import Clock
from almhookd.storage.interface import Outbox, Storage

log = structlog.get_logger("almhookd.dispatcher")

MAINTENANCE_INTERVAL: Final = 60.0
#: A dead worker is started again after this pause, doubling while it keeps dying soon
#: after each start, up to WORKER_RESTART_MAX; one that ran that long starts afresh.
#: The watchdog counts a worker waiting for its restart as supervised, so a crash loop
#: costs that webhook's deliveries, never the daemon (``/healthz`` says 503 meanwhile).
WORKER_RESTART_INITIAL: Final = 1.0
WORKER_RESTART_MAX: Final = 60.0


class Dispatcher:
    """The delivery workers of the active webhooks, and the hub admin changes go
    through: creating, changing, archiving or deleting a webhook reaches its running
    worker at once (:meth:`add_webhook`, :meth:`update_webhook`, ...). It wakes the
    workers on each ingest commit (:meth:`wake_all`), restarts a worker whose loop died,
    and runs the maintenance pass every ``MAINTENANCE_INTERVAL``: expiry, pruning, and
    each worker's :meth:`Worker.maintain`."""

    def __init__(
        self,
        *,
        store: Storage,
        sender: Sender,
        notifier: Notifier,
        clock: Clock,
        config: Config,
        metrics: Metrics | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self._store = store
        #: when processes share the database: which webhooks this one delivers to
        self.ownership = ownership
        self.metrics = metrics or Metrics()
        self._sender = sender
        self._notifier = notifier
        self._clock = clock
        self._config = config
        self.workers: dict[str, Worker] = {}
        self._maintenance: asyncio.Task[None] | None = None
        self._expiry_lock = asyncio.Lock()
        self._alignments: dict[str, asyncio.Lock] = {}
        #: restarts waiting, by webhook id, and how often each worker died in a row
        self._restarts: dict[str, asyncio.Task[None]] = {}
        self._deaths: dict[str, int] = {}
        self._stopping = False
        #: events expired since start, and webhooks disabled by the daemon
        self.expired_events = 0
        self.disabled_webhooks = 0

    async def start(self, *, maintenance: bool = True) -> None:
        for webhook in await self._store.list_webhooks():
            if webhook.active:
                await self.refresh(webhook.id)
        if maintenance:
            self._maintenance = asyncio.create_task(self._maintain(), name="almhookd-maintenance")

    async def add_webhook(self, new: NewWebhook, *, max_webhooks: int | None = None) -> Webhook:
        """Create a webhook after the target guard accepts its URL, and start its worker.

        The guard (a DNS lookup) runs before the write; ``max_webhooks`` is enforced in
        the transaction that inserts (:class:`~almhookd.storage.sqlite.store.WebhookLimitReached`).
        """
        await check_target(new.target_url, TargetPolicy.from_config(self._config.delivery))
        webhook = await self._store.create_webhook(new, max_webhooks=max_webhooks)
        # From the write transaction itself, not read back: a stored active webhook
        # always gets its worker.
        await self._bring_in_line(webhook.id, webhook)
        self._shares_changed()
        return webhook

    async def update_webhook(self, webhook_id: str, changes: WebhookChanges) -> Webhook | None:
        """Apply a change; it takes effect on the running worker at once. Returns the
        webhook as changed, or ``None`` when there is no such webhook."""
        if changes.target_url is not None:
            await check_target(changes.target_url, TargetPolicy.from_config(self._config.delivery))
        webhook = await self._store.update_webhook(webhook_id, changes)
        if webhook is not None:
            # Read again rather than applied as returned: a later change that committed
            # meanwhile must not be overwritten on the worker by this older state.
            await self.refresh(webhook_id)
            self._shares_changed()
        return webhook

    async def delete_webhook(self, webhook_id: str) -> bool:
        """Stop the webhook's worker, then delete it with its pending deliveries."""
        # Aligned like any change: a refresh meanwhile (a notice, a lease taken) would
        # find the webhook still there and start a second sender to it.
        async with self._aligning(webhook_id):
            worker = self.workers.pop(webhook_id, None)
            if worker is not None:
                await worker.stop(self._config.delivery.read_timeout)
            deleted = await self._store.delete_webhook(webhook_id)
        self._shares_changed()
        return deleted

    async def rotate_secret(self, webhook_id: str) -> SigningSecret:
        grace_ms = int(self._config.delivery.secret_rotation_grace * 1000)
        secret = await self._store.rotate_secret(webhook_id, grace_ms=grace_ms)
        await self.refresh(webhook_id)
        return secret

    async def replay(
        self, webhook_id: str, *, event_ids: list[str] | None, since_ms: int | None
    ) -> int:
        now = self._clock()
        queued = await self._store.replay(
            webhook_id,
            event_ids=event_ids,
            since_ms=since_ms,
            retained_since_ms=int((now - self._config.storage.retention) * 1000),
            now_ms=int(now * 1000),
        )
        worker = self.workers.get(webhook_id)
        if worker is not None:
            worker.wake()
        return queued

    def _shares_changed(self) -> None:
        """The active webhooks changed here: the cluster, if any, looks again now."""
        if self.ownership is not None:
            self.ownership.kick()

    async def refresh(self, webhook_id: str) -> None:
        """Bring the workers in line with a webhook's stored state after a change."""
        async with self._aligning(webhook_id):
            await self._align(webhook_id, await self._store.get_webhook(webhook_id))

    async def _bring_in_line(self, webhook_id: str, webhook: Webhook) -> None:
        async with self._aligning(webhook_id):
            await self._align(webhook_id, webhook)

    @contextlib.asynccontextmanager
    async def _aligning(self, webhook_id: str) -> AsyncIterator[None]:
        """One alignment of a webhook's worker at a time: two at once (an admin change
        and a lease taken) could each start a worker, two senders to one webhook."""
        # Kept once made (a few per webhook ever created): dropping one while a caller
        # waits on it would let the next caller take a new one.
        async with self._alignments.setdefault(webhook_id, asyncio.Lock()):
            yield

    async def _align(self, webhook_id: str, webhook: Webhook | None) -> None:
        """Start, update or stop the webhook's worker to match ``webhook`` (``None``:
        deleted) and, when processes share the database, the lease held on it."""
        worker = self.workers.get(webhook_id)
        hold = self.ownership.hold_of(webhook_id) if self.ownership is not None else None
        wanted = webhook is not None and webhook.active
        if self.ownership is not None and hold is None:
            wanted = False  # another process delivers to it
        if worker is not None and (not wanted or worker.lease is not hold):
            # Gone, or a new lease (a new fence): the old worker's steps would be refused.
            if self.workers.get(webhook_id) is worker:
                del self.workers[webhook_id]
            await worker.stop(self._config.delivery.read_timeout)
            worker = self.workers.get(webhook_id)
        if webhook is None or not wanted or self._stopping:
            return  # stopping: no new worker may start behind the last ones' backs
        if worker is None:
            outbox: Outbox = self._store
            if self.ownership is not None and hold is not None:
                outbox = self.ownership.outbox_for(hold)
            worker = Worker(
                webhook,
                store=outbox,
                sender=self._sender,
                notifier=self._notifier,
                clock=self._clock,
                config=self._config,
                expire=self.expire,
                on_disabled=self._disabled,
                on_died=self._died,
                on_lost=self._lost,
                metrics=self.metrics,
                lease=hold,
                claimed_batches=CLAIMED_BATCHES
                if self.ownership is None
                else CLAIMED_BATCHES_SHARED,
            )
            self.workers[webhook_id] = worker
            worker.start()
        else:
            worker.update(webhook)

    def _disabled(self, webhook_id: str) -> None:
        self.disabled_webhooks += 1
        self.metrics.webhooks_disabled.inc()
        self.workers.pop(webhook_id, None)

    def _lost(self, worker: Worker) -> None:
        """A worker's lease ran out or was taken: forget it (the cluster starts a new one
        if this process holds the webhook again)."""
        if self.workers.get(worker.webhook.id) is worker:
            del self.workers[worker.webhook.id]

    def _died(self, worker: Worker, error: BaseException | None) -> None:
        """A worker's loop ended unasked: log it and start it again after a pause."""
        webhook_id = worker.webhook.id
        loop = asyncio.get_running_loop()
        lived = loop.time() - worker.started_at
        deaths = 1 if lived >= WORKER_RESTART_MAX else self._deaths.get(webhook_id, 0) + 1
        self._deaths[webhook_id] = deaths
        delay = retry_delay(deaths, initial=WORKER_RESTART_INITIAL, maximum=WORKER_RESTART_MAX)
        fields = crash_fields(error) if error is not None else {"error": "the loop returned"}
        log.error("worker.died", webhook_id=webhook_id, restart_in_s=delay, **fields)
        if self._stopping:
            return
        self._restarts[webhook_id] = loop.create_task(
            self._restart(worker, delay), name=f"almhookd-restart-{webhook_id}"
        )

    async def _restart(self, worker: Worker, delay: float) -> None:
        webhook_id = worker.webhook.id
        try:
            await asyncio.sleep(delay)
        finally:
            if self._restarts.get(webhook_id) is asyncio.current_task():
                del self._restarts[webhook_id]
        # Archived, deleted, disabled or replaced meanwhile: nothing to restart.
        if self._stopping or self.workers.get(webhook_id) is not worker or not worker.dead:
            return
        worker.restart()
        log.info("worker.restarted", webhook_id=webhook_id)

    def reconfigure(self, config: Config) -> None:
        """New limits, timeouts and retry settings for every worker (a reload)."""
        self._config = config
        for worker in self.workers.values():
            worker.reconfigure(config)

    def healthy(self) -> bool:
        """Every worker's loop is running or, dead, due to be restarted (the watchdog's
        check: a dying receiver's worker must not get the daemon restarted)."""
        return all(webhook_id in self._restarts for webhook_id in self.dead_workers())

    def dead_workers(self) -> list[str]:
        """The webhooks whose worker died and is not running again yet (``/healthz``)."""
        return [webhook_id for webhook_id, worker in self.workers.items() if worker.dead]

    @property
    def maintenance_task(self) -> asyncio.Task[None] | None:
        """The maintenance loop, which the daemon watches: should it end, the daemon stops."""
        return self._maintenance

    def wake_all(self) -> None:
        for worker in self.workers.values():
            worker.wake()

    async def expire(self) -> int:
        """Expire what outlived the retention; returns how many deliveries expired."""
        async with self._expiry_lock:
            retained_since_ms = int((self._clock() - self._config.storage.retention) * 1000)
            counts = await self._store.expire(retained_since_ms=retained_since_ms)
        for count in counts:
            log.warning(
                "delivery.expired",
                webhook_id=count.webhook_id,
                events=count.events,
                retention_s=self._config.storage.retention,
            )
        expired = sum(count.events for count in counts)
        self.expired_events += expired
        for count in counts:
            self.metrics.deliveries.labels(count.webhook_id, "expired").inc(count.events)
        self.metrics.expired_events.inc(expired)
        return expired

    async def maintain_once(self) -> None:
        # Expiry and pruning are the whole database's: one process of a cluster runs them.
        if self.ownership is None or self.ownership.leads():
            await self.expire()
            retained_since_ms = int((self._clock() - self._config.storage.retention) * 1000)
            removed = await self._store.prune(retained_since_ms=retained_since_ms)
            if removed:
                log.info("storage.pruned", rows=removed)
        # By the clock, not by traffic: a webhook failing for the whole retention is
        # disabled, and reminders keep coming, even when nothing new arrives.
        for worker in list(self.workers.values()):
            try:
                await worker.maintain()
            except LeaseLost:
                continue  # another process decides for that webhook now
            except StorageError:
                raise
            except Exception as error:  # one webhook's data never stops the daemon
                log.error(
                    "maintenance.worker_failed", webhook_id=worker.webhook.id, **crash_fields(error)
                )

    async def _maintain(self) -> None:
        while True:
            try:
                await self.maintain_once()
            except StorageError as error:
                log.error("maintenance.failed", error=error.message)
            await asyncio.sleep(MAINTENANCE_INTERVAL)

    async def stop(self, grace: float) -> None:
        """Stop every worker, letting requests in flight finish within ``grace``."""
        self._stopping = True
        restarts = list(self._restarts.values())
        for task in restarts:
            task.cancel()
        await asyncio.gather(*restarts, return_exceptions=True)
        if self._maintenance is not None:
            self._maintenance.cancel()
            # A loop that died has already been reported by the daemon, which watches it.
            await asyncio.gather(self._maintenance, return_exceptions=True)
            self._maintenance = None
        workers, self.workers = list(self.workers.values()), {}
        await asyncio.gather(*(worker.stop(grace) for worker in workers))
