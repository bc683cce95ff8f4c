"""An aiohttp handler that verifies, parses, de-duplicates and orders, then calls back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from almhookd.receiver.ordering import Decision, OrderingGuard
from almhookd.receiver.payload import ReceivedEvent, parse_payload
from almhookd.receiver.verify import VerificationFailed, verify_basic, verify_signature

EventCallback = Callable[[ReceivedEvent, Decision], Awaitable[None]]


def make_handler(
    on_event: EventCallback,
    *,
    secrets: Sequence[str] = (),
    basic: tuple[str, str] | None = None,
    guard: OrderingGuard | None = None,
) -> Callable[[Any], Awaitable[Any]]:
    """An aiohttp handler: verify, answer ``202`` at once, then hand each event and its
    decision to ``on_event`` in the background, as the platform recommends."""
    from aiohttp import web

    guard = guard or OrderingGuard()
    pending: set[asyncio.Task[None]] = set()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            if secrets:
                verify_signature(secrets, request.headers, body)
            if basic is not None:
                verify_basic(request.headers, username=basic[0], password=basic[1])
            payload = parse_payload(body)
        except VerificationFailed as error:
            return web.json_response({"error": error.message}, status=401)
        decisions = [(event, guard.decide(event)) for event in payload.events]

        async def hand_over() -> None:
            for event, decision in decisions:
                await on_event(event, decision)

        task = asyncio.create_task(hand_over())
        pending.add(task)
        task.add_done_callback(pending.discard)
        return web.Response(status=202)

    return handle
