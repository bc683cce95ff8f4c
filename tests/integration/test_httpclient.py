"""The delivery HTTP client against raw servers on 127.0.0.1 that script every byte."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from almhookd.delivery import httpclient
from almhookd.delivery.httpclient import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    Guard,
    HttpClient,
    HttpError,
    parse_target,
)
from almhookd.delivery.resolver import resolve
from almhookd.domain.targets import TargetPolicy, TargetRefused, check_addresses

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]
"""Answers the request numbered n (from 1, over all connections); False ends the connection."""

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

pytestmark = pytest.mark.both_loops


@dataclass
class Server:
    """Reads each request whole, then lets ``answer`` write whatever bytes it likes."""

    answer: Answer
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    _server: asyncio.Server | None = None

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.heads.append(head)
                self.bodies.append(await reader.readexactly(length))
                if not await self.answer(reader, writer, len(self.heads)):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def answering(*answers: bytes, keep_open: bool = True) -> Answer:
    """Writes ``answers[n - 1]`` (the last one again once they run out)."""

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(answers[min(n, len(answers)) - 1])
        await writer.drain()
        return keep_open

    return answer


def allow_all(_host: str, _addresses: Sequence[str]) -> None:
    return None


def make_client(
    *, guard: Guard = allow_all, ssl_context: ssl.SSLContext | None = None
) -> HttpClient:
    return HttpClient(
        resolve=resolve, guard=guard, ssl_context=ssl_context, user_agent="almhookd-test"
    )


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = make_client()
    yield http
    http.close_idle()


async def serve(answer: Answer, **options: object) -> Server:
    return await Server(answer, **options).start()  # type: ignore[arg-type]


async def post(
    client: HttpClient,
    url: str,
    body: bytes = b'{"n": 1}',
    *,
    read_timeout: float = 5.0,
    max_body: int = 65536,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    response = await client.post(
        url,
        headers=headers or {"Content-Type": "application/json"},
        body=body,
        connect_timeout=5.0,
        read_timeout=read_timeout,
        max_body=max_body,
    )
    return response.status, response.body


# --- framing ------------------------------------------------------------------------


def test_the_request_line_and_host_header_are_encoded() -> None:
    target = parse_target("http://[::1]:8080/a b?x=é#fragment")
    assert target.request_line == b"POST /a%20b?x=%C3%A9 HTTP/1.1\r\nHost: [::1]:8080\r\n"
    assert target.origin.host == "::1" and target.origin.literal_family is not None
    idn = parse_target("https://Bücher.example/hook")
    assert idn.request_line.endswith(b"Host: xn--bcher-kva.example\r\n")
    assert idn.origin.port == 443 and idn.origin.tls and idn.origin.literal_family is None


async def test_a_request_carries_its_head_and_body_and_reuses_the_connection(
    client: HttpClient,
) -> None:
    server = await serve(answering(OK))
    for n in range(3):
        assert await post(client, server.url(path="/in?x=1"), b'{"n": %d}' % n) == (200, b"ok")
    assert server.connections == 1 and client.connections_made == 1
    lines = server.heads[0].decode().split("\r\n")
    assert lines[0] == "POST /in?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert "User-Agent: almhookd-test" in lines and "Content-Length: 8" in lines
    assert server.bodies == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    await server.stop()


@pytest.mark.parametrize(
    ("answer", "status", "body", "reused"),
    [
        (
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n",
            202,
            b"abcde",
            True,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, 200, b"ok", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
        (
            b"HTTP/1.0 201 Created\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            201,
            b"ok",
            True,
        ),
    ],
)
async def test_answers_are_framed_by_the_rules_of_http_1_1(
    client: HttpClient, answer: bytes, status: int, body: bytes, reused: bool
) -> None:
    server = await serve(answering(answer, keep_open=reused))
    assert await post(client, server.url()) == (status, body)
    assert await post(client, server.url()) == (status, body)
    assert client.connections_made == (1 if reused else 2)
    await server.stop()


async def test_a_connection_holding_bytes_past_the_answer_is_not_reused(
    client: HttpClient,
) -> None:
    """Bytes after a whole answer (here a second answer nobody asked for) would be read
    as the next request's answer on that connection: it is closed instead."""
    stale = b"HTTP/1.1 500 Stale\r\nContent-Length: 5\r\n\r\nstale"
    fresh = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nfresh"
    server = await serve(answering(OK + stale, fresh))
    assert await post(client, server.url()) == (200, b"ok")
    assert await post(client, server.url()) == (201, b"fresh")
    assert client.connections_made == 2
    await server.stop()


async def test_the_tests_run_on_the_loop_their_id_names(request: pytest.FixtureRequest) -> None:
    loop_module = type(asyncio.get_running_loop()).__module__
    assert loop_module.startswith("uvloop") == ("[uvloop" in request.node.name)


async def test_a_body_without_length_ends_with_the_connection(client: HttpClient) -> None:
    async def close_delimited(
        _reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int
    ) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nfirst part, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"second part")
        await writer.drain()
        writer.close()
        return False

    server = await serve(close_delimited)
    assert await post(client, server.url()) == (200, b"first part, second part")
    assert await post(client, server.url()) == (200, b"first part, second part")
    assert client.connections_made == 2
    await server.stop()


async def test_a_long_body_is_cut_at_the_cap_and_its_connection_dropped(
    client: HttpClient,
) -> None:
    async def endless(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(16_384):  # 64 MiB: far beyond the cap, ends the test if it is ignored
            writer.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
            await writer.drain()
        return False

    server = await serve(endless)
    status, body = await post(client, server.url(), max_body=10_000)
    assert (status, body) == (200, b"x" * 10_000)
    assert await post(client, server.url(), max_body=10) == (200, b"x" * 10)
    assert client.connections_made == 2
    await server.stop()


async def test_a_gzip_body_is_decoded_for_the_excerpt_within_the_limit(
    client: HttpClient,
) -> None:
    packed = gzip.compress(b'{"error": "quota"}' + b" " * 100_000)
    server = await serve(
        answering(
            b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            % len(packed)
            + packed
        )
    )
    response = await client.post(
        server.url(), headers={}, body=b"{}", connect_timeout=5, read_timeout=5, max_body=65536
    )
    assert response.status == 500 and response.body == packed
    assert response.decoded_body(18) == b'{"error": "quota"}'
    assert len(response.decoded_body(4096)) == 4096
    await server.stop()


# --- failures -----------------------------------------------------------------------


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(
    client: HttpClient,
) -> None:
    async def forget_second(
        _reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> bool:
        if n == 2:  # closes the kept-alive connection as the request arrives
            return False
        writer.write(OK)
        await writer.drain()
        return True

    server = await serve(forget_second)
    assert await post(client, server.url()) == (200, b"ok")
    assert await post(client, server.url()) == (200, b"ok")
    assert server.connections == 2 and len(server.heads) == 3
    assert server.bodies[1] == server.bodies[2]
    await server.stop()


async def test_a_fresh_connection_closed_without_an_answer_is_not_retried(
    client: HttpClient,
) -> None:
    server = await serve(answering(b"", keep_open=False))
    with pytest.raises(Disconnected):
        await post(client, server.url())
    assert len(server.heads) == 1
    await server.stop()


#: Answers RFC 9112 calls faulty, and what the client says of each: every one is a
#: failed attempt and its connection is closed, never reused.
BROKEN_ANSWERS = [
    pytest.param(
        b"\x00\xffSMTP ready\r\n\r\n", r"not HTTP/1\.x: '\\x00\xffSMTP ready'", id="garbage"
    ),
    pytest.param(b"<html>HTTP/0.9 has no head</html>", r"not HTTP/1\.x: '<html>", id="HTTP/0.9"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "Invalid character in Content-Length",
        id="Content-Length not a number",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nok",  # str.isdigit("²") is true
        "Invalid character in Content-Length",
        id="Content-Length superscript two",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        "Duplicate Content-Length",
        id="two Content-Lengths",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        "Transfer-Encoding can't be present with Content-Length",
        id="Transfer-Encoding and Content-Length",
    ),
    pytest.param(
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "Transfer-Encoding in an HTTP/1.0 answer",
        id="Transfer-Encoding in HTTP/1.0",
    ),
    *(
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nok\r\n0\r\n\r\n" % size,
            "Invalid character in chunk size",
            id=f"chunk size {size.decode()}",
        )
        for size in (b"0x2", b"0_2", b"-3", b"zz")
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
        "Expected LF after chunk data",
        id="no CRLF after chunk data",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\x01\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        r"invalid Transfer-Encoding 'chunked\\x01'",
        id="Transfer-Encoding with a control character",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\x01\r\n\r\nok",
        "Invalid character in Content-Length",
        id="Content-Length with a control character",
    ),
    pytest.param(
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok", "Invalid response status", id="2000"
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", "Invalid header token", id="not a token"
    ),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "Missing expected CR", id="bare LF"),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        "the receiver switched protocols",
        id="101 unasked",
    ),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + OK,
        "more than 8 interim answers",
        id="too many interim answers",
    ),
]


async def test_odd_header_values_do_not_spoil_an_acknowledgement(client: HttpClient) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: \x01bogus/\xff\r\nContent-Length: 2\r\n\r\nok"
    server = await serve(answering(answer))
    response = await client.post(
        server.url(), headers={}, body=b"{}", connect_timeout=5, read_timeout=5, max_body=10
    )
    assert (response.status, response.body) == (200, b"ok")
    assert response.headers["content-type"] == "\x01bogus/\xff"
    await server.stop()


@pytest.mark.parametrize(("answer", "error"), BROKEN_ANSWERS)
async def test_a_broken_answer_names_what_is_wrong_and_its_connection_is_dropped(
    client: HttpClient, answer: bytes, error: str
) -> None:
    server = await serve(answering(answer, OK))
    with pytest.raises(BadResponse, match="^bad response: .*" + error):
        await post(client, server.url())
    assert await post(client, server.url()) == (200, b"ok")
    assert client.connections_made == 2
    await server.stop()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-", "closed mid-answer", id="mid-head"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "closed mid-answer", id="mid-body"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            "closed mid-answer",
            id="mid-chunk",
        ),
    ],
)
async def test_a_receiver_closing_mid_answer_is_a_bad_response(
    client: HttpClient, answer: bytes, error: str
) -> None:
    server = await serve(answering(answer, keep_open=False))
    with pytest.raises(BadResponse, match=error):
        await post(client, server.url())
    await server.stop()


def endless(start: bytes, repeated: bytes) -> Answer:
    """Writes ``start``, then ``repeated`` until the client hangs up (64 MiB at most)."""

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> bool:
        writer.write(start)
        for _ in range((64 << 20) // len(repeated)):
            writer.write(repeated)
            await writer.drain()
        return False

    return answer


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param(
            endless(b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
            "more than 8 interim answers",
            id="endless interim answers",
        ),
        pytest.param(
            endless(b"HTTP/1.1 200 OK\r\n", b"X-More: %s\r\n" % (b"h" * 100)),
            "more than 65536 bytes of headers",
            id="endless headers",
        ),
        pytest.param(
            endless(b"HTTP/1.1 200 OK\r\nX-Long: ", b"v" * 1000),
            "more than 65536 bytes of headers",
            id="endless header value",
        ),
        pytest.param(
            endless(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n",
                b"X-Trailer: %s\r\n" % (b"t" * 100),
            ),
            "more than 65536 bytes of headers",
            id="endless trailers",
        ),
    ],
)
async def test_an_endless_head_is_cut_at_its_bound_long_before_the_deadline(
    client: HttpClient, answer: Answer, error: str
) -> None:
    """Each would keep the client reading until the deadline: it is a bad response after
    64 KiB (or 8 interim answers), not a timeout."""
    server = await serve(answer)
    with pytest.raises(BadResponse, match=error):
        await post(client, server.url(), read_timeout=60.0)
    await server.stop()


async def test_a_silent_receiver_times_out_after_the_read_timeout(client: HttpClient) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await reader.read()
        return False

    server = await serve(silent)
    with pytest.raises(TimeoutError):
        await post(client, server.url(), read_timeout=0.2)
    await server.stop()


async def test_a_dripping_receiver_times_out_at_connect_plus_read(client: HttpClient) -> None:
    async def drip(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        for _ in range(1500):  # each byte well within the read timeout, for 30 s at least
            writer.write(b"a")  # a header that never ends
            await writer.drain()
            await asyncio.sleep(0.02)
        return False

    server = await serve(drip)
    with pytest.raises(TimeoutError):
        await client.post(
            server.url(), headers={}, body=b"", connect_timeout=0.1, read_timeout=0.3, max_body=10
        )
    await server.stop()


def _most_a_socket_takes_in(key: str) -> int:
    """The kernel's ceiling for a TCP socket's buffer (``tcp_wmem`` or ``tcp_rmem``)."""
    try:
        return int(Path(f"/proc/sys/net/ipv4/{key}").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 32 << 20


async def test_the_read_timeout_starts_once_the_body_is_out(
    client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that does not take the body in for longer than the read timeout is
    not timed out while the body is still going out."""
    read_timeout = 0.5
    # The client's own timeout checks, counted while the body was still going out: the
    # receiver takes nothing in until two have run (two read timeouts have passed).
    checked_while_sending = asyncio.Event()
    checks: list[int] = []
    check_timeout = httpclient._Connection._check_timeout

    def counted(connection: httpclient._Connection) -> None:
        transport = connection._transport
        if transport is not None and transport.get_write_buffer_size():
            checks.append(1)
            if len(checks) >= 2:
                checked_while_sending.set()
        check_timeout(connection)

    monkeypatch.setattr(httpclient._Connection, "_check_timeout", counted)
    # The server's receive buffer is pinned small, so only the client's send buffer
    # (at most tcp_wmem's ceiling, whatever this host sets) can hold the body: a body
    # larger than that is still being written while the server does not read.
    receive_buffer = 64 << 10
    body = b"x" * (_most_a_socket_takes_in("tcp_wmem") + (8 << 20))
    taken_in = asyncio.Event()

    async def stalled_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.wait_for(checked_while_sending.wait(), 30)  # reads nothing till then
        await reader.readexactly(len(body))
        taken_in.set()
        writer.write(OK)
        await writer.drain()
        writer.close()

    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    listening.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(stalled_reader, sock=listening, limit=receive_buffer)
    port = listening.getsockname()[1]
    response = await client.post(
        f"http://127.0.0.1:{port}/",
        headers={},
        body=body,
        connect_timeout=30.0,  # the whole exchange's deadline is connect + read
        read_timeout=read_timeout,
        max_body=10,
    )
    assert (response.status, response.body) == (200, b"ok")
    assert taken_in.is_set()
    server.close()


async def test_connection_refused_names_the_reason(client: HttpClient) -> None:
    server = await serve(answering(OK))
    url = server.url()
    await server.stop()
    await asyncio.sleep(0)
    with pytest.raises(ConnectFailed, match="cannot connect: Connection refused"):
        await post(client, url)


async def test_a_header_that_would_split_the_request_is_refused(client: HttpClient) -> None:
    server = await serve(answering(OK))
    with pytest.raises(HttpError, match="'webhook-id' contains a line break"):
        await post(client, server.url(), headers={"webhook-id": "x\r\nX-Evil: 1"})
    assert server.connections == 0
    await server.stop()


async def test_the_guard_sees_every_resolved_address_before_connecting() -> None:
    server = await serve(answering(OK))
    seen: list[tuple[str, list[str]]] = []

    def guard(host: str, addresses: Sequence[str]) -> None:
        seen.append((host, list(addresses)))
        check_addresses(host, addresses, TargetPolicy())

    client = make_client(guard=guard)
    with pytest.raises(TargetRefused, match=r"localhost resolves to (127\.0\.0\.1|::1)"):
        await post(client, server.url(host="localhost"))
    assert server.connections == 0
    assert seen[0][0] == "localhost" and "127.0.0.1" in seen[0][1]
    client.guard = allow_all
    assert await post(client, server.url(host="localhost")) == (200, b"ok")
    await server.stop()


# --- TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def server_context(authority: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*names).configure_cert(context)
    return context


def client_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


async def test_https_verifies_the_certificate_and_reuses_the_connection(
    authority: trustme.CA,
) -> None:
    server = await serve(answering(OK), ssl_context=server_context(authority, "localhost"))
    client = make_client(ssl_context=client_context(authority))
    assert await post(client, server.url(host="localhost")) == (200, b"ok")
    assert await post(client, server.url(host="localhost")) == (200, b"ok")
    assert client.connections_made == 1 and server.bodies == [b'{"n": 1}'] * 2
    client.close_idle()
    await server.stop()


async def test_https_refuses_a_certificate_for_another_name(authority: trustme.CA) -> None:
    server = await serve(answering(OK), ssl_context=server_context(authority, "example.org"))
    client = make_client(ssl_context=client_context(authority))
    with pytest.raises(ConnectFailed, match="cannot connect: TLS: CERTIFICATE_VERIFY_FAILED"):
        await post(client, server.url(host="localhost"))
    assert server.bodies == []
    await server.stop()


async def test_https_refuses_an_unknown_authority(authority: trustme.CA) -> None:
    server = await serve(answering(OK), ssl_context=server_context(authority, "localhost"))
    client = HttpClient(
        resolve=resolve, guard=allow_all, user_agent="almhookd-test"
    )  # the system's CAs
    with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
        await post(client, server.url(host="localhost"))
    await server.stop()
