from __future__ import annotations

import copy
from typing import Any

import pytest

from almhookd.domain.catalogue import (
    BATCH_EVENTS,
    CATALOGUE,
    LO_TYPES,
    REALTIME_EVENTS,
    FieldType,
    catalogue_document,
    event_type,
    sample_data,
    suggest_event_name,
    validate_data,
)
from tests.support import samples
from tests.support.samples import expected_lo_type


def test_the_catalogue_has_the_27_events_of_the_spec() -> None:
    assert len(CATALOGUE) == 27
    assert set(samples.REALTIME) == REALTIME_EVENTS
    assert set(samples.BATCH) == BATCH_EVENTS


def test_sample_typos_are_not_names() -> None:
    assert "learning_program" not in str(CATALOGUE)
    assert all(name == name.upper() for name in CATALOGUE)


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_a_valid_payload_passes(name: str) -> None:
    assert validate_data(name, samples.ALL[name], "data") == []


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_every_listed_field_is_required(name: str) -> None:
    for key in samples.ALL[name]:
        data = {k: v for k, v in samples.ALL[name].items() if k != key}
        problems = validate_data(name, data, "events[3].data")
        assert [(p.path, p.message) for p in problems] == [(f"events[3].data.{key}", "required")]


def _wrong_value(value: Any) -> Any:
    return "not-a-number" if isinstance(value, int | float) else 12345


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_a_wrongly_typed_field_is_named(name: str) -> None:
    for key, value in samples.ALL[name].items():
        data = copy.deepcopy(samples.ALL[name])
        data[key] = _wrong_value(value)
        problems = validate_data(name, data, "data")
        assert len(problems) == 1 and problems[0].path == f"data.{key}", (name, key)
        assert problems[0].message.startswith("expected")


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_data_must_be_an_object(name: str) -> None:
    problems = validate_data(name, [samples.ALL[name]], "data")
    assert [(p.path, p.message) for p in problems] == [("data", "expected a JSON object")]


def test_extra_fields_are_allowed() -> None:
    data = {**samples.ALL["COURSE_ENROLLMENT"], "customField": {"x": 1}}
    assert validate_data("COURSE_ENROLLMENT", data, "data") == []


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("userId", True, "expected an integer"),
        ("userId", 1.5, "expected an integer"),
        ("loType", "learning_program", "expected one of course, learningProgram"),
        ("loId", "", "expected a string that is not empty"),
    ],
)
def test_value_checks(key: str, value: Any, message: str) -> None:
    data = {**samples.ALL["COURSE_ENROLLMENT"], key: value}
    problems = validate_data("COURSE_ENROLLMENT", data, "data")
    assert len(problems) == 1 and problems[0].message.startswith(message)


@pytest.mark.parametrize(
    ("percent", "ok"),
    [(0, True), (100, True), (55.5, True), (-1, False), (101, False), ("40", False)],
)
def test_progress_percent_is_bounded(percent: Any, ok: bool) -> None:
    data = {**samples.ALL["LEARNER_PROGRESS"], "progressPercent": percent}
    assert (validate_data("LEARNER_PROGRESS", data, "data") == []) is ok


def test_has_passed_is_required_on_course_and_path_completions_only() -> None:
    for name in (
        "COURSE_COMPLETED",
        "LEARNING_PATH_COMPLETED",
        "COURSE_COMPLETED_BATCH",
        "LEARNING_PATH_COMPLETED_BATCH",
    ):
        assert "hasPassed" in CATALOGUE[name].fields
    for name in ("CERTIFICATION_COMPLETED", "CERTIFICATION_COMPLETED_BATCH"):
        assert "hasPassed" not in CATALOGUE[name].fields


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_every_missing_field_is_named_in_the_catalogue_order(name: str) -> None:
    problems = validate_data(name, {}, "events[0].data")
    assert [(p.path, p.message) for p in problems] == [
        (f"events[0].data.{key}", "required") for key in CATALOGUE[name].fields
    ]


@pytest.mark.parametrize(
    ("typed", "suggestion"),
    [
        ("course_enrollment", "COURSE_ENROLLMENT"),
        (" Course Enrollment ", "COURSE_ENROLLMENT"),
        ("learning-path-completed", "LEARNING_PATH_COMPLETED"),
        ("COURSE_ENROLMENT", "COURSE_ENROLLMENT"),
        # Short names: only the separators, read as underscores, make them close enough.
        ("ci-sta", "CI_STATS"),
        ("ci sta", "CI_STATS"),
        # Not close enough to any name for a hint.
        ("enrollment", None),
        ("ci_st", None),
        ("", None),
    ],
)
def test_a_misspelt_event_name_gets_a_hint_only_when_close(
    typed: str, suggestion: str | None
) -> None:
    assert suggest_event_name(typed) == suggestion


def test_every_event_type_is_described() -> None:
    assert all(t.description.strip() for t in CATALOGUE.values())
    assert CATALOGUE["COURSE_ENROLLMENT"].description == "a learner enrolled in a course"


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_the_sample_data_of_every_event_is_valid(name: str) -> None:
    assert validate_data(name, sample_data(name), "data") == []
    assert list(sample_data(name)) == list(CATALOGUE[name].fields)


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_the_sample_data_is_about_a_learning_object_of_the_events_kind(name: str) -> None:
    data = sample_data(name)
    kind = expected_lo_type(name)
    assert data.get("loType", kind) == kind
    ids = {key: data[key] for key in ("loId", "loInstanceId") if key in data}
    assert ids, "every event names a learning object or an instance of one"
    for key, value in ids.items():
        assert value.startswith(f"{kind}:"), (key, value)
    if "loId" in ids and "loInstanceId" in ids:  # an instance of that very object
        assert ids["loInstanceId"].startswith(f"{ids['loId']}_")


def test_learning_path_and_certification_samples_are_not_a_courses() -> None:
    assert sample_data("LEARNING_PATH_ENROLLMENT")["loType"] == "learningProgram"
    assert sample_data("CERTIFICATION_UNENROLLMENT_BATCH")["loId"].startswith("certification:")
    assert sample_data("COURSE_COMPLETED")["loId"].startswith("course:")


# --- the catalogue document (GET /v1/catalogue, almhookd events, docs/EVENTS.md) ------


def test_the_document_lists_the_events_in_the_order_of_the_spec() -> None:
    """SPEC.md's tables: the 15 real-time events, then the 12 batched ones (``samples``
    lists them in that order, written out from SPEC.md apart from the catalogue)."""
    events = catalogue_document()["events"]
    assert [e["name"] for e in events] == [*samples.REALTIME, *samples.BATCH]
    assert [e["kind"] for e in events] == ["realtime"] * 15 + ["batch"] * 12
    assert all(set(e) == {"name", "kind", "description", "fields"} for e in events)
    assert events[1]["description"] == "a learner enrolled in a course"


#: The JSON type a field's value has in the hand-written samples.
_JSON_TYPE_OF_VALUE = {bool: "boolean", int: "integer", float: "number", str: "string"}


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_the_document_names_the_fields_of_each_sample_with_their_types(name: str) -> None:
    [event] = [e for e in catalogue_document()["events"] if e["name"] == name]
    sample = samples.ALL[name]
    assert [f["name"] for f in event["fields"]] == list(sample)
    for field in event["fields"]:
        assert field["required"] is True, field  # SPEC.md lists no optional field
        expected = _JSON_TYPE_OF_VALUE[type(sample[field["name"]])]
        if field["name"] == "progressPercent":  # a number, whole in the sample
            expected = "number"
        assert field["type"] == expected, (name, field)


def test_the_document_gives_the_values_a_field_allows() -> None:
    fields = {f["name"]: f for f in catalogue_document()["events"][21]["fields"]}
    assert catalogue_document()["events"][21]["name"] == "LEARNER_PROGRESS"
    assert fields["loType"] == {
        "name": "loType",
        "type": "string",
        "required": True,
        "enum": ["course", "learningProgram", "certification", "jobAid"],
    }
    assert fields["progressPercent"] == {
        "name": "progressPercent",
        "type": "number",
        "required": True,
        "minimum": 0,
        "maximum": 100,
    }
    assert fields["userId"] == {"name": "userId", "type": "integer", "required": True}


@pytest.mark.parametrize(
    ("field_type", "described"),
    [
        (FieldType.INTEGER, {"type": "integer"}),
        (FieldType.NUMBER, {"type": "number"}),
        (FieldType.STRING, {"type": "string"}),
        (FieldType.BOOLEAN, {"type": "boolean"}),
        (FieldType.LO_TYPE, {"type": "string", "enum": list(LO_TYPES)}),
        (FieldType.PERCENT, {"type": "number", "minimum": 0, "maximum": 100}),
    ],
)
def test_every_field_type_is_described_for_machines(
    field_type: FieldType, described: dict[str, Any]
) -> None:
    assert field_type.describe() == described


def test_the_document_is_a_new_object_each_time() -> None:
    first = catalogue_document()
    first["events"][0]["fields"][0]["required"] = False
    first["events"].clear()
    assert len(catalogue_document()["events"]) == 27
    assert catalogue_document()["events"][0]["fields"][0]["required"] is True


# --- optional fields: checked when present, never required ----------------------------

_WITH_OPTIONAL = event_type(
    "EXAMPLE",
    False,
    {"userId": FieldType.INTEGER},
    "an example",
    optional={"hasPassed": FieldType.BOOLEAN},
)


def test_an_optional_field_may_be_missing() -> None:
    assert _WITH_OPTIONAL.accepts({"userId": 1})
    assert _WITH_OPTIONAL.problems({"userId": 1}, "data") == []


def test_an_optional_field_present_must_have_its_type() -> None:
    assert _WITH_OPTIONAL.accepts({"userId": 1, "hasPassed": True})
    assert not _WITH_OPTIONAL.accepts({"userId": 1, "hasPassed": "yes"})
    problems = _WITH_OPTIONAL.problems({"hasPassed": "yes"}, "events[2].data")
    assert [(p.path, p.message) for p in problems] == [
        ("events[2].data.userId", "required"),
        ("events[2].data.hasPassed", "expected a boolean"),
    ]


def test_optional_fields_follow_the_required_ones_in_the_document() -> None:
    assert _WITH_OPTIONAL.kind == "batch"
    assert _WITH_OPTIONAL.document() == {
        "name": "EXAMPLE",
        "kind": "batch",
        "description": "an example",
        "fields": [
            {"name": "userId", "type": "integer", "required": True},
            {"name": "hasPassed", "type": "boolean", "required": False},
        ],
    }


def test_the_catalogue_declares_no_optional_field() -> None:
    assert all(not t.optional and not t.optional_checks for t in CATALOGUE.values())
