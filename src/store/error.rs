//! The store's errors: every way opening, writing, reading or verifying the
//! findings database can fail, each with a message that says what to fix.
//!
//! Tampering found by verification is not an error (it is a finding of the
//! verification, in `chain::ChainReport`); errors here are "could not do it".

use std::path::PathBuf;

/// What went wrong in the findings store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot open the findings database at {}: {source} (is the directory writable? is another kaudit writing it?)",
        path.display()
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the findings database at {} is locked: {source} (is another kaudit writing it?)",
        path.display()
    )]
    Locked {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "cannot upgrade the findings database at {} to schema version {version}: {source} (restore it from a backup, or move it away to start a new one)",
        path.display()
    )]
    Migrate {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    #[error(
        "the findings database at {} has schema version {found}, newer than this kaudit understands ({supported}): run a newer kaudit",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot {action} in the findings database: {source}")]
    Sqlite {
        action: &'static str,
        source: rusqlite::Error,
    },
    #[error("cannot encode finding {id} as canonical JSON: {source}")]
    Canonical {
        id: String,
        source: serde_json::Error,
    },
    #[error("cannot store finding {id}: {reason}")]
    InvalidFinding { id: String, reason: &'static str },
    #[error(
        "row {seq} of the findings database is unreadable: {what} (run `kaudit verify --db` to see what changed)"
    )]
    Corrupt { seq: u64, what: String },
    #[error("invalid chain checkpoint: {0}")]
    Checkpoint(String),
    #[error("refusing to sign the chain head: {0}")]
    Tampered(String),
}

/// Wraps a rusqlite error with what the store was doing.
pub(crate) fn sql(action: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |source| Error::Sqlite { action, source }
}

/// True when SQLite gave up waiting for another connection's lock.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
