"""What the admin API and the console do to webhooks, on an application: one function
per action, so the two front ends run the same validation and the same effects and can
never disagree.

Validation is in :mod:`almhookd.domain.webhooks` (pure); effects go through the
:class:`~almhookd.delivery.dispatcher.Dispatcher`, so a change reaches the running
worker at once. Errors are raised as :class:`~almhookd.errors.InvalidInput` (with the
path of each problem, e.g. ``targetUrl`` or ``auth.password``) or
:class:`~almhookd.api.common.ApiError`; each front end words them its own way.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from typing import Any, Final, get_args

from aiohttp import web

from almhookd.api.common import (
    CLOCK,
    DISPATCHER,
    SENDER,
    STATE,
    STORE,
    ApiError,
    webhook_health,
)
from almhookd.delivery.resolver import check_target
from almhookd.domain.catalogue import CATALOGUE, sample_data
from almhookd.domain.events import is_event_id
from almhookd.domain.replay import MAX_REPLAY_IDS
from almhookd.domain.signing import SCHEME, generate_secret
from almhookd.domain.targets import TargetPolicy, TargetRefused
from almhookd.domain.webhooks import (
    NewWebhook,
    Webhook,
    parse_new_webhook,
    parse_webhook_changes,
    unsaved_webhook,
)
from almhookd.errors import InvalidInput, Problem, WebhookLimitReached
from almhookd.storage.values import AttemptRecord, DeliveryStatus

DELIVERY_STATES: Final[tuple[DeliveryStatus, ...]] = get_args(DeliveryStatus)
MAX_PAGE: Final = 1000
TEST_HEADER: Final = "almhookd-test"
RESPONSE_PREVIEW: Final = 1024
#: Bad items of a list named one by one in a 422, at most (the rest go unnamed).
MAX_PROBLEMS_NAMED: Final = 20
_DIGITS: Final = re.compile(r"[0-9]{1,40}")


async def webhook_document(app: web.Application, webhook: Webhook) -> dict[str, Any]:
    """A webhook as the API shows it: settings (no password), state and health."""
    auth: dict[str, Any] = {"type": webhook.auth_type}
    if webhook.auth_type == "basic":
        auth.update(username=webhook.auth_username, passwordSet=webhook.auth_password is not None)
    return {
        "id": webhook.id,
        "name": webhook.name,
        "description": webhook.description,
        "targetUrl": webhook.target_url,
        "auth": auth,
        "events": sorted(webhook.events),
        "active": webhook.status == "active",
        "status": webhook.status,
        "disabledReason": webhook.disabled_reason,
        "contactEmail": webhook.contact_email,
        "createdAt": webhook.created_at_ms,
        "updatedAt": webhook.updated_at_ms,
        **await webhook_health(app[STORE], webhook, app[CLOCK]()),
    }


async def find_webhook(app: web.Application, webhook_id: str) -> Webhook:
    webhook = await app[STORE].get_webhook(webhook_id)
    if webhook is None:
        raise ApiError(404, "not_found", f"no webhook with id {webhook_id!r}")
    return webhook


async def _check_target(app: web.Application, url: str) -> None:
    try:
        await check_target(url, TargetPolicy.from_config(app[STATE].config.delivery))
    except TargetRefused as error:
        raise InvalidInput([Problem(path="targetUrl", message=error.message)]) from None


async def _check_name(app: web.Application, name: str | None, except_id: str | None) -> None:
    if name is None:
        return
    taken = await app[STORE].name_taken(name, except_id=except_id)
    if taken is not None:
        raise InvalidInput([Problem(path="name", message=f"already used by webhook {taken}")])


async def create(app: web.Application, body: Any) -> Webhook:
    """A new webhook from a create body (``POST /v1/webhooks``)."""
    new = parse_new_webhook(body)
    await _check_name(app, new.name, None)
    await _check_target(app, new.target_url)
    limit = app[STATE].config.delivery.max_webhooks
    try:
        # Counted and inserted in one write transaction: a count taken here, before the
        # awaits above, let parallel creates all pass it.
        return await app[DISPATCHER].add_webhook(new, max_webhooks=limit)
    except WebhookLimitReached:
        raise ApiError(
            409,
            "limit_reached",
            f"at most {limit} webhooks can exist (delivery.max_webhooks); delete one first",
        ) from None


async def update(app: web.Application, webhook_id: str, body: Any) -> Webhook:
    """A webhook changed by a patch body (``PATCH /v1/webhooks/{id}``)."""
    webhook = await find_webhook(app, webhook_id)
    changes = parse_webhook_changes(body, webhook)
    await _check_name(app, changes.name, webhook.id)
    if changes.target_url is not None:
        await _check_target(app, changes.target_url)
    patched = await app[DISPATCHER].update_webhook(webhook.id, changes)
    if patched is None:  # deleted since it was read above
        raise ApiError(404, "not_found", f"no webhook with id {webhook.id!r}")
    return patched


async def delete(app: web.Application, webhook_id: str) -> None:
    webhook = await find_webhook(app, webhook_id)
    await app[DISPATCHER].delete_webhook(webhook.id)


def _test_body(webhook: Webhook, account_id: int, now_ms: int) -> bytes:
    names = sorted(webhook.events, key=lambda n: (not CATALOGUE[n].realtime, n))
    name = names[0] if names else "COURSE_ENROLLMENT"
    event_id = f"test-{uuid.uuid4()}"
    return json.dumps(
        {
            "accountId": account_id,
            "events": [
                {
                    "eventId": event_id,
                    "eventName": name,
                    "timestamp": now_ms,
                    "eventInfo": f"{now_ms}-test",
                    "data": sample_data(name),
                }
            ],
        },
        separators=(",", ":"),
    ).encode()


async def test_delivery(app: web.Application, webhook: Webhook) -> dict[str, Any]:
    """One out-of-band test delivery, signed like a real one, not retried: its outcome."""
    config, now = app[STATE].config, app[CLOCK]()
    outcome = await app[SENDER].send(
        webhook,
        message_id=f"msg_test_{uuid.uuid4().hex}",
        body=_test_body(webhook, config.account.id, int(now * 1000)),
        extra_headers={TEST_HEADER: "true"},
    )
    return {
        "ok": outcome.ok,
        "status": outcome.status,
        "durationMs": outcome.duration_ms,
        "error": outcome.error,
        "responseBody": outcome.response_body[:RESPONSE_PREVIEW],
    }


async def test_draft(app: web.Application, body: Any) -> dict[str, Any]:
    """The same for an unsaved webhook (a create body), as the platform's "Test and Save".

    A signature draft is signed with a throw-away secret, returned as ``signingSecret``;
    the saved webhook gets its own.
    """
    new: NewWebhook = parse_new_webhook(body)
    await _check_target(app, new.target_url)
    now_ms = int(app[CLOCK]() * 1000)
    draft_secret = generate_secret() if new.auth_type == "signature" else None
    draft = unsaved_webhook(
        new, now_ms=now_ms, signing_secrets=[draft_secret] if draft_secret else []
    )
    answer = await test_delivery(app, draft)
    if draft_secret:
        answer["signingSecret"] = draft_secret
    return answer


def secret_document(webhook: Webhook, now_ms: int) -> dict[str, Any]:
    in_force = sorted(
        (s for s in webhook.secrets if s.in_force(now_ms)), key=lambda s: -s.created_at_ms
    )
    if webhook.auth_type != "signature" or not in_force:
        raise ApiError(409, "no_secret", f"webhook {webhook.id} does not use signature auth")
    return {
        "webhookId": webhook.id,
        "secret": in_force[0].secret.reveal(),
        "scheme": SCHEME,
        "algorithm": "HMAC-SHA256",
        "headers": {
            "id": "webhook-id",
            "timestamp": "webhook-timestamp",
            "signature": "webhook-signature",
        },
        "signedContent": "{webhook-id}.{webhook-timestamp}.{body}",
        "createdAt": in_force[0].created_at_ms,
        "previousSecretsValidUntil": [s.expires_at_ms for s in in_force[1:]],
    }


async def rotate_secret(app: web.Application, webhook_id: str) -> dict[str, Any]:
    """A new signing secret; the document of the new one, with the grace period."""
    webhook = await find_webhook(app, webhook_id)
    if webhook.auth_type != "signature":
        raise ApiError(409, "no_secret", f"webhook {webhook.id} does not use signature auth")
    await app[DISPATCHER].rotate_secret(webhook.id)
    rotated = await find_webhook(app, webhook_id)
    document = secret_document(rotated, int(app[CLOCK]() * 1000))
    document["graceSeconds"] = app[STATE].config.delivery.secret_rotation_grace
    return document


def page_params(limit_text: str, cursor_text: str | None) -> tuple[int, int | None]:
    """A page's size and cursor from their query values, checked."""
    # ASCII digits only: int() also reads Arabic-Indic digits, "1_000" and " 7 ".
    if not _DIGITS.fullmatch(limit_text) or (cursor_text and not _DIGITS.fullmatch(cursor_text)):
        raise ApiError(400, "bad_request", "limit and cursor must be integers")
    limit = int(limit_text)
    cursor = int(cursor_text) if cursor_text else None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "bad_request", f"limit must be between 1 and {MAX_PAGE}")
    # A cursor is a row's sequence number: SQLite's integers stop at 2**63 - 1, and a
    # larger one must not reach it (a 500 before).
    if cursor is not None and not 0 <= cursor < 2**63:
        raise ApiError(400, "bad_request", "cursor must be a nextCursor of an earlier page")
    return limit, cursor


async def deliveries_page(
    app: web.Application, webhook: Webhook, *, state: str | None, limit: int, cursor: int | None
) -> dict[str, Any]:
    """Per-event delivery state in ingest order, a page after ``cursor``."""
    known = next((known for known in DELIVERY_STATES if known == state), None)
    if state is not None and known is None:
        raise ApiError(400, "bad_request", f"state must be one of {', '.join(DELIVERY_STATES)}")
    rows = await app[STORE].deliveries(webhook.id, state=known, limit=limit, after_seq=cursor or 0)
    next_cursor = str(rows[-1]["seq"]) if len(rows) == limit else None
    deliveries = [{key: value for key, value in row.items() if key != "seq"} for row in rows]
    return {"deliveries": deliveries, "nextCursor": next_cursor}


async def attempts_page(
    app: web.Application, webhook: Webhook, *, limit: int, cursor: int | None
) -> dict[str, Any]:
    """The request log, newest first, a page before ``cursor``."""
    rows: list[AttemptRecord] = await app[STORE].attempts(webhook.id, limit=limit, before_id=cursor)
    next_cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    return {"attempts": rows, "nextCursor": next_cursor}


async def replay(app: web.Application, webhook: Webhook, body: Any) -> int:
    """Queue retained events again (``{"eventIds": [...]}`` or ``{"since": ms}``); how
    many deliveries were queued."""
    problems: list[Problem] = []
    event_ids = since = None
    if not isinstance(body, dict) or ("eventIds" in body) == ("since" in body):
        raise InvalidInput([Problem(path="", message='give "eventIds": [...] or "since": ms')])
    problems.extend(
        Problem(path=k, message="unknown key") for k in sorted(set(body) - {"eventIds", "since"})
    )
    if "eventIds" in body:
        event_ids = body["eventIds"]
        if not isinstance(event_ids, list) or not event_ids or len(event_ids) > MAX_REPLAY_IDS:
            problems.append(
                Problem(
                    path="eventIds", message=f"expected 1 to {MAX_REPLAY_IDS} event ids as strings"
                )
            )
        else:
            # An id no event can have is a mistake worth naming (and a lone surrogate
            # must not reach SQLite's encoder: a 500 before).
            problems.extend(
                itertools.islice(
                    (
                        Problem(
                            path=f"eventIds[{index}]",
                            message="not an eventId: 1 to 128 letters, digits and . _ : -",
                        )
                        for index, event_id in enumerate(event_ids)
                        if not is_event_id(event_id)
                    ),
                    MAX_PROBLEMS_NAMED,
                )
            )
    else:
        since = body["since"]
        # SQLite holds 64-bit integers: a larger one must not reach it (a 500 before).
        if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < 2**63:
            problems.append(Problem(path="since", message="expected epoch milliseconds"))
    if problems:
        raise InvalidInput(problems)
    return await app[DISPATCHER].replay(webhook.id, event_ids=event_ids, since_ms=since)
