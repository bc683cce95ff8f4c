"""The exceptions almhookd raises; every one derives from :class:`AlmhookdError`.

Each class's docstring is its default message, so ``raise StorageFull()`` already says
what went wrong. Messages never carry secrets: callers pass key names and paths, never
values read from a secret.
"""

from __future__ import annotations

from dataclasses import dataclass


class AlmhookdError(Exception):
    """almhookd failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or type(self).__name__)

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(AlmhookdError):
    """The configuration is invalid."""


class StorageError(AlmhookdError):
    """The database could not be used."""


class StorageFull(StorageError):
    """The database is full: free disk space (or raise the size limit) and retry."""


class StorageClosed(StorageError):
    """The store is closed: the daemon is shutting down."""


class DatabaseInUse(StorageError):
    """The database is in use by another almhookd."""


class LeaseLost(AlmhookdError):
    """This process no longer holds the webhook's lease: another process delivers to it."""


class WebhookLimitReached(AlmhookdError):
    """As many webhooks as ``delivery.max_webhooks`` allows exist already."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} webhooks can exist (delivery.max_webhooks)")
        self.limit = limit


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """One thing wrong with an input, at a JSON path such as ``events[3].data.userId``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidInput(AlmhookdError):
    """The input is invalid."""

    def __init__(self, problems: list[Problem], message: str | None = None) -> None:
        self.problems = problems
        summary = "; ".join(str(problem) for problem in problems[:5])
        if len(problems) > 5:
            summary += f"; and {len(problems) - 5} more"
        super().__init__(message or f"invalid input: {summary}")
