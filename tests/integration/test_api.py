from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from almhookd.api.common import STATE
from almhookd.domain.policy import Schedule
from almhookd.domain.webhooks import NewWebhook
from almhookd.storage.sqlite import SqliteStorage
from tests.support import samples
from tests.support.clock import FakeClock
from tests.support.tokens import ADMIN_TOKEN, admin_headers, ingest_headers

Client = TestClient[web.Request, web.Application]


async def _post(
    client: Client, body: Any, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, Any]:
    response = await client.post(
        "/v1/events", json=body, headers=headers or ingest_headers(), **kwargs
    )
    return response.status, await response.json()


async def test_ingest_a_single_event(client: Client, store: SqliteStorage) -> None:
    status, body = await _post(client, samples.event(eventId="e-1"))
    assert status == 202
    assert body == {"accepted": 1, "duplicates": 0, "eventIds": ["e-1"]}
    stored = await store.get_event("e-1")
    assert stored is not None and stored.account_id == 1010


async def test_ingest_an_envelope_with_generated_ids(client: Client, store: SqliteStorage) -> None:
    status, body = await _post(
        client,
        {
            "accountId": 5,
            "events": [samples.event("COURSE_COMPLETED"), samples.event("LEARNER_PROGRESS")],
        },
    )
    assert status == 202 and body["accepted"] == 2
    assert len(set(body["eventIds"])) == 2
    for event_id in body["eventIds"]:
        stored = await store.get_event(event_id)
        assert stored is not None and stored.account_id == 5


async def test_a_known_event_id_is_a_duplicate(client: Client, store: SqliteStorage) -> None:
    await _post(client, samples.event(eventId="dup"))
    status, body = await _post(
        client, {"events": [samples.event(eventId="dup"), samples.event(eventId="new")]}
    )
    assert status == 202
    assert body == {"accepted": 1, "duplicates": 1, "eventIds": ["dup", "new"]}
    assert await store.count_events() == 2


async def test_the_admin_token_may_ingest_too(client: Client) -> None:
    status, _ = await _post(client, samples.event(), headers=admin_headers())
    assert status == 202


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-0123456789",
        f"Basic {ADMIN_TOKEN}",
        "Bearer ",
        f"{ADMIN_TOKEN}",
    ],
)
async def test_401_without_a_valid_token(
    client: Client, store: SqliteStorage, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await client.post("/v1/events", json=samples.event(), headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await response.json())["error"]["code"] == "unauthorized"
    assert await store.count_events() == 0


async def test_403_for_the_ingest_token_outside_ingest(client: Client) -> None:
    response = await client.get("/v1/events/anything", headers=ingest_headers())
    assert response.status == 403
    assert "ingest token" in (await response.json())["error"]["message"]


async def test_400_for_malformed_json(client: Client, store: SqliteStorage) -> None:
    for raw in (b'{"eventName": ', b'{"a": 1,}', b"\xff\xfe{}", b"[" * 20_000 + b"]" * 20_000):
        response = await client.post(
            "/v1/events", data=raw, headers={**ingest_headers(), "Content-Type": "application/json"}
        )
        body = await response.json()
        assert response.status == 400, body
        assert body["error"]["code"] == "malformed_json"
    assert await store.count_events() == 0


async def test_413_for_a_body_over_the_limit(client: Client, store: SqliteStorage) -> None:
    big = {"events": [samples.event(eventId=f"big-{i}") for i in range(400)]}
    status, body = await _post(client, big)
    assert status == 413 and body["error"]["code"] == "body_too_large"

    async def chunks() -> Any:
        payload = json.dumps(big).encode()
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    response = await client.post(
        "/v1/events",
        data=chunks(),
        headers={**ingest_headers(), "Content-Type": "application/json"},
    )
    assert response.status == 413
    assert await store.count_events() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_415_for_a_body_that_is_not_json(client: Client, content_type: str | None) -> None:
    headers = {**ingest_headers()}
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post(
        "/v1/events",
        data=json.dumps(samples.event()).encode(),
        headers=headers,
        skip_auto_headers=["Content-Type"],
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"


async def test_json_with_a_charset_is_accepted(client: Client) -> None:
    response = await client.post(
        "/v1/events",
        data=json.dumps(samples.event()).encode(),
        headers={**ingest_headers(), "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 202


async def test_422_names_each_problem_and_stores_nothing(
    client: Client, store: SqliteStorage
) -> None:
    bad = samples.event("COURSE_COMPLETED")
    bad["data"]["userId"] = "4279332"
    status, body = await _post(client, {"events": [samples.event(), bad]})
    assert status == 422
    assert body["error"]["code"] == "invalid"
    assert {"path": "events[1].data.userId", "message": "expected an integer"} in body["error"][
        "details"
    ]
    assert await store.count_events() == 0


async def test_get_an_event(client: Client) -> None:
    await _post(client, samples.event("CI_STATS", eventId="ci-1", timestamp=1727414643000))
    response = await client.get("/v1/events/ci-1", headers=admin_headers())
    assert response.status == 200
    body = await response.json()
    assert body["eventId"] == "ci-1" and body["eventName"] == "CI_STATS"
    assert body["timestamp"] == 1727414643000
    assert body["data"] == samples.ALL["CI_STATS"]
    assert body["accountId"] == 1010 and body["realtime"] is True
    assert body["deliveries"] == []


async def test_404_and_405_are_json(client: Client) -> None:
    response = await client.get("/v1/events/missing", headers=admin_headers())
    assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"
    response = await client.get("/v1/nothing-here", headers=admin_headers())
    assert response.status == 404 and "error" in await response.json()
    response = await client.delete("/v1/events", headers=admin_headers())
    assert response.status == 405 and "error" in await response.json()
    assert response.headers["Allow"] == "POST", "a 405 names the methods the path has"


async def test_healthz_needs_no_token(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_503_while_draining(client: Client, store: SqliteStorage) -> None:
    assert client.app is not None
    client.app[STATE].draining = True
    status, body = await _post(client, samples.event())
    assert status == 503 and body["error"]["code"] == "shutting_down"
    assert (await client.get("/healthz")).status == 503
    assert await store.count_events() == 0


async def test_507_when_storage_is_full(client: Client, store: SqliteStorage) -> None:
    pages = await store._writer_pragma("page_count")
    await store._writer_pragma(f"max_page_count = {pages}")
    padded = [samples.event() for _ in range(10)]
    for event in padded:
        event["data"]["padding"] = "x" * 3000
    status, body = await _post(client, {"events": padded})
    assert status == 507 and body["error"]["code"] == "storage_full"
    assert await store.count_events() == 0


async def test_200_concurrent_requests_share_commits(client: Client, store: SqliteStorage) -> None:
    results = await asyncio.gather(
        *(_post(client, samples.event(eventId=f"c-{i}")) for i in range(200))
    )
    assert [status for status, _ in results] == [202] * 200
    assert await store.count_events() == 200
    assert store.commits < 100, f"{store.commits} commits for 200 concurrent requests"


async def test_400_for_nan_and_infinity(client: Client, store: SqliteStorage) -> None:
    raw = json.dumps(samples.event()).replace('"userId": 4279332', '"userId": NaN').encode()
    for body in (raw, raw.replace(b"NaN", b"-Infinity")):
        response = await client.post(
            "/v1/events",
            data=body,
            headers={**ingest_headers(), "Content-Type": "application/json"},
        )
        assert response.status == 400
        assert "not valid JSON" in (await response.json())["error"]["message"]
    assert await store.count_events() == 0


async def test_a_disabled_webhook_shows_no_next_retry(
    client: Client, store: SqliteStorage, clock: FakeClock
) -> None:
    """Disabled (a 410, or failing for the whole retention), its worker has stopped:
    the retry its last schedule named never comes, so the status does not show it."""
    webhook = await store.create_webhook(
        NewWebhook(
            name="gone",
            target_url="https://hooks.example.org/in",
            events=frozenset({"COURSE_ENROLLMENT"}),
        )
    )
    failing = Schedule(consecutive_failures=1, failing_since=clock(), next_attempt_at=clock() + 5)
    await store.record_attempts(webhook.id, [], schedule=failing)
    response = await client.get("/v1/status", headers=admin_headers())
    [shown] = (await response.json())["webhooks"]
    assert shown["nextRetryAt"] == int((clock() + 5) * 1000)
    await store.record_attempts(
        webhook.id, [], schedule=failing, disable_reason="the receiver answered 410 Gone"
    )
    response = await client.get("/v1/status", headers=admin_headers())
    [shown] = (await response.json())["webhooks"]
    assert shown["status"] == "disabled" and shown["nextRetryAt"] is None
