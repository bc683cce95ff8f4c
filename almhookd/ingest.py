"""Turning an ingest request body into validated events ready to store.

Pure: the caller passes the current time and an id factory, so the same input always
gives the same result. All-or-nothing: any problem rejects the whole request, and every
problem is reported with its JSON path.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from almhookd.catalogue import CATALOGUE, suggest_event_name, validate_data
from almhookd.errors import InvalidInput, Problem

MAX_EVENTS_PER_REQUEST: Final = 10_000
ENVELOPE_KEYS: Final = frozenset({"accountId", "events"})
EVENT_KEYS: Final = frozenset({"eventId", "eventName", "timestamp", "eventInfo", "data"})
#: Before this many milliseconds since the epoch (1973-03-03) a timestamp is taken to
#: be in seconds by mistake, one of the public samples' quirks.
_EARLIEST_MS: Final = 100_000_000_000
_EVENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")


@dataclass(frozen=True, kw_only=True, slots=True)
class NewEvent:
    """A validated event, with ``body`` the exact JSON object subscribers will receive."""

    event_id: str
    event_name: str
    account_id: int
    timestamp_ms: int
    realtime: bool
    body: str


def parse_ingest(
    document: Any, *, now_ms: int, default_account_id: int, new_id: Callable[[], str]
) -> list[NewEvent]:
    """Validate an envelope ``{"accountId"?, "events": [...]}`` or a single event."""
    if not isinstance(document, dict):
        raise InvalidInput(
            [
                Problem(
                    path="",
                    message='expected a JSON object: an event or {"accountId", "events": [...]}',
                )
            ]
        )
    problems: list[Problem] = []
    if "events" in document:
        account_id = _account_id(document, default_account_id, problems)
        problems.extend(
            Problem(path=key, message="unknown key")
            for key in sorted(set(document) - ENVELOPE_KEYS)
        )
        items = document["events"]
        if not isinstance(items, list):
            raise InvalidInput([*problems, Problem(path="events", message="expected an array")])
        if not items:
            problems.append(Problem(path="events", message="must not be empty"))
        if len(items) > MAX_EVENTS_PER_REQUEST:
            problems.append(
                Problem(
                    path="events", message=f"at most {MAX_EVENTS_PER_REQUEST} events per request"
                )
            )
        prefixes = [f"events[{index}]" for index in range(len(items))]
    else:
        account_id, items, prefixes = default_account_id, [document], [""]
    events = []
    for item, prefix in zip(items, prefixes, strict=True):
        event = _parse_event(item, prefix, account_id, now_ms, new_id, problems)
        if event is not None:
            events.append(event)
    if problems:
        raise InvalidInput(problems)
    return events


def _account_id(document: dict[str, Any], default: int, problems: list[Problem]) -> int:
    value = document.get("accountId", default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(Problem(path="accountId", message="expected a non-negative integer"))
        return default
    return value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _parse_event(
    item: Any,
    prefix: str,
    account_id: int,
    now_ms: int,
    new_id: Callable[[], str],
    problems: list[Problem],
) -> NewEvent | None:
    if not isinstance(item, dict):
        problems.append(Problem(path=prefix, message="expected an event object"))
        return None
    found = len(problems)
    problems.extend(
        Problem(path=_join(prefix, key), message="unknown key")
        for key in sorted(set(item) - EVENT_KEYS)
    )

    name = item.get("eventName")
    if name is None:
        problems.append(Problem(path=_join(prefix, "eventName"), message="required"))
    elif not isinstance(name, str) or name not in CATALOGUE:
        hint = suggest_event_name(name) if isinstance(name, str) else None
        message = f"unknown event {name!r}" if isinstance(name, str) else "expected a string"
        problems.append(
            Problem(
                path=_join(prefix, "eventName"),
                message=message + (f" (did you mean {hint}?)" if hint else ""),
            )
        )
    if "data" not in item:
        problems.append(Problem(path=_join(prefix, "data"), message="required"))
    elif isinstance(name, str) and name in CATALOGUE:
        problems.extend(validate_data(name, item["data"], _join(prefix, "data")))

    event_id = item.get("eventId")
    if event_id is not None and not (isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)):
        problems.append(
            Problem(
                path=_join(prefix, "eventId"),
                message=("expected 1 to 128 characters: letters, digits and . _ : - (a UUID fits)"),
            )
        )
    timestamp = item.get("timestamp")
    if timestamp is not None:
        if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
            problems.append(
                Problem(
                    path=_join(prefix, "timestamp"),
                    message="expected epoch milliseconds as an integer",
                )
            )
        elif timestamp < _EARLIEST_MS:
            problems.append(
                Problem(
                    path=_join(prefix, "timestamp"),
                    message=(f"{timestamp} looks like seconds; expected epoch milliseconds"),
                )
            )
    event_info = item.get("eventInfo")
    if event_info is not None and (not isinstance(event_info, str) or len(event_info) > 256):
        problems.append(
            Problem(
                path=_join(prefix, "eventInfo"),
                message="expected a string of at most 256 characters",
            )
        )
    if len(problems) > found:
        return None

    name = str(name)  # checked above
    event_id = event_id or new_id()
    timestamp = now_ms if timestamp is None else timestamp
    body = json.dumps(
        {
            "eventId": event_id,
            "eventName": name,
            "timestamp": timestamp,
            "eventInfo": event_info if event_info is not None else _event_info(event_id, timestamp),
            "data": item["data"],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(
            Problem(
                path=_join(prefix, "data"),
                message="contains an invalid Unicode escape (a lone surrogate)",
            )
        )
        return None
    return NewEvent(
        event_id=event_id,
        event_name=name,
        account_id=account_id,
        timestamp_ms=timestamp,
        realtime=CATALOGUE[name].realtime,
        body=body,
    )


def _event_info(event_id: str, timestamp_ms: int) -> str:
    """An opaque trace string in the platform's shape, stable for a given event id."""
    digest = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")
    return f"{timestamp_ms}-{digest % 1_000_000:06d}-{(digest >> 20) % 100_000:05d}-0"
