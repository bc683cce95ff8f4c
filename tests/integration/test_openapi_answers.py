"""The real daemon's answers held to its OpenAPI document: every route called by its
``operationId`` over 127.0.0.1, on the path the document gives, and each answer's
status, media type, headers and body checked against what the document lists for it.

The answer schemas are closed here (``unevaluatedProperties: false`` on every object
the document leaves open), so a field the daemon sends but the document does not name
fails too. The document itself is tested in ``tests/unit/test_openapi.py``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import pytest
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from almhookd.api.openapi.document import openapi_document
from tests.support import samples
from tests.support.http_receiver import Receiver
from tests.support.running import Running, daemon_config, running_daemon
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

URI: Final = "urn:almhookd:openapi"
METHODS: Final = ("get", "post", "put", "patch", "delete")
NO_BODY: Final = object()
UNKNOWN_WEBHOOK: Final = "wh_0000000000000000"


def closed(node: Any) -> Any:
    """The document with every open object schema closed: answers may hold only the
    fields it names."""
    if isinstance(node, dict):
        node = {key: closed(value) for key, value in node.items()}
        if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
            node["unevaluatedProperties"] = False
        return node
    if isinstance(node, list):
        return [closed(item) for item in node]
    return node


def fragment(*parts: str) -> str:
    return "#" + quote("".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts))


class Api:
    """The running daemon called by operation, every answer checked against the document."""

    def __init__(self, daemon: Running) -> None:
        self.daemon = daemon
        self.document = openapi_document()
        strict = closed(copy.deepcopy(self.document))
        self.registry: Registry[Any] = Registry().with_resource(
            URI, DRAFT202012.create_resource(strict)
        )
        self.operations = {
            operation["operationId"]: (method, path, operation)
            for path, item in self.document["paths"].items()
            for method, operation in item.items()
            if method in METHODS
        }
        #: (operationId, status) of every answer checked
        self.seen: set[tuple[str, int]] = set()

    def validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": URI + pointer}, registry=self.registry)

    def url(self, name: str, params: Mapping[str, str]) -> str:
        _, template, _ = self.operations[name]
        path = re.sub(r"\{(\w+)\}", lambda m: quote(params[m.group(1)], safe=""), template)
        return self.daemon.url + path

    async def call(
        self,
        name: str,
        status: int,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: Any = NO_BODY,
        data: bytes | None = None,
        content_type: str | None = None,
        token: str | None = ADMIN_TOKEN,
    ) -> Any:
        """``name`` called; its answer must be ``status`` and be as documented."""
        method, template, operation = self.operations[name]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not NO_BODY:
            data, content_type = json.dumps(body).encode(), content_type or "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        async with self.daemon.session.request(
            method.upper(),
            self.url(name, params or {}),
            params=query,
            data=data,
            headers=headers,
            skip_auto_headers=["Content-Type"],
        ) as response:
            raw = await response.read()
            assert response.status == status, (name, raw[:500])
            answer = operation["responses"].get(str(status))
            assert answer is not None, f"{name} answered {status}, not in the document"
            where = fragment("paths", template, method, "responses", str(status))
            for header, spec in answer.get("headers", {}).items():
                if spec.get("required"):
                    assert header in response.headers, (name, status, header)
            self.seen.add((name, status))
            if "content" not in answer:
                assert raw == b"", (name, status)
                return None
            assert response.content_type in answer["content"], (name, response.content_type)
            if response.content_type != "application/json":
                return raw.decode()
            value = json.loads(raw)
            media = fragment("content", response.content_type)[1:]
            self.check(value, where + media + "/schema", f"{name} {status}")
            return value

    def check(self, value: Any, pointer: str, what: str) -> None:
        try:
            self.validator(pointer).validate(value)
        except ValidationError as error:
            at = "/".join(str(part) for part in error.absolute_path)
            raise AssertionError(f"{what}: {error.message} at /{at}\n{value}") from None

    def successes(self) -> set[tuple[str, int]]:
        """Every documented success of every operation."""
        return {
            (name, int(status))
            for name, (_, _, operation) in self.operations.items()
            for status in operation["responses"]
            if int(status) < 300
        }

    def with_token(self) -> list[str]:
        return [name for name, (_, _, op) in self.operations.items() if op["security"]]

    def admin_only(self) -> list[str]:
        return [
            name
            for name, (_, _, op) in self.operations.items()
            if op["security"] == [{"adminToken": []}]
        ]

    def with_body(self) -> list[str]:
        return [name for name, (_, _, op) in self.operations.items() if "requestBody" in op]

    def with_webhook(self) -> list[str]:
        return [name for name, (_, path, _) in self.operations.items() if "{webhookId}" in path]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_daemon(daemon_config(tmp_path)) as daemon:
        yield Api(daemon)


def create_body(receiver: Receiver, **fields: Any) -> dict[str, Any]:
    return {
        "name": fields.pop("name", "LMS sync"),
        "targetUrl": receiver.url,
        "events": ["COURSE_ENROLLMENT", "COURSE_ENROLLMENT_BATCH"],
        **fields,
    }


async def test_every_route_answers_its_success_as_documented(api: Api, receiver: Receiver) -> None:
    assert await api.call("openapi", 200, token=None) == json.loads(json.dumps(openapi_document()))
    await api.call("healthz", 200, token=None)
    await api.call("catalogue", 200, token=INGEST_TOKEN)
    signed = await api.call(
        "webhooks_create",
        201,
        body=create_body(
            receiver,
            auth={"type": "signature"},
            description="to the HR system",
            contactEmail="lms@example.org",
        ),
    )
    basic = await api.call(
        "webhooks_create",
        201,
        body=create_body(
            receiver, name="basic", auth={"type": "basic", "username": "u", "password": "p4ss"}
        ),
    )
    assert basic["auth"] == {"type": "basic", "username": "u", "passwordSet": True}
    ingested = await api.call(
        "ingest",
        202,
        body={
            "accountId": 1010,
            "events": [
                samples.event("COURSE_ENROLLMENT"),
                samples.event("COURSE_ENROLLMENT_BATCH"),
            ],
        },
        token=INGEST_TOKEN,
    )
    await api.call("ingest", 202, body=samples.event(eventId="one-alone"), token=INGEST_TOKEN)
    first = ingested["eventIds"][0]
    await api.daemon.until_delivered(signed["id"], first)
    event = await api.call("get_event", 200, params={"eventId": first})
    assert {d["webhookId"] for d in event["deliveries"]} == {signed["id"], basic["id"]}
    hook = {"webhookId": signed["id"]}
    await api.call("webhooks_list", 200)
    await api.call("webhooks_get", 200, params=hook)
    await api.call("webhooks_patch", 200, params=hook, body={"description": "changed"})
    assert (await api.call("webhooks_test", 200, params=hook))["ok"] is True
    draft = await api.call(
        "webhooks_test_draft", 200, body=create_body(receiver, auth={"type": "signature"})
    )
    assert draft["ok"] is True and draft["signingSecret"].startswith("whsec_")
    await api.call("webhooks_secret", 200, params=hook)
    rotated = await api.call("webhooks_rotate", 200, params=hook)
    assert len(rotated["previousSecretsValidUntil"]) == 1
    page = await api.call("webhooks_deliveries", 200, params=hook, query={"limit": "1"})
    assert page["nextCursor"] is not None
    await api.call(
        "webhooks_deliveries",
        200,
        params=hook,
        query={"state": "pending", "cursor": page["nextCursor"]},
    )
    attempts = await api.call("webhooks_attempts", 200, params=hook)
    assert attempts["attempts"]
    await api.call("webhooks_replay", 202, params=hook, body={"eventIds": [first]})
    await api.call("webhooks_replay", 202, params=hook, body={"since": 0})
    await api.call("status", 200)
    flushed = await api.call("batch_flush", 202)
    assert flushed["released"] >= 1
    assert "almhookd_webhooks" in await api.call("metrics", 200)
    await api.call("webhooks_delete", 204, params={"webhookId": basic["id"]})
    assert api.successes() - api.seen == set(), "operations whose success went unchecked"


async def test_every_route_with_a_token_refuses_none_or_a_wrong_one(api: Api) -> None:
    params = {"webhookId": UNKNOWN_WEBHOOK, "eventId": "nope"}
    for name in api.with_token():
        for token in (None, "a-wrong-token-0123456789"):
            answer = await api.call(name, 401, params=params, token=token)
            assert answer["error"]["code"] == "unauthorized", name
    for name in set(api.operations) - set(api.with_token()):
        assert (await api.call(name, 200, token=None)) is not None


async def test_the_ingest_token_is_refused_on_every_admin_route(api: Api) -> None:
    params = {"webhookId": UNKNOWN_WEBHOOK, "eventId": "nope"}
    for name in api.admin_only():
        answer = await api.call(name, 403, params=params, token=INGEST_TOKEN)
        assert answer["error"]["code"] == "forbidden", name
    assert set(api.operations) - set(api.admin_only()) == {
        "ingest",
        "catalogue",
        "healthz",
        "openapi",
    }


async def test_404_for_an_unknown_webhook_or_event(api: Api) -> None:
    bodies = {"webhooks_patch": {}, "webhooks_replay": {"since": 0}}
    for name in api.with_webhook():
        answer = await api.call(
            name, 404, params={"webhookId": UNKNOWN_WEBHOOK}, body=bodies.get(name, NO_BODY)
        )
        assert answer["error"]["code"] == "not_found", name
    await api.call("get_event", 404, params={"eventId": "no-such-event"})


async def test_bodies_that_are_not_json_or_too_large(api: Api, receiver: Receiver) -> None:
    webhook = await api.call("webhooks_create", 201, body=create_body(receiver))
    params = {"webhookId": webhook["id"]}
    too_large = b'{"events": [' + b" " * (1 << 20) + b"]}"
    for name in api.with_body():
        token = INGEST_TOKEN if name == "ingest" else ADMIN_TOKEN
        for data, content_type, status, code in (
            (b'{"events": [', "application/json", 400, "malformed_json"),
            (b"\xff\xfe", "application/json", 400, "malformed_json"),
            (b'{"since": NaN}', "application/json", 400, "malformed_json"),
            (b"{}", "text/plain", 415, "unsupported_media_type"),
            (too_large, "application/json", 413, "body_too_large"),
        ):
            answer = await api.call(
                name, status, params=params, data=data, content_type=content_type, token=token
            )
            assert answer["error"]["code"] == code, (name, data[:20])


@pytest.mark.parametrize(
    ("name", "body", "paths"),
    [
        ("ingest", {"events": []}, {"events"}),
        ("ingest", samples.event(timestamp=1727414643), {"timestamp"}),
        ("ingest", {"eventName": "COURSE_ENROLMENT", "data": {}}, {"eventName"}),
        ("webhooks_create", {"name": "", "events": ["NOPE"], "x": 1}, {"name", "events[0]"}),
        ("webhooks_test_draft", {"targetUrl": "ftp://example.org"}, {"targetUrl"}),
        ("webhooks_patch", {"auth": {"type": "basic"}}, {"auth.username"}),
        ("webhooks_replay", {"eventIds": ["a b"]}, {"eventIds[0]"}),
        ("webhooks_replay", {"eventIds": ["a"], "since": 0}, {""}),
    ],
)
async def test_422_names_each_problem_as_documented(
    api: Api, receiver: Receiver, name: str, body: Any, paths: set[str]
) -> None:
    webhook = await api.call("webhooks_create", 201, body=create_body(receiver))
    token = INGEST_TOKEN if name == "ingest" else ADMIN_TOKEN
    answer = await api.call(name, 422, params={"webhookId": webhook["id"]}, body=body, token=token)
    assert answer["error"]["code"] == "invalid"
    assert paths <= {problem["path"] for problem in answer["error"]["details"]}


async def test_400_for_a_bad_page_or_state(api: Api, receiver: Receiver) -> None:
    webhook = await api.call("webhooks_create", 201, body=create_body(receiver))
    params = {"webhookId": webhook["id"]}
    for name, query in (
        ("webhooks_deliveries", {"limit": "0"}),
        ("webhooks_deliveries", {"state": "lost"}),
        ("webhooks_attempts", {"cursor": "x"}),
        ("webhooks_attempts", {"limit": "1001"}),
    ):
        answer = await api.call(name, 400, params=params, query=query)
        assert answer["error"]["code"] == "bad_request", (name, query)


async def test_409_without_a_secret_and_past_the_webhook_limit(
    api: Api, receiver: Receiver
) -> None:
    plain = await api.call("webhooks_create", 201, body=create_body(receiver, name="plain"))
    for name in ("webhooks_secret", "webhooks_rotate"):
        answer = await api.call(name, 409, params={"webhookId": plain["id"]})
        assert answer["error"]["code"] == "no_secret"
    for index in range(4):  # delivery.max_webhooks is 5
        await api.call("webhooks_create", 201, body=create_body(receiver, name=f"more-{index}"))
    answer = await api.call("webhooks_create", 409, body=create_body(receiver, name="sixth"))
    assert answer["error"]["code"] == "limit_reached"


async def test_unknown_paths_and_methods_answer_the_error_shape(api: Api) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    error = fragment("components", "schemas", "Error")
    for method, path, status in (
        ("GET", "/v1/nothing-here", 404),
        ("POST", "/v1/catalogue", 405),
        ("PUT", "/v1/webhooks", 405),
    ):
        async with api.daemon.session.request(
            method, api.daemon.url + path, headers=headers
        ) as response:
            assert response.status == status, path
            api.check(await response.json(), error, f"{method} {path}")
