//! The hash chain over the findings: its formula, the chain head, and
//! [`Store::verify_chain`], which walks every row and names the first one
//! that was altered, deleted or inserted out of order.
//!
//! The formula (also in the module doc of `store`, for auditors):
//!
//! ```text
//! canonical = RFC 8785 (JCS) serialisation of the finding JSON, UTF-8
//! hash      = lowercase_hex( SHA-256( unhex(prev_hash) || canonical ) )
//! prev_hash of the first row = "000…0" (64 zeros), or the retention anchor's hash
//! ```
//!
//! What a chain alone proves: no row was changed, removed or moved without
//! recomputing every later hash. Whoever can write the database can do
//! that, and can cut off the tail; the signed checkpoints (`checkpoint`)
//! close both holes. Verification also checks that the columns queries
//! filter on (cluster, rule_id, time, ...) still agree with the hashed JSON,
//! so a row cannot be hidden from a filtered export by editing a column.

use std::fmt;

use super::db::{Conn, OptionalExt, params};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use super::canonical::canonical_json;
use super::error::sql;
use super::retention::{self, Anchor};
use super::{Error, Store};
use crate::finding::Severity;

/// The `prev_hash` of the first row of a chain that was never pruned.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One link of the chain: the hash of a row from its predecessor's hash
/// (64 hex characters) and its canonical JSON. `None` when `prev_hash` is
/// not 64 hex characters.
pub fn link_hash(prev_hash: &str, canonical: &str) -> Option<String> {
    let prev = decode_hash(prev_hash)?;
    Some(hex::encode(step(&prev, canonical.as_bytes())))
}

pub(crate) fn step(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

pub(crate) fn decode_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A finding's time in unix seconds; `None` when it is not RFC 3339.
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// The end of the chain: where the next row links on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// The last row, else the retention anchor, else the empty chain.
pub(crate) fn head(conn: &Conn) -> Result<Head, Error> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM findings ORDER BY seq DESC LIMIT 1",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql("read the chain head"))?;
    if let Some((seq, hash)) = last {
        let seq = seq as u64;
        let hash = decode_hash(&hash).ok_or_else(|| Error::Corrupt {
            seq,
            what: format!("its hash {hash:?} is not 64 hex characters"),
        })?;
        return Ok(Head { seq, hash });
    }
    match retention::anchor(conn)? {
        Some(a) => {
            let hash = decode_hash(&a.hash).ok_or_else(|| Error::Corrupt {
                seq: a.seq,
                what: "the retention anchor's hash is not 64 hex characters".into(),
            })?;
            Ok(Head { seq: a.seq, hash })
        }
        None => Ok(Head {
            seq: 0,
            hash: [0; 32],
        }),
    }
}

/// What went wrong with the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A row's content no longer matches its hash, or a column no longer
    /// matches its content.
    Altered,
    /// Rows are missing from the middle or the start of the chain.
    Deleted,
    /// A row was put into the chain that was not written there.
    Inserted,
    /// A row sits at another position than the one it was written at.
    OutOfOrder,
    /// The chain ends before a signed checkpoint: its tail was cut off.
    Truncated,
    /// A checkpoint's signature is wrong, or its hash is not the chain's.
    Checkpoint,
}

/// The first problem verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProblem {
    pub kind: ProblemKind,
    /// The first row concerned (for a deletion: the first missing row).
    pub seq: u64,
    /// That row's finding id, when the row is there.
    pub finding_id: Option<String>,
    /// A plain sentence saying what happened.
    pub message: String,
}

/// The result of verifying the chain (tampering is a result, not an error).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainReport {
    /// Rows verified.
    pub rows: u64,
    /// The first row's position (1, or after the anchor).
    pub first_seq: Option<u64>,
    /// The last row's position and hash (the anchor's when no row is left).
    pub head: Option<(u64, String)>,
    /// Where retention cut the chain, if it did.
    pub anchor: Option<Anchor>,
    /// Signed checkpoints that were checked and hold.
    pub checkpoints_checked: usize,
    /// Checkpoints at or before the anchor: their rows were pruned.
    pub checkpoints_pruned: usize,
    /// The first problem, if any.
    pub problem: Option<ChainProblem>,
}

impl ChainReport {
    /// True when the chain (and every checkpoint checked) holds.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for ChainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.problem {
            return write!(f, "chain broken: {}", p.message);
        }
        match (&self.first_seq, &self.head) {
            (Some(first), Some((seq, hash))) => write!(
                f,
                "chain intact: {} rows ({first}–{seq}), head {seq} {hash}",
                self.rows
            )?,
            _ => write!(f, "chain intact: no rows")?,
        }
        if let Some(a) = &self.anchor {
            write!(
                f,
                "; rows up to {} were pruned by retention ({} in total), anchor hash {}",
                a.seq, a.pruned_rows, a.hash
            )?;
        }
        write!(
            f,
            "; {} signed checkpoint(s) hold",
            self.checkpoints_checked
        )?;
        if self.checkpoints_pruned > 0 {
            write!(f, ", {} cover only pruned rows", self.checkpoints_pruned)?;
        }
        Ok(())
    }
}

/// One row as verification reads it.
struct Row {
    seq: u64,
    id: String,
    cluster: String,
    audit_id: String,
    rule_id: String,
    severity: i64,
    category: String,
    time: Option<String>,
    time_unix: Option<i64>,
    user: String,
    namespace: Option<String>,
    finding: String,
    prev_hash: String,
    hash: String,
}

const ROW_COLUMNS: &str = "seq, id, cluster, audit_id, rule_id, severity, category, time, time_unix, \"user\", namespace, finding, prev_hash, hash";

/// Reads a row; a column of the wrong type is reported by name.
fn read_row(r: &super::db::Row<'_, '_>) -> Result<Row, (i64, &'static str)> {
    let seq: i64 = r.get(0).map_err(|_| (-1, "seq"))?;
    macro_rules! col {
        ($i:expr, $name:expr) => {
            r.get($i).map_err(|_| (seq, $name))?
        };
    }
    Ok(Row {
        seq: seq as u64,
        id: col!(1, "id"),
        cluster: col!(2, "cluster"),
        audit_id: col!(3, "audit_id"),
        rule_id: col!(4, "rule_id"),
        severity: col!(5, "severity"),
        category: col!(6, "category"),
        time: col!(7, "time"),
        time_unix: col!(8, "time_unix"),
        user: col!(9, "user"),
        namespace: col!(10, "namespace"),
        finding: col!(11, "finding"),
        prev_hash: col!(12, "prev_hash"),
        hash: col!(13, "hash"),
    })
}

fn problem(kind: ProblemKind, seq: u64, id: Option<&str>, message: String) -> ChainProblem {
    ChainProblem {
        kind,
        seq,
        finding_id: id.map(str::to_owned),
        message,
    }
}

fn altered(row: &Row, what: &str) -> ChainProblem {
    problem(
        ProblemKind::Altered,
        row.seq,
        Some(&row.id),
        format!(
            "row {} (finding {}): {what}: it was altered after it was written",
            row.seq, row.id
        ),
    )
}

/// The first column that disagrees with the hashed JSON, as a sentence.
fn column_mismatch(row: &Row) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_str(&row.finding) {
        Ok(v) => v,
        Err(_) => return Some("its content is not valid JSON".into()),
    };
    let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
    let checks: [(&str, Option<&str>, Option<&str>); 8] = [
        ("id", Some(&row.id), s("id")),
        ("cluster", Some(&row.cluster), s("cluster")),
        ("audit_id", Some(&row.audit_id), s("audit_id")),
        ("rule_id", Some(&row.rule_id), s("rule_id")),
        ("category", Some(&row.category), s("category")),
        ("user", Some(&row.user), s("user")),
        ("time", row.time.as_deref(), s("time")),
        ("namespace", row.namespace.as_deref(), s("namespace")),
    ];
    for (name, col, content) in checks {
        // A NUL is stored as U+FFFD where the engine cannot hold it.
        let col = col.map(super::db::pg_text);
        let content = content.map(super::db::pg_text);
        if col != content {
            return Some(format!(
                "its {name} column ({col:?}) does not match its content ({content:?})"
            ));
        }
    }
    let sev = s("severity").and_then(|s| s.parse::<Severity>().ok());
    if sev.map(|s| s as i64) != Some(row.severity) {
        return Some(format!(
            "its severity column ({}) does not match its content ({:?})",
            row.severity,
            s("severity")
        ));
    }
    let t = row.time.as_deref().and_then(parse_time);
    if t != row.time_unix {
        return Some(format!(
            "its time_unix column ({:?}) does not match its time ({:?})",
            row.time_unix, row.time
        ));
    }
    None
}

/// What a chain walk found.
pub(crate) struct Walk {
    pub rows: u64,
    pub first_seq: Option<u64>,
    pub head: Head,
    pub problem: Option<ChainProblem>,
}

/// Walks the rows after `start` in seq order, checking each link, hash and
/// column; stops at the first problem. With `all_rows`, rows at or before
/// `start.seq` are reported as inserted (they sit inside a pruned range).
pub(crate) fn walk(conn: &Conn, start: Head, all_rows: bool) -> Result<Walk, Error> {
    let from = if all_rows { i64::MIN } else { start.seq as i64 };
    let mut last = start;
    let mut last_id: Option<String> = None;
    let mut w = Walk {
        rows: 0,
        first_seq: None,
        head: start,
        problem: None,
    };
    // A row that does not link to its predecessor, diagnosed with more
    // queries once the walk let go of the connection.
    let mut unlinked: Option<Row> = None;
    conn.query_each(
        &format!("SELECT {ROW_COLUMNS} FROM findings WHERE seq > ?1 ORDER BY seq"),
        params![from],
        |r| -> Result<bool, Error> {
            let row = match read_row(r) {
                Ok(row) => row,
                Err((seq, col)) => {
                    let seq = if seq < 0 { last.seq + 1 } else { seq as u64 };
                    w.problem = Some(problem(
                        ProblemKind::Altered,
                        seq,
                        None,
                        format!(
                            "row {seq}: its {col} column holds a value of the wrong type: it was altered after it was written"
                        ),
                    ));
                    return Ok(false);
                }
            };
            let expected = last.seq + 1;
            if row.seq < expected {
                w.problem = Some(problem(
                    ProblemKind::Inserted,
                    row.seq,
                    Some(&row.id),
                    format!(
                        "row {} (finding {}) lies inside the range retention pruned (rows up to {}): it was inserted afterwards",
                        row.seq, row.id, last.seq
                    ),
                ));
                return Ok(false);
            }
            if row.seq > expected {
                let missing = if row.seq - 1 == expected {
                    format!("row {expected} is missing")
                } else {
                    format!("rows {expected}–{} are missing", row.seq - 1)
                };
                let from = if last.seq == 0 {
                    "the chain starts at".to_owned()
                } else {
                    format!("the chain goes from row {} to", last.seq)
                };
                w.problem = Some(problem(
                    ProblemKind::Deleted,
                    expected,
                    None,
                    format!(
                        "{missing} ({from} row {} (finding {})): deleted",
                        row.seq, row.id
                    ),
                ));
                return Ok(false);
            }
            let Some(prev) = decode_hash(&row.prev_hash) else {
                w.problem = Some(altered(&row, "its prev_hash is not 64 hex characters"));
                return Ok(false);
            };
            if hex::encode(step(&prev, row.finding.as_bytes())) != row.hash {
                w.problem = Some(altered(&row, "its content does not match its hash"));
                return Ok(false);
            }
            if let Some(what) = column_mismatch(&row) {
                w.problem = Some(altered(&row, &what));
                return Ok(false);
            }
            if prev != last.hash {
                unlinked = Some(row);
                return Ok(false);
            }
            let Some(hash) = decode_hash(&row.hash) else {
                w.problem = Some(altered(&row, "its hash is not 64 hex characters"));
                return Ok(false);
            };
            last = Head { seq: row.seq, hash };
            w.rows += 1;
            w.first_seq.get_or_insert(row.seq);
            w.head = last;
            last_id = Some(row.id);
            Ok(true)
        },
    )
    .map_err(|e| match e {
        Error::Sqlite { source, .. } => Error::Sqlite {
            action: "read the chain",
            source,
        },
        other => other,
    })?;
    if let Some(row) = unlinked {
        w.problem = Some(diagnose_link(conn, &row, last, last_id.as_deref())?);
    }
    Ok(w)
}

/// `row` does not link to the row before it: find out why from where its
/// `prev_hash` points.
fn diagnose_link(
    conn: &Conn,
    row: &Row,
    last: Head,
    last_id: Option<&str>,
) -> Result<ChainProblem, Error> {
    let target: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, id FROM findings WHERE hash = ?1 ORDER BY seq LIMIT 1",
            params![row.prev_hash],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql("look up a chain hash"))?;
    let p = match target {
        Some((k, _)) if (k as u64) < last.seq => {
            let k = k as u64;
            let first = k + 1;
            let first_id: Option<String> = conn
                .query_row(
                    "SELECT id FROM findings WHERE seq = ?1",
                    params![first as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("read a chain row"))?;
            let which = if first == last.seq {
                format!("row {first}")
            } else {
                format!("rows {first}–{}", last.seq)
            };
            problem(
                ProblemKind::Inserted,
                first,
                first_id.as_deref(),
                format!(
                    "row {first} (finding {}) was inserted into the chain: row {} (finding {}) was written right after row {k}, so {which} did not exist then",
                    first_id.as_deref().unwrap_or("?"),
                    row.seq,
                    row.id
                ),
            )
        }
        Some((k, k_id)) if (k as u64) > row.seq => problem(
            ProblemKind::OutOfOrder,
            row.seq,
            Some(&row.id),
            format!(
                "row {} (finding {}) is out of order: it was written right after finding {k_id}, which is now row {k}: rows were reordered",
                row.seq, row.id
            ),
        ),
        _ if last.seq == 0 => problem(
            ProblemKind::Deleted,
            row.seq,
            Some(&row.id),
            format!(
                "row {} (finding {}) does not start the chain (its prev_hash is not {ZERO_HASH}): the rows before it were deleted",
                row.seq, row.id
            ),
        ),
        _ => problem(
            ProblemKind::Altered,
            last.seq,
            last_id,
            format!(
                "row {} (finding {}) does not follow row {} (finding {}): it was written after a row with hash {} that is no longer in the chain: row {} was altered and its hash recomputed, or rows after it were deleted and the rest renumbered",
                row.seq,
                row.id,
                last.seq,
                last_id.unwrap_or("the retention anchor"),
                row.prev_hash,
                last.seq
            ),
        ),
    };
    Ok(p)
}

impl Store {
    /// Walks every row in chain order, recomputing each hash, and checks the
    /// signed checkpoints stored in the database (each against the public
    /// key stored with it; pass checkpoints kept elsewhere and a trusted key
    /// to [`Store::verify_chain_against`] for the strong check).
    ///
    /// Tampering is reported in the [`ChainReport`]; `Err` means the
    /// database could not be read.
    pub fn verify_chain(&self) -> Result<ChainReport, Error> {
        let mut report = self.verify_rows()?;
        if report.is_ok() {
            let stored = self.stored_checkpoints()?;
            super::checkpoint::check_all(&self.conn, &mut report, &stored, None)?;
        }
        Ok(report)
    }

    /// The chain walk alone.
    pub(crate) fn verify_rows(&self) -> Result<ChainReport, Error> {
        let anchor = retention::anchor(&self.conn)?;
        let start = match &anchor {
            Some(a) => Head {
                seq: a.seq,
                hash: decode_hash(&a.hash).ok_or_else(|| Error::Corrupt {
                    seq: a.seq,
                    what: "the retention anchor's hash is not 64 hex characters".into(),
                })?,
            },
            None => Head {
                seq: 0,
                hash: [0; 32],
            },
        };
        let w = walk(&self.conn, start, true)?;
        let head = (w.head.seq > 0).then(|| (w.head.seq, hex::encode(w.head.hash)));
        if let Some(p) = &w.problem {
            tracing::warn!(seq = p.seq, problem = %p.message, "findings chain verification failed");
        }
        Ok(ChainReport {
            rows: w.rows,
            first_seq: w.first_seq,
            head,
            anchor,
            checkpoints_checked: 0,
            checkpoints_pruned: 0,
            problem: w.problem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Batch, Store};
    use super::*;

    fn store_with(n: usize) -> (tempfile::TempDir, Store) {
        let (dir, mut store) = temp_store();
        let batch = Batch {
            findings: (1..=n)
                .map(|i| finding("c1", &format!("a{i}"), "pod-exec"))
                .collect(),
            ..Batch::default()
        };
        store.commit(&batch).unwrap();
        (dir, store)
    }

    fn id_at(store: &Store, seq: i64) -> String {
        store
            .conn()
            .query_row(
                "SELECT id FROM findings WHERE seq = ?1",
                params![seq],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn broken(store: &Store) -> ChainProblem {
        let report = store.verify_chain().unwrap();
        let p = report
            .problem
            .clone()
            .unwrap_or_else(|| panic!("not caught: {report}"));
        assert_eq!(report.to_string(), format!("chain broken: {}", p.message));
        p
    }

    #[test]
    fn the_formula_is_the_documented_one() {
        let f = finding("c1", "a1", "pod-exec");
        let canonical = canonical_json(&f).unwrap();
        // Keys sorted, no whitespace: RFC 8785.
        assert!(
            canonical.starts_with(r#"{"audit_id":"a1","category":"exec","#),
            "{canonical}"
        );
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(canonical.as_bytes());
        let expected = hex::encode(h.finalize());
        assert_eq!(link_hash(ZERO_HASH, &canonical).unwrap(), expected);
        assert_eq!(link_hash("zz", &canonical), None);

        let (_dir, mut store) = temp_store();
        let out = store
            .commit(&Batch {
                findings: vec![f],
                ..Batch::default()
            })
            .unwrap();
        assert_eq!(
            out[0],
            crate::store::Inserted::New {
                seq: 1,
                hash: expected
            }
        );
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (_dir, store) = store_with(10);
        let report = store.verify_chain().unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.rows, 10);
        assert_eq!(report.first_seq, Some(1));
        assert_eq!(report.head.as_ref().map(|h| h.0), Some(10));
        assert!(
            report
                .to_string()
                .starts_with("chain intact: 10 rows (1–10)")
        );
        let (_dir, empty) = temp_store();
        assert!(empty.verify_chain().unwrap().is_ok());
    }

    #[test]
    fn an_edited_finding_is_named() {
        let (_dir, store) = store_with(10);
        store
            .conn()
            .execute(
                "UPDATE findings SET finding = replace(finding, 'alice@example.com', 'bob@example.com') WHERE seq = 4",
                params![],
            )
            .unwrap();
        let p = broken(&store);
        assert_eq!((p.kind, p.seq), (ProblemKind::Altered, 4));
        let id = id_at(&store, 4);
        assert_eq!(
            p.message,
            format!(
                "row 4 (finding {id}): its content does not match its hash: it was altered after it was written"
            )
        );
    }

    #[test]
    fn an_edited_filter_column_is_named() {
        let (_dir, store) = store_with(10);
        store
            .conn()
            .execute(
                "UPDATE findings SET cluster = 'elsewhere' WHERE seq = 6",
                params![],
            )
            .unwrap();
        let p = broken(&store);
        assert_eq!((p.kind, p.seq), (ProblemKind::Altered, 6));
        assert!(
            p.message.contains(
                "its cluster column (Some(\"elsewhere\")) does not match its content (Some(\"c1\"))"
            ),
            "{}",
            p.message
        );
    }

    #[test]
    fn an_edited_and_rehashed_row_is_named() {
        let (_dir, store) = store_with(10);
        let (prev, canonical): (String, String) = store
            .conn()
            .query_row(
                "SELECT prev_hash, finding FROM findings WHERE seq = 3",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let forged = canonical.replace("payments", "default");
        let hash = link_hash(&prev, &forged).unwrap();
        store
            .conn()
            .execute(
                "UPDATE findings SET finding = ?1, hash = ?2, namespace = 'default' WHERE seq = 3",
                params![forged, hash],
            )
            .unwrap();
        let p = broken(&store);
        assert_eq!((p.kind, p.seq), (ProblemKind::Altered, 3), "{}", p.message);
        assert!(p.message.contains("row 4 "), "{}", p.message);
    }

    #[test]
    fn a_deleted_middle_row_is_named() {
        let (_dir, store) = store_with(10);
        store
            .conn()
            .execute("DELETE FROM findings WHERE seq = 5", params![])
            .unwrap();
        let p = broken(&store);
        assert_eq!((p.kind, p.seq), (ProblemKind::Deleted, 5));
        let id6 = id_at(&store, 6);
        assert_eq!(
            p.message,
            format!(
                "row 5 is missing (the chain goes from row 4 to row 6 (finding {id6})): deleted"
            )
        );
    }

    #[test]
    fn deleted_first_rows_are_named() {
        let (_dir, store) = store_with(10);
        store
            .conn()
            .execute("DELETE FROM findings WHERE seq <= 2", params![])
            .unwrap();
        let p = broken(&store);
        assert_eq!((p.kind, p.seq), (ProblemKind::Deleted, 1));
        assert!(
            p.message
                .starts_with("rows 1–2 are missing (the chain starts at row 3"),
            "{}",
            p.message
        );
    }

    #[test]
    fn swapped_rows_are_named() {
        let (_dir, store) = store_with(10);
        let id3 = id_at(&store, 3);
        let id7 = id_at(&store, 7);
        store
            .conn()
            .execute_batch(
                "UPDATE findings SET seq = 1000 WHERE seq = 3;
                 UPDATE findings SET seq = 3 WHERE seq = 7;
                 UPDATE findings SET seq = 7 WHERE seq = 1000;",
            )
            .unwrap();
        let p = broken(&store);
        assert_eq!(
            (p.kind, p.seq),
            (ProblemKind::OutOfOrder, 3),
            "{}",
            p.message
        );
        assert_eq!(p.finding_id.as_deref(), Some(id7.as_str()));
        assert!(p.message.contains("is out of order"), "{}", p.message);
        assert!(!p.message.contains(&id3));
    }

    #[test]
    fn a_forged_row_is_named() {
        // The strongest forger without the signing key: renumber the rows
        // after 4 and slot a correctly hashed row in at 5.
        let (_dir, store) = store_with(10);
        let hash4: String = store
            .conn()
            .query_row("SELECT hash FROM findings WHERE seq = 4", params![], |r| {
                r.get(0)
            })
            .unwrap();
        store
            .conn()
            .execute_batch(
                "UPDATE findings SET seq = seq + 1000 WHERE seq >= 5;
                 UPDATE findings SET seq = seq - 999 WHERE seq >= 1000;",
            )
            .unwrap();
        let forged = finding("c1", "forged", "pod-exec");
        let canonical = canonical_json(&forged).unwrap();
        let hash = link_hash(&hash4, &canonical).unwrap();
        store
            .conn()
            .execute(
                "INSERT INTO findings (seq, id, cluster, audit_id, rule_id, severity, category, time, time_unix, \"user\", namespace, finding, prev_hash, hash, inserted_at)
                 VALUES (5, ?1, 'c1', 'forged', 'pod-exec', 2, 'exec', ?2, ?3, 'alice@example.com', 'payments', ?4, ?5, ?6, 0)",
                params![forged.id, forged.time, forged.time.as_deref().and_then(parse_time), canonical, hash4, hash],
            )
            .unwrap();
        let p = broken(&store);
        assert_eq!((p.kind, p.seq), (ProblemKind::Inserted, 5), "{}", p.message);
        assert_eq!(p.finding_id.as_deref(), Some(forged.id.as_str()));
        assert!(
            p.message.starts_with(&format!(
                "row 5 (finding {}) was inserted into the chain",
                forged.id
            )),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_wrongly_typed_column_is_reported_not_an_error() {
        let (_dir, store) = store_with(3);
        store
            .conn()
            .execute(
                "UPDATE findings SET severity = 'high' WHERE seq = 2",
                params![],
            )
            .unwrap_err(); // the CHECK constraint refuses text
        let typed = store.conn().execute(
            "UPDATE findings SET time_unix = 'soon' WHERE seq = 2",
            params![],
        );
        if store.dialect() == crate::store::Dialect::Postgres {
            // PostgreSQL's columns are typed: the value cannot be stored.
            typed.unwrap_err();
            return;
        }
        typed.unwrap();
        let p = broken(&store);
        assert_eq!((p.kind, p.seq), (ProblemKind::Altered, 2), "{}", p.message);
        assert!(p.message.contains("time_unix"), "{}", p.message);
    }
}
