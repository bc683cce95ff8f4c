from __future__ import annotations

import copy
from typing import Any

import pytest

from almhookd.domain.catalogue import (
    BATCH_EVENTS,
    CATALOGUE,
    REALTIME_EVENTS,
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
