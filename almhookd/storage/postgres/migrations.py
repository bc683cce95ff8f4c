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

from almhookd.storage.postgres.notices import CHANNEL

#: ``pg_advisory_lock`` key of the migrations: "almhookd" in ASCII.
MIGRATION_LOCK: Final = int.from_bytes(b"almhookd", "big") >> 1

#: ``pg_advisory_xact_lock`` key held by each ingest transaction while it numbers its
#: events: "ingest" in ASCII (:mod:`almhookd.storage.postgres.events`).
INGEST_LOCK: Final = int.from_bytes(b"ingest", "big")

#: The server's clock in milliseconds since the epoch (not the transaction's start).
SERVER_NOW_SQL: Final = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

#: Planner settings of the functions of migration 3, for their statements only: a
#: lookup of a few rows by key must stay an index probe whatever the statistics say.
#: A table filled since its last ANALYZE (the first minute of a new install, until
#: autovacuum's next round) is estimated nearly empty, and a plan made then, cached
#: for the session, scanned the whole table at every call: measured, a delivery's
#: mark scanning all of its webhook's deliveries and the duplicate check hashing every
#: stored event, at each call (``bench.delivery``, 2026-12-01).
#: And no JIT: a path left only with a disabled scan (the cursors' maximum, a table of
#: one row per webhook) costs 10^10, far above ``jit_above_cost``, and compiling took
#: 46-90 ms at each append (``bench.delivery``: 1,748 → 328 events/s).
INDEX_PROBES: Final = (
    "SET enable_seqscan = off SET enable_bitmapscan = off"
    " SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off"
)

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
    # 3: the two hot writes as server-side functions, one round trip each, their
    # statements planned as index probes (INDEX_PROBES); the claim cursors.
    #
    # almhookd_append (events.py): a group of appended events, one round trip instead
    # of nine (each costs the daemon about 45 us of CPU and the server 17 us). Arrays
    # in, one per column, in call order; out: the 1-based positions of the events
    # stored (the others were duplicates: of an earlier event, or of one earlier in the
    # arrays). Statements in a volatile function each take a new snapshot, so the
    # duplicates and the last seq are read after the lock is taken.
    #
    # almhookd_record (outbox.py): a worker's attempts recorded, its acknowledged
    # deliveries marked by primary-key probes, its schedule stored; false, and
    # nothing written, when the fence says this process no longer holds the lease.
    f"""
    CREATE FUNCTION almhookd_append(
        given_ids TEXT[], given_names TEXT[], given_accounts BIGINT[],
        given_timestamps BIGINT[], given_realtime BOOLEAN[], given_bodies TEXT[],
        given_now_ms BIGINT, given_notice TEXT
    ) RETURNS INTEGER[] LANGUAGE plpgsql {INDEX_PROBES} AS $$
    DECLARE
        first_seq BIGINT;
        stored INTEGER[];
    BEGIN
        -- Acknowledged means on disk, whatever the session's or the server's default.
        PERFORM set_config('synchronous_commit', 'on', true);
        -- Held to the commit: seqs become visible in increasing order across processes.
        PERFORM pg_advisory_xact_lock({INGEST_LOCK});
        -- Above every claim cursor too: events pruned to none must not bring seqs
        -- back below a cursor, where no forward claim would find them.
        SELECT greatest((SELECT max(seq) FROM events),
                        (SELECT max(after_seq) FROM claim_cursors), 0) + 1
        INTO first_seq;
        WITH given AS (
            SELECT * FROM unnest(given_ids, given_names, given_accounts, given_timestamps,
                given_realtime, given_bodies)
                WITH ORDINALITY AS g (id, name, account, at_ms, realtime, body, position)
        ), fresh AS (
            SELECT DISTINCT ON (g.id) g.* FROM given AS g
            WHERE NOT EXISTS (SELECT FROM events AS e WHERE e.event_id = g.id)
            ORDER BY g.id, g.position
        ), numbered AS (
            SELECT first_seq - 1 + row_number() OVER (ORDER BY f.position) AS seq, f.*
            FROM fresh AS f
        ), inserted AS (
            INSERT INTO events (seq, event_id, event_name, account_id, timestamp_ms,
                realtime, ingested_at_ms, body)
            SELECT n.seq, n.id, n.name, n.account, n.at_ms, n.realtime, given_now_ms, n.body
            FROM numbered AS n
        )
        SELECT array_agg(n.position::INTEGER ORDER BY n.position) INTO stored
        FROM numbered AS n;
        IF stored IS NULL THEN
            RETURN '{{}}';
        END IF;
        -- Real-time deliveries are due now; batch ones are held (due NULL) for the
        -- batch flush. A webhook being deleted now is waited for, then skipped,
        -- instead of failing the ingest on its foreign key.
        INSERT INTO deliveries (webhook_id, event_seq, due_at_ms, realtime)
        SELECT s.webhook_id, e.seq, CASE WHEN e.realtime THEN given_now_ms END, e.realtime
        FROM events AS e
        JOIN webhook_events AS s ON s.event_name = e.event_name
        JOIN webhooks AS w ON w.id = s.webhook_id AND w.status = 'active'
        WHERE e.seq >= first_seq
        FOR KEY SHARE OF w;
        PERFORM pg_notify('{CHANNEL}', given_notice);
        RETURN stored;
    END
    $$;

    -- Each webhook's claim cursor (outbox.py): every delivery above after_seq was never
    -- claimed, so a claim reads forward from it; deliveries made due again at or below
    -- it (a replay, the batch flush, a batch dissolved by expiry, a new owner starting)
    -- set rewound_from, the lowest of them, and the next claim looks from there around
    -- the batches being sent. Finding them by a scan from the webhook's first delivery
    -- instead walked every delivery acknowledged since the last vacuum (their entries
    -- stay in the partial index until then): 64 ms a claim at 500,000 deliveries.
    CREATE TABLE claim_cursors (
        webhook_id   TEXT   PRIMARY KEY REFERENCES webhooks (id) ON DELETE CASCADE,
        after_seq    BIGINT NOT NULL DEFAULT 0,
        rewound_from BIGINT
    );

    -- The fence (leases.check_lease, and almhookd_record's first step): whether the
    -- process still holds the webhook's lease under this fence, unexpired in the
    -- server's clock; the lease row stays locked against a takeover until the calling
    -- transaction ends.
    CREATE FUNCTION almhookd_holds_lease(
        given_webhook TEXT, given_owner TEXT, given_fence BIGINT
    ) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM FROM webhook_leases WHERE webhook_id = given_webhook
            AND owner = given_owner AND fence = given_fence
            AND expires_at_ms > {SERVER_NOW_SQL} FOR SHARE;
        RETURN FOUND;
    END
    $$;

    CREATE FUNCTION almhookd_record(
        given_webhook TEXT, given_owner TEXT, given_fence BIGINT, given_now_ms BIGINT,
        attempt_batches TEXT[], attempt_started BIGINT[], attempt_durations BIGINT[],
        attempt_counts INTEGER[], attempt_statuses INTEGER[], attempt_errors TEXT[],
        attempt_bodies TEXT[], attempt_ok BOOLEAN[],
        -- each attempt's events, in ingest order: its batch's seqs are
        -- attempt_seqs[attempt_ends[i - 1] + 1 : attempt_ends[i]]
        attempt_seqs BIGINT[], attempt_ends INTEGER[],
        schedule_failures INTEGER, schedule_failing_since BIGINT,
        schedule_next_attempt BIGINT, schedule_last_success BIGINT,
        schedule_last_error TEXT, schedule_last_reminder BIGINT,
        given_disable_reason TEXT
    ) RETURNS BOOLEAN LANGUAGE plpgsql {INDEX_PROBES} AS $$
    DECLARE
        seqs BIGINT[];
        acknowledged TEXT[];
    BEGIN
        IF given_owner IS NOT NULL
            AND NOT almhookd_holds_lease(given_webhook, given_owner, given_fence) THEN
            RETURN false;
        END IF;
        INSERT INTO attempts (webhook_id, batch_id, started_at_ms, duration_ms,
            event_count, status, error, response_body)
        SELECT given_webhook, a.* FROM unnest(attempt_batches, attempt_started,
            attempt_durations, attempt_counts, attempt_statuses, attempt_errors,
            attempt_bodies) AS a;
        -- One batch at a time, each statement a probe of a primary key or of one
        -- webhook's range of seqs: a join of the arrays with the tables could be
        -- planned the wrong way round (a scan of the table per element).
        -- Each batch once, as the other backends' set-based statements count it: an
        -- attempt on it, and delivered if any of its attempts was acknowledged.
        acknowledged := ARRAY(SELECT a.id FROM unnest(attempt_batches, attempt_ok)
                              AS a (id, ok) WHERE a.ok);
        FOR i IN 1 .. coalesce(cardinality(attempt_batches), 0) LOOP
            CONTINUE WHEN attempt_batches[i] = ANY(attempt_batches[1 : i - 1]);
            UPDATE request_batches SET attempts = attempts + 1,
                state = CASE WHEN id = ANY(acknowledged) THEN 'delivered' ELSE state END
            WHERE id = attempt_batches[i];
            seqs := attempt_seqs[coalesce(attempt_ends[i - 1], 0) + 1 : attempt_ends[i]];
            IF attempt_batches[i] = ANY(acknowledged) THEN
                UPDATE deliveries SET state = 'delivered', delivered_at_ms = given_now_ms,
                    attempts = attempts + 1, batch_id = attempt_batches[i]
                WHERE webhook_id = given_webhook
                    AND event_seq BETWEEN seqs[1] AND seqs[cardinality(seqs)]
                    AND event_seq = ANY(seqs) AND state = 'pending';
            ELSE
                UPDATE deliveries SET attempts = attempts + 1
                WHERE webhook_id = given_webhook
                    AND event_seq BETWEEN seqs[1] AND seqs[cardinality(seqs)]
                    AND event_seq = ANY(seqs) AND state = 'pending';
            END IF;
        END LOOP;
        UPDATE webhooks SET consecutive_failures = schedule_failures,
            failing_since_ms = schedule_failing_since,
            next_attempt_at_ms = schedule_next_attempt,
            last_success_at_ms = schedule_last_success, last_error = schedule_last_error,
            last_reminder_at_ms = schedule_last_reminder
        WHERE id = given_webhook;
        IF given_disable_reason IS NOT NULL THEN
            UPDATE webhooks SET status = 'disabled', disabled_reason = given_disable_reason,
                updated_at_ms = given_now_ms
            WHERE id = given_webhook;
        END IF;
        RETURN true;
    END
    $$;
    """,  # noqa: S608 - only this module's constants are formatted in
    # 4: the hot tables without foreign keys to webhooks, and almhookd_record updating
    # its batches in one statement (a probe of the primary key per id in the array)
    # instead of one per batch (about 32 us each at one event per request).
    #
    # Each foreign-key check locked the webhook's row (FOR KEY SHARE), for every
    # delivery ingested, batch claimed and attempt recorded: the one row every ingest
    # and every record of that webhook locks, so most locks made a multixact. In the
    # steady state at one event per request the checks cost 10 us each, three an
    # event, and the statements around them slowed with them: the server's time per
    # event went from about 380 to 250-275 us without them (pg_stat_statements). What
    # the keys' ON DELETE CASCADE did, a trigger on webhooks does, whoever deletes (an
    # older almhookd during an upgrade too); no row of a deleted webhook is written
    # after it, as each writer locks the webhook's row or a row that cascades from it:
    # ingest its row (FOR KEY SHARE), a claim the cursor, a record its row (its first
    # write), a replay its row. deliveries keep their key to events: the events' rows
    # are not contended.
    f"""
    ALTER TABLE deliveries DROP CONSTRAINT deliveries_webhook_id_fkey;
    ALTER TABLE request_batches DROP CONSTRAINT request_batches_webhook_id_fkey;
    ALTER TABLE attempts DROP CONSTRAINT attempts_webhook_id_fkey;

    CREATE FUNCTION almhookd_webhook_deleted() RETURNS TRIGGER LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM deliveries WHERE webhook_id = OLD.id;
        DELETE FROM request_batches WHERE webhook_id = OLD.id;
        DELETE FROM attempts WHERE webhook_id = OLD.id;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER webhook_deleted AFTER DELETE ON webhooks
        FOR EACH ROW EXECUTE FUNCTION almhookd_webhook_deleted();

    CREATE OR REPLACE FUNCTION almhookd_record(
        given_webhook TEXT, given_owner TEXT, given_fence BIGINT, given_now_ms BIGINT,
        attempt_batches TEXT[], attempt_started BIGINT[], attempt_durations BIGINT[],
        attempt_counts INTEGER[], attempt_statuses INTEGER[], attempt_errors TEXT[],
        attempt_bodies TEXT[], attempt_ok BOOLEAN[],
        attempt_seqs BIGINT[], attempt_ends INTEGER[],
        schedule_failures INTEGER, schedule_failing_since BIGINT,
        schedule_next_attempt BIGINT, schedule_last_success BIGINT,
        schedule_last_error TEXT, schedule_last_reminder BIGINT,
        given_disable_reason TEXT
    ) RETURNS BOOLEAN LANGUAGE plpgsql {INDEX_PROBES} AS $$
    DECLARE
        seqs BIGINT[];
        acknowledged TEXT[];
    BEGIN
        IF given_owner IS NOT NULL
            AND NOT almhookd_holds_lease(given_webhook, given_owner, given_fence) THEN
            RETURN false;
        END IF;
        -- The schedule first: its row lock orders this record after a deletion of the
        -- webhook, which leaves nothing to write (no foreign key would refuse it).
        UPDATE webhooks SET consecutive_failures = schedule_failures,
            failing_since_ms = schedule_failing_since,
            next_attempt_at_ms = schedule_next_attempt,
            last_success_at_ms = schedule_last_success, last_error = schedule_last_error,
            last_reminder_at_ms = schedule_last_reminder
        WHERE id = given_webhook;
        IF NOT FOUND THEN
            RETURN true;
        END IF;
        INSERT INTO attempts (webhook_id, batch_id, started_at_ms, duration_ms,
            event_count, status, error, response_body)
        SELECT given_webhook, a.* FROM unnest(attempt_batches, attempt_started,
            attempt_durations, attempt_counts, attempt_statuses, attempt_errors,
            attempt_bodies) AS a;
        -- Each batch once, as the other backends' set-based statements count it: an
        -- attempt on it, and delivered if any of its attempts was acknowledged.
        acknowledged := ARRAY(SELECT a.id FROM unnest(attempt_batches, attempt_ok)
                              AS a (id, ok) WHERE a.ok);
        UPDATE request_batches SET attempts = attempts + 1,
            state = CASE WHEN id = ANY(acknowledged) THEN 'delivered' ELSE state END
        WHERE id = ANY(attempt_batches);
        -- The deliveries one batch at a time, each statement a probe of one webhook's
        -- range of seqs: a join of the arrays with the table could be planned the
        -- wrong way round (a scan of the table per element).
        FOR i IN 1 .. coalesce(cardinality(attempt_batches), 0) LOOP
            CONTINUE WHEN attempt_batches[i] = ANY(attempt_batches[1 : i - 1]);
            seqs := attempt_seqs[coalesce(attempt_ends[i - 1], 0) + 1 : attempt_ends[i]];
            IF attempt_batches[i] = ANY(acknowledged) THEN
                UPDATE deliveries SET state = 'delivered', delivered_at_ms = given_now_ms,
                    attempts = attempts + 1, batch_id = attempt_batches[i]
                WHERE webhook_id = given_webhook
                    AND event_seq BETWEEN seqs[1] AND seqs[cardinality(seqs)]
                    AND event_seq = ANY(seqs) AND state = 'pending';
            ELSE
                UPDATE deliveries SET attempts = attempts + 1
                WHERE webhook_id = given_webhook
                    AND event_seq BETWEEN seqs[1] AND seqs[cardinality(seqs)]
                    AND event_seq = ANY(seqs) AND state = 'pending';
            END IF;
        END LOOP;
        IF given_disable_reason IS NOT NULL THEN
            UPDATE webhooks SET status = 'disabled', disabled_reason = given_disable_reason,
                updated_at_ms = given_now_ms
            WHERE id = given_webhook;
        END IF;
        RETURN true;
    END
    $$;
    """,  # noqa: S608 - only this module's constants are formatted in
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
