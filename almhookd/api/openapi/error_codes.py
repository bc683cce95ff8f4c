"""The ``error.code`` values of the API, each with its status and when it is answered:
the error table of ``docs/API.md`` and the codes each operation's error answers allow.

Pure data. The codes are those ``api.common`` (the middleware, ``read_text``,
``body_memory_budget``) and the handlers raise; the tests hold the daemon to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorCode:
    """One ``error.code`` the API answers, with its status and when."""

    status: int
    code: str
    meaning: str
    #: the seconds of the ``Retry-After`` header sent with it, if any
    retry_after: int | None = None


#: Every error code, in status order: the error table of ``docs/API.md`` and the
#: ``code`` values each operation's error answers allow.
ERROR_CODES: Final = (
    ErrorCode(
        status=400,
        code="malformed_json",
        meaning="the body is not JSON, not UTF-8, nested too deeply, or holds NaN or Infinity",
    ),
    ErrorCode(
        status=400,
        code="bad_request",
        meaning="a query parameter is wrong (`limit`, `cursor`, `state`), or the request "
        "itself cannot be parsed (`malformed request: …`), its body included (a "
        "`Content-Encoding` the body does not match)",
    ),
    ErrorCode(
        status=401,
        code="unauthorized",
        meaning="no `Authorization: Bearer TOKEN`, or not a token of this daemon",
    ),
    ErrorCode(
        status=403,
        code="forbidden",
        meaning="the ingest token on a route other than `POST /v1/events` and `GET /v1/catalogue`",
    ),
    ErrorCode(status=404, code="not_found", meaning="no such route, webhook or event"),
    ErrorCode(
        status=405,
        code="method_not_allowed",
        meaning="the path exists, the method does not; `Allow` names the methods it has",
    ),
    ErrorCode(
        status=409,
        code="limit_reached",
        meaning="`delivery.max_webhooks` webhooks exist already: delete one first",
    ),
    ErrorCode(
        status=409,
        code="no_secret",
        meaning="the webhook does not use `signature` auth, so it has no signing secret",
    ),
    ErrorCode(
        status=413, code="body_too_large", meaning="the body is over `server.max_body_bytes`"
    ),
    ErrorCode(
        status=415,
        code="unsupported_media_type",
        meaning="a body without `Content-Type: application/json`",
    ),
    ErrorCode(
        status=422,
        code="invalid",
        meaning="JSON, but not valid content: `details` names each problem by its path "
        "(`events[3].data.userId`, `targetUrl`); nothing of the request was done",
    ),
    ErrorCode(
        status=503,
        code="shutting_down",
        meaning="the daemon is stopping; send again to the restarted one",
        retry_after=5,
    ),
    ErrorCode(
        status=503,
        code="storage_unavailable",
        meaning="the database cannot be read or written now (locked, moved, I/O error)",
        retry_after=5,
    ),
    ErrorCode(
        status=503,
        code="busy",
        meaning="too many request bodies are being received at once (`server.max_body_memory`)",
        retry_after=1,
    ),
    ErrorCode(
        status=503,
        code="unavailable",
        meaning="the batch scheduler is not running (an application without one; never the daemon)",
    ),
    ErrorCode(
        status=507,
        code="storage_full",
        meaning="the disk holding the database is full; nothing was stored",
        retry_after=5,
    ),
)

ERROR_CODES_BY_NAME: Final = {error.code: error for error in ERROR_CODES}
