"""The database file's creation (private to its owner) and its lock: one almhookd per
database.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from almhookd.errors import (
    DatabaseInUse,
    StorageError,
)


def create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only (WAL and SHM files follow)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; ``None`` when there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def lock_path(database: Path) -> Path:
    """The file whose lock marks a database as in use: ``<database>.lock`` beside it."""
    return database.with_name(database.name + ".lock")


class DatabaseLock:
    """An exclusive ``flock`` on :func:`lock_path`, held while a store is open, so that
    two almhookd never write to one database. The kernel drops it with the process, even
    after ``kill -9``. The file stays: removing it would let a third process lock a new
    file while a second one still holds the old one. It holds the holder's PID, for the
    message of the next one and for an operator."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, database: Path) -> DatabaseLock:
        path = lock_path(database)
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise StorageError(f"{path}: cannot create the lock file: {error.strerror}") from None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Empty if the holder has not written its PID yet.
                holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
                raise DatabaseInUse(
                    f"the database {database} is in use by another almhookd"
                    f" (pid {holder if holder.isdigit() else 'unknown'})"
                ) from None
            os.fchmod(descriptor, 0o600)
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:
            os.close(descriptor)
            raise StorageError(f"{path}: cannot lock the database: {error.strerror}") from None
        except BaseException:
            os.close(descriptor)
            raise
        return cls(descriptor)

    def release(self) -> None:
        """Drop the lock (closing its only descriptor does). Safe to call more than once."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
