"""The ingest route and the event lookup."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from almhookd.api.common import (
    CLOCK,
    METRICS,
    STATE,
    STORE,
    ApiError,
    decode_json,
    read_text,
    storage_works,
)
from almhookd.domain.events import NewEvent, parse_ingest
from almhookd.errors import StorageClosed
from almhookd.storage.values import StoredEvent


async def ingest(request: web.Request) -> web.Response:
    text = await read_text(request)
    events = parse_ingest_text(request.app, text)
    return web.Response(
        status=202, content_type="application/json", text=await store_ingest(request.app, events)
    )


def parse_ingest_text(app: web.Application, text: str) -> list[NewEvent]:
    """The events of an ingest body, validated (the same call for aiohttp's route and
    the fast path of :mod:`almhookd.api.fast_ingest`)."""
    state = app[STATE]
    if state.draining:
        raise StorageClosed()
    return parse_ingest(
        decode_json(text),
        now_ms=int(app[CLOCK]() * 1000),
        default_account_id=state.config.account.id,
        new_id=lambda: str(uuid.uuid4()),
        # Strict UTF-8 text holds no surrogates; only a \u escape can make one.
        check_surrogates="\\u" in text,
    )


async def store_ingest(app: web.Application, events: list[NewEvent]) -> str:
    """Store validated events durably and count them; the 202 answer's JSON body."""
    result = await app[STORE].append(events)
    storage_works(app)
    metrics = app[METRICS]
    # One increment per event name, not per event: a label lookup takes a lock. Counted
    # in a plain dict: a Counter costs ten times as much for the one name of most requests.
    counts: dict[str, int] = {}
    for name in result.accepted_names:
        counts[name] = counts.get(name, 0) + 1
    for name, count in counts.items():
        metrics.events_ingested.labels(name).inc(count)
    if result.duplicates:
        metrics.events_duplicate.inc(result.duplicates)
    # Event ids match a pattern that needs no JSON escaping: format, don't encode.
    ids = ",".join(f'"{event.event_id}"' for event in events)
    return f'{{"accepted":{result.accepted},"duplicates":{result.duplicates},"eventIds":[{ids}]}}'


def event_document(event: StoredEvent) -> dict[str, Any]:
    return {
        **event.body,
        "accountId": event.account_id,
        "realtime": event.realtime,
        "ingestedAt": event.ingested_at_ms,
        "deliveries": [
            {
                "webhookId": d.webhook_id,
                "state": d.state,
                "attempts": d.attempts,
                "batchId": d.batch_id,
                "deliveredAt": d.delivered_at_ms,
            }
            for d in event.deliveries
        ],
    }


async def get_event(request: web.Request) -> web.Response:
    event_id = request.match_info["event_id"]
    event = await request.app[STORE].get_event(event_id)
    if event is None:
        raise ApiError(404, "not_found", f"no event with eventId {event_id!r}")
    return web.json_response(event_document(event))
