//! The write path: a [`Batch`] committed in one transaction.
//!
//! A batch is what one source batch produced: its findings, the inputs that
//! were quarantined, the coverage counts and the source checkpoint that
//! acknowledges it (DESIGN.md principle 1). [`Store::commit`] writes all of
//! it or nothing, links each new finding into the hash chain (`chain`), and
//! reports for each finding whether it was new or a duplicate of one stored
//! before (principle 2). Sending alerts and acking sources is the caller's.

use super::db::{Begin, Conn, OptionalExt, params};

use super::chain::{self, Head};
use super::error::sql;
use super::{Error, Store, now_unix};
use crate::finding::{Finding, finding_id};

/// At most this many bytes of a quarantined input are kept.
pub const QUARANTINE_RAW_CAP: usize = 64 * 1024;

/// Everything one source batch produced, committed together.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub findings: Vec<Finding>,
    pub quarantine: Vec<QuarantineRow>,
    pub coverage: Vec<CoverageDelta>,
    pub checkpoints: Vec<SourceCheckpoint>,
    /// Detector snapshots (name, bytes) that replace the stored ones.
    pub state: Vec<(String, Vec<u8>)>,
    /// The alert sinks each finding goes to (parallel to `findings`; a
    /// missing entry is none). Only new findings enter the outbox: a
    /// finding stored before was alerted before.
    pub outbox: Vec<Vec<String>>,
    /// The silence that held back each finding's alerts (parallel to
    /// `findings`; missing is none).
    pub silenced: Vec<Option<i64>>,
    /// For each finding folded into an earlier one's alert by the dedup
    /// window (parallel to `findings`): that earlier finding's id, whose
    /// alerts count one more repeat if this finding is new.
    pub repeat_of: Vec<Option<String>>,
    /// Seconds new alerts wait before they are due (the group window, so
    /// that findings of one rule can go out together).
    pub alert_delay: i64,
}

/// An input that could not be decoded, kept with its raw bytes.
#[derive(Debug, Clone, Default)]
pub struct QuarantineRow {
    /// The source's name in the config.
    pub source: String,
    /// Where in the source: `FILE:OFFSET`, `TOPIC/PARTITION/OFFSET`, ...
    pub position: String,
    /// A short, stable label (`malformed`, `oversized`, `not-audit`, ...).
    pub kind: String,
    /// The plain-sentence reason.
    pub error: String,
    /// The audit id, when one could be read.
    pub audit_id: Option<String>,
    /// The input; only its first [`QUARANTINE_RAW_CAP`] bytes are stored,
    /// with its full length.
    pub raw: Vec<u8>,
}

/// Counts to add to a cluster's coverage for one hour and source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoverageDelta {
    pub cluster: String,
    /// Unix time of the start of the hour (a multiple of 3600).
    pub hour: i64,
    pub source: String,
    pub events: u64,
    pub malformed: u64,
    pub truncated: u64,
}

/// How far a source has been read; replaced on each commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCheckpoint {
    pub source: String,
    /// Which part of the source: a Kafka partition, a file identity, ...
    pub key: String,
    /// Source-specific position text (an offset, `inode:offset`, ...).
    pub position: String,
}

/// What happened to one finding of a batch; `commit` returns one per
/// finding, in the batch's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored at chain position `seq` with chain hash `hash`: alert on it.
    New { seq: u64, hash: String },
    /// A finding with the same (cluster, audit_id, rule_id) was stored
    /// before: nothing was written, do not alert again.
    Duplicate,
}

/// A finding ready to write: its canonical JSON and derived columns.
struct Prepared<'a> {
    f: &'a Finding,
    canonical: String,
    time_unix: Option<i64>,
}

fn prepare(f: &Finding) -> Result<Prepared<'_>, Error> {
    if f.id != finding_id(&f.cluster, &f.audit_id, &f.rule_id) {
        return Err(Error::InvalidFinding {
            id: f.id.clone(),
            reason: "its id is not finding_id(cluster, audit_id, rule_id): build findings with Finding::from_event or set id with finding_id",
        });
    }
    let canonical = chain::canonical_json(f).map_err(|source| Error::Canonical {
        id: f.id.clone(),
        source,
    })?;
    Ok(Prepared {
        f,
        canonical,
        time_unix: f.time.as_deref().and_then(chain::parse_time),
    })
}

/// The statements of one commit, inside its write transaction.
fn write(
    tx: &Conn,
    batch: &Batch,
    prepared: &[Prepared<'_>],
    now: i64,
) -> Result<Vec<Inserted>, Error> {
    let mut head = chain::head(tx)?;
    let mut out = Vec::with_capacity(prepared.len());
    for (i, p) in prepared.iter().enumerate() {
        let f = p.f;
        let seq = head.seq + 1;
        let hash = chain::step(&head.hash, p.canonical.as_bytes());
        let prev_hex = hex::encode(head.hash);
        let hash_hex = hex::encode(hash);
        let n = tx
            .execute(
                "INSERT INTO findings (seq, id, cluster, audit_id, rule_id, severity, category,
                     time, time_unix, \"user\", namespace, finding, prev_hash, hash, inserted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT (cluster, audit_id, rule_id) DO NOTHING",
                params![
                    seq,
                    f.id,
                    f.cluster,
                    f.audit_id,
                    f.rule_id,
                    f.severity as i64,
                    f.category,
                    f.time,
                    p.time_unix,
                    f.user,
                    f.namespace,
                    p.canonical,
                    prev_hex,
                    hash_hex,
                    now,
                ],
            )
            .map_err(sql("insert a finding"))?;
        if n != 1 {
            out.push(Inserted::Duplicate);
            continue;
        }
        head = Head { seq, hash };
        if let Some(Some(first)) = batch.repeat_of.get(i) {
            tx.execute(
                "UPDATE alert_outbox SET repeats = repeats + 1 WHERE finding_id = ?1",
                params![first],
            )
            .map_err(sql("count a repeat"))?;
        }
        if let Some(Some(silence)) = batch.silenced.get(i) {
            tx.execute(
                "INSERT INTO silenced (finding_id, silence_id) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
                params![f.id, silence],
            )
            .map_err(sql("mark a finding silenced"))?;
        }
        for sink in batch.outbox.get(i).into_iter().flatten() {
            tx.execute(
                "INSERT INTO alert_outbox (finding_id, sink, state, attempts, next_attempt_at)
                 VALUES (?1, ?2, 'pending', 0, ?3) ON CONFLICT DO NOTHING",
                params![f.id, sink, now + batch.alert_delay.max(0)],
            )
            .map_err(sql("enqueue an alert"))?;
        }
        out.push(Inserted::New {
            seq,
            hash: hash_hex,
        });
    }

    for r in &batch.quarantine {
        let kept = &r.raw[..r.raw.len().min(QUARANTINE_RAW_CAP)];
        tx.execute(
            "INSERT INTO quarantine (inserted_at, source, position, kind, error, audit_id, raw, raw_len)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                now,
                r.source,
                r.position,
                r.kind,
                r.error,
                r.audit_id,
                kept,
                r.raw.len()
            ],
        )
        .map_err(sql("insert a quarantine row"))?;
    }

    for d in &batch.coverage {
        tx.execute(
            "INSERT INTO coverage (cluster, hour, source, events, malformed, truncated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (cluster, hour, source) DO UPDATE SET
                 events = coverage.events + excluded.events,
                 malformed = coverage.malformed + excluded.malformed,
                 truncated = coverage.truncated + excluded.truncated",
            params![
                d.cluster,
                d.hour,
                d.source,
                d.events,
                d.malformed,
                d.truncated
            ],
        )
        .map_err(sql("update coverage"))?;
    }

    for c in &batch.checkpoints {
        tx.execute(
            "INSERT INTO source_checkpoints (source, key, position, updated_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (source, key) DO UPDATE SET
                 position = excluded.position, updated_at = excluded.updated_at",
            params![c.source, c.key, c.position, now],
        )
        .map_err(sql("write a source checkpoint"))?;
    }

    for (name, state) in &batch.state {
        tx.execute(
            "INSERT INTO detector_state (name, state, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET
                 state = excluded.state, updated_at = excluded.updated_at",
            params![name, state, now],
        )
        .map_err(sql("write detector state"))?;
    }
    Ok(out)
}

impl Store {
    /// Commits `batch` in one transaction: its new findings (linked into the
    /// hash chain), its quarantine rows, its coverage counts (added to what
    /// is there), its source checkpoints and detector state (replacing what
    /// is there).
    ///
    /// Returns one [`Inserted`] per finding, in order. On error nothing of
    /// the batch is stored, and the source must not ack it.
    ///
    /// # Errors
    /// When a finding cannot be serialised or its id is inconsistent, or
    /// when SQLite fails (disk full, lock held longer than the busy timeout).
    pub fn commit(&mut self, batch: &Batch) -> Result<Vec<Inserted>, Error> {
        // Pure work first, outside the write lock.
        let prepared = batch
            .findings
            .iter()
            .map(prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let now = now_unix();
        let out = self
            .conn
            .transaction(Begin::Write, |tx| write(tx, batch, &prepared, now))?;
        let new = out
            .iter()
            .filter(|i| matches!(i, Inserted::New { .. }))
            .count();
        tracing::debug!(
            count = new,
            duplicates = out.len() - new,
            quarantined = batch.quarantine.len(),
            "batch committed"
        );
        Ok(out)
    }

    /// The detector snapshot last committed under `name`.
    pub fn detector_state(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.conn
            .query_row(
                "SELECT state FROM detector_state WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("read detector state"))
    }

    /// Every (key, position) committed for `source`.
    pub fn source_checkpoints(&self, source: &str) -> Result<Vec<(String, String)>, Error> {
        self.conn
            .query_map(
                "SELECT key, position FROM source_checkpoints WHERE source = ?1",
                params![source],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql("read source checkpoints"))
    }

    /// The position last committed for `source` and `key`, to resume from.
    pub fn source_checkpoint(&self, source: &str, key: &str) -> Result<Option<String>, Error> {
        self.conn
            .query_row(
                "SELECT position FROM source_checkpoints WHERE source = ?1 AND key = ?2",
                params![source, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("read a source checkpoint"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn count(store: &Store, table: &str) -> i64 {
        store
            .conn()
            .query_row(&format!("SELECT count(*) FROM {table}"), params![], |r| {
                r.get(0)
            })
            .unwrap()
    }

    #[test]
    fn insert_then_duplicate_adds_nothing() {
        let (_dir, mut store) = temp_store();
        let batch = Batch {
            findings: vec![
                finding("c1", "a1", "pod-exec"),
                finding("c1", "a2", "pod-exec"),
            ],
            ..Batch::default()
        };
        let first = store.commit(&batch).unwrap();
        assert!(matches!(first[0], Inserted::New { seq: 1, .. }));
        assert!(matches!(first[1], Inserted::New { seq: 2, .. }));
        // The same findings again, plus one new one, plus a repeat within the batch.
        let mut again = batch.clone();
        again.findings.push(finding("c1", "a3", "pod-exec"));
        again.findings.push(finding("c1", "a3", "pod-exec"));
        let second = store.commit(&again).unwrap();
        assert_eq!(second[0], Inserted::Duplicate);
        assert_eq!(second[1], Inserted::Duplicate);
        assert!(matches!(second[2], Inserted::New { seq: 3, .. }));
        assert_eq!(second[3], Inserted::Duplicate);
        assert_eq!(count(&store, "findings"), 3);
        let report = store.verify_chain().unwrap();
        assert!(report.is_ok(), "{report}");
    }

    #[test]
    fn the_same_audit_id_under_another_rule_or_cluster_is_new() {
        let (_dir, mut store) = temp_store();
        let batch = Batch {
            findings: vec![
                finding("c1", "a1", "pod-exec"),
                finding("c1", "a1", "pod-attach"),
                finding("c2", "a1", "pod-exec"),
            ],
            ..Batch::default()
        };
        let out = store.commit(&batch).unwrap();
        assert!(out.iter().all(|i| matches!(i, Inserted::New { .. })));
    }

    #[test]
    fn quarantine_coverage_and_checkpoints_are_written() {
        let (_dir, mut store) = temp_store();
        let delta = CoverageDelta {
            cluster: "c1".into(),
            hour: 1_700_000_000 / 3600 * 3600,
            source: "kafka".into(),
            events: 10,
            malformed: 1,
            truncated: 2,
        };
        let batch = Batch {
            quarantine: vec![QuarantineRow {
                source: "file".into(),
                position: "/var/log/audit.log:1234".into(),
                kind: "oversized".into(),
                error: "event is larger than 8 MiB".into(),
                audit_id: Some("a9".into()),
                raw: vec![b'x'; QUARANTINE_RAW_CAP + 10],
            }],
            coverage: vec![delta.clone()],
            checkpoints: vec![SourceCheckpoint {
                source: "kafka".into(),
                key: "k8s-audit/0".into(),
                position: "41".into(),
            }],
            state: vec![("token".into(), b"one".to_vec())],
            ..Batch::default()
        };
        store.commit(&batch).unwrap();
        let mut next = batch.clone();
        next.quarantine.clear();
        next.checkpoints[0].position = "99".into();
        next.state[0].1 = b"two".to_vec();
        store.commit(&next).unwrap();
        assert_eq!(
            store.detector_state("token").unwrap().as_deref(),
            Some(&b"two"[..])
        );

        let (raw_len, kept): (i64, i64) = store
            .conn()
            .query_row(
                "SELECT raw_len, length(raw) FROM quarantine",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(raw_len as usize, QUARANTINE_RAW_CAP + 10);
        assert_eq!(kept as usize, QUARANTINE_RAW_CAP);
        let cov = store.coverage(None, None).unwrap();
        assert_eq!(cov.len(), 1);
        assert_eq!(
            (cov[0].events, cov[0].malformed, cov[0].truncated),
            (20, 2, 4)
        );
        assert_eq!(
            store
                .source_checkpoint("kafka", "k8s-audit/0")
                .unwrap()
                .as_deref(),
            Some("99")
        );
        assert_eq!(store.source_checkpoint("kafka", "other").unwrap(), None);
    }

    #[test]
    fn a_failure_mid_batch_leaves_nothing() {
        let (_dir, mut store) = temp_store();
        store
            .commit(&Batch {
                findings: vec![finding("c1", "before", "pod-exec")],
                ..Batch::default()
            })
            .unwrap();
        // A database-side failure on the last write of the batch (the source
        // checkpoint) and, separately, in the middle of the findings.
        let triggers = match store.dialect() {
            crate::store::Dialect::Sqlite => {
                "CREATE TRIGGER boom_ckpt BEFORE INSERT ON source_checkpoints WHEN NEW.key = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'forced failure'); END;
                 CREATE TRIGGER boom_finding BEFORE INSERT ON findings WHEN NEW.audit_id = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'forced failure'); END;"
            }
            crate::store::Dialect::Postgres => {
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS
                     $$ BEGIN RAISE EXCEPTION 'forced failure'; END $$;
                 CREATE TRIGGER boom_ckpt BEFORE INSERT ON source_checkpoints FOR EACH ROW
                     WHEN (NEW.key = 'boom') EXECUTE FUNCTION boom();
                 CREATE TRIGGER boom_finding BEFORE INSERT ON findings FOR EACH ROW
                     WHEN (NEW.audit_id = 'boom') EXECUTE FUNCTION boom();"
            }
        };
        store.conn().execute_batch(triggers).unwrap();
        let batch = Batch {
            findings: vec![
                finding("c1", "a1", "pod-exec"),
                finding("c1", "a2", "pod-exec"),
            ],
            quarantine: vec![QuarantineRow {
                source: "file".into(),
                raw: b"{not json".to_vec(),
                ..QuarantineRow::default()
            }],
            coverage: vec![CoverageDelta {
                cluster: "c1".into(),
                source: "file".into(),
                events: 5,
                ..CoverageDelta::default()
            }],
            checkpoints: vec![SourceCheckpoint {
                source: "file".into(),
                key: "boom".into(),
                position: "10".into(),
            }],
            state: vec![("token".into(), b"{}".to_vec())],
            outbox: vec![vec!["siem".into()], vec!["siem".into()]],
            silenced: vec![Some(1), None],
            repeat_of: vec![None, None],
            alert_delay: 0,
        };
        let err = store.commit(&batch).unwrap_err();
        assert!(err.to_string().contains("forced failure"), "{err}");

        let mut mid = batch.clone();
        mid.checkpoints.clear();
        mid.findings.insert(1, finding("c1", "boom", "pod-exec"));
        assert!(store.commit(&mid).is_err());

        assert_eq!(count(&store, "findings"), 1);
        assert_eq!(count(&store, "quarantine"), 0);
        assert_eq!(count(&store, "coverage"), 0);
        assert_eq!(count(&store, "source_checkpoints"), 0);
        assert_eq!(store.detector_state("token").unwrap(), None);
        assert_eq!(store.outbox_depth().unwrap(), (0, 0));
        // The chain is untouched and the next batch continues it.
        let out = store
            .commit(&Batch {
                findings: vec![finding("c1", "a1", "pod-exec")],
                ..Batch::default()
            })
            .unwrap();
        assert!(matches!(out[0], Inserted::New { seq: 2, .. }));
        assert!(store.verify_chain().unwrap().is_ok());
    }

    #[test]
    fn a_finding_whose_id_does_not_match_is_refused() {
        let (_dir, mut store) = temp_store();
        let mut f = finding("c1", "a1", "pod-exec");
        f.id = "not-the-id".into();
        let err = store
            .commit(&Batch {
                findings: vec![finding("c1", "a0", "pod-exec"), f],
                ..Batch::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("finding_id"), "{err}");
        assert_eq!(count(&store, "findings"), 0);
    }
}
