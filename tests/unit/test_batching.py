"""Packing due deliveries into request batches (pure): limits, order, lazy reads."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest

from almhookd.domain.batching import Claim, DueRow, pack, payload

#: A claim late enough for every test event to be due; tests replace what they vary.
CLAIM = Claim(
    now_ms=2_000_000_000_000,
    retained_since_ms=0,
    max_events=50,
    max_batch_events=100,
    max_bytes=1 << 20,
)


def _due(seq: int, *, account: int = 1, realtime: bool = True, size: int = 9) -> DueRow:
    return (seq, f"ev-{seq}", account, 0, "x" * size, int(realtime))


@pytest.mark.parametrize(
    ("rows", "claim", "expected", "read"),
    [
        pytest.param(
            [_due(s) for s in range(1, 6)],
            replace(CLAIM, max_events=2, batches=10),
            [[1, 2], [3, 4], [5]],
            5,
            id="max_events",
        ),
        pytest.param(
            [_due(1), _due(2, account=2), _due(3, account=2), _due(4)],
            replace(CLAIM, batches=10),
            [[1], [2, 3], [4]],
            4,
            id="one account",
        ),
        pytest.param(
            [_due(1), _due(2, realtime=False), _due(3, realtime=False), _due(4, realtime=False)],
            replace(CLAIM, max_events=1, max_batch_events=3, batches=10),
            [[1], [2, 3, 4]],
            4,
            id="batch events up to max_batch_events",
        ),
        pytest.param(
            [_due(1), _due(2), _due(3, size=50), _due(4)],
            replace(CLAIM, max_bytes=20, batches=10),
            [[1, 2], [3], [4]],
            4,
            id="max_bytes; a larger event alone",
        ),
        pytest.param(
            [_due(s) for s in range(1, 10)],
            replace(CLAIM, max_events=2, batches=2),
            [[1, 2], [3, 4]],
            4,
            id="batches: no row read past them",
        ),
        pytest.param(
            [_due(1), _due(2, account=2), *(_due(s) for s in range(3, 10))],
            replace(CLAIM, max_events=3, batches=1),
            [[1]],
            3,
            id="a batch cut short: the rest of its read only",
        ),
        pytest.param(
            [_due(s) for s in range(1, 10)],
            replace(CLAIM, max_events=1, batches=10, total_bytes=25),
            [[1], [2], [3]],
            3,
            id="total_bytes: the batch that reaches it is the last",
        ),
        pytest.param([_due(1)], replace(CLAIM, batches=0), [], 0, id="no batches"),
    ],
)
def test_pack(rows: list[DueRow], claim: Claim, expected: list[list[int]], read: int) -> None:
    unread = iter(rows)
    reads = 0

    def fetch(size: int) -> list[DueRow]:
        nonlocal reads
        batch = list(itertools.islice(unread, size))
        reads += len(batch)
        return batch

    assert [list(columns.seqs) for columns in pack(fetch, claim)] == expected
    assert reads == read


def test_payload_is_valid_json_with_unicode() -> None:
    body = payload(7, ['{"eventId":"a","data":{"n":"ü"}}', '{"eventId":"b"}'])
    assert json.loads(body) == {
        "accountId": 7,
        "events": [{"eventId": "a", "data": {"n": "ü"}}, {"eventId": "b"}],
    }
