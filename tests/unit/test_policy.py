"""The failure → retry / remind / disable decision of ``almhookd.domain.policy``, on explicit
times: every call gets its ``now``, nothing sleeps or reads the wall clock."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from almhookd.config import parse_config
from almhookd.domain.policy import (
    FIRST_REMINDER_AFTER,
    Decision,
    Outcome,
    RetryPolicy,
    Schedule,
    after_failure,
    after_success,
    describe,
    disable_due,
    disables_at,
    reminder_due,
    review,
)
from tests.support.clock import FakeClock

T0 = 1_764_000_000.0  # when the webhook started failing
MINUTE, HOUR, DAY = 60.0, 3600.0, 86_400.0
DEFAULTS = RetryPolicy()
HTTP_503 = Outcome(ok=False, status=503)


def failing(
    failures: int,
    *,
    since: float = T0,
    next_attempt_at: float | None = None,
    last_success_at: float | None = None,
    last_error: str | None = None,
    last_reminder_at: float | None = None,
) -> Schedule:
    """A webhook that has failed ``failures`` times in a row since ``since``."""
    return Schedule(
        consecutive_failures=failures,
        failing_since=since if failures else None,
        next_attempt_at=next_attempt_at,
        last_success_at=last_success_at,
        last_error=last_error,
        last_reminder_at=last_reminder_at,
    )


def test_the_defaults_are_the_contract() -> None:
    assert DEFAULTS.backoff_initial == 5
    assert DEFAULTS.backoff_max == 5 * MINUTE
    assert DEFAULTS.retention == 7 * DAY
    assert DEFAULTS.reminder_interval == DAY
    assert DEFAULTS.first_reminder_after == FIRST_REMINDER_AFTER == 15 * MINUTE


@pytest.mark.parametrize(
    ("failures_before", "delay"),
    [(0, 5), (1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 300), (7, 300), (40, 300)],
)
def test_backoff_doubles_from_5s_to_5min_then_stays(failures_before: int, delay: float) -> None:
    now = T0 + 60
    decision = after_failure(failing(failures_before), HTTP_503, now=now, policy=DEFAULTS)
    assert decision.schedule.next_attempt_at == now + delay
    assert decision.schedule.consecutive_failures == failures_before + 1


@pytest.mark.parametrize(
    ("failures_before", "retry_after", "delay"),
    [
        (0, 120.0, 120),  # longer than the schedule's 5 s: honoured
        (0, 1.0, 5),  # shorter: the schedule wins
        (0, 0.0, 5),
        (0, 3600.0, 300),  # beyond backoff_max: capped, or one header stalls a webhook
        (5, 200.0, 200),  # 160 s due: the receiver's 200 s wins
        (6, 100.0, 300),
    ],
)
def test_retry_after_is_honoured_within_the_cap(
    failures_before: int, retry_after: float, delay: float
) -> None:
    outcome = Outcome(ok=False, status=429, retry_after=retry_after)
    decision = after_failure(failing(failures_before), outcome, now=T0 + 60, policy=DEFAULTS)
    assert decision.schedule.next_attempt_at == T0 + 60 + delay


def test_jitter_only_lengthens_the_delay() -> None:
    decision = after_failure(Schedule(), HTTP_503, now=T0, policy=DEFAULTS, jitter=0.5)
    assert decision.schedule.next_attempt_at is not None
    assert decision.schedule.next_attempt_at - T0 == pytest.approx(5 * 1.05)


def test_the_backoff_follows_the_configured_policy() -> None:
    policy = RetryPolicy(backoff_initial=2, backoff_max=30)
    delays = []
    schedule = Schedule()
    for attempt in range(6):
        now = T0 + attempt
        schedule = after_failure(schedule, HTTP_503, now=now, policy=policy).schedule
        assert schedule.next_attempt_at is not None
        delays.append(schedule.next_attempt_at - now)
    assert delays == [2, 4, 8, 16, 30, 30]


def test_the_first_failure_starts_the_failing_period_and_later_ones_keep_it() -> None:
    healthy = Schedule(last_success_at=T0 - HOUR)
    first = after_failure(healthy, HTTP_503, now=T0, policy=DEFAULTS).schedule
    assert first.failing and first.failing_since == T0
    assert first.consecutive_failures == 1
    assert first.last_error == "HTTP 503"
    assert first.last_success_at == T0 - HOUR  # kept for `almhookd status`
    timeout = Outcome(ok=False, error="read timeout after 5s")
    second = after_failure(first, timeout, now=T0 + 5, policy=DEFAULTS).schedule
    assert second.failing_since == T0
    assert second.consecutive_failures == 2
    assert second.last_error == "read timeout after 5s"


@pytest.mark.parametrize("failures_before", [0, 3, 200])
def test_410_gone_disables_at_once(failures_before: int) -> None:
    decision = after_failure(
        failing(failures_before), Outcome(ok=False, status=410), now=T0 + 1, policy=DEFAULTS
    )
    assert decision.disable_reason == "the receiver answered 410 Gone"
    assert decision.send_reminder is False
    assert decision.schedule.last_error == "HTTP 410"
    assert decision.schedule.consecutive_failures == failures_before + 1


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503, None])
def test_other_failures_do_not_disable_within_retention(status: int | None) -> None:
    outcome = Outcome(ok=False, status=status, error=None if status else "connection refused")
    decision = after_failure(failing(3), outcome, now=T0 + 5 * MINUTE, policy=DEFAULTS)
    assert decision.disable_reason is None


@pytest.mark.parametrize(
    ("failing_for", "disabled"),
    [
        (7 * DAY - 1, False),
        (7 * DAY, True),  # the retention is over: the oldest events are gone
        (7 * DAY + 1, True),
        (30 * DAY, True),
    ],
)
def test_disabled_after_failing_for_the_retention(failing_for: float, disabled: bool) -> None:
    schedule = failing(2000, last_reminder_at=T0 + failing_for - HOUR)
    decision = after_failure(schedule, HTTP_503, now=T0 + failing_for, policy=DEFAULTS)
    if disabled:
        assert decision.disable_reason == (
            "no successful delivery for 7 days: last error: HTTP 503"
        )
        assert decision.send_reminder is False
        # The failure is still counted: the disabled webhook shows it in its status.
        assert decision.schedule.consecutive_failures == 2001
        assert decision.schedule.last_error == "HTTP 503"
    else:
        assert decision.disable_reason is None


@pytest.mark.parametrize(
    ("retention", "wording"),
    [
        (2 * DAY, "2 days"),
        (1.5 * DAY, "1.5 days"),
        (DAY, "1 day"),
        (36 * HOUR, "1.5 days"),
        (25 * HOUR, "25 hours"),  # not "1.04167 days"
        (30 * HOUR, "30 hours"),  # not "1.25 days": one decimal at most
        (12 * HOUR, "12 hours"),
        (HOUR, "1 hour"),
        (90 * MINUTE, "1.5 hours"),
        (100 * MINUTE, "100 minutes"),  # not "1.66667 hours"
        (2 * MINUTE, "2 minutes"),
        (MINUTE, "1 minute"),
        (90.0, "1.5 minutes"),
        (61.0, "61 seconds"),
        (59.0, "59 seconds"),
        (1.0, "1 second"),
        (7 * DAY + 1, "604801 seconds"),
    ],
)
def test_the_disable_reason_names_the_retention(retention: float, wording: str) -> None:
    policy = RetryPolicy(retention=retention)
    error = Outcome(ok=False, error="TLS handshake failed")
    decision = after_failure(failing(9), error, now=T0 + retention, policy=policy)
    assert decision.disable_reason == (
        f"no successful delivery for {wording}: last error: TLS handshake failed"
    )


@pytest.mark.parametrize(
    ("schedule", "failing_for", "reason"),
    [
        # Measured from the first failure since the last success, whatever came since.
        (failing(1), 7 * DAY - 1, None),
        (failing(1, last_error="HTTP 500"), 7 * DAY, "HTTP 500"),
        (failing(2000, last_error="HTTP 500"), 8 * DAY, "HTTP 500"),
        (failing(1), 7 * DAY, ""),  # no error kept: the reason alone
        # Not failing: never disabled, however long nothing was delivered.
        (Schedule(), 30 * DAY, None),
        (Schedule(last_success_at=T0 - 30 * DAY), 30 * DAY, None),
    ],
)
def test_disable_due_by_time(schedule: Schedule, failing_for: float, reason: str | None) -> None:
    expected = (
        None
        if reason is None
        else "no successful delivery for 7 days" + (f": last error: {reason}" if reason else "")
    )
    assert disable_due(schedule, now=T0 + failing_for, policy=DEFAULTS) == expected


@pytest.mark.parametrize(
    ("failing_for", "last_reminder_after", "remind", "disable"),
    [
        (10 * MINUTE, None, False, False),
        (15 * MINUTE, None, True, False),
        (DAY, 15 * MINUTE, False, False),
        (DAY + 15 * MINUTE, 15 * MINUTE, True, False),
        (6 * DAY + 23 * HOUR, 6 * DAY, False, False),
        (7 * DAY - 1, 6 * DAY - 1, True, False),
        # The end of the retention disables; no reminder goes out with it.
        (7 * DAY, 6 * DAY, False, True),
        (7 * DAY, None, False, True),
    ],
)
def test_review_between_attempts(
    failing_for: float, last_reminder_after: float | None, remind: bool, disable: bool
) -> None:
    last_reminder_at = None if last_reminder_after is None else T0 + last_reminder_after
    schedule = failing(40, last_error="HTTP 500", last_reminder_at=last_reminder_at)
    now = T0 + failing_for
    decision = review(schedule, now=now, policy=DEFAULTS)
    assert decision.send_reminder is remind
    assert (decision.disable_reason is not None) is disable
    # Only the reminder's time changes: no attempt was made.
    expected = replace(schedule, last_reminder_at=now) if remind else schedule
    assert decision.schedule == expected


def test_review_leaves_a_healthy_webhook_alone() -> None:
    healthy = Schedule(last_success_at=T0)
    assert review(healthy, now=T0 + 30 * DAY, policy=DEFAULTS) == Decision(schedule=healthy)


def test_a_reminder_reviewed_is_not_due_again_until_the_interval() -> None:
    """One decision, recorded in ``last_reminder_at``: whoever asks next, an attempt's
    ``after_failure`` or the maintenance pass, is told no."""
    schedule = failing(5, last_error="HTTP 500")
    reviewed = review(schedule, now=T0 + HOUR, policy=DEFAULTS)
    assert reviewed.send_reminder
    again = after_failure(reviewed.schedule, HTTP_503, now=T0 + HOUR, policy=DEFAULTS)
    assert again.send_reminder is False
    assert review(again.schedule, now=T0 + HOUR + DAY - 1, policy=DEFAULTS).send_reminder is False
    assert review(again.schedule, now=T0 + HOUR + DAY, policy=DEFAULTS).send_reminder is True


def test_a_webhook_with_nothing_to_send_is_reminded_and_disabled_by_the_clock() -> None:
    """Issue #17: one failed attempt, then nothing (its events expired); reviews alone,
    every 10 minutes, remind daily and disable at 7 days."""
    schedule = after_failure(Schedule(), HTTP_503, now=T0, policy=DEFAULTS).schedule
    reminders: list[float] = []
    disabled_at = None
    for tick in range(1, 7 * 144 + 2):
        decision = review(schedule, now=T0 + tick * 10 * MINUTE, policy=DEFAULTS)
        if decision.send_reminder:
            reminders.append(tick * 10 * MINUTE)
        if decision.disable_reason is not None:
            disabled_at = tick * 10 * MINUTE
            break
        schedule = decision.schedule
    assert disabled_at == 7 * DAY
    assert reminders == [20 * MINUTE + day * DAY for day in range(7)]


def test_410_wins_over_the_end_of_retention() -> None:
    decision = after_failure(
        failing(9), Outcome(ok=False, status=410), now=T0 + 8 * DAY, policy=DEFAULTS
    )
    assert decision.disable_reason == "the receiver answered 410 Gone"


@pytest.mark.parametrize(
    ("failing_for", "last_reminder_after", "reminder"),
    [
        # The first reminder: only once the webhook has failed for 15 minutes.
        (0, None, False),
        (15 * MINUTE - 1, None, False),
        (15 * MINUTE, None, True),
        (3 * HOUR, None, True),  # late (no attempt fell on 15 min): sent at the next one
        # Then every reminder_interval (a day) after the previous reminder.
        (DAY, 15 * MINUTE, False),
        (DAY + 15 * MINUTE - 1, 15 * MINUTE, False),
        (DAY + 15 * MINUTE, 15 * MINUTE, True),
        (3 * DAY, DAY + 20 * MINUTE, True),
        (3 * DAY, 2 * DAY + 1, False),
    ],
)
def test_reminders(failing_for: float, last_reminder_after: float | None, reminder: bool) -> None:
    last_reminder_at = None if last_reminder_after is None else T0 + last_reminder_after
    schedule = failing(5, last_reminder_at=last_reminder_at)
    now = T0 + failing_for
    decision = after_failure(schedule, HTTP_503, now=now, policy=DEFAULTS)
    assert decision.send_reminder is reminder
    assert decision.disable_reason is None
    assert decision.schedule.last_reminder_at == (now if reminder else last_reminder_at)


def test_a_webhook_failing_for_ever_is_reminded_daily_and_disabled_after_7_days() -> None:
    """Every attempt fails, each made when the schedule says: the whole timeline."""
    clock = FakeClock(T0)
    schedule = Schedule()
    reminders: list[float] = []
    disabled_at = None
    for _attempt in range(5000):  # 7 days at one attempt per 5 minutes is about 2020
        decision = after_failure(schedule, HTTP_503, now=clock.now, policy=DEFAULTS)
        if decision.send_reminder:
            reminders.append(clock.now - T0)
        if decision.disable_reason is not None:
            disabled_at = clock.now - T0
            break
        schedule = decision.schedule
        assert schedule.next_attempt_at is not None
        clock.advance(schedule.next_attempt_at - clock.now)
    assert disabled_at is not None and 7 * DAY <= disabled_at < 7 * DAY + 5 * MINUTE
    # The first reminder at the first attempt from 15 minutes on (5+10+...+160 s, then
    # every 300 s: 915 s), then one a day.
    assert reminders[0] == 915
    assert [b - a for a, b in itertools.pairwise(reminders)] == [DAY] * 6
    assert disables_at(schedule, DEFAULTS) == T0 + 7 * DAY


def test_success_forgets_the_failure() -> None:
    schedule = failing(
        12,
        next_attempt_at=T0 + 300,
        last_error="HTTP 503",
        last_reminder_at=T0 + 15 * MINUTE,
        last_success_at=T0 - DAY,
    )
    assert after_success(schedule, now=T0 + HOUR) == Schedule(last_success_at=T0 + HOUR)
    recovered = after_success(schedule, now=T0 + HOUR)
    assert not recovered.failing
    # The next outage starts from scratch: 5 s, and a fresh 15-minute reminder delay.
    again = after_failure(recovered, HTTP_503, now=T0 + 2 * HOUR, policy=DEFAULTS)
    assert again.schedule.next_attempt_at == T0 + 2 * HOUR + 5
    assert again.schedule.failing_since == T0 + 2 * HOUR
    assert again.send_reminder is False


@pytest.mark.parametrize(
    ("schedule", "policy", "expected"),
    [
        (Schedule(), DEFAULTS, None),
        (Schedule(last_success_at=T0), DEFAULTS, None),
        (failing(1), DEFAULTS, T0 + 7 * DAY),
        (failing(300, since=T0 - DAY), DEFAULTS, T0 + 6 * DAY),
        (failing(1), RetryPolicy(retention=HOUR), T0 + HOUR),
    ],
)
def test_disables_at(schedule: Schedule, policy: RetryPolicy, expected: float | None) -> None:
    assert disables_at(schedule, policy) == expected


def test_reminder_due_needs_a_failing_webhook() -> None:
    healthy = Schedule(last_success_at=T0, last_reminder_at=T0 - 10 * DAY)
    assert reminder_due(healthy, now=T0 + 10 * DAY, policy=DEFAULTS) is False
    assert reminder_due(failing(1), now=T0 + 15 * MINUTE, policy=DEFAULTS) is True


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        (Outcome(ok=False, status=503), "HTTP 503"),
        (Outcome(ok=False, status=302), "HTTP 302"),
        (Outcome(ok=False, error="connection refused"), "connection refused"),
        # A transport error says more than the status it may have got with it.
        (Outcome(ok=False, status=500, error="body too large"), "body too large"),
        (Outcome(ok=False, status=500, error=""), "HTTP 500"),
        (Outcome(ok=False), "no answer"),
    ],
)
def test_describe(outcome: Outcome, text: str) -> None:
    assert describe(outcome) == text


def test_the_policy_comes_from_the_configuration() -> None:
    config = parse_config(
        '[delivery]\nbackoff_initial = "2s"\nbackoff_max = "1m"\n'
        '[storage]\nretention = "3d"\n[notify]\nreminder_interval = "6h"\n',
        env={},
    )
    assert RetryPolicy.from_config(config) == RetryPolicy(
        backoff_initial=2,
        backoff_max=60,
        retention=3 * DAY,
        reminder_interval=6 * HOUR,
        first_reminder_after=15 * MINUTE,
    )


def test_the_default_configuration_gives_the_default_policy() -> None:
    assert RetryPolicy.from_config(parse_config("", env={})) == DEFAULTS


def test_a_reminder_interval_shorter_than_15_minutes_also_brings_the_first_forward() -> None:
    config = parse_config('[notify]\nreminder_interval = "5m"\n', env={})
    policy = RetryPolicy.from_config(config)
    assert policy.first_reminder_after == policy.reminder_interval == 5 * MINUTE
    decision = after_failure(failing(3), HTTP_503, now=T0 + 5 * MINUTE, policy=policy)
    assert decision.send_reminder is True
