"""The admin command line against the whole daemon, with real receivers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import samples
from tests.conftest import ADMIN_TOKEN
from tests.receiver import Receiver
from tests.running import Running, daemon_config, running_daemon
from tests.verifier import verify

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(daemon_config(tmp_path)) as running:
        yield running


async def cli(daemon: Running, *args: str, token: str = ADMIN_TOKEN) -> tuple[int, str, str]:
    """Run ``almhookd`` as a subprocess while the daemon keeps serving in this loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "almhookd",
        *args,
        env={
            **os.environ,
            "ALMHOOKD_URL": daemon.url,
            "ALMHOOKD_ADMIN_TOKEN": token,
            "ALMHOOKD_CONFIG": "/nonexistent/almhookd.toml",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_every_webhook_command(daemon: Running, receiver: Receiver, tmp_path: Path) -> None:
    code, out, err = await cli(
        daemon,
        "webhooks",
        "add",
        "--name",
        "LMS sync",
        "--target-url",
        receiver.url,
        "--events",
        "COURSE_ENROLLMENT,COURSE_COMPLETED",
        "--auth-type",
        "signature",
        "--contact-email",
        "lms@example.org",
        "--json",
    )
    assert code == 0, err
    webhook = json.loads(out)
    hook_id = webhook["id"]
    assert webhook["events"] == ["COURSE_COMPLETED", "COURSE_ENROLLMENT"]

    code, out, _ = await cli(daemon, "webhooks", "list")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert hook_id in out and "LMS sync" in out and "active" in out

    code, out, _ = await cli(daemon, "webhooks", "show", hook_id)
    assert code == 0 and re.search(r"^target\s+" + re.escape(receiver.url), out, re.M)

    code, out, _ = await cli(daemon, "webhooks", "test", hook_id)
    assert code == 0 and out.startswith("ok: HTTP 202")

    secret_file = tmp_path / "secret.json"
    code, out, _ = await cli(daemon, "webhooks", "secret", hook_id, "--output", str(secret_file))
    assert code == 0 and stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = json.loads(secret_file.read_text())["secret"]
    assert verify(secret, receiver.received[0].headers, receiver.received[0].body)

    code, out, _ = await cli(daemon, "webhooks", "rotate-secret", hook_id)
    assert code == 0 and json.loads(out)["secret"] != secret

    status, _, _ = await daemon.call("POST", "/v1/events", samples.event(eventId="cli-e1"))
    assert status == 202
    await daemon.until_delivered(hook_id, "cli-e1")
    assert "cli-e1" in receiver.all_event_ids()
    code, out, _ = await cli(daemon, "webhooks", "deliveries", hook_id, "--state", "delivered")
    assert code == 0 and "cli-e1" in out and "delivered" in out
    code, out, _ = await cli(daemon, "webhooks", "attempts", hook_id)
    assert code == 0 and "202" in out
    code, out, _ = await cli(daemon, "webhooks", "replay", hook_id, "--event-id", "cli-e1")
    assert code == 0 and out.strip() == "queued 1 deliveries again"

    code, out, _ = await cli(
        daemon, "webhooks", "edit", hook_id, "--inactive", "--description", "paused"
    )
    assert code == 0 and re.search(r"^status\s+inactive", out, re.M)

    code, out, _ = await cli(daemon, "status")
    assert code == 0 and out.startswith("almhookd: 1 webhook(s)") and "inactive" in out
    code, out, _ = await cli(daemon, "status", "--json")
    assert code == 0 and json.loads(out)["webhooks"][0]["id"] == hook_id

    code, out, _ = await cli(daemon, "webhooks", "delete", hook_id)
    assert code == 0 and out.strip() == f"deleted {hook_id}"
    code, _, err = await cli(daemon, "webhooks", "show", hook_id)
    assert code == 1 and "HTTP 404" in err


async def test_errors_show_the_api_message_and_exit_codes(daemon: Running) -> None:
    code, _, err = await cli(
        daemon,
        "webhooks",
        "add",
        "--name",
        "x",
        "--target-url",
        "http://10.0.0.1/",
        "--events",
        "COURSE_ENROLMENT",
    )
    assert code == 1
    assert "HTTP 422" in err
    assert "events[0]: unknown event 'COURSE_ENROLMENT' (did you mean COURSE_ENROLLMENT?)" in err
    code, _, err = await cli(
        daemon,
        "webhooks",
        "add",
        "--name",
        "x",
        "--target-url",
        "http://10.0.0.1/",
        "--events",
        "CI_STATS",
    )
    assert code == 1 and "targetUrl:" in err and "not allowed" in err
    code, _, err = await cli(daemon, "webhooks", "list", token="wrong-token-0123456789")
    assert code == 1 and "HTTP 401" in err
    code, _, err = await cli(daemon, "webhooks", "add", "--name", "x")
    assert code == 2 and "--target-url" in err


async def test_a_failing_test_delivery_exits_1(daemon: Running) -> None:
    _, hook, _ = await daemon.call(
        "POST",
        "/v1/webhooks",
        {"name": "dead", "targetUrl": "http://127.0.0.1:9/", "events": ["CI_STATS"]},
    )
    code, out, _ = await cli(daemon, "webhooks", "test", hook["id"])
    assert code == 1 and out.startswith("FAILED: cannot connect")


def readme_walkthrough() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- admin-walkthrough -->", 1)[1].split("```sh", 1)[1]
    block = block.split("```", 1)[0]
    return [
        line
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


async def test_the_readme_admin_walkthrough_runs(
    daemon: Running, receiver: Receiver, tmp_path: Path
) -> None:
    commands = readme_walkthrough()
    assert len(commands) >= 5
    env = {
        **os.environ,
        "ALMHOOKD_URL": daemon.url,
        "ALMHOOKD_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECEIVER_URL": receiver.url,
        "ALMHOOKD_CONFIG": "/nonexistent/almhookd.toml",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    for command in commands:
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            command,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, (command, out.decode(), err.decode())
    assert receiver.received, "the walkthrough's test delivery reached the receiver"
