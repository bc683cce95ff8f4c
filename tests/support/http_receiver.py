"""A real HTTP receiver on 127.0.0.1 for delivery tests, programmable per request."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    peer: object = None  #: the client's (address, port): the same on a kept-alive connection

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def event_ids(self) -> list[str]:
        return [event["eventId"] for event in self.payload["events"]]


#: What the receiver does with one request: a status, or one of the special behaviours.
Behaviour = int | str | Callable[[web.Request], Any]


@dataclass
class Receiver:
    """Answers with ``behaviours`` in turn (the last one repeats), recording requests."""

    behaviours: list[Behaviour] = field(default_factory=lambda: [202])
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def respond(self, *behaviours: Behaviour) -> None:
        self.behaviours = list(behaviours)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(headers=dict(request.headers), body=body, at=time.monotonic())
        )
        self.arrived.set()
        behaviour = self.behaviours.pop(0) if len(self.behaviours) > 1 else self.behaviours[0]
        if self.delay:
            await asyncio.sleep(self.delay)
        if callable(behaviour):
            result: web.StreamResponse = await behaviour(request)
            return result
        if behaviour == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if behaviour == "redirect":
            raise web.HTTPFound(location="http://127.0.0.1:1/elsewhere")
        if isinstance(behaviour, str) and behaviour.startswith("sleep:"):
            await asyncio.sleep(float(behaviour.split(":", 1)[1]))
            return web.Response(status=202)
        assert isinstance(behaviour, int)
        return web.Response(status=behaviour, text=f"answer {behaviour}")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def all_event_ids(self) -> list[str]:
        return [event_id for request in self.received for event_id in request.event_ids]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Reads one request with a ``Content-Length`` body off a raw stream; its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head
