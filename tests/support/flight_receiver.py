"""A receiver on 127.0.0.1 that watches requests in flight, for the tests of several
processes sharing a database: one path per webhook (``/hook/<name>``), and for each
the most requests it ever had in flight at once.

A request is in flight from its arrival until it is answered or its sender gives up
(the handler is cancelled when the client closes the connection), so a request cut
short by a process that lost its lease ends there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True, kw_only=True)
class Arrival:
    name: str
    message_id: str
    event_ids: tuple[str, ...]
    answered: bool  #: answered 2xx, not cut short by its sender
    started_at: float  #: ``time.monotonic()`` at its arrival


@dataclass
class FlightReceiver:
    port: int = 0
    #: requests in flight now, and the most at once, per webhook name
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    most_in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    arrivals: list[Arrival] = field(default_factory=list)
    #: names whose requests are held until the event is set (absent: answered at once)
    holds: dict[str, asyncio.Event] = field(default_factory=dict)
    #: seconds each request takes to answer: a receiver doing some work, so that two
    #: requests to one webhook would overlap where a fast one might not show it
    work_seconds: float = 0.0
    #: each arrival per name, for tests that wait for one (they clear it first)
    arrived: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    #: when each request arrived (``time.monotonic()``), per name, answered or not yet
    starts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        started_at = time.monotonic()
        self.in_flight[name] += 1
        self.most_in_flight[name] = max(self.most_in_flight[name], self.in_flight[name])
        answered = False
        body = await request.read()
        event_ids = tuple(event["eventId"] for event in json.loads(body)["events"])
        try:
            self.starts[name].append(started_at)
            self.arrived[name].set()
            hold = self.holds.get(name)
            if hold is not None:
                await hold.wait()
            if self.work_seconds:
                await asyncio.sleep(self.work_seconds)
            answered = True
            return web.Response(status=204)
        finally:
            self.in_flight[name] -= 1
            self.arrivals.append(
                Arrival(
                    name=name,
                    message_id=request.headers.get("webhook-id", ""),
                    event_ids=event_ids,
                    answered=answered,
                    started_at=started_at,
                )
            )

    async def start(self) -> FlightReceiver:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._handle)
        # Cancelled when the client goes: a request its sender gave up is no longer in
        # flight.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def delivered(self, name: str) -> list[str]:
        """The event ids answered for ``name``, in the order answered, repeats included."""
        return [
            event_id
            for arrival in self.arrivals
            if arrival.name == name and arrival.answered
            for event_id in arrival.event_ids
        ]
