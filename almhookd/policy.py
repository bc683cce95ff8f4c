"""What happens to a subscriber after each attempt. Pure: the caller passes ``now``.

The schedule is per webhook, not per event: one request is in flight per webhook, so
the webhook as a whole is either catching up or backing off.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from almhookd.backoff import next_delay
from almhookd.config import Config

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
    if now - failing_since >= policy.retention:
        return Decision(
            schedule=updated,
            disable_reason=(
                f"no successful delivery for {_days(policy.retention)}: "
                f"last error: {updated.last_error}"
            ),
        )
    if reminder_due(updated, now=now, policy=policy):
        return Decision(schedule=replace(updated, last_reminder_at=now), send_reminder=True)
    return Decision(schedule=updated)


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


def _days(seconds: float) -> str:
    days, hours = seconds / 86_400, seconds / 3600
    if days >= 1:
        return "1 day" if days == 1 else f"{days:g} days"
    return "1 hour" if hours == 1 else f"{hours:g} hours"
