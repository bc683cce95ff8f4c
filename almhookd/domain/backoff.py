"""The retry schedule of a failing subscriber. Pure: no clock, no randomness of its own."""

from __future__ import annotations

import email.utils
import re
from datetime import UTC
from typing import Final

#: Jitter only ever delays, by up to this fraction of the delay, so retries of many
#: webhooks spread out but a retry never comes earlier than the schedule says.
JITTER_FRACTION: Final = 0.1


def retry_delay(failures: int, *, initial: float, maximum: float, jitter: float = 0.0) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1-based).

    ``initial`` doubling per failure up to ``maximum``, then ``maximum`` for ever:
    5, 10, 20, 40, 80, 160, 300, 300, ... with the defaults. ``jitter`` in [0, 1) adds up
    to ``JITTER_FRACTION`` of the delay.
    """
    if failures < 1:
        raise ValueError(f"failures must be at least 1, got {failures}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must lie in [0, 1), got {jitter}")
    # Cap the exponent first: 2**failures would overflow a float after a long outage.
    exponent = min(failures - 1, 64)
    base = min(initial * 2.0**exponent, maximum)
    return base * (1.0 + JITTER_FRACTION * jitter)


#: ``Retry-After`` delta-seconds are 1*DIGIT (RFC 9110 §10.2.3): ASCII digits only.
#: ``str.isdigit()`` also accepts superscript, Arabic-Indic or fullwidth digits (U+00B2,
#: U+0663, U+FF11), which ``float()`` then refuses.
_DELTA_SECONDS: Final = re.compile(r"[0-9]+")
#: Longer asks are read as this long (the caller caps them at ``backoff_max`` anyway), so
#: a number of thousands of digits gives a finite delay, never ``inf``.
MAX_RETRY_AFTER: Final = 365 * 86_400.0
#: Surrounding whitespace an HTTP field value may carry (OWS: space and tab).
_OWS: Final = " \t"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date).

    Anything else, a receiver's typo or bytes nobody foresaw, is ``None``: this never
    raises, whatever the header holds.
    """
    if not value:
        return None
    text = value.strip(_OWS)
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER)  # float(): no int digit limit; inf at worst
    # An HTTP date is ASCII too: the date parser reads ``int()`` digits of any script
    # (Arabic-Indic "01 Jan") as a day.
    if not text.isascii():
        return None
    try:
        moment = email.utils.parsedate_to_datetime(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def next_delay(
    failures: int,
    *,
    initial: float,
    maximum: float,
    jitter: float = 0.0,
    retry_after: float | None = None,
) -> float:
    """The schedule's delay, lengthened to a receiver's ``Retry-After`` within ``maximum``."""
    delay = retry_delay(failures, initial=initial, maximum=maximum, jitter=jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, maximum))
    return delay
