"""The README's Quick start and Admin walkthrough, run as a new user pastes them.

The blocks marked ``<!-- readme-block -->`` are taken from README.md itself (no copy
of them lives here) and run in order in one bash, from the root of a clone, while the
daemon runs the way ``make run`` starts it: ``make run`` itself, in a copy of the
clone's Makefile with the clone's venv, so the development configuration is made on
first run exactly as a new user gets it. The walkthrough starts its own receiver
(``almhookd listen --background``); the test reads that receiver's output and waits
for the emitted event to arrive with its signature verified. Then Ctrl-C (SIGINT to
``make``'s process group, as a terminal sends it) must end ``make run`` with exit 0.

Ports are the README's own: the daemon on 8787 (the default) and the receiver on 9000.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- readme-block -->"
#: The sections a new user pastes from: every shell block in them must be marked.
PASTED_SECTIONS = ("## Quick start", "## Admin walkthrough")
DAEMON_PORT = 8787
RECEIVER_PORT = 9000
MAKE = shutil.which("make") or "make"
#: A request line of ``almhookd listen``: "16:28:24 POST /hook  webhook-id msg_…  …".
RECEIVER_REQUEST = re.compile(r"^\d\d:\d\d:\d\d POST /hook  webhook-id ")
BASH = shutil.which("bash") or "bash"


def readme_blocks(text: str) -> list[str]:
    """The shell blocks that follow a ``readme-block`` marker, in order."""
    return re.findall(re.escape(MARKER) + r"\n```sh\n(.*?)```", text, flags=re.DOTALL)


def section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    following = text.find("\n## ", start + len(heading))
    return text[start : following if following != -1 else len(text)]


class Output:
    """A child's output lines, read by a thread as they come (so the child never blocks
    on a full pipe), waited on with a deadline: the wait is on the arrival of lines."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        self.ended = False
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with self._arrived:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._arrived.notify_all()
        with self._arrived:
            self.ended = True
            self._arrived.notify_all()

    def wait_for(self, wanted: Callable[[str], bool], *, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = next((line for line in self.lines if wanted(line)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f"{what}: not seen in {timeout:g} s; output:\n" + self.text()
                assert not self.ended, f"{what}: the output ended first; output:\n" + self.text()
                self._arrived.wait(left)

    def text(self) -> str:
        return "\n".join(self.lines)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill what is left of a process group, the leader gone or not (the README's
    background receiver outlives its shell)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def clean_environment() -> dict[str, str]:
    """A new user's shell: nothing of almhookd set, the venv not on PATH."""
    path = os.pathsep.join(
        part
        for part in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if not part.startswith(str(REPO / ".venv"))
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ALMHOOKD_") and key != "VIRTUAL_ENV"
    }
    return {**env, "PATH": path}


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """What ``make run`` needs of a clone, with the clone's venv (installed already)."""
    root = tmp_path / "clone"
    root.mkdir()
    for name in ("Makefile", "pyproject.toml", "config.dev.toml"):
        shutil.copy2(REPO / name, root / name)  # copy2: make compares modification times
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


@pytest.fixture
def make_run(clone: Path) -> Iterator[tuple[subprocess.Popen[bytes], Output]]:
    for port, whose in ((DAEMON_PORT, "the daemon"), (RECEIVER_PORT, "the README's receiver")):
        assert port_is_free(port), f"port {port} ({whose}) is taken: stop what runs there"
    planned = subprocess.run(
        [MAKE, "-n", "run"], cwd=clone, capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert "pip install" not in planned, "the venv is not up to date: run make test first"
    assert "cp config.dev.toml var/almhookd.toml" in planned, planned
    process = subprocess.Popen(
        [MAKE, "run"],
        cwd=clone,
        env=clean_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as in a terminal of its own
    )
    output = Output(process)
    try:
        output.wait_for(
            lambda line: '"daemon.started"' in line, timeout=60, what="make run's daemon.started"
        )
        yield process, output
    finally:
        kill_group(process)


def test_the_readme_blocks_run_as_pasted(
    clone: Path, make_run: tuple[subprocess.Popen[bytes], Output]
) -> None:
    text = (REPO / "README.md").read_text()
    blocks = readme_blocks(text)
    for heading in PASTED_SECTIONS:
        pasted = section(text, heading)
        assert pasted.count("```sh") == pasted.count(MARKER) > 0, (
            f"{heading}: every shell block a user pastes is marked {MARKER} and run here"
        )
    assert len(blocks) >= 4
    assert (clone / "var" / "almhookd.toml").read_text() == (REPO / "config.dev.toml").read_text()

    # One bash, as one terminal; -e so that a failing command fails the test. Each block
    # is announced on the output with the time, for the figures of the closing notes.
    script = ["set -eu -o pipefail"]
    for number, block in enumerate(blocks, 1):
        script += [f"echo @@block {number} $(date +%s.%N)", block]
    script.append("echo @@done $(date +%s.%N)")
    shell = subprocess.Popen(
        [BASH, "-c", "\n".join(script)],
        cwd=clone,
        env=clean_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the background receiver stays in this group
    )
    output = Output(shell)
    try:
        output.wait_for(lambda line: line.startswith("@@done"), timeout=120, what="the blocks")
        assert shell.wait(timeout=30) == 0, output.text()
        # The receiver started by the walkthrough keeps printing to the same output.
        # The receiver's lines and the commands' output share one pipe and may
        # interleave: the event's line is found by its id, its request's verdict on the
        # receiver's last request line before it.
        emitted = re.findall(r'"eventIds": \["([0-9a-f-]{36})"\]', output.text())
        assert emitted, output.text()
        event = output.wait_for(
            lambda line: emitted[-1] in line and "COURSE_ENROLLMENT" in line,
            timeout=30,
            what="the emitted event at the receiver",
        )
        before = output.lines[: output.lines.index(event)]
        request = next(line for line in reversed(before) if RECEIVER_REQUEST.match(line))
        assert "signature ok" in request and "[test delivery]" not in request, output.text()
        assert any("signature ok" in line and "[test delivery]" in line for line in output.lines)
        assert "BAD" not in output.text() and "Traceback" not in output.text(), output.text()
        report_timings(output.lines)
    finally:
        kill_group(shell)

    # Ctrl-C in make run's terminal: the signal reaches make and the daemon together. The
    # daemon stops cleanly and exits 0, so make reports no error ("make: *** … Error 1"
    # was the complaint, with make's exit 2); GNU make then ends itself by the same
    # signal once its recipe has ended, as it does on SIGINT (the shell's $? is 130).
    process, daemon_output = make_run
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) in (0, -signal.SIGINT), daemon_output.text()
    daemon_output.wait_for(lambda line: '"daemon.stopped"' in line, timeout=5, what="stopped")
    assert "make: ***" not in daemon_output.text(), daemon_output.text()
    assert "forced_exit" not in daemon_output.text(), daemon_output.text()


def report_timings(lines: list[str]) -> None:
    """Each block's wall time, printed (``pytest -s``) and, when
    ``ALMHOOKD_README_TIMINGS`` names a file, written there as JSON."""
    marks = [line.split() for line in lines if line.startswith("@@")]
    timings = {
        f"block {mark[1]}": round(float(following[-1]) - float(mark[-1]), 3)
        for mark, following in itertools.pairwise(marks)
        if mark[0] == "@@block"
    }
    print("README blocks:", json.dumps(timings))
    if target := os.environ.get("ALMHOOKD_README_TIMINGS"):
        Path(target).write_text(json.dumps(timings, indent=2) + "\n")


def test_readme_blocks_are_found_in_order() -> None:
    text = (
        f"{MARKER}\n```sh\necho one\n```\n\n```sh\nnot marked\n```\n"
        f"{MARKER}\n```sh\necho two\n```\n"
    )
    assert readme_blocks(text) == ["echo one\n", "echo two\n"]
    assert shlex.split(readme_blocks(text)[1]) == ["echo", "two"]
