"""Wake-ups between the processes sharing a database: ``NOTIFY`` on one channel.

A transaction that stores events, changes a webhook or flushes batches sends a notice
in the same transaction, so it is delivered when, and only if, it commits. A notice
carries ids, never data (PostgreSQL caps a payload at 8,000 bytes, and a listener
reads the rows it needs): the kind, the process that sent it (its own notices are
skipped, it woke its workers already) and, for a webhook change, the webhook's id.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from almhookd.storage.values import Notice, NoticeKind

CHANNEL: Final = "almhookd"

_CODES: Final[dict[NoticeKind, str]] = {"events": "e", "webhook": "w", "flush": "f"}
_KINDS: Final[dict[str, NoticeKind]] = {code: kind for kind, code in _CODES.items()}


def payload_of(notice: Notice) -> str:
    parts = [_CODES[notice.kind], notice.origin]
    if notice.webhook_id is not None:
        parts.append(notice.webhook_id)
    return ":".join(parts)


def parse_notice(payload: str) -> Notice | None:
    """The notice a payload carries; ``None`` for one this version does not know."""
    code, _, rest = payload.partition(":")
    kind = _KINDS.get(code)
    origin, _, webhook_id = rest.partition(":")
    if kind is None or not origin or (kind == "webhook") != bool(webhook_id):
        return None
    return Notice(kind=kind, origin=origin, webhook_id=webhook_id or None)


async def announce(connection: asyncpg.Connection, notice: Notice) -> None:
    """Send ``notice`` when the connection's transaction commits."""
    await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, payload_of(notice))
