from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from almhookd.errors import InvalidInput
from almhookd.ingest import parse_ingest
from tests import samples

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
