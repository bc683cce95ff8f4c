"""The browser tests' network rule: the browser reaches 127.0.0.1 and nothing else.

:class:`LoopbackGuard` is installed on every browser context (``conftest.py``): a request
or WebSocket to any other host is stopped inside the browser, before it is sent, and its
URL recorded in :attr:`LoopbackGuard.blocked`. What Chromium opens without a request the
guard sees (a preconnect to the host of a page it starts navigating to) meets the net
under the guard: the launch's proxy, a loopback port that refuses every connection.

A test's own ``page.route`` or ``context.route`` handler runs before the guard's (the last
registered runs first, and a page's before its context's): it must end in
``route.fallback()``, ``route.fulfill()`` or ``route.abort()``, never
``route.continue_()``, which would send the request past the guard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, Route, WebSocketRoute

#: The only hosts a browser test may reach: the daemon and the tests' own servers.
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost"})
#: Schemes whose requests go over the network, so their host is checked.
NETWORK_SCHEMES: Final = frozenset({"http", "https", "ws", "wss"})
#: Schemes that never leave the browser.
LOCAL_SCHEMES: Final = frozenset({"about", "data", "blob"})
#: What a page sees when the guard stops a WebSocket (1008: policy violation).
WEBSOCKET_CLOSE_CODE: Final = 1008
ABORT_REASON: Final = "blockedbyclient"  # the page sees net::ERR_BLOCKED_BY_CLIENT


def stays_on_loopback(url: str) -> bool:
    """Whether a request to ``url`` stays on this machine's 127.0.0.1."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # a malformed authority
        return False
    scheme = parts.scheme.lower()
    return scheme in LOCAL_SCHEMES or (scheme in NETWORK_SCHEMES and host in LOOPBACK_HOSTS)


@dataclass
class LoopbackGuard:
    """Aborts every request and WebSocket of a context that would leave 127.0.0.1."""

    #: the URLs stopped since the current test began (the fixture clears it)
    blocked: list[str] = field(default_factory=list)

    def install(self, context: BrowserContext) -> None:
        context.route(_every_url, self._route)
        context.route_web_socket(re.compile(".*"), self._web_socket)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if stays_on_loopback(url):
            route.fallback()
        else:
            self.blocked.append(url)
            route.abort(ABORT_REASON)

    def _web_socket(self, socket: WebSocketRoute) -> None:
        if stays_on_loopback(socket.url):
            socket.connect_to_server()
        else:
            self.blocked.append(socket.url)
            socket.close(code=WEBSOCKET_CLOSE_CODE, reason="browser tests reach 127.0.0.1 only")


def _every_url(url: str) -> bool:
    return True
