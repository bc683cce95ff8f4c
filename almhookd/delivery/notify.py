"""Reminder e-mails for failing webhooks.

``reminder_message`` is pure; :class:`Notifier` sends through SMTP on a worker thread
(stdlib ``smtplib``, STARTTLS and login as configured) and never lets a failing mail
server block or break delivery: every failure is logged, nothing is raised.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Final

import structlog

from almhookd.config import NotifyConfig
from almhookd.metrics import Metrics

log = structlog.get_logger("almhookd.notify")

SMTP_TIMEOUT: Final = 30.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Reminder:
    webhook_id: str
    webhook_name: str
    target_url: str
    contact_email: str
    failing_since: float
    last_error: str
    backlog: int
    next_attempt_at: float | None
    disables_at: float


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def recipients(reminder: Reminder, config: NotifyConfig) -> list[str]:
    found = [reminder.contact_email, config.admin_email]
    return list(dict.fromkeys(address for address in found if address))


def reminder_message(reminder: Reminder, config: NotifyConfig) -> EmailMessage:
    message = EmailMessage()
    message["From"] = config.from_address
    message["To"] = ", ".join(recipients(reminder, config))
    message["Subject"] = f"[almhookd] webhook {reminder.webhook_name!r} is failing"
    message.set_content(
        f"Deliveries to the webhook {reminder.webhook_name!r} ({reminder.webhook_id}) are "
        "failing.\n\n"
        f"Target:          {reminder.target_url}\n"
        f"Failing since:   {_when(reminder.failing_since)}\n"
        f"Last error:      {reminder.last_error}\n"
        f"Backlog:         {reminder.backlog} events waiting\n"
        f"Next retry:      {_when(reminder.next_attempt_at)}\n"
        f"Disabled at:     {_when(reminder.disables_at)} if no delivery succeeds by then\n\n"
        "Events are kept for the retention period; once the receiver answers 2xx again, "
        "the backlog is delivered in order. Events older than the retention are lost.\n"
    )
    return message


class Notifier:
    """Sends reminders in the background; ``close()`` waits briefly for those under way."""

    def __init__(self, config: NotifyConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self._metrics = metrics or Metrics()
        self._tasks: set[asyncio.Task[None]] = set()
        #: reminders handed over (sent, or logged when no SMTP host is set)
        self.sent = 0
        self.failed = 0

    def remind(self, reminder: Reminder) -> None:
        task = asyncio.create_task(self._deliver(reminder), name="almhookd-reminder")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, reminder: Reminder) -> None:
        to = recipients(reminder, self.config)
        fields = {
            "webhook_id": reminder.webhook_id,
            "recipients": to,
            "last_error": reminder.last_error,
            "backlog": reminder.backlog,
        }
        if not self.config.smtp_host or not to:
            self._metrics.reminders.labels("logged").inc()
            log.warning(
                "notify.reminder_logged", **fields, reason="no smtp_host" if to else "no recipient"
            )
            self.sent += 1
            return
        message = reminder_message(reminder, self.config)
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as error:
            self.failed += 1
            self._metrics.reminders.labels("failed").inc()
            log.error("notify.reminder_failed", **fields, error=_describe(error))
            return
        self.sent += 1
        self._metrics.reminders.labels("sent").inc()
        log.info("notify.reminder_sent", **fields)

    def _send(self, message: EmailMessage) -> None:
        config = self.config
        with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
            if config.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.smtp_username and config.smtp_password is not None:
                smtp.login(config.smtp_username, config.smtp_password.reveal())
            smtp.send_message(message)

    async def close(self, grace: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()


def _describe(error: BaseException) -> str:
    # SMTP auth errors echo the server's reply, never the password; keep it short.
    return f"{type(error).__name__}: {str(error)[:200]}"
