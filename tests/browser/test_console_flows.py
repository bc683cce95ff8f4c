"""The console's flows in Chromium against the real daemon, as issue 20 lists them: sign
in; add a webhook through the form; Test webhook on the unsaved form; Download signature
and verify a real delivery with it; edit, archive and re-activate; the sixth webhook
refused; delete after confirming; a validation error next to its field; sign out; the
form with the keyboard alone; and the README's screenshots.

Receivers are :class:`~tests.browser.receiver.ThreadedReceiver` servers on 127.0.0.1 in
a thread. Nothing here sleeps: a test waits for a request on the receiver's condition,
and for the daemon's state on a page with ``expect`` (:func:`reload_until`, as the pages
do not refresh themselves).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.sync_api import Locator, Page, ViewportSize, expect

from tests.browser.harness import RunningDaemon
from tests.browser.loopback import LoopbackGuard
from tests.browser.receiver import ThreadedReceiver, running_receiver
from tests.browser.test_console_signin import api, sign_in
from tests.support import samples
from tests.support.tokens import INGEST_TOKEN
from tests.support.verifier import verify

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
DOCS: Final = Path(__file__).parents[2] / "docs"
#: ``ALMHOOKD_UPDATE_SCREENSHOTS=1`` writes the README's screenshots to ``docs/``; any
#: other run writes them to the test's tmp_path, so ``make test`` leaves the tree clean.
UPDATE_SCREENSHOTS: Final = os.environ.get("ALMHOOKD_UPDATE_SCREENSHOTS") == "1"
#: Bounds of the loops that wait for something: reloads of a page, Tab presses.
RELOADS: Final = 60
TABS: Final = 80


# --- helpers ---------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    with running_receiver() as server:
        yield server


def ingest(daemon: RunningDaemon, *events: dict[str, Any]) -> None:
    """Posts ``events`` to ``/v1/events`` with the ingest token; the daemon takes them."""
    request = urllib.request.Request(
        daemon.url + "/v1/events",
        method="POST",
        data=json.dumps({"events": list(events)}).encode(),
        headers={"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def create(daemon: RunningDaemon, name: str, url: str, **fields: Any) -> dict[str, Any]:
    """A webhook made through the admin API (signature auth unless ``auth`` says)."""
    body = {"name": name, "targetUrl": url, "events": ["COURSE_ENROLLMENT"], **fields}
    webhook: dict[str, Any] = api(daemon, "POST", "/v1/webhooks", body)
    return webhook


def webhooks(daemon: RunningDaemon) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = api(daemon, "GET", "/v1/webhooks")["webhooks"]
    return listed


def reload_until(page: Page, locator: Locator, text: str | re.Pattern[str]) -> None:
    """Reloads ``page`` until ``locator`` contains ``text``: the console's pages show the
    daemon's state when they are loaded. Each round waits with ``expect``; bounded."""
    for _ in range(RELOADS):
        try:
            expect(locator).to_contain_text(text, timeout=500)
        except AssertionError:
            page.reload()
        else:
            return
    expect(locator).to_contain_text(text)  # fails with Playwright's own message


def event_box(page: Page, event_name: str) -> Locator:
    """The checkbox of one trigger event (its label starts with the name, then a space,
    so COURSE_ENROLLMENT is not COURSE_ENROLLMENT_BATCH)."""
    return page.get_by_role("checkbox", name=re.compile(rf"^{event_name} "))


def fact(scope: Page | Locator, term: str) -> Locator:
    """The ``<dd>`` of a ``<dt>`` in a list of facts."""
    return scope.locator("dt", has_text=re.compile(rf"^{re.escape(term)}$")).locator(
        "xpath=following-sibling::dd[1]"
    )


def webhook_id_of(page: Page, daemon: RunningDaemon) -> str:
    """The id in the URL of a webhook page."""
    match = re.fullmatch(re.escape(daemon.url) + r"/webhooks/([^/?#]+)(\?.*)?", page.url)
    assert match, page.url
    return match.group(1)


def tab_to(page: Page, target: Locator) -> None:
    """Presses Tab until ``target`` has the focus; fails after :data:`TABS` presses."""
    for _ in range(TABS):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"{target} was not reached with {TABS} presses of Tab")


# --- the flows -------------------------------------------------------------------------


def test_add_a_signature_webhook_through_the_form_see_it_listed_and_sign_out(
    page: Page, daemon: RunningDaemon, loopback_guard: LoopbackGuard
) -> None:
    sign_in(page, daemon)
    expect(page.get_by_text("No webhook yet.")).to_be_visible()
    page.get_by_role("link", name="Add webhook").click()
    expect(page).to_have_url(daemon.url + "/webhooks/new")
    expect(page.get_by_role("heading", name="Add webhook")).to_be_visible()

    page.get_by_label("Name (required)", exact=True).fill("LMS enrolments")
    page.get_by_label("Description", exact=True).fill("Enrolments and completions")
    page.get_by_label("Target URL (required)", exact=True).fill("http://127.0.0.1:9/lms")
    page.get_by_role("radio", name=re.compile("^Signature")).check()
    event_box(page, "COURSE_ENROLLMENT").check()
    event_box(page, "COURSE_COMPLETED").check()
    page.get_by_label("Contact e-mail").fill("lms-team@example.org")
    page.get_by_role("button", name="Save").click()

    # Its page: the settings as saved.
    expect(page.get_by_role("heading", level=1)).to_have_text("LMS enrolments")
    webhook_id = webhook_id_of(page, daemon)
    expect(page.locator(".webhook-heading .state")).to_have_text("active")
    expect(fact(page, "Description")).to_have_text("Enrolments and completions")
    expect(fact(page, "Target URL")).to_have_text("http://127.0.0.1:9/lms")
    expect(fact(page, "Authentication")).to_contain_text("Signature")
    expect(fact(page, "Trigger events")).to_contain_text("COURSE_ENROLLMENT")
    expect(fact(page, "Trigger events")).to_contain_text("COURSE_COMPLETED")
    expect(fact(page, "Contact e-mail")).to_have_text("lms-team@example.org")
    expect(page.get_by_role("link", name="Download signature")).to_be_visible()

    # The list.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    expect(page).to_have_url(daemon.url + "/")
    expect(page.get_by_text("1 of 5")).to_be_visible()
    row = page.get_by_role("row", name="LMS enrolments")
    expect(row).to_contain_text("http://127.0.0.1:9/lms")
    expect(row.locator(".state")).to_have_text("active")
    row.get_by_text("2 events").click()
    expect(row.get_by_text("COURSE_ENROLLMENT", exact=True)).to_be_visible()
    expect(row.get_by_text("COURSE_COMPLETED", exact=True)).to_be_visible()
    row.get_by_role("link", name="LMS enrolments").click()
    expect(page).to_have_url(daemon.url + f"/webhooks/{webhook_id}")

    # What the API holds is what the form said.
    [saved] = webhooks(daemon)
    assert saved["id"] == webhook_id
    assert saved["auth"] == {"type": "signature"}
    assert saved["events"] == ["COURSE_COMPLETED", "COURSE_ENROLLMENT"]
    assert saved["active"] is True

    # Sign out: the pages ask for the token again.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(daemon.url + "/signin")
    expect(page.get_by_label("Admin token")).to_be_visible()
    page.goto(daemon.url + f"/webhooks/{webhook_id}")
    expect(page).to_have_url(re.compile(re.escape(daemon.url + "/signin?next=")))
    assert loopback_guard.blocked == []


def test_test_webhook_on_the_unsaved_form_shows_the_answer_and_saves_nothing(
    page: Page, daemon: RunningDaemon, receiver: ThreadedReceiver
) -> None:
    receiver.status = 200
    receiver.answer = "thanks from the local receiver"
    sign_in(page, daemon)
    page.get_by_role("link", name="Add webhook").click()
    page.get_by_label("Name (required)", exact=True).fill("Draft only")
    page.get_by_label("Target URL (required)", exact=True).fill(receiver.url)
    page.get_by_role("radio", name=re.compile("^Signature")).check()
    event_box(page, "COURSE_ENROLLMENT").check()
    page.get_by_role("button", name="Test webhook").click()

    result = page.get_by_role("status").filter(has_text="Test webhook")
    expect(result.get_by_role("heading", level=2)).to_have_text("Test webhook: ok")
    expect(fact(result, "HTTP status")).to_have_text("200")
    expect(fact(result, "Duration")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(result.locator("pre.answer")).to_have_text("thanks from the local receiver")
    expect(result).to_contain_text("Nothing was saved.")

    # The receiver was sent one signed request, signed with the throw-away secret shown.
    [sent] = receiver.wait_for(1)
    assert sent.path == "/hook"
    assert sent.payload["events"], sent.payload
    result.get_by_text("The throw-away secret").click()
    secret = result.locator("code.secret").inner_text()
    assert verify(secret, sent.headers, sent.body)

    # The form still holds what was typed; nothing exists.
    expect(page).to_have_url(daemon.url + "/webhooks/new")
    expect(page.get_by_label("Name (required)", exact=True)).to_have_value("Draft only")
    expect(page.get_by_label("Target URL (required)", exact=True)).to_have_value(receiver.url)
    expect(event_box(page, "COURSE_ENROLLMENT")).to_be_checked()
    assert webhooks(daemon) == []

    # A receiver that fails: the page says so, with its status.
    receiver.status = 503
    receiver.answer = "down for maintenance"
    page.get_by_role("button", name="Test webhook").click()
    expect(result.get_by_role("heading", level=2)).to_have_text("Test webhook: failed")
    expect(fact(result, "HTTP status")).to_have_text("503")
    expect(result.locator("pre.answer")).to_have_text("down for maintenance")
    assert len(receiver.wait_for(2)) == 2
    assert webhooks(daemon) == []
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(daemon.url + "/")
    expect(page.get_by_text("No webhook yet.")).to_be_visible()


def test_download_signature_then_verify_a_real_delivery_with_it(
    page: Page, daemon: RunningDaemon, receiver: ThreadedReceiver
) -> None:
    webhook = create(daemon, "Signed", receiver.url, auth={"type": "signature"})
    sign_in(page, daemon)
    page.get_by_role("link", name="Signed").click()
    expect(page).to_have_url(daemon.url + f"/webhooks/{webhook['id']}")
    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download signature").click()
    download = downloading.value
    assert download.suggested_filename == f"{webhook['id']}-secret.json"
    document = json.loads(Path(download.path()).read_text())
    assert document["webhookId"] == webhook["id"]
    assert document["secret"].startswith("whsec_")
    assert document["headers"]["signature"] == "webhook-signature"

    ingest(daemon, samples.event("COURSE_ENROLLMENT", eventId="console-flow-1"))
    [delivered] = receiver.wait_for(1)
    assert [e["eventId"] for e in delivered.payload["events"]] == ["console-flow-1"]
    assert "v1," in delivered.headers["webhook-signature"]
    assert verify(document["secret"], delivered.headers, delivered.body)
    other = "whsec_" + "A" * 43 + "="
    assert not verify(other, delivered.headers, delivered.body)

    # The page shows the attempt once the daemon has recorded it.
    attempts = page.get_by_role("table").filter(has_text="Duration")
    reload_until(page, attempts, "202")
    expect(fact(page, "Last success")).to_contain_text("ago")


def test_edit_archive_and_reactivate(page: Page, daemon: RunningDaemon) -> None:
    webhook = create(daemon, "HR feed", "http://127.0.0.1:9/hr", description="First")
    sign_in(page, daemon)
    page.get_by_role("link", name="HR feed").click()
    state = page.locator(".webhook-heading .state")
    expect(state).to_have_text("active")

    # Edit: the form holds the saved values; the new description is shown.
    page.get_by_role("link", name="Edit").click()
    expect(page).to_have_url(daemon.url + f"/webhooks/{webhook['id']}/edit")
    expect(page.get_by_role("heading", name="Edit webhook")).to_be_visible()
    description = page.get_by_label("Description", exact=True)
    expect(description).to_have_value("First")
    expect(event_box(page, "COURSE_ENROLLMENT")).to_be_checked()
    description.fill("People changes for the HR system")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(daemon.url + f"/webhooks/{webhook['id']}")
    expect(fact(page, "Description")).to_have_text("People changes for the HR system")
    expect(state).to_have_text("active")

    # Archive with the activation toggle.
    page.get_by_role("button", name="Archive").click()
    expect(page.get_by_role("status")).to_contain_text("Archived: nothing is sent to it")
    expect(state).to_have_text("inactive")
    expect(fact(page, "Activation status")).to_contain_text("archived by an admin")
    expect(page.get_by_role("button", name="Archive")).to_have_count(0)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("row", name="HR feed").locator(".state")).to_have_text("inactive")
    assert webhooks(daemon)[0]["status"] == "inactive"

    # Re-activate.
    page.get_by_role("link", name="HR feed").click()
    page.get_by_role("button", name="Re-activate").click()
    expect(page.get_by_role("status")).to_contain_text("Re-activated")
    expect(state).to_have_text("active")
    expect(page.get_by_role("button", name="Archive")).to_be_visible()
    assert webhooks(daemon)[0]["status"] == "active"

    # The form's Activation status does the same.
    page.get_by_role("link", name="Edit").click()
    active = page.get_by_role("checkbox", name="Active", exact=True)
    expect(active).to_be_checked()
    active.uncheck()
    page.get_by_role("button", name="Save").click()
    expect(state).to_have_text("inactive")
    [saved] = webhooks(daemon)
    assert saved["status"] == "inactive"
    assert saved["description"] == "People changes for the HR system"


def test_the_sixth_webhook_is_refused(page: Page, daemon: RunningDaemon) -> None:
    sign_in(page, daemon)
    page.get_by_role("link", name="Add webhook").click()
    page.get_by_label("Name (required)", exact=True).fill("Fifth")
    page.get_by_label("Target URL (required)", exact=True).fill("http://127.0.0.1:9/5")
    event_box(page, "COURSE_COMPLETED").check()
    # A second tab opens the form while there is still room.
    late = page.context.new_page()
    late.goto(daemon.url + "/webhooks/new")
    expect(late.get_by_role("button", name="Save")).to_be_visible()

    for number in range(1, 5):
        create(daemon, f"Made by the API {number}", f"http://127.0.0.1:9/{number}")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Fifth")
    assert len(webhooks(daemon)) == 5

    # The list: Add webhook is a disabled button, described by the note.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_text("5 of 5")).to_be_visible()
    expect(page.get_by_role("link", name="Add webhook")).to_have_count(0)
    add = page.get_by_role("button", name="Add webhook")
    expect(add).to_be_disabled()
    expect(add).to_have_attribute("aria-describedby", "limit-note")
    note = page.locator("#limit-note")
    expect(note).to_contain_text("At most 5 webhooks can exist")
    expect(note).to_contain_text("delete one to add another")

    # The form's address shows the note instead of the form.
    page.goto(daemon.url + "/webhooks/new")
    expect(page.locator("#limit-note")).to_contain_text("At most 5 webhooks can exist")
    expect(page.get_by_role("button", name="Save")).to_have_count(0)
    expect(page.get_by_label("Name (required)", exact=True)).to_have_count(0)

    # The form opened before the limit was reached: saving it is refused, values kept.
    late.get_by_label("Name (required)", exact=True).fill("Sixth")
    late.get_by_label("Target URL (required)", exact=True).fill("http://127.0.0.1:9/6")
    event_box(late, "COURSE_ENROLLMENT").check()
    late.get_by_role("button", name="Save").click()
    expect(late.get_by_role("alert")).to_contain_text("Nothing was saved")
    expect(late.get_by_role("alert")).to_contain_text("at most 5 webhooks")
    expect(late.get_by_label("Name (required)", exact=True)).to_have_value("Sixth")
    expect(event_box(late, "COURSE_ENROLLMENT")).to_be_checked()
    names = sorted(w["name"] for w in webhooks(daemon))
    assert names == ["Fifth", *(f"Made by the API {n}" for n in range(1, 5))]


def test_delete_after_confirming(page: Page, daemon: RunningDaemon) -> None:
    webhook = create(daemon, "Short-lived", "http://127.0.0.1:9/gone")
    create(daemon, "Stays", "http://127.0.0.1:9/stays")
    sign_in(page, daemon)
    page.get_by_role("link", name="Short-lived").click()
    base = daemon.url + f"/webhooks/{webhook['id']}"

    # The confirmation step; Cancel leaves it alone.
    page.get_by_role("link", name="Delete").click()
    expect(page).to_have_url(base + "/delete")
    expect(page.get_by_role("heading", name="Delete Short-lived?")).to_be_visible()
    expect(page.get_by_text("This cannot be undone")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(base)
    assert len(webhooks(daemon)) == 2

    page.get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(re.escape(daemon.url + "/") + r"(\?.*)?$"))
    expect(page.get_by_role("status")).to_have_text("Deleted Short-lived.")
    expect(page.get_by_role("row", name="Short-lived")).to_have_count(0)
    expect(page.get_by_role("row", name="Stays")).to_be_visible()
    expect(page.get_by_text("1 of 5")).to_be_visible()
    assert [w["name"] for w in webhooks(daemon)] == ["Stays"]
    page.goto(base)
    expect(page.get_by_role("alert")).to_contain_text("no webhook with id")


def test_a_validation_error_is_shown_next_to_its_field_with_the_values_kept(
    page: Page, daemon: RunningDaemon
) -> None:
    sign_in(page, daemon)
    page.get_by_role("link", name="Add webhook").click()
    name = page.get_by_label("Name (required)", exact=True)
    target = page.get_by_label("Target URL (required)", exact=True)
    name.fill("Wrong scheme")
    page.get_by_label("Description", exact=True).fill("kept after the error")
    target.fill("ftp://127.0.0.1/hook")
    page.get_by_role("radio", name=re.compile("^Basic")).check()
    page.get_by_label("Username", exact=True).fill("svc-lms")
    page.get_by_label("Password", exact=True).fill("s3cret-password")
    event_box(page, "COURSE_ENROLLMENT").check()
    event_box(page, "LEARNER_PROGRESS").check()
    page.get_by_label("Contact e-mail").fill("ops@example.org")
    page.get_by_role("button", name="Save").click()

    # The message is the field's description, an alert, right under it.
    expect(page).to_have_url(daemon.url + "/webhooks/new")
    expect(target).to_have_attribute("aria-invalid", "true")
    described_by = target.get_attribute("aria-describedby") or ""
    assert "target-url-error" in described_by.split(), described_by
    error = page.locator("#target-url-error")
    expect(error).to_have_attribute("role", "alert")
    expect(error).to_have_text("targetUrl must start with http:// or https://")
    expect(target).to_have_accessible_description(re.compile("must start with http://"))
    field = page.locator(".field").filter(has=target)
    expect(field.locator("#target-url-error")).to_have_count(1)
    target_box, error_box = target.bounding_box(), error.bounding_box()
    assert target_box is not None and error_box is not None
    gap = error_box["y"] - (target_box["y"] + target_box["height"])
    assert 0 <= gap < 80, f"the message is {gap} px under the field"
    # No other field is marked; the summary links to the field.
    expect(page.locator("[aria-invalid='true']")).to_have_count(1)
    expect(name).not_to_have_attribute("aria-invalid", "true")
    summary = page.locator(".error-summary")
    expect(summary).to_have_attribute("role", "alert")
    expect(summary.get_by_role("link", name="Target URL")).to_have_attribute("href", "#target-url")

    # What was typed is kept, but the password.
    expect(name).to_have_value("Wrong scheme")
    expect(page.get_by_label("Description", exact=True)).to_have_value("kept after the error")
    expect(target).to_have_value("ftp://127.0.0.1/hook")
    expect(page.get_by_role("radio", name=re.compile("^Basic"))).to_be_checked()
    expect(page.get_by_label("Username", exact=True)).to_have_value("svc-lms")
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    expect(event_box(page, "COURSE_ENROLLMENT")).to_be_checked()
    expect(event_box(page, "LEARNER_PROGRESS")).to_be_checked()
    expect(event_box(page, "COURSE_COMPLETED")).not_to_be_checked()
    expect(page.get_by_label("Contact e-mail")).to_have_value("ops@example.org")
    assert webhooks(daemon) == []

    # Corrected (and the password typed again), it saves.
    target.fill("https://127.0.0.1:9/hook")
    page.get_by_label("Password", exact=True).fill("s3cret-password")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Wrong scheme")
    expect(fact(page, "Authentication")).to_contain_text("username svc-lms, password: set")
    [saved] = webhooks(daemon)
    assert saved["auth"] == {"type": "basic", "username": "svc-lms", "passwordSet": True}
    assert saved["events"] == ["COURSE_ENROLLMENT", "LEARNER_PROGRESS"]


def test_sign_in_and_add_a_webhook_with_the_keyboard_alone(
    page: Page, daemon: RunningDaemon
) -> None:
    page.goto(daemon.url + "/")
    token = page.get_by_label("Admin token")
    expect(token).to_be_focused()  # autofocus
    page.keyboard.type(daemon.admin_token)
    page.keyboard.press("Enter")
    expect(page).to_have_url(daemon.url + "/")

    tab_to(page, page.get_by_role("link", name="Add webhook"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(daemon.url + "/webhooks/new")

    tab_to(page, page.get_by_label("Name (required)", exact=True))
    page.keyboard.type("Typed webhook")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Description", exact=True)).to_be_focused()
    page.keyboard.type("Made without a mouse")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Target URL (required)", exact=True)).to_be_focused()
    page.keyboard.type("http://127.0.0.1:9/keys")
    # Tab enters the radio group at its checked choice (Signature, the default); the
    # arrows move the choice: up to Basic, down again to Signature.
    page.keyboard.press("Tab")
    signature = page.get_by_role("radio", name=re.compile("^Signature"))
    expect(signature).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(page.get_by_role("radio", name=re.compile("^Basic"))).to_be_checked()
    page.keyboard.press("ArrowDown")
    expect(signature).to_be_checked()

    for event_name in ("COURSE_ENROLLMENT", "CERTIFICATION_COMPLETED"):
        box = event_box(page, event_name)
        tab_to(page, box)
        page.keyboard.press("Space")
        expect(box).to_be_checked()
    save = page.get_by_role("button", name="Save")
    tab_to(page, save)
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", level=1)).to_have_text("Typed webhook")
    expect(fact(page, "Description")).to_have_text("Made without a mouse")
    [saved] = webhooks(daemon)
    assert saved["auth"] == {"type": "signature"}
    assert saved["events"] == ["CERTIFICATION_COMPLETED", "COURSE_ENROLLMENT"]
    assert saved["targetUrl"] == "http://127.0.0.1:9/keys"


def test_the_list_shows_each_state_at_a_glance_and_is_photographed(
    page: Page, daemon: RunningDaemon, receiver: ThreadedReceiver, tmp_path: Path
) -> None:
    """Three webhooks: active (delivered to), archived, disabled by a 410 Gone. The
    screenshots of the README are taken of this list, at 1200x800 and at phone width."""
    with running_receiver(410, "this endpoint is gone") as gone:
        active = create(
            daemon,
            "LMS enrolments",
            receiver.url,
            description="Enrolments and completions for the LMS",
            events=["COURSE_ENROLLMENT", "COURSE_COMPLETED", "LEARNER_PROGRESS"],
        )
        archived = create(
            daemon,
            "Old HR feed",
            "https://127.0.0.1:9/hr/events",
            events=["COURSE_UNENROLLMENT"],
            active=False,
        )
        disabled = create(
            daemon,
            "Reporting warehouse",
            gone.url,
            auth={"type": "basic", "username": "warehouse", "password": "pw-0123456789"},
            events=["COURSE_ENROLLMENT", "COURSE_COMPLETED"],
        )
        ingest(daemon, samples.event("COURSE_ENROLLMENT", eventId="shot-1"))
        receiver.wait_for(1)
        gone.wait_for(1)

    sign_in(page, daemon)
    expect(page).to_have_url(daemon.url + "/")
    rows = {
        webhook["id"]: page.locator(f"tr[data-webhook-id='{webhook['id']}']")
        for webhook in (active, archived, disabled)
    }
    reload_until(page, rows[disabled["id"]], "the receiver answered 410 Gone")
    reload_until(page, rows[active["id"]], "ago")  # its last success
    expect(rows[active["id"]].locator(".state")).to_have_text("active")
    expect(rows[archived["id"]].locator(".state")).to_have_text("inactive")
    expect(rows[disabled["id"]].locator(".state")).to_have_text("disabled")
    expect(rows[disabled["id"]].locator(".last-error")).to_contain_text("410")
    # Each state has its own colour.
    colours = {
        state: rows[webhook["id"]]
        .locator(".state")
        .evaluate("element => getComputedStyle(element).color")
        for state, webhook in (
            ("active", active),
            ("inactive", archived),
            ("disabled", disabled),
        )
    }
    assert len(set(colours.values())) == 3, colours

    folder = DOCS if UPDATE_SCREENSHOTS else tmp_path
    sizes: dict[str, ViewportSize] = {
        "console.png": {"width": 1200, "height": 800},
        "console-phone.png": {"width": 390, "height": 844},
    }
    for name, size in sizes.items():
        page.set_viewport_size(size)
        expect(page.get_by_role("heading", name="Webhooks")).to_be_in_viewport()
        screenshot = folder / name
        page.screenshot(path=screenshot)
        assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
        assert screenshot.stat().st_size > 10_000  # a rendered page, not an empty image
        # Nothing wider than the window but inside the table's scrolling box.
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]


def test_a_webhook_disabled_by_a_410_shows_no_next_retry(page: Page, daemon: RunningDaemon) -> None:
    with running_receiver(410, "this endpoint is gone") as gone:
        webhook = create(daemon, "Gone away", gone.url)
        ingest(daemon, samples.event("COURSE_ENROLLMENT", eventId="gone-1"))
        gone.wait_for(1)
    sign_in(page, daemon)
    page.goto(daemon.url + f"/webhooks/{webhook['id']}")
    reload_until(page, page.locator(".webhook-heading .state"), "disabled")
    expect(fact(page, "Activation status")).to_contain_text("disabled by almhookd")
    expect(fact(page, "Next retry")).to_have_text("—", timeout=1000)
