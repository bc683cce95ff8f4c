"""Parallel webhook creates through the admin API of the whole daemon, in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import samples
from tests.support.http_receiver import Receiver
from tests.support.running import Running, daemon_config, running_daemon, until
from tests.support.tokens import INGEST_TOKEN

PARALLEL_CREATES = 50
MAX_WEBHOOKS = 5  # delivery.max_webhooks by default


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    """One receiver per create, so each stored webhook's deliveries are told apart."""
    started = await asyncio.gather(*(Receiver().start() for _ in range(PARALLEL_CREATES)))
    yield list(started)
    await asyncio.gather(*(receiver.stop() for receiver in started))


async def test_parallel_creates_store_the_limit_and_each_gets_its_events(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    async with running_daemon(daemon_config(tmp_path)) as daemon:
        answers = await asyncio.gather(
            *(
                daemon.call(
                    "POST",
                    "/v1/webhooks",
                    {
                        "name": f"hook {number}",
                        "targetUrl": receiver.url,
                        "events": ["COURSE_ENROLLMENT"],
                    },
                )
                for number, receiver in enumerate(receivers)
            )
        )
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [201] * MAX_WEBHOOKS + [409] * (PARALLEL_CREATES - MAX_WEBHOOKS)
        assert all(
            body["error"]["code"] == "limit_reached" for status, body, _ in answers if status == 409
        )
        created = {
            body["id"]: receiver
            for (status, body, _), receiver in zip(answers, receivers, strict=True)
            if status == 201
        }
        assert set(await _listed_ids(daemon)) == set(created)

        status, body, _ = await daemon.call(
            "POST", "/v1/events", {"events": [samples.event()]}, token=INGEST_TOKEN
        )
        assert status == 202, body
        [event_id] = body["eventIds"]
        # Every stored webhook has a worker: each of their receivers gets the event.
        chosen = list(created.values())
        await until(
            lambda: all(receiver.all_event_ids() == [event_id] for receiver in chosen),
            what="the event at the receiver of every stored webhook",
        )
        for webhook_id in created:
            await daemon.until_delivered(webhook_id, event_id)
        stored_ports = {receiver.port for receiver in chosen}
        assert not any(r.received for r in receivers if r.port not in stored_ports)


async def _listed_ids(daemon: Running) -> list[str]:
    status, listed, _ = await daemon.call("GET", "/v1/webhooks")
    assert status == 200, listed
    return [webhook["id"] for webhook in listed["webhooks"]]
