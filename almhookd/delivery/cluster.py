"""This process's part in a cluster: several almhookd processes on one database.

Every ``renew_ms`` (and at once when a webhook is created, changed or archived
anywhere) the cluster loop beats: it says this process lives and renews its leases in
one transaction, learns which processes live, and brings its leases in line with its
share (:func:`~almhookd.domain.ownership.share_of`): it takes the free or expired
leases of the webhooks it should deliver to, and hands over those it should not (the
worker finishes its request, then the lease is released, so the next owner starts at
its next beat). The dispatcher runs a worker for each lease held, on an outbox fenced
by it; a lease not renewed is lost, and its worker stops.

The other processes' commits reach the workers as notices (``LISTEN``): new events
wake every worker, a webhook change refreshes that webhook's worker, a flush wakes
them all. While the listening connection is down the beat wakes every worker instead,
and listens again; nothing else polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable

import structlog

from almhookd.delivery.dispatcher import Dispatcher
from almhookd.delivery.lease import LeaseHold
from almhookd.domain.ownership import Lease, LeasePolicy, leader_of, share_of
from almhookd.errors import StorageError
from almhookd.storage.interface import Outbox, SharedStorage
from almhookd.storage.values import ClusterView, Notice

log = structlog.get_logger("almhookd.cluster")


class Cluster:
    """The membership loop of one process (:class:`~almhookd.delivery.lease.Ownership`
    for its dispatcher)."""

    def __init__(
        self,
        *,
        store: SharedStorage,
        dispatcher: Dispatcher,
        policy: LeasePolicy,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self.policy = policy
        self._monotonic = monotonic
        self.process_id = store.process_id
        #: the leases held, by webhook id
        self.holds: dict[str, LeaseHold] = {}
        #: the live processes as the last beat found them (this one among them)
        self.live: tuple[str, ...] = ()
        #: webhooks being handed over: their worker finishes, then the lease goes (the
        #: lease is renewed meanwhile, so the request is not cut short)
        self._handovers: dict[str, tuple[LeaseHold, asyncio.Task[None]]] = {}
        self._refreshes: set[asyncio.Task[None]] = set()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.beats = 0  #: beats done (tests wait on it)

    # --- Ownership, for the dispatcher --------------------------------------------------

    def hold_of(self, webhook_id: str) -> LeaseHold | None:
        return self.holds.get(webhook_id)

    def outbox_for(self, hold: LeaseHold) -> Outbox:
        return self._store.fenced_outbox(self.process_id, hold.lease)

    def leads(self) -> bool:
        # Nobody leads before its first beat: processes starting together would each
        # run the flush and the maintenance pass.
        return bool(self.live) and leader_of(self.live) == self.process_id

    async def view(self) -> ClusterView:
        """The cluster as the database records it now (``/v1/status``)."""
        return await self._store.cluster_view(dead_after_ms=self.policy.dead_after_ms)

    # --- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Join, listen, take this process's share, and beat from now on."""
        await self._store.join(self.process_id, host=socket.gethostname(), pid=os.getpid())
        log.info("cluster.joined", process=self.process_id)
        await self._listen()
        await self.beat()
        self._task = asyncio.create_task(self._run(), name="almhookd-cluster")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The beat loop, which the daemon watches: should it end, the daemon stops."""
        return self._task

    def kick(self) -> None:
        """Beat soon: a webhook was created, changed or archived."""
        self._kick.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.policy.renew_ms / 1000)
            self._kick.clear()
            try:
                await self.beat()
            except StorageError as error:
                log.error("cluster.beat_failed", error=error.message)

    async def beat(self) -> None:
        """Renew, learn who lives, and take or hand over leases to match the share."""
        self.beats += 1
        sent_at = self._monotonic()
        # The heartbeat first: nothing slower (listening again, a worker's stop) may
        # hold back the renewals.
        membership = await self._store.heartbeat(
            self.process_id,
            lease_ms=self.policy.lease_ms,
            dead_after_ms=self.policy.dead_after_ms,
        )
        renewed = {lease.webhook_id: lease for lease in membership.held}
        lost: list[LeaseHold] = []
        tracked = set()
        for hold in [*self.holds.values(), *(hold for hold, _ in self._handovers.values())]:
            tracked.add(hold.webhook_id)
            lease = renewed.get(hold.webhook_id)
            if lease is not None and lease.fence == hold.lease.fence:
                hold.renew(sent_at + (lease.expires_at_ms - membership.now_ms) / 1000)
            elif self.holds.get(hold.webhook_id) is hold:
                del self.holds[hold.webhook_id]
                hold.lose()
                lost.append(hold)
            else:
                hold.lose()  # being handed over: its request is cut short
        self.live = membership.live
        for lease in membership.held:
            if lease.webhook_id not in tracked:
                # Held in the database but by no worker here (an acquire whose answer
                # was lost, a release that failed): the heartbeat would renew it for
                # ever, keeping its next owner out.
                await self._attempt(self._store.release(self.process_id, lease))
        for hold in lost:
            log.warning("cluster.lease_lost", webhook_id=hold.webhook_id, fence=hold.lease.fence)
            await self._attempt(self._dispatcher.refresh(hold.webhook_id))
        if not self._store.listening:
            self._dispatcher.wake_all()  # the fallback while no notice can come
            await self._attempt(self._listen())
        else:
            await self._attempt(self._store.check_listener())
        webhooks = [webhook.id for webhook in await self._store.list_webhooks() if webhook.active]
        mine = share_of(self.process_id, webhooks, self.live)
        for webhook_id, hold in list(self.holds.items()):
            if webhook_id not in mine and webhook_id not in self._handovers:
                del self.holds[webhook_id]
                self._handovers[webhook_id] = (
                    hold,
                    asyncio.create_task(
                        self._hand_over(hold), name=f"almhookd-handover-{webhook_id}"
                    ),
                )
        for webhook_id in sorted(mine - self.holds.keys() - self._handovers.keys()):
            sent_at = self._monotonic()
            try:
                lease = await self._store.acquire(
                    self.process_id, webhook_id, lease_ms=self.policy.lease_ms
                )
            except StorageError as error:  # deleted meanwhile, or the database is down
                log.warning("cluster.acquire_failed", webhook_id=webhook_id, error=error.message)
                continue
            if lease is not None:
                await self._took(lease, expires_at=sent_at + self.policy.lease_ms / 1000)
        for webhook_id in self.holds.keys() - self._dispatcher.workers.keys():
            if webhook_id not in self._handovers:
                # Its worker stopped (a lease that ran out locally, then renewed after
                # all): start it again.
                await self._attempt(self._dispatcher.refresh(webhook_id))

    async def _attempt(self, step: Awaitable[None]) -> None:
        """A step of the beat whose failure must not stop the rest of it (logged; the
        next beat tries again)."""
        try:
            await step
        except StorageError as error:
            log.error("cluster.step_failed", error=error.message)

    async def _took(self, lease: Lease, *, expires_at: float) -> None:
        self.holds[lease.webhook_id] = LeaseHold(
            lease, expires_at=expires_at, policy=self.policy, monotonic=self._monotonic
        )
        log.info("cluster.lease_taken", webhook_id=lease.webhook_id, fence=lease.fence)
        await self._dispatcher.refresh(lease.webhook_id)

    async def _hand_over(self, hold: LeaseHold) -> None:
        """Stop the worker (its request finishes), then release the lease."""
        webhook_id = hold.webhook_id
        try:
            await self._dispatcher.refresh(webhook_id)
            await self._store.release(self.process_id, hold.lease)
            log.info("cluster.lease_released", webhook_id=webhook_id, fence=hold.lease.fence)
        except StorageError as error:
            # The lease runs out by itself: the next owner waits for that instead.
            log.error("cluster.release_failed", webhook_id=webhook_id, error=error.message)
        finally:
            hold.lose()
            if self._handovers.get(webhook_id, (None, None))[1] is asyncio.current_task():
                del self._handovers[webhook_id]

    # --- notices -------------------------------------------------------------------------

    async def _listen(self) -> None:
        await self._store.listen(self._heard, self._deaf)
        # Whatever was committed while no notice could come is looked at now.
        self._dispatcher.wake_all()

    def _heard(self, notice: Notice) -> None:
        if self._stopping:
            return
        if notice.kind == "webhook" and notice.webhook_id is not None:
            if notice.webhook_id in self.holds:
                webhook_id = notice.webhook_id
                task = asyncio.get_running_loop().create_task(
                    self._refresh(webhook_id), name=f"almhookd-refresh-{webhook_id}"
                )
                self._refreshes.add(task)
                task.add_done_callback(self._refreshes.discard)
            self.kick()  # created, archived or deleted: the shares change
        else:
            self._dispatcher.wake_all()

    async def _refresh(self, webhook_id: str) -> None:
        try:
            await self._dispatcher.refresh(webhook_id)
        except StorageError as error:
            log.error("cluster.refresh_failed", webhook_id=webhook_id, error=error.message)

    def _deaf(self) -> None:
        log.warning("cluster.listen_lost", hint="listening again at the next beat")
        if not self._stopping:
            self.kick()

    async def stop(self, grace: float) -> None:
        """Stop beating, stop the workers (requests finish within ``grace``), then give
        every lease up and leave, so the others take over at once. Idempotent."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        handovers = [task for _, task in self._handovers.values()]
        await asyncio.gather(*handovers, *self._refreshes, return_exceptions=True)
        await self._dispatcher.stop(grace)
        for hold in self.holds.values():
            hold.lose()
        self.holds.clear()
        try:
            await self._store.leave(self.process_id)
        except StorageError as error:
            log.error("cluster.leave_failed", error=error.message)
        else:
            log.info("cluster.left", process=self.process_id)
