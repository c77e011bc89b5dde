//! The store's errors: every way opening, writing, reading or verifying the
//! findings database can fail, each with a message that says what to fix.
//!
//! Tampering found by verification is not an error (it is a finding of the
//! verification, in `chain::ChainReport`); errors here are "could not do it".

use std::path::PathBuf;

pub use super::db::DbError;

/// What went wrong in the findings store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot open the findings database at {}: {source} (is the directory writable? is another kaudit writing it?)",
        path.display()
    )]
    Open { path: PathBuf, source: DbError },
    #[error(
        "cannot connect to the PostgreSQL findings store {url}: {cause} (is the server up, the URL right, the password current?)"
    )]
    Connect { url: String, cause: DbError },
    #[error(
        "the findings database at {} is locked: {source} (is another kaudit writing it?)",
        path.display()
    )]
    Locked { path: PathBuf, source: DbError },
    #[error(
        "cannot upgrade the findings database at {} to schema version {version}: {source} (restore it from a backup, or move it away to start a new one)",
        path.display()
    )]
    Migrate {
        path: PathBuf,
        version: u32,
        source: DbError,
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
        source: DbError,
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

/// Wraps a database error with what the store was doing.
pub(crate) fn sql<E: Into<DbError>>(action: &'static str) -> impl FnOnce(E) -> Error {
    move |source| Error::Sqlite {
        action,
        source: source.into(),
    }
}

impl From<DbError> for Error {
    fn from(source: DbError) -> Error {
        Error::Sqlite {
            action: "run a statement",
            source,
        }
    }
}
