from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from almhookd.domain.schedule import FlushSchedule, next_flush

BERLIN = ZoneInfo("Europe/Berlin")


def ts(text: str, zone: ZoneInfo | None = None) -> float:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=zone or UTC).timestamp()


EVERY_15M = FlushSchedule(interval=900)
TWICE_A_DAY = FlushSchedule(at=(time(14, 0), time(2, 0)), zone=BERLIN)


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        # First start: the next grid point, no catch-up.
        (None, "2026-11-28 10:07:00", "2026-11-28 10:15:00"),
        (None, "2026-11-28 10:15:00", "2026-11-28 10:30:00"),
        # Regular: the grid point after the previous flush.
        ("2026-11-28 10:15:00", "2026-11-28 10:16:00", "2026-11-28 10:30:00"),
        # A catch-up flush that ran off the grid goes back onto it.
        ("2026-11-28 10:21:13", "2026-11-28 10:21:14", "2026-11-28 10:30:00"),
        # Down over several flush times: one catch-up now, not a burst.
        ("2026-11-28 10:15:00", "2026-11-28 13:02:00", "2026-11-28 13:02:00"),
    ],
)
def test_interval(previous: str | None, now: str, expected: str) -> None:
    result = next_flush(ts(previous) if previous else None, now=ts(now), schedule=EVERY_15M)
    assert result == ts(expected)


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        # The "at" list is out of order on purpose: 14:00 before 02:00.
        (None, "2026-11-28 09:00", "2026-11-28 14:00"),
        (None, "2026-11-28 15:00", "2026-11-29 02:00"),
        ("2026-11-28 14:00", "2026-11-28 14:00:01", "2026-11-29 02:00"),
        ("2026-11-29 02:00", "2026-11-29 03:00", "2026-11-29 14:00"),
        # Down for two days: one catch-up now.
        ("2026-11-26 14:00", "2026-11-28 16:00", "2026-11-28 16:00"),
        # Spring forward (2026-03-29, 02:00 → 03:00 in Berlin): 02:00 does not exist that
        # night and is taken at 03:00, after the gap.
        ("2026-03-28 14:00", "2026-03-28 20:00", "2026-03-29 03:00"),
        # Fall back (2026-10-25, 03:00 → 02:00): 02:00 occurs twice and flushes once.
        ("2026-10-24 14:00", "2026-10-24 20:00", "2026-10-25 02:00"),
    ],
)
def test_local_times_with_dst(previous: str | None, now: str, expected: str) -> None:
    result = next_flush(
        ts(previous, BERLIN) if previous else None, now=ts(now, BERLIN), schedule=TWICE_A_DAY
    )
    assert result == ts(expected, BERLIN)


def test_fall_back_flushes_once_at_the_first_occurrence() -> None:
    first = next_flush(
        ts("2026-10-24 14:00", BERLIN), now=ts("2026-10-24 20:00", BERLIN), schedule=TWICE_A_DAY
    )
    offset = datetime.fromtimestamp(first, BERLIN).utcoffset()
    assert offset is not None and offset.total_seconds() == 7200  # CEST: the first 02:00
    second = next_flush(first, now=first + 1, schedule=TWICE_A_DAY)
    assert second == ts("2026-10-25 14:00", BERLIN)


def test_spring_forward_gap_is_one_hour_after_the_named_time() -> None:
    gap_night = FlushSchedule(at=(time(2, 30),), zone=BERLIN)
    result = next_flush(None, now=ts("2026-03-29 00:00", BERLIN), schedule=gap_night)
    assert result == ts("2026-03-29 03:30", BERLIN)


NEW_YORK, TOKYO = ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize("host_zone", ["UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin"])
@pytest.mark.parametrize(
    ("zone", "at", "now", "expected"),
    [
        # 22:00 in New York is already the next day in Tokyo and in UTC.
        (NEW_YORK, time(23, 0), "2026-11-27 22:00", "2026-11-27 23:00"),
        # 01:00 in Tokyo is still the previous day in New York and in UTC.
        (TOKYO, time(2, 0), "2026-11-28 01:00", "2026-11-28 02:00"),
        (TOKYO, time(0, 30), "2026-11-28 01:00", "2026-11-29 00:30"),
    ],
)
def test_flush_times_follow_the_configured_zone_not_the_hosts(
    host_time_zone: Callable[[str], None],
    host_zone: str,
    zone: ZoneInfo,
    at: time,
    now: str,
    expected: str,
) -> None:
    host_time_zone(host_zone)
    schedule = FlushSchedule(at=(at,), zone=zone)
    assert next_flush(None, now=ts(now, zone), schedule=schedule) == ts(expected, zone)
