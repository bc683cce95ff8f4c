"""Bearer tokens: who may call what, compared in constant time.

When no admin token is configured, the daemon makes one on first start and keeps it
beside the database (``admin.token``, mode 0600), so a fresh install is never open and
never ships a shared default token.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final, NamedTuple

from almhookd.config import Config, Secret
from almhookd.errors import ConfigError

GENERATED_TOKEN_NAME: Final = "admin.token"  # noqa: S105 - a file name, not a token


class Role(enum.Enum):
    ADMIN = "admin"
    INGEST = "ingest"


def generated_token_path(config: Config) -> Path:
    return config.storage.path.parent / GENERATED_TOKEN_NAME


def read_generated_token(config: Config) -> Secret | None:
    try:
        value = generated_token_path(config).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Secret(value) if value else None


class AdminToken(NamedTuple):
    """The admin token in force, and where it came from."""

    secret: Secret
    #: The file holding the token when the config has none (``admin.token``), else None.
    file: Path | None
    #: Whether this call made the token (and wrote ``file``); False when it was read.
    generated: bool


def ensure_admin_token(config: Config) -> AdminToken:
    """The admin token: the configured one, else the one kept in :func:`generated_token_path`,
    made and written there on the first start."""
    if config.server.admin_token is not None:
        return AdminToken(config.server.admin_token, None, generated=False)
    path = generated_token_path(config)
    existing = read_generated_token(config)
    if existing is not None:
        return AdminToken(existing, path, generated=False)
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(token + "\n")
    except FileExistsError:
        raced = read_generated_token(config)
        if raced is None:
            raise ConfigError(f"{path}: exists but holds no token") from None
        return AdminToken(raced, path, generated=False)
    except OSError as error:
        raise ConfigError(
            f"server.admin_token is not set and {path} cannot be written: {error.strerror}"
        ) from None
    return AdminToken(Secret(token), path, generated=True)


class TokenChecker:
    """Maps an ``Authorization`` header to a :class:`Role`, or ``None``."""

    def __init__(self, *, admin: Secret, ingest: Secret | None) -> None:
        self._admin = admin.reveal().encode()
        self._ingest = ingest.reveal().encode() if ingest else None

    def role(self, authorization: str | None) -> Role | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        offered = token.strip().encode("utf-8", "surrogateescape")
        # Both comparisons always run so timing does not tell which token was near.
        is_admin = hmac.compare_digest(offered, self._admin)
        is_ingest = self._ingest is not None and hmac.compare_digest(offered, self._ingest)
        if is_admin:
            return Role.ADMIN
        if is_ingest:
            return Role.INGEST
        return None

    def admin_key(self, purpose: str) -> bytes:
        """A key for ``purpose`` derived from the admin token (HMAC-SHA256): what it
        signs stops verifying when the admin token changes, and the key tells nothing
        of the token."""
        return hmac.new(self._admin, purpose.encode(), hashlib.sha256).digest()
