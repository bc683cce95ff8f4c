"""A webhook's lease as its delivery worker holds it, when several processes share one
database (:mod:`almhookd.delivery.cluster` grants and renews it).

The lease ends at a time in the database server's clock; the worker reckons it on this
machine's monotonic clock, from the moment the renewal was *sent* (the server's time
is later than that, so the reckoning ends no later than the lease). A request goes out,
and goes on, only while :meth:`LeasePolicy.may_send` says so; a request still running
at that point is cut short (:meth:`LeaseHold.guard`), so a process that can no longer
renew has stopped sending before another process may take the webhook over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from almhookd.domain.ownership import Lease, LeasePolicy
from almhookd.errors import LeaseLost
from almhookd.storage.interface import Outbox

T = TypeVar("T")


class LeaseHold:
    """A lease this process holds: its fence, and until when it may send."""

    def __init__(
        self,
        lease: Lease,
        *,
        expires_at: float,
        policy: LeasePolicy,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease = lease
        #: the lease's end on the monotonic clock (a conservative reckoning)
        self.expires_at = expires_at
        self._policy = policy
        self._monotonic = monotonic
        self._changed = asyncio.Event()

    @property
    def webhook_id(self) -> str:
        return self.lease.webhook_id

    def renew(self, expires_at: float) -> None:
        self.expires_at = expires_at
        self._changed.set()

    def lose(self) -> None:
        """The lease is gone (taken over, released, or its webhook deleted): a request
        under way is cut short now."""
        self.expires_at = float("-inf")
        self._changed.set()

    @property
    def sendable(self) -> bool:
        return self._policy.may_send(
            expires_at_ms=_ms(self.expires_at), now_ms=_ms(self._monotonic())
        )

    def _lost(self) -> LeaseLost:
        return LeaseLost(
            f"webhook {self.webhook_id}: the lease (fence {self.lease.fence}) was not "
            "renewed in time; this process stops sending to it"
        )

    async def guard(self, send: Awaitable[T]) -> T:
        """Run ``send`` while the lease allows it; raise :class:`LeaseLost` when it does
        not (before the start, or cutting the request short)."""
        if not self.sendable:
            if asyncio.iscoroutine(send):
                send.close()
            raise self._lost()
        task = asyncio.ensure_future(send)
        try:
            while True:
                self._changed.clear()
                stop_in = (self.expires_at - self._policy.margin_ms / 1000) - self._monotonic()
                if stop_in <= 0:
                    raise self._lost()
                changed = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait(
                        {task, changed}, timeout=stop_in, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    changed.cancel()
                if task.done():
                    return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _ms(seconds: float) -> int:
    return -(2**62) if seconds == float("-inf") else int(seconds * 1000)


class Ownership(Protocol):
    """Which webhooks this process delivers to, when several share the database (the
    dispatcher asks; :class:`~almhookd.delivery.cluster.Cluster` answers)."""

    def hold_of(self, webhook_id: str) -> LeaseHold | None:
        """The lease held on ``webhook_id``, or ``None``: another process delivers."""
        ...

    def outbox_for(self, hold: LeaseHold) -> Outbox:
        """The webhook's outbox, fenced by ``hold``: a step after the lease was lost
        raises :class:`LeaseLost` and changes nothing."""
        ...

    def leads(self) -> bool:
        """Whether this process runs the batch flush and the maintenance pass."""
        ...

    def kick(self) -> None:
        """A webhook was created, changed or deleted through this process: look at the
        shares again now (its own notices do not come back to it)."""
        ...
