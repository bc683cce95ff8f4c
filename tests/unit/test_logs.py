"""The logging set-up: tracebacks are kept, the frames' local variables are not."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from almhookd.config import Secret
from almhookd.logs import DEBUG_SQL_VARIABLE, configure_logging
from almhookd.storage.sqlite import SqliteStorage

SECRET = "whsec_local-variable-never-logged"


def fail_holding_a_secret() -> None:
    signing_secret = SECRET  # a frame's local, as in the sender
    raise RuntimeError(f"failed after {len(signing_secret)} characters")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Puts back structlog's and the root logger's set-up (other tests capture logs)."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("form", ["json", "console"])
@pytest.mark.usefixtures("restore_logging")
def test_a_logged_traceback_shows_no_local_variables(form: str) -> None:
    stream = io.StringIO()
    configure_logging(level="info", format=form, stream=stream, environ={})
    try:
        fail_holding_a_secret()
    except RuntimeError:
        structlog.get_logger().exception("worker.step_failed")
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    text = stream.getvalue()
    assert "fail_holding_a_secret" in text and "failed after 33 characters" in text
    assert SECRET not in text
    if form == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert [line["event"] for line in lines] == [
            "worker.step_failed",
            "Task exception was never retrieved",
        ]


@pytest.mark.parametrize("form", ["json", "console"])
@pytest.mark.usefixtures("restore_logging")
def test_every_secret_the_process_holds_is_redacted_from_any_line(form: str) -> None:
    """The second line of defence: whatever puts a secret into a line (a field, an
    exception's message, a foreign logger), the rendered line does not hold it."""
    password = Secret("basic-password-in-a-message-0042").reveal()
    signing = Secret("whsec_c2lnbmluZy1rZXktYnl0ZXMtMDA0Mg==").reveal()
    stream = io.StringIO()
    configure_logging(level="info", format=form, stream=stream, environ={})
    structlog.get_logger().warning("oops", detail=f"sent {password} to the receiver")
    try:
        raise RuntimeError(f"bad key {signing.removeprefix('whsec_')}")
    except RuntimeError:
        structlog.get_logger().exception("worker.step_failed")
    logging.getLogger("aiohttp.server").warning("header was %s", password)
    text = stream.getvalue()
    assert "basic-password-in-a-message-0042" not in text
    assert "c2lnbmluZy1rZXktYnl0ZXMtMDA0Mg==" not in text
    assert text.count("[redacted]") == 3, text


@pytest.fixture
def restore_sql_logger() -> Iterator[None]:
    sql = logging.getLogger("aiosqlite")
    level = sql.level
    yield
    sql.setLevel(level)


async def store_work_logged(tmp_path: Path, environ: dict[str, str]) -> list[str]:
    """The lines a store's opening, a few statements and its closing log at debug level."""
    stream = io.StringIO()
    configure_logging(level="debug", format="json", stream=stream, environ=environ)
    store = await SqliteStorage.open(tmp_path / "almhookd.db", clock=time.time)
    try:
        await store.list_webhooks()
    finally:
        await store.close()
    return [json.loads(line).get("logger", "") for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_logging", "restore_sql_logger")
async def test_at_debug_level_aiosqlite_logs_no_statements(tmp_path: Path) -> None:
    loggers = await store_work_logged(tmp_path, environ={})
    assert not [name for name in loggers if name.startswith("aiosqlite")]


@pytest.mark.usefixtures("restore_logging", "restore_sql_logger")
async def test_aiosqlite_statements_are_logged_when_asked_for(tmp_path: Path) -> None:
    loggers = await store_work_logged(tmp_path, environ={DEBUG_SQL_VARIABLE: "1"})
    assert len([name for name in loggers if name == "aiosqlite"]) >= 4


@pytest.mark.usefixtures("restore_logging", "restore_sql_logger")
def test_debug_level_still_logs_the_daemons_own_debug_lines() -> None:
    stream = io.StringIO()
    configure_logging(level="debug", format="json", stream=stream, environ={})
    structlog.get_logger().debug("worker.idle")
    logging.getLogger("almhookd.api").debug("foreign debug line")
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["worker.idle", "foreign debug line"]
