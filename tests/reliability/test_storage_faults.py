"""Storage faults: a full database, a database locked by another process, a database
directory moved away or deleted, a read-only directory. Ingest answers 507/503 with a
clear error and acknowledges nothing it cannot keep, ``/healthz`` reports the fault, and
the daemon recovers by itself once the fault is gone."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from almhookd.storage.sqlite import SqliteStorage
from tests.reliability.conftest import record
from tests.reliability.harness import (
    call,
    create_webhook,
    database,
    events,
    fast_config,
    ingest,
    wait_for,
)
from tests.support.daemon_process import DaemonProcess
from tests.support.http_receiver import Receiver
from tests.support.running import daemon_config, running_daemon


def survived(*faults: str) -> None:
    """Count a fault the daemon came through for the figures report."""
    record("storage_faults", **dict.fromkeys(faults, "survived"))


@pytest.fixture
async def hook_receiver() -> AsyncIterator[Receiver]:
    """A receiver that fails until told to behave, so events stay pending meanwhile."""
    receiver = await Receiver(behaviours=[500]).start()
    yield receiver
    await receiver.stop()


async def _health(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    return await call(session, url, "GET", "/healthz", token=None)


def _ids(batch: list[dict[str, Any]]) -> set[str]:
    return {event["eventId"] for event in batch}


async def test_a_full_database_answers_507_and_recovers_when_space_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook_receiver: Receiver
) -> None:
    # The daemon runs in-process so the test can shrink its writer's max_page_count:
    # the pragma belongs to the connection, not to the file.
    stores: list[SqliteStorage] = []
    open_store = SqliteStorage.open

    async def capture(path: Path, **options: Any) -> SqliteStorage:
        store = await open_store(path, **options)
        stores.append(store)
        return store

    monkeypatch.setattr(SqliteStorage, "open", capture)
    async with running_daemon(daemon_config(tmp_path)) as daemon:
        session, url = daemon.session, daemon.url
        await create_webhook(session, url, hook_receiver.url, ["COURSE_ENROLLMENT"])
        before = events(20)
        assert (await ingest(session, url, before))[0] == 202
        [store] = stores
        pages = await store._writer_pragma("page_count")
        await store._writer_pragma(f"max_page_count = {pages}")
        refused = events(40, padding="x" * 2000)
        status, body = await ingest(session, url, refused)
        assert status == 507, body
        assert body["error"]["code"] == "storage_full" and "full" in body["error"]["message"]
        status, health = await _health(session, url)
        assert status == 503 and health["code"] == "storage_full", health
        # Nothing of the refused request is stored, not even partly.
        assert (await call(session, url, "GET", f"/v1/events/{refused[0]['eventId']}"))[0] == 404
        assert (await call(session, url, "GET", f"/v1/events/{refused[-1]['eventId']}"))[0] == 404
        # Still full: the space probe of /healthz fails too, and stores nothing.
        status, health = await _health(session, url)
        assert status == 503 and health["code"] == "storage_full", health
        # Space comes back: /healthz sees it before any ingest succeeds (a producer
        # waiting for a healthy daemon would otherwise wait for ever), then the same
        # request goes through.
        await store._writer_pragma("max_page_count = 1073741823")
        assert (await _health(session, url))[0] == 200
        status, body = await ingest(session, url, refused)
        assert status == 202 and body["accepted"] == 40, body
        assert (await _health(session, url))[0] == 200
        hook_receiver.respond(202)
        expected = _ids(before) | _ids(refused)
        await wait_for(lambda: expected <= set(hook_receiver.all_event_ids()), what="delivered")
    survived("database_full")
    record("storage_full", refused=40, acknowledged=60, lost=0)


async def test_a_locked_database_answers_503_and_recovers_when_released(
    tmp_path: Path, hook_receiver: Receiver
) -> None:
    daemon = DaemonProcess(fast_config(tmp_path))
    blocker = None
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            await create_webhook(session, daemon.url, hook_receiver.url, ["COURSE_ENROLLMENT"])
            before = events(10)
            assert (await ingest(session, daemon.url, before))[0] == 202
            blocker = sqlite3.connect(database(tmp_path), isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
            status, health = await _health(session, daemon.url)
            assert status == 503 and "takes no writes" in health["error"], health
            refused = events(10)
            status, body = await ingest(session, daemon.url, refused)
            assert status == 503 and body["error"]["code"] == "storage_unavailable", body
            assert "locked" in body["error"]["message"]
            blocker.execute("ROLLBACK")
            blocker.close()
            blocker = None

            async def healthy() -> bool:
                return (await _health(session, daemon.url))[0] == 200

            for _ in range(100):
                if await healthy():
                    break
                await asyncio.sleep(0.1)
            assert await healthy(), "healthz did not recover once the lock was released"
            status, body = await ingest(session, daemon.url, refused)
            assert status == 202, body
            hook_receiver.respond(202)
            expected = _ids(before) | _ids(refused)
            await wait_for(lambda: expected <= set(hook_receiver.all_event_ids()), what="sent")
        assert await daemon.stop_async() == 0
    finally:
        if blocker is not None:
            blocker.close()
        daemon.stop()
    survived("database_locked")
    record("storage_locked", acknowledged=20, lost=0)


async def test_a_moved_database_directory_is_refused_until_it_is_back(
    tmp_path: Path, hook_receiver: Receiver
) -> None:
    daemon = DaemonProcess(fast_config(tmp_path))
    data, moved = tmp_path / "data", tmp_path / "data.moved"
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            await create_webhook(session, daemon.url, hook_receiver.url, ["COURSE_ENROLLMENT"])
            before = events(10)
            assert (await ingest(session, daemon.url, before))[0] == 202
            data.rename(moved)
            refused = events(10)
            status, body = await ingest(session, daemon.url, refused)
            assert status == 503 and "moved or deleted" in body["error"]["message"], body
            status, health = await _health(session, daemon.url)
            assert status == 503 and "moved or deleted" in health["error"], health
            moved.rename(data)
            assert (await _health(session, daemon.url))[0] == 200
            status, body = await ingest(session, daemon.url, refused)  # the producer retries
            assert status == 202, body
            hook_receiver.respond(202)
            expected = _ids(before) | _ids(refused)
            await wait_for(lambda: expected <= set(hook_receiver.all_event_ids()), what="sent")
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
    survived("database_directory_moved")


async def test_a_deleted_database_acknowledges_nothing_and_delivers_what_it_held(
    tmp_path: Path, hook_receiver: Receiver
) -> None:
    daemon = DaemonProcess(fast_config(tmp_path))
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            await create_webhook(session, daemon.url, hook_receiver.url, ["COURSE_ENROLLMENT"])
            held = events(10)
            assert (await ingest(session, daemon.url, held))[0] == 202
            shutil.rmtree(tmp_path / "data")
            status, body = await ingest(session, daemon.url, events(5))
            assert status == 503 and "moved or deleted" in body["error"]["message"], body
            assert (await _health(session, daemon.url))[0] == 503
            # The open file still holds what was acknowledged before: it goes out.
            hook_receiver.respond(202)
            await wait_for(lambda: _ids(held) <= set(hook_receiver.all_event_ids()), what="sent")
        assert await daemon.stop_async() == 0
        # A restart starts a new database and takes events again.
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            assert (await ingest(session, daemon.url, events(5)))[0] == 202
        assert await daemon.stop_async() == 0
    finally:
        daemon.stop()
    survived("database_directory_deleted")


def _without_root_overrides(daemon: DaemonProcess) -> None:
    """As root, permissions bind only without CAP_DAC_OVERRIDE and friends."""
    if os.geteuid() == 0:
        bounding = "-dac_override,-dac_read_search,-fowner"
        daemon.wrapper = ["setpriv", "--inh-caps=-all", f"--bounding-set={bounding}"]


async def test_a_read_only_directory_keeps_the_daemon_and_a_read_only_file_stops_it_clearly(
    tmp_path: Path, hook_receiver: Receiver
) -> None:
    config = fast_config(tmp_path)
    daemon = DaemonProcess(config)
    _without_root_overrides(daemon)
    data = tmp_path / "data"
    try:
        await daemon.start_async()
        async with aiohttp.ClientSession() as session:
            await create_webhook(session, daemon.url, hook_receiver.url, ["COURSE_ENROLLMENT"])
            data.chmod(0o500)
            # The database and its WAL are open already: the daemon works on.
            kept = events(10)
            assert (await ingest(session, daemon.url, kept))[0] == 202
            assert (await _health(session, daemon.url))[0] == 200
        assert await daemon.stop_async() == 0
        # Its WAL could not be removed at shutdown, so a new start would even work; a
        # database file it may not write to stops it with one clear line, exit 1.
        database(tmp_path).chmod(0o400)
        result = await asyncio.to_thread(
            subprocess.run,
            [*daemon.wrapper, sys.executable, "-m", "almhookd", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        database(tmp_path).chmod(0o600)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("almhookd: ") and str(data) in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        data.chmod(0o700)
        await daemon.start_async()
        hook_receiver.respond(202)
        await wait_for(lambda: _ids(kept) <= set(hook_receiver.all_event_ids()), what="sent")
        assert await daemon.stop_async() == 0
    finally:
        data.chmod(0o700)
        daemon.stop()
    survived("database_directory_read_only", "database_file_read_only")
