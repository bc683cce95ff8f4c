"""The event catalogue of the learning platform and validation of event ``data``.

Pure: no I/O, no clock. Names are the canonical ones; the typos of the public samples
(``learning_program``, real-time names on batch events) are not accepted as names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from almhookd.errors import Problem


class FieldType(Enum):
    """A JSON type a ``data`` field must have."""

    INTEGER = "an integer"
    NUMBER = "a number"
    STRING = "a string"
    BOOLEAN = "a boolean"
    LO_TYPE = "a learning-object type"
    PERCENT = "a number from 0 to 100"

    def check(self, value: Any) -> str | None:
        """``None`` when ``value`` fits, else what is wrong with it."""
        if self is FieldType.BOOLEAN:
            return None if isinstance(value, bool) else f"expected {self.value}"
        if self is FieldType.INTEGER:
            ok = isinstance(value, int) and not isinstance(value, bool)
            return None if ok else f"expected {self.value}"
        if self in (FieldType.NUMBER, FieldType.PERCENT):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"expected {self.value}"
            if self is FieldType.PERCENT and not 0 <= value <= 100:
                return f"expected {self.value}, got {value}"
            return None
        if not isinstance(value, str) or not value.strip():
            return f"expected {FieldType.STRING.value} that is not empty"
        if self is FieldType.LO_TYPE and value not in LO_TYPES:
            return f"expected one of {', '.join(LO_TYPES)}, got {value!r}"
        return None


#: Learning-object types as the platform's API spells them.
LO_TYPES: Final = ("course", "learningProgram", "certification", "jobAid")

INT, STR, BOOL = FieldType.INTEGER, FieldType.STRING, FieldType.BOOLEAN
_LEARNER_RECORD: Final = {
    "userId": INT,
    "loId": STR,
    "loInstanceId": STR,
    "loType": FieldType.LO_TYPE,
    "enrollmentSource": STR,
}
ENROLMENT: Final = {**_LEARNER_RECORD, "dateEnrolled": INT}
COMPLETION: Final = {**_LEARNER_RECORD, "dateCompleted": INT}
COMPLETION_WITH_RESULT: Final = {**COMPLETION, "hasPassed": BOOL}
UNENROLMENT: Final = dict(_LEARNER_RECORD)
LEARNING_OBJECT: Final = {"loId": STR, "loType": FieldType.LO_TYPE}
LEARNING_OBJECT_INSTANCE: Final = {"loInstanceId": STR, "loId": STR, "loType": FieldType.LO_TYPE}
SEATS: Final = {"loInstanceId": STR, "waitlistCount": INT, "enrollmentCount": INT, "seatLimit": INT}
PROGRESS: Final = {
    "loId": STR,
    "loType": FieldType.LO_TYPE,
    "userId": INT,
    "loInstanceId": STR,
    "dateStarted": INT,
    "progressPercent": FieldType.PERCENT,
}


def _accepts(field_type: FieldType) -> Callable[[Any], bool]:
    """A fast yes/no for a valid value; :meth:`FieldType.check` explains a no."""
    if field_type is FieldType.INTEGER:
        return lambda value: type(value) is int
    if field_type is FieldType.BOOLEAN:
        return lambda value: type(value) is bool
    if field_type is FieldType.NUMBER:
        return lambda value: type(value) is int or type(value) is float
    if field_type is FieldType.PERCENT:
        return lambda value: (type(value) is int or type(value) is float) and 0 <= value <= 100
    if field_type is FieldType.LO_TYPE:
        return lambda value: value in LO_TYPES if type(value) is str else False
    return lambda value: type(value) is str and bool(value.strip())


@dataclass(frozen=True, kw_only=True, slots=True)
class EventType:
    name: str
    realtime: bool
    fields: Mapping[str, FieldType]
    description: str
    checks: tuple[tuple[str, Callable[[Any], bool]], ...] = ()

    def accepts(self, data: dict[str, Any]) -> bool:
        """Whether ``data`` is valid (the fast path; ``validate_data`` says why not)."""
        for key, accepts in self.checks:  # noqa: SIM110 - a plain loop is the fast path
            if key not in data or not accepts(data[key]):
                return False
        return True


def _type(
    name: str, realtime: bool, fields: Mapping[str, FieldType], description: str
) -> EventType:
    return EventType(
        name=name,
        realtime=realtime,
        fields=fields,
        description=description,
        checks=tuple((key, _accepts(field_type)) for key, field_type in fields.items()),
    )


CATALOGUE: Final[Mapping[str, EventType]] = {
    t.name: t
    for t in (
        # Real-time: sent as they happen.
        _type(
            "CI_STATS", True, SEATS, "seat or waitlist availability of a course instance changed"
        ),
        _type("COURSE_ENROLLMENT", True, ENROLMENT, "a learner enrolled in a course"),
        _type("COURSE_COMPLETED", True, COMPLETION_WITH_RESULT, "a learner completed a course"),
        _type("LEARNING_PATH_ENROLLMENT", True, ENROLMENT, "a learner enrolled in a learning path"),
        _type(
            "LEARNING_PATH_COMPLETED",
            True,
            COMPLETION_WITH_RESULT,
            "a learner completed a learning path",
        ),
        _type("CERTIFICATION_ENROLLMENT", True, ENROLMENT, "a learner enrolled in a certification"),
        _type("CERTIFICATION_COMPLETED", True, COMPLETION, "a learner completed a certification"),
        _type("COURSE_UNENROLLMENT", True, UNENROLMENT, "a learner unenrolled from a course"),
        _type(
            "LEARNING_PATH_UNENROLLMENT",
            True,
            UNENROLMENT,
            "a learner unenrolled from a learning path",
        ),
        _type(
            "CERTIFICATION_UNENROLLMENT",
            True,
            UNENROLMENT,
            "a learner unenrolled from a certification",
        ),
        _type(
            "LEARNING_OBJECT_DRAFT", True, LEARNING_OBJECT, "a learning object was created as draft"
        ),
        _type("LEARNING_OBJECT_DELETION", True, LEARNING_OBJECT, "a learning object was deleted"),
        _type(
            "LEARNING_OBJECT_MODIFICATION", True, LEARNING_OBJECT, "a learning object was modified"
        ),
        _type(
            "LEARNING_OBJECT_INSTANCE_MODIFICATION",
            True,
            LEARNING_OBJECT_INSTANCE,
            "a learning object instance was created or modified",
        ),
        _type(
            "LEARNING_OBJECT_INSTANCE_DELETION",
            True,
            LEARNING_OBJECT_INSTANCE,
            "a learning object instance was deleted",
        ),
        # Non-real-time: collected and sent in scheduled batches.
        _type("COURSE_ENROLLMENT_BATCH", False, ENROLMENT, "learners were enrolled in a course"),
        _type(
            "COURSE_COMPLETED_BATCH",
            False,
            COMPLETION_WITH_RESULT,
            "a course was marked completed for learners",
        ),
        _type(
            "LEARNING_PATH_ENROLLMENT_BATCH",
            False,
            ENROLMENT,
            "learners were enrolled in a learning path",
        ),
        _type(
            "LEARNING_PATH_COMPLETED_BATCH",
            False,
            COMPLETION_WITH_RESULT,
            "a learning path was marked completed for learners",
        ),
        _type(
            "CERTIFICATION_ENROLLMENT_BATCH",
            False,
            ENROLMENT,
            "learners were enrolled in a certification",
        ),
        _type(
            "CERTIFICATION_COMPLETED_BATCH",
            False,
            COMPLETION,
            "a certification was marked completed for learners",
        ),
        _type("LEARNER_PROGRESS", False, PROGRESS, "a learner completed a module"),
        _type(
            "COURSE_UNENROLLMENT_BATCH",
            False,
            UNENROLMENT,
            "learners were unenrolled from a course",
        ),
        _type(
            "LEARNING_PATH_UNENROLLMENT_BATCH",
            False,
            UNENROLMENT,
            "learners were unenrolled from a learning path",
        ),
        _type(
            "CERTIFICATION_UNENROLLMENT_BATCH",
            False,
            UNENROLMENT,
            "learners were unenrolled from a certification",
        ),
        _type(
            "LEARNING_OBJECT_MODIFICATION_BATCH",
            False,
            LEARNING_OBJECT,
            "a learning object was modified through the migration workflow",
        ),
        _type(
            "LEARNING_OBJECT_INSTANCE_MODIFICATION_BATCH",
            False,
            LEARNING_OBJECT_INSTANCE,
            "an instance was created or modified through the migration workflow",
        ),
    )
}

REALTIME_EVENTS: Final = frozenset(name for name, t in CATALOGUE.items() if t.realtime)
BATCH_EVENTS: Final = frozenset(name for name, t in CATALOGUE.items() if not t.realtime)


def suggest_event_name(name: str) -> str | None:
    """The canonical name a misspelt one most likely meant, if any."""
    import difflib

    normalised = name.strip().upper().replace("-", "_").replace(" ", "_")
    if normalised in CATALOGUE:
        return normalised
    matches = difflib.get_close_matches(normalised, list(CATALOGUE), n=1, cutoff=0.8)
    return matches[0] if matches else None


def validate_data(event_name: str, data: Any, path: str) -> list[Problem]:
    """The problems of one event's ``data`` object; extra fields are allowed and kept."""
    event_type = CATALOGUE[event_name]
    if not isinstance(data, dict):
        return [Problem(path=path, message="expected a JSON object")]
    problems = []
    for key, field_type in event_type.fields.items():
        if key not in data:
            problems.append(Problem(path=f"{path}.{key}", message="required"))
            continue
        wrong = field_type.check(data[key])
        if wrong:
            problems.append(Problem(path=f"{path}.{key}", message=wrong))
    return problems


_SAMPLE_VALUES: Final[Mapping[str, Any]] = {
    "userId": 4279332,
    "enrollmentSource": "ADMIN_ENROLL",
    "dateEnrolled": 1727414643,
    "dateCompleted": 1727500000,
    "dateStarted": 1727414643,
    "hasPassed": True,
    "progressPercent": 40,
    "waitlistCount": 0,
    "enrollmentCount": 12,
    "seatLimit": 20,
}

#: ``(loId, loInstanceId)`` of a sample learning object of each type; the platform
#: prefixes both ids with the object's type.
_SAMPLE_LEARNING_OBJECTS: Final[Mapping[str, tuple[str, str]]] = {
    "course": ("course:7374992", "course:7374992_10250977"),
    "learningProgram": ("learningProgram:112853", "learningProgram:112853_118937"),
    "certification": ("certification:77412", "certification:77412_81260"),
}


def _sample_lo_type(event_name: str) -> str:
    """The type of learning object a sample of ``event_name`` is about.

    Learning-path and certification events are about their own kind (a receiver that
    files a learning-path enrolment under a course would be misled by its test);
    course events, seat statistics, progress and the generic learning-object events
    use a course.
    """
    if event_name.startswith("LEARNING_PATH_"):
        return "learningProgram"
    if event_name.startswith("CERTIFICATION_"):
        return "certification"
    return "course"


def sample_data(event_name: str) -> dict[str, Any]:
    """A valid ``data`` object for ``event_name``, for test deliveries."""
    lo_type = _sample_lo_type(event_name)
    lo_id, lo_instance_id = _SAMPLE_LEARNING_OBJECTS[lo_type]
    values = {**_SAMPLE_VALUES, "loId": lo_id, "loInstanceId": lo_instance_id, "loType": lo_type}
    return {key: values[key] for key in CATALOGUE[event_name].fields}
