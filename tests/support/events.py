"""Ingested events for the storage tests, parsed as ingest parses them."""

from __future__ import annotations

import itertools

from almhookd.domain.events import NewEvent, parse_ingest
from tests.support import samples

_ids = itertools.count()  # unique ids across the tests of one run


def make_events(
    count: int, *, prefix: str = "ev", name: str = "COURSE_ENROLLMENT", padding: str = ""
) -> list[NewEvent]:
    documents = []
    for _ in range(count):
        event = samples.event(name, eventId=f"{prefix}-{next(_ids)}")
        if padding:
            event["data"]["padding"] = padding
        documents.append(event)
    return parse_ingest(
        {"events": documents},
        now_ms=1_764_000_000_000,
        default_account_id=1,
        new_id=lambda: "unused",
    )
