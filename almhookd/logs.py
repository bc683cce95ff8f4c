"""structlog set-up: JSON lines for journald and machines, a console format on a TTY.

The standard library's loggers (aiohttp, asyncio) are routed through the same
processors, so every line of the daemon has one shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    *, level: str = "info", format: str = "auto", stream: TextIO | None = None
) -> None:
    stream = stream or sys.stdout
    use_json = format == "json" or (format == "auto" and not stream.isatty())
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    renderer: list[Any]
    if use_json:
        renderer = [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
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
