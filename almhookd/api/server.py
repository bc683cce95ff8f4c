"""The listener's connections: time limits and a cap, built into aiohttp's server.

Relies on aiohttp internals (its ``RequestHandler``): an aiohttp upgrade must rerun
``tests/acceptance/test_connections.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from almhookd.api.common import ServerState, http_error_response
from almhookd.api.fast_ingest import FAST_PATH_MAX_BYTES, FastIngest, HandOff, IngestFraming
from almhookd.config import ServerConfig
from almhookd.domain.events import NewEvent
from almhookd.logs import crash_fields, parser_fault

log = structlog.get_logger("almhookd.server")

# --- the listener's connections: time limits and a cap -----------------------------
#
# aiohttp 3.14 limits only the idle time between requests (keepalive_timeout, which
# also starts at the connection's opening); a head or a body may trickle in for ever
# and connections are not counted. Its request handler (the asyncio protocol of one
# connection) is subclassed here, and the runner builds its server with it.


@dataclass(slots=True)
class ConnectionGuard:
    """The open connections and the limits they keep, read from the running
    configuration (a reload applies to what happens next)."""

    state: ServerState
    #: admitted connections, oldest first
    open: dict[GuardedHandler, None] = field(default_factory=dict)
    refused: int = 0
    evicted: int = 0
    _warned_at: float = float("-inf")

    @property
    def limits(self) -> ServerConfig:
        return self.state.config.server

    def admit(self, handler: GuardedHandler, now: float) -> bool:
        """Whether a new connection may stay. At the cap, the connection idle the longest
        (no request under way) is closed to make room: a client with nothing to send
        loses nothing but a kept-alive socket, while new requests keep being answered."""
        if len(self.open) >= self.limits.max_connections:
            idle = [other for other in self.open if other.waiting_for_request]
            if idle:
                self.evicted += 1
                min(idle, key=lambda other: other.last_read).expire("evicted")
            else:
                self.refused += 1
            if now - self._warned_at >= CONNECTION_WARNING_INTERVAL_SECONDS:
                # Once a minute, not per connection: a flood would flood the journal.
                self._warned_at = now
                log.warning(
                    "server.max_connections",
                    max_connections=self.limits.max_connections,
                    evicted_idle=self.evicted,
                    refused=self.refused,
                )
            if not idle:
                return False
        self.open[handler] = None
        return True

    def release(self, handler: GuardedHandler) -> None:
        self.open.pop(handler, None)


#: The least time between two warnings that the connection cap is reached.
CONNECTION_WARNING_INTERVAL_SECONDS: Final = 60.0


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


class GuardedHandler(RequestHandler):
    """aiohttp's handler of one connection, with a header time limit, a body that must
    keep coming, a place under the guard's cap, and its own errors in the JSON shape.

    With ``fast`` the connection starts on the ingest fast path
    (:mod:`almhookd.api.fast_ingest`): its bytes reach aiohttp's parser only once a
    request is not the fast path's, and from then on all of them do.
    """

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if half sent
        if isinstance(exc, HttpProcessingError):
            text = f"malformed request: {parser_fault(exc)}"
        elif status >= 500:
            text = "internal error: see the daemon's log"
        else:
            text = _phrase(status)
        response = http_error_response(status, text)
        response.force_close()
        return response

    def __init__(
        self,
        manager: web.Server,
        guard: ConnectionGuard,
        fast: FastIngest | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._fast = fast
        #: the fast path's framing while the connection is on it, else None
        self._framing: IngestFraming | None = None if fast is None else fast.framing()
        #: the fast-path request being stored and answered
        self._fast_task: asyncio.Task[None] | None = None
        #: bytes that came while it was: the next request's, read once it is answered
        self._fast_later: list[bytes] = []
        self._fast_paused = False
        #: the server's shutdown reached this connection (it then waits for its request)
        self.stopping = False
        self._admitted = False
        #: why this side closed the connection, if it did
        self._expired: str | None = None
        #: when the head now awaited began (the connection's opening, or the first byte
        #: after an answer); None while a request is handled or no byte came after one
        self._head_since: float | None = None
        self._answered = False
        self.last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting_for_request(self) -> bool:
        """No request under way: idle, or part of a head in."""
        waiter, framing = self._waiter, self._framing
        return (
            waiter is not None
            and not waiter.done()
            and self._fast_task is None
            and not (framing is not None and framing.in_body)
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        now = self._loop.time()
        if not self._guard.admit(self, now):
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self.last_read = self._head_since = now
        self._arm(now + self._guard.limits.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._guard.release(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        now = self.last_read = self._loop.time()
        if self._answered:
            self._answered = False
            self._head_since = now
            self._arm(now + self._guard.limits.header_timeout)
        if self._framing is not None:
            data = self._fast_path(data)
            if not data:
                return
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:
            self._head_since = None
            self._arm(now + self._guard.limits.body_timeout)

    def _fast_path(self, data: bytes) -> bytes:
        """Give ``data`` to the fast path; returns what aiohttp's parser gets instead
        (nothing while the fast path keeps the connection)."""
        if self._fast_task is not None:  # one request at a time, answered in order
            self._fast_later.append(data)
            if sum(map(len, self._fast_later)) > FAST_PATH_MAX_BYTES and self.transport:
                self._fast_paused = True
                self.transport.pause_reading()
            return b""
        framing, fast = self._framing, self._fast
        if framing is None or fast is None:  # the caller checked; for the type checker
            return data
        try:
            request = framing.feed(data)
            if request is None:
                if framing.in_body and self._head_since is not None:
                    self._head_since = None
                    self._arm(self.last_read + self._guard.limits.body_timeout)
                return b""
            events = fast.accept(request)
        except HandOff:
            self._framing = None
            return framing.raw()
        framing.next_request()
        self._head_since = None
        self._fast_task = self._loop.create_task(
            self._answer_fast(fast, events, keep_alive=request.keep_alive)
        )
        return b""

    async def _answer_fast(
        self, fast: FastIngest, events: list[NewEvent], *, keep_alive: bool
    ) -> None:
        try:
            answer = await fast.answer(events, keep_alive=keep_alive)
        except Exception as error:  # a bug: answered as aiohttp answers a failed handler
            log.error("api.fast_ingest_failed", **crash_fields(error))
            self._fast_task = None
            if self.transport is not None:
                self.transport.write(fast.internal_error())
            self.force_close()
            return
        self._fast_task = None
        if self.transport is None:  # the client left: its events are stored, unanswered
            return
        self.transport.write(answer)
        if not keep_alive:  # the client asked: closed once the answer is sent
            self.force_close()
            return
        self._answered = True
        self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        later, self._fast_later = b"".join(self._fast_later), []
        if self._fast_paused:
            self._fast_paused = False
            self.transport.resume_reading()
        if later:
            self.data_received(later)

    def _process_keepalive(self) -> None:
        framing = self._framing
        if self._fast_task is not None or (framing is not None and framing.in_body):
            # A request is under way (its body coming, or being stored): not idle.
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        super()._process_keepalive()

    def close(self) -> None:
        self._framing = None  # no new request on the fast path either
        super().close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp's
        # aiohttp waits for its own request under way; the fast path's, it cannot see.
        self.stopping = True
        self._framing = None
        task = self._fast_task
        if task is not None:
            started = self._loop.time()
            await asyncio.wait([task], timeout=timeout)
            if timeout is not None:  # one grace period in all, not one each
                timeout = max(0.0, timeout - (self._loop.time() - started))
        await super().shutdown(timeout)

    async def finish_response(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().finish_response(*args, **kwargs)
        self._answered = True
        return result

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # A handler whose body this side cut off fails reading it: not an error.
        if self._expired is None:
            super().log_exception(*args, **kw)

    def expire(self, reason: str) -> None:
        self._expired = reason
        self._guard.release(self)
        log.debug("server.connection_closed", reason=reason)
        self.force_close()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._check)

    def _body_awaited(self) -> bool:
        """A handler waits for body bytes that are not there (reading is not paused
        because the handler is behind: then the lack of progress is ours)."""
        framing = self._framing
        if framing is not None and framing.in_body and self._fast_task is None:
            return True
        request = self._current_request
        return (
            request is not None
            and not request.content.is_eof()
            and not self._reading_paused
            and not request.content._buffer  # nothing left unread
        )

    def _check(self) -> None:
        self._timer = None
        if self.transport is None:
            return
        limits, now = self._guard.limits, self._loop.time()
        if self._head_since is not None and self.waiting_for_request:
            deadline, reason = self._head_since + limits.header_timeout, "header_timeout"
        elif self._body_awaited():
            deadline, reason = self.last_read + limits.body_timeout, "body_timeout"
        else:  # nothing awaited from the client now: look again later
            self._arm(now + min(limits.header_timeout, limits.body_timeout))
            return
        if now >= deadline:
            self.expire(reason)
        else:
            self._arm(deadline)


class GuardedServer(web.Server):
    """aiohttp's server making :class:`GuardedHandler` connections; the keep-alive and
    lingering limits are the configuration's at each connection's opening."""

    def __init__(
        self, *args: Any, guard: ConnectionGuard, fast: FastIngest | None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.fast = fast

    def __call__(self) -> RequestHandler:
        limits = self.guard.limits
        options = {
            **self._kwargs,
            "keepalive_timeout": limits.keepalive_timeout,
            # The rest of a body answered before it was read (401, 413, 503) is read
            # and dropped for at most this long.
            "lingering_time": limits.body_timeout,
        }
        return GuardedHandler(self, self.guard, self.fast, loop=self._loop, **options)


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose server is a :class:`GuardedServer`; ``fast_ingest`` puts
    every connection on the ingest fast path first."""

    def __init__(
        self,
        app: web.Application,
        guard: ConnectionGuard,
        *,
        fast_ingest: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard
        self._fast_ingest = fast_ingest

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts and freezes the application
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            guard=self._guard,
            fast=FastIngest(self.app) if self._fast_ingest else None,
            **plain._kwargs,  # the handler options the runner was given
        )
