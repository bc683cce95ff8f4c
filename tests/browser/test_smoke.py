"""The chain the console's browser tests stand on: Playwright, Debian's Chromium, the real
daemon as a subprocess, before any console page exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page
from pytest_playwright.pytest_playwright import CreateContextCallback

from tests.browser.harness import RunningDaemon
from tests.browser.loopback import LoopbackGuard

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_chromium_reads_healthz_from_the_real_daemon_and_takes_a_screenshot(
    page: Page, daemon: RunningDaemon, loopback_guard: LoopbackGuard, tmp_path: Path
) -> None:
    response = page.goto(daemon.url + "/healthz")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    # Chromium shows a JSON document as text in a <pre>.
    shown = page.locator("pre").first.inner_text()
    assert '"status": "ok"' in shown
    assert json.loads(shown)["status"] == "ok"
    screenshot = tmp_path / "healthz.png"
    page.screenshot(path=screenshot)
    assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
    assert screenshot.stat().st_size > 1000  # a rendered page, not an empty image
    assert loopback_guard.blocked == []


def test_the_daemon_fixture_gives_its_admin_token(
    daemon: RunningDaemon, new_context: CreateContextCallback
) -> None:
    signed_in = new_context(extra_http_headers={"Authorization": f"Bearer {daemon.admin_token}"})
    response = signed_in.new_page().goto(daemon.url + "/v1/status")
    assert response is not None and response.status == 200
    assert response.json()["webhooks"] == []
    anonymous = new_context().new_page().goto(daemon.url + "/v1/status")
    assert anonymous is not None and anonymous.status == 401


def test_each_test_has_a_fresh_context_and_a_daemon_of_its_own(
    page: Page, daemon: RunningDaemon, tmp_path: Path
) -> None:
    assert page.context.cookies() == []
    assert page.context.pages == [page]
    assert daemon.process.config_path.parent == tmp_path
    assert daemon.process.process is not None and daemon.process.process.poll() is None


def test_a_browser_test_is_marked_and_not_an_asyncio_test(
    request: pytest.FixtureRequest, page: Page
) -> None:
    # pytest-asyncio's auto mode leaves a `def` test alone; Playwright's sync API runs its
    # own loop in a greenlet (conftest.py's `playwright` stops it after the browser tests).
    assert request.node.get_closest_marker("browser") is not None
    assert request.node.get_closest_marker("asyncio") is None
    assert page.evaluate("1 + 1") == 2


def test_without_chromium_the_browser_tests_fail_naming_the_apt_command(tmp_path: Path) -> None:
    """A machine without Debian's Chromium: the tests error, with the command that installs
    it; none is skipped. Run in a pytest of its own whose CHROMIUM points nowhere."""
    run_without_chromium = (
        "import pathlib, sys, pytest, tests.browser.harness as harness; "
        "harness.CHROMIUM = pathlib.Path(sys.argv[1]); sys.exit(pytest.main(sys.argv[2:]))"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            run_without_chromium,
            str(tmp_path / "no-chromium-here"),
            *("-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner")),
            "tests/browser/test_loopback_only.py"
            "::test_a_named_host_is_aborted_before_its_name_is_looked_up",
        ],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "apt-get install -y chromium" in result.stdout
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
