"""The console's Add / Edit form over HTTP: saving through the admin API's own actions,
validation errors next to their fields, "Test webhook" on the unsaved form, the limit,
passwords never rendered back, CSRF and escaping.

The app is the real one (``create_app`` with the console) on a real port, on real SQLite,
with a real dispatcher and sender (``tests.support.engine``), signed in with the admin
token; receivers are real HTTP servers on 127.0.0.1. It is assembled here rather than
run as the in-process daemon (``tests.support.running``) because the daemon's console
gets the form's routes only once ``console.setup`` adds them, and because the tests
read what was saved straight from the store the app writes to.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web

from almhookd.config import Secret
from almhookd.console import forms
from almhookd.domain.webhooks import NewWebhook, Webhook
from almhookd.storage.sqlite import SqliteStorage
from tests.support import samples
from tests.support.clock import FakeClock
from tests.support.console import Client, RecordedSleep, hidden, sign_in, signed_in_console
from tests.support.engine import Engine, running_engine
from tests.support.http_receiver import Receiver
from tests.support.verifier import verify

Fields = list[tuple[str, str]]


@pytest.fixture
async def engine(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Engine]:
    async with running_engine(tmp_path / "almhookd.db", clock) as running:
        yield running


@pytest.fixture
async def admin(engine: Engine, slept: RecordedSleep) -> AsyncIterator[Client]:
    """The console with a dispatcher and a sender (saving and testing need them),
    signed in."""
    async with signed_in_console(engine, slept) as client:
        yield client


# --- reading pages as a browser does ------------------------------------------------


class _FormReader(HTMLParser):
    """The fields the webhook form would submit as rendered (buttons aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.fields: Fields = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form" and "webhook-form" in (attributes.get("class") or "").split():
            self.inside = True
        elif self.inside and tag == "input" and attributes.get("name"):
            name, value = attributes["name"] or "", attributes.get("value") or ""
            if attributes.get("type") in ("checkbox", "radio"):
                if "checked" in attributes:
                    self.fields.append((name, value))
            else:
                self.fields.append((name, value))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False


def form_fields(page: str) -> Fields:
    reader = _FormReader()
    reader.feed(page)
    assert reader.fields, "no webhook form in the page"
    return reader.fields


def changed(fields: Fields, drop: Iterable[str] = (), **values: str) -> Fields:
    """``fields`` without the names in ``drop`` and with ``values`` set (one each)."""
    gone = set(drop) | set(values)
    return [(k, v) for k, v in fields if k not in gone] + list(values.items())


def new_webhook_fields(
    page: str,
    url: str,
    *,
    name: str = "LMS sync",
    auth: str = "signature",
    events: Sequence[str] = ("COURSE_ENROLLMENT", "COURSE_COMPLETED"),
    **extra: str,
) -> Fields:
    return [
        ("csrf_token", hidden(page, "csrf_token")),
        ("name", name),
        ("description", "to the HR system"),
        ("target_url", url),
        ("auth_type", auth),
        ("contact_email", "lms@example.org"),
        ("active", "1"),
        *(("events", event) for event in events),
        *extra.items(),
    ]


async def page_of(client: Client, path: str = "/webhooks/new") -> str:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 200, await response.text()
    return await response.text()


async def post(client: Client, path: str, fields: Fields) -> ClientResponse:
    return await client.post(path, data=fields, allow_redirects=False)


def error_of(page: str, field: str) -> str:
    """The text of the error shown next to ``field`` (its ``role="alert"`` element)."""
    match = re.search(rf'<p class="field-error" id="{field}-error" role="alert">([^<]*)</p>', page)
    assert match, f"no error next to {field}"
    return match.group(1)


def tag_of(page: str, element_id: str) -> str:
    match = re.search(rf'<[a-z]+ [^>]*id="{element_id}"[^>]*>', page)
    assert match, f"no element #{element_id}"
    return match.group(0)


async def only_webhook(store: SqliteStorage) -> Webhook:
    [webhook] = await store.list_webhooks()
    return webhook


# --- the form -------------------------------------------------------------------------


async def test_the_form_labels_every_field_and_offers_all_27_events_in_two_groups(
    admin: Client,
) -> None:
    page = await page_of(admin)
    assert page.count('name="events"') == 27
    for name, item in samples.ALL.items():
        assert f'value="{name}"' in page, (name, item)
    for legend in ("Real-time", "Non-real-time (batched)", "Authentication", "Trigger events"):
        assert f"<legend>{legend}" in page
    assert 'name="all_realtime"' in page and 'name="all_batch"' in page
    assert "a learner enrolled in a course" in page  # each event's one-line description
    # Every visible input has a label naming it.
    ids = re.findall(r'<input (?![^>]*type="hidden")[^>]*id="([^"]+)"', page)
    assert len(ids) == 27 + 2 + 3 + 7  # events, select-alls, auth choices, the rest
    for element_id in ids:
        assert f'<label for="{element_id}"' in page, element_id
    assert "for Basic only" in page
    for button in ('value="save">Save</button>', 'name="action" value="test"'):
        assert button in page
    assert '<a class="cancel" href="/">Cancel</a>' in page
    assert "<script>" not in page and "style=" not in page  # the CSP allows neither
    assert '<script src="/static/console.js" defer></script>' in page
    script = await admin.get("/static/console.js")
    assert script.status == 200 and "javascript" in script.content_type


async def test_the_list_links_to_the_form(admin: Client) -> None:
    page = await page_of(admin, "/")
    assert '<a class="button" href="/webhooks/new">Add webhook</a>' in page


async def test_adding_a_signature_webhook_with_two_events_stores_it_with_a_secret(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    page = await page_of(admin)
    response = await post(admin, "/webhooks/new", new_webhook_fields(page, receiver.url))
    assert response.status == 303
    webhook = await only_webhook(engine.store)
    assert response.headers["Location"] == f"/webhooks/{webhook.id}?created=1"
    assert webhook.name == "LMS sync" and webhook.description == "to the HR system"
    assert webhook.target_url == receiver.url and webhook.contact_email == "lms@example.org"
    assert webhook.events == {"COURSE_ENROLLMENT", "COURSE_COMPLETED"}
    assert webhook.auth_type == "signature" and webhook.status == "active"
    [secret] = webhook.secrets
    assert secret.secret.reveal().startswith("whsec_")
    assert receiver.received == []  # saving sends nothing


async def test_adding_a_basic_webhook_stores_the_password_never_shown_again(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    page = await page_of(admin)
    fields = new_webhook_fields(
        page, receiver.url, auth="basic", username="lms", password="s3cret-pass-XYZ"
    )
    response = await post(admin, "/webhooks/new", fields)
    assert response.status == 303
    webhook = await only_webhook(engine.store)
    assert response.headers["Location"] == f"/webhooks/{webhook.id}"  # no ?created=1
    assert webhook.auth_type == "basic" and webhook.auth_username == "lms"
    assert webhook.auth_password is not None
    assert webhook.auth_password.reveal() == "s3cret-pass-XYZ"
    edit = await page_of(admin, f"/webhooks/{webhook.id}/edit")
    assert "s3cret-pass-XYZ" not in edit
    assert '<span class="badge">set</span>' in edit and "leave this empty to keep it" in edit
    assert 'id="password" name="password" type="password" value=""' in edit
    assert 'name="username" type="text" value="lms"' in edit
    assert 'value="basic" checked' in edit


async def test_select_all_of_a_group_works_without_javascript(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    page = await page_of(admin)
    fields = new_webhook_fields(page, receiver.url, events=["CI_STATS"], all_batch="1")
    assert (await post(admin, "/webhooks/new", fields)).status == 303
    webhook = await only_webhook(engine.store)
    assert webhook.events == {"CI_STATS", *samples.BATCH}
    edit = await page_of(admin, f"/webhooks/{webhook.id}/edit")
    fields = changed(form_fields(edit), all_realtime="1")
    assert (await post(admin, f"/webhooks/{webhook.id}/edit", fields)).status == 303
    assert (await only_webhook(engine.store)).events == set(samples.ALL)


# --- validation errors ------------------------------------------------------------------


async def test_a_bad_target_url_is_shown_next_to_its_field_with_the_values_kept(
    admin: Client, engine: Engine
) -> None:
    page = await page_of(admin)
    fields = new_webhook_fields(
        page,
        "not a url",
        name="Kept name",
        auth="basic",
        username="lms",
        password="typed-pass-123",
        events=["LEARNER_PROGRESS", "CI_STATS"],
    )
    response = await post(admin, "/webhooks/new", fields)
    assert response.status == 422
    page = await response.text()
    assert error_of(page, "target-url")
    target = tag_of(page, "target-url")
    assert 'aria-invalid="true"' in target
    assert 'aria-describedby="target-url-error target-url-hint"' in target
    assert 'value="not a url"' in target
    assert 'class="error-summary" role="alert"' in page and 'href="#target-url"' in page
    assert 'value="Kept name"' in tag_of(page, "name")
    assert "aria-invalid" not in tag_of(page, "name")
    assert 'value="to the HR system"' in tag_of(page, "description")
    assert 'value="lms@example.org"' in tag_of(page, "contact-email")
    assert 'value="lms"' in tag_of(page, "username")
    assert "checked" in tag_of(page, "auth-basic")
    for kept in ("LEARNER_PROGRESS", "CI_STATS"):
        assert "checked" in tag_of(page, f"event-{kept}")
    assert "checked" not in tag_of(page, "event-COURSE_ENROLLMENT")
    assert "typed-pass-123" not in page  # never rendered back
    assert 'value=""' in tag_of(page, "password")
    assert await engine.store.list_webhooks() == []


async def test_no_events_and_an_unknown_event_are_shown_at_the_events(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    page = await page_of(admin)
    response = await post(admin, "/webhooks/new", new_webhook_fields(page, receiver.url, events=[]))
    assert response.status == 422
    page = await response.text()
    assert "non-empty array of event names" in error_of(page, "events")
    assert 'aria-describedby="events-error"' in tag_of(page, "events")
    assert 'aria-invalid="true"' in tag_of(page, "event-CI_STATS")
    # A posted name that is no event (a crafted form): its path is events[1].
    fields = new_webhook_fields(page, receiver.url, events=["CI_STATS", "COURSE_ENROLMENT"])
    response = await post(admin, "/webhooks/new", fields)
    assert response.status == 422
    message = error_of(await response.text(), "events")
    assert "unknown event &#39;COURSE_ENROLMENT&#39;" in message
    assert "did you mean COURSE_ENROLLMENT?" in message
    assert await engine.store.list_webhooks() == []


async def test_a_name_already_taken_is_shown_next_to_the_name(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    first = await engine.webhook("https://hooks.example.org/in", name="LMS sync")
    page = await page_of(admin)
    response = await post(admin, "/webhooks/new", new_webhook_fields(page, receiver.url))
    assert response.status == 422
    page = await response.text()
    assert error_of(page, "name") == f"already used by webhook {first.id}"
    assert 'aria-describedby="name-error"' in tag_of(page, "name")
    assert [w.id for w in await engine.store.list_webhooks()] == [first.id]


async def test_basic_without_credentials_is_shown_at_username_and_password(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    page = await page_of(admin)
    response = await post(
        admin, "/webhooks/new", new_webhook_fields(page, receiver.url, auth="basic")
    )
    assert response.status == 422
    page = await response.text()
    assert "required for basic auth" in error_of(page, "username")
    assert error_of(page, "password") == "required for basic auth"
    assert 'aria-describedby="password-error password-hint"' in tag_of(page, "password")


@pytest.mark.parametrize(
    ("path", "element"),
    [
        ("name", "name"),
        ("targetUrl", "target-url"),
        ("auth", "auth"),
        ("auth.type", "auth"),
        ("auth.username", "username"),
        ("auth.password", "password"),
        ("auth.other", "auth"),
        ("events", "events"),
        ("events[3]", "events"),
        ("contactEmail", "contact-email"),
        ("active", "active"),
        ("", None),
        ("colour", None),
        ("events[x]", None),
    ],
)
def test_each_problem_path_has_its_place_on_the_form(path: str, element: str | None) -> None:
    assert forms.field_of(path) == element


# --- the limit ---------------------------------------------------------------------------


async def test_the_sixth_webhook_is_refused(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    limit = engine.config.delivery.max_webhooks
    assert limit == 5
    form_page = await page_of(admin)  # opened before the limit was reached
    for index in range(limit):
        await engine.webhook(f"https://hooks.example.org/{index}", name=f"hook {index}")
    new = await page_of(admin)
    assert 'id="limit-note"' in new and "At most 5 webhooks" in new
    assert 'class="webhook-form"' not in new and '<a href="/">Back to the webhooks</a>' in new
    listed = await page_of(admin, "/")
    assert '<button type="button" disabled aria-describedby="limit-note">Add webhook' in listed
    assert 'href="/webhooks/new"' not in listed
    response = await post(
        admin, "/webhooks/new", new_webhook_fields(form_page, receiver.url, name="sixth")
    )
    assert response.status == 409
    page = await response.text()
    assert "Nothing was saved: at most 5 webhooks can exist" in page
    assert 'value="sixth"' in tag_of(page, "name")
    assert len(await engine.store.list_webhooks()) == limit


# --- editing -------------------------------------------------------------------------------


async def basic_webhook(engine: Engine, url: str = "https://hooks.example.org/in") -> Webhook:
    return await engine.webhook(
        url,
        name="Basic one",
        events=frozenset({"COURSE_ENROLLMENT"}),
        auth_type="basic",
        auth_username="lms",
        auth_password=Secret("first-pass"),
    )


async def test_edit_keeps_the_stored_password_when_left_empty_and_replaces_it_when_typed(
    admin: Client, engine: Engine
) -> None:
    webhook = await basic_webhook(engine)
    edit_path = f"/webhooks/{webhook.id}/edit"
    fields = changed(form_fields(await page_of(admin, edit_path)), description="changed")
    assert ("password", "") in fields
    response = await post(admin, edit_path, fields)
    assert response.status == 303 and response.headers["Location"] == f"/webhooks/{webhook.id}"
    kept = await only_webhook(engine.store)
    assert kept.description == "changed" and kept.auth_username == "lms"
    assert kept.auth_password is not None and kept.auth_password.reveal() == "first-pass"

    fields = changed(form_fields(await page_of(admin, edit_path)), username="lms2")
    assert (await post(admin, edit_path, fields)).status == 303
    renamed = await only_webhook(engine.store)
    assert renamed.auth_username == "lms2" and renamed.auth_password == Secret("first-pass")

    fields = changed(form_fields(await page_of(admin, edit_path)), password="second-pass")
    assert (await post(admin, edit_path, fields)).status == 303
    replaced = await only_webhook(engine.store)
    assert replaced.auth_password is not None and replaced.auth_password.reveal() == "second-pass"
    assert "second-pass" not in await page_of(admin, edit_path)


async def test_edit_errors_keep_the_typed_values_and_save_nothing(
    admin: Client, engine: Engine
) -> None:
    webhook = await basic_webhook(engine)
    edit_path = f"/webhooks/{webhook.id}/edit"
    fields = changed(
        form_fields(await page_of(admin, edit_path)),
        drop=["events"],
        name="Renamed",
        password="not-kept-pass",
        contact_email="nobody",
    )
    response = await post(admin, edit_path, fields)
    assert response.status == 422
    page = await response.text()
    assert error_of(page, "contact-email") == "not an e-mail address"
    assert "non-empty array" in error_of(page, "events")
    assert 'value="Renamed"' in tag_of(page, "name") and "not-kept-pass" not in page
    assert '<span class="badge">set</span>' in page
    assert await only_webhook(engine.store) == webhook


async def test_switching_to_signature_on_edit_makes_a_secret_and_drops_the_password(
    admin: Client, engine: Engine
) -> None:
    webhook = await basic_webhook(engine)
    edit_path = f"/webhooks/{webhook.id}/edit"
    fields = changed(form_fields(await page_of(admin, edit_path)), auth_type="signature")
    assert (await post(admin, edit_path, fields)).status == 303
    switched = await only_webhook(engine.store)
    assert switched.auth_type == "signature" and switched.auth_password is None
    assert len(switched.secrets) == 1


async def test_toggling_active_off_archives_and_on_reactivates(
    admin: Client, engine: Engine
) -> None:
    webhook = await basic_webhook(engine)
    edit_path = f"/webhooks/{webhook.id}/edit"
    page = await page_of(admin, edit_path)
    assert "checked" in tag_of(page, "active")
    assert (await post(admin, edit_path, changed(form_fields(page), drop=["active"]))).status == 303
    assert (await only_webhook(engine.store)).status == "inactive"
    page = await page_of(admin, edit_path)
    assert "checked" not in tag_of(page, "active")
    assert (await post(admin, edit_path, changed(form_fields(page), active="1"))).status == 303
    assert (await only_webhook(engine.store)).status == "active"


async def test_saving_other_fields_leaves_a_disabled_webhook_disabled(
    admin: Client, engine: Engine
) -> None:
    webhook = await basic_webhook(engine)
    await engine.store.set_webhook_status(webhook.id, "disabled", "the receiver answered 410")
    edit_path = f"/webhooks/{webhook.id}/edit"
    page = await page_of(admin, edit_path)
    assert "Disabled by almhookd: the receiver answered 410" in page
    fields = changed(form_fields(page), description="still off")
    assert (await post(admin, edit_path, fields)).status == 303
    saved = await only_webhook(engine.store)
    assert saved.description == "still off" and saved.status == "disabled"
    assert saved.disabled_reason == "the receiver answered 410"
    # Ticking Active enables it again.
    fields = changed(form_fields(await page_of(admin, edit_path)), active="1")
    assert (await post(admin, edit_path, fields)).status == 303
    assert (await only_webhook(engine.store)).status == "active"


async def test_an_unknown_webhook_has_no_edit_form(admin: Client) -> None:
    response = await admin.get("/webhooks/wh_missing/edit")
    assert response.status == 404
    page = await response.text()
    assert "no webhook with id &#39;wh_missing&#39;" in page


# --- Test webhook ---------------------------------------------------------------------


def draft_fields(page: str, url: str, **extra: str) -> Fields:
    return [*new_webhook_fields(page, url, name="Draft", **extra), ("action", "test")]


async def test_testing_an_unsaved_form_sends_a_signed_request_and_saves_nothing(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    page = await page_of(admin)
    response = await post(admin, "/webhooks/new", draft_fields(page, receiver.url))
    assert response.status == 200
    page = await response.text()
    assert "Test webhook: ok" in page
    assert "<dt>HTTP status</dt><dd>202</dd>" in page
    assert re.search(r"<dt>Duration</dt><dd>[0-9]+ ms</dd>", page)
    assert '<pre class="answer">answer 202</pre>' in page
    assert "Signed with a throw-away secret" in page and "Nothing was saved." in page
    assert 'value="Draft"' in tag_of(page, "name")  # the form is still there, as typed
    assert await engine.store.list_webhooks() == []
    [request] = receiver.received
    assert request.headers["almhookd-test"] == "true"
    assert request.payload["events"][0]["eventName"] in {"COURSE_ENROLLMENT", "COURSE_COMPLETED"}
    secret = re.search(r'<code class="secret">(whsec_[^<]+)</code>', page)
    assert secret and verify(secret.group(1), request.headers, request.body)


async def test_testing_against_a_failing_receiver_shows_its_status_and_answer(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    async def refuses(request: web.Request) -> web.Response:
        return web.Response(status=500, text="<script>alert('boom')</script> down")

    receiver.respond(refuses)
    page = await page_of(admin)
    response = await post(admin, "/webhooks/new", draft_fields(page, receiver.url, auth="none"))
    assert response.status == 200
    page = await response.text()
    assert "Test webhook: failed" in page and 'class="test-result test-failed"' in page
    assert "<dt>HTTP status</dt><dd>500</dd>" in page
    assert "&lt;script&gt;alert(&#39;boom&#39;)&lt;/script&gt; down</pre>" in page
    assert "<script>alert" not in page
    assert "throw-away" not in page  # not signed
    assert len(receiver.received) == 1
    assert "webhook-signature" not in {key.lower() for key in receiver.received[0].headers}
    assert await engine.store.list_webhooks() == []


async def test_testing_an_invalid_form_shows_its_errors_and_sends_nothing(
    admin: Client, receiver: Receiver
) -> None:
    page = await page_of(admin)
    response = await post(admin, "/webhooks/new", draft_fields(page, "ftp://example.org/x"))
    assert response.status == 422
    assert error_of(await response.text(), "target-url")
    assert receiver.received == []


async def test_testing_an_edit_uses_the_forms_values_and_the_stored_password(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    webhook = await basic_webhook(engine, receiver.url)
    edit_path = f"/webhooks/{webhook.id}/edit"
    fields = changed(form_fields(await page_of(admin, edit_path)), name="Not saved", action="test")
    response = await post(admin, edit_path, [*fields, ("events", "LEARNER_PROGRESS")])
    assert response.status == 200
    page = await response.text()
    assert "Test webhook: ok" in page and "first-pass" not in page
    [request] = receiver.received
    assert request.headers["Authorization"] == "Basic bG1zOmZpcnN0LXBhc3M="  # lms:first-pass
    assert request.payload["events"][0]["eventName"] == "COURSE_ENROLLMENT"
    assert await only_webhook(engine.store) == webhook  # nothing saved


# --- CSRF, sessions, escaping ------------------------------------------------------------


async def test_a_post_without_the_csrf_token_is_refused_and_saves_nothing(
    admin: Client, engine: Engine, receiver: Receiver
) -> None:
    page = await page_of(admin)
    valid = new_webhook_fields(page, receiver.url)
    for forged in (changed(valid, drop=["csrf_token"]), changed(valid, csrf_token="forged")):
        response = await post(admin, "/webhooks/new", forged)
        assert response.status == 403
        assert "The form expired" in await response.text()
        test = await post(admin, "/webhooks/new", [*forged, ("action", "test")])
        assert test.status == 403
    assert await engine.store.list_webhooks() == []
    assert receiver.received == []
    webhook = await basic_webhook(engine)
    edit_path = f"/webhooks/{webhook.id}/edit"
    fields = changed(form_fields(await page_of(admin, edit_path)), drop=["csrf_token", "active"])
    assert (await post(admin, edit_path, fields)).status == 403
    assert await only_webhook(engine.store) == webhook


async def test_the_form_needs_a_session(console: Client) -> None:
    response = await console.get("/webhooks/new", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/signin?next=%2Fwebhooks%2Fnew"
    posted = await console.post("/webhooks/new", data={"name": "x"}, allow_redirects=False)
    assert posted.status == 403


async def test_a_malicious_name_is_text_in_the_edit_form(
    console: Client, store: SqliteStorage
) -> None:
    webhook = await store.create_webhook(
        NewWebhook(
            name='"><script>alert(1)</script>',
            description="<b>bold</b>",
            target_url="https://hooks.example.org/<i>in</i>",
            events=frozenset({"COURSE_ENROLLMENT"}),
            auth_type="basic",
            auth_username='x" onfocus="alert(2)',
            auth_password=Secret("p"),
        )
    )
    await sign_in(console)
    page = await page_of(console, f"/webhooks/{webhook.id}/edit")
    assert "<script>alert" not in page and "<b>bold" not in page and "<i>in" not in page
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in tag_of(page, "name")
    assert '<span class="name">&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;</span>' in page
    assert 'value="&lt;b&gt;bold&lt;/b&gt;"' in tag_of(page, "description")
    assert 'value="x&#34; onfocus=&#34;alert(2)"' in tag_of(page, "username")
    assert 'onfocus="' not in page
