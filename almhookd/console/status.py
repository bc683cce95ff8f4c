"""The status page: the daemon's state as ``/v1/status`` gives it, storage health, the
next batch flush with "Flush now", and the event catalogue."""

from __future__ import annotations

from aiohttp import web

from almhookd import __version__
from almhookd.api.common import CLOCK, SCHEDULER, STORE
from almhookd.api.ops import status_document
from almhookd.console.common import page, posted_form, redirect, render
from almhookd.console.sessions import Session
from almhookd.console.webhooks import since, until
from almhookd.domain.catalogue import CATALOGUE
from almhookd.errors import StorageError


@page
async def status_page(request: web.Request, session: Session) -> web.StreamResponse:
    document = await status_document(request.app)
    try:
        await request.app[STORE].check()
        storage = "ok"
    except StorageError as error:
        storage = error.message
    events = sorted(CATALOGUE.values(), key=lambda event: (not event.realtime, event.name))
    return render(
        request,
        "status.html",
        {
            "title": "Status",
            "status": document,
            "storage": storage,
            "version": __version__,
            "now_ms": int(request.app[CLOCK]() * 1000),
            "events": events,
            "flushed": request.query.get("flushed"),
            "since": since,
            "until": until,
        },
        session=session,
    )


@page
async def flush_now(request: web.Request, session: Session) -> web.StreamResponse:
    await posted_form(request, session)
    scheduler = request.app.get(SCHEDULER)
    released = sum((await scheduler.flush()).values()) if scheduler is not None else 0
    return redirect(f"/status?flushed={released}")
