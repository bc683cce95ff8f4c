from __future__ import annotations

from collections.abc import Callable

import pytest

from almhookd.domain.backoff import (
    JITTER_FRACTION,
    MAX_RETRY_AFTER,
    next_delay,
    parse_retry_after,
    retry_delay,
)


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (1, 5),
        (2, 10),
        (3, 20),
        (4, 40),
        (5, 80),
        (6, 160),
        (7, 300),
        (8, 300),
        (500, 300),
        (10_000, 300),
    ],
)
def test_the_platform_schedule(failures: int, delay: float) -> None:
    assert retry_delay(failures, initial=5, maximum=300) == delay


@pytest.mark.parametrize("jitter", [0.0, 0.3, 0.999])
def test_jitter_only_delays(jitter: float) -> None:
    delay = retry_delay(3, initial=5, maximum=300, jitter=jitter)
    assert 20 <= delay <= 20 * (1 + JITTER_FRACTION)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="failures"):
        retry_delay(0, initial=5, maximum=300)
    with pytest.raises(ValueError, match="jitter"):
        retry_delay(1, initial=5, maximum=300, jitter=1.0)


@pytest.mark.parametrize(
    ("retry_after", "failures", "expected"),
    [
        (None, 1, 5),
        (2, 1, 5),  # shorter than the schedule: the schedule wins
        (60, 1, 60),  # longer: honoured
        (3600, 1, 300),  # beyond the cap: capped
    ],
)
def test_retry_after_within_the_cap(
    retry_after: float | None, failures: int, expected: float
) -> None:
    assert next_delay(failures, initial=5, maximum=300, retry_after=retry_after) == expected


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Thu, 01 Jan 2026 00:01:40 GMT", 100.0),
        ("Thu, 01 Jan 2026 00:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("-5", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert parse_retry_after(header, now=now) == seconds


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        # Only ASCII digits are delta-seconds: these pass str.isdigit() but are not.
        ("\u00b2", None),  # superscript two, byte 0xB2 read as latin-1
        ("1\u00b2", None),
        ("\u0663", None),  # Arabic-Indic three
        ("\uff11", None),  # fullwidth one
        ("\u2460", None),  # circled one
        ("\U0001d7d9", None),  # mathematical double-struck one
        ("\u0e51\u0e52", None),  # Thai digits
        # Huge numbers never raise: a year at most (the caller caps at backoff_max).
        ("9" * 5000, MAX_RETRY_AFTER),
        ("9" * 20, MAX_RETRY_AFTER),
        (str(int(MAX_RETRY_AFTER) + 1), MAX_RETRY_AFTER),
        ("0" * 40 + "12", 12.0),
        ("0", 0.0),
        # Signs, fractions, exponents, separators: not 1*DIGIT.
        ("-5", None),
        ("+5", None),
        ("-0", None),
        ("1.5", None),
        ("1e3", None),
        ("1_000", None),
        ("1 000", None),
        ("0x10", None),
        ("inf", None),
        ("nan", None),
        # HTTP whitespace (space, tab) around the value is allowed; nothing else is.
        ("\t30\t", 30.0),
        ("  30", 30.0),
        ("\u00a030", None),  # no-break space
        ("\u300030", None),  # ideographic space
        ("30\r\n", None),
        ("\n", None),
        (" ", None),
        # Text outside latin-1, or a date in other digits: never a date either.
        ("\u5f8c\u3067", None),
        ("\U0001f600", None),
        ("Thu, \u0660\u0661 Jan 2026 00:01:40 GMT", None),
        ("\udcb2", None),  # a lone surrogate (undecodable byte kept by surrogateescape)
        # Dates that cannot exist.
        ("Thu, 01 Jan 99999 00:00:00 GMT", None),
        ("Thu, 01 Jan 2026 00:01:40 +9999", None),
        ("Thu, 32 Jan 2026 00:00:00 GMT", None),
        ("Mon, 01 Jan 0001 00:00:00 -2359", 0.0),  # the first year: long past, no wait
    ],
)
def test_retry_after_reads_ascii_digits_and_dates_only(header: str, seconds: float | None) -> None:
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert parse_retry_after(header, now=now) == seconds


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_an_http_date_is_read_the_same_in_any_host_time_zone(
    host_time_zone: Callable[[str], None], zone: str
) -> None:
    host_time_zone(zone)
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    # "-0000" (RFC 5322: UTC, zone unknown) parses to a datetime without a zone.
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:40 -0000", now=now) == 100.0
    assert parse_retry_after("Thu, 01 Jan 2026 01:01:40 +0100", now=now) == 100.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:40 GMT", now=now) == 100.0


def test_a_retry_after_in_the_past_asks_for_no_wait() -> None:
    assert parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now=1_767_225_600.0) == 0.0


@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.9])
def test_retry_after_keeps_the_jittered_schedule(jitter: float) -> None:
    delay = next_delay(3, initial=5, maximum=300, jitter=jitter, retry_after=10)
    assert delay == pytest.approx(20 * (1 + JITTER_FRACTION * jitter))
