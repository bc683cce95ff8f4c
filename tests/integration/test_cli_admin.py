"""The admin command line against the whole daemon, with real receivers."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import re
import stat
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from almhookd.cli import client as commands
from tests.support import samples
from tests.support.http_receiver import Receiver
from tests.support.running import Running, daemon_config, running_daemon
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN
from tests.support.verifier import verify

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(daemon_config(tmp_path)) as running:
        yield running


async def cli(daemon: Running, *args: str, token: str = ADMIN_TOKEN) -> tuple[int, str, str]:
    """Run ``almhookd`` as a subprocess while the daemon keeps serving in this loop."""
    return await almhookd(
        *args,
        env={
            **os.environ,
            "ALMHOOKD_URL": daemon.url,
            "ALMHOOKD_ADMIN_TOKEN": token,
            "ALMHOOKD_CONFIG": "/nonexistent/almhookd.toml",
        },
    )


async def almhookd(*args: str, env: Mapping[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "almhookd",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,  # not a terminal: nothing may wait for an answer
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

    code, out, _ = await cli(daemon, "webhooks", "delete", hook_id, "--yes")
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
    assert err == (
        "almhookd: HTTP 422: invalid input: "
        "events[0]: unknown event 'COURSE_ENROLMENT' (did you mean COURSE_ENROLLMENT?)\n"
    ), "one line, the problem said once"
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
    one_line_error(code, err, "targetUrl:", "not allowed")
    assert err.count("not allowed") == 1, err
    code, _, err = await cli(daemon, "webhooks", "list", token="wrong-token-0123456789")
    one_line_error(code, err, "HTTP 401")
    code, _, err = await cli(daemon, "webhooks", "add", "--name", "x")
    one_line_error(code, err, "--target-url", exit_code=2)


async def test_more_problems_than_the_message_sums_up_are_all_on_the_one_line(
    daemon: Running,
) -> None:
    names = [f"NO_SUCH_EVENT_{i}" for i in range(7)]
    add = ("webhooks", "add", "--name", "x", "--target-url", "http://127.0.0.1:9/")
    code, _, err = await cli(daemon, *add, "--events", ",".join(names))
    one_line_error(code, err, *(f"events[{i}]: unknown event '{n}'" for i, n in enumerate(names)))
    assert "more" not in err and all(err.count(f"'{n}'") == 1 for n in names), err


async def test_usage_and_connection_errors_are_one_line(daemon: Running) -> None:
    for args, names in (
        (("webhooks", "deliveries", "x", "--limit", "abc"), ("invalid int value: 'abc'",)),
        (("webhooks", "replay", "x", "--since", "1x"), ("'1x' is not a duration",)),
        ((), ("the following arguments are required: COMMAND",)),
    ):
        code, out, err = await cli(daemon, *args)
        one_line_error(code, err, "almhookd: ", *names, "--help)", exit_code=2)
        assert out == ""
    no_config = {k: v for k, v in os.environ.items() if not k.startswith("ALMHOOKD_")}
    code, _, err = await almhookd(
        "webhooks", "list", env={**no_config, "ALMHOOKD_CONFIG": "/nonexistent/almhookd.toml"}
    )
    one_line_error(code, err, "/nonexistent/almhookd.toml", exit_code=78)
    nowhere = ("webhooks", "list", "--url", "http://127.0.0.1:9", "--token", "t" * 32)
    code, _, err = await cli(daemon, *nowhere)
    one_line_error(code, err, "almhookd: cannot reach almhookd at http://127.0.0.1:9")


async def test_delete_refuses_without_a_terminal_or_yes_and_deletes_with_yes(
    daemon: Running,
) -> None:
    hook_id = await signed_webhook(daemon)
    code, out, err = await cli(daemon, "webhooks", "delete", "signed")
    one_line_error(code, err, "--yes", "not a terminal", exit_code=2)
    assert out == ""
    assert (await daemon.call("GET", f"/v1/webhooks/{hook_id}"))[0] == 200, "nothing deleted"
    code, out, err = await cli(daemon, "webhooks", "delete", "signed", "--yes")
    assert code == 0 and out == "deleted signed\n" and err == "", err
    assert (await daemon.call("GET", f"/v1/webhooks/{hook_id}"))[0] == 404


async def test_replay_since_takes_a_duration_a_date_or_milliseconds_and_says_when_it_reaches_back_past_the_webhook(  # noqa: E501
    daemon: Running, receiver: Receiver
) -> None:
    before = samples.event("CI_STATS", eventId="before")  # ingested before the webhook existed
    assert (await daemon.call("POST", "/v1/events", before))[0] == 202
    _, hook, _ = await daemon.call(
        "POST", "/v1/webhooks", {"name": "late", "targetUrl": receiver.url, "events": ["CI_STATS"]}
    )
    code, out, err = await cli(daemon, "webhooks", "replay", "late", "--since", "1h")
    assert code == 0 and out == "queued 1 deliveries again\n", err
    [note] = err.splitlines()
    assert note.startswith("note: ") and "before late was created" in note, err
    assert "events ingested before then are included" in note
    await daemon.until_delivered(hook["id"], "before")

    created = datetime.fromtimestamp(hook["createdAt"] / 1000, UTC)
    after = (created + timedelta(milliseconds=1)).replace(tzinfo=None).isoformat()
    code, out, err = await cli(daemon, "webhooks", "replay", "late", "--since", after)
    assert (code, out, err) == (0, "queued 0 deliveries again\n", ""), "no note after creation"
    in_paris = (created - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=1)))
    code, out, err = await cli(
        daemon, "webhooks", "replay", "late", "--since", in_paris.isoformat(), "--json"
    )
    assert code == 0 and json.loads(out) == {"queued": 1}, "the event of a minute before"
    assert "before late was created" in err, "an offset is honoured, not read as UTC"
    code, out, err = await cli(
        daemon, "webhooks", "replay", "late", "--since", str(hook["createdAt"]), "--json"
    )
    assert (code, json.loads(out), err) == (0, {"queued": 0}, ""), "epoch ms as before"


async def test_a_failing_test_delivery_exits_1(daemon: Running) -> None:
    _, hook, _ = await daemon.call(
        "POST",
        "/v1/webhooks",
        {"name": "dead", "targetUrl": "http://127.0.0.1:9/", "events": ["CI_STATS"]},
    )
    code, out, _ = await cli(daemon, "webhooks", "test", hook["id"])
    assert code == 1 and out.startswith("FAILED: cannot connect")


# --- `events`, `batch flush`, `webhooks test --draft` --------------------------------


async def test_events_needs_no_daemon_and_prints_what_the_api_serves(daemon: Running) -> None:
    nowhere = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ALMHOOKD_")},
        "ALMHOOKD_URL": "http://127.0.0.1:9",  # nothing listens there
        "ALMHOOKD_CONFIG": "/nonexistent/almhookd.toml",
    }
    code, out, err = await almhookd("events", env=nowhere)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "DESCRIPTION"] and len(lines) == 1 + 27
    assert lines[1].split()[:2] == ["CI_STATS", "realtime"]
    assert lines[-1].split()[:2] == ["LEARNING_OBJECT_INSTANCE_MODIFICATION_BATCH", "batch"]

    code, out, err = await almhookd("events", "--json", env=nowhere)
    assert code == 0, err
    status, served, _ = await daemon.call("GET", "/v1/catalogue", token=INGEST_TOKEN)
    assert status == 200 and json.loads(out) == served


async def test_batch_flush_releases_the_held_events_now(tmp_path: Path, receiver: Receiver) -> None:
    # A daily flush: none falls due while the test runs (but at midnight UTC).
    async with running_daemon(daemon_config(tmp_path, '[batch]\ninterval = "24h"\n')) as daemon:
        _, hook, _ = await daemon.call(
            "POST",
            "/v1/webhooks",
            {"name": "nightly", "targetUrl": receiver.url, "events": ["COURSE_ENROLLMENT_BATCH"]},
        )
        event = samples.event("COURSE_ENROLLMENT_BATCH", eventId="held-1")
        assert (await daemon.call("POST", "/v1/events", event))[0] == 202
        _, status, _ = await daemon.call("GET", "/v1/status")
        assert status["webhooks"][0]["backlog"]["batchHeld"] == 1

        code, out, err = await cli(daemon, "batch", "flush")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("released 1 held deliveries; next batch flush 20"), out
        assert [line.split() for line in lines[1:]] == [["WEBHOOK", "RELEASED"], [hook["id"], "1"]]
        await daemon.until_delivered(hook["id"], "held-1")
        assert receiver.all_event_ids() == ["held-1"]

        code, out, err = await cli(daemon, "batch", "flush", "--json")
        assert code == 0, err
        answer = json.loads(out)
        assert answer["released"] == 0 and answer["webhooks"] == {}
        assert answer["nextFlushAt"] > time.time() * 1000

        code, _, err = await cli(daemon, "batch", "flush", token=INGEST_TOKEN)
        assert code == 1 and "HTTP 403" in err


DRAFT = ("webhooks", "test", "--draft", "--name", "draft")


async def test_webhooks_test_draft_signs_for_a_real_receiver_and_saves_nothing(
    daemon: Running, receiver: Receiver
) -> None:
    code, out, err = await cli(
        daemon,
        *DRAFT,
        "--target-url",
        receiver.url,
        "--events",
        "COURSE_ENROLLMENT_BATCH",
        "--events",
        "CI_STATS",
        "--auth-type",
        "signature",
        "--json",
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["ok"] is True and answer["status"] == 202 and answer["error"] is None
    assert answer["responseBody"] == "answer 202" and answer["durationMs"] >= 0
    [request] = receiver.received
    assert request.headers["almhookd-test"] == "true"
    assert verify(answer["signingSecret"], request.headers, request.body)
    assert [e["eventName"] for e in request.payload["events"]] == ["CI_STATS"]  # real-time first
    assert (await daemon.call("GET", "/v1/webhooks"))[1]["webhooks"] == []


async def test_webhooks_test_draft_reports_the_receivers_answer_and_exits_1_on_failure(
    daemon: Running, receiver: Receiver, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret-pass\n")
    basic = ("--auth-type", "basic", "--auth-username", "lms")
    draft = (*DRAFT, "--target-url", receiver.url, "--events", "CI_STATS", *basic)
    receiver.respond(500)
    code, out, err = await cli(daemon, *draft, "--auth-password-file", str(password_file))
    assert code == 1, err
    first, *rest = out.splitlines()
    assert re.fullmatch(r"FAILED: HTTP 500 in \d+ ms", first), out
    assert rest == ["answer 500"]
    credentials = base64.b64encode(b"lms:s3cret-pass").decode()
    assert receiver.received[-1].headers["Authorization"] == f"Basic {credentials}"

    receiver.respond("redirect")
    code, out, _ = await cli(daemon, *draft, "--auth-password-file", str(password_file))
    assert code == 1, out
    assert re.match(r"FAILED: HTTP 302: redirects are not followed in \d+ ms\n", out), out

    receiver.respond(202)
    code, out, err = await cli(daemon, *draft, "--auth-password-file", str(password_file))
    assert code == 0, err
    assert re.fullmatch(r"ok: HTTP 202 in \d+ ms\nanswer 202\n", out), out

    code, out, _ = await cli(
        daemon, *DRAFT, "--target-url", "http://127.0.0.1:9/", "--events", "CI_STATS"
    )
    assert code == 1 and out.startswith("FAILED: cannot connect"), out
    code, _, err = await cli(
        daemon, *DRAFT, "--target-url", receiver.url, "--events", "COURSE_ENROLMENT"
    )
    assert code == 1 and "HTTP 422" in err and "did you mean COURSE_ENROLLMENT?" in err
    assert len(receiver.received) == 3, "refused drafts send nothing"
    assert (await daemon.call("GET", "/v1/webhooks"))[1]["webhooks"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("webhooks", "test"), "give a WEBHOOK to test, or --draft"),
        (DRAFT, "with --draft the following arguments are required: --target-url, --events"),
        (("webhooks", "test", "wh_x", "--name", "y", "--inactive"), "only with --draft: --name"),
        (
            (*DRAFT, "--target-url", "http://127.0.0.1:9/", "--events", "CI_STATS", "wh_x"),
            "--draft tests the webhook its flags describe: give no WEBHOOK",
        ),
    ],
)
async def test_webhooks_test_usage_errors_exit_2(
    daemon: Running, args: tuple[str, ...], message: str
) -> None:
    code, out, err = await cli(daemon, *args)
    assert code == 2 and out == ""
    assert err.startswith("almhookd: webhooks test: ") and message in err, err
    assert len(err.splitlines()) == 1, err


# --- `webhooks secret --output`: a new private file, never through a link ----------------


async def signed_webhook(daemon: Running) -> str:
    status, hook, _ = await daemon.call(
        "POST",
        "/v1/webhooks",
        {
            "name": "signed",
            "targetUrl": "http://127.0.0.1:9/",
            "events": ["CI_STATS"],
            "auth": {"type": "signature"},
        },
    )
    assert status == 201, hook
    return str(hook["id"])


def own_folder(tmp_path: Path) -> Path:
    """A folder holding only what a test writes (the daemon's database is in tmp_path)."""
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


def one_line_error(code: int, err: str, *names: str, exit_code: int = 1) -> None:
    """Exit 1 (or ``exit_code``) and one line on stderr naming ``names``, not a traceback."""
    assert code == exit_code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for name in names:
        assert name in err, err


async def test_secret_output_refuses_an_existing_file_and_force_replaces_it(
    daemon: Running, tmp_path: Path
) -> None:
    hook_id = await signed_webhook(daemon)
    files = own_folder(tmp_path)
    secret_file = files / "secret.json"
    secret_file.write_text("old\n")
    secret_file.chmod(0o644)
    old_inode = files / "old-inode"
    old_inode.hardlink_to(secret_file)  # shows what the old file ends up holding

    code, _, err = await cli(daemon, "webhooks", "secret", hook_id, "--output", str(secret_file))
    one_line_error(code, err, str(secret_file), "already exists", "--force")
    assert secret_file.read_text() == "old\n"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o644

    code, out, err = await cli(
        daemon, "webhooks", "secret", hook_id, "--output", str(secret_file), "--force"
    )
    assert code == 0, err
    assert out.strip() == f"secret written to {secret_file}"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert json.loads(secret_file.read_text())["secret"].startswith("whsec_")
    assert not secret_file.samefile(old_inode), "a new file, not the old inode rewritten"
    assert old_inode.read_text() == "old\n"
    assert sorted(p.name for p in files.iterdir()) == ["old-inode", "secret.json"]


async def test_secret_output_never_writes_through_a_symlink(
    daemon: Running, tmp_path: Path
) -> None:
    hook_id = await signed_webhook(daemon)
    files = own_folder(tmp_path)
    victim = files / "victim.conf"
    victim.write_text("keep\n")
    link = files / "secret.json"
    link.symlink_to(victim)
    for force in ((), ("--force",)):
        code, _, err = await cli(
            daemon, "webhooks", "secret", hook_id, "--output", str(link), *force
        )
        one_line_error(code, err, str(link), "symbolic link")
        assert victim.read_text() == "keep\n" and link.is_symlink()

    missing_target = files / "created-through-the-link"
    dangling = files / "dangling.json"
    dangling.symlink_to(missing_target)
    for force in ((), ("--force",)):
        code, _, err = await cli(
            daemon, "webhooks", "secret", hook_id, "--output", str(dangling), *force
        )
        one_line_error(code, err, str(dangling), "symbolic link")
        assert not missing_target.exists() and dangling.is_symlink()


async def test_file_problems_are_one_line_without_a_traceback(
    daemon: Running, tmp_path: Path
) -> None:
    hook_id = await signed_webhook(daemon)
    files = own_folder(tmp_path)
    a_file = files / "a-file"
    a_file.write_text("x")
    for output, reason in (
        (files, "is a directory"),
        (files / "missing" / "secret.json", f"the folder {files / 'missing'} does not"),
        (a_file / "secret.json", "Not a directory"),
    ):
        for force in ((), ("--force",)):
            code, _, err = await cli(
                daemon, "webhooks", "secret", hook_id, "--output", str(output), *force
            )
            one_line_error(code, err, str(output), reason)
    assert sorted(p.name for p in files.iterdir()) == ["a-file"], "no file left behind"

    add = ("webhooks", "add", "--name", "b", "--target-url", "http://127.0.0.1:9/")
    basic = ("--events", "CI_STATS", "--auth-type", "basic", "--auth-username", "lms")
    for password_file, reason in (
        (files / "no-such-password", "No such file or directory"),
        (files, "Is a directory"),
    ):
        code, _, err = await cli(daemon, *add, *basic, "--auth-password-file", str(password_file))
        one_line_error(code, err, "--auth-password-file", str(password_file), reason)

    code, _, err = await cli(daemon, "webhooks", "show", "no such webhook")
    one_line_error(code, err, "no webhook named 'no such webhook'")


def test_a_failed_replacement_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "secret.json"
    secret_file.write_text("old\n")

    def refuse(source: str, destination: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(commands.CommandFailed, match=r"secret.json: Invalid cross-device link$"):
        commands.write_private_file(secret_file, "new\n", force=True)
    assert secret_file.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["secret.json"]
