"""The whole daemon on PostgreSQL (``[storage] backend = "postgresql"``): ingest through
HTTP, delivery to a real receiver, the API's reads (several daemons on one database:
``test_postgres_cluster.py``). The DSN carries a password (the test cluster trusts
loopback, so any password connects), which must never reach the log."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from almhookd.config import Config, Secret
from tests.support import samples
from tests.support.http_receiver import Receiver
from tests.support.postgres import Cluster
from tests.support.running import daemon_config, running_daemon
from tests.support.tokens import INGEST_TOKEN

PASSWORD = "pg-daemon-Pw-9031"
BOUND_SECONDS = 30.0


@pytest.fixture
def pg_config(tmp_path: Path, postgres_cluster: Cluster) -> Config:
    plain = postgres_cluster.new_database("daemon")
    dsn = plain.replace("postgresql://almhookd_test@", f"postgresql://almhookd_test:{PASSWORD}@")
    config = daemon_config(tmp_path)
    return replace(config, storage=replace(config.storage, backend="postgresql", dsn=Secret(dsn)))


async def test_events_are_ingested_stored_and_delivered_on_postgresql(
    pg_config: Config, receiver: Receiver
) -> None:
    with capture_logs() as logs:
        async with running_daemon(pg_config) as running:
            status, webhook, _ = await running.call(
                "POST",
                "/v1/webhooks",
                {"name": "lms", "targetUrl": receiver.url, "events": ["COURSE_ENROLLMENT"]},
            )
            assert status == 201, webhook
            sent = [samples.event("COURSE_ENROLLMENT", eventId=f"pg-{n}") for n in range(5)]
            for event in sent:
                status, body, _ = await running.call(
                    "POST", "/v1/events", event, token=INGEST_TOKEN
                )
                assert status == 202, body
            await running.until_delivered(webhook["id"], *(e["eventId"] for e in sent))
            assert receiver.all_event_ids() == [e["eventId"] for e in sent]  # in ingest order
            status, health, _ = await running.call("GET", "/healthz", token=None)
            assert status == 200, health
            status, listed, _ = await running.call(
                "GET", f"/v1/webhooks/{webhook['id']}/deliveries"
            )
            assert status == 200
            assert {d["state"] for d in listed["deliveries"]} == {"delivered"}
    [started] = [entry for entry in logs if entry["event"] == "daemon.started"]
    assert started["database"].startswith("postgresql://almhookd_test:***@127.0.0.1:")
    assert PASSWORD not in repr(logs)
