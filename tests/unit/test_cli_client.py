"""The pure parts of the admin client: ``--since``, asking before deleting, the hints and
the one-line errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from almhookd.cli import client
from almhookd.cli.main import _api_error_message, _parser, one_line

NOW_MS = int(datetime(2026, 11, 30, 14, 0, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW_MS - HOUR_MS // 2),
        ("2h", NOW_MS - 2 * HOUR_MS),
        (" 1d ", NOW_MS - 24 * HOUR_MS),
        ("1h30m", NOW_MS - 3 * HOUR_MS // 2),
        ("100000d", 0),  # before anything was ingested: everything retained
        ("2026-11-30T12:00", NOW_MS - 2 * HOUR_MS),  # no offset: UTC
        ("2026-11-30 12:00:00", NOW_MS - 2 * HOUR_MS),
        ("2026-11-30T12:00Z", NOW_MS - 2 * HOUR_MS),
        ("2026-11-30T12:00:00+01:00", NOW_MS - 3 * HOUR_MS),
        ("2026-11-30", NOW_MS - 14 * HOUR_MS),
        ("1764500000000", 1_764_500_000_000),  # epoch milliseconds, as before
        ("0", 0),
    ],
)
def test_since_takes_a_duration_a_date_or_epoch_milliseconds(text: str, expected: int) -> None:
    assert client.parse_since(text, now_ms=NOW_MS) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1x", "is not a duration (30m, 2h, 1d), an ISO 8601 date and time"),
        ("", "is not a duration"),
        ("-5", "is not a duration"),
        ("1" * 65, "is not a duration"),
        ("2026-12-01T00:00", "is in the future"),
    ],
)
def test_a_bad_since_says_what_it_takes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        client.parse_since(text, now_ms=NOW_MS)


def test_the_since_help_says_dates_are_utc_unless_they_have_an_offset() -> None:
    replay = _subparser("webhooks", "replay")
    [since] = [a for a in replay._actions if "--since" in a.option_strings]
    assert since.help is not None and "UTC unless it has an offset" in since.help
    assert "30m" in since.help and "epoch milliseconds" in since.help


def test_the_replay_note_only_when_since_is_before_the_webhook() -> None:
    webhook = {"name": "late", "createdAt": NOW_MS}
    note = client.replay_note(NOW_MS - 1, webhook)
    assert note is not None and note.startswith("note: 2026-11-30 13:59:59 UTC is before late")
    assert "events ingested before then are included" in note
    assert client.replay_note(NOW_MS, webhook) is None
    assert client.replay_note(NOW_MS + 1, webhook) is None


# --- asking before deleting ---------------------------------------------------------


def answers(*replies: str | type[BaseException]) -> tuple[Callable[[str], str], list[str]]:
    """An answer source giving ``replies`` in turn (an exception class is raised), and
    the questions it was asked."""
    asked: list[str] = []
    queue = list(replies)

    def ask(question: str) -> str:
        asked.append(question)
        reply = queue.pop(0)
        if isinstance(reply, type):
            raise reply()
        return reply

    return ask, asked


@pytest.mark.parametrize("reply", ["y", "yes", "Y", " YES\n"])
def test_y_or_yes_confirms(reply: str) -> None:
    ask, asked = answers(reply)
    assert client.confirmed("Delete? [y/N] ", ask) is True and asked == ["Delete? [y/N] "]


@pytest.mark.parametrize("reply", ["", "\n", "n", "no", "yep", "ja", EOFError, KeyboardInterrupt])
def test_anything_else_is_a_no(reply: str | type[BaseException]) -> None:
    ask, _ = answers(reply)
    assert client.confirmed("Delete? [y/N] ", ask) is False


WEBHOOK = {"id": "wh_1", "name": "LMS sync", "createdAt": 0}


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, method: str, path: str, body: Any) -> Any:
        self.calls.append((method, path))
        if method == "GET" and path == "/v1/webhooks":
            return {"webhooks": [WEBHOOK]}
        return WEBHOOK if method == "GET" else None


def delete_args(*extra: str) -> argparse.Namespace:
    return _parser().parse_args(["webhooks", "delete", "LMS sync", *extra])


@pytest.mark.parametrize(("reply", "deleted"), [("y\n", True), ("n\n", False), (EOFError, False)])
def test_delete_asks_and_deletes_only_on_yes(
    reply: str | type[BaseException], deleted: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeApi()
    ask, asked = answers(reply)
    code = client.run(delete_args(), api, ask)
    assert asked == ["Delete webhook LMS sync (wh_1) and its pending deliveries? [y/N] "]
    assert (("DELETE", "/v1/webhooks/wh_1") in api.calls) is deleted
    out, err = capsys.readouterr()
    if deleted:
        assert (code, out, err) == (0, "deleted LMS sync\n", "")
    else:
        assert (code, out, err) == (1, "", "almhookd: nothing deleted\n")


def test_delete_yes_asks_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    ask, asked = answers()
    assert client.run(delete_args("--yes"), api, ask) == 0
    assert asked == [] and ("DELETE", "/v1/webhooks/wh_1") in api.calls
    assert capsys.readouterr().out == "deleted LMS sync\n"


def test_delete_without_a_terminal_needs_yes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(client, "stdin_is_a_terminal", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        client.check_usage(delete_args())
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("almhookd: webhooks delete: ") and "pass --yes" in line
    client.check_usage(delete_args("--yes"))  # no exit
    monkeypatch.setattr(client, "stdin_is_a_terminal", lambda: True)
    client.check_usage(delete_args())  # it will ask


# --- the empty list's hint, one-line errors --------------------------------------------


def _subparser(*names: str) -> argparse.ArgumentParser:
    parser = _parser()
    for name in names:
        [choices] = [
            a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ]
        parser = choices[name]
    return parser


def test_the_empty_list_names_the_flags_add_really_has() -> None:
    hint = client.webhooks_table([], NOW_MS)
    assert client.ADD_HINT in hint
    flags = [word for word in client.ADD_HINT.split() if word.startswith("--")]
    add = _subparser("webhooks", "add")
    required = {o for a in add._actions if a.required for o in a.option_strings}
    assert set(flags) == required, "the hint gives exactly the flags add requires"


def test_api_errors_say_each_problem_once_on_one_line() -> None:
    problems = [{"path": f"events[{i}]", "message": f"unknown event 'E{i}'"} for i in range(7)]
    summed = "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5])
    body = {"error": {"message": f"invalid input: {summed}; and 2 more", "details": problems}}
    message = _api_error_message(422, body)
    assert message == "HTTP 422: invalid input: " + "; ".join(
        f"events[{i}]: unknown event 'E{i}'" for i in range(7)
    )
    one = {"error": {"message": "invalid input: name: required", "details": problems[:0]}}
    assert _api_error_message(422, one) == "HTTP 422: invalid input: name: required"
    body = {
        "error": {
            "message": "invalid input: name: required",
            "details": [{"path": "name", "message": "required"}],
        }
    }
    assert _api_error_message(422, body) == "HTTP 422: invalid input: name: required"
    assert (
        _api_error_message(502, {"error": {"message": "bad\ngateway\n"}}) == "HTTP 502: bad gateway"
    )
    assert _api_error_message(500, None) == "HTTP 500: request failed"


def test_one_line_joins_the_lines_of_a_message() -> None:
    assert one_line("a\n  b\n\nc") == "a; b; c"
    assert one_line("single") == "single"


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["webhooks", "replay", "x", "--since", "soon"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("almhookd: webhooks replay: argument --since: 'soon' is not a duration")
    assert err.endswith("(see: almhookd webhooks replay --help)\n") and err.count("\n") == 1
