"""Hypothesis strategies for arbitrary JSON and query values, and a daemon (a
subprocess, one per module) to throw them at; shared by the fuzz tests of the
acceptance and reliability suites."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.support.daemon_process import DaemonProcess, write_config

#: Strings past the ordinary: any code point (lone surrogates and controls included),
#: and a few that broke a handler once.
odd_strings = st.text(alphabet=st.characters(exclude_categories=()), max_size=20) | st.sampled_from(
    ["\ud800", "a\udfffb", "nul\u0000", "\u202egnp.exe", "line\r\nbreak", " padded "]
)
#: Integers at and past the 64 bits SQLite holds.
edge_integers = st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | edge_integers
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | odd_strings,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
# Bodies shaped like the real ones, with arbitrary values, reach deeper validation.
webhook_like = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values,
        "description": json_values,
        "targetUrl": json_values,
        "events": json_values,
        "auth": json_values,
        "active": json_values,
        "contactEmail": json_values,
    },
)
event_like = st.fixed_dictionaries(
    {"eventName": json_values},
    optional={
        "data": json_values,
        "eventId": json_values,
        "timestamp": json_values,
        "eventInfo": json_values,
    },
)
documents = (
    json_values
    | webhook_like
    | event_like
    | st.fixed_dictionaries({"events": st.lists(event_like, max_size=3)})
    | st.fixed_dictionaries({}, optional={"eventIds": json_values, "since": json_values})
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("fuzz")
    running = DaemonProcess(
        write_config(directory, extra='[delivery]\nallowed_networks = ["127.0.0.0/8"]\n')
    ).start()
    status, webhook = running.request(
        "POST",
        "/v1/webhooks",
        {"name": "fuzzed", "targetUrl": "http://127.0.0.1:9/hook", "events": ["CI_STATS"]},
    )
    assert status == 201, webhook
    running.webhook_id = webhook["id"]  # type: ignore[attr-defined]
    yield running
    assert running.stop() == 0


def snapshot(database: Path) -> list[Any]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return [
            db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608
            for table in (
                "events",
                "webhooks",
                "webhook_events",
                "signing_secrets",
                "deliveries",
                "request_batches",
            )
        ]


def safe(document: Any) -> bool:
    # A valid targetUrl would make the daemon resolve a made-up host name: never send
    # the name service anything from a fuzz test.
    return "http" not in json.dumps(document).lower()


query_values = st.text(max_size=12) | odd_strings | edge_integers.map(str) | st.integers().map(str)
