"""The listener's limits on the real daemon: time to send a head, a body that must keep
coming, idle keep-alive, open connections, and request-body bytes held in memory.

Each daemon runs with short limits; a test waits for the daemon's own close with a
generous bound (a blocking read returning ``b""``), never for a time of its own.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import samples
from tests.support.daemon_process import DaemonProcess, write_config
from tests.support.tokens import INGEST_TOKEN

#: How long a test waits for the daemon to close a connection: far past every limit.
CLOSE_BOUND_SECONDS = 30.0
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0


def _daemon(directory: Path, server_lines: str) -> Iterator[DaemonProcess]:
    path = write_config(directory)
    path.write_text(path.read_text().replace("[server]\n", "[server]\n" + server_lines, 1))
    daemon = DaemonProcess(path)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """Short head and body limits; idle keep-alive long enough not to interfere."""
    yield from _daemon(
        tmp_path_factory.mktemp("timed"),
        f'header_timeout = "{HEADER_TIMEOUT}s"\nbody_timeout = "{BODY_TIMEOUT}s"\n'
        'keepalive_timeout = "120s"\nmax_body_memory = "2MiB"\n',
    )


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """50 connections at most; every time limit long, so only the cap closes any."""
    yield from _daemon(
        tmp_path_factory.mktemp("capped"),
        'header_timeout = "120s"\nbody_timeout = "120s"\nkeepalive_timeout = "120s"\n'
        "max_connections = 50\n",
    )


def _connect(daemon: DaemonProcess) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", daemon.port), timeout=CLOSE_BOUND_SECONDS)
    return connection


def _read_until_closed(connection: socket.socket) -> bytes:
    """Everything the daemon sends until it closes the connection (a reset counts as a
    close); fails if it keeps it open past the bound."""
    received = b""
    deadline = time.monotonic() + CLOSE_BOUND_SECONDS
    for _ in range(100_000):  # each round reads at least a byte, or ends
        connection.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = connection.recv(65_536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            raise AssertionError(
                f"the daemon kept the connection open for {CLOSE_BOUND_SECONDS} s; "
                f"received {received[:200]!r}"
            ) from None
        if not chunk:
            return received
        received += chunk
    raise AssertionError("the daemon never stopped sending")


def _closed_within(connection: socket.socket, seconds: float) -> bool:
    """Whether the daemon closes ``connection`` (sending nothing) within ``seconds``."""
    connection.settimeout(seconds)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _ingest_head(length: int) -> bytes:
    return (
        "POST /v1/events HTTP/1.1\r\nHost: almhookd\r\n"
        f"Authorization: Bearer {INGEST_TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _event_body() -> bytes:
    return json.dumps(samples.event()).encode()


def test_a_connection_that_sends_nothing_is_closed(timed: DaemonProcess) -> None:
    with _connect(timed) as connection:
        assert _read_until_closed(connection) == b""


def test_a_half_sent_head_is_closed(timed: DaemonProcess) -> None:
    with _connect(timed) as connection:
        connection.sendall(b"POST /v1/events HTTP/1.1\r\nHost: almhookd\r\nContent-Ty")
        assert _read_until_closed(connection) == b""


def test_a_body_that_stops_coming_is_closed_unanswered(timed: DaemonProcess) -> None:
    with _connect(timed) as connection:
        connection.sendall(_ingest_head(1000) + b'{"events": [')
        assert _read_until_closed(connection) == b""


def test_a_body_that_keeps_coming_is_accepted_however_long_it_takes(timed: DaemonProcess) -> None:
    """A client that drips its body a byte at a time is served, even once a body that
    stopped, started with it, was closed for going past the limit."""
    body = _event_body()
    with _connect(timed) as connection, _connect(timed) as stalled:
        connection.sendall(_ingest_head(len(body)))
        stalled.sendall(_ingest_head(1000) + b'{"events": [')
        sent = 0
        while sent < len(body) - 1 and not _closed_within(stalled, BODY_TIMEOUT / 8):
            connection.sendall(body[sent : sent + 1])  # well within the body limit
            sent += 1
        assert sent < len(body) - 1, "the body ran out before the stalled one was closed"
        connection.sendall(body[sent:])
        connection.settimeout(CLOSE_BOUND_SECONDS)
        assert connection.recv(65_536).startswith(b"HTTP/1.1 202 ")


def test_a_kept_alive_connection_idle_past_the_header_limit_still_takes_requests(
    timed: DaemonProcess,
) -> None:
    """The header limit counts from a later request's first byte, not from the answer
    before it: the idle time between requests is the keep-alive limit's."""
    request = b"GET /healthz HTTP/1.1\r\nHost: almhookd\r\n\r\n"
    with _connect(timed) as connection:
        connection.sendall(request)
        assert connection.recv(65_536).startswith(b"HTTP/1.1 200 ")
        # A connection opened now that sends nothing is closed by the header limit: by
        # then the kept-alive one has been idle at least that long.
        with _connect(timed) as silent:
            assert _read_until_closed(silent) == b""
        connection.sendall(request)
        assert connection.recv(65_536).startswith(b"HTTP/1.1 200 ")


def test_an_idle_kept_alive_connection_is_closed_and_the_file_limit_raised(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path)
    path.write_text(
        path.read_text().replace(
            "[server]\n", '[server]\nheader_timeout = "120s"\nkeepalive_timeout = "1s"\n', 1
        )
    )
    daemon = DaemonProcess(path)
    daemon.wrapper = ["prlimit", "--nofile=256:4096", "--"]  # a soft limit below the hard
    daemon.start()
    try:
        with _connect(daemon) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: almhookd\r\n\r\n")
            answer = _read_until_closed(connection)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        limits = [e for e in daemon.log_events() if e.get("event") == "daemon.file_limit"]
        assert [e["open_files"] for e in limits] == [4096]
    finally:
        daemon.stop()


def test_connections_past_the_cap_are_closed_while_requests_are_answered(
    capped: DaemonProcess,
) -> None:
    opened = [_connect(capped) for _ in range(200)]
    closed: set[socket.socket] = set()
    try:
        with selectors.DefaultSelector() as selector:
            for connection in opened:
                connection.setblocking(False)
                selector.register(connection, selectors.EVENT_READ)
            deadline = time.monotonic() + CLOSE_BOUND_SECONDS
            while len(closed) < 150 and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=deadline - time.monotonic()):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    with contextlib.suppress(ConnectionResetError):  # a reset is a close
                        assert ready.recv(1) == b"", "an idle connection was answered"
                    selector.unregister(ready)
                    closed.add(ready)
        assert len(closed) >= 150, f"{len(closed)} of 200 idle connections closed"

        with urllib.request.urlopen(capped.url + "/healthz", timeout=30) as response:
            assert response.status == 200
        status, _ = capped.request("POST", "/v1/events", samples.event(), token=INGEST_TOKEN)
        assert status == 202
        # The connections the cap left open are still served.
        newest = opened[-1]
        assert newest not in closed
        newest.setblocking(True)
        newest.settimeout(CLOSE_BOUND_SECONDS)
        newest.sendall(b"GET /healthz HTTP/1.1\r\nHost: almhookd\r\n\r\n")
        assert newest.recv(65_536).startswith(b"HTTP/1.1 200 ")
    finally:
        for connection in opened:
            connection.close()


def _stalled_bodies(daemon: DaemonProcess, count: int) -> tuple[list[bytes], float]:
    """``count`` clients each send most of a 1 MiB body and stop; what each got before
    its connection closed, and how far above its start the daemon's RSS peaked (MiB)."""
    size = 1_048_576
    before = daemon.memory_kib()["VmRSS"]
    connections = []
    try:
        for _ in range(count):
            connection = _connect(daemon)
            connections.append(connection)
            # Answered 503 and closed, perhaps while the body was still going out.
            with contextlib.suppress(OSError):
                connection.sendall(_ingest_head(size) + b"[" + b" " * (size - 65_536))
        answers = [_read_until_closed(connection) for connection in connections]
    finally:
        for connection in connections:
            connection.close()
    return answers, (daemon.memory_kib()["VmHWM"] - before) / 1024


def test_bodies_held_in_memory_are_capped(timed: DaemonProcess) -> None:
    """30 clients each send most of a 1 MiB body and stop. With 2 MiB of bodies allowed
    at once, the others are answered 503 before their bodies are read."""
    answers, growth_mib = _stalled_bodies(timed, 30)
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
    # Unbounded, 30 bodies of about 1 MiB each were held at once: 30 MiB and more.
    assert growth_mib < 16, f"resident memory peaked {growth_mib:.1f} MiB above its start"
    assert len(refused) >= 20, [a[:40] for a in answers]
    assert all(b"retry-after: 1" in a.lower() for a in refused)


@pytest.fixture(scope="module")
def defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The shipped limits: 512 connections, 32 MiB of bodies, 10 s heads and bodies."""
    yield from _daemon(tmp_path_factory.mktemp("defaults"), "")


def test_a_thousand_idle_and_half_open_connections_leave_the_daemon_serving(
    defaults: DaemonProcess,
) -> None:
    """The issue's count: 1,100 idle connections used to exhaust a 1,024 file limit. Half
    send nothing, half a head they never finish; past the cap of 512 the daemon closes
    them, and /healthz and ingest go on answering."""
    opened = []
    try:
        for number in range(1000):
            connection = _connect(defaults)
            if number % 2:
                connection.sendall(b"POST /v1/events HTTP/1.1\r\nHost: almhookd\r\n")
            opened.append(connection)
        with urllib.request.urlopen(defaults.url + "/healthz", timeout=30) as response:
            assert response.status == 200
        status, _ = defaults.request("POST", "/v1/events", samples.event(), token=INGEST_TOKEN)
        assert status == 202
        closed = 0
        with selectors.DefaultSelector() as selector:
            for connection in opened:
                connection.setblocking(False)
                selector.register(connection, selectors.EVENT_READ)
            deadline = time.monotonic() + CLOSE_BOUND_SECONDS
            while closed < 1000 - 512 and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=deadline - time.monotonic()):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    with contextlib.suppress(ConnectionResetError):
                        ready.recv(65_536)  # EOF, or the answer to a head cut short
                    selector.unregister(ready)
                    closed += 1
        assert closed >= 1000 - 512, f"{closed} of 1,000 connections closed"
    finally:
        for connection in opened:
            connection.close()


def test_three_hundred_slow_bodies_keep_memory_bounded(defaults: DaemonProcess) -> None:
    """The issue's count: 300 connections each holding most of a 1 MiB body took RSS
    from about 50 to 583 MB. With the shipped 32 MiB budget, the peak grows well under
    100 MB and the requests past the budget are refused before their bodies are read."""
    answers, growth_mib = _stalled_bodies(defaults, 300)
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
    assert growth_mib < 100, f"resident memory peaked {growth_mib:.1f} MiB above its start"
    assert len(refused) >= 300 - 32, len(refused)
