"""Console sessions: signed cookies, their CSRF tokens, and slowing down failed sign-ins.

A session is server-side, in memory: signing out removes it at once, and a restart
signs everyone out (the console is one admin's tool; nothing else depends on it). The
cookie carries the session id and an HMAC of it keyed by the admin token
(:meth:`~almhookd.auth.TokenChecker.admin_key`), so a changed admin token (a reload)
invalidates every session without tracking them. Each session has its own CSRF token,
which every form posts back.

No clock is read here: callers pass ``now`` (seconds).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

#: A session lasts this long from its sign-in, whatever is done with it.
SESSION_SECONDS: Final = 8 * 3600
#: Sessions held at once; signing in past it ends the oldest one.
MAX_SESSIONS: Final = 64
#: The first failed sign-in from an address waits this long; each further one doubles
#: it, up to FAILED_SIGN_IN_MAX_DELAY; a quiet hour forgets the address.
FAILED_SIGN_IN_DELAY: Final = 0.5
FAILED_SIGN_IN_MAX_DELAY: Final = 8.0
FAILED_SIGN_IN_MEMORY: Final = 3600.0
#: Addresses remembered at once (the oldest is forgotten first).
MAX_REMEMBERED_ADDRESSES: Final = 1024

COOKIE: Final = "almhookd_session"
#: The purpose the session key is derived for from the admin token.
KEY_PURPOSE: Final = "almhookd console session v1"


@dataclass(frozen=True, kw_only=True, slots=True)
class Session:
    id: str
    csrf_token: str
    expires_at: float


def _mac(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Sessions:
    """The signed-in sessions of one daemon."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def start(self, key: bytes, now: float) -> tuple[Session, str]:
        """A new session and the cookie value that names it."""
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now + SESSION_SECONDS,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session, f"{session.id}.{_mac(key, session.id)}"

    def find(self, key: bytes, cookie: str | None, now: float) -> Session | None:
        """The live session a cookie names, or ``None`` (missing, forged, signed with
        another admin token, ended or expired)."""
        if not cookie or cookie.count(".") != 1:
            return None
        session_id, signature = cookie.split(".")
        if not hmac.compare_digest(signature.encode(), _mac(key, session_id).encode()):
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= now:
            del self._sessions[session_id]
            return None
        return session

    def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def __len__(self) -> int:
        return len(self._sessions)


def csrf_matches(session: Session, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(
        offered.encode("utf-8", "surrogateescape"), session.csrf_token.encode()
    )


@dataclass(kw_only=True, slots=True)
class _Failures:
    count: int
    last: float


class SignInThrottle:
    """How long a sign-in from an address waits after failures from it: the delay
    doubles with each failure, so guessing the token by trying costs hours."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def delay(self, address: str, now: float) -> float:
        """Seconds the next sign-in from ``address`` waits before it is checked."""
        failures = self._failures.get(address)
        if failures is None or now - failures.last > FAILED_SIGN_IN_MEMORY:
            return 0.0
        return float(
            min(FAILED_SIGN_IN_DELAY * 2 ** (failures.count - 1), FAILED_SIGN_IN_MAX_DELAY)
        )

    def failed(self, address: str, now: float) -> None:
        failures = self._failures.pop(address, None)
        if failures is None or now - failures.last > FAILED_SIGN_IN_MEMORY:
            failures = _Failures(count=0, last=now)
        failures.count += 1
        failures.last = now
        self._failures[address] = failures
        while len(self._failures) > MAX_REMEMBERED_ADDRESSES:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
