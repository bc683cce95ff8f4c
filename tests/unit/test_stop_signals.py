"""What a stop signal means to ``almhookd run``: a table on a fake clock."""

from __future__ import annotations

import pytest

from almhookd.service.daemon import SAME_INTERRUPT_SECONDS, StopSignals
from tests.support.clock import FakeClock


@pytest.mark.parametrize(
    ("signals", "verdicts"),
    [
        pytest.param([("SIGTERM", 0.0)], ["stop"], id="the first stops"),
        pytest.param(
            [("SIGTERM", 0.0), ("SIGTERM", 0.1)], ["stop", "force"], id="a second SIGTERM forces"
        ),
        pytest.param(
            [("SIGINT", 0.0), ("SIGINT", 0.0)], ["stop", "ignore"], id="Ctrl-C delivered twice"
        ),
        pytest.param(
            [("SIGINT", 0.0), ("SIGINT", SAME_INTERRUPT_SECONDS - 0.01)],
            ["stop", "ignore"],
            id="the same Ctrl-C, just inside the window",
        ),
        pytest.param(
            [("SIGINT", 0.0), ("SIGINT", SAME_INTERRUPT_SECONDS)],
            ["stop", "force"],
            id="a second Ctrl-C, once the window is over",
        ),
        pytest.param(
            [("SIGINT", 0.0), ("SIGTERM", 0.1)], ["stop", "force"], id="SIGTERM after Ctrl-C"
        ),
        pytest.param(
            [("SIGTERM", 0.0), ("SIGINT", 0.1)], ["stop", "force"], id="Ctrl-C after SIGTERM"
        ),
        pytest.param(
            [("SIGINT", 0.0), ("SIGINT", 0.5), ("SIGINT", 5.0)],
            ["stop", "ignore", "force"],
            id="ignored, then forced",
        ),
    ],
)
def test_stop_signals(signals: list[tuple[str, float]], verdicts: list[str]) -> None:
    clock = FakeClock(0.0)
    decide = StopSignals(clock=clock)
    seen = []
    for name, at in signals:
        clock.now = at
        seen.append(decide.received(name))
    assert seen == verdicts
