"""Turning an ingest request body into validated events ready to store.

Pure: the caller passes the current time and an id factory, so the same input always
gives the same result. All-or-nothing: any problem rejects the whole request, and every
problem is reported with its JSON path.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from almhookd.config import closest_name as closest_key
from almhookd.domain.catalogue import CATALOGUE, suggest_event_name, validate_data
from almhookd.errors import InvalidInput, Problem

MAX_EVENTS_PER_REQUEST: Final = 10_000
ENVELOPE_KEYS: Final = frozenset({"accountId", "events"})
EVENT_KEYS: Final = frozenset({"eventId", "eventName", "timestamp", "eventInfo", "data"})
#: Before this many milliseconds since the epoch (1973-03-03) a timestamp is taken to
#: be in seconds by mistake, one of the public samples' quirks.
EARLIEST_MS: Final = 100_000_000_000
#: After this (9999-12-31T23:59:59.999Z) a timestamp is no date; it keeps the column
#: within SQLite's 64-bit integers, which a larger one would fail the whole commit for.
LATEST_MS: Final = 253_402_300_799_999
#: Integers are kept to 64 bits: the database stores no larger, and most receivers'
#: JSON parsers (Java, Go, JavaScript's BigInt-less JSON.parse) cannot read them.
_INT64: Final = range(-(2**63), 2**63)
_HUGE_INTEGER: Final = "holds an integer outside the 64-bit range"
_SURROGATE: Final = "contains an invalid Unicode escape (a lone surrogate)"
_NOT_FINITE: Final = "contains NaN or Infinity, which JSON cannot carry"


@dataclass(frozen=True, kw_only=True, slots=True)
class UnknownKey(Problem):
    """An unknown key; its text names the known key it most likely meant, as the config
    errors do. ``message`` stays ``unknown key`` (the API's ``details``); the hint is in
    the problem's text, hence in the error's message."""

    meant: str | None = None

    def __str__(self) -> str:
        text = Problem.__str__(self)
        return f'{text}; did you mean "{self.meant}"?' if self.meant else text


def _unknown_keys(given: Iterable[str], known: frozenset[str], prefix: str) -> list[Problem]:
    return [
        UnknownKey(
            path=_join(prefix, key), message="unknown key", meant=closest_key(key, set(known))
        )
        for key in sorted(set(given) - known)
    ]


def _refuse(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _compact_encoder() -> Callable[[Any], str]:
    """Compact JSON for decoded JSON values, built once: ``json.dumps`` with options
    builds an encoder per call, a cost paid once per ingested event here."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython ships the C accelerator
        return json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    # No circular-reference markers: values decoded from JSON cannot be circular.
    chunks = make(
        None, _refuse, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    return lambda value: "".join(chunks(value, 0))


_encode: Final = _compact_encoder()
_encode_string: Final = json.encoder.encode_basestring
#: An ``eventId``: letters, digits and ``. _ : -``, 1 to 128 characters (a UUID fits).
EVENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
#: The longest ``eventInfo`` kept.
MAX_EVENT_INFO: Final = 256


class NewEvent(NamedTuple):
    """A validated event, with ``body`` the exact JSON object subscribers will receive.

    A named tuple rather than a frozen dataclass: one is built per ingested event, and a
    frozen dataclass pays for each field through ``object.__setattr__``.
    """

    event_id: str
    event_name: str
    account_id: int
    timestamp_ms: int
    realtime: bool
    body: str


def parse_ingest(
    document: Any,
    *,
    now_ms: int,
    default_account_id: int,
    new_id: Callable[[], str],
    check_surrogates: bool = True,
) -> list[NewEvent]:
    """Validate an envelope ``{"accountId"?, "events": [...]}`` or a single event.

    ``new_id`` makes the ``eventId`` of events that have none; its ids must match the
    eventId pattern (letters, digits and ``. _ : -``), as a UUID does.

    ``check_surrogates=False`` skips the search for lone surrogates, which only a JSON
    ``\\u`` escape can produce: callers that saw none in the raw text may skip it.
    """
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
        problems.extend(_unknown_keys(document, ENVELOPE_KEYS, ""))
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
        try:
            event = _fast_event(item, account_id, now_ms, new_id)
        except ValueError:  # NaN or Infinity, which JSON cannot carry
            problems.append(Problem(path=_join(prefix, "data"), message=_NOT_FINITE))
            continue
        if event is None:
            _event_problems(item, prefix, problems)
        elif check_surrogates and not _encodable(event.body):
            problems.append(Problem(path=_join(prefix, "data"), message=_SURROGATE))
        else:
            events.append(event)
    if problems:
        raise InvalidInput(problems)
    return events


def _account_id(document: dict[str, Any], default: int, problems: list[Problem]) -> int:
    value = document.get("accountId", default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.append(Problem(path="accountId", message="expected a non-negative integer"))
        return default
    if value not in _INT64:
        problems.append(Problem(path="accountId", message="must fit in 64 bits"))
        return default
    return value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _fast_event(
    item: Any, account_id: int, now_ms: int, new_id: Callable[[], str]
) -> NewEvent | None:
    """The fast path: the event when ``item`` is valid, else ``None``, in one pass.
    ``_event_problems`` then names every problem of an event refused here."""
    if type(item) is not dict or not item.keys() <= EVENT_KEYS:
        return None
    name = item.get("eventName")
    event_type = CATALOGUE.get(name) if type(name) is str else None
    data = item.get("data")
    if event_type is None or type(data) is not dict or not event_type.accepts(data):
        return None
    if _has_huge_integer(data):
        return None
    event_id = item.get("eventId")
    if event_id is None:
        event_id = new_id()
    elif type(event_id) is not str or not EVENT_ID.fullmatch(event_id):
        return None
    timestamp = item.get("timestamp")
    if timestamp is None:
        timestamp = now_ms
    elif type(timestamp) is not int or not EARLIEST_MS <= timestamp <= LATEST_MS:
        return None
    event_info = item.get("eventInfo")
    if event_info is None:
        event_info = _event_info(event_id, timestamp)
    elif type(event_info) is not str or len(event_info) > MAX_EVENT_INFO:
        return None
    # The id (its pattern) and the catalogue name need no escaping; the rest is encoded.
    body = (
        f'{{"eventId":"{event_id}","eventName":"{event_type.name}","timestamp":{timestamp},'
        f'"eventInfo":{_encode_string(event_info)},"data":{_encode(data)}}}'
    )
    return NewEvent(event_id, event_type.name, account_id, timestamp, event_type.realtime, body)


def _event_problems(item: Any, prefix: str, problems: list[Problem]) -> None:
    """Every problem of an event the fast path refused, each with its path."""
    if not isinstance(item, dict):
        problems.append(Problem(path=prefix, message="expected an event object"))
        return
    problems.extend(_unknown_keys(item, EVENT_KEYS, prefix))

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
        if _has_huge_integer(item["data"]):
            problems.append(Problem(path=_join(prefix, "data"), message=_HUGE_INTEGER))

    event_id = item.get("eventId")
    if event_id is not None and not (isinstance(event_id, str) and EVENT_ID.fullmatch(event_id)):
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
        elif timestamp > LATEST_MS:
            problems.append(
                Problem(
                    path=_join(prefix, "timestamp"),
                    message="expected epoch milliseconds before the year 10000",
                )
            )
        elif timestamp < EARLIEST_MS:
            problems.append(
                Problem(
                    path=_join(prefix, "timestamp"),
                    message=(f"{timestamp} looks like seconds; expected epoch milliseconds"),
                )
            )
    event_info = item.get("eventInfo")
    if event_info is not None and (
        not isinstance(event_info, str) or len(event_info) > MAX_EVENT_INFO
    ):
        problems.append(
            Problem(
                path=_join(prefix, "eventInfo"),
                message=f"expected a string of at most {MAX_EVENT_INFO} characters",
            )
        )


def is_event_id(value: object) -> bool:
    """Whether ``value`` can be an ``eventId``: what an admin names an event by."""
    return isinstance(value, str) and EVENT_ID.fullmatch(value) is not None


def _has_huge_integer(value: Any) -> bool:
    """Whether a decoded JSON value holds an integer beyond 64 bits, at any depth."""
    items = value.values() if type(value) is dict else value if type(value) is list else ()
    for item in items:
        kind = type(item)
        if kind is int:
            if item not in _INT64:
                return True
        elif (kind is dict or kind is list) and _has_huge_integer(item):
            return True
    return False


def _encodable(body: str) -> bool:
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _event_info(event_id: str, timestamp_ms: int) -> str:
    """An opaque trace string in the platform's shape, stable for a given event id."""
    digest = zlib.crc32(event_id.encode())
    return f"{timestamp_ms}-{digest % 1_000_000:06d}-{(digest >> 12) % 100_000:05d}-0"
