from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from almhookd.config import (
    Config,
    ListenAddress,
    Secret,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
    render_config,
)
from almhookd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_an_empty_file_gives_the_contract_defaults() -> None:
    config = parse_config("", env={})
    assert config.server.listen == ListenAddress(host="127.0.0.1", port=8787)
    assert config.server.max_body_bytes == 1_048_576
    assert config.server.admin_token is None
    assert config.storage.path == Path("/var/lib/almhookd/almhookd.db")
    assert config.storage.retention == 7 * 86_400
    assert config.delivery.connect_timeout == 10
    assert config.delivery.read_timeout == 5
    assert (config.delivery.backoff_initial, config.delivery.backoff_max) == (5, 300)
    assert config.delivery.max_events_per_request == 50
    assert config.delivery.max_webhooks == 5
    assert config.delivery.allow_private_targets is False
    assert config.batch.interval == 900
    assert config.batch.max_events_per_request == 100
    assert config.notify.smtp_port == 587
    assert config.notify.reminder_interval == 86_400
    assert config.notify.from_address == "almhookd@localhost"
    assert (config.log.format, config.log.level) == ("auto", "info")


def test_the_example_config_documents_exactly_the_defaults() -> None:
    example = load_config(REPO / "config.example.toml", env={})
    defaults = parse_config("", env={})
    assert example.server == defaults.server
    for section in ("storage", "account", "delivery", "batch", "notify", "log"):
        assert getattr(example, section) == getattr(defaults, section), section


def test_every_key_is_read() -> None:
    config = parse_config(
        """
        [server]
        listen = "[::1]:9000"
        admin_token = "admin-token-0123456789"
        ingest_token = "ingest-token-0123456789"
        max_body_bytes = 2048
        [storage]
        path = "/tmp/x.db"
        retention = "3d"
        [account]
        id = 1010
        [delivery]
        connect_timeout = "500ms"
        read_timeout = "1m30s"
        backoff_initial = "1s"
        backoff_max = "2m"
        max_events_per_request = 7
        max_webhooks = 3
        allow_private_targets = true
        allowed_networks = ["10.0.0.0/8", "fd00::/8"]
        [batch]
        interval = "2s"
        at = ["14:00", "02:30"]
        max_events_per_request = 9
        [notify]
        smtp_host = "localhost"
        smtp_port = 2525
        smtp_starttls = false
        smtp_username = "mailer"
        smtp_password = "smtp-password"
        from = "hooks@example.org"
        admin_email = "admin@example.org"
        reminder_interval = "12h"
        [log]
        format = "json"
        level = "debug"
        """,
        env={},
    )
    assert config.server.listen == ListenAddress(host="::1", port=9000)
    assert config.server.admin_token == Secret("admin-token-0123456789")
    assert config.delivery.connect_timeout == 0.5
    assert config.delivery.read_timeout == 90
    assert [str(n) for n in config.delivery.allowed_networks] == ["10.0.0.0/8", "fd00::/8"]
    assert config.batch.at == (time(2, 30), time(14, 0))
    assert config.notify.smtp_password == Secret("smtp-password")
    assert config.notify.from_address == "hooks@example.org"
    assert config.log.level == "debug"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5),
        ("10m", 600),
        ("24h", 86_400),
        ("7d", 604_800),
        ("1h30m", 5400),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r'^empty duration; use a number and a unit, e.g. "5s"$'):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86_400, "1d"),
        (7 * 86_400, "7d"),
        (90_000, "25h"),  # not a whole number of days: the next unit down
        (3600, "1h"),
        (5400, "90m"),
        (60, "1m"),
        (3660, "61m"),
        (90, "90s"),
        (1, "1s"),
        (61.5, "61500ms"),
        (0.5, "500ms"),
        (0.001, "1ms"),
        (0, "0ms"),
    ],
)
def test_format_duration_uses_the_largest_whole_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


#: Lets storage.retention go down to its minimum (backoff_max must not exceed it).
SHORT_BACKOFF = '[delivery]\nbackoff_initial = "1s"\nbackoff_max = "1m"\n'


@pytest.mark.parametrize(
    ("key", "value", "minimum", "prelude"),
    [
        ("storage.retention", "1m", "1m", SHORT_BACKOFF),
        ("notify.reminder_interval", "60s", "1m", ""),
        ("batch.interval", "1s", "1s", ""),
        ("delivery.connect_timeout", "1ms", "1ms", ""),
        ("delivery.secret_rotation_grace", "0s", "0ms", ""),
    ],
)
def test_a_duration_may_be_its_minimum_and_not_less(
    key: str, value: str, minimum: str, prelude: str
) -> None:
    section, name = key.split(".")
    config = parse_config(f'{prelude}[{section}]\n{name} = "{value}"\n', env={})
    assert getattr(getattr(config, section), name) == parse_duration(value)
    if parse_duration(value) > 0:
        below = f"{parse_duration(value) * 1000 - 1:g}ms"
        assert f"{key}: must be at least {minimum}, got '{below}'" in _error(
            f'{prelude}[{section}]\n{name} = "{below}"\n'
        )


# One test per kind of configuration error; each message names the file and the key.


def _error(text: str, env: dict[str, str] | None = None, tmp_path: Path | None = None) -> str:
    source = (tmp_path or Path("/nonexistent")) / "almhookd.toml"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source=source, env=env or {})
    return caught.value.message


def test_unknown_key_is_named_with_a_suggestion() -> None:
    message = _error('[server]\nlisten_addr = "127.0.0.1:1"\n')
    assert "almhookd.toml: server.listen_addr: unknown key (did you mean listen?)" in message


def test_unknown_section_is_named() -> None:
    assert "unknown section [servr]" in _error("[servr]\nlisten = 1\n")


def test_wrong_type_is_named() -> None:
    message = _error('[delivery]\nmax_webhooks = "five"\n')
    assert "delivery.max_webhooks: expected an integer, got a string" in message


def test_boolean_is_not_an_integer() -> None:
    assert "delivery.max_webhooks: expected an integer" in _error(
        "[delivery]\nmax_webhooks = true\n"
    )


def test_bad_duration_is_named() -> None:
    message = _error('[delivery]\nread_timeout = "5 seconds"\n')
    assert "delivery.read_timeout:" in message and "not a duration" in message


def test_duration_given_as_a_number_is_named() -> None:
    assert 'storage.retention: expected a duration string such as "5s", got an integer' in _error(
        "[storage]\nretention = 7\n"
    )


@pytest.mark.parametrize("listen", ["8787", "localhost", "127.0.0.1:99999", "[zz]:80", ":80"])
def test_bad_listen_address_is_named(listen: str) -> None:
    assert "server.listen:" in _error(f'[server]\nlisten = "{listen}"\n')


def test_impossible_value_is_named() -> None:
    assert "delivery.max_events_per_request: must be between 1 and 10000, got 0" in _error(
        "[delivery]\nmax_events_per_request = 0\n"
    )


def test_inconsistent_values_are_named() -> None:
    message = _error('[delivery]\nbackoff_initial = "10m"\nbackoff_max = "5m"\n')
    assert "delivery.backoff_initial: must not exceed delivery.backoff_max" in message


def test_invalid_toml_is_reported_with_the_file() -> None:
    assert "almhookd.toml: invalid TOML" in _error("[server\n")


def test_bad_enum_value_is_named() -> None:
    assert "log.level: must be one of debug, info, warning, error; got 'loud'" in _error(
        '[log]\nlevel = "loud"\n'
    )


def test_bad_cidr_is_named() -> None:
    assert "delivery.allowed_networks: item 1" in _error(
        '[delivery]\nallowed_networks = ["10.0.0.0/8", "not-a-net"]\n'
    )


def test_bad_local_time_is_named() -> None:
    assert 'batch.at: item 0: expected a local time "HH:MM"' in _error('[batch]\nat = ["25:00"]\n')


def test_bad_email_is_named() -> None:
    assert "notify.admin_email: 'nobody' is not an e-mail address" in _error(
        '[notify]\nadmin_email = "nobody"\n'
    )


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token-0123456789\n")
    message = _error(
        '[server]\nadmin_token = "x-0123456789abcdef"\nadmin_token_file = "token"\n',
        tmp_path=tmp_path,
    )
    assert "server.admin_token and server.admin_token_file: set one, not both" in message


def test_missing_token_file_is_named(tmp_path: Path) -> None:
    message = _error('[server]\nadmin_token_file = "missing"\n', tmp_path=tmp_path)
    assert "server.admin_token_file: cannot read" in message and "missing" in message


def test_short_token_is_refused_without_echoing_it() -> None:
    message = _error('[server]\nadmin_token = "hunter2"\n')
    assert "server.admin_token: too short" in message
    assert "hunter2" not in message


def test_same_admin_and_ingest_token_is_refused() -> None:
    message = _error(
        '[server]\nadmin_token = "same-token-0123456789"\ningest_token = "same-token-0123456789"\n'
    )
    assert "server.ingest_token: must differ" in message
    assert "same-token-0123456789" not in message


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml", env={})


def test_default_path_comes_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[account]\nid = 42\n")
    assert load_config(None, env={"ALMHOOKD_CONFIG": str(path)}).account.id == 42


def test_secrets_come_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "admin.secret").write_text("file-token-0123456789\n")
    (tmp_path / "c.toml").write_text('[server]\nadmin_token_file = "admin.secret"\n')
    config = load_config(tmp_path / "c.toml", env={})
    assert config.server.admin_token == Secret("file-token-0123456789")


def test_secrets_come_from_the_environment_when_not_configured() -> None:
    config = parse_config(
        "", env={"ALMHOOKD_ADMIN_TOKEN": "env-token-0123456789", "ALMHOOKD_SMTP_PASSWORD": "pw"}
    )
    assert config.server.admin_token == Secret("env-token-0123456789")
    assert config.notify.smtp_password == Secret("pw")


def test_relative_storage_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('[storage]\npath = "data/a.db"\n')
    assert load_config(tmp_path / "c.toml", env={}).storage.path == tmp_path / "data" / "a.db"


def test_rendering_masks_every_secret() -> None:
    config = parse_config(
        '[server]\nadmin_token = "admin-token-0123456789"\n'
        '[notify]\nsmtp_password = "smtp-secret-value"\n',
        env={},
    )
    text = render_config(config)
    assert "admin-token-0123456789" not in text and "smtp-secret-value" not in text
    assert 'admin_token = "********"' in text
    assert "admin-token" not in repr(config)
    # The rendering is itself a valid configuration with the same non-secret settings.
    again = parse_config(text.replace('"********"', '""'), env={})
    assert isinstance(again, Config)
    assert again.delivery == config.delivery and again.batch == config.batch


def test_secrets_come_from_systemd_credentials(tmp_path: Path) -> None:
    (tmp_path / "admin_token").write_text("credential-token-0123456789\n")
    (tmp_path / "smtp_password").write_text("mail-secret\n")
    config = parse_config(
        "",
        env={
            "CREDENTIALS_DIRECTORY": str(tmp_path),
            "ALMHOOKD_ADMIN_TOKEN": "env-token-0123456789",
        },
    )
    assert config.server.admin_token == Secret("credential-token-0123456789")
    assert config.notify.smtp_password == Secret("mail-secret")
    assert config.server.ingest_token is None


def test_connection_limits_are_read() -> None:
    config = parse_config(
        """
        [server]
        header_timeout = "2s"
        body_timeout = "500ms"
        keepalive_timeout = "30s"
        max_connections = 50
        max_body_memory = "8MiB"
        """,
        env={},
    )
    server = config.server
    assert (server.header_timeout, server.body_timeout, server.keepalive_timeout) == (2, 0.5, 30)
    assert server.max_connections == 50
    assert server.max_body_memory == 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("value", "size"),
    [("65536", 65_536), ("512KiB", 524_288), ("64MiB", 67_108_864), ("1GiB", 1024**3)],
)
def test_sizes(value: str, size: int) -> None:
    assert parse_size(value) == size
    text = f'[server]\nmax_body_bytes = 1024\nmax_body_memory = "{value}"'
    config = parse_config(text, env={})
    assert config.server.max_body_memory == size


def test_a_size_may_be_an_integer_of_bytes() -> None:
    config = parse_config("[server]\nmax_body_memory = 2097152", env={})
    assert config.server.max_body_memory == 2_097_152


@pytest.mark.parametrize("value", ['"64MB"', '"lots"', '""', "true", '"1.5MiB"'])
def test_a_bad_size_is_named(value: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.max_body_memory"):
        parse_config(f"[server]\nmax_body_memory = {value}", env={})


def test_body_memory_below_the_largest_body_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"server\.max_body_memory: must be at least"):
        parse_config('[server]\nmax_body_memory = "512KiB"', env={})


# --- the storage backend ------------------------------------------------------------

PG_PASSWORD = "pg-Secret-4242"  # the value the tests look for
PG_URL = f"postgresql://almhookd:{PG_PASSWORD}@db.internal:5432/almhookd"


def test_postgresql_takes_its_dsn_from_the_file_a_dsn_file_or_the_environment(
    tmp_path: Path,
) -> None:
    inline = parse_config(f'[storage]\nbackend = "postgresql"\ndsn = "{PG_URL}"', env={})
    assert inline.storage.backend == "postgresql"
    assert inline.storage.dsn is not None and inline.storage.dsn.reveal() == PG_URL
    (tmp_path / "dsn").write_text(PG_URL + "\n")
    from_file = parse_config(
        '[storage]\nbackend = "postgresql"\ndsn_file = "dsn"', source=tmp_path / "c.toml", env={}
    )
    assert from_file.storage.dsn is not None and from_file.storage.dsn.reveal() == PG_URL
    from_env = parse_config(
        '[storage]\nbackend = "postgresql"', env={"ALMHOOKD_DATABASE_DSN": PG_URL}
    )
    assert from_env.storage.dsn is not None and from_env.storage.dsn.reveal() == PG_URL
    assert from_env.storage.location == "postgresql://almhookd:***@db.internal:5432/almhookd"
    assert PG_PASSWORD not in repr(from_env)


def test_sqlite_stays_the_default_and_names_its_file() -> None:
    config = parse_config("", env={})
    assert config.storage.backend == "sqlite" and config.storage.dsn is None
    assert config.storage.location == str(config.storage.path)


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('backend = "postgresql"', {}, "storage.dsn: required when storage.backend"),
        (f'dsn = "{PG_URL}"', {}, 'storage.backend is "sqlite"'),
        ("", {"ALMHOOKD_DATABASE_DSN": PG_URL}, 'storage.backend is "sqlite"'),
        (
            f'backend = "postgresql"\ndsn = "host=db password={PG_PASSWORD}"',
            {},
            "storage.dsn: must be a URL",
        ),
        ('backend = "mysql"', {}, "storage.backend: must be one of sqlite, postgresql"),
    ],
)
def test_a_storage_mistake_is_named_and_the_password_never_shown(
    toml: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(f"[storage]\n{toml}", env=env)
    assert PG_PASSWORD not in str(caught.value)


def test_the_dsn_comes_from_a_systemd_credential_named_dsn(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text(PG_URL + "\n")
    config = parse_config(
        '[storage]\nbackend = "postgresql"', env={"CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert config.storage.dsn is not None and config.storage.dsn.reveal() == PG_URL
