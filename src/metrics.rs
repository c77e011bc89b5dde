//! The daemon's metrics, in the Prometheus text format (`/metrics`).
//!
//! One [`Metrics`] is shared by the pipeline thread, the sources and the
//! server; every family is cheap to update from any thread.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceCluster {
    pub source: String,
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleSeverity {
    pub rule: String,
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkOutcome {
    pub sink: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceReason {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    /// Not `instance`: Prometheus gives that label to the scrape target.
    pub name: String,
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Partition {
    pub source: String,
    pub topic: String,
    pub partition: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub events: Family<SourceCluster, Counter>,
    pub malformed: Family<SourceLabel, Counter>,
    pub findings: Family<RuleSeverity, Counter>,
    pub duplicates: Counter,
    pub alert_deliveries: Family<SinkOutcome, Counter>,
    pub outbox_depth: Gauge,
    pub consumer_lag: Family<Partition, Gauge>,
    /// Seconds from requestReceivedTimestamp to the commit of the event's
    /// batch.
    pub latency: Histogram,
    pub store_up: Gauge,
    pub commit_failures: Counter,
    pub state_evictions: Gauge,
    pub webhook_rejected: Family<SourceReason, Counter>,
    /// Configuration reloads (SIGHUP), by outcome.
    pub reloads: Family<Outcome, Counter>,
    /// Times a cluster's events were found reaching this instance and
    /// another at once (several instances, one Kafka group).
    pub cluster_split: Family<ClusterLabel, Counter>,
    /// 1, labelled with this instance's name and its store's engine.
    pub instance: Family<InstanceLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("kaudit")),
            events: Family::default(),
            malformed: Family::default(),
            findings: Family::default(),
            duplicates: Counter::default(),
            alert_deliveries: Family::default(),
            outbox_depth: Gauge::default(),
            consumer_lag: Family::default(),
            latency: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
            ]),
            store_up: Gauge::default(),
            commit_failures: Counter::default(),
            state_evictions: Gauge::default(),
            webhook_rejected: Family::default(),
            reloads: Family::default(),
            cluster_split: Family::default(),
            instance: Family::default(),
        };
        if let Ok(mut r) = m.registry.lock() {
            r.register(
                "events",
                "Audit events decoded, by source and cluster",
                m.events.clone(),
            );
            r.register(
                "malformed",
                "Inputs that were not audit events, by source",
                m.malformed.clone(),
            );
            r.register(
                "findings",
                "New findings stored, by rule and severity",
                m.findings.clone(),
            );
            r.register(
                "duplicate_findings",
                "Findings the store already had (redeliveries)",
                m.duplicates.clone(),
            );
            r.register(
                "alert_deliveries",
                "Alert deliveries, by sink and outcome",
                m.alert_deliveries.clone(),
            );
            r.register(
                "outbox_depth",
                "Alerts waiting in the outbox",
                m.outbox_depth.clone(),
            );
            r.register(
                "consumer_lag",
                "Kafka consumer lag in messages, by partition",
                m.consumer_lag.clone(),
            );
            r.register(
                "event_latency_seconds",
                "From an event's requestReceivedTimestamp to its commit",
                m.latency.clone(),
            );
            r.register(
                "store_up",
                "1 when the last commit to the store succeeded",
                m.store_up.clone(),
            );
            r.register(
                "commit_failures",
                "Store commits that failed (retried)",
                m.commit_failures.clone(),
            );
            r.register(
                "token_state_evictions",
                "Entries the token detectors dropped for want of room",
                m.state_evictions.clone(),
            );
            r.register(
                "webhook_rejected",
                "Webhook requests refused, by source and reason",
                m.webhook_rejected.clone(),
            );
            r.register(
                "config_reloads",
                "Configuration reloads (SIGHUP), by outcome",
                m.reloads.clone(),
            );
            r.register(
                "cluster_split",
                "Times a cluster's events reached this instance and another at once (key the topic by cluster)",
                m.cluster_split.clone(),
            );
            r.register(
                "instance",
                "This instance: its name (KAUDIT_INSTANCE, else host and listen address) and store engine",
                m.instance.clone(),
            );
        }
        m
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}
