"""The sender against real receivers on 127.0.0.1, on a fake clock.

What ``sender.py`` decides: the headers of a delivery, and the :class:`Outcome` each
answer or failure becomes. The HTTP framing itself is ``test_httpclient.py``'s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import gzip
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from almhookd import __version__
from almhookd.config import DeliveryConfig, Secret
from almhookd.delivery import resolver
from almhookd.delivery.httpclient import HttpClient, Response
from almhookd.delivery.sender import RESPONSE_EXCERPT, Sender
from almhookd.domain.policy import Outcome
from almhookd.domain.signing import generate_secret
from almhookd.domain.webhooks import NewWebhook, SigningSecret, Webhook, unsaved_webhook
from almhookd.errors import AlmhookdError
from tests.support.clock import FakeClock
from tests.support.http_receiver import Receiver, read_request
from tests.support.net import free_port
from tests.support.verifier import verify

#: Test receivers listen on loopback, which the default policy refuses.
LOOPBACK_ALLOWED = DeliveryConfig(allow_private_targets=True)
#: A read timeout short enough for a silent receiver to time out within the test.
SHORT_READ = replace(LOOPBACK_ALLOWED, connect_timeout=10.0, read_timeout=0.2)
BODY = b'{"accountId":1010,"events":[{"eventId":"ev-1"}]}'

#: The daemon runs on uvloop, whose transports report closes and errors their way.
pytestmark = pytest.mark.both_loops

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
"""Writes whatever bytes it likes once a request is in; the connection is then dropped."""


def hook(
    url: str,
    *,
    auth_type: str = "none",
    username: str | None = None,
    password: str | None = None,
    signing_secrets: tuple[str, ...] = (),
) -> Webhook:
    return unsaved_webhook(
        NewWebhook(
            name="sender",
            target_url=url,
            events=frozenset({"COURSE_ENROLLMENT"}),
            auth_type=auth_type,
            auth_username=username,
            auth_password=Secret(password) if password is not None else None,
        ),
        now_ms=0,
        signing_secrets=signing_secrets,
    )


@contextlib.asynccontextmanager
async def started(config: DeliveryConfig, clock: FakeClock) -> AsyncIterator[Sender]:
    sender = Sender(config, clock=clock)
    await sender.start()
    try:
        yield sender
    finally:
        await sender.close()


@pytest.fixture
async def sender(clock: FakeClock) -> AsyncIterator[Sender]:
    async with started(LOOPBACK_ALLOWED, clock) as running:
        yield running


@contextlib.asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[str]:
    """A raw server on 127.0.0.1 that reads one request, then lets ``answer`` reply."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        server.close()


def writing(answer: bytes) -> Answer:
    async def write(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()

    return write


async def never_answering(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the sender gives up and drops the connection


async def closing_at_once(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    return None


async def endless_answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(100_000):  # 400 MB: far past what the sender reads before it hangs up
        writer.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
        await writer.drain()


def answering(
    status: int, *, headers: dict[str, str] | None = None, body: bytes = b""
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A receiver behaviour: this status, headers and body."""

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=status, headers=headers, body=body)

    return answer


def lowered(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def http_date(moment: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(moment, UTC), usegmt=True)


# --- headers ------------------------------------------------------------------------


async def test_every_delivery_carries_its_id_timestamp_and_content_type(
    sender: Sender, receiver: Receiver, clock: FakeClock
) -> None:
    clock.now = 1_764_000_123.9  # the header holds whole seconds of the fake clock
    outcome = await sender.send(hook(receiver.url), message_id="msg_abc", body=BODY)
    assert outcome.ok
    [request] = receiver.received
    headers = lowered(request.headers)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"almhookd/{__version__}"
    assert headers["webhook-id"] == "msg_abc"
    assert headers["webhook-timestamp"] == "1764000123"
    assert "webhook-signature" not in headers and "authorization" not in headers
    assert request.body == BODY


async def test_the_signature_verifies_with_each_secret_in_force(
    sender: Sender, receiver: Receiver, clock: FakeClock
) -> None:
    previous, current, stranger = generate_secret(), generate_secret(), generate_secret()
    webhook = hook(receiver.url, auth_type="signature", signing_secrets=(previous, current))
    await sender.send(webhook, message_id="msg_signed", body=BODY)
    [request] = receiver.received
    assert lowered(request.headers)["webhook-timestamp"] == str(int(clock()))
    assert len(lowered(request.headers)["webhook-signature"].split(" ")) == 2
    assert verify(previous, request.headers, request.body)
    assert verify(current, request.headers, request.body)
    assert not verify(stranger, request.headers, request.body)
    assert not verify(current, request.headers, request.body.replace(b"1010", b"1011"))
    assert not verify(current, {**request.headers, "webhook-id": "msg_other"}, request.body)


async def test_a_secret_past_its_rotation_grace_no_longer_signs(
    sender: Sender, receiver: Receiver, clock: FakeClock
) -> None:
    retired, current = generate_secret(), generate_secret()
    grace_ends_ms = int(clock() * 1000) + 60_000
    webhook = replace(
        hook(receiver.url, auth_type="signature"),
        secrets=(
            SigningSecret(secret=Secret(retired), created_at_ms=0, expires_at_ms=grace_ends_ms),
            SigningSecret(secret=Secret(current), created_at_ms=1),
        ),
    )
    await sender.send(webhook, message_id="msg_1", body=BODY)
    clock.advance(60)
    await sender.send(webhook, message_id="msg_2", body=BODY)
    during, after = receiver.received
    assert verify(retired, during.headers, during.body)
    assert verify(current, after.headers, after.body)
    assert not verify(retired, after.headers, after.body)
    assert len(lowered(after.headers)["webhook-signature"].split(" ")) == 1


async def test_an_unusable_stored_secret_is_a_failed_attempt_naming_it(
    sender: Sender, receiver: Receiver
) -> None:
    """Secrets are generated, so only a hand-edited database holds a broken one."""
    webhook = hook(receiver.url, auth_type="signature", signing_secrets=("whsec_!!not-base64",))
    outcome = await sender.send(webhook, message_id="msg_1", body=BODY)
    assert (outcome.ok, outcome.error) == (
        False,
        "the stored signing secret is unusable: rotate it",
    )
    assert receiver.received == []


async def test_basic_auth_sends_utf8_credentials_and_no_signature(
    sender: Sender, receiver: Receiver
) -> None:
    webhook = hook(receiver.url, auth_type="basic", username="lms-ü", password="pa:ss wörd")
    await sender.send(webhook, message_id="msg_1", body=BODY)
    headers = lowered(receiver.received[0].headers)
    scheme, _, encoded = headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded) == "lms-ü:pa:ss wörd".encode()
    assert "webhook-signature" not in headers


async def test_extra_headers_are_sent_alongside_the_delivery_headers(
    sender: Sender, receiver: Receiver, clock: FakeClock
) -> None:
    secret = generate_secret()
    webhook = hook(receiver.url, auth_type="signature", signing_secrets=(secret,))
    await sender.send(
        webhook, message_id="msg_1", body=BODY, extra_headers={"almhookd-test": "true"}
    )
    [request] = receiver.received
    headers = lowered(request.headers)
    assert headers["almhookd-test"] == "true"
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(int(clock()))
    assert verify(secret, request.headers, request.body)


# --- answers ------------------------------------------------------------------------


async def test_a_2xx_is_an_acknowledgement_with_the_answer_and_its_duration(
    sender: Sender, receiver: Receiver
) -> None:
    receiver.delay = 0.05  # the fake clock stands still: the duration is measured for real
    receiver.respond(answering(202, body="accepted: ünïcode".encode()))
    outcome = await sender.send(hook(receiver.url), message_id="msg_1", body=BODY)
    assert (outcome.ok, outcome.status, outcome.error) == (True, 202, None)
    assert outcome.response_body == "accepted: ünïcode"
    assert outcome.retry_after is None
    assert outcome.duration_ms >= 50


@pytest.mark.parametrize("status", [200, 201, 204, 299])
async def test_any_2xx_acknowledges(sender: Sender, receiver: Receiver, status: int) -> None:
    receiver.respond(status)
    outcome = await sender.send(hook(receiver.url), message_id="msg_1", body=BODY)
    assert (outcome.ok, outcome.status, outcome.error) == (True, status, None)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_a_failure_and_never_followed(
    sender: Sender, receiver: Receiver, status: int
) -> None:
    elsewhere = await Receiver().start()
    try:
        receiver.respond(answering(status, headers={"Location": elsewhere.url}))
        outcome = await sender.send(hook(receiver.url), message_id="msg_1", body=BODY)
    finally:
        await elsewhere.stop()
    assert (outcome.ok, outcome.status) == (False, status)
    assert outcome.error == f"HTTP {status}: redirects are not followed"
    assert len(receiver.received) == 1 and elsewhere.received == []


@pytest.mark.parametrize("status", [400, 401, 404, 410, 429, 500, 502, 503])
async def test_a_4xx_or_5xx_is_a_failure_with_the_answer(
    sender: Sender, receiver: Receiver, status: int
) -> None:
    receiver.respond(status)
    outcome = await sender.send(hook(receiver.url), message_id="msg_1", body=BODY)
    assert (outcome.ok, outcome.status, outcome.error) == (False, status, f"HTTP {status}")
    assert outcome.response_body == f"answer {status}"
    assert outcome.retry_after is None


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, "120", 120.0),
        (503, "120", 120.0),
        (503, " 7 ", 7.0),
        (429, "soon", None),
        (429, "", None),
        (500, "120", None),
        (502, "120", None),
        (202, "120", None),
        (301, "120", None),
    ],
)
async def test_retry_after_seconds_are_read_on_429_and_503_only(
    sender: Sender, receiver: Receiver, status: int, retry_after: str, expected: float | None
) -> None:
    receiver.respond(answering(status, headers={"Retry-After": retry_after}))
    outcome = await sender.send(hook(receiver.url), message_id="msg_1", body=BODY)
    assert outcome.status == status and outcome.retry_after == expected


@pytest.mark.parametrize(("status", "date_in", "expected"), [(429, 90, 60.0), (503, 10, 0.0)])
async def test_a_retry_after_date_counts_from_the_clock_at_the_answer(
    sender: Sender,
    receiver: Receiver,
    clock: FakeClock,
    status: int,
    date_in: float,
    expected: float,
) -> None:
    """The date is set before the clock moves 30 s: the wait left is what counts, and a
    date already past asks for no wait."""
    date = http_date(clock() + date_in)
    clock.advance(30)
    receiver.respond(answering(status, headers={"Retry-After": date}))
    outcome = await sender.send(hook(receiver.url), message_id="msg_1", body=BODY)
    assert outcome.retry_after == expected


async def test_the_excerpt_is_cut_at_its_cap_and_decoded_leniently(
    sender: Sender, receiver: Receiver
) -> None:
    # A two-byte character straddles the cap: cut, it decodes to a replacement mark.
    answer = ("a" + "é" * RESPONSE_EXCERPT).encode()
    receiver.respond(answering(500, body=answer))
    outcome = await sender.send(hook(receiver.url), message_id="msg_1", body=BODY)
    assert outcome.response_body == "a" + "é" * (RESPONSE_EXCERPT // 2 - 1) + "\ufffd"
    receiver.respond(answering(400, body=b"\xff\xfe not utf-8"))
    outcome = await sender.send(hook(receiver.url), message_id="msg_2", body=BODY)
    assert outcome.response_body == "\ufffd\ufffd not utf-8"


async def test_a_gzip_answer_is_decoded_into_the_excerpt(sender: Sender) -> None:
    small = gzip.compress(b'{"error": "quota exceeded"}')
    large = gzip.compress(b"y" * 100_000)
    for packed, expected in ((small, '{"error": "quota exceeded"}'), (large, "y" * 4096)):
        answer = b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(
            packed
        )
        async with serving(writing(answer + packed)) as url:
            outcome = await sender.send(hook(url), message_id="msg_1", body=BODY)
        assert (outcome.status, outcome.response_body) == (500, expected)


async def test_an_endless_answer_is_cut_and_the_delivery_acknowledged(sender: Sender) -> None:
    async with serving(endless_answer) as url:
        outcome = await sender.send(hook(url), message_id="msg_1", body=BODY)
    assert (outcome.ok, outcome.status) == (True, 200)
    assert outcome.response_body == "x" * RESPONSE_EXCERPT


# --- failures -----------------------------------------------------------------------

#: Failures that come from the receiver's side: its answer, and the error text each
#: becomes. ``None``: nothing listens on the port.
RECEIVER_FAILURES = [
    pytest.param(never_answering, r"timed out \(connect 10s, read 0\.2s\)", id="never answers"),
    pytest.param(
        closing_at_once,
        "the receiver closed the connection without an answer",
        id="closes without an answer",
    ),
    pytest.param(None, "cannot connect: Connection refused", id="connection refused"),
    pytest.param(
        writing(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        r"bad response: not HTTP/1\.x: 'SSH-2\.0-OpenSSH_9\.6'",
        id="not HTTP",
    ),
    pytest.param(
        writing(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
        "bad response: the connection closed mid-answer.*",
        id="cut short",
    ),
    pytest.param(
        writing(b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n"),
        "bad response: Invalid header token",
        id="malformed header",
    ),
]


async def send_to_receiver(answer: Answer | None, clock: FakeClock) -> Outcome:
    async with started(SHORT_READ, clock) as sender:
        if answer is None:
            url = f"http://127.0.0.1:{free_port()}/hook"
            return await sender.send(hook(url), message_id="msg_1", body=BODY)
        async with serving(answer) as url:
            return await sender.send(hook(url), message_id="msg_1", body=BODY)


def assert_failed(outcome: Outcome, error: str) -> None:
    assert (outcome.ok, outcome.status, outcome.retry_after) == (False, None, None)
    assert outcome.error is not None, outcome
    assert outcome.response_body == ""
    assert re.fullmatch(error, outcome.error), outcome.error


@pytest.mark.parametrize(("answer", "error"), RECEIVER_FAILURES)
async def test_a_receiver_failure_becomes_an_outcome_naming_it(
    clock: FakeClock, answer: Answer | None, error: str
) -> None:
    assert_failed(await send_to_receiver(answer, clock), error)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (
            "http://127.0.0.1:{port}/hook",
            "target 127.0.0.1 is not allowed: 127.0.0.1 is a loopback address;"
            " set delivery.allow_private_targets or delivery.allowed_networks",
        ),
        ("http://[::1]:{port}/hook", "target ::1 is not allowed: ::1 is a loopback address; .*"),
        (
            "http://169.254.169.254:{port}/latest/meta-data/",
            "target 169.254.169.254 is not allowed: .* is a link-local address; .*",
        ),
        ("ftp://127.0.0.1:{port}/hook", "targetUrl must start with http:// or https://"),
        (
            "http://user:pw@127.0.0.1:{port}/hook",
            "targetUrl must not carry credentials; use auth type basic",
        ),
    ],
)
async def test_a_target_the_guard_refuses_is_never_contacted(
    clock: FakeClock, receiver: Receiver, url: str, error: str
) -> None:
    async with started(DeliveryConfig(), clock) as sender:
        outcome = await sender.send(
            hook(url.format(port=receiver.port)), message_id="msg_1", body=BODY
        )
    assert_failed(outcome, error)
    assert receiver.received == []


async def test_the_guard_checks_what_a_name_resolves_to(
    clock: FakeClock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def to_loopback(_host: str, _port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr(resolver, "resolve", to_loopback)
    url = f"http://hooks.example:{receiver.port}/hook"
    async with started(DeliveryConfig(), clock) as sender:
        refused = await sender.send(hook(url), message_id="msg_1", body=BODY)
    assert_failed(
        refused,
        "target hooks.example resolves to 127.0.0.1, which is not allowed:"
        " 127.0.0.1 is a loopback address; .*",
    )
    loopback_network = (ipaddress.ip_network("127.0.0.0/8"),)
    async with started(DeliveryConfig(allowed_networks=loopback_network), clock) as sender:
        allowed = await sender.send(hook(url), message_id="msg_2", body=BODY)
    assert allowed.ok
    assert [lowered(r.headers)["webhook-id"] for r in receiver.received] == ["msg_2"]


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        pytest.param(
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "cannot connect: hooks.example does not resolve: Name or service not known",
            id="unknown name",
        ),
        pytest.param(
            OSError(24, "Too many open files"),
            "network error: Too many open files",
            id="other OS error",
        ),
    ],
)
async def test_a_lookup_failure_becomes_an_outcome(
    sender: Sender, monkeypatch: pytest.MonkeyPatch, failure: OSError, error: str
) -> None:
    async def failing(_host: str, _port: int) -> list[tuple[int, str]]:
        raise failure

    monkeypatch.setattr(resolver, "resolve", failing)
    outcome = await sender.send(hook("http://hooks.example/hook"), message_id="msg_1", body=BODY)
    assert_failed(outcome, error)


@pytest.mark.parametrize(
    ("message_id", "extra_headers", "error"),
    [
        pytest.param(
            "msg_1\r\nX-Injected: 1",
            {},
            "cannot send: header 'webhook-id' contains a line break or colon",
            id="line break in the id",
        ),
        pytest.param(
            "msg_1",
            {"almhookd-test": "true\nX-Injected: 1"},
            "cannot send: header 'almhookd-test' contains a line break or colon",
            id="line break in an extra header",
        ),
        pytest.param(
            "msg_1",
            {"almhookd-test": "price in €"},
            "cannot send: a header holds characters outside ISO-8859-1",
            id="not ISO-8859-1",
        ),
    ],
)
async def test_a_header_that_cannot_be_sent_is_refused_before_connecting(
    sender: Sender, receiver: Receiver, message_id: str, extra_headers: dict[str, str], error: str
) -> None:
    outcome = await sender.send(
        hook(receiver.url), message_id=message_id, body=BODY, extra_headers=extra_headers
    )
    assert_failed(outcome, error)
    assert receiver.received == []


async def test_send_before_start_or_after_close_raises(
    clock: FakeClock, receiver: Receiver
) -> None:
    sender = Sender(LOOPBACK_ALLOWED, clock=clock)
    with pytest.raises(AlmhookdError, match="the sender is not started"):
        await sender.send(hook(receiver.url), message_id="msg_1", body=BODY)
    await sender.start()
    assert (await sender.send(hook(receiver.url), message_id="msg_2", body=BODY)).ok
    await sender.close()
    with pytest.raises(AlmhookdError, match="the sender is not started"):
        await sender.send(hook(receiver.url), message_id="msg_3", body=BODY)
    assert [lowered(r.headers)["webhook-id"] for r in receiver.received] == ["msg_2"]


# --- reconfiguration ----------------------------------------------------------------


async def test_reconfigure_applies_new_target_rules_to_the_next_request(
    sender: Sender, receiver: Receiver
) -> None:
    webhook = hook(receiver.url)
    assert (await sender.send(webhook, message_id="msg_1", body=BODY)).ok
    # The first request's connection is kept alive: the new rules must close it.
    sender.reconfigure(DeliveryConfig())
    refused = await sender.send(webhook, message_id="msg_2", body=BODY)
    assert_failed(refused, "target 127.0.0.1 is not allowed: .*")
    sender.reconfigure(DeliveryConfig(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),)))
    assert (await sender.send(webhook, message_id="msg_3", body=BODY)).ok
    assert [lowered(r.headers)["webhook-id"] for r in receiver.received] == ["msg_1", "msg_3"]


async def test_reconfigure_applies_new_timeouts_to_the_next_request(
    sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The error text alone would not show which timeouts the request really had.
    handed_to_the_client: list[tuple[float, float]] = []
    post = HttpClient.post

    async def recording_post(self: HttpClient, url: str, **options: Any) -> Response:
        handed_to_the_client.append((options["connect_timeout"], options["read_timeout"]))
        return await post(self, url, **options)

    monkeypatch.setattr(HttpClient, "post", recording_post)
    async with serving(never_answering) as url:
        sender.reconfigure(replace(LOOPBACK_ALLOWED, connect_timeout=3.0, read_timeout=0.1))
        first = await sender.send(hook(url), message_id="msg_1", body=BODY)
        sender.reconfigure(replace(LOOPBACK_ALLOWED, connect_timeout=0.5, read_timeout=0.25))
        second = await sender.send(hook(url), message_id="msg_2", body=BODY)
    assert_failed(first, r"timed out \(connect 3s, read 0\.1s\)")
    assert_failed(second, r"timed out \(connect 0\.5s, read 0\.25s\)")
    assert handed_to_the_client == [(3.0, 0.1), (0.5, 0.25)]
