"""Bad input at the listener of the real daemon: broken bytes, wrong content types,
oversized and deeply nested bodies, huge headers, truncated bodies, slowloris clients.
Never a 5xx, never a crash, nothing half-stored, and other clients are still served.

The daemon, the JSON strategies and the database snapshot are those of
``tests/test_fuzz_api.py``; this module adds byte-level and connection-level abuse.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import record
from tests.support import samples
from tests.support.daemon_process import DaemonProcess
from tests.support.fuzzing import daemon, documents, safe, snapshot
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

__all__ = ["daemon"]  # the module-scoped daemon fixture, shared with the JSON fuzz test

CHECKED: dict[str, int] = {"requests": 0, "server_errors": 0}


def post(
    daemon: DaemonProcess,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    token: str = INGEST_TOKEN,
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    try:
        sent = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        sent.update(headers or {})
        connection.request("POST", path, body=body, headers=sent)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    CHECKED["requests"] += 1
    CHECKED["server_errors"] += response.status >= 500
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw


def database(daemon: DaemonProcess) -> Any:
    return daemon.config_path.parent / "data" / "almhookd.db"


def valid(count: int = 1) -> bytes:
    return json.dumps({"events": [samples.event() for _ in range(count)]}).encode()


BAD_BODIES: dict[str, tuple[bytes, dict[str, str], set[int]]] = {
    "oversized": (b'{"events": [' + b" " * (2 << 20) + b"]}", {}, {413}),
    "nested_arrays": (b"[" * 100_000 + b"]" * 100_000, {}, {400}),
    "nested_objects": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, {}, {400}),
    "nested_in_data": (
        json.dumps(samples.event())
        .replace('"userId": 4279332', '"userId": 1, "deep": ' + "[" * 20_000 + "]" * 20_000)
        .encode(),
        {},
        {400, 422},
    ),
    "invalid_utf8": (b'{"eventName": "COURSE_\xff\xfeENROLLMENT", "data": {}}', {}, {400}),
    "lone_surrogate": (
        json.dumps(samples.event()).replace("course:7374992", "\\ud800").encode(),
        {},
        {400, 422},
    ),
    "huge_exponent": (
        json.dumps(samples.event()).replace("4279332", "1e999999").encode(),
        {},
        {400, 422},
    ),
    "huge_extra_number": (
        json.dumps(samples.event())
        .replace('"userId": 4279332', '"userId": 4279332, "extra": 1e999')
        .encode(),
        {},
        {400, 422},
    ),
    "huge_integer": (
        json.dumps(samples.event()).replace("4279332", "9" * 4000).encode(),
        {},
        {400, 422},
    ),
    "huge_timestamp": (json.dumps(samples.event(timestamp=10**20)).encode(), {}, {422}),
    "huge_account_id": (
        json.dumps({"accountId": 10**20, "events": [samples.event()]}).encode(),
        {},
        {422},
    ),
    "text_plain": (valid(), {"Content-Type": "text/plain"}, {415}),
    "form": (valid(), {"Content-Type": "application/x-www-form-urlencoded"}, {415}),
    "multipart": (valid(), {"Content-Type": "multipart/form-data; boundary=x"}, {415}),
    "no_content_type": (valid(), {"Content-Type": ""}, {415}),
    "utf16": (valid().decode().encode("utf-16"), {}, {400}),
    "empty": (b"", {}, {400}),
    "too_many_events": (
        json.dumps({"events": [samples.event() for _ in range(10_001)]}).encode(),
        {},
        {413, 422},
    ),
    "last_event_bad": (
        json.dumps(
            {"events": [samples.event() for _ in range(500)] + [{"eventName": "NOPE"}]}
        ).encode(),
        {},
        {422},
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_a_bad_body_is_a_clear_4xx_and_stores_nothing(daemon: DaemonProcess, case: str) -> None:
    body, headers, expected = BAD_BODIES[case]
    before = snapshot(database(daemon))
    status, answer = post(daemon, "/v1/events", body, headers)
    assert status in expected, (status, answer)
    assert answer["error"]["code"] and answer["error"]["message"], answer
    assert snapshot(database(daemon)) == before
    record("bad_input", cases=len(BAD_BODIES))


def test_admin_bodies_are_checked_like_ingest(daemon: DaemonProcess) -> None:
    before = snapshot(database(daemon))
    for name in ("nested_arrays", "invalid_utf8", "text_plain", "huge_exponent", "empty"):
        body, headers, _ = BAD_BODIES[name]
        status, answer = post(daemon, "/v1/webhooks", body, headers, token=ADMIN_TOKEN)
        assert 400 <= status < 500, (name, status, answer)
    assert snapshot(database(daemon)) == before


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("one_huge_header", {"X-Filler": "a" * 200_000}),
        ("many_headers", {f"X-Filler-{i}": "b" * 50 for i in range(2_000)}),
        ("huge_token", {"Authorization": "Bearer " + "c" * 200_000}),
    ],
)
def test_huge_headers_are_refused_cleanly(
    daemon: DaemonProcess, name: str, headers: dict[str, str]
) -> None:
    try:
        status, _ = post(daemon, "/v1/events", valid(), headers)
    except (ConnectionError, http.client.RemoteDisconnected):
        status = 400  # closing the connection on an abusive header is a refusal too
    assert 400 <= status < 500, (name, status)
    assert post(daemon, "/v1/events", valid())[0] == 202


def test_a_truncated_body_stores_nothing(daemon: DaemonProcess) -> None:
    before = snapshot(database(daemon))
    body = valid(50)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {INGEST_TOKEN}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
    assert post(daemon, "/v1/events", valid())[0] == 202  # served on, nothing of the half
    after = snapshot(database(daemon))
    assert len(after[0]) == len(before[0]) + 1


async def test_one_bad_request_does_not_fail_the_requests_committed_with_it(
    daemon: DaemonProcess,
) -> None:
    """Concurrent requests share a group commit: a refused one must not take the
    others down with it (a timestamp beyond 64 bits once failed the whole group)."""
    bad = json.dumps(samples.event(timestamp=10**20)).encode()

    def one(index: int) -> int:
        return post(daemon, "/v1/events", bad if index % 5 == 0 else valid())[0]

    statuses = await asyncio.gather(*(asyncio.to_thread(one, i) for i in range(30)))
    assert statuses == [422 if i % 5 == 0 else 202 for i in range(30)]


async def test_slowloris_clients_do_not_starve_others(daemon: DaemonProcess) -> None:
    """Hundreds of clients trickling their headers; a normal client is still served."""
    writers: list[asyncio.StreamWriter] = []
    for _ in range(300):
        _, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        writers.append(writer)
    try:
        for round_number in range(3):
            for writer in writers:
                writer.write(f"X-Slow-{round_number}: 1\r\n".encode())
            await asyncio.sleep(0.2)
            status, _ = await asyncio.to_thread(post, daemon, "/v1/events", valid())
            assert status == 202
        status, health = await asyncio.to_thread(
            post, daemon, "/v1/events", valid(5), {"Content-Type": "application/json"}
        )
        assert status == 202, health
    finally:
        for writer in writers:
            writer.close()
    record("slowloris", slow_connections=len(writers), served_meanwhile=4)


byte_mutations = st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=6
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    document=documents,
    flips=byte_mutations,
    cut=st.integers(min_value=0, max_value=400) | st.none(),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=latin-1", "text/json", "Application/JSON"]
    ),
    route=st.sampled_from(["/v1/events", "/v1/webhooks", "/v1/webhooks/test"]),
)
def test_mutated_bytes_never_break_the_listener(
    daemon: DaemonProcess,
    document: Any,
    flips: list[tuple[int, int]],
    cut: int | None,
    content_type: str,
    route: str,
) -> None:
    assume(safe(document))
    body = bytearray(json.dumps(document).encode())
    for position, value in flips:
        if body:
            body[position % len(body)] = value
    raw = bytes(body if cut is None else body[:cut])
    assume(b"http" not in raw.lower())  # a fuzzed target URL would make the daemon resolve it
    before = snapshot(database(daemon))
    status, answer = post(daemon, route, raw, {"Content-Type": content_type}, token=ADMIN_TOKEN)
    assert status < 500, (status, answer)
    if status >= 400:
        assert answer["error"]["message"], answer
        assert snapshot(database(daemon)) == before
    record(
        "bad_input", requests_checked=CHECKED["requests"], server_errors=CHECKED["server_errors"]
    )
