"""``almhookd listen`` receiving real deliveries from the daemon."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from almhookd.domain.signing import generate_secret, sign
from tests.support import samples
from tests.support.net import free_port
from tests.support.running import Running, daemon_config, eventually, running_daemon, until
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

        async def attempted() -> bool:
            _, page, _ = await daemon.call("GET", f"/v1/webhooks/{webhook['id']}/attempts")
            logged.extend(page["attempts"])
            return bool(logged)

        logged: list[dict[str, Any]] = []
        await eventually(attempted, what="the failed attempt logged")
        assert logged[0]["status"] == 500
    finally:
        assert await listen.stop() == 0


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def post(
    listen: Listen, *, message_id: str, signed_with: str | None = None, basic: str | None = None
) -> int:
    """One real request to the receiver, as the daemon sends it; its answer's status."""
    event = samples.event("CI_STATS", eventId=message_id, timestamp=1727414643000)
    body = json.dumps({"accountId": 1010, "events": [event]}).encode()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
    }
    if signed_with is not None:
        headers["webhook-signature"] = sign(
            signed_with, message_id=message_id, timestamp=timestamp, body=body
        )
    if basic is not None:
        headers["authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(listen.url, data=body, headers=headers) as response,
    ):
        return response.status


async def test_listen_answers_401_to_a_bad_signature_and_202_to_a_good_one() -> None:
    listen = await start_listen("--secret", SECRET)
    try:
        assert await post(listen, message_id="msg-bad", signed_with=generate_secret()) == 401
        bad = await listen.next_line()
        assert bad["verification"].startswith("BAD (no valid signature)")
        assert await post(listen, message_id="msg-none") == 401
        assert (await listen.next_line())["verification"].startswith("BAD")
        assert await post(listen, message_id="msg-good", signed_with=SECRET) == 202
        assert (await listen.next_line())["verification"] == "ok"
    finally:
        assert await listen.stop() == 0


async def test_listen_answers_401_to_wrong_basic_credentials() -> None:
    listen = await start_listen("--basic", "lms:right")
    try:
        assert await post(listen, message_id="msg-1", basic="lms:wrong") == 401
        assert (await listen.next_line())["verification"].startswith("BAD")
        assert await post(listen, message_id="msg-2", basic="lms:right") == 202
        assert (await listen.next_line())["verification"] == "ok"
    finally:
        assert await listen.stop() == 0


async def test_a_forced_status_answers_a_bad_signature_too() -> None:
    listen = await start_listen("--status", "503", "--secret", SECRET)
    try:
        assert await post(listen, message_id="msg-bad", signed_with=generate_secret()) == 503
        assert (await listen.next_line())["verification"].startswith("BAD")
    finally:
        assert await listen.stop() == 0


async def test_status_202_is_forced_too() -> None:
    """``--status 202`` answers 202 even to a bad signature: asked for, not the default."""
    listen = await start_listen("--status", "202", "--secret", SECRET)
    try:
        assert await post(listen, message_id="msg-bad", signed_with=generate_secret()) == 202
        assert (await listen.next_line())["verification"].startswith("BAD")
    finally:
        assert await listen.stop() == 0


async def test_listen_without_a_secret_warns_that_nothing_is_verified() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "almhookd", "listen", "--port", str(port)),
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    listen = Listen(process, port)
    try:
        assert process.stdout is not None
        started = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        warning = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        assert started.startswith(f"listening on http://127.0.0.1:{port}/")
        assert warning.startswith("warning: no --secret and no --basic: nothing is verified")
        assert await post(listen, message_id="msg-1", signed_with=SECRET) == 202
        request = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        assert "webhook-id msg-1  none unverified  1 event(s)" in request
    finally:
        assert await listen.stop() == 0


async def test_listen_json_says_at_start_that_nothing_is_verified() -> None:
    listen = await start_listen()  # its first line, "listening", was read
    try:
        assert await post(listen, message_id="msg-1") == 202
        assert (await listen.next_line())["verification"] == "unverified"
    finally:
        assert await listen.stop() == 0


async def test_background_returns_once_listening_and_the_child_serves() -> None:
    """``--background``: the command returns with the port already accepting (the next
    line of a script may send to it at once), names the serving process, and that
    process verifies and prints as the foreground one does, until it is killed."""
    port = free_port()
    command = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "almhookd", "listen", "--port", str(port), "--background"),
        *("--json", "--secret", SECRET),
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ),
        start_new_session=True,  # the child stays in this group: killed with it below
    )
    listen = Listen(command, port)  # its output is the command's, then the child's
    try:
        banner = await listen.next_line()
        # The command itself has ended (Process.wait() would also wait for the output,
        # which the child keeps open).
        await until(lambda: command.returncode is not None, what="the command returned")
        assert command.returncode == 0
        child = int(banner["pid"])
        assert banner["listening"] == f"http://127.0.0.1:{port}/" and "warning" not in banner
        assert os.getpgid(child) == command.pid
    except BaseException:
        os.killpg(command.pid, signal.SIGKILL)
        raise
    try:
        # Sent right after the command returned: no wait for the child to start.
        assert await post(listen, message_id="msg-1", signed_with=SECRET) == 202
        event = await listen.next_line()
        assert event["verification"] == "ok" and event["webhookId"] == "msg-1"
        assert await post(listen, message_id="msg-2", signed_with=generate_secret()) == 401
    finally:
        os.kill(child, signal.SIGTERM)
    # The child holds the output open until it exits: its end is the end of the output.
    assert command.stdout is not None
    rest = await asyncio.wait_for(command.stdout.read(), 15)
    assert b'"verification": "BAD' in rest


async def test_background_says_so_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "almhookd", "listen", "--port", str(port), "--background"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ),
        )
        out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 1 and out == b""
    assert err.decode().startswith(f"almhookd listen: cannot listen on 127.0.0.1:{port}: ")
