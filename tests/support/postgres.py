"""A throwaway PostgreSQL cluster for the tests: ``initdb`` and ``pg_ctl`` from the
machine's PostgreSQL server package, in a temporary folder, on a free loopback port.

When the tests run as root, the cluster runs as the ``postgres`` user (the server
refuses root). The session starts one cluster on first use and stops it at the end;
each test that needs a database gets a new, empty one (:meth:`Cluster.new_database`).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.support.net import free_port

#: The superuser the tests connect as (trust authentication, loopback only).
USER: Final = "almhookd_test"

#: The longest a start or a stop of the server may take before the test fails.
SERVER_BOUND_SECONDS: Final = 60


class PostgresMissing(Exception):
    """PostgreSQL's server programs are not installed: `.ci/run` installs `postgresql`."""


def server_programs() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: ``$ALMHOOKD_PG_BIN``, else the newest of
    Debian's ``/usr/lib/postgresql/*/bin``."""
    configured = os.environ.get("ALMHOOKD_PG_BIN")
    candidates = [configured] if configured else sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").is_file():
            return Path(folder)
    raise PostgresMissing(
        "no PostgreSQL server programs (initdb) in /usr/lib/postgresql/*/bin or "
        "$ALMHOOKD_PG_BIN: install Debian's postgresql package (.ci/run does)"
    )


@dataclass
class Cluster:
    folder: Path
    port: int
    programs: Path
    run_as: str | None  #: the user the server runs as, when not this process's
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql (the server's own client), returning its output."""
        completed = subprocess.run(
            [
                str(self.programs / "psql"),
                "--no-psqlrc",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=SERVER_BOUND_SECONDS,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {completed.stderr.strip()}")
        return completed.stdout

    def new_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its DSN."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def _ctl(self, *arguments: str) -> None:
        _run(
            [str(self.programs / "pg_ctl"), "-D", str(self.folder / "data"), *arguments],
            self.run_as,
        )


def _run(command: list[str], run_as: str | None) -> None:
    if run_as is not None:
        command = ["runuser", "-u", run_as, "--", *command]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=SERVER_BOUND_SECONDS, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({completed.returncode}): "
            f"{(completed.stderr or completed.stdout).strip()[-2000:]}"
        )


def start_cluster() -> Cluster:
    """initdb a new cluster in a temporary folder and start it on a free loopback port."""
    programs = server_programs()
    run_as = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="almhookd-pg-"))
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    _run(
        [
            str(programs / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        run_as,
    )
    port = free_port()
    options = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=300"
        " -c shared_buffers=64MB"
    )
    cluster = Cluster(folder=folder, port=port, programs=programs, run_as=run_as)
    _run(
        [
            str(programs / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(SERVER_BOUND_SECONDS),
            "start",
        ],
        run_as,
    )
    return cluster


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(cluster.folder, ignore_errors=True)
