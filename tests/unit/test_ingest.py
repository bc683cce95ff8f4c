from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from almhookd.domain.events import is_event_id, parse_ingest
from almhookd.errors import InvalidInput
from tests.support import samples

NOW_MS = 1_764_000_000_000


def _parse(document: Any) -> list[Any]:
    counter = itertools.count(1)
    return parse_ingest(
        document,
        now_ms=NOW_MS,
        default_account_id=1010,
        new_id=lambda: f"generated-{next(counter)}",
    )


def _problems(document: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as caught:
        _parse(document)
    return [(p.path, p.message) for p in caught.value.problems]


def test_a_single_event_gets_id_timestamp_and_event_info() -> None:
    [event] = _parse(samples.event())
    assert event.event_id == "generated-1"
    assert event.timestamp_ms == NOW_MS
    assert event.account_id == 1010
    assert event.realtime is True
    body = json.loads(event.body)
    assert list(body) == ["eventId", "eventName", "timestamp", "eventInfo", "data"]
    assert body["data"] == samples.ALL["COURSE_ENROLLMENT"]
    assert body["eventInfo"].startswith(f"{NOW_MS}-")


def test_an_envelope_keeps_given_fields_and_order() -> None:
    events = _parse(
        {
            "accountId": 7,
            "events": [
                samples.event(
                    "LEARNER_PROGRESS",
                    eventId="a-1",
                    timestamp=1727414643000,
                    eventInfo="1727414643000-047210-84242-0",
                ),
                samples.event("CI_STATS"),
            ],
        }
    )
    assert [e.event_id for e in events] == ["a-1", "generated-1"]
    assert [e.account_id for e in events] == [7, 7]
    assert events[0].realtime is False and events[1].realtime is True
    first = json.loads(events[0].body)
    assert first["timestamp"] == 1727414643000
    assert first["eventInfo"] == "1727414643000-047210-84242-0"


def test_generated_event_info_is_stable_for_an_event_id() -> None:
    one = _parse(samples.event(eventId="same", timestamp=NOW_MS))[0].body
    two = _parse(samples.event(eventId="same", timestamp=NOW_MS))[0].body
    assert one == two


def test_extra_data_fields_are_kept_as_they_are() -> None:
    data = {**samples.ALL["COURSE_ENROLLMENT"], "note": "ünïcode", "nested": {"a": [1, 2]}}
    [event] = _parse({"eventName": "COURSE_ENROLLMENT", "data": data})
    assert json.loads(event.body)["data"] == data


def test_one_bad_event_rejects_all_and_every_problem_has_a_path() -> None:
    bad = samples.event()
    del bad["data"]["userId"]
    problems = _problems(
        {
            "events": [
                samples.event(),
                samples.event(),
                samples.event(),
                bad,
                {"eventName": "COURSE_ENROLMENT", "data": {}},
            ]
        }
    )
    assert ("events[3].data.userId", "required") in problems
    assert (
        "events[4].eventName",
        "unknown event 'COURSE_ENROLMENT' (did you mean COURSE_ENROLLMENT?)",
    ) in problems
    assert all(path.startswith(("events[3]", "events[4]")) for path, _ in problems)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([], ("", 'expected a JSON object: an event or {"accountId", "events": [...]}')),
        ({"events": []}, ("events", "must not be empty")),
        ({"events": {}}, ("events", "expected an array")),
        ({"events": [samples.event()], "account": 1}, ("account", "unknown key")),
        (
            {"events": [samples.event()], "accountId": -1},
            ("accountId", "expected a non-negative integer"),
        ),
        (
            {"events": [samples.event()], "accountId": "1010"},
            ("accountId", "expected a non-negative integer"),
        ),
        ({"events": [3]}, ("events[0]", "expected an event object")),
        ({"data": {}}, ("eventName", "required")),
        ({"eventName": "COURSE_ENROLLMENT"}, ("data", "required")),
        ({"eventName": 5, "data": {}}, ("eventName", "expected a string")),
        (samples.event(evenId="x"), ("evenId", "unknown key")),
        (
            samples.event(eventId=""),
            ("eventId", "expected 1 to 128 characters: letters, digits and . _ : - (a UUID fits)"),
        ),
        (
            samples.event(eventId="a b"),
            ("eventId", "expected 1 to 128 characters: letters, digits and . _ : - (a UUID fits)"),
        ),
        (
            samples.event(timestamp=1727414643),
            ("timestamp", "1727414643 looks like seconds; expected epoch milliseconds"),
        ),
        (
            samples.event(timestamp="1727414643000"),
            ("timestamp", "expected epoch milliseconds as an integer"),
        ),
        (samples.event(eventInfo=7), ("eventInfo", "expected a string of at most 256 characters")),
    ],
)
def test_invalid_documents(document: Any, expected: tuple[str, str]) -> None:
    assert expected in _problems(document)


def test_a_lone_surrogate_is_rejected() -> None:
    document = json.loads('{"eventName": "COURSE_ENROLLMENT", "data": {"x": "\\ud800"}}')
    document["data"].update(samples.ALL["COURSE_ENROLLMENT"])
    assert ("data", "contains an invalid Unicode escape (a lone surrogate)") in _problems(document)


def test_the_batch_variant_of_an_event_is_not_real_time() -> None:
    [batch] = _parse(samples.event("COURSE_ENROLLMENT_BATCH"))
    assert batch.realtime is False


def test_nan_and_infinity_are_refused() -> None:
    document = samples.event()
    document["data"]["score"] = float("nan")
    assert ("data", "contains NaN or Infinity, which JSON cannot carry") in _problems(document)


EARLIEST_MS = 100_000_000_000  # 1973-03-03: earlier is taken for seconds
LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
HUGE = "holds an integer outside the 64-bit range"


def test_the_event_keeps_its_catalogue_name_and_account() -> None:
    [event] = _parse({"accountId": 0, "events": [samples.event("CI_STATS")]})
    assert (event.event_name, event.account_id, event.realtime) == ("CI_STATS", 0, True)


def test_generated_event_info_has_the_platform_shape() -> None:
    [event] = _parse(samples.event(eventId="abc", timestamp=1727414643000))
    assert re.fullmatch(r"1727414643000-\d{6}-\d{5}-0", json.loads(event.body)["eventInfo"])


@pytest.mark.parametrize(
    "timestamp", [EARLIEST_MS, EARLIEST_MS + 1, NOW_MS, LATEST_MS - 1, LATEST_MS]
)
def test_timestamps_within_the_range_are_kept(timestamp: int) -> None:
    [event] = _parse(samples.event(timestamp=timestamp))
    assert event.timestamp_ms == timestamp == json.loads(event.body)["timestamp"]


@pytest.mark.parametrize(
    ("timestamp", "message"),
    [
        (LATEST_MS + 1, "expected epoch milliseconds before the year 10000"),
        (2**63, "expected epoch milliseconds before the year 10000"),
        (EARLIEST_MS - 1, f"{EARLIEST_MS - 1} looks like seconds; expected epoch milliseconds"),
        (0, "0 looks like seconds; expected epoch milliseconds"),
        (-1, "expected epoch milliseconds as an integer"),
        (True, "expected epoch milliseconds as an integer"),
        (1727414643000.0, "expected epoch milliseconds as an integer"),
    ],
)
def test_timestamps_outside_the_range_are_refused(timestamp: Any, message: str) -> None:
    assert _problems(samples.event(timestamp=timestamp)) == [("timestamp", message)]


@pytest.mark.parametrize("length", [1, 255, 256])
def test_event_info_up_to_256_characters_is_kept(length: int) -> None:
    [event] = _parse(samples.event(eventInfo="i" * length))
    assert json.loads(event.body)["eventInfo"] == "i" * length


def test_event_info_longer_than_256_characters_is_refused() -> None:
    assert _problems(samples.event(eventInfo="i" * 257)) == [
        ("eventInfo", "expected a string of at most 256 characters")
    ]


def test_values_at_the_limits_raise_no_problem_of_their_own() -> None:
    """An event the fast path refuses is examined field by field: fields that are fine
    (at their limits, or absent) must not be reported with the field that is not."""
    document = samples.event(timestamp=EARLIEST_MS, eventInfo="i" * 256)
    del document["data"]["loId"]
    assert _problems(document) == [("data.loId", "required")]
    document = samples.event(timestamp=LATEST_MS)
    document["data"]["userId"] = "4279332"
    assert _problems(document) == [("data.userId", "expected an integer")]


@pytest.mark.parametrize(
    "data",
    [
        {"big": INT64_MAX, "small": INT64_MIN},
        {"nested": {"list": [INT64_MAX, [INT64_MIN, {"x": 0}]]}},
        {"floats": [1e300, -1e300]},
    ],
)
def test_64_bit_integers_are_kept(data: dict[str, Any]) -> None:
    document = samples.event()
    document["data"].update(data)
    [event] = _parse(document)
    assert json.loads(event.body)["data"] == document["data"]


@pytest.mark.parametrize(
    "extra",
    [
        {"big": INT64_MAX + 1},
        {"small": INT64_MIN - 1},
        {"nested": {"deeper": {"big": 2**70}}},
        {"list": [1, 2, 2**64]},
        {"lists": [[0], [[10**30]]]},
        {"mixed": [{"a": [0, {"b": -(2**100)}]}]},
    ],
)
def test_integers_beyond_64_bits_are_refused_at_any_depth(extra: dict[str, Any]) -> None:
    document = samples.event()
    document["data"].update(extra)
    assert _problems(document) == [("data", HUGE)]
    assert ("events[1].data", HUGE) in _problems({"events": [samples.event(), document]})


def test_a_huge_integer_is_reported_with_the_other_problems_of_its_event() -> None:
    document = samples.event()
    del document["data"]["userId"]
    document["data"]["count"] = 2**64
    assert _problems({"events": [document]}) == [
        ("events[0].data.userId", "required"),
        ("events[0].data", HUGE),
    ]


def test_an_envelope_names_each_problem_with_its_event_index() -> None:
    nan = samples.event()
    nan["data"]["score"] = float("inf")
    surrogate = json.loads('{"eventName": "CI_STATS", "data": {"x": "\\udc00"}}')
    surrogate["data"].update(samples.ALL["CI_STATS"])
    assert _problems(
        {
            "events": [
                nan,
                samples.event(extra=1),
                {"data": {}},
                {"eventName": "CI_STATS"},
                samples.event(eventId="no spaces"),
                samples.event(timestamp=5),
                samples.event(eventInfo=["x"]),
                surrogate,
                nan,
                samples.event(timestamp="1727414643000"),
                samples.event(timestamp=LATEST_MS + 1),
            ]
        }
    ) == [
        ("events[0].data", "contains NaN or Infinity, which JSON cannot carry"),
        ("events[1].extra", "unknown key"),
        ("events[2].eventName", "required"),
        ("events[3].data", "required"),
        (
            "events[4].eventId",
            "expected 1 to 128 characters: letters, digits and . _ : - (a UUID fits)",
        ),
        ("events[5].timestamp", "5 looks like seconds; expected epoch milliseconds"),
        ("events[6].eventInfo", "expected a string of at most 256 characters"),
        ("events[7].data", "contains an invalid Unicode escape (a lone surrogate)"),
        ("events[8].data", "contains NaN or Infinity, which JSON cannot carry"),
        ("events[9].timestamp", "expected epoch milliseconds as an integer"),
        ("events[10].timestamp", "expected epoch milliseconds before the year 10000"),
    ]


@pytest.mark.parametrize("name", [["COURSE_ENROLLMENT"], {"a": 1}, None, 3.5])
def test_an_event_name_that_is_not_a_string_is_refused(name: Any) -> None:
    message = "required" if name is None else "expected a string"
    assert _problems({"eventName": name, "data": {}}) == [("eventName", message)]


@pytest.mark.parametrize(
    ("account_id", "kept"), [(0, 0), (1, 1), (INT64_MAX, INT64_MAX), (None, 1010)]
)
def test_account_ids_within_64_bits(account_id: int | None, kept: int) -> None:
    envelope: dict[str, Any] = {"events": [samples.event()]}
    if account_id is not None:
        envelope["accountId"] = account_id
    assert [e.account_id for e in _parse(envelope)] == [kept]


@pytest.mark.parametrize("account_id", [2**63, 2**100])
def test_an_account_id_beyond_64_bits_is_refused(account_id: int) -> None:
    assert _problems({"accountId": account_id, "events": [samples.event()]}) == [
        ("accountId", "must fit in 64 bits")
    ]


def test_up_to_10000_events_per_request() -> None:
    assert len(_parse({"events": [samples.event("CI_STATS")] * 10_000})) == 10_000
    problems = _problems({"events": [samples.event("CI_STATS")] * 10_001})
    assert problems == [("events", "at most 10000 events per request")]


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_every_catalogue_event_is_accepted_with_its_data_unchanged(name: str) -> None:
    [event] = _parse(samples.event(name))
    assert event.event_name == name
    assert json.loads(event.body)["data"] == samples.ALL[name]


def test_data_keys_keep_the_order_they_came_in() -> None:
    data = {"zeta": 1, **samples.ALL["COURSE_ENROLLMENT"], "alpha": {"y": 2, "b": 1}}
    [event] = _parse({"eventName": "COURSE_ENROLLMENT", "data": data})
    pairs = json.loads(event.body, object_pairs_hook=list)
    assert dict(pairs)["data"][0] == ("zeta", 1)
    assert [key for key, _ in dict(pairs)["data"]] == list(data)
    assert dict(dict(pairs)["data"])["alpha"] == [("y", 2), ("b", 1)]


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("LEARNER_PROGRESS", "progressPercent", 0),
        ("LEARNER_PROGRESS", "progressPercent", 100),
        ("LEARNER_PROGRESS", "progressPercent", 55.5),
        ("COURSE_COMPLETED", "hasPassed", False),
        ("COURSE_ENROLLMENT", "loType", "jobAid"),
    ],
)
def test_valid_field_values_are_accepted(name: str, key: str, value: Any) -> None:
    document = samples.event(name)
    document["data"][key] = value
    [event] = _parse(document)
    assert json.loads(event.body)["data"][key] == value


@pytest.mark.parametrize(
    ("name", "key", "value", "message"),
    [
        ("LEARNER_PROGRESS", "progressPercent", 100.5, "expected a number from 0 to 100"),
        ("LEARNER_PROGRESS", "progressPercent", -1, "expected a number from 0 to 100"),
        ("LEARNER_PROGRESS", "progressPercent", "40", "expected a number from 0 to 100"),
        ("LEARNER_PROGRESS", "progressPercent", True, "expected a number from 0 to 100"),
        ("COURSE_COMPLETED", "hasPassed", 1, "expected a boolean"),
        ("COURSE_COMPLETED", "hasPassed", "true", "expected a boolean"),
        ("COURSE_ENROLLMENT", "loType", 5, "expected a string that is not empty"),
        ("COURSE_ENROLLMENT", "loType", "learning_program", "expected one of course"),
        ("COURSE_ENROLLMENT", "loId", 7374992, "expected a string that is not empty"),
        ("COURSE_ENROLLMENT", "loId", "  ", "expected a string that is not empty"),
        ("COURSE_ENROLLMENT", "userId", 1.0, "expected an integer"),
        ("CI_STATS", "seatLimit", True, "expected an integer"),
    ],
)
def test_invalid_field_values_are_refused(name: str, key: str, value: Any, message: str) -> None:
    document = samples.event(name)
    document["data"][key] = value
    [(path, text)] = _problems(document)
    assert path == f"data.{key}" and text.startswith(message)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("e-1", True),
        ("3f2b8c1e-9a4d-4c6b-8f0e-2d7a5b9c1e3f", True),
        ("a" * 128, True),
        ("course:1_2.x", True),
        ("a" * 129, False),
        ("", False),
        ("-leading-dash", False),
        ("with space", False),
        ("\ud800", False),
        ("\u0661", False),  # a digit, but not ASCII
        (7, False),
        (None, False),
    ],
)
def test_is_event_id_takes_what_ingest_takes(value: object, expected: bool) -> None:
    assert is_event_id(value) is expected
    if isinstance(value, str) and value:  # the same rule as an ingested eventId
        accepted = True
        try:
            _parse(samples.event(eventId=value))
        except InvalidInput:
            accepted = False
        assert accepted is expected


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {
                "events": [
                    {"evntName": "COURSE_ENROLLMENT", "data": samples.ALL["COURSE_ENROLLMENT"]}
                ]
            },
            'events[0].evntName: unknown key; did you mean "eventName"?',
        ),
        (samples.event(evenId="x"), 'evenId: unknown key; did you mean "eventId"?'),
        (
            {"events": [samples.event()], "acountId": 1},
            'acountId: unknown key; did you mean "accountId"?',
        ),
        (samples.event(colour="red"), "colour: unknown key"),
    ],
)
def test_an_unknown_key_names_the_key_it_most_likely_meant(document: Any, expected: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _parse(document)
    first = caught.value.problems[0]
    assert str(first) == expected
    assert caught.value.message.startswith(f"invalid input: {expected}")
    # The API's details keep the bare message; the hint is in the problem's text.
    assert first.message == "unknown key"
