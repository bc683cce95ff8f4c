"""What every console page shares: its state, the security headers, the session check,
and rendering.

Pages are rendered on the server (Jinja2, autoescaped) and work without JavaScript.
Every answer carries a strict Content-Security-Policy (nothing inline, nothing from
elsewhere), refuses framing, and is not cached. A page that needs a session sends a
visitor without one to the sign-in form, and back afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from almhookd.api.common import CLOCK, STATE
from almhookd.console.sessions import (
    COOKIE,
    KEY_PURPOSE,
    Session,
    Sessions,
    SignInThrottle,
    csrf_matches,
)
from almhookd.errors import StorageError

Sleep = Callable[[float], Awaitable[None]]


@dataclass(kw_only=True, slots=True)
class ConsoleState:
    sessions: Sessions = field(default_factory=Sessions)
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
    #: how failed sign-ins wait (tests pass their own, to see the delays without waiting)
    sleep: Sleep = asyncio.sleep


CONSOLE: Final = web.AppKey("console", ConsoleState)

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

#: A posted form, as aiohttp reads it.
Form = MultiDictProxy[str | bytes | bytearray | FileField]
Page = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def secured(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    return response


def session_key(request: web.Request) -> bytes:
    return request.app[STATE].tokens.admin_key(KEY_PURPOSE)


def current_session(request: web.Request) -> Session | None:
    return request.app[CONSOLE].sessions.find(
        session_key(request), request.cookies.get(COOKIE), request.app[CLOCK]()
    )


def local_path(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/``: a sign-in never sends the
    browser elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def redirect(location: str) -> web.StreamResponse:
    return secured(web.Response(status=303, headers={"Location": location}))


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any],
    *,
    session: Session | None,
    status: int = 200,
) -> web.StreamResponse:
    response = aiohttp_jinja2.render_template(
        template,
        request,
        {**context, "session": session, "path": request.path},
        status=status,
    )
    return secured(response)


class Forbidden(Exception):
    """A form posted without the session's CSRF token: answered 403, nothing done."""


async def posted_form(request: web.Request, session: Session) -> Form:
    """The posted form, once its CSRF token is the session's; else :class:`Forbidden`."""
    form = await request.post()
    offered = form.get("csrf_token")
    if not csrf_matches(session, offered if isinstance(offered, str) else None):
        raise Forbidden()
    return form


def error_page(
    request: web.Request, session: Session | None, *, status: int, title: str, message: str
) -> web.StreamResponse:
    """The console's one error page: a title, a sentence, the status."""
    return render(
        request, "error.html", {"title": title, "message": message}, session=session, status=status
    )


def page(handler: Page) -> Handler:
    """A page that needs a session; storage failures become an error page, not JSON."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        session = current_session(request)
        if session is None:
            if request.method != "GET":
                return error_page(
                    request,
                    None,
                    status=403,
                    title="Signed out",
                    message="Sign in again, then repeat this.",
                )
            return redirect("/signin?next=" + quote(request.path_qs, safe=""))
        try:
            return await handler(request, session)
        except Forbidden:
            return error_page(
                request,
                session,
                status=403,
                title="Forbidden",
                message="The form expired; reload the page.",
            )
        except web.HTTPRequestEntityTooLarge:
            return error_page(
                request,
                session,
                status=413,
                title="Too large",
                message="The form was larger than the daemon takes "
                "(server.max_body_bytes); nothing was saved.",
            )
        except StorageError as error:
            return error_page(
                request, session, status=503, title="Storage unavailable", message=error.message
            )

    return guarded
