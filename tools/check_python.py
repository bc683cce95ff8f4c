"""The interpreter `make install` builds almhookd's venv from, checked before anything is
installed: run under that interpreter as ``PYTHON tools/check_python.py NAME``, it prints
the interpreter's real path (the venv is made from it, so no shim or symlink under a home
directory stays in the way) or exits 1 with a one-line reason.

The unit runs almhookd as a dynamic user with ProtectHome=yes: an interpreter under
/root or /home (a pyenv or a user's build) is out of its reach, and the service would
fail at start. Runs under any Python from 2.7 on, so an old one is told why it is
refused instead of stopping on a syntax error.
"""

# ruff: noqa: UP010, UP031

from __future__ import print_function

import os
import sys

MINIMUM = (3, 11)
# What ProtectHome=yes hides from the service.
HIDDEN = ("/root", "/home", "/run/user")


def refusals(executable, stdlib_prefix, version):
    # type: (str, str, tuple[int, ...]) -> list[str]
    """Why an interpreter at the real path EXECUTABLE, with its standard library under the
    real path STDLIB_PREFIX (sys.base_prefix), cannot run the service; empty if it can."""
    reasons = []
    if not executable or not os.path.isabs(executable):
        reasons.append("it does not say where it lives (sys.executable is %r)" % executable)
    for what, path in (("it", executable), ("its standard library", stdlib_prefix)):
        hidden = [top for top in HIDDEN if path == top or path.startswith(top + "/")]
        if hidden:
            reasons.append(
                "%s lives under %s, hidden from the service by ProtectHome=yes" % (what, hidden[0])
            )
            break  # the standard library of an interpreter under /root is there too
    if tuple(version[:2]) < MINIMUM:
        reasons.append(
            "it is Python %s, almhookd needs %s or newer"
            % (".".join(str(part) for part in version[:3]), ".".join(map(str, MINIMUM)))
        )
    return reasons


def main(argv):
    # type: (list[str]) -> int
    name = argv[1] if len(argv) > 1 else sys.executable
    executable = os.path.realpath(sys.executable) if sys.executable else ""
    stdlib_prefix = os.path.realpath(getattr(sys, "base_prefix", sys.prefix))
    reasons = refusals(executable, stdlib_prefix, sys.version_info[:3])
    if reasons:
        print(
            "make install: refusing PYTHON=%s (%s): %s; use a system Python %s+, "
            "e.g. PYTHON=/usr/bin/python3"
            % (name, executable, "; ".join(reasons), ".".join(map(str, MINIMUM))),
            file=sys.stderr,
        )
        return 1
    print(executable)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
