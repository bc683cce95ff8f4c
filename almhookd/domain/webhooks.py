"""Webhooks (subscriptions) as values, and validation of what admins send. Pure."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from almhookd.config import Secret
from almhookd.domain.catalogue import CATALOGUE, suggest_event_name
from almhookd.domain.policy import Schedule
from almhookd.domain.targets import TargetRefused, check_url
from almhookd.errors import InvalidInput, Problem

AUTH_TYPES: Final = ("none", "basic", "signature")
STATUSES: Final = ("active", "inactive", "disabled")


@dataclass(frozen=True, kw_only=True, slots=True)
class SigningSecret:
    secret: Secret
    created_at_ms: int
    expires_at_ms: int | None = None  #: set when a rotation retires it

    def in_force(self, now_ms: int) -> bool:
        return self.expires_at_ms is None or now_ms < self.expires_at_ms


@dataclass(frozen=True, kw_only=True, slots=True)
class NewWebhook:
    """What creating a webhook takes."""

    name: str
    target_url: str
    events: frozenset[str]
    description: str = ""
    auth_type: str = "none"
    auth_username: str | None = None
    auth_password: Secret | None = None
    active: bool = True
    contact_email: str = ""


#: ``inactive``: archived by the admin; ``disabled``: by almhookd (a 410, or failing for
#: the whole retention), with a reason.
WebhookStatus = Literal["active", "inactive", "disabled"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Webhook:
    id: str
    name: str
    description: str
    target_url: str
    auth_type: str
    auth_username: str | None
    auth_password: Secret | None
    events: frozenset[str]
    status: WebhookStatus
    disabled_reason: str | None
    contact_email: str
    created_at_ms: int
    updated_at_ms: int
    schedule: Schedule = field(default_factory=Schedule)
    secrets: tuple[SigningSecret, ...] = ()

    @property
    def active(self) -> bool:
        return self.status == "active"

    def secrets_in_force(self, now_ms: int) -> list[str]:
        """Newest first, as the signature header lists them."""
        valid = [s for s in self.secrets if s.in_force(now_ms)]
        return [s.secret.reveal() for s in sorted(valid, key=lambda s: -s.created_at_ms)]


def unsaved_webhook(
    new: NewWebhook, *, now_ms: int, signing_secrets: Sequence[str] = ()
) -> Webhook:
    """A webhook that is not stored (id ``draft``): a draft under test, or a test's."""
    return Webhook(
        id="draft",
        name=new.name,
        description=new.description,
        target_url=new.target_url,
        auth_type=new.auth_type,
        auth_username=new.auth_username,
        auth_password=new.auth_password,
        events=new.events,
        status="active",
        disabled_reason=None,
        contact_email=new.contact_email,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
        secrets=tuple(
            SigningSecret(secret=Secret(secret), created_at_ms=now_ms + index)
            for index, secret in enumerate(signing_secrets)
        ),
    )


# --- validation of admin input (pure) ----------------------------------------------

_CREATE_KEYS: Final = frozenset(
    {"name", "description", "targetUrl", "auth", "events", "active", "contactEmail"}
)
_AUTH_KEYS: Final = frozenset({"type", "username", "password"})
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_NAME: Final = 100
MAX_DESCRIPTION: Final = 1000
MAX_URL: Final = 2000
#: The longest e-mail address (RFC 5321's path limit).
MAX_EMAIL: Final = 254
#: Characters that reorder or hide the text around them when it is shown (Trojan Source):
#: the embeddings and overrides, the isolates, and the implicit direction marks.
BIDI_CONTROLS: Final = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookChanges:
    """The fields a ``PATCH`` sets; ``None`` leaves a field as it is."""

    name: str | None = None
    description: str | None = None
    target_url: str | None = None
    auth_type: str | None = None
    auth_username: str | None = None
    auth_password: Secret | None = None
    events: frozenset[str] | None = None
    active: bool | None = None
    contact_email: str | None = None


def parse_new_webhook(body: Any) -> NewWebhook:
    """A create body → :class:`NewWebhook`, or :class:`InvalidInput` naming every problem."""
    changes = _parse(body, partial=False)
    return NewWebhook(
        name=changes.name or "",
        description=changes.description or "",
        target_url=changes.target_url or "",
        auth_type=changes.auth_type or "none",
        auth_username=changes.auth_username,
        auth_password=changes.auth_password,
        events=changes.events or frozenset(),
        active=True if changes.active is None else changes.active,
        contact_email=changes.contact_email or "",
    )


def parse_webhook_changes(body: Any, current: Webhook) -> WebhookChanges:
    """A ``PATCH`` body → :class:`WebhookChanges`; ``auth`` is checked against the
    webhook's current credentials, so a basic webhook keeps its password unless sent."""
    return _parse(body, partial=True, current=current)


def forbidden_character(value: str, *, whitespace: bool = False) -> str | None:
    """Why ``value`` cannot be taken as it is, naming its first offending character.

    A control character (Unicode category Cc: NUL, CR, LF, ESC …) or a bidi control lets
    a name rewrite the terminal or table that shows it; whitespace in a URL is rewritten
    (or split) by whoever sends it, so the request would not go where the admin read."""
    for character in value:
        code = f"U+{ord(character):04X}"
        if unicodedata.category(character) == "Cc":
            return f"contains a control character ({code})"
        if character in BIDI_CONTROLS:
            return f"contains a bidi control character ({code})"
        if whitespace and character.isspace():
            return f"contains whitespace ({code})"
    return None


def _is_valid_unicode(text: str) -> bool:
    """False for a lone surrogate (JSON can carry ``"\\ud800"``), which cannot be stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _invalid_unicode(body: dict[str, Any]) -> Iterator[Problem]:
    """Every key and string of a webhook body (top level, ``auth``, ``events``) that is
    not valid Unicode. Nothing deeper is read: a deeper value is refused for its shape."""

    def shown(key: str) -> str:
        return key.encode("utf-8", "backslashreplace").decode("utf-8")

    for key, value in body.items():
        if not _is_valid_unicode(key):
            yield Problem(path=shown(key), message="key is not valid Unicode")
        elif isinstance(value, str) and not _is_valid_unicode(value):
            yield Problem(path=key, message="not valid Unicode")
    auth = body.get("auth")
    if isinstance(auth, dict):
        for key, value in auth.items():
            if not _is_valid_unicode(key):
                yield Problem(path=f"auth.{shown(key)}", message="key is not valid Unicode")
            elif isinstance(value, str) and not _is_valid_unicode(value):
                yield Problem(path=f"auth.{key}", message="not valid Unicode")
    events = body.get("events")
    if isinstance(events, list):
        for index, name in enumerate(events):
            if isinstance(name, str) and not _is_valid_unicode(name):
                yield Problem(path=f"events[{index}]", message="not valid Unicode")


def _parse(body: Any, *, partial: bool, current: Webhook | None = None) -> WebhookChanges:
    if not isinstance(body, dict):
        raise InvalidInput([Problem(path="", message="expected a JSON object")])
    # Reported alone: every other check would read the broken string and say less.
    unicode_problems = list(_invalid_unicode(body))
    if unicode_problems:
        raise InvalidInput(unicode_problems)
    problems = [
        Problem(path=key, message="unknown key") for key in sorted(set(body) - _CREATE_KEYS)
    ]
    values: dict[str, Any] = {}

    def text(key: str, limit: int, *, required: bool, whitespace: bool = False) -> None:
        """Read ``body[key]``; ``whitespace``: refuse whitespace anywhere, not only trim it."""
        if key not in body:
            if required and not partial:
                problems.append(Problem(path=key, message="required"))
            return
        value = body[key]
        if not isinstance(value, str):
            problems.append(Problem(path=key, message="expected a string"))
        elif required and not value.strip():
            problems.append(Problem(path=key, message="must not be empty"))
        elif len(value) > limit:
            problems.append(Problem(path=key, message=f"at most {limit} characters"))
        elif reason := forbidden_character(value, whitespace=whitespace):
            problems.append(Problem(path=key, message=reason))
        else:
            values[key] = value.strip() if key != "description" else value

    text("name", MAX_NAME, required=True)
    text("description", MAX_DESCRIPTION, required=False)
    text("targetUrl", MAX_URL, required=True, whitespace=True)
    text("contactEmail", MAX_EMAIL, required=False)
    if values.get("contactEmail") and not _EMAIL.fullmatch(values["contactEmail"]):
        problems.append(Problem(path="contactEmail", message="not an e-mail address"))
    if "targetUrl" in values:
        try:
            check_url(values["targetUrl"])
        except TargetRefused as error:
            problems.append(Problem(path="targetUrl", message=error.message))
    if "active" in body:
        if isinstance(body["active"], bool):
            values["active"] = body["active"]
        else:
            problems.append(Problem(path="active", message="expected true or false"))
    if "events" in body or not partial:
        events = body.get("events")
        if not isinstance(events, list) or not events:
            problems.append(
                Problem(path="events", message="expected a non-empty array of event names")
            )
        else:
            for index, name in enumerate(events):
                if not isinstance(name, str) or name not in CATALOGUE:
                    hint = suggest_event_name(name) if isinstance(name, str) else None
                    problems.append(
                        Problem(
                            path=f"events[{index}]",
                            message=f"unknown event {name!r}"
                            + (f" (did you mean {hint}?)" if hint else ""),
                        )
                    )
            values["events"] = frozenset(e for e in events if isinstance(e, str))
    auth: dict[str, Any] = {}
    if "auth" in body:
        raw = body["auth"]
        if not isinstance(raw, dict):
            problems.append(Problem(path="auth", message="expected an object"))
        else:
            problems.extend(
                Problem(path=f"auth.{key}", message="unknown key")
                for key in sorted(set(raw) - _AUTH_KEYS)
            )
            auth_type = raw.get("type")
            if auth_type not in AUTH_TYPES:
                problems.append(
                    Problem(path="auth.type", message=f"must be one of {', '.join(AUTH_TYPES)}")
                )
            elif auth_type == "basic":
                username = raw.get("username", current.auth_username if current else None)
                password = raw.get("password")
                if not isinstance(username, str) or not username or ":" in username:
                    problems.append(
                        Problem(path="auth.username", message="required for basic auth (no ':')")
                    )
                if password is None and current is not None and current.auth_password is not None:
                    auth["password"] = current.auth_password
                elif not isinstance(password, str) or not password:
                    problems.append(
                        Problem(path="auth.password", message="required for basic auth")
                    )
                else:
                    auth["password"] = Secret(password)
                auth["username"] = username
            elif auth_type == "signature" and ("username" in raw or "password" in raw):
                problems.append(
                    Problem(
                        path="auth",
                        message="signature auth takes no username or password (it is generated)",
                    )
                )
            auth["type"] = auth_type
    if problems:
        raise InvalidInput(problems)
    return WebhookChanges(
        name=values.get("name"),
        description=values.get("description"),
        target_url=values.get("targetUrl"),
        auth_type=auth.get("type"),
        auth_username=auth.get("username"),
        auth_password=auth.get("password"),
        events=values.get("events"),
        active=values.get("active"),
        contact_email=values.get("contactEmail"),
    )
