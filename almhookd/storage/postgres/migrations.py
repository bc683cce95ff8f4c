"""The PostgreSQL schema, as an ordered list of migrations (``almhookd_schema`` holds
the versions applied; :mod:`almhookd.storage.postgres.engine` runs them under an
advisory lock, so processes starting together migrate once).

Version 1 is the SQLite schema at its version 4 (:mod:`almhookd.storage.sqlite.
migrations`), in PostgreSQL's types: milliseconds as ``BIGINT``, flags as ``BOOLEAN``,
a batch's events as a ``BIGINT[]`` instead of a JSON array, duplicates found through a
unique index on ``event_id`` (PostgreSQL's B-tree pages are written once per
checkpoint, not per commit, so SQLite's 64-bit hash buys nothing here).
"""

from __future__ import annotations

from typing import Final

#: ``pg_advisory_lock`` key of the migrations: "almhookd" in ASCII.
MIGRATION_LOCK: Final = int.from_bytes(b"almhookd", "big") >> 1

SCHEMA_TABLE: Final = """
CREATE TABLE IF NOT EXISTS almhookd_schema (
    version    INTEGER     PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE events (
        seq            BIGINT  PRIMARY KEY,  -- ingest order
        event_id       TEXT    NOT NULL UNIQUE,
        event_name     TEXT    NOT NULL,
        account_id     BIGINT  NOT NULL,
        timestamp_ms   BIGINT  NOT NULL,
        realtime       BOOLEAN NOT NULL,
        ingested_at_ms BIGINT  NOT NULL,
        body           TEXT    NOT NULL      -- the event object exactly as delivered
    );
    CREATE INDEX events_by_ingest_time ON events (ingested_at_ms);

    CREATE TABLE webhooks (
        id                   TEXT    PRIMARY KEY,
        name                 TEXT    NOT NULL UNIQUE,
        description          TEXT    NOT NULL DEFAULT '',
        target_url           TEXT    NOT NULL,
        auth_type            TEXT    NOT NULL DEFAULT 'none'
                                     CHECK (auth_type IN ('none', 'basic', 'signature')),
        auth_username        TEXT,
        auth_password        TEXT,
        contact_email        TEXT    NOT NULL DEFAULT '',
        status               TEXT    NOT NULL DEFAULT 'active'
                                     CHECK (status IN ('active', 'inactive', 'disabled')),
        disabled_reason      TEXT,
        created_at_ms        BIGINT  NOT NULL,
        updated_at_ms        BIGINT  NOT NULL,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        failing_since_ms     BIGINT,
        next_attempt_at_ms   BIGINT,
        last_success_at_ms   BIGINT,
        last_error           TEXT,
        last_reminder_at_ms  BIGINT
    );

    CREATE TABLE webhook_events (
        event_name TEXT NOT NULL,
        webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        PRIMARY KEY (event_name, webhook_id)
    );

    CREATE TABLE signing_secrets (
        webhook_id    TEXT   NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        secret        TEXT   NOT NULL,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT,
        PRIMARY KEY (webhook_id, created_at_ms)
    );

    -- One row per request body: its id is the webhook-id header, the same on every retry.
    CREATE TABLE request_batches (
        id            TEXT     PRIMARY KEY,
        claim_order   BIGINT   GENERATED ALWAYS AS IDENTITY,  -- SQLite's rowid
        webhook_id    TEXT     NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        created_at_ms BIGINT   NOT NULL,
        attempts      INTEGER  NOT NULL DEFAULT 0,
        state         TEXT     NOT NULL DEFAULT 'sending'
                               CHECK (state IN ('sending', 'delivered', 'expired')),
        event_seqs    BIGINT[]  -- ingest order
    );
    CREATE INDEX request_batches_sending ON request_batches (webhook_id)
        WHERE state = 'sending';

    CREATE TABLE deliveries (
        webhook_id      TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        event_seq       BIGINT  NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
        state           TEXT    NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'expired')),
        due_at_ms       BIGINT,   -- non-real-time events: released by the batch flush
        attempts        INTEGER NOT NULL DEFAULT 0,
        batch_id        TEXT,     -- the request that delivered it
        delivered_at_ms BIGINT,
        realtime        BOOLEAN NOT NULL DEFAULT TRUE,
        PRIMARY KEY (webhook_id, event_seq)
    );
    CREATE INDEX deliveries_ready ON deliveries (webhook_id, event_seq)
        INCLUDE (due_at_ms, state, realtime)
        WHERE state = 'pending' AND due_at_ms IS NOT NULL;
    CREATE INDEX deliveries_held ON deliveries (webhook_id, event_seq)
        WHERE state = 'pending' AND due_at_ms IS NULL;
    CREATE INDEX deliveries_by_event ON deliveries (event_seq);

    CREATE VIEW sending AS
        SELECT b.webhook_id, s.event_seq, b.id AS batch_id
        FROM request_batches AS b CROSS JOIN LATERAL unnest(b.event_seqs) AS s (event_seq)
        WHERE b.state = 'sending';
    CREATE VIEW delivery_states AS
        SELECT d.webhook_id, d.event_seq, d.due_at_ms, d.attempts, d.delivered_at_ms,
               coalesce(d.batch_id, s.batch_id) AS batch_id,
               CASE WHEN s.batch_id IS NOT NULL THEN 'sending' ELSE d.state END AS state
        FROM deliveries AS d LEFT JOIN sending AS s
            ON s.webhook_id = d.webhook_id AND s.event_seq = d.event_seq
            AND d.state = 'pending';

    -- The request log: one row per HTTP attempt.
    CREATE TABLE attempts (
        id            BIGINT  GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,  -- ids copied in
        webhook_id    TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        batch_id      TEXT,
        started_at_ms BIGINT  NOT NULL,
        duration_ms   BIGINT,
        event_count   INTEGER NOT NULL,
        status        INTEGER,
        error         TEXT,
        response_body TEXT
    );
    CREATE INDEX attempts_by_webhook ON attempts (webhook_id, id);

    -- Daemon state that must survive a restart, such as the last batch flush.
    CREATE TABLE daemon_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: the processes sharing the database, and which of them delivers to which webhook
    # (domain.ownership). Times are the server's clock (milliseconds since the epoch),
    # so that processes on machines whose clocks differ agree on when a lease ends.
    """
    CREATE TABLE processes (
        id              TEXT    PRIMARY KEY,  -- random per start, never a host name
        host            TEXT    NOT NULL,
        pid             INTEGER NOT NULL,
        started_at_ms   BIGINT  NOT NULL,
        heartbeat_at_ms BIGINT  NOT NULL
    );
    CREATE TABLE webhook_leases (
        webhook_id    TEXT   PRIMARY KEY REFERENCES webhooks (id) ON DELETE CASCADE,
        owner         TEXT,                      -- a processes.id; NULL: released
        fence         BIGINT NOT NULL DEFAULT 0, -- +1 at every new owner
        expires_at_ms BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX webhook_leases_by_owner ON webhook_leases (owner);
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
