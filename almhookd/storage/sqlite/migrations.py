"""The database schema as an ordered list of migrations.

Migration ``n`` (1-based) brings a database from ``PRAGMA user_version = n - 1`` to
``n``. Released migrations are never edited: a change is a new entry at the end.
"""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: events, webhooks and the per-(webhook, event) delivery state.
    """
    CREATE TABLE events (
        seq            INTEGER PRIMARY KEY,  -- ingest order
        event_key      INTEGER NOT NULL,     -- 64-bit hash of event_id, see store.event_key
        event_id       TEXT    NOT NULL,
        event_name     TEXT    NOT NULL,
        account_id     INTEGER NOT NULL,
        timestamp_ms   INTEGER NOT NULL,
        realtime       INTEGER NOT NULL,
        ingested_at_ms INTEGER NOT NULL,
        body           TEXT    NOT NULL      -- the event object exactly as delivered
    );
    CREATE INDEX events_by_ingest_time ON events (ingested_at_ms);
    -- Duplicates are found through an 8-byte hash rather than a unique index on the id
    -- text: random UUID keys dirty far fewer index pages per commit. The writer, the only
    -- one to insert, compares the ids themselves, so a hash collision costs nothing.
    CREATE INDEX events_by_key ON events (event_key);

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
        created_at_ms        INTEGER NOT NULL,
        updated_at_ms        INTEGER NOT NULL,
        -- the subscriber's retry schedule: one per webhook, not per event
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        failing_since_ms     INTEGER,
        next_attempt_at_ms   INTEGER,
        last_success_at_ms   INTEGER,
        last_error           TEXT,
        last_reminder_at_ms  INTEGER
    );

    CREATE TABLE webhook_events (
        event_name TEXT NOT NULL,
        webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        PRIMARY KEY (event_name, webhook_id)
    ) WITHOUT ROWID;

    CREATE TABLE signing_secrets (
        webhook_id    TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        secret        TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER,  -- set when a rotation retires it after a grace period
        PRIMARY KEY (webhook_id, created_at_ms)
    ) WITHOUT ROWID;

    -- One row per request body: its id is the webhook-id header, the same on every retry.
    CREATE TABLE request_batches (
        id            TEXT    PRIMARY KEY,
        webhook_id    TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        created_at_ms INTEGER NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        state         TEXT    NOT NULL DEFAULT 'sending'
                              CHECK (state IN ('sending', 'delivered', 'expired'))
    );
    CREATE INDEX request_batches_by_webhook ON request_batches (webhook_id, state);

    CREATE TABLE deliveries (
        webhook_id      TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        event_seq       INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
        state           TEXT    NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'sending', 'delivered', 'expired')),
        due_at_ms       INTEGER,  -- non-real-time events: released by the batch flush
        attempts        INTEGER NOT NULL DEFAULT 0,
        batch_id        TEXT    REFERENCES request_batches (id) ON DELETE SET NULL,
        delivered_at_ms INTEGER,
        PRIMARY KEY (webhook_id, event_seq)
    ) WITHOUT ROWID;
    -- Due now or at a known time (real-time events, released batch events), in order.
    CREATE INDEX deliveries_ready ON deliveries (webhook_id, event_seq)
        WHERE state = 'pending' AND due_at_ms IS NOT NULL;
    -- Non-real-time events waiting for the batch scheduler to release them.
    CREATE INDEX deliveries_held ON deliveries (webhook_id, event_seq)
        WHERE state = 'pending' AND due_at_ms IS NULL;
    CREATE INDEX deliveries_by_batch ON deliveries (batch_id) WHERE batch_id IS NOT NULL;
    -- Not yet acknowledged (backlog counts), and by event (event lookups, expiry, and the
    -- cascade when pruning deletes events).
    CREATE INDEX deliveries_outstanding ON deliveries (webhook_id)
        WHERE state IN ('pending', 'sending');
    CREATE INDEX deliveries_by_event ON deliveries (event_seq);


    -- The request log: one row per HTTP attempt.
    CREATE TABLE attempts (
        id            INTEGER PRIMARY KEY,
        webhook_id    TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        batch_id      TEXT,
        started_at_ms INTEGER NOT NULL,
        duration_ms   INTEGER,
        event_count   INTEGER NOT NULL,
        status        INTEGER,  -- HTTP status; NULL when no answer came
        error         TEXT,
        response_body TEXT
    );
    CREATE INDEX attempts_by_webhook ON attempts (webhook_id, id);

    -- Daemon state that must survive a restart, such as the last batch flush.
    CREATE TABLE daemon_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: a request batch lists its events, and a claim writes that one row: the events'
    # own rows change once, when delivered. "Sending" is no longer a state of deliveries
    # but membership of a batch being sent (the delivery_states view shows it), and
    # batch_id, set on delivery, loses its foreign key and index.
    """
    ALTER TABLE request_batches ADD COLUMN event_seqs TEXT;  -- JSON array, ingest order
    UPDATE request_batches SET event_seqs = (
        SELECT json_group_array(event_seq) FROM (
            SELECT event_seq FROM deliveries
            WHERE batch_id = request_batches.id AND state = 'sending' ORDER BY event_seq
        )
    ) WHERE state = 'sending';
    DROP INDEX request_batches_by_webhook;
    CREATE INDEX request_batches_sending ON request_batches (webhook_id)
        WHERE state = 'sending';

    CREATE TABLE deliveries_2 (
        webhook_id      TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        event_seq       INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
        state           TEXT    NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'expired')),
        due_at_ms       INTEGER,  -- non-real-time events: released by the batch flush
        attempts        INTEGER NOT NULL DEFAULT 0,
        batch_id        TEXT,     -- the request that delivered it
        delivered_at_ms INTEGER,
        PRIMARY KEY (webhook_id, event_seq)
    ) WITHOUT ROWID;
    INSERT INTO deliveries_2 (webhook_id, event_seq, state, due_at_ms, attempts, batch_id,
                              delivered_at_ms)
        SELECT webhook_id, event_seq,
               CASE state WHEN 'sending' THEN 'pending' ELSE state END,
               due_at_ms, attempts, CASE state WHEN 'delivered' THEN batch_id END,
               delivered_at_ms
        FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_2 RENAME TO deliveries;
    -- Due now or at a known time (real-time events, released batch events), in order;
    -- a claim skips those in batches being sent. With the held ones below they are all
    -- the outstanding deliveries: no third index to rewrite on each acknowledgement.
    CREATE INDEX deliveries_ready ON deliveries (webhook_id, event_seq)
        WHERE state = 'pending' AND due_at_ms IS NOT NULL;
    CREATE INDEX deliveries_held ON deliveries (webhook_id, event_seq)
        WHERE state = 'pending' AND due_at_ms IS NULL;
    CREATE INDEX deliveries_by_event ON deliveries (event_seq);

    -- The events of the batches being sent, and the state as the API shows it: a pending
    -- delivery in a batch being sent is "sending", with that batch's id.
    CREATE VIEW sending AS
        SELECT b.webhook_id, j.value AS event_seq, b.id AS batch_id
        FROM request_batches AS b INDEXED BY request_batches_sending, json_each(b.event_seqs) AS j
        WHERE b.state = 'sending';
    CREATE VIEW delivery_states AS
        SELECT d.webhook_id, d.event_seq, d.due_at_ms, d.attempts, d.delivered_at_ms,
               coalesce(d.batch_id, s.batch_id) AS batch_id,
               CASE WHEN s.batch_id IS NOT NULL THEN 'sending' ELSE d.state END AS state
        FROM deliveries AS d LEFT JOIN sending AS s
            ON s.webhook_id = d.webhook_id AND s.event_seq = d.event_seq
            AND d.state = 'pending';
    """,
    # 3: the ready index carries the delivery's state and due time, so a claim and the
    # check of what is pending below the batches being sent read the index alone,
    # without a lookup of each row in the table.
    """
    DROP INDEX deliveries_ready;
    CREATE INDEX deliveries_ready ON deliveries (webhook_id, event_seq, due_at_ms, state)
        WHERE state = 'pending' AND due_at_ms IS NOT NULL;
    """,
    # 4: a delivery knows its event's kind, and the ready index carries it, so a
    # webhook's backlog by kind is counted in the two indexes of pending deliveries alone,
    # without looking up each event (a held delivery is always of a batch event).
    """
    ALTER TABLE deliveries ADD COLUMN realtime INTEGER NOT NULL DEFAULT 1;
    UPDATE deliveries SET realtime = 0
        WHERE event_seq IN (SELECT seq FROM events WHERE realtime = 0);
    DROP INDEX deliveries_ready;
    CREATE INDEX deliveries_ready ON deliveries (webhook_id, event_seq, due_at_ms, state, realtime)
        WHERE state = 'pending' AND due_at_ms IS NOT NULL;
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
