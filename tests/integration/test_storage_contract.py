"""The storage contract: the guarantees of :mod:`almhookd.storage.interface`, held by
every backend.

Each test runs once per backend of :data:`BACKENDS` (adding one is one entry there),
through the ``storage`` fixture, opened on the test's :class:`FakeClock` with a list
that records its ``on_events_committed`` calls. A "crash" is :meth:`Harness.restart`:
a durable backend is closed and opened again on the same data, the memory backend goes
on as it is (nothing of it would survive a real crash). The tests that need the data to
outlive an instance take ``durable`` instead, parametrized over the durable backends
only.

What is about SQLite itself (files, WAL, fsync, locks, pragmas, query plans, commit
counters, migrations, the writer thread) stays in ``test_store.py``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import pytest

from almhookd.config import Secret
from almhookd.domain.batching import Claim, RequestBatch, payload
from almhookd.domain.events import NewEvent
from almhookd.domain.policy import Outcome, Schedule
from almhookd.domain.webhooks import NewWebhook, WebhookChanges
from almhookd.errors import StorageClosed, StorageError, WebhookLimitReached
from almhookd.protocols import Clock
from almhookd.storage.interface import EventsCommitted, Storage
from almhookd.storage.memory import MemoryStorage
from almhookd.storage.postgres import PostgresStorage
from almhookd.storage.sqlite import SqliteStorage
from almhookd.storage.values import (
    RESPONSE_EXCERPT_CHARS,
    Attempt,
    DeliveryRecord,
    DeliveryStatus,
)
from tests.support import samples
from tests.support.clock import FakeClock
from tests.support.events import make_events

# --- the backends --------------------------------------------------------------------

Opener = Callable[[Path, Clock, EventsCommitted], Awaitable[Storage]]


@dataclass(frozen=True, kw_only=True)
class Backend:
    open: Opener  #: opens the backend on a path (unused by those without files)
    durable: bool  #: keeps its data across a close and an open


async def _open_memory(path: Path, clock: Clock, committed: EventsCommitted) -> Storage:
    return await MemoryStorage.open(clock=clock, on_events_committed=committed)


async def _open_sqlite(path: Path, clock: Clock, committed: EventsCommitted) -> Storage:
    return await SqliteStorage.open(path, clock=clock, on_events_committed=committed)


async def _open_postgres(path: Path, clock: Clock, committed: EventsCommitted) -> Storage:
    """A database of the session's PostgreSQL cluster, one per test: the harness names
    it by the test's path (see :func:`_on_postgres`)."""
    raise AssertionError("replaced by _on_postgres for each test")


#: Every backend the contract runs against.
BACKENDS: Final[dict[str, Backend]] = {
    "memory": Backend(open=_open_memory, durable=False),
    "sqlite": Backend(open=_open_sqlite, durable=True),
    "postgresql": Backend(open=_open_postgres, durable=True),
}


def _on_postgres(backend: Backend, request: pytest.FixtureRequest) -> Backend:
    """The backend as a test opens it: PostgreSQL on a new database of the session's
    cluster (started on the first test that needs it)."""
    if backend.open is not _open_postgres:
        return backend
    dsn = Secret(request.getfixturevalue("postgres_cluster").new_database("contract"))

    async def open_database(path: Path, clock: Clock, committed: EventsCommitted) -> Storage:
        return await PostgresStorage.open(dsn, clock=clock, on_events_committed=committed)

    return replace(backend, open=open_database)


DURABLE: Final = [name for name, backend in BACKENDS.items() if backend.durable]


class Harness:
    """One backend for one test: opens it, restarts it, records the commit callbacks."""

    def __init__(self, backend: Backend, path: Path, clock: FakeClock) -> None:
        self.backend, self.path, self.clock = backend, path, clock
        #: one entry per ``on_events_committed`` call: the clock's time in ms
        self.committed: list[int] = []
        self._opened: list[Storage] = []

    def _on_events_committed(self) -> None:
        self.committed.append(now_ms(self.clock))

    async def open(self) -> Storage:
        storage = await self.backend.open(self.path, self.clock, self._on_events_committed)
        self._opened.append(storage)
        return storage

    async def restart(self, storage: Storage) -> Storage:
        """After a crash: a durable backend is opened again on its data; the memory
        backend goes on (the delivery worker's own restart, in the same process)."""
        if not self.backend.durable:
            return storage
        await storage.close()
        return await self.open()

    async def close(self) -> None:
        for storage in self._opened:
            await storage.close()


@pytest.fixture(params=list(BACKENDS))
async def harness(
    request: pytest.FixtureRequest, db_path: Path, clock: FakeClock
) -> AsyncIterator[Harness]:
    opened = Harness(_on_postgres(BACKENDS[request.param], request), db_path, clock)
    yield opened
    await opened.close()


@pytest.fixture
async def storage(harness: Harness) -> Storage:
    return await harness.open()


@pytest.fixture(params=DURABLE)
async def durable(
    request: pytest.FixtureRequest, db_path: Path, clock: FakeClock
) -> AsyncIterator[Harness]:
    opened = Harness(_on_postgres(BACKENDS[request.param], request), db_path, clock)
    yield opened
    await opened.close()


# --- helpers -------------------------------------------------------------------------


def _new_webhook(name: str, events: frozenset[str] = frozenset(samples.ALL)) -> NewWebhook:
    return NewWebhook(name=name, target_url="https://example.invalid/", events=events)


def now_ms(clock: Clock) -> int:
    return int(clock() * 1000)


def ids(events: list[NewEvent]) -> list[str]:
    return [event.event_id for event in events]


def batch_ids(batches: list[RequestBatch]) -> list[list[str]]:
    return [list(batch.event_ids) for batch in batches]


def ok(batch: RequestBatch, clock: Clock) -> Attempt:
    outcome = Outcome(ok=True, status=200, duration_ms=7)
    return Attempt(batch=batch, outcome=outcome, started_at_ms=now_ms(clock))


def failed(batch: RequestBatch, clock: Clock, status: int = 503) -> Attempt:
    outcome = Outcome(ok=False, status=status, duration_ms=9, response_body="busy")
    return Attempt(batch=batch, outcome=outcome, started_at_ms=now_ms(clock))


async def states(storage: Storage, webhook_id: str) -> dict[str, str]:
    """Event id -> the state the admin API shows, for one webhook."""
    records = await storage.deliveries(webhook_id, state=None, limit=1000, after_seq=0)
    return {record["eventId"]: record["state"] for record in records}


#: A claim late enough for every test event to be due; tests replace what they vary.
CLAIM = Claim(
    now_ms=2_000_000_000_000,
    retained_since_ms=0,
    max_events=50,
    max_batch_events=100,
    max_bytes=1 << 20,
)
RETENTION_S = 7 * 86_400
NO_FAILURE = Schedule()


async def _claim_all(storage: Storage, webhook_id: str, *, max_bytes: int) -> list[list[str]]:
    claim = replace(CLAIM, max_bytes=max_bytes, batches=100)
    return [list(batch.event_ids) for batch in await storage.claim_batches(webhook_id, claim)]


# --- EventLog: durability, de-duplication, fan-out, the commit callback --------------


async def test_what_was_acknowledged_survives_a_reopen(durable: Harness) -> None:
    storage = await durable.open()
    webhook = await storage.create_webhook(replace(_new_webhook("kept"), auth_type="signature"))
    events = make_events(3)
    await storage.append(events)
    held = make_events(1, name="COURSE_ENROLLMENT_BATCH")
    await storage.append(held)
    await storage.release_held(now_ms=now_ms(durable.clock))
    await storage.close()

    reopened = await durable.open()
    assert await reopened.count_events() == 4
    assert await reopened.get_webhook(webhook.id) == webhook
    assert await reopened.last_flush_ms() == now_ms(durable.clock)
    assert await reopened.backlog(webhook.id) == 4
    assert (await reopened.append(events)).duplicates == 3  # still known after the reopen
    stored = await reopened.get_event(events[0].event_id)
    assert stored is not None and stored.body["eventId"] == events[0].event_id


async def test_duplicates_are_counted_not_stored(storage: Storage) -> None:
    events = make_events(3)
    assert (await storage.append(events)).accepted == 3
    again = await storage.append([events[0], *make_events(1)])
    assert (again.accepted, again.duplicates) == (1, 1)
    twice_in_one = make_events(1)
    result = await storage.append([twice_in_one[0], twice_in_one[0]])
    assert (result.accepted, result.duplicates) == (1, 1)
    assert await storage.count_events() == 5


async def test_duplicates_across_one_group_are_resolved_in_order(storage: Storage) -> None:
    shared = make_events(1)
    results = await asyncio.gather(*(storage.append(shared) for _ in range(5)))
    assert [(r.accepted, r.duplicates) for r in results] == [(1, 0)] + [(0, 1)] * 4


async def test_append_names_the_accepted_events_and_gives_them_ingest_order(
    storage: Storage, clock: FakeClock
) -> None:
    first = make_events(2)
    other = make_events(1, name="CI_STATS")
    result = await storage.append([first[0], first[0], *other, first[1]])
    assert result.accepted_names == ("COURSE_ENROLLMENT", "CI_STATS", "COURSE_ENROLLMENT")
    assert (result.accepted, result.duplicates) == (3, 1)
    in_order = [first[0].event_id, *ids(other), first[1].event_id]
    stored = [await storage.get_event(event_id) for event_id in in_order]
    seqs = [event.seq for event in stored if event is not None]
    assert len(seqs) == 3 and seqs == sorted(seqs) and len(set(seqs)) == 3
    assert all(e is not None and e.ingested_at_ms == now_ms(clock) for e in stored)


async def test_append_fans_out_to_active_subscribed_webhooks_only(
    storage: Storage, clock: FakeClock
) -> None:
    names = frozenset({"COURSE_ENROLLMENT", "COURSE_ENROLLMENT_BATCH"})
    subscribed = await storage.create_webhook(_new_webhook("subscribed", names))
    elsewhere = await storage.create_webhook(_new_webhook("elsewhere", frozenset({"CI_STATS"})))
    archived = await storage.create_webhook(replace(_new_webhook("archived", names), active=False))
    disabled = await storage.create_webhook(_new_webhook("disabled", names))
    await storage.set_webhook_status(disabled.id, "disabled", "gone")
    [realtime] = make_events(1)
    [held] = make_events(1, name="COURSE_ENROLLMENT_BATCH")
    clock.advance(2)
    await storage.append([realtime, held])

    records = await storage.deliveries(subscribed.id, state=None, limit=10, after_seq=0)
    assert [(r["eventId"], r["state"], r["dueAt"]) for r in records] == [
        (realtime.event_id, "pending", now_ms(clock)),  # real-time: due at once
        (held.event_id, "pending", None),  # held for the batch flush
    ]
    assert await storage.held_backlog(subscribed.id) == 1
    assert await storage.backlog(subscribed.id) == 2
    for other in (elsewhere, archived, disabled):
        assert await storage.deliveries(other.id, state=None, limit=10, after_seq=0) == []
        assert await storage.backlog(other.id) == 0
    stored = await storage.get_event(realtime.event_id)
    assert stored is not None and [d.webhook_id for d in stored.deliveries] == [subscribed.id]
    # A webhook created later is not given the events stored before it.
    later = await storage.create_webhook(_new_webhook("later", names))
    assert await storage.backlog(later.id) == 0


async def test_the_commit_callback_runs_only_when_events_were_stored(
    harness: Harness, storage: Storage, clock: FakeClock
) -> None:
    events = make_events(2)
    await storage.append(events)
    assert harness.committed == [now_ms(clock)]  # before append returned
    await storage.append(events)  # duplicates only
    await storage.append([])
    assert harness.committed == [now_ms(clock)]
    clock.advance(1)
    await storage.append([events[0], *make_events(1)])
    assert harness.committed == [now_ms(clock) - 1000, now_ms(clock)]


async def test_an_append_is_all_or_nothing(harness: Harness, storage: Storage) -> None:
    good = make_events(1)
    bad = make_events(1)[0]._replace(account_id=2**70)  # no database column holds it
    with pytest.raises(StorageError):
        await storage.append([*good, bad])
    assert await storage.count_events() == 0
    assert await storage.get_event(good[0].event_id) is None
    assert harness.committed == []
    assert (await storage.append(good)).accepted == 1  # the next append goes on


async def test_a_request_whose_rows_break_the_group_fails_alone(storage: Storage) -> None:
    """Ingest validation keeps such rows out; the store must not rely on it."""
    good = make_events(2)
    bad = [make_events(1)[0]._replace(account_id=2**70)]  # beyond SQLite's 64 bits
    results = await asyncio.gather(
        storage.append(good[:1]),
        storage.append(bad),
        storage.append(good[1:]),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["AppendResult", "StorageError", "AppendResult"]
    assert await storage.count_events() == 2


async def test_get_event_returns_the_stored_body(storage: Storage, clock: FakeClock) -> None:
    [event] = make_events(1, name="LEARNER_PROGRESS")
    await storage.append([event])
    stored = await storage.get_event(event.event_id)
    assert stored is not None
    assert stored.body["data"]["progressPercent"] == 40
    assert stored.realtime is False
    assert stored.ingested_at_ms == int(clock() * 1000)
    assert stored.deliveries == ()
    assert await storage.get_event("missing") is None


async def test_get_event_shows_each_webhook_state_sorted_by_webhook_id(
    storage: Storage, clock: FakeClock
) -> None:
    hooks = [await storage.create_webhook(_new_webhook(f"hook {n}")) for n in range(4)]
    [event] = make_events(1)
    await storage.append([event])
    sending, delivered, expired_later, waiting = hooks
    [in_flight] = await storage.claim_batches(sending.id, CLAIM)
    [acked] = await storage.claim_batches(delivered.id, CLAIM)
    clock.advance(3)
    await storage.record_attempts(delivered.id, [ok(acked, clock)], schedule=NO_FAILURE)
    stored = await storage.get_event(event.event_id)
    assert stored is not None
    assert [d.webhook_id for d in stored.deliveries] == sorted(h.id for h in hooks)
    shown = {d.webhook_id: d for d in stored.deliveries}
    assert (shown[sending.id].state, shown[sending.id].batch_id) == ("sending", in_flight.id)
    assert shown[delivered.id].state == "delivered"
    assert shown[delivered.id].batch_id == acked.id
    assert shown[delivered.id].delivered_at_ms == now_ms(clock)
    assert shown[delivered.id].attempts == 1
    assert (shown[waiting.id].state, shown[waiting.id].batch_id) == ("pending", None)
    await storage.expire(retained_since_ms=now_ms(clock))
    after = await storage.get_event(event.event_id)
    assert after is not None
    assert {d.webhook_id: d.state for d in after.deliveries} == {
        sending.id: "expired",  # its batch is dissolved
        delivered.id: "delivered",
        expired_later.id: "expired",
        waiting.id: "expired",
    }


async def test_values_returned_are_copies(storage: Storage, clock: FakeClock) -> None:
    webhook = await storage.create_webhook(_new_webhook("copies"))
    [event] = make_events(1)
    await storage.append([event])
    stored = await storage.get_event(event.event_id)
    assert stored is not None
    stored.body["data"]["userId"] = -1
    [record] = await storage.deliveries(webhook.id, state=None, limit=10, after_seq=0)
    record["state"] = "delivered"
    again = await storage.get_event(event.event_id)
    assert again is not None
    assert again.body["data"]["userId"] == samples.ALL[event.event_name]["userId"]
    assert (await states(storage, webhook.id)) == {event.event_id: "pending"}
    [batch] = await storage.claim_batches(webhook.id, CLAIM)
    await storage.record_attempts(webhook.id, [failed(batch, clock)], schedule=NO_FAILURE)
    [logged] = await storage.attempts(webhook.id)
    logged["status"] = 200
    assert [a["status"] for a in await storage.attempts(webhook.id)] == [503]


# --- Webhooks ----------------------------------------------------------------------


async def test_the_webhook_limit_is_counted_in_the_inserting_transaction(storage: Storage) -> None:
    results = await asyncio.gather(
        *(storage.create_webhook(_new_webhook(f"hook {n}"), max_webhooks=3) for n in range(20)),
        return_exceptions=True,
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, WebhookLimitReached)]
    assert len(created) == 3 and len(refused) == 17
    assert {w.id for w in await storage.list_webhooks()} == {w.id for w in created}


async def test_a_webhook_is_returned_as_its_transaction_stored_it(storage: Storage) -> None:
    created = await storage.create_webhook(
        NewWebhook(
            name="signed",
            target_url="https://example.invalid/",
            events=frozenset({"COURSE_ENROLLMENT", "CI_STATS"}),
            auth_type="signature",
        )
    )
    assert created.events == {"COURSE_ENROLLMENT", "CI_STATS"} and len(created.secrets) == 1
    assert await storage.get_webhook(created.id) == created
    patched = await storage.update_webhook(
        created.id, WebhookChanges(name="renamed", events=frozenset({"CI_STATS"}))
    )
    assert patched is not None and patched.name == "renamed" and patched.events == {"CI_STATS"}
    assert await storage.get_webhook(created.id) == patched
    assert await storage.update_webhook("wh_missing", WebhookChanges(name="x")) is None


async def test_a_webhook_is_stored_with_every_field(storage: Storage, clock: FakeClock) -> None:
    basic = await storage.create_webhook(
        NewWebhook(
            name="basic",
            target_url="https://example.invalid/basic",
            events=frozenset({"CI_STATS"}),
            description="a description",
            auth_type="basic",
            auth_username="user",
            auth_password=Secret("pass word"),
            contact_email="ops@example.invalid",
        )
    )
    assert re.fullmatch(r"wh_[0-9a-f]{16}", basic.id)
    assert (basic.name, basic.target_url, basic.description) == (
        "basic",
        "https://example.invalid/basic",
        "a description",
    )
    assert (basic.auth_type, basic.auth_username, basic.auth_password) == (
        "basic",
        "user",
        Secret("pass word"),
    )
    assert (basic.status, basic.disabled_reason, basic.contact_email) == (
        "active",
        None,
        "ops@example.invalid",
    )
    assert basic.created_at_ms == basic.updated_at_ms == now_ms(clock)
    assert (basic.schedule, basic.secrets) == (Schedule(), ())
    archived = await storage.create_webhook(replace(_new_webhook("archived"), active=False))
    assert (archived.status, archived.auth_type, archived.auth_password) == (
        "inactive",
        "none",
        None,
    )
    signed = await storage.create_webhook(replace(_new_webhook("signed"), auth_type="signature"))
    [secret] = signed.secrets
    assert secret.secret.reveal().startswith("whsec_")
    assert (secret.created_at_ms, secret.expires_at_ms) == (now_ms(clock), None)
    assert basic.id != archived.id != signed.id


async def test_webhooks_are_listed_oldest_first_and_counted(
    storage: Storage, clock: FakeClock
) -> None:
    assert (await storage.list_webhooks(), await storage.count_webhooks()) == ([], 0)
    first = await storage.create_webhook(_new_webhook("first"))
    clock.advance(1)
    same_time = [await storage.create_webhook(_new_webhook(f"same {n}")) for n in range(3)]
    listed = await storage.list_webhooks()
    assert [w.id for w in listed] == [first.id, *sorted(w.id for w in same_time)]
    assert listed == [first, *sorted(same_time, key=lambda w: w.id)]
    assert await storage.count_webhooks() == 4
    assert await storage.get_webhook("wh_missing") is None


async def test_name_taken_names_another_webhook(storage: Storage) -> None:
    webhook = await storage.create_webhook(_new_webhook("taken"))
    assert await storage.name_taken("taken") == webhook.id
    assert await storage.name_taken("taken", except_id=webhook.id) is None
    assert await storage.name_taken("free") is None


async def test_a_second_webhook_of_one_name_is_refused(storage: Storage) -> None:
    await storage.create_webhook(_new_webhook("one"))
    other = await storage.create_webhook(_new_webhook("other"))
    with pytest.raises(StorageError):
        await storage.create_webhook(_new_webhook("one"))
    with pytest.raises(StorageError):
        await storage.update_webhook(other.id, WebhookChanges(name="one"))
    assert await storage.count_webhooks() == 2
    assert (await storage.get_webhook(other.id)) == other  # nothing of the update stayed


async def test_update_changes_only_what_it_names(storage: Storage, clock: FakeClock) -> None:
    created = await storage.create_webhook(
        replace(_new_webhook("patched"), description="before", contact_email="a@example.invalid")
    )
    clock.advance(5)
    patched = await storage.update_webhook(created.id, WebhookChanges(description="after"))
    assert patched == replace(created, description="after", updated_at_ms=now_ms(clock))
    basic = await storage.update_webhook(
        created.id,
        WebhookChanges(auth_type="basic", auth_username="user", auth_password=Secret("pw")),
    )
    assert basic is not None
    assert (basic.auth_type, basic.auth_username, basic.auth_password) == (
        "basic",
        "user",
        Secret("pw"),
    )
    none = await storage.update_webhook(created.id, WebhookChanges(auth_type="none"))
    assert none is not None
    assert (none.auth_type, none.auth_username, none.auth_password) == ("none", None, None)
    assert none.secrets == ()


async def test_switching_to_signature_makes_a_secret_when_none_is_in_force(
    storage: Storage,
) -> None:
    webhook = await storage.create_webhook(_new_webhook("to sign"))
    signed = await storage.update_webhook(webhook.id, WebhookChanges(auth_type="signature"))
    assert signed is not None and len(signed.secrets) == 1
    again = await storage.update_webhook(webhook.id, WebhookChanges(auth_type="signature"))
    assert again is not None and again.secrets == signed.secrets  # one is in force


async def test_activation_re_enables_and_clears_the_failure_schedule(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("failing"))
    failing = Schedule(
        consecutive_failures=4,
        failing_since=1_764_000_000.5,
        next_attempt_at=1_764_000_060.25,
        last_success_at=1_763_000_000.0,
        last_error="HTTP 503",
        last_reminder_at=1_764_000_030.0,
    )
    cleared = Schedule(last_success_at=1_763_000_000.0, last_error="HTTP 503")
    # By a PATCH: active false archives (and forgets a disable reason), true re-enables.
    await storage.record_attempts(webhook.id, [], schedule=failing, disable_reason="410 Gone")
    disabled = await storage.get_webhook(webhook.id)
    assert disabled is not None and (disabled.status, disabled.disabled_reason) == (
        "disabled",
        "410 Gone",
    )
    archived = await storage.update_webhook(webhook.id, WebhookChanges(active=False))
    assert archived is not None
    assert (archived.status, archived.disabled_reason, archived.schedule) == (
        "inactive",
        None,
        failing,
    )
    active = await storage.update_webhook(webhook.id, WebhookChanges(active=True))
    assert active is not None and (active.status, active.schedule) == ("active", cleared)
    # By set_webhook_status: the same.
    await storage.record_attempts(webhook.id, [], schedule=failing)
    clock.advance(1)
    await storage.set_webhook_status(webhook.id, "disabled", "no success for 7 days")
    disabled = await storage.get_webhook(webhook.id)
    assert disabled is not None
    assert (disabled.status, disabled.disabled_reason, disabled.schedule) == (
        "disabled",
        "no success for 7 days",
        failing,
    )
    assert disabled.updated_at_ms == now_ms(clock)
    await storage.set_webhook_status(webhook.id, "inactive")
    archived = await storage.get_webhook(webhook.id)
    assert archived is not None and (archived.status, archived.schedule) == ("inactive", failing)
    await storage.set_webhook_status(webhook.id, "active")
    active = await storage.get_webhook(webhook.id)
    assert active is not None
    assert (active.status, active.disabled_reason, active.schedule) == ("active", None, cleared)


async def test_deleting_a_webhook_deletes_its_deliveries_batches_and_attempts(
    storage: Storage, clock: FakeClock
) -> None:
    doomed = await storage.create_webhook(_new_webhook("doomed"))
    kept = await storage.create_webhook(_new_webhook("kept"))
    events = make_events(3)
    await storage.append(events)
    one = replace(CLAIM, max_events=1)
    for webhook in (doomed, kept):
        [first] = await storage.claim_batches(webhook.id, one)
        await storage.claim_batches(webhook.id, one)
        await storage.record_attempts(webhook.id, [failed(first, clock)], schedule=NO_FAILURE)
    assert await storage.delete_webhook(doomed.id) is True
    assert await storage.delete_webhook(doomed.id) is False
    assert await storage.get_webhook(doomed.id) is None
    assert await storage.deliveries(doomed.id, state=None, limit=10, after_seq=0) == []
    assert await storage.attempts(doomed.id) == []
    assert await storage.in_flight_batches(doomed.id) == []
    assert await storage.claim_batches(doomed.id, CLAIM) == []
    assert (await storage.backlog(doomed.id), await storage.held_backlog(doomed.id)) == (0, 0)
    stored = await storage.get_event(events[0].event_id)
    assert stored is not None and [d.webhook_id for d in stored.deliveries] == [kept.id]
    await storage.append(make_events(1))  # no longer fanned out to it
    assert await storage.backlog(doomed.id) == 0
    # The other webhook keeps everything.
    assert len(await storage.in_flight_batches(kept.id)) == 2
    assert len(await storage.attempts(kept.id)) == 1
    assert await storage.backlog(kept.id) == 4


async def test_rotating_a_secret_keeps_the_old_ones_for_the_grace_period(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(replace(_new_webhook("rotated"), auth_type="signature"))
    [first] = webhook.secrets
    clock.advance(1)
    rotated_at = now_ms(clock)
    second = await storage.rotate_secret(webhook.id, grace_ms=60_000)
    assert second.created_at_ms == rotated_at and second.expires_at_ms is None
    assert second.secret.reveal().startswith("whsec_") and second.secret != first.secret
    stored = await storage.get_webhook(webhook.id)
    assert stored is not None
    assert [(s.secret, s.created_at_ms, s.expires_at_ms) for s in stored.secrets] == [
        (first.secret, first.created_at_ms, rotated_at + 60_000),
        (second.secret, rotated_at, None),
    ]
    assert stored.secrets_in_force(rotated_at) == [second.secret.reveal(), first.secret.reveal()]
    # Within the same millisecond: a secret of its own, and no grace made longer.
    third = await storage.rotate_secret(webhook.id, grace_ms=3_600_000)
    stored = await storage.get_webhook(webhook.id)
    assert stored is not None
    assert [(s.secret, s.created_at_ms, s.expires_at_ms) for s in stored.secrets] == [
        (first.secret, first.created_at_ms, rotated_at + 60_000),
        (second.secret, rotated_at, rotated_at + 3_600_000),
        (third.secret, rotated_at + 1, None),
    ]
    # A shorter grace shortens them; those past their end are removed at the next one.
    clock.advance(61)
    fourth = await storage.rotate_secret(webhook.id, grace_ms=0)
    stored = await storage.get_webhook(webhook.id)
    assert stored is not None
    assert [(s.secret, s.expires_at_ms) for s in stored.secrets] == [(fourth.secret, None)]


async def test_replay_by_ids_queues_subscribed_events_not_being_sent(
    storage: Storage, clock: FakeClock
) -> None:
    before_webhook = make_events(1, prefix="before")  # no delivery row for the webhook
    await storage.append(before_webhook)
    webhook = await storage.create_webhook(
        _new_webhook("replayed", events=frozenset({"COURSE_ENROLLMENT"}))
    )
    events = make_events(4, prefix="replay")
    other_name = make_events(1, prefix="other", name="COURSE_COMPLETED")
    await storage.append([*events, *other_name])
    one = replace(CLAIM, now_ms=now_ms(clock), max_events=1)
    [sending] = await storage.claim_batches(webhook.id, one)  # events[0], being sent
    [acked] = await storage.claim_batches(webhook.id, one)
    await storage.record_attempts(webhook.id, [ok(acked, clock)], schedule=NO_FAILURE)
    clock.advance(10)
    every_id = [*ids(before_webhook), *ids(events), *ids(other_name), "unknown"]
    queued = await storage.replay(
        webhook.id, event_ids=every_id, retained_since_ms=0, now_ms=now_ms(clock)
    )
    assert queued == 4  # three queued again (one of them delivered), one inserted
    records = await storage.deliveries(webhook.id, state=None, limit=100, after_seq=0)
    assert {r["eventId"]: (r["state"], r["dueAt"]) for r in records} == {
        before_webhook[0].event_id: ("pending", now_ms(clock)),
        events[0].event_id: ("sending", now_ms(clock) - 10_000),
        **{e.event_id: ("pending", now_ms(clock)) for e in events[1:]},
    }
    replayed = {r["eventId"]: r for r in records}[events[1].event_id]
    assert (replayed["batchId"], replayed["attempts"]) == (None, 1)  # its attempt counts
    claimed = await storage.claim_batches(webhook.id, replace(CLAIM, now_ms=now_ms(clock)))
    assert batch_ids(claimed) == [[before_webhook[0].event_id, *ids(events[1:])]]
    assert sending.id not in {batch.id for batch in claimed}


async def test_replay_since_a_time_within_the_retention(storage: Storage, clock: FakeClock) -> None:
    webhook = await storage.create_webhook(_new_webhook("since"))
    oldest, middle, newest = make_events(1), make_events(1), make_events(1)
    held = make_events(1, name="COURSE_ENROLLMENT_BATCH")
    for events in (oldest, middle, newest, held):
        await storage.append(events)
        clock.advance(60)
    middle_at = now_ms(clock) - 3 * 60_000
    replay_at = now_ms(clock) + 5_000
    queued = await storage.replay(
        webhook.id, since_ms=middle_at, retained_since_ms=middle_at + 1, now_ms=replay_at
    )
    assert queued == 2  # newest and held: the middle one is past the retention given
    records = {
        r["eventId"]: r["dueAt"]
        for r in await storage.deliveries(webhook.id, state=None, limit=10, after_seq=0)
    }
    assert records[newest[0].event_id] == records[held[0].event_id] == replay_at
    assert records[oldest[0].event_id] == now_ms(clock) - 4 * 60_000
    assert await storage.held_backlog(webhook.id) == 0  # the held one is due now
    # Due at the replay's time: not before.
    early = await storage.claim_batches(webhook.id, replace(CLAIM, now_ms=replay_at - 1))
    assert batch_ids(early) == [ids(oldest) + ids(middle)]
    late = await storage.claim_batches(webhook.id, replace(CLAIM, now_ms=replay_at, batches=5))
    assert batch_ids(late) == [ids(newest), ids(held)]


async def test_the_next_due_time_is_the_earliest_pending_one_after_a_time(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("next-due"))
    assert await storage.next_due_ms(webhook.id, after_ms=0) is None  # nothing at all
    stored_at = now_ms(clock)
    first, second = make_events(1), make_events(1)
    await storage.append(first)
    await storage.append(make_events(1, name="COURSE_ENROLLMENT_BATCH"))  # held: no due time
    assert await storage.next_due_ms(webhook.id, after_ms=stored_at - 1) == stored_at
    assert await storage.next_due_ms(webhook.id, after_ms=stored_at) is None
    replay_at = stored_at + 5_000
    assert (
        await storage.replay(
            webhook.id, event_ids=ids(first), retained_since_ms=0, now_ms=replay_at
        )
        == 1
    )
    await storage.append(second)
    assert await storage.next_due_ms(webhook.id, after_ms=stored_at) == replay_at
    # Delivered ones are no longer due.
    [batch] = await storage.claim_batches(webhook.id, replace(CLAIM, now_ms=replay_at))
    await storage.record_attempts(webhook.id, [ok(batch, clock)], schedule=NO_FAILURE)
    assert await storage.next_due_ms(webhook.id, after_ms=stored_at - 1) is None


# --- Outbox: claims, batches being sent, attempts -----------------------------------


async def test_a_claim_packs_due_deliveries_in_ingest_order(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("ordered"))
    events = []
    for _ in range(5):
        events += make_events(1)
        await storage.append(events[-1:])
        clock.advance(1)
    held = make_events(2, name="COURSE_ENROLLMENT_BATCH")
    await storage.append(held)
    first_due = now_ms(clock) - 5_000
    assert await storage.claim_batches(webhook.id, replace(CLAIM, now_ms=first_due - 1)) == []
    claim = replace(CLAIM, now_ms=now_ms(clock), max_events=2, batches=10)
    claimed = await storage.claim_batches(webhook.id, claim)
    assert batch_ids(claimed) == [ids(events[0:2]), ids(events[2:4]), ids(events[4:5])]
    assert all(re.fullmatch(r"msg_[0-9a-f]{32}", batch.id) for batch in claimed)
    assert len({batch.id for batch in claimed}) == 3
    for batch, expected in zip(claimed, (events[0:2], events[2:4], events[4:5]), strict=True):
        assert batch.webhook_id == webhook.id and batch.account_id == 1
        assert (batch.created_at_ms, batch.attempts) == (claim.now_ms, 0)
        assert batch.body == payload(1, [event.body for event in expected])
        assert list(batch.event_seqs) == sorted(batch.event_seqs)
    seqs = [seq for batch in claimed for seq in batch.event_seqs]
    assert seqs == sorted(seqs)
    assert [t for b in claimed for t in b.ingested_at_ms] == [
        first_due + n * 1000 for n in range(5)
    ]
    assert await storage.claim_batches(webhook.id, claim) == []  # the held ones wait
    assert await storage.claim_batches(webhook.id, replace(claim, batches=0)) == []


@pytest.mark.parametrize("with_batch_events", [False, True])
async def test_a_batch_holds_one_account_and_one_kind(
    storage: Storage, with_batch_events: bool
) -> None:
    webhook = await storage.create_webhook(
        NewWebhook(
            name="packing", target_url="https://example.invalid/", events=frozenset(samples.ALL)
        )
    )
    realtime = make_events(6, prefix="rt")
    for index in (2, 3):  # two events of another account in the middle
        realtime[index] = realtime[index]._replace(account_id=2)
    await storage.append(realtime)
    held = make_events(3, prefix="batch", name="COURSE_ENROLLMENT_BATCH")
    if with_batch_events:
        await storage.append(held)
        await storage.release_held(now_ms=1)
    ids = [e.event_id for e in realtime]
    expected = [ids[0:2], ids[2:4], ids[4:6]]
    if with_batch_events:
        expected.append([e.event_id for e in held])
    assert await _claim_all(storage, webhook.id, max_bytes=1 << 20) == expected


async def test_released_batch_events_fill_their_batches_past_the_real_time_size(
    storage: Storage, clock: FakeClock
) -> None:
    """Non-real-time events pack up to max_batch_events a request, also when that is
    more than a claim of real-time batches would read (max_events each)."""
    webhook = await storage.create_webhook(_new_webhook("bulk"))
    realtime = make_events(1, prefix="rt")
    held = make_events(7, prefix="held", name="COURSE_ENROLLMENT_BATCH")
    await storage.append([*realtime, *held])
    await storage.release_held(now_ms=now_ms(clock))
    claim = replace(CLAIM, now_ms=now_ms(clock), max_events=1, max_batch_events=3, batches=3)
    claimed = await storage.claim_batches(webhook.id, claim)
    assert batch_ids(claimed) == [ids(realtime), ids(held[0:3]), ids(held[3:6])]
    assert batch_ids(await storage.claim_batches(webhook.id, claim)) == [ids(held[6:7])]


async def test_the_byte_cap_splits_a_batch_and_a_larger_event_goes_alone(storage: Storage) -> None:
    webhook = await storage.create_webhook(
        NewWebhook(
            name="bytes", target_url="https://example.invalid/", events=frozenset(samples.ALL)
        )
    )
    small = make_events(4, prefix="small")
    large = make_events(1, prefix="large", padding="x" * 5000)
    await storage.append([*small[:2], *large, *small[2:]])
    pair = max(len(a.body) + len(b.body) + 2 for a, b in (small[0:2], small[2:4]))
    ids = [e.event_id for e in small]
    assert await _claim_all(storage, webhook.id, max_bytes=pair) == [
        ids[0:2],
        [large[0].event_id],
        ids[2:4],
    ]


async def test_a_claim_takes_deliveries_pending_again_below_the_batches_being_sent(
    storage: Storage,
) -> None:
    """Claims continue after the last event being sent; a delivery that becomes due below
    it (here a held batch event released while later ones are in flight) is claimed
    next, and what follows it in the same claim skips the batches still being sent."""
    webhook = await storage.create_webhook(
        NewWebhook(
            name="holes", target_url="https://example.invalid/", events=frozenset(samples.ALL)
        )
    )
    first = make_events(2, prefix="rt")
    held = make_events(1, prefix="held", name="COURSE_ENROLLMENT_BATCH")
    rest = make_events(4, prefix="rt")
    for events in (first, held, rest):
        await storage.append(events)

    def claim(batches: int) -> Claim:
        return replace(CLAIM, max_events=2, batches=batches)

    def ids(events: list[NewEvent]) -> list[str]:
        return [event.event_id for event in events]

    in_flight = await storage.claim_batches(webhook.id, claim(2))
    assert [list(b.event_ids) for b in in_flight] == [ids(first), ids(rest[:2])]
    await storage.release_held(now_ms=1)
    claimed = await storage.claim_batches(webhook.id, claim(3))
    assert [list(b.event_ids) for b in claimed] == [ids(held), ids(rest[2:])]
    assert await storage.claim_batches(webhook.id, claim(1)) == []


async def test_a_delivery_due_later_than_a_following_one_is_claimed_once_due(
    storage: Storage, clock: FakeClock
) -> None:
    """As when a process whose clock is ahead stored the first event: the second is due
    first. Claiming it must not leave the first behind."""
    webhook = await storage.create_webhook(_new_webhook("skewed"))
    written_at = clock.now
    clock.advance(5)
    ahead = make_events(1, prefix="ahead")
    await storage.append(ahead)
    clock.now = written_at
    behind = make_events(1, prefix="behind")
    await storage.append(behind)
    first = await storage.claim_batches(webhook.id, replace(CLAIM, now_ms=now_ms(clock)))
    assert batch_ids(first) == [ids(behind)]
    clock.advance(5)
    later = await storage.claim_batches(webhook.id, replace(CLAIM, now_ms=now_ms(clock)))
    assert batch_ids(later) == [ids(ahead)]


async def test_deliveries_due_again_are_claimed_claim_after_claim_past_the_claim_limit(
    storage: Storage, clock: FakeClock
) -> None:
    """More deliveries due again below the last claimed one than one claim reads: each
    claim goes on where the previous one stopped."""
    webhook = await storage.create_webhook(_new_webhook("rewound"))
    events = make_events(6, prefix="again")
    await storage.append(events)
    small = replace(CLAIM, now_ms=now_ms(clock), max_events=2, max_batch_events=2)
    first = await storage.claim_batches(webhook.id, replace(small, batches=3))
    assert batch_ids(first) == [ids(events[:2]), ids(events[2:4]), ids(events[4:])]
    await storage.record_attempts(
        webhook.id, [ok(batch, clock) for batch in first], schedule=NO_FAILURE
    )
    assert (
        await storage.replay(webhook.id, since_ms=0, retained_since_ms=0, now_ms=now_ms(clock)) == 6
    )
    again = [
        batch_ids(await storage.claim_batches(webhook.id, replace(small, batches=1)))
        for _ in range(4)
    ]
    assert again == [[ids(events[:2])], [ids(events[2:4])], [ids(events[4:])], []]


async def test_a_claim_stops_once_its_batches_hold_the_byte_budget(storage: Storage) -> None:
    webhook = await storage.create_webhook(
        NewWebhook(
            name="budget", target_url="https://example.invalid/", events=frozenset(samples.ALL)
        )
    )
    await storage.append(make_events(10, prefix="large", padding="x" * 5000))
    claim = replace(CLAIM, max_events=1, batches=10, total_bytes=12_000)
    claimed = await storage.claim_batches(webhook.id, claim)
    # Each body holds one event of about 5 KB: the third brings them past 12,000 bytes.
    assert [len(batch.event_seqs) for batch in claimed] == [1, 1, 1]
    assert sum(len(batch.body) for batch in claimed[:2]) < 12_000
    assert len(await storage.claim_batches(webhook.id, replace(claim, total_bytes=None))) == 7


async def test_a_claim_never_takes_an_event_past_the_retention(
    storage: Storage, clock: FakeClock
) -> None:
    """An event not delivered within the retention is lost for good (SPEC), also while
    the minutely expiry pass has not marked it yet: the claim itself leaves it out, on
    both of its queries. An event ingested exactly at the cut-off is still retained."""
    webhook = await storage.create_webhook(
        NewWebhook(
            name="retention", target_url="https://example.invalid/", events=frozenset(samples.ALL)
        )
    )
    past_retention = make_events(2, prefix="past")
    await storage.append(past_retention)
    clock.advance(1)
    at_the_cut_off = make_events(1, prefix="cut-off")
    await storage.append(at_the_cut_off)
    clock.advance(RETENTION_S)
    fresh = make_events(1, prefix="fresh")
    await storage.append(fresh)
    now_ms = int(clock() * 1000)
    claim = replace(CLAIM, now_ms=now_ms, retained_since_ms=now_ms - RETENTION_S * 1000, batches=10)

    first = await storage.claim_batches(webhook.id, claim)
    assert [list(b.event_ids) for b in first] == [[at_the_cut_off[0].event_id, fresh[0].event_id]]
    # Pending below the batch being sent, the events past the retention send the next
    # claim to the query that skips that batch: it must leave them out as well.
    later = make_events(1, prefix="later")
    await storage.append(later)
    second = await storage.claim_batches(webhook.id, claim)
    assert [list(b.event_ids) for b in second] == [[later[0].event_id]]
    assert await storage.claim_batches(webhook.id, claim) == []
    # They were still pending, left for the expiry pass, which now takes exactly them.
    expired = await storage.expire(retained_since_ms=claim.retained_since_ms)
    assert [(count.webhook_id, count.events) for count in expired] == [(webhook.id, 2)]


async def test_claimed_batches_are_sent_again_after_a_crash_under_the_same_ids(
    harness: Harness, storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("crashing"))
    events = make_events(5)
    await storage.append(events)
    claim = replace(CLAIM, max_events=2, batches=2)
    claimed = await storage.claim_batches(webhook.id, claim)
    assert batch_ids(claimed) == [ids(events[0:2]), ids(events[2:4])]
    # Recorded as sending before the claim returned: shown so, and not claimed again.
    assert await states(storage, webhook.id) == {
        **{e.event_id: "sending" for e in events[:4]},
        events[4].event_id: "pending",
    }
    [rest] = await storage.claim_batches(webhook.id, claim)
    assert list(rest.event_ids) == ids(events[4:])
    assert await storage.in_flight_batches(webhook.id) == [*claimed, rest]

    storage = await harness.restart(storage)
    assert await storage.in_flight_batches(webhook.id) == [*claimed, rest]
    assert await storage.claim_batches(webhook.id, claim) == []
    await storage.record_attempts(webhook.id, [failed(claimed[0], clock)], schedule=NO_FAILURE)

    storage = await harness.restart(storage)
    again = await storage.in_flight_batches(webhook.id)
    assert [batch.id for batch in again] == [batch.id for batch in (*claimed, rest)]
    assert again[0] == replace(claimed[0], attempts=1)  # same id, events and body
    attempts = [ok(batch, clock) for batch in again]
    assert await storage.record_attempts(webhook.id, attempts, schedule=NO_FAILURE) == []
    assert await storage.in_flight_batches(webhook.id) == []
    assert set((await states(storage, webhook.id)).values()) == {"delivered"}


async def test_an_acknowledged_batch_is_delivered_a_failed_one_counts_an_attempt(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("mixed"))
    events = make_events(4)
    await storage.append(events)
    good, bad = await storage.claim_batches(webhook.id, replace(CLAIM, max_events=2, batches=2))
    clock.advance(2)
    attempts = [ok(good, clock), failed(bad, clock)]
    assert await storage.record_attempts(webhook.id, attempts, schedule=NO_FAILURE) == []
    records = await storage.deliveries(webhook.id, state=None, limit=10, after_seq=0)
    shown = [(r["state"], r["attempts"], r["batchId"], r["deliveredAt"]) for r in records]
    assert shown == [
        *[("delivered", 1, good.id, now_ms(clock))] * 2,
        *[("sending", 1, bad.id, None)] * 2,
    ]
    assert await storage.backlog(webhook.id) == 2
    assert await storage.in_flight_batches(webhook.id) == [replace(bad, attempts=1)]
    await storage.record_attempts(webhook.id, [failed(bad, clock)], schedule=NO_FAILURE)
    [retried] = await storage.in_flight_batches(webhook.id)
    assert retried.attempts == 2
    delivered = await storage.deliveries(webhook.id, state="delivered", limit=10, after_seq=0)
    assert [r["attempts"] for r in delivered] == [1, 1]  # a failure elsewhere leaves them
    [record] = await storage.deliveries(webhook.id, state="sending", limit=1, after_seq=0)
    assert record["attempts"] == 2
    stored = await storage.get_event(events[0].event_id)
    assert stored is not None and stored.deliveries[0].batch_id == good.id


async def test_claim_next_claims_in_the_same_call(storage: Storage, clock: FakeClock) -> None:
    webhook = await storage.create_webhook(_new_webhook("pipelined"))
    events = make_events(5)
    await storage.append(events)
    claim = replace(CLAIM, max_events=2)
    [first] = await storage.claim_batches(webhook.id, claim)
    following = await storage.record_attempts(
        webhook.id, [ok(first, clock)], schedule=NO_FAILURE, claim_next=replace(claim, batches=2)
    )
    assert batch_ids(following) == [ids(events[2:4]), ids(events[4:])]
    assert await storage.in_flight_batches(webhook.id) == following  # recorded as sending
    assert await storage.record_attempts(webhook.id, [], schedule=NO_FAILURE) == []


async def test_the_schedule_is_stored_in_milliseconds_and_a_webhook_can_be_disabled(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("scheduled"))
    schedule = Schedule(
        consecutive_failures=3,
        failing_since=1_764_000_000.1234,
        next_attempt_at=1_764_000_010.9999,
        last_success_at=None,
        last_error="HTTP 500",
        last_reminder_at=1_764_000_005.0,
    )
    await storage.record_attempts(webhook.id, [], schedule=schedule)
    stored = await storage.get_webhook(webhook.id)
    assert stored is not None and stored.status == "active"
    assert stored.schedule == replace(
        schedule, failing_since=1_764_000_000.123, next_attempt_at=1_764_000_010.999
    )
    clock.advance(1)
    await storage.record_attempts(webhook.id, [], schedule=NO_FAILURE, disable_reason="gone")
    disabled = await storage.get_webhook(webhook.id)
    assert disabled is not None
    assert (disabled.status, disabled.disabled_reason, disabled.schedule) == (
        "disabled",
        "gone",
        NO_FAILURE,
    )
    assert disabled.updated_at_ms == now_ms(clock)


async def test_the_attempt_log_newest_first_with_a_cursor(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("logged"))
    other = await storage.create_webhook(_new_webhook("other"))
    await storage.append(make_events(3))
    [batch] = await storage.claim_batches(webhook.id, CLAIM)
    [theirs] = await storage.claim_batches(other.id, CLAIM)
    long_answer = Outcome(ok=False, status=500, duration_ms=12, response_body="x" * 10_000)
    timeout = Outcome(ok=False, error="timed out", duration_ms=2000)
    for outcome in (long_answer, timeout):
        attempt = Attempt(batch=batch, outcome=outcome, started_at_ms=now_ms(clock))
        await storage.record_attempts(webhook.id, [attempt], schedule=NO_FAILURE)
        clock.advance(1)
    await storage.record_attempts(other.id, [ok(theirs, clock)], schedule=NO_FAILURE)
    await storage.record_attempts(webhook.id, [ok(batch, clock)], schedule=NO_FAILURE)
    log = await storage.attempts(webhook.id)
    assert [(a["status"], a["error"], a["durationMs"]) for a in log] == [
        (200, None, 7),
        (None, "timed out", 2000),
        (500, None, 12),
    ]
    assert [a["id"] for a in log] == sorted((a["id"] for a in log), reverse=True)
    assert all(a["batchId"] == batch.id and a["eventCount"] == 3 for a in log)
    assert [a["startedAt"] for a in log] == [now_ms(clock) - n * 1000 for n in range(3)]
    assert log[2]["responseBody"] == "x" * RESPONSE_EXCERPT_CHARS
    assert log[1]["responseBody"] == ""
    assert await storage.attempts(webhook.id, limit=1) == log[:1]
    assert await storage.attempts(webhook.id, before_id=log[0]["id"]) == log[1:]
    assert await storage.attempts(webhook.id, limit=1, before_id=log[1]["id"]) == log[2:]
    assert await storage.attempts(webhook.id, before_id=log[2]["id"]) == []
    [their_log] = await storage.attempts(other.id)
    assert their_log["batchId"] == theirs.id


# --- Maintenance: expiry, pruning, the batch flush ----------------------------------


async def test_expiry_counts_per_webhook_and_dissolves_batches_being_sent(
    storage: Storage, clock: FakeClock
) -> None:
    hooks = sorted(
        [await storage.create_webhook(_new_webhook(f"hook {n}")) for n in range(2)],
        key=lambda webhook: webhook.id,
    )
    first, second = hooks
    old = make_events(2)
    old_held = make_events(1, name="COURSE_ENROLLMENT_BATCH")
    await storage.append([*old, *old_held])
    clock.advance(60)
    new = make_events(1)
    await storage.append(new)
    [mixed] = await storage.claim_batches(first.id, CLAIM)  # the old ones and the new one
    assert list(mixed.event_ids) == [*ids(old), *ids(new)]
    [old_only] = await storage.claim_batches(second.id, replace(CLAIM, max_events=1))
    await storage.record_attempts(second.id, [ok(old_only, clock)], schedule=NO_FAILURE)
    expired = await storage.expire(retained_since_ms=now_ms(clock))
    assert [(count.webhook_id, count.events) for count in expired] == [
        (first.id, 3),  # the held one too
        (second.id, 2),  # the delivered one is not
    ]
    assert await states(storage, first.id) == {
        **{event_id: "expired" for event_id in (*ids(old), *ids(old_held))},
        new[0].event_id: "pending",
    }
    # The new one, under a new id, though it was claimed before: the dissolved batch
    # is no longer being sent (claimed before the batches are read back, as by a
    # worker in another process than the one expiring).
    [again] = await storage.claim_batches(first.id, CLAIM)
    assert list(again.event_ids) == ids(new) and again.id != mixed.id
    assert [batch.id for batch in await storage.in_flight_batches(first.id)] == [again.id]
    assert (await storage.backlog(first.id), await storage.held_backlog(first.id)) == (1, 0)
    assert await storage.expire(retained_since_ms=now_ms(clock)) == []
    # An acknowledgement of the dissolved batch leaves the expired deliveries expired.
    await storage.record_attempts(first.id, [ok(mixed, clock)], schedule=NO_FAILURE)
    assert (await states(storage, first.id))[old[0].event_id] == "expired"


async def test_events_stored_after_every_event_was_pruned_are_claimed(
    storage: Storage, clock: FakeClock
) -> None:
    """A quiet spell longer than the retention prunes every event; the next ones must
    still be claimed, whatever numbering they get."""
    webhook = await storage.create_webhook(_new_webhook("quiet"))
    await storage.append(make_events(3))
    claim = replace(CLAIM, now_ms=now_ms(clock), max_events=1, batches=3)
    delivered = await storage.claim_batches(webhook.id, claim)
    await storage.record_attempts(
        webhook.id, [ok(batch, clock) for batch in delivered], schedule=NO_FAILURE
    )
    clock.advance(RETENTION_S + 1)
    retained_since = now_ms(clock) - RETENTION_S * 1000
    await storage.expire(retained_since_ms=retained_since)
    await storage.prune(retained_since_ms=retained_since)
    assert await storage.count_events() == 0
    fresh = make_events(2)
    await storage.append(fresh)
    again = replace(CLAIM, now_ms=now_ms(clock), retained_since_ms=retained_since)
    assert batch_ids(await storage.claim_batches(webhook.id, again)) == [ids(fresh)]


async def test_a_batch_recorded_twice_in_one_record_counts_one_attempt_and_is_delivered(
    storage: Storage, clock: FakeClock
) -> None:
    """The worker records a failure at once, so a batch appears once per record; should
    it appear twice, the record counts it once, as one statement per table does."""
    webhook = await storage.create_webhook(_new_webhook("twice"))
    await storage.append(make_events(1))
    [batch] = await storage.claim_batches(webhook.id, replace(CLAIM, now_ms=now_ms(clock)))
    await storage.record_attempts(
        webhook.id, [failed(batch, clock), ok(batch, clock)], schedule=NO_FAILURE
    )
    [record] = await storage.deliveries(webhook.id, state=None, limit=10, after_seq=0)
    assert (record["state"], record["attempts"]) == ("delivered", 1)
    assert len(await storage.attempts(webhook.id)) == 2  # the log keeps both
    assert await storage.in_flight_batches(webhook.id) == []


async def test_pruning_removes_old_events_finished_batches_and_attempts(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("pruned"))
    old = make_events(3)
    await storage.append(old)
    one = replace(CLAIM, now_ms=now_ms(clock), max_events=1, batches=3)
    delivered, *dissolved = await storage.claim_batches(webhook.id, one)
    await storage.record_attempts(webhook.id, [ok(delivered, clock)], schedule=NO_FAILURE)
    clock.advance(RETENTION_S)
    fresh = make_events(1)
    await storage.append(fresh)
    retained_since = now_ms(clock) - 1
    await storage.expire(retained_since_ms=retained_since)
    assert len(dissolved) == 2
    # 3 events (with their deliveries), 3 finished batches, 1 attempt.
    assert await storage.prune(retained_since_ms=retained_since) == 7
    assert await storage.count_events() == 1
    assert all([await storage.get_event(e.event_id) is None for e in old])
    assert await states(storage, webhook.id) == {fresh[0].event_id: "pending"}
    assert await storage.attempts(webhook.id) == []
    assert await storage.backlog(webhook.id) == 1
    assert await storage.prune(retained_since_ms=retained_since) == 0


async def test_a_batch_being_sent_is_never_pruned_and_is_dissolved_once_empty(
    storage: Storage, clock: FakeClock
) -> None:
    """Pruning without the expiry pass before it: the batch stays recorded as sending
    until the worker reads it back, finds none of its events, and dissolves it."""
    webhook = await storage.create_webhook(_new_webhook("emptied"))
    await storage.append(make_events(2))
    [batch] = await storage.claim_batches(webhook.id, replace(CLAIM, now_ms=now_ms(clock)))
    clock.advance(RETENTION_S)
    assert await storage.in_flight_batches(webhook.id) == [batch]
    assert await storage.prune(retained_since_ms=now_ms(clock)) == 2  # the events only
    assert await storage.in_flight_batches(webhook.id) == []
    assert await storage.in_flight_batches(webhook.id) == []
    assert await storage.prune(retained_since_ms=now_ms(clock)) == 1  # now the batch


async def test_the_batch_flush_releases_held_deliveries_and_records_its_time(
    storage: Storage, clock: FakeClock
) -> None:
    hooks = sorted(
        [await storage.create_webhook(_new_webhook(f"hook {n}")) for n in range(3)],
        key=lambda webhook: webhook.id,
    )
    only_realtime = await storage.create_webhook(
        _new_webhook("realtime", frozenset({"COURSE_ENROLLMENT"}))
    )
    assert await storage.last_flush_ms() is None
    assert await storage.release_held(now_ms=now_ms(clock)) == {}
    assert await storage.last_flush_ms() == now_ms(clock)
    held = make_events(3, name="COURSE_ENROLLMENT_BATCH")
    realtime = make_events(1)
    await storage.append([*held, *realtime])
    assert [await storage.held_backlog(h.id) for h in hooks] == [3, 3, 3]
    assert await storage.held_backlog(only_realtime.id) == 0
    clock.advance(900)
    released = await storage.release_held(now_ms=now_ms(clock) + 7)
    assert list(released.items()) == [(h.id, 3) for h in hooks]  # in webhook id order
    assert await storage.last_flush_ms() == now_ms(clock) + 7
    assert [await storage.held_backlog(h.id) for h in hooks] == [0, 0, 0]
    early = replace(CLAIM, now_ms=now_ms(clock) + 6, batches=5)
    assert batch_ids(await storage.claim_batches(hooks[0].id, early)) == [ids(realtime)]
    claimed = await storage.claim_batches(hooks[0].id, replace(early, now_ms=now_ms(clock) + 7))
    assert batch_ids(claimed) == [ids(held)]  # in one batch, after the release
    assert await storage.release_held(now_ms=now_ms(clock) + 8) == {}
    assert await storage.last_flush_ms() == now_ms(clock) + 8


async def test_backlog_summary_counts_outstanding_deliveries_by_kind(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("summarised"))
    empty = {"realtime": 0, "batch": 0, "held": 0, "oldest": None}
    assert await storage.backlog_summary(webhook.id) == empty
    first_at = now_ms(clock)
    [sent] = make_events(1)
    await storage.append([sent])
    clock.advance(1)
    await storage.append(make_events(2, name="COURSE_ENROLLMENT_BATCH"))
    await storage.release_held(now_ms=now_ms(clock))
    clock.advance(1)
    await storage.append(make_events(1, name="COURSE_ENROLLMENT_BATCH"))
    await storage.append(make_events(1))
    [batch] = await storage.claim_batches(webhook.id, replace(CLAIM, max_events=1))
    assert list(batch.event_ids) == [sent.event_id]  # being sent: still outstanding
    summary = {"realtime": 2, "batch": 3, "held": 1, "oldest": first_at}
    assert await storage.backlog_summary(webhook.id) == summary
    assert (await storage.backlog(webhook.id), await storage.held_backlog(webhook.id)) == (5, 1)
    await storage.record_attempts(webhook.id, [ok(batch, clock)], schedule=NO_FAILURE)
    summary = {"realtime": 1, "batch": 3, "held": 1, "oldest": first_at + 1000}
    assert await storage.backlog_summary(webhook.id) == summary
    assert await storage.backlog(webhook.id) == 4


async def test_deliveries_in_ingest_order_by_state_with_a_cursor(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("listed"))
    events = make_events(4)
    held = make_events(1, name="COURSE_ENROLLMENT_BATCH")
    await storage.append([*events, *held])
    acked, sending = await storage.claim_batches(
        webhook.id, replace(CLAIM, max_events=1, batches=2)
    )
    await storage.record_attempts(webhook.id, [ok(acked, clock)], schedule=NO_FAILURE)
    records = await storage.deliveries(webhook.id, state=None, limit=100, after_seq=0)
    stored = [await storage.get_event(e.event_id) for e in (*events, *held)]
    seqs = [event.seq for event in stored if event is not None]
    at = now_ms(clock)
    expected: list[DeliveryRecord] = [
        {
            "seq": seqs[0],
            "eventId": events[0].event_id,
            "eventName": "COURSE_ENROLLMENT",
            "ingestedAt": at,
            "state": "delivered",
            "attempts": 1,
            "batchId": acked.id,
            "deliveredAt": at,
            "dueAt": at,
        },
        {
            "seq": seqs[1],
            "eventId": events[1].event_id,
            "eventName": "COURSE_ENROLLMENT",
            "ingestedAt": at,
            "state": "sending",
            "attempts": 0,
            "batchId": sending.id,
            "deliveredAt": None,
            "dueAt": at,
        },
        *(
            DeliveryRecord(
                seq=seq,
                eventId=event.event_id,
                eventName=event.event_name,
                ingestedAt=at,
                state="pending",
                attempts=0,
                batchId=None,
                deliveredAt=None,
                dueAt=None if event in held else at,
            )
            for seq, event in zip(seqs[2:], [*events[2:], *held], strict=True)
        ),
    ]
    assert records == expected

    async def listed(
        state: DeliveryStatus | None = None, *, limit: int = 100, after_seq: int = 0
    ) -> list[str]:
        found = await storage.deliveries(webhook.id, state=state, limit=limit, after_seq=after_seq)
        return [record["eventId"] for record in found]

    all_ids = [*ids(events), *ids(held)]
    assert await listed(limit=2) == all_ids[:2]
    assert await listed(limit=2, after_seq=seqs[1]) == all_ids[2:4]
    assert await listed(after_seq=seqs[-1]) == []
    assert await listed("pending") == all_ids[2:]  # not the one being sent
    assert await listed("sending") == all_ids[1:2]
    assert await listed("delivered") == all_ids[:1]
    assert await listed("expired") == []
    assert await storage.deliveries("wh_missing", state=None, limit=10, after_seq=0) == []


# --- Health and closing -------------------------------------------------------------


async def test_health_checks_pass_while_open(storage: Storage) -> None:
    await storage.check()
    await storage.ping()
    await storage.probe_space()
    assert isinstance(storage.schema_version, int)


async def test_close_completes_calls_made_before_it_and_is_idempotent(storage: Storage) -> None:
    pending = [asyncio.ensure_future(storage.append(make_events(2))) for _ in range(20)]
    await asyncio.gather(storage.close(), storage.close())
    assert all(p.result().accepted == 2 for p in pending)
    await storage.close()
    with pytest.raises(StorageClosed):
        await storage.append(make_events(1))


async def test_every_operation_raises_storage_closed_after_close(
    storage: Storage, clock: FakeClock
) -> None:
    webhook = await storage.create_webhook(_new_webhook("closed"))
    await storage.append(make_events(1))
    [batch] = await storage.claim_batches(webhook.id, CLAIM)
    await storage.close()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "append": lambda: storage.append(make_events(1)),
        "get_event": lambda: storage.get_event("ev"),
        "count_events": storage.count_events,
        "create_webhook": lambda: storage.create_webhook(_new_webhook("late")),
        "list_webhooks": storage.list_webhooks,
        "get_webhook": lambda: storage.get_webhook(webhook.id),
        "count_webhooks": storage.count_webhooks,
        "name_taken": lambda: storage.name_taken("closed"),
        "update_webhook": lambda: storage.update_webhook(webhook.id, WebhookChanges(name="x")),
        "set_webhook_status": lambda: storage.set_webhook_status(webhook.id, "inactive"),
        "delete_webhook": lambda: storage.delete_webhook(webhook.id),
        "rotate_secret": lambda: storage.rotate_secret(webhook.id, grace_ms=0),
        "replay": lambda: storage.replay(webhook.id, since_ms=0, retained_since_ms=0, now_ms=1),
        "deliveries": lambda: storage.deliveries(webhook.id, state=None, limit=1, after_seq=0),
        "attempts": lambda: storage.attempts(webhook.id),
        "backlog_summary": lambda: storage.backlog_summary(webhook.id),
        "in_flight_batches": lambda: storage.in_flight_batches(webhook.id),
        "claim_batches": lambda: storage.claim_batches(webhook.id, CLAIM),
        "record_attempts": lambda: storage.record_attempts(
            webhook.id, [ok(batch, clock)], schedule=NO_FAILURE
        ),
        "backlog": lambda: storage.backlog(webhook.id),
        "next_due_ms": lambda: storage.next_due_ms(webhook.id, after_ms=0),
        "expire": lambda: storage.expire(retained_since_ms=0),
        "prune": lambda: storage.prune(retained_since_ms=0),
        "release_held": lambda: storage.release_held(now_ms=0),
        "last_flush_ms": storage.last_flush_ms,
        "held_backlog": lambda: storage.held_backlog(webhook.id),
        "check": storage.check,
        "ping": storage.ping,
        "probe_space": storage.probe_space,
    }
    # Every operation of the interface is here (a new one must be added).
    operations = {name for name in vars(Storage) if not name.startswith("_")}
    for part in Storage.__mro__[1:]:
        operations |= {name for name in vars(part) if not name.startswith("_")}
    assert set(calls) == operations - {"close", "schema_version"}
    answered = []
    for name, call in calls.items():
        try:
            await call()
        except StorageClosed:
            continue
        answered.append(name)
    assert answered == []
    await storage.close()  # still safe


# --- packing (pure): what every backend's claim relies on ---------------------------
