"""Request batches: how due deliveries are packed into one request body each.

Pure: the storage backends feed :func:`pack` rows in ingest order and record what it
packs; nothing here reads a clock or touches a database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestBatch:
    """One request body to one webhook; ``id`` is its ``webhook-id`` header."""

    id: str
    webhook_id: str
    account_id: int
    event_seqs: tuple[int, ...]
    event_ids: tuple[str, ...]
    body: bytes
    ingested_at_ms: tuple[int, ...]
    created_at_ms: int
    attempts: int = 0

    @property
    def oldest_ingested_at_ms(self) -> int:
        return min(self.ingested_at_ms)


@dataclass(frozen=True, kw_only=True, slots=True)
class Claim:
    """What :func:`pack` may pack into the next request batch."""

    now_ms: int
    retained_since_ms: int
    max_events: int
    max_batch_events: int
    max_bytes: int
    #: request batches to pack, one after the other (a worker claims several ahead)
    batches: int = 1
    #: stop packing once the batches' bodies hold this many bytes (None: no limit)
    total_bytes: int | None = None


def payload(account_id: int, bodies: Sequence[str]) -> bytes:
    """The ALM payload, built from the stored event bodies without re-encoding them."""
    return f'{{"accountId":{account_id},"events":[{",".join(bodies)}]}}'.encode()


class EventColumns(NamedTuple):
    """The events of a request batch, column by column, in ingest order."""

    seqs: tuple[int, ...]
    ids: tuple[str, ...]
    account_ids: tuple[int, ...]
    ingested_at_ms: tuple[int, ...]
    bodies: tuple[str, ...]


def request_batch(
    batch_id: str,
    webhook_id: str,
    events: EventColumns,
    *,
    created_at_ms: int,
    attempts: int = 0,
) -> RequestBatch:
    account_id = events.account_ids[0]
    return RequestBatch(
        id=batch_id,
        webhook_id=webhook_id,
        account_id=account_id,
        event_seqs=events.seqs,
        event_ids=events.ids,
        body=payload(account_id, events.bodies),
        ingested_at_ms=events.ingested_at_ms,
        created_at_ms=created_at_ms,
        attempts=attempts,
    )


#: One row of a claim query: a due delivery with its event, in ingest order.
DueRow = tuple[int, str, int, int, str, int]  # seq, id, account, ingested at, body, realtime


def pack(fetch: Callable[[int], list[DueRow]], claim: Claim) -> Iterator[EventColumns]:
    """The events of successive request batches, packed from due deliveries in order.

    A batch holds events of one account and one kind: real-time events up to
    ``claim.max_events``, released non-real-time events up to ``claim.max_batch_events``,
    and up to ``claim.max_bytes`` of event bodies (one event always fits). Packing stops
    after ``claim.batches`` batches, or once their events hold ``claim.total_bytes``.
    ``fetch(n)`` reads up to n more rows; each carries its event's body, so rows are
    read a batch at a time, as far as the last batch needs.
    """
    left, budget = claim.batches, claim.total_bytes
    rows: list[DueRow] = []  # read, not packed yet
    while left > 0 and (budget is None or budget > 0):
        if not rows:
            rows = fetch(claim.max_events)
            if not rows:
                return
        limit = claim.max_events if rows[0][5] else claim.max_batch_events
        if len(rows) < limit:
            rows += fetch(limit - len(rows))
        # Columns at C speed; the row-by-row walk only when the rows do not all fit.
        seqs, ids, accounts, ingested_at_ms, bodies, kinds = zip(*rows[:limit], strict=True)
        count, size = len(seqs), sum(map(len, bodies)) + len(seqs)
        if len(set(accounts)) > 1 or len(set(kinds)) > 1 or size > claim.max_bytes:
            size = len(bodies[0]) + 1
            for count in range(1, len(seqs)):
                fits = size + len(bodies[count]) + 1 <= claim.max_bytes
                if accounts[count] != accounts[0] or kinds[count] != kinds[0] or not fits:
                    break
                size += len(bodies[count]) + 1
            else:
                count = len(seqs)
        yield EventColumns(
            seqs[:count], ids[:count], accounts[:count], ingested_at_ms[:count], bodies[:count]
        )
        del rows[:count]
        left -= 1
        if budget is not None:
            budget -= size
