"""The whole daemon (``daemon.serve``) running in the test's event loop, on real ports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from almhookd.config import Config, ListenAddress, parse_config
from almhookd.protocols import Clock
from almhookd.service.daemon import serve
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN


def daemon_config(directory: Path, extra: str = "") -> Config:
    return parse_config(
        f'[server]\nlisten = "127.0.0.1:0"\nadmin_token = "{ADMIN_TOKEN}"\n'
        f'ingest_token = "{INGEST_TOKEN}"\n'
        f'[storage]\npath = "{directory / "almhookd.db"}"\n'
        "[account]\nid = 1010\n"
        '[delivery]\nallowed_networks = ["127.0.0.0/8"]\nread_timeout = "2s"\n'
        'connect_timeout = "2s"\nbackoff_initial = "1s"\nbackoff_max = "2s"\n' + extra,
        env={},
    )


@dataclass
class Running:
    url: str
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = ADMIN_TOKEN
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as response:
            text = await response.text()
            payload = None
            if text:
                with contextlib.suppress(ValueError):
                    payload = await response.json(content_type=None)
            return response.status, payload, dict(response.headers)

    async def delivery_states(self, event_id: str) -> dict[str, str]:
        """The event's delivery state per webhook id, as ``GET /v1/events/{id}`` shows it."""
        status, event, _ = await self.call("GET", f"/v1/events/{event_id}")
        assert status == 200, event
        return {d["webhookId"]: d["state"] for d in event["deliveries"]}

    async def until_delivered(self, webhook_id: str, *event_ids: str) -> None:
        """Waits for the delivered mark, which is committed after the receiver's answer."""

        async def all_delivered() -> bool:
            for event_id in event_ids:
                if (await self.delivery_states(event_id)).get(webhook_id) != "delivered":
                    return False
            return True

        await eventually(all_delivered, what=f"{list(event_ids)} delivered to {webhook_id}")


async def until(
    condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Polls another party's state (a receiver's, a worker's) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not met in {timeout:g} s"
        await asyncio.sleep(0.01)


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Polls an asynchronous condition until it holds; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not met in {timeout:g} s"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_daemon(config: Config, *, clock: Clock = time.time) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    ready: asyncio.Future[list[ListenAddress]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(config, shutdown_trigger=stop.wait, clock=clock, on_ready=ready.set_result)
    )
    waiting: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    address = ready.result()[0]
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(url=f"http://{address}", session=session)
    finally:
        stop.set()
        await task
