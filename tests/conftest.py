from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from almhookd.api.app import create_app
from almhookd.auth import TokenChecker
from almhookd.config import Config, Secret, parse_config
from almhookd.storage.sqlite import SqliteStorage
from tests.support.clock import FakeClock
from tests.support.http_receiver import Receiver
from tests.support.postgres import Cluster, running_cluster
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
#: The daemon runs on uvloop; most tests run on asyncio's own loop, and the code that
#: talks to sockets through transports (``pytest.mark.both_loops``) runs on both.
STDLIB_LOOP: Mapping[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
BOTH_LOOPS: Mapping[str, LoopFactory] = {**STDLIB_LOOP, "uvloop": uvloop.new_event_loop}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_loops: run the async test on asyncio's loop and on uvloop"
    )
    config.addinivalue_line(
        "markers",
        "browser: a test in real Chromium through Playwright (tests/browser/, marked there)",
    )


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    return BOTH_LOOPS if item.get_closest_marker("both_loops") else STDLIB_LOOP


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP receiver on 127.0.0.1 (see ``tests.support.http_receiver``)."""
    started = await Receiver().start()
    yield started
    await started.stop()


@pytest.fixture
def host_time_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets the host's local time zone (``TZ``) for the test, then restores it."""

    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster, started on first use, stopped after the session."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_dsn(postgres_cluster: Cluster) -> str:
    """A new, empty database of the session's cluster."""
    return postgres_cluster.new_database()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "almhookd.db"


@pytest.fixture
def config(db_path: Path) -> Config:
    base = parse_config("", env={})
    return replace(
        base,
        server=replace(
            base.server,
            admin_token=Secret(ADMIN_TOKEN),
            ingest_token=Secret(INGEST_TOKEN),
            max_body_bytes=64 * 1024,
        ),
        storage=replace(base.storage, path=db_path),
        account=replace(base.account, id=1010),
    )


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStorage]:
    opened = await SqliteStorage.open(db_path, clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
async def client(
    store: SqliteStorage, config: Config, clock: FakeClock
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(
        store=store,
        config=config,
        clock=clock,
        tokens=TokenChecker(admin=Secret(ADMIN_TOKEN), ingest=Secret(INGEST_TOKEN)),
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client
