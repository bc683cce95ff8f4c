"""The Add / Edit form of a webhook, with "Test webhook" on the unsaved values.

Saving builds the admin API's own create (``POST /v1/webhooks``) or patch (``PATCH
/v1/webhooks/{id}``) body from the form and runs :func:`almhookd.api.actions.create` or
:func:`~almhookd.api.actions.update`; testing runs :func:`~almhookd.api.actions.test_draft`
on the form's values, saving nothing. So the form can never accept what the API refuses:
each :class:`~almhookd.errors.Problem` of the API comes back next to its field (its
``path`` names the field, :func:`field_of`), with what was typed kept, except passwords.

Works without JavaScript: the Basic credentials are always shown (with a hint), and the
"all of this group" boxes of the trigger events are expanded here, on the server. The
optional ``static/console.js`` only hides and ticks what the choices imply.

An edit sends only what differs from the stored webhook: an empty password keeps the
stored one, and ``active`` is sent only when the box was changed from what the form
showed, so saving a description neither re-enables a webhook the daemon disabled nor
resets its failure schedule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from almhookd.api import actions
from almhookd.api.common import STATE, STORE, ApiError
from almhookd.console.common import Form, error_page, page, posted_form, redirect, render
from almhookd.console.sessions import Session
from almhookd.domain.catalogue import CATALOGUE, EventType
from almhookd.domain.webhooks import MAX_DESCRIPTION, MAX_EMAIL, MAX_NAME, MAX_URL, Webhook
from almhookd.errors import InvalidInput, Problem

__all__ = ["add_routes", "field_of"]

REALTIME: Final[tuple[EventType, ...]] = tuple(e for e in CATALOGUE.values() if e.realtime)
BATCH: Final[tuple[EventType, ...]] = tuple(e for e in CATALOGUE.values() if not e.realtime)
#: The "select all of a group" boxes, expanded here: they work without JavaScript.
GROUPS: Final[Mapping[str, tuple[EventType, ...]]] = {"all_realtime": REALTIME, "all_batch": BATCH}

#: Problem path → the id of the form element it is shown next to.
FIELDS: Final[Mapping[str, str]] = {
    "name": "name",
    "description": "description",
    "targetUrl": "target-url",
    "auth": "auth",
    "auth.type": "auth",
    "auth.username": "username",
    "auth.password": "password",
    "events": "events",
    "contactEmail": "contact-email",
    "active": "active",
}
#: What each field is called on the form (the error summary names it).
LABELS: Final[Mapping[str, str]] = {
    "name": "Name",
    "description": "Description",
    "target-url": "Target URL",
    "auth": "Authentication",
    "username": "Username",
    "password": "Password",
    "events": "Trigger events",
    "contact-email": "Contact e-mail",
    "active": "Activation status",
}
_EVENT_ITEM: Final = re.compile(r"events\[[0-9]+\]")


def field_of(path: str) -> str | None:
    """The form element a problem at ``path`` belongs to, or ``None`` (the summary)."""
    if path in FIELDS:
        return FIELDS[path]
    if _EVENT_ITEM.fullmatch(path):
        return "events"
    if path.startswith("auth."):
        return "auth"
    return None


@dataclass(kw_only=True, slots=True)
class Values:
    """What the form holds. ``password`` is read from a post, never rendered."""

    name: str = ""
    description: str = ""
    target_url: str = ""
    auth_type: str = "signature"
    username: str = ""
    password: str = field(default="", repr=False)
    events: list[str] = field(default_factory=list)
    contact_email: str = ""
    active: bool = True
    #: Edit: whether the form showed the webhook active (``active`` is sent on a change)
    active_shown: bool = True

    @classmethod
    def of(cls, webhook: Webhook) -> Values:
        return cls(
            name=webhook.name,
            description=webhook.description,
            target_url=webhook.target_url,
            auth_type=webhook.auth_type,
            username=webhook.auth_username or "",
            events=_catalogue_order(webhook.events),
            contact_email=webhook.contact_email,
            active=webhook.active,
            active_shown=webhook.active,
        )

    @classmethod
    def posted(cls, form: Form, *, shown_default: bool) -> Values:
        events: list[str] = []
        for name in form.getall("events", []):
            if isinstance(name, str) and name not in events:
                events.append(name)
        for box, group in GROUPS.items():
            if _text(form, box):
                events.extend(e.name for e in group if e.name not in events)
        shown = _text(form, "active_shown")
        return cls(
            name=_text(form, "name"),
            description=_text(form, "description"),
            target_url=_text(form, "target_url"),
            auth_type=_text(form, "auth_type"),
            username=_text(form, "username"),
            password=_text(form, "password"),
            events=events,
            contact_email=_text(form, "contact_email"),
            active=bool(_text(form, "active")),
            active_shown=shown == "1" if shown in ("0", "1") else shown_default,
        )

    def create_body(self) -> dict[str, Any]:
        """The API's create body (``POST /v1/webhooks``, ``POST /v1/webhooks/test``)."""
        auth: dict[str, Any] = {"type": self.auth_type}
        if self.auth_type == "basic":
            auth.update(username=self.username, password=self.password)
        return {
            "name": self.name,
            "description": self.description,
            "targetUrl": self.target_url,
            "auth": auth,
            "events": list(self.events),
            "active": self.active,
            "contactEmail": self.contact_email,
        }

    def patch_body(self, current: Webhook) -> dict[str, Any]:
        """The API's patch body: what differs from ``current``. An empty password leaves
        ``auth.password`` out, which keeps the stored one (``parse_webhook_changes``)."""
        body: dict[str, Any] = {}
        for key, value, stored in (
            ("name", self.name, current.name),
            ("description", self.description, current.description),
            ("targetUrl", self.target_url, current.target_url),
            ("contactEmail", self.contact_email, current.contact_email),
        ):
            if value != stored:
                body[key] = value
        if set(self.events) != current.events:
            body["events"] = list(self.events)
        if self.auth_type != current.auth_type or (
            self.auth_type == "basic"
            and (self.password or self.username != (current.auth_username or ""))
        ):
            auth: dict[str, Any] = {"type": self.auth_type}
            if self.auth_type == "basic":
                auth["username"] = self.username
                if self.password:
                    auth["password"] = self.password
            body["auth"] = auth
        if self.active != self.active_shown:
            body["active"] = self.active
        return body


def _text(form: Form, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _catalogue_order(names: frozenset[str]) -> list[str]:
    return [name for name in CATALOGUE if name in names]


def _webhook_path(webhook_id: str) -> str:
    return "/webhooks/" + quote(webhook_id, safe="")


@dataclass(frozen=True, kw_only=True, slots=True)
class Shown:
    """One problem as the form shows it: next to ``field`` (or only in the summary)."""

    field: str | None
    label: str
    message: str


def _shown(problems: Sequence[Problem]) -> list[Shown]:
    shown = []
    for problem in problems:
        element = field_of(problem.path)
        label = LABELS[element] if element else (problem.path or "The form")
        shown.append(Shown(field=element, label=label, message=problem.message))
    return shown


def _render_form(
    request: web.Request,
    session: Session,
    values: Values,
    *,
    editing: Webhook | None,
    problems: Sequence[Problem] = (),
    top_error: str | None = None,
    result: dict[str, Any] | None = None,
    tested_auth: str | None = None,
    at_limit: bool = False,
    status: int = 200,
) -> web.StreamResponse:
    shown = _shown(problems)
    errors: dict[str, list[str]] = {}
    for item in shown:
        if item.field:
            errors.setdefault(item.field, []).append(item.message)
    path = _webhook_path(editing.id) if editing else "/webhooks/new"
    return render(
        request,
        "webhook_form.html",
        {
            "title": "Edit webhook" if editing else "Add webhook",
            "editing": editing,
            "action": path + "/edit" if editing else path,
            "cancel": path if editing else "/",
            "values": values,
            "checked": frozenset(values.events),
            "password_set": editing is not None and editing.auth_password is not None,
            "errors": errors,
            "summary": shown,
            "top_error": top_error,
            "result": result,
            "tested_auth": tested_auth,
            "at_limit": at_limit,
            "limit": request.app[STATE].config.delivery.max_webhooks,
            "realtime": REALTIME,
            "batch": BATCH,
            "max": {"name": MAX_NAME, "description": MAX_DESCRIPTION, "url": MAX_URL},
            "max_email": MAX_EMAIL,
        },
        session=session,
        status=status,
    )


def _error_page(request: web.Request, session: Session, error: ApiError) -> web.StreamResponse:
    title = "Not found" if error.status == 404 else "Not possible"
    return error_page(request, session, status=error.status, title=title, message=error.message)


async def _at_limit(app: web.Application) -> bool:
    return await app[STORE].count_webhooks() >= app[STATE].config.delivery.max_webhooks


async def _tested(
    request: web.Request,
    session: Session,
    values: Values,
    body: dict[str, Any],
    *,
    editing: Webhook | None,
) -> web.StreamResponse:
    """The "Test webhook" button: the API's draft test on the form's values; nothing is saved."""
    try:
        result = await actions.test_draft(request.app, body)
    except InvalidInput as invalid:
        return _render_form(
            request, session, values, editing=editing, problems=invalid.problems, status=422
        )
    return _render_form(
        request, session, values, editing=editing, result=result, tested_auth=values.auth_type
    )


@page
async def new_form(request: web.Request, session: Session) -> web.StreamResponse:
    at_limit = await _at_limit(request.app)
    return _render_form(request, session, Values(), editing=None, at_limit=at_limit)


@page
async def create_webhook(request: web.Request, session: Session) -> web.StreamResponse:
    form = await posted_form(request, session)
    values = Values.posted(form, shown_default=True)
    body = values.create_body()
    if _text(form, "action") == "test":
        return await _tested(request, session, values, body, editing=None)
    try:
        webhook = await actions.create(request.app, body)
    except InvalidInput as invalid:
        return _render_form(
            request, session, values, editing=None, problems=invalid.problems, status=422
        )
    except ApiError as error:  # 409: the webhook limit
        return _render_form(
            request, session, values, editing=None, top_error=error.message, status=error.status
        )
    created = "?created=1" if webhook.auth_type == "signature" else ""
    return redirect(_webhook_path(webhook.id) + created)


@page
async def edit_form(request: web.Request, session: Session) -> web.StreamResponse:
    try:
        webhook = await actions.find_webhook(request.app, request.match_info["webhook_id"])
    except ApiError as error:
        return _error_page(request, session, error)
    return _render_form(request, session, Values.of(webhook), editing=webhook)


@page
async def update_webhook(request: web.Request, session: Session) -> web.StreamResponse:
    form = await posted_form(request, session)
    try:
        webhook = await actions.find_webhook(request.app, request.match_info["webhook_id"])
    except ApiError as error:
        return _error_page(request, session, error)
    values = Values.posted(form, shown_default=webhook.active)
    if _text(form, "action") == "test":
        body = values.create_body()
        if (
            values.auth_type == "basic"
            and not values.password
            and webhook.auth_type == "basic"
            and webhook.auth_password is not None
        ):
            # The draft is the webhook as it would be saved: with its stored password.
            body["auth"]["password"] = webhook.auth_password.reveal()
        return await _tested(request, session, values, body, editing=webhook)
    body = values.patch_body(webhook)
    if body:
        try:
            webhook = await actions.update(request.app, webhook.id, body)
        except InvalidInput as invalid:
            return _render_form(
                request, session, values, editing=webhook, problems=invalid.problems, status=422
            )
        except ApiError as error:
            if error.status == 404:  # deleted meanwhile
                return _error_page(request, session, error)
            return _render_form(
                request,
                session,
                values,
                editing=webhook,
                top_error=error.message,
                status=error.status,
            )
    return redirect(_webhook_path(webhook.id))


def add_routes(router: web.UrlDispatcher) -> None:
    """The form's routes. Their names start with ``console.``: the API's bearer check
    leaves them to the console's session check."""
    router.add_get("/webhooks/new", new_form, name="console.webhook_new")
    router.add_post("/webhooks/new", create_webhook, name="console.webhook_create")
    router.add_get("/webhooks/{webhook_id}/edit", edit_form, name="console.webhook_edit")
    router.add_post("/webhooks/{webhook_id}/edit", update_webhook, name="console.webhook_update")
