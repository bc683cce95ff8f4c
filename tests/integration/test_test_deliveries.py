"""The test delivery's sample event: valid for its event and about its kind of object.

The action sends one sample event of the webhook's first subscribed event. A receiver
that is being built against it must see what the platform would send: an event that
the daemon's own ingest accepts, and for a learning-path or certification event ids
and a ``loType`` of that kind, not a course's (issue #17).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from almhookd.api import actions
from almhookd.domain.catalogue import CATALOGUE
from almhookd.domain.events import parse_ingest
from almhookd.domain.webhooks import parse_new_webhook, unsaved_webhook
from tests.support import samples
from tests.support.http_receiver import Receiver
from tests.support.running import Running, daemon_config, running_daemon
from tests.support.samples import expected_lo_type

NOW_MS = 1_727_414_643_000


def check_the_sample(document: Any, event_name: str) -> None:
    """``document`` is a valid ingest envelope of one ``event_name`` event whose ids and
    ``loType`` are of the event's kind."""
    [event] = parse_ingest(
        document, now_ms=NOW_MS, default_account_id=1, new_id=lambda: "unused-id"
    )
    assert event.event_name == event_name
    assert event.event_id.startswith("test-")
    data = document["events"][0]["data"]
    kind = expected_lo_type(event_name)
    assert data.get("loType", kind) == kind, data
    for key in ("loId", "loInstanceId"):
        if key in data:
            assert data[key].startswith(f"{kind}:"), (key, data)


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_the_test_body_of_every_event_is_an_event_the_ingest_accepts(name: str) -> None:
    draft = unsaved_webhook(
        parse_new_webhook(
            {"name": "probe", "targetUrl": "https://hooks.example.org/in", "events": [name]}
        ),
        now_ms=NOW_MS,
    )
    document = json.loads(actions._test_body(draft, 1010, NOW_MS))
    assert document["accountId"] == 1010
    check_the_sample(document, name)


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(daemon_config(tmp_path)) as running:
        yield running


async def test_a_receiver_gets_a_sample_of_the_tested_events_own_kind(
    daemon: Running, receiver: Receiver
) -> None:
    """Through the admin API, a draft test for each of the 27 events, to a real receiver."""
    names = sorted(CATALOGUE)
    for name in names:  # bounded: 27 events
        status, result, _ = await daemon.call(
            "POST",
            "/v1/webhooks/test",
            {"name": "probe", "targetUrl": receiver.url, "events": [name]},
        )
        assert status == 200 and result["ok"] is True, (name, result)
    assert len(receiver.received) == len(names)
    for name, request in zip(names, receiver.received, strict=True):
        check_the_sample(request.payload, name)
