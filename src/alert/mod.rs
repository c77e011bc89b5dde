//! Alerting: findings leave kaudit through the durable outbox.
//!
//! The pipeline routes each new finding to its sinks (`AlertsConfig::route`)
//! and the store writes the outbox rows in the transaction that stores the
//! finding. [`Deliverer`] (its own thread and database connection) works the
//! outbox off, one thread per sink: each alert is sent, then recorded as
//! delivered; a failure is retried with exponential backoff and jitter (or
//! the receiver's Retry-After), and after `max_attempts` or `max_age`
//! dead-lettered, visibly (`kaudit_outbox_depth`, the
//! `alert_outbox` table). A delivery recorded is never sent again; one sent
//! but not yet recorded when kaudit dies is sent again with the same
//! `Idempotency-Key`.
//!
//! Built today: the `webhook` sink. Slack, email, grouping, dedup windows,
//! throttles, silences and the heartbeat are the rest of the alerting issue.

pub mod email;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::AlertsConfig;
use crate::metrics::{Metrics, SinkOutcome};
use crate::store::{OutboxItem, Store};

/// Fills `{field}`s of `template` from the finding `f` (its top-level
/// fields; `{SEVERITY}` upper-cased); an unknown name stays as written.
pub fn fill(template: &str, f: &serde_json::Value) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        let value = if name == "SEVERITY" {
            f["severity"].as_str().map(str::to_uppercase)
        } else {
            match &f[name] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                v if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    Some(v.to_string())
                }
                _ => None,
            }
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// A finding's field as text for a message: strings as they are, lists
/// joined, absent as `-`.
pub(crate) fn field_text(f: &serde_json::Value, key: &str) -> String {
    match &f[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again, after `after` seconds if the receiver said so.
    Retry {
        error: String,
        after: Option<i64>,
    },
    /// The receiver refuses the payload for good.
    Rejected(String),
}

/// The longest wait between two attempts.
const MAX_BACKOFF: i64 = 3600;
/// How long a delivery pass holds the alerts it claimed (longer than any
/// sink's requests take).
const LEASE: i64 = 300;

/// Seconds to wait after the `attempts`-th failure: 5 s, 10 s, 20 s, ...
/// up to an hour.
pub fn backoff(attempts: u32) -> i64 {
    5i64.saturating_mul(1i64 << attempts.min(20))
        .min(MAX_BACKOFF)
}

/// A built sink.
enum Sink {
    Webhook(webhook::WebhookSink),
    Slack(slack::SlackSink),
    Email(Box<email::EmailSink>),
}

impl Sink {
    fn send_group(&self, group_id: &str, findings: &[&str], now: i64) -> Outcome {
        match self {
            Sink::Webhook(s) => s.send_group(group_id, findings, now),
            Sink::Slack(s) => s.send_group(findings),
            Sink::Email(s) => s.send_group(findings),
        }
    }

    fn send(&self, finding_id: &str, finding: &str, now: i64) -> Outcome {
        match self {
            Sink::Webhook(s) => s.send(finding_id, finding, now),
            Sink::Slack(s) => s.send(finding),
            Sink::Email(s) => s.send(finding),
        }
    }
}

/// Builds every configured sink.
fn build_sinks(cfg: &AlertsConfig) -> Result<BTreeMap<String, Sink>, String> {
    let mut sinks = BTreeMap::new();
    for s in &cfg.sinks {
        let sink = match s.kind.as_str() {
            "slack" => Sink::Slack(slack::SlackSink::new(s, cfg.base_url.as_deref())?),
            "email" => Sink::Email(Box::new(email::EmailSink::new(s, cfg.base_url.as_deref())?)),
            _ => Sink::Webhook(webhook::WebhookSink::new(s)?),
        };
        sinks.insert(s.name.clone(), sink);
    }
    Ok(sinks)
}

/// Builds every sink without sending anything (`kaudit check`): secrets,
/// certificates and addresses are read and parsed.
///
/// # Errors
/// The first sink that cannot be built, and why.
pub fn check(cfg: &AlertsConfig) -> Result<(), String> {
    build_sinks(cfg).map(|_| ())
}

/// Tells every sink about a problem of kaudit itself, directly: used when
/// the store (and so the outbox) cannot be written. Best effort, once per
/// problem; the outcome is logged.
pub struct Notifier {
    sinks: BTreeMap<String, Sink>,
}

impl Notifier {
    /// # Errors
    /// A sink that cannot be built.
    pub fn new(cfg: &AlertsConfig) -> Result<Notifier, String> {
        Ok(Notifier {
            sinks: build_sinks(cfg)?,
        })
    }

    pub fn notify(&self, f: &crate::finding::Finding) {
        let Ok(body) = serde_json::to_string(f) else {
            return;
        };
        let now = crate::timespec::now();
        for (name, sink) in &self.sinks {
            match sink.send(&f.id, &body, now) {
                Outcome::Delivered => {
                    tracing::info!(sink = %name, rule = %f.rule_id, "sink told directly")
                }
                other => {
                    tracing::warn!(sink = %name, rule = %f.rule_id, outcome = ?other, "could not tell the sink")
                }
            }
        }
    }
}

/// Works the outbox off: one thread per sink, each with its own database
/// connection, so that a slow or dead sink never holds up the others (nor
/// the pipeline, which only writes the outbox).
pub struct Deliverer {
    db: std::path::PathBuf,
    sinks: BTreeMap<String, Sink>,
    group_window: Option<i64>,
    throttles: BTreeMap<String, Option<u32>>,
    heartbeat: Option<crate::config::Heartbeat>,
    cluster: String,
    max_attempts: u32,
    max_age: i64,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    alive: Option<Arc<std::sync::atomic::AtomicI64>>,
}

impl Deliverer {
    /// # Errors
    /// A sink that cannot be built (a secret missing).
    pub fn new(
        db: &Path,
        cfg: &AlertsConfig,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Result<Deliverer, String> {
        Ok(Deliverer {
            db: db.to_owned(),
            sinks: build_sinks(cfg)?,
            group_window: cfg.group_window,
            throttles: cfg
                .sinks
                .iter()
                .map(|s| (s.name.clone(), s.throttle_per_minute))
                .collect(),
            heartbeat: cfg.heartbeat.clone(),
            cluster: crate::finding::DEFAULT_CLUSTER.to_owned(),
            max_attempts: cfg.max_attempts,
            max_age: cfg.max_age,
            metrics,
            stop,
            alive: None,
        })
    }

    /// Heartbeats go out only while the pipeline's loop goes round.
    pub fn with_alive(mut self, alive: Arc<std::sync::atomic::AtomicI64>) -> Self {
        self.alive = Some(alive);
        self
    }

    /// The cluster named in heartbeats (the config's `cluster`).
    pub fn with_cluster(mut self, cluster: Option<&str>) -> Self {
        if let Some(c) = cluster {
            self.cluster = c.to_owned();
        }
        self
    }

    /// Starts one delivery thread per sink.
    ///
    /// # Errors
    /// When the store cannot be opened or a thread started.
    pub fn spawn(self) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
        // Alerts for sinks no longer configured: dead-lettered, visibly,
        // instead of waiting forever (or going out weeks later if a sink
        // of that name comes back).
        let store = Store::open(&self.db).map_err(|e| e.to_string())?;
        let names: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
        // Instances sharing a store may run different configurations for
        // a while (a rollout, a rollback): another's sink is not an orphan
        // until nobody has tried its alerts for an hour.
        let grace = if store.dialect() == crate::store::Dialect::Postgres {
            3600
        } else {
            0
        };
        match store.outbox_orphans(&names, crate::timespec::now(), grace) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                alerts = n,
                "alerts of sinks removed from the configuration dead-lettered"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot dead-letter alerts of removed sinks"),
        }
        // Claims of an earlier kaudit on this host that crashed: taken back
        // now rather than after the lease.
        match store.outbox_release_dead_claims(crate::timespec::now()) {
            Ok(0) => {}
            Ok(n) => tracing::info!(alerts = n, "claims of a process that is gone taken back"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot take back the claims of a process that is gone")
            }
        }
        drop(store);
        let mut threads = Vec::new();
        for (name, sink) in self.sinks {
            let w = Worker {
                store: Store::open(&self.db).map_err(|e| e.to_string())?,
                heartbeat: self
                    .heartbeat
                    .as_ref()
                    .filter(|h| h.sink == name)
                    .map(|h| h.interval),
                name: name.clone(),
                sink,
                cluster: self.cluster.clone(),
                max_attempts: self.max_attempts,
                max_age: self.max_age,
                group_window: self.group_window,
                throttle: self.throttles.get(&name).copied().flatten(),
                sent: Default::default(),
                unrecorded: Default::default(),
                metrics: self.metrics.clone(),
                stop: self.stop.clone(),
                alive: self.alive.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("kaudit-alert-{name}"))
                    .spawn(move || w.run())
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(threads)
    }
}

/// One sink's delivery loop.
struct Worker {
    store: Store,
    name: String,
    sink: Sink,
    heartbeat: Option<i64>,
    cluster: String,
    max_attempts: u32,
    max_age: i64,
    group_window: Option<i64>,
    throttle: Option<u32>,
    /// When messages went out in the last minute (the throttle).
    sent: std::cell::RefCell<std::collections::VecDeque<std::time::Instant>>,
    /// Delivered, but the store could not record it yet: never sent again,
    /// only the record is retried.
    unrecorded: std::cell::RefCell<std::collections::BTreeSet<String>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    alive: Option<Arc<std::sync::atomic::AtomicI64>>,
}

impl Worker {
    fn count(&self, outcome: &str) {
        self.metrics
            .alert_deliveries
            .get_or_create(&SinkOutcome {
                sink: self.name.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Sends a heartbeat when one is due (directly: it is not stored).
    fn beat(&self, last: &mut Option<std::time::Instant>) {
        let Some(interval) = self.heartbeat else {
            return;
        };
        if last.is_some_and(|t| t.elapsed().as_secs() < interval.max(1) as u64) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let now = crate::timespec::now();
        if let Some(alive) = &self.alive {
            let at = alive.load(Ordering::Relaxed);
            if now - at > 30 {
                // The pipeline is stuck: no heartbeat, so that it is noticed.
                tracing::error!(sink = %self.name, stuck_for = now - at, "pipeline not running: heartbeat withheld");
                self.count("heartbeat-withheld");
                return;
            }
        }
        let (pending, dead) = self.store.outbox_depth().unwrap_or((0, 0));
        let f = crate::detect::pipeline::heartbeat(
            &self.cluster,
            now,
            serde_json::json!({"outbox_pending": pending, "outbox_dead": dead}),
        );
        let Ok(body) = serde_json::to_string(&f) else {
            return;
        };
        match self.sink.send(&f.id, &body, now) {
            Outcome::Delivered => self.count("heartbeat"),
            _ => self.count("heartbeat-failed"),
        }
    }

    fn run(self) {
        let mut last_beat = None;
        while !self.stop.load(Ordering::Relaxed) {
            self.beat(&mut last_beat);
            self.record_unrecorded();
            let worked = match self.once() {
                Ok(n) => n,
                Err(e) => {
                    // The store is failing: wait before trying again (no
                    // alert is sent twice meanwhile: see `unrecorded`).
                    tracing::warn!(sink = %self.name, error = %e, "the outbox cannot be read or written; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    0
                }
            };
            if worked == 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Records deliveries that the store refused to record earlier.
    fn record_unrecorded(&self) {
        let ids: Vec<String> = self.unrecorded.borrow().iter().cloned().collect();
        for id in ids {
            if self.store.outbox_delivered(&id, &self.name).is_ok() {
                self.unrecorded.borrow_mut().remove(&id);
            }
        }
    }

    /// Room for one more message under the throttle (and takes it).
    fn take_slot(&self) -> bool {
        let Some(limit) = self.throttle else {
            return true;
        };
        let mut sent = self.sent.borrow_mut();
        while sent
            .front()
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(60))
        {
            sent.pop_front();
        }
        if sent.len() >= limit as usize {
            return false;
        }
        sent.push_back(std::time::Instant::now());
        true
    }

    /// Slots left under the throttle (none taken).
    fn slots(&self) -> usize {
        let Some(limit) = self.throttle else {
            return usize::MAX;
        };
        let sent = self.sent.borrow();
        let recent = sent
            .iter()
            .filter(|t| t.elapsed() < Duration::from_secs(60))
            .count();
        (limit as usize).saturating_sub(recent)
    }

    /// One pass over what is due for this sink; the number of attempts.
    fn once(&self) -> Result<usize, crate::store::Error> {
        let now = crate::timespec::now();
        let mut due = self.store.outbox_claim(now, LEASE, 100, &self.name)?;
        {
            let unrecorded = self.unrecorded.borrow();
            due.retain(|i| !unrecorded.contains(&i.finding_id));
        }
        // Too old to be worth sending: dead-lettered before an attempt.
        let mut fresh = Vec::with_capacity(due.len());
        for i in due {
            if now.saturating_sub(i.stored_at) > self.max_age {
                self.store.outbox_failed(
                    &i.finding_id,
                    &i.sink,
                    "older than max_age",
                    now,
                    true,
                )?;
                self.count("dead");
            } else {
                fresh.push(i);
            }
        }
        let due = fresh;
        if let Ok((pending, _dead)) = self.store.outbox_depth() {
            self.metrics.outbox_depth.set(pending as i64);
        }
        if due.is_empty() {
            return Ok(0);
        }
        if self.slots() == 0 {
            for i in &due {
                self.store.outbox_release(&i.finding_id, &i.sink)?;
            }
            return Ok(0);
        }
        // More due than the throttle lets out: everything due goes as one
        // summary message (the surplus is never dropped).
        if due.len() > self.slots() && due.len() > 1 {
            if self.take_slot() {
                self.deliver_group(&due, now, "summary")?;
            }
            return Ok(due.len());
        }
        let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
        for item in &due {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if done.contains(&item.finding_id) {
                continue;
            }
            // Findings of one rule within the group window go out together.
            let members = match self.group_window {
                Some(w) => {
                    let rule = serde_json::from_str::<serde_json::Value>(&item.finding)
                        .ok()
                        .and_then(|v| v["rule_id"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    // Members not claimed yet (by this pass or another
                    // process) are claimed now; this pass's own are added.
                    let mut m = self.store.outbox_claim_group(
                        now,
                        LEASE,
                        &self.name,
                        &rule,
                        item.stored_at.saturating_add(w),
                        200,
                    )?;
                    for d in &due {
                        let same_rule = serde_json::from_str::<serde_json::Value>(&d.finding)
                            .ok()
                            .is_some_and(|v| v["rule_id"] == rule.as_str());
                        if same_rule
                            && d.stored_at <= item.stored_at.saturating_add(w)
                            && !m.iter().any(|x| x.finding_id == d.finding_id)
                        {
                            m.push(d.clone());
                        }
                    }
                    m.retain(|i| !done.contains(&i.finding_id));
                    if m.is_empty() { vec![item.clone()] } else { m }
                }
                None => vec![item.clone()],
            };
            if !self.take_slot() {
                break;
            }
            for m in &members {
                done.insert(m.finding_id.clone());
            }
            if members.len() > 1 {
                self.deliver_group(&members, now, "group")?;
            } else {
                let outcome = self.sink.send(&item.finding_id, &item.finding, now);
                self.record(item, outcome, now)?;
            }
        }
        // Claimed but not sent (throttled, stopping): given back at once,
        // not held for the lease.
        for d in due.iter().filter(|d| !done.contains(&d.finding_id)) {
            self.store.outbox_release(&d.finding_id, &d.sink)?;
        }
        Ok(due.len())
    }

    /// Sends `items` as one message and records the outcome on each.
    fn deliver_group(
        &self,
        items: &[OutboxItem],
        now: i64,
        kind: &str,
    ) -> Result<(), crate::store::Error> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for i in items {
            h.update(i.finding_id.as_bytes());
        }
        let group_id = hex::encode(&h.finalize()[..16]);
        let bodies: Vec<&str> = items.iter().map(|i| i.finding.as_str()).collect();
        let outcome = self.sink.send_group(&group_id, &bodies, now);
        tracing::info!(sink = %self.name, kind, count = items.len(), group = %group_id, outcome = ?outcome, "alerts sent together");
        for i in items {
            self.record(i, outcome.clone(), now)?;
        }
        Ok(())
    }

    /// Records what one attempt at `item` came to.
    fn record(
        &self,
        item: &OutboxItem,
        outcome: Outcome,
        now: i64,
    ) -> Result<(), crate::store::Error> {
        match outcome {
            Outcome::Delivered => {
                self.count("delivered");
                if let Err(e) = self.store.outbox_delivered(&item.finding_id, &item.sink) {
                    self.unrecorded.borrow_mut().insert(item.finding_id.clone());
                    return Err(e);
                }
            }
            Outcome::Retry { error, after } => {
                let attempts = item.attempts + 1;
                let too_old = now.saturating_sub(item.stored_at) > self.max_age;
                let dead = attempts >= self.max_attempts || too_old;
                let wait = after
                    .unwrap_or_else(|| jittered(backoff(item.attempts), &item.finding_id))
                    .clamp(1, MAX_BACKOFF);
                self.store
                    .outbox_failed(&item.finding_id, &item.sink, &error, now + wait, dead)?;
                if dead {
                    self.count("dead");
                    tracing::error!(sink = %item.sink, finding = %item.finding_id, attempts, too_old, error = %error, "alert dead-lettered");
                } else {
                    self.count("retry");
                    tracing::warn!(sink = %item.sink, finding = %item.finding_id, attempts, error = %error, retry_in = wait, "alert delivery failed");
                }
            }
            Outcome::Rejected(error) => {
                self.store
                    .outbox_failed(&item.finding_id, &item.sink, &error, now, true)?;
                self.count("rejected");
                tracing::error!(sink = %item.sink, finding = %item.finding_id, error = %error, "alert rejected by the receiver; dead-lettered");
            }
        }
        Ok(())
    }
}

/// `secs` spread by up to ±20 % (from the finding id: alerts that failed
/// together do not all come back in the same second).
fn jittered(secs: i64, id: &str) -> i64 {
    let h = id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let pct = i64::from(h % 41) - 20;
    (secs + secs * pct / 100).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_fill_fields() {
        let f = serde_json::json!({"rule_id": "pod-exec", "severity": "high", "cluster": "prod", "details": {}});
        assert_eq!(
            super::fill("[{SEVERITY}] {rule_id} on {cluster} {nope} {", &f),
            "[HIGH] pod-exec on prod {nope} {"
        );
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let j = super::jittered(100, "abc");
        assert!((80..=120).contains(&j));
        assert_eq!(super::jittered(100, "abc"), j);
        assert_eq!(super::backoff(0), 5);
        assert_eq!(super::backoff(1), 10);
        assert_eq!(super::backoff(3), 40);
        assert_eq!(super::backoff(30), 3600);
    }
}
