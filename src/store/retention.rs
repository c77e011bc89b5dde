//! Retention: pruning the oldest findings so that the chain still verifies.
//!
//! Only a prefix of the chain is ever removed: the longest run of rows,
//! from the start, that are all older than the cutoff (a row's age is its
//! finding time, or when it was stored if the finding has no time). The
//! last pruned row's position and hash become the anchor, written in the
//! same transaction: the next row's `prev_hash` is that hash, and
//! verification starts there. Old rows stuck behind a newer one stay until
//! it ages out; [`PruneReport::kept_older`] counts them.

use super::db::{Begin, Conn, OptionalExt, params};
use ed25519_dalek::SigningKey;

use super::checkpoint::PruneRecord;
use super::error::sql;
use super::{Error, Store, now_unix};

/// Where the chain restarts after pruning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The last pruned row.
    pub seq: u64,
    /// Its hash: the `prev_hash` of the row after it.
    pub hash: String,
    /// Rows pruned so far, in total.
    pub pruned_rows: u64,
    /// The last prune's cutoff, unix seconds.
    pub cutoff: i64,
    /// When the last prune ran, unix seconds.
    pub pruned_at: i64,
}

/// What one prune did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// Rows deleted by this prune.
    pub pruned: u64,
    /// The anchor after it (unchanged when nothing was pruned).
    pub anchor: Option<Anchor>,
    /// Rows older than the cutoff kept because a newer row precedes them.
    pub kept_older: u64,
}

pub(crate) fn anchor(conn: &Conn) -> Result<Option<Anchor>, Error> {
    conn.query_row(
        "SELECT seq, hash, pruned_rows, cutoff, pruned_at FROM chain_anchor WHERE id = 1",
        params![],
        |r| {
            Ok(Anchor {
                seq: r.get::<i64>(0)? as u64,
                hash: r.get(1)?,
                pruned_rows: r.get::<i64>(2)? as u64,
                cutoff: r.get(3)?,
                pruned_at: r.get(4)?,
            })
        },
    )
    .optional()
    .map_err(sql("read the retention anchor"))
}

/// A row's age for retention.
const AGE: &str = "COALESCE(time_unix, inserted_at)";

impl Store {
    /// Deletes the prefix of the chain older than `older_than_unix` and
    /// records the anchor, in one transaction.
    pub fn prune(&mut self, older_than_unix: i64) -> Result<PruneReport, Error> {
        self.prune_inner(older_than_unix, &mut |_| Ok(()))
    }

    /// [`Store::prune`], authorised by a signature: the chain is verified
    /// first (a tampered chain is never pruned), and the new anchor is
    /// signed with `key` as a [`PruneRecord`] that `record` is given before
    /// the prune commits (to append it out of kaudit's reach; when `record`
    /// fails, nothing is pruned). The record is `None` when nothing was
    /// pruned.
    ///
    /// # Errors
    /// [`Error::Tampered`] when the chain does not verify; `record`'s error;
    /// SQLite errors.
    pub fn prune_signed(
        &mut self,
        older_than_unix: i64,
        key: &SigningKey,
        record: &mut dyn FnMut(&PruneRecord) -> Result<(), Error>,
    ) -> Result<(PruneReport, Option<PruneRecord>), Error> {
        if let Some(p) = self.verify_rows()?.problem {
            return Err(Error::Tampered(p.message));
        }
        let mut signed = None;
        let report = self.prune_inner(older_than_unix, &mut |a| {
            let r = PruneRecord::sign(key, a.seq, &a.hash, a.cutoff, a.pruned_at);
            record(&r)?;
            signed = Some(r);
            Ok(())
        })?;
        Ok((report, signed))
    }

    fn prune_inner(
        &mut self,
        older_than_unix: i64,
        before_commit: &mut dyn FnMut(&Anchor) -> Result<(), Error>,
    ) -> Result<PruneReport, Error> {
        self.conn.transaction(Begin::Write, |tx| {
        let first_young: Option<i64> = tx
            .query_row(
                &format!("SELECT min(seq) FROM findings WHERE {AGE} >= ?1"),
                params![older_than_unix],
                |r| r.get(0),
            )
            .map_err(sql("find the rows to prune"))?;
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM findings WHERE seq < ?1 ORDER BY seq DESC LIMIT 1",
                params![first_young.unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql("find the rows to prune"))?;
        let old = anchor(tx)?;
        let Some((last_seq, last_hash)) = last else {
            return Ok(PruneReport {
                pruned: 0,
                anchor: old,
                kept_older: 0,
            });
        };
        let pruned = tx
            .execute("DELETE FROM findings WHERE seq <= ?1", params![last_seq])
            .map_err(sql("prune findings"))? as u64;
        let kept_older: i64 = tx
            .query_row(
                &format!("SELECT count(*) FROM findings WHERE {AGE} < ?1"),
                params![older_than_unix],
                |r| r.get(0),
            )
            .map_err(sql("count the rows kept"))?;
        let now = now_unix();
        let total = old.as_ref().map_or(0, |a| a.pruned_rows) + pruned;
        tx.execute(
            "INSERT INTO chain_anchor (id, seq, hash, pruned_rows, cutoff, pruned_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                 pruned_rows = excluded.pruned_rows, cutoff = excluded.cutoff, pruned_at = excluded.pruned_at",
            params![last_seq, last_hash, total as i64, older_than_unix, now],
        )
        .map_err(sql("record the retention anchor"))?;
        let new_anchor = Anchor {
            seq: last_seq as u64,
            hash: last_hash,
            pruned_rows: total,
            cutoff: older_than_unix,
            pruned_at: now,
        };
        before_commit(&new_anchor)?;
        tracing::info!(
            count = pruned,
            anchor_seq = last_seq,
            kept_older,
            "findings pruned"
        );
        Ok(PruneReport {
            pruned,
            anchor: Some(new_anchor),
            kept_older: kept_older as u64,
        })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::db::params;
    use super::super::testutil::*;
    use super::super::{Batch, Inserted, ProblemKind};

    fn day(d: u32) -> String {
        format!("2026-01-{d:02}T12:00:00Z")
    }

    #[test]
    fn prune_then_verify_passes_and_reports_the_anchor() {
        let (_dir, mut store) = temp_store();
        // Rows 1-3 on days 1-3, row 4 on day 20, row 5 on day 2 (late), row 6 on day 21.
        let days = [1, 2, 3, 20, 2, 21];
        let batch = Batch {
            findings: days
                .iter()
                .enumerate()
                .map(|(i, d)| finding_at("c1", &format!("a{i}"), "pod-exec", &day(*d)))
                .collect(),
            ..Batch::default()
        };
        let out = store.commit(&batch).unwrap();
        let Inserted::New { hash: hash3, .. } = out[2].clone() else {
            panic!()
        };
        let cutoff = super::super::chain::parse_time(&day(10)).unwrap();
        let report = store.prune(cutoff).unwrap();
        assert_eq!(report.pruned, 3);
        assert_eq!(report.kept_older, 1, "row 5 is old but sits after row 4");
        let anchor = report.anchor.unwrap();
        assert_eq!((anchor.seq, anchor.hash.as_str()), (3, hash3.as_str()));

        let v = store.verify_chain().unwrap();
        assert!(v.is_ok(), "{v}");
        assert_eq!((v.rows, v.first_seq), (3, Some(4)));
        assert_eq!(v.anchor.as_ref().map(|a| a.seq), Some(3));
        assert!(
            v.to_string()
                .contains("rows up to 3 were pruned by retention"),
            "{v}"
        );

        // Nothing more to prune at the same cutoff; new rows chain on.
        assert_eq!(store.prune(cutoff).unwrap().pruned, 0);
        let out = store
            .commit(&Batch {
                findings: vec![finding_at("c1", "new", "pod-exec", &day(25))],
                ..Batch::default()
            })
            .unwrap();
        assert!(matches!(out[0], Inserted::New { seq: 7, .. }));
        assert!(store.verify_chain().unwrap().is_ok());

        // Pruning everything leaves the anchor as the head; the chain continues.
        let all = store.prune(i64::MAX).unwrap();
        assert_eq!(
            (all.pruned, all.anchor.as_ref().map(|a| a.pruned_rows)),
            (4, Some(7))
        );
        let v = store.verify_chain().unwrap();
        assert!(v.is_ok(), "{v}");
        assert_eq!(v.head.map(|h| h.0), Some(7));
        let out = store
            .commit(&Batch {
                findings: vec![finding_at("c1", "newer", "pod-exec", &day(26))],
                ..Batch::default()
            })
            .unwrap();
        assert!(matches!(out[0], Inserted::New { seq: 8, .. }));
        assert!(store.verify_chain().unwrap().is_ok());
    }

    #[test]
    fn a_row_slipped_in_below_the_anchor_is_caught() {
        let (_dir, mut store) = temp_store();
        let batch = Batch {
            findings: (1..=4)
                .map(|d| finding_at("c1", &format!("a{d}"), "pod-exec", &day(d)))
                .collect(),
            ..Batch::default()
        };
        store.commit(&batch).unwrap();
        store
            .prune(super::super::chain::parse_time(&day(3)).unwrap())
            .unwrap();
        store
            .conn()
            .execute(
                "INSERT INTO findings (seq, id, cluster, audit_id, rule_id, severity, category, time, time_unix, \"user\", namespace, finding, prev_hash, hash, inserted_at) SELECT 1, 'x', cluster, 'x', rule_id, severity, category, time, time_unix, \"user\", namespace, finding, prev_hash, hash, inserted_at FROM findings WHERE seq = 3",
                params![],
            )
            .unwrap();
        let p = store.verify_chain().unwrap().problem.unwrap();
        assert_eq!((p.kind, p.seq), (ProblemKind::Inserted, 1), "{}", p.message);
    }
}
