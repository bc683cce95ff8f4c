"""Reading the events back: one event with its delivery states, the count."""

from __future__ import annotations

from almhookd.storage.rows import stored_event
from almhookd.storage.sqlite.engine import SqliteEngine
from almhookd.storage.sqlite.queries import (
    event_key,
)
from almhookd.storage.values import StoredEvent


class EventOps(SqliteEngine):
    """The event log's reads."""

    async def get_event(self, event_id: str) -> StoredEvent | None:
        # The event and its deliveries in one statement: one snapshot, one hop.
        rows = await self._fetchall(
            "SELECT e.seq, e.event_id, e.event_name, e.account_id, e.timestamp_ms,"
            " e.realtime, e.ingested_at_ms, e.body, (SELECT json_group_array(json_array("
            "d.webhook_id, d.state, d.attempts, d.batch_id, d.delivered_at_ms))"
            " FROM delivery_states AS d WHERE d.event_seq = e.seq)"
            " FROM events AS e WHERE e.event_key = ? AND e.event_id = ?",
            (event_key(event_id), event_id),
        )
        if not rows:
            return None
        return stored_event(rows[0])

    async def count_events(self) -> int:
        rows = await self._fetchall("SELECT count(*) FROM events")
        return int(rows[0][0])
