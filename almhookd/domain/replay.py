"""When a replay starts: the "since" an admin types, read as epoch milliseconds.

Pure: the caller passes ``now_ms``. The command line and the console both read it here
and word a refusal their own way (:attr:`SinceRefused.reason`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final, Literal

from almhookd.config import parse_duration

#: Most event ids one replay request names.
MAX_REPLAY_IDS: Final = 10_000
#: Longest "since" read; anything longer is no duration nor date.
MAX_SINCE_CHARS: Final = 64

Reason = Literal["empty", "too_long", "unreadable", "future"]


class SinceRefused(ValueError):
    """A "since" that is no duration and no date and time, or lies in the future."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


def since_ms(text: str, *, now_ms: int) -> int:
    """A duration back from ``now_ms`` (``30m``, ``2h``, ``1d``, as the configuration
    writes them; one reaching back past 1970 is 0, everything retained) or an ISO 8601
    date and time, UTC unless it carries an offset. Raises :class:`SinceRefused`."""
    value = text.strip()
    if not value:
        raise SinceRefused("empty")
    if len(value) > MAX_SINCE_CHARS:
        raise SinceRefused("too_long")
    try:
        seconds = parse_duration(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds * 1000 >= now_ms:
            return 0  # before anything was ingested: everything still retained
        return now_ms - int(seconds * 1000)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SinceRefused("unreadable") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    milliseconds = int(moment.timestamp() * 1000)
    if milliseconds > now_ms:
        raise SinceRefused("future")
    return max(0, milliseconds)
