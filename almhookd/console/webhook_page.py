"""The webhook page: one webhook's settings, state and health, and what an admin does to
it: edit (a link to the form), delete after a confirmation step, archive or re-activate,
download and rotate its signing secret, read its deliveries and attempts page by page,
and replay (selected deliveries, or everything since a time typed as a duration or a
date).

Every action runs the admin API's own function (:mod:`almhookd.api.actions`), so the
console and the API validate and act alike; every form posts its session's CSRF token
(:func:`~almhookd.console.common.posted_form`). No secret reaches a template: the page
shows that a password or a signing secret is set, and when secrets were made and until
when they sign, never their value. The signing secret leaves only as the API's JSON
download.

Routes (:func:`add_routes`; names start with ``console.``, so the API's bearer check
leaves them to the session check):

=====  ==================================  ============================================
GET    ``/webhooks/{id}``                  the page
GET    ``/webhooks/{id}/signature.json``   the API's secret document, as a download
POST   ``/webhooks/{id}/rotate``           a new signing secret
POST   ``/webhooks/{id}/activation``       archive (``active=false``) or re-activate
GET    ``/webhooks/{id}/delete``           "Delete …?" with the confirming form
POST   ``/webhooks/{id}/delete``           delete, then to the list
GET    ``/webhooks/{id}/deliveries``       ``?state=&cursor=``: deliveries, a page
GET    ``/webhooks/{id}/attempts``         ``?cursor=``: the request log, a page
POST   ``/webhooks/{id}/replay``           ``what=since`` (``since``) or ``what=selected``
                                           (``event_id``, repeated)
=====  ==================================  ============================================
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

from aiohttp import web

from almhookd.api import actions
from almhookd.api.common import CLOCK, STATE, ApiError
from almhookd.config import format_duration
from almhookd.console.common import (
    Form,
    Handler,
    Page,
    error_page,
    page,
    posted_form,
    redirect,
    render,
    secured,
)
from almhookd.console.sessions import Session
from almhookd.console.webhooks import age, since, until
from almhookd.domain.catalogue import CATALOGUE
from almhookd.domain.replay import Reason, SinceRefused, since_ms
from almhookd.domain.webhooks import Webhook
from almhookd.errors import InvalidInput

__all__ = ["add_routes", "parse_since"]

#: Rows on a page of deliveries or attempts (``?limit=`` changes it, up to the API's
#: own maximum).
PAGE_SIZE: Final = 50
#: Attempts shown on the webhook page itself; the rest are on the attempts page.
RECENT_ATTEMPTS: Final = 5
#: Characters of a receiver's answer in the attempt's summary line, and in its details.
EXCERPT_SUMMARY_CHARS: Final = 60
EXCERPT_CHARS: Final = 1024
#: Longest "since" value taken (a duration or a date and time is far shorter).

_STATES: Final = ("pending", "sending", "delivered", "expired")
_ACTIVATION_NOTES: Final = {
    "archived": "Archived: nothing is sent to it, and new events are not queued for it, "
    "until it is re-activated.",
    "reactivated": "Re-activated: it is sent its events again.",
}


# --- formatting ---------------------------------------------------------------------


def when(milliseconds: int | None) -> str:
    """An instant for people, in UTC: ``2026-11-30 14:00:05 UTC``."""
    if milliseconds is None:
        return "—"
    moment = datetime.fromtimestamp(milliseconds / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(milliseconds: int) -> str:
    """An instant for machines (a ``<time datetime>``)."""
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")


def grace_text(seconds: float) -> str:
    """The rotation grace period as the page states it: ``24 h``, ``7 d``, ``90 min``."""
    if seconds >= 2 * 86_400 and seconds % 86_400 == 0:
        return f"{int(seconds // 86_400)} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


#: What the page says of a "since" it cannot use, by reason.
SINCE_REFUSALS: Final[dict[Reason, str]] = {
    "empty": "Enter a duration such as 2h, or a date and time such as 2026-11-30 14:00.",
    "too_long": "That is too long for a duration or a date and time.",
    "unreadable": "Not a duration (30m, 2h, 1d) nor a date and time "
    "(2026-11-30 14:00, or ISO 8601 such as 2026-11-30T14:00:00+01:00).",
    "future": "That time is in the future: nothing was ingested since then.",
}


def parse_since(text: str, now: float) -> int:
    """Epoch milliseconds of a replay's "since" (:func:`almhookd.domain.replay.since_ms`);
    raises :class:`ValueError` with a message for the page."""
    try:
        return since_ms(text, now_ms=int(now * 1000))
    except SinceRefused as refused:
        raise ValueError(SINCE_REFUSALS[refused.reason]) from None


def _excerpt(body: str) -> dict[str, Any]:
    """A receiver's answer as the attempts table shows it: a one-line summary and the
    first EXCERPT_CHARS (the template escapes both)."""
    line = " ".join(body.split())
    return {
        "summary": line[:EXCERPT_SUMMARY_CHARS]
        + ("…" if len(line) > EXCERPT_SUMMARY_CHARS else ""),
        "text": body[:EXCERPT_CHARS],
        "truncated": len(body) > EXCERPT_CHARS,
        "length": len(body),
    }


def _event_groups(names: Iterable[str]) -> list[dict[str, Any]]:
    """The subscribed events grouped by kind, each with its one-line description."""
    groups: dict[str, list[dict[str, str]]] = {"Real-time": [], "Batch": [], "Unknown": []}
    for name in sorted(names):
        event = CATALOGUE.get(name)
        kind = "Unknown" if event is None else "Real-time" if event.realtime else "Batch"
        groups[kind].append({"name": name, "description": event.description if event else ""})
    return [{"kind": kind, "events": events} for kind, events in groups.items() if events]


def _signing(webhook: Webhook, now_ms: int) -> dict[str, Any] | None:
    """When the secrets in force were made and until when the previous ones sign; never
    a secret itself."""
    if webhook.auth_type != "signature":
        return None
    in_force = sorted(
        (s for s in webhook.secrets if s.in_force(now_ms)), key=lambda s: -s.created_at_ms
    )
    previous = [s.expires_at_ms for s in in_force[1:] if s.expires_at_ms is not None]
    return {
        "current_created_at": in_force[0].created_at_ms if in_force else None,
        "previous_until": previous,
        "previous_last_until": max(previous, default=None),
    }


def _href(path: str, query: Mapping[str, str | None]) -> str:
    kept = {key: value for key, value in query.items() if value}
    return path + ("?" + urlencode(kept) if kept else "")


def _page_links(
    path: str, query: Mapping[str, str], cursor: int | None, next_cursor: str | None
) -> dict[str, str | None]:
    """The "first page" and "next page" links of a paged list, keeping its ``query``
    (filters, page size): first only past the first page, next only while more follow."""
    return {
        "first_href": _href(path, query) if cursor else None,
        "next_href": _href(path, {**query, "cursor": next_cursor}) if next_cursor else None,
    }


def _base(webhook_id: str) -> str:
    return "/webhooks/" + quote(webhook_id, safe="")


def _text(form: Form, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _query_count(request: web.Request, name: str) -> int | None:
    value = request.query.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 10 else None


# --- errors as pages ----------------------------------------------------------------


def _error_page(request: web.Request, session: Session, error: ApiError) -> web.StreamResponse:
    if error.status == 404:
        webhook_id = request.match_info.get("webhook_id", "")
        title, message = "Not found", f"There is no webhook with id “{webhook_id}”."
    elif error.status == 409:
        title, message = "Not possible", error.message
    else:
        title, message = "Bad request", error.message
    return error_page(request, session, status=error.status, title=title, message=message)


def _webhook_page(handler: Page) -> Handler:
    """A page of the webhook pages: a session needed (:func:`page`), and the API's
    errors (no such webhook, a bad cursor) shown as an error page, not as JSON."""

    async def answered(request: web.Request, session: Session) -> web.StreamResponse:
        try:
            return await handler(request, session)
        except ApiError as error:
            return _error_page(request, session, error)

    return page(answered)


async def _find(request: web.Request) -> Webhook:
    return await actions.find_webhook(request.app, request.match_info["webhook_id"])


# --- the page -----------------------------------------------------------------------


async def _overview(
    request: web.Request,
    session: Session,
    webhook: Webhook,
    *,
    since_value: str = "",
    since_error: str | None = None,
    status: int = 200,
) -> web.StreamResponse:
    app = request.app
    now_ms = int(app[CLOCK]() * 1000)
    config = app[STATE].config
    document = await actions.webhook_document(app, webhook)
    recent = await actions.attempts_page(app, webhook, limit=RECENT_ATTEMPTS, cursor=None)
    activation = request.query.get("activation", "")
    return render(
        request,
        "webhook.html",
        {
            "title": webhook.name,
            "webhook": document,
            "base": _base(webhook.id),
            "events": _event_groups(document["events"]),
            "signing": _signing(webhook, now_ms),
            "grace": grace_text(config.delivery.secret_rotation_grace)
            if config.delivery.secret_rotation_grace > 0
            else None,
            "retention": format_duration(config.storage.retention),
            "attempts": [
                {**attempt, "excerpt": _excerpt(attempt["responseBody"])}
                for attempt in recent["attempts"]
            ],
            "more_attempts": recent["nextCursor"] is not None,
            "since_value": since_value,
            "since_error": since_error,
            "queued": _query_count(request, "queued"),
            "rotated": request.query.get("rotated") == "1",
            "activation_note": _ACTIVATION_NOTES.get(activation),
            "now_ms": now_ms,
            "age": age,
            "since": since,
            "until": until,
            "when": when,
            "iso": iso,
        },
        session=session,
        status=status,
    )


@_webhook_page
async def webhook_page(request: web.Request, session: Session) -> web.StreamResponse:
    return await _overview(request, session, await _find(request))


@_webhook_page
async def signature_download(request: web.Request, session: Session) -> web.StreamResponse:
    """The JSON file of ``GET /v1/webhooks/{id}/secret``: the same document and headers."""
    webhook = await _find(request)
    document = actions.secret_document(webhook, int(request.app[CLOCK]() * 1000))
    response = web.json_response(
        document,
        headers={"Content-Disposition": f'attachment; filename="{webhook.id}-secret.json"'},
    )
    return secured(response)  # with Cache-Control: no-store, as the API's


@_webhook_page
async def rotate(request: web.Request, session: Session) -> web.StreamResponse:
    await posted_form(request, session)
    webhook = await _find(request)
    # The document carries the new secret: only its dates go on, in the redirect's page.
    await actions.rotate_secret(request.app, webhook.id)
    return redirect(_base(webhook.id) + "?rotated=1#signing")


@_webhook_page
async def activation(request: web.Request, session: Session) -> web.StreamResponse:
    form = await posted_form(request, session)
    wanted = _text(form, "active")
    if wanted not in ("true", "false"):
        raise ApiError(400, "bad_request", "active must be true or false")
    webhook = await actions.update(
        request.app, request.match_info["webhook_id"], {"active": wanted == "true"}
    )
    done = "reactivated" if webhook.active else "archived"
    return redirect(_base(webhook.id) + f"?activation={done}")


@_webhook_page
async def delete_confirmation(request: web.Request, session: Session) -> web.StreamResponse:
    webhook = await _find(request)
    return render(
        request,
        "webhook_delete.html",
        {"title": f"Delete {webhook.name}", "name": webhook.name, "base": _base(webhook.id)},
        session=session,
    )


@_webhook_page
async def delete(request: web.Request, session: Session) -> web.StreamResponse:
    await posted_form(request, session)
    webhook = await _find(request)
    await actions.delete(request.app, webhook.id)
    return redirect("/?" + urlencode({"deleted": webhook.name}))


# --- deliveries and attempts --------------------------------------------------------


async def _deliveries(
    request: web.Request,
    session: Session,
    webhook: Webhook,
    query: Mapping[str, str],
    *,
    error: str | None = None,
    selected: Collection[str] = (),
    status: int = 200,
) -> web.StreamResponse:
    state, cursor_text, limit_text = (
        query.get("state", ""),
        query.get("cursor", ""),
        query.get("limit", ""),
    )
    limit, cursor = actions.page_params(limit_text or str(PAGE_SIZE), cursor_text or None)
    listed = await actions.deliveries_page(
        request.app, webhook, state=state or None, limit=limit, cursor=cursor
    )
    base = _base(webhook.id)
    path = base + "/deliveries"
    return render(
        request,
        "webhook_deliveries.html",
        {
            "title": f"Deliveries · {webhook.name}",
            "webhook": await actions.webhook_document(request.app, webhook),
            "base": base,
            "deliveries": listed["deliveries"],
            "states": _STATES,
            "state": state,
            "cursor": cursor_text,
            "limit": limit_text,
            **_page_links(
                path, {"state": state, "limit": limit_text}, cursor, listed["nextCursor"]
            ),
            "error": error,
            "selected": frozenset(selected),
            "queued": _query_count(request, "queued"),
            "when": when,
        },
        session=session,
        status=status,
    )


@_webhook_page
async def deliveries(request: web.Request, session: Session) -> web.StreamResponse:
    return await _deliveries(request, session, await _find(request), request.query)


@_webhook_page
async def attempts(request: web.Request, session: Session) -> web.StreamResponse:
    webhook = await _find(request)
    cursor_text, limit_text = request.query.get("cursor", ""), request.query.get("limit", "")
    limit, cursor = actions.page_params(limit_text or str(PAGE_SIZE), cursor_text or None)
    listed = await actions.attempts_page(request.app, webhook, limit=limit, cursor=cursor)
    base = _base(webhook.id)
    path = base + "/attempts"
    return render(
        request,
        "webhook_attempts.html",
        {
            "title": f"Attempts · {webhook.name}",
            "webhook": await actions.webhook_document(request.app, webhook),
            "base": base,
            "attempts": [
                {**attempt, "excerpt": _excerpt(attempt["responseBody"])}
                for attempt in listed["attempts"]
            ],
            **_page_links(path, {"limit": limit_text}, cursor, listed["nextCursor"]),
            "when": when,
            "iso": iso,
        },
        session=session,
    )


# --- replay -------------------------------------------------------------------------


def _problems(error: InvalidInput) -> str:
    return "; ".join(problem.message for problem in error.problems) or error.message


@_webhook_page
async def replay(request: web.Request, session: Session) -> web.StreamResponse:
    form = await posted_form(request, session)
    webhook = await _find(request)
    app = request.app
    if _text(form, "what") == "selected":
        event_ids = [value for value in form.getall("event_id", []) if isinstance(value, str)]
        back = {name: _text(form, name) for name in ("state", "cursor", "limit")}
        if not event_ids:
            return await _deliveries(
                request,
                session,
                webhook,
                back,
                error="Select the deliveries to replay first.",
                status=422,
            )
        try:
            queued = await actions.replay(app, webhook, {"eventIds": event_ids})
        except InvalidInput as error:
            return await _deliveries(
                request,
                session,
                webhook,
                back,
                error=_problems(error),
                selected=event_ids,
                status=422,
            )
        return redirect(_href(_base(webhook.id) + "/deliveries", {**back, "queued": str(queued)}))
    typed = _text(form, "since")
    try:
        since_ms = parse_since(typed, app[CLOCK]())
        queued = await actions.replay(app, webhook, {"since": since_ms})
    except (ValueError, InvalidInput) as error:
        message = _problems(error) if isinstance(error, InvalidInput) else str(error)
        return await _overview(
            request, session, webhook, since_value=typed, since_error=message, status=422
        )
    return redirect(_base(webhook.id) + f"?queued={queued}#replay")


def add_routes(router: web.UrlDispatcher) -> None:
    """The webhook pages' routes, named ``console.webhook…``."""
    path = "/webhooks/{webhook_id}"
    router.add_get(path, webhook_page, name="console.webhook")
    router.add_get(path + "/signature.json", signature_download, name="console.webhook_signature")
    router.add_post(path + "/rotate", rotate, name="console.webhook_rotate")
    router.add_post(path + "/activation", activation, name="console.webhook_activation")
    router.add_get(path + "/delete", delete_confirmation, name="console.webhook_delete_form")
    router.add_post(path + "/delete", delete, name="console.webhook_delete")
    router.add_get(path + "/deliveries", deliveries, name="console.webhook_deliveries")
    router.add_get(path + "/attempts", attempts, name="console.webhook_attempts")
    router.add_post(path + "/replay", replay, name="console.webhook_replay")
