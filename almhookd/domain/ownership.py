"""Which process delivers to which webhook, when several share one database. Pure.

Every live process computes the same answer from the same list of live processes
(rendezvous hashing: each webhook goes to the process with the highest hash of the
pair), so the webhooks spread over the processes and, when one joins or leaves, only
the webhooks it gains or held move. Who actually delivers is decided by a lease in the
database (``storage.postgres``); this module only says which leases a process should
seek or give up, and whether a lease leaves time for one more request.

A process sends to a webhook only while its lease has more than
:attr:`LeasePolicy.margin_ms` left, by its own conservative reckoning, and cuts a
request short when that point comes (renewals move it on, so a slow receiver keeps its
request as long as the process keeps renewing). A process that can no longer renew
(its database connection is cut) therefore stops sending at least ``margin_ms`` before
another may take the webhook over. The database side is fenced as well: each claim and
record checks the lease's fence in its own transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, kw_only=True, slots=True)
class Lease:
    """A webhook's lease as the database granted it (times in the server's clock)."""

    webhook_id: str
    fence: int  #: raised at every new owner: a step of an older owner is refused
    expires_at_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class LeasePolicy:
    """How long a lease lasts, how often it is renewed, and how long before its end
    sending stops."""

    lease_ms: int  #: a lease's length from its last renewal
    renew_ms: int  #: the time between two renewals (several per lease)
    margin_ms: int  #: sending stops this long before the lease ends

    def __post_init__(self) -> None:
        if not 0 < self.renew_ms < self.lease_ms or self.margin_ms <= 0:
            raise ValueError("renew_ms and margin_ms must be positive, renew_ms below lease_ms")
        if self.lease_ms <= 2 * self.renew_ms + self.margin_ms:
            # Else one late or missed renewal would already stop the sending.
            raise ValueError("lease_ms must exceed two renewals and the margin")

    @classmethod
    def for_takeover(cls, takeover_s: float = 15.0) -> LeasePolicy:
        """A policy under which the webhooks of a process that died are delivered by
        another within ``takeover_s``: the lease runs out, then another process takes
        it at its next renewal (``lease_ms + renew_ms`` plus a round trip)."""
        takeover_ms = int(takeover_s * 1000)
        renew_ms = max(1, takeover_ms * 2 // 15)  # 2 s of 15
        return cls(lease_ms=takeover_ms * 4 // 5, renew_ms=renew_ms, margin_ms=takeover_ms // 5)

    @property
    def dead_after_ms(self) -> int:
        """A process not heard from for this long counts as gone (its leases ran out)."""
        return self.lease_ms

    def may_send(self, *, expires_at_ms: int, now_ms: int) -> bool:
        """Whether a request may be sent (or go on) now under a lease ending then."""
        return now_ms + self.margin_ms < expires_at_ms


def _weight(webhook_id: str, process_id: str) -> bytes:
    return hashlib.blake2b(f"{webhook_id}\0{process_id}".encode(), digest_size=8).digest()


def owner_of(webhook_id: str, live: Collection[str]) -> str | None:
    """The live process that should deliver to ``webhook_id`` (None: no process)."""
    if not live:
        return None
    return max(live, key=lambda process: (_weight(webhook_id, process), process))


#: The name the leader is chosen under, as if it were a webhook: the batch flush and the
#: maintenance pass run in one process at a time.
LEADER_KEY: Final = "almhookd/leader"


def leader_of(live: Collection[str]) -> str | None:
    """The live process that runs the batch flush and the maintenance pass."""
    return owner_of(LEADER_KEY, live)


def share_of(process_id: str, webhook_ids: Iterable[str], live: Collection[str]) -> set[str]:
    """The webhooks ``process_id`` should hold among ``live`` (itself counted live)."""
    everyone = set(live) | {process_id}
    return {w for w in webhook_ids if owner_of(w, everyone) == process_id}
