"""The console's webhook page over HTTP: settings, state and health, delete after a
confirmation, archive and re-activate, the signature download and rotation, deliveries
and attempts page by page, replay, and what it never shows (a password, a secret,
markup from a name or a receiver's answer).

Real SQLite, the real app on a real port, with a real dispatcher and sender (the
actions need them) on a fake clock; deliveries go to a real receiver on 127.0.0.1,
sent by a worker driven by hand (``Engine.worker``/``drain``), so nothing waits.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from almhookd.config import Secret
from almhookd.console import webhook_page
from almhookd.console.webhook_page import PAGE_SIZE, parse_since
from almhookd.domain.webhooks import Webhook
from tests.support.clock import FakeClock
from tests.support.console import Client, RecordedSleep, hidden, sign_in, signed_in_console
from tests.support.engine import Engine, running_engine
from tests.support.http_receiver import Receiver
from tests.support.tokens import ADMIN_TOKEN

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HOUR_MS = 3_600_000


@pytest.fixture
async def engine(db_path: Path, clock: FakeClock) -> AsyncIterator[Engine]:
    # One event a request: each delivery is its own attempt, so attempts fill pages.
    delivery = "allow_private_targets = true\nmax_events_per_request = 1\n"
    async with running_engine(db_path, clock, delivery=delivery) as built:
        yield built


@pytest.fixture
async def ui(engine: Engine, slept: RecordedSleep) -> AsyncIterator[Client]:
    """The console with the admin API's dispatcher and sender, signed in."""
    async with signed_in_console(engine, slept) as client:
        yield client


async def text_of(ui: Client, path: str, status: int = 200) -> str:
    response = await ui.get(path, allow_redirects=False)
    page = await response.text()
    assert response.status == status, page
    return page


async def post(ui: Client, path: str, data: Any, *, csrf: bool = True) -> tuple[int, str, str]:
    """POSTs a console form (with the session's CSRF token unless ``csrf=False``): the
    status, the Location header, and the page."""
    if csrf:
        token = hidden(await text_of(ui, "/status"), "csrf_token")
        data = [("csrf_token", token), *(data.items() if isinstance(data, dict) else data)]
    response = await ui.post(path, data=data, allow_redirects=False)
    return response.status, response.headers.get("Location", ""), await response.text()


def visible(page: str) -> str:
    """The page's text without its tags, entities decoded, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", page)).split())


def assert_no_inline_code(page: str) -> None:
    """What the Content-Security-Policy would block: inline script and style."""
    assert "<script" not in page and " style=" not in page and "<style" not in page


def event_ids_on(page: str) -> list[str]:
    return re.findall(r'<tr data-event-id="([^"]+)"', page)


async def api(ui: Client, path: str) -> Any:
    response = await ui.get(path, headers=BEARER)
    assert response.status == 200, await response.text()
    return await response.json()


async def delivered(engine: Engine, webhook: Webhook, count: int, **kwargs: Any) -> list[str]:
    """``count`` events ingested for ``webhook`` and delivered to its receiver."""
    ids = await engine.ingest(count, **kwargs)
    await engine.drain(engine.worker(webhook))
    return ids


# --- the page: settings, state, health ----------------------------------------------


async def test_the_page_shows_settings_state_and_health_never_the_password(
    ui: Client, engine: Engine
) -> None:
    webhook = await engine.webhook(
        "https://hooks.example.org/lms",
        name="LMS sync",
        description="to the HR system",
        contact_email="lms@example.org",
        auth_type="basic",
        auth_username="lms-user",
        auth_password=Secret("s3cret-pass"),
        events=frozenset({"COURSE_ENROLLMENT", "COURSE_COMPLETED", "COURSE_ENROLLMENT_BATCH"}),
    )
    page = await text_of(ui, f"/webhooks/{webhook.id}")
    text = visible(page)
    assert "<h1>LMS sync</h1>" in page
    for shown in ("to the HR system", "https://hooks.example.org/lms", "lms@example.org"):
        assert shown in text
    assert "Basic: username lms-user , password: set" in text
    assert "s3cret-pass" not in page
    assert "Real-time (2) COURSE_COMPLETED" in text and "Batch (1) COURSE_ENROLLMENT_BATCH" in text
    assert "Created 2025-11-24 16:00:00 UTC" in text and "Updated 2025-11-24 16:00:00 UTC" in text
    assert "Activation status active" in text
    assert "Backlog 0 real-time, 0 batch" in text and "Last error —" in text
    assert f'href="/webhooks/{webhook.id}/edit"' in page
    assert f'href="/webhooks/{webhook.id}/delete"' in page
    assert ">Archive</button>" in page and "Re-activate" not in page
    assert "Download signature" not in page and "Rotate secret" not in page  # basic auth
    assert_no_inline_code(page)


async def test_the_health_shows_the_backlog_and_the_last_error(
    ui: Client, engine: Engine, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.respond(503)
    webhook = await engine.webhook(receiver.url, name="flaky")
    await engine.ingest(2)
    clock.advance(90)
    assert await engine.worker(webhook).step() is not None  # failed: a retry is due later
    text = visible(await text_of(ui, f"/webhooks/{webhook.id}"))
    assert "Backlog 2 real-time, 0 batch" in text
    assert "Oldest pending 1 min" in text
    assert "Last success —" in text
    assert re.search(r"Next retry in \d+ s", text)
    assert "Last error HTTP 503" in text and "1 failure in a row" in text


async def test_a_disabled_webhook_shows_its_reason_and_can_be_re_activated(
    ui: Client, engine: Engine
) -> None:
    webhook = await engine.webhook("https://hooks.example.org/gone", name="gone")
    await engine.store.set_webhook_status(webhook.id, "disabled", "the receiver answered 410")
    page = await text_of(ui, f"/webhooks/{webhook.id}")
    assert "state-disabled" in page and "the receiver answered 410" in page
    assert ">Re-activate</button>" in page and ">Archive</button>" not in page


async def test_archive_and_re_activate_change_the_status(ui: Client, engine: Engine) -> None:
    webhook = await engine.webhook("https://hooks.example.org/a", name="toggle")
    base = f"/webhooks/{webhook.id}"
    status, location, _ = await post(ui, base + "/activation", {"active": "false"})
    assert (status, location) == (303, base + "?activation=archived")
    assert (await api(ui, f"/v1/webhooks/{webhook.id}"))["status"] == "inactive"
    page = await text_of(ui, location)
    assert "Archived:" in page and ">Re-activate</button>" in page
    status, location, _ = await post(ui, base + "/activation", {"active": "true"})
    assert (status, location) == (303, base + "?activation=reactivated")
    assert (await api(ui, f"/v1/webhooks/{webhook.id}"))["status"] == "active"
    assert ">Archive</button>" in await text_of(ui, location)


async def test_the_activation_toggle_needs_its_csrf_token(ui: Client, engine: Engine) -> None:
    webhook = await engine.webhook("https://hooks.example.org/a", name="kept")
    status, _, _ = await post(
        ui, f"/webhooks/{webhook.id}/activation", {"active": "false"}, csrf=False
    )
    assert status == 403
    assert (await api(ui, f"/v1/webhooks/{webhook.id}"))["status"] == "active"


# --- signing secret: download and rotation ------------------------------------------


async def test_the_signature_download_is_the_apis_document(ui: Client, engine: Engine) -> None:
    webhook = await engine.webhook("https://hooks.example.org/s", auth_type="signature")
    page = await text_of(ui, f"/webhooks/{webhook.id}")
    assert f'href="/webhooks/{webhook.id}/signature.json" download>Download signature' in page
    from_api = await ui.get(f"/v1/webhooks/{webhook.id}/secret", headers=BEARER)
    download = await ui.get(f"/webhooks/{webhook.id}/signature.json")
    assert download.status == 200
    assert await download.json() == await from_api.json()
    for header in ("Content-Disposition", "Content-Type"):
        assert download.headers[header] == from_api.headers[header]
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["Cache-Control"] == "no-store"
    assert download.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in download.headers["Content-Security-Policy"]
    assert (await download.json())["secret"] not in page


async def test_the_signature_download_needs_a_session(ui: Client, engine: Engine) -> None:
    webhook = await engine.webhook("https://hooks.example.org/s", auth_type="signature")
    ui.session.cookie_jar.clear()
    response = await ui.get(f"/webhooks/{webhook.id}/signature.json", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/signin?next=")


async def test_no_signature_to_download_for_a_webhook_without_one(
    ui: Client, engine: Engine
) -> None:
    webhook = await engine.webhook("https://hooks.example.org/n")
    page = await text_of(ui, f"/webhooks/{webhook.id}/signature.json", status=409)
    assert "does not use signature auth" in page and "<h1>Not possible</h1>" in page


async def test_rotating_makes_a_new_secret_and_the_old_one_signs_until_the_grace_end(
    ui: Client, engine: Engine, clock: FakeClock
) -> None:
    webhook = await engine.webhook("https://hooks.example.org/s", auth_type="signature")
    base = f"/webhooks/{webhook.id}"
    page = await text_of(ui, base)
    assert "the current secret keeps signing for 24 h" in visible(page)
    before = await (await ui.get(base + "/signature.json")).json()
    assert before["previousSecretsValidUntil"] == []

    clock.advance(60)
    status, location, _ = await post(ui, base + "/rotate", {})
    assert (status, location) == (303, base + "?rotated=1#signing")
    grace_end = int(clock() * 1000) + 24 * HOUR_MS
    page = await text_of(ui, location)
    text = visible(page)
    assert "A new signing secret was made" in text
    assert f"keeps signing until {_utc(grace_end)} (in 24 h 00 min)" in text
    assert f"still signing until {_utc(grace_end)}" in text
    after = await (await ui.get(base + "/signature.json")).json()
    assert after["secret"] != before["secret"]
    assert after["previousSecretsValidUntil"] == [grace_end]
    assert after == await api(ui, f"/v1/webhooks/{webhook.id}/secret")
    assert before["secret"] not in page and after["secret"] not in page
    stored = await engine.store.get_webhook(webhook.id)
    assert stored is not None
    assert stored.secrets_in_force(int(clock() * 1000)) == [after["secret"], before["secret"]]

    clock.advance(24 * 3600)
    assert await sign_in(ui) == 303  # the session ended after 8 h
    assert "Previous secrets none still signing" in visible(await text_of(ui, base))


async def test_rotate_needs_its_csrf_token(ui: Client, engine: Engine) -> None:
    webhook = await engine.webhook("https://hooks.example.org/s", auth_type="signature")
    secret = (await api(ui, f"/v1/webhooks/{webhook.id}/secret"))["secret"]
    status, _, _ = await post(ui, f"/webhooks/{webhook.id}/rotate", {}, csrf=False)
    assert status == 403
    assert (await api(ui, f"/v1/webhooks/{webhook.id}/secret"))["secret"] == secret


def _utc(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- delete, after confirming -------------------------------------------------------


async def test_delete_asks_first_then_deletes_on_the_confirming_post(
    ui: Client, engine: Engine
) -> None:
    webhook = await engine.webhook("https://hooks.example.org/d", name="old hook")
    base = f"/webhooks/{webhook.id}"
    confirm = await text_of(ui, base + "/delete")
    assert "Delete old hook? Its pending deliveries are dropped." in visible(confirm)
    assert f'action="{base}/delete"' in confirm and 'name="csrf_token"' in confirm
    assert f'href="{base}">Cancel</a>' in confirm
    assert await engine.store.get_webhook(webhook.id) is not None  # the GET did nothing

    status, location, _ = await post(ui, base + "/delete", {})
    assert (status, location) == (303, "/?deleted=old+hook")
    assert await engine.store.get_webhook(webhook.id) is None
    assert "There is no webhook with id" in await text_of(ui, base, status=404)


@pytest.mark.parametrize("data", [{}, {"csrf_token": "forged"}])
async def test_a_delete_without_the_csrf_token_is_refused_and_deletes_nothing(
    ui: Client, engine: Engine, data: dict[str, str]
) -> None:
    webhook = await engine.webhook("https://hooks.example.org/d", name="kept")
    status, _, page = await post(ui, f"/webhooks/{webhook.id}/delete", data, csrf=False)
    assert status == 403 and "The form expired" in page
    assert await engine.store.get_webhook(webhook.id) is not None


# --- unknown ids, escaping ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/deliveries",
        "/attempts",
        "/signature.json",
        "/delete",
    ],
)
async def test_an_unknown_webhook_is_a_404_page(ui: Client, path: str) -> None:
    page = await text_of(ui, f"/webhooks/wh_0000000000000000{path}", status=404)
    assert "<h1>Not found</h1>" in page
    assert "There is no webhook with id “wh_0000000000000000”." in page


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/delete", {}),
        ("/rotate", {}),
        ("/activation", {"active": "false"}),
        ("/replay", {"what": "since", "since": "1h"}),
    ],
)
async def test_a_post_for_an_unknown_webhook_is_a_404_page(
    ui: Client, path: str, data: dict[str, str]
) -> None:
    status, _, page = await post(ui, f"/webhooks/wh_0000000000000000{path}", data)
    assert status == 404 and "<h1>Not found</h1>" in page


async def test_an_unknown_id_is_shown_as_text(ui: Client) -> None:
    page = await text_of(ui, "/webhooks/%3Cb%3Ex", status=404)
    assert "<b>x" not in page and "&lt;b&gt;x" in page


async def test_a_malicious_name_and_answer_are_shown_as_text(
    ui: Client, engine: Engine, receiver: Receiver
) -> None:
    answer = "<script>alert('answer')</script>" + "x" * 2000

    async def hostile(request: web.Request) -> web.Response:
        return web.Response(status=500, text=answer)

    receiver.respond(hostile)
    webhook = await engine.webhook(receiver.url, name="<script>alert(1)</script>")
    await engine.ingest(1)
    await engine.worker(webhook).step()
    for path in ("", "/attempts", "/deliveries", "/delete"):
        page = await text_of(ui, f"/webhooks/{webhook.id}{path}")
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert_no_inline_code(page)
    for path in ("", "/attempts"):
        page = await text_of(ui, f"/webhooks/{webhook.id}{path}")
        assert "<script>alert(&#39;answer&#39;)</script>" not in page
        assert "<script>alert('answer')" not in page
        assert "<summary>&lt;script&gt;alert(&#39;answer&#39;)&lt;/script&gt;xxx" in page
        assert "The first 1024 of 2032 characters kept." in page


# --- deliveries and attempts, page by page ------------------------------------------


async def test_deliveries_come_page_by_page_with_the_apis_cursor(
    ui: Client, engine: Engine, receiver: Receiver
) -> None:
    webhook = await engine.webhook(receiver.url, name="paged")
    ids = await delivered(engine, webhook, PAGE_SIZE + 7)
    base = f"/webhooks/{webhook.id}/deliveries"
    first = await text_of(ui, base)
    assert event_ids_on(first) == ids[:PAGE_SIZE]
    api_page = await api(ui, f"/v1/webhooks/{webhook.id}/deliveries?limit={PAGE_SIZE}")
    cursor = api_page["nextCursor"]
    assert f'href="{base}?cursor={cursor}" rel="next">Next page</a>' in first
    second = await text_of(ui, f"{base}?cursor={cursor}")
    assert event_ids_on(second) == ids[PAGE_SIZE:]
    assert "Next page" not in second and f'href="{base}">First page</a>' in second
    row = visible(second.split(f'data-event-id="{ids[-1]}"')[1].split("</tr>")[0])
    assert "COURSE_ENROLLMENT delivered 1 2025-11-24 16:00:00 UTC 2025-11-24 16:00:00 UTC" in row


async def test_deliveries_filtered_by_state(ui: Client, engine: Engine, receiver: Receiver) -> None:
    webhook = await engine.webhook(receiver.url, name="filtered")
    sent = await delivered(engine, webhook, 3)
    waiting = await engine.ingest(2)
    base = f"/webhooks/{webhook.id}/deliveries"
    assert event_ids_on(await text_of(ui, base)) == sent + waiting
    pending = await text_of(ui, base + "?state=pending")
    assert event_ids_on(pending) == waiting
    assert '<option value="pending" selected>pending</option>' in pending
    assert event_ids_on(await text_of(ui, base + "?state=delivered")) == sent
    assert "No expired delivery." in await text_of(ui, base + "?state=expired")
    assert "state must be one of" in await text_of(ui, base + "?state=lost", status=400)
    # the state is kept on the next page's link
    small = await text_of(ui, base + "?state=delivered&limit=2")
    assert event_ids_on(small) == sent[:2]
    assert re.search(r'href="[^"]*\?state=delivered&amp;limit=2&amp;cursor=\d+"', small)


async def test_attempts_come_page_by_page_newest_first(
    ui: Client, engine: Engine, receiver: Receiver
) -> None:
    webhook = await engine.webhook(receiver.url, name="attempted")
    await delivered(engine, webhook, PAGE_SIZE + 3)
    base = f"/webhooks/{webhook.id}/attempts"
    api_first = await api(ui, f"/v1/webhooks/{webhook.id}/attempts?limit={PAGE_SIZE}")
    first = await text_of(ui, base)
    shown = [int(i) for i in re.findall(r'data-attempt-id="(\d+)"', first)]
    assert shown == [attempt["id"] for attempt in api_first["attempts"]]
    assert len(shown) == PAGE_SIZE and shown == sorted(shown, reverse=True)
    cursor = api_first["nextCursor"]
    assert f'href="{base}?cursor={cursor}" rel="next">Next page</a>' in first
    second = await text_of(ui, f"{base}?cursor={cursor}")
    assert len(re.findall(r'data-attempt-id="', second)) == 3
    assert "Next page" not in second
    row = visible(second.split('data-attempt-id="')[1].split("</tr>")[0])
    assert re.fullmatch(r'\d+"> 2025-11-24 16:00:00 UTC 202 \d+ ms 1 — answer 202 answer 202', row)
    overview = await text_of(ui, f"/webhooks/{webhook.id}")
    assert len(re.findall(r'data-attempt-id="', overview)) == 5
    assert f'href="{base}">All attempts</a>' in overview


async def test_a_bad_cursor_is_a_400_page(ui: Client, engine: Engine) -> None:
    webhook = await engine.webhook("https://hooks.example.org/c")
    for path in ("/deliveries?cursor=x", "/attempts?cursor=-1", "/attempts?limit=0"):
        page = await text_of(ui, f"/webhooks/{webhook.id}{path}", status=400)
        assert "<h1>Bad request</h1>" in page


# --- replay -------------------------------------------------------------------------


async def test_replay_of_selected_deliveries(
    ui: Client, engine: Engine, receiver: Receiver
) -> None:
    webhook = await engine.webhook(receiver.url, name="replayed")
    ids = await delivered(engine, webhook, 3)
    base = f"/webhooks/{webhook.id}"
    page = await text_of(ui, base + "/deliveries")
    assert f'name="event_id" value="{ids[0]}"' in page and ">Replay selected</button>" in page
    status, location, _ = await post(
        ui,
        base + "/replay",
        [("what", "selected"), ("event_id", ids[0]), ("event_id", ids[2]), ("state", "")],
    )
    assert (status, location) == (303, base + "/deliveries?queued=2")
    after = await text_of(ui, location)
    assert "2 deliveries queued." in after
    assert event_ids_on(await text_of(ui, base + "/deliveries?state=pending")) == [ids[0], ids[2]]
    await engine.drain(engine.worker(webhook))
    assert receiver.all_event_ids() == [*ids, ids[0], ids[2]]


async def test_replay_with_nothing_selected_says_so(
    ui: Client, engine: Engine, receiver: Receiver
) -> None:
    webhook = await engine.webhook(receiver.url, name="nothing")
    await delivered(engine, webhook, 1)
    status, _, page = await post(
        ui, f"/webhooks/{webhook.id}/replay", {"what": "selected", "state": "delivered"}
    )
    assert status == 422
    assert '<p class="error" role="alert" id="selected-error">Select the deliveries' in page
    assert '<option value="delivered" selected>' in page
    status, _, page = await post(
        ui, f"/webhooks/{webhook.id}/replay", {"what": "selected", "event_id": "bad id!"}
    )
    assert status == 422 and "not an eventId" in page


async def test_replay_since_a_duration_and_since_a_date(
    ui: Client, engine: Engine, receiver: Receiver, clock: FakeClock
) -> None:
    webhook = await engine.webhook(receiver.url, name="since")
    base = f"/webhooks/{webhook.id}"
    early = await delivered(engine, webhook, 2)  # at 2025-11-24 16:00 UTC
    clock.advance(2 * 3600)
    late = await delivered(engine, webhook, 1)  # at 18:00 UTC
    cases = [
        ("1h", late),
        ("3h", early + late),
        ("2025-11-24 17:00", late),  # UTC, no offset given
        ("2025-11-24T17:00:00Z", late),
        ("2025-11-24T17:00+02:00", early + late),  # 15:00 UTC
        ("2025-11-24", early + late),
    ]
    for typed, queued in cases:
        status, location, _ = await post(ui, base + "/replay", {"what": "since", "since": typed})
        assert (status, location) == (303, f"{base}?queued={len(queued)}#replay"), typed
        await engine.drain(engine.worker(webhook))
        assert receiver.all_event_ids()[-len(queued) :] == queued, typed
    page = await text_of(ui, base + "?queued=3")
    assert "3 deliveries queued." in page
    assert "A date and time without an offset is taken as UTC." in visible(page)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("yesterday", "Not a duration (30m, 2h, 1d) nor a date and time"),
        ("", "Enter a duration such as 2h"),
        ("2099-01-01 00:00", "That time is in the future"),
        ("5 <b>h</b>", "Not a duration"),
    ],
)
async def test_a_bad_since_is_shown_next_to_the_field_with_the_value_kept(
    ui: Client, engine: Engine, typed: str, message: str
) -> None:
    webhook = await engine.webhook("https://hooks.example.org/r")
    status, _, page = await post(
        ui, f"/webhooks/{webhook.id}/replay", {"what": "since", "since": typed}
    )
    assert status == 422
    error = re.search(r'<p class="error" role="alert" id="since-error">([^<]*)</p>', page)
    assert error and error.group(1).startswith(message)
    field = re.search(r'<input id="since" name="since" type="text" value="([^"]*)"[^>]*>', page)
    assert field and unescape(field.group(1)) == typed
    assert 'aria-invalid="true"' in field.group(0) and "since-error" in field.group(0)
    assert "<b>h</b>" not in page


async def test_replay_needs_its_csrf_token(ui: Client, engine: Engine, receiver: Receiver) -> None:
    webhook = await engine.webhook(receiver.url, name="guarded")
    await delivered(engine, webhook, 1)
    status, _, _ = await post(
        ui, f"/webhooks/{webhook.id}/replay", {"what": "since", "since": "1h"}, csrf=False
    )
    assert status == 403
    assert await engine.store.backlog_summary(webhook.id) == {
        "realtime": 0,
        "batch": 0,
        "held": 0,
        "oldest": None,
    }


# --- the "since" parser -------------------------------------------------------------

NOW = 1_764_000_000.0  # 2025-11-24 16:00:00 UTC


@pytest.mark.parametrize(
    ("typed", "expected_ms"),
    [
        ("30m", int((NOW - 1800) * 1000)),
        (" 2h ", int((NOW - 7200) * 1000)),
        ("1d", int((NOW - 86_400) * 1000)),
        ("1h30m", int((NOW - 5400) * 1000)),
        ("2025-11-24 14:00", int((NOW - 7200) * 1000)),
        ("2025-11-24T14:00:00+00:00", int((NOW - 7200) * 1000)),
        ("2025-11-24T15:00:00+01:00", int((NOW - 7200) * 1000)),
        ("100000d", 0),  # before the epoch: everything retained
        ("9" * 60 + "d", 0),
    ],
)
def test_since_takes_a_duration_or_a_date_as_utc(typed: str, expected_ms: int) -> None:
    assert parse_since(typed, NOW) == expected_ms


@pytest.mark.parametrize("typed", ["", "  ", "soon", "2h ago", "-1h", "2025-13-01", "x" * 65])
def test_since_refuses_what_is_neither(typed: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_since(typed, NOW)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86_400.0, "24 h"),
        (7 * 86_400.0, "7 d"),
        (5400.0, "90 min"),
        (3600.0, "1 h"),
        (30.0, "30 s"),
    ],
)
def test_the_grace_period_is_stated_for_people(seconds: float, text: str) -> None:
    assert webhook_page.grace_text(seconds) == text


def test_every_route_is_a_console_route() -> None:
    """The API's bearer check leaves routes named ``console.…`` to the session check."""
    app = web.Application()
    webhook_page.add_routes(app.router)
    names = {route.name for route in app.router.routes()}  # a GET route has its HEAD too
    assert len(names) == 9 and all(name and name.startswith("console.") for name in names)
