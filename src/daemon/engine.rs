//! The pipeline thread: the one owner of the detector and the store
//! connection. It takes [`Work`] from the bounded channel, decodes and
//! detects each batch, commits it with the source's checkpoint, and only
//! then tells the source. When the store refuses a commit it keeps the
//! batch, stops taking work (the channel fills: files and Kafka wait, the
//! webhook answers 503), turns /readyz false, and retries until the store
//! takes it. Every few seconds it also checks the clusters' streams for
//! silence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::silence::StreamWatch;
use crate::config::Config;
use crate::decode::{Context, Limits};
use crate::event::AuditEvent;
use crate::finding::{DEFAULT_CLUSTER, Finding};
use crate::metrics::{Metrics, RuleSeverity, SourceCluster, SourceLabel};
use crate::pipeline::{Output, Pipeline};
use crate::source::{Committed, Work};
use crate::store::SourceCheckpoint;

/// How often silence is checked and a failed commit retried.
const TICK: Duration = Duration::from_secs(1);

/// Shared health, read by /readyz.
#[derive(Default)]
pub struct StoreHealth {
    pub writable: AtomicBool,
    pub last_error: std::sync::Mutex<Option<String>>,
}

pub struct Engine {
    pub pipeline: Pipeline,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<StoreHealth>,
    pub watch: StreamWatch,
    pub limits: Limits,
    /// Tells the sinks directly when the store fails.
    pub notifier: Option<crate::alert::Notifier>,
}

/// A committed batch's acknowledgement, held until the commit succeeds.
struct Held {
    done: Option<oneshot::Sender<Committed>>,
    checkpoints: Vec<SourceCheckpoint>,
    committed: Committed,
}

/// What the pipeline reports while a batch is processed.
struct DaemonOutput<'a> {
    metrics: &'a Metrics,
    watch: &'a mut StreamWatch,
    source: &'a str,
    live: bool,
    now: i64,
    events: u64,
    latencies: Vec<f64>,
    new_findings: u64,
}

impl Output for DaemonOutput<'_> {
    fn finding(&mut self, f: &Finding) {
        self.new_findings += 1;
        self.metrics
            .findings
            .get_or_create(&RuleSeverity {
                rule: f.rule_id.clone(),
                severity: f.severity.to_string(),
            })
            .inc();
        tracing::info!(
            rule = %f.rule_id,
            severity = %f.severity,
            cluster = %f.cluster,
            audit_id = %f.audit_id,
            id = %f.id,
            summary = %f.summary,
            "finding"
        );
    }

    fn problem(&mut self, source: &str, line: u64, message: &str, audit_id: Option<&str>) {
        self.metrics
            .malformed
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .inc();
        tracing::warn!(
            source,
            line,
            audit_id,
            error = message,
            "input is not an audit event"
        );
    }

    fn event(&mut self, ev: &AuditEvent<'_>) {
        self.events += 1;
        let cluster = ev.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
        self.metrics
            .events
            .get_or_create(&SourceCluster {
                source: self.source.to_owned(),
                cluster: cluster.to_owned(),
            })
            .inc();
        if self.live {
            self.watch.saw(cluster, self.now);
        }
        if let Some(t) = ev
            .request_received_timestamp
            .as_deref()
            .and_then(crate::timespec::rfc3339_to_unix)
            && self.latencies.len() < 10_000
        {
            self.latencies.push((self.now - t).max(0) as f64);
        }
    }
}

/// A finding made outside any batch (a silent stream), logged and counted.
struct Quiet<'a>(&'a Metrics);

impl Output for Quiet<'_> {
    fn finding(&mut self, f: &Finding) {
        self.0
            .findings
            .get_or_create(&RuleSeverity {
                rule: f.rule_id.clone(),
                severity: f.severity.to_string(),
            })
            .inc();
        tracing::warn!(rule = %f.rule_id, cluster = %f.cluster, summary = %f.summary, "finding");
    }
    fn problem(&mut self, _: &str, _: u64, _: &str, _: Option<&str>) {}
}

impl Engine {
    /// Runs until the channel closes (every source gone, shutdown), then
    /// commits what is left.
    pub fn run(mut self, handle: tokio::runtime::Handle, mut rx: mpsc::Receiver<Work>) {
        self.health.writable.store(true, Ordering::Relaxed);
        self.metrics.store_up.set(1);
        let mut held: Vec<Held> = Vec::new();
        let mut last_tick = Instant::now();
        loop {
            // A failed commit is retried before anything new is taken.
            if !held.is_empty() {
                std::thread::sleep(TICK);
                self.retry(&mut held);
                continue;
            }
            let next = handle.block_on(async { tokio::time::timeout(TICK, rx.recv()).await });
            match next {
                Ok(Some(Work::Batch(b))) => {
                    let now = crate::timespec::now();
                    let ctx_source = b.source.to_string();
                    let mut out = DaemonOutput {
                        metrics: &self.metrics,
                        watch: &mut self.watch,
                        source: &ctx_source,
                        live: b.live,
                        now,
                        events: 0,
                        latencies: Vec::new(),
                        new_findings: 0,
                    };
                    for part in &b.parts {
                        let mut ctx = Context::new(self.limits);
                        ctx.source = &ctx_source;
                        ctx.cluster = part.cluster.as_deref();
                        ctx.default_cluster = self.config.cluster.as_deref();
                        ctx.request_received = b.request_received;
                        if let Err(e) = self.pipeline.feed(&part.data[..], &ctx, &mut out) {
                            tracing::warn!(source = %ctx_source, position = %b.position, error = %e, "input cut short");
                        }
                    }
                    let resumed = out.watch.take_resumed();
                    for f in resumed {
                        self.pipeline.report(f, &mut out);
                    }
                    let ok = self
                        .pipeline
                        .commit(false, b.checkpoints.clone(), &mut out)
                        .is_ok();
                    let committed = Committed {
                        events: out.events,
                        new_findings: out.new_findings,
                    };
                    let latencies = std::mem::take(&mut out.latencies);
                    if ok {
                        for l in latencies {
                            self.metrics.latency.observe(l);
                        }
                        if let Some(done) = b.done {
                            let _ = done.send(committed);
                        }
                    } else {
                        self.failed();
                        held.push(Held {
                            done: b.done,
                            checkpoints: b.checkpoints,
                            committed,
                        });
                    }
                }
                Ok(Some(Work::Reload(rules))) => {
                    self.pipeline.detector_mut().set_rules(rules);
                    tracing::info!("rules reloaded");
                }
                Ok(None) => break,
                Err(_) => {} // tick
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.tick(&mut held);
            }
        }
        // Shutdown: the last state and anything pending.
        let mut out = Quiet(&self.metrics);
        loop {
            match self.pipeline.commit(true, Vec::new(), &mut out) {
                Ok(()) => break,
                Err(_) => {
                    let e = self.pipeline.take_store_error();
                    tracing::error!(error = ?e.map(|e| e.to_string()), "final commit failed; retrying");
                    std::thread::sleep(TICK);
                }
            }
        }
        tracing::info!("pipeline stopped");
    }

    /// Silence checks (and the token state's eviction gauge).
    fn tick(&mut self, held: &mut Vec<Held>) {
        let now = crate::timespec::now();
        let silent = self.watch.check(now);
        if !silent.is_empty() {
            let mut out = Quiet(&self.metrics);
            for f in silent {
                self.pipeline.report(f, &mut out);
            }
            if self.pipeline.commit(false, Vec::new(), &mut out).is_err() {
                self.failed();
                held.push(Held {
                    done: None,
                    checkpoints: Vec::new(),
                    committed: Committed::default(),
                });
            }
        }
        if let Some(t) = self.pipeline.detector().token() {
            self.metrics.state_evictions.set(t.stats().evictions as i64);
        }
    }

    fn failed(&mut self) {
        self.metrics.commit_failures.inc();
        self.metrics.store_up.set(0);
        let was = self.health.writable.swap(false, Ordering::Relaxed);
        let e = self.pipeline.take_store_error();
        let msg = e.map_or_else(|| "unknown".to_owned(), |e| e.to_string());
        if was {
            // Told once; the alert sinks (which need no disk) hear of it here.
            tracing::error!(error = %msg, "the store refused a commit: nothing is acknowledged until it works again");
            if let Some(n) = &self.notifier {
                let cluster = self.config.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
                n.notify(&crate::detect::pipeline::store_unwritable(
                    cluster,
                    &msg,
                    crate::timespec::now(),
                ));
            }
        }
        if let Ok(mut l) = self.health.last_error.lock() {
            *l = Some(msg);
        }
    }

    /// Retries the held batches' commit (all of them: the pipeline holds
    /// their findings together).
    fn retry(&mut self, held: &mut Vec<Held>) {
        let checkpoints: Vec<SourceCheckpoint> =
            held.iter().flat_map(|h| h.checkpoints.clone()).collect();
        let mut out = Quiet(&self.metrics);
        if self.pipeline.commit(true, checkpoints, &mut out).is_ok() {
            self.health.writable.store(true, Ordering::Relaxed);
            self.metrics.store_up.set(1);
            tracing::info!(batches = held.len(), "the store works again");
            for h in held.drain(..) {
                if let Some(done) = h.done {
                    let _ = done.send(h.committed);
                }
            }
        } else {
            self.metrics.commit_failures.inc();
            let _ = self.pipeline.take_store_error();
        }
    }
}
