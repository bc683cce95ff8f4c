"""The real daemon as a subprocess: start, ingest, SIGTERM, kill -9, restart."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
import stat
from pathlib import Path

import aiohttp

from tests.support import samples
from tests.support.daemon_process import DaemonProcess, almhookd, write_config
from tests.support.net import free_port
from tests.support.running import until
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

_ids = itertools.count()


async def _ingest_until_killed(
    daemon: DaemonProcess, *, acknowledged: set[str], kill_after: int, workers: int = 16
) -> None:
    """Post events from several workers; kill -9 the daemon once enough are acknowledged."""
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}
    killed = asyncio.Event()

    async def worker(session: aiohttp.ClientSession, number: int) -> None:
        for _ in range(kill_after):  # each round acknowledges at least one event
            if killed.is_set():
                return
            size = 10 if number % 2 else 1
            batch = [f"crash-{next(_ids)}" for _ in range(size)]
            body = {"events": [samples.event(eventId=event_id) for event_id in batch]}
            try:
                async with session.post(
                    daemon.url + "/v1/events", json=body, headers=headers
                ) as response:
                    if response.status == 202:
                        acknowledged.update(batch)
            except (TimeoutError, aiohttp.ClientError):
                return
            if len(acknowledged) >= kill_after and not killed.is_set():
                daemon.kill()  # mid-flight: other workers still have requests open
                killed.set()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(worker(session, n) for n in range(workers)))
    assert killed.is_set()


def _stored_ids(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {row[0] for row in db.execute("SELECT event_id FROM events")}


async def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
    daemon = DaemonProcess(write_config(tmp_path))
    acknowledged: set[str] = set()
    for round_number in range(3):
        daemon.start()
        await _ingest_until_killed(
            daemon, acknowledged=acknowledged, kill_after=300 * (round_number + 1)
        )
    daemon.start()
    status, body = daemon.request("GET", f"/v1/events/{min(acknowledged)}")
    assert status == 200 and body["eventId"] == min(acknowledged)
    assert daemon.stop() == 0
    stored = _stored_ids(tmp_path / "data" / "almhookd.db")
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    assert len(acknowledged) >= 900


async def test_sigterm_finishes_in_flight_requests_and_exits_0(tmp_path: Path) -> None:
    daemon = DaemonProcess(write_config(tmp_path)).start()
    acknowledged: set[str] = set()
    headers = {"Authorization": f"Bearer {INGEST_TOKEN}"}

    async def post(session: aiohttp.ClientSession, event_id: str) -> None:
        try:
            async with session.post(
                daemon.url + "/v1/events", headers=headers, json=samples.event(eventId=event_id)
            ) as response:
                if response.status == 202:
                    acknowledged.add(event_id)
                else:
                    assert response.status == 503
        except aiohttp.ClientError:
            pass  # refused once the listener closed: never acknowledged, so never promised

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(post(session, f"term-{i}")) for i in range(300)]
        await until(lambda: len(acknowledged) >= 10, what="ingest under way")
        daemon.signal(signal.SIGTERM)  # with most of the 300 requests still to come
        await asyncio.gather(*tasks)
    assert daemon.wait() == 0
    events = [entry["event"] for entry in daemon.log_events()]
    assert events[-2:] == ["daemon.stopping", "daemon.stopped"]
    assert acknowledged <= _stored_ids(tmp_path / "data" / "almhookd.db")


def test_a_bad_config_exits_78_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra='[delivery]\nread_timeout = "soon"\n')
    result = almhookd("run", "--config", str(config))
    assert result.returncode == 78
    assert result.stderr.strip().count("\n") == 0
    assert "delivery.read_timeout" in result.stderr and "Traceback" not in result.stderr


def test_an_unusable_database_path_exits_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace(str(tmp_path / "data"), str(tmp_path / "blocker" / "data"))
    )
    result = almhookd("run", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith("almhookd: ") and result.stderr.count("\n") == 1
    assert "cannot create the database" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_taken_port_exits_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = DaemonProcess(write_config(tmp_path / "a")).start()
    try:
        result = almhookd("run", "--config", str(write_config(tmp_path / "b", port=first.port)))
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{first.port}" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout
    finally:
        assert first.stop() == 0


def _same_database_other_port(config: Path, port: int, second: Path) -> Path:
    """A copy of ``config`` listening elsewhere: only the database is shared."""
    second.write_text(config.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"))
    return second


def test_a_second_daemon_on_the_same_database_exits_1_with_one_line(tmp_path: Path) -> None:
    first = DaemonProcess(write_config(tmp_path)).start()
    try:
        assert first.process is not None
        second = _same_database_other_port(first.config_path, first.port, tmp_path / "b.toml")
        result = almhookd("run", "--config", str(second))
        database = tmp_path / "data" / "almhookd.db"
        assert result.returncode == 1
        assert result.stderr == (
            f"almhookd: the database {database} is in use by another almhookd"
            f" (pid {first.process.pid})\n"
        )
        output = result.stderr + result.stdout
        assert "Traceback" not in output
        assert ADMIN_TOKEN not in output and INGEST_TOKEN not in output
        lock = tmp_path / "data" / "almhookd.db.lock"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert first.request("GET", "/healthz")[0] == 200  # the first one serves on
    finally:
        assert first.stop() == 0


def test_a_daemon_starts_on_the_database_of_one_killed_with_kill_9(tmp_path: Path) -> None:
    first = DaemonProcess(write_config(tmp_path)).start()
    first.kill()  # SIGKILL: nothing of the daemon's own runs, the kernel drops its lock
    second = DaemonProcess(
        _same_database_other_port(first.config_path, first.port, tmp_path / "b.toml")
    ).start()
    try:
        assert second.request("GET", "/healthz")[0] == 200
        assert second.process is not None
        lock = tmp_path / "data" / "almhookd.db.lock"
        assert lock.read_text() == f"{second.process.pid}\n"
    finally:
        assert second.stop() == 0


def test_without_a_token_one_is_generated_and_never_logged(tmp_path: Path) -> None:
    daemon = DaemonProcess(write_config(tmp_path, tokens=False)).start()
    try:
        token_file = tmp_path / "data" / "admin.token"
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert daemon.request("GET", "/v1/events/x", token="wrong-token-0123456789")[0] == 401
        assert daemon.request("GET", "/v1/events/x", token=token)[0] == 404
        # The command line finds the generated token through the same configuration.
        result = almhookd(
            "emit",
            "CI_STATS",
            "--data",
            '{"loInstanceId": "course:1_2", '
            '"waitlistCount": 0, "enrollmentCount": 3, "seatLimit": 10}',
            "--config",
            str(daemon.config_path),
        )
        assert result.returncode == 0, result.stderr
    finally:
        assert daemon.stop() == 0
    assert token not in daemon.log()
    assert any(
        entry["event"] == "auth.admin_token_file" and entry["path"] == str(token_file)
        for entry in daemon.log_events()
    )
    # A restart keeps the same token.
    daemon.start()
    assert daemon.request("GET", "/v1/events/x", token=token)[0] == 404
    assert daemon.stop() == 0


def test_check_config_prints_masked_settings(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = almhookd("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert 'admin_token = "********"' in result.stdout
    assert ADMIN_TOKEN not in result.stdout + result.stderr
    assert INGEST_TOKEN not in result.stdout + result.stderr
    assert "[delivery]" in result.stdout
    bad = almhookd("check-config", "--config", str(tmp_path / "missing.toml"))
    assert bad.returncode == 78 and "no such configuration file" in bad.stderr


def test_emit_sends_events_and_reports_errors(tmp_path: Path) -> None:
    daemon = DaemonProcess(write_config(tmp_path)).start()
    try:
        env = {"ALMHOOKD_URL": daemon.url, "ALMHOOKD_ADMIN_TOKEN": ADMIN_TOKEN}
        data = '{"loId": "course:1", "loType": "course"}'
        result = almhookd(
            "emit", "LEARNING_OBJECT_DRAFT", "--data", data, "--event-id", "cli-1", env=env
        )
        assert result.returncode == 0, result.stderr
        assert '"accepted": 1' in result.stdout
        assert daemon.request("GET", "/v1/events/cli-1")[1]["data"] == {
            "loId": "course:1",
            "loType": "course",
        }

        envelope = tmp_path / "events.json"
        envelope.write_text(
            '{"events": [{"eventName": "LEARNING_OBJECT_DELETION", '
            '"eventId": "cli-2", "data": ' + data + "}]}"
        )
        assert almhookd("emit", "--file", str(envelope), env=env).returncode == 0
        assert (
            almhookd("emit", "--file", "-", env=env, stdin=envelope.read_bytes()).stdout.count(
                '"duplicates": 1'
            )
            == 1
        )

        invalid = almhookd("emit", "LEARNING_OBJECT_DRAFT", "--data", "{}", env=env)
        assert invalid.returncode == 1
        assert "HTTP 422" in invalid.stderr and "data.loId: required" in invalid.stderr

        assert almhookd("emit", "X", "--data", "{not json", env=env).returncode == 2
        assert almhookd("emit", env=env).returncode == 2
        wrong = almhookd(
            "emit",
            "LEARNING_OBJECT_DRAFT",
            "--data",
            data,
            env={**env, "ALMHOOKD_ADMIN_TOKEN": "nope-0123456789abcdef"},
        )
        assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr
        unreachable = almhookd(
            "emit",
            "LEARNING_OBJECT_DRAFT",
            "--data",
            data,
            env={**env, "ALMHOOKD_URL": f"http://127.0.0.1:{free_port()}"},
        )
        assert unreachable.returncode == 1 and "cannot reach almhookd" in unreachable.stderr
    finally:
        assert daemon.stop() == 0
