"""``GET /v1/catalogue``: the 27 events, their kind and ``data`` fields, for producers
and admins alike (either token may read it)."""

from __future__ import annotations

import json
from typing import Final

from aiohttp import web

from almhookd.domain.catalogue import catalogue_document

#: The catalogue is fixed for the life of the process: encoded once.
_BODY: Final = json.dumps(catalogue_document()).encode()


async def catalogue(request: web.Request) -> web.Response:
    """The event catalogue, in its own order (SPEC.md's: real-time, then batched)."""
    return web.Response(body=_BODY, content_type="application/json")
