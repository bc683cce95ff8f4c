"""The small interfaces that let pure code and tests swap real parts for fakes."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """Current time as seconds since the Unix epoch (``time.time`` fits)."""

    def __call__(self) -> float: ...
