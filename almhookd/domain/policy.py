"""What happens to a subscriber after each attempt. Pure: the caller passes ``now``.

The schedule is per webhook, not per event: one request is in flight per webhook, so
the webhook as a whole is either catching up or backing off.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from almhookd.config import Config
from almhookd.domain.backoff import next_delay

#: A short outage (a deploy, a restart) e-mails nobody: the first reminder goes out once
#: a webhook has been failing this long, then every ``notify.reminder_interval``.
FIRST_REMINDER_AFTER: Final = 15 * 60.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    backoff_initial: float = 5.0
    backoff_max: float = 300.0
    retention: float = 7 * 86_400.0
    reminder_interval: float = 86_400.0
    first_reminder_after: float = FIRST_REMINDER_AFTER

    @classmethod
    def from_config(cls, config: Config) -> RetryPolicy:
        return cls(
            backoff_initial=config.delivery.backoff_initial,
            backoff_max=config.delivery.backoff_max,
            retention=config.storage.retention,
            reminder_interval=config.notify.reminder_interval,
            first_reminder_after=min(FIRST_REMINDER_AFTER, config.notify.reminder_interval),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """A webhook's delivery health, as stored on its row. Times are epoch seconds."""

    consecutive_failures: int = 0
    failing_since: float | None = None
    next_attempt_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_reminder_at: float | None = None

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """The result of one HTTP attempt."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    duration_ms: int = 0
    response_body: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    schedule: Schedule
    disable_reason: str | None = None
    send_reminder: bool = False


def after_success(schedule: Schedule, *, now: float) -> Schedule:
    """A 2xx: the backlog drains at full speed again; nothing of the failure is kept."""
    return Schedule(last_success_at=now)


def after_failure(
    schedule: Schedule, outcome: Outcome, *, now: float, policy: RetryPolicy, jitter: float = 0.0
) -> Decision:
    """Back off, and decide whether to e-mail a reminder or disable the webhook."""
    failures = schedule.consecutive_failures + 1
    failing_since = schedule.failing_since if schedule.failing_since is not None else now
    delay = next_delay(
        failures,
        initial=policy.backoff_initial,
        maximum=policy.backoff_max,
        jitter=jitter,
        retry_after=outcome.retry_after,
    )
    updated = replace(
        schedule,
        consecutive_failures=failures,
        failing_since=failing_since,
        next_attempt_at=now + delay,
        last_error=describe(outcome),
    )
    if outcome.status == 410:
        return Decision(schedule=updated, disable_reason="the receiver answered 410 Gone")
    return review(updated, now=now, policy=policy)


def review(schedule: Schedule, *, now: float, policy: RetryPolicy) -> Decision:
    """What a failing webhook is due at ``now``, whether or not an attempt was just made:
    disabled once it has failed for the whole retention, else a reminder when one is due
    (``last_reminder_at`` set to ``now``, so whoever asks next is told no).

    After each failed attempt, and from the periodic maintenance pass while the worker
    waits for its backoff or has nothing left to send (its events expired): the outage
    is measured by time, not by traffic.
    """
    reason = disable_due(schedule, now=now, policy=policy)
    if reason is not None:
        return Decision(schedule=schedule, disable_reason=reason)
    if reminder_due(schedule, now=now, policy=policy):
        return Decision(schedule=replace(schedule, last_reminder_at=now), send_reminder=True)
    return Decision(schedule=schedule)


def disable_due(schedule: Schedule, *, now: float, policy: RetryPolicy) -> str | None:
    """Why the webhook is to be disabled at ``now``: failing since a whole retention ago
    (every event of the outage's start is gone by then), else ``None``."""
    if schedule.failing_since is None or now - schedule.failing_since < policy.retention:
        return None
    reason = f"no successful delivery for {_period(policy.retention)}"
    if schedule.last_error:
        reason += f": last error: {schedule.last_error}"
    return reason


def reminder_due(schedule: Schedule, *, now: float, policy: RetryPolicy) -> bool:
    if schedule.failing_since is None:
        return False
    if schedule.last_reminder_at is None:
        return now - schedule.failing_since >= policy.first_reminder_after
    return now - schedule.last_reminder_at >= policy.reminder_interval


def disables_at(schedule: Schedule, policy: RetryPolicy) -> float | None:
    """When the webhook will be disabled if it keeps failing."""
    if schedule.failing_since is None:
        return None
    return schedule.failing_since + policy.retention


def describe(outcome: Outcome) -> str:
    if outcome.error:
        return outcome.error
    if outcome.status is not None:
        return f"HTTP {outcome.status}"
    return "no answer"


#: The units a period is named in, largest first.
_UNITS: Final = ((86_400.0, "day"), (3600.0, "hour"), (60.0, "minute"))


def _period(seconds: float) -> str:
    """A period as a person writes it: "7 days", "1 day", "1.5 days", "12 hours",
    "90 minutes", "1 minute", "45 seconds". The largest unit it is at least one of,
    unless that needs more than one decimal: 100 minutes are not "1.66667 hours"."""
    for size, unit in _UNITS:
        count = seconds / size
        if count >= 1 and round(count, 1) == count:
            return _count(count, unit)
    return _count(seconds, "second")


def _count(count: float, unit: str) -> str:
    return f"1 {unit}" if count == 1 else f"{count:g} {unit}s"
