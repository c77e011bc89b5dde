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

use tokio::sync::mpsc;

use super::silence::StreamWatch;
use crate::config::Config;
use crate::decode::{Context, Limits};
use crate::event::AuditEvent;
use crate::finding::{DEFAULT_CLUSTER, Finding};
use crate::metrics::{Metrics, RuleSeverity, SourceCluster, SourceLabel};
use crate::pipeline::{Output, Pipeline};
use crate::source::{Committed, RawBatch, Work};
use crate::store::SourceCheckpoint;

/// How often silence is checked and a failed commit retried.
const TICK: Duration = Duration::from_secs(1);
/// How often the streams' last-event times are saved.
const SAVE_STREAMS: Duration = Duration::from_secs(10);

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
    /// Set at shutdown: drain what was sent, then stop.
    pub stop: Arc<AtomicBool>,
    /// When the loop last went round (Unix seconds): the heartbeat stops
    /// when the pipeline is stuck, as a dead man's switch must.
    pub alive: Arc<std::sync::atomic::AtomicI64>,
    /// This instance's name (several share a PostgreSQL store).
    pub instance: String,
    /// The store is shared with other instances.
    pub shared: bool,
    /// The name the streams are saved under: one per instance when shared.
    pub streams_state: String,
}

/// A batch the store did not take yet: its acknowledgement waits.
struct Held {
    batch: RawBatch,
    /// Part of it was not looked at (a commit failed inside it): feed it
    /// again; otherwise its findings are pending and only the commit (with
    /// its checkpoints) is retried.
    refeed: bool,
}

/// What the pipeline reports while a batch is processed.
struct DaemonOutput<'a> {
    metrics: &'a Metrics,
    watch: &'a mut StreamWatch,
    source: &'a str,
    live: bool,
    now: i64,
    events: u64,
    /// When the batch's events were received by the API server (Unix
    /// seconds, a sample): their latency is measured at the commit.
    received: Vec<f64>,
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

    fn duplicate(&mut self) {
        self.metrics.duplicates.inc();
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
        if self.received.len() < 1_000
            && let Some(t) = ev
                .request_received_timestamp
                .as_deref()
                .and_then(crate::timespec::rfc3339_to_unix_f64)
        {
            self.received.push(t);
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
    fn duplicate(&mut self) {
        self.0.duplicates.inc();
    }
}

impl Engine {
    /// Runs until the channel closes (every source gone, shutdown), then
    /// commits what is left.
    pub fn run(mut self, handle: tokio::runtime::Handle, mut rx: mpsc::Receiver<Work>) {
        self.health.writable.store(true, Ordering::Relaxed);
        self.metrics.store_up.set(1);
        match self.pipeline.saved_state(&self.streams_state) {
            Ok(Some(saved)) => {
                if let Err(e) = self.watch.restore(&saved, crate::timespec::now()) {
                    tracing::warn!(error = %e, "the saved audit streams are unreadable: silence is watched afresh");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the saved audit streams"),
        }
        let mut held: Vec<Held> = Vec::new();
        let mut last_tick = Instant::now();
        let mut streams_saved = Instant::now();
        loop {
            let now = crate::timespec::now();
            self.alive.store(now, Ordering::Relaxed);
            let stopping = self.stop.load(Ordering::Relaxed);
            // A failed commit is retried before anything new is taken.
            if !held.is_empty() {
                if stopping {
                    // One last try; what is still held is not acknowledged
                    // (its source gives it again after the restart).
                    self.retry(&mut held);
                    break;
                }
                std::thread::sleep(TICK);
                self.retry(&mut held);
                continue;
            }
            if stopping {
                // What the sources sent before they stopped is processed;
                // then the pipeline stops, even if a source (stdin in a
                // read) still holds a sender.
                while let Ok(w) = rx.try_recv() {
                    self.work(w, &mut held);
                }
                break;
            }
            let next = handle.block_on(async { tokio::time::timeout(TICK, rx.recv()).await });
            match next {
                Ok(Some(w)) => self.work(w, &mut held),
                Ok(None) => break,
                Err(_) => {} // tick
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                let save = streams_saved.elapsed() >= SAVE_STREAMS;
                if save {
                    streams_saved = Instant::now();
                }
                self.tick(&mut held, save);
            }
        }
        // Shutdown: the last state and anything pending, a few tries.
        self.pipeline
            .put_state(&self.streams_state, self.watch.snapshot());
        let mut out = Quiet(&self.metrics);
        for attempt in 1..=3 {
            match self.pipeline.commit(true, Vec::new(), &mut out) {
                Ok(()) => break,
                Err(_) => {
                    let e = self.pipeline.take_store_error();
                    tracing::error!(attempt, error = ?e.map(|e| e.to_string()), "final commit failed");
                    std::thread::sleep(TICK);
                }
            }
        }
        tracing::info!("pipeline stopped");
    }

    fn work(&mut self, w: Work, held: &mut Vec<Held>) {
        match w {
            Work::Batch(b) => {
                if let Some(h) = self.process(b) {
                    held.push(h);
                }
            }
            Work::Reload(r) => self.reload(*r),
        }
    }

    /// Takes a new configuration between two batches. Pending findings
    /// keep the routing they were made under.
    fn reload(&mut self, r: crate::source::Reload) {
        let crate::source::Reload { config, rules } = r;
        if let Some(t) = self.pipeline.detector_mut().token_mut()
            && let Err(e) = t.reconfigure(&config)
        {
            tracing::error!(error = %e, "reload: the token detector settings are unusable; nothing was changed");
            return;
        }
        let notifier = if config.alerts.sinks.is_empty() {
            None
        } else {
            match crate::alert::Notifier::new(&config.alerts) {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::error!(error = %e, "reload: the alert sinks are unusable; the old notifier stays");
                    self.notifier.take()
                }
            }
        };
        self.notifier = notifier;
        self.pipeline.detector_mut().set_rules(rules);
        self.pipeline
            .set_alerts((!config.alerts.sinks.is_empty()).then(|| Arc::new(config.alerts.clone())));
        self.watch.set_after(config.stream.silence_after);
        self.limits = config.decode.limits();
        self.config = config;
        tracing::info!("configuration reloaded");
    }

    /// Decodes, detects and commits one batch, then acknowledges it; when
    /// the store refuses, the batch comes back to be held.
    fn process(&mut self, b: RawBatch) -> Option<Held> {
        let now = crate::timespec::now();
        let ctx_source = b.source.to_string();
        let mut out = DaemonOutput {
            metrics: &self.metrics,
            watch: &mut self.watch,
            source: &ctx_source,
            live: b.live,
            now,
            events: 0,
            received: Vec::new(),
            new_findings: 0,
        };
        for part in &b.parts {
            let mut ctx = Context::new(self.limits);
            ctx.source = &ctx_source;
            ctx.cluster = part.cluster.as_deref();
            ctx.default_cluster = self.config.cluster.as_deref();
            ctx.request_received = b.request_received;
            ctx.expect = b.expect;
            if let Err(e) = self.pipeline.feed(&part.data[..], &ctx, &mut out) {
                tracing::warn!(source = %ctx_source, position = %b.position, error = %e, "input cut short");
            }
        }
        // A commit inside the batch (a full one) failed: the rest of the
        // batch was not looked at. It is fed again once the store works;
        // its checkpoint must not move before that.
        if self.pipeline.store_error().is_some() {
            drop(out);
            self.failed();
            return Some(Held {
                batch: b,
                refeed: true,
            });
        }
        let resumed = out.watch.take_resumed();
        for f in resumed {
            self.pipeline.report(f, &mut out);
        }
        for lost in &b.lost {
            let cluster = lost
                .cluster
                .as_deref()
                .or(self.config.cluster.as_deref())
                .unwrap_or(DEFAULT_CLUSTER);
            tracing::error!(source = %ctx_source, what = %lost.what, count = lost.count, unit = lost.unit, reason = %lost.reason, "input lost before it was read");
            let f = crate::detect::pipeline::events_lost(cluster, &ctx_source, lost, now);
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
        let received = std::mem::take(&mut out.received);
        if ok {
            let committed_at = crate::timespec::now_f64();
            for t in received {
                self.metrics.latency.observe((committed_at - t).max(0.0));
            }
            let mut b = b;
            if let Some(done) = b.done.take() {
                let _ = done.send(committed);
            }
            None
        } else {
            self.failed();
            Some(Held {
                batch: b,
                refeed: false,
            })
        }
    }

    /// Silence checks, the streams saved every [`SAVE_STREAMS`] (`save`),
    /// and the token state's eviction gauge.
    fn tick(&mut self, held: &mut Vec<Held>, save: bool) {
        let now = crate::timespec::now();
        let mut silent = self.watch.check(now);
        if self.shared && !silent.is_empty() {
            // A cluster silent here may have moved to another instance (a
            // rebalance): silent only if no instance heard it lately.
            silent.retain(|f| {
                match self
                    .pipeline
                    .cluster_heard_elsewhere(&f.cluster, &self.instance)
                {
                    Ok(Some(t)) if now - t < self.config.stream.silence_after => {
                        tracing::info!(cluster = %f.cluster, "the stream went quiet here and is heard by another instance");
                        false
                    }
                    _ => true,
                }
            });
        }
        if save {
            match self.pipeline.note_clusters(&self.instance, now) {
                Ok(split) => {
                    for (cluster, other) in split {
                        tracing::warn!(
                            cluster = %cluster,
                            other_instance = %other,
                            "events of one cluster reach two instances at once: key the Kafka topic by cluster, or the token detectors miss what spans both"
                        );
                        self.metrics
                            .cluster_split
                            .get_or_create(&crate::metrics::ClusterLabel { cluster })
                            .inc();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot note the clusters heard"),
            }
            if held.is_empty() {
                // Idle, yet the store is gone: /readyz says so now, not at
                // the next event; and back when it answers again.
                if !self.pipeline.store_alive() {
                    self.failed_probe();
                } else if !self.health.writable.swap(true, Ordering::Relaxed) {
                    self.metrics.store_up.set(1);
                    tracing::info!("the store answers again");
                }
            }
        }
        if !silent.is_empty() || save {
            let mut out = Quiet(&self.metrics);
            for f in silent {
                self.pipeline.report(f, &mut out);
            }
            self.pipeline
                .put_state(&self.streams_state, self.watch.snapshot());
            if self.pipeline.commit(false, Vec::new(), &mut out).is_err() {
                self.failed();
                // Nothing to acknowledge: the silence findings stay pending.
                held.push(Held {
                    batch: RawBatch {
                        source: "silence".into(),
                        parts: Vec::new(),
                        position: String::new(),
                        checkpoints: Vec::new(),
                        live: false,
                        request_received: false,
                        expect: None,
                        lost: Vec::new(),
                        done: None,
                    },
                    refeed: false,
                });
            }
        }
        if let Some(t) = self.pipeline.detector().token() {
            self.metrics.state_evictions.set(t.stats().evictions as i64);
        }
    }

    /// The store does not answer while nothing is being committed.
    fn failed_probe(&mut self) {
        self.metrics.store_up.set(0);
        if self.health.writable.swap(false, Ordering::Relaxed) {
            tracing::error!("the store does not answer");
        }
        if let Ok(mut l) = self.health.last_error.lock() {
            *l = Some("the store does not answer".into());
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

    /// Retries the held batches: the pending findings with the checkpoints
    /// of the batches that were fully read, then the others fed again.
    fn retry(&mut self, held: &mut Vec<Held>) {
        let _ = self.pipeline.take_store_error();
        let checkpoints: Vec<SourceCheckpoint> = held
            .iter()
            .filter(|h| !h.refeed)
            .flat_map(|h| h.batch.checkpoints.clone())
            .collect();
        let mut out = Quiet(&self.metrics);
        if self.pipeline.commit(true, checkpoints, &mut out).is_err() {
            self.metrics.commit_failures.inc();
            let _ = self.pipeline.take_store_error();
            return;
        }
        self.health.writable.store(true, Ordering::Relaxed);
        self.metrics.store_up.set(1);
        // Nothing was read while the store was down: no cluster was heard.
        self.watch.listening_again(crate::timespec::now());
        tracing::info!(batches = held.len(), "the store works again");
        let mut again = Vec::new();
        for mut h in held.drain(..) {
            if h.refeed {
                if let Some(still) = self.process(h.batch) {
                    again.push(still);
                }
            } else if let Some(done) = h.batch.done.take() {
                let _ = done.send(Committed::default());
            }
        }
        *held = again;
    }
}
