"""almhookd under systemd: the unit file, sd_notify, the watchdog, journald, reloads."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon_process import DaemonProcess, write_config
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "almhookd.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "systemd-analyze"
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (.ci/run installs it, so CI never skips)",
)


@needs_systemd_analyze
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify also checks that ExecStart exists: point it at this checkout's almhookd.
    executable = Path(sys.executable).parent / "almhookd"
    unit = tmp_path / "almhookd.service"
    unit.write_text(UNIT.read_text().replace("/opt/almhookd/bin/almhookd", str(executable)))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@needs_systemd_analyze
def test_the_unit_is_sandboxed(capsys: pytest.CaptureFixture[str]) -> None:
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for almhookd.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security --offline=true: exposure {score}")
    assert score <= 2.0
    unit = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "WatchdogSec=",
        "StateDirectory=almhookd",
        "ConfigurationDirectory=almhookd",
        "LoadCredential=admin_token:",
    ):
        assert line in unit


class NotifyListener:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path | None = None) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"almhookd-test-{os.getpid()}-{time.monotonic_ns()}"
            self.socket.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            self.socket.bind(str(path))
            self.address = str(path)
        self.socket.settimeout(0.2)
        self.messages: list[str] = []

    def collect(self, seconds: float) -> list[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.messages.append(self.socket.recv(4096).decode())
            except TimeoutError:
                continue
        return self.messages

    def drain(self) -> list[str]:
        """Takes every message already queued on the socket, without waiting for more."""
        self.socket.setblocking(False)
        try:
            while True:
                self.messages.append(self.socket.recv(4096).decode())
        except BlockingIOError:
            return self.messages
        finally:
            self.socket.settimeout(0.2)

    def wait_for(self, prefix: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if any(line.startswith(prefix) for line in message.splitlines()):
                    self.messages.remove(message)
                    return message
            self.collect(0.2)
        raise AssertionError(f"no {prefix!r} among {self.messages}")

    def close(self) -> None:
        self.socket.close()


@pytest.fixture(params=["abstract", "path"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifyListener]:
    made = NotifyListener(None if request.param == "abstract" else tmp_path / "notify.sock")
    yield made
    made.close()


def _start(tmp_path: Path, env: dict[str, str], extra: str = "") -> DaemonProcess:
    daemon = DaemonProcess(write_config(tmp_path, extra=extra))
    daemon.start(wait=False, env=env)
    daemon.wait_ready()
    return daemon


def test_sd_notify_ready_status_watchdog_reload_stopping(
    tmp_path: Path, listener: NotifyListener
) -> None:
    daemon = _start(tmp_path, {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"})
    try:
        ready = listener.wait_for("READY=1")
        assert re.search(r"^STATUS=0 webhooks \(0 active\), backlog 0$", ready, re.M)
        for _ in range(2):  # pings keep coming, not just one
            assert listener.wait_for("WATCHDOG=1") == "WATCHDOG=1"
        daemon.signal(signal.SIGHUP)
        assert "MONOTONIC_USEC=" in listener.wait_for("RELOADING=1")
        listener.wait_for("READY=1")
        daemon.signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1")
        assert daemon.wait() == 0
    finally:
        daemon.stop()


def test_a_wedged_store_stops_the_watchdog_pings(tmp_path: Path) -> None:
    listener = NotifyListener()
    daemon = _start(tmp_path, {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"})
    try:
        listener.wait_for("WATCHDOG=1")
        blocker = sqlite3.connect(tmp_path / "data" / "almhookd.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the daemon's store wedges
        _wait_for_log(daemon, "watchdog.store_not_responding")
        listener.drain()  # pings sent before the wedge was noticed
        listener.messages.clear()
        listener.collect(2.5)  # five watchdog periods of a half second
        assert "WATCHDOG=1" not in listener.messages
        blocker.execute("ROLLBACK")
        blocker.close()
        listener.wait_for("WATCHDOG=1", timeout=10)
    finally:
        daemon.stop()
        listener.close()
    assert any(e["event"] == "watchdog.store_not_responding" for e in daemon.log_events())


def test_journald_priorities_and_no_secret_in_any_log_line(tmp_path: Path) -> None:
    log_path = tmp_path / "journal.log"
    log_path.touch()
    status = os.stat(log_path)
    daemon = DaemonProcess(
        write_config(tmp_path, extra=('[notify]\nsmtp_password = "smtp-password-never-logged"\n'))
    )
    daemon.log_path = log_path
    daemon.start(wait=False, env={"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"})
    daemon.wait_ready()
    try:
        status_code, _ = daemon.request(
            "POST",
            "/v1/webhooks",
            {
                "name": "guarded",
                "targetUrl": "http://10.0.0.1/",
                "events": ["CI_STATS"],
                "auth": {
                    "type": "basic",
                    "username": "u",
                    "password": "basic-password-never-logged",
                },
            },
        )
        assert status_code == 422  # the guard refuses it; nothing is logged of the body
        config = daemon.config_path
        original = config.read_text()
        config.write_text(original + "\n[oops\n")
        daemon.signal(signal.SIGHUP)  # a broken config: an error line, the daemon serves on
        _wait_for_log(daemon, "daemon.reload_failed")
        assert daemon.request("GET", "/v1/webhooks")[0] == 200
    finally:
        assert daemon.stop() == 0
    lines = log_path.read_text().splitlines()
    assert lines and all(re.match(r"<[2-7]>\{", line) for line in lines), lines[:3]
    assert any(line.startswith("<6>") and '"daemon.started"' in line for line in lines)
    assert any(line.startswith("<3>") and '"daemon.reload_failed"' in line for line in lines)
    text = log_path.read_text()
    for secret in (
        ADMIN_TOKEN,
        INGEST_TOKEN,
        "smtp-password-never-logged",
        "basic-password-never-logged",
    ):
        assert secret not in text


def test_sighup_applies_a_valid_config_and_keeps_a_broken_one_out(tmp_path: Path) -> None:
    daemon = DaemonProcess(write_config(tmp_path)).start()
    try:
        config = daemon.config_path
        config.write_text(
            config.read_text()
            .replace('level = "info"', 'level = "debug"')
            .replace("[account]\nid = 1010", "[account]\nid = 2020")
        )
        daemon.signal(signal.SIGHUP)
        _wait_for_log(daemon, "daemon.reloaded")
        status, _ = daemon.request(
            "POST",
            "/v1/events",
            {
                "eventName": "LEARNING_OBJECT_DRAFT",
                "eventId": "after-reload",
                "data": {"loId": "course:1", "loType": "course"},
            },
            token=INGEST_TOKEN,
        )
        assert status == 202
        assert daemon.request("GET", "/v1/events/after-reload")[1]["accountId"] == 2020
        config.write_text(config.read_text().replace('level = "debug"', 'level = "loud"'))
        daemon.signal(signal.SIGHUP)
        failed = _wait_for_log(daemon, "daemon.reload_failed")
        assert "log.level" in str(failed["error"])
        assert daemon.request("GET", "/v1/webhooks")[0] == 200
    finally:
        assert daemon.stop() == 0
    reloaded = [e for e in daemon.log_events() if e["event"] == "daemon.reloaded"]
    assert reloaded[0]["changed"] == ["account", "log"]


def _wait_for_log(daemon: DaemonProcess, event: str, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in daemon.log_events():
            if entry["event"] == event:
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no {event} in the log:\n{daemon.log()}")


def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    arrived, release = threading.Event(), threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrived.set()
            release.wait(60)  # the daemon's graceful stop would wait for this answer
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    daemon = DaemonProcess(
        write_config(
            tmp_path, extra='[delivery]\nallow_private_targets = true\nread_timeout = "10s"\n'
        )
    )
    daemon.start()
    try:
        status, _ = daemon.request(
            "POST",
            "/v1/webhooks",
            {
                "name": "slow",
                "targetUrl": f"http://127.0.0.1:{server.server_port}/",
                "events": ["CI_STATS"],
            },
        )
        assert status == 201
        status, _ = daemon.request(
            "POST",
            "/v1/events",
            {
                "eventName": "CI_STATS",
                "data": {
                    "loInstanceId": "course:1_2",
                    "waitlistCount": 0,
                    "enrollmentCount": 1,
                    "seatLimit": 5,
                },
            },
        )
        assert status == 202
        assert arrived.wait(30), "the delivery did not reach the slow receiver"
        daemon.signal(signal.SIGTERM)
        _wait_for_log(daemon, "daemon.stopping")
        # The graceful stop waits for the answer, which comes only once released, up to
        # the 10 s read timeout; exiting with 0 would mean it gave up on it by itself.
        assert daemon.process is not None and daemon.process.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 1
        assert not release.is_set()  # it exited without the answer
    finally:
        release.set()
        daemon.stop()
        server.shutdown()
    assert any(e["event"] == "daemon.forced_exit" for e in daemon.log_events())


def test_ctrl_c_delivered_twice_stops_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the daemon and ``make run``, which passes it on: two
    SIGINTs at once are one request to stop, and the daemon exits 0."""
    daemon = DaemonProcess(write_config(tmp_path))
    daemon.start()
    try:
        daemon.signal(signal.SIGINT)
        daemon.signal(signal.SIGINT)
        assert daemon.wait(timeout=30) == 0
    finally:
        daemon.stop()
    events = [e["event"] for e in daemon.log_events()]
    assert "daemon.stopped" in events
    assert "daemon.forced_exit" not in events
