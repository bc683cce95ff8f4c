"""Several daemons on one PostgreSQL database, in the test's event loop: the webhooks
spread over them, each delivers what another ingested (woken by a notice, as nothing
polls), a clean stop hands the webhooks over at once, and a process cut off from the
database stops sending before another takes over (no two requests in flight).

Leases are short here (``storage.takeover = 3s``: 2.4 s leases renewed every 0.4 s);
the tests wait for conditions, bounded, never for a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from almhookd.config import Config, Secret
from almhookd.domain.ownership import owner_of
from almhookd.errors import StorageError
from almhookd.storage.postgres import PostgresStorage
from tests.support import samples
from tests.support.flight_receiver import FlightReceiver
from tests.support.postgres import Cluster
from tests.support.running import Running, daemon_config, eventually, running_daemon
from tests.support.tokens import INGEST_TOKEN

BOUND_SECONDS = 30.0
NAMES = ("alpha", "bravo", "charlie", "delta", "echo")


@pytest.fixture
def pg_dsn(postgres_cluster: Cluster) -> str:
    return postgres_cluster.new_database("cluster")


def _config(
    directory: Path, dsn: str, *, read_timeout: float | None = None, takeover: float = 3.0
) -> Config:
    config = daemon_config(directory)
    delivery = config.delivery
    if read_timeout is not None:
        delivery = replace(delivery, read_timeout=read_timeout)
    return replace(
        config,
        storage=replace(config.storage, backend="postgresql", dsn=Secret(dsn), takeover=takeover),
        delivery=delivery,
    )


@pytest.fixture
async def flights() -> AsyncIterator[FlightReceiver]:
    receiver = await FlightReceiver().start()
    yield receiver
    await receiver.stop()


async def _status(running: Running) -> Any:
    status, document, _ = await running.call("GET", "/v1/status")
    assert status == 200, document
    return document


async def _settled(running: Running, processes: int, webhooks: int) -> dict[str, str]:
    """Waits until the cluster has ``processes`` live and every webhook an owner, the one
    rendezvous hashing names; returns the owners."""
    owners: dict[str, str] = {}

    async def settled() -> bool:
        nonlocal owners
        cluster = (await _status(running))["cluster"]
        live = [process["id"] for process in cluster["processes"]]
        owners = cluster["owners"]
        return (
            len(live) == processes
            and len(owners) == webhooks
            and all(owner == owner_of(w, live) for w, owner in owners.items())
        )

    await eventually(settled, timeout=BOUND_SECONDS, what="every webhook owned by its process")
    return owners


async def _create(running: Running, flights: FlightReceiver, names: tuple[str, ...]) -> list[str]:
    ids = []
    for name in names:
        status, webhook, _ = await running.call(
            "POST",
            "/v1/webhooks",
            {"name": name, "targetUrl": flights.url(name), "events": ["COURSE_ENROLLMENT"]},
        )
        assert status == 201, webhook
        ids.append(webhook["id"])
    return ids


async def _ingest(running: Running, event_ids: list[str]) -> None:
    for event_id in event_ids:
        event = samples.event("COURSE_ENROLLMENT", eventId=event_id)
        status, body, _ = await running.call("POST", "/v1/events", event, token=INGEST_TOKEN)
        assert status == 202, body


async def test_the_webhooks_spread_and_each_process_delivers_what_another_ingested(
    tmp_path: Path, pg_dsn: str, flights: FlightReceiver
) -> None:
    async with (
        running_daemon(_config(tmp_path / "a", pg_dsn)) as a,
        running_daemon(_config(tmp_path / "b", pg_dsn)) as b,
    ):
        ids = await _create(a, flights, NAMES)
        owners = await _settled(b, processes=2, webhooks=len(NAMES))
        a_id = (await _status(a))["cluster"]["process"]
        # Through a process that does not deliver to every webhook, so some deliveries
        # are woken by its notice in the other process (nothing there polls).
        through = b if set(owners.values()) == {a_id} else a
        sent = [f"spread-{n}" for n in range(10)]
        await _ingest(through, sent)

        async def delivered() -> bool:
            return all(flights.delivered(name) == sent for name in NAMES)

        await eventually(delivered, timeout=BOUND_SECONDS, what="every event to every webhook")
        assert max(flights.most_in_flight.values()) == 1
        status, health, _ = await a.call("GET", "/healthz", token=None)
        assert status == 200, health
        held = set(health["cluster"]["webhooksHeld"])
        assert held == {w for w, owner in owners.items() if owner == a_id}
        assert held <= set(ids)


async def test_a_webhook_created_through_a_process_is_taken_at_once_not_at_the_next_beat(
    tmp_path: Path, pg_dsn: str, flights: FlightReceiver
) -> None:
    """Beats are 40 s apart here (``takeover = 300s``): the webhook is delivered to well
    before the next one, because the create looks at the shares at once."""
    async with running_daemon(_config(tmp_path / "a", pg_dsn, takeover=300)) as a:
        await _create(a, flights, ("alpha",))
        await _ingest(a, ["at-once"])
        await eventually(
            _delivered(flights, "alpha", ["at-once"]), timeout=20, what="delivered before a beat"
        )


#: How far ahead the ingesting process's clock runs in the clock-skew test.
AHEAD_S = 3.0


async def test_events_stored_by_a_process_whose_clock_is_ahead_are_sent_when_due(
    tmp_path: Path, pg_dsn: str, flights: FlightReceiver
) -> None:
    """The owner's clock is AHEAD_S behind the ingesting process's, so by its clock the
    events are due AHEAD_S later and its claim when woken finds nothing. It looks again
    then; without that it would wait for the next event, and none comes here."""
    async with running_daemon(_config(tmp_path / "owner", pg_dsn)) as owner:
        ids = dict(zip(await _create(owner, flights, NAMES), NAMES, strict=True))
        owner_id = (await _status(owner))["cluster"]["process"]
        # Each start draws a new process id, so the shares change: until the owner
        # holds some of the webhooks (all five go to the other with a chance of 1/32).
        for attempt in range(8):
            ahead_config = _config(tmp_path / f"ahead-{attempt}", pg_dsn)
            async with running_daemon(ahead_config, clock=lambda: time.time() + AHEAD_S) as ahead:
                owners = await _settled(owner, processes=2, webhooks=len(NAMES))
                held = [ids[w] for w, process in owners.items() if process == owner_id]
                if not held:
                    continue
                sent_at = time.monotonic()
                await _ingest(ahead, ["from-ahead"])

                await eventually(
                    _delivered(flights, held, ["from-ahead"]),
                    timeout=BOUND_SECONDS,
                    what="delivered when due",
                )
                # Not before it was due by the owner's clock.
                assert time.monotonic() - sent_at >= AHEAD_S - 0.1
                return
        pytest.fail("the owner never held a webhook")


async def test_a_listening_connection_cut_by_the_server_is_replaced_and_nothing_is_missed(
    tmp_path: Path, pg_dsn: str, flights: FlightReceiver
) -> None:
    """The server ends every ``LISTEN`` connection (a restart of a pooler, an admin's
    ``pg_terminate_backend``): events committed meanwhile still reach the other
    process's workers (each beat wakes them while it cannot listen), and it listens
    again."""
    async with (
        running_daemon(_config(tmp_path / "a", pg_dsn)) as a,
        running_daemon(_config(tmp_path / "b", pg_dsn)) as b,
    ):
        ids = await _create(a, flights, NAMES)
        owners = await _settled(a, processes=2, webhooks=len(NAMES))
        a_id = (await _status(a))["cluster"]["process"]
        through = b if set(owners.values()) == {a_id} else a
        connection = await asyncpg.connect(pg_dsn)
        try:
            listeners = await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'almhookd listener'"
            )
            assert len(listeners) == 2
            for row in listeners:
                await connection.execute("SELECT pg_terminate_backend($1)", row["pid"])
            sent = ["while-deaf"]
            await _ingest(through, sent)

            async def delivered() -> bool:
                return all(flights.delivered(name) == sent for name in NAMES)

            await eventually(delivered, timeout=BOUND_SECONDS, what="delivered while deaf")

            async def listening_again() -> bool:
                rows = await connection.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'almhookd listener'"
                )
                return len(rows) == 2 and not {r["pid"] for r in rows} & {
                    r["pid"] for r in listeners
                }

            await eventually(listening_again, timeout=BOUND_SECONDS, what="listening again")
        finally:
            await connection.close()
        assert len(ids) == len(NAMES)


async def test_a_lease_held_in_the_database_but_by_no_worker_is_given_back(
    tmp_path: Path, pg_dsn: str, flights: FlightReceiver
) -> None:
    """An acquire whose answer was lost leaves a lease that the heartbeat renews with
    the process's others, while no worker holds it: the process gives it back and takes
    it properly, instead of keeping the webhook without delivering to it."""
    async with running_daemon(_config(tmp_path / "a", pg_dsn)) as a:
        status, webhook, _ = await a.call(
            "POST",
            "/v1/webhooks",
            {
                "name": "orphan",
                "targetUrl": flights.url("orphan"),
                "events": ["COURSE_ENROLLMENT"],
                "active": False,
            },
        )
        assert status == 201, webhook
        process = (await _status(a))["cluster"]["process"]
        store = await PostgresStorage.open(Secret(pg_dsn), clock=time.time)
        try:  # the lease taken in a's name, as if a's acquire had lost its answer
            assert await store.acquire(process, webhook["id"], lease_ms=60_000) is not None
        finally:
            await store.close()
        status, _, _ = await a.call("PATCH", f"/v1/webhooks/{webhook['id']}", {"active": True})
        assert status == 200
        await _ingest(a, ["orphan-1"])
        await eventually(
            _delivered(flights, "orphan", ["orphan-1"]), timeout=BOUND_SECONDS, what="delivered"
        )


async def test_a_process_that_stops_hands_its_webhooks_over_at_once(
    tmp_path: Path, pg_dsn: str, flights: FlightReceiver
) -> None:
    async with running_daemon(_config(tmp_path / "a", pg_dsn)) as a:
        async with running_daemon(_config(tmp_path / "b", pg_dsn)) as b:
            await _create(b, flights, NAMES)
            await _settled(a, processes=2, webhooks=len(NAMES))
            b_id = (await _status(b))["cluster"]["process"]
        # b left: its leases are free and it is gone, so a takes everything over at its
        # next beat, without waiting for b's leases to run out.
        connection = await asyncpg.connect(pg_dsn)
        try:
            assert (
                await connection.fetchval(
                    "SELECT count(*) FROM webhook_leases WHERE owner = $1", b_id
                )
                == 0
            )
            assert (
                await connection.fetchval("SELECT count(*) FROM processes WHERE id = $1", b_id) == 0
            )
        finally:
            await connection.close()
        owners = await _settled(a, processes=1, webhooks=len(NAMES))
        assert set(owners.values()) == {(await _status(a))["cluster"]["process"]}
        sent = ["after-b-left"]
        await _ingest(a, sent)

        async def delivered() -> bool:
            return all(flights.delivered(name) == sent for name in NAMES)

        await eventually(delivered, timeout=BOUND_SECONDS, what="delivered after b left")


async def test_a_process_cut_off_from_the_database_stops_sending_before_another_takes_over(
    tmp_path: Path, pg_dsn: str, flights: FlightReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner's request hangs at the receiver while its heartbeats fail: it cuts the
    request short before its lease ends; only then does the other process take the
    webhook over and send the batch again, under the same id. The receiver never has
    two requests in flight."""
    cut_off: set[str] = set()
    heartbeat = PostgresStorage.heartbeat

    async def failing_heartbeat(self: PostgresStorage, process_id: str, **limits: int) -> Any:
        if process_id in cut_off:
            raise StorageError("the network to the database is cut (a test)")
        return await heartbeat(self, process_id, **limits)

    monkeypatch.setattr(PostgresStorage, "heartbeat", failing_heartbeat)
    flights.holds["alpha"] = hold = asyncio.Event()
    # A read timeout far beyond the lease: only the lease can cut the request short.
    async with (
        running_daemon(_config(tmp_path / "a", pg_dsn, read_timeout=60)) as a,
        running_daemon(_config(tmp_path / "b", pg_dsn, read_timeout=60)) as b,
    ):
        [webhook_id] = await _create(a, flights, ("alpha",))
        owners = await _settled(a, processes=2, webhooks=1)
        processes = {(await _status(running))["cluster"]["process"]: running for running in (a, b)}
        owner_id = owners[webhook_id]
        other = next(running for pid, running in processes.items() if pid != owner_id)
        await _ingest(other, ["held-1"])
        await eventually(_flag(flights, "alpha"), timeout=BOUND_SECONDS, what="first request")
        first = flights.in_flight["alpha"]
        assert first == 1
        cut_off.add(owner_id)

        async def taken_over() -> bool:
            return len([x for x in flights.arrivals if x.name == "alpha"]) >= 1 and (
                flights.in_flight["alpha"] == 1
            )

        # The owner cuts its request short (an arrival not answered), then the other
        # process sends the same batch again: in flight once more.
        await eventually(taken_over, timeout=BOUND_SECONDS, what="the other process sends")
        [cut] = [x for x in flights.arrivals if x.name == "alpha"]
        assert not cut.answered
        hold.set()
        await eventually(
            _delivered(flights, "alpha", ["held-1"]), timeout=BOUND_SECONDS, what="delivered"
        )
        answered = [x for x in flights.arrivals if x.name == "alpha" and x.answered]
        assert answered[0].message_id == cut.message_id  # the same batch, sent again
        assert flights.most_in_flight["alpha"] == 1
        cut_off.clear()
        status, _, _ = await other.call("GET", "/healthz", token=None)
        assert status == 200


def _flag(flights: FlightReceiver, name: str) -> Any:
    async def arrived() -> bool:
        return flights.in_flight[name] > 0

    return arrived


def _delivered(flights: FlightReceiver, names: str | list[str], sent: list[str]) -> Any:
    """Whether ``sent`` arrived first at the webhook (each of the webhooks) ``names``."""
    every = [names] if isinstance(names, str) else names

    async def delivered() -> bool:
        return all(flights.delivered(name)[: len(sent)] == sent for name in every)

    return delivered
