"""The ingest fast path answers exactly as aiohttp's route does.

Every request below goes over a real socket to the real server (``GuardedRunner`` on a
real SQLite file) twice: once with the fast path, once without. The answers must be
the same (status, JSON body, the headers a client acts on) and so must what was stored;
the fast path's own count says which requests it answered itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from almhookd.api import fast_ingest
from almhookd.api.app import create_app
from almhookd.api.common import ServerState
from almhookd.api.fast_ingest import FAST_PATH_MAX_BYTES
from almhookd.api.server import ConnectionGuard, GuardedHandler, GuardedRunner, GuardedServer
from almhookd.auth import TokenChecker
from almhookd.config import Config, Secret
from almhookd.storage.sqlite import SqliteStorage
from tests.support import samples
from tests.support.clock import FakeClock
from tests.support.running import until
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

READ_BOUND_SECONDS = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    def key(self) -> tuple[int, str, tuple[tuple[str, str], ...]]:
        """What a client acts on: status, JSON body, the headers that tell it what to do."""
        kept = ("content-type", "retry-after", "www-authenticate", "allow", "connection")
        headers = tuple(sorted((k, v) for k, v in self.headers.items() if k in kept))
        return self.status, json.dumps(self.body, sort_keys=True), headers


@dataclass
class Server:
    port: int
    runner: GuardedRunner
    store: SqliteStorage
    app: web.Application

    @property
    def fast_answers(self) -> int:
        server = self.runner.server
        assert isinstance(server, GuardedServer)
        return 0 if server.fast is None else server.fast.answered

    async def exchange(self, turns: list[Turn]) -> list[Answer]:
        """On one connection, for each turn: its writes (one socket write each), then
        the answers it expects read."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        answers = []
        try:
            for writes, expected in turns:
                for data in writes:
                    writer.write(data)
                    await writer.drain()
                for _ in range(expected):
                    answers.append(await asyncio.wait_for(_read_answer(reader), READ_BOUND_SECONDS))
            return answers
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(
        status=int(status_line.split()[1]),
        body=json.loads(body) if body else None,
        headers=headers,
    )


@contextlib.asynccontextmanager
async def serving(directory: Path, config: Config, *, fast: bool) -> AsyncIterator[Server]:
    store = await SqliteStorage.open(directory / "almhookd.db", clock=FakeClock())
    tokens = TokenChecker(admin=Secret(ADMIN_TOKEN), ingest=Secret(INGEST_TOKEN))
    state = ServerState(config=config, tokens=tokens)
    app = create_app(store=store, config=config, clock=FakeClock(), tokens=tokens, state=state)
    runner = GuardedRunner(app, ConnectionGuard(state), fast_ingest=fast, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield Server(port=port, runner=runner, store=store, app=app)
    finally:
        if runner.server is not None:  # not stopped by the test
            await runner.cleanup()
        await store.close()


def request(
    body: bytes | str,
    *,
    token: str | None = INGEST_TOKEN,
    content_type: str | None = "application/json",
    path: str = "/v1/events",
    method: str = "POST",
    version: str = "1.1",
    extra: str = "",
    length: int | None = None,
    host: bool = True,
    raw_token: bytes | None = None,
) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    head = f"{method} {path} HTTP/{version}\r\n" + ("Host: almhookd\r\n" if host else "")
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    head += f"Content-Length: {len(data) if length is None else length}\r\n{extra}\r\n"
    if raw_token is not None:  # bytes a str head cannot carry as they are
        head = head.replace("Authorization: Bearer RAW", "Authorization: Bearer ")
        return head.encode().replace(b"Bearer \r\n", b"Bearer " + raw_token + b"\r\n", 1) + data
    return head.encode() + data


def event(event_id: str, name: str = "COURSE_ENROLLMENT") -> str:
    return json.dumps(samples.event(name, eventId=event_id))


def chunked(body: str) -> bytes:
    data = body.encode()
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: almhookd\r\n"
        f"Authorization: Bearer {INGEST_TOKEN}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    return head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


LARGE_ENVELOPE = json.dumps(
    {"events": [samples.event(eventId=f"large-{n}") for n in range(FAST_PATH_MAX_BYTES // 200)]}
)

#: One turn of a client: what it writes (one socket write each), then how many answers
#: it reads.
Turn = tuple[list[bytes], int]

#: name → (the client's turns on one connection, requests the fast path answers)
CASES: dict[str, tuple[list[Turn], int]] = {
    "one event": ([([request(event("e-1"))], 1)], 1),
    "the admin token": ([([request(event("e-1"), token=ADMIN_TOKEN)], 1)], 1),
    "an envelope": (
        [
            (
                [
                    request(
                        json.dumps({"events": [samples.event(eventId=f"e-{n}") for n in range(5)]})
                    )
                ],
                1,
            )
        ],
        1,
    ),
    "charset in the content type": (
        [([request(event("e-1"), content_type="application/json; charset=utf-8")], 1)],
        1,
    ),
    "an event without data": ([([request(json.dumps({"eventName": "COURSE_ENROLLMENT"}))], 1)], 0),
    "three kept-alive requests": (
        [([request(event("e-1"))], 1), ([request(event("e-2"))], 1), ([request(event("e-1"))], 1)],
        3,
    ),
    "a body a byte at a time": ([([bytes([b]) for b in request(event("e-1"))], 1)], 1),
    "no token": ([([request(event("e-1"), token=None)], 1)], 0),
    "a wrong token": ([([request(event("e-1"), token="not-a-token")], 1)], 0),
    "no content type": ([([request(event("e-1"), content_type=None)], 1)], 0),
    "text/plain": ([([request(event("e-1"), content_type="text/plain")], 1)], 0),
    "not JSON": ([([request("{not json")], 1)], 0),
    "not UTF-8": ([([request(b'{"eventName": "\xff"}')], 1)], 0),
    "invalid data": (
        [([request(json.dumps({"eventName": "COURSE_ENROLLMENT", "data": {"userId": "x"}}))], 1)],
        0,
    ),
    "an unknown event name": (
        [([request(event("e-1").replace("COURSE_ENROLLMENT", "NOPE"))], 1)],
        0,
    ),
    "seconds for milliseconds": (
        [([request(json.dumps(samples.event(eventId="e-1", timestamp=1727414643)))], 1)],
        0,
    ),
    # Once aiohttp has a connection, it keeps it.
    "a refused request, then a good one": (
        [([request("[]")], 1), ([request(event("e-2"))], 1)],
        0,
    ),
    "a good request, then a refused one, then a good one": (
        [([request(event("e-1"))], 1), ([request("[]")], 1), ([request(event("e-2"))], 1)],
        1,
    ),
    "a good request, then two pipelined": (
        [([request(event("e-1"))], 1), ([request(event("e-2")) + request(event("e-3"))], 2)],
        1,
    ),
    "two requests in one write (pipelined)": (
        [([request(event("e-1")) + request(event("e-2"))], 2)],
        0,
    ),
    "an ingest and a GET pipelined": (
        [
            (
                [
                    request(event("e-1"))
                    + request("", method="GET", path="/v1/catalogue", content_type=None)
                ],
                2,
            )
        ],
        0,
    ),
    "no Host header": ([([request(event("e-1"), host=False)], 1)], 0),
    "Content-Encoding: gzip on a plain body": (
        [([request(event("e-1"), extra="Content-Encoding: gzip\r\n")], 1)],
        0,
    ),
    "a header past the fast path's field limit": (
        [([request(event("e-1"), extra=f"X-Pad: {'p' * 5000}\r\n")], 1)],
        0,
    ),
    "a token with a non-ASCII byte after it": (
        [([request(event("e-1"), token="RAW", raw_token=INGEST_TOKEN.encode() + b"\xa0")], 1)],
        0,
    ),
    "chunked": ([([chunked(event("e-1"))], 1)], 0),
    "Expect: 100-continue": ([([request(event("e-1"), extra="Expect: 100-continue\r\n")], 2)], 0),
    "HTTP/1.0": ([([request(event("e-1"), version="1.0")], 1)], 0),
    "Connection: close": ([([request(event("e-1"), extra="Connection: close\r\n")], 1)], 1),
    "two Content-Length headers": (
        [([request(event("e-1"), extra=f"Content-Length: {len(event('e-1'))}\r\n")], 1)],
        0,
    ),
    "two Authorization headers": (
        [([request(event("e-1"), extra=f"Authorization: Bearer {ADMIN_TOKEN}\r\n")], 1)],
        0,
    ),
    "larger than the fast path holds": ([([request(LARGE_ENVELOPE)], 1)], 0),
    "larger than the body limit": ([([request("x" * 70_000)], 1)], 0),
    "a Content-Length past the body limit": ([([request(event("e-1"), length=10**9)], 1)], 0),
    "a query string": ([([request(event("e-1"), path="/v1/events?x=1")], 1)], 0),
    "another route": (
        [([request("", method="GET", path="/v1/catalogue", content_type=None)], 1)],
        0,
    ),
    "the wrong method": ([([request("", method="PUT")], 1)], 0),
    "a malformed head": ([([b"POST /v1/events HTTP/1.1\r\nBad Header\r\n\r\n"], 1)], 0),
    "an upgrade": (
        [([request(event("e-1"), extra="Connection: Upgrade\r\nUpgrade: websocket\r\n")], 1)],
        0,
    ),
}


@pytest.fixture
def server_config(config: Config) -> Config:
    assert config.server.max_body_bytes == 64 * 1024  # the shared fixture's, by design
    return config


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_the_fast_path_answers_as_aiohttp_does(
    case: str, server_config: Config, tmp_path: Path
) -> None:
    turns, fast_answers = CASES[case]
    seen: dict[bool, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {}
    for fast in (True, False):
        directory = tmp_path / ("fast" if fast else "aiohttp")
        directory.mkdir()
        async with serving(directory, server_config, fast=fast) as server:
            got = await server.exchange(turns)
            assert server.fast_answers == (fast_answers if fast else 0)
        seen[fast] = ([a.key() for a in got], _stored(directory / "almhookd.db"))
    assert seen[True] == seen[False]
    assert all(key[0] < 500 for key in seen[True][0]), seen[True]


def _stored(path: Path) -> list[tuple[Any, ...]]:
    """The stored events in ingest order, read from the file once the server is closed."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(
            "SELECT seq, event_id, event_name, account_id, timestamp_ms, realtime, body"
            " FROM events ORDER BY seq"
        ).fetchall()


def padded_envelope(count: int) -> str:
    events = []
    for n in range(count):
        event = samples.event(eventId=f"padded-{n}")
        event["data"]["padding"] = "x" * 2000
        events.append(event)
    return json.dumps({"events": events})


@pytest.mark.parametrize("fault", ["full", "closed"])
async def test_a_storage_failure_is_answered_as_aiohttp_does(
    fault: str, server_config: Config, tmp_path: Path
) -> None:
    """The fast path answers its own request's storage failure (507, 503) with
    ``Retry-After``, through the middleware's ``error_answer``."""
    body = padded_envelope(10)
    assert len(body) < FAST_PATH_MAX_BYTES
    seen = {}
    for fast in (True, False):
        directory = tmp_path / ("fast" if fast else "aiohttp")
        directory.mkdir()
        async with serving(directory, server_config, fast=fast) as server:
            if fault == "full":
                pages = await server.store._writer_pragma("page_count")
                await server.store._writer_pragma(f"max_page_count = {pages}")
            else:
                await server.store.close()
            [answer] = await server.exchange([([request(body)], 1)])
            assert server.fast_answers == (1 if fast else 0)
        status, text, headers = answer.key()
        seen[fast] = (status, text.replace(str(directory), "DIR"), headers)
    assert seen[True] == seen[False]
    status, _, headers = seen[True]
    assert status == (507 if fault == "full" else 503)
    assert ("retry-after", "5") in headers


async def test_a_request_under_way_is_answered_before_the_server_stops(
    server_config: Config, tmp_path: Path
) -> None:
    async with serving(tmp_path, server_config, fast=True) as server:
        release = threading.Event()
        server.store._executor.submit(release.wait)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request(event("e-1")))
            await until(lambda: server.store._unsettled == 1, what="the append waits")
            assert server.fast_answers == 1
            # What the daemon does on SIGTERM: the listener stops, every connection is
            # told to close, then each is waited for.
            manager = server.runner.server
            assert isinstance(manager, GuardedServer)
            [handler] = manager.guard.open
            stopping = asyncio.create_task(server.runner.cleanup())
            await until(lambda: handler.stopping, what="the shutdown at the connection")
            assert not stopping.done()
        finally:
            release.set()
        answer = await asyncio.wait_for(_read_answer(reader), READ_BOUND_SECONDS)
        assert answer.status == 202 and answer.body["eventIds"] == ["e-1"]
        await asyncio.wait_for(stopping, READ_BOUND_SECONDS)
        writer.close()


async def test_a_client_that_asks_to_close_is_answered_then_closed(
    server_config: Config, tmp_path: Path
) -> None:
    async with serving(tmp_path, server_config, fast=True) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(request(event("e-1"), extra="Connection: close\r\n"))
            answer = await asyncio.wait_for(_read_answer(reader), READ_BOUND_SECONDS)
            assert answer.status == 202 and answer.headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), READ_BOUND_SECONDS) == b""
            assert server.fast_answers == 1
        finally:
            writer.close()


async def test_a_body_under_way_is_not_closed_as_an_idle_keep_alive(
    server_config: Config, tmp_path: Path
) -> None:
    """The keep-alive limit is for idle connections: its check, coming due while a
    fast-path body is arriving, leaves the connection open."""
    async with serving(tmp_path, server_config, fast=True) as server:
        manager = server.runner.server
        assert isinstance(manager, GuardedServer)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            whole = request(event("e-1"))
            writer.write(whole[:-10])  # the head and most of the body

            def handler_in_body() -> GuardedHandler | None:
                for handler in manager.guard.open:
                    framing = handler._framing
                    if framing is not None and framing.in_body:
                        return handler
                return None

            await until(lambda: handler_in_body() is not None, what="the body under way")
            handler = handler_in_body()
            assert handler is not None
            # The keep-alive deadline passes (as after keepalive_timeout of dripping).
            handler._next_keepalive_close_time = handler._loop.time() - 1
            handler._process_keepalive()
            assert handler.transport is not None, "closed while its body was arriving"
            writer.write(whole[-10:])
            answer = await asyncio.wait_for(_read_answer(reader), READ_BOUND_SECONDS)
            assert answer.status == 202
        finally:
            writer.close()


async def test_a_fault_in_the_fast_path_is_a_500_and_a_closed_connection(
    server_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (an exception nobody foresaw) is answered as aiohttp answers a handler that
    raised: 500 in the JSON error shape, then the connection closed."""

    async def broken(*_: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fast_ingest, "store_ingest", broken)
    async with serving(tmp_path, server_config, fast=True) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(request(event("e-1")))
            answer = await asyncio.wait_for(_read_answer(reader), READ_BOUND_SECONDS)
            assert answer.status == 500 and answer.headers["connection"] == "close"
            assert answer.body == {
                "error": {
                    "code": "internal_error",
                    "message": "internal error: see the daemon's log",
                }
            }
            assert await asyncio.wait_for(reader.read(), READ_BOUND_SECONDS) == b""
        finally:
            writer.close()
