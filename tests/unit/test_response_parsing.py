"""Property tests of how the delivery client reads an answer, fed byte by byte.

A unit test of ``httpclient._Connection`` on a recording transport: the answer's bytes
arrive in pieces chosen by hypothesis, as TCP may cut them, with no socket in between
(the same answers over real sockets are ``test_httpclient.py``'s).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from almhookd.delivery.httpclient import HttpError, Response, _Connection
from tests.support.running import until

MAX_BODY = 1000


@dataclass
class RecordingTransport:
    """What ``_Connection`` needs of a transport: it only records."""

    written: list[bytes] = field(default_factory=list)
    aborted: bool = False

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.written.extend(parts)

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.aborted


@dataclass(frozen=True, kw_only=True)
class Answer:
    raw: bytes
    status: int
    headers: dict[str, str]
    body: bytes
    close_delimited: bool


tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda name: name.lower() not in ("content-length", "transfer-encoding", "connection")
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    status = draw(st.sampled_from([200, 201, 202, 299, 301, 400, 404, 429, 500, 503]))
    body = draw(st.binary(max_size=3000))
    headers = draw(st.dictionaries(tokens, header_values, max_size=5))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    interim = draw(st.lists(st.sampled_from([100, 103]), max_size=3))
    raw = b"".join(b"HTTP/1.1 %d Interim\r\n\r\n" % code for code in interim)
    head = b"HTTP/1.1 %d Whatever\r\n" % status
    head += b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())
    if framing == "length":
        raw += head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
        trailer = draw(st.sampled_from([b"", b"X-Checksum: 1\r\n"]))
        raw += head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n" + trailer + b"\r\n"
    else:
        raw += head + b"\r\n" + body
    return Answer(
        raw=raw,
        status=status,
        headers={name.lower(): value.strip() for name, value in headers.items()},
        body=body[:MAX_BODY],
        close_delimited=framing == "close",
    )


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({point % (len(data) + 1) for point in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)], strict=True) if b > a]


async def read(pieces: list[bytes], *, then_close: bool) -> Response | BaseException:
    """Feeds ``pieces`` to a fresh connection in the middle of an exchange; what it gives."""
    loop = asyncio.get_running_loop()
    connection = _Connection(loop)
    transport = RecordingTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    exchange = asyncio.ensure_future(
        connection.exchange(
            b"POST / HTTP/1.1\r\n\r\n",
            b"",
            max_body=MAX_BODY,
            read_timeout=60.0,
            deadline=loop.time() + 60.0,
        )
    )
    await until(lambda: bool(transport.written), what="the request written")
    # The exchange now waits on this future; the parser settles it from data_received,
    # so after each piece it tells at once whether the answer is complete.
    answer = connection._waiter
    assert answer is not None
    for piece in pieces:
        connection.data_received(piece)
        if answer.done():
            break
    if then_close and not answer.done():
        connection.eof_received()
        connection.connection_lost(None)
    assert answer.done(), "the answer is still being read after the connection closed"
    await asyncio.wait({exchange})
    return exchange.exception() or exchange.result()


@settings(max_examples=300, deadline=None)
@given(answer=answers(), points=st.lists(st.integers(min_value=0), max_size=12))
async def test_a_valid_answer_cut_anywhere_reads_the_same(
    answer: Answer, points: list[int]
) -> None:
    result = await read(cut(answer.raw, points), then_close=answer.close_delimited)
    assert isinstance(result, Response), result
    assert result.status == answer.status
    assert result.body == answer.body
    for name, value in answer.headers.items():
        assert result.headers[name] == value


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from([b"", b"HTTP/1.1 ", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 204 No\r\n"]),
    noise=st.binary(max_size=400),
    points=st.lists(st.integers(min_value=0), max_size=12),
)
async def test_random_bytes_end_in_an_answer_or_the_clients_own_error(
    start: bytes, noise: bytes, points: list[int]
) -> None:
    """Whatever arrives, the exchange ends once the connection closes: with an answer
    or an ``HttpError``, never another exception and never still waiting."""
    result = await read(cut(start + noise, points), then_close=True)
    assert isinstance(result, Response | HttpError), repr(result)


STATUS_LINES = [
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\n",
    b"HTTP/1.1 2000 OK\r\n",
    b"HTTP/1.1 200 OK\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
]
HEADER_NAMES = [b"Content-Length", b"Transfer-Encoding", b"Connection", b"X-Name", b"Bad Name"]
#: Values right and wrong; a few that ``str.isdigit()`` accepts and ``int()`` refuses.
HEADER_VALUES = [
    b"2",
    b"10",
    b"0",
    b"chunked",
    b"close",
    b"gzip, chunked",
    b"\xb2",
    b"\xd9\xa3",
    b"2, 3",
    b"-1",
    b" 2 ",
    b"\x01",
    b"",
]
BODIES = [
    b"ok",
    b"2\r\nok\r\n0\r\n\r\n",
    b"0x2\r\nok\r\n0\r\n\r\n",
    b"0_2\r\nok\r\n",
    b"-3\r\nabc\r\n",
    b"2\r\nokXX0\r\n\r\n",
    b"0\r\nX-Trailer: 1\r\n\r\n",
    b"",
]


@st.composite
def tricky_answers(draw: st.DrawFn) -> bytes:
    """Answers put together from pieces, right and wrong, that random bytes rarely hit."""
    lines = draw(
        st.lists(
            st.tuples(st.sampled_from(HEADER_NAMES), st.sampled_from(HEADER_VALUES)), max_size=4
        )
    )
    head = draw(st.sampled_from(STATUS_LINES)) + b"".join(
        name + b": " + value + b"\r\n" for name, value in lines
    )
    return head + b"\r\n" + draw(st.sampled_from(BODIES))


@settings(max_examples=500, deadline=None)
@given(answer=tricky_answers(), points=st.lists(st.integers(min_value=0), max_size=8))
@example(answer=b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nok", points=[])
@example(answer=b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa3\r\n\r\nok", points=[20])
async def test_answers_built_from_tricky_pieces_end_in_an_answer_or_the_clients_own_error(
    answer: bytes, points: list[int]
) -> None:
    result = await read(cut(answer, points), then_close=True)
    assert isinstance(result, Response | HttpError), repr(result)
