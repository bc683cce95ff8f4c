"""The notices between processes sharing a PostgreSQL database: ids only, parsed back,
and anything unknown ignored rather than misread."""

from __future__ import annotations

import pytest

from almhookd.storage.postgres.notices import parse_notice, payload_of
from almhookd.storage.values import Notice


@pytest.mark.parametrize(
    "notice",
    [
        Notice(kind="events", origin="p_1"),
        Notice(kind="flush", origin="p_2"),
        Notice(kind="webhook", origin="p_3", webhook_id="wh_0123456789abcdef"),
    ],
)
def test_a_notice_survives_its_payload(notice: Notice) -> None:
    payload = payload_of(notice)
    assert len(payload.encode()) < 8_000
    assert parse_notice(payload) == notice


@pytest.mark.parametrize("payload", ["", "x:p_1", "e", "e:", "w:p_1", "w:p_1:", "f::wh"])
def test_an_unknown_or_broken_payload_is_ignored(payload: str) -> None:
    assert parse_notice(payload) is None
