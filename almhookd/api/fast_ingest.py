"""``POST /v1/events`` below aiohttp: the ingest fast path.

A single-event request cost the loop more in aiohttp's request and response objects,
router and middlewares (44 µs) than in its validation and storage together. A
connection therefore starts on this path: httptools (llhttp) frames its requests, and
a request this path will surely answer 202 (the route, a valid token, a JSON body of
known length, validated) is stored and answered here with the same body aiohttp's
route gives.

Everything else is handed to aiohttp byte for byte, from the first byte of the request,
and the connection stays with aiohttp from then on: another route, a bad token, a body
that does not validate, chunked or pipelined requests, ``Expect``, HTTP/1.0, a
repeated header, more than :data:`FAST_PATH_MAX_BYTES`, shutting down. So every error
answer still comes from one place (aiohttp and the middleware), and the fast path only
ever answers 202, or the storage failure of a request it accepted (through the same
:func:`almhookd.api.common.error_answer`).
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Final

import httptools
from aiohttp import web

from almhookd.api.common import STATE, ApiError, error_answer, http_error_response
from almhookd.api.ingest import parse_ingest_text, store_ingest
from almhookd.domain.events import NewEvent
from almhookd.errors import InvalidInput, StorageError

#: The largest request (head and body) the fast path holds; larger ones go to aiohttp,
#: whose body-memory budget then counts them. A connection's buffer is bounded by this
#: plus one socket read (the transport reads up to 256 KiB at a time).
FAST_PATH_MAX_BYTES: Final = 64 * 1024

#: Heads the fast path frames: well inside aiohttp's own limits (8190 bytes a field, 128
#: fields), so that anything near them is aiohttp's to accept or refuse.
MAX_FIELD_BYTES: Final = 4096
MAX_FIELDS: Final = 64

_JSON_TYPES: Final = frozenset({b"application/json", b"application/json; charset=utf-8"})

#: Headers that change how a request is framed, read or answered: aiohttp decides those.
_FRAMING_HEADERS: Final = frozenset(
    {b"transfer-encoding", b"expect", b"upgrade", b"content-encoding"}
)


class HandOff(Exception):
    """The request under way is not the fast path's: aiohttp takes the connection."""


class FastRequest:
    """A complete request the fast path may answer: its token, its body, and whether the
    client keeps the connection (``Connection: close`` otherwise)."""

    __slots__ = ("authorization", "body", "keep_alive")

    def __init__(self, authorization: bytes, body: bytes, keep_alive: bool) -> None:
        self.authorization = authorization
        self.body = body
        self.keep_alive = keep_alive


class IngestFraming:
    """The framing of one connection's requests while they are fast-path requests.

    :meth:`feed` takes the bytes as they come and returns the request once it is whole;
    it raises :class:`HandOff` as soon as the request cannot be the fast path's, after
    which :meth:`raw` is every byte of that request received so far.
    """

    __slots__ = (
        "_body",
        "_chunks",
        "_headers",
        "_keep_alive",
        "_max_body",
        "_parser",
        "_refused",
        "_size",
        "_url",
        "_whole",
        "in_body",
    )

    def __init__(self, max_body_bytes: int) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._max_body = min(max_body_bytes, FAST_PATH_MAX_BYTES)
        self._chunks: list[bytes] = []
        self._size = 0
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._whole = False
        self._refused = False
        #: the head is in, the body is not (yet): the body's time limit applies
        self.in_body = False
        self._keep_alive = True

    def raw(self) -> bytes:
        return b"".join(self._chunks)

    def feed(self, data: bytes) -> FastRequest | None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > FAST_PATH_MAX_BYTES:
            raise HandOff
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            raise HandOff from None
        if self._refused:
            raise HandOff
        if not self._whole:
            return None
        return FastRequest(
            self._headers.get(b"authorization", b""),
            b"".join(self._body),
            self._keep_alive,
        )

    def next_request(self) -> None:
        """The request :meth:`feed` returned is taken: frame the next one."""
        self._chunks, self._size, self._url, self._headers = [], 0, b"", {}
        self._body, self._whole, self.in_body = [], False, False

    # --- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._whole:  # a second request in the same bytes: pipelining is aiohttp's
            self._refused = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if (
            name in self._headers
            or name in _FRAMING_HEADERS
            or len(name) + len(value) > MAX_FIELD_BYTES
            or len(self._headers) >= MAX_FIELDS
        ):
            self._refused = True
        self._headers[name] = value

    def on_headers_complete(self) -> None:
        parser, headers = self._parser, self._headers
        length = headers.get(b"content-length", b"")
        if not (
            self._url == b"/v1/events"
            and parser.get_method() == b"POST"
            and parser.get_http_version() == "1.1"
            and length.isdigit()
            and int(length) <= self._max_body
            and headers.get(b"content-type", b"").lower() in _JSON_TYPES
            and b"host" in headers  # HTTP/1.1 requires it; aiohttp refuses a request without
            # A token aiohttp would read differently (it decodes UTF-8, not Latin-1) is its.
            and headers.get(b"authorization", b"").isascii()
        ):
            self._refused = True
        self.in_body = True
        self._keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._whole = True
        self.in_body = False


class FastIngest:
    """The fast path's share of one application: validation, storage, the answer."""

    __slots__ = ("_app", "_date", "_date_second", "answered")

    def __init__(self, app: web.Application) -> None:
        self._app = app
        #: requests this path stored and answered itself (202 or a storage failure)
        self.answered = 0
        self._date = b""
        self._date_second = -1

    def framing(self) -> IngestFraming:
        return IngestFraming(self._app[STATE].config.server.max_body_bytes)

    def accept(self, request: FastRequest) -> list[NewEvent]:
        """The request's events, or :class:`HandOff` when aiohttp must answer it."""
        state = self._app[STATE]
        if state.tokens.role(request.authorization.decode("latin-1")) is None:
            raise HandOff
        try:
            return parse_ingest_text(self._app, request.body.decode("utf-8"))
        except (UnicodeDecodeError, ApiError, InvalidInput, StorageError):
            raise HandOff from None

    async def answer(self, events: list[NewEvent], *, keep_alive: bool) -> bytes:
        """Store ``events``; the whole HTTP answer (saying ``Connection: close`` when the
        client asked for it)."""
        close = b"" if keep_alive else b"Connection: close\r\n"
        self.answered += 1
        try:
            text = await store_ingest(self._app, events)
        except StorageError as error:
            return self._error(error_answer(self._app, error, "/v1/events"), close)
        return self._head(202, b"Accepted", close, text.encode())

    def internal_error(self) -> bytes:
        """The answer to a request the fast path failed on (a bug: logged by the caller),
        as aiohttp answers a handler that raised; the connection is closed after it."""
        response = http_error_response(500, "internal error: see the daemon's log")
        return self._error(response, b"Connection: close\r\n")

    def _error(self, response: web.Response, close: bytes) -> bytes:
        """An error answer the middleware made, as bytes (its headers kept)."""
        assert isinstance(response.body, bytes)
        extra = b"".join(
            f"{name}: {value}\r\n".encode("latin-1")
            for name, value in response.headers.items()
            if name not in ("Content-Type", "Content-Length")
        )
        return self._head(response.status, response.reason.encode(), extra + close, response.body)

    def _head(self, status: int, reason: bytes, extra: bytes, body: bytes) -> bytes:
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = formatdate(second, usegmt=True).encode()
        return b"".join(
            (
                b"HTTP/1.1 %d %s\r\n" % (status, reason),
                b"Content-Type: application/json; charset=utf-8\r\n",
                b"Content-Length: %d\r\n" % len(body),
                b"Date: " + self._date + b"\r\n",
                extra,
                b"\r\n",
                body,
            )
        )
