"""A PostgreSQL connection string as it may be shown: without its password. Pure."""

from __future__ import annotations

import re
from typing import Final

#: ``user:password@`` in a URL (the password as written, percent-encoding included).
_URL_PASSWORD: Final = re.compile(r"(://[^:/@?#]*:)([^@/?#]*)(@)")
#: ``password=...`` in a URL's query.
_QUERY_PASSWORD: Final = re.compile(r"([?&]password=)([^&#]*)", re.I)
#: ``password=...`` in the ``key=value`` form, quoted or not.
_KEY_VALUE_PASSWORD: Final = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redacted(dsn: str) -> str:
    """``dsn`` with its password (URL, URL query or ``key=value`` form) as ``***``."""
    if "://" in dsn:
        dsn = _URL_PASSWORD.sub(r"\1***\3", dsn)
        return _QUERY_PASSWORD.sub(r"\1***", dsn)
    return _KEY_VALUE_PASSWORD.sub(r"\1***", dsn)


def scrubbed(text: str, dsn: str) -> str:
    """``text`` (a driver's error message) with the DSN's password, wherever it shows,
    as ``***``: a driver may quote the string it could not use."""
    for secret in passwords(dsn):
        text = text.replace(secret, "***")
    return text


def passwords(dsn: str) -> list[str]:
    """The passwords ``dsn`` holds, as written in it, longest first."""
    found = [m.group(2) for m in _URL_PASSWORD.finditer(dsn)]
    found += [m.group(2) for m in _QUERY_PASSWORD.finditer(dsn)]
    found += [m.group(2).strip("'") for m in _KEY_VALUE_PASSWORD.finditer(dsn)]
    # Longest first: a password that holds another is replaced whole.
    return sorted({secret for secret in found if secret}, key=len, reverse=True)
