"""A bare ingest endpoint: what ``POST /v1/events`` costs without almhookd.

aiohttp under uvloop, access log off, one route: it reads the body, decodes it with
``json.loads`` and answers 202 with a body of the same shape as almhookd's
(``{"accepted":N,"duplicates":0,"eventIds":[...]}``, the ids taken from the decoded
events: one event, or the ``events`` list of an envelope). Nothing is validated and
nothing is stored. ``GET /healthz`` answers 200 once it listens.

``bench/ingest_wire.py`` runs it as its own process beside the daemon and drives both with
the same load generator and the same bodies; run it alone with
``.venv/bin/python bench/bare_endpoint.py --port 8081``. SIGTERM or SIGINT stops it.
It imports nothing from almhookd, so it runs from any checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from collections.abc import Sequence

import uvloop
from aiohttp import web


def answer(document: object) -> str:
    """The 202 body for a decoded request body."""
    events = document.get("events") if isinstance(document, dict) else None
    items = events if isinstance(events, list) else [document]
    ids = [event.get("eventId") if isinstance(event, dict) else None for event in items]
    ids = [event_id if event_id is not None else str(uuid.uuid4()) for event_id in ids]
    encoded = json.dumps(ids, separators=(",", ":"))
    return f'{{"accepted":{len(ids)},"duplicates":0,"eventIds":{encoded}}}'


async def events(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(status=202, content_type="application/json", text=answer(json.loads(body)))


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def application() -> web.Application:
    # 8 MiB: more than any envelope the benchmarks send (500 events are about 110 KB).
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/events", events)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(application(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
