"""Signing in with the admin token, and out.

The sign-in form is protected against cross-site posting by a double-submit token (a
cookie and a hidden field that must match); the session's own CSRF token protects
every form after it. A failed sign-in is logged with the client's address, never with
what was typed, and the next one from that address waits (:class:`SignInThrottle`).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

import structlog
from aiohttp import web

from almhookd.api.common import CLOCK, STATE
from almhookd.auth import Role
from almhookd.console.common import (
    CONSOLE,
    current_session,
    local_path,
    page,
    posted_form,
    redirect,
    render,
    session_key,
)
from almhookd.console.sessions import COOKIE, SESSION_SECONDS, Session

log = structlog.get_logger("almhookd.console")

#: The double-submit cookie of the sign-in form.
SIGNIN_COOKIE: Final = "almhookd_signin"
#: Longest admin token the form takes (config tokens are far shorter).
MAX_TOKEN_CHARS: Final = 4096


def _signin_form(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.StreamResponse:
    form_token = secrets.token_urlsafe(32)
    response = render(
        request,
        "signin.html",
        {
            "title": "Sign in",
            "form_token": form_token,
            "next": local_path(request.query.get("next")),
            "error": error,
        },
        session=None,
        status=status,
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        form_token,
        httponly=True,
        samesite="Strict",
        path="/signin",
        secure=request.secure,
    )
    return response


async def signin_form(request: web.Request) -> web.StreamResponse:
    if current_session(request) is not None:
        return redirect(local_path(request.query.get("next")))
    return _signin_form(request)


async def signin(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    posted_token = form.get("form_token")
    cookie_token = request.cookies.get(SIGNIN_COOKIE)
    if (
        not isinstance(posted_token, str)
        or cookie_token is None
        or not hmac.compare_digest(posted_token.encode(), cookie_token.encode())
    ):
        return _signin_form(request, error="The form expired; sign in again.", status=403)
    console, now = request.app[CONSOLE], request.app[CLOCK]()
    address = request.remote or "unknown"
    delay = console.throttle.delay(address, now)
    if delay > 0:
        await console.sleep(delay)
    token = form.get("token")
    offered = token.strip() if isinstance(token, str) else ""
    role = None
    if offered and len(offered) <= MAX_TOKEN_CHARS:
        role = request.app[STATE].tokens.role("Bearer " + offered)
    if role is not Role.ADMIN:
        console.throttle.failed(address, request.app[CLOCK]())
        log.warning(
            "console.sign_in_failed",
            remote=address,
            reason="the ingest token" if role is Role.INGEST else "not the admin token",
        )
        return _signin_form(request, error="That is not the admin token.", status=401)
    console.throttle.succeeded(address)
    _session, cookie = console.sessions.start(session_key(request), request.app[CLOCK]())
    log.info("console.signed_in", remote=address)
    response = redirect(local_path(_posted(form.get("next"))))
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=SESSION_SECONDS,
        secure=request.secure,
    )
    response.del_cookie(SIGNIN_COOKIE, path="/signin")
    return response


def _posted(value: object) -> str | None:
    return value if isinstance(value, str) else None


@page
async def signout(request: web.Request, session: Session) -> web.StreamResponse:
    await posted_form(request, session)
    request.app[CONSOLE].sessions.end(session)
    log.info("console.signed_out", remote=request.remote or "unknown")
    response = redirect("/signin")
    response.del_cookie(COOKIE, path="/")
    return response
