"""Fixtures of the integration tests beyond the shared ones of ``tests/conftest.py``."""

from tests.support.console import console, slept

__all__ = ["console", "slept"]  # the console app on a real port, its recorded sign-in delays
