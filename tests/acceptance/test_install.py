"""`make install` into a staged tree (DESTDIR) with a PREFIX of its own: the tree is usable
once copied to its place, the interpreter is one the unit can reach, an upgrade keeps the
configuration and credentials, and an interpreter under /root or /home is refused."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, here and on CI
MAKE = shutil.which("make") or "make"
SH = shutil.which("sh") or "/bin/sh"


def _make(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # A `make test` above this one passes its MAKEFLAGS down; this make stands alone.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    # Under a root's strict umask, as INSTALL.md's own credential steps leave a shell:
    # the venv must still be readable by the service's dynamic user.
    return subprocess.run(
        [SH, "-c", 'umask 077 && exec "$@"', "sh", MAKE, "--no-print-directory", *arguments],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@dataclass(frozen=True)
class Staged:
    destdir: Path
    prefix: Path  # where the tree goes once copied "to /"

    @property
    def venv(self) -> Path:
        return self.destdir / self.prefix.relative_to("/")

    @property
    def etc(self) -> Path:
        return self.destdir / "etc" / "almhookd"

    @property
    def unit(self) -> Path:
        return self.destdir / "etc" / "systemd" / "system" / "almhookd.service"

    def install(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return _make(
            "install",
            f"DESTDIR={self.destdir}",
            f"PREFIX={self.prefix}",
            f"PYTHON={SYSTEM_PYTHON}",
            *extra,
        )


def _build_artefacts() -> dict[str, int | None]:
    """What `pip install .` would leave in the clone, with its modification time."""
    names = ["build", "dist", *(p.name for p in REPO.glob("*.egg-info"))]
    return {n: (REPO / n).stat().st_mtime_ns if (REPO / n).exists() else None for n in names}


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    base = tmp_path_factory.mktemp("install")
    # Not the default PREFIX; under the test's own directory, so that the staged tree can
    # really be copied to it and run from there.
    made = Staged(destdir=base / "stage", prefix=base / "live" / "srv" / "hooks")
    before = _build_artefacts()
    started = time.monotonic()
    result = made.install()
    print(f"\nmake install DESTDIR=… PREFIX=…: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _build_artefacts() == before, "make install built in the clone"
    return made


def _files(root: Path) -> Iterator[Path]:
    for directory, _, names in os.walk(root):
        for name in names:
            yield Path(directory) / name


def test_no_file_of_the_staged_tree_names_destdir(staged: Staged) -> None:
    needles = [str(staged.destdir).encode(), f"{staged.prefix}.new".encode()]
    leaks, symlinks, pycs = [], 0, 0
    for path in _files(staged.destdir):
        if path.is_symlink():
            symlinks += 1
            content = os.readlink(path).encode()
        else:
            content = path.read_bytes()
            pycs += path.suffix == ".pyc"
        leaks += [f"{path}: {n.decode()}" for n in needles if n in content]
    assert not leaks, "\n".join(leaks[:20])
    assert symlinks >= 3  # bin/python*, which were looked at too
    assert pycs > 500  # compiled, and looked at


def test_scripts_start_with_the_prefix_interpreter(staged: Staged) -> None:
    shebangs = {}
    for script in (staged.venv / "bin").iterdir():
        if not script.is_symlink() and script.read_bytes().startswith(b"#!"):
            shebangs[script.name] = script.read_text().splitlines()[0]
    assert {"almhookd", "pip"} <= shebangs.keys()
    wrong = {n: s for n, s in shebangs.items() if not s.startswith(f"#!{staged.prefix}/bin/python")}
    assert not wrong
    assert shebangs["almhookd"] == f"#!{staged.prefix}/bin/python"


def test_the_venv_names_its_prefix_and_a_system_interpreter(staged: Staged) -> None:
    config = (staged.venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in config
    assert f"-m venv {staged.prefix}\n" in config
    for shell in ("activate", "activate.csh", "activate.fish"):  # Activate.ps1 names none
        assert str(staged.prefix) in (staged.venv / "bin" / shell).read_text(), shell
    interpreter = os.path.realpath(staged.venv / "bin" / "python")
    assert interpreter == os.path.realpath(SYSTEM_PYTHON)
    assert not interpreter.startswith(("/root/", "/home/"))


def test_the_unit_starts_almhookd_from_the_prefix(staged: Staged) -> None:
    unit = staged.unit.read_text()
    assert (
        f"ExecStart={staged.prefix}/bin/almhookd run --config /etc/almhookd/config.toml\n" in unit
    )
    assert f"Documentation=file://{staged.prefix}/share/doc/INSTALL.md\n" in unit
    assert "/opt/almhookd" not in unit
    assert stat.S_IMODE(staged.unit.stat().st_mode) == 0o644
    assert (staged.venv / "share" / "doc" / "INSTALL.md").is_file()


def test_config_and_credentials_are_installed_private(staged: Staged) -> None:
    assert (staged.etc / "config.toml").read_text() == (REPO / "config.example.toml").read_text()
    credentials = staged.etc / "credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
    # No token in a staged tree: every host installed from it would share it.
    assert not (credentials / "admin_token").exists()


def test_the_venv_is_readable_by_the_service_under_a_strict_umask(staged: Staged) -> None:
    """Installed under umask 077, yet every directory is 0755 and every file 0644 or
    0755: the service's dynamic user is neither root nor the files' owner."""
    for directory, _, names in os.walk(staged.venv):
        assert stat.S_IMODE(Path(directory).stat().st_mode) == 0o755, directory
        for name in names:
            path = Path(directory) / name
            if not path.is_symlink():
                assert stat.S_IMODE(path.stat().st_mode) in (0o644, 0o755), path


def test_the_admin_token_is_generated_on_the_host(tmp_path: Path) -> None:
    """Without DESTDIR (here GENERATE_TOKEN=yes stands for it) the token is made once,
    private and not empty; an empty one left by a failed run is made again."""
    made = Staged(destdir=tmp_path / "stage", prefix=tmp_path / "live" / "almhookd")
    result = made.install("GENERATE_TOKEN=yes")
    assert result.returncode == 0, result.stdout + result.stderr
    token = made.etc / "credentials" / "admin_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    first = token.read_text().strip()
    assert len(first) >= 40
    token.write_text("")
    assert made.install("GENERATE_TOKEN=yes").returncode == 0
    second = token.read_text().strip()
    assert len(second) >= 40 and second != first
    assert made.install("GENERATE_TOKEN=yes").returncode == 0
    assert token.read_text().strip() == second, "an existing token is kept"


def test_the_staged_interpreter_runs_almhookd(staged: Staged) -> None:
    python = str(staged.venv / "bin" / "python")
    version = subprocess.run(
        [python, "-m", "almhookd.cli.main", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert version.stdout.startswith("almhookd ")
    subprocess.run([python, "-c", "import almhookd.receiver"], check=True, timeout=60)
    check = subprocess.run(
        [python, "-m", "almhookd.cli.main", "check-config", "--config", staged.etc / "config.toml"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_tree_copied_to_its_place_runs(staged: Staged, tmp_path: Path) -> None:
    """What a package does: the staged PREFIX copied to PREFIX, its scripts run through
    their shebangs, and the unit passes systemd-analyze verify with that ExecStart."""
    if staged.prefix.exists():
        shutil.rmtree(staged.prefix)
    shutil.copytree(staged.venv, staged.prefix, symlinks=True)
    try:
        result = subprocess.run(
            [staged.prefix / "bin" / "almhookd", "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert result.stdout.startswith("almhookd ")
        analyze = shutil.which("systemd-analyze")
        if analyze is not None:  # .ci/run installs it
            verified = subprocess.run(
                [analyze, "verify", staged.unit],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert verified.returncode == 0, verified.stderr
    finally:
        shutil.rmtree(staged.prefix)


def test_a_second_install_is_an_upgrade_that_keeps_config_and_credentials(
    staged: Staged,
) -> None:
    config = staged.etc / "config.toml"
    config.write_text(config.read_text() + "\n# edited by the admin\n")
    token = "made-by-the-package-post-install-0123456789"
    (staged.etc / "credentials" / "admin_token").write_text(token)
    leftover = next((staged.venv / "lib").glob("python3.*")) / "site-packages" / "leftover.py"
    leftover.write_text("")
    started = time.monotonic()
    result = staged.install()
    print(f"\nmake install again (the upgrade): {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert config.read_text().endswith("\n# edited by the admin\n")
    assert (staged.etc / "credentials" / "admin_token").read_text() == token
    assert not leftover.exists()  # the venv is built afresh, then swapped in
    assert not Path(f"{staged.venv}.new").exists()
    assert not Path(f"{staged.venv}.old").exists()
    assert (staged.venv / "bin" / "almhookd").read_text().startswith(f"#!{staged.prefix}/bin/")


def test_uninstall_removes_the_venv_and_unit_and_keeps_config(
    staged: Staged, tmp_path: Path
) -> None:
    copy = Staged(destdir=tmp_path / "stage", prefix=staged.prefix)
    shutil.copytree(staged.destdir, copy.destdir, symlinks=True)
    result = _make("uninstall", f"DESTDIR={copy.destdir}", f"PREFIX={copy.prefix}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not copy.venv.exists()
    assert not copy.unit.exists()
    assert (copy.etc / "config.toml").is_file()
    assert (copy.etc / "credentials" / "admin_token").is_file()  # from the upgrade test


# The refusals: checked before anything is written.


def _check_python() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_python", REPO / "tools" / "check_python.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PYENV = "/root/.pyenv/versions/3.11.7"


@pytest.mark.parametrize(
    ("executable", "stdlib", "version", "refused_for"),
    [
        ("/usr/bin/python3.11", "/usr", (3, 11, 2), []),
        ("/usr/local/bin/python3.13", "/usr/local", (3, 13, 0), []),
        ("/opt/python/3.12/bin/python3.12", "/opt/python/3.12", (3, 12, 1), []),
        ("/homestead/bin/python3", "/homestead", (3, 11, 0), []),  # not /home
        ("/usr/bin/python3.10", "/usr", (3, 10, 12), ["3.10.12"]),
        ("/usr/bin/python3.9", "/usr", (3, 9, 2), ["3.9.2"]),
        (f"{PYENV}/bin/python3.11", PYENV, (3, 11, 7), ["/root"]),
        ("/home/ann/.local/bin/python3", "/home/ann/.local", (3, 12, 0), ["/home"]),
        ("/home", "/home", (3, 12, 0), ["/home"]),
        ("/run/user/1000/python3", "/usr", (3, 12, 0), ["/run/user"]),
        # A copy of the binary outside, its standard library still in a home directory.
        ("/opt/py/python3", PYENV, (3, 11, 7), ["standard library", "/root"]),
        ("/root/.pyenv/versions/3.8.18/bin/python3.8", "/usr", (3, 8, 18), ["/root", "3.8.18"]),
        ("", "/usr", (3, 11, 2), ["does not say"]),
    ],
)
def test_which_interpreters_are_refused(
    executable: str, stdlib: str, version: tuple[int, ...], refused_for: list[str]
) -> None:
    reasons = _check_python().refusals(executable, stdlib, version)
    assert bool(reasons) == bool(refused_for), reasons
    for word in refused_for:
        assert word in "; ".join(reasons)


@pytest.fixture(scope="module")
def python_under_a_home() -> Iterator[str]:
    """An interpreter whose real path is under /root or /home: the one running the tests
    when it is a pyenv's, else a copy of the system one into the home directory."""
    real = os.path.realpath(sys.executable)
    if real.startswith(("/root/", "/home/")):
        yield real
        return
    home = os.path.realpath(Path.home())
    if not home.startswith(("/root/", "/home/")) and home != "/root":
        pytest.skip(f"no interpreter under /root or /home to be refused (home is {home})")
    with tempfile.TemporaryDirectory(dir=home, prefix=".almhookd-test-") as directory:
        copy = Path(directory) / "python3"
        shutil.copy2(os.path.realpath(SYSTEM_PYTHON), copy)
        yield str(copy)


def test_make_install_refuses_an_interpreter_under_a_home(
    python_under_a_home: str, tmp_path: Path
) -> None:
    result = _make(
        "install",
        f"DESTDIR={tmp_path / 'stage'}",
        "PREFIX=/srv/hooks",
        f"PYTHON={python_under_a_home}",
    )
    assert result.returncode != 0
    refusal = [line for line in result.stderr.splitlines() if line.startswith("make install:")]
    assert len(refusal) == 1, result.stderr
    assert f"refusing PYTHON={python_under_a_home}" in refusal[0]
    assert "hidden from the service by ProtectHome=yes" in refusal[0]
    assert not (tmp_path / "stage").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["PREFIX=srv/hooks"], "PREFIX=srv/hooks must be an absolute path"),
        (["PREFIX=/srv/my hooks"], "may hold only letters"),
        (["PYTHON=/nonexistent/python3"], "PYTHON=/nonexistent/python3 not found"),
        (["PREFIX=/etc"], "holds something else than almhookd's venv"),
    ],
)
def test_make_install_refuses_what_it_cannot_install(
    arguments: list[str], message: str, tmp_path: Path
) -> None:
    stage = tmp_path / "stage"
    (stage / "etc").mkdir(parents=True)
    (stage / "etc" / "hostname").write_text("mine\n")
    result = _make("install", f"DESTDIR={stage}", f"PYTHON={SYSTEM_PYTHON}", *arguments)
    assert result.returncode != 0
    assert message in result.stderr
    assert sorted(p.name for p in stage.rglob("*")) == ["etc", "hostname"]
