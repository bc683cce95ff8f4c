"""What every route of the HTTP API shares: the typed app keys, the server state, the
one middleware (auth and the JSON error shape), the body-memory budget, reading JSON.

Every error leaves as ``{"error": {"code", "message", "details"}}`` through the
middleware; bad input is a 4xx naming what is wrong, never a 500. The route modules
(``ingest``, ``ops``, ``admin``, ``catalogue``) import this one, never each other.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import structlog
from aiohttp import web
from aiohttp.http_exceptions import PayloadEncodingError
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError

from almhookd.auth import Role, TokenChecker
from almhookd.config import Config
from almhookd.delivery.cluster import Cluster
from almhookd.delivery.dispatcher import Dispatcher
from almhookd.delivery.flusher import BatchScheduler
from almhookd.delivery.sender import Sender
from almhookd.domain.webhooks import Webhook
from almhookd.errors import InvalidInput, Problem, StorageClosed, StorageError, StorageFull
from almhookd.metrics import Metrics
from almhookd.protocols import Clock
from almhookd.storage.interface import Storage

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


STORE: Final = web.AppKey("store", Storage)


CLOCK: Final = web.AppKey("clock", Clock)


STATE: Final = web.AppKey("state", ServerState)


SCHEDULER: Final = web.AppKey("scheduler", BatchScheduler)


DISPATCHER: Final = web.AppKey("dispatcher", Dispatcher)


SENDER: Final = web.AppKey("sender", Sender)


METRICS: Final = web.AppKey("metrics", Metrics)


#: This process's membership when several share a PostgreSQL database.
CLUSTER: Final = web.AppKey("cluster", Cluster)


#: Routes the ingest token may call (producers need the event names too); the admin
#: token may call every route.
INGEST_ROUTES: Final = frozenset({"ingest", "catalogue"})


#: Routes anyone may call: the health check (load balancers) and the API's description
#: (client generators, API browsers; it holds no secret).
PUBLIC_ROUTES: Final = frozenset({"healthz", "openapi"})


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
    except (ApiError, InvalidInput, StorageError) as error:
        return error_answer(request.app, error, request.path)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _HTTP_CODES.get(error.status, "http_error")
        # A 405 keeps its Allow header, which HTTP requires and aiohttp has set.
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return _error_response(ApiError(error.status, code, error.reason, headers=headers))


def error_answer(
    app: web.Application, error: ApiError | InvalidInput | StorageError, path: str
) -> web.Response:
    """The answer to a request that failed with ``error`` (storage failures are also
    remembered for ``/healthz``)."""
    if isinstance(error, ApiError):
        return _error_response(error)
    if isinstance(error, InvalidInput):
        return _error_response(ApiError(422, "invalid", error.message, error.problems))
    if isinstance(error, StorageFull):
        storage_failed(app, "storage_full", error, app[CLOCK]())
        return _error_response(
            ApiError(507, "storage_full", error.message, headers={"Retry-After": "5"})
        )
    if isinstance(error, StorageClosed):
        return _error_response(
            ApiError(
                503, "shutting_down", "almhookd is shutting down", headers={"Retry-After": "5"}
            )
        )
    log.error("api.storage_error", error=error.message, path=path)
    storage_failed(app, "storage_unavailable", error, app[CLOCK]())
    return _error_response(
        ApiError(503, "storage_unavailable", error.message, headers={"Retry-After": "5"})
    )


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


def _authorise(request: web.Request) -> None:
    route = request.match_info.route.name
    # The console's pages (almhookd.console) check their own session instead.
    if route in PUBLIC_ROUTES or (route is not None and route.startswith("console.")):
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
        raise ApiError(
            403,
            "forbidden",
            "the ingest token may only call POST /v1/events and GET /v1/catalogue",
        )


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
    except (PayloadEncodingError, RequestPayloadError):
        # e.g. a Content-Encoding the body does not match
        raise ApiError(
            400,
            "bad_request",
            "malformed request: the body cannot be read as its Content-Encoding says",
        ) from None
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


#: The fast decoder: it takes no more than ``_decode`` does and gives the same values
#: (``tests/unit/test_decode_json.py`` holds it to that), about 4 times faster.
_fast_decode: Final = msgspec.json.Decoder().decode


def decode_json(text: str) -> Any:
    try:
        return _fast_decode(text)
    except Exception:  # noqa: S110 - refused or too deep: json decides and words why
        pass
    try:
        return _decode(text)
    except json.JSONDecodeError as error:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {error}") from None
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ApiError(400, "malformed_json", f"the body is not usable JSON: {reason}") from None


def epoch_ms(seconds: float | None) -> int | None:
    """Epoch seconds (internal) → epoch milliseconds (the API's unit)."""
    return None if seconds is None else int(seconds * 1000)


async def webhook_health(store: Storage, webhook: Webhook, now: float) -> dict[str, Any]:
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
        # An archived or disabled webhook has no worker: nothing is retried until it is
        # re-activated, whatever its schedule last said.
        "nextRetryAt": epoch_ms(schedule.next_attempt_at) if webhook.active else None,
    }
