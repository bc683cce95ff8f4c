"""The delivery engine assembled in-process on a real SQLite file, for tests."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from almhookd.config import Config, parse_config
from almhookd.delivery.dispatcher import Dispatcher
from almhookd.delivery.lease import LeaseHold
from almhookd.delivery.notify import Notifier
from almhookd.delivery.sender import Sender
from almhookd.delivery.worker import CLAIMED_BATCHES, Worker
from almhookd.domain.events import parse_ingest
from almhookd.domain.webhooks import NewWebhook, Webhook
from almhookd.protocols import Clock
from almhookd.storage.sqlite import SqliteStorage
from almhookd.storage.values import AppendResult
from tests.support import samples
from tests.support.clock import FakeClock

_ids = itertools.count()  # unique across engines on one database


def engine_config(db_path: Path, toml: str = "", delivery: str = "") -> Config:
    """Private targets allowed (receivers are on 127.0.0.1), short timeouts; ``delivery``
    adds lines to ``[delivery]``, ``toml`` adds other sections."""
    config = parse_config(
        '[delivery]\nread_timeout = "1s"\nconnect_timeout = "1s"\n'
        + (delivery or "allow_private_targets = true\n")
        + toml,
        env={},
    )
    return replace(
        config,
        storage=replace(config.storage, path=db_path),
        account=replace(config.account, id=1010),
    )


class Engine:
    def __init__(
        self,
        *,
        store: SqliteStorage,
        dispatcher: Dispatcher,
        sender: Sender,
        notifier: Notifier,
        clock: FakeClock,
        config: Config,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.sender = sender
        self.notifier = notifier
        self.clock = clock
        self.config = config
        self.hand_driven: list[Worker] = []

    def wake_all(self) -> None:
        """What a commit does in the daemon, for the hand-driven workers too."""
        self.dispatcher.wake_all()
        for worker in self.hand_driven:
            worker.wake()

    async def webhook(
        self, url: str, *, events: frozenset[str] | None = None, start: bool = False, **fields: Any
    ) -> Webhook:
        webhook = await self.store.create_webhook(
            NewWebhook(
                name=fields.pop("name", f"hook-{next(_ids)}"),
                target_url=url,
                events=events or frozenset(samples.ALL),
                **fields,
            )
        )
        if start:
            await self.dispatcher.refresh(webhook.id)
        return webhook

    def worker(
        self,
        webhook: Webhook,
        *,
        maintained: bool = False,
        claimed_batches: int | None = None,
        clock: Clock | None = None,
        lease: LeaseHold | None = None,
    ) -> Worker:
        """A worker driven by hand through ``step()`` (not started), woken by commits.

        ``maintained``: the dispatcher also holds it, as it holds the workers it starts,
        so ``maintain_once()`` reminds and disables through it, and a disable is counted.
        ``clock``: its own (the store keeps the engine's); ``lease``: it sends under one,
        as when processes share a database.
        """
        worker = Worker(
            webhook,
            store=self.store,
            sender=self.dispatcher._sender,
            notifier=self.notifier,
            clock=clock or self.clock,
            lease=lease,
            config=self.config,
            expire=self.dispatcher.expire,
            on_disabled=self.dispatcher._disabled if maintained else None,
            jitter=lambda: 0.0,
            metrics=self.dispatcher.metrics if maintained else None,
            claimed_batches=CLAIMED_BATCHES if claimed_batches is None else claimed_batches,
        )
        self.hand_driven.append(worker)
        if maintained:
            self.dispatcher.workers[webhook.id] = worker
        return worker

    async def ingest(
        self, count: int = 1, name: str = "COURSE_ENROLLMENT", prefix: str = "ev"
    ) -> list[str]:
        ids = [f"{prefix}-{next(_ids)}" for _ in range(count)]
        events = parse_ingest(
            {"events": [samples.event(name, eventId=i) for i in ids]},
            now_ms=int(self.clock() * 1000),
            default_account_id=1010,
            new_id=lambda: "unused",
        )
        result: AppendResult = await self.store.append(events)
        assert result.accepted == count
        return ids

    async def drain(self, worker: Worker, *, limit: int = 1000) -> int:
        """Step until nothing is due now; returns the number of steps that sent."""
        for sent in range(limit):
            delay = await worker.step()
            if delay is None or delay > 0:
                return sent
        raise AssertionError("the worker did not settle")


@asynccontextmanager
async def running_engine(
    db_path: Path, clock: FakeClock, toml: str = "", delivery: str = ""
) -> AsyncIterator[Engine]:
    config = engine_config(db_path, toml, delivery)
    built: list[Engine] = []  # the engine, once built: ingest commits wake its workers

    def events_committed() -> None:
        for engine in built:
            engine.wake_all()

    store = await SqliteStorage.open(db_path, clock=clock, on_events_committed=events_committed)
    sender = Sender(config.delivery, clock=clock)
    await sender.start()
    notifier = Notifier(config.notify)
    dispatcher = Dispatcher(
        store=store, sender=sender, notifier=notifier, clock=clock, config=config
    )
    engine = Engine(
        store=store,
        dispatcher=dispatcher,
        sender=sender,
        notifier=notifier,
        clock=clock,
        config=config,
    )
    built.append(engine)
    try:
        yield engine
    finally:
        await dispatcher.stop(1.0)
        await notifier.close()
        await sender.close()
        await store.close()
