//! Sources: where `kaudit run` reads audit events (files, stdin, the API
//! server's webhook, Kafka). Each source sends [`RawBatch`]es to the
//! pipeline over one bounded channel and learns, through the batch's
//! `done` channel, when what the batch produced is committed: only then
//! does it acknowledge its input (advance a file checkpoint, commit a
//! Kafka offset, answer 200). A full channel is backpressure: files and
//! Kafka wait, the webhook answers 429.

pub mod file;
pub mod kafka;
pub mod stdin;
pub mod webhook;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::SourceCheckpoint;

/// Raw input from one source, committed as one unit.
pub struct RawBatch {
    /// The source's name in the config.
    pub source: Arc<str>,
    /// The inputs, each decoded on its own (a file chunk, a request body,
    /// one Kafka message).
    pub parts: Vec<Part>,
    /// Where the data came from, for messages (`FILE@OFFSET`, `topic/2@41`).
    pub position: String,
    /// Committed with the batch: where the source has read up to.
    pub checkpoints: Vec<SourceCheckpoint>,
    /// A live source (webhook, Kafka, a tailed file): its silence matters.
    pub live: bool,
    /// Evaluate RequestReceived events (set by the daemon per source).
    pub request_received: bool,
    /// The envelopes the source takes (its configured `envelope`); `None`:
    /// any shape.
    pub expect: Option<&'static [crate::event::Envelope]>,
    /// Input the source knows was lost before it could be read (a Kafka
    /// partition's retention deleted unread messages, a file truncated
    /// before its end was read): each becomes an `audit-events-lost`
    /// finding.
    pub lost: Vec<Lost>,
    /// Told once the batch is committed.
    pub done: Option<oneshot::Sender<Committed>>,
}

/// A stretch of input lost before kaudit read it.
#[derive(Debug, Clone)]
pub struct Lost {
    /// The cluster, when the source knows it.
    pub cluster: Option<String>,
    /// Where: a file, a `topic/partition`.
    pub what: String,
    /// The first position lost (an offset).
    pub from: String,
    pub count: u64,
    /// What `count` counts: `bytes`, `messages`.
    pub unit: &'static str,
    pub reason: String,
}

/// One input of a batch.
pub struct Part {
    /// The cluster the source sets (wins over the envelope's).
    pub cluster: Option<String>,
    /// Audit documents in any envelope (JSON lines, EventList, ...),
    /// possibly gzip'd.
    pub data: Vec<u8>,
}

impl RawBatch {
    /// A batch of one part.
    pub fn one(source: Arc<str>, cluster: Option<String>, data: Vec<u8>, position: String) -> Self {
        RawBatch {
            source,
            parts: vec![Part { cluster, data }],
            position,
            checkpoints: Vec::new(),
            live: true,
            request_received: false,
            expect: None,
            lost: Vec::new(),
            done: None,
        }
    }
}

/// What a committed batch produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    pub events: u64,
    pub new_findings: u64,
}

/// The sending side every source holds.
pub type Tx = mpsc::Sender<Work>;

/// What the pipeline thread is asked to do.
pub enum Work {
    Batch(RawBatch),
    /// A configuration reload (SIGHUP): rules, detector settings, alert
    /// routing and stream settings are replaced between two batches;
    /// detector state is kept.
    Reload(Box<Reload>),
}

/// What a reload replaces.
pub struct Reload {
    pub config: Arc<crate::config::Config>,
    pub rules: Arc<crate::detect::RuleSet>,
}

/// Shared readiness of the sources, for /readyz.
#[derive(Default)]
pub struct Readiness {
    sources: std::sync::Mutex<std::collections::BTreeMap<String, Result<(), String>>>,
}

impl Readiness {
    pub fn set(&self, source: &str, state: Result<(), String>) {
        if let Ok(mut m) = self.sources.lock() {
            m.insert(source.to_owned(), state);
        }
    }

    /// A source that no longer runs (removed by a reload).
    pub fn remove(&self, source: &str) {
        if let Ok(mut m) = self.sources.lock() {
            m.remove(source);
        }
    }

    /// Every source's state; `Err` carries why it is not ready.
    pub fn all(&self) -> Vec<(String, Result<(), String>)> {
        self.sources
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}
