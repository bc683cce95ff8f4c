"""Three real daemons on one PostgreSQL database, killed with SIGKILL and restarted
while 20,000 events go in through all three and out to five webhooks.

Every acknowledged event reaches every webhook at least once, in ingest order (the
first time each event arrives, its ``seq`` grows), and no webhook ever has two
requests in flight (the receiver counts; a request its sender gave up on ends when
the connection does). Kills are paced by progress, not by the clock: five of them,
during ingest and during delivery, each once the cluster has settled after the last
(three processes live, every webhook held). The takeover time (a kill to the next request to
a webhook the killed process held) is measured and printed, not asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support import samples
from tests.support.daemon_process import DaemonProcess
from tests.support.flight_receiver import FlightReceiver
from tests.support.net import free_port
from tests.support.postgres import Cluster
from tests.support.running import eventually
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN

NAMES = ("alpha", "bravo", "charlie", "delta", "echo")
EVENTS = 20_000
PER_REQUEST = 100
KILLS = 5
TAKEOVER_S = 3.0
BOUND_SECONDS = 300.0


def _config(directory: Path, dsn: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "almhookd.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{free_port()}"\nadmin_token = "{ADMIN_TOKEN}"\n'
        f'ingest_token = "{INGEST_TOKEN}"\n'
        f'[storage]\nbackend = "postgresql"\ndsn = "{dsn}"\ntakeover = "{TAKEOVER_S}s"\n'
        f'path = "{directory / "unused.db"}"\n'
        "[account]\nid = 1010\n"
        '[delivery]\nallowed_networks = ["127.0.0.0/8"]\nread_timeout = "2s"\n'
        'connect_timeout = "2s"\nbackoff_initial = "1s"\nbackoff_max = "2s"\n'
        '[log]\nformat = "json"\nlevel = "warning"\n'
    )
    return path


@pytest.fixture
async def flights() -> AsyncIterator[FlightReceiver]:
    receiver = await FlightReceiver(work_seconds=0.005).start()
    yield receiver
    await receiver.stop()


async def _call(
    session: aiohttp.ClientSession,
    daemon: DaemonProcess,
    method: str,
    path: str,
    body: Any = None,
    token: str = ADMIN_TOKEN,
) -> tuple[int, Any]:
    async with session.request(
        method,
        daemon.url + path,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_three_daemons_killed_and_restarted_lose_nothing_and_never_overlap(
    tmp_path: Path, postgres_cluster: Cluster, flights: FlightReceiver
) -> None:
    dsn = postgres_cluster.new_database("killing")
    daemons = [DaemonProcess(_config(tmp_path / f"d{n}", dsn)) for n in range(3)]
    for daemon in daemons:
        await daemon.start_async()
    acknowledged: list[str] = []
    takeovers: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            names_by_id = {}
            for name in NAMES:
                status, webhook = await _call(
                    session,
                    daemons[0],
                    "POST",
                    "/v1/webhooks",
                    {"name": name, "targetUrl": flights.url(name), "events": ["COURSE_ENROLLMENT"]},
                )
                assert status == 201, webhook
                names_by_id[webhook["id"]] = name

            async def ingest() -> None:
                turn = itertools.cycle(range(3))
                for number in range(EVENTS // PER_REQUEST):
                    ids = [f"k{number:03d}-{n:03d}" for n in range(PER_REQUEST)]
                    body = {"events": [samples.event(eventId=i) for i in ids]}
                    for _ in range(100):  # another daemon while one is down
                        daemon = daemons[next(turn)]
                        try:
                            status, _ = await _call(
                                session, daemon, "POST", "/v1/events", body, INGEST_TOKEN
                            )
                        except (aiohttp.ClientError, TimeoutError):
                            continue
                        if status == 202:
                            acknowledged.extend(ids)
                            break
                    else:
                        raise AssertionError("no daemon took the request")

            def progress() -> float:
                delivered = sum(len(set(flights.delivered(name))) for name in NAMES)
                return (len(acknowledged) + delivered / len(NAMES)) / (2 * EVENTS)

            async def kill(victim: DaemonProcess) -> None:
                survivor = next(d for d in daemons if d is not victim)
                status, document = await _call(session, survivor, "GET", "/v1/status")
                assert status == 200, document
                cluster = document["cluster"]
                [victim_id] = [
                    p["id"]
                    for p in cluster["processes"]
                    if p["pid"] == victim.process.pid  # type: ignore[union-attr]
                ]
                held = {
                    names_by_id[w] for w, owner in cluster["owners"].items() if owner == victim_id
                }
                for name in held:
                    flights.arrived[name].clear()
                killed_at = time.monotonic()
                victim.kill()
                await victim.start_async()
                measure = asyncio.ensure_future(_takeover(flights, held, killed_at))
                measuring.add(measure)

            async def settled() -> bool:
                """Three processes live and every webhook held: the last kill is over."""
                status, document = await _call(session, daemons[0], "GET", "/v1/status")
                cluster = document["cluster"] if status == 200 else {}
                return len(cluster.get("processes", ())) == 3 and len(cluster["owners"]) == 5

            measuring: set[asyncio.Future[float | None]] = set()
            ingesting = asyncio.ensure_future(ingest())
            for number in range(KILLS):
                share = (number + 1) / (KILLS + 1)

                async def due(share: float = share) -> bool:
                    assert not ingesting.done() or ingesting.exception() is None
                    return progress() >= share and await settled()

                await eventually(due, timeout=BOUND_SECONDS, what=f"progress to {share:.0%}")
                await kill(daemons[number % 3])
            await asyncio.wait_for(ingesting, BOUND_SECONDS)
            wanted = set(acknowledged)

            async def all_delivered() -> bool:
                return all(wanted <= set(flights.delivered(name)) for name in NAMES)

            await eventually(all_delivered, timeout=BOUND_SECONDS, what="every event delivered")
            for measure in measuring:
                measure.cancel()
                await asyncio.gather(measure, return_exceptions=True)
                taken = None if measure.cancelled() else measure.result()
                if taken is not None:
                    takeovers.append(taken)
    finally:
        for daemon in daemons:
            daemon.stop()
    assert len(acknowledged) == EVENTS
    connection = await asyncpg.connect(dsn)
    try:
        seq = dict(await connection.fetch("SELECT event_id, seq FROM events"))
    finally:
        await connection.close()
    for name in NAMES:
        assert flights.most_in_flight[name] == 1, name
        firsts = list(dict.fromkeys(flights.delivered(name)))
        assert set(firsts) == set(acknowledged)
        order = [seq[event_id] for event_id in firsts]
        assert order == sorted(order), f"{name}: not in ingest order"
    repeats = sum(len(flights.delivered(n)) for n in NAMES) - len(NAMES) * EVENTS
    print(
        json.dumps(
            {
                "events": EVENTS,
                "kills": KILLS,
                "takeover_s_config": TAKEOVER_S,
                "takeovers_s": sorted(round(t, 2) for t in takeovers),
                "deliveries_repeated": repeats,
                "requests": len(flights.arrivals),
                "requests_cut_short": sum(1 for a in flights.arrivals if not a.answered),
            }
        )
    )


async def _takeover(flights: FlightReceiver, held: set[str], killed_at: float) -> float | None:
    """Seconds from a kill to the next request to each webhook the killed process held
    (the longest of them); waits until cancelled if one gets none (nothing left to
    send). The caller cleared those webhooks' arrival events before the kill."""
    if not held:
        return None
    await asyncio.gather(*(flights.arrived[name].wait() for name in held))
    firsts = [min(t for t in flights.starts[name] if t > killed_at) for name in held]
    return max(firsts) - killed_at
