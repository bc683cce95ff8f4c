"""``almhookd listen`` receiving real deliveries from the daemon."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import samples
from tests.support.net import free_port
from tests.support.running import Running, daemon_config, running_daemon
from tests.support.tokens import INGEST_TOKEN


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(daemon_config(tmp_path)) as running:
        yield running


class Listen:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}/hook"

    async def next_line(self, timeout: float = 15.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert line, "almhookd listen exited"
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    async def stop(self) -> int:
        self.process.terminate()
        return await self.process.wait()


async def start_listen(*args: str) -> Listen:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "almhookd",
        "listen",
        "--port",
        str(port),
        "--json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    listen = Listen(process, port)
    assert "listening" in await listen.next_line()
    return listen


async def test_listen_verifies_prints_and_flags_duplicates(daemon: Running) -> None:
    status, webhook, _ = await daemon.call(
        "POST",
        "/v1/webhooks",
        {
            "name": "listen",
            "targetUrl": "http://127.0.0.1:9/",
            "events": ["LEARNER_PROGRESS", "COURSE_COMPLETED"],
            "auth": {"type": "signature"},
        },
    )
    assert status == 201
    _, secret, _ = await daemon.call("GET", f"/v1/webhooks/{webhook['id']}/secret")
    listen = await start_listen("--secret", secret["secret"])
    try:
        await daemon.call("PATCH", f"/v1/webhooks/{webhook['id']}", {"targetUrl": listen.url})
        completed = samples.event("COURSE_COMPLETED", eventId="done-1")
        progress = samples.event("LEARNER_PROGRESS", eventId="late-progress")
        progress["data"]["loInstanceId"] = completed["data"]["loInstanceId"]  # same record
        status, _, _ = await daemon.call(
            "POST", "/v1/events", {"events": [completed]}, token=INGEST_TOKEN
        )
        assert status == 202
        first = await listen.next_line()
        assert first["eventId"] == "done-1" and first["verification"] == "ok"
        assert first["action"] == "process"
        assert "no enrolment seen for this learner: missing?" in first["notes"]
        # Progress after the completion: superseded, once flushed as a batch event.
        await daemon.call("POST", "/v1/events", {"events": [progress]}, token=INGEST_TOKEN)
        await daemon.call("POST", "/v1/batch/flush")
        late = await listen.next_line()
        assert late["eventId"] == "late-progress" and late["action"] == "superseded"
        # A replay is a duplicate to the receiver.
        await daemon.call("POST", f"/v1/webhooks/{webhook['id']}/replay", {"eventIds": ["done-1"]})
        again = await listen.next_line()
        assert again["eventId"] == "done-1" and again["action"] == "duplicate"
    finally:
        assert await listen.stop() == 0


async def test_listen_rehearses_failures_and_flags_bad_signatures(daemon: Running) -> None:
    listen = await start_listen(
        "--status", "500", "--secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )
    try:
        _, webhook, _ = await daemon.call(
            "POST",
            "/v1/webhooks",
            {
                "name": "failing",
                "targetUrl": listen.url,
                "events": ["CI_STATS"],
                "auth": {"type": "signature"},
            },
        )
        await daemon.call("POST", "/v1/events", samples.event("CI_STATS"), token=INGEST_TOKEN)
        line = await listen.next_line()
        assert line["verification"].startswith("BAD (no valid signature)")
        for _ in range(500):  # up to 10 s and the calls' time
            _, attempts, _ = await daemon.call("GET", f"/v1/webhooks/{webhook['id']}/attempts")
            if attempts["attempts"]:
                break
            await asyncio.sleep(0.02)
        assert attempts["attempts"][0]["status"] == 500
    finally:
        assert await listen.stop() == 0
