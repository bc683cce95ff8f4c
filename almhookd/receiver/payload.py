"""Parsing a request body into its events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from almhookd.receiver.verify import VerificationFailed


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
