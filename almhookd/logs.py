"""structlog set-up: JSON lines for journald and machines, a console format on a TTY.

The standard library's loggers (aiohttp, asyncio) are routed through the same
processors, so every line of the daemon has one shape. Under journald (its
``JOURNAL_STREAM`` names our stdout) each line starts with the syslog priority,
``<3>`` to ``<7>``, so ``journalctl -p warning`` selects by level.

aiosqlite logs two debug lines per database statement (hundreds a minute on an idle
daemon), so its logger stays at ``info`` or above even when ``[log] level = "debug"``;
set the environment variable ``ALMHOOKD_DEBUG_SQL=1`` to see them at debug level.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Final, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from almhookd.config import secret_values

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def logs_at(configured: str, level: str) -> bool:
    """Whether a logger configured at ``configured`` writes lines at ``level``: a hot path
    skips building a line the filter drops (structlog's lazy proxy binds on every call)."""
    return _LEVELS[level] >= _LEVELS[configured]


#: The environment variable that lets aiosqlite's per-statement debug lines through.
DEBUG_SQL_VARIABLE: Final = "ALMHOOKD_DEBUG_SQL"


def sql_log_level(level: str, environ: Mapping[str, str]) -> int:
    """The level of the ``aiosqlite`` logger: its statement lines only when asked for."""
    if environ.get(DEBUG_SQL_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}:
        return logging.NOTSET  # the root logger's level, debug included
    return max(logging.INFO, _LEVELS[level])


#: syslog priorities of sd-daemon(3) by log level.
PRIORITIES: Final = {"critical": 2, "error": 3, "exception": 3, "warning": 4, "info": 6, "debug": 7}

Renderer = Callable[[Any, str, Any], Any]

#: Tracebacks as structured data, frames without their local variables: a sender's or a
#: request handler's locals hold tokens, passwords and signing secrets, and structlog's
#: default (``dict_tracebacks``, rich on a console) prints them.
_TRACEBACKS_WITHOUT_LOCALS: Final = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def parser_fault(error: HttpProcessingError) -> str:
    """What aiohttp's parser found wrong, without the bytes it quotes after a colon."""
    reason = str(error.message).split(":", 1)[0].strip() if error.message else ""
    return reason or type(error).__name__


class MalformedRequestLine(logging.Filter):
    """aiohttp logs a request it cannot parse as "Error handling request" with the
    parser's exception, whose text quotes the offending bytes of the head: an
    ``Authorization`` line, token and all. Such a request is the client's fault: one
    warning line naming what was wrong, without the bytes and without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = "malformed request refused: %s (HTTP %s)"
            record.args = (parser_fault(error), error.code)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class Redacting:
    """Wraps a renderer: every secret value the process holds (``config.Secret``) is
    replaced by ``[redacted]`` in the rendered line, whatever put it there."""

    def __init__(self, inner: Renderer) -> None:
        self._inner = inner
        self._known: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def __call__(self, logger: Any, method: str, event_dict: Any) -> Any:
        line = self._inner(logger, method, event_dict)
        pattern = self._current_pattern()
        if pattern is not None and isinstance(line, str):
            line = pattern.sub("[redacted]", line)
        return line

    def _current_pattern(self) -> re.Pattern[str] | None:
        known = secret_values()
        if known is not self._known:  # rebuilt only when a new secret appears
            self._known = known
            # Longest first, so a secret containing another is replaced whole.
            ordered = sorted(known, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        return self._pattern


class JournalPrefix:
    """Wraps a renderer: ``<priority>`` before each line for journald."""

    def __init__(self, inner: Renderer) -> None:
        self._inner = inner

    def __call__(self, logger: Any, method: str, event_dict: Any) -> str:
        priority = PRIORITIES.get(str(event_dict.get("level", method)), 6)
        return f"<{priority}>{self._inner(logger, method, event_dict)}"


def under_journald(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM``)."""
    expected = environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def configure_logging(
    *,
    level: str = "info",
    format: str = "auto",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Set up (or, on a reload, set up again) the whole logging pipeline."""
    stream = stream or sys.stdout
    environ = os.environ if environ is None else environ
    use_json = format == "json" or (format == "auto" and not stream.isatty())
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    renderer: list[Any]
    if use_json:
        json_renderer: Renderer = structlog.processors.JSONRenderer()
        if under_journald(stream, environ):
            json_renderer = JournalPrefix(json_renderer)
        renderer = [_TRACEBACKS_WITHOUT_LOCALS, Redacting(json_renderer)]
    else:
        renderer = [
            Redacting(
                structlog.dev.ConsoleRenderer(
                    colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
                )
            )
        ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            *renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # aiohttp's access log would add a line per request; ingest counts live in metrics.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(sql_log_level(level, environ))
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestLine) for f in server_log.filters):
        server_log.addFilter(MalformedRequestLine())


#: Characters of an unexpected exception's message kept in its log line.
ERROR_EXCERPT: Final = 500


def crash_fields(error: BaseException) -> dict[str, str]:
    """The log fields of an exception nobody foresaw: its type, message and traceback.

    The traceback is the standard library's, file and line of each frame only: the
    configured structlog renderers (``exc_info``) would print every frame's local
    variables, and a sender's locals hold secrets and signatures.
    """
    return {
        "error_type": f"{type(error).__module__}.{type(error).__qualname__}",
        "error": str(error)[:ERROR_EXCERPT],
        "traceback": "".join(traceback.format_exception(error)),
    }
