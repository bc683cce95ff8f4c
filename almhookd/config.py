"""Configuration: one TOML file read into frozen dataclasses.

Every key of the contract has a default here, so an empty file is a valid
configuration. Anything unknown, mistyped or impossible is a :class:`ConfigError`
naming the file and the dotted key; a secret's value never appears in a message.

Longer than the other modules (about 630 lines) on purpose: the schema table
(``_SCHEMA``), the parser of each key and the checks across keys are read together, as
the contract's configuration section is, and a new key is one row and one parser here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import time
from pathlib import Path
from typing import Any, Final, TypeVar

from almhookd.dsn import passwords, redacted
from almhookd.errors import ConfigError

DEFAULT_CONFIG_PATH: Final = Path("/etc/almhookd/config.toml")
CONFIG_PATH_ENV: Final = "ALMHOOKD_CONFIG"
LOG_FORMATS: Final = ("auto", "json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


#: Every secret value this process has held (tokens, passwords, signing secrets): the
#: log's redaction step (``logs.py``) replaces them in any line, a second line of
#: defence behind never logging them. Values shorter than this are not worth it.
_REDACT_FROM_LENGTH: Final = 6
#: Replaced whole when a new value arrives (rare), so that a reader can tell a change
#: by identity instead of comparing sets on every log line.
_secret_values: frozenset[str] = frozenset()


def secret_values() -> frozenset[str]:
    """The secret values held so far, for the log's redaction step; the same object
    until a new one arrives."""
    return _secret_values


def _remember_secret(value: str) -> None:
    global _secret_values  # the one registry: replaced, never mutated
    if value not in _secret_values:
        _secret_values = _secret_values | {value}


class Secret:
    """A secret string that never shows itself in ``repr`` or ``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= _REDACT_FROM_LENGTH:
            _remember_secret(value)
            if value.startswith("whsec_"):  # its key part alone is the secret too
                _remember_secret(value.removeprefix("whsec_"))

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, kw_only=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerConfig:
    listen: ListenAddress = ListenAddress(host="127.0.0.1", port=8787)
    admin_token: Secret | None = None
    ingest_token: Secret | None = None
    max_body_bytes: int = 1_048_576
    #: seconds a client has to send a request head: from the connection's opening, or
    #: from the first byte of a later request on a kept-alive connection
    header_timeout: float = 10.0
    #: seconds a request body may make no progress while the server waits for it
    body_timeout: float = 10.0
    #: seconds a kept-alive connection may sit idle between requests
    keepalive_timeout: float = 75.0
    #: open connections at once; past it a new one closes the longest-idle connection,
    #: or is itself closed when every connection has a request under way
    max_connections: int = 512
    #: bytes of request bodies held in memory at once (by Content-Length); past it: 503
    # Bodies grow in buffers that reallocate as they fill: the peak is about twice this.
    max_body_memory: int = 32 * 1024 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class StorageConfig:
    #: ``sqlite`` (one file, one daemon) or ``postgresql`` (``dsn``)
    backend: str = "sqlite"
    path: Path = Path("/var/lib/almhookd/almhookd.db")
    retention: float = 7 * 86_400.0  #: seconds
    #: the PostgreSQL connection URL (``postgresql://user:password@host:port/database``)
    dsn: Secret | None = None
    #: PostgreSQL: the longest a dead process's webhooks wait for another to take them
    #: over (seconds); leases last 4/5 of it (``domain.ownership.LeasePolicy``)
    takeover: float = 15.0

    @property
    def location(self) -> str:
        """Where the state lives, as logs may show it: the file, or the URL without its
        password."""
        if self.backend == "postgresql" and self.dsn is not None:
            return redacted(self.dsn.reveal())
        return str(self.path)


@dataclass(frozen=True, kw_only=True, slots=True)
class AccountConfig:
    id: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryConfig:
    connect_timeout: float = 10.0
    read_timeout: float = 5.0
    backoff_initial: float = 5.0
    backoff_max: float = 300.0
    max_events_per_request: int = 50
    max_webhooks: int = 5
    allow_private_targets: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    secret_rotation_grace: float = 86_400.0


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchConfig:
    interval: float = 900.0
    at: tuple[time, ...] = ()
    max_events_per_request: int = 100


@dataclass(frozen=True, kw_only=True, slots=True)
class NotifyConfig:
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_password: Secret | None = None
    from_address: str = "almhookd@localhost"
    admin_email: str = ""
    reminder_interval: float = 86_400.0


@dataclass(frozen=True, kw_only=True, slots=True)
class LogConfig:
    format: str = "auto"
    level: str = "info"


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    account: AccountConfig = field(default_factory=AccountConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: Path | None = None  #: the file it was read from


# --- value parsers: each takes (value, key) and raises _Bad naming what is wrong -----


class _Bad(Exception):
    """A value is wrong; the loader adds the file and the key."""


T = TypeVar("T")
Parser = Callable[[Any], Any]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"500ms"``, ``"5s"``, ``"10m"``, ``"1h30m"``, ``"7d"``."""
    position, total = 0, 0.0
    compact = text.strip()
    while position < len(compact):
        match = _DURATION_PART.match(compact, position)
        if match is None:
            raise ValueError(
                f'{text!r} is not a duration; use a number and a unit (ms, s, m, h, d), e.g. "5s"'
            )
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not compact:
        raise ValueError('empty duration; use a number and a unit, e.g. "5s"')
    return total


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB)?")
_SIZE_UNITS: Final = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_size(text: str) -> int:
    """Bytes in a size such as ``"65536"``, ``"512KiB"``, ``"64MiB"`` or ``"1GiB"``."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f'{text!r} is not a size; use bytes or a unit (KiB, MiB, GiB), e.g. "64MiB"'
        )
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def _type_name(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_type_name(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_type_name(value)}")
    return value


def _integer(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, got {_type_name(value)}")
        if not low <= value <= high:
            raise _Bad(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _duration(minimum: float = 0.001) -> Parser:
    def parse(value: Any) -> float:
        if not isinstance(value, str):
            raise _Bad(f'expected a duration string such as "5s", got {_type_name(value)}')
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            raise _Bad(str(error)) from None
        if seconds < minimum:
            raise _Bad(f"must be at least {format_duration(minimum)}, got {value!r}")
        return seconds

    return parse


def _size(low: int, high: int) -> Parser:
    """A byte count: an integer, or a string with a binary unit such as ``"64MiB"``."""

    def parse(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = parse_size(value)
            except ValueError as error:
                raise _Bad(str(error)) from None
        return int(_integer(low, high)(value))

    return parse


def _choice(options: tuple[str, ...]) -> Parser:
    def parse(value: Any) -> str:
        text = _string(value)
        if text not in options:
            raise _Bad(f"must be one of {', '.join(options)}; got {text!r}")
        return text

    return parse


def _email_or_empty(value: Any) -> str:
    text = _string(value).strip()
    if text and not re.fullmatch(r"[^@\s]+@[^@\s]+", text):
        raise _Bad(f"{text!r} is not an e-mail address")
    return text


def parse_listen(text: str) -> ListenAddress:
    """``HOST:PORT`` or ``[IPv6]:PORT``; port 0 asks the OS for a free port."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})", text)
    if match is None:
        raise ValueError(f'expected "HOST:PORT" (e.g. "127.0.0.1:8787"), got {text!r}')
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65_535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    if match.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    return ListenAddress(host=host, port=port)


def _listen(value: Any) -> ListenAddress:
    try:
        return parse_listen(_string(value))
    except ValueError as error:
        raise _Bad(str(error)) from None


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    if not isinstance(value, list):
        raise _Bad(f'expected an array of CIDRs such as ["10.0.0.0/8"], got {_type_name(value)}')
    networks = []
    for index, item in enumerate(value):
        try:
            networks.append(ipaddress.ip_network(_string(item), strict=False))
        except (ValueError, _Bad) as error:
            raise _Bad(f"item {index}: {item!r} is not a CIDR network ({error})") from None
    return tuple(networks)


def _local_times(value: Any) -> tuple[time, ...]:
    if not isinstance(value, list):
        raise _Bad(f'expected an array of "HH:MM" times, got {_type_name(value)}')
    times = []
    for index, item in enumerate(value):
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", item) if isinstance(item, str) else None
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise _Bad(f'item {index}: expected a local time "HH:MM", got {item!r}')
        times.append(time(int(match.group(1)), int(match.group(2))))
    return tuple(sorted(set(times)))


def _path(value: Any) -> Path:
    text = _string(value)
    if not text.strip():
        raise _Bad("must not be empty")
    return Path(text)


# --- the schema: section -> key -> (dataclass field, parser) -------------------------

_SECRET_KEYS: Final = {
    ("server", "admin_token"): "ALMHOOKD_ADMIN_TOKEN",
    ("server", "ingest_token"): "ALMHOOKD_INGEST_TOKEN",
    ("notify", "smtp_password"): "ALMHOOKD_SMTP_PASSWORD",
    ("storage", "dsn"): "ALMHOOKD_DATABASE_DSN",
}

STORAGE_BACKENDS: Final = ("sqlite", "postgresql")

_SCHEMA: Final[dict[str, tuple[type[Any], dict[str, tuple[str, Parser]]]]] = {
    "server": (
        ServerConfig,
        {
            "listen": ("listen", _listen),
            "max_body_bytes": ("max_body_bytes", _integer(1024, 256 * 1024 * 1024)),
            "header_timeout": ("header_timeout", _duration(0.1)),
            "body_timeout": ("body_timeout", _duration(0.1)),
            "keepalive_timeout": ("keepalive_timeout", _duration(0.1)),
            "max_connections": ("max_connections", _integer(1, 1_048_576)),
            "max_body_memory": ("max_body_memory", _size(1024, 64 * 1024**3)),
        },
    ),
    "storage": (
        StorageConfig,
        {
            "backend": ("backend", _choice(STORAGE_BACKENDS)),
            "path": ("path", _path),
            "retention": ("retention", _duration(60.0)),
            "takeover": ("takeover", _duration(1.0)),
        },
    ),
    "account": (
        AccountConfig,
        {
            "id": ("id", _integer(0, 2**63 - 1)),
        },
    ),
    "delivery": (
        DeliveryConfig,
        {
            "connect_timeout": ("connect_timeout", _duration()),
            "read_timeout": ("read_timeout", _duration()),
            "backoff_initial": ("backoff_initial", _duration()),
            "backoff_max": ("backoff_max", _duration()),
            "max_events_per_request": ("max_events_per_request", _integer(1, 10_000)),
            "max_webhooks": ("max_webhooks", _integer(1, 1000)),
            "allow_private_targets": ("allow_private_targets", _boolean),
            "allowed_networks": ("allowed_networks", _networks),
            "secret_rotation_grace": ("secret_rotation_grace", _duration(0.0)),
        },
    ),
    "batch": (
        BatchConfig,
        {
            "interval": ("interval", _duration(1.0)),
            "at": ("at", _local_times),
            "max_events_per_request": ("max_events_per_request", _integer(1, 10_000)),
        },
    ),
    "notify": (
        NotifyConfig,
        {
            "smtp_host": ("smtp_host", _string),
            "smtp_port": ("smtp_port", _integer(1, 65_535)),
            "smtp_starttls": ("smtp_starttls", _boolean),
            "smtp_username": ("smtp_username", _string),
            "from": ("from_address", _email_or_empty),
            "admin_email": ("admin_email", _email_or_empty),
            "reminder_interval": ("reminder_interval", _duration(60.0)),
        },
    ),
    "log": (
        LogConfig,
        {
            "format": ("format", _choice(LOG_FORMATS)),
            "level": ("level", _choice(LOG_LEVELS)),
        },
    ),
}


def default_config_path(env: Mapping[str, str]) -> Path:
    return Path(env[CONFIG_PATH_ENV]) if env.get(CONFIG_PATH_ENV) else DEFAULT_CONFIG_PATH


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration file at ``path`` (default: the contract's)."""
    env = os.environ if env is None else env
    path = default_config_path(env) if path is None else path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    return parse_config(text, source=path, env=env)


def parse_config(
    text: str, *, source: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Validate a configuration given as TOML text."""
    env = os.environ if env is None else env
    where = str(source) if source else "<config>"
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{where}: invalid TOML: {error}") from None
    base = source.parent if source else Path.cwd()
    sections: dict[str, Any] = {}
    for section_name, value in document.items():
        if section_name not in _SCHEMA:
            raise ConfigError(
                f"{where}: unknown section [{section_name}]; known: {', '.join(_SCHEMA)}"
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {section_name}: expected a [{section_name}] table")
        sections[section_name] = _parse_section(section_name, value, where, base, env)
    for section_name in _SCHEMA:
        if section_name not in sections:
            sections[section_name] = _parse_section(section_name, {}, where, base, env)
    config = Config(**sections, source=source)
    _check_consistency(config, where)
    return config


def _parse_section(
    name: str, table: dict[str, Any], where: str, base: Path, env: Mapping[str, str]
) -> Any:
    section_type, keys = _SCHEMA[name]
    secrets = {key for (section, key) in _SECRET_KEYS if section == name}
    allowed = set(keys) | secrets | {f"{key}_file" for key in secrets}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in allowed:
            hint = closest_name(key, allowed)
            raise ConfigError(
                f"{where}: {name}.{key}: unknown key" + (f" (did you mean {hint}?)" if hint else "")
            )
        if key in keys:
            field_name, parser = keys[key]
            try:
                values[field_name] = parser(raw)
            except _Bad as error:
                raise ConfigError(f"{where}: {name}.{key}: {error}") from None
    for key in sorted(secrets):
        values[key] = _resolve_secret(name, key, table, where, base, env)
    if name == "storage" and "path" in values and not values["path"].is_absolute():
        values["path"] = (base / values["path"]).resolve()
    return section_type(**values)


def _resolve_secret(
    section: str, key: str, table: dict[str, Any], where: str, base: Path, env: Mapping[str, str]
) -> Secret | None:
    """A secret comes from its key, else from ``KEY_file``, else from a systemd credential
    named like the key, else from its environment variable."""
    inline, file_key = table.get(key, ""), f"{key}_file"
    file_name = table.get(file_key, "")
    if not isinstance(inline, str):
        raise ConfigError(f"{where}: {section}.{key}: expected a string, got {_type_name(inline)}")
    if not isinstance(file_name, str):
        raise ConfigError(
            f"{where}: {section}.{file_key}: expected a path string, got {_type_name(file_name)}"
        )
    if inline and file_name:
        raise ConfigError(f"{where}: {section}.{key} and {section}.{file_key}: set one, not both")
    if file_name:
        secret_path = Path(file_name) if Path(file_name).is_absolute() else base / file_name
        try:
            value = secret_path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(
                f"{where}: {section}.{file_key}: cannot read {secret_path}: {error.strerror}"
            ) from None
        if not value:
            raise ConfigError(f"{where}: {section}.{file_key}: {secret_path} is empty")
        return Secret(value)
    if inline:
        return Secret(inline)
    credentials = env.get("CREDENTIALS_DIRECTORY", "")
    if credentials:  # systemd's LoadCredential=: one file per secret, named by its key
        try:
            value = (Path(credentials) / key).read_text(encoding="utf-8").strip()
        except OSError:
            value = ""
        if value:
            return Secret(value)
    from_env = env.get(_SECRET_KEYS[(section, key)], "")
    return Secret(from_env) if from_env else None


def _check_consistency(config: Config, where: str) -> None:
    _check_storage(config.storage, where)
    delivery = config.delivery
    if delivery.backoff_initial > delivery.backoff_max:
        raise ConfigError(
            f"{where}: delivery.backoff_initial: must not exceed delivery.backoff_max "
            f"({format_duration(delivery.backoff_initial)} > "
            f"{format_duration(delivery.backoff_max)})"
        )
    if delivery.backoff_max > config.storage.retention:
        raise ConfigError(f"{where}: delivery.backoff_max: must not exceed storage.retention")
    server = config.server
    if server.max_body_memory < server.max_body_bytes:
        raise ConfigError(
            f"{where}: server.max_body_memory: must be at least server.max_body_bytes "
            f"({server.max_body_memory} < {server.max_body_bytes}), or no largest body fits"
        )
    if server.admin_token and server.ingest_token and server.admin_token == server.ingest_token:
        raise ConfigError(
            f"{where}: server.ingest_token: must differ from server.admin_token, "
            "or the ingest token could call the admin API"
        )
    for key, secret in (("admin_token", server.admin_token), ("ingest_token", server.ingest_token)):
        if secret is not None and len(secret.reveal()) < 16:
            raise ConfigError(f"{where}: server.{key}: too short; use at least 16 characters")
    if server.admin_token is None and not server.listen.is_loopback:
        # Checked here, before anything binds: a generated token only lives in a file
        # beside the database, so nobody on the network could have been given it, and
        # an admin API reachable from the network must have a token chosen on purpose.
        raise ConfigError(
            f"{where}: server.admin_token: required when server.listen ({server.listen}) "
            "is not a loopback address; set it (or admin_token_file, ALMHOOKD_ADMIN_TOKEN)"
        )


def _check_storage(storage: StorageConfig, where: str) -> None:
    if storage.backend == "postgresql":
        if storage.dsn is None:
            raise ConfigError(
                f'{where}: storage.dsn: required when storage.backend = "postgresql"; set it '
                "(or dsn_file, ALMHOOKD_DATABASE_DSN) to postgresql://user:password@host/db"
            )
        url = storage.dsn.reveal()
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"{where}: storage.dsn: must be a URL, postgresql://user:password@host:port/"
                f"database; got {redacted(url)!r}"
            )
        for password in passwords(url):
            Secret(password)  # known to the log filter, on its own too
    elif storage.dsn is not None:
        raise ConfigError(
            f"{where}: storage.dsn (or dsn_file, ALMHOOKD_DATABASE_DSN) is set but "
            'storage.backend is "sqlite"; set backend = "postgresql" to use it, or remove it'
        )


def closest_name(key: str, options: set[str]) -> str | None:
    """The one of ``options`` that ``key`` most likely misspells, if any: the "did you
    mean" of configuration keys and of ingest keys."""
    import difflib

    matches = difflib.get_close_matches(key, sorted(options), n=1)
    return matches[0] if matches else None


def render_config(config: Config) -> str:
    """The effective settings as TOML, every secret masked."""
    lines: list[str] = []
    if config.source:
        lines.append(f"# effective configuration from {config.source}")
    reverse = {
        section: {f: k for k, (f, _p) in keys.items()} for section, (_t, keys) in _SCHEMA.items()
    }
    for section_name in _SCHEMA:
        section = getattr(config, section_name)
        lines.append(f"\n[{section_name}]")
        for item in fields(section):
            value = getattr(section, item.name)
            key = reverse[section_name].get(item.name, item.name)
            lines.append(f"{key} = {_render_value(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _render_value(value: object) -> str:
    if isinstance(value, Secret):
        return '"********"'
    if value is None:
        return '""  # not set'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f'"{format_duration(value)}"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_render_value(item) for item in value) + "]"
    if isinstance(value, time):
        return f'"{value.strftime("%H:%M")}"'
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
