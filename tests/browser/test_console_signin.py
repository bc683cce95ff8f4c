"""The console in Chromium: signing in and out, the webhooks list, the status page.

The real daemon as a subprocess; webhooks are made through its API, what the admin
sees is read from the pages."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.harness import RunningDaemon
from tests.browser.loopback import LoopbackGuard


def api(daemon: RunningDaemon, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        daemon.url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"Bearer {daemon.admin_token}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


def sign_in(page: Page, daemon: RunningDaemon, token: str | None = None) -> None:
    page.goto(daemon.url + "/")
    expect(page).to_have_url(daemon.url + "/signin?next=%2F")
    page.get_by_label("Admin token").fill(token or daemon.admin_token)
    page.get_by_role("button", name="Sign in").click()


def test_an_admin_signs_in_sees_the_webhooks_and_signs_out(
    page: Page, daemon: RunningDaemon, loopback_guard: LoopbackGuard
) -> None:
    api(
        daemon,
        "POST",
        "/v1/webhooks",
        {
            "name": "LMS sync",
            "targetUrl": "http://127.0.0.1:9/hook",
            "events": ["COURSE_ENROLLMENT", "COURSE_COMPLETED"],
        },
    )
    sign_in(page, daemon)
    expect(page).to_have_url(daemon.url + "/")
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    row = page.get_by_role("row", name="LMS sync")
    expect(row).to_contain_text("http://127.0.0.1:9/hook")
    expect(row).to_contain_text("active")
    row.get_by_text("2 events").click()  # the names open under their count
    expect(row.get_by_text("COURSE_COMPLETED")).to_be_visible()

    page.get_by_role("link", name="Status").click()
    expect(page.get_by_role("heading", name="Event catalogue")).to_be_visible()
    expect(page.get_by_role("row", name="LEARNER_PROGRESS")).to_contain_text("batch")
    page.get_by_role("button", name="Flush now").click()
    expect(page.get_by_role("status")).to_contain_text("Flushed: 0 held deliveries released")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(daemon.url + "/signin")
    page.goto(daemon.url + "/status")
    expect(page).to_have_url(daemon.url + "/signin?next=%2Fstatus")
    assert loopback_guard.blocked == []


def test_a_wrong_token_is_refused_with_an_alert(page: Page, daemon: RunningDaemon) -> None:
    sign_in(page, daemon, token="not-the-admin-token")
    expect(page.get_by_role("alert")).to_have_text("That is not the admin token.")
    expect(page.get_by_label("Admin token")).to_be_visible()


def test_the_pages_load_nothing_the_policy_blocks(
    page: Page, daemon: RunningDaemon, loopback_guard: LoopbackGuard
) -> None:
    """The Content-Security-Policy is strict; a page that broke it would log a violation
    in the browser's console."""
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text)
            if "Content Security Policy" in message.text or "Refused" in message.text
            else None
        ),
    )
    sign_in(page, daemon)
    page.goto(daemon.url + "/status")
    page.goto(daemon.url + "/")
    assert violations == []
    # The stylesheet applied: the page is not unstyled.
    assert (
        page.evaluate("getComputedStyle(document.querySelector('header.top')).borderBottomStyle")
        == "solid"
    )
