"""The admin console: the platform's webhook screens, served at ``/`` on the daemon's
listener, rendered on the server (no JavaScript needed), signed in with the admin token.

``common`` holds what every page shares (headers, sessions, rendering), ``sessions`` the
signed session cookies, CSRF tokens and the sign-in throttle, ``signin`` signing in and
out; the pages are ``webhooks`` (the list), ``forms`` (add and edit), ``webhook_page``
(one webhook, its deliveries and attempts, replay) and ``status``. They are built on the
admin API's own functions (``almhookd.api.actions``), so the two can never disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from almhookd.console import forms, webhook_page
from almhookd.console.common import CONSOLE, ConsoleState, secured
from almhookd.console.signin import signin, signin_form, signout
from almhookd.console.status import flush_now, status_page
from almhookd.console.webhooks import webhooks_list

__all__ = ["setup"]

STATIC: Final = Path(__file__).parent / "static"


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound()
    return secured(web.FileResponse(path, headers={"Cache-Control": "no-cache"}))


def setup(app: web.Application, state: ConsoleState | None = None) -> None:
    """Add the console's pages to ``app`` (made by :func:`almhookd.api.app.create_app`).

    Their route names start with ``console.``: the API's bearer check leaves them to
    the console's own session check."""
    app[CONSOLE] = state or ConsoleState()
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("almhookd.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    router = app.router
    router.add_get("/", webhooks_list, name="console.webhooks")
    router.add_get("/signin", signin_form, name="console.signin_form")
    router.add_post("/signin", signin, name="console.signin")
    router.add_post("/signout", signout, name="console.signout")
    router.add_get("/status", status_page, name="console.status")
    router.add_post("/status/flush", flush_now, name="console.flush")
    router.add_get("/static/{name}", _static, name="console.static")
    # The form's fixed paths (/webhooks/new) before the page's /webhooks/{webhook_id}:
    # aiohttp before 3.10 matched routes in the order they were added.
    forms.add_routes(router)
    webhook_page.add_routes(router)
