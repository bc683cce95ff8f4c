"""The subscriber toolkit: verification, parsing, de-duplication, the ordering rules."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from almhookd.config import parse_config
from almhookd.delivery.sender import Sender
from almhookd.domain.signing import generate_secret
from almhookd.domain.webhooks import NewWebhook, unsaved_webhook
from almhookd.receiver import (
    Action,
    Decision,
    MemoryDeduplicator,
    OrderingGuard,
    ReceivedEvent,
    SqliteDeduplicator,
    VerificationFailed,
    make_handler,
    parse_payload,
    verify_basic,
    verify_signature,
)

NOW = 1_764_000_000
BODY = b'{"accountId":1010,"events":[]}'


def signed_headers(*secrets: str, body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    """Headers exactly as the daemon's sender makes them."""
    webhook = unsaved_webhook(
        NewWebhook(
            name="x", target_url="http://127.0.0.1/", auth_type="signature", events=frozenset()
        ),
        now_ms=0,
        signing_secrets=secrets,
    )
    sender = Sender(parse_config("", env={}).delivery, clock=lambda: float(timestamp))
    return sender.headers(webhook, message_id="msg_1", body=body, timestamp=timestamp)


# --- verification -------------------------------------------------------------------


def test_accepts_what_the_daemon_signs() -> None:
    secret = generate_secret()
    verify_signature([secret], signed_headers(secret), BODY, now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("tampered body", "no valid signature"),
        ("wrong secret", "no valid signature"),
        ("old timestamp", "tolerance"),
        ("future timestamp", "tolerance"),
        ("missing webhook-signature", "missing webhook-signature"),
        ("missing webhook-id", "missing webhook-id"),
        ("missing webhook-timestamp", "missing webhook-timestamp"),
        ("v2 signature only", "no valid signature"),
    ],
)
def test_rejects(change: str, message: str) -> None:
    secret = generate_secret()
    headers, body, secrets, now = signed_headers(secret), BODY, [secret], float(NOW)
    if change == "tampered body":
        body = body.replace(b"1010", b"1011")
    elif change == "wrong secret":
        secrets = [generate_secret()]
    elif change == "old timestamp":
        now += 301
    elif change == "future timestamp":
        now -= 301
    elif change.startswith("missing"):
        del headers[change.split()[1]]
    elif change == "v2 signature only":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(VerificationFailed, match=message):
        verify_signature(secrets, headers, body, now=now)


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    headers = signed_headers(old, new)
    assert len(headers["webhook-signature"].split()) == 2
    for secrets in ([old], [new], [generate_secret(), new]):
        verify_signature(secrets, headers, BODY, now=NOW)


def test_basic_credentials() -> None:
    import base64

    good = {"Authorization": "Basic " + base64.b64encode(b"lms:p\xc3\xa4ss").decode()}
    verify_basic(good, username="lms", password="päss")
    for headers in ({}, {"Authorization": "Basic bG1zOm5v"}, {"Authorization": "Bearer x"}):
        with pytest.raises(VerificationFailed):
            verify_basic(headers, username="lms", password="päss")


def test_parse_payload() -> None:
    payload = parse_payload(
        json.dumps(
            {
                "accountId": 7,
                "events": [
                    {
                        "eventId": "e1",
                        "eventName": "COURSE_ENROLLMENT",
                        "timestamp": 5,
                        "eventInfo": "i",
                        "data": {"userId": 1, "loInstanceId": "course:1_2"},
                    }
                ],
            }
        ).encode()
    )
    assert payload.account_id == 7
    [event] = payload.events
    assert event.record == (1, "course:1_2") and event.timestamp == 5
    for bad in (b"{", b"[]", b'{"accountId": 1}', b'{"accountId": 1, "events": [{}]}'):
        with pytest.raises(VerificationFailed, match="not an ALM payload"):
            parse_payload(bad)


# --- de-duplication -----------------------------------------------------------------


def test_memory_deduplication_is_bounded() -> None:
    seen = MemoryDeduplicator(capacity=3)
    assert [seen.first_time(i) for i in "abca"] == [True, True, True, False]
    for i in "defg":
        seen.first_time(i)
    assert seen.first_time("a") is True  # forgotten: the bound holds


def test_sqlite_deduplication_survives_a_restart(tmp_path: Path) -> None:
    first = SqliteDeduplicator(tmp_path / "seen.db")
    assert first.first_time("e1") and not first.first_time("e1")
    first.close()
    second = SqliteDeduplicator(tmp_path / "seen.db")
    assert not second.first_time("e1") and second.first_time("e2")
    second.close()


# --- the ordering rules, as tables ----------------------------------------------------

_ids = itertools.count()


def ev(
    name: str, timestamp: int, user: int = 1, instance: str = "course:1_2", **data: Any
) -> ReceivedEvent:
    return ReceivedEvent(
        event_id=f"e{next(_ids)}",
        event_name=name,
        timestamp=timestamp,
        event_info="",
        data={"userId": user, "loInstanceId": instance, **data},
    )


def actions(*events: ReceivedEvent) -> list[str]:
    guard = OrderingGuard()
    return [guard.decide(event).action.value for event in events]


@pytest.mark.parametrize(
    "enrolment",
    [
        "COURSE_ENROLLMENT",
        "COURSE_ENROLLMENT_BATCH",
        "LEARNING_PATH_ENROLLMENT",
        "LEARNING_PATH_ENROLLMENT_BATCH",
        "CERTIFICATION_ENROLLMENT",
        "CERTIFICATION_ENROLLMENT_BATCH",
    ],
)
def test_rule_1_enrolment_after_progress_is_ignored(enrolment: str) -> None:
    assert actions(ev("LEARNER_PROGRESS", 20), ev(enrolment, 30)) == ["process", "superseded"]
    assert actions(ev(enrolment, 10), ev("LEARNER_PROGRESS", 20)) == ["process", "process"]


@pytest.mark.parametrize(
    "completion",
    [
        "COURSE_COMPLETED",
        "COURSE_COMPLETED_BATCH",
        "LEARNING_PATH_COMPLETED",
        "LEARNING_PATH_COMPLETED_BATCH",
        "CERTIFICATION_COMPLETED",
        "CERTIFICATION_COMPLETED_BATCH",
    ],
)
def test_rule_2_progress_after_completion_is_ignored(completion: str) -> None:
    assert actions(ev(completion, 30), ev("LEARNER_PROGRESS", 40)) == ["process", "superseded"]
    assert actions(ev("LEARNER_PROGRESS", 20), ev(completion, 30)) == ["process", "process"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("COURSE_ENROLLMENT", "COURSE_UNENROLLMENT"),
        ("COURSE_UNENROLLMENT_BATCH", "COURSE_ENROLLMENT_BATCH"),
        ("COURSE_COMPLETED", "COURSE_ENROLLMENT"),
        ("COURSE_ENROLLMENT_BATCH", "COURSE_COMPLETED"),
    ],
)
def test_rule_3_older_events_are_stale(first: str, second: str) -> None:
    assert actions(ev(first, 20), ev(second, 10)) == ["process", "stale"]
    assert actions(ev(first, 10), ev(second, 20)) == ["process", "process"]


def test_rule_3_does_not_judge_progress_by_timestamp() -> None:
    assert actions(ev("COURSE_ENROLLMENT", 50), ev("LEARNER_PROGRESS", 10)) == [
        "process",
        "process",
    ]


def test_records_are_separate_and_events_without_a_learner_pass() -> None:
    assert actions(
        ev("LEARNER_PROGRESS", 20, user=1),
        ev("COURSE_ENROLLMENT", 30, user=2),
        ev("COURSE_ENROLLMENT", 30, user=1, instance="course:1_3"),
    ) == ["process", "process", "process"]
    guard = OrderingGuard()
    catalogue = ReceivedEvent(
        event_id="c1",
        event_name="LEARNING_OBJECT_MODIFICATION",
        timestamp=1,
        event_info="",
        data={"loId": "course:1"},
    )
    assert guard.decide(catalogue).action is Action.PROCESS


def test_duplicates_by_event_id() -> None:
    guard = OrderingGuard()
    event = ev("COURSE_ENROLLMENT", 10)
    assert guard.decide(event).process
    assert guard.decide(event) == Decision(
        action=Action.DUPLICATE, reason=f"eventId {event.event_id} seen"
    )


# --- shuffled histories end in the in-order state -------------------------------------


def learner_state(events: list[ReceivedEvent]) -> tuple[str, int | None]:
    """A subscriber's record after applying each processed event as it comes, the
    plain way: an enrolment (re)starts the record, progress moves it on, a completion
    ends it. Without the guard's rules, arrival order would change the outcome."""
    guard = OrderingGuard()
    status, percent = "none", None
    for event in events:
        if not guard.decide(event).process:
            continue
        if event.event_name == "LEARNER_PROGRESS":
            status = "in progress"
            percent = max(percent or 0, int(event.data["progressPercent"]))
        elif "COMPLETED" in event.event_name:
            status, percent = "completed", None
        elif "ENROLLMENT" in event.event_name:
            status, percent = "enrolled", None
    return status, percent


@st.composite
def histories(draw: st.DrawFn) -> list[ReceivedEvent]:
    kind = draw(st.sampled_from(["COURSE", "LEARNING_PATH", "CERTIFICATION"]))
    batch = draw(st.booleans())
    suffix = "_BATCH" if batch else ""
    clock = itertools.count(1_727_000_000_000, 1000)
    history = [ev(f"{kind}_ENROLLMENT{suffix}", next(clock))]
    for percent in sorted(draw(st.lists(st.integers(1, 99), max_size=5, unique=True))):
        history.append(ev("LEARNER_PROGRESS", next(clock), progressPercent=percent))
    if draw(st.booleans()):
        history.append(ev(f"{kind}_COMPLETED{draw(st.sampled_from(['', '_BATCH']))}", next(clock)))
    return history


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_shuffled_history_ends_in_the_in_order_state(data: st.DataObject) -> None:
    history = data.draw(histories())
    shuffled = data.draw(st.permutations(history))
    assert learner_state(shuffled) == learner_state(history)


# --- the aiohttp helper ---------------------------------------------------------------


async def test_the_handler_acknowledges_at_once_and_hands_events_over_after() -> None:
    secret = generate_secret()
    release = asyncio.Event()
    handed: list[tuple[str, str]] = []

    async def on_event(event: ReceivedEvent, decision: Decision) -> None:
        await release.wait()  # slow work: must not hold the acknowledgement
        handed.append((event.event_id, decision.action.value))

    app = web.Application()
    app.router.add_post("/hook", make_handler(on_event, secrets=[secret]))
    body = json.dumps(
        {
            "accountId": 1,
            "events": [
                {
                    "eventId": "a",
                    "eventName": "COURSE_ENROLLMENT",
                    "timestamp": 1,
                    "eventInfo": "",
                    "data": {"userId": 1, "loInstanceId": "x"},
                }
            ]
            * 2,
        }
    ).encode()
    import time

    now = int(time.time())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.post(
            "/hook", data=body, headers=signed_headers(secret, body=body, timestamp=now)
        )
        assert response.status == 202
        assert handed == []
        release.set()
        for _ in range(1000):  # up to 10 s
            if len(handed) == 2:
                break
            await asyncio.sleep(0.01)
        assert handed == [("a", "process"), ("a", "duplicate")]
        response = await client.post(
            "/hook", data=body, headers=signed_headers(generate_secret(), body=body, timestamp=now)
        )
        assert response.status == 401
