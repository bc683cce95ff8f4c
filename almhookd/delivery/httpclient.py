"""A lean HTTP/1.1 client for deliveries: one ``POST`` at a time on each connection.

A delivery worker keeps one request in flight, so the client needs no pipelining, no
cookies, no redirects and no proxies: a pool of keep-alive connections per origin, a
response parser for ``Content-Length``, chunked and close-delimited bodies, and the
two timeouts of the contract. aiohttp's client did the same job for about 340 µs of
CPU per request on this machine; this one takes about 90 µs (``bench/BENCHMARKS.md``),
and the event loop is the daemon's bottleneck when each request carries one event.

Names are resolved and checked by ``guard`` before every new connection, and the
connection goes to the checked address, so a name cannot change between check and
connect. Bodies are read up to ``max_body``; the rest is dropped with the connection.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, cast

import httptools
import yarl

from almhookd.errors import AlmhookdError

#: Bytes of an answer that are not body accepted at most: its head, interim answers
#: and trailers (and chunk lines, of which each chunk may add ``_CHUNK_LINE``).
MAX_HEAD: Final = 64 * 1024
#: Interim (1xx) answers accepted before the final one.
MAX_INTERIM: Final = 8
#: Framing bytes each chunk may add beyond ``MAX_HEAD``: its size line and CRLFs.
_CHUNK_LINE: Final = 64

Guard = Callable[[str, Sequence[str]], None]
"""Raises when a host's resolved addresses may not be connected to."""
Resolve = Callable[[str, int], Awaitable[list[tuple[int, str]]]]
"""``(family, address)`` for each address a host name resolves to."""


class HttpError(AlmhookdError):
    """The HTTP request failed."""


class ConnectFailed(HttpError):
    """Cannot connect to the receiver."""


class Disconnected(HttpError):
    """The receiver closed the connection without an answer."""


class BadResponse(HttpError):
    """The receiver's answer is not HTTP/1.x."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Origin:
    host: str  #: IDNA-encoded, no brackets
    port: int
    tls: bool
    literal_family: int | None  #: the address family when ``host`` is an IP literal


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    origin: Origin
    request_line: bytes  #: ``POST /path?query HTTP/1.1`` and the ``Host`` header


@functools.lru_cache(maxsize=256)
def parse_target(url: str) -> Target:
    """Where a URL's requests go and how their head starts (cached: every request asks)."""
    parsed = yarl.URL(url)
    host = parsed.raw_host
    if parsed.scheme not in ("http", "https") or not host or parsed.port is None:
        raise HttpError(f"not an http(s) URL: {parsed.scheme}://{host or ''}")
    try:
        family: int | None = (
            socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        )
    except ValueError:
        family = None
    line = f"POST {parsed.raw_path_qs} HTTP/1.1\r\nHost: {parsed.host_port_subcomponent}\r\n"
    return Target(
        origin=Origin(
            host=host, port=parsed.port, tls=parsed.scheme == "https", literal_family=family
        ),
        request_line=line.encode("ascii"),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]  #: lower-case names; repeated fields joined by ", "
    body: bytes  #: at most ``max_body`` bytes, still content-encoded

    def decoded_body(self, limit: int) -> bytes:
        """The body with a gzip or deflate content-coding undone, at most ``limit`` bytes."""
        coding = self.headers.get("content-encoding", "").strip().lower()
        if coding not in ("gzip", "deflate", "x-gzip"):
            return self.body[:limit]
        for wbits in (47, -15):  # gzip or zlib header (auto), then raw deflate
            try:
                return zlib.decompressobj(wbits).decompress(self.body, limit)
            except zlib.error:
                continue
        return self.body[:limit]


def request_head(target: Target, headers: Mapping[str, str], body_length: int) -> bytes:
    """The request's head; refuses header fields that would split it."""
    lines = [f"Content-Length: {body_length}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise HttpError(f"header {name.strip()!r} contains a line break or colon")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    try:
        return target.request_line + "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise HttpError("a header holds characters outside ISO-8859-1") from None


class _Parsed(Exception):
    """Stops the parser from inside a callback: the answer is settled, or it failed."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``exchange()`` sends a request and reads the answer.

    ``httptools`` (llhttp, Node.js's parser) frames the answer; this class bounds what a
    receiver may make it do: the bytes that are not body (heads, interim answers, chunk
    lines, trailers), the count of interim answers and the body kept."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        # A 2xx acknowledges the delivery however odd its headers' values (a control
        # character in a Content-Type); names, and the values that frame the body
        # (Content-Length here, Transfer-Encoding in on_headers_complete), stay strict.
        self._parser.set_dangerous_leniencies(lenient_headers=True)
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.idle_since = 0.0
        self._expect_answer(max_body=0, read_timeout=0.0, deadline=0.0)

    def _expect_answer(self, *, max_body: int, read_timeout: float, deadline: float) -> None:
        """The parser's and the timer's state for the next answer."""
        self._status = 0
        self._status_line_seen = False
        self._headers: dict[str, str] = {}
        self._headers_done = False  #: the final (non-1xx) answer's head is complete
        self._framing = False  #: Content-Length or Transfer-Encoding frames the body
        self._interim = 0
        self._received = 0  #: bytes of this answer fed to the parser
        self._body = bytearray()
        self._body_seen = 0  #: body bytes the parser reported, kept or not
        self._chunks = 0
        self._first_bytes = b""  #: the answer's start, to name what a non-HTTP peer sent
        self._settled = False
        self._max_body = max_body
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._last_read = self._loop.time()
        self.reusable = False

    @property
    def _close_delimited(self) -> bool:
        """The answer's body runs until the receiver closes the connection."""
        return self._headers_done and not self._framing and not self._settled

    # --- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():  # bytes nobody asked for
            self.abort()
            return
        self._last_read = self._loop.time()
        if not self._received:
            self._first_bytes = data[:80]
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("bad response: the receiver switched protocols"))
            return
        except httptools.HttpParserError as error:
            cause = error.__context__
            if isinstance(cause, _Parsed):
                return  # a callback settled the answer and stopped the parser
            if isinstance(cause, BadResponse):
                self._fail(cause)
                return
            if self._settled:  # junk after a whole answer: it is kept, not the connection
                self.abort()
                return
            self._fail(BadResponse(self._describe(error)))
            return
        # Whatever is not body is framing: heads, interim answers, chunk lines, trailers.
        if self._received - self._body_seen > MAX_HEAD + _CHUNK_LINE * self._chunks:
            self._fail(
                BadResponse(f"bad response: more than {MAX_HEAD} bytes of headers and framing")
            )

    def eof_received(self) -> bool | None:
        if self._waiter is not None and self._close_delimited:  # the body ends here
            self._finish(reusable=False)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._waiter is None:
            return
        if not self._received:
            self._fail(Disconnected())
        elif self._close_delimited:
            self._finish(reusable=False)
        else:
            reason = f": {exc}" if exc is not None else ""
            self._fail(BadResponse(f"bad response: the connection closed mid-answer{reason}"))

    # --- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._settled:  # bytes past the whole answer: the connection is not reused
            self.reusable = False
            raise _Parsed

    def on_status(self, _reason: bytes) -> None:
        self._status_line_seen = True

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints)
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise BadResponse(f"bad response: more than {MAX_INTERIM} interim answers")
            self._headers = {}
            return
        encoding = self._headers.get("transfer-encoding")
        if encoding is not None:
            if self._parser.get_http_version() != "1.1":
                # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding is faulty.
                raise BadResponse("bad response: Transfer-Encoding in an HTTP/1.0 answer")
            if not encoding.isprintable() or not encoding.isascii():
                raise BadResponse(f"bad response: invalid Transfer-Encoding {encoding[:40]!r}")
        self._status = status
        self._headers_done = True
        self._framing = (
            status in (204, 304)
            or "transfer-encoding" in self._headers
            or "content-length" in self._headers
        )

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self._body_seen += len(body)
        room = self._max_body - len(self._body)
        self._body += body[:room]
        if len(body) >= room:
            self._finish(reusable=False)  # the rest is dropped with the connection
            raise _Parsed

    def on_message_complete(self) -> None:
        if self._status:  # the final answer, not an interim one
            self._finish(reusable=self._parser.should_keep_alive())

    # --- the exchange ------------------------------------------------------------------

    async def exchange(
        self, head: bytes, body: bytes, *, max_body: int, read_timeout: float, deadline: float
    ) -> Response:
        assert self._transport is not None
        waiter: asyncio.Future[Response] = self._loop.create_future()
        self._waiter = waiter
        self._expect_answer(max_body=max_body, read_timeout=read_timeout, deadline=deadline)
        self._timer = self._loop.call_at(
            min(self._last_read + read_timeout, deadline), self._check_timeout
        )
        self._transport.writelines((head, body))
        try:
            return await waiter
        except BaseException:
            self.abort()  # cancelled or failed: the connection's state is unknown
            raise
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _check_timeout(self) -> None:
        self._timer = None
        if self._waiter is None:
            return
        now = self._loop.time()
        if self._transport is not None and self._transport.get_write_buffer_size():
            self._last_read = now  # the body is still going out: no answer is due yet
        limit = min(self._last_read + self._read_timeout, self._deadline)
        if now >= limit:
            self._fail(TimeoutError())
        else:
            self._timer = self._loop.call_at(limit, self._check_timeout)

    def _describe(self, error: httptools.HttpParserError) -> str:
        reason = str(error) or type(error).__name__
        if self._status_line_seen:
            return f"bad response: {reason}"
        # The status line itself: show it, so a peer that is not HTTP is recognised.
        if reason.startswith("Expected HTTP/"):
            reason = "not HTTP/1.x"
        first_line = self._first_bytes.split(b"\r\n", 1)[0].decode("latin-1")
        return f"bad response: {reason}: {first_line!r}"

    def _finish(self, *, reusable: bool) -> None:
        waiter = self._waiter
        if waiter is None or not self._headers_done or waiter.done():
            return
        self._settled = True
        self.reusable = reusable and not self.closed
        waiter.set_result(
            Response(status=self._status, headers=self._headers, body=bytes(self._body))
        )

    def _fail(self, error: BaseException) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.abort()

    def abort(self) -> None:
        self.reusable = False
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.abort()

    @property
    def usable(self) -> bool:
        return not self.closed and self._transport is not None and not self._transport.is_closing()


class HttpClient:
    """Sends ``POST`` requests over a pool of keep-alive connections.

    ``guard`` sees every host's resolved addresses before a connection is made."""

    def __init__(
        self,
        *,
        guard: Guard,
        resolve: Resolve,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: float = 30.0,
        dns_ttl_s: float = 10.0,
        user_agent: str,
    ) -> None:
        self.guard = guard
        self._resolve_name = resolve
        self._ssl = ssl_context
        self._keepalive_s = keepalive_s
        self._dns_ttl_s = dns_ttl_s
        self._user_agent = user_agent
        self._idle: dict[Origin, list[_Connection]] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[tuple[int, str]]]] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self.connections_made = 0  #: for tests: keep-alive reuse is observable

    async def post(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes,
        connect_timeout: float,
        read_timeout: float,
        max_body: int,
    ) -> Response:
        """POST ``body``; raises :class:`HttpError`, ``TimeoutError`` or the guard's error."""
        loop = asyncio.get_running_loop()
        target = parse_target(url)
        head = request_head(
            target, {"User-Agent": self._user_agent, **headers}, body_length=len(body)
        )
        deadline = loop.time() + connect_timeout + read_timeout
        connection = self._take(target.origin, loop.time())
        reused = connection is not None
        for _ in range(2):
            if connection is None:
                connection = await self._connect(target.origin, connect_timeout, deadline)
            try:
                response = await connection.exchange(
                    head, body, max_body=max_body, read_timeout=read_timeout, deadline=deadline
                )
            except Disconnected:
                # A reused connection the receiver had closed while idle: one more try on
                # a fresh one. Nothing of an answer arrived, so nothing is lost either way.
                if not reused:
                    raise
                reused, connection = False, None
                continue
            if connection.reusable:
                self._release(target.origin, connection, loop)
            else:
                connection.abort()
            return response
        raise Disconnected()  # pragma: no cover - the loop returns or raises

    def close_idle(self) -> None:
        """Closes every idle connection (a reload may have changed what is allowed)."""
        for connections in self._idle.values():
            for connection in connections:
                connection.abort()
        self._idle.clear()
        self._dns.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    # --- connections ----------------------------------------------------------------

    def _take(self, origin: Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable and now - connection.idle_since < self._keepalive_s:
                return connection
            connection.abort()
        return None

    def _release(
        self, origin: Origin, connection: _Connection, loop: asyncio.AbstractEventLoop
    ) -> None:
        connection.idle_since = loop.time()
        self._idle.setdefault(origin, []).append(connection)
        if self._expiry is None:
            self._expiry = loop.call_later(self._keepalive_s, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._expiry = None
        now = loop.time()
        oldest = now
        for origin, connections in list(self._idle.items()):
            kept = []
            for connection in connections:
                if connection.usable and now - connection.idle_since < self._keepalive_s:
                    kept.append(connection)
                    oldest = min(oldest, connection.idle_since)
                else:
                    connection.abort()
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if self._idle:
            self._expiry = loop.call_at(oldest + self._keepalive_s, self._expire, loop)

    async def _connect(
        self, origin: Origin, connect_timeout: float, deadline: float
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        timeout = min(connect_timeout, deadline - loop.time())
        async with asyncio.timeout(timeout):
            addresses = await self._resolve(origin, loop)
            self.guard(origin.host, [address for _family, address in addresses])
            context = None
            if origin.tls:
                context = self._ssl or _default_context()
            failure: OSError | None = None
            for family, address in addresses:
                try:
                    _transport, connection = await loop.create_connection(
                        lambda: _Connection(loop),
                        host=address,
                        port=origin.port,
                        family=family,
                        ssl=context,
                        server_hostname=origin.host if context is not None else None,
                    )
                except OSError as error:
                    failure = error
                    continue
                self.connections_made += 1
                return connection
        assert failure is not None
        raise ConnectFailed(f"cannot connect: {_os_reason(failure)}")

    async def _resolve(
        self, origin: Origin, loop: asyncio.AbstractEventLoop
    ) -> list[tuple[int, str]]:
        if origin.literal_family is not None:
            return [(origin.literal_family, origin.host)]
        key = (origin.host, origin.port)
        cached = self._dns.get(key)
        if cached is not None and loop.time() < cached[0]:
            return cached[1]
        try:
            addresses = await self._resolve_name(origin.host, origin.port)
        except socket.gaierror as error:
            raise ConnectFailed(
                f"cannot connect: {origin.host} does not resolve: {error.strerror or error}"
            ) from None
        if not addresses:
            raise ConnectFailed(f"cannot connect: {origin.host} does not resolve")
        self._dns[key] = (loop.time() + self._dns_ttl_s, addresses)
        return addresses


@functools.cache
def _default_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _os_reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    if error.errno:  # asyncio says "Connect call failed (address)", uvloop says the reason
        return os.strerror(error.errno)
    return error.strerror or str(error) or type(error).__name__
