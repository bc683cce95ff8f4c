"""The Makefile's two commands for a fresh machine: what each would install."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _dry_run(target: str, tmp_path: Path) -> str:
    """``make -n TARGET`` in a copy of the Makefile and pyproject, with no venv yet: the
    commands a fresh clone would run, none of them run."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    make = shutil.which("make")
    assert make is not None, "make is needed (Debian's make)"
    result = subprocess.run(
        [make, "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout


def test_make_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    commands = _dry_run("run", tmp_path)
    assert "pip install --quiet -e .\n" in commands
    assert "[dev]" not in commands
    # The development configuration, made from its template once and then left alone.
    assert "cp config.dev.toml var/almhookd.toml" in commands
    assert "almhookd run --config var/almhookd.toml" in commands


def test_make_test_installs_the_dev_tools(tmp_path: Path) -> None:
    commands = _dry_run("test", tmp_path)
    assert "pip install --quiet -e '.[dev]'" in commands
    assert "pytest" in commands and "lint-imports" in commands
