//! Alerting: findings leave kaudit through the durable outbox.
//!
//! The pipeline routes each new finding to its sinks (`AlertsConfig::route`)
//! and the store writes the outbox rows in the transaction that stores the
//! finding. [`Deliverer`] (its own thread and database connection) works the
//! outbox off: each alert is sent, then recorded as delivered; a failure is
//! retried with exponential backoff (or the receiver's Retry-After), and
//! after `max_attempts` dead-lettered, visibly (`kaudit_outbox_depth`, the
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
use crate::store::Store;

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

pub struct Deliverer {
    store: Store,
    sinks: BTreeMap<String, Sink>,
    heartbeat: Option<crate::config::Heartbeat>,
    cluster: String,
    max_attempts: u32,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

impl Deliverer {
    /// # Errors
    /// A sink that cannot be built (a secret missing), or the store.
    pub fn new(
        db: &Path,
        cfg: &AlertsConfig,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Result<Deliverer, String> {
        let sinks = build_sinks(cfg)?;
        let store = Store::open(db).map_err(|e| e.to_string())?;
        Ok(Deliverer {
            store,
            sinks,
            heartbeat: cfg.heartbeat.clone(),
            cluster: crate::finding::DEFAULT_CLUSTER.to_owned(),
            max_attempts: cfg.max_attempts,
            metrics,
            stop,
        })
    }

    /// The cluster named in heartbeats (the config's `cluster`).
    pub fn with_cluster(mut self, cluster: Option<&str>) -> Self {
        if let Some(c) = cluster {
            self.cluster = c.to_owned();
        }
        self
    }

    /// Sends a heartbeat when one is due (directly: it is not stored).
    fn beat(&self, last: &mut Option<std::time::Instant>) {
        let Some(h) = &self.heartbeat else { return };
        if last.is_some_and(|t| t.elapsed().as_secs() < h.interval.max(1) as u64) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let Some(sink) = self.sinks.get(&h.sink) else {
            return;
        };
        let now = crate::timespec::now();
        let (pending, dead) = self.store.outbox_depth().unwrap_or((0, 0));
        let f = crate::detect::pipeline::heartbeat(
            &self.cluster,
            now,
            serde_json::json!({"outbox_pending": pending, "outbox_dead": dead}),
        );
        let Ok(body) = serde_json::to_string(&f) else {
            return;
        };
        let o = match sink.send(&f.id, &body, now) {
            Outcome::Delivered => "heartbeat",
            _ => "heartbeat-failed",
        };
        self.metrics
            .alert_deliveries
            .get_or_create(&SinkOutcome {
                sink: h.sink.clone(),
                outcome: o.to_owned(),
            })
            .inc();
    }

    /// Works the outbox off until `stop`.
    pub fn run(self) {
        let mut last_beat = None;
        while !self.stop.load(Ordering::Relaxed) {
            self.beat(&mut last_beat);
            let worked = match self.once() {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "the outbox cannot be read; retrying");
                    0
                }
            };
            if worked == 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// One pass over what is due; the number of attempts made.
    fn once(&self) -> Result<usize, crate::store::Error> {
        let now = crate::timespec::now();
        let due = self.store.outbox_due(now, 100)?;
        if let Ok((pending, _dead)) = self.store.outbox_depth() {
            self.metrics.outbox_depth.set(pending as i64);
        }
        for item in &due {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let outcome = match self.sinks.get(&item.sink) {
                Some(sink) => sink.send(&item.finding_id, &item.finding, now),
                // Removed from the configuration since: kept, not sent.
                None => Outcome::Retry {
                    error: "no such sink in the configuration".into(),
                    after: Some(MAX_BACKOFF),
                },
            };
            let label = |o: &str| SinkOutcome {
                sink: item.sink.clone(),
                outcome: o.to_owned(),
            };
            match outcome {
                Outcome::Delivered => {
                    self.store.outbox_delivered(&item.finding_id, &item.sink)?;
                    self.metrics
                        .alert_deliveries
                        .get_or_create(&label("delivered"))
                        .inc();
                }
                Outcome::Retry { error, after } => {
                    let attempts = item.attempts + 1;
                    let dead = attempts >= self.max_attempts;
                    let wait = after
                        .unwrap_or_else(|| backoff(item.attempts))
                        .clamp(1, MAX_BACKOFF);
                    self.store.outbox_failed(
                        &item.finding_id,
                        &item.sink,
                        &error,
                        now + wait,
                        dead,
                    )?;
                    let o = if dead { "dead" } else { "retry" };
                    self.metrics.alert_deliveries.get_or_create(&label(o)).inc();
                    if dead {
                        tracing::error!(sink = %item.sink, finding = %item.finding_id, attempts, error = %error, "alert dead-lettered");
                    } else {
                        tracing::warn!(sink = %item.sink, finding = %item.finding_id, attempts, error = %error, retry_in = wait, "alert delivery failed");
                    }
                }
                Outcome::Rejected(error) => {
                    self.store
                        .outbox_failed(&item.finding_id, &item.sink, &error, now, true)?;
                    self.metrics
                        .alert_deliveries
                        .get_or_create(&label("rejected"))
                        .inc();
                    tracing::error!(sink = %item.sink, finding = %item.finding_id, error = %error, "alert rejected by the receiver; dead-lettered");
                }
            }
        }
        Ok(due.len())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(super::backoff(0), 5);
        assert_eq!(super::backoff(1), 10);
        assert_eq!(super::backoff(3), 40);
        assert_eq!(super::backoff(30), 3600);
    }
}
