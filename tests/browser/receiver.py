"""A webhook receiver for the browser tests: an HTTP server on 127.0.0.1 in a thread.

Browser tests are plain ``def`` tests (Playwright's sync API holds the thread's event
loop), so the aiohttp receiver of ``tests/support/http_receiver.py`` cannot serve them:
this one is the standard library's ``ThreadingHTTPServer`` on a thread of its own. It
answers every POST with :attr:`ThreadedReceiver.status` and :attr:`ThreadedReceiver.answer`
and records the request; :meth:`ThreadedReceiver.wait_for` waits, bounded, for a count of
them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: How long a test waits for the daemon to deliver, at most.
DELIVERY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Request:
    """One request as the receiver read it: the path, the headers, the raw body."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    server: ThreadedReceiver

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.record(Request(self.path, dict(self.headers.items()), body))
        answer = self.server.answer.encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ThreadedReceiver(ThreadingHTTPServer):
    """Records every POST it is sent; answers each with ``status`` and ``answer``."""

    daemon_threads = True

    def __init__(self, status: int = 202, answer: str = "accepted by the test receiver") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = status
        self.answer = answer
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"
        self._received: list[Request] = []
        self._arrived = threading.Condition()

    def record(self, request: Request) -> None:
        with self._arrived:
            self._received.append(request)
            self._arrived.notify_all()

    @property
    def received(self) -> list[Request]:
        with self._arrived:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = DELIVERY_TIMEOUT) -> list[Request]:
        """The requests once there are at least ``count``; AssertionError after ``timeout``."""
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self._received) >= count, timeout)
            assert arrived, f"{len(self._received)} requests in {timeout} s, not {count}"
            return list(self._received)


@contextmanager
def running_receiver(
    status: int = 202, answer: str = "accepted by the test receiver"
) -> Iterator[ThreadedReceiver]:
    """A :class:`ThreadedReceiver` serving in a thread until the block ends."""
    server = ThreadedReceiver(status, answer)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
