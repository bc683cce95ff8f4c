"""The daemon's life: start-up, serve, shutdown.

:func:`serve` takes an injectable ``shutdown_trigger`` (an awaitable that returns when
it is time to stop), so tests run the whole daemon in-process without signals;
:func:`run` wires that trigger to SIGTERM/SIGINT and runs the loop under uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
import uvloop
from aiohttp import web

from almhookd import __version__
from almhookd.api import ServerState, create_app
from almhookd.auth import TokenChecker, ensure_admin_token
from almhookd.config import Config, ListenAddress
from almhookd.dispatcher import Dispatcher
from almhookd.errors import AlmhookdError, ConfigError
from almhookd.logs import configure_logging
from almhookd.metrics import Metrics
from almhookd.notify import Notifier
from almhookd.protocols import Clock
from almhookd.scheduler import BatchScheduler
from almhookd.sender import Sender
from almhookd.store import Store

log = structlog.get_logger("almhookd.daemon")

#: How long in-flight API requests may take to finish once shutdown begins.
SHUTDOWN_GRACE_SECONDS: Final = 10.0

ShutdownTrigger = Callable[[], Awaitable[object]]


class StartupError(AlmhookdError):
    """almhookd could not start."""


async def serve(
    config: Config,
    *,
    shutdown_trigger: ShutdownTrigger,
    clock: Clock = time.time,
    on_ready: Callable[[list[ListenAddress]], None] | None = None,
) -> None:
    """Run the daemon until ``shutdown_trigger`` returns, then stop cleanly.

    Start-up order: token, store (migrated), sender, dispatcher (workers), listener.
    Shutdown runs it backwards: stop accepting (503), let API requests finish, let
    requests to receivers finish within the read timeout, commit, close.
    """
    admin_token, generated = ensure_admin_token(config)
    if generated is not None:
        log.info(
            "auth.admin_token_file",
            path=str(generated),
            hint="the admin token was generated; clients read it from this file",
        )
    async with contextlib.AsyncExitStack() as stack:
        store = await Store.open(config.storage.path, clock=clock)
        stack.push_async_callback(store.close)
        sender = Sender(config.delivery, clock=clock)
        await sender.start()
        stack.push_async_callback(sender.close)
        metrics = Metrics()
        notifier = Notifier(config.notify, metrics)
        stack.push_async_callback(notifier.close)
        dispatcher = Dispatcher(
            store=store,
            sender=sender,
            notifier=notifier,
            clock=clock,
            config=config,
            metrics=metrics,
        )
        store.on_events_committed = dispatcher.wake_all
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop, config.delivery.read_timeout)
        scheduler = BatchScheduler(
            store=store, clock=clock, config=config.batch, wake_workers=dispatcher.wake_all
        )
        await scheduler.start()
        stack.push_async_callback(scheduler.stop)

        state = ServerState()
        app = create_app(
            store=store,
            config=config,
            clock=clock,
            state=state,
            tokens=TokenChecker(admin=admin_token, ingest=config.server.ingest_token),
            scheduler=scheduler,
            dispatcher=dispatcher,
            sender=sender,
            metrics=metrics,
        )
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(
            runner, config.server.listen.host, config.server.listen.port, reuse_address=True
        )
        try:
            await site.start()
        except OSError as error:
            raise StartupError(
                f"cannot listen on {config.server.listen}: {error.strerror or error}"
            ) from None
        bound = [_address(sockname) for sockname in runner.addresses]
        log.info(
            "daemon.started",
            version=__version__,
            listen=[str(a) for a in bound],
            database=str(config.storage.path),
            schema_version=store.schema_version,
            webhooks=len(dispatcher.workers),
        )
        if on_ready is not None:
            on_ready(bound)
        await shutdown_trigger()
        log.info("daemon.stopping")
        state.draining = True
    log.info("daemon.stopped")


def _address(sockname: object) -> ListenAddress:
    if isinstance(sockname, tuple):
        return ListenAddress(host=str(sockname[0]), port=int(sockname[1]))
    return ListenAddress(host=str(sockname), port=0)


def run(config: Config) -> int:
    """``almhookd run``: serve until SIGTERM or SIGINT; a second signal exits at once."""
    configure_logging(level=config.log.level, format=config.log.format)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("daemon.forced_exit", signal=signal.Signals(signum).name)
                os._exit(1)
            log.info("daemon.signal", signal=signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await serve(config, shutdown_trigger=stop.wait)

    try:
        uvloop.run(main())
    except ConfigError as error:
        print(f"almhookd: {error.message}", file=sys.stderr)
        return 78
    except AlmhookdError as error:
        log.error("daemon.failed", error=error.message)
        print(f"almhookd: {error.message}", file=sys.stderr)
        return 1
    return 0
