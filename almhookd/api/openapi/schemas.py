"""The JSON schemas of the API's bodies (OpenAPI 3.1, JSON Schema 2020-12), as plain data.

Pure: every function returns a new dict, so a caller may change what it gets. The limits
come from the modules that enforce them (``domain.webhooks``, ``domain.events``,
``api.actions``), and the 27 ingest events from the catalogue, so the document follows
the code instead of a copy of it. Answer schemas are open (the contract lets almhookd
add fields); the tests close them to catch a field the daemon sends but no schema names.
"""

from __future__ import annotations

from typing import Any, Final

from almhookd.api.actions import DELIVERY_STATES, RESPONSE_PREVIEW
from almhookd.domain.catalogue import CATALOGUE, LO_TYPES, EventType, FieldType
from almhookd.domain.events import (
    EARLIEST_MS,
    EVENT_ID,
    LATEST_MS,
    MAX_EVENT_INFO,
    MAX_EVENTS_PER_REQUEST,
)
from almhookd.domain.replay import MAX_REPLAY_IDS
from almhookd.domain.signing import SCHEME
from almhookd.domain.webhooks import (
    AUTH_TYPES,
    MAX_DESCRIPTION,
    MAX_EMAIL,
    MAX_NAME,
    MAX_URL,
    STATUSES,
)

Schema = dict[str, Any]

#: What ``domain.events`` accepts as an ``eventId``, anchored as JSON Schema wants.
EVENT_ID_PATTERN: Final = f"^{EVENT_ID.pattern}$"
#: The ``timestamp`` range of ``domain.events``: a smaller one is taken for seconds by
#: mistake, a larger one is no date.
EARLIEST_TIMESTAMP_MS: Final = EARLIEST_MS
LATEST_TIMESTAMP_MS: Final = LATEST_MS
INT64_MAX: Final = 2**63 - 1
#: The prefix of the per-event ingest schemas: ``IngestEvent.COURSE_ENROLLMENT`` …
EVENT_SCHEMA_PREFIX: Final = "IngestEvent."


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, description: str) -> Schema:
    return {"type": [kind, "null"], "description": description}


def _epoch_ms(description: str, *, nullable: bool = False) -> Schema:
    if nullable:
        return _nullable("integer", f"{description} (epoch milliseconds)")
    return {"type": "integer", "description": f"{description} (epoch milliseconds)"}


def _object(
    properties: dict[str, Schema], *, required: tuple[str, ...] = (), description: str = ""
) -> Schema:
    """An answer object: open, as the contract lets almhookd add fields."""
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    schema["properties"] = properties
    if required:
        schema["required"] = list(required)
    return schema


def _input(
    properties: dict[str, Schema], *, required: tuple[str, ...] = (), description: str = ""
) -> Schema:
    """A request object: closed, as the API refuses unknown keys (a typo, usually)."""
    schema = _object(properties, required=required, description=description)
    schema["additionalProperties"] = False
    return schema


# --- events -----------------------------------------------------------------------


def field_schema(field_type: FieldType) -> Schema:
    """A ``data`` field's schema: its JSON type, enum or range; strings not blank."""
    schema: Schema = field_type.describe()
    if field_type is FieldType.STRING:
        schema.update(minLength=1, pattern=r"\S")
    return schema


def data_schema(event: EventType) -> Schema:
    """An event's ``data``: its fields with their types; other fields are kept as sent."""
    properties = {
        name: field_schema(field_type)
        for fields in (event.fields, event.optional)
        for name, field_type in fields.items()
    }
    return {
        "type": "object",
        "description": f"`data` of {event.name} (docs/EVENTS.md); other fields are kept as "
        "they are and delivered",
        "properties": properties,
        "required": list(event.fields),
        "additionalProperties": True,
    }


def _event_fields() -> dict[str, Schema]:
    return {
        "eventId": {
            "type": "string",
            "pattern": EVENT_ID_PATTERN,
            "description": "1 to 128 letters, digits and `. _ : -` (a UUID fits); made (a "
            "UUID) when missing. A known `eventId` is a duplicate, not stored twice",
        },
        "timestamp": {
            "type": "integer",
            "minimum": EARLIEST_TIMESTAMP_MS,
            "maximum": LATEST_TIMESTAMP_MS,
            "description": "when it happened, epoch milliseconds (a value that looks like "
            "seconds is refused); now when missing",
        },
        "eventInfo": {
            "type": "string",
            "maxLength": MAX_EVENT_INFO,
            "description": "an opaque trace string; made from the id and time when missing",
        },
    }


def ingest_event_schema(event: EventType) -> Schema:
    """One event of ``event.name`` as ``POST /v1/events`` takes it."""
    return _input(
        {
            "eventName": {"const": event.name},
            "data": data_schema(event),
            **_event_fields(),
        },
        required=("eventName", "data"),
        description=f"{event.kind} event: {event.description}",
    )


def event_schemas() -> dict[str, Schema]:
    """``IngestEvent`` (one of the 27, told apart by ``eventName``) and one schema each."""
    names = {f"{EVENT_SCHEMA_PREFIX}{name}": name for name in CATALOGUE}
    return {
        "EventName": {
            "type": "string",
            "enum": list(CATALOGUE),
            "description": "one of the 27 events of the catalogue (docs/EVENTS.md)",
        },
        "IngestEvent": {
            "description": "an event: `eventName`, its `data`, and optionally `eventId`, "
            "`timestamp`, `eventInfo`",
            "oneOf": [ref(schema) for schema in names],
            "discriminator": {
                "propertyName": "eventName",
                "mapping": {
                    name: f"#/components/schemas/{schema}" for schema, name in names.items()
                },
            },
        },
        "IngestBody": {
            "description": "one event, or an envelope of several",
            "oneOf": [ref("IngestEvent"), ref("IngestEnvelope")],
        },
        "IngestEnvelope": _input(
            {
                "accountId": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": INT64_MAX,
                    "description": "written into the delivered payloads; `account.id` when missing",
                },
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_EVENTS_PER_REQUEST,
                    "items": ref("IngestEvent"),
                },
            },
            required=("events",),
            description="several events of one account, accepted or refused together",
        ),
        "IngestResult": _object(
            {
                "accepted": {"type": "integer", "description": "events stored now"},
                "duplicates": {
                    "type": "integer",
                    "description": "events whose `eventId` was known already (not stored again)",
                },
                "eventIds": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "the id of every event of the request, in its order",
                },
            },
            required=("accepted", "duplicates", "eventIds"),
        ),
        "StoredEvent": _object(
            {
                "eventId": {"type": "string"},
                "eventName": ref("EventName"),
                "timestamp": _epoch_ms("when it happened"),
                "eventInfo": {"type": "string"},
                "data": {"type": "object", "description": "as accepted"},
                "accountId": {"type": "integer"},
                "realtime": {
                    "type": "boolean",
                    "description": "false: a batch event, held until the next batch flush",
                },
                "ingestedAt": _epoch_ms("when almhookd stored it"),
                "deliveries": {"type": "array", "items": ref("EventDelivery")},
            },
            required=(
                "eventId",
                "eventName",
                "timestamp",
                "eventInfo",
                "data",
                "accountId",
                "realtime",
                "ingestedAt",
                "deliveries",
            ),
            description="an event as stored, with its delivery to each subscribed webhook",
        ),
        "EventDelivery": _object(
            {
                "webhookId": {"type": "string"},
                "state": ref("DeliveryState"),
                "attempts": {"type": "integer"},
                "batchId": _nullable(
                    "string", "the request (`webhook-id` header) that carries or carried it"
                ),
                "deliveredAt": _epoch_ms("when a 2xx acknowledged it", nullable=True),
            },
            required=("webhookId", "state", "attempts", "batchId", "deliveredAt"),
        ),
        "DeliveryState": {
            "type": "string",
            "enum": list(DELIVERY_STATES),
            "description": "`pending` (due, or held for the batch flush), `sending` (in a "
            "request under way), `delivered` (a 2xx), `expired` (older than "
            "`storage.retention`, given up)",
        },
    }


# --- webhooks ---------------------------------------------------------------------


def _webhook_fields(*, create: bool) -> dict[str, Schema]:
    """The fields of a create (``create``) or patch body."""
    events: Schema = {
        "type": "array",
        "minItems": 1,
        "items": ref("EventName"),
        "description": "the events it subscribes to",
    }
    return {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME,
            "description": "unique; no control characters",
        },
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "targetUrl": {
            "type": "string",
            "format": "uri",
            "maxLength": MAX_URL,
            "description": "http(s) URL the events are POSTed to; loopback, private and "
            "link-local addresses are refused unless `delivery.allow_private_targets` or "
            "`delivery.allowed_networks` allow them",
        },
        "auth": ref("WebhookAuthInput"),
        "events": events,
        "active": {
            "type": "boolean",
            "description": ("true when missing; " if create else "")
            + "false archives it (status `inactive`), true re-enables it (also after a "
            "`disabled`)",
        },
        "contactEmail": {
            "type": "string",
            "maxLength": MAX_EMAIL,
            "description": "who gets the reminder e-mails while it fails; may be empty",
        },
    }


def _health_fields() -> dict[str, Schema]:
    """A webhook's backlog and delivery health (``api.common.webhook_health``)."""
    return {
        "backlog": _object(
            {
                "realtime": {"type": "integer", "description": "real-time events outstanding"},
                "batch": {"type": "integer", "description": "batch events outstanding"},
                "batchHeld": {
                    "type": "integer",
                    "description": "of which held for the next batch flush",
                },
            },
            required=("realtime", "batch", "batchHeld"),
        ),
        "oldestPendingAgeMs": _nullable(
            "integer", "milliseconds since the oldest outstanding event was stored"
        ),
        "lastSuccessAt": _epoch_ms("the last 2xx", nullable=True),
        "failingSince": _epoch_ms("the first failure since the last 2xx", nullable=True),
        "consecutiveFailures": {"type": "integer"},
        "lastError": _nullable("string", "why the last attempt failed"),
        "nextRetryAt": _epoch_ms(
            "the next attempt while failing; null when not failing or not active",
            nullable=True,
        ),
    }


_HEALTH_REQUIRED: Final = (
    "backlog",
    "oldestPendingAgeMs",
    "lastSuccessAt",
    "failingSince",
    "consecutiveFailures",
    "lastError",
    "nextRetryAt",
)


def webhook_schemas() -> dict[str, Schema]:
    return {
        "WebhookAuthInput": _input(
            {
                "type": {"type": "string", "enum": list(AUTH_TYPES)},
                "username": {
                    "type": "string",
                    "minLength": 1,
                    "description": "basic only, required there, no `:`",
                },
                "password": {
                    "type": "string",
                    "minLength": 1,
                    "description": "basic only: required on create; on a patch, the current "
                    "one is kept when missing",
                },
            },
            required=("type",),
            description="`none`; `basic` (username and password); `signature` (Standard "
            "Webhooks, the secret is generated: no username or password)",
        ),
        "WebhookCreate": _input(
            _webhook_fields(create=True), required=("name", "targetUrl", "events")
        ),
        "WebhookPatch": _input(
            _webhook_fields(create=False),
            description="the fields to change; those missing stay as they are",
        ),
        "WebhookAuth": _object(
            {
                "type": {"type": "string", "enum": list(AUTH_TYPES)},
                "username": {"type": "string", "description": "basic only"},
                "passwordSet": {
                    "type": "boolean",
                    "description": "basic only; the password itself is never shown",
                },
            },
            required=("type",),
        ),
        "WebhookStatus": {
            "type": "string",
            "enum": list(STATUSES),
            "description": "`active`; `inactive` (archived by an admin); `disabled` (by "
            "almhookd: a 410 Gone, or failing for the whole retention; see "
            "`disabledReason`). Set `active` to true to re-enable",
        },
        "Webhook": _object(
            {
                "id": {"type": "string", "description": "`wh_` and 16 hex digits"},
                "name": {"type": "string"},
                "description": {"type": "string"},
                "targetUrl": {"type": "string"},
                "auth": ref("WebhookAuth"),
                "events": {"type": "array", "items": ref("EventName")},
                "active": {"type": "boolean", "description": "status is `active`"},
                "status": ref("WebhookStatus"),
                "disabledReason": _nullable("string", "why almhookd disabled it"),
                "contactEmail": {"type": "string"},
                "createdAt": _epoch_ms("created"),
                "updatedAt": _epoch_ms("last changed"),
                **_health_fields(),
            },
            required=(
                "id",
                "name",
                "description",
                "targetUrl",
                "auth",
                "events",
                "active",
                "status",
                "disabledReason",
                "contactEmail",
                "createdAt",
                "updatedAt",
                *_HEALTH_REQUIRED,
            ),
            description="a webhook's settings (no password), state and delivery health",
        ),
        "WebhookList": _object(
            {"webhooks": {"type": "array", "items": ref("Webhook")}}, required=("webhooks",)
        ),
        "TestResult": _object(
            {
                "ok": {"type": "boolean", "description": "the receiver answered 2xx"},
                "status": _nullable("integer", "the receiver's HTTP status; null: no answer"),
                "durationMs": {"type": "integer"},
                "error": _nullable("string", "why it failed"),
                "responseBody": {
                    "type": "string",
                    "maxLength": RESPONSE_PREVIEW,
                    "description": f"the start of the receiver's answer ({RESPONSE_PREVIEW} "
                    "characters at most)",
                },
                "signingSecret": {
                    "type": "string",
                    "description": "a draft with signature auth only: the throw-away secret "
                    "it was signed with (the saved webhook gets its own)",
                },
            },
            required=("ok", "status", "durationMs", "error", "responseBody"),
            description="one test delivery (header `almhookd-test: true`), not retried",
        ),
        "SigningSecret": _object(
            {
                "webhookId": {"type": "string"},
                "secret": {"type": "string", "description": "`whsec_` + base64"},
                "scheme": {"const": SCHEME},
                "algorithm": {"const": "HMAC-SHA256"},
                "headers": _object(
                    {
                        "id": {"const": "webhook-id"},
                        "timestamp": {"const": "webhook-timestamp"},
                        "signature": {"const": "webhook-signature"},
                    },
                    required=("id", "timestamp", "signature"),
                ),
                "signedContent": {"const": "{webhook-id}.{webhook-timestamp}.{body}"},
                "createdAt": _epoch_ms("this secret made"),
                "previousSecretsValidUntil": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "when each older secret still signing stops (epoch ms)",
                },
                "graceSeconds": {
                    "type": "number",
                    "description": "rotation only: how long the previous secrets keep "
                    "signing (`delivery.secret_rotation_grace`)",
                },
            },
            required=(
                "webhookId",
                "secret",
                "scheme",
                "algorithm",
                "headers",
                "signedContent",
                "createdAt",
                "previousSecretsValidUntil",
            ),
            description="the newest signing secret, for the receiver's verifier "
            "(docs/RECEIVING.md)",
        ),
        "Delivery": _object(
            {
                "eventId": {"type": "string"},
                "eventName": ref("EventName"),
                "ingestedAt": _epoch_ms("stored"),
                "state": ref("DeliveryState"),
                "attempts": {"type": "integer"},
                "batchId": _nullable("string", "the request (`webhook-id`) that carries it"),
                "deliveredAt": _epoch_ms("acknowledged", nullable=True),
                "dueAt": _epoch_ms(
                    "when it is due; null: held for the batch flush, or done", nullable=True
                ),
            },
            required=(
                "eventId",
                "eventName",
                "ingestedAt",
                "state",
                "attempts",
                "batchId",
                "deliveredAt",
                "dueAt",
            ),
        ),
        "DeliveryPage": _object(
            {
                "deliveries": {"type": "array", "items": ref("Delivery")},
                "nextCursor": _nullable(
                    "string", "pass as `cursor` for the next page; null: the last page"
                ),
            },
            required=("deliveries", "nextCursor"),
            description="deliveries in ingest order",
        ),
        "Attempt": _object(
            {
                "id": {"type": "integer"},
                "batchId": {"type": "string", "description": "the `webhook-id` header sent"},
                "startedAt": _epoch_ms("sent"),
                "durationMs": {"type": "integer"},
                "eventCount": {"type": "integer"},
                "status": _nullable("integer", "the receiver's HTTP status; null: no answer"),
                "error": _nullable("string", "why it failed"),
                "responseBody": {
                    "type": "string",
                    "description": "the start of the receiver's answer (4 KiB at most)",
                },
            },
            required=(
                "id",
                "batchId",
                "startedAt",
                "durationMs",
                "eventCount",
                "status",
                "error",
                "responseBody",
            ),
        ),
        "AttemptPage": _object(
            {
                "attempts": {"type": "array", "items": ref("Attempt")},
                "nextCursor": _nullable(
                    "string", "pass as `cursor` for the next page; null: the last page"
                ),
            },
            required=("attempts", "nextCursor"),
            description="the request log, newest first",
        ),
        "Replay": {
            "description": "what to queue again: events by id, or every retained event "
            "stored since a time",
            "oneOf": [
                _input(
                    {
                        "eventIds": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_REPLAY_IDS,
                            "items": {"type": "string", "pattern": EVENT_ID_PATTERN},
                        }
                    },
                    required=("eventIds",),
                ),
                _input(
                    {
                        "since": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": INT64_MAX,
                            "description": "epoch milliseconds",
                        }
                    },
                    required=("since",),
                ),
            ],
        },
        "ReplayResult": _object(
            {"queued": {"type": "integer", "description": "deliveries queued again"}},
            required=("queued",),
        ),
    }


# --- operations, catalogue, errors --------------------------------------------------


def ops_schemas() -> dict[str, Schema]:
    return {
        "Status": _object(
            {
                "webhooks": {
                    "type": "array",
                    "items": _object(
                        {
                            "id": {"type": "string"},
                            "name": {"type": "string"},
                            "status": ref("WebhookStatus"),
                            "disabledReason": _nullable("string", "why almhookd disabled it"),
                            **_health_fields(),
                            "owner": _nullable(
                                "string",
                                "PostgreSQL only: the id of the process delivering to it "
                                "(null: none holds it now)",
                            ),
                        },
                        required=("id", "name", "status", "disabledReason", *_HEALTH_REQUIRED),
                    ),
                },
                "nextFlushAt": _epoch_ms("the next batch flush", nullable=True),
                "cluster": _object(
                    {
                        "process": {"type": "string", "description": "the answering process"},
                        "leader": _nullable(
                            "string", "the process running the batch flush and maintenance"
                        ),
                        "processes": {
                            "type": "array",
                            "description": "the live processes, oldest first",
                            "items": _object(
                                {
                                    "id": {"type": "string", "description": "random per start"},
                                    "host": {"type": "string"},
                                    "pid": {"type": "integer"},
                                    "startedAt": _epoch_ms("it started"),
                                    "heartbeatAgeMs": {
                                        "type": "integer",
                                        "description": "since its last heartbeat",
                                    },
                                    "webhooks": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "description": "the webhooks it delivers to",
                                    },
                                },
                                required=("id", "host", "pid", "startedAt", "heartbeatAgeMs"),
                            ),
                        },
                        "owners": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "description": "process id by webhook id (held leases only)",
                        },
                    },
                    required=("process", "leader", "processes", "owners"),
                    description="PostgreSQL only: the processes sharing the database",
                ),
            },
            required=("webhooks", "nextFlushAt"),
        ),
        "FlushResult": _object(
            {
                "released": {"type": "integer", "description": "held deliveries released"},
                "webhooks": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "description": "released deliveries by webhook id",
                },
                "nextFlushAt": _epoch_ms("the next scheduled flush", nullable=True),
            },
            required=("released", "webhooks", "nextFlushAt"),
        ),
        "Health": _object(
            {
                "status": {"type": "string", "enum": ["ok", "draining", "unavailable"]},
                "version": {"type": "string"},
                "schemaVersion": {"type": "integer", "description": "the database's"},
                "code": {
                    "type": "string",
                    "enum": ["storage_full", "storage_unavailable", "worker_stopped"],
                    "description": "what is wrong, when a fault met earlier is still there",
                },
                "error": {"type": "string", "description": "what is wrong"},
                "since": _epoch_ms("the storage fault began"),
                "webhooks": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "worker_stopped: the webhooks whose worker is restarting",
                },
                "cluster": _object(
                    {
                        "process": {"type": "string", "description": "this process's id"},
                        "processesAlive": {"type": "integer"},
                        "webhooksHeld": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "the webhooks this process delivers to",
                        },
                        "leader": {
                            "type": "boolean",
                            "description": "whether it runs the batch flush and maintenance",
                        },
                    },
                    required=("process", "processesAlive", "webhooksHeld", "leader"),
                    description="PostgreSQL only: this process in the cluster",
                ),
            },
            required=("status", "version"),
        ),
        "Catalogue": _object(
            {
                "events": {
                    "type": "array",
                    "items": _object(
                        {
                            "name": ref("EventName"),
                            "kind": {"type": "string", "enum": ["realtime", "batch"]},
                            "description": {"type": "string"},
                            "fields": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "name": {"type": "string"},
                                        "type": {
                                            "type": "string",
                                            "enum": ["integer", "number", "string", "boolean"],
                                        },
                                        "required": {"type": "boolean"},
                                        "enum": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                            "description": f"loType: {', '.join(LO_TYPES)}",
                                        },
                                        "minimum": {"type": "number"},
                                        "maximum": {"type": "number"},
                                    },
                                    required=("name", "type", "required"),
                                ),
                            },
                        },
                        required=("name", "kind", "description", "fields"),
                    ),
                }
            },
            required=("events",),
            description="the 27 events, real-time first (docs/EVENTS.md)",
        ),
        "PrometheusText": {
            "type": "string",
            "description": "Prometheus text exposition format",
        },
        "OpenApiDocument": {
            "type": "object",
            "description": "an OpenAPI 3.1 document: this one",
        },
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": {"type": "string", "description": "stable, for programs"},
                        "message": {"type": "string", "description": "for people"},
                        "details": {"type": "array", "items": ref("Problem")},
                    },
                    required=("code", "message"),
                )
            },
            required=("error",),
            description="every error answer; `details` only when there are problems to name",
        ),
        "Problem": _object(
            {
                "path": {
                    "type": "string",
                    "description": "where in the body (`events[0].data.userId`); empty: the "
                    "body as a whole",
                },
                "message": {"type": "string"},
            },
            required=("path", "message"),
        ),
    }


def error_schema(codes: tuple[str, ...]) -> Schema:
    """The error shape with ``code`` limited to ``codes`` (one status's of an operation)."""
    error = ops_schemas()["Error"]
    inner = error["properties"]["error"]
    inner["properties"]["code"] = {"type": "string", "enum": list(codes)}
    del error["description"]
    return error


def component_schemas() -> dict[str, Schema]:
    """Every named schema of the document; the 27 ``IngestEvent.*`` ones last."""
    events = event_schemas()
    per_event = {
        f"{EVENT_SCHEMA_PREFIX}{name}": ingest_event_schema(event)
        for name, event in CATALOGUE.items()
    }
    return {**events, **webhook_schemas(), **ops_schemas(), **per_event}
