"""The storage interface: what the rest of almhookd asks of a database, split by caller.

Each caller sees only its part: the delivery worker its :class:`Outbox`, ingest the
:class:`EventLog`, the admin API and the dispatcher the :class:`Webhooks`, the
maintenance pass and the batch flusher the :class:`Maintenance`, ``/healthz`` and the
watchdog the :class:`Health`. A backend implements :class:`Storage`, all of them; the
docstrings state the guarantees every backend keeps, and the storage contract tests
(``tests/integration/test_storage_contract.py``) hold each backend to them.

Every failure of the database itself is raised as :class:`~almhookd.errors.StorageError`
or one of its family (``StorageFull``, ``StorageClosed``, ``DatabaseInUse``): a backend
maps its driver's errors, and callers never see a driver's exception.

Times are epoch milliseconds. A backend reads its clock (passed in when it is opened)
only for the times it records itself (ingest, attempts, webhook changes); the decisions
of when something is due come from the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from almhookd.domain.batching import Claim, RequestBatch
from almhookd.domain.events import NewEvent
from almhookd.domain.ownership import Lease
from almhookd.domain.policy import Schedule
from almhookd.domain.webhooks import (
    NewWebhook,
    SigningSecret,
    Webhook,
    WebhookChanges,
    WebhookStatus,
)
from almhookd.storage.values import (
    AppendResult,
    Attempt,
    AttemptRecord,
    BacklogSummary,
    ClusterView,
    DeliveryRecord,
    DeliveryStatus,
    ExpiredCount,
    Membership,
    Notice,
    StoredEvent,
)

#: Called by a backend after each ingest commit that stored new events (before it is
#: durable, so that delivery overlaps the flush to disk): wakes the delivery workers.
#: Passed in when the storage is opened.
EventsCommitted = Callable[[], None]


class Outbox(Protocol):
    """One webhook's queue of deliveries, as its delivery worker (the only caller for
    that webhook) sees it."""

    async def in_flight_batches(self, webhook_id: str) -> list[RequestBatch]:
        """The batches recorded as being sent, oldest first, with their ids and attempt
        counts: after a crash they are sent again, before anything new is claimed.

        A batch whose every event expired is dissolved and not returned."""
        ...

    async def claim_batches(self, webhook_id: str, claim: Claim) -> list[RequestBatch]:
        """Pack the next due deliveries into up to ``claim.batches`` request batches
        (:func:`~almhookd.domain.batching.pack`), in ingest order, skipping those in a
        batch being sent. Claimed batches are recorded as sending before this returns,
        so a crash after it sends them again, under the same ids. Events ingested before
        ``claim.retained_since_ms`` are left for expiry."""
        ...

    async def record_attempts(
        self,
        webhook_id: str,
        attempts: Sequence[Attempt],
        *,
        schedule: Schedule,
        disable_reason: str | None = None,
        claim_next: Claim | None = None,
    ) -> list[RequestBatch]:
        """Atomically: log the attempts in order; mark each acknowledged batch and its
        pending deliveries delivered (a delivery expired meanwhile stays expired); count
        an attempt on the others; store the webhook's ``schedule``; with
        ``disable_reason``, disable the webhook. With ``claim_next``, claim the next
        batches in the same transaction and return them (else ``[]``).

        Not durable against a power cut (a crash of the process is fine): losing it only
        sends a batch again, under the same id."""
        ...

    async def backlog(self, webhook_id: str) -> int:
        """Deliveries of this webhook neither delivered nor expired (held ones too)."""
        ...

    async def next_due_ms(self, webhook_id: str, *, after_ms: int) -> int | None:
        """The earliest due time later than ``after_ms`` among this webhook's pending
        deliveries (held ones have none), or ``None``. A worker whose claim found nothing
        asks when processes share the database: a delivery written in the clock of a
        process ahead of its own is due later by its clock, so it looks again then
        instead of waiting for the next wake."""
        ...


class EventLog(Protocol):
    """The events, as ingest stores them and the API reads them back."""

    async def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Store the events and, in the same transaction, give every active webhook
        subscribed to an event's name a pending delivery: real-time events due at once,
        non-real-time ones held for the batch flush. Atomic: all or none.

        Returns only once the events are durable (on disk: they survive a power cut).
        An ``event_id`` stored already, or repeated within the call, is a duplicate and
        is not stored again. The ``EventsCommitted`` callback runs when the transaction
        commits, possibly before it is durable."""
        ...

    async def get_event(self, event_id: str) -> StoredEvent | None:
        """The event with its delivery state per webhook (sorted by webhook id), read
        as one snapshot; ``None`` once pruned or never stored."""
        ...

    async def count_events(self) -> int: ...


class Webhooks(Protocol):
    """The webhooks and their signing secrets, the admin's view of their deliveries,
    and replay. Every change is atomic and durable before it returns."""

    async def create_webhook(self, new: NewWebhook, *, max_webhooks: int | None = None) -> Webhook:
        """Store a webhook (a ``signature`` one with its first signing secret) and return
        it as stored. With ``max_webhooks``, raise ``WebhookLimitReached`` when that many
        exist: counted in the transaction that inserts, so parallel creates cannot all
        pass it."""
        ...

    async def list_webhooks(self) -> list[Webhook]:
        """Every webhook, oldest first, read as one snapshot."""
        ...

    async def get_webhook(self, webhook_id: str) -> Webhook | None: ...

    async def count_webhooks(self) -> int: ...

    async def name_taken(self, name: str, *, except_id: str | None = None) -> str | None:
        """The id of another webhook with this name, if any."""
        ...

    async def update_webhook(self, webhook_id: str, changes: WebhookChanges) -> Webhook | None:
        """Apply a ``PATCH`` and return the webhook as changed (``None``: no such one).

        ``active: false`` archives (``inactive``); ``active: true`` re-enables an
        archived or disabled webhook and clears its failure schedule. Switching to
        signature auth makes a secret when the webhook has none in force."""
        ...

    async def set_webhook_status(
        self, webhook_id: str, status: WebhookStatus, reason: str | None = None
    ) -> None:
        """Archive (``inactive``), disable (``disabled``, with a reason) or re-enable
        (``active``, which clears the failure schedule)."""
        ...

    async def delete_webhook(self, webhook_id: str) -> bool:
        """Delete the webhook with its subscriptions, secrets and deliveries; ``False``
        when there was none."""
        ...

    async def rotate_secret(self, webhook_id: str, *, grace_ms: int) -> SigningSecret:
        """A new signing secret; the ones in force keep signing for ``grace_ms`` (never
        longer than they already would), and those past their end are removed."""
        ...

    async def replay(
        self,
        webhook_id: str,
        *,
        event_ids: Sequence[str] | None = None,
        since_ms: int | None = None,
        retained_since_ms: int,
        now_ms: int,
    ) -> int:
        """Queue retained events again for one webhook, due at ``now_ms``: by ids, or
        those ingested since ``since_ms``. Only events of names the webhook subscribes
        to, retained (ingested at or after ``retained_since_ms``), and not in a batch
        being sent. Returns how many deliveries were queued."""
        ...

    async def deliveries(
        self, webhook_id: str, *, state: DeliveryStatus | None, limit: int, after_seq: int
    ) -> list[DeliveryRecord]:
        """Per-event delivery state in ingest order, after the cursor ``after_seq``."""
        ...

    async def attempts(
        self, webhook_id: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[AttemptRecord]:
        """The request log, newest first, before the cursor ``before_id``."""
        ...

    async def backlog_summary(self, webhook_id: str) -> BacklogSummary:
        """Outstanding deliveries by kind (``held`` of the batch ones waiting for the
        flush), and the ingest time of the first outstanding one in ingest order."""
        ...


class Maintenance(Protocol):
    """Retention and the batch flush: the maintenance pass and the flusher."""

    async def expire(self, *, retained_since_ms: int) -> list[ExpiredCount]:
        """Mark pending deliveries of events ingested before ``retained_since_ms``
        expired, and return how many per webhook (for the log and the counter). A batch
        being sent that holds such an event is dissolved: its other events become
        claimable again, under a new batch id."""
        ...

    async def prune(self, *, retained_since_ms: int) -> int:
        """Delete events, finished batches and attempts older than the retention, in
        short transactions; returns the rows removed. Run after :meth:`expire`."""
        ...

    async def release_held(self, *, now_ms: int) -> dict[str, int]:
        """The batch flush: every held delivery becomes due at ``now_ms``, and the flush
        time is recorded in the same transaction (durable), so a restart neither skips
        nor repeats a flush. Returns the released count per webhook."""
        ...

    async def last_flush_ms(self) -> int | None:
        """When :meth:`release_held` last ran, or ``None``."""
        ...

    async def held_backlog(self, webhook_id: str) -> int:
        """Deliveries of this webhook held for the next flush."""
        ...


class Health(Protocol):
    """Whether storage works, for ``/healthz``, the watchdog and shutdown."""

    @property
    def schema_version(self) -> int: ...

    async def check(self) -> None:
        """Raise ``StorageError`` unless storage reads, and takes a write within about a
        second (a database another process holds locked reads fine and writes nothing).
        Polling it never queues more than one write probe."""
        ...

    async def ping(self) -> None:
        """An empty write: proves the writer is not wedged (the watchdog's test). Fails
        for good once storage can no longer make anything durable."""
        ...

    async def probe_space(self) -> None:
        """A write that needs room: raises ``StorageFull`` while there is none."""
        ...

    async def close(self) -> None:
        """Make what was acknowledged durable and release the database. Safe to call
        more than once."""
        ...


class Storage(Outbox, EventLog, Webhooks, Maintenance, Health, Protocol):
    """Everything a backend provides; what the daemon opens."""


class SharedStorage(Storage, Protocol):
    """A backend several processes share (PostgreSQL): their membership, the leases
    that say which process delivers to which webhook, and the notices between them.
    Lease times are the server's clock, so machines whose clocks differ agree."""

    #: this process's id among those sharing the database, random at each start
    process_id: str

    async def join(self, process_id: str, *, host: str, pid: int) -> None: ...

    async def heartbeat(self, process_id: str, *, lease_ms: int, dead_after_ms: int) -> Membership:
        """Say this process lives, renew its unexpired leases by ``lease_ms``, and list
        the processes heard from within ``dead_after_ms``."""
        ...

    async def acquire(self, process_id: str, webhook_id: str, *, lease_ms: int) -> Lease | None:
        """Take the webhook's lease if it is free or expired, with a new fence."""
        ...

    async def release(self, process_id: str, lease: Lease) -> None: ...

    async def leave(self, process_id: str) -> None:
        """Release every lease of this process and forget it (a clean stop)."""
        ...

    def fenced_outbox(self, process_id: str, lease: Lease) -> Outbox:
        """The webhook's outbox whose every step checks the lease in its transaction."""
        ...

    async def listen(
        self, on_notice: Callable[[Notice], None], on_lost: Callable[[], None]
    ) -> None:
        """Hear the other processes' notices until close; ``on_lost`` when that stops."""
        ...

    @property
    def listening(self) -> bool: ...

    async def check_listener(self) -> None:
        """Raise ``StorageError`` (and stop listening) unless the listening connection
        answers at once."""
        ...

    async def cluster_view(self, *, dead_after_ms: int) -> ClusterView: ...
