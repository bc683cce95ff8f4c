"""``GET /v1/catalogue`` through the API application: either token, the 27 events."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from almhookd.domain.catalogue import catalogue_document
from tests.support import samples
from tests.support.tokens import admin_headers, ingest_headers

Client = TestClient[web.Request, web.Application]


@pytest.mark.parametrize("headers", [admin_headers(), ingest_headers()], ids=["admin", "ingest"])
async def test_either_token_reads_the_catalogue(client: Client, headers: dict[str, str]) -> None:
    response = await client.get("/v1/catalogue", headers=headers)
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert body == catalogue_document()
    assert [e["name"] for e in body["events"]] == [*samples.REALTIME, *samples.BATCH]
    assert [e["kind"] for e in body["events"]] == ["realtime"] * 15 + ["batch"] * 12


async def test_every_event_names_its_data_fields(client: Client) -> None:
    body = await (await client.get("/v1/catalogue", headers=ingest_headers())).json()
    for event in body["events"]:
        assert event["description"], event
        fields = event["fields"]
        assert [f["name"] for f in fields] == list(samples.ALL[event["name"]])
        assert all(f["required"] is True and f["type"] for f in fields), event


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789"])
async def test_the_catalogue_needs_a_token(client: Client, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get("/v1/catalogue", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await response.json())["error"]["code"] == "unauthorized"


async def test_the_ingest_token_still_reads_nothing_else(client: Client) -> None:
    response = await client.get("/v1/status", headers=ingest_headers())
    assert response.status == 403
    message = (await response.json())["error"]["message"]
    assert message == "the ingest token may only call POST /v1/events and GET /v1/catalogue"


async def test_the_catalogue_is_read_only(client: Client) -> None:
    response = await client.post("/v1/catalogue", json={}, headers=admin_headers())
    assert response.status == 405
