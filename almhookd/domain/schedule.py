"""When the batch scheduler flushes non-real-time events. Pure: never reads the clock.

Two forms, from ``[batch]``:
- ``interval``: flush times on a fixed grid (multiples of the interval since the Unix
  epoch, so "15m" flushes at :00, :15, :30 and :45 and every daemon agrees);
- ``at``: these local wall-clock times every day, in the given time zone. A time that a
  daylight-saving change skips is taken at the same offset after the gap (02:30 on a
  spring-forward night flushes at 03:30); a time that occurs twice flushes once, at the
  first occurrence.

A daemon that was down over one or more flush times flushes once at once (a single
catch-up), then returns to the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo


@dataclass(frozen=True, kw_only=True, slots=True)
class FlushSchedule:
    interval: float = 900.0
    at: tuple[time, ...] = ()
    zone: tzinfo = UTC


def next_flush(previous: float | None, *, now: float, schedule: FlushSchedule) -> float:
    """The next flush time (epoch seconds) after a flush at ``previous``.

    ``previous`` is ``None`` when no flush was ever recorded: the schedule then starts
    from ``now`` without a catch-up. When the next scheduled time after ``previous`` has
    already passed, the answer is ``now``: one catch-up flush.
    """
    start = now if previous is None else previous
    candidate = _after(start, schedule)
    if previous is not None and candidate <= now:
        return now
    return candidate


def _after(moment: float, schedule: FlushSchedule) -> float:
    if not schedule.at:
        return (math.floor(moment / schedule.interval) + 1) * schedule.interval
    return _next_local_time(moment, schedule.at, schedule.zone)


def _next_local_time(moment: float, times: Sequence[time], zone: tzinfo) -> float:
    local = datetime.fromtimestamp(moment, zone)
    for day_offset in range(0, 3):
        day = local.date() + timedelta(days=day_offset)
        for at in sorted(times):
            candidate = _wall_clock(day, at, zone)
            if candidate > moment:
                return candidate
    raise ValueError("no flush time within three days")  # pragma: no cover - times non-empty


def _wall_clock(day: date, at: time, zone: tzinfo) -> float:
    """Epoch seconds of a local wall-clock time, resolving DST gaps and folds.

    ``fold=0`` picks the first of two occurrences; for a time inside a spring-forward gap
    it applies the offset from before the gap, which lands just as far after the gap.
    """
    return datetime.combine(day, at, tzinfo=zone).replace(fold=0).timestamp()
