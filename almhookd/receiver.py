"""The subscriber's toolkit: verify, parse, de-duplicate and order what almhookd sends.

Import it in a receiving service without starting the daemon; it needs nothing beyond
almhookd's own dependencies (aiohttp only for :func:`make_handler`). It implements the
platform's guidance for subscribers:

1. after a ``LEARNER_PROGRESS``, later enrolment events of that learner are ignored;
2. a ``LEARNER_PROGRESS`` after a completion is ignored;
3. otherwise an event older (by ``timestamp``) than the newest processed one for the
   learner's record (``userId`` + ``loInstanceId``) is stale;
4. a known ``eventId`` is a duplicate.

Each decision is a value saying what to do and why.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final, Protocol

from almhookd.errors import AlmhookdError

DEFAULT_TOLERANCE_SECONDS: Final = 300
PROGRESS: Final = "LEARNER_PROGRESS"
ENROLMENTS: Final = frozenset(
    {
        "COURSE_ENROLLMENT",
        "COURSE_ENROLLMENT_BATCH",
        "LEARNING_PATH_ENROLLMENT",
        "LEARNING_PATH_ENROLLMENT_BATCH",
        "CERTIFICATION_ENROLLMENT",
        "CERTIFICATION_ENROLLMENT_BATCH",
    }
)
COMPLETIONS: Final = frozenset(
    {
        "COURSE_COMPLETED",
        "COURSE_COMPLETED_BATCH",
        "LEARNING_PATH_COMPLETED",
        "LEARNING_PATH_COMPLETED_BATCH",
        "CERTIFICATION_COMPLETED",
        "CERTIFICATION_COMPLETED_BATCH",
    }
)


class VerificationFailed(AlmhookdError):
    """The request is not a genuine delivery."""


# --- verification -------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise VerificationFailed(f"missing {name} header")


def verify_signature(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Check a Standard Webhooks signature; raise :class:`VerificationFailed` if wrong.

    ``secrets``: the ``whsec_`` secrets the receiver trusts (two during a rotation). A
    timestamp further than ``tolerance`` seconds from ``now`` is refused (replays).
    """
    message_id = _header(headers, "webhook-id")
    timestamp_text = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise VerificationFailed("webhook-timestamp is not a number") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise VerificationFailed(
            f"webhook-timestamp is {int(now - timestamp)} s from now (tolerance {tolerance:g} s)"
        )
    signed = f"{message_id}.{timestamp}.".encode() + body
    offered = [s.partition(",")[2] for s in signatures.split() if s.startswith("v1,")]
    matched = False
    for secret in secrets:
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise VerificationFailed("a configured secret is not whsec_ + base64") from None
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for signature in offered:  # every comparison runs: timing says nothing
            matched |= hmac.compare_digest(signature.encode(), expected.encode())
    if not matched:
        raise VerificationFailed("no valid signature")


def verify_basic(headers: Mapping[str, str], *, username: str, password: str) -> None:
    """Check HTTP Basic credentials in constant time."""
    try:
        scheme, _, encoded = _header(headers, "authorization").partition(" ")
    except VerificationFailed:
        raise VerificationFailed("missing Authorization header") from None
    expected = base64.b64encode(f"{username}:{password}".encode()).decode()
    if scheme.lower() != "basic" or not hmac.compare_digest(
        encoded.strip().encode(), expected.encode()
    ):
        raise VerificationFailed("wrong Basic credentials")


# --- the payload --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ReceivedEvent:
    event_id: str
    event_name: str
    timestamp: int
    event_info: str
    data: Mapping[str, Any]

    @property
    def record(self) -> tuple[Any, Any] | None:
        """The learner's record (``userId``, ``loInstanceId``), if the event has one."""
        if "userId" in self.data and "loInstanceId" in self.data:
            return (self.data["userId"], self.data["loInstanceId"])
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Payload:
    account_id: int
    events: tuple[ReceivedEvent, ...]


def parse_payload(body: bytes) -> Payload:
    """The ALM payload ``{"accountId", "events": [...]}`` as typed values."""
    try:
        document = json.loads(body)
        return Payload(
            account_id=int(document["accountId"]),
            events=tuple(
                ReceivedEvent(
                    event_id=str(e["eventId"]),
                    event_name=str(e["eventName"]),
                    timestamp=int(e["timestamp"]),
                    event_info=str(e.get("eventInfo", "")),
                    data=dict(e["data"]),
                )
                for e in document["events"]
            ),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise VerificationFailed(f"not an ALM payload: {error}") from None


# --- de-duplication -----------------------------------------------------------------


class Deduplicator(Protocol):
    def first_time(self, event_id: str) -> bool:
        """Record ``event_id``; ``True`` if it was not seen before."""


class MemoryDeduplicator:
    """The last ``capacity`` event ids, in memory."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, event_id: str) -> bool:
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            return False
        self._seen[event_id] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


class SqliteDeduplicator:
    """Event ids in a SQLite file, so de-duplication survives restarts."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY) WITHOUT ROWID"
        )

    def first_time(self, event_id: str) -> bool:
        cursor = self._db.execute("INSERT OR IGNORE INTO seen (event_id) VALUES (?)", (event_id,))
        return cursor.rowcount == 1

    def close(self) -> None:
        self._db.close()


# --- ordering -----------------------------------------------------------------------


class Action(Enum):
    PROCESS = "process"
    DUPLICATE = "duplicate"
    STALE = "stale"
    SUPERSEDED = "superseded"


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    action: Action
    reason: str

    @property
    def process(self) -> bool:
        return self.action is Action.PROCESS


@dataclass(kw_only=True, slots=True)
class RecordState:
    """What the guard knows of one learner's record."""

    newest_timestamp: int | None = None
    progress_seen: bool = False
    completed: bool = False


@dataclass(kw_only=True)
class OrderingGuard:
    """The platform's ordering rules, per learner record (``userId`` + ``loInstanceId``)."""

    deduplicator: Deduplicator = field(default_factory=MemoryDeduplicator)
    records: dict[tuple[Any, Any], RecordState] = field(default_factory=dict)

    def decide(self, event: ReceivedEvent) -> Decision:
        if not self.deduplicator.first_time(event.event_id):
            return Decision(action=Action.DUPLICATE, reason=f"eventId {event.event_id} seen")
        key = event.record
        if key is None:  # catalogue events without a learner: nothing to order
            return Decision(action=Action.PROCESS, reason="no learner record")
        state = self.records.setdefault(key, RecordState())
        name = event.event_name
        if name == PROGRESS:
            state.progress_seen = True
            if state.completed:
                return Decision(
                    action=Action.SUPERSEDED, reason="progress after the completion is ignored"
                )
            return Decision(action=Action.PROCESS, reason="progress")
        if name in ENROLMENTS and state.progress_seen:
            return Decision(action=Action.SUPERSEDED, reason="enrolment after progress is ignored")
        if state.newest_timestamp is not None and event.timestamp < state.newest_timestamp:
            return Decision(
                action=Action.STALE,
                reason=(f"timestamp {event.timestamp} is older than {state.newest_timestamp}"),
            )
        state.newest_timestamp = event.timestamp
        if name in COMPLETIONS:
            state.completed = True
        return Decision(action=Action.PROCESS, reason="newest for the record")


# --- an aiohttp endpoint ------------------------------------------------------------

EventCallback = Callable[[ReceivedEvent, Decision], Awaitable[None]]


def make_handler(
    on_event: EventCallback,
    *,
    secrets: Sequence[str] = (),
    basic: tuple[str, str] | None = None,
    guard: OrderingGuard | None = None,
) -> Callable[[Any], Awaitable[Any]]:
    """An aiohttp handler: verify, answer ``202`` at once, then hand each event and its
    decision to ``on_event`` in the background, as the platform recommends."""
    from aiohttp import web

    guard = guard or OrderingGuard()
    pending: set[asyncio.Task[None]] = set()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            if secrets:
                verify_signature(secrets, request.headers, body)
            if basic is not None:
                verify_basic(request.headers, username=basic[0], password=basic[1])
            payload = parse_payload(body)
        except VerificationFailed as error:
            return web.json_response({"error": error.message}, status=401)
        decisions = [(event, guard.decide(event)) for event in payload.events]

        async def hand_over() -> None:
            for event, decision in decisions:
                await on_event(event, decision)

        task = asyncio.create_task(hand_over())
        pending.add(task)
        task.add_done_callback(pending.discard)
        return web.Response(status=202)

    return handle
