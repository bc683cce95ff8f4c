"""One webhook's delivery coroutine: one request in flight, in ingest order.

It sleeps until its next due time or until woken by a commit (no polling), packs what
is due into a request batch recorded before sending, and retries that same batch, same
``webhook-id``, on the subscriber's backoff schedule. ``step()`` is one turn of the
loop, so tests drive the worker on a fake clock without sleeping.

While a backlog drains, the worker holds up to CLAIMED_BATCHES batches
(CLAIMED_BATCHES_SHARED on PostgreSQL; at most CLAIMED_BYTES of bodies) claimed ahead,
so the next request goes out as soon as one is acknowledged,
while the writer records the acknowledged ones (several in one transaction) and claims
more. A crash re-sends what was claimed or acknowledged but not yet recorded, each batch
under its own id: duplicates, never a loss. Each record claims only what brings the
batches recorded as sending back to CLAIMED_BATCHES (acknowledging does not add any), so
a crash re-sends at most that many per webhook.

Whatever else escapes a turn (a bug, an answer nobody foresaw) is logged with the
webhook id and counts as a failed attempt: the batch waits for the next retry, nothing
is lost and the order is kept. Should the loop itself die, the dispatcher restarts it:
one receiver never stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final

import structlog

from almhookd.config import Config
from almhookd.delivery.lease import LeaseHold
from almhookd.delivery.notify import Notifier, Reminder
from almhookd.delivery.sender import Sender
from almhookd.domain.batching import Claim, RequestBatch
from almhookd.domain.policy import (
    Outcome,
    RetryPolicy,
    Schedule,
    after_failure,
    after_success,
    disables_at,
    review,
)
from almhookd.domain.webhooks import Webhook
from almhookd.errors import LeaseLost, StorageError
from almhookd.logs import crash_fields, logs_at
from almhookd.metrics import Metrics, status_class
from almhookd.protocols import Clock
from almhookd.storage.interface import Outbox
from almhookd.storage.values import Attempt

log = structlog.get_logger("almhookd.worker")

#: Upper bound on one request body; one event larger than this is still sent alone.
MAX_REQUEST_BYTES: Final = 1024 * 1024
#: Pause after a storage error before the worker tries again.
STORAGE_RETRY_SECONDS: Final = 1.0
#: Request batches a worker holds claimed: the one being sent and those ahead of it.
#: Enough to cover the writer's record-and-claim of the half already sent: measured
#: against 8 and 16 (daemon, 2 cores), 32 drained a packed backlog 25% faster than 16,
#: and 16 one event per request 24% faster than 8 with ingest running.
CLAIMED_BATCHES: Final = 32
#: ... and no more once they hold this many bytes of request bodies, so that a webhook
#: of large events holds a few MiB, not CLAIMED_BATCHES times MAX_REQUEST_BYTES.
CLAIMED_BYTES: Final = 4 * MAX_REQUEST_BYTES
#: ... when the database is PostgreSQL, shared by processes: a record there is several
#: network round trips and more row writes, so the worker holds more ahead to cover it.
#: Quick runs back to back (bench.delivery --backend postgresql, equal ceilings): 64
#: against 32 drained one event per request 28% faster and a packed backlog 15%; 128
#: was no faster than 64. A crash then re-sends up to this many batches per webhook.
CLAIMED_BATCHES_SHARED: Final = 64


class Worker:
    """The delivery loop of one webhook, the only sender to it: at most one request in
    flight, batches in ingest order, each retried under its own id until acknowledged.

    It owns the webhook's live delivery schedule (``schedule``); ``webhook`` holds what
    the admin set, replaced by :meth:`update`. It sees storage only through its
    :class:`~almhookd.storage.interface.Outbox`. :meth:`step` is one turn (tests drive
    it on a fake clock), :meth:`start` runs the loop, and :meth:`maintain` is the
    maintenance pass's look between turns; every decision to remind or disable is
    taken under the turn lock, so by one owner."""

    def __init__(
        self,
        webhook: Webhook,
        *,
        store: Outbox,
        sender: Sender,
        notifier: Notifier,
        clock: Clock,
        config: Config,
        expire: Callable[[], Awaitable[object]],
        on_disabled: Callable[[str], None] | None = None,
        on_died: Callable[[Worker, BaseException | None], None] | None = None,
        on_lost: Callable[[Worker], None] | None = None,
        jitter: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
        lease: LeaseHold | None = None,
        claimed_batches: int = CLAIMED_BATCHES,
    ) -> None:
        self.webhook = webhook
        #: the live schedule (``webhook.schedule`` is the one the worker started with)
        self.schedule: Schedule = webhook.schedule
        self._store = store
        self._sender = sender
        self._notifier = notifier
        self._clock = clock
        self.reconfigure(config)
        self._expire = expire
        self._on_disabled = on_disabled
        self._on_died = on_died
        self._on_lost = on_lost
        #: the lease it sends under when processes share the database (else ``None``)
        self.lease = lease
        #: set when the lease was lost: the loop ended, another process delivers
        self.lost = False
        #: batches held claimed, and how few are left when it records and claims more
        self._claimed_batches = claimed_batches
        self._refill_at = claimed_batches // 2
        self._jitter = jitter
        self._metrics = metrics or Metrics()
        self._delivered = self._metrics.deliveries.labels(webhook.id, "delivered")
        self._attempt_counters: dict[str, Any] = {}
        #: claimed batches, in the order they go out; the first is the one being sent
        self._claimed: deque[RequestBatch] = deque()
        self._claimed_loaded = False
        #: attempts not yet handed to the writer, in order (acknowledged ones, and a
        #: failed one on its way)
        self._unrecorded: list[Attempt] = []
        #: the one record (and claim) running on the writer, returning what it claimed
        self._recording: asyncio.Future[list[RequestBatch]] | None = None
        #: wakes so far: a claim that found nothing, made at the same count, needs no
        #: repeating (every commit, release or replay that adds work wakes the worker)
        self._wakes = 0
        self._recording_wakes: int | None = None  #: the count when its claim was made
        self._drained_at: int | None = None  #: the count when a claim last found nothing
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        #: held through each turn and each maintenance look, so the decision to remind
        #: or disable has one owner at a time and a reminder never goes out twice
        self._turn = asyncio.Lock()
        self.disabled = False
        #: loop time of the last start, for the dispatcher's restart back-off
        self.started_at = 0.0

    # --- control -----------------------------------------------------------------------

    def start(self) -> None:
        self.started_at = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name=f"almhookd-worker-{self.webhook.id}")
        self._task.add_done_callback(self._ended)

    def restart(self) -> None:
        """Start the loop again after it died; what it held is read back from the store."""
        self._forget_claims()
        self.start()

    def _ended(self, task: asyncio.Task[None]) -> None:
        # Retrieving the exception also keeps asyncio from logging it with the frames'
        # locals ("Task exception was never retrieved").
        error = None if task.cancelled() else task.exception()
        if self._stopping or self.disabled:
            return
        if self.lost:
            if self._on_lost is not None:
                self._on_lost(self)
            return
        if self._on_died is not None:
            self._on_died(self, error)

    def _attempts_counter(self, status: int | None) -> Any:
        """The attempts counter of this webhook and status class (children cached)."""
        key = status_class(status)
        counter = self._attempt_counters.get(key)
        if counter is None:
            counter = self._attempt_counters[key] = self._metrics.attempts.labels(
                self.webhook.id, key
            )
        return counter

    def reconfigure(self, config: Config) -> None:
        """The configuration at start and after each reload: retry policy, log level."""
        self._config = config
        self._policy = RetryPolicy.from_config(config)
        self._log_successes = logs_at(config.log.level, "info")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def dead(self) -> bool:
        """Started, and its loop ended though nobody stopped or disabled it."""
        return (
            self._task is not None
            and self._task.done()
            and not self._stopping
            and not self.disabled
            and not self.lost
        )

    def wake(self) -> None:
        self._wakes += 1
        self._wake.set()

    def update(self, webhook: Webhook) -> None:
        """A changed target, auth or secret applies to the next request."""
        self.webhook = webhook
        self._wakes += 1
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Let a request in flight finish within ``grace`` seconds, then stop. Idempotent."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=grace)
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)  # its end is logged
        with contextlib.suppress(StorageError, LeaseLost):
            async with self._turn:
                await self._record()

    # --- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping and not self.disabled:
            self._wake.clear()
            try:
                delay = await self._supervised_step()
            except LeaseLost as error:
                # Whatever was sent and not recorded goes out again from the new owner,
                # under the same ids: duplicates, never a loss.
                log.warning("delivery.lease_lost", webhook_id=self.webhook.id, error=str(error))
                self._forget_claims()
                self._unrecorded.clear()
                recording, self._recording = self._recording, None
                if recording is not None:
                    recording.add_done_callback(_retrieved)  # it fails the same way
                self.lost = True
                break
            except StorageError as error:
                log.error("delivery.storage_error", webhook_id=self.webhook.id, error=error.message)
                delay = STORAGE_RETRY_SECONDS
            if self._stopping or self.disabled:
                break
            if delay is None:
                await self._wake.wait()
            elif delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
            else:
                await asyncio.sleep(0)  # let ingest and other workers run between requests

    async def _supervised_step(self) -> float | None:
        """A turn; whatever it raises but a storage error is a failed attempt."""
        try:
            return await self.step()
        except (StorageError, LeaseLost):
            raise
        except Exception as error:  # one receiver's answer, or a bug, never stops the daemon
            log.error("worker.step_failed", webhook_id=self.webhook.id, **crash_fields(error))
            return await self._step_failed(error)

    async def step(self) -> float | None:
        """Send one request if one is due. Returns seconds until the next is due
        (0: at once), or ``None`` when nothing is pending until the worker is woken."""
        async with self._turn:
            return await self._step()

    async def _step(self) -> float | None:
        webhook = self.webhook
        now = self._clock()
        due = self.schedule.next_attempt_at
        if due is not None and due > now:
            return due - now
        retained_since_ms = int((now - self._config.storage.retention) * 1000)
        if not self._claimed_loaded:
            await self._record()
            self._claimed = deque(await self._store.in_flight_batches(webhook.id))
            self._claimed_loaded = True
            self._drained_at = None
        if self._claimed and self._claimed[0].oldest_ingested_at_ms < retained_since_ms:
            await self._record()
            await self._expire()  # dissolves the batch; its retained events are repacked
            self._claimed = deque(await self._store.in_flight_batches(webhook.id))
            self._drained_at = None
        if not self._claimed:
            await self._refill()
            if not self._claimed:
                return await self._until_due_later()
        batch = self._claimed[0]
        started_ms = int(self._clock() * 1000)
        send = self._sender.send(webhook, message_id=batch.id, body=batch.body)
        outcome = await (send if self.lease is None else self.lease.guard(send))
        now = self._clock()
        self._attempts_counter(outcome.status).inc()
        attempt = Attempt(batch=batch, outcome=outcome, started_at_ms=started_ms)
        if outcome.ok:
            self._claimed.popleft()
            self._unrecorded.append(attempt)
            self.schedule = after_success(self.schedule, now=now)
            if self._recording is not None and self._recording.done():
                await self._settle()
            if self._recording is None and (
                len(self._claimed) <= self._refill_at or self._stopping
            ):
                self._start_record(claim=True)  # runs while the claimed batches go out
            self._delivered.inc(len(batch.event_seqs))
            self._metrics.delivery_latency.observe_many(
                max(0.0, now - ingested_at_ms / 1000) for ingested_at_ms in batch.ingested_at_ms
            )
            if self._log_successes:
                log.info("delivery.succeeded", **_fields(webhook, batch, outcome))
            return 0.0
        decision = after_failure(
            self.schedule, outcome, now=now, policy=self._policy, jitter=self._jitter()
        )
        self._unrecorded.append(attempt)
        self.schedule = decision.schedule
        await self._record(disable_reason=decision.disable_reason)
        log.warning(
            "delivery.failed",
            **_fields(webhook, batch, outcome),
            error=decision.schedule.last_error,
            attempt=decision.schedule.consecutive_failures,
            retry_in_s=round(decision.schedule.next_attempt_at - now, 3)
            if decision.schedule.next_attempt_at
            else None,
        )
        return await self._decided(decision.send_reminder, decision.disable_reason, now)

    async def _step_failed(self, error: Exception) -> float | None:
        """A turn raised: count it as a failed attempt, with the normal backoff.

        No attempt is logged (nothing may have been sent); the batches held are read back
        from the store at the next turn, so the one being sent goes out again, in order.
        """
        async with self._turn:
            self._forget_claims()
            now = self._clock()
            failed = Outcome(
                ok=False, error=f"internal error ({type(error).__name__}): see the daemon's log"
            )
            decision = after_failure(
                self.schedule, failed, now=now, policy=self._policy, jitter=self._jitter()
            )
            self.schedule = decision.schedule
            await self._record(disable_reason=decision.disable_reason, save_schedule=True)
            return await self._decided(decision.send_reminder, decision.disable_reason, now)

    async def maintain(self) -> None:
        """The maintenance pass's look between turns: remind or disable a failing webhook
        by the clock, whether or not anything new arrived (its worker may wait for its
        backoff, or have nothing left to send once the outage's events expired).

        A turn under way is left alone: it decides the same after its attempt.
        """
        if self._stopping or self.disabled or self._turn.locked():
            return
        async with self._turn:
            decision = review(self.schedule, now=self._clock(), policy=self._policy)
            if not decision.send_reminder and decision.disable_reason is None:
                return
            self.schedule = decision.schedule
            await self._record(disable_reason=decision.disable_reason, save_schedule=True)
            await self._decided(decision.send_reminder, decision.disable_reason, self._clock())

    async def _decided(
        self, send_reminder: bool, disable_reason: str | None, now: float
    ) -> float | None:
        """Carry out a recorded decision; the seconds until the next attempt."""
        if send_reminder:
            await self._remind()
        if disable_reason is not None:
            self._disable(disable_reason)
            return None
        next_attempt = self.schedule.next_attempt_at
        return max(0.0, next_attempt - now) if next_attempt is not None else 0.0

    def _disable(self, reason: str) -> None:
        """Stop for good (the reason is stored with the schedule); the dispatcher forgets
        this worker and counts it."""
        self.disabled = True
        self.webhook = replace(self.webhook, status="disabled", disabled_reason=reason)
        log.error("webhook.disabled", webhook_id=self.webhook.id, reason=reason)
        self._wake.set()  # an idle loop ends now
        if self._on_disabled is not None:
            self._on_disabled(self.webhook.id)

    def _forget_claims(self) -> None:
        """Drop the claimed batches held in memory: the next turn reads them back."""
        self._claimed.clear()
        self._claimed_loaded = False

    def _claim(self, now: float) -> Claim:
        """What to claim so that the worker holds its claimed batches' number again."""
        return Claim(
            now_ms=int(now * 1000),
            retained_since_ms=int((now - self._config.storage.retention) * 1000),
            max_events=self._config.delivery.max_events_per_request,
            max_batch_events=self._config.batch.max_events_per_request,
            max_bytes=MAX_REQUEST_BYTES,
            batches=self._claimed_batches - len(self._claimed),
            total_bytes=CLAIMED_BYTES - sum(len(batch.body) for batch in self._claimed),
        )

    async def _settle(self) -> None:
        """Wait for the record running in the background; take the batches it claimed.

        Should it fail, what this worker holds is read again from the store, so the
        batches it was recording are sent again (duplicates) rather than left behind.
        """
        recording, self._recording = self._recording, None
        if recording is None:
            return
        try:
            claimed = await asyncio.shield(recording)
        except StorageError:
            self._claimed.clear()
            self._claimed_loaded = False
            raise
        self._claimed.extend(claimed)
        self._drained_at = self._recording_wakes if not claimed else None

    async def _until_due_later(self) -> float | None:
        """Nothing to send now. With processes sharing the database, the seconds until
        a delivery due later by this process's clock, which a process whose clock is
        ahead wrote: the worker looks again then, delayed by the clocks' difference
        instead of stalled until the next wake. ``None``: wait for a wake."""
        if self.lease is None:
            return None  # one process, one clock: nothing it wrote is due later
        now = self._clock()
        due_ms = await self._store.next_due_ms(self.webhook.id, after_ms=int(now * 1000))
        if due_ms is None:
            return None
        self._drained_at = None  # that look claims again, though nothing woke it
        return max(due_ms / 1000 - now, 0.0)

    async def _refill(self) -> None:
        """Nothing left to send: take what the running record claimed and go on (the next
        record runs in the background), else record and claim now; unless nothing waits
        to be recorded and the last claim found nothing, with no wake since it was made."""
        await self._settle()
        if not self._claimed:
            if self._drained_at == self._wakes and not self._unrecorded:
                return
            self._start_record(claim=True)
            await self._settle()
        elif len(self._claimed) <= self._refill_at:
            self._start_record(claim=True)

    async def _record(
        self, *, disable_reason: str | None = None, save_schedule: bool = False
    ) -> None:
        """Record every acknowledged attempt before going on (failing, stopping,
        expiring); claim nothing. ``save_schedule`` stores the schedule even when no
        attempt waits to be recorded (a decision made between attempts)."""
        await self._settle()
        self._start_record(claim=False, disable_reason=disable_reason, save_schedule=save_schedule)
        await self._settle()

    def _start_record(
        self, *, claim: bool, disable_reason: str | None = None, save_schedule: bool = False
    ) -> None:
        """Hand the acknowledged attempts to the writer, and claim batches up to
        CLAIMED_BATCHES if ``claim`` (not when stopping, failing, expiring)."""
        attempts, self._unrecorded = self._unrecorded, []
        claim_next = None
        if claim and not self._stopping:
            # The clock is read with the wake count, so an event woken in after this
            # moment, even if due later than this claim's now, makes the count differ.
            claim_next = self._claim(self._clock())
            self._recording_wakes = self._wakes
        else:
            self._recording_wakes = None
        if attempts or save_schedule:
            record: Awaitable[list[RequestBatch]] = self._store.record_attempts(
                self.webhook.id,
                attempts,
                schedule=self.schedule,
                disable_reason=disable_reason,
                claim_next=claim_next,
            )
        elif claim_next is not None:
            record = self._store.claim_batches(self.webhook.id, claim_next)
        else:
            return
        self._recording = asyncio.ensure_future(record)

    async def _remind(self) -> None:
        webhook, schedule = self.webhook, self.schedule
        if schedule.failing_since is None:
            return
        self._notifier.remind(
            Reminder(
                webhook_id=webhook.id,
                webhook_name=webhook.name,
                target_url=webhook.target_url,
                contact_email=webhook.contact_email,
                failing_since=schedule.failing_since,
                last_error=schedule.last_error or "unknown",
                backlog=await self._store.backlog(webhook.id),
                next_attempt_at=schedule.next_attempt_at,
                disables_at=disables_at(schedule, self._policy) or schedule.failing_since,
            )
        )


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Read a dropped future's outcome, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


def _fields(webhook: Webhook, batch: RequestBatch, outcome: Outcome) -> dict[str, object]:
    """The fields of a delivery's log line."""
    return {
        "webhook_id": webhook.id,
        "batch_id": batch.id,
        "events": len(batch.event_seqs),
        "status": outcome.status,
        "duration_ms": outcome.duration_ms,
    }
