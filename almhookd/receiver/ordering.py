"""The platform's ordering guidance for subscribers, as decisions: process, ignore as
stale or as a duplicate, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from almhookd.receiver.dedupe import Deduplicator, MemoryDeduplicator
from almhookd.receiver.payload import ReceivedEvent

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
