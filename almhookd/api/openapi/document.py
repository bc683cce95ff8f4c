"""The routes of the HTTP API as OpenAPI 3.1: :func:`openapi_document`, plain data.

Pure: nothing here reads a file, the clock or the network. Each :class:`Operation`
carries the aiohttp route name as its ``operationId``, so the tests hold the document
to the router, and the token an operation needs comes from the sets the middleware
checks (``api.common.PUBLIC_ROUTES``, ``INGEST_ROUTES``), so the two cannot disagree.
The error answers of an operation are made from the error codes it can answer
(``error_codes.ERROR_CODES``): the token's, the body's, the storage's and its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from almhookd import __version__
from almhookd.api.actions import DELIVERY_STATES, MAX_PAGE
from almhookd.api.common import INGEST_ROUTES, PUBLIC_ROUTES
from almhookd.api.openapi import examples
from almhookd.api.openapi.error_codes import ERROR_CODES, ERROR_CODES_BY_NAME
from almhookd.api.openapi.schemas import (
    Schema,
    component_schemas,
    error_schema,
    ref,
)

OPENAPI_VERSION: Final = "3.1.0"
JSON: Final = "application/json"
#: ``/metrics`` is Prometheus's text exposition format (its version is in the answer's
#: ``Content-Type`` parameters).
PROMETHEUS_TEXT: Final = "text/plain"

#: The security scheme of each token; ``tokens_of`` picks them per route.
ADMIN_SCHEME: Final = "adminToken"
INGEST_SCHEME: Final = "ingestToken"

#: Codes every operation that reads a JSON body can answer.
BODY_ERRORS: Final = (
    "malformed_json",
    "bad_request",  # a body its Content-Encoding does not describe
    "body_too_large",
    "unsupported_media_type",
    "invalid",
    "busy",
)
#: Codes every operation that reads the database can answer; writing adds storage_full.
READ_ERRORS: Final = ("shutting_down", "storage_unavailable")
WRITE_ERRORS: Final = (*READ_ERRORS, "storage_full")


@dataclass(frozen=True, kw_only=True, slots=True)
class Param:
    """A path or query parameter."""

    name: str
    where: Literal["path", "query"]
    schema: Mapping[str, Any]
    description: str

    def to_openapi(self) -> Schema:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.where == "path",
            "description": self.description,
            "schema": dict(self.schema),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Answer:
    """A documented answer that is not one of the error codes: a success, mostly."""

    status: int
    description: str
    #: the component schema of the body; None: no body
    schema: str | None = None
    media_type: str = JSON
    example: Any = None
    #: header name → what it says
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_openapi(self) -> Schema:
        answer: Schema = {"description": self.description}
        if self.headers:
            answer["headers"] = {
                name: {"description": text, "required": True, "schema": {"type": "string"}}
                for name, text in self.headers.items()
            }
        if self.schema is not None:
            media: Schema = {"schema": ref(self.schema)}
            if self.example is not None:
                media["example"] = self.example
            answer["content"] = {self.media_type: media}
        return answer


@dataclass(frozen=True, kw_only=True, slots=True)
class Operation:
    """One route: what it takes, what it answers, which errors it can give."""

    name: str  #: the aiohttp route name, the ``operationId``
    method: str
    path: str  #: with ``{camelCase}`` parameters
    tag: str
    summary: str
    description: str = ""
    params: tuple[Param, ...] = ()
    #: the component schema of the JSON body; None: no body
    body: str | None = None
    body_example: Any = None
    answers: tuple[Answer, ...]
    #: the error codes besides the token's and the body's
    errors: tuple[str, ...] = ()

    def tokens(self) -> list[dict[str, list[str]]]:
        """The OpenAPI ``security`` of this route, from the middleware's own sets."""
        if self.name in PUBLIC_ROUTES:
            return []
        if self.name in INGEST_ROUTES:
            return [{ADMIN_SCHEME: []}, {INGEST_SCHEME: []}]
        return [{ADMIN_SCHEME: []}]

    def error_codes(self) -> list[str]:
        codes: list[str] = []
        if self.name not in PUBLIC_ROUTES:
            codes.append("unauthorized")
            if self.name not in INGEST_ROUTES:
                codes.append("forbidden")
        if self.body is not None:
            codes += BODY_ERRORS
        codes += self.errors
        # In the order of the error table, each once.
        return [error.code for error in ERROR_CODES if error.code in codes]

    def to_openapi(self) -> Schema:
        operation: Schema = {
            "operationId": self.name,
            "tags": [self.tag],
            "summary": self.summary,
        }
        if self.description:
            operation["description"] = self.description
        operation["security"] = self.tokens()
        if self.params:
            operation["parameters"] = [param.to_openapi() for param in self.params]
        if self.body is not None:
            media: Schema = {"schema": ref(self.body)}
            if self.body_example is not None:
                media["example"] = self.body_example
            operation["requestBody"] = {"required": True, "content": {JSON: media}}
        responses = {str(answer.status): answer.to_openapi() for answer in self.answers}
        for status, codes in _by_status(self.error_codes()).items():
            responses.setdefault(str(status), _error_answer(codes))
        operation["responses"] = dict(sorted(responses.items()))
        return operation


def _by_status(codes: list[str]) -> dict[int, tuple[str, ...]]:
    grouped: dict[int, tuple[str, ...]] = {}
    for code in codes:
        status = ERROR_CODES_BY_NAME[code].status
        grouped[status] = (*grouped.get(status, ()), code)
    return grouped


def _error_answer(codes: tuple[str, ...]) -> Schema:
    errors = [ERROR_CODES_BY_NAME[code] for code in codes]
    answer: Schema = {
        "description": "; ".join(f"`{error.code}`: {error.meaning}" for error in errors),
        "content": {JSON: {"schema": error_schema(codes)}},
    }
    headers: Schema = {}
    if any(error.retry_after is not None for error in errors):
        seconds = sorted({error.retry_after for error in errors if error.retry_after})
        headers["Retry-After"] = {
            "description": "seconds to wait before sending again ("
            + " or ".join(str(s) for s in seconds)
            + ")",
            # Required when every code of the status sends it.
            "required": all(error.retry_after is not None for error in errors),
            "schema": {"type": "integer"},
        }
    if "unauthorized" in codes:
        headers["WWW-Authenticate"] = {
            "description": '`Bearer realm="almhookd"`',
            "required": True,
            "schema": {"type": "string"},
        }
    if headers:
        answer["headers"] = headers
    return answer


# --- the routes -------------------------------------------------------------------

_WEBHOOK_ID_PARAM: Final = Param(
    name="webhookId", where="path", schema={"type": "string"}, description="the webhook's `id`"
)
_LIMIT: Final = Param(
    name="limit",
    where="query",
    schema={"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
    description=f"page size, 1 to {MAX_PAGE} (ASCII digits)",
)
_CURSOR: Final = Param(
    name="cursor",
    where="query",
    schema={"type": "string", "pattern": "^[0-9]+$"},
    description="the `nextCursor` of the previous page; missing: the first page",
)
_NOT_FOUND: Final = ("not_found",)


def _webhook_answer(code: int, description: str, changes: Mapping[str, Any] = {}) -> Answer:
    return Answer(
        status=code,
        description=description,
        schema="Webhook",
        example=examples.webhook_example(**changes),
    )


def _test_answer() -> Answer:
    return Answer(
        status=200,
        description="the outcome (a failed delivery is `ok: false`, still a 200)",
        schema="TestResult",
        example=examples.test_example(),
    )


def _secret_headers() -> dict[str, str]:
    return {"Cache-Control": "`no-store`"}


def operations() -> tuple[Operation, ...]:
    """Every route of the API, in the order of ``docs/API.md``."""
    return (
        Operation(
            name="ingest",
            method="post",
            path="/v1/events",
            tag="Ingest",
            summary="Hand almhookd events to deliver",
            description='One event, or an envelope `{"accountId"?, "events": [...]}`. '
            "All or nothing: one bad event refuses the request (422, each problem named by "
            "its path). Answered only once the events are durable on disk; a known "
            "`eventId` is counted as a duplicate and not stored twice, so sending again "
            "after a timeout is safe.",
            body="IngestBody",
            body_example=examples.ingest_example(),
            answers=(
                Answer(
                    status=202,
                    description="stored (durable) and queued for the subscribed webhooks",
                    schema="IngestResult",
                    example={"accepted": 1, "duplicates": 0, "eventIds": [examples.EVENT_ID]},
                ),
            ),
            errors=WRITE_ERRORS,
        ),
        Operation(
            name="catalogue",
            method="get",
            path="/v1/catalogue",
            tag="Ingest",
            summary="The 27 events and their data fields",
            description="What `almhookd events --json` prints and docs/EVENTS.md shows.",
            answers=(
                Answer(
                    status=200,
                    description="the catalogue",
                    schema="Catalogue",
                    example={
                        "events": [
                            {
                                "name": "CI_STATS",
                                "kind": "realtime",
                                "description": "seat or waitlist availability of a course "
                                "instance changed",
                                "fields": [
                                    {"name": "loInstanceId", "type": "string", "required": True}
                                ],
                            }
                        ]
                    },
                ),
            ),
        ),
        Operation(
            name="get_event",
            method="get",
            path="/v1/events/{eventId}",
            tag="Events",
            summary="An event and its delivery state per webhook",
            description="Retained events only (`storage.retention`).",
            params=(
                Param(
                    name="eventId",
                    where="path",
                    schema={"type": "string"},
                    description="as sent or as the ingest answer gave it",
                ),
            ),
            answers=(
                Answer(
                    status=200,
                    description="the event",
                    schema="StoredEvent",
                    example=examples.stored_event_example(),
                ),
            ),
            errors=(*_NOT_FOUND, *READ_ERRORS),
        ),
        Operation(
            name="webhooks_list",
            method="get",
            path="/v1/webhooks",
            tag="Webhooks",
            summary="Every webhook",
            answers=(
                Answer(
                    status=200,
                    description="the webhooks",
                    schema="WebhookList",
                    example={"webhooks": [examples.webhook_example()]},
                ),
            ),
            errors=READ_ERRORS,
        ),
        Operation(
            name="webhooks_create",
            method="post",
            path="/v1/webhooks",
            tag="Webhooks",
            summary="Create a webhook",
            description="A `signature` webhook gets a generated secret: download it with "
            "`GET /v1/webhooks/{webhookId}/secret`. The target URL's addresses are checked "
            "now (422 `targetUrl`) and before every connection.",
            body="WebhookCreate",
            body_example=examples.create_example(),
            answers=(_webhook_answer(201, "created"),),
            errors=("limit_reached", *WRITE_ERRORS),
        ),
        Operation(
            name="webhooks_test_draft",
            method="post",
            path="/v1/webhooks/test",
            tag="Webhooks",
            summary="Test delivery to an unsaved webhook",
            description="Takes a create body and sends one sample event of its first "
            "subscribed event to it, signed (a `signature` draft with a throw-away secret, "
            "in `signingSecret`); nothing is stored, nothing retried.",
            body="WebhookCreate",
            body_example=examples.create_example(),
            answers=(_test_answer(),),
        ),
        Operation(
            name="webhooks_get",
            method="get",
            path="/v1/webhooks/{webhookId}",
            tag="Webhooks",
            summary="A webhook",
            params=(_WEBHOOK_ID_PARAM,),
            answers=(_webhook_answer(200, "the webhook"),),
            errors=(*_NOT_FOUND, *READ_ERRORS),
        ),
        Operation(
            name="webhooks_patch",
            method="patch",
            path="/v1/webhooks/{webhookId}",
            tag="Webhooks",
            summary="Change a webhook",
            description="Only the fields sent change; the running worker sees the change "
            'at once. `"active": false` archives (status `inactive`), `true` re-enables '
            "(also a `disabled` one).",
            params=(_WEBHOOK_ID_PARAM,),
            body="WebhookPatch",
            body_example={"active": False},
            answers=(
                _webhook_answer(
                    200,
                    "the webhook as changed",
                    {"active": False, "status": "inactive", "updatedAt": examples.NOW_MS},
                ),
            ),
            errors=(*_NOT_FOUND, *WRITE_ERRORS),
        ),
        Operation(
            name="webhooks_delete",
            method="delete",
            path="/v1/webhooks/{webhookId}",
            tag="Webhooks",
            summary="Delete a webhook",
            description="Its worker stops; its secrets, undelivered events and request log "
            "go with it (the events stay for other webhooks). To stop deliveries but keep "
            'them, archive it instead (`PATCH` with `"active": false`).',
            params=(_WEBHOOK_ID_PARAM,),
            answers=(Answer(status=204, description="deleted"),),
            errors=(*_NOT_FOUND, *WRITE_ERRORS),
        ),
        Operation(
            name="webhooks_test",
            method="post",
            path="/v1/webhooks/{webhookId}/test",
            tag="Webhooks",
            summary="Test delivery",
            description="One sample event of the webhook's first subscribed event, signed "
            "as real deliveries are, with header `almhookd-test: true`, out of band (the "
            "backlog is untouched) and not retried. No request body.",
            params=(_WEBHOOK_ID_PARAM,),
            answers=(_test_answer(),),
            errors=(*_NOT_FOUND, *READ_ERRORS),
        ),
        Operation(
            name="webhooks_secret",
            method="get",
            path="/v1/webhooks/{webhookId}/secret",
            tag="Webhooks",
            summary="Download the signing secret",
            description="The newest secret, as a JSON download (`Content-Disposition: "
            'attachment; filename="{webhookId}-secret.json"`) for the receiver\'s '
            "verifier (docs/RECEIVING.md).",
            params=(_WEBHOOK_ID_PARAM,),
            answers=(
                Answer(
                    status=200,
                    description="the secret",
                    schema="SigningSecret",
                    example=examples.secret_example(rotated=False),
                    headers={
                        **_secret_headers(),
                        "Content-Disposition": '`attachment; filename="{webhookId}-secret.json"`',
                    },
                ),
            ),
            errors=(*_NOT_FOUND, "no_secret", *READ_ERRORS),
        ),
        Operation(
            name="webhooks_rotate",
            method="post",
            path="/v1/webhooks/{webhookId}/secret/rotate",
            tag="Webhooks",
            summary="Rotate the signing secret",
            description="A new secret signs from now on; the previous ones keep signing "
            "too (one signature each in `webhook-signature`) for "
            "`delivery.secret_rotation_grace`, so receivers can switch without losing "
            "events. No request body.",
            params=(_WEBHOOK_ID_PARAM,),
            answers=(
                Answer(
                    status=200,
                    description="the new secret, with the grace period",
                    schema="SigningSecret",
                    example=examples.secret_example(rotated=True),
                    headers=_secret_headers(),
                ),
            ),
            errors=(*_NOT_FOUND, "no_secret", *WRITE_ERRORS),
        ),
        Operation(
            name="webhooks_deliveries",
            method="get",
            path="/v1/webhooks/{webhookId}/deliveries",
            tag="Deliveries",
            summary="Per-event delivery state, in ingest order",
            params=(
                _WEBHOOK_ID_PARAM,
                Param(
                    name="state",
                    where="query",
                    schema={"type": "string", "enum": ["", *DELIVERY_STATES]},
                    description="only deliveries in this state; missing or empty: all",
                ),
                _LIMIT,
                _CURSOR,
            ),
            answers=(
                Answer(
                    status=200,
                    description="a page",
                    schema="DeliveryPage",
                    example={
                        "deliveries": [
                            {
                                "eventId": examples.EVENT_ID,
                                "eventName": "COURSE_ENROLLMENT",
                                "ingestedAt": examples.NOW_MS,
                                "state": "delivered",
                                "attempts": 1,
                                "batchId": examples.BATCH_ID,
                                "deliveredAt": examples.NOW_MS + 60,
                                "dueAt": None,
                            }
                        ],
                        "nextCursor": None,
                    },
                ),
            ),
            errors=("bad_request", *_NOT_FOUND, *READ_ERRORS),
        ),
        Operation(
            name="webhooks_attempts",
            method="get",
            path="/v1/webhooks/{webhookId}/attempts",
            tag="Deliveries",
            summary="The request log, newest first",
            description="One entry per HTTP request: when, how many events, the "
            "receiver's status, how long, why it failed.",
            params=(_WEBHOOK_ID_PARAM, _LIMIT, _CURSOR),
            answers=(
                Answer(
                    status=200,
                    description="a page",
                    schema="AttemptPage",
                    example={
                        "attempts": [
                            {
                                "id": 812,
                                "batchId": examples.BATCH_ID,
                                "startedAt": examples.NOW_MS + 20,
                                "durationMs": 38,
                                "eventCount": 1,
                                "status": 200,
                                "error": None,
                                "responseBody": "",
                            }
                        ],
                        "nextCursor": "812",
                    },
                ),
            ),
            errors=("bad_request", *_NOT_FOUND, *READ_ERRORS),
        ),
        Operation(
            name="webhooks_replay",
            method="post",
            path="/v1/webhooks/{webhookId}/replay",
            tag="Deliveries",
            summary="Deliver retained events again",
            description="Events by id, or every event stored since a time, are queued "
            "again for this webhook, delivered ones too: only events of names it subscribes "
            "to, still retained, and not in a request being sent now (the others are "
            "skipped, not refused).",
            params=(_WEBHOOK_ID_PARAM,),
            body="Replay",
            body_example={"since": examples.NOW_MS - 3_600_000},
            answers=(
                Answer(
                    status=202,
                    description="queued",
                    schema="ReplayResult",
                    example={"queued": 42},
                ),
            ),
            errors=(*_NOT_FOUND, *WRITE_ERRORS),
        ),
        Operation(
            name="status",
            method="get",
            path="/v1/status",
            tag="Operations",
            summary="Per-webhook summary, as `almhookd status`",
            answers=(
                Answer(
                    status=200,
                    description="state, backlog, oldest pending, last success, next retry",
                    schema="Status",
                    example={
                        "webhooks": [
                            {
                                "id": examples.WEBHOOK_ID,
                                "name": "LMS sync",
                                "status": "active",
                                "disabledReason": None,
                                **examples.HEALTHY,
                            }
                        ],
                        "nextFlushAt": examples.NOW_MS + 900_000,
                    },
                ),
            ),
            errors=READ_ERRORS,
        ),
        Operation(
            name="batch_flush",
            method="post",
            path="/v1/batch/flush",
            tag="Operations",
            summary="Flush the batch backlog now",
            description="Releases every held batch event to its webhooks now instead of at "
            "the next `batch.interval` or `batch.at` time. No request body.",
            answers=(
                Answer(
                    status=202,
                    description="released; the workers send them",
                    schema="FlushResult",
                    example={
                        "released": 2,
                        "webhooks": {examples.WEBHOOK_ID: 2},
                        "nextFlushAt": examples.NOW_MS + 900_000,
                    },
                ),
            ),
            errors=("unavailable", *WRITE_ERRORS),
        ),
        Operation(
            name="healthz",
            method="get",
            path="/healthz",
            tag="Operations",
            summary="Liveness and storage check",
            description="For load balancers and monitoring: no token. 200 when the database "
            "reads and takes a write; 503 while draining, when it does not, while a storage "
            "failure a request met (a full disk) lasts, and while a delivery worker is "
            "being restarted.",
            answers=(
                Answer(
                    status=200,
                    description="healthy",
                    schema="Health",
                    example={"status": "ok", "version": __version__, "schemaVersion": 4},
                ),
                Answer(
                    status=503,
                    description="not healthy: `status` is `draining` or `unavailable`, "
                    "`code` and `error` say why",
                    schema="Health",
                    example={
                        "status": "unavailable",
                        "code": "storage_full",
                        "error": "database or disk is full",
                        "since": examples.NOW_MS,
                        "version": __version__,
                    },
                ),
            ),
        ),
        Operation(
            name="metrics",
            method="get",
            path="/metrics",
            tag="Operations",
            summary="Prometheus metrics",
            description="Prometheus text exposition format. Needs the **admin** token, so "
            "a scrape job sends it:\n\n"
            "```yaml\n"
            "scrape_configs:\n"
            "  - job_name: almhookd\n"
            "    authorization:\n"
            "      # the admin token, in a file the Prometheus user may read\n"
            "      credentials_file: /etc/prometheus/almhookd_admin_token\n"
            "    static_configs:\n"
            '      - targets: ["127.0.0.1:8787"]\n'
            "```",
            answers=(
                Answer(
                    status=200,
                    description="the metrics",
                    schema="PrometheusText",
                    media_type=PROMETHEUS_TEXT,
                    example="# HELP almhookd_webhooks Webhooks by status\n"
                    "# TYPE almhookd_webhooks gauge\n"
                    'almhookd_webhooks{status="active"} 1.0\n',
                ),
            ),
            errors=READ_ERRORS,
        ),
        Operation(
            name="openapi",
            method="get",
            path="/v1/openapi.json",
            tag="Operations",
            summary="This API as OpenAPI 3.1",
            description="No token. `python -m almhookd.api.openapi --json` prints the same "
            "without a daemon; docs/API.md is made from it.",
            answers=(
                Answer(status=200, description="the OpenAPI document", schema="OpenApiDocument"),
            ),
        ),
    )


_TAGS: Final = (
    ("Ingest", "What producers call, with the ingest token (or the admin token)."),
    ("Events", "Stored events, by id."),
    ("Webhooks", "The subscribers: settings, test deliveries, signing secrets."),
    ("Deliveries", "What was sent to a webhook, and sending it again."),
    ("Operations", "Status, the batch flush, health, metrics, this document."),
)


def _description() -> str:
    """The document's introduction: tokens, errors, conventions (Markdown)."""
    rows = "\n".join(
        f"| {error.status} | `{error.code}` | {error.meaning}"
        + (f" (`Retry-After: {error.retry_after}`)" if error.retry_after else "")
        + " |"
        for error in ERROR_CODES
    )
    return (
        "almhookd's HTTP API: ingest for the platform's producers, and the admin API "
        "for webhooks, deliveries and operations. JSON, camelCase, times in epoch "
        "milliseconds. One listener (`server.listen`, default `127.0.0.1:8787`) also "
        "serves the admin console's HTML pages at `/`, which are not part of this API.\n\n"
        "## Tokens\n\n"
        "`Authorization: Bearer TOKEN`. The **admin token** (`server.admin_token`) may "
        "call every route, `/metrics` included. The **ingest token** "
        "(`server.ingest_token`) may call only `POST /v1/events` and `GET /v1/catalogue`; "
        "elsewhere it gets 403. `GET /healthz` and `GET /v1/openapi.json` need no token. "
        "Without a token, or with a wrong one, every other path answers 401 (with "
        '`WWW-Authenticate: Bearer realm="almhookd"`), even one that does not exist.\n\n'
        "## Errors\n\n"
        'Every error is `{"error": {"code", "message", "details"?: [{"path", '
        '"message"}]}}`: `code` is stable, for programs; `message` is for people; '
        "`details` (422, only when there are problems to name) names each problem by its "
        "path in the body. Bad input is a 4xx, never a 500.\n\n"
        "| status | code | when |\n|---|---|---|\n"
        f"{rows}\n\n"
        "A request aiohttp itself refuses (a malformed head, an over-long header line) "
        "gets the same shape, its code `bad_request` or `http_error`, and an error of "
        "almhookd's own `internal_error` (500). A body sent without "
        "`Content-Type: application/json` is refused before it is read (415), so is one "
        "over `server.max_body_bytes` (413). Every `GET` route answers `HEAD` too.\n\n"
        "## Pages\n\n"
        "`deliveries` and `attempts` come in pages of `limit` (default 100, at most "
        f"{MAX_PAGE}); `nextCursor`, when not null, is the `cursor` of the next page."
    )


def openapi_document() -> Schema:
    """The OpenAPI 3.1 document of every route of the API (not the console's pages)."""
    paths: Schema = {}
    for operation in operations():
        paths.setdefault(operation.path, {})[operation.method] = operation.to_openapi()
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "almhookd HTTP API",
            "version": __version__,
            "description": _description(),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [{"name": name, "description": text} for name, text in _TAGS],
        "security": [{ADMIN_SCHEME: []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                ADMIN_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the admin token (`server.admin_token`, "
                    "`admin_token_file` or `ALMHOOKD_ADMIN_TOKEN`): every route",
                },
                INGEST_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the ingest token (`server.ingest_token`, "
                    "`ingest_token_file` or `ALMHOOKD_INGEST_TOKEN`): `POST /v1/events` "
                    "and `GET /v1/catalogue` only",
                },
            },
            "schemas": component_schemas(),
        },
    }
