//! The alert outbox: one row per (finding, sink), written in the same
//! transaction as the finding (`Batch::outbox`), then worked off by the
//! delivery loop: delivered, retried later, or dead-lettered after too many
//! attempts, visibly. A crash between a commit and a delivery loses
//! nothing; a delivery recorded is never sent again.

use super::db::{Begin, DbError, Row, ToParam, params};

use super::error::sql;
use super::{Error, Store};

/// One alert waiting to go out.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub finding_id: String,
    pub sink: String,
    pub attempts: u32,
    /// The stored finding, canonical JSON.
    pub finding: String,
    /// When the finding was stored (Unix seconds): the alert's age.
    pub stored_at: i64,
}

/// Where one alert of a finding stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlertState {
    pub sink: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Later findings folded into this alert by the dedup window.
    pub repeats: u32,
}

/// An outbox row joined with its finding: finding_id, sink, attempts,
/// finding, inserted_at.
fn item(r: &Row<'_, '_>) -> Result<OutboxItem, DbError> {
    Ok(OutboxItem {
        finding_id: r.get(0)?,
        sink: r.get(1)?,
        attempts: r.get::<i64>(2)?.max(0) as u32,
        finding: r.get(3)?,
        stored_at: r.get(4)?,
    })
}

impl Store {
    /// Alerts due at `now` (Unix seconds), oldest first, at most `limit`;
    /// only `sink`'s when given.
    pub fn outbox_due(
        &self,
        now: i64,
        limit: usize,
        sink: Option<&str>,
    ) -> Result<Vec<OutboxItem>, Error> {
        self.conn
            .query_map(
                "SELECT o.finding_id, o.sink, o.attempts, f.finding, f.inserted_at
                 FROM alert_outbox o JOIN findings f ON f.id = o.finding_id
                 WHERE o.state = 'pending' AND o.next_attempt_at <= ?1
                   AND (CAST(?3 AS TEXT) IS NULL OR o.sink = ?3)
                 ORDER BY o.next_attempt_at, f.seq LIMIT ?2",
                params![now, limit, sink],
                item,
            )
            .map_err(sql("read the outbox"))
    }

    /// Claims up to `limit` due alerts of `sink` for `lease` seconds: no
    /// other process (sharing the store) takes them meanwhile. A claim
    /// left by a process that died expires with its lease.
    pub fn outbox_claim(
        &self,
        now: i64,
        lease: i64,
        limit: usize,
        sink: &str,
    ) -> Result<Vec<OutboxItem>, Error> {
        self.claim(
            "SELECT o.finding_id, o.sink, o.attempts, f.finding, f.inserted_at
             FROM alert_outbox o JOIN findings f ON f.id = o.finding_id
             WHERE o.state = 'pending' AND o.next_attempt_at <= ?1 AND o.lease_until <= ?1
               AND o.sink = ?2
             ORDER BY o.next_attempt_at, f.seq LIMIT ?3 /*pg:FOR UPDATE OF o SKIP LOCKED*/",
            params![now, sink, limit],
            now + lease,
        )
    }

    /// Claims the pending, unclaimed alerts of `sink` for findings of
    /// `rule_id` stored until `until`, due or not: a group's members.
    pub fn outbox_claim_group(
        &self,
        now: i64,
        lease: i64,
        sink: &str,
        rule_id: &str,
        until: i64,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, Error> {
        self.claim(
            "SELECT o.finding_id, o.sink, o.attempts, f.finding, f.inserted_at
             FROM alert_outbox o JOIN findings f ON f.id = o.finding_id
             WHERE o.state = 'pending' AND o.sink = ?2 AND f.rule_id = ?3
               AND f.inserted_at <= ?4 AND o.lease_until <= ?1
             ORDER BY f.seq LIMIT ?5 /*pg:FOR UPDATE OF o SKIP LOCKED*/",
            params![now, sink, rule_id, until, limit],
            now + lease,
        )
    }

    /// Selects with `select` and leases what it found, in one write
    /// transaction. On PostgreSQL the select locks the rows it returns and
    /// skips rows another instance is claiming (`FOR UPDATE SKIP LOCKED`),
    /// so two instances never claim the same alert.
    fn claim(
        &self,
        select: &str,
        args: &[&dyn ToParam],
        until: i64,
    ) -> Result<Vec<OutboxItem>, Error> {
        let owner = instance();
        self.conn
            .transaction(Begin::RowLocks, |tx| -> Result<_, DbError> {
                let items = tx.query_map(select, args, item)?;
                for i in &items {
                    tx.execute(
                        "UPDATE alert_outbox SET lease_until = ?3, lease_owner = ?4
                         WHERE finding_id = ?1 AND sink = ?2",
                        params![i.finding_id, i.sink, until, owner],
                    )?;
                }
                Ok(items)
            })
            .map_err(sql("claim alerts"))
    }

    /// Gives back the claims of processes on this host that are gone (a
    /// crash, kill -9): without this, their alerts would wait for the lease
    /// to run out. Claims of other hosts' processes are left to expire.
    /// Returns how many were given back.
    pub fn outbox_release_dead_claims(&self, now: i64) -> Result<usize, Error> {
        let owners: Vec<String> = self
            .conn
            .query_map(
                "SELECT DISTINCT lease_owner FROM alert_outbox WHERE lease_until > ?1 AND lease_owner != ''",
                params![now],
                |r| r.get(0),
            )
            .map_err(sql("read the outbox"))?;
        let mut n = 0;
        for owner in owners.iter().filter(|o| owner_is_gone(o)) {
            n += self
                .conn
                .execute(
                    "UPDATE alert_outbox SET lease_until = 0, lease_owner = '' WHERE lease_owner = ?1",
                    params![owner],
                )
                .map_err(sql("release dead claims"))?;
        }
        Ok(n)
    }

    /// Gives back a claim that was not used (a throttled pass).
    pub fn outbox_release(&self, finding_id: &str, sink: &str) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE alert_outbox SET lease_until = 0 WHERE finding_id = ?1 AND sink = ?2",
                params![finding_id, sink],
            )
            .map_err(sql("release a claim"))?;
        Ok(())
    }

    /// Each alert of finding `id`: (sink, state, attempts, last error).
    pub fn alert_states(&self, id: &str) -> Result<Vec<AlertState>, Error> {
        self.conn
            .query_map(
                "SELECT sink, state, attempts, last_error, repeats FROM alert_outbox
                 WHERE finding_id = ?1 ORDER BY sink",
                params![id],
                |r| {
                    Ok(AlertState {
                        sink: r.get(0)?,
                        state: r.get(1)?,
                        attempts: r.get::<i64>(2)?.max(0) as u32,
                        last_error: r.get(3)?,
                        repeats: r.get::<i64>(4)?.max(0) as u32,
                    })
                },
            )
            .map_err(sql("read the outbox"))
    }

    /// The alert went out: never sent again.
    pub fn outbox_delivered(&self, finding_id: &str, sink: &str) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE alert_outbox SET state = 'delivered', attempts = attempts + 1, last_error = NULL, lease_until = 0
                 WHERE finding_id = ?1 AND sink = ?2",
                params![finding_id, sink],
            )
            .map_err(sql("record a delivery"))?;
        Ok(())
    }

    /// The attempt failed: try again at `next_at`, or give up (`dead`).
    pub fn outbox_failed(
        &self,
        finding_id: &str,
        sink: &str,
        error: &str,
        next_at: i64,
        dead: bool,
    ) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?3, lease_until = 0,
                     next_attempt_at = ?4, state = CASE WHEN ?5 = 1 THEN 'dead' ELSE 'pending' END
                 WHERE finding_id = ?1 AND sink = ?2 AND state = 'pending'",
                params![finding_id, sink, error, next_at, dead],
            )
            .map_err(sql("record a failed delivery"))?;
        Ok(())
    }

    /// Dead-letters the pending alerts of sinks not in `sinks` that were
    /// due `grace` seconds ago or more; returns how many.
    pub fn outbox_orphans(&self, sinks: &[&str], now: i64, grace: i64) -> Result<usize, Error> {
        let pending: Vec<(String, String)> = self
            .conn
            .query_map(
                "SELECT finding_id, sink FROM alert_outbox
                 WHERE state = 'pending' AND next_attempt_at <= ?1",
                params![now - grace],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql("read the outbox"))?;
        let mut n = 0;
        for (id, sink) in pending {
            if !sinks.contains(&sink.as_str()) {
                self.outbox_failed(
                    &id,
                    &sink,
                    "the sink was removed from the configuration",
                    now,
                    true,
                )?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Alerts not delivered yet (pending), and given up on (dead).
    /// Per sink: alerts delivered, waiting (to be retried) and dead, and
    /// the last error recorded (`DeliverySummary`).
    pub fn delivery_summary(&self) -> Result<Vec<DeliverySummary>, Error> {
        self.conn
            .query_map(
                "SELECT sink,
                        COUNT(*) FILTER (WHERE state = 'delivered'),
                        COUNT(*) FILTER (WHERE state = 'pending' AND attempts > 0),
                        COUNT(*) FILTER (WHERE state = 'pending' AND attempts = 0),
                        COUNT(*) FILTER (WHERE state = 'dead'),
                        (SELECT last_error FROM alert_outbox i WHERE i.sink = o.sink
                           AND last_error IS NOT NULL ORDER BY next_attempt_at DESC LIMIT 1)
                 FROM alert_outbox o GROUP BY sink ORDER BY sink",
                params![],
                |r| {
                    Ok(DeliverySummary {
                        sink: r.get(0)?,
                        delivered: r.get::<i64>(1)? as u64,
                        retrying: r.get::<i64>(2)? as u64,
                        waiting: r.get::<i64>(3)? as u64,
                        dead: r.get::<i64>(4)? as u64,
                        last_error: r.get(5)?,
                    })
                },
            )
            .map_err(sql("read the outbox"))
    }

    pub fn outbox_depth(&self) -> Result<(u64, u64), Error> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FILTER (WHERE state = 'pending'), COUNT(*) FILTER (WHERE state = 'dead')
                 FROM alert_outbox",
                params![],
                |r| Ok((r.get::<i64>(0)? as u64, r.get::<i64>(1)? as u64)),
            )
            .map_err(sql("count the outbox"))
    }
}

/// One sink's alerts, by state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliverySummary {
    pub sink: String,
    pub delivered: u64,
    /// Tried and failed; waiting for the next try.
    pub retrying: u64,
    /// Not tried yet.
    pub waiting: u64,
    pub dead: u64,
    pub last_error: Option<String>,
}

/// This process, as a claim owner: `HOST|BOOT|PIDNS|PID|START`. BOOT (the
/// kernel's boot id) and PIDNS (the pid namespace) say where a pid means
/// something; START (the process start time in clock ticks since boot)
/// makes a later process that reuses the pid, as PID 1 in a restarted
/// container does, another owner.
pub fn instance() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let pid = std::process::id();
        format!(
            "{}|{}|{}|{pid}|{}",
            hostname(),
            boot_id(),
            pid_namespace(),
            start_ticks(pid).unwrap_or(0)
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_owned())
        .unwrap_or_default()
}

/// `pid:[4026531836]`: processes in other namespaces (other containers on
/// the host network) are not visible by pid from here.
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`: when the process started.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that wrote `owner` is known to be gone: it ran on
/// this host, since this boot, in this pid namespace, and no process with
/// its pid and start time runs now. Anything unknown counts as alive (its
/// claims then run out with their lease).
fn owner_is_gone(owner: &str) -> bool {
    let mut parts = owner.rsplitn(5, '|');
    let (Some(start), Some(pid), Some(ns), Some(boot), Some(host)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(start), Ok(pid)) = (start.parse::<u64>(), pid.parse::<u32>()) else {
        return false;
    };
    let mine = (hostname(), boot_id(), pid_namespace());
    if owner == instance()
        || start == 0
        || mine.1.is_empty()
        || mine.2.is_empty()
        || (host, boot, ns) != (mine.0.as_str(), mine.1.as_str(), mine.2.as_str())
    {
        return false;
    }
    start_ticks(pid) != Some(start)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Batch, Inserted};
    use super::{instance, owner_is_gone};

    #[test]
    fn claims_of_a_dead_process_on_this_host_are_taken_back() {
        assert!(!owner_is_gone(instance()), "this process is alive");
        let me = instance();
        let fields: Vec<&str> = me.rsplitn(5, '|').collect();
        let (pid, ns, boot, host) = (fields[1], fields[2], fields[3], fields[4]);
        // This pid, another start: an earlier process that reused the pid.
        assert!(owner_is_gone(&format!("{host}|{boot}|{ns}|{pid}|1")));
        // A pid that runs no process.
        assert!(owner_is_gone(&format!("{host}|{boot}|{ns}|4194303|5")));
        // Another host, another boot, another pid namespace (a container on
        // the host network): not ours to judge.
        assert!(!owner_is_gone(&format!("x{host}|{boot}|{ns}|4194303|5")));
        assert!(!owner_is_gone(&format!("{host}|x{boot}|{ns}|4194303|5")));
        assert!(!owner_is_gone(&format!("{host}|{boot}|pid:[1]|4194303|5")));
        // An unknown start time.
        assert!(!owner_is_gone(&format!("{host}|{boot}|{ns}|4194303|0")));
        assert!(!owner_is_gone("garbage"));
    }

    #[test]
    fn new_findings_enter_the_outbox_once() {
        let (_dir, mut store) = temp_store();
        let batch = Batch {
            findings: vec![
                finding("c1", "a1", "pod-exec"),
                finding("c1", "a2", "pod-exec"),
            ],
            outbox: vec![vec!["siem".into(), "slack".into()], vec![]],
            ..Batch::default()
        };
        let out = store.commit(&batch).unwrap();
        assert!(matches!(out[0], Inserted::New { .. }));
        let due = store.outbox_due(i64::MAX, 10, None).unwrap();
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|d| d.finding.contains("\"a1\"")));
        // The same finding again (a redelivery) adds nothing to the outbox.
        store.commit(&batch).unwrap();
        assert_eq!(store.outbox_due(i64::MAX, 10, None).unwrap().len(), 2);
        store
            .outbox_delivered(&due[0].finding_id, &due[0].sink)
            .unwrap();
        store
            .outbox_failed(&due[1].finding_id, &due[1].sink, "503", 100, false)
            .unwrap();
        assert_eq!(store.outbox_due(99, 10, None).unwrap().len(), 0);
        let again = store.outbox_due(100, 10, None).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        store
            .outbox_failed(&again[0].finding_id, &again[0].sink, "503", 200, true)
            .unwrap();
        assert_eq!(store.outbox_depth().unwrap(), (0, 1));
        assert_eq!(
            store.outbox_due(i64::MAX, 10, Some("nope")).unwrap().len(),
            0
        );
        let states = store.alert_states(&again[0].finding_id).unwrap();
        assert!(
            states.iter().any(|a| a.state == "dead"
                && a.attempts == 2
                && a.last_error.as_deref() == Some("503")),
            "{states:?}"
        );
    }
}
