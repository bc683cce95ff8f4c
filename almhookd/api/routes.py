"""The HTTP API: ingest, event lookup, health. One aiohttp application.

Every error leaves as ``{"error": {"code", "message", "details"}}`` through one
middleware; bad input is a 4xx naming what is wrong, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from almhookd import __version__
from almhookd.auth import Role, TokenChecker
from almhookd.config import Config
from almhookd.delivery.dispatcher import Dispatcher
from almhookd.delivery.flusher import BatchScheduler
from almhookd.delivery.sender import Sender
from almhookd.domain.events import parse_ingest
from almhookd.domain.webhooks import Webhook
from almhookd.errors import InvalidInput, Problem, StorageClosed, StorageError, StorageFull
from almhookd.metrics import Metrics
from almhookd.protocols import Clock
from almhookd.storage.sqlite.store import (
    Store,
)
from almhookd.storage.values import StoredEvent

log = structlog.get_logger("almhookd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True, slots=True)
class StorageFault:
    """A storage failure a request met; ``/healthz`` reports it until storage works."""

    code: str  #: ``storage_full`` or ``storage_unavailable``, as the failed request got
    message: str
    since_ms: int


@dataclass(kw_only=True, slots=True)
class ServerState:
    """What the running server shares with the daemon that owns it; the daemon swaps
    ``config`` and ``tokens`` on a reload."""

    config: Config
    tokens: TokenChecker
    draining: bool = False
    #: the last storage failure since storage last worked, for ``/healthz``
    storage_fault: StorageFault | None = None
    #: (device, inode) of the database file when the server started
    database_identity: tuple[int, int] | None = None
    #: the write probe of ``/healthz`` under way (one at a time: see ``probe_writes``)
    write_probe: asyncio.Future[None] | None = None


STORE: Final = web.AppKey("store", Store)
CLOCK: Final = web.AppKey("clock", Clock)
STATE: Final = web.AppKey("state", ServerState)
SCHEDULER: Final = web.AppKey("scheduler", BatchScheduler)
DISPATCHER: Final = web.AppKey("dispatcher", Dispatcher)
SENDER: Final = web.AppKey("sender", Sender)
METRICS: Final = web.AppKey("metrics", Metrics)

#: Routes the ingest token may call; the admin token may call every route.
INGEST_ROUTES: Final = frozenset({"ingest"})
PUBLIC_ROUTES: Final = frozenset({"healthz"})


class ApiError(Exception):
    """An error answer: HTTP status, stable code, message and per-path details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Problem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        self.headers = headers or {}


def _error_response(error: ApiError) -> web.Response:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = [{"path": p.path, "message": p.message} for p in error.details]
    return web.json_response({"error": body}, status=error.status, headers=error.headers)


_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authorisation, then the handler; every error leaves as the JSON error shape."""
    try:
        _authorise(request)
        return await handler(request)
    except ApiError as error:
        return _error_response(error)
    except InvalidInput as error:
        return _error_response(ApiError(422, "invalid", error.message, error.problems))
    except StorageFull as error:
        storage_failed(request.app, "storage_full", error, request.app[CLOCK]())
        return _error_response(
            ApiError(507, "storage_full", error.message, headers={"Retry-After": "5"})
        )
    except StorageClosed:
        return _error_response(
            ApiError(
                503, "shutting_down", "almhookd is shutting down", headers={"Retry-After": "5"}
            )
        )
    except StorageError as error:
        log.error("api.storage_error", error=error.message, path=request.path)
        storage_failed(request.app, "storage_unavailable", error, request.app[CLOCK]())
        return _error_response(
            ApiError(503, "storage_unavailable", error.message, headers={"Retry-After": "5"})
        )
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _HTTP_CODES.get(error.status, "http_error")
        return _error_response(ApiError(error.status, code, error.reason))


def body_memory_budget() -> Middleware:
    """A middleware (after authorisation) holding the bytes of the request bodies being
    read to ``server.max_body_memory``: a body is counted by its Content-Length (a
    chunked one as ``max_body_bytes``) before it is read, and past the budget the
    request is answered 503 with ``Retry-After`` instead. Slow senders, each allowed
    its ``max_body_bytes``, would otherwise hold as many megabytes as connections."""
    held = 0

    @web.middleware
    async def hold_body_memory(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal held
        if not request.body_exists:
            return await handler(request)
        server = request.app[STATE].config.server
        size = min(request.content_length or server.max_body_bytes, server.max_body_bytes)
        if held + size > server.max_body_memory:
            raise ApiError(
                503,
                "busy",
                "too many request bodies are being received; try again shortly",
                headers={"Retry-After": "1"},
            )
        held += size
        try:
            return await handler(request)
        finally:
            held -= size

    return hold_body_memory


def http_error_response(status: int, message: str) -> web.Response:
    """The JSON error shape for an answer aiohttp makes itself (a request it cannot
    parse), so every error a client gets reads the same."""
    code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else "http_error")
    return _error_response(ApiError(status, code, message))


def storage_failed(app: web.Application, code: str, error: StorageError, now: float) -> None:
    """Remember a storage failure for ``/healthz``; logged once per fault, not per request
    (a full disk under steady ingest would otherwise flood the journal)."""
    state = app[STATE]
    if state.storage_fault is None or state.storage_fault.code != code:
        log.warning("storage.fault", code=code, error=error.message)
        state.storage_fault = StorageFault(
            code=code, message=error.message, since_ms=int(now * 1000)
        )


def storage_works(app: web.Application) -> None:
    state = app[STATE]
    if state.storage_fault is not None:
        log.info("storage.recovered", code=state.storage_fault.code)
        state.storage_fault = None


def database_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def check_database_file(app: web.Application) -> None:
    """Refuse to go on writing into a database file that was moved away or deleted: the
    open file still takes commits, but a restart would not find them."""
    expected, path = app[STATE].database_identity, app[STORE].path
    if expected is not None and database_identity(path) != expected:
        raise StorageError(
            f"{path}: the database file was moved or deleted while almhookd runs; "
            "put it back, or restart almhookd to start a new one"
        )


#: How long ``/healthz`` waits for its write probe before reporting the store stuck.
WRITE_PROBE_SECONDS: Final = 1.0


async def probe_writes(app: web.Application) -> None:
    """An empty write transaction within ``WRITE_PROBE_SECONDS``, or :class:`StorageError`.

    Reads succeed on a database another process holds locked; only a write shows it.
    The probe left running after a timeout is shared by later calls, so polling
    ``/healthz`` never queues more than one probe on the writer thread.
    """
    state = app[STATE]
    if state.write_probe is None or state.write_probe.done():
        state.write_probe = asyncio.ensure_future(app[STORE].ping())
    try:
        await asyncio.wait_for(asyncio.shield(state.write_probe), WRITE_PROBE_SECONDS)
    except TimeoutError:
        raise StorageError(
            f"{app[STORE].path}: the database takes no writes (locked by another process?)"
        ) from None


def _authorise(request: web.Request) -> None:
    route = request.match_info.route.name
    if route in PUBLIC_ROUTES:
        return
    role = request.app[STATE].tokens.role(request.headers.get("Authorization"))
    if role is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid token: send Authorization: Bearer TOKEN",
            headers={"WWW-Authenticate": 'Bearer realm="almhookd"'},
        )
    if role is Role.INGEST and route not in INGEST_ROUTES:
        raise ApiError(403, "forbidden", "the ingest token may only call POST /v1/events")


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or an :class:`ApiError` saying why it is not one."""
    return decode_json(await read_text(request))


async def read_text(request: web.Request) -> str:
    """The body of a JSON request as text: content type, size and UTF-8 checked."""
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected Content-Type: application/json, got {request.content_type or 'none'}",
        )
    limit = request.app[STATE].config.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large", f"the body is larger than {limit} bytes") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(
            400, "malformed_json", f"the body is not valid UTF-8 (byte {error.start})"
        ) from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: Python's json accepts NaN and Infinity; receivers' parsers do not. Built once.
_decode: Final = json.JSONDecoder(parse_constant=_no_constants).decode


def decode_json(text: str) -> Any:
    try:
        return _decode(text)
    except json.JSONDecodeError as error:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {error}") from None
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ApiError(400, "malformed_json", f"the body is not usable JSON: {reason}") from None


async def ingest(request: web.Request) -> web.Response:
    if request.app[STATE].draining:
        raise StorageClosed()
    text = await read_text(request)
    config = request.app[STATE].config
    events = parse_ingest(
        decode_json(text),
        now_ms=int(request.app[CLOCK]() * 1000),
        default_account_id=config.account.id,
        new_id=lambda: str(uuid.uuid4()),
        # Strict UTF-8 text holds no surrogates; only a \u escape can make one.
        check_surrogates="\\u" in text,
    )
    result = await request.app[STORE].append(events)
    # Checked after the commit: a file deleted before it would have taken the events
    # into an inode no restart finds. Not acknowledged, the producer sends them again.
    check_database_file(request.app)
    storage_works(request.app)
    metrics = request.app[METRICS]
    for name in result.accepted_names:
        metrics.events_ingested.labels(name).inc()
    if result.duplicates:
        metrics.events_duplicate.inc(result.duplicates)
    # Event ids match a pattern that needs no JSON escaping: format, don't encode.
    ids = ",".join(f'"{event.event_id}"' for event in events)
    return web.Response(
        status=202,
        content_type="application/json",
        text=f'{{"accepted":{result.accepted},"duplicates":{result.duplicates},"eventIds":[{ids}]}}',
    )


def event_document(event: StoredEvent) -> dict[str, Any]:
    return {
        **event.body,
        "accountId": event.account_id,
        "realtime": event.realtime,
        "ingestedAt": event.ingested_at_ms,
        "deliveries": [
            {
                "webhookId": d.webhook_id,
                "state": d.state,
                "attempts": d.attempts,
                "batchId": d.batch_id,
                "deliveredAt": d.delivered_at_ms,
            }
            for d in event.deliveries
        ],
    }


async def get_event(request: web.Request) -> web.Response:
    event_id = request.match_info["event_id"]
    event = await request.app[STORE].get_event(event_id)
    if event is None:
        raise ApiError(404, "not_found", f"no event with eventId {event_id!r}")
    return web.json_response(event_document(event))


async def webhook_health(store: Store, webhook: Webhook, now: float) -> dict[str, Any]:
    """A webhook's backlog and delivery health, as status, list and show answer them."""
    backlog = await store.backlog_summary(webhook.id)
    schedule = webhook.schedule
    oldest = backlog["oldest"]
    return {
        "backlog": {
            "realtime": backlog["realtime"],
            "batch": backlog["batch"],
            "batchHeld": backlog["held"],
        },
        "oldestPendingAgeMs": None if oldest is None else max(0, int(now * 1000) - oldest),
        "lastSuccessAt": epoch_ms(schedule.last_success_at),
        "failingSince": epoch_ms(schedule.failing_since),
        "consecutiveFailures": schedule.consecutive_failures,
        "lastError": schedule.last_error,
        "nextRetryAt": epoch_ms(schedule.next_attempt_at),
    }


async def status(request: web.Request) -> web.Response:
    """Per webhook: state, backlog, oldest pending age, failing since, next retry."""
    store, now = request.app[STORE], request.app[CLOCK]()
    scheduler = request.app.get(SCHEDULER)
    webhooks = []
    for webhook in await store.list_webhooks():
        webhooks.append(
            {
                "id": webhook.id,
                "name": webhook.name,
                "status": webhook.status,
                "disabledReason": webhook.disabled_reason,
                **await webhook_health(store, webhook, now),
            }
        )
    return web.json_response(
        {
            "webhooks": webhooks,
            "nextFlushAt": epoch_ms(scheduler.next_flush_at) if scheduler else None,
        }
    )


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format; state gauges are read from the store now."""
    store, metrics, now = request.app[STORE], request.app[METRICS], request.app[CLOCK]()
    by_status = dict.fromkeys(("active", "inactive", "disabled"), 0)
    metrics.backlog.clear()
    metrics.oldest_pending_age.clear()
    for webhook in await store.list_webhooks():
        by_status[webhook.status] += 1
        health = await webhook_health(store, webhook, now)
        metrics.backlog.labels(webhook.id, "realtime").set(health["backlog"]["realtime"])
        metrics.backlog.labels(webhook.id, "batch").set(health["backlog"]["batch"])
        metrics.oldest_pending_age.labels(webhook.id).set(
            (health["oldestPendingAgeMs"] or 0) / 1000
        )
    for name, count in by_status.items():
        metrics.webhooks.labels(name).set(count)
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def batch_flush(request: web.Request) -> web.Response:
    scheduler = request.app.get(SCHEDULER)
    if scheduler is None:
        raise ApiError(503, "unavailable", "the batch scheduler is not running")
    released = await scheduler.flush()
    return web.json_response(
        {
            "released": sum(released.values()),
            "webhooks": released,
            "nextFlushAt": epoch_ms(scheduler.next_flush_at),
        },
        status=202,
    )


def epoch_ms(seconds: float | None) -> int | None:
    """Epoch seconds (internal) → epoch milliseconds (the API's unit)."""
    return None if seconds is None else int(seconds * 1000)


async def healthz(request: web.Request) -> web.Response:
    """200 when the database reads and takes writes; else 503 saying what is wrong,
    including a storage failure ingest met since (a full disk) until ingest works again,
    and a delivery worker that died and is not running again yet."""
    store, state = request.app[STORE], request.app[STATE]
    try:
        await store.check()
        check_database_file(request.app)
        await probe_writes(request.app)
    except StorageError as error:
        return web.json_response(
            {"status": "unavailable", "error": error.message, "version": __version__}, status=503
        )
    fault = state.storage_fault
    if fault is not None and fault.code == "storage_full":
        # The empty write probe needs no room: only a write that does tells that space
        # came back, and a producer waiting for a healthy /healthz waits for this.
        with contextlib.suppress(StorageError):
            await store.probe_space()
            storage_works(request.app)
            fault = None
    if fault is not None and fault.code == "storage_unavailable":
        storage_works(request.app)  # the probe wrote: whatever blocked storage is gone
    elif fault is not None:
        return web.json_response(
            {
                "status": "unavailable",
                "code": fault.code,
                "error": fault.message,
                "since": fault.since_ms,
                "version": __version__,
            },
            status=503,
        )
    dispatcher = request.app.get(DISPATCHER)
    dead = dispatcher.dead_workers() if dispatcher is not None else []
    if dead:
        # Between a worker's death and its restart by the dispatcher: those webhooks
        # get nothing delivered meanwhile.
        return web.json_response(
            {
                "status": "unavailable",
                "code": "worker_stopped",
                "error": "a delivery worker stopped; the dispatcher restarts it",
                "webhooks": dead,
                "version": __version__,
            },
            status=503,
        )
    status = "draining" if state.draining else "ok"
    return web.json_response(
        {"status": status, "version": __version__, "schemaVersion": store.schema_version},
        status=503 if request.app[STATE].draining else 200,
    )


def create_app(
    *,
    store: Store,
    config: Config,
    clock: Clock,
    tokens: TokenChecker,
    state: ServerState | None = None,
    scheduler: BatchScheduler | None = None,
    dispatcher: Dispatcher | None = None,
    sender: Sender | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[middleware],
        client_max_size=config.server.max_body_bytes,
    )
    app[STORE] = store
    app[CLOCK] = clock
    app[STATE] = state or ServerState(config=config, tokens=tokens)
    if app[STATE].database_identity is None:
        app[STATE].database_identity = database_identity(store.path)
    app[METRICS] = metrics or Metrics()
    if scheduler is not None:
        app[SCHEDULER] = scheduler
    if dispatcher is not None and sender is not None:
        app[DISPATCHER] = dispatcher
        app[SENDER] = sender
        # Imported here: the admin module builds on this one's keys and helpers.
        from almhookd.api import admin

        admin.add_routes(app)
    app.router.add_post("/v1/events", ingest, name="ingest")
    app.router.add_get("/v1/events/{event_id}", get_event, name="get_event")
    app.router.add_get("/v1/status", status, name="status")
    app.router.add_get("/metrics", metrics_endpoint, name="metrics")
    app.router.add_post("/v1/batch/flush", batch_flush, name="batch_flush")
    app.router.add_get("/healthz", healthz, name="healthz")
    return app
