"""The admin API against the whole daemon running in-process, with real receivers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import samples
from tests.support.http_receiver import Receiver
from tests.support.running import Running, daemon_config, eventually, running_daemon, until
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN
from tests.support.verifier import verify


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(daemon_config(tmp_path)) as running:
        yield running


def create_body(url: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": fields.pop("name", "LMS sync"),
        "targetUrl": url,
        "events": fields.pop("events", ["COURSE_ENROLLMENT", "COURSE_COMPLETED"]),
        **fields,
    }


async def ingest(daemon: Running, *events: dict[str, Any]) -> list[str]:
    status, body, _ = await daemon.call(
        "POST", "/v1/events", {"events": list(events)}, token=INGEST_TOKEN
    )
    assert status == 202, body
    return list(body["eventIds"])


# --- CRUD ---------------------------------------------------------------------------


async def test_create_read_list_update_delete(daemon: Running, receiver: Receiver) -> None:
    status, created, _ = await daemon.call(
        "POST",
        "/v1/webhooks",
        create_body(
            receiver.url,
            description="to the HR system",
            contactEmail="lms@example.org",
            auth={"type": "basic", "username": "lms", "password": "s3cret-pass"},
        ),
    )
    assert status == 201, created
    assert created["id"].startswith("wh_")
    assert created["status"] == "active" and created["active"] is True
    assert created["auth"] == {"type": "basic", "username": "lms", "passwordSet": True}
    assert "s3cret-pass" not in str(created)
    assert created["events"] == ["COURSE_COMPLETED", "COURSE_ENROLLMENT"]
    assert created["backlog"] == {"realtime": 0, "batch": 0, "batchHeld": 0}
    for key in ("createdAt", "updatedAt", "contactEmail", "description", "targetUrl"):
        assert key in created

    status, listed, _ = await daemon.call("GET", "/v1/webhooks")
    assert status == 200 and [w["id"] for w in listed["webhooks"]] == [created["id"]]
    status, fetched, _ = await daemon.call("GET", f"/v1/webhooks/{created['id']}")
    assert status == 200 and fetched["name"] == "LMS sync"

    status, patched, _ = await daemon.call(
        "PATCH",
        f"/v1/webhooks/{created['id']}",
        {"name": "LMS sync 2", "events": ["CI_STATS"], "auth": {"type": "signature"}},
    )
    assert status == 200, patched
    assert patched["name"] == "LMS sync 2" and patched["events"] == ["CI_STATS"]
    assert patched["auth"] == {"type": "signature"}
    assert patched["updatedAt"] >= created["updatedAt"]

    status, _, _ = await daemon.call("DELETE", f"/v1/webhooks/{created['id']}")
    assert status == 204
    status, body, _ = await daemon.call("GET", f"/v1/webhooks/{created['id']}")
    assert status == 404 and body["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ({"targetUrl": "http://127.0.0.1:9/", "events": ["CI_STATS"]}, "name", "required"),
        (create_body("ftp://127.0.0.1/"), "targetUrl", "http:// or https://"),
        (create_body("http://127.0.0.1:9/", events=[]), "events", "non-empty"),
        (
            create_body("http://127.0.0.1:9/", events=["COURSE_ENROLMENT"]),
            "events[0]",
            "did you mean COURSE_ENROLLMENT",
        ),
        (
            create_body("http://127.0.0.1:9/", auth={"type": "basic", "username": "u"}),
            "auth.password",
            "required",
        ),
        (create_body("http://127.0.0.1:9/", auth={"type": "token"}), "auth.type", "one of"),
        (create_body("http://127.0.0.1:9/", contactEmail="nobody"), "contactEmail", "e-mail"),
        (create_body("http://127.0.0.1:9/", colour="red"), "colour", "unknown key"),
        (create_body("http://169.254.169.254/latest/"), "targetUrl", "not allowed"),
        (create_body("http://10.0.0.1/hook"), "targetUrl", "not allowed"),
    ],
)
async def test_validation_errors_name_the_field(
    daemon: Running, body: dict[str, Any], path: str, message: str
) -> None:
    status, answer, _ = await daemon.call("POST", "/v1/webhooks", body)
    assert status == 422, answer
    details = answer["error"]["details"]
    assert any(d["path"] == path and message in d["message"] for d in details), details
    assert (await daemon.call("GET", "/v1/webhooks"))[1]["webhooks"] == []


async def test_names_are_unique(daemon: Running, receiver: Receiver) -> None:
    assert (await daemon.call("POST", "/v1/webhooks", create_body(receiver.url)))[0] == 201
    status, answer, _ = await daemon.call("POST", "/v1/webhooks", create_body(receiver.url))
    assert status == 422
    assert answer["error"]["details"][0]["path"] == "name"


async def test_the_sixth_webhook_is_a_409(daemon: Running, receiver: Receiver) -> None:
    for number in range(5):
        status, _, _ = await daemon.call(
            "POST", "/v1/webhooks", create_body(receiver.url, name=f"hook {number}")
        )
        assert status == 201
    status, answer, _ = await daemon.call(
        "POST", "/v1/webhooks", create_body(receiver.url, name="hook 6")
    )
    assert status == 409 and answer["error"]["code"] == "limit_reached"
    assert "at most 5 webhooks" in answer["error"]["message"]


# --- effects on delivery ------------------------------------------------------------


async def test_archive_stops_deliveries_and_reenable_resumes(
    daemon: Running, receiver: Receiver
) -> None:
    _, hook, _ = await daemon.call("POST", "/v1/webhooks", create_body(receiver.url))
    [first] = await ingest(daemon, samples.event())
    await until(lambda: receiver.all_event_ids() == [first])

    status, archived, _ = await daemon.call(
        "PATCH", f"/v1/webhooks/{hook['id']}", {"active": False}
    )
    assert status == 200 and archived["status"] == "inactive" and not archived["active"]
    [second] = await ingest(daemon, samples.event())
    # Acknowledged means committed: an archived webhook got no delivery of it to send.
    assert hook["id"] not in await daemon.delivery_states(second)
    status, after_ingest, _ = await daemon.call("GET", f"/v1/webhooks/{hook['id']}")
    assert status == 200 and after_ingest["backlog"]["realtime"] == 0

    status, enabled, _ = await daemon.call("PATCH", f"/v1/webhooks/{hook['id']}", {"active": True})
    assert status == 200 and enabled["status"] == "active"
    [third] = await ingest(daemon, samples.event())
    await until(lambda: receiver.all_event_ids() == [first, third])
    # Replaying the event ingested while archived delivers it under a new webhook-id.
    status, replayed, _ = await daemon.call(
        "POST", f"/v1/webhooks/{hook['id']}/replay", {"eventIds": [second, first]}
    )
    assert status == 202 and replayed == {"queued": 2}
    await until(lambda: len(receiver.all_event_ids()) == 4)
    assert receiver.received[-1].event_ids == [first, second]
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(set(ids)) == len(ids)


async def test_a_new_target_applies_to_the_next_request(
    daemon: Running, receiver: Receiver
) -> None:
    other = await Receiver().start()
    try:
        _, hook, _ = await daemon.call("POST", "/v1/webhooks", create_body(receiver.url))
        await ingest(daemon, samples.event())
        await until(lambda: len(receiver.received) == 1)
        await daemon.call("PATCH", f"/v1/webhooks/{hook['id']}", {"targetUrl": other.url})
        [moved] = await ingest(daemon, samples.event())
        await until(lambda: other.all_event_ids() == [moved])
        assert len(receiver.received) == 1
    finally:
        await other.stop()


async def test_deleting_removes_pending_deliveries(daemon: Running) -> None:
    _, hook, _ = await daemon.call(
        "POST", "/v1/webhooks", create_body("http://127.0.0.1:9/nothing-listens")
    )
    [event_id] = await ingest(daemon, samples.event())
    assert (await daemon.call("DELETE", f"/v1/webhooks/{hook['id']}"))[0] == 204
    status, event, _ = await daemon.call("GET", f"/v1/events/{event_id}")
    assert status == 200 and event["deliveries"] == []


# --- test deliveries and secrets ----------------------------------------------------


async def test_test_delivery_to_a_live_and_a_dead_receiver(
    daemon: Running, receiver: Receiver
) -> None:
    _, hook, _ = await daemon.call(
        "POST", "/v1/webhooks", create_body(receiver.url, auth={"type": "signature"})
    )
    _, secret, _ = await daemon.call("GET", f"/v1/webhooks/{hook['id']}/secret")
    status, result, _ = await daemon.call("POST", f"/v1/webhooks/{hook['id']}/test")
    assert status == 200
    assert result["ok"] is True and result["status"] == 202 and result["error"] is None
    assert result["responseBody"] == "answer 202" and result["durationMs"] >= 0
    [request] = receiver.received
    assert request.headers["almhookd-test"] == "true"
    assert verify(secret["secret"], request.headers, request.body)
    assert request.payload["events"][0]["eventName"] == "COURSE_COMPLETED"  # first subscribed
    assert request.payload["events"][0]["eventId"].startswith("test-")
    # Out of band: nothing was queued or logged as a delivery.
    assert (await daemon.call("GET", f"/v1/webhooks/{hook['id']}/attempts"))[1]["attempts"] == []

    receiver.respond(500)
    status, result, _ = await daemon.call("POST", f"/v1/webhooks/{hook['id']}/test")
    assert status == 200 and result["ok"] is False and result["status"] == 500
    _, dead, _ = await daemon.call(
        "POST", "/v1/webhooks", create_body("http://127.0.0.1:9/", name="dead")
    )
    status, result, _ = await daemon.call("POST", f"/v1/webhooks/{dead['id']}/test")
    assert result["ok"] is False and result["status"] is None
    assert "cannot connect" in result["error"]


async def test_a_draft_can_be_tested_before_saving(daemon: Running, receiver: Receiver) -> None:
    status, result, _ = await daemon.call(
        "POST",
        "/v1/webhooks/test",
        create_body(receiver.url, auth={"type": "signature"}, events=["LEARNER_PROGRESS"]),
    )
    assert status == 200 and result["ok"] is True
    [request] = receiver.received
    assert verify(result["signingSecret"], request.headers, request.body)
    assert request.payload["events"][0]["eventName"] == "LEARNER_PROGRESS"
    assert (await daemon.call("GET", "/v1/webhooks"))[1]["webhooks"] == []
    status, answer, _ = await daemon.call(
        "POST", "/v1/webhooks/test", create_body("http://10.1.2.3/")
    )
    assert status == 422 and answer["error"]["details"][0]["path"] == "targetUrl"


async def test_secret_download_and_rotation_with_a_grace_period(
    daemon: Running, receiver: Receiver
) -> None:
    _, hook, _ = await daemon.call(
        "POST", "/v1/webhooks", create_body(receiver.url, auth={"type": "signature"})
    )
    status, old, headers = await daemon.call("GET", f"/v1/webhooks/{hook['id']}/secret")
    assert status == 200
    assert headers["Content-Disposition"].startswith("attachment;")
    assert old["webhookId"] == hook["id"] and old["secret"].startswith("whsec_")
    assert old["headers"]["signature"] == "webhook-signature"
    assert old["secret"] not in str((await daemon.call("GET", f"/v1/webhooks/{hook['id']}"))[1])

    status, new, _ = await daemon.call("POST", f"/v1/webhooks/{hook['id']}/secret/rotate")
    assert status == 200 and new["secret"] != old["secret"]
    assert new["graceSeconds"] == 86_400 and len(new["previousSecretsValidUntil"]) == 1
    [event_id] = await ingest(daemon, samples.event())
    await until(lambda: receiver.all_event_ids() == [event_id])
    [request] = receiver.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old["secret"], new["secret"]):  # a receiver holding either verifies
        assert verify(secret, request.headers, request.body)

    _, plain, _ = await daemon.call("POST", "/v1/webhooks", create_body(receiver.url, name="plain"))
    assert (await daemon.call("GET", f"/v1/webhooks/{plain['id']}/secret"))[0] == 409


# --- inspection ---------------------------------------------------------------------


async def test_deliveries_and_attempts_are_paginated(daemon: Running, receiver: Receiver) -> None:
    _, hook, _ = await daemon.call("POST", "/v1/webhooks", create_body(receiver.url))
    ids = await ingest(daemon, *(samples.event() for _ in range(5)))
    await until(lambda: len(receiver.all_event_ids()) == 5)
    await daemon.until_delivered(hook["id"], *ids)
    seen: list[str] = []
    cursor = None
    while True:
        query = "?state=delivered&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await daemon.call("GET", f"/v1/webhooks/{hook['id']}/deliveries{query}")
        assert status == 200
        seen += [d["eventId"] for d in page["deliveries"]]
        assert all(d["state"] == "delivered" for d in page["deliveries"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ids
    status, attempts, _ = await daemon.call("GET", f"/v1/webhooks/{hook['id']}/attempts")
    assert status == 200 and attempts["attempts"][0]["status"] == 202
    assert sum(a["eventCount"] for a in attempts["attempts"]) == 5
    for bad in ("?state=lost", "?limit=0", "?cursor=abc"):
        status, _, _ = await daemon.call("GET", f"/v1/webhooks/{hook['id']}/deliveries{bad}")
        assert status == 400


async def test_replay_since_a_time(daemon: Running, receiver: Receiver) -> None:
    _, hook, _ = await daemon.call("POST", "/v1/webhooks", create_body(receiver.url))
    ids = await ingest(daemon, samples.event(), samples.event())
    await daemon.until_delivered(hook["id"], *ids)
    status, answer, _ = await daemon.call("POST", f"/v1/webhooks/{hook['id']}/replay", {"since": 0})
    assert status == 202 and answer == {"queued": 2}
    await until(lambda: len(receiver.all_event_ids()) == 4)
    assert receiver.all_event_ids() == ids + ids
    bad_bodies: list[dict[str, Any]] = [
        {},
        {"since": -1},
        {"since": 2**63},
        {"eventIds": []},
        {"since": 0, "eventIds": ["x"]},
    ]
    for bad in bad_bodies:
        assert (await daemon.call("POST", f"/v1/webhooks/{hook['id']}/replay", bad))[0] == 422


async def test_status_lists_every_webhook(daemon: Running, receiver: Receiver) -> None:
    await daemon.call("POST", "/v1/webhooks", create_body(receiver.url))
    status, body, _ = await daemon.call("GET", "/v1/status")
    assert status == 200
    [entry] = body["webhooks"]
    assert entry["name"] == "LMS sync" and entry["status"] == "active"
    assert isinstance(body["nextFlushAt"], int)


# --- authorisation on every admin route ---------------------------------------------

ADMIN_ROUTES = [
    ("GET", "/v1/webhooks"),
    ("POST", "/v1/webhooks"),
    ("POST", "/v1/webhooks/test"),
    ("GET", "/v1/webhooks/wh_x"),
    ("PATCH", "/v1/webhooks/wh_x"),
    ("DELETE", "/v1/webhooks/wh_x"),
    ("POST", "/v1/webhooks/wh_x/test"),
    ("GET", "/v1/webhooks/wh_x/secret"),
    ("POST", "/v1/webhooks/wh_x/secret/rotate"),
    ("GET", "/v1/webhooks/wh_x/deliveries"),
    ("GET", "/v1/webhooks/wh_x/attempts"),
    ("POST", "/v1/webhooks/wh_x/replay"),
    ("GET", "/v1/status"),
    ("POST", "/v1/batch/flush"),
    ("GET", "/v1/events/some-id"),
]


async def test_every_admin_route_needs_the_admin_token(daemon: Running) -> None:
    for method, path in ADMIN_ROUTES:
        for token, expected in ((None, 401), ("wrong-token-0123456789", 401), (INGEST_TOKEN, 403)):
            status, body, _ = await daemon.call(method, path, {}, token=token)
            assert status == expected, (method, path, token, body)
            assert body["error"]["code"] in ("unauthorized", "forbidden")


async def test_metrics_in_the_prometheus_text_format(daemon: Running, receiver: Receiver) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    _, hook, _ = await daemon.call("POST", "/v1/webhooks", create_body(receiver.url))
    ids = await ingest(daemon, samples.event(), samples.event(), samples.event("CI_STATS"))
    await ingest(daemon, samples.event(eventId=ids[0]))  # a duplicate
    await until(lambda: len(receiver.all_event_ids()) == 2)  # CI_STATS is not subscribed
    await daemon.until_delivered(hook["id"], *ids[:2])
    async with daemon.session.get(
        daemon.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples_by_name: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples_by_name[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(name: str, **labels: str) -> float:
        return samples_by_name[(name, tuple(sorted(labels.items())))]

    assert value("almhookd_events_ingested_total", event_name="COURSE_ENROLLMENT") == 2
    assert value("almhookd_events_ingested_total", event_name="CI_STATS") == 1
    assert value("almhookd_events_duplicate_total") == 1
    assert value("almhookd_deliveries_total", webhook_id=hook["id"], outcome="delivered") == 2
    assert value("almhookd_attempts_total", webhook_id=hook["id"], status_class="2xx") >= 1
    assert value("almhookd_delivery_latency_seconds_count") == 2
    assert value("almhookd_backlog_events", webhook_id=hook["id"], kind="realtime") == 0
    assert value("almhookd_oldest_pending_age_seconds", webhook_id=hook["id"]) == 0
    assert value("almhookd_webhooks", status="active") == 1
    assert value("almhookd_expired_events_total") == 0


async def test_an_event_shows_its_state_per_webhook(daemon: Running, receiver: Receiver) -> None:
    _, live, _ = await daemon.call("POST", "/v1/webhooks", create_body(receiver.url))
    _, dead, _ = await daemon.call(
        "POST", "/v1/webhooks", create_body("http://127.0.0.1:9/", name="dead")
    )
    [event_id] = await ingest(daemon, samples.event())
    await daemon.until_delivered(live["id"], event_id)

    async def dead_attempted() -> bool:
        _, event, _ = await daemon.call("GET", f"/v1/events/{event_id}")
        return any(d["webhookId"] == dead["id"] and d["attempts"] for d in event["deliveries"])

    await eventually(dead_attempted, what="an attempt at the dead webhook")
    status, event, _ = await daemon.call("GET", f"/v1/events/{event_id}")
    assert status == 200
    states = {d["webhookId"]: d for d in event["deliveries"]}
    assert states[live["id"]]["state"] == "delivered"
    assert states[live["id"]]["deliveredAt"] is not None
    assert states[dead["id"]]["state"] in ("pending", "sending")
    assert states[dead["id"]]["attempts"] >= 1


# --- what cannot be taken as given --------------------------------------------------


async def test_control_characters_and_broken_unicode_are_a_422_and_nothing_is_stored(
    daemon: Running, receiver: Receiver
) -> None:
    refused = [
        (create_body(receiver.url, name="LMS\u202esync"), "name", "U+202E"),
        (create_body(receiver.url, description="a\x00b"), "description", "U+0000"),
        (create_body(receiver.url + "\r\nX-Injected: 1"), "targetUrl", "U+000D"),
        (create_body(receiver.url + " x"), "targetUrl", "U+0020"),
        (create_body(receiver.url, name="LMS \ud800"), "name", "not valid Unicode"),
        (
            create_body(
                receiver.url, auth={"type": "basic", "username": "u", "password": "\udfff"}
            ),
            "auth.password",
            "not valid Unicode",
        ),
    ]
    for body, field, reason in refused:
        status, answer, _ = await daemon.call("POST", "/v1/webhooks", body)
        assert status == 422, (body, answer)
        [detail] = answer["error"]["details"]
        assert detail["path"] == field and reason in detail["message"], answer
        status, answer, _ = await daemon.call("POST", "/v1/webhooks/test", body)
        assert status == 422, (body, answer)
    status, listed, _ = await daemon.call("GET", "/v1/webhooks")
    assert status == 200 and listed["webhooks"] == []
    assert receiver.received == [], "no draft test was sent"

    status, hook, _ = await daemon.call("POST", "/v1/webhooks", create_body(receiver.url))
    assert status == 201, hook
    for body, field, _reason in refused:
        change = {field.split(".")[0]: body[field.split(".")[0]]}
        status, answer, _ = await daemon.call("PATCH", f"/v1/webhooks/{hook['id']}", change)
        assert status == 422 and answer["error"]["details"][0]["path"] == field, answer
    status, unchanged, _ = await daemon.call("GET", f"/v1/webhooks/{hook['id']}")
    assert status == 200
    assert (unchanged["name"], unchanged["description"], unchanged["targetUrl"]) == (
        "LMS sync",
        "",
        receiver.url,
    )
