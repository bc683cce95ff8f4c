"""``GET /v1/openapi.json``: the API described as OpenAPI 3.1, for anyone (no token),
so client generators and API browsers can read it from the daemon they will call."""

from __future__ import annotations

import json
from typing import Final

from aiohttp import web

from almhookd.api.openapi.document import openapi_document

#: The document is fixed for the life of the process: encoded once.
_BODY: Final = json.dumps(openapi_document()).encode()


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document; ``PUBLIC_ROUTES`` names this route, so no token is asked."""
    return web.Response(body=_BODY, content_type="application/json")
