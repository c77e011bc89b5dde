//! The findings store: SQLite (WAL), behind the narrow interface of
//! [`Store`] (DESIGN.md, "The store is behind a narrow interface").
//!
//! What it owns:
//! - one write path, [`Store::commit`]: a [`Batch`]'s findings, quarantine
//!   rows, coverage counts and source checkpoints in ONE transaction
//!   (DESIGN.md principle 1: a source acks only after this returns), with
//!   duplicates recognised by (cluster, audit_id, rule_id) and reported as
//!   [`Inserted::Duplicate`] (principle 2: one alert per finding);
//! - the hash chain over the findings and its verification (`chain`), signed
//!   chain checkpoints (`checkpoint`) and the Ed25519 keys that sign them
//!   (`keys`);
//! - reads: filtered queries, the chain rows and coverage an export needs
//!   (`query`); retention (`retention`); the schema (`schema`).
//!
//! It leaves rendering, alert delivery and export formats to others.
//! One task owns a `Store` (STYLE "For kaudit" 9); it is `Send`, not `Sync`.
//!
//! # The hash chain
//!
//! Rows are numbered `seq = 1, 2, 3, ...` in the order they were committed.
//! For each row:
//!
//! ```text
//! canonical = RFC 8785 (JCS) serialisation of the finding JSON, UTF-8
//! hash      = lowercase_hex( SHA-256( unhex(prev_hash) || canonical ) )
//! ```
//!
//! where `unhex(prev_hash)` is the 32 raw bytes of the previous row's hash,
//! and the first row's `prev_hash` is 64 `0` characters (32 zero bytes), or,
//! after retention pruned the oldest rows, the hash of the last pruned row
//! (the anchor). An auditor recomputes it from an export with e.g.
//! `hashlib.sha256(bytes.fromhex(prev_hash) + canonical.encode()).hexdigest()`.

mod batch;
mod canonical;
pub mod chain;
pub mod checkpoint;
pub(crate) mod db;
mod error;
mod instances;
pub mod keys;
mod outbox;
mod query;
mod retention;
mod schema;
mod silence;
#[cfg(test)]
mod tests_postgres;
#[cfg(test)]
pub(crate) mod testutil;
mod triage;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use db::{Begin, Conn, DbError};
pub use db::{Dialect, is_postgres_url, redact_url};

pub use batch::{
    Batch, CoverageDelta, Inserted, QUARANTINE_RAW_CAP, QuarantineRow, SourceCheckpoint,
};
pub use chain::{ChainProblem, ChainReport, ProblemKind, ZERO_HASH, canonical_json, link_hash};
pub use checkpoint::{ChainCheckpoint, CheckpointLine, PruneRecord, check_anchor};
pub use error::Error;
pub use instances::SPLIT_WINDOW;
pub use outbox::{AlertState, DeliverySummary, OutboxItem, instance};
pub use query::{ChainRow, CoverageRow, Filter, StoredFinding};
pub use retention::{Anchor, PruneReport};
pub use schema::SCHEMA_VERSION;
pub use silence::Silence;
pub use triage::{Triage, TriageAction};

/// How long a write waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Page size of new databases, bytes.
const PAGE_SIZE: i64 = 8 * 1024;
/// Page cache per connection, KiB (bounded memory: DESIGN.md principle 4).
const CACHE_KIB: i64 = 32 * 1024;

/// An open findings database: a SQLite file, or a PostgreSQL database
/// that several instances share.
pub struct Store {
    conn: Conn,
    /// The SQLite file, or the PostgreSQL URL with its password hidden.
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the findings database at `path` and brings
    /// its schema up to date.
    ///
    /// # Errors
    /// When the file cannot be opened or is not a SQLite database, when
    /// another process holds its lock longer than the busy timeout, when a
    /// migration fails, or when the schema is newer than this kaudit.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, Error> {
        let path = path.as_ref().to_owned();
        if let Some(url) = path.to_str().filter(|p| is_postgres_url(p)) {
            return Store::open_postgres(url);
        }
        let open_err = |source: rusqlite::Error| {
            let source = DbError::from(source);
            if source.is_busy() {
                Error::Locked {
                    path: path.clone(),
                    source,
                }
            } else {
                Error::Open {
                    path: path.clone(),
                    source,
                }
            }
        };
        create_private(&path).map_err(|e| Error::Open {
            path: path.clone(),
            source: DbError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("cannot create the file with mode 0600: {e}")),
            )),
        })?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // 8 KiB pages: a finding row (its canonical JSON with the evidence)
        // is typically 2–3 KiB, so with the default 4 KiB page most rows
        // would take a page of their own; larger pages cost more on the
        // random-keyed unique indexes, whose every touched page is rewritten
        // to the WAL (measured with examples/store_bench: 8 KiB beat 16 KiB
        // by 20% at 1M findings). Only takes effect on a new file.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(open_err)?;
        // WAL: readers (queries, exports, `kaudit findings`) never block the
        // writer, and a commit is one sequential append.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode = %mode, "findings database is not in WAL mode");
        }
        // synchronous=FULL: a commit is on disk (the WAL fsync'd) before
        // commit returns, because sources acknowledge input right after it
        // (DESIGN principle 1: nothing is lost, power loss included). With
        // NORMAL, an OS crash could roll back commits whose Kafka offsets
        // were already committed. Batching keeps the cost to one fsync per
        // batch.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        // The unique indexes are keyed by hashes and audit ids, i.e. random:
        // keep more of them in memory than SQLite's 2 MiB default.
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let conn = Conn::Sqlite(conn);
        schema::migrate(&conn, &path)?;
        tracing::debug!(path = %path.display(), "findings database open");
        Ok(Store { conn, path })
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://...`) and
    /// brings its schema up to date; instances starting together migrate
    /// one at a time.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses the login, when a
    /// migration fails, or when the schema is newer than this kaudit.
    pub fn open_postgres(url: &str) -> Result<Store, Error> {
        let shown = redact_url(url);
        let conn = Conn::postgres(url).map_err(|cause| Error::Connect {
            url: shown.clone(),
            cause,
        })?;
        let path = PathBuf::from(&shown);
        schema::migrate(&conn, &path)?;
        tracing::debug!(store = %shown, "findings database open");
        Ok(Store { conn, path })
    }

    /// Which engine holds this store.
    pub fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }

    /// Shrinks SQLite's page cache to `kib` KiB (a one-off `scan`, which
    /// mostly appends, keeps its peak memory small); nothing on PostgreSQL.
    pub fn limit_cache(&self, kib: i64) -> Result<(), Error> {
        if self.conn.dialect() == Dialect::Sqlite {
            self.conn
                .execute_batch(&format!("PRAGMA cache_size = -{}", kib.max(0)))
                .map_err(error::sql("set the page cache size"))?;
        }
        Ok(())
    }

    /// Whether the database still answers (`/readyz`).
    pub fn is_alive(&self) -> bool {
        self.conn.is_alive()
    }

    /// Where this database lives: the SQLite file, or the PostgreSQL URL
    /// with its password hidden.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, Error> {
        schema::version(&self.conn).map_err(error::sql("read the schema version"))
    }

    /// Runs `f` inside one read transaction, so every read it makes sees
    /// the same snapshot of the database even while another connection
    /// commits (SQLite WAL; PostgreSQL REPEATABLE READ). Rolled back when
    /// `f` fails.
    ///
    /// # Errors
    /// `f`'s error, or the database error of starting or ending the
    /// transaction.
    pub fn read_snapshot<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        self.conn
            .begin(Begin::Read)
            .map_err(error::sql("start a read transaction"))?;
        match f(self) {
            Ok(v) => {
                self.conn
                    .commit()
                    .map_err(error::sql("end a read transaction"))?;
                Ok(v)
            }
            Err(e) => {
                if let Err(err) = self.conn.rollback() {
                    tracing::warn!(error = %err, "cannot roll back a read transaction");
                }
                Err(e)
            }
        }
    }

    /// The underlying connection, for tests that tamper with rows.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }
}

/// Creates `path` empty with mode 0600 when it does not exist, so that
/// SQLite (which gives the -wal and -shm files the database file's mode)
/// never makes the findings readable by other users.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The current wall-clock time in unix seconds.
pub(crate) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn the_page_cache_can_be_limited() {
        let (_dir, store) = temp_store();
        store.limit_cache(8 * 1024).unwrap();
        if store.dialect() == Dialect::Sqlite {
            let kib: i64 = store
                .conn
                .query_row("PRAGMA cache_size", db::params![], |r| r.get(0))
                .unwrap();
            assert_eq!(kib, -8 * 1024);
        }
    }

    #[test]
    fn open_creates_schema_and_reopen_keeps_everything() {
        let (dir, mut store) = temp_store();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let batch = Batch {
            findings: (0..5)
                .map(|i| finding("c1", &format!("a{i}"), "pod-exec"))
                .collect(),
            ..Batch::default()
        };
        store.commit(&batch).unwrap();
        let head = store.verify_chain().unwrap().head;
        let again = reopen(&dir, &store);
        drop(store);
        assert_eq!(again.schema_version().unwrap(), SCHEMA_VERSION);
        let report = again.verify_chain().unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.rows, 5);
        assert_eq!(report.head, head);
        assert_eq!(again.query(&Filter::default(), None).unwrap().len(), 5);
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaudit.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, Error::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("run a newer kaudit"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaudit.db");
        std::fs::write(&path, b"this is not sqlite, just some text that is long enough ........................................................").unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot open the findings database"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_new_database_and_its_wal_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kaudit.db");
        let mut store = Store::open(&path).unwrap();
        store
            .commit(&Batch {
                findings: vec![finding("c1", "a1", "pod-exec")],
                ..Batch::default()
            })
            .unwrap();
        for name in ["kaudit.db", "kaudit.db-wal", "kaudit.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
    }

    #[test]
    fn reads_in_one_snapshot_do_not_see_a_concurrent_commit() {
        let (dir, mut writer) = temp_store();
        let commit = |w: &mut Store, id: &str| {
            w.commit(&Batch {
                findings: vec![finding("c1", id, "pod-exec")],
                ..Batch::default()
            })
            .unwrap();
        };
        commit(&mut writer, "a1");
        let reader = reopen(&dir, &writer);
        let (before, after, report) = reader
            .read_snapshot(|s| -> Result<_, Error> {
                let before = s.query(&Filter::default(), None)?.len();
                commit(&mut writer, "a2");
                let after = s.query(&Filter::default(), None)?.len();
                Ok((before, after, s.verify_chain()?))
            })
            .unwrap();
        assert_eq!((before, after, report.rows), (1, 1, 1));
        // Outside the snapshot, the new row is seen; an error rolls back and
        // leaves the connection usable.
        assert_eq!(reader.query(&Filter::default(), None).unwrap().len(), 2);
        let e: Result<(), Error> = reader.read_snapshot(|_| Err(Error::Checkpoint("stop".into())));
        assert!(e.is_err());
        assert_eq!(
            reader
                .read_snapshot(|s| s.query(&Filter::default(), None))
                .unwrap()
                .len(),
            2
        );
    }
}
