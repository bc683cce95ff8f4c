"""What the browser tests launch and drive: Debian's Chromium, and the daemon they get."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.support.daemon_process import DaemonProcess

#: Debian's package; Playwright's own browser download is not reachable from here.
CHROMIUM: Final = Path("/usr/bin/chromium")
INSTALL_COMMAND: Final = "apt-get install -y chromium"
#: Headless, as root, on a closed network: without the background-networking flags
#: Chromium tries to reach Google's hosts at start and its connections are refused.
#: Playwright adds ``--headless`` and ``--no-sandbox`` itself too, and gives every launch
#: a new empty ``--user-data-dir`` of its own (it refuses one passed in ``args``).
CHROMIUM_FLAGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_problem() -> str | None:
    """Why Chromium cannot be launched from :data:`CHROMIUM`, or None."""
    if not CHROMIUM.exists():
        return (
            f"the browser tests need Debian's Chromium at {CHROMIUM}, which is missing: "
            f"install it with `{INSTALL_COMMAND}` (as root; `.ci/run` does it)"
        )
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not executable: reinstall it with `{INSTALL_COMMAND} --reinstall`"
    return None


@dataclass(frozen=True)
class RunningDaemon:
    """``almhookd run`` in a child process, for a browser test."""

    url: str  # http://127.0.0.1:<port>, without a trailing slash
    admin_token: str
    process: DaemonProcess
