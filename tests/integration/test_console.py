"""The console over HTTP: sign-in and its session cookie, CSRF, the security headers,
escaping, the sign-in throttle. Real SQLite, the real app on a real port; the browser
tests (``tests/browser``) drive the same pages in Chromium."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from structlog.testing import capture_logs

from almhookd.api.common import STATE
from almhookd.auth import TokenChecker
from almhookd.config import Config, Secret
from almhookd.console.sessions import SESSION_SECONDS
from almhookd.domain.webhooks import NewWebhook
from almhookd.storage.sqlite import SqliteStorage
from tests.support.clock import FakeClock
from tests.support.console import Client, RecordedSleep, hidden, sign_in
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN


def _set_cookie(response_headers: object, name: str) -> SimpleCookie:
    cookies = SimpleCookie()
    for header in response_headers.getall("Set-Cookie", []):  # type: ignore[attr-defined]
        if header.startswith(name + "="):
            cookies.load(header)
    assert name in cookies, f"no Set-Cookie {name}"
    return cookies


async def test_a_page_without_a_session_sends_to_the_sign_in_form(console: Client) -> None:
    response = await console.get("/status?x=1", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/signin?next=%2Fstatus%3Fx%3D1"


@pytest.mark.parametrize("path", ["/signin", "/", "/static/console.css"])
async def test_every_console_answer_carries_the_security_headers(
    console: Client, path: str
) -> None:
    if path != "/signin":  # a signed-in visitor is sent on from the sign-in form
        await sign_in(console)
    response = await console.get(path, allow_redirects=False)
    assert response.status == 200
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_signing_in_sets_an_http_only_strict_expiring_session_cookie(
    console: Client,
) -> None:
    form_page = await (await console.get("/signin")).text()
    response = await console.post(
        "/signin",
        data={"form_token": hidden(form_page, "form_token"), "token": ADMIN_TOKEN, "next": "/"},
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/"
    cookie = _set_cookie(response.headers, "almhookd_session")["almhookd_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(SESSION_SECONDS)
    assert ADMIN_TOKEN not in cookie.value
    page = await console.get("/")
    assert page.status == 200
    assert "<h1>Webhooks</h1>" in await page.text()


async def test_the_ingest_token_cannot_sign_in_and_the_failure_is_logged_without_it(
    console: Client,
) -> None:
    with capture_logs() as logs:
        status = await sign_in(console, INGEST_TOKEN)
    assert status == 401
    assert "almhookd_session" not in {c.key for c in console.session.cookie_jar}
    [failed] = [line for line in logs if line["event"] == "console.sign_in_failed"]
    assert failed["reason"] == "the ingest token" and failed["remote"] == "127.0.0.1"
    assert INGEST_TOKEN not in repr(logs) and ADMIN_TOKEN not in repr(logs)
    assert (await console.get("/", allow_redirects=False)).status == 303


async def test_failed_sign_ins_are_slowed_down_doubling_and_forgotten_on_success(
    console: Client, slept: RecordedSleep
) -> None:
    for _ in range(5):
        assert await sign_in(console, "wrong-token") == 401
    assert slept.delays == [0.5, 1.0, 2.0, 4.0]
    assert await sign_in(console) == 303
    assert slept.delays[-1] == 8.0  # the sixth try waited too, then succeeded
    await console.post(
        "/signout",
        data={"csrf_token": hidden(await (await console.get("/")).text(), "csrf_token")},
    )
    slept.delays.clear()
    assert await sign_in(console, "wrong-token") == 401
    assert slept.delays == []  # the success forgot the earlier failures


async def test_a_sign_in_post_without_its_form_token_is_refused(console: Client) -> None:
    response = await console.post(
        "/signin", data={"token": ADMIN_TOKEN, "next": "/"}, allow_redirects=False
    )
    assert response.status == 403
    assert (await console.get("/", allow_redirects=False)).status == 303


@pytest.mark.parametrize(
    "target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "relative"]
)
async def test_a_sign_in_never_sends_the_browser_elsewhere(console: Client, target: str) -> None:
    form_page = await (await console.get("/signin")).text()
    response = await console.post(
        "/signin",
        data={"form_token": hidden(form_page, "form_token"), "token": ADMIN_TOKEN, "next": target},
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/"


async def test_a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    console: Client,
) -> None:
    await sign_in(console)
    for data in ({}, {"csrf_token": "forged"}):
        response = await console.post("/signout", data=data, allow_redirects=False)
        assert response.status == 403
        assert (await console.get("/", allow_redirects=False)).status == 200  # still signed in
    flush = await console.post("/status/flush", data={"csrf_token": "x"}, allow_redirects=False)
    assert flush.status == 403


async def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(
    console: Client,
) -> None:
    await sign_in(console)
    copy = {c.key: c.value for c in console.session.cookie_jar}["almhookd_session"]
    page = await (await console.get("/")).text()
    response = await console.post(
        "/signout", data={"csrf_token": hidden(page, "csrf_token")}, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == "/signin"
    replayed = await console.get(
        "/", headers={"Cookie": f"almhookd_session={copy}"}, allow_redirects=False
    )
    assert replayed.status == 303


async def test_a_new_admin_token_ends_every_session(console: Client) -> None:
    await sign_in(console)
    assert (await console.get("/", allow_redirects=False)).status == 200
    console.app[STATE].tokens = TokenChecker(admin=Secret("a-new-admin-token-0123"), ingest=None)
    assert (await console.get("/", allow_redirects=False)).status == 303


async def test_a_session_expires(console: Client, clock: FakeClock) -> None:
    await sign_in(console)
    clock.advance(SESSION_SECONDS - 1)
    assert (await console.get("/", allow_redirects=False)).status == 200
    clock.advance(1)
    assert (await console.get("/", allow_redirects=False)).status == 303


async def test_a_forged_or_foreign_cookie_is_no_session(console: Client) -> None:
    await sign_in(console)
    real = {c.key: c.value for c in console.session.cookie_jar}["almhookd_session"]
    session_id = real.split(".")[0]
    console.session.cookie_jar.clear()  # from here on, only the cookie each request names
    ok = await console.get(
        "/", headers={"Cookie": f"almhookd_session={real}"}, allow_redirects=False
    )
    assert ok.status == 200
    for forged in (session_id, session_id + ".AAAA", "x.y.z", real + "x", "." + real):
        response = await console.get(
            "/", headers={"Cookie": f"almhookd_session={forged}"}, allow_redirects=False
        )
        assert response.status == 303, forged


async def test_names_and_errors_are_shown_as_text_never_as_markup(
    console: Client, store: SqliteStorage
) -> None:
    await store.create_webhook(
        NewWebhook(
            name="<script>alert(1)</script>",
            target_url="https://hooks.example.org/<b>in</b>",
            events=frozenset({"COURSE_ENROLLMENT"}),
        )
    )
    await sign_in(console)
    page = await (await console.get("/")).text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>in</b>" not in page


async def test_the_list_shows_each_webhooks_state_and_the_limit(
    console: Client, store: SqliteStorage, config: Config
) -> None:
    for index in range(config.delivery.max_webhooks):
        await store.create_webhook(
            NewWebhook(
                name=f"hook {index}",
                target_url=f"https://hooks.example.org/{index}",
                events=frozenset({"COURSE_ENROLLMENT", "COURSE_COMPLETED"}),
            )
        )
    [first, *_] = await store.list_webhooks()
    await store.set_webhook_status(first.id, "disabled", "the receiver answered 410 Gone")
    await sign_in(console)
    page = await (await console.get("/")).text()
    assert page.count('data-webhook-id="') == config.delivery.max_webhooks
    assert "state-disabled" in page and "the receiver answered 410 Gone" in page
    assert "2 events" in page and "<code>COURSE_COMPLETED</code>" in page
    assert 'id="limit-note"' in page


async def test_the_status_page_lists_the_catalogue_and_flush_now_needs_its_token(
    console: Client,
) -> None:
    await sign_in(console)
    page = await (await console.get("/status")).text()
    assert page.count("<code>") >= 27 and "LEARNER_PROGRESS" in page
    response = await console.post(
        "/status/flush", data={"csrf_token": hidden(page, "csrf_token")}, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == "/status?flushed=0"


async def test_the_api_still_wants_its_bearer_token(console: Client) -> None:
    await sign_in(console)  # a console session is no API credential
    response = await console.get("/v1/webhooks")
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "name", ["..%2Fsessions.py", ".hidden", "missing.css", "..%2F..%2Fauth.py"]
)
async def test_static_files_are_only_the_consoles_own(console: Client, name: str) -> None:
    assert (await console.get(f"/static/{name}")).status == 404


async def test_a_form_too_large_is_an_error_page_and_saves_nothing(
    console: Client, config: Config
) -> None:
    await sign_in(console)
    page = await (await console.get("/")).text()
    response = await console.post(
        "/status/flush",
        data={
            "csrf_token": hidden(page, "csrf_token"),
            "padding": "x" * (config.server.max_body_bytes + 1),
        },
        allow_redirects=False,
    )
    assert response.status == 413
    assert response.headers["Content-Type"].startswith("text/html")
    assert "server.max_body_bytes" in await response.text()
