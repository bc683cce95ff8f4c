"""Arbitrary JSON thrown at every write endpoint: never a 5xx, and a rejected request
leaves the database exactly as it was."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.support.daemon_process import DaemonProcess
from tests.support.fuzzing import (
    daemon,
    documents,
    query_values,
    safe,
    snapshot,
)

__all__ = ["daemon"]  # the module-scoped daemon fixture, shared with test_bad_input.py


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
