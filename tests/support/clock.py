"""A clock for tests of time-driven rules: it only moves when told to."""

from __future__ import annotations


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1_764_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
