"""Webhooks (subscriptions) as values. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from almhookd.config import Secret
from almhookd.policy import Schedule

AUTH_TYPES: Final = ("none", "basic", "signature")
STATUSES: Final = ("active", "inactive", "disabled")


@dataclass(frozen=True, kw_only=True, slots=True)
class SigningSecret:
    secret: Secret
    created_at_ms: int
    expires_at_ms: int | None = None  #: set when a rotation retires it

    def in_force(self, now_ms: int) -> bool:
        return self.expires_at_ms is None or now_ms < self.expires_at_ms


@dataclass(frozen=True, kw_only=True, slots=True)
class NewWebhook:
    """What creating a webhook takes."""

    name: str
    target_url: str
    events: frozenset[str]
    description: str = ""
    auth_type: str = "none"
    auth_username: str | None = None
    auth_password: Secret | None = None
    active: bool = True
    contact_email: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Webhook:
    id: str
    name: str
    description: str
    target_url: str
    auth_type: str
    auth_username: str | None
    auth_password: Secret | None
    events: frozenset[str]
    status: str
    disabled_reason: str | None
    contact_email: str
    created_at_ms: int
    updated_at_ms: int
    schedule: Schedule = field(default_factory=Schedule)
    secrets: tuple[SigningSecret, ...] = ()

    @property
    def active(self) -> bool:
        return self.status == "active"

    def secrets_in_force(self, now_ms: int) -> list[str]:
        """Newest first, as the signature header lists them."""
        valid = [s for s in self.secrets if s.in_force(now_ms)]
        return [s.secret.reveal() for s in sorted(valid, key=lambda s: -s.created_at_ms)]
