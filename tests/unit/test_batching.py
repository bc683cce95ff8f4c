"""Packing due deliveries into request batches (pure): limits, order, lazy reads."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from almhookd.domain.batching import (
    Claim,
    DueRow,
    EventColumns,
    RequestBatch,
    pack,
    payload,
    request_batch,
)

#: A claim late enough for every test event to be due; tests replace what they vary.
CLAIM = Claim(
    now_ms=2_000_000_000_000,
    retained_since_ms=0,
    max_events=50,
    max_batch_events=100,
    max_bytes=1 << 20,
)


def _due(seq: int, *, account: int = 1, realtime: bool = True, size: int = 9) -> DueRow:
    """A due row whose event counts ``size + 1`` bytes towards ``max_bytes``."""
    return (seq, f"ev-{seq}", account, 0, "x" * size, int(realtime))


def _fetcher(rows: list[DueRow]) -> tuple[Callable[[int], list[DueRow]], list[tuple[int, int]]]:
    """A ``fetch`` over ``rows``, and the log of its calls: (rows asked, rows returned)."""
    unread = iter(rows)
    calls: list[tuple[int, int]] = []

    def fetch(size: int) -> list[DueRow]:
        batch = list(itertools.islice(unread, size))
        calls.append((size, len(batch)))
        return batch

    return fetch, calls


@pytest.mark.parametrize(
    ("rows", "claim", "expected", "fetches"),
    [
        pytest.param(
            [_due(s) for s in range(1, 6)],
            replace(CLAIM, max_events=2, batches=10),
            [[1, 2], [3, 4], [5]],
            [(2, 2), (2, 2), (2, 1), (1, 0), (2, 0)],
            id="max_events",
        ),
        pytest.param(
            [_due(1), _due(2, account=2), _due(3, account=2), _due(4)],
            replace(CLAIM, batches=10),
            [[1], [2, 3], [4]],
            [(50, 4), (46, 0), (47, 0), (49, 0), (50, 0)],
            id="one account: a change at the first position",
        ),
        pytest.param(
            [_due(1), _due(2), _due(3, account=2)],
            replace(CLAIM, batches=10),
            [[1, 2], [3]],
            [(50, 3), (47, 0), (49, 0), (50, 0)],
            id="one account: a change at a later position",
        ),
        pytest.param(
            [_due(1), _due(2, realtime=False), _due(3, realtime=False)],
            replace(CLAIM, max_events=3, max_batch_events=3, batches=10),
            [[1], [2, 3]],
            [(3, 3), (1, 0), (3, 0)],
            id="one kind: a change at the first position",
        ),
        pytest.param(
            [_due(1, realtime=False), _due(2, realtime=False), _due(3), _due(4)],
            replace(CLAIM, max_events=2, max_batch_events=4, batches=10),
            [[1, 2], [3, 4]],
            [(2, 2), (2, 2), (2, 0)],
            id="one kind: a change at a later position",
        ),
        pytest.param(
            [_due(1), _due(2, realtime=False), _due(3, realtime=False), _due(4, realtime=False)],
            replace(CLAIM, max_events=1, max_batch_events=3, batches=10),
            [[1], [2, 3, 4]],
            [(1, 1), (1, 1), (2, 2), (1, 0)],
            id="batch events up to max_batch_events",
        ),
        pytest.param(
            [_due(s, realtime=False) for s in range(1, 6)],
            replace(CLAIM, max_events=2, max_batch_events=3, batches=10),
            [[1, 2, 3], [4, 5]],
            [(2, 2), (1, 1), (2, 2), (1, 0), (2, 0)],
            id="batch events: max_batch_events above max_events, the rest read to it",
        ),
        pytest.param(
            [*(_due(s, realtime=False) for s in range(1, 4)), *(_due(s) for s in range(4, 8))],
            replace(CLAIM, max_events=3, max_batch_events=2, batches=10),
            [[1, 2], [3], [4, 5, 6], [7]],
            [(3, 3), (1, 1), (2, 2), (3, 1), (2, 0), (3, 0)],
            id="real-time events: max_events above max_batch_events",
        ),
        pytest.param(
            [_due(1), _due(2), _due(3, size=50), _due(4)],
            replace(CLAIM, max_bytes=20, batches=10),
            [[1, 2], [3], [4]],
            [(50, 4), (46, 0), (48, 0), (49, 0), (50, 0)],
            id="max_bytes; a larger event alone",
        ),
        pytest.param(
            [_due(s) for s in range(1, 4)],
            replace(CLAIM, max_bytes=30, batches=10),
            [[1, 2, 3]],
            [(50, 3), (47, 0), (50, 0)],
            id="max_bytes: every row read exactly at it",
        ),
        pytest.param(
            [_due(s) for s in range(1, 5)],
            replace(CLAIM, max_bytes=30, batches=10),
            [[1, 2, 3], [4]],
            [(50, 4), (46, 0), (49, 0), (50, 0)],
            id="max_bytes: a batch exactly at it",
        ),
        pytest.param(
            [_due(s) for s in range(1, 4)],
            replace(CLAIM, max_bytes=29, batches=10),
            [[1, 2], [3]],
            [(50, 3), (47, 0), (49, 0), (50, 0)],
            id="max_bytes: one byte over",
        ),
        pytest.param(
            [_due(s, size=0) for s in range(1, 4)],
            replace(CLAIM, max_bytes=2, batches=10),
            [[1, 2], [3]],
            [(50, 3), (47, 0), (49, 0), (50, 0)],
            id="max_bytes: an empty body counts one byte",
        ),
        pytest.param(
            [_due(s, realtime=False) for s in range(1, 4)],
            replace(CLAIM, max_events=3, max_batch_events=1, max_bytes=5, batches=10),
            [[1], [2], [3]],
            [(3, 3), (3, 0)],
            id="one event always fits; the rows read past it are kept",
        ),
        pytest.param(
            [_due(s) for s in range(1, 10)],
            replace(CLAIM, max_events=2, batches=2),
            [[1, 2], [3, 4]],
            [(2, 2), (2, 2)],
            id="batches: no row read past them",
        ),
        pytest.param(
            [_due(1), _due(2, account=2), *(_due(s) for s in range(3, 10))],
            replace(CLAIM, max_events=3, batches=1),
            [[1]],
            [(3, 3)],
            id="a batch cut short: the rest of its read only",
        ),
        pytest.param(
            [_due(s) for s in range(1, 10)],
            replace(CLAIM, max_events=1, batches=10, total_bytes=25),
            [[1], [2], [3]],
            [(1, 1), (1, 1), (1, 1)],
            id="total_bytes: the batch that reaches it is the last",
        ),
        pytest.param(
            [_due(s) for s in range(1, 10)],
            replace(CLAIM, max_events=1, batches=10, total_bytes=20),
            [[1], [2]],
            [(1, 1), (1, 1)],
            id="total_bytes: exactly reached",
        ),
        pytest.param(
            [_due(s) for s in range(1, 10)],
            replace(CLAIM, max_events=1, batches=10, total_bytes=21),
            [[1], [2], [3]],
            [(1, 1), (1, 1), (1, 1)],
            id="total_bytes: one byte short of it, another batch",
        ),
        pytest.param(
            [_due(1), _due(2), _due(3, account=2), _due(4, account=2)],
            replace(CLAIM, batches=10, total_bytes=20),
            [[1, 2]],
            [(50, 4), (46, 0)],
            id="total_bytes: exactly reached by a batch cut short",
        ),
        pytest.param(
            [_due(1), _due(2), _due(3, account=2), _due(4, account=2)],
            replace(CLAIM, batches=10, total_bytes=21),
            [[1, 2], [3, 4]],
            [(50, 4), (46, 0), (48, 0)],
            id="total_bytes: one byte short of it after a batch cut short",
        ),
        pytest.param([_due(1)], replace(CLAIM, batches=0), [], [], id="no batches"),
        pytest.param([], replace(CLAIM, batches=10), [], [(50, 0)], id="no rows"),
    ],
)
def test_pack(
    rows: list[DueRow],
    claim: Claim,
    expected: list[list[int]],
    fetches: list[tuple[int, int]],
) -> None:
    fetch, calls = _fetcher(rows)
    assert [list(columns.seqs) for columns in pack(fetch, claim)] == expected
    assert calls == fetches


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param(
            [
                (11, "ev-a", 7, 1_000, '{"n":1}', 1),
                (12, "ev-b", 7, 1_005, '{"n":22}', 1),
            ],
            [
                EventColumns(
                    seqs=(11, 12),
                    ids=("ev-a", "ev-b"),
                    account_ids=(7, 7),
                    ingested_at_ms=(1_000, 1_005),
                    bodies=('{"n":1}', '{"n":22}'),
                ),
            ],
            id="every row read in one batch",
        ),
        pytest.param(
            [
                (11, "ev-a", 7, 1_000, '{"n":1}', 1),
                (12, "ev-b", 7, 1_005, '{"n":22}', 1),
                (13, "ev-c", 8, 1_010, '{"n":333}', 1),
                (14, "ev-d", 8, 1_020, '{"n":4}', 0),
            ],
            [
                EventColumns(
                    seqs=(11, 12),
                    ids=("ev-a", "ev-b"),
                    account_ids=(7, 7),
                    ingested_at_ms=(1_000, 1_005),
                    bodies=('{"n":1}', '{"n":22}'),
                ),
                EventColumns(
                    seqs=(13,),
                    ids=("ev-c",),
                    account_ids=(8,),
                    ingested_at_ms=(1_010,),
                    bodies=('{"n":333}',),
                ),
                EventColumns(
                    seqs=(14,),
                    ids=("ev-d",),
                    account_ids=(8,),
                    ingested_at_ms=(1_020,),
                    bodies=('{"n":4}',),
                ),
            ],
            id="batches cut by account and kind",
        ),
    ],
)
def test_pack_columns(rows: list[DueRow], expected: list[EventColumns]) -> None:
    fetch, _ = _fetcher(rows)
    assert list(pack(fetch, replace(CLAIM, batches=10))) == expected


@pytest.mark.parametrize(
    ("account_id", "bodies", "expected"),
    [
        pytest.param(7, [], b'{"accountId":7,"events":[]}', id="no events"),
        pytest.param(42, ['{"a":1}'], b'{"accountId":42,"events":[{"a":1}]}', id="one event"),
        pytest.param(
            3,
            ['{"a":1}', '{"b":"\u00fc"}', "{ }"],
            b'{"accountId":3,"events":[{"a":1},{"b":"\xc3\xbc"},{ }]}',
            id="bodies verbatim, UTF-8",
        ),
    ],
)
def test_payload(account_id: int, bodies: list[str], expected: bytes) -> None:
    assert payload(account_id, bodies) == expected


def test_payload_is_valid_json_with_unicode() -> None:
    body = payload(7, ['{"eventId":"a","data":{"n":"ü"}}', '{"eventId":"b"}'])
    assert json.loads(body) == {
        "accountId": 7,
        "events": [{"eventId": "a", "data": {"n": "ü"}}, {"eventId": "b"}],
    }


def test_request_batch_of_one_event_attempts_default_to_zero() -> None:
    events = EventColumns(
        seqs=(5,),
        ids=("ev-5",),
        account_ids=(42,),
        ingested_at_ms=(1_700,),
        bodies=('{"a":1}',),
    )
    batch = request_batch("rb-1", "wh-1", events, created_at_ms=1_800)
    assert batch == RequestBatch(
        id="rb-1",
        webhook_id="wh-1",
        account_id=42,
        event_seqs=(5,),
        event_ids=("ev-5",),
        body=b'{"accountId":42,"events":[{"a":1}]}',
        ingested_at_ms=(1_700,),
        created_at_ms=1_800,
        attempts=0,
    )
    assert batch.attempts == 0
    assert batch.oldest_ingested_at_ms == 1_700


def test_request_batch_of_several_events() -> None:
    events = EventColumns(
        seqs=(5, 6, 9),
        ids=("ev-5", "ev-6", "ev-9"),
        account_ids=(42, 42, 42),
        ingested_at_ms=(1_702, 1_700, 1_701),
        bodies=('{"a":1}', '{"b":"\u00fc"}', '{"c":3}'),
    )
    batch = request_batch("rb-2", "wh-2", events, created_at_ms=1_900, attempts=3)
    assert batch == RequestBatch(
        id="rb-2",
        webhook_id="wh-2",
        account_id=42,
        event_seqs=(5, 6, 9),
        event_ids=("ev-5", "ev-6", "ev-9"),
        body=b'{"accountId":42,"events":[{"a":1},{"b":"\xc3\xbc"},{"c":3}]}',
        ingested_at_ms=(1_702, 1_700, 1_701),
        created_at_ms=1_900,
        attempts=3,
    )
    assert batch.oldest_ingested_at_ms == 1_700
