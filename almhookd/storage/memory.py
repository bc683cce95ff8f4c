"""The in-memory backend: :class:`~almhookd.storage.interface.Storage` in dicts and lists.

For pure unit tests of the code above storage (workers, dispatcher, flusher, API), which
need no file and no thread, and for the storage contract suite
(``tests/integration/test_storage_contract.py``), which holds it to the behaviour of the
SQLite backend, the reference: the same return values and orders, id formats, states
and failures.

What it does not do: durability. Nothing survives the process, nor the instance: where
the interface says "durable" or "on disk", here it means "stored in this object". No I/O
and no threads: each method yields to the event loop once, as a call to a database
suspends, then runs to its end without awaiting, so each is one atomic transaction. A
call made before :meth:`MemoryStorage.close` completes; every call after it raises
:class:`~almhookd.errors.StorageClosed`. Values returned are built anew on each call
and share no mutable state with the store.

Where SQLite raises for a constraint (a second webhook of one name, a secret or an
attempt for a webhook that does not exist, an integer beyond 64 bits), this backend
raises :class:`~almhookd.errors.StorageError` too, so tests see the same failures.

Longer than this project's usual 600 lines: one method per operation of the interface
(30 of them), each keeping SQLite's exact semantics, and the values built field by field.
Split, one small backend would be spread over several modules for no reader's benefit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from almhookd.config import Secret
from almhookd.domain.batching import Claim, DueRow, EventColumns, RequestBatch, pack, request_batch
from almhookd.domain.events import NewEvent
from almhookd.domain.policy import Schedule
from almhookd.domain.signing import generate_secret
from almhookd.domain.webhooks import (
    AUTH_TYPES,
    STATUSES,
    NewWebhook,
    SigningSecret,
    Webhook,
    WebhookChanges,
    WebhookStatus,
)
from almhookd.errors import StorageClosed, StorageError, WebhookLimitReached
from almhookd.protocols import Clock
from almhookd.storage.interface import EventsCommitted, Storage
from almhookd.storage.values import (
    RESPONSE_EXCERPT_CHARS,
    AppendResult,
    Attempt,
    AttemptRecord,
    BacklogSummary,
    DeliveryRecord,
    DeliveryState,
    DeliveryStatus,
    ExpiredCount,
    StoredEvent,
)

#: What :attr:`MemoryStorage.schema_version` reports: there is no schema to migrate, and
#: 0 is no version of the SQLite schema (those count from 1).
MEMORY_SCHEMA_VERSION: Final = 0
#: The integers a database column holds; a larger one fails the append, as in SQLite.
_INT64: Final = range(-(2**63), 2**63)
#: The states a delivery is stored in; ``sending`` is only shown (membership of a batch).
_Stored = Literal["pending", "delivered", "expired"]
_Row = TypeVar("_Row")


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _limited(rows: list[_Row], limit: int) -> list[_Row]:
    """``LIMIT`` as SQL reads it: a negative limit is none."""
    return rows if limit < 0 else rows[:limit]


@dataclass(frozen=True, slots=True)
class _Event:
    seq: int
    ingested_at_ms: int
    new: NewEvent  #: as appended (immutable)

    def due_row(self) -> DueRow:
        new = self.new
        return (
            self.seq,
            new.event_id,
            new.account_id,
            self.ingested_at_ms,
            new.body,
            int(new.realtime),
        )


@dataclass(slots=True)
class _Delivery:
    state: _Stored
    due_at_ms: int | None  #: None: held for the batch flush
    attempts: int = 0
    batch_id: str | None = None  #: the batch that delivered it
    delivered_at_ms: int | None = None


@dataclass(slots=True)
class _Batch:
    webhook_id: str
    created_at_ms: int
    event_seqs: tuple[int, ...]
    state: Literal["sending", "delivered", "expired"] = "sending"
    attempts: int = 0


@dataclass(slots=True)
class _Secret:
    secret: str
    created_at_ms: int
    expires_at_ms: int | None = None


@dataclass(slots=True)
class _Webhook:
    id: str
    name: str
    description: str
    target_url: str
    auth_type: str
    auth_username: str | None
    auth_password: str | None
    contact_email: str
    status: WebhookStatus
    created_at_ms: int
    updated_at_ms: int
    events: frozenset[str]
    disabled_reason: str | None = None
    secrets: list[_Secret] = field(default_factory=list)
    consecutive_failures: int = 0
    failing_since_ms: int | None = None
    next_attempt_at_ms: int | None = None
    last_success_at_ms: int | None = None
    last_error: str | None = None
    last_reminder_at_ms: int | None = None

    def value(self) -> Webhook:
        return Webhook(
            id=self.id,
            name=self.name,
            description=self.description,
            target_url=self.target_url,
            auth_type=self.auth_type,
            auth_username=self.auth_username,
            auth_password=Secret(self.auth_password) if self.auth_password is not None else None,
            events=self.events,
            status=self.status,
            disabled_reason=self.disabled_reason,
            contact_email=self.contact_email,
            created_at_ms=self.created_at_ms,
            updated_at_ms=self.updated_at_ms,
            schedule=Schedule(
                consecutive_failures=self.consecutive_failures,
                failing_since=_seconds(self.failing_since_ms),
                next_attempt_at=_seconds(self.next_attempt_at_ms),
                last_success_at=_seconds(self.last_success_at_ms),
                last_error=self.last_error,
                last_reminder_at=_seconds(self.last_reminder_at_ms),
            ),
            secrets=tuple(
                SigningSecret(
                    secret=Secret(s.secret),
                    created_at_ms=s.created_at_ms,
                    expires_at_ms=s.expires_at_ms,
                )
                for s in sorted(self.secrets, key=lambda s: s.created_at_ms)
            ),
        )

    def clear_failures(self) -> None:
        """Re-enabled: the failure schedule starts afresh (the last success and error stay)."""
        self.consecutive_failures = 0
        self.failing_since_ms = self.next_attempt_at_ms = self.last_reminder_at_ms = None


def _constraint(what: str) -> StorageError:
    return StorageError(f"memory: {what}")


def _check_choice(column: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise _constraint(f"CHECK constraint failed: {column} IN {tuple(allowed)}")


class MemoryStorage:
    """Events, webhooks and delivery state in this process's memory (see the module)."""

    def __init__(self, *, clock: Clock, on_events_committed: EventsCommitted | None = None) -> None:
        self._clock = clock
        self._on_events_committed = on_events_committed
        self._closed = False
        self._events: dict[int, _Event] = {}  #: by seq, in ingest order
        self._seq_of: dict[str, int] = {}  #: event id -> seq
        self._webhooks: dict[str, _Webhook] = {}
        self._deliveries: dict[str, dict[int, _Delivery]] = {}  #: webhook id -> seq ->
        self._batches: dict[str, _Batch] = {}  #: by id, in the order recorded
        self._attempts: dict[int, tuple[str, AttemptRecord]] = {}  #: id -> (webhook, row)
        self._last_flush_ms: int | None = None

    @classmethod
    async def open(
        cls, *, clock: Clock, on_events_committed: EventsCommitted | None = None
    ) -> MemoryStorage:
        """A new, empty storage (the same as the constructor; for symmetry with SQLite)."""
        return cls(clock=clock, on_events_committed=on_events_committed)

    async def _enter(self) -> None:
        """Refuse a call once closed; else yield once, as a database call would."""
        if self._closed:
            raise StorageClosed()
        await asyncio.sleep(0)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _sending(self, webhook_id: str) -> dict[int, str]:
        """The events of the webhook's batches being sent: seq -> batch id."""
        sending: dict[int, str] = {}
        for batch_id, batch in self._batches.items():
            if batch.webhook_id == webhook_id and batch.state == "sending":
                for seq in batch.event_seqs:
                    sending.setdefault(seq, batch_id)
        return sending

    @staticmethod
    def _shown(
        seq: int, delivery: _Delivery, sending: dict[int, str]
    ) -> tuple[DeliveryStatus, str | None]:
        """The state and batch id the API shows (SQLite's ``delivery_states`` view)."""
        if delivery.state == "pending" and seq in sending:
            return "sending", delivery.batch_id or sending[seq]
        return delivery.state, delivery.batch_id

    def _columns(self, seqs: Sequence[int]) -> EventColumns:
        rows = [self._events[seq].due_row() for seq in seqs]
        ids, accounts, ingested, bodies = tuple(zip(*rows, strict=True))[1:5]
        return EventColumns(tuple(seqs), ids, accounts, ingested, bodies)

    # --- EventLog ----------------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent]) -> AppendResult:
        await self._enter()
        if any(e.account_id not in _INT64 or e.timestamp_ms not in _INT64 for e in events):
            raise _constraint("OverflowError: an integer beyond 64 bits")  # nothing stored
        now_ms = self._now_ms()
        subscribers: dict[str, list[str]] = {}
        for webhook in self._webhooks.values():
            if webhook.status == "active":
                for name in webhook.events:
                    subscribers.setdefault(name, []).append(webhook.id)
        seq = max(self._events, default=0)  # as SQLite's max(seq) + 1
        names: list[str] = []
        for event in events:
            if event.event_id in self._seq_of:
                continue
            seq += 1
            self._events[seq] = _Event(seq, now_ms, event)
            self._seq_of[event.event_id] = seq
            names.append(event.event_name)
            due = now_ms if event.realtime else None
            for webhook_id in subscribers.get(event.event_name, ()):
                self._deliveries[webhook_id][seq] = _Delivery(state="pending", due_at_ms=due)
        if names and self._on_events_committed is not None:
            self._on_events_committed()
        return AppendResult(
            accepted=len(names), duplicates=len(events) - len(names), accepted_names=tuple(names)
        )

    async def get_event(self, event_id: str) -> StoredEvent | None:
        await self._enter()
        seq = self._seq_of.get(event_id)
        if seq is None:
            return None
        event = self._events[seq]
        new = event.new
        states = []
        for webhook_id in sorted(self._deliveries):
            delivery = self._deliveries[webhook_id].get(seq)
            if delivery is not None:
                state, batch_id = self._shown(seq, delivery, self._sending(webhook_id))
                states.append(
                    DeliveryState(
                        webhook_id=webhook_id,
                        state=state,
                        attempts=delivery.attempts,
                        batch_id=batch_id,
                        delivered_at_ms=delivery.delivered_at_ms,
                    )
                )
        return StoredEvent(
            seq=event.seq,
            event_id=new.event_id,
            event_name=new.event_name,
            account_id=new.account_id,
            timestamp_ms=new.timestamp_ms,
            realtime=new.realtime,
            ingested_at_ms=event.ingested_at_ms,
            body=json.loads(new.body),
            deliveries=tuple(states),
        )

    async def count_events(self) -> int:
        await self._enter()
        return len(self._events)

    # --- Webhooks ----------------------------------------------------------------------

    def _check_name(self, name: str, webhook_id: str) -> None:
        if any(w.name == name and w.id != webhook_id for w in self._webhooks.values()):
            raise _constraint("UNIQUE constraint failed: webhooks.name")

    async def create_webhook(self, new: NewWebhook, *, max_webhooks: int | None = None) -> Webhook:
        await self._enter()
        webhook_id = "wh_" + secrets.token_hex(8)
        now_ms = self._now_ms()
        if max_webhooks is not None and len(self._webhooks) >= max_webhooks:
            raise WebhookLimitReached(max_webhooks)
        self._check_name(new.name, webhook_id)
        _check_choice("auth_type", new.auth_type, AUTH_TYPES)
        webhook = _Webhook(
            id=webhook_id,
            name=new.name,
            description=new.description,
            target_url=new.target_url,
            auth_type=new.auth_type,
            auth_username=new.auth_username,
            auth_password=new.auth_password.reveal() if new.auth_password else None,
            contact_email=new.contact_email,
            status="active" if new.active else "inactive",
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
            events=frozenset(new.events),
        )
        if new.auth_type == "signature":
            webhook.secrets.append(_Secret(generate_secret(), now_ms))
        self._webhooks[webhook_id] = webhook
        self._deliveries[webhook_id] = {}
        return webhook.value()

    async def list_webhooks(self) -> list[Webhook]:
        await self._enter()
        ordered = sorted(self._webhooks.values(), key=lambda w: (w.created_at_ms, w.id))
        return [webhook.value() for webhook in ordered]

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        await self._enter()
        webhook = self._webhooks.get(webhook_id)
        return webhook.value() if webhook is not None else None

    async def count_webhooks(self) -> int:
        await self._enter()
        return len(self._webhooks)

    async def name_taken(self, name: str, *, except_id: str | None = None) -> str | None:
        await self._enter()
        for webhook in self._webhooks.values():
            if webhook.name == name and webhook.id != (except_id or ""):
                return webhook.id
        return None

    async def update_webhook(self, webhook_id: str, changes: WebhookChanges) -> Webhook | None:
        await self._enter()
        now_ms = self._now_ms()
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            return None
        if changes.name is not None:
            self._check_name(changes.name, webhook_id)
        if changes.auth_type is not None:
            _check_choice("auth_type", changes.auth_type, AUTH_TYPES)
        webhook.updated_at_ms = now_ms
        for column in ("name", "description", "target_url", "contact_email"):
            if (value := getattr(changes, column)) is not None:
                setattr(webhook, column, value)
        if changes.auth_type is not None:
            basic = changes.auth_type == "basic"
            webhook.auth_type = changes.auth_type
            webhook.auth_username = changes.auth_username if basic else None
            password = changes.auth_password if basic else None
            webhook.auth_password = password.reveal() if password else None
        if changes.active is not None:
            webhook.status = "active" if changes.active else "inactive"
            webhook.disabled_reason = None
            if changes.active:
                webhook.clear_failures()
        if changes.events is not None:
            webhook.events = frozenset(changes.events)
        if changes.auth_type == "signature" and all(
            s.expires_at_ms is not None for s in webhook.secrets
        ):
            webhook.secrets.append(_Secret(generate_secret(), now_ms))
        return webhook.value()

    async def set_webhook_status(
        self, webhook_id: str, status: WebhookStatus, reason: str | None = None
    ) -> None:
        await self._enter()
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            return
        _check_choice("status", status, STATUSES)
        webhook.status, webhook.disabled_reason = status, reason
        webhook.updated_at_ms = self._now_ms()
        if status == "active":
            webhook.clear_failures()

    async def delete_webhook(self, webhook_id: str) -> bool:
        await self._enter()
        if self._webhooks.pop(webhook_id, None) is None:
            return False
        del self._deliveries[webhook_id]
        self._batches = {k: b for k, b in self._batches.items() if b.webhook_id != webhook_id}
        self._attempts = {k: a for k, a in self._attempts.items() if a[0] != webhook_id}
        return True

    async def rotate_secret(self, webhook_id: str, *, grace_ms: int) -> SigningSecret:
        await self._enter()
        now_ms = self._now_ms()
        secret = generate_secret()
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            raise _constraint("FOREIGN KEY constraint failed")
        ends = now_ms + grace_ms
        for old in webhook.secrets:
            if old.expires_at_ms is None or old.expires_at_ms > ends:
                old.expires_at_ms = ends
        # A second rotation within a millisecond still gets its own creation time.
        newest = max((s.created_at_ms for s in webhook.secrets), default=0)
        webhook.secrets.append(_Secret(secret, max(now_ms, newest + 1)))
        webhook.secrets = [
            s for s in webhook.secrets if s.expires_at_ms is None or s.expires_at_ms > now_ms
        ]
        # As SQLite returns it: the rotation time, which the stored creation time may
        # exceed by the millisecond above.
        return SigningSecret(secret=Secret(secret), created_at_ms=now_ms)

    async def replay(
        self,
        webhook_id: str,
        *,
        event_ids: Sequence[str] | None = None,
        since_ms: int | None = None,
        retained_since_ms: int,
        now_ms: int,
    ) -> int:
        await self._enter()
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            return 0
        if event_ids is not None:
            seqs = {self._seq_of[i] for i in event_ids if i in self._seq_of}
        else:
            since = since_ms or 0
            seqs = {seq for seq, e in self._events.items() if e.ingested_at_ms >= since}
        sending = self._sending(webhook_id)
        deliveries = self._deliveries[webhook_id]
        queued = 0
        for seq in sorted(seqs):
            event = self._events[seq]
            if (
                event.ingested_at_ms < retained_since_ms
                or event.new.event_name not in webhook.events
                or seq in sending
            ):
                continue
            delivery = deliveries.get(seq)
            if delivery is None:
                deliveries[seq] = _Delivery(state="pending", due_at_ms=now_ms)
            else:  # attempts and the time of an earlier delivery stay, as in SQLite
                delivery.state, delivery.due_at_ms, delivery.batch_id = "pending", now_ms, None
            queued += 1
        return queued

    async def deliveries(
        self, webhook_id: str, *, state: DeliveryStatus | None, limit: int, after_seq: int
    ) -> list[DeliveryRecord]:
        await self._enter()
        sending = self._sending(webhook_id)
        records: list[DeliveryRecord] = []
        for seq, delivery in sorted(self._deliveries.get(webhook_id, {}).items()):
            shown, batch_id = self._shown(seq, delivery, sending)
            if seq <= after_seq or (state is not None and shown != state):
                continue
            event = self._events[seq]
            records.append(
                DeliveryRecord(
                    seq=seq,
                    eventId=event.new.event_id,
                    eventName=event.new.event_name,
                    ingestedAt=event.ingested_at_ms,
                    state=shown,
                    attempts=delivery.attempts,
                    batchId=batch_id,
                    deliveredAt=delivery.delivered_at_ms,
                    dueAt=delivery.due_at_ms,
                )
            )
        return _limited(records, limit)

    async def attempts(
        self, webhook_id: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[AttemptRecord]:
        await self._enter()
        before = before_id if before_id is not None else 2**63 - 1
        rows = [
            row.copy()
            for attempt_id, (owner, row) in sorted(self._attempts.items(), reverse=True)
            if owner == webhook_id and attempt_id < before
        ]
        return _limited(rows, limit)

    async def backlog_summary(self, webhook_id: str) -> BacklogSummary:
        await self._enter()
        summary = BacklogSummary(realtime=0, batch=0, held=0, oldest=None)
        first: int | None = None
        for seq, delivery in self._deliveries.get(webhook_id, {}).items():
            if delivery.state != "pending":
                continue
            if self._events[seq].new.realtime:
                summary["realtime"] += 1
            else:
                summary["batch"] += 1
            if delivery.due_at_ms is None:
                summary["held"] += 1
            first = seq if first is None else min(first, seq)
        if first is not None:
            summary["oldest"] = self._events[first].ingested_at_ms
        return summary

    # --- Outbox ------------------------------------------------------------------------

    async def in_flight_batches(self, webhook_id: str) -> list[RequestBatch]:
        await self._enter()
        deliveries = self._deliveries.get(webhook_id, {})
        batches = []
        for batch_id, batch in self._batches.items():
            if batch.webhook_id != webhook_id or batch.state != "sending":
                continue
            seqs = sorted(
                seq
                for seq in set(batch.event_seqs)
                if (d := deliveries.get(seq)) is not None and d.state == "pending"
            )
            if not seqs:  # every event expired (or delivered) meanwhile: dissolved
                batch.state = "expired"
                continue
            batches.append(
                request_batch(
                    batch_id,
                    webhook_id,
                    self._columns(seqs),
                    created_at_ms=batch.created_at_ms,
                    attempts=batch.attempts,
                )
            )
        return batches

    def _claim(self, webhook_id: str, claim: Claim) -> list[RequestBatch]:
        if claim.batches <= 0:
            return []
        sending = self._sending(webhook_id)
        rows: list[DueRow] = []
        for seq, delivery in sorted(self._deliveries.get(webhook_id, {}).items()):
            event = self._events[seq]
            if (
                delivery.state == "pending"
                and delivery.due_at_ms is not None
                and delivery.due_at_ms <= claim.now_ms
                and event.ingested_at_ms >= claim.retained_since_ms
                and seq not in sending
            ):
                rows.append(event.due_row())
        unread = iter(_limited(rows, claim.batches * max(claim.max_events, claim.max_batch_events)))
        packed = pack(lambda size: list(itertools.islice(unread, size)), claim)
        batches = [
            request_batch("msg_" + uuid.uuid4().hex, webhook_id, events, created_at_ms=claim.now_ms)
            for events in packed
        ]
        for batch in batches:
            self._batches[batch.id] = _Batch(
                webhook_id=webhook_id, created_at_ms=claim.now_ms, event_seqs=batch.event_seqs
            )
        return batches

    async def claim_batches(self, webhook_id: str, claim: Claim) -> list[RequestBatch]:
        await self._enter()
        return self._claim(webhook_id, claim)

    async def record_attempts(
        self,
        webhook_id: str,
        attempts: Sequence[Attempt],
        *,
        schedule: Schedule,
        disable_reason: str | None = None,
        claim_next: Claim | None = None,
    ) -> list[RequestBatch]:
        await self._enter()
        now_ms = self._now_ms()
        webhook = self._webhooks.get(webhook_id)
        if attempts and webhook is None:  # the log's rows name their webhook
            raise _constraint("FOREIGN KEY constraint failed")
        attempt_id = max(self._attempts, default=0)
        for attempt in attempts:
            attempt_id += 1
            outcome = attempt.outcome
            self._attempts[attempt_id] = (
                webhook_id,
                AttemptRecord(
                    id=attempt_id,
                    batchId=attempt.batch.id,
                    startedAt=attempt.started_at_ms,
                    durationMs=outcome.duration_ms,
                    eventCount=len(attempt.batch.event_seqs),
                    status=outcome.status,
                    error=outcome.error,
                    responseBody=outcome.response_body[:RESPONSE_EXCERPT_CHARS],
                ),
            )
        delivered = [a.batch for a in attempts if a.outcome.ok]
        acknowledged = {batch.id for batch in delivered}
        for batch_id in {a.batch.id for a in attempts}:  # once each, as one UPDATE does
            stored = self._batches.get(batch_id)
            if stored is not None:
                stored.attempts += 1
                if batch_id in acknowledged:
                    stored.state = "delivered"
        deliveries = self._deliveries.get(webhook_id, {})
        for batch in delivered:
            for seq in batch.event_seqs:
                delivery = deliveries.get(seq)
                if delivery is not None and delivery.state == "pending":  # not expired
                    delivery.state, delivery.batch_id = "delivered", batch.id
                    delivery.delivered_at_ms = now_ms
                    delivery.attempts += 1
        for seq in {s for a in attempts if not a.outcome.ok for s in a.batch.event_seqs}:
            delivery = deliveries.get(seq)
            if delivery is not None and delivery.state == "pending":
                delivery.attempts += 1
        if webhook is not None:
            webhook.consecutive_failures = schedule.consecutive_failures
            webhook.failing_since_ms = _ms(schedule.failing_since)
            webhook.next_attempt_at_ms = _ms(schedule.next_attempt_at)
            webhook.last_success_at_ms = _ms(schedule.last_success_at)
            webhook.last_error = schedule.last_error
            webhook.last_reminder_at_ms = _ms(schedule.last_reminder_at)
            if disable_reason is not None:
                webhook.status, webhook.disabled_reason = "disabled", disable_reason
                webhook.updated_at_ms = now_ms
        return self._claim(webhook_id, claim_next) if claim_next is not None else []

    async def backlog(self, webhook_id: str) -> int:
        await self._enter()
        deliveries = self._deliveries.get(webhook_id, {}).values()
        return sum(1 for d in deliveries if d.state == "pending")

    async def next_due_ms(self, webhook_id: str, *, after_ms: int) -> int | None:
        await self._enter()
        return min(
            (
                d.due_at_ms
                for d in self._deliveries.get(webhook_id, {}).values()
                if d.state == "pending" and d.due_at_ms is not None and d.due_at_ms > after_ms
            ),
            default=None,
        )

    # --- Maintenance -------------------------------------------------------------------

    async def expire(self, *, retained_since_ms: int) -> list[ExpiredCount]:
        await self._enter()
        old = {seq for seq, e in self._events.items() if e.ingested_at_ms < retained_since_ms}
        counts: dict[str, int] = {}
        for webhook_id in sorted(self._deliveries):
            deliveries = self._deliveries[webhook_id]
            expired = [d for seq, d in deliveries.items() if d.state == "pending" and seq in old]
            if expired:
                counts[webhook_id] = len(expired)
        if not counts:
            return []
        for batch in self._batches.values():  # dissolved: the others are claimed anew
            if (
                batch.webhook_id in counts
                and batch.state == "sending"
                and not old.isdisjoint(batch.event_seqs)
            ):
                batch.state = "expired"
        for deliveries in self._deliveries.values():
            for seq, delivery in deliveries.items():
                if delivery.state == "pending" and seq in old:
                    delivery.state = "expired"
        return [ExpiredCount(webhook_id=w, events=n) for w, n in counts.items()]

    async def prune(self, *, retained_since_ms: int) -> int:
        await self._enter()
        old = [seq for seq, e in self._events.items() if e.ingested_at_ms < retained_since_ms]
        for seq in old:
            del self._seq_of[self._events.pop(seq).new.event_id]
            for deliveries in self._deliveries.values():
                deliveries.pop(seq, None)
        finished = [
            batch_id
            for batch_id, batch in self._batches.items()
            if batch.created_at_ms < retained_since_ms and batch.state != "sending"
        ]
        for batch_id in finished:
            del self._batches[batch_id]
        logged = [
            k for k, (_, row) in self._attempts.items() if row["startedAt"] < retained_since_ms
        ]
        for attempt_id in logged:
            del self._attempts[attempt_id]
        return len(old) + len(finished) + len(logged)

    async def release_held(self, *, now_ms: int) -> dict[str, int]:
        await self._enter()
        counts: dict[str, int] = {}
        for webhook_id in sorted(self._deliveries):
            held = [
                d
                for d in self._deliveries[webhook_id].values()
                if d.state == "pending" and d.due_at_ms is None
            ]
            for delivery in held:
                delivery.due_at_ms = now_ms
            if held:
                counts[webhook_id] = len(held)
        self._last_flush_ms = now_ms
        return counts

    async def last_flush_ms(self) -> int | None:
        await self._enter()
        return self._last_flush_ms

    async def held_backlog(self, webhook_id: str) -> int:
        await self._enter()
        deliveries = self._deliveries.get(webhook_id, {}).values()
        return sum(1 for d in deliveries if d.state == "pending" and d.due_at_ms is None)

    # --- Health ------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return MEMORY_SCHEMA_VERSION

    async def check(self) -> None:
        await self._enter()

    async def ping(self) -> None:
        await self._enter()

    async def probe_space(self) -> None:
        await self._enter()

    async def close(self) -> None:
        self._closed = True


#: The static proof that the class provides the whole interface (checked by mypy).
_check: type[Storage] = MemoryStorage
