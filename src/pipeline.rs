//! The pipeline core shared by `kaudit scan` and `kaudit run`: bytes from a
//! source are decoded into events, detection turns them into findings, and
//! findings, quarantined input, coverage counts, detector state and the
//! source's checkpoint are committed to the store together. Only findings
//! the store took as new are handed on (printed, alerted): a redelivered
//! input adds nothing.
//!
//! [`Pipeline`] owns the detector and the store connection; what happens to
//! a new finding or a problem with the input is the caller's [`Output`].

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use crate::decode::{self, Context, Problem, ProblemKind, Sink};
use crate::detect::token::STATE_NAME;
use crate::detect::{Detector, pipeline as found_in_pipeline};
use crate::event::AuditEvent;
use crate::finding::{DEFAULT_CLUSTER, Finding, Severity};
use crate::store::{Batch, CoverageDelta, Inserted, QuarantineRow, SourceCheckpoint, Store};

/// Findings (or quarantined inputs) held before a commit is due.
pub const BATCH_FINDINGS: usize = 1000;
/// How often active silences are read from the store.
const SILENCES_EVERY: Duration = Duration::from_secs(2);
/// Quarantined bytes held before a commit is due.
const BATCH_QUARANTINE_BYTES: usize = 8 << 20;

/// Where the pipeline's results go.
pub trait Output {
    /// A finding that is new: committed to the store, or, without a store,
    /// not seen before in this run.
    fn finding(&mut self, f: &Finding);
    /// A problem with the input: `source:line: message`.
    fn problem(&mut self, source: &str, line: u64, message: &str, audit_id: Option<&str>);
    /// The output cannot take more (a closed pipe without a store): stop.
    fn stopped(&self) -> bool {
        false
    }
    /// An event was decoded (for metrics and stream health).
    fn event(&mut self, _ev: &AuditEvent<'_>) {}
    /// A finding the store already had (a redelivery).
    fn duplicate(&mut self) {}
}

/// Counts since the pipeline started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    /// Inputs that are not audit events, oversized ones and unreadable
    /// stretches included.
    pub malformed: u64,
    pub truncated: u64,
    /// Records of an envelope that are not audit events (skipped on purpose).
    pub skipped: u64,
    /// New findings handed to the output.
    pub findings: u64,
    /// Findings the store already had (a redelivery, a rerun).
    pub duplicates: u64,
    /// Events delivered again (the same request, stage and content seen
    /// lately: a webhook client's retry), dropped before counting.
    pub redelivered: u64,
    pub max_severity: Option<Severity>,
}

pub struct Pipeline {
    detector: Detector,
    store: Option<Store>,
    pending: Batch,
    /// (cluster, hour, source) → (events, malformed, truncated).
    coverage: HashMap<(String, i64, String), (u64, u64, u64)>,
    pending_quarantine_bytes: usize,
    /// `YYYY-MM-DDTHH` → the hour's Unix time (one parse per hour seen).
    hours: HashMap<String, i64>,
    state_written: Instant,
    state_every: Duration,
    store_error: Option<crate::store::Error>,
    /// Where new findings are alerted (their outbox rows are written with
    /// them); none for `scan`.
    alerts: Option<std::sync::Arc<crate::config::AlertsConfig>>,
    /// Active silences, read from the store every few seconds (the CLI adds
    /// them from another process).
    silences: Vec<crate::store::Silence>,
    silences_read: Option<Instant>,
    /// Dedup: rule + cluster + identity + target → the finding alerted
    /// for it and when (wall clock).
    dedup: HashMap<String, (String, i64)>,
    pub counts: Counts,
    /// Clusters heard since [`Pipeline::note_clusters`] last ran.
    heard: std::collections::HashSet<String>,
    /// Other state to save with the next commit (the daemon's streams).
    extra_state: Vec<(String, Vec<u8>)>,
    /// Events seen lately, by cluster, auditID, stage and content (the
    /// daemon: a client that retries a batch it sent is not counted
    /// twice in the coverage); off for `scan`.
    recent: Option<lru::LruCache<[u8; 16], (), ahash::RandomState>>,
}

/// Dedup keys remembered at most (the oldest go first).
const DEDUP_KEYS: usize = 100_000;

/// What makes two findings "the same alert": rule, cluster, identity, target.
fn dedup_key(f: &Finding) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}/{}/{}",
        f.rule_id,
        f.cluster,
        f.user,
        f.namespace.as_deref().unwrap_or(""),
        f.resource,
        f.name.as_deref().unwrap_or("")
    )
}

/// Holds `f` for the next commit, with the sinks it is routed to, unless a
/// silence holds its alerts back (it is stored and marked all the same).
fn hold(
    pending: &mut Batch,
    alerts: Option<&crate::config::AlertsConfig>,
    silences: &[crate::store::Silence],
    dedup: &mut HashMap<String, (String, i64)>,
    f: Finding,
) {
    if let Some(a) = alerts {
        // Keep `outbox`, `silenced` and `repeat_of` parallel to `findings`.
        let n = pending.findings.len();
        pending.outbox.resize(n, Vec::new());
        pending.silenced.resize(n, None);
        pending.repeat_of.resize(n, None);
        let now = crate::timespec::now();
        if let Some(s) = silences.iter().find(|s| s.matches(&f, now)) {
            pending.outbox.push(Vec::new());
            pending.silenced.push(Some(s.id));
            pending.repeat_of.push(None);
        } else if let Some(window) = a.dedup_window {
            let key = dedup_key(&f);
            match dedup.get(&key) {
                Some((first, at)) if now - at < window && *first != f.id => {
                    pending.outbox.push(Vec::new());
                    pending.repeat_of.push(Some(first.clone()));
                }
                _ => {
                    if dedup.len() >= DEDUP_KEYS {
                        dedup.retain(|_, (_, at)| now - *at < window);
                        if dedup.len() >= DEDUP_KEYS {
                            dedup.clear();
                        }
                    }
                    dedup.insert(key, (f.id.clone(), now));
                    pending.outbox.push(a.route(&f));
                    pending.repeat_of.push(None);
                }
            }
            pending.silenced.push(None);
        } else {
            pending.outbox.push(a.route(&f));
            pending.silenced.push(None);
            pending.repeat_of.push(None);
        }
    }
    pending.findings.push(f);
}

impl Pipeline {
    /// A pipeline over `detector`, committing to `store` when there is one.
    /// The token detectors' stored state is read back; when it cannot be,
    /// the reason is returned beside the pipeline (detection starts afresh
    /// rather than not at all).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn new(
        mut detector: Detector,
        store: Option<Store>,
    ) -> Result<(Pipeline, Option<String>), crate::store::Error> {
        let mut warning = None;
        let shared = store
            .as_ref()
            .is_some_and(|s| s.dialect() == crate::store::Dialect::Postgres);
        if shared {
            // Several instances: each cluster's state is read when the
            // cluster is first heard here (`Feeder::event`).
            if let Some(t) = detector.token_mut() {
                t.share_state();
            }
        } else if let (Some(s), Some(t)) = (&store, detector.token_mut())
            && let Some(saved) = s.detector_state(STATE_NAME)?
            && let Err(e) = t.restore(&saved)
        {
            warning = Some(format!("{e}; the token detectors start afresh"));
        }
        Ok((
            Pipeline {
                detector,
                store,
                pending: Batch::default(),
                coverage: HashMap::new(),
                pending_quarantine_bytes: 0,
                hours: HashMap::new(),
                state_written: Instant::now(),
                state_every: Duration::from_secs(30),
                store_error: None,
                alerts: None,
                silences: Vec::new(),
                silences_read: None,
                dedup: HashMap::new(),
                counts: Counts::default(),
                extra_state: Vec::new(),
                heard: std::collections::HashSet::new(),
                recent: None,
            },
            warning,
        ))
    }

    /// Drops events seen among the last `n` (by cluster, auditID, stage
    /// and content): redeliveries, such as the API server retrying a
    /// webhook batch whose answer it did not get, are neither counted nor
    /// checked again.
    pub fn drop_redeliveries(&mut self, n: usize) {
        self.recent = std::num::NonZeroUsize::new(n)
            .map(|n| lru::LruCache::with_hasher(n, ahash::RandomState::new()));
    }

    /// Saves `state` under `name` with the next commit (replacing what an
    /// earlier call put there and was not committed yet).
    pub fn put_state(&mut self, name: &str, state: Vec<u8>) {
        self.extra_state.retain(|(n, _)| n != name);
        self.extra_state.push((name.to_owned(), state));
    }

    /// Notes in the store that `instance` heard the clusters it heard
    /// since the last call; returns the clusters another instance hears at
    /// the same time (`Store::note_clusters`).
    pub fn note_clusters(
        &mut self,
        instance: &str,
        now: i64,
    ) -> Result<Vec<(String, String)>, crate::store::Error> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        if self.heard.is_empty() {
            return Ok(Vec::new());
        }
        let clusters: Vec<String> = self.heard.drain().collect();
        store.note_clusters(instance, &clusters, now)
    }

    /// When another instance than `instance` last stored events of
    /// `cluster`.
    pub fn cluster_heard_elsewhere(
        &self,
        cluster: &str,
        instance: &str,
    ) -> Result<Option<i64>, crate::store::Error> {
        match &self.store {
            Some(s) => s.cluster_heard_elsewhere(cluster, instance),
            None => Ok(None),
        }
    }

    /// Whether the store answers (the daemon's `/readyz` when idle).
    pub fn store_alive(&self) -> bool {
        self.store.as_ref().is_none_or(|s| s.is_alive())
    }

    /// The state last saved under `name`.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn saved_state(&self, name: &str) -> Result<Option<Vec<u8>>, crate::store::Error> {
        match &self.store {
            Some(s) => s.detector_state(name),
            None => Ok(None),
        }
    }

    /// How often detector state goes with a commit (the daemon: every
    /// commit, so that it moves with the source checkpoints).
    pub fn set_state_every(&mut self, every: Duration) {
        self.state_every = every;
    }

    /// Routes new findings to alert sinks through the outbox.
    pub fn set_alerts(&mut self, alerts: Option<std::sync::Arc<crate::config::AlertsConfig>>) {
        self.alerts = alerts;
    }

    /// Reads the active silences again when the last read is older than a
    /// few seconds (alerting only).
    fn refresh_silences(&mut self) {
        if self.alerts.is_none()
            || self
                .silences_read
                .is_some_and(|t| t.elapsed() < SILENCES_EVERY)
        {
            return;
        }
        self.silences_read = Some(Instant::now());
        if let Some(store) = &self.store {
            match store.silences(crate::timespec::now(), false) {
                Ok(s) => self.silences = s,
                Err(e) => tracing::warn!(error = %e, "silences cannot be read; the last ones stay"),
            }
        }
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn detector_mut(&mut self) -> &mut Detector {
        &mut self.detector
    }

    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// The store failed: nothing more is committed until [`Pipeline::retry`].
    pub fn store_error(&self) -> Option<&crate::store::Error> {
        self.store_error.as_ref()
    }

    /// Takes the store error (the caller reports it), so a later commit is
    /// tried again with what is still pending.
    pub fn take_store_error(&mut self) -> Option<crate::store::Error> {
        self.store_error.take()
    }

    /// Decodes `reader` (the input named `source`), detecting as it goes;
    /// commits whenever a batch is full.
    ///
    /// # Errors
    /// When the input cannot be read on (the rest of it is skipped).
    pub fn feed(
        &mut self,
        reader: impl Read,
        ctx: &Context<'_>,
        out: &mut dyn Output,
    ) -> Result<(), decode::Error> {
        self.refresh_silences();
        let mut feeder = Feeder {
            p: self,
            out,
            source: ctx.source,
        };
        decode::decode(reader, ctx, &mut feeder)
    }

    /// Reports a finding made outside the rules (a silent stream), once.
    pub fn report(&mut self, f: Finding, out: &mut dyn Output) {
        self.refresh_silences();
        let Pipeline {
            detector,
            pending,
            alerts,
            silences,
            dedup,
            ..
        } = self;
        let store = self.store.is_some();
        let counts = &mut self.counts;
        detector.report(f, &mut |f| {
            if store {
                hold(pending, alerts.as_deref(), silences, dedup, f);
            } else {
                emit(counts, out, &f);
            }
        });
    }

    /// Whether input must stop: the store failed or the output is gone.
    pub fn stopped(&self, out: &dyn Output) -> bool {
        self.store_error.is_some() || out.stopped()
    }

    fn due(&self) -> bool {
        self.pending.findings.len() >= BATCH_FINDINGS
            || self.pending.quarantine.len() >= BATCH_FINDINGS
            || self.pending_quarantine_bytes >= BATCH_QUARANTINE_BYTES
    }

    /// Commits what is pending with `checkpoints` (where the source has
    /// read up to) and, when `final_` or when it was last written more than
    /// 30 s ago, the detector state; hands the new findings to `out`.
    /// Without a store this only forgets the coverage counts.
    ///
    /// # Errors
    /// When the store refuses the batch; nothing of it is stored, and what
    /// was pending stays pending for the next try.
    pub fn commit(
        &mut self,
        final_: bool,
        checkpoints: Vec<SourceCheckpoint>,
        out: &mut dyn Output,
    ) -> Result<(), CommitFailed> {
        let Some(store) = &mut self.store else {
            self.coverage.clear();
            return Ok(());
        };
        if self.store_error.is_some() {
            return Err(CommitFailed);
        }
        let shared = store.dialect() == crate::store::Dialect::Postgres;
        let mut batch = std::mem::take(&mut self.pending);
        batch.checkpoints = checkpoints;
        batch.coverage = self
            .coverage
            .iter()
            .map(
                |((cluster, hour, source), (events, malformed, truncated))| CoverageDelta {
                    cluster: cluster.clone(),
                    hour: *hour,
                    source: source.clone(),
                    events: *events,
                    malformed: *malformed,
                    truncated: *truncated,
                },
            )
            .collect();
        batch.alert_delay = self
            .alerts
            .as_ref()
            .and_then(|a| a.group_window)
            .unwrap_or(0);
        let state_due = final_ || self.state_written.elapsed() >= self.state_every;
        if state_due && let Some(t) = self.detector.token_mut() {
            if shared {
                batch.state = t
                    .take_cluster_snapshots()
                    .into_iter()
                    .map(|(cluster, s)| (format!("{STATE_NAME}/{cluster}"), s))
                    .collect();
            } else if let Some(s) = t.take_snapshot() {
                batch.state = vec![(STATE_NAME.to_owned(), s)];
            }
        }
        batch.state.append(&mut self.extra_state);
        if batch.findings.is_empty()
            && batch.quarantine.is_empty()
            && batch.coverage.is_empty()
            && batch.state.is_empty()
            && batch.checkpoints.is_empty()
        {
            return Ok(());
        }
        match store.commit(&batch) {
            Ok(results) => {
                if state_due {
                    self.state_written = Instant::now();
                }
                self.coverage.clear();
                self.pending_quarantine_bytes = 0;
                for (f, r) in batch.findings.iter().zip(results) {
                    match r {
                        Inserted::New { .. } => emit(&mut self.counts, out, f),
                        Inserted::Duplicate => {
                            self.counts.duplicates += 1;
                            out.duplicate();
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                // Keep the batch for the next try (coverage is still counted
                // in `self.coverage`); the state is written again then.
                batch.checkpoints.clear();
                batch.coverage.clear();
                // Other state goes with the next try (unless replaced).
                for (name, v) in batch.state.drain(..) {
                    if let Some(cluster) = name
                        .strip_prefix(STATE_NAME)
                        .and_then(|c| c.strip_prefix('/'))
                    {
                        // Taken afresh next time (never an older copy
                        // after a newer one).
                        if let Some(t) = self.detector.token_mut() {
                            t.mark_dirty(cluster);
                        }
                    } else if name != STATE_NAME
                        && !self.extra_state.iter().any(|(n, _)| *n == name)
                    {
                        self.extra_state.push((name, v));
                    }
                }
                self.pending = batch;
                self.store_error = Some(e);
                Err(CommitFailed)
            }
        }
    }

    /// The hour (Unix time of its start) an event belongs to.
    fn hour_of(&mut self, time: Option<&str>) -> i64 {
        let now_hour = || crate::timespec::now() / 3600 * 3600;
        let Some(prefix) = time.and_then(|t| t.get(..13)) else {
            return now_hour();
        };
        if let Some(h) = self.hours.get(prefix) {
            return *h;
        }
        let h =
            crate::timespec::rfc3339_to_unix(&format!("{prefix}:00:00Z")).unwrap_or_else(now_hour);
        if self.hours.len() < 100_000 {
            self.hours.insert(prefix.to_owned(), h);
        }
        h
    }

    fn count(&mut self, cluster: &str, hour: i64, source: &str, which: usize) {
        if self.store.is_none() {
            return;
        }
        let c = self
            .coverage
            .entry((cluster.to_owned(), hour, source.to_owned()))
            .or_default();
        match which {
            0 => c.0 += 1,
            1 => c.1 += 1,
            _ => c.2 += 1,
        }
    }
}

/// A commit failed; [`Pipeline::take_store_error`] says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitFailed;

fn emit(counts: &mut Counts, out: &mut dyn Output, f: &Finding) {
    counts.findings += 1;
    counts.max_severity = counts.max_severity.max(Some(f.severity));
    out.finding(f);
}

/// One input being decoded: the pipeline, the output and the input's name.
struct Feeder<'p, 'o, 's> {
    p: &'p mut Pipeline,
    out: &'o mut dyn Output,
    source: &'s str,
}

impl Feeder<'_, '_, '_> {
    fn take(&mut self, f: Finding) {
        if self.p.store.is_some() {
            hold(
                &mut self.p.pending,
                self.p.alerts.as_deref(),
                &self.p.silences,
                &mut self.p.dedup,
                f,
            );
        } else {
            emit(&mut self.p.counts, self.out, &f);
        }
    }

    fn commit_if_due(&mut self) {
        if self.p.due() {
            // An error stops the input (`stopped`); the caller reports it.
            let _ = self.p.commit(false, Vec::new(), self.out);
        }
    }
}

impl Sink for Feeder<'_, '_, '_> {
    fn event(&mut self, ev: &AuditEvent<'_>) {
        if self.p.stopped(self.out) {
            return;
        }
        if let Some(recent) = &mut self.p.recent
            && recent.put(delivery_key(ev), ()).is_some()
        {
            self.p.counts.redelivered += 1;
            return;
        }
        self.p.counts.events += 1;
        self.out.event(ev);
        if self.p.store.is_some() {
            let hour = self.p.hour_of(ev.request_received_timestamp.as_deref());
            let cluster = ev.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
            self.p.count(cluster, hour, self.source, 0);
            if !self.p.heard.contains(cluster) {
                self.p.heard.insert(cluster.to_owned());
            }
        }
        if let (Some(store), Some(t)) = (&self.p.store, self.p.detector.token_mut()) {
            let cluster = ev.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
            if t.wants_load(cluster, crate::timespec::now()) {
                // Another instance may have held this cluster: what it
                // learned is read back before the event is checked.
                match store.detector_state(&format!("{STATE_NAME}/{cluster}")) {
                    Ok(Some(saved)) => {
                        if let Err(e) = t.load_cluster(&saved) {
                            tracing::warn!(cluster, error = %e, "the shared token state of a cluster is unreadable");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(cluster, error = %e, "cannot read the shared token state of a cluster");
                        t.forget_heard(cluster);
                    }
                }
            }
        }
        let mut found = Vec::new();
        self.p.detector.check(ev, &mut |f| found.push(f));
        for f in found {
            self.take(f);
        }
        self.commit_if_due();
    }

    fn problem(&mut self, p: &Problem<'_>) {
        match p.kind {
            ProblemKind::Malformed | ProblemKind::Oversized => self.p.counts.malformed += 1,
            ProblemKind::Truncated => self.p.counts.truncated += 1,
        }
        if self.p.store.is_some() {
            let hour = self.p.hour_of(None);
            let which = if p.kind == ProblemKind::Truncated {
                2
            } else {
                1
            };
            self.p.count(DEFAULT_CLUSTER, hour, self.source, which);
            // Quarantine keeps the input's bytes, with the secrets the
            // redactor recognises in plain text replaced.
            let row = QuarantineRow {
                source: self.source.to_owned(),
                position: format!("line {}", p.line),
                kind: match p.kind {
                    ProblemKind::Malformed => "malformed",
                    ProblemKind::Oversized => "oversized",
                    ProblemKind::Truncated => "truncated",
                }
                .into(),
                error: p.error.to_string(),
                audit_id: p.audit_id.map(str::to_owned),
                raw: crate::redact::redact_bytes(p.sample),
            };
            self.p.pending_quarantine_bytes += row.raw.len();
            self.p.pending.quarantine.push(row);
        }
        // Oversized and truncated events are findings too (evasion, a
        // broken pipeline), not just lines on stderr.
        if let Some(f) = found_in_pipeline::from_problem(p, self.source, DEFAULT_CLUSTER) {
            let mut found = Vec::new();
            self.p.detector.report(f, &mut |f| found.push(f));
            for f in found {
                self.take(f);
            }
        }
        self.commit_if_due();
        self.out
            .problem(self.source, p.line, &p.error.to_string(), p.audit_id);
    }

    fn skipped(&mut self, _line: u64, _what: &'static str) {
        self.p.counts.skipped += 1;
    }
}

/// What makes two deliveries of an event the same record: cluster, auditID,
/// stage, and the request (time, verb, URI, user): a reused auditID on
/// another request is not mistaken for a redelivery.
fn delivery_key(ev: &AuditEvent<'_>) -> [u8; 16] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let stage = ev.stage.map(|s| format!("{s:?}")).unwrap_or_default();
    for part in [
        ev.cluster.as_deref().unwrap_or(""),
        ev.audit_id(),
        stage.as_str(),
        ev.request_received_timestamp.as_deref().unwrap_or(""),
        ev.verb(),
        ev.request_uri.as_deref().unwrap_or(""),
        ev.username(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}
