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

from almhookd.receiver.dedupe import Deduplicator, MemoryDeduplicator, SqliteDeduplicator
from almhookd.receiver.handler import EventCallback, make_handler
from almhookd.receiver.ordering import (
    COMPLETIONS,
    ENROLMENTS,
    PROGRESS,
    Action,
    Decision,
    OrderingGuard,
    RecordState,
)
from almhookd.receiver.payload import Payload, ReceivedEvent, parse_payload
from almhookd.receiver.verify import (
    DEFAULT_TOLERANCE_SECONDS,
    VerificationFailed,
    verify_basic,
    verify_signature,
)

__all__ = [
    "COMPLETIONS",
    "DEFAULT_TOLERANCE_SECONDS",
    "ENROLMENTS",
    "PROGRESS",
    "Action",
    "Decision",
    "Deduplicator",
    "EventCallback",
    "MemoryDeduplicator",
    "OrderingGuard",
    "Payload",
    "ReceivedEvent",
    "RecordState",
    "SqliteDeduplicator",
    "VerificationFailed",
    "make_handler",
    "parse_payload",
    "verify_basic",
    "verify_signature",
]
