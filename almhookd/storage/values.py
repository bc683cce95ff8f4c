"""The values that cross the storage interface, the same for every backend.

States are ``Literal`` strings: they are what the admin API shows and what the SQLite
schema stores, so a backend never translates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from almhookd.domain.batching import RequestBatch
from almhookd.domain.ownership import Lease
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


@dataclass(frozen=True, kw_only=True, slots=True)
class Membership:
    """What a heartbeat learnt: the server's time, the live processes, the leases held."""

    now_ms: int
    live: tuple[str, ...]
    held: tuple[Lease, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessRecord:
    id: str
    host: str
    pid: int
    started_at_ms: int
    heartbeat_at_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterView:
    """The cluster as ``/v1/status`` shows it."""

    now_ms: int
    processes: tuple[ProcessRecord, ...]
    owners: dict[str, tuple[str, Lease]]  #: webhook id: (process id, lease)


#: What a notice between processes sharing a database says happened.
NoticeKind = Literal["events", "webhook", "flush"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Notice:
    """A wake-up from another process sharing the database."""

    kind: NoticeKind
    origin: str  #: the id of the process that sent it
    webhook_id: str | None = None
