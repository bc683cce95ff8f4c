"""The OpenAPI document of ``GET /v1/openapi.json`` and ``docs/API.md``: valid OpenAPI
3.1, the very routes the daemon's router has (the console's pages aside), examples that
fit their schemas, ingest events made from the catalogue, and a reference never stale.

The answers of a running daemon are held to the document in
``tests/integration/test_openapi_answers.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from almhookd.api.app import create_app
from almhookd.api.common import INGEST_ROUTES, PUBLIC_ROUTES
from almhookd.api.openapi.__main__ import main
from almhookd.api.openapi.document import openapi_document, operations
from almhookd.api.openapi.error_codes import ERROR_CODES
from almhookd.api.openapi.markdown import JSON_COMMAND, MARKDOWN_COMMAND, markdown
from almhookd.api.openapi.schemas import (
    EARLIEST_TIMESTAMP_MS,
    EVENT_ID_PATTERN,
    EVENT_SCHEMA_PREFIX,
    LATEST_TIMESTAMP_MS,
)
from almhookd.auth import TokenChecker
from almhookd.config import Secret, parse_config
from almhookd.console import setup as setup_console
from almhookd.delivery.dispatcher import Dispatcher
from almhookd.delivery.flusher import BatchScheduler
from almhookd.delivery.notify import Notifier
from almhookd.delivery.sender import Sender
from almhookd.domain import events as domain_events
from almhookd.domain.catalogue import CATALOGUE, sample_data
from almhookd.errors import InvalidInput
from almhookd.storage.memory import MemoryStorage
from tests.support.clock import FakeClock
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

API_MD = Path(__file__).resolve().parents[2] / "docs" / "API.md"
URI = "urn:almhookd:openapi"
METHODS = ("get", "post", "put", "patch", "delete")


def pointer(*parts: str) -> str:
    """A JSON pointer into the document, as a URI fragment."""
    return "#" + quote("".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts))


def validator(document: dict[str, Any], fragment: str) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator of the schema at ``fragment``, its
    ``#/components/...`` references resolved within the document."""
    registry: Registry[Any] = Registry().with_resource(URI, DRAFT202012.create_resource(document))
    return Draft202012Validator({"$ref": URI + fragment}, registry=registry)


def documented(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def normalised(path: str) -> str:
    """``/v1/webhooks/{webhook_id}`` and ``/v1/webhooks/{webhookId}`` alike: the
    parameters' names are labels, the document uses the API's camelCase."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def daemon_app() -> web.Application:
    """The application as ``service.daemon.serve`` assembles it (API, admin routes,
    console), on parts that do nothing until started."""
    config = parse_config("", env={})
    clock = FakeClock()
    store = MemoryStorage(clock=clock)
    sender = Sender(config.delivery, clock=clock)
    dispatcher = Dispatcher(
        store=store, sender=sender, notifier=Notifier(config.notify), clock=clock, config=config
    )
    scheduler = BatchScheduler(
        store=store, clock=clock, config=config.batch, wake_workers=dispatcher.wake_all
    )
    app = create_app(
        store=store,
        config=config,
        clock=clock,
        tokens=TokenChecker(admin=Secret(ADMIN_TOKEN), ingest=Secret(INGEST_TOKEN)),
        scheduler=scheduler,
        dispatcher=dispatcher,
        sender=sender,
    )
    setup_console(app)
    return app


# --- the document -----------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)
    # As served: through JSON (string status keys, no tuples).
    validate(json.loads(json.dumps(document)), cls=OpenAPIV31SpecValidator)


def test_every_route_of_the_daemon_is_in_the_document_and_nothing_else() -> None:
    routes: dict[tuple[str, str], str | None] = {}
    console: set[tuple[str, str]] = set()
    for route in daemon_app().router.routes():
        assert route.resource is not None
        key = (route.method.lower(), normalised(route.resource.canonical))
        if route.name is not None and route.name.startswith("console."):
            console.add(key)
        else:
            routes[key] = route.name
    document = {
        (method, normalised(path)): operation["operationId"]
        for method, path, operation in documented(openapi_document())
    }
    # aiohttp answers HEAD on every GET route by itself: said once in the document.
    heads = {key for key in routes if key[0] == "head"}
    assert heads == {("head", path) for method, path in routes if method == "get"}
    api = {key: name for key, name in routes.items() if key[0] != "head"}
    assert set(api) - set(document) == set(), "routes the document lacks"
    assert set(document) - set(api) == set(), "documented routes the app does not have"
    assert api == document, "operationId is not the route's name"
    # The console (HTML pages, its static files) is left out on purpose, and only it.
    assert ("get", "/static/{}") in console and ("get", "/") in console
    assert not set(console) & set(document)


def test_each_route_names_the_token_the_middleware_asks_for() -> None:
    by_name = {op["operationId"]: op for _, _, op in documented(openapi_document())}
    assert {"openapi", "healthz"} == PUBLIC_ROUTES
    for name, operation in by_name.items():
        schemes = {scheme for requirement in operation["security"] for scheme in requirement}
        if name in PUBLIC_ROUTES:
            assert schemes == set(), name
            assert "401" not in operation["responses"], name
        elif name in INGEST_ROUTES:
            assert schemes == {"adminToken", "ingestToken"}, name
            assert "403" not in operation["responses"], name
        else:
            assert schemes == {"adminToken"}, name
            assert {"401", "403"} <= set(operation["responses"]), name


def test_metrics_needs_the_admin_token_and_says_how_to_scrape_it() -> None:
    metrics = openapi_document()["paths"]["/metrics"]["get"]
    assert metrics["security"] == [{"adminToken": []}]
    assert "credentials_file" in metrics["description"]


def test_every_error_answer_names_codes_of_its_status() -> None:
    errors = {error.code: error for error in ERROR_CODES}
    for method, path, operation in documented(openapi_document()):
        for status, answer in operation["responses"].items():
            if int(status) < 400 or operation["operationId"] == "healthz":
                continue
            schema = answer["content"]["application/json"]["schema"]
            codes = schema["properties"]["error"]["properties"]["code"]["enum"]
            assert codes, (method, path, status)
            assert {errors[code].status for code in codes} == {int(status)}, (method, path)
            if any(errors[code].retry_after for code in codes):
                assert "Retry-After" in answer["headers"], (method, path, status)


def test_every_example_fits_its_schema() -> None:
    document = openapi_document()
    checked = 0
    for method, path, operation in documented(document):
        body = operation.get("requestBody", {}).get("content", {})
        for media_type, media in body.items():
            if "example" in media:
                fragment = pointer("paths", path, method, "requestBody", "content", media_type)
                validator(document, fragment + "/schema").validate(media["example"])
                checked += 1
        for status, answer in operation["responses"].items():
            for media_type, media in answer.get("content", {}).items():
                if "example" in media:
                    fragment = pointer("paths", path, method, "responses", status, "content")
                    fragment += pointer(media_type)[1:] + "/schema"
                    validator(document, fragment).validate(media["example"])
                    checked += 1
    assert checked >= 20


# --- the events, from the catalogue -----------------------------------------------


def test_the_ingest_events_are_the_catalogue() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    assert schemas["EventName"]["enum"] == list(CATALOGUE)
    per_event = [name for name in schemas if name.startswith(EVENT_SCHEMA_PREFIX)]
    assert per_event == [f"{EVENT_SCHEMA_PREFIX}{name}" for name in CATALOGUE]
    assert len(per_event) == 27
    body = validator(document, pointer("components", "schemas", "IngestBody"))
    for name, event in CATALOGUE.items():
        data = sample_data(name)
        body.validate({"eventName": name, "data": data})
        body.validate({"events": [{"eventName": name, "data": {**data, "extra": [1]}}]})
        first = next(iter(event.fields))
        missing = {key: value for key, value in data.items() if key != first}
        assert not body.is_valid({"eventName": name, "data": missing}), name


@pytest.mark.parametrize(
    "event",
    [
        {"eventName": "COURSE_ENROLLMENT", "data": {}},
        {"eventName": "NO_SUCH_EVENT", "data": {}},
        {
            "eventName": "LEARNER_PROGRESS",
            "data": {**sample_data("LEARNER_PROGRESS"), "progressPercent": 101},
        },
        {
            "eventName": "COURSE_ENROLLMENT",
            "data": {**sample_data("COURSE_ENROLLMENT"), "loType": "book"},
        },
        {
            "eventName": "COURSE_ENROLLMENT",
            "data": {**sample_data("COURSE_ENROLLMENT"), "loId": " "},
        },
        {
            "eventName": "COURSE_ENROLLMENT",
            "data": sample_data("COURSE_ENROLLMENT"),
            "timestamp": 1727414643,
        },
        {
            "eventName": "COURSE_ENROLLMENT",
            "data": sample_data("COURSE_ENROLLMENT"),
            "eventId": "a b",
        },
        {"eventName": "COURSE_ENROLLMENT", "data": sample_data("COURSE_ENROLLMENT"), "nope": 1},
    ],
    ids=["missing-fields", "unknown-name", "percent", "lo-type", "blank", "seconds", "id", "key"],
)
def test_what_ingest_refuses_the_schema_refuses(event: dict[str, Any]) -> None:
    """The schema says no where ``parse_ingest`` says no (both ways for these)."""
    with pytest.raises(InvalidInput):
        domain_events.parse_ingest(event, now_ms=0, default_account_id=1, new_id=lambda: "x")
    body = validator(openapi_document(), pointer("components", "schemas", "IngestBody"))
    assert not body.is_valid(event)


def test_the_limits_are_those_the_domain_enforces() -> None:
    assert f"^{domain_events.EVENT_ID.pattern}$" == EVENT_ID_PATTERN
    assert EARLIEST_TIMESTAMP_MS == domain_events.EARLIEST_MS
    assert LATEST_TIMESTAMP_MS == domain_events.LATEST_MS


# --- docs/API.md --------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """``python -m almhookd.api.openapi FLAGS`` in this process."""
    assert main(list(flags)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_the_committed_api_doc_is_what_the_command_makes_now(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert API_MD.read_text(encoding="utf-8") == run(capsys, "--markdown"), (
        f"docs/API.md is stale: run `{MARKDOWN_COMMAND}` and commit it"
    )


def test_the_api_doc_says_how_it_is_made_in_its_first_line() -> None:
    first = API_MD.read_text(encoding="utf-8").splitlines()[0]
    assert f"generated by `{MARKDOWN_COMMAND}`" in first and "do not edit" in first


def test_the_api_doc_has_every_route_with_its_token_and_answers() -> None:
    document = openapi_document()
    text = markdown(document)
    sections = dict(
        zip(*[iter(re.split(r"^### `([A-Z]+ \S+)`$", text, flags=re.M)[1:])] * 2, strict=True)
    )
    tokens = {"ingest": "admin or ingest", "catalogue": "admin or ingest"}
    tokens |= dict.fromkeys(PUBLIC_ROUTES, "none")
    for method, path, operation in documented(document):
        section = sections.pop(f"{method.upper()} {path}")
        token = tokens.get(operation["operationId"], "admin")
        assert f"Token: {token}." in section, path
        for status in operation["responses"]:
            assert re.search(rf"^\| {status} \|", section, flags=re.M), (path, status)
        assert f"| [`{method.upper()} {path}`](#" in text
    assert sections == {}
    assert "## Errors" in text and "| 507 | `storage_full` |" in text
    assert "/metrics" in text and "credentials_file" in text


def test_json_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert json.loads(run(capsys, "--json")) == json.loads(json.dumps(openapi_document()))
    assert JSON_COMMAND.endswith("--json")


def test_one_output_format_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    for flags in ([], ["--json", "--markdown"]):
        with pytest.raises(SystemExit) as exited:
            main(flags)
        assert exited.value.code == 2
    capsys.readouterr()


def test_the_document_is_built_afresh_and_the_same_each_time() -> None:
    """Pure: no clock, no I/O; changing one copy changes no other."""
    first = openapi_document()
    first["paths"].clear()
    assert openapi_document() == openapi_document() != first
    assert [op.name for op in operations()] == [
        op["operationId"] for _, _, op in documented(openapi_document())
    ]
