"""The values that cross the storage interface, the same for every backend.

States are ``Literal`` strings: they are what the admin API shows and what the SQLite
schema stores, so a backend never translates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from almhookd.domain.batching import RequestBatch
from almhookd.domain.policy import Outcome

#: A delivery of one event to one webhook, as the admin sees it: waiting (due now, later,
#: or held for the batch flush), in a batch being sent, acknowledged by a 2xx, or given
#: up at the end of the retention. Backends store the three others; ``sending`` is the
#: membership of a pending delivery in a batch recorded as sending.
DeliveryStatus = Literal["pending", "sending", "delivered", "expired"]
#: A request batch: recorded before it is sent and until acknowledged; dissolved when
#: one of its events expired in flight (its other events are packed again).
BatchStatus = Literal["sending", "delivered", "expired"]


@dataclass(frozen=True, kw_only=True, slots=True)
class AppendResult:
    accepted: int
    duplicates: int
    accepted_names: tuple[str, ...] = ()  #: the eventName of each accepted event


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryState:
    webhook_id: str
    state: DeliveryStatus
    attempts: int
    batch_id: str | None
    delivered_at_ms: int | None


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredEvent:
    seq: int
    event_id: str
    event_name: str
    account_id: int
    timestamp_ms: int
    realtime: bool
    ingested_at_ms: int
    body: dict[str, Any]
    deliveries: tuple[DeliveryState, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Attempt:
    """One HTTP attempt of a request batch, to be logged."""

    batch: RequestBatch
    outcome: Outcome
    started_at_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ExpiredCount:
    webhook_id: str
    events: int


#: Bytes of a receiver's answer kept in the attempts log.
RESPONSE_EXCERPT_CHARS = 4096


# The admin API's read models, in the API's own keys (it sends them as they are).
class DeliveryRecord(TypedDict):
    seq: int
    eventId: str
    eventName: str
    ingestedAt: int
    state: DeliveryStatus
    attempts: int
    batchId: str | None
    deliveredAt: int | None
    dueAt: int | None


class AttemptRecord(TypedDict):
    id: int
    batchId: str
    startedAt: int
    durationMs: int
    eventCount: int
    status: int | None
    error: str | None
    responseBody: str


class BacklogSummary(TypedDict):
    """A webhook's outstanding deliveries: real-time, batch (``held`` of them waiting
    for the flush), and the ingest time of the oldest (None: nothing outstanding)."""

    realtime: int
    batch: int
    held: int
    oldest: int | None
