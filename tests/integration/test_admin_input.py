"""Admin requests with input past what SQLite or an encoder takes: a 4xx, never a 5xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.running import Running, daemon_config, running_daemon


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(daemon_config(tmp_path)) as running:
        yield running


@pytest.fixture
async def hook_id(daemon: Running) -> str:
    status, hook, _ = await daemon.call(
        "POST",
        "/v1/webhooks",
        {"name": "input", "targetUrl": "http://127.0.0.1:9/", "events": ["CI_STATS"]},
    )
    assert status == 201, hook
    return str(hook["id"])


@pytest.mark.parametrize("listing", ["deliveries", "attempts"])
@pytest.mark.parametrize(
    "cursor", [str(2**63), str(2**70), "-1", "9" * 30, "9" * 5000, "1e3", "0x10", "\u0661", "1_0"]
)
async def test_a_cursor_past_what_a_page_can_have_is_a_400(
    daemon: Running, hook_id: str, listing: str, cursor: str
) -> None:
    status, body, _ = await daemon.call("GET", f"/v1/webhooks/{hook_id}/{listing}?cursor={cursor}")
    assert status == 400, body
    assert body["error"]["code"] == "bad_request" and "cursor" in body["error"]["message"]


async def test_the_largest_cursor_sqlite_holds_is_an_empty_page(
    daemon: Running, hook_id: str
) -> None:
    status, body, _ = await daemon.call(
        "GET", f"/v1/webhooks/{hook_id}/deliveries?cursor={2**63 - 1}"
    )
    assert (status, body) == (200, {"deliveries": [], "nextCursor": None})


@pytest.mark.parametrize(
    ("event_ids", "path"),
    [
        (["\ud800"], "eventIds[0]"),
        (["ok-1", "with space"], "eventIds[1]"),
        (["ok-1", "x" * 129], "eventIds[1]"),
        (["ok-1", 7], "eventIds[1]"),
        (["ok-1", "nul\u0000"], "eventIds[1]"),
    ],
)
async def test_replay_names_an_id_no_event_can_have(
    daemon: Running, hook_id: str, event_ids: list[object], path: str
) -> None:
    status, body, _ = await daemon.call(
        "POST", f"/v1/webhooks/{hook_id}/replay", {"eventIds": event_ids}
    )
    assert status == 422, body
    assert [p["path"] for p in body["error"]["details"]] == [path]


async def test_replay_names_at_most_twenty_bad_ids(daemon: Running, hook_id: str) -> None:
    status, body, _ = await daemon.call(
        "POST", f"/v1/webhooks/{hook_id}/replay", {"eventIds": ["bad id"] * 500}
    )
    assert status == 422
    assert [p["path"] for p in body["error"]["details"]] == [f"eventIds[{i}]" for i in range(20)]


@pytest.mark.parametrize("since", [2**63, 2**70, -1])
async def test_replay_since_past_64_bits_is_a_422(
    daemon: Running, hook_id: str, since: int
) -> None:
    status, body, _ = await daemon.call("POST", f"/v1/webhooks/{hook_id}/replay", {"since": since})
    assert status == 422, body
    assert body["error"]["details"][0]["path"] == "since"
