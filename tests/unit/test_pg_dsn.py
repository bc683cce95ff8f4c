"""A PostgreSQL DSN as messages show it: the password never, the rest as given."""

from __future__ import annotations

import pytest

from almhookd.dsn import redacted, scrubbed

PASSWORD = "s3cr3t-Pw"


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (
            f"postgresql://almhookd:{PASSWORD}@db.internal:5432/almhookd",
            "postgresql://almhookd:***@db.internal:5432/almhookd",
        ),
        (
            "postgresql://almhookd@db.internal/almhookd",
            "postgresql://almhookd@db.internal/almhookd",
        ),
        (
            f"postgresql://almhookd@db.internal/almhookd?sslmode=require&password={PASSWORD}",
            "postgresql://almhookd@db.internal/almhookd?sslmode=require&password=***",
        ),
        (
            f"postgres://u:{PASSWORD}@h1:5432,h2:5433/db",
            "postgres://u:***@h1:5432,h2:5433/db",
        ),
        (
            f"host=db.internal user=almhookd password={PASSWORD} dbname=almhookd",
            "host=db.internal user=almhookd password=*** dbname=almhookd",
        ),
        (
            f"host=db.internal password = '{PASSWORD} x' dbname=almhookd",
            "host=db.internal password = *** dbname=almhookd",
        ),
        ("postgresql:///almhookd", "postgresql:///almhookd"),
    ],
)
def test_the_password_is_replaced_and_the_rest_kept(dsn: str, shown: str) -> None:
    assert redacted(dsn) == shown
    assert PASSWORD not in redacted(dsn)


def test_a_url_that_does_not_parse_still_loses_its_password() -> None:
    assert PASSWORD not in redacted(f"postgresql://u:{PASSWORD}@[::1/db")


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://almhookd:{PASSWORD}@db.internal/almhookd",
        f"postgresql://almhookd@db.internal/almhookd?password={PASSWORD}",
        f"host=db.internal password={PASSWORD}",
        f"postgresql://u:{PASSWORD}@[::1/db",
    ],
)
def test_a_driver_message_quoting_the_password_is_scrubbed(dsn: str) -> None:
    message = f"could not use {dsn!r} (password {PASSWORD})"
    assert PASSWORD not in scrubbed(message, dsn)
