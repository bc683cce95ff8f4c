"""Arbitrary JSON thrown at every write endpoint: never a 5xx, and a rejected request
leaves the database exactly as it was."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.daemon_process import DaemonProcess, write_config

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


@pytest.mark.parametrize(
    "route",
    [
        "POST /v1/events",
        "POST /v1/webhooks",
        "PATCH /v1/webhooks/{id}",
        "POST /v1/webhooks/test",
        "POST /v1/webhooks/{id}/replay",
    ],
)
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=documents)
@example(document={"since": 2**63})  # past SQLite's integers: once a 500 from replay
def test_arbitrary_json_never_breaks_a_write_endpoint(
    daemon: DaemonProcess, route: str, document: Any
) -> None:
    assume(safe(document))
    method, path = route.split(" ")
    path = path.replace("{id}", daemon.webhook_id)  # type: ignore[attr-defined]
    database = daemon.config_path.parent / "data" / "almhookd.db"
    before = snapshot(database)
    status, body = daemon.request(method, path, document)
    assert status < 500, (status, body)
    if status >= 400:
        assert set(body) == {"error"} and body["error"]["message"], body
        assert snapshot(database) == before


query_values = st.text(max_size=12) | odd_strings | edge_integers.map(str) | st.integers().map(str)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/webhooks/{id}/deliveries",
        "/v1/webhooks/{id}/attempts",
        "/v1/webhooks",
        "/v1/status",
        "/v1/events/{value}",
        "/v1/webhooks/{value}",
    ],
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(
        st.sampled_from(["limit", "cursor", "state", "since", "x"]), query_values, max_size=3
    ),
    value=query_values,
)
@example(params={"cursor": str(2**70)}, value="x")
@example(params={"limit": "\u0661"}, value="\ud800")
def test_arbitrary_query_strings_and_ids_never_break_a_read(
    daemon: DaemonProcess, path: str, params: dict[str, str], value: str
) -> None:
    def encoded(text: str) -> str:  # lone surrogates too, as the bytes a client could send
        return quote(text.encode("utf-8", "surrogatepass"), safe="")

    target = path.replace("{id}", daemon.webhook_id).replace("{value}", encoded(value))  # type: ignore[attr-defined]
    query = "&".join(f"{encoded(key)}={encoded(item)}" for key, item in params.items())
    status, body = daemon.request("GET", target + ("?" + query if query else ""))
    assert status < 500, (status, body)
    if status >= 400:
        assert set(body) == {"error"} and body["error"]["message"], body
