"""The logging set-up: tracebacks are kept, the frames' local variables are not."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from almhookd.config import Secret
from almhookd.logs import configure_logging

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
