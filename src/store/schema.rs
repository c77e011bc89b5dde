//! The database schema and its versioned migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`. `MIGRATIONS[i]`
//! takes a database from version `i` to `i + 1`; each runs, in order, in its
//! own transaction together with the version bump, so a failed upgrade
//! leaves the database at the previous version. Never edit a migration that
//! has shipped: add a new one.
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

use rusqlite::Connection;

use super::Error;

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
];

/// The schema version this kaudit writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Reads the schema version of an open database.
pub(crate) fn version(conn: &Connection) -> Result<u32, rusqlite::Error> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Brings the database up to [`SCHEMA_VERSION`], one migration per
/// transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    let found = version(conn).map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    if found > SCHEMA_VERSION {
        return Err(Error::TooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let to = i as u32 + 1;
        let err = |source| Error::Migrate {
            path: path.to_owned(),
            version: to,
            source,
        };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", to).map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(path = %path.display(), version = to, "findings database schema upgraded");
    }
    Ok(())
}
