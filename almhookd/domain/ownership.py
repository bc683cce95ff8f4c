"""Which process delivers to which webhook, when several share one database. Pure.

Every live process computes the same answer from the same list of live processes
(rendezvous hashing: each webhook goes to the process with the highest hash of the
pair), so the webhooks spread over the processes and, when one joins or leaves, only
the webhooks it gains or held move. Who actually delivers is decided by a lease in the
database (``storage.postgres``); this module only says which leases a process should
seek or give up, and whether a lease leaves time for one more request.

A lease must outlive every request sent under it: a request is started only while the
lease has at least :attr:`LeasePolicy.request_budget_ms` left (the longest a request
can take, connect and read timeouts, plus a margin for clock steps and the renewal's
own round trip). A process that can no longer renew (its database connection is cut)
therefore stops sending before another may take the webhook over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class LeasePolicy:
    """How long a lease lasts, how often it is renewed, and the time a request needs."""

    lease_ms: int  #: a lease's length from its last renewal
    renew_ms: int  #: the time between two renewals (several per lease)
    request_budget_ms: int  #: the longest a request may take, with a margin

    def __post_init__(self) -> None:
        if not 0 < self.renew_ms < self.lease_ms:
            raise ValueError("renew_ms must be positive and shorter than lease_ms")
        if self.lease_ms <= self.request_budget_ms + self.renew_ms:
            # Else a request could never start right after a renewal, or one renewal
            # missed would already stop the sending.
            raise ValueError("lease_ms must exceed request_budget_ms + renew_ms")

    @classmethod
    def for_timeouts(
        cls, *, connect_timeout_s: float, read_timeout_s: float, takeover_s: float = 15.0
    ) -> LeasePolicy:
        """A policy whose lease is taken over within ``takeover_s`` of its owner's death
        when that is long enough for the longest request, else as soon as it is."""
        budget_ms = int((connect_timeout_s + read_timeout_s) * 1000) + 2_000
        renew_ms = 2_000
        lease_ms = max(int(takeover_s * 1000), budget_ms + 2 * renew_ms)
        return cls(lease_ms=lease_ms, renew_ms=renew_ms, request_budget_ms=budget_ms)

    def may_send(self, *, expires_at_ms: int, now_ms: int) -> bool:
        """Whether a request started now ends before the lease does."""
        return now_ms + self.request_budget_ms <= expires_at_ms


def _weight(webhook_id: str, process_id: str) -> bytes:
    return hashlib.blake2b(f"{webhook_id}\0{process_id}".encode(), digest_size=8).digest()


def owner_of(webhook_id: str, live: Collection[str]) -> str | None:
    """The live process that should deliver to ``webhook_id`` (None: no process)."""
    if not live:
        return None
    return max(live, key=lambda process: (_weight(webhook_id, process), process))


def share_of(process_id: str, webhook_ids: Iterable[str], live: Collection[str]) -> set[str]:
    """The webhooks ``process_id`` should hold among ``live`` (itself counted live)."""
    everyone = set(live) | {process_id}
    return {w for w in webhook_ids if owner_of(w, everyone) == process_id}
