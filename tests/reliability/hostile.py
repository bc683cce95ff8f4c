"""Receivers that misbehave on purpose, on raw asyncio sockets on 127.0.0.1.

Each answers its first ``bad`` requests with one hostile behaviour and then behaves
(``202``), so a test can check that every event still arrives once it does.
``accepted`` holds the requests the receiver acknowledged with a 2xx the daemon could
read; ``requests`` holds every request that reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from dataclasses import dataclass, field

from tests.support.http_receiver import Received

#: Every behaviour, and whether its answer is a 2xx the daemon can read (acknowledged).
BEHAVIOURS: dict[str, bool] = {
    "error_500": False,  # answers 500, at random
    "hang": False,  # reads the request, never answers
    "reset": False,  # resets the connection (RST) instead of answering
    "endless_body": True,  # 200, then a body that never ends
    "redirect": False,  # 307 to the daemon's own admin port, or to a canary
    "drip": False,  # a 202 sent one byte at a time, slower than the timeouts allow
    "garbage_200": True,  # 200 with a binary garbage body and a bogus content type
    "not_http": False,  # bytes that are no HTTP answer at all
}

OK = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"


@dataclass
class HostileReceiver:
    behaviour: str
    bad: int = 3  #: hostile answers before it behaves (``error_500``: at random among them)
    drip_interval: float = 0.05
    redirect_to: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(9))  # noqa: S311
    requests: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    bytes_sent: int = 0
    open_connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def received(self) -> list[Received]:
        """The acknowledged requests (what :class:`~tests.reliability.harness.Ledger` reads)."""
        return self.accepted

    async def start(self) -> HostileReceiver:
        assert self.behaviour in BEHAVIOURS, self.behaviour
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await asyncio.sleep(0)  # the sockets close on the loop's next turn
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.open_connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                hostile = len(self.requests) <= self.bad
                if self.behaviour == "error_500":
                    hostile = hostile and self.rng.random() < 0.7
                if not hostile:
                    self.accepted.append(request)
                    await self._write(writer, OK)
                    continue
                if BEHAVIOURS[self.behaviour]:
                    self.accepted.append(request)
                await getattr(self, "_" + self.behaviour)(reader, writer)
                return  # a hostile answer ends the connection
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            writer.transport.abort()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        self.bytes_sent += len(data)
        await writer.drain()

    async def _error_500(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._write(writer, b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops")

    async def _hang(self, reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the daemon gives up and closes

    async def _reset(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _endless_body(
        self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._write(
            writer,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
        )
        chunk = b"%x\r\n%s\r\n" % (65536, b"[" * 65536)
        while True:  # until the daemon stops reading and closes
            await self._write(writer, chunk)

    async def _redirect(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = self.redirect_to[len(self.requests) % len(self.redirect_to)]
        await self._write(
            writer,
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\n"
            "Content-Length: 0\r\n\r\n".encode(),
        )

    async def _drip(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in OK:
            await self._write(writer, bytes([byte]))
            await asyncio.sleep(self.drip_interval)

    async def _garbage_200(
        self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        junk = self.rng.randbytes(512)
        await self._write(
            writer,
            b"HTTP/1.1 200 OK\r\nContent-Type: \x01bogus/\xff\r\nContent-Length: 512\r\n\r\n"
            + junk,
        )

    async def _not_http(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._write(writer, b"\x00\xffSMTP ready\r\n\r\n" + self.rng.randbytes(64))


async def _read_request(reader: asyncio.StreamReader) -> Received | None:
    """One HTTP/1.1 request with a Content-Length body, or ``None`` at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Received(headers=headers, body=body, at=time.monotonic())


async def close_quietly(*receivers: HostileReceiver) -> None:
    for receiver in receivers:
        with contextlib.suppress(Exception):
            await receiver.stop()
