"""The webhooks list, the console's home page.

Built on the admin API's own functions (:func:`almhookd.api.actions.webhook_document`),
so the page and ``GET /v1/webhooks`` can never disagree.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from almhookd.api.actions import webhook_document
from almhookd.api.common import CLOCK, STATE, STORE
from almhookd.console.common import page, render
from almhookd.console.sessions import Session


def age(milliseconds: int | None) -> str:
    """A duration for people: ``45 s``, ``12 min``, ``3 h 05 min``, ``2 d 4 h``."""
    if milliseconds is None:
        return "—"
    seconds = max(0, milliseconds // 1000)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def since(now_ms: int, then_ms: int | None) -> str:
    return "—" if then_ms is None else age(now_ms - then_ms) + " ago"


def until(now_ms: int, then_ms: int | None) -> str:
    if then_ms is None:
        return "—"
    return "now" if then_ms <= now_ms else "in " + age(then_ms - now_ms)


@page
async def webhooks_list(request: web.Request, session: Session) -> web.StreamResponse:
    webhooks = await request.app[STORE].list_webhooks()
    documents: list[dict[str, Any]] = [
        await webhook_document(request.app, webhook) for webhook in webhooks
    ]
    limit = request.app[STATE].config.delivery.max_webhooks
    now_ms = int(request.app[CLOCK]() * 1000)
    return render(
        request,
        "webhooks.html",
        {
            "title": "Webhooks",
            "deleted": request.query.get("deleted"),
            "webhooks": documents,
            "limit": limit,
            "at_limit": len(documents) >= limit,
            "now_ms": now_ms,
            "age": age,
            "since": since,
            "until": until,
        },
        session=session,
    )
