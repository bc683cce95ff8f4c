"""The admin API's webhook routes: CRUD, test deliveries, secrets, inspection, replay.

Each handler reads the request and writes the answer; what it does is
:mod:`almhookd.api.actions`, which the console runs too. Passwords and secrets are never
echoed, except a signing secret by its own download route.
"""

from __future__ import annotations

from aiohttp import web

from almhookd.api import actions
from almhookd.api.common import CLOCK, STORE, read_json


async def list_webhooks(request: web.Request) -> web.Response:
    app = request.app
    webhooks = await app[STORE].list_webhooks()
    return web.json_response(
        {"webhooks": [await actions.webhook_document(app, webhook) for webhook in webhooks]}
    )


async def create_webhook(request: web.Request) -> web.Response:
    webhook = await actions.create(request.app, await read_json(request))
    return web.json_response(await actions.webhook_document(request.app, webhook), status=201)


async def get_webhook(request: web.Request) -> web.Response:
    webhook = await actions.find_webhook(request.app, request.match_info["webhook_id"])
    return web.json_response(await actions.webhook_document(request.app, webhook))


async def patch_webhook(request: web.Request) -> web.Response:
    webhook = await actions.update(
        request.app, request.match_info["webhook_id"], await read_json(request)
    )
    return web.json_response(await actions.webhook_document(request.app, webhook))


async def delete_webhook(request: web.Request) -> web.Response:
    await actions.delete(request.app, request.match_info["webhook_id"])
    return web.Response(status=204)


async def test_webhook(request: web.Request) -> web.Response:
    """One out-of-band test delivery, signed like a real one, not retried."""
    webhook = await actions.find_webhook(request.app, request.match_info["webhook_id"])
    return web.json_response(await actions.test_delivery(request.app, webhook))


async def test_draft(request: web.Request) -> web.Response:
    """The same for an unsaved webhook (a create body): see :func:`actions.test_draft`."""
    return web.json_response(await actions.test_draft(request.app, await read_json(request)))


async def get_secret(request: web.Request) -> web.Response:
    webhook = await actions.find_webhook(request.app, request.match_info["webhook_id"])
    document = actions.secret_document(webhook, int(request.app[CLOCK]() * 1000))
    return web.json_response(
        document,
        headers={
            "Content-Disposition": f'attachment; filename="{webhook.id}-secret.json"',
            "Cache-Control": "no-store",
        },
    )


async def rotate_secret(request: web.Request) -> web.Response:
    document = await actions.rotate_secret(request.app, request.match_info["webhook_id"])
    return web.json_response(document, headers={"Cache-Control": "no-store"})


def _page(request: web.Request) -> tuple[int, int | None]:
    return actions.page_params(request.query.get("limit", "100"), request.query.get("cursor"))


async def list_deliveries(request: web.Request) -> web.Response:
    webhook = await actions.find_webhook(request.app, request.match_info["webhook_id"])
    limit, cursor = _page(request)
    page = await actions.deliveries_page(
        request.app, webhook, state=request.query.get("state") or None, limit=limit, cursor=cursor
    )
    return web.json_response(page)


async def list_attempts(request: web.Request) -> web.Response:
    webhook = await actions.find_webhook(request.app, request.match_info["webhook_id"])
    limit, cursor = _page(request)
    page = await actions.attempts_page(request.app, webhook, limit=limit, cursor=cursor)
    return web.json_response(page)


async def replay(request: web.Request) -> web.Response:
    webhook = await actions.find_webhook(request.app, request.match_info["webhook_id"])
    queued = await actions.replay(request.app, webhook, await read_json(request))
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
