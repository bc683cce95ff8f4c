"""One realistic ``data`` object per catalogue event, written out by hand from SPEC.md.

Kept independent of ``almhookd.domain.catalogue`` on purpose: the tests compare the catalogue
against these, not against itself.
"""

from __future__ import annotations

from typing import Any

_ENROL = {
    "userId": 4279332,
    "loId": "course:7374992",
    "loInstanceId": "course:7376092_10250977",
    "loType": "course",
    "enrollmentSource": "ADMIN_ENROLL",
    "dateEnrolled": 1727414643,
}
_LP_ENROL = {
    **_ENROL,
    "loId": "learningProgram:112",
    "loInstanceId": "learningProgram:112_3",
    "loType": "learningProgram",
}
_CERT_ENROL = {
    **_ENROL,
    "loId": "certification:77",
    "loInstanceId": "certification:77_1",
    "loType": "certification",
}


def _completion(enrolment: dict[str, Any], *, has_passed: bool | None) -> dict[str, Any]:
    """A completion; certifications carry no ``hasPassed`` (``None``)."""
    done = {k: v for k, v in enrolment.items() if k != "dateEnrolled"}
    done["dateCompleted"] = 1727500000
    if has_passed is not None:
        done["hasPassed"] = has_passed
    return done


def _unenrol(enrolment: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in enrolment.items() if k != "dateEnrolled"}


_LO = {"loId": "course:7374992", "loType": "course"}
_LO_INSTANCE = {
    "loInstanceId": "course:7374992_10250977",
    "loId": "course:7374992",
    "loType": "course",
}

REALTIME: dict[str, dict[str, Any]] = {
    "CI_STATS": {
        "loInstanceId": "course:7374992_10250977",
        "waitlistCount": 3,
        "enrollmentCount": 20,
        "seatLimit": 20,
    },
    "COURSE_ENROLLMENT": _ENROL,
    "COURSE_COMPLETED": _completion(_ENROL, has_passed=True),
    "LEARNING_PATH_ENROLLMENT": _LP_ENROL,
    "LEARNING_PATH_COMPLETED": _completion(_LP_ENROL, has_passed=False),
    "CERTIFICATION_ENROLLMENT": _CERT_ENROL,
    "CERTIFICATION_COMPLETED": _completion(_CERT_ENROL, has_passed=None),
    "COURSE_UNENROLLMENT": _unenrol(_ENROL),
    "LEARNING_PATH_UNENROLLMENT": _unenrol(_LP_ENROL),
    "CERTIFICATION_UNENROLLMENT": _unenrol(_CERT_ENROL),
    "LEARNING_OBJECT_DRAFT": _LO,
    "LEARNING_OBJECT_DELETION": _LO,
    "LEARNING_OBJECT_MODIFICATION": _LO,
    "LEARNING_OBJECT_INSTANCE_MODIFICATION": _LO_INSTANCE,
    "LEARNING_OBJECT_INSTANCE_DELETION": _LO_INSTANCE,
}

BATCH: dict[str, dict[str, Any]] = {
    "COURSE_ENROLLMENT_BATCH": _ENROL,
    "COURSE_COMPLETED_BATCH": _completion(_ENROL, has_passed=True),
    "LEARNING_PATH_ENROLLMENT_BATCH": _LP_ENROL,
    "LEARNING_PATH_COMPLETED_BATCH": _completion(_LP_ENROL, has_passed=True),
    "CERTIFICATION_ENROLLMENT_BATCH": _CERT_ENROL,
    "CERTIFICATION_COMPLETED_BATCH": _completion(_CERT_ENROL, has_passed=None),
    "LEARNER_PROGRESS": {
        "loId": "course:7374992",
        "loType": "course",
        "userId": 4279332,
        "loInstanceId": "course:7374992_10250977",
        "dateStarted": 1727414643,
        "progressPercent": 40,
    },
    "COURSE_UNENROLLMENT_BATCH": _unenrol(_ENROL),
    "LEARNING_PATH_UNENROLLMENT_BATCH": _unenrol(_LP_ENROL),
    "CERTIFICATION_UNENROLLMENT_BATCH": _unenrol(_CERT_ENROL),
    "LEARNING_OBJECT_MODIFICATION_BATCH": _LO,
    "LEARNING_OBJECT_INSTANCE_MODIFICATION_BATCH": _LO_INSTANCE,
}

ALL: dict[str, dict[str, Any]] = {**REALTIME, **BATCH}


def event(name: str = "COURSE_ENROLLMENT", **extra: Any) -> dict[str, Any]:
    return {"eventName": name, "data": dict(ALL[name]), **extra}


def expected_lo_type(event_name: str) -> str:
    """The learning-object type an event is about, read from its name as SPEC.md puts
    it: learning paths are ``learningProgram`` objects, certifications
    ``certification``; the rest (course events, seat statistics, progress, the generic
    learning-object events) are written for a course."""
    if event_name.startswith("LEARNING_PATH_"):
        return "learningProgram"
    if event_name.startswith("CERTIFICATION_"):
        return "certification"
    return "course"
