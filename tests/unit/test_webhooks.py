"""``almhookd.domain.webhooks`` directly: which secrets sign, and what admin input is accepted."""

from __future__ import annotations

from typing import Any

import pytest

from almhookd.config import Secret, parse_config
from almhookd.domain.signing import generate_secret, signature_header
from almhookd.domain.webhooks import (
    BIDI_CONTROLS,
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_URL,
    NewWebhook,
    SigningSecret,
    Webhook,
    WebhookChanges,
    WebhookStatus,
    forbidden_character,
    parse_new_webhook,
    parse_webhook_changes,
    unsaved_webhook,
)
from almhookd.errors import InvalidInput
from tests.support.verifier import verify

NOW_MS = 1_764_000_000_000
HOUR_MS = 3_600_000
#: The contract's default ``delivery.secret_rotation_grace``.
GRACE_MS = int(parse_config("", env={}).delivery.secret_rotation_grace * 1000)


def webhook(*secrets: SigningSecret, status: WebhookStatus = "active") -> Webhook:
    return Webhook(
        id="wh_1",
        name="LMS sync",
        description="",
        target_url="https://hooks.example.org/in",
        auth_type="signature",
        auth_username=None,
        auth_password=None,
        events=frozenset({"COURSE_ENROLLMENT"}),
        status=status,
        disabled_reason=None,
        contact_email="",
        created_at_ms=NOW_MS,
        updated_at_ms=NOW_MS,
        secrets=secrets,
    )


# --- signing secrets and their rotation grace ----------------------------------------


def test_the_grace_is_a_day_by_default() -> None:
    assert GRACE_MS == 24 * HOUR_MS


@pytest.mark.parametrize(
    ("expires_at_ms", "now_ms", "in_force"),
    [
        (None, NOW_MS, True),
        (None, NOW_MS + 10**12, True),
        (NOW_MS + 1, NOW_MS, True),
        (NOW_MS, NOW_MS, False),  # the grace ends at its instant, not a millisecond later
        (NOW_MS - 1, NOW_MS, False),
    ],
)
def test_a_secret_is_in_force_until_it_expires(
    expires_at_ms: int | None, now_ms: int, in_force: bool
) -> None:
    secret = SigningSecret(
        secret=Secret(generate_secret()),
        created_at_ms=NOW_MS - HOUR_MS,
        expires_at_ms=expires_at_ms,
    )
    assert secret.in_force(now_ms) is in_force


def _signature_header(hook: Webhook, now_ms: int) -> dict[str, str]:
    timestamp = now_ms // 1000
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            hook.secrets_in_force(now_ms), message_id="msg_1", timestamp=timestamp, body=b"{}"
        ),
    }


def test_a_rotated_secret_signs_during_the_grace_and_never_after() -> None:
    """Rotated at NOW_MS: the old secret keeps signing for the grace, then stops."""
    old, new = generate_secret(), generate_secret()
    rotated = webhook(
        SigningSecret(
            secret=Secret(old),
            created_at_ms=NOW_MS - 90 * 24 * HOUR_MS,
            expires_at_ms=NOW_MS + GRACE_MS,
        ),
        SigningSecret(secret=Secret(new), created_at_ms=NOW_MS),
    )
    for during in (NOW_MS, NOW_MS + GRACE_MS // 2, NOW_MS + GRACE_MS - 1000):
        assert rotated.secrets_in_force(during) == [new, old]
        headers = _signature_header(rotated, during)
        assert verify(old, headers, b"{}") and verify(new, headers, b"{}")
    for after in (NOW_MS + GRACE_MS, NOW_MS + GRACE_MS + 1000, NOW_MS + 30 * GRACE_MS):
        assert rotated.secrets_in_force(after) == [new]
        headers = _signature_header(rotated, after)
        assert headers["webhook-signature"].count("v1,") == 1
        assert verify(new, headers, b"{}")
        assert not verify(old, headers, b"{}"), "a secret past its grace still signs"


def test_secrets_in_force_are_listed_newest_first() -> None:
    first, second, third = generate_secret(), generate_secret(), generate_secret()
    hook = webhook(
        SigningSecret(
            secret=Secret(second), created_at_ms=NOW_MS - HOUR_MS, expires_at_ms=NOW_MS + GRACE_MS
        ),
        SigningSecret(secret=Secret(third), created_at_ms=NOW_MS),
        SigningSecret(
            secret=Secret(first), created_at_ms=NOW_MS - 2 * HOUR_MS, expires_at_ms=NOW_MS + HOUR_MS
        ),
    )
    assert hook.secrets_in_force(NOW_MS) == [third, second, first]
    assert hook.secrets_in_force(NOW_MS + HOUR_MS) == [third, second]


def test_a_webhook_without_secrets_has_none_in_force() -> None:
    assert webhook().secrets_in_force(NOW_MS) == []


@pytest.mark.parametrize(
    ("status", "active"), [("active", True), ("inactive", False), ("disabled", False)]
)
def test_only_an_active_webhook_is_active(status: WebhookStatus, active: bool) -> None:
    assert webhook(status=status).active is active


def test_an_unsaved_webhook_is_an_active_draft_of_what_was_given() -> None:
    new = NewWebhook(
        name="Draft",
        target_url="https://hooks.example.org/in",
        events=frozenset({"CI_STATS"}),
        description="trying",
        auth_type="basic",
        auth_username="user",
        auth_password=Secret("pw"),
        active=False,
        contact_email="ops@example.org",
    )
    older, newer = generate_secret(), generate_secret()
    draft = unsaved_webhook(new, now_ms=NOW_MS, signing_secrets=[older, newer])
    assert (draft.id, draft.status, draft.disabled_reason) == ("draft", "active", None)
    assert (draft.name, draft.description, draft.target_url) == (
        "Draft",
        "trying",
        "https://hooks.example.org/in",
    )
    assert (draft.auth_type, draft.auth_username, draft.auth_password) == (
        "basic",
        "user",
        Secret("pw"),
    )
    assert draft.events == frozenset({"CI_STATS"})
    assert draft.contact_email == "ops@example.org"
    assert draft.created_at_ms == draft.updated_at_ms == NOW_MS
    assert not draft.schedule.failing
    # The later secret counts as the newer one, and both sign for ever.
    assert draft.secrets_in_force(NOW_MS + 10**12) == [newer, older]
    assert unsaved_webhook(new, now_ms=NOW_MS).secrets == ()


# --- validation of what admins send ----------------------------------------------------

VALID: dict[str, Any] = {
    "name": "LMS sync",
    "targetUrl": "https://hooks.example.org/in",
    "events": ["COURSE_ENROLLMENT", "CI_STATS"],
}


def problems_of(body: Any, current: Webhook | None = None) -> list[tuple[str, str]]:
    """The problems of a create body, or of a ``PATCH`` body when ``current`` is given."""
    with pytest.raises(InvalidInput) as caught:
        _ = parse_new_webhook(body) if current is None else parse_webhook_changes(body, current)
    return [(p.path, p.message) for p in caught.value.problems]


def test_a_minimal_create_body_gets_the_defaults() -> None:
    assert parse_new_webhook(VALID) == NewWebhook(
        name="LMS sync",
        target_url="https://hooks.example.org/in",
        events=frozenset({"COURSE_ENROLLMENT", "CI_STATS"}),
        description="",
        auth_type="none",
        auth_username=None,
        auth_password=None,
        active=True,
        contact_email="",
    )


def test_a_full_create_body_is_read() -> None:
    new = parse_new_webhook(
        {
            **VALID,
            "name": "  LMS sync  ",
            "description": "  kept as typed ",
            "targetUrl": "http://hooks.example.org:8080/in",
            "auth": {"type": "basic", "username": "lms", "password": "s3cret"},
            "active": False,
            "contactEmail": " ops@example.org ",
        }
    )
    assert new.name == "LMS sync"
    assert new.description == "  kept as typed "
    assert new.target_url == "http://hooks.example.org:8080/in"
    assert (new.auth_type, new.auth_username, new.auth_password) == (
        "basic",
        "lms",
        Secret("s3cret"),
    )
    assert new.active is False
    assert new.contact_email == "ops@example.org"


def test_signature_auth_needs_nothing_else() -> None:
    new = parse_new_webhook({**VALID, "auth": {"type": "signature"}})
    assert (new.auth_type, new.auth_username, new.auth_password) == ("signature", None, None)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": None}, ("name", "required")),
        ({"targetUrl": None}, ("targetUrl", "required")),
        ({"events": None}, ("events", "expected a non-empty array of event names")),
        ({"name": 5}, ("name", "expected a string")),
        ({"name": "   "}, ("name", "must not be empty")),
        ({"targetUrl": ""}, ("targetUrl", "must not be empty")),
        ({"name": "x" * (MAX_NAME + 1)}, ("name", f"at most {MAX_NAME} characters")),
        (
            {"description": "x" * (MAX_DESCRIPTION + 1)},
            ("description", f"at most {MAX_DESCRIPTION} characters"),
        ),
        ({"description": 3}, ("description", "expected a string")),
        (
            {"targetUrl": "https://example.org/" + "x" * MAX_URL},
            ("targetUrl", f"at most {MAX_URL} characters"),
        ),
        (
            {"targetUrl": "ftp://example.org/"},
            ("targetUrl", "targetUrl must start with http:// or https://"),
        ),
        (
            {"targetUrl": "https://u:p@example.org/"},
            ("targetUrl", "targetUrl must not carry credentials; use auth type basic"),
        ),
        ({"contactEmail": "nobody"}, ("contactEmail", "not an e-mail address")),
        ({"contactEmail": "a@b"}, ("contactEmail", "not an e-mail address")),
        ({"contactEmail": "a@@b.org"}, ("contactEmail", "not an e-mail address")),
        ({"contactEmail": "x" * 250 + "@b.org"}, ("contactEmail", "at most 254 characters")),
        ({"active": "yes"}, ("active", "expected true or false")),
        ({"active": 1}, ("active", "expected true or false")),
        ({"events": []}, ("events", "expected a non-empty array of event names")),
        ({"events": "CI_STATS"}, ("events", "expected a non-empty array of event names")),
        (
            {"events": ["CI_STATS", "course_enrollment"]},
            ("events[1]", "unknown event 'course_enrollment' (did you mean COURSE_ENROLLMENT?)"),
        ),
        ({"events": ["NOTHING_LIKE_IT"]}, ("events[0]", "unknown event 'NOTHING_LIKE_IT'")),
        ({"events": [7]}, ("events[0]", "unknown event 7")),
        ({"auth": "basic"}, ("auth", "expected an object")),
        ({"auth": {"type": "oauth"}}, ("auth.type", "must be one of none, basic, signature")),
        ({"auth": {}}, ("auth.type", "must be one of none, basic, signature")),
        (
            {"auth": {"type": "none", "token": "x"}},
            ("auth.token", "unknown key"),
        ),
        (
            {"auth": {"type": "basic", "password": "pw"}},
            ("auth.username", "required for basic auth (no ':')"),
        ),
        (
            {"auth": {"type": "basic", "username": "", "password": "pw"}},
            ("auth.username", "required for basic auth (no ':')"),
        ),
        (
            {"auth": {"type": "basic", "username": "a:b", "password": "pw"}},
            ("auth.username", "required for basic auth (no ':')"),
        ),
        (
            {"auth": {"type": "basic", "username": "lms"}},
            ("auth.password", "required for basic auth"),
        ),
        (
            {"auth": {"type": "basic", "username": "lms", "password": ""}},
            ("auth.password", "required for basic auth"),
        ),
        (
            {"auth": {"type": "signature", "password": "pw"}},
            ("auth", "signature auth takes no username or password (it is generated)"),
        ),
        (
            {"auth": {"type": "signature", "username": "lms"}},
            ("auth", "signature auth takes no username or password (it is generated)"),
        ),
        ({"secret": "x"}, ("secret", "unknown key")),
    ],
)
def test_a_bad_create_body_names_the_problem(
    changes: dict[str, Any], problem: tuple[str, str]
) -> None:
    body = {**VALID, **changes}
    for key, value in changes.items():
        if value is None:
            del body[key]
    assert problems_of(body) == [problem]


def test_the_limits_themselves_are_allowed() -> None:
    new = parse_new_webhook(
        {
            **VALID,
            "name": "n" * MAX_NAME,
            "description": "d" * MAX_DESCRIPTION,
            "targetUrl": "https://example.org/" + "u" * (MAX_URL - 20),
            "contactEmail": "x" * 244 + "@b.org",
        }
    )
    assert len(new.name) == MAX_NAME and len(new.target_url) == MAX_URL


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {
            "zeta": 1,
            "alpha": 2,
            "name": "",
            "targetUrl": "gopher://x",
            "events": ["NOPE", "CI_STATS", 3],
            "auth": {"type": "basic", "username": "a:b", "extra": True},
            "active": "no",
        }
    )
    assert problems == [
        ("alpha", "unknown key"),
        ("zeta", "unknown key"),
        ("name", "must not be empty"),
        ("targetUrl", "targetUrl must start with http:// or https://"),
        ("active", "expected true or false"),
        ("events[0]", "unknown event 'NOPE'"),
        ("events[2]", "unknown event 3"),
        ("auth.extra", "unknown key"),
        ("auth.username", "required for basic auth (no ':')"),
        ("auth.password", "required for basic auth"),
    ]


@pytest.mark.parametrize("body", [[], "webhook", None, 3])
def test_a_body_must_be_an_object(body: Any) -> None:
    assert problems_of(body) == [("", "expected a JSON object")]
    assert problems_of(body, current=webhook()) == [("", "expected a JSON object")]


def test_the_error_message_summarises_the_problems() -> None:
    with pytest.raises(InvalidInput, match=r"invalid input: name: required; events: expected"):
        parse_new_webhook({"targetUrl": "https://example.org/"})


# --- PATCH: only what is sent changes ---------------------------------------------------


def basic_webhook() -> Webhook:
    return Webhook(
        id="wh_2",
        name="Basic",
        description="",
        target_url="https://hooks.example.org/in",
        auth_type="basic",
        auth_username="lms",
        auth_password=Secret("old-password"),
        events=frozenset({"CI_STATS"}),
        status="active",
        disabled_reason=None,
        contact_email="",
        created_at_ms=NOW_MS,
        updated_at_ms=NOW_MS,
    )


def test_an_empty_patch_changes_nothing() -> None:
    assert parse_webhook_changes({}, basic_webhook()) == WebhookChanges()


def test_a_patch_sets_only_the_fields_it_names() -> None:
    changes = parse_webhook_changes(
        {"name": " Renamed ", "active": False, "events": ["CI_STATS", "LEARNER_PROGRESS"]},
        basic_webhook(),
    )
    assert changes == WebhookChanges(
        name="Renamed", active=False, events=frozenset({"CI_STATS", "LEARNER_PROGRESS"})
    )


def test_a_patch_to_basic_auth_keeps_the_stored_password_and_username() -> None:
    current = basic_webhook()
    changes = parse_webhook_changes({"auth": {"type": "basic"}}, current)
    assert (changes.auth_type, changes.auth_username, changes.auth_password) == (
        "basic",
        "lms",
        Secret("old-password"),
    )
    renamed = parse_webhook_changes({"auth": {"type": "basic", "username": "new"}}, current)
    assert (renamed.auth_username, renamed.auth_password) == ("new", Secret("old-password"))
    new_password = parse_webhook_changes({"auth": {"type": "basic", "password": "fresh"}}, current)
    assert new_password.auth_password == Secret("fresh")


def test_a_patch_to_basic_auth_needs_a_password_when_none_is_stored() -> None:
    assert problems_of({"auth": {"type": "basic", "username": "lms"}}, current=webhook()) == [
        ("auth.password", "required for basic auth")
    ]
    assert problems_of({"auth": {"type": "basic"}}, current=webhook()) == [
        ("auth.username", "required for basic auth (no ':')"),
        ("auth.password", "required for basic auth"),
    ]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"name": ""}, ("name", "must not be empty")),
        ({"events": []}, ("events", "expected a non-empty array of event names")),
        ({"targetUrl": "http:///x"}, ("targetUrl", "targetUrl has no host")),
        ({"active": None}, ("active", "expected true or false")),
    ],
)
def test_a_patch_is_validated_like_a_create(body: dict[str, Any], problem: tuple[str, str]) -> None:
    assert problems_of(body, current=basic_webhook()) == [problem]


# --- characters that would rewrite what an admin reads, or cannot be stored -------------

#: One of each class the rules name: C0 controls (NUL, LF, CR, ESC, TAB), DEL, C1 controls.
CONTROL_CHARACTERS = ["\x00", "\n", "\r", "\x1b", "\t", "\x7f", "\x85", "\x9b"]


@pytest.mark.parametrize("field", ["name", "description"])
@pytest.mark.parametrize("character", CONTROL_CHARACTERS)
def test_a_control_character_in_a_name_or_description_is_refused(
    field: str, character: str
) -> None:
    body = {**VALID, field: f"LMS{character}sync"}
    expected = (field, f"contains a control character (U+{ord(character):04X})")
    assert problems_of(body) == [expected]
    assert problems_of({field: body[field]}, current=basic_webhook()) == [expected]


@pytest.mark.parametrize("field", ["name", "description"])
@pytest.mark.parametrize("character", sorted(BIDI_CONTROLS))
def test_a_bidi_control_in_a_name_or_description_is_refused(field: str, character: str) -> None:
    body = {**VALID, field: f"LMS {character}cnys"}
    expected = (field, f"contains a bidi control character (U+{ord(character):04X})")
    assert problems_of(body) == [expected]
    assert problems_of({field: body[field]}, current=basic_webhook()) == [expected]


def test_the_bidi_controls_are_the_ones_the_rule_names() -> None:
    named = {*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C}
    assert {ord(c) for c in BIDI_CONTROLS} == named


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://hooks.example.org/in ", "contains whitespace (U+0020)"),
        (" https://hooks.example.org/in", "contains whitespace (U+0020)"),
        ("https://hooks.example.org/a b", "contains whitespace (U+0020)"),
        ("https://hooks.example.org/\u00a0", "contains whitespace (U+00A0)"),
        ("https://hooks.example.org/\u2028", "contains whitespace (U+2028)"),
        ("https://hooks.example.org/\u3000", "contains whitespace (U+3000)"),
        ("https://hooks.example.org/in\r\nX-Injected: 1", "contains a control character (U+000D)"),
        ("https://hooks.example.org/in\n", "contains a control character (U+000A)"),
        ("https://hooks.example.org/\tin", "contains a control character (U+0009)"),
        ("https://hooks.example.org\x00.evil.org/", "contains a control character (U+0000)"),
        ("https://hooks.example.org/\x7f", "contains a control character (U+007F)"),
        ("https://hooks.example.org/\x9b", "contains a control character (U+009B)"),
        ("https://hooks.example.org/\u202ein", "contains a bidi control character (U+202E)"),
    ],
)
def test_a_target_url_with_whitespace_or_a_control_character_is_refused(
    url: str, reason: str
) -> None:
    assert problems_of({**VALID, "targetUrl": url}) == [("targetUrl", reason)]
    assert problems_of({"targetUrl": url}, current=basic_webhook()) == [("targetUrl", reason)]


def test_ordinary_unicode_in_names_and_urls_is_kept() -> None:
    new = parse_new_webhook(
        {
            **VALID,
            "name": "Kurse \u00fcbertragen \u05e2\u05d1\u05e8\u05d9\u05ea \U0001f680",
            "description": "Zeile eins, Zeile zwei \u2014 \u00e9t\u00e9",
            "targetUrl": "https://hooks.example.org/\u00fcber?q=%20a",
        }
    )
    assert new.name == "Kurse \u00fcbertragen \u05e2\u05d1\u05e8\u05d9\u05ea \U0001f680"
    assert new.target_url == "https://hooks.example.org/\u00fcber?q=%20a"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": "LMS \ud800"}, ("name", "not valid Unicode")),
        ({"description": "\udfff"}, ("description", "not valid Unicode")),
        ({"targetUrl": "https://hooks.example.org/\ud83d"}, ("targetUrl", "not valid Unicode")),
        ({"contactEmail": "ops\udc80@example.org"}, ("contactEmail", "not valid Unicode")),
        ({"events": ["CI_STATS", "\ud800"]}, ("events[1]", "not valid Unicode")),
        (
            {"auth": {"type": "basic", "username": "lms\ud800", "password": "pw"}},
            ("auth.username", "not valid Unicode"),
        ),
        (
            {"auth": {"type": "basic", "username": "lms", "password": "\ud800"}},
            ("auth.password", "not valid Unicode"),
        ),
        ({"auth": {"type": "\ud800"}}, ("auth.type", "not valid Unicode")),
        ({"auth": {"type": "none", "\ud800": 1}}, ("auth.\\ud800", "key is not valid Unicode")),
        ({"\ud800x": 1}, ("\\ud800x", "key is not valid Unicode")),
    ],
)
def test_a_lone_surrogate_in_any_string_is_refused_as_not_unicode(
    changes: dict[str, Any], problem: tuple[str, str]
) -> None:
    assert problems_of({**VALID, **changes}) == [problem]
    assert problems_of(changes, current=basic_webhook()) == [problem]


def test_spaces_are_refused_only_where_asked() -> None:
    """Names and descriptions hold spaces; a URL does not."""
    assert forbidden_character("LMS sync to the HR system") is None
    assert forbidden_character("LMS sync", whitespace=True) == "contains whitespace (U+0020)"
