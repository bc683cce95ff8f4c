"""systemd's notification protocol without libsystemd: datagrams to ``$NOTIFY_SOCKET``.

A no-op when the daemon is not run by systemd (no ``NOTIFY_SOCKET``). Abstract socket
addresses (``@name``) are supported. See sd_notify(3).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Final

import structlog

log = structlog.get_logger("almhookd.sdnotify")

NOTIFY_SOCKET_ENV: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV: Final = "WATCHDOG_USEC"
WATCHDOG_PID_ENV: Final = "WATCHDOG_PID"


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get(NOTIFY_SOCKET_ENV, "")
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self._address = address
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval = watchdog_interval(environ)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines; returns whether they were sent."""
        if self._socket is None or self._address is None:
            return False
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as error:
            log.warning("sdnotify.failed", error=error.strerror or str(error))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between watchdog pings systemd expects (``WATCHDOG_USEC``), if any."""
    raw = environ.get(WATCHDOG_USEC_ENV, "")
    pid = environ.get(WATCHDOG_PID_ENV)
    if not raw.isdigit() or int(raw) == 0 or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(raw) / 1_000_000


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
