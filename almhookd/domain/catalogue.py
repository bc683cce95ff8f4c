"""The event catalogue of the learning platform and validation of event ``data``.

Pure: no I/O, no clock. Names are the canonical ones; the typos of the public samples
(``learning_program``, real-time names on batch events) are not accepted as names.
``catalogue_document()`` is the catalogue as ``GET /v1/catalogue``, ``almhookd events
--json`` and ``docs/EVENTS.md`` show it: all three are made from :data:`CATALOGUE`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Final, Literal

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

    def describe(self) -> dict[str, Any]:
        """The type for machines: its JSON type, and the values or range it allows."""
        if self is FieldType.LO_TYPE:
            return {"type": "string", "enum": list(LO_TYPES)}
        if self is FieldType.PERCENT:
            return {"type": "number", "minimum": 0, "maximum": 100}
        return {"type": _JSON_TYPES[self]}


#: Learning-object types as the platform's API spells them.
LO_TYPES: Final = ("course", "learningProgram", "certification", "jobAid")

_JSON_TYPES: Final[Mapping[FieldType, str]] = {
    FieldType.INTEGER: "integer",
    FieldType.NUMBER: "number",
    FieldType.STRING: "string",
    FieldType.BOOLEAN: "boolean",
}

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


#: No optional fields: the platform's samples carry exactly the fields SPEC.md lists.
NO_FIELDS: Final[Mapping[str, FieldType]] = MappingProxyType({})

Kind = Literal["realtime", "batch"]


@dataclass(frozen=True, kw_only=True, slots=True)
class EventType:
    name: str
    realtime: bool
    #: the required ``data`` fields, in the order the documentation lists them
    fields: Mapping[str, FieldType]
    description: str
    #: fields that may be missing; when present they must have their type
    optional: Mapping[str, FieldType] = field(default_factory=lambda: NO_FIELDS)
    checks: tuple[tuple[str, Callable[[Any], bool]], ...] = ()
    optional_checks: tuple[tuple[str, Callable[[Any], bool]], ...] = ()

    @property
    def kind(self) -> Kind:
        return "realtime" if self.realtime else "batch"

    def accepts(self, data: dict[str, Any]) -> bool:
        """Whether ``data`` is valid (the fast path; ``validate_data`` says why not)."""
        for key, accepts in self.checks:  # plain loops: the fast path
            if key not in data or not accepts(data[key]):
                return False
        for key, accepts in self.optional_checks:
            if key in data and not accepts(data[key]):
                return False
        return True

    def problems(self, data: Any, path: str) -> list[Problem]:
        """What is wrong with ``data`` (``path`` names it); extra fields are allowed."""
        if not isinstance(data, dict):
            return [Problem(path=path, message="expected a JSON object")]
        problems = []
        for key, field_type in self.fields.items():
            if key not in data:
                problems.append(Problem(path=f"{path}.{key}", message="required"))
                continue
            wrong = field_type.check(data[key])
            if wrong:
                problems.append(Problem(path=f"{path}.{key}", message=wrong))
        for key, field_type in self.optional.items():
            wrong = field_type.check(data[key]) if key in data else None
            if wrong:
                problems.append(Problem(path=f"{path}.{key}", message=wrong))
        return problems

    def document(self) -> dict[str, Any]:
        """This event in the catalogue document: required fields first, then optional."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "fields": [
                _field_document(key, field_type, required=required)
                for fields, required in ((self.fields, True), (self.optional, False))
                for key, field_type in fields.items()
            ],
        }


def _field_document(name: str, field_type: FieldType, *, required: bool) -> dict[str, Any]:
    """``{"name", "type", "required"}``, then ``enum`` or ``minimum`` and ``maximum``."""
    described = field_type.describe()
    return {"name": name, "type": described.pop("type"), "required": required, **described}


def event_type(
    name: str,
    realtime: bool,
    fields: Mapping[str, FieldType],
    description: str,
    *,
    optional: Mapping[str, FieldType] = NO_FIELDS,
) -> EventType:
    """An :class:`EventType` with the fast checks of its fields built."""
    return EventType(
        name=name,
        realtime=realtime,
        fields=fields,
        description=description,
        optional=optional,
        checks=tuple((key, _accepts(field_type)) for key, field_type in fields.items()),
        optional_checks=tuple((key, _accepts(field_type)) for key, field_type in optional.items()),
    )


CATALOGUE: Final[Mapping[str, EventType]] = {
    t.name: t
    for t in (
        # Real-time: sent as they happen.
        event_type(
            "CI_STATS", True, SEATS, "seat or waitlist availability of a course instance changed"
        ),
        event_type("COURSE_ENROLLMENT", True, ENROLMENT, "a learner enrolled in a course"),
        event_type(
            "COURSE_COMPLETED", True, COMPLETION_WITH_RESULT, "a learner completed a course"
        ),
        event_type(
            "LEARNING_PATH_ENROLLMENT", True, ENROLMENT, "a learner enrolled in a learning path"
        ),
        event_type(
            "LEARNING_PATH_COMPLETED",
            True,
            COMPLETION_WITH_RESULT,
            "a learner completed a learning path",
        ),
        event_type(
            "CERTIFICATION_ENROLLMENT", True, ENROLMENT, "a learner enrolled in a certification"
        ),
        event_type(
            "CERTIFICATION_COMPLETED", True, COMPLETION, "a learner completed a certification"
        ),
        event_type("COURSE_UNENROLLMENT", True, UNENROLMENT, "a learner unenrolled from a course"),
        event_type(
            "LEARNING_PATH_UNENROLLMENT",
            True,
            UNENROLMENT,
            "a learner unenrolled from a learning path",
        ),
        event_type(
            "CERTIFICATION_UNENROLLMENT",
            True,
            UNENROLMENT,
            "a learner unenrolled from a certification",
        ),
        event_type(
            "LEARNING_OBJECT_DRAFT", True, LEARNING_OBJECT, "a learning object was created as draft"
        ),
        event_type(
            "LEARNING_OBJECT_DELETION", True, LEARNING_OBJECT, "a learning object was deleted"
        ),
        event_type(
            "LEARNING_OBJECT_MODIFICATION", True, LEARNING_OBJECT, "a learning object was modified"
        ),
        event_type(
            "LEARNING_OBJECT_INSTANCE_MODIFICATION",
            True,
            LEARNING_OBJECT_INSTANCE,
            "a learning object instance was created or modified",
        ),
        event_type(
            "LEARNING_OBJECT_INSTANCE_DELETION",
            True,
            LEARNING_OBJECT_INSTANCE,
            "a learning object instance was deleted",
        ),
        # Non-real-time: collected and sent in scheduled batches.
        event_type(
            "COURSE_ENROLLMENT_BATCH", False, ENROLMENT, "learners were enrolled in a course"
        ),
        event_type(
            "COURSE_COMPLETED_BATCH",
            False,
            COMPLETION_WITH_RESULT,
            "a course was marked completed for learners",
        ),
        event_type(
            "LEARNING_PATH_ENROLLMENT_BATCH",
            False,
            ENROLMENT,
            "learners were enrolled in a learning path",
        ),
        event_type(
            "LEARNING_PATH_COMPLETED_BATCH",
            False,
            COMPLETION_WITH_RESULT,
            "a learning path was marked completed for learners",
        ),
        event_type(
            "CERTIFICATION_ENROLLMENT_BATCH",
            False,
            ENROLMENT,
            "learners were enrolled in a certification",
        ),
        event_type(
            "CERTIFICATION_COMPLETED_BATCH",
            False,
            COMPLETION,
            "a certification was marked completed for learners",
        ),
        event_type("LEARNER_PROGRESS", False, PROGRESS, "a learner completed a module"),
        event_type(
            "COURSE_UNENROLLMENT_BATCH",
            False,
            UNENROLMENT,
            "learners were unenrolled from a course",
        ),
        event_type(
            "LEARNING_PATH_UNENROLLMENT_BATCH",
            False,
            UNENROLMENT,
            "learners were unenrolled from a learning path",
        ),
        event_type(
            "CERTIFICATION_UNENROLLMENT_BATCH",
            False,
            UNENROLMENT,
            "learners were unenrolled from a certification",
        ),
        event_type(
            "LEARNING_OBJECT_MODIFICATION_BATCH",
            False,
            LEARNING_OBJECT,
            "a learning object was modified through the migration workflow",
        ),
        event_type(
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
    return CATALOGUE[event_name].problems(data, path)


def catalogue_document() -> dict[str, Any]:
    """``{"events": [{"name", "kind", "description", "fields": [{"name", "type",
    "required", …}]}]}`` in the catalogue's order, which is SPEC.md's: the 15 real-time
    events, then the 12 batched ones. A field's type is its JSON type; a
    learning-object type adds ``enum``, a percentage ``minimum`` and ``maximum``."""
    return {"events": [t.document() for t in CATALOGUE.values()]}


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
