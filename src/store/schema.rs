//! The database schema and its versioned migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version` (PostgreSQL: the
//! `kaudit_schema` table). `MIGRATIONS[i]` takes a database from version
//! `i` to `i + 1`; the pending ones run, in order, in one transaction
//! together with the version bump, so a failed upgrade leaves the database
//! at the previous version. Never edit a migration that has shipped: add a
//! new one (to both lists).
//!
//! Tables (see `mod.rs` for who writes what):
//! - `findings`: one row per finding, in chain order (`seq`), with the
//!   canonical JSON that the hash chain covers and the columns queries filter
//!   on, copied out of it. `evidence` is a virtual column read out of the
//!   stored JSON, so the evidence is kept once.
//! - `quarantine`, `coverage`, `source_checkpoints`: written with the
//!   findings of the same batch.
//! - `alert_outbox`: one row per finding and sink (the alerting issue).
//! - `detector_state`: the stateful detectors' snapshots, written with the
//!   batch whose events they have seen.
//! - `chain_checkpoints`: signed chain heads; `chain_anchor`: where the chain
//!   restarts after retention pruned its oldest rows.

use std::path::Path;

use super::Error;
use super::db::{Begin, Conn, DbError, Dialect, OptionalExt, params};

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE findings (
    seq         INTEGER PRIMARY KEY,          -- chain position, 1, 2, 3, ...
    id          TEXT NOT NULL UNIQUE,         -- finding::finding_id
    cluster     TEXT NOT NULL,
    audit_id    TEXT NOT NULL,
    rule_id     TEXT NOT NULL,
    severity    INTEGER NOT NULL CHECK (severity BETWEEN 0 AND 4), -- info=0 .. critical=4
    category    TEXT NOT NULL,
    time        TEXT,                         -- the finding's RFC 3339 time, as given
    time_unix   INTEGER,                      -- the same in unix seconds; NULL when unparseable
    user        TEXT NOT NULL,
    namespace   TEXT,
    finding     TEXT NOT NULL,                -- RFC 8785 canonical JSON: what the chain hashes
    evidence    TEXT GENERATED ALWAYS AS (json_extract(finding, '$.evidence')) VIRTUAL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    inserted_at INTEGER NOT NULL,             -- unix seconds
    UNIQUE (cluster, audit_id, rule_id)
);
CREATE INDEX findings_rule_time ON findings (rule_id, time_unix);
CREATE INDEX findings_cluster_time ON findings (cluster, time_unix);
CREATE INDEX findings_time ON findings (time_unix);
CREATE INDEX findings_severity ON findings (severity, time_unix);

CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    inserted_at INTEGER NOT NULL,
    source      TEXT NOT NULL,
    position    TEXT NOT NULL,               -- source-specific: file:offset, topic/partition/offset, ...
    kind        TEXT NOT NULL,
    error       TEXT NOT NULL,
    audit_id    TEXT,
    raw         BLOB NOT NULL,               -- at most 64 KiB of the input
    raw_len     INTEGER NOT NULL             -- the input's original length
);
CREATE INDEX quarantine_time ON quarantine (inserted_at);

CREATE TABLE coverage (
    cluster   TEXT NOT NULL,
    hour      INTEGER NOT NULL,              -- unix time of the hour's start
    source    TEXT NOT NULL,
    events    INTEGER NOT NULL DEFAULT 0,
    malformed INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (cluster, hour, source)
);
CREATE INDEX coverage_hour ON coverage (hour);

CREATE TABLE source_checkpoints (
    source     TEXT NOT NULL,
    key        TEXT NOT NULL,                -- a partition, a file identity, ...
    position   TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (source, key)
);

CREATE TABLE alert_outbox (
    finding_id      TEXT NOT NULL REFERENCES findings (id) ON DELETE CASCADE,
    sink            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    PRIMARY KEY (finding_id, sink)
);
CREATE INDEX alert_outbox_due ON alert_outbox (state, next_attempt_at);

CREATE TABLE chain_checkpoints (
    id         INTEGER PRIMARY KEY,
    seq        INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    time       INTEGER NOT NULL,             -- unix seconds, as signed
    signature  TEXT NOT NULL,                -- hex, 64 bytes
    public_key TEXT NOT NULL                 -- hex, 32 bytes
);

CREATE TABLE chain_anchor (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL,            -- the last pruned row
    hash        TEXT NOT NULL,               -- its hash: the next row's prev_hash
    pruned_rows INTEGER NOT NULL,            -- rows pruned so far, in total
    cutoff      INTEGER NOT NULL,            -- the last prune's cutoff, unix seconds
    pruned_at   INTEGER NOT NULL
);
"#,
    // 2: stateful detectors' state, written with the batch it reflects.
    r#"
CREATE TABLE detector_state (
    name       TEXT PRIMARY KEY,             -- e.g. 'token'
    state      BLOB NOT NULL,                -- the detector's own snapshot format
    updated_at INTEGER NOT NULL
);
"#,
    // 3: silences, and which findings they held back.
    r#"
CREATE TABLE silences (
    id         INTEGER PRIMARY KEY,
    rule       TEXT,
    category   TEXT,
    cluster    TEXT,
    namespace  TEXT,
    user       TEXT,
    finding    TEXT,
    expires_at INTEGER NOT NULL,             -- unix seconds
    comment    TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expired_at INTEGER                       -- ended by hand
);
CREATE TABLE silenced (
    finding_id TEXT PRIMARY KEY REFERENCES findings (id) ON DELETE CASCADE,
    silence_id INTEGER NOT NULL
);
"#,
    // 4: findings folded into an earlier alert by the dedup window.
    r#"
ALTER TABLE alert_outbox ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;
"#,
    // 5: a delivery claims its rows for a while (several processes, one store).
    r#"
ALTER TABLE alert_outbox ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
"#,
    // 6: who holds a claim (host, pid and process start), so that a process
    // restarted after a crash takes back its predecessor's claims at once.
    r#"
ALTER TABLE alert_outbox ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
"#,
    // 7: triage of findings (the console): who did what to a finding, when,
    // and why. Findings themselves never change (the chain hashes them).
    r#"
CREATE TABLE triage (
    id         INTEGER PRIMARY KEY,
    finding_id TEXT NOT NULL REFERENCES findings (id) ON DELETE CASCADE,
    action     TEXT NOT NULL CHECK (action IN ('acknowledge', 'false_positive', 'silence', 'reopen')),
    comment    TEXT NOT NULL,
    actor      TEXT NOT NULL,
    at         INTEGER NOT NULL,
    silence_id INTEGER
);
CREATE INDEX triage_finding ON triage (finding_id, id);
"#,
    // 8: the console's pages, newest first by chain position, filtered by
    // rule, cluster, user, namespace or category, stay fast on millions
    // of findings.
    r#"
CREATE INDEX IF NOT EXISTS findings_rule_seq ON findings (rule_id, seq);
CREATE INDEX IF NOT EXISTS findings_cluster_seq ON findings (cluster, seq);
CREATE INDEX IF NOT EXISTS findings_user_seq ON findings (user, seq);
CREATE INDEX IF NOT EXISTS findings_namespace_seq ON findings (namespace, seq);
CREATE INDEX IF NOT EXISTS findings_category_seq ON findings (category, seq);
"#,
    // 9: which instance last stored events of which cluster, so that a
    // cluster whose events reach two instances at once is noticed.
    r#"
CREATE TABLE cluster_instances (
    cluster   TEXT NOT NULL,
    instance  TEXT NOT NULL,
    last_seen INTEGER NOT NULL,              -- unix seconds
    PRIMARY KEY (cluster, instance)
);
"#,
];

/// PostgreSQL's schema: one migration per version from
/// [`POSTGRES_BASE`]` + 1`, the first of which creates everything SQLite's
/// migrations up to that version made (PostgreSQL stores started there).
/// A later version adds one entry here and one to [`MIGRATIONS`].
const POSTGRES_MIGRATIONS: &[&str] = &[
    // 9: the schema of SQLite version 9, in PostgreSQL's types.
    r#"
CREATE TABLE findings (
    seq         BIGINT PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    cluster     TEXT NOT NULL,
    audit_id    TEXT NOT NULL,
    rule_id     TEXT NOT NULL,
    severity    BIGINT NOT NULL CHECK (severity BETWEEN 0 AND 4),
    category    TEXT NOT NULL,
    time        TEXT,
    time_unix   BIGINT,
    "user"      TEXT NOT NULL,
    namespace   TEXT,
    finding     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    inserted_at BIGINT NOT NULL,
    UNIQUE (cluster, audit_id, rule_id)
);
CREATE INDEX findings_rule_time ON findings (rule_id, time_unix);
CREATE INDEX findings_cluster_time ON findings (cluster, time_unix);
CREATE INDEX findings_time ON findings (time_unix);
CREATE INDEX findings_severity ON findings (severity, time_unix);
CREATE INDEX findings_rule_seq ON findings (rule_id, seq);
CREATE INDEX findings_cluster_seq ON findings (cluster, seq);
CREATE INDEX findings_user_seq ON findings ("user", seq);
CREATE INDEX findings_namespace_seq ON findings (namespace, seq);
CREATE INDEX findings_category_seq ON findings (category, seq);

CREATE TABLE quarantine (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    inserted_at BIGINT NOT NULL,
    source      TEXT NOT NULL,
    position    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    error       TEXT NOT NULL,
    audit_id    TEXT,
    raw         BYTEA NOT NULL,
    raw_len     BIGINT NOT NULL
);
CREATE INDEX quarantine_time ON quarantine (inserted_at);

CREATE TABLE coverage (
    cluster   TEXT NOT NULL,
    hour      BIGINT NOT NULL,
    source    TEXT NOT NULL,
    events    BIGINT NOT NULL DEFAULT 0,
    malformed BIGINT NOT NULL DEFAULT 0,
    truncated BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (cluster, hour, source)
);
CREATE INDEX coverage_hour ON coverage (hour);

CREATE TABLE source_checkpoints (
    source     TEXT NOT NULL,
    key        TEXT NOT NULL,
    position   TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (source, key)
);

CREATE TABLE alert_outbox (
    finding_id      TEXT NOT NULL REFERENCES findings (id) ON DELETE CASCADE,
    sink            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    repeats         BIGINT NOT NULL DEFAULT 0,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (finding_id, sink)
);
CREATE INDEX alert_outbox_due ON alert_outbox (state, next_attempt_at);

CREATE TABLE chain_checkpoints (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    time       BIGINT NOT NULL,
    signature  TEXT NOT NULL,
    public_key TEXT NOT NULL
);

CREATE TABLE chain_anchor (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    pruned_rows BIGINT NOT NULL,
    cutoff      BIGINT NOT NULL,
    pruned_at   BIGINT NOT NULL
);

CREATE TABLE detector_state (
    name       TEXT PRIMARY KEY,
    state      BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE silences (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    rule       TEXT,
    category   TEXT,
    cluster    TEXT,
    namespace  TEXT,
    "user"     TEXT,
    finding    TEXT,
    expires_at BIGINT NOT NULL,
    comment    TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expired_at BIGINT
);
CREATE TABLE silenced (
    finding_id TEXT PRIMARY KEY REFERENCES findings (id) ON DELETE CASCADE,
    silence_id BIGINT NOT NULL
);

CREATE TABLE triage (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    finding_id TEXT NOT NULL REFERENCES findings (id) ON DELETE CASCADE,
    action     TEXT NOT NULL CHECK (action IN ('acknowledge', 'false_positive', 'silence', 'reopen')),
    comment    TEXT NOT NULL,
    actor      TEXT NOT NULL,
    at         BIGINT NOT NULL,
    silence_id BIGINT
);
CREATE INDEX triage_finding ON triage (finding_id, id);

CREATE TABLE cluster_instances (
    cluster   TEXT NOT NULL,
    instance  TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (cluster, instance)
);
"#,
];

/// The schema version PostgreSQL stores start from.
const POSTGRES_BASE: u32 = 8;

/// The schema version this kaudit writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;
const _: () = assert!(POSTGRES_BASE + POSTGRES_MIGRATIONS.len() as u32 == SCHEMA_VERSION);

/// Reads the schema version of an open database.
pub(crate) fn version(conn: &Conn) -> Result<u32, DbError> {
    match conn.dialect() {
        Dialect::Sqlite => conn.query_row("PRAGMA user_version", params![], |r| r.get(0)),
        Dialect::Postgres => {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS kaudit_schema (
                     id      BIGINT PRIMARY KEY CHECK (id = 1),
                     version BIGINT NOT NULL
                 )",
            )?;
            Ok(conn
                .query_row(
                    "SELECT version FROM kaudit_schema WHERE id = 1",
                    params![],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0))
        }
    }
}

fn set_version(conn: &Conn, to: u32) -> Result<(), DbError> {
    match conn.dialect() {
        Dialect::Sqlite => conn.execute_batch(&format!("PRAGMA user_version = {to}")),
        Dialect::Postgres => conn
            .execute(
                "INSERT INTO kaudit_schema (id, version) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                params![to],
            )
            .map(drop),
    }
}

/// Brings the database up to [`SCHEMA_VERSION`], one migration per
/// transaction. On PostgreSQL, instances starting together take turns.
pub(crate) fn migrate(conn: &Conn, path: &Path) -> Result<(), Error> {
    let open = |source| Error::Open {
        path: path.to_owned(),
        source,
    };
    let (list, base): (&[&str], u32) = match conn.dialect() {
        Dialect::Sqlite => (MIGRATIONS, 0),
        Dialect::Postgres => (POSTGRES_MIGRATIONS, POSTGRES_BASE),
    };
    // SQLite: an up-to-date file (every open but the first after an
    // upgrade) is not locked for writing just to find that out.
    if conn.dialect() == Dialect::Sqlite {
        let found = version(conn).map_err(open)?;
        if found == SCHEMA_VERSION {
            return Ok(());
        }
    }
    conn.begin(Begin::RowLocks).map_err(open)?;
    let run = || -> Result<(), Error> {
        conn.lock_for_migration().map_err(open)?;
        let found = version(conn).map_err(open)?;
        if found > SCHEMA_VERSION {
            return Err(Error::TooNew {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let from = found.max(base);
        for (i, sql) in list.iter().enumerate().skip((from - base) as usize) {
            let to = base + i as u32 + 1;
            let err = |source| Error::Migrate {
                path: path.to_owned(),
                version: to,
                source,
            };
            conn.execute_batch(sql).map_err(err)?;
            set_version(conn, to).map_err(err)?;
            tracing::info!(store = %path.display(), version = to, "findings database schema upgraded");
        }
        Ok(())
    };
    match run() {
        Ok(()) => {
            conn.commit().map_err(open)?;
            conn.clear_statements();
            Ok(())
        }
        Err(e) => {
            let _ = conn.rollback();
            Err(e)
        }
    }
}
