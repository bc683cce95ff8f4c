"""The admin API for webhooks: CRUD, test deliveries, secrets, inspection, replay.

Handlers stay thin: validation is in :mod:`almhookd.domain.webhooks` (pure), effects go
through the :class:`~almhookd.delivery.dispatcher.Dispatcher`, so a change reaches the running
worker at once. Passwords and secrets are never echoed, except a signing secret by its
own download route.
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
    read_json,
    webhook_health,
)
from almhookd.delivery.resolver import check_target
from almhookd.domain.catalogue import CATALOGUE, sample_data
from almhookd.domain.events import is_event_id
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
from almhookd.storage.values import DeliveryStatus

DELIVERY_STATES: Final[tuple[DeliveryStatus, ...]] = get_args(DeliveryStatus)
MAX_PAGE: Final = 1000
TEST_HEADER: Final = "almhookd-test"
RESPONSE_PREVIEW: Final = 1024
#: Bad items of a list named one by one in a 422, at most (the rest go unnamed).
MAX_PROBLEMS_NAMED: Final = 20
_DIGITS: Final = re.compile(r"[0-9]{1,40}")


async def webhook_document(request: web.Request, webhook: Webhook) -> dict[str, Any]:
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
        **await webhook_health(request.app[STORE], webhook, request.app[CLOCK]()),
    }


async def _webhook(request: web.Request) -> Webhook:
    webhook_id = request.match_info["webhook_id"]
    webhook = await request.app[STORE].get_webhook(webhook_id)
    if webhook is None:
        raise ApiError(404, "not_found", f"no webhook with id {webhook_id!r}")
    return webhook


async def _check_target(request: web.Request, url: str) -> None:
    try:
        await check_target(url, TargetPolicy.from_config(request.app[STATE].config.delivery))
    except TargetRefused as error:
        raise InvalidInput([Problem(path="targetUrl", message=error.message)]) from None


async def _check_name(request: web.Request, name: str | None, except_id: str | None) -> None:
    if name is None:
        return
    taken = await request.app[STORE].name_taken(name, except_id=except_id)
    if taken is not None:
        raise InvalidInput([Problem(path="name", message=f"already used by webhook {taken}")])


async def list_webhooks(request: web.Request) -> web.Response:
    webhooks = await request.app[STORE].list_webhooks()
    return web.json_response(
        {"webhooks": [await webhook_document(request, webhook) for webhook in webhooks]}
    )


async def create_webhook(request: web.Request) -> web.Response:
    new = parse_new_webhook(await read_json(request))
    await _check_name(request, new.name, None)
    await _check_target(request, new.target_url)
    limit = request.app[STATE].config.delivery.max_webhooks
    try:
        # Counted and inserted in one write transaction: a count taken here, before the
        # awaits above, let parallel creates all pass it.
        webhook = await request.app[DISPATCHER].add_webhook(new, max_webhooks=limit)
    except WebhookLimitReached:
        raise ApiError(
            409,
            "limit_reached",
            f"at most {limit} webhooks can exist (delivery.max_webhooks); delete one first",
        ) from None
    return web.json_response(await webhook_document(request, webhook), status=201)


async def get_webhook(request: web.Request) -> web.Response:
    return web.json_response(await webhook_document(request, await _webhook(request)))


async def patch_webhook(request: web.Request) -> web.Response:
    webhook = await _webhook(request)
    changes = parse_webhook_changes(await read_json(request), webhook)
    await _check_name(request, changes.name, webhook.id)
    if changes.target_url is not None:
        await _check_target(request, changes.target_url)
    patched = await request.app[DISPATCHER].update_webhook(webhook.id, changes)
    if patched is None:  # deleted since it was read above
        raise ApiError(404, "not_found", f"no webhook with id {webhook.id!r}")
    return web.json_response(await webhook_document(request, patched))


async def delete_webhook(request: web.Request) -> web.Response:
    webhook = await _webhook(request)
    await request.app[DISPATCHER].delete_webhook(webhook.id)
    return web.Response(status=204)


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


async def _send_test(request: web.Request, webhook: Webhook) -> dict[str, Any]:
    config, now = request.app[STATE].config, request.app[CLOCK]()
    outcome = await request.app[SENDER].send(
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


async def test_webhook(request: web.Request) -> web.Response:
    """One out-of-band test delivery, signed like a real one, not retried."""
    return web.json_response(await _send_test(request, await _webhook(request)))


async def test_draft(request: web.Request) -> web.Response:
    """The same for an unsaved webhook (a create body), as the platform's "Test and Save".

    A signature draft is signed with a throw-away secret, returned as ``signingSecret``;
    the saved webhook gets its own.
    """
    new: NewWebhook = parse_new_webhook(await read_json(request))
    await _check_target(request, new.target_url)
    now_ms = int(request.app[CLOCK]() * 1000)
    draft_secret = generate_secret() if new.auth_type == "signature" else None
    draft = unsaved_webhook(
        new, now_ms=now_ms, signing_secrets=[draft_secret] if draft_secret else []
    )
    answer = await _send_test(request, draft)
    if draft_secret:
        answer["signingSecret"] = draft_secret
    return web.json_response(answer)


def _secret_document(webhook: Webhook, now_ms: int) -> dict[str, Any]:
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


async def get_secret(request: web.Request) -> web.Response:
    webhook = await _webhook(request)
    document = _secret_document(webhook, int(request.app[CLOCK]() * 1000))
    return web.json_response(
        document,
        headers={
            "Content-Disposition": f'attachment; filename="{webhook.id}-secret.json"',
            "Cache-Control": "no-store",
        },
    )


async def rotate_secret(request: web.Request) -> web.Response:
    webhook = await _webhook(request)
    if webhook.auth_type != "signature":
        raise ApiError(409, "no_secret", f"webhook {webhook.id} does not use signature auth")
    await request.app[DISPATCHER].rotate_secret(webhook.id)
    rotated = await _webhook(request)
    document = _secret_document(rotated, int(request.app[CLOCK]() * 1000))
    document["graceSeconds"] = request.app[STATE].config.delivery.secret_rotation_grace
    return web.json_response(document, headers={"Cache-Control": "no-store"})


def _page_params(request: web.Request) -> tuple[int, int | None]:
    limit_text, cursor_text = request.query.get("limit", "100"), request.query.get("cursor")
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


async def list_deliveries(request: web.Request) -> web.Response:
    webhook = await _webhook(request)
    limit, cursor = _page_params(request)
    asked = request.query.get("state") or None
    state = next((known for known in DELIVERY_STATES if known == asked), None)
    if asked is not None and state is None:
        raise ApiError(400, "bad_request", f"state must be one of {', '.join(DELIVERY_STATES)}")
    rows = await request.app[STORE].deliveries(
        webhook.id, state=state, limit=limit, after_seq=cursor or 0
    )
    next_cursor = str(rows[-1]["seq"]) if len(rows) == limit else None
    deliveries = [{key: value for key, value in row.items() if key != "seq"} for row in rows]
    return web.json_response({"deliveries": deliveries, "nextCursor": next_cursor})


async def list_attempts(request: web.Request) -> web.Response:
    webhook = await _webhook(request)
    limit, cursor = _page_params(request)
    rows = await request.app[STORE].attempts(webhook.id, limit=limit, before_id=cursor)
    next_cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    return web.json_response({"attempts": rows, "nextCursor": next_cursor})


async def replay(request: web.Request) -> web.Response:
    webhook = await _webhook(request)
    body = await read_json(request)
    problems: list[Problem] = []
    event_ids = since = None
    if not isinstance(body, dict) or ("eventIds" in body) == ("since" in body):
        raise InvalidInput([Problem(path="", message='give "eventIds": [...] or "since": ms')])
    problems.extend(
        Problem(path=k, message="unknown key") for k in sorted(set(body) - {"eventIds", "since"})
    )
    if "eventIds" in body:
        event_ids = body["eventIds"]
        if not isinstance(event_ids, list) or not event_ids or len(event_ids) > 10_000:
            problems.append(
                Problem(path="eventIds", message="expected 1 to 10000 event ids as strings")
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
    queued = await request.app[DISPATCHER].replay(webhook.id, event_ids=event_ids, since_ms=since)
    return web.json_response({"queued": queued}, status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/webhooks", list_webhooks, name="webhooks_list")
    app.router.add_post("/v1/webhooks", create_webhook, name="webhooks_create")
    app.router.add_post("/v1/webhooks/test", test_draft, name="webhooks_test_draft")
    app.router.add_get("/v1/webhooks/{webhook_id}", get_webhook, name="webhooks_get")
    app.router.add_patch("/v1/webhooks/{webhook_id}", patch_webhook, name="webhooks_patch")
    app.router.add_delete("/v1/webhooks/{webhook_id}", delete_webhook, name="webhooks_delete")
    app.router.add_post("/v1/webhooks/{webhook_id}/test", test_webhook, name="webhooks_test")
    app.router.add_get("/v1/webhooks/{webhook_id}/secret", get_secret, name="webhooks_secret")
    app.router.add_post(
        "/v1/webhooks/{webhook_id}/secret/rotate", rotate_secret, name="webhooks_rotate"
    )
    app.router.add_get(
        "/v1/webhooks/{webhook_id}/deliveries", list_deliveries, name="webhooks_deliveries"
    )
    app.router.add_get(
        "/v1/webhooks/{webhook_id}/attempts", list_attempts, name="webhooks_attempts"
    )
    app.router.add_post("/v1/webhooks/{webhook_id}/replay", replay, name="webhooks_replay")
