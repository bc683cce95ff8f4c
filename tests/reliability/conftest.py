"""The reliability suite: the soak switch and the figures each run reports.

``make test`` runs the short variants; ``make soak`` sets ``ALMHOOKD_SOAK=1`` for the
long ones. Tests hand their figures (kills survived, events checked, lost, duplicates,
faults tried) to :func:`record`; they are printed at the end of the run and written as
JSON to ``reliability-figures.json`` in pytest's temporary directory, and to
``$ALMHOOKD_RELIABILITY_REPORT`` when set, so RELIABILITY.md quotes real runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

SOAK = os.environ.get("ALMHOOKD_SOAK") == "1"

_FIGURES: dict[str, dict[str, Any]] = {}


def record(name: str, **figures: Any) -> None:
    """Keep the figures of one test for the end-of-run report."""
    _FIGURES.setdefault(name, {}).update(figures)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _FIGURES:
        return
    report = {"soak": SOAK, "figures": _FIGURES}
    text = json.dumps(report, indent=2, sort_keys=True)
    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    (Path(base) / "reliability-figures.json").write_text(text)
    target = os.environ.get("ALMHOOKD_RELIABILITY_REPORT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures" + (" (soak)" if SOAK else ""))
    for name, figures in sorted(_FIGURES.items()):
        shown = ", ".join(f"{key}={value}" for key, value in sorted(figures.items()))
        terminalreporter.write_line(f"{name}: {shown}")
