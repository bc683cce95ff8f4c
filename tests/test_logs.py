"""The logging set-up: tracebacks are kept, the frames' local variables are not."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

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
