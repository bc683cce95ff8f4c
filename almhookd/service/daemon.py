"""The daemon's life: start-up, serve, shutdown.

:func:`serve` takes an injectable ``shutdown_trigger`` (an awaitable that returns when
it is time to stop), so tests run the whole daemon in-process without signals;
:func:`run` wires that trigger to SIGTERM/SIGINT and runs the loop under uvloop.

The daemon's one-of-a-kind tasks (maintenance, batch flushes, status, watchdog,
reloads) run for as long as it does. Should one end, its traceback is logged and the
daemon shuts down and exits 1, so systemd restarts it at once rather than once its
watchdog notices, 30 s later, or never. Delivery workers are the dispatcher's: it
restarts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Final

import structlog
import uvloop
from aiohttp import web

from almhookd import __version__
from almhookd.api.app import create_app
from almhookd.api.common import ServerState, body_memory_budget
from almhookd.api.server import ConnectionGuard, GuardedRunner
from almhookd.auth import TokenChecker, ensure_admin_token
from almhookd.config import Config, ListenAddress, load_config
from almhookd.console import setup as setup_console
from almhookd.delivery.cluster import Cluster
from almhookd.delivery.dispatcher import Dispatcher
from almhookd.delivery.flusher import BatchScheduler
from almhookd.delivery.notify import Notifier
from almhookd.delivery.sender import Sender
from almhookd.domain.ownership import LeasePolicy
from almhookd.errors import AlmhookdError, ConfigError
from almhookd.logs import configure_logging, crash_fields
from almhookd.metrics import Metrics
from almhookd.protocols import Clock
from almhookd.service.sdnotify import SystemdNotifier
from almhookd.storage import open_storage, shared
from almhookd.storage.interface import Storage

log = structlog.get_logger("almhookd.daemon")

#: How long in-flight API requests may take to finish once shutdown begins.
SHUTDOWN_GRACE_SECONDS: Final = 10.0

ShutdownTrigger = Callable[[], Awaitable[object]]


class StartupError(AlmhookdError):
    """almhookd could not start."""


class TaskFailed(AlmhookdError):
    """A task of the daemon stopped unexpectedly; see the log."""


async def serve(
    config: Config,
    *,
    shutdown_trigger: ShutdownTrigger,
    clock: Clock = time.time,
    on_ready: Callable[[list[ListenAddress]], None] | None = None,
    reload_trigger: ShutdownTrigger | None = None,
    systemd: SystemdNotifier | None = None,
) -> None:
    """Run the daemon until ``shutdown_trigger`` returns, then stop cleanly.

    Start-up order: token, store (migrated), sender, dispatcher (workers), listener.
    Shutdown runs it backwards: stop accepting (503), let API requests finish, let
    requests to receivers finish within the read timeout, commit, close.
    """
    admin_token, token_file, generated = ensure_admin_token(config)
    if token_file is not None:
        log.info(
            "auth.admin_token_file",
            path=str(token_file),
            generated=generated,
            hint=(
                "the admin token was generated into this file; clients read it from there"
                if generated
                else "the admin token is read from this file; clients read it from there too"
            ),
        )
    async with contextlib.AsyncExitStack() as stack:
        dispatcher: Dispatcher | None = None

        def events_committed() -> None:
            if dispatcher is not None:
                dispatcher.wake_all()

        store = await open_storage(
            config.storage, clock=clock, on_events_committed=events_committed
        )
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
        stack.push_async_callback(dispatcher.stop, config.delivery.read_timeout)
        cluster: Cluster | None = None
        shared_store = shared(store)
        if shared_store is not None:
            cluster = Cluster(
                store=shared_store,
                dispatcher=dispatcher,
                policy=LeasePolicy.for_takeover(config.storage.takeover),
            )
            dispatcher.ownership = cluster
        await dispatcher.start()
        if cluster is not None:
            await cluster.start()
            stack.push_async_callback(cluster.stop, config.delivery.read_timeout)
        scheduler = BatchScheduler(
            store=store,
            clock=clock,
            config=config.batch,
            wake_workers=dispatcher.wake_all,
            leads=cluster.leads if cluster is not None else None,
        )
        await scheduler.start()
        stack.push_async_callback(scheduler.stop)

        tokens = TokenChecker(admin=admin_token, ingest=config.server.ingest_token)
        state = ServerState(config=config, tokens=tokens)
        app = create_app(
            store=store,
            config=config,
            clock=clock,
            state=state,
            tokens=tokens,
            scheduler=scheduler,
            dispatcher=dispatcher,
            sender=sender,
            metrics=metrics,
            cluster=cluster,
        )
        setup_console(app)
        app.middlewares.append(body_memory_budget())
        runner = GuardedRunner(
            app,
            ConnectionGuard(state),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
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
            database=config.storage.location,
            schema_version=store.schema_version,
            webhooks=len(dispatcher.workers),
        )
        systemd = systemd or SystemdNotifier({})
        parts = _Parts(
            store=store,
            sender=sender,
            notifier=notifier,
            dispatcher=dispatcher,
            scheduler=scheduler,
            state=state,
            systemd=systemd,
        )
        systemd.ready(await parts.status_line())
        background: list[asyncio.Task[None]] = []
        if systemd.enabled:
            background.append(asyncio.create_task(parts.report_status(), name="almhookd-status"))
        if systemd.watchdog_interval:
            background.append(
                asyncio.create_task(
                    parts.watchdog(systemd.watchdog_interval), name="almhookd-watchdog"
                )
            )
        if reload_trigger is not None:
            background.append(
                asyncio.create_task(parts.reloads(reload_trigger), name="almhookd-reload")
            )
        watched = [
            task
            for task in (
                dispatcher.maintenance_task,
                scheduler.task,
                cluster.task if cluster is not None else None,
            )
            if task is not None
        ]
        watched += background
        if on_ready is not None:
            on_ready(bound)
        try:
            ended = await _until_stopped(shutdown_trigger, watched)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        if ended is not None:
            log.error("daemon.task_failed", task=ended.get_name(), **_ending(ended))
        log.info("daemon.stopping")
        systemd.stopping()
        state.draining = True
    log.info("daemon.stopped")
    if ended is not None:
        raise TaskFailed(f"the {ended.get_name()} task stopped unexpectedly; see the log")


async def _until_stopped(
    shutdown_trigger: ShutdownTrigger, watched: list[asyncio.Task[None]]
) -> asyncio.Task[None] | None:
    """Wait for the shutdown trigger, or for a watched task to end (none ever should);
    returns the task that ended, if one did."""
    stop = asyncio.ensure_future(shutdown_trigger())
    try:
        await asyncio.wait({stop, *watched}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not stop.done():
            stop.cancel()
            await asyncio.gather(stop, return_exceptions=True)
    ended = next((task for task in watched if task.done()), None)
    if ended is None:
        stop.result()  # the trigger's own error, if it raised one
    return ended


def _ending(task: asyncio.Task[None]) -> dict[str, str]:
    """How a task that should have run for ever ended, for its log line (the traceback
    without local variables: see :func:`almhookd.logs.crash_fields`)."""
    if task.cancelled():
        return {"error": "cancelled"}
    error = task.exception()
    return crash_fields(error) if error is not None else {"error": "returned"}


def raise_file_limit(max_connections: int) -> int:
    """Raise the soft limit on open files to the hard one (each connection is a file);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:  # an unlimited hard limit may not be settable
            log.warning("daemon.file_limit_not_raised", soft=soft, hard=hard, error=str(error))
    log.info("daemon.file_limit", open_files=soft)
    if soft != resource.RLIM_INFINITY and soft < max_connections + FILES_BESIDES_CONNECTIONS:
        log.warning(
            "daemon.file_limit_low",
            open_files=soft,
            max_connections=max_connections,
            hint="raise LimitNOFILE or lower server.max_connections",
        )
    return soft


#: Files the daemon holds besides its clients' connections: the database and its WAL,
#: the delivery pool's connections, logs, the loop's own.
FILES_BESIDES_CONNECTIONS: Final = 256


#: How often the systemd STATUS line is refreshed.
STATUS_INTERVAL_SECONDS: Final = 10.0


@dataclass(kw_only=True, slots=True)
class _Parts:
    """The running daemon's parts, for the status line, the watchdog and reloads."""

    store: Storage
    sender: Sender
    notifier: Notifier
    dispatcher: Dispatcher
    scheduler: BatchScheduler
    state: ServerState
    systemd: SystemdNotifier

    async def status_line(self) -> str:
        webhooks = await self.store.list_webhooks()
        backlog = sum([await self.store.backlog(w.id) for w in webhooks])
        active = sum(1 for w in webhooks if w.active)
        return f"{len(webhooks)} webhooks ({active} active), backlog {backlog}"

    async def report_status(self) -> None:
        while self.systemd.enabled:
            await asyncio.sleep(STATUS_INTERVAL_SECONDS)
            with contextlib.suppress(AlmhookdError):
                self.systemd.status(await self.status_line())

    async def watchdog(self, interval: float) -> None:
        """``WATCHDOG=1`` every half interval, only while the loop, the store writer and
        the workers make progress: a wedged store lets systemd's watchdog fire."""
        while True:
            await asyncio.sleep(interval / 2)
            try:
                await asyncio.wait_for(self.store.ping(), timeout=interval / 2)
            except (TimeoutError, AlmhookdError) as error:
                log.error("watchdog.store_not_responding", error=str(error) or "timed out")
                continue
            if not self.dispatcher.healthy():
                log.error("watchdog.worker_stopped")
                continue
            self.systemd.watchdog()

    async def reloads(self, trigger: ShutdownTrigger) -> None:
        while True:
            await trigger()
            await self.reload()

    async def reload(self) -> None:
        """Re-read the configuration file; keep the running one if the new one is bad."""
        current = self.state.config
        self.systemd.reloading()
        try:
            new = load_config(current.source) if current.source else current
        except ConfigError as error:
            log.error("daemon.reload_failed", error=error.message, kept="the running configuration")
            self.systemd.ready(await self.status_line())
            return
        # The listener and the database stay as started: changing them needs a restart.
        if new.server.listen != current.server.listen:
            log.warning("daemon.reload_needs_restart", key="server.listen")
        new = replace(
            new,
            server=replace(new.server, listen=current.server.listen),
            storage=replace(new.storage, path=current.storage.path),
        )
        configure_logging(level=new.log.level, format=new.log.format)
        admin_token = ensure_admin_token(new).secret
        self.state.tokens = TokenChecker(admin=admin_token, ingest=new.server.ingest_token)
        self.state.config = new
        self.notifier.config = new.notify
        self.sender.reconfigure(new.delivery)
        self.dispatcher.reconfigure(new)
        self.scheduler.reconfigure(new.batch)
        changed = [
            name
            for name in ("server", "storage", "account", "delivery", "batch", "notify", "log")
            if getattr(new, name) != getattr(current, name)
        ]
        log.info("daemon.reloaded", changed=changed)
        self.systemd.ready(await self.status_line())


def _address(sockname: object) -> ListenAddress:
    if isinstance(sockname, tuple):
        return ListenAddress(host=str(sockname[0]), port=int(sockname[1]))
    return ListenAddress(host=str(sockname), port=0)


#: A SIGINT this soon after the first is the same Ctrl-C: a terminal sends it to the
#: whole foreground group, and ``make run`` passes it on to the daemon once more.
SAME_INTERRUPT_SECONDS: Final = 1.0


class StopSignals:
    """What a stop signal means: the first stops gracefully, a later one exits at once
    (a stop that hangs), except a SIGINT within SAME_INTERRUPT_SECONDS of the first,
    which is the same Ctrl-C delivered twice and is ignored."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._first: tuple[str, float] | None = None

    def received(self, name: str) -> str:
        """``stop``, ``ignore`` or ``force``."""
        now = self._clock()
        if self._first is None:
            self._first = (name, now)
            return "stop"
        first_name, at = self._first
        if name == first_name == "SIGINT" and now - at < SAME_INTERRUPT_SECONDS:
            return "ignore"
        return "force"


def run(config: Config) -> int:
    """``almhookd run``: serve until SIGTERM or SIGINT (a later one exits at once; the
    same Ctrl-C arriving twice does not); SIGHUP reloads the configuration file."""
    configure_logging(level=config.log.level, format=config.log.format)
    raise_file_limit(config.server.max_connections)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        reload_requested = asyncio.Event()

        async def next_reload() -> None:
            await reload_requested.wait()
            reload_requested.clear()

        def on_hangup() -> None:
            log.info("daemon.signal", signal="SIGHUP")
            reload_requested.set()

        signals = StopSignals(clock=time.monotonic)

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            verdict = signals.received(name)
            if verdict == "force":
                log.warning("daemon.forced_exit", signal=name)
                os._exit(1)
            if verdict == "stop":
                log.info("daemon.signal", signal=name)
                stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        systemd = SystemdNotifier()
        try:
            await serve(
                config, shutdown_trigger=stop.wait, reload_trigger=next_reload, systemd=systemd
            )
        finally:
            systemd.close()

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
