"""The console under test: its app on a real port with a recorded sign-in delay, and
the steps every console test takes (signing in, reading a form's hidden fields)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from almhookd.api.app import create_app
from almhookd.auth import TokenChecker
from almhookd.config import Config, Secret
from almhookd.console import setup
from almhookd.console.common import ConsoleState
from almhookd.storage.sqlite import SqliteStorage
from tests.support.clock import FakeClock
from tests.support.engine import Engine
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

Client = TestClient[web.Request, web.Application]


class RecordedSleep:
    """The throttle's sleep, recorded instead of waited."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def slept() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
async def console(
    store: SqliteStorage, config: Config, clock: FakeClock, slept: RecordedSleep
) -> AsyncIterator[Client]:
    app = create_app(
        store=store,
        config=config,
        clock=clock,
        tokens=TokenChecker(admin=Secret(ADMIN_TOKEN), ingest=Secret(INGEST_TOKEN)),
    )
    setup(app, ConsoleState(sleep=slept))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@asynccontextmanager
async def signed_in_console(engine: Engine, slept: RecordedSleep) -> AsyncIterator[Client]:
    """The console on the delivery engine's storage, dispatcher and sender (saving,
    testing and replaying need them), signed in."""
    app = create_app(
        store=engine.store,
        config=engine.config,
        clock=engine.clock,
        tokens=TokenChecker(admin=Secret(ADMIN_TOKEN), ingest=Secret(INGEST_TOKEN)),
        dispatcher=engine.dispatcher,
        sender=engine.sender,
    )
    setup(app, ConsoleState(sleep=slept))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert await sign_in(client) == 303
        yield client


def hidden(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no hidden {name} in the page"
    return match.group(1)


async def sign_in(client: Client, token: str = ADMIN_TOKEN, next_path: str = "/") -> int:
    form_page = await (await client.get("/signin")).text()
    response = await client.post(
        "/signin",
        data={"form_token": hidden(form_page, "form_token"), "token": token, "next": next_path},
        allow_redirects=False,
    )
    return response.status
