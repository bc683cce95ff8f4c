"""The browser reaches 127.0.0.1 and nothing else.

"Another host" here is 127.0.0.2: on this machine's loopback, so that a request the guard
failed to stop would still never leave the machine, yet not 127.0.0.1, so the guard must
stop it. A server listening there counts the connections it accepts: none from the
browser, and the one the test then opens itself shows that it was listening.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Browser, Error, Page, Route

from tests.browser.harness import RunningDaemon
from tests.browser.loopback import LoopbackGuard, stays_on_loopback

BLOCKED = "net::ERR_BLOCKED_BY_CLIENT"


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"reached"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CountingServer(ThreadingHTTPServer):
    """An HTTP server in a thread that counts the connections it accepts."""

    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Answer)
        self.connections = 0
        self.url = f"http://{host}:{self.server_address[1]}"

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True


@pytest.fixture
def other_host() -> Iterator[CountingServer]:
    server = CountingServer("127.0.0.2")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _assert_it_was_listening(server: CountingServer, connections_before: int) -> None:
    with urllib.request.urlopen(server.url + "/", timeout=10) as response:
        assert response.read() == b"reached"
    assert server.connections == connections_before + 1


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8787/healthz", True),
        ("https://127.0.0.1/", True),
        ("http://localhost:8787/", True),
        ("http://LOCALHOST:8787/", True),
        ("ws://127.0.0.1:8787/live", True),
        ("about:blank", True),
        ("data:text/plain,hello", True),
        ("blob:http://127.0.0.1:8787/0b8f7b4e-7d0a-4b7e-9a55-0d6c1b1a2f3e", True),
        ("http://127.0.0.2/", False),
        ("http://[::1]:8787/", False),
        ("http://0.0.0.0:8787/", False),
        ("http://10.0.0.1/", False),
        ("http://example.com/", False),
        ("https://fonts.googleapis.com/css", False),
        ("wss://live.example.com/socket", False),
        ("http://localhost.example.com/", False),
        ("http://127.0.0.1.nip.io/", False),
        ("http://127.0.0.1@example.com/", False),
        ("http://example.com#@127.0.0.1/", False),
        ("ftp://127.0.0.1/", False),
        ("file:///etc/passwd", False),
        ("http://[::1/", False),
    ],
)
def test_only_loopback_urls_are_let_through(url: str, allowed: bool) -> None:
    assert stays_on_loopback(url) is allowed


def test_a_page_on_another_host_is_aborted_inside_the_browser(
    page: Page, loopback_guard: LoopbackGuard, other_host: CountingServer
) -> None:
    with pytest.raises(Error, match=re.escape(BLOCKED)):
        page.goto(other_host.url + "/")
    assert loopback_guard.blocked == [other_host.url + "/"]
    assert other_host.connections == 0
    _assert_it_was_listening(other_host, 0)


def test_a_named_host_is_aborted_before_its_name_is_looked_up(
    page: Page, loopback_guard: LoopbackGuard
) -> None:
    # .invalid never resolves (RFC 6761); a failed lookup would read ERR_NAME_NOT_RESOLVED.
    with pytest.raises(Error, match=re.escape(BLOCKED)):
        page.goto("https://console.example.invalid/")
    assert loopback_guard.blocked == ["https://console.example.invalid/"]


def test_what_a_loopback_page_asks_of_other_hosts_is_aborted(
    page: Page, loopback_guard: LoopbackGuard, other_host: CountingServer
) -> None:
    """An image, a script, a fetch and a WebSocket of a page served from 127.0.0.1."""
    outside = other_host.url
    page.route(
        "http://127.0.0.1:9/console",
        lambda route: route.fulfill(content_type="text/html", body=_page_asking(outside)),
    )
    failed: dict[str, str | None] = {}
    page.on("requestfailed", lambda request: failed.update({request.url: request.failure}))
    page.goto("http://127.0.0.1:9/console")
    assert page.evaluate("window.fetched") == "refused: TypeError"
    page.wait_for_function("document.title.startsWith('socket closed')")
    assert page.title() == "socket closed 1008"
    assert failed.keys() == {
        f"{outside}/pixel.png",
        "http://cdn.example.invalid/console.js",
        f"{outside}/api",
    }
    assert all(reason and reason.startswith(BLOCKED) for reason in failed.values()), failed
    assert sorted(loopback_guard.blocked) == sorted([*failed, f"ws://{outside[7:]}/live"])
    assert other_host.connections == 0
    _assert_it_was_listening(other_host, 0)


def _page_asking(outside: str) -> str:
    return f"""<!doctype html><title>asking</title>
<img src="{outside}/pixel.png">
<script src="http://cdn.example.invalid/console.js"></script>
<script>
window.fetched = fetch("{outside}/api", {{mode: "no-cors"}}).then(
  () => "answered", (error) => "refused: " + error.name);
const socket = new WebSocket("ws://{outside[7:]}/live");
socket.onclose = (event) => {{ document.title = "socket closed " + event.code; }};
</script>"""


def test_a_context_the_test_makes_itself_is_guarded_too(
    browser: Browser, loopback_guard: LoopbackGuard, other_host: CountingServer
) -> None:
    context = browser.new_context()
    try:
        with pytest.raises(Error, match=re.escape(BLOCKED)):
            context.new_page().goto(other_host.url + "/")
    finally:
        context.close()
    assert loopback_guard.blocked == [other_host.url + "/"]
    assert other_host.connections == 0
    with pytest.raises(AssertionError, match="loopback guard"):
        browser.new_page()


def test_a_test_route_that_falls_back_leaves_the_guard_in_force(
    page: Page, loopback_guard: LoopbackGuard, other_host: CountingServer
) -> None:
    seen: list[str] = []

    def look(route: Route) -> None:
        seen.append(route.request.url)
        route.fallback()

    page.route("**/*", look)
    with pytest.raises(Error, match=re.escape(BLOCKED)):
        page.goto(other_host.url + "/")
    assert seen == [other_host.url + "/"]
    assert loopback_guard.blocked == seen
    assert other_host.connections == 0


def test_a_request_let_past_the_guard_still_stays_on_the_machine(
    page: Page, loopback_guard: LoopbackGuard, other_host: CountingServer
) -> None:
    """The net under the guard: a test route that wrongly continues a request sends it to
    the launch's dead-end proxy on 127.0.0.1, which refuses it, and a name is not looked
    up (a lookup of .invalid would fail as ERR_NAME_NOT_RESOLVED)."""
    page.route("**/*", lambda route: route.continue_())
    for url in (other_host.url + "/", "http://console.example.invalid/"):
        with pytest.raises(Error, match=re.escape("net::ERR_PROXY_CONNECTION_FAILED")):
            page.goto(url)
    assert loopback_guard.blocked == []
    assert other_host.connections == 0
    _assert_it_was_listening(other_host, 0)


def test_localhost_reaches_the_daemon_past_the_proxy(page: Page, daemon: RunningDaemon) -> None:
    response = page.goto(daemon.url.replace("127.0.0.1", "localhost") + "/healthz")
    assert response is not None and response.status == 200
