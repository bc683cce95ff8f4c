"""The real daemon as a subprocess, for lifecycle, signal and crash tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.net import free_port
from tests.support.tokens import ADMIN_TOKEN, INGEST_TOKEN


def write_config(
    directory: Path, *, port: int | None = None, tokens: bool = True, extra: str = ""
) -> Path:
    port = port or free_port()
    token_lines = (
        f'admin_token = "{ADMIN_TOKEN}"\ningest_token = "{INGEST_TOKEN}"\n' if tokens else ""
    )
    path = directory / "almhookd.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n{token_lines}'
        f'[storage]\npath = "{directory / "data" / "almhookd.db"}"\n'
        f'[account]\nid = 1010\n[log]\nformat = "json"\nlevel = "info"\n{extra}'
    )
    return path


def almhookd(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command line to completion."""
    return subprocess.run(
        [sys.executable, "-m", "almhookd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        input=stdin.decode() if stdin is not None else None,
        check=False,
    )


class DaemonProcess:
    """``almhookd run`` in a child process, its output captured to a file."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        text = config_path.read_text()
        self.port = int(text.split('listen = "127.0.0.1:', 1)[1].split('"', 1)[0])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = config_path.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None
        #: a command the daemon runs under, e.g. ``setpriv`` dropping capabilities
        self.wrapper: list[str] = []

    def start(self, *, wait: bool = True, env: dict[str, str] | None = None) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *self.wrapper,
                *(sys.executable, "-m", "almhookd", "run", "--config", str(self.config_path)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.process.returncode}:\n" + self.log()
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError("daemon did not become ready:\n" + self.log())

    async def start_async(self, timeout: float = 30.0) -> DaemonProcess:
        """Start and wait for readiness without blocking the test's event loop (which
        may be serving the receivers the daemon delivers to)."""
        import asyncio

        import aiohttp

        self.start(wait=False)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"daemon exited with {self.process.returncode}:\n" + self.log()
                    )
                try:
                    async with session.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("daemon did not become ready:\n" + self.log())

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        return self.wait()

    def memory_kib(self) -> dict[str, int]:
        """The daemon's resident memory now (``VmRSS``) and at its peak (``VmHWM``), KiB."""
        assert self.process is not None
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields

    async def stop_async(self) -> int:
        """:meth:`stop` without blocking the test's event loop, which may serve the
        receivers whose requests the daemon lets finish before it exits."""
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log().splitlines():
            try:  # a journald stream's lines start with their priority, as in <6>{...}
                events.append(json.loads(line[3:] if line[:1] == "<" else line))
            except ValueError:
                continue
        return events

    def request(
        self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
