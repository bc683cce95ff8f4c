"""Browser tests: Debian's Chromium driven by Playwright (pytest-playwright's sync fixtures)
against the real daemon as a subprocess, reaching nothing but 127.0.0.1.

- One browser for all of them (``browser``), launched from ``/usr/bin/chromium`` through
  ``executable_path`` with ``CHROMIUM_FLAGS``; a fresh context and page per test
  (pytest-playwright's ``context``, ``page``, or ``new_context(...)``). Playwright and
  the browser are package-scoped, not session-scoped as in pytest-playwright: see
  ``playwright`` below.
- Every context carries a :class:`~tests.browser.loopback.LoopbackGuard`: a request to
  any host but 127.0.0.1/localhost is aborted inside the browser. Under it, the browser
  is launched with a proxy that refuses every connection, for all hosts but those two.
- Every test here is marked ``browser`` (``pytest -m browser`` runs them alone) and is a
  plain ``def`` using no async fixture: Playwright's sync API and pytest-asyncio's loops
  cannot share the thread, so such a test stops the run at collection.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    BrowserType,
    Page,
    Playwright,
    sync_playwright,
)

from tests.browser.harness import CHROMIUM, CHROMIUM_FLAGS, RunningDaemon, chromium_problem
from tests.browser.loopback import LOOPBACK_HOSTS, LoopbackGuard
from tests.support.daemon_process import DaemonProcess, write_config
from tests.support.tokens import ADMIN_TOKEN

HERE: Final = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``browser``; refuse one that needs an event loop."""
    for item in items:
        if HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.browser)
        problem = _needs_an_event_loop(item)
        if problem:
            raise pytest.UsageError(
                f"{item.nodeid}: {problem}, but Playwright's sync API holds the thread's "
                "event loop while it runs: browser tests are plain `def` tests, and a server "
                "they need runs in a thread (see tests/browser/test_loopback_only.py)"
            )


def _needs_an_event_loop(item: pytest.Item) -> str | None:
    if inspect.iscoroutinefunction(getattr(item, "obj", None)) or item.get_closest_marker(
        "asyncio"
    ):
        return "an `async def` test"
    fixture_info = getattr(item, "_fixtureinfo", None)
    for name, definitions in getattr(fixture_info, "name2fixturedefs", {}).items():
        function = definitions[-1].func
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            return f"the async fixture `{name}`"
    return None


@pytest.fixture(scope="package")
def browser_type_launch_args(
    browser_type_launch_args: dict[str, Any], browser_name: str, dead_end_port: int
) -> dict[str, Any]:
    """pytest-playwright's launch options, pointed at Debian's Chromium.

    A machine without it fails every browser test with the command that installs it:
    a skip would hide that the browser tests did not run.

    Everything but 127.0.0.1 and localhost goes through a "proxy" at a loopback port that
    refuses every connection: the net under the loopback guard, for what Chromium opens
    without a request the guard could see (it preconnects to a page's host as it starts
    navigating there, even when the guard then aborts the navigation).
    """
    if browser_name != "chromium":
        pytest.fail(
            f"the browser tests run in Debian's Chromium only, not {browser_name}", pytrace=False
        )
    problem = chromium_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "headless": True,
        "args": list(CHROMIUM_FLAGS),
        "proxy": {
            "server": f"http://127.0.0.1:{dead_end_port}",
            # <-loopback>: 127.0.0.2 and [::1] go to the proxy too; then the two that
            # don't (Chromium reads the list from the end: this order, not the reverse)
            "bypass": ",".join(["<-loopback>", *sorted(LOOPBACK_HOSTS)]),
        },
    }


@pytest.fixture(scope="package")
def dead_end_port() -> Iterator[int]:
    """A loopback port bound here and never listened on: a connection to it is refused at
    once, and no other program can take the port while the browser tests run."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield int(reserved.getsockname()[1])


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """pytest-playwright's ``playwright``, stopped once the browser tests are done rather
    than at the end of the session: after every call, Playwright's sync API marks its own
    event loop as the thread's running one (``wait_for_future`` in
    ``playwright/_impl/_greenlets.py``) until it is stopped, and until then no test after
    the browser tests could run a loop of pytest-asyncio's."""
    started = sync_playwright().start()
    yield started
    started.stop()
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()  # the thread is free for pytest-asyncio's loops again


@pytest.fixture(scope="package")
def browser_type(playwright: Playwright) -> BrowserType:
    return playwright.chromium


@pytest.fixture(scope="package")
def launch_browser(
    browser_type: BrowserType,
    browser_type_launch_args: dict[str, Any],
    package_loopback_guard: LoopbackGuard,
) -> Callable[..., Browser]:
    """Launches Debian's Chromium; every context made in it, by the ``context``, ``page``
    and ``new_context`` fixtures or by a test's own ``browser.new_context()``, gets the
    loopback guard. ``browser.new_page()`` (a context of its own, out of the guard's
    sight) is refused."""

    def launch(**kwargs: Any) -> Browser:
        launched = browser_type.launch(**{**browser_type_launch_args, **kwargs})
        unguarded_new_context = launched.new_context

        def guarded_new_context(*args: Any, **kwargs: Any) -> BrowserContext:
            context = unguarded_new_context(*args, **kwargs)
            package_loopback_guard.install(context)
            return context

        def refused_new_page(*args: Any, **kwargs: Any) -> Page:
            raise AssertionError(
                "browser.new_page() makes a context the loopback guard cannot see: use the "
                "page fixture, or new_context() and then context.new_page()"
            )

        launched.new_context = guarded_new_context  # type: ignore[method-assign]
        launched.new_page = refused_new_page  # type: ignore[method-assign]
        return launched

    return launch


@pytest.fixture(scope="package")
def browser(launch_browser: Callable[[], Browser]) -> Iterator[Browser]:
    """One Chromium for all the browser tests."""
    launched = launch_browser()
    yield launched
    launched.close()


@pytest.fixture(scope="package")
def browser_context_args(device: str | None, playwright: Playwright) -> dict[str, Any]:
    """What every context is made with: a service worker's requests would bypass
    ``context.route`` and so the guard."""
    return {**(playwright.devices[device] if device else {}), "service_workers": "block"}


@pytest.fixture(scope="package")
def package_loopback_guard() -> LoopbackGuard:
    return LoopbackGuard()


@pytest.fixture(autouse=True)
def loopback_guard(package_loopback_guard: LoopbackGuard) -> LoopbackGuard:
    """The guard of the test's contexts; its ``blocked`` lists what it stopped in this
    test (autouse: cleared before the test's first context)."""
    package_loopback_guard.blocked.clear()
    return package_loopback_guard


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    """The real daemon as a subprocess on a free loopback port, with an empty database of
    its own, allowed to deliver to receivers on 127.0.0.0/8 (the tests' own); stopped
    with SIGTERM after the test, which fails unless it exits 0."""
    process = DaemonProcess(
        write_config(tmp_path, extra='[delivery]\nallowed_networks = ["127.0.0.0/8"]\n')
    )
    try:
        process.start()
    except BaseException:
        process.stop()  # one that came up too slowly is not left running
        raise
    yield RunningDaemon(url=process.url, admin_token=ADMIN_TOKEN, process=process)
    code = process.stop()
    assert code == 0, f"the daemon exited with {code}:\n{process.log()}"
