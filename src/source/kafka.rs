//! The Kafka source: topics read in a consumer group (librdkafka).
//!
//! Offsets are committed by hand, only after the store committed what the
//! messages produced, never ahead of it: a crash re-reads at most the
//! batches in flight, whose findings the store recognises. Each poll window
//! (up to [`BATCH`] messages or [`WINDOW`]) is one batch, read while the
//! previous one is stored ([`IN_FLIGHT`]); each message is
//! one part, decoded on its own, with its cluster taken from a header, the
//! key, the topic, a fixed name, or else its envelope. On a partition
//! revoke, offsets acknowledged by the store and not yet committed are
//! committed; offsets of partitions no longer assigned are never committed.
//! Consumer lag (high watermark minus the next offset to read) is a metric.
//!
//! The store keeps where each partition was read to (`GROUP/TOPIC/PARTITION` →
//! next offset, in the same transaction as what the messages produced):
//! after a crash between the store's commit and Kafka's, or a rebalance
//! that moved a partition to another instance sharing the store, the
//! messages the store already has are skipped (their offsets committed),
//! so nothing is stored or counted twice.
//!
//! Messages deleted by the topic's retention before they were read (lag
//! grew past retention, or kaudit was down longer than it) are not a silent
//! jump: the first message after a gap is checked against the partition's
//! low watermark, and what was deleted unread becomes an
//! `audit-events-lost` finding.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{oneshot, watch};

use super::{Committed, Lost, Part, RawBatch, Readiness, Tx, Work};
use crate::config::{KafkaSource, resolve_secret};
use crate::metrics::{Metrics, Partition};

/// Messages per batch at most.
const BATCH: usize = 500;
/// Batches sent to the pipeline and not yet stored, at most: one being
/// decoded and stored while the next is read.
const IN_FLIGHT: usize = 2;
/// How long a batch collects messages after the first one.
const WINDOW: Duration = Duration::from_millis(100);

/// Where the store says each partition was read to, read once per
/// partition and rebalance (another instance may have moved it on).
struct Stored {
    db: Option<std::path::PathBuf>,
    store: Option<crate::store::Store>,
    floors: HashMap<String, (u64, Option<i64>)>,
}

impl Stored {
    fn new(db: Option<std::path::PathBuf>) -> Stored {
        Stored {
            db,
            store: None,
            floors: HashMap::new(),
        }
    }

    /// The next offset the store has for `topic`/`partition` in `group`,
    /// if any and if the partition reaches that far (`high`: its high
    /// watermark; a topic deleted and made again starts over).
    fn floor(
        &mut self,
        source: &str,
        group: &str,
        topic: &str,
        partition: i32,
        generation: u64,
        high: impl FnOnce() -> Option<i64>,
    ) -> Option<i64> {
        let key = position_key(group, topic, partition);
        if let Some((g, floor)) = self.floors.get(&key)
            && *g == generation
        {
            return *floor;
        }
        let db = self.db.as_ref()?;
        if self.store.is_none() {
            match crate::store::Store::open(db) {
                Ok(s) => self.store = Some(s),
                Err(e) => {
                    tracing::warn!(source, error = %e, "cannot read the stored partition positions");
                    return None;
                }
            }
        }
        let floor = match self
            .store
            .as_ref()
            .map(|s| s.source_checkpoint(source, &key))
        {
            Some(Ok(p)) => p.and_then(|p| p.parse::<i64>().ok()).filter(|&floor| {
                let fits = high().is_none_or(|h| floor <= h);
                if !fits {
                    tracing::warn!(source, topic, partition, floor, "the stored position is past the partition's end (was the topic made again?): not used");
                }
                fits
            }),
            Some(Err(e)) => {
                tracing::warn!(source, error = %e, "cannot read the stored partition positions");
                self.store = None;
                return None;
            }
            None => None,
        };
        self.floors.insert(key, (generation, floor));
        floor
    }
}

/// The store's key for a partition's position: per consumer group (two
/// deployments with their own groups may share a store).
fn position_key(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}/{topic}/{partition}")
}

/// The librdkafka settings for `cfg` (without secrets in errors).
///
/// # Errors
/// A secret that cannot be read, or an unknown protocol or mechanism.
pub fn client_config(name: &str, cfg: &KafkaSource) -> Result<ClientConfig, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("client.id", format!("kaudit-{name}"))
        // Memory: librdkafka's prefetch queue defaults to 64 MiB and a fetch
        // to 50 MiB; 16 MiB each is a third of a second of a 50 MB/s
        // stream, and keeps the daemon's footprint bounded (`properties`
        // may raise them).
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.max.bytes", "16777216")
        // Latency: once that queue is full librdkafka stops fetching for
        // fetch.queue.backoff.ms (1 s by default), and a broker may hold
        // an empty fetch for fetch.wait.max.ms (500 ms). With both at
        // their defaults the daemon read about 18,000 events/s from a
        // local broker and added half a second to every finding; at these
        // values, about 34,000 (`kaudit bench kafka`, docs/bench.md).
        .set("fetch.queue.backoff.ms", "20")
        .set("fetch.wait.max.ms", "100");
    if let Some(ms) = cfg.session_timeout_ms {
        c.set("session.timeout.ms", ms.to_string());
    }
    let s = &cfg.security;
    let hubs = resolve_secret(
        &format!("source {name}: security.event_hubs_connection_string"),
        None,
        s.event_hubs_connection_string_env.as_deref(),
        s.event_hubs_connection_string_file.as_deref(),
    )?;
    if let Some(conn) = hubs {
        // Azure Event Hubs' Kafka endpoint: SASL PLAIN over TLS, the user
        // is the literal `$ConnectionString`.
        c.set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "PLAIN")
            .set("sasl.username", "$ConnectionString")
            .set("sasl.password", conn.expose());
    } else {
        if let Some(p) = &s.protocol {
            let p = p.to_ascii_uppercase();
            if !matches!(
                p.as_str(),
                "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL"
            ) {
                return Err(format!(
                    "source {name}: security.protocol {p:?}: write plaintext, ssl, sasl_plaintext or sasl_ssl"
                ));
            }
            c.set("security.protocol", p);
        }
        if let Some(m) = &s.sasl_mechanism {
            let m = m.to_ascii_uppercase();
            if !matches!(m.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
                return Err(format!(
                    "source {name}: security.sasl_mechanism {m:?}: write PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                ));
            }
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &s.username {
            c.set("sasl.username", u);
        }
        if let Some(p) = resolve_secret(
            &format!("source {name}: security.password"),
            s.password.as_ref(),
            s.password_env.as_deref(),
            s.password_file.as_deref(),
        )? {
            c.set("sasl.password", p.expose());
        }
    }
    if let Some(ca) = &s.ca_file {
        c.set("ssl.ca.location", ca.display().to_string());
    }
    for (k, v) in &cfg.properties {
        let what = format!("source {name}: properties.{k}");
        let v = v.expose();
        let value = if let Some(var) = v.strip_prefix("env:") {
            resolve_secret(&what, None, Some(var), None)?
        } else if let Some(path) = v.strip_prefix("file:") {
            resolve_secret(&what, None, None, Some(std::path::Path::new(path)))?
        } else {
            None
        };
        c.set(k, value.as_ref().map_or(v, |s| s.expose()));
    }
    Ok(c)
}

/// Offsets the store has committed but Kafka not yet, shared with the
/// rebalance callback.
#[derive(Default)]
struct Pending {
    offsets: Mutex<BTreeMap<(String, i32), i64>>,
}

struct Ctx {
    name: Arc<str>,
    pending: Arc<Pending>,
    /// Bumped by every rebalance: what this consumer expected of its
    /// partitions no longer holds.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Rebalance::Revoke(revoked) = rebalance {
            let mut tpl = TopicPartitionList::new();
            if let Ok(mut p) = self.pending.offsets.lock() {
                for e in revoked.elements() {
                    if let Some(next) = p.remove(&(e.topic().to_owned(), e.partition())) {
                        let _ = tpl.add_partition_offset(
                            e.topic(),
                            e.partition(),
                            Offset::Offset(next),
                        );
                    }
                }
            }
            if tpl.count() > 0 {
                match consumer.commit(&tpl, CommitMode::Sync) {
                    Ok(()) => {
                        tracing::info!(source = %self.name, partitions = tpl.count(), "offsets committed on revoke")
                    }
                    Err(e) => {
                        tracing::warn!(source = %self.name, error = %e, "commit on revoke failed")
                    }
                }
            }
        }
    }
}

/// Consumes until `stop` fires. Errors of the broker are retried by
/// librdkafka; /readyz says when it is not connected.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    name: String,
    cfg: KafkaSource,
    tx: Tx,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    db: Option<std::path::PathBuf>,
    mut stop: watch::Receiver<bool>,
) {
    let mut stored = Stored::new(db);
    let name: Arc<str> = name.into();
    let pending = Arc::new(Pending::default());
    let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let consumer: StreamConsumer<Ctx> = match client_config(&name, &cfg).and_then(|c| {
        c.create_with_context(Ctx {
            name: name.clone(),
            pending: pending.clone(),
            generation: generation.clone(),
        })
        .map_err(|e| format!("source {name}: {e}"))
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            ready.set(&name, Err(e));
            return;
        }
    };
    let topics = cfg.topic_list();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topic_refs) {
        ready.set(&name, Err(format!("subscribe: {e}")));
        return;
    }
    ready.set(
        &name,
        Err("waiting for the first message or assignment".into()),
    );
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    let mut gaps = Gaps::default();
    // Partitions with a lag gauge: removed when no longer assigned here.
    let mut lagging: std::collections::BTreeSet<(String, i32)> = Default::default();
    let mut lag_tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_lag = std::time::Instant::now();
    // Batches sent and not yet stored, oldest first, with their offsets:
    // the next batch is read while the previous one is decoded and stored.
    let mut inflight: VecDeque<(oneshot::Receiver<Committed>, Offsets)> = VecDeque::new();
    loop {
        // The first message of a batch (or a stop, a stored batch, or a
        // lag tick).
        let first = tokio::select! {
            m = consumer.recv() => m,
            _ = stop.changed() => break,
            stored = async {
                match inflight.front_mut() {
                    Some((wait, _)) => wait.await.is_ok(),
                    None => std::future::pending().await,
                }
            } => {
                let Some((_, offsets)) = inflight.pop_front() else { continue };
                if !stored {
                    break;
                }
                settle(&consumer, &pending, &name, &mut next, offsets);
                continue;
            }
            _ = lag_tick.tick() => {
                tokio::task::block_in_place(|| report_lag(&consumer, &name, &next, &metrics, &ready, &mut lagging));
                last_lag = std::time::Instant::now();
                continue;
            }
        };
        let mut parts = Vec::new();
        let mut lost = Vec::new();
        let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut skipped = 0u64;
        let mut take = |m: &rdkafka::message::BorrowedMessage<'_>,
                        parts: &mut Vec<Part>,
                        offsets: &mut BTreeMap<(String, i32), i64>| {
            offsets.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            let generation = generation.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(floor) = tokio::task::block_in_place(|| {
                stored.floor(
                    &name,
                    &cfg.group_id,
                    m.topic(),
                    m.partition(),
                    generation,
                    || {
                        consumer
                            .fetch_watermarks(m.topic(), m.partition(), Duration::from_secs(2))
                            .ok()
                            .map(|(_, high)| high)
                    },
                )
            }) && m.offset() < floor
            {
                // The store has what this message produced (read before a
                // crash or by the partition's previous owner).
                skipped += 1;
                return;
            }
            if let Some(l) =
                tokio::task::block_in_place(|| gaps.check(&consumer, &cfg, m, generation))
            {
                tracing::error!(source = %name, partition = %l.what, from = %l.from, count = l.count, "messages deleted by retention before they were read");
                lost.push(l);
            }
            if let Some(p) = part(&cfg, m) {
                parts.push(p);
            }
        };
        match first {
            Ok(m) => take(&m, &mut parts, &mut offsets),
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "kafka error");
                ready.set(&name, Err(e.to_string()));
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + WINDOW;
        while parts.len() < BATCH {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => take(&m, &mut parts, &mut offsets),
                Ok(Err(e)) => {
                    tracing::warn!(source = %name, error = %e, "kafka error");
                    break;
                }
                Err(_) => break,
            }
        }
        ready.set(&name, Ok(()));
        if skipped > 0 {
            tracing::info!(source = %name, messages = skipped, "messages the store already has were skipped");
        }
        let position = offsets
            .iter()
            .map(|((t, p), o)| format!("{t}/{p}@{}", o - 1))
            .collect::<Vec<_>>()
            .join(",");
        let (done, wait) = oneshot::channel();
        let batch = RawBatch {
            source: name.clone(),
            parts,
            position,
            checkpoints: offsets
                .iter()
                .map(|((t, p), o)| crate::store::SourceCheckpoint {
                    source: name.to_string(),
                    key: position_key(&cfg.group_id, t, *p),
                    position: o.to_string(),
                })
                .collect(),
            live: true,
            request_received: cfg.request_received,
            expect: cfg
                .envelope
                .as_deref()
                .and_then(crate::decode::expected_envelopes)
                .flatten(),
            lost,
            done: Some(done),
        };
        if tx.send(Work::Batch(batch)).await.is_err() {
            break;
        }
        inflight.push_back((wait, offsets));
        // At most IN_FLIGHT batches ahead of the store; the oldest is
        // waited for, and once stored its offsets may move.
        let mut stopped = false;
        while inflight.len() >= IN_FLIGHT {
            let Some((wait, offsets)) = inflight.pop_front() else {
                break;
            };
            if wait.await.is_err() {
                stopped = true;
                break;
            }
            settle(&consumer, &pending, &name, &mut next, offsets);
        }
        if stopped {
            break;
        }
        if last_lag.elapsed() >= Duration::from_secs(1) {
            // Watermarks are a round trip to the broker: off the async threads.
            tokio::task::block_in_place(|| {
                report_lag(&consumer, &name, &next, &metrics, &ready, &mut lagging)
            });
            last_lag = std::time::Instant::now();
        }
    }
    // What was sent before the stop is still stored (the pipeline drains
    // its queue): its offsets may move too.
    while let Some((wait, offsets)) = inflight.pop_front() {
        if wait.await.is_err() {
            break;
        }
        settle(&consumer, &pending, &name, &mut next, offsets);
    }
    commit_pending(&consumer, &pending, &name);
    tracing::info!(source = %name, "kafka source stopped");
}

/// The next offset to read per (topic, partition), of one batch.
type Offsets = BTreeMap<(String, i32), i64>;

/// A batch is stored: its offsets may be committed to Kafka.
fn settle(
    consumer: &StreamConsumer<Ctx>,
    pending: &Pending,
    name: &str,
    next: &mut HashMap<(String, i32), i64>,
    offsets: Offsets,
) {
    if let Ok(mut p) = pending.offsets.lock() {
        p.extend(offsets.iter().map(|(k, v)| (k.clone(), *v)));
    }
    next.extend(offsets);
    commit_pending(consumer, pending, name);
}

/// Commits what the store has and Kafka not yet, for the partitions still
/// assigned here.
fn commit_pending(consumer: &StreamConsumer<Ctx>, pending: &Pending, name: &str) {
    let assigned: Vec<(String, i32)> = consumer
        .assignment()
        .map(|a| {
            a.elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect()
        })
        .unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    if let Ok(mut p) = pending.offsets.lock() {
        let keys: Vec<(String, i32)> = p.keys().cloned().collect();
        for k in keys {
            if let Some(off) = p.remove(&k)
                && assigned.contains(&k)
            {
                let _ = tpl.add_partition_offset(&k.0, k.1, Offset::Offset(off));
            }
        }
    }
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::warn!(source = %name, error = %e, "offset commit failed (the batch is stored; it may be read again)");
    }
}

/// Where each partition's next message is expected, to tell a gap of
/// deleted messages from one of transaction markers.
#[derive(Default)]
struct Gaps {
    expected: HashMap<(String, i32), i64>,
    /// The rebalance generation these expectations belong to.
    generation: u64,
    /// Low watermarks fetched lately (a gap of transaction markers after
    /// every transaction must not cost a broker round trip each).
    lows: HashMap<(String, i32), (i64, std::time::Instant)>,
}

impl Gaps {
    /// The messages lost before `m`, if any: the offset expected (after
    /// the last message, or the group's committed offset for the first
    /// message of an assignment) lies below the partition's low watermark.
    fn check(
        &mut self,
        consumer: &StreamConsumer<Ctx>,
        cfg: &KafkaSource,
        m: &rdkafka::message::BorrowedMessage<'_>,
        generation: u64,
    ) -> Option<Lost> {
        if generation != self.generation {
            // A rebalance: what this consumer expected no longer holds.
            *self = Gaps {
                generation,
                ..Gaps::default()
            };
        }
        let key = (m.topic().to_owned(), m.partition());
        let expected = match self.expected.insert(key.clone(), m.offset() + 1) {
            Some(e) => e,
            None => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(m.topic(), m.partition());
                let committed = consumer
                    .committed_offsets(tpl, Duration::from_secs(2))
                    .ok()?;
                match committed.find_partition(m.topic(), m.partition())?.offset() {
                    Offset::Offset(c) => c,
                    _ => return None, // never committed: nothing was promised
                }
            }
        };
        if m.offset() <= expected {
            return None;
        }
        // The low watermark only grows: one fetched lately that is not above
        // the expected offset says "no loss" without asking again.
        if let Some((low, at)) = self.lows.get(&key)
            && *low <= expected
            && at.elapsed() < Duration::from_secs(5)
        {
            return None;
        }
        let (low, _) = consumer
            .fetch_watermarks(m.topic(), m.partition(), Duration::from_secs(2))
            .ok()?;
        self.lows.insert(key, (low, std::time::Instant::now()));
        let count = deleted_unread(expected, m.offset(), low)?;
        Some(Lost {
            cluster: fixed_cluster(cfg, m.topic()),
            what: format!("{}/{}", m.topic(), m.partition()),
            from: expected.to_string(),
            count,
            unit: "messages",
            reason: "the topic's retention deleted them before kaudit consumed them (kaudit was down or behind for longer than the retention)".into(),
        })
    }
}

/// How many messages between `expected` (the next offset this consumer
/// should have read) and `got` (the offset it read) were deleted unread,
/// given the partition's low watermark `low`. A gap above the low
/// watermark is transaction markers or compaction, not loss.
fn deleted_unread(expected: i64, got: i64, low: i64) -> Option<u64> {
    if got <= expected || low <= expected {
        return None;
    }
    u64::try_from(low.min(got) - expected).ok()
}

/// The cluster of every message of `topic`, when the config says it
/// without looking at the message.
fn fixed_cluster(cfg: &KafkaSource, topic: &str) -> Option<String> {
    match cfg.cluster_from.as_deref() {
        Some("topic") => Some(topic.to_owned()),
        Some(c) => c.strip_prefix("fixed:").map(str::to_owned),
        None => None,
    }
}

/// One message as a part: its payload (or the configured field of it) and
/// its cluster.
fn part(cfg: &KafkaSource, m: &rdkafka::message::BorrowedMessage<'_>) -> Option<Part> {
    let payload = m.payload()?;
    let cluster = match cfg.cluster_from.as_deref() {
        Some("key") => m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_owned),
        Some("topic") => Some(m.topic().to_owned()),
        Some(c) if c.starts_with("fixed:") => c.strip_prefix("fixed:").map(str::to_owned),
        Some(c) if c.starts_with("header:") => {
            let want = c.strip_prefix("header:").unwrap_or("");
            m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == want)
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_owned)
            })
        }
        _ => None,
    };
    let data = match cfg
        .envelope
        .as_deref()
        .and_then(|e| e.strip_prefix("field:"))
    {
        Some(field) => serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| {
                v.get(field)
                    .and_then(|f| f.as_str())
                    .map(|s| s.as_bytes().to_vec())
            })
            .unwrap_or_else(|| payload.to_vec()),
        None => payload.to_vec(),
    };
    Some(Part { cluster, data })
}

/// Consumer lag per assigned partition: high watermark minus the next
/// offset to read (the group's committed offset before this process read
/// anything of it); partitions assigned elsewhere lose their gauge.
fn report_lag(
    consumer: &StreamConsumer<Ctx>,
    name: &str,
    next: &HashMap<(String, i32), i64>,
    metrics: &Metrics,
    ready: &Readiness,
    lagging: &mut std::collections::BTreeSet<(String, i32)>,
) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    if assigned.count() > 0 {
        ready.set(name, Ok(()));
    }
    let label = |(topic, partition): &(String, i32)| Partition {
        source: name.to_owned(),
        topic: topic.clone(),
        partition: partition.to_string(),
    };
    let now: std::collections::BTreeSet<(String, i32)> = assigned
        .elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect();
    for gone in lagging.difference(&now) {
        metrics.consumer_lag.remove(&label(gone));
    }
    lagging.clone_from(&now);
    // Where this process has not read yet, the group's committed offsets.
    let committed = if now.iter().any(|k| !next.contains_key(k)) {
        consumer
            .committed(Duration::from_millis(500))
            .ok()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                        _ => None,
                    })
                    .collect::<HashMap<_, _>>()
            })
            .unwrap_or_default()
    } else {
        HashMap::new()
    };
    for key in &now {
        // The query queues behind a fetch in progress on the same broker
        // connection (fetch.wait.max.ms, 500 ms by default): wait longer
        // than that, or idle partitions never get a gauge.
        let Ok((low, high)) = consumer.fetch_watermarks(&key.0, key.1, Duration::from_millis(1200))
        else {
            tracing::debug!(source = %name, topic = %key.0, partition = key.1, "no watermarks in time: lag not updated");
            continue;
        };
        let at = next
            .get(key)
            .or_else(|| committed.get(key))
            .copied()
            .unwrap_or(low);
        metrics
            .consumer_lag
            .get_or_create(&label(key))
            .set((high - at).max(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(yaml: &str) -> KafkaSource {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn get(c: &ClientConfig, k: &str) -> Option<String> {
        c.get(k).map(str::to_owned)
    }

    /// What cannot be exercised against the test broker is checked here:
    /// the exact librdkafka settings each security setup produces.
    #[test]
    fn stored_positions_are_per_group_read_once_per_rebalance_and_checked_against_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db");
        let mut store = crate::store::Store::open(&db).unwrap();
        let put = |store: &mut crate::store::Store, key: &str, pos: &str| {
            store
                .commit(&crate::store::Batch {
                    checkpoints: vec![crate::store::SourceCheckpoint {
                        source: "kafka".into(),
                        key: key.into(),
                        position: pos.into(),
                    }],
                    ..crate::store::Batch::default()
                })
                .unwrap();
        };
        put(&mut store, &position_key("kaudit", "audit", 3), "500");
        let mut s = Stored::new(Some(db));
        assert_eq!(
            s.floor("kafka", "kaudit", "audit", 3, 1, || Some(900)),
            Some(500)
        );
        // Another group's position is not ours; an unknown partition has none.
        assert_eq!(
            s.floor("kafka", "backfill", "audit", 3, 1, || Some(900)),
            None
        );
        assert_eq!(
            s.floor("kafka", "kaudit", "audit", 4, 1, || Some(900)),
            None
        );
        // Read once per rebalance: a later write is seen after the next one.
        put(&mut store, &position_key("kaudit", "audit", 3), "700");
        assert_eq!(
            s.floor("kafka", "kaudit", "audit", 3, 1, || Some(900)),
            Some(500)
        );
        assert_eq!(
            s.floor("kafka", "kaudit", "audit", 3, 2, || Some(900)),
            Some(700)
        );
        // Past the partition's end (the topic was made again): not used.
        assert_eq!(s.floor("kafka", "kaudit", "audit", 3, 3, || Some(10)), None);
        // No store: nothing is skipped.
        assert_eq!(
            Stored::new(None).floor("kafka", "kaudit", "audit", 3, 1, || None),
            None
        );
    }

    #[test]
    fn only_a_gap_below_the_low_watermark_is_loss() {
        // Retention deleted 10..20; the consumer expected 10 and got 20.
        assert_eq!(deleted_unread(10, 20, 20), Some(10));
        // Deleted up to 25 while the consumer was reset to 20 before.
        assert_eq!(deleted_unread(10, 30, 25), Some(15));
        // A transaction marker at 10: the next message is 11, nothing lost.
        assert_eq!(deleted_unread(10, 11, 0), None);
        // A compacted-away stretch above the low watermark.
        assert_eq!(deleted_unread(10, 50, 3), None);
        // No gap.
        assert_eq!(deleted_unread(10, 10, 20), None);
        assert_eq!(deleted_unread(10, 9, 20), None);
    }

    #[test]
    fn security_settings() {
        let plain =
            client_config("k", &source("{brokers: b:9092, topic: t, group_id: g}")).unwrap();
        assert_eq!(get(&plain, "enable.auto.commit").as_deref(), Some("false"));
        assert_eq!(
            get(&plain, "enable.auto.offset.store").as_deref(),
            Some("false")
        );
        assert_eq!(get(&plain, "security.protocol"), None);
        assert_eq!(
            get(&plain, "queued.max.messages.kbytes").as_deref(),
            Some("16384")
        );
        assert_eq!(get(&plain, "fetch.queue.backoff.ms").as_deref(), Some("20"));
        assert_eq!(get(&plain, "fetch.wait.max.ms").as_deref(), Some("100"));

        let scram = client_config(
            "k",
            &source("{brokers: b:9096, topic: t, group_id: g, security: {protocol: sasl_ssl, sasl_mechanism: scram-sha-512, username: kaudit, password: pw, ca_file: /etc/ca.pem}}"),
        )
        .unwrap();
        assert_eq!(
            get(&scram, "security.protocol").as_deref(),
            Some("SASL_SSL")
        );
        assert_eq!(
            get(&scram, "sasl.mechanism").as_deref(),
            Some("SCRAM-SHA-512")
        );
        assert_eq!(get(&scram, "sasl.username").as_deref(), Some("kaudit"));
        assert_eq!(get(&scram, "sasl.password").as_deref(), Some("pw"));
        assert_eq!(
            get(&scram, "ssl.ca.location").as_deref(),
            Some("/etc/ca.pem")
        );

        // Event Hubs, its connection string from a file.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("conn");
        std::fs::write(
            &f,
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x\n",
        )
        .unwrap();
        let hubs = client_config(
            "k",
            &source(&format!(
                "{{brokers: ns.servicebus.windows.net:9093, topic: insights-logs-kube-audit, group_id: g, security: {{event_hubs_connection_string_file: {}}}}}",
                f.display()
            )),
        )
        .unwrap();
        assert_eq!(get(&hubs, "security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get(&hubs, "sasl.mechanism").as_deref(), Some("PLAIN"));
        assert_eq!(
            get(&hubs, "sasl.username").as_deref(),
            Some("$ConnectionString")
        );
        assert!(
            get(&hubs, "sasl.password")
                .unwrap()
                .starts_with("Endpoint=sb://")
        );

        // Properties: as written, or from a file or the environment.
        std::fs::write(dir.path().join("keypw"), "k3y-pw\n").unwrap();
        let props = source(&format!(
            "{{brokers: b:9092, topic: t, group_id: g, properties: {{ssl.key.password: \"file:{}\", fetch.min.bytes: \"1\"}}}}",
            dir.path().join("keypw").display()
        ));
        assert!(!format!("{props:?}").contains("k3y-pw"));
        let c = client_config("k", &props).unwrap();
        assert_eq!(get(&c, "ssl.key.password").as_deref(), Some("k3y-pw"));
        assert_eq!(get(&c, "fetch.min.bytes").as_deref(), Some("1"));
        let missing = client_config(
            "k",
            &source("{brokers: b:9092, topic: t, group_id: g, properties: {sasl.password: \"env:KAUDIT_TEST_UNSET_VAR\"}}"),
        )
        .unwrap_err();
        assert!(
            missing.contains("properties.sasl.password")
                && missing.contains("KAUDIT_TEST_UNSET_VAR"),
            "{missing}"
        );

        let bad = client_config(
            "k",
            &source("{brokers: b, topic: t, group_id: g, security: {sasl_mechanism: GSSAPI}}"),
        );
        assert!(bad.unwrap_err().contains("SCRAM-SHA-256"));
        let missing = client_config(
            "k",
            &source(
                "{brokers: b, topic: t, group_id: g, security: {password_env: KAUDIT_NO_SUCH_VAR_XYZ}}",
            ),
        );
        assert!(
            missing
                .unwrap_err()
                .contains("KAUDIT_NO_SUCH_VAR_XYZ is not set")
        );
    }
}
