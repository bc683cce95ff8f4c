"""Shared parts of the reliability suite: fast delivery settings, an admin client, a
steady producer, and the ledger that checks what receivers got against what was
acknowledged (lost, duplicates, order)."""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import random
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from tests.support import samples
from tests.support.daemon_process import write_config
from tests.support.running import until
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

#: A producer's lane posts until told to stop, or at most this many times (a bound, in
#: case the stop never comes: a kill comes within a second, at about 100 posts a second).
MAX_POSTS_PER_LANE = 10_000

#: Receivers live on 127.0.0.1; timeouts and backoff are short so failures retry fast.
FAST_DELIVERY = {
    "allowed_networks": '["127.0.0.0/8"]',
    "connect_timeout": '"500ms"',
    "read_timeout": '"500ms"',
    "backoff_initial": '"50ms"',
    "backoff_max": '"200ms"',
}

_ids = itertools.count()


def fast_config(directory: Path, delivery: str = "", extra: str = "", **options: Any) -> Path:
    """A daemon config with :data:`FAST_DELIVERY`; ``delivery`` lines (``key = value``)
    add to or replace its ``[delivery]`` keys, ``extra`` adds other sections."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = dict(FAST_DELIVERY)
    for line in delivery.splitlines():
        key, _, value = line.partition("=")
        if key.strip():
            keys[key.strip()] = value.strip()
    section = "[delivery]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())
    return write_config(directory, extra=section + extra, **options)


def database(directory: Path) -> Path:
    """The database of a daemon configured by :func:`fast_config` in ``directory``."""
    return directory / "data" / "almhookd.db"


def new_id(prefix: str = "rel") -> str:
    return f"{prefix}-{next(_ids)}-{random.getrandbits(32):08x}"


#: The suite's one poll (``tests.support.running.until``), with the generous bound the loads of
#: this folder need; never a speed assertion.
wait_for = functools.partial(until, timeout=30.0)


async def call(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = ADMIN_TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One API call; the JSON answer (or the text when it is not JSON)."""
    sent = {"Authorization": f"Bearer {token}"} if token else {}
    sent.update(headers or {})
    async with session.request(method, url + path, json=body, headers=sent) as response:
        text = await response.text()
        try:
            return response.status, await response.json(content_type=None)
        except ValueError:
            return response.status, text


async def create_webhook(
    session: aiohttp.ClientSession, url: str, target: str, events: Iterable[str], **fields: Any
) -> dict[str, Any]:
    status, body = await call(
        session,
        url,
        "POST",
        "/v1/webhooks",
        {"name": fields.pop("name", new_id("hook")), "targetUrl": target, "events": sorted(events)}
        | fields,
    )
    assert status == 201, body
    return dict(body)


async def ingest(
    session: aiohttp.ClientSession, url: str, events: Sequence[dict[str, Any]]
) -> tuple[int, Any]:
    return await call(
        session, url, "POST", "/v1/events", {"events": list(events)}, token=INGEST_TOKEN
    )


def events(count: int, name: str = "COURSE_ENROLLMENT", **data: Any) -> list[dict[str, Any]]:
    made = [samples.event(name, eventId=new_id()) for _ in range(count)]
    for event in made:
        event["data"].update(data)
    return made


@dataclass
class Producer:
    """Posts real-time events steadily, as the platform would, and keeps what was
    acknowledged (202). A request that got no answer is sent again later with the same
    event ids, as an at-least-once producer does; the daemon counts those as duplicates."""

    url: str
    rng: random.Random
    names: Sequence[str]
    concurrency: int = 3
    acknowledged: dict[str, str] = field(default_factory=dict)  #: eventId -> eventName
    unanswered: list[list[dict[str, Any]]] = field(default_factory=list)
    requests: int = 0
    refused: collections.Counter[int] = field(default_factory=collections.Counter)

    async def _post(self, session: aiohttp.ClientSession, batch: list[dict[str, Any]]) -> bool:
        self.requests += 1
        try:
            status, _ = await call(
                session, self.url, "POST", "/v1/events", {"events": batch}, token=INGEST_TOKEN
            )
        except (aiohttp.ClientError, TimeoutError):
            self.unanswered.append(batch)
            return False
        if status == 202:
            self.acknowledged.update({e["eventId"]: e["eventName"] for e in batch})
            return True
        self.refused[status] += 1
        self.unanswered.append(batch)
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Post until ``stop`` is set (or the daemon goes away)."""
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def lane() -> None:
                for _ in range(MAX_POSTS_PER_LANE):
                    if stop.is_set():
                        return
                    batch = [
                        samples.event(self.rng.choice(self.names), eventId=new_id("crash"))
                        for _ in range(self.rng.randint(1, 4))
                    ]
                    if not await self._post(session, batch):
                        return
                    await asyncio.sleep(self.rng.uniform(0, 0.01))

            await asyncio.gather(*(lane() for _ in range(self.concurrency)))

    async def resend(self) -> None:
        """Send the unanswered requests again (the daemon is up)."""
        pending, self.unanswered = self.unanswered, []
        async with aiohttp.ClientSession() as session:
            for batch in pending:
                assert await self._post(session, batch), f"refused again: {self.refused}"


class Receipts(Protocol):
    """What a receiver recorded: one entry per request, with headers and body."""

    @property
    def received(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Ledger:
    """One receiver's requests checked against the events it should have got."""

    expected: int
    missing: frozenset[str]
    requests: int
    duplicate_events: int  #: copies of an event after its first arrival
    redelivered_batches: int  #: requests repeating an earlier request's webhook-id
    out_of_order: int  #: first arrivals of an event after a later-ingested one
    foreign_batches: int  #: a webhook-id repeated with other events in it

    @classmethod
    def of(cls, receiver: Receipts, expected: set[str], seq: dict[str, int]) -> Ledger:
        first: list[str] = []
        seen: set[str] = set()
        duplicates = redelivered = foreign = 0
        batches: dict[str, list[str]] = {}
        for request in receiver.received:
            ids = [event["eventId"] for event in request.payload["events"]]
            batch_id = request.headers.get("webhook-id") or request.headers.get("Webhook-Id")
            previous = batches.setdefault(batch_id, ids)
            if previous is not ids:
                redelivered += 1
                foreign += previous != ids
            for event_id in ids:
                if event_id in seen:
                    duplicates += 1
                else:
                    seen.add(event_id)
                    first.append(event_id)
        order = [seq[event_id] for event_id in first if event_id in seq]
        return cls(
            expected=len(expected),
            missing=frozenset(expected - seen),
            requests=len(receiver.received),
            duplicate_events=duplicates,
            redelivered_batches=redelivered,
            out_of_order=sum(1 for a, b in itertools.pairwise(order) if b < a),
            foreign_batches=foreign,
        )


def stored_sequence(db_path: Path) -> dict[str, int]:
    """eventId -> ingest sequence of every stored event (the daemon is stopped)."""
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return dict(db.execute("SELECT event_id, seq FROM events"))


def sending_batches(db_path: Path) -> dict[str, int]:
    """Request batches recorded as being sent, per webhook: after a kill these are the
    only requests that can reach a receiver twice."""
    db = sqlite3.connect(db_path)
    try:
        return dict(
            db.execute(
                "SELECT webhook_id, count(*) FROM request_batches WHERE state = 'sending'"
                " GROUP BY webhook_id"
            )
        )
    finally:
        db.close()


def undelivered(db_path: Path) -> int:
    db = sqlite3.connect(db_path)
    try:
        return int(
            db.execute("SELECT count(*) FROM deliveries WHERE state != 'delivered'").fetchone()[0]
        )
    finally:
        db.close()


def assert_no_secrets(text: str, secrets: Iterable[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:4]}…) appears in the log"
