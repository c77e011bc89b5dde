//! Scaling out: three `kaudit run` instances in one Kafka consumer group,
//! sharing one PostgreSQL store, one of them killed (-9) mid-stream and
//! restarted. Every planted attack is stored once, alerted once (by
//! whichever instance claimed it), the hash chain stays one chain (seq 1..n,
//! `kaudit verify` intact) and no event goes uncounted.
//!
//! Needs a PostgreSQL server: KAUDIT_TEST_POSTGRES_URL (a superuser URL;
//! scripts/test.sh starts a scratch server and sets it). The test creates
//! its own database there and drops it when it passes. Needs tansu (a
//! Kafka-protocol broker; scripts/test.sh installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::daemon::{Daemon, exec_line, free_port, http_get};
use super::kafka::Broker;
use super::*;

/// Clusters, one per partition (c0 on partition 0, ...).
const CLUSTERS: usize = 6;
/// Ordinary events per cluster (no finding each).
const ORDINARY_PER_CLUSTER: usize = 500;
/// Planted attacks per cluster (one finding each).
const PLANTED_PER_CLUSTER: usize = 5;
const TOPIC: &str = "k8s-audit";
const GROUP: &str = "kaudit-scale";
/// The rules the planted attacks fire (and the alert sink routes).
const PLANTED_RULES: [&str; 2] = ["pod-exec", "impersonation-privileged-identity"];
/// How long the survivors get to take a killed instance's partitions on
/// their own (session timeout 6 s, then a rebalance) before the group is
/// nudged (see `nudge_group`).
const NUDGE_AFTER: Duration = Duration::from_secs(15);
/// How long any one phase may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(20);

/// The superuser URL of the test server; the test fails (does not skip)
/// without it.
fn postgres_url() -> String {
    match std::env::var("KAUDIT_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_owned(),
        _ => panic!(
            "KAUDIT_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
             (a superuser URL such as postgres://kaudit@127.0.0.1:5432/postgres). \
             scripts/test.sh starts a scratch server and sets it; to run by hand, export it."
        ),
    }
}

/// `url` with its database replaced by `db` (the query string kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or_else(|| {
        panic!("KAUDIT_TEST_POSTGRES_URL is not a URL (postgres://user@host:port/db): {url}")
    });
    let path = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut s = format!("{}/{db}", &base[..path]);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    s
}

/// A fresh database of the test's own, dropped when the test passes (kept
/// for inspection when it fails).
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create() -> Database {
        let admin = postgres_url();
        let name = format!(
            "kaudit_scale_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to KAUDIT_TEST_POSTGRES_URL={admin}: {e}"));
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = with_database(&admin, &name);
        eprintln!("scale: database {url}");
        Database { admin, name, url }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.url))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("scale: database {} kept for inspection", self.url);
            return;
        }
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A temporary directory, kept (and named) when the test fails: the
/// instances' whole logs are there.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(t) = self.0.take()
        {
            eprintln!("scale: logs kept in {}", t.keep().display());
        }
    }
}

/// A loopback HTTP/1.1 server receiving the webhook alerts, one thread per
/// connection. While `hold` is set, POSTs are read but not answered (the
/// sender waits in its request). An answered POST is a delivery, counted
/// by finding id (the Idempotency-Key header, else the body's `id`); a
/// POST whose sender was gone when its answer was due (killed while held)
/// is counted as abandoned.
struct Receiver {
    delivered: Arc<Mutex<BTreeMap<String, usize>>>,
    abandoned: Arc<Mutex<BTreeMap<String, usize>>>,
    hold: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let r = Receiver {
            delivered: Default::default(),
            abandoned: Default::default(),
            hold: Default::default(),
            held: Default::default(),
            stop: Default::default(),
        };
        let (delivered, abandoned, hold, held, stop) = (
            r.delivered.clone(),
            r.abandoned.clone(),
            r.hold.clone(),
            r.held.clone(),
            r.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let (delivered, abandoned, hold, held) = (
                    delivered.clone(),
                    abandoned.clone(),
                    hold.clone(),
                    held.clone(),
                );
                std::thread::spawn(move || {
                    Receiver::serve(conn, &delivered, &abandoned, &hold, &held)
                });
            }
        });
        r
    }

    fn serve(
        conn: std::net::TcpStream,
        delivered: &Mutex<BTreeMap<String, usize>>,
        abandoned: &Mutex<BTreeMap<String, usize>>,
        hold: &AtomicBool,
        held: &AtomicUsize,
    ) {
        conn.set_nonblocking(false).unwrap();
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() || !line.starts_with("POST ") {
            return;
        }
        let id = headers.get("idempotency-key").cloned().unwrap_or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
        });
        if hold.load(Ordering::SeqCst) {
            held.fetch_add(1, Ordering::SeqCst);
            while hold.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            held.fetch_sub(1, Ordering::SeqCst);
        }
        // A sender killed meanwhile has closed its end (the kernel does).
        conn.set_nonblocking(true).unwrap();
        let gone = matches!(conn.peek(&mut [0u8; 1]), Ok(0))
            || matches!(conn.peek(&mut [0u8; 1]), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock);
        conn.set_nonblocking(false).unwrap();
        if gone {
            *abandoned.lock().unwrap().entry(id).or_default() += 1;
            return;
        }
        let mut w = conn;
        if write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .and_then(|()| w.flush())
        .is_ok()
        {
            *delivered.lock().unwrap().entry(id).or_default() += 1;
        }
    }

    /// Answered POSTs by finding id.
    fn delivered(&self) -> BTreeMap<String, usize> {
        self.delivered.lock().unwrap().clone()
    }

    /// POSTs whose sender died before the answer, by finding id.
    fn abandoned(&self) -> BTreeMap<String, usize> {
        self.abandoned.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One `kaudit run` instance: its configuration differs from the others'
/// only in `server.listen`.
struct Instance {
    name: String,
    child: Option<Child>,
    ops: u16,
    logs: Vec<PathBuf>,
}

/// The instances; killed when dropped, their logs printed when the test
/// failed.
struct Fleet {
    dir: PathBuf,
    db_url: String,
    bootstrap: String,
    hook: u16,
    instances: Vec<Instance>,
}

impl Fleet {
    fn config(&self, ops: u16) -> String {
        format!(
            r#"storage:
  postgres:
    url: "{db}"
server: {{listen: "127.0.0.1:{ops}"}}
detection:
  # Fires on every planted attack too: off, so that each planted event is
  # exactly one finding.
  disable: [disallowed-k8s-user]
sources:
  - type: kafka
    name: audit-topic
    brokers: "{bootstrap}"
    topic: {TOPIC}
    group_id: {GROUP}
    cluster_from: key
    session_timeout_ms: 6000
    properties: {{heartbeat.interval.ms: "500", topic.metadata.refresh.interval.ms: "1000"}}
alerts:
  max_attempts: 50
  sinks:
    - name: siem
      type: webhook
      url: "http://127.0.0.1:{hook}/kaudit"
      # Longer than any hold of the test's receiver: a held POST waits.
      timeout_ms: 60000
      include: {{rules: [{rules}]}}
"#,
            db = self.db_url,
            bootstrap = self.bootstrap,
            hook = self.hook,
            rules = PLANTED_RULES.join(", "),
        )
    }

    /// Starts (or restarts) instance `i` on a fresh operations port and
    /// waits for /healthz.
    fn start(&mut self, i: usize) {
        let ops = free_port();
        let cfg = self.dir.join(format!("kaudit-{i}.yaml"));
        std::fs::write(&cfg, self.config(ops)).unwrap();
        if i == self.instances.len() {
            self.instances.push(Instance {
                name: format!("instance-{i}"),
                child: None,
                ops,
                logs: Vec::new(),
            });
        }
        let inst = &mut self.instances[i];
        let log = self
            .dir
            .join(format!("{}.{}.log", inst.name, inst.logs.len() + 1));
        let child = Command::new(env!("CARGO_BIN_EXE_kaudit"))
            .args(["run", "--config", &path_str(&cfg)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("kaudit run starts");
        inst.child = Some(child);
        inst.ops = ops;
        inst.logs.push(log);
        let name = inst.name.clone();
        wait_until(&format!("{name} /healthz"), DEADLINE, || {
            let inst = &mut self.instances[i];
            if let Some(status) = inst.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{name} exited at start: {status:?}");
            }
            match http_get(ops, "/healthz") {
                Some((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        eprintln!(
            "scale: {name} started (pid {}, ops port {ops})",
            self.pid(i)
        );
    }

    fn pid(&self, i: usize) -> u32 {
        self.instances[i].child.as_ref().map_or(0, Child::id)
    }

    fn running(&self) -> Vec<usize> {
        (0..self.instances.len())
            .filter(|i| self.instances[*i].child.is_some())
            .collect()
    }

    fn metrics(&self, i: usize) -> String {
        match http_get(self.instances[i].ops, "/metrics") {
            Some((200, body)) => body,
            _ => String::new(),
        }
    }

    /// The partitions instance `i` holds now (its consumer-lag gauges).
    fn partitions(&self, i: usize) -> BTreeSet<i32> {
        self.metrics(i)
            .lines()
            .filter(|l| l.starts_with("kaudit_consumer_lag{"))
            .filter_map(|l| {
                l.split("partition=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Events instance `i` counted, by cluster (its kaudit_events_total).
    fn counted(&self, i: usize) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for l in self.metrics(i).lines() {
            if !l.starts_with("kaudit_events_total{") {
                continue;
            }
            let cluster = l
                .split("cluster=\"")
                .nth(1)
                .and_then(|r| r.split('"').next());
            let n = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(c), Some(n)) = (cluster, n) {
                *m.entry(c.to_owned()).or_default() += n as u64;
            }
        }
        m
    }

    /// kill -9: no drain, no commit, no revoke callback.
    fn kill(&mut self, i: usize) {
        let mut child = self.instances[i].child.take().unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        eprintln!("scale: {} killed ({status:?})", self.instances[i].name);
    }

    /// SIGTERM; the exit must be clean and within the deadline.
    fn stop(&mut self, i: usize) {
        let mut child = self.instances[i].child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within 60 s of SIGTERM",
                    self.instances[i].name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "{} exited {status:?} after SIGTERM",
            self.instances[i].name
        );
        eprintln!("scale: {} stopped cleanly", self.instances[i].name);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What each instance counted and holds, and where the group and
            // the store say each partition was read to.
            for i in self.running() {
                eprintln!(
                    "scale: {} counted {:?}, lag gauges {:?}",
                    self.instances[i].name,
                    self.counted(i),
                    self.partitions(i)
                );
            }
            eprintln!(
                "scale: group offsets (partition, committed, high watermark): {:?}",
                group_offsets(&self.bootstrap)
            );
        }
        for inst in &mut self.instances {
            if let Some(mut c) = inst.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for inst in &self.instances {
                for log in &inst.logs {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let from = lines.len().saturating_sub(150);
                    eprintln!(
                        "---- {} (last {} of {} lines) ----\n{}",
                        log.display(),
                        lines.len() - from,
                        lines.len(),
                        lines[from..].join("\n")
                    );
                }
            }
            let tansu = self.dir.join("tansu.log");
            let text = std::fs::read_to_string(&tansu).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            eprintln!("---- tansu.log (tail) ----\n{}", lines[from..].join("\n"));
        }
    }
}

/// Polls `check` every 250 ms until it says Ok; fails with its last word.
fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let state = match check() {
            Ok(()) => {
                eprintln!("scale: {what}: done after {:.1?}", start.elapsed());
                return;
            }
            Err(s) => s,
        };
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}; last state: {state}");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "scale: waiting for {what} ({:.0?}): {state}",
                start.elapsed()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The consumer group's committed offset and the high watermark of each
/// partition (for a failure's report).
fn group_offsets(bootstrap: &str) -> Vec<(i32, Option<i64>, Option<i64>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let Ok(c) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create::<BaseConsumer>()
    else {
        return Vec::new();
    };
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..CLUSTERS as i32 {
        tpl.add_partition(TOPIC, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(5)).ok();
    (0..CLUSTERS as i32)
        .map(|p| {
            let off = committed
                .as_ref()
                .and_then(|t| t.find_partition(TOPIC, p))
                .and_then(|e| e.offset().to_raw());
            let high = c
                .fetch_watermarks(TOPIC, p, Duration::from_secs(5))
                .ok()
                .map(|(_, h)| h);
            (p, off, high)
        })
        .collect()
}

/// Starts a new generation of the consumer group: a throwaway member
/// joins (without committing anything) and leaves again.
///
/// Needed with tansu 0.6.0 as the broker: when a member's session expires
/// in a formed group, its coordinator drops the member but keeps the
/// generation and the assignment (`Inner<Formed>::heartbeat` removes it
/// itself, so `Wrapper::missed_heartbeat` finds nothing left to remove and
/// never moves the group to `Forming`): the survivors are never told to
/// rebalance and the dead member's partitions go unread until a member
/// joins or leaves. Apache Kafka rebalances at the session timeout.
fn nudge_group(bootstrap: &str) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("client.id", "scale-test-nudge")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let _ = c.poll(Duration::from_millis(100));
        if c.assignment().is_ok_and(|a| a.count() > 0) {
            break;
        }
    }
    eprintln!(
        "scale: throwaway member held {:?} after {:.1?}; leaving",
        c.assignment().map(|a| a.count()),
        start.elapsed()
    );
    drop(c); // LeaveGroup: a new generation without it
}

/// Warm-up events are numbered from here (`ordinary_line(c, WARM + w)`).
const WARM: usize = 90_000;

/// The hour (unix seconds) ordinary event `j` is timestamped in: each its
/// own hour, so that the coverage table (events per cluster and hour)
/// tells which events were counted, and how often.
fn event_hour(j: usize) -> i64 {
    let (base, k) = if j >= WARM {
        (time::macros::datetime!(2026-09-01 0:00 UTC), j - WARM)
    } else {
        (time::macros::datetime!(2026-10-01 0:00 UTC), j)
    };
    base.unix_timestamp() + k as i64 * 3600
}

/// A kubelet's routine request (no rule fires), timestamped in an hour of
/// its own (`event_hour`).
fn ordinary_line(cluster: usize, j: usize) -> String {
    let node = format!("node-{}", j % 4);
    let ip = format!("10.{cluster}.1.{}", 10 + j % 4);
    let ts = time::OffsetDateTime::from_unix_timestamp(event_hour(j))
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (verb, uri, object) = if j % 2 == 0 {
        (
            "get",
            format!("/api/v1/nodes/{node}?resourceVersion=0&timeout=10s"),
            format!(r#"{{"resource":"nodes","name":"{node}","apiVersion":"v1"}}"#),
        )
    } else {
        (
            "update",
            format!(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}?timeout=10s"
            ),
            format!(
                r#"{{"resource":"leases","namespace":"kube-node-lease","name":"{node}","apiGroup":"coordination.k8s.io","apiVersion":"v1"}}"#
            ),
        )
    };
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"ord-c{cluster}-{j:05}","stage":"ResponseComplete","requestURI":"{uri}","verb":"{verb}","user":{{"username":"system:node:{node}","groups":["system:nodes","system:authenticated"]}},"sourceIPs":["{ip}"],"userAgent":"kubelet/v1.30.4 (linux/amd64) kubernetes/0b4d27c","objectRef":{object},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{ts}","stageTimestamp":"{ts}","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}}}"#
    )
}

/// A person acting as system:admin (impersonation-privileged-identity, the
/// shape of the rule's own inline test).
fn impersonation_line(id: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/namespaces/kube-system/configmaps?limit=500","user":{{"username":"oidc:carol@acme.example","groups":["oidc:platform","system:authenticated"]}},"impersonatedUser":{{"username":"system:admin","groups":["system:masters","system:authenticated"]}},"userAgent":"kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46","sourceIPs":["10.0.0.11"],"objectRef":{{"resource":"configmaps","namespace":"kube-system","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2026-11-03T10:00:00.000000Z","stageTimestamp":"2026-11-03T10:00:00.100000Z","annotations":{{"authorization.k8s.io/decision":"allow"}}}}"#
    )
}

/// A message: partition (= cluster index), key (the cluster), payload.
type Msg = (i32, String, String);
/// A planted attack's expected finding: (cluster, audit_id, rule_id).
type Planted = (String, String, String);

/// The whole stream, clusters interleaved, planted attacks spread through
/// each cluster's events; and the findings the planted ones must yield.
fn stream() -> (Vec<Msg>, BTreeSet<Planted>) {
    let mut per_cluster: Vec<Vec<String>> = vec![Vec::new(); CLUSTERS];
    let mut planted = BTreeSet::new();
    let every = ORDINARY_PER_CLUSTER / PLANTED_PER_CLUSTER;
    let mut k = 0;
    for (c, events) in per_cluster.iter_mut().enumerate() {
        for j in 0..ORDINARY_PER_CLUSTER {
            events.push(ordinary_line(c, j));
            if j % every == every / 2 {
                let id = format!("atk-c{c}-{k:03}");
                let rule = PLANTED_RULES[k % PLANTED_RULES.len()];
                events.push(if k % 2 == 0 {
                    exec_line(&id)
                } else {
                    impersonation_line(&id)
                });
                planted.insert((format!("c{c}"), id, rule.to_owned()));
                k += 1;
            }
        }
    }
    let mut msgs = Vec::new();
    let longest = per_cluster.iter().map(Vec::len).max().unwrap();
    for j in 0..longest {
        for (c, events) in per_cluster.iter().enumerate() {
            if let Some(e) = events.get(j) {
                msgs.push((c as i32, format!("c{c}"), e.clone()));
            }
        }
    }
    (msgs, planted)
}

/// Produces `msgs` in chunks of 50, a short pause between chunks (a
/// stream, not one burst), each message to its cluster's partition, each
/// in a record batch of its own (see below).
fn produce(bootstrap: &str, msgs: &[Msg]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5")
            // One message per record batch: tansu 0.6.0 answers a fetch
            // from an offset inside a record batch with the batches after
            // it, so a consumer resuming there (a partition moved to
            // another instance, committed mid-batch) would never see the
            // rest of that batch. Apache Kafka returns the whole batch and
            // the client skips what it already has.
            .set("batch.num.messages", "1")
            .create()
            .unwrap();
        for chunk in msgs.chunks(50) {
            let mut pending = Vec::new();
            for (partition, key, payload) in chunk {
                let record = FutureRecord::to(TOPIC)
                    .partition(*partition)
                    .key(key)
                    .payload(payload);
                match producer.send_result(record) {
                    Ok(f) => pending.push(f),
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
            for f in pending {
                match f.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => panic!("produce: {e}"),
                    Err(_) => panic!("produce: delivery cancelled"),
                }
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    });
}

/// (cluster, audit_id, rule_id) -> how many rows.
fn stored(pg: &mut postgres::Client) -> BTreeMap<Planted, i64> {
    pg.query(
        "SELECT cluster, audit_id, rule_id, count(*) FROM findings GROUP BY 1, 2, 3",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
    .collect()
}

fn findings_count(pg: &mut postgres::Client) -> i64 {
    pg.query_one("SELECT count(*) FROM findings", &[])
        .unwrap()
        .get(0)
}

fn outbox_states(pg: &mut postgres::Client) -> BTreeMap<String, i64> {
    pg.query(
        "SELECT state, count(*) FROM alert_outbox GROUP BY state",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn coverage_events(pg: &mut postgres::Client) -> i64 {
    pg.query_one("SELECT COALESCE(SUM(events), 0)::BIGINT FROM coverage", &[])
        .unwrap()
        .get(0)
}

/// An ordinary or warm-up event's count in the coverage: (cluster, j, times).
type Counted = (String, usize, i64);

/// Ordinary and warm-up events counted 0 times and more than once in the
/// coverage, as (cluster, j, times), from their hours (`event_hour`).
fn coverage_misses(pg: &mut postgres::Client, warm: usize) -> (Vec<Counted>, Vec<Counted>) {
    let counted: BTreeMap<(String, i64), i64> = pg
        .query("SELECT cluster, hour, events FROM coverage", &[])
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let (mut missing, mut twice) = (Vec::new(), Vec::new());
    for c in 0..CLUSTERS {
        let cluster = format!("c{c}");
        for j in (0..ORDINARY_PER_CLUSTER).chain(WARM..WARM + warm) {
            let n = counted
                .get(&(cluster.clone(), event_hour(j)))
                .copied()
                .unwrap_or(0);
            if n == 0 {
                missing.push((cluster.clone(), j, n));
            } else if n > 1 {
                twice.push((cluster.clone(), j, n));
            }
        }
    }
    (missing, twice)
}

/// Finding ids of the planted findings stored so far.
fn planted_ids(pg: &mut postgres::Client) -> BTreeMap<Planted, String> {
    pg.query(
        "SELECT cluster, audit_id, rule_id, id FROM findings WHERE audit_id LIKE 'atk-%'",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
    .collect()
}

/// Alerts claimed (pending, leased) now, by instance index: (owner, count).
/// The owner is `HOST|BOOT|PIDNS|PID|START`.
fn claims_by_instance(pg: &mut postgres::Client, fleet: &Fleet) -> BTreeMap<usize, (String, i64)> {
    let mut m = BTreeMap::new();
    for r in pg
        .query(
            "SELECT lease_owner, count(*) FROM alert_outbox
             WHERE state = 'pending' AND lease_until > 0 AND lease_owner <> '' GROUP BY 1",
            &[],
        )
        .unwrap()
    {
        let owner: String = r.get(0);
        let pid = owner.split('|').nth(3).and_then(|p| p.parse::<u32>().ok());
        if let Some(i) = fleet
            .running()
            .into_iter()
            .find(|i| Some(fleet.pid(*i)) == pid)
        {
            m.insert(i, (owner, r.get(1)));
        }
    }
    m
}

/// Alerts still pending under a claim of `owner`.
fn leased_by(pg: &mut postgres::Client, owner: &str) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM alert_outbox WHERE state = 'pending' AND lease_until > 0 AND lease_owner = $1",
        &[&owner],
    )
    .unwrap()
    .get(0)
}

/// The issue's acceptance test for the scaled deployment
/// (docs/deployment.md, "Scaling out").
#[test]
fn three_instances_one_group_one_postgres_kill_one_mid_stream() {
    let started = Instant::now();
    let db = Database::create();
    let tmp = KeepOnPanic(Some(tempfile::tempdir().unwrap()));
    let dir = tmp.0.as_ref().unwrap().path().to_owned();
    let broker = Broker::start_logging(Some(&dir.join("tansu.log")));
    broker.create_topic(TOPIC, CLUSTERS);
    let hook = free_port();
    let receiver = Receiver::start(hook);
    let mut pg = db.client();

    let (msgs, planted) = stream();
    let total_events = msgs.len() as i64;
    assert_eq!(planted.len(), CLUSTERS * PLANTED_PER_CLUSTER);
    let (first, second) = msgs.split_at(msgs.len() / 2);
    eprintln!(
        "scale: {} events ({} planted attacks) over {CLUSTERS} clusters/partitions, in two halves",
        msgs.len(),
        planted.len()
    );

    let mut fleet = Fleet {
        dir: dir.clone(),
        db_url: db.url.clone(),
        bootstrap: broker.bootstrap(),
        hook,
        instances: Vec::new(),
    };
    for i in 0..3 {
        fleet.start(i);
    }
    // The group settles: rounds of one warm-up event per cluster until all
    // three instances count events of the same round (each then holds
    // partitions: the three-member assignment). Consumption tells who
    // holds what: tansu answers no DescribeGroups, and kaudit_consumer_lag
    // lacks partitions on an idle topic (its 500 ms watermark query times
    // out against librdkafka's default 500 ms fetch wait, and the partition
    // is skipped), so the gauges are only printed.
    let mut warm = 0usize;
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    wait_until(
        "all three instances to consume (the group settled)",
        DEADLINE,
        || {
            let before: Vec<BTreeMap<String, u64>> = (0..3).map(|i| fleet.counted(i)).collect();
            let round: Vec<Msg> = (0..CLUSTERS)
                .map(|c| (c as i32, format!("c{c}"), ordinary_line(c, WARM + warm)))
                .collect();
            warm += 1;
            produce(&fleet.bootstrap, &round);
            let t = Instant::now();
            let mut took: BTreeMap<String, usize> = BTreeMap::new();
            while took.len() < CLUSTERS && t.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(100));
                for (i, b) in before.iter().enumerate() {
                    for (c, n) in fleet.counted(i) {
                        if n > b.get(&c).copied().unwrap_or(0) {
                            took.insert(c, i);
                        }
                    }
                }
            }
            let consumers: BTreeSet<usize> = took.values().copied().collect();
            let state = format!(
                "round {warm}: cluster -> instance {took:?}; lag gauges {:?}",
                (0..3).map(|i| fleet.partitions(i)).collect::<Vec<_>>()
            );
            if took.len() == CLUSTERS && consumers.len() == 3 {
                eprintln!("scale: {state}");
                owner = took;
                Ok(())
            } else {
                Err(state)
            }
        },
    );
    let total_events = total_events + (warm * CLUSTERS) as i64;

    // First half, as a stream, while the receiver holds every alert POST
    // unanswered: the instances claim due alerts (a lease in the outbox)
    // and wait in their POSTs. kill -9 the instance holding the most
    // claims, mid-stream, in its POST: its claims outlive it (the lease
    // is 300 s) until the restarted instance takes them back.
    receiver.hold.store(true, Ordering::SeqCst);
    let producer = {
        let (bootstrap, first) = (broker.bootstrap(), first.to_vec());
        std::thread::spawn(move || produce(&bootstrap, &first))
    };
    let mut claims = BTreeMap::new();
    wait_until(
        "instances to claim alerts and wait in their POSTs",
        DEADLINE,
        || {
            claims = claims_by_instance(&mut pg, &fleet);
            let held = receiver.held.load(Ordering::SeqCst);
            if !claims.is_empty() && held >= claims.len() {
                Ok(())
            } else {
                Err(format!(
                    "claims by instance {claims:?}, {held} POSTs held, {} findings stored",
                    findings_count(&mut pg)
                ))
            }
        },
    );
    let (&victim, _) = claims.iter().max_by_key(|(_, (_, n))| *n).unwrap();
    let victim_owner = claims[&victim].0.clone();
    let orphans: BTreeSet<String> = owner
        .iter()
        .filter(|(_, o)| **o == victim)
        .map(|(c, _)| c.clone())
        .collect();
    eprintln!(
        "scale: kill -9 {} (clusters {orphans:?}; claims by instance {claims:?}) with {} findings stored",
        fleet.instances[victim].name,
        findings_count(&mut pg)
    );
    fleet.kill(victim);
    let killed_at = Instant::now();
    receiver.hold.store(false, Ordering::SeqCst);
    let survivors: Vec<usize> = fleet.running();
    let at_kill: Vec<BTreeMap<String, u64>> = survivors.iter().map(|i| fleet.counted(*i)).collect();
    let dead_claims = leased_by(&mut pg, &victim_owner);
    eprintln!("scale: {dead_claims} alerts stay claimed by the dead instance");
    assert!(
        dead_claims > 0,
        "the killed instance's claims vanished with it (before any restart)"
    );
    producer.join().expect("first half produced");
    eprintln!("scale: first half produced ({:.1?})", started.elapsed());
    produce(&broker.bootstrap(), second);
    eprintln!("scale: second half produced ({:.1?})", started.elapsed());

    // The survivors take the dead instance's partitions (its session times
    // out, the group rebalances): they count events of its clusters.
    let mut nudged = false;
    wait_until(
        "the survivors to take the dead instance's partitions",
        DEADLINE,
        || {
            let mut taken = BTreeMap::new();
            for (k, i) in survivors.iter().enumerate() {
                for (c, n) in fleet.counted(*i) {
                    if orphans.contains(&c) && n > at_kill[k].get(&c).copied().unwrap_or(0) {
                        taken.insert(c, fleet.instances[*i].name.clone());
                    }
                }
            }
            if taken.len() == orphans.len() {
                eprintln!("scale: taken over {taken:?}");
                return Ok(());
            }
            if !nudged && killed_at.elapsed() > NUDGE_AFTER {
                nudged = true;
                let expired = std::fs::read_to_string(dir.join("tansu.log"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("missed heartbeat"))
                    .count();
                eprintln!(
                    "scale: no takeover {NUDGE_AFTER:?} after the kill (tansu logged {expired} \
                     missed-heartbeat lines): tansu 0.6.0 drops an expired member without a new \
                     generation, so a throwaway member joins and leaves to start one"
                );
                nudge_group(&fleet.bootstrap);
            }
            Err(format!("taken over so far {taken:?}"))
        },
    );
    // Until a process on this host checks, the dead instance's claims hold.
    eprintln!(
        "scale: before the restart, {} alerts still claimed by the dead instance",
        leased_by(&mut pg, &victim_owner)
    );
    fleet.start(victim);

    // Everything stored, delivered and counted.
    wait_until(
        "every planted finding stored and alerted, every event counted",
        DEADLINE,
        || {
            let ids = planted_ids(&mut pg);
            let posts = receiver.delivered();
            let unsent = ids.values().filter(|id| !posts.contains_key(*id)).count();
            let dead = leased_by(&mut pg, &victim_owner);
            let outbox = outbox_states(&mut pg);
            let coverage = coverage_events(&mut pg);
            let (missing, _) = coverage_misses(&mut pg, warm);
            let state = format!(
                "{}/{} planted stored, {unsent} of them not yet delivered, {dead} still claimed by the dead instance, outbox {outbox:?}, coverage {coverage}/{total_events}, {} ordinary events not counted (cluster, j): {:?}",
                ids.len(),
                planted.len(),
                missing.len(),
                missing
                    .iter()
                    .take(20)
                    .map(|(c, j, _)| (c, j))
                    .collect::<Vec<_>>()
            );
            let delivered = outbox.get("delivered").copied().unwrap_or(0);
            if ids.len() == planted.len()
                && unsent == 0
                && delivered == planted.len() as i64
                && outbox.len() == 1
                && coverage >= total_events
                && missing.is_empty()
            {
                eprintln!("scale: {state}");
                Ok(())
            } else {
                Err(state)
            }
        },
    );
    let restarted =
        std::fs::read_to_string(fleet.instances[victim].logs.last().unwrap()).unwrap_or_default();
    eprintln!(
        "scale: the restarted instance: {:?}",
        restarted
            .lines()
            .filter(|l| l.contains("taken back"))
            .collect::<Vec<_>>()
    );
    for i in 0..3 {
        let m = fleet.metrics(i);
        let interesting: Vec<&str> = m
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.starts_with("kaudit_findings")
                        || l.starts_with("kaudit_duplicate_findings")
                        || l.starts_with("kaudit_alert_deliveries")
                        || l.starts_with("kaudit_cluster_split")
                        || l.starts_with("kaudit_commit_failures"))
            })
            .collect();
        eprintln!(
            "scale: {} metrics:\n  {}",
            fleet.instances[i].name,
            interesting.join("\n  ")
        );
    }
    for i in 0..3 {
        fleet.stop(i);
    }

    // 1. Each planted attack stored exactly once, and nothing else stored.
    let rows = stored(&mut pg);
    let dups: Vec<_> = rows.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dups.is_empty(), "findings stored more than once: {dups:?}");
    let by_rule_audit: BTreeMap<(String, String), i64> = pg
        .query(
            "SELECT rule_id, audit_id, count(*) FROM findings GROUP BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    assert!(
        by_rule_audit.values().all(|n| *n == 1),
        "a (rule, auditID) stored more than once: {:?}",
        by_rule_audit
            .iter()
            .filter(|(_, n)| **n != 1)
            .collect::<Vec<_>>()
    );
    let got: BTreeSet<Planted> = rows.keys().cloned().collect();
    let missing: Vec<_> = planted.difference(&got).collect();
    let extra: Vec<_> = got.difference(&planted).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stored findings differ from the planted attacks: missing {missing:?}, unexpected {extra:?}"
    );
    assert_eq!(findings_count(&mut pg), planted.len() as i64);

    // ... and the CLI on the shared store agrees.
    let out = kaudit(&["findings", "--db", &db.url, "--format", "jsonl"], b"");
    assert!(out.status.success(), "kaudit findings: {}", stderr(&out));
    let listed: Vec<Planted> = findings(&out)
        .iter()
        .map(|f| {
            (
                f["cluster"].as_str().unwrap().to_owned(),
                f["audit_id"].as_str().unwrap().to_owned(),
                f["rule_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed.len(), planted.len(), "kaudit findings: {listed:?}");
    assert_eq!(
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        planted,
        "kaudit findings --db postgres://..."
    );

    // 2. Every alert POSTed exactly once, and recorded as delivered.
    let ids = planted_ids(&mut pg);
    let posts = receiver.delivered();
    let wrong: Vec<(&Planted, usize)> = ids
        .iter()
        .map(|(p, id)| (p, posts.get(id).copied().unwrap_or(0)))
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "alerts not delivered (POSTed and answered) exactly once (finding, deliveries): {wrong:?}"
    );
    let known: BTreeSet<&String> = ids.values().collect();
    let strays: Vec<_> = posts.keys().filter(|k| !known.contains(k)).collect();
    assert!(
        strays.is_empty(),
        "POSTs for no planted finding: {strays:?}"
    );
    // POSTs the killed instance was waiting in: sent again (they were never
    // answered), and answered once.
    let abandoned = receiver.abandoned();
    eprintln!(
        "scale: {} POSTs abandoned by the killed instance, all delivered later: {abandoned:?}",
        abandoned.values().sum::<usize>()
    );
    assert!(
        abandoned.keys().all(|id| posts.get(id) == Some(&1)),
        "an abandoned POST was not delivered once later: abandoned {abandoned:?}, delivered {posts:?}"
    );
    assert_eq!(
        outbox_states(&mut pg),
        BTreeMap::from([("delivered".to_owned(), planted.len() as i64)]),
        "alert_outbox states"
    );

    // 3. One chain: kaudit verify holds it intact, seq 1..n without gaps.
    let out = kaudit(&["verify", "--db", &db.url], b"");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    eprintln!("scale: kaudit verify: {}", said.trim());
    assert!(out.status.success(), "kaudit verify failed: {said}");
    assert!(said.contains("intact"), "kaudit verify: {said}");
    assert!(
        said.contains(&format!("{} rows", planted.len())),
        "kaudit verify does not name {} rows: {said}",
        planted.len()
    );
    let seqs: Vec<i64> = pg
        .query("SELECT seq FROM findings ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<i64> = (1..=planted.len() as i64).collect();
    assert_eq!(
        seqs, want,
        "findings' seq is not 1..n (a forked or gapped chain)"
    );

    // 4. Coverage: every event counted, once. A re-read after the kill
    // does not count again what the dead instance had stored: the store
    // keeps each partition's position with what it produced, and the next
    // owner skips what the store has.
    let coverage = coverage_events(&mut pg);
    let (missing, twice) = coverage_misses(&mut pg, warm);
    assert!(
        missing.is_empty(),
        "events never counted in the coverage (cluster, j): {missing:?}"
    );
    assert!(
        twice.is_empty(),
        "events counted more than once (cluster, j, times): {twice:?}"
    );
    assert_eq!(
        coverage, total_events,
        "coverage counted {coverage} events, {total_events} were produced"
    );
    eprintln!("scale: passed in {:.1?}", started.elapsed());
}

/// Every command that takes `--db` takes a PostgreSQL URL too: a scan
/// stores into it (and a second scan adds nothing), `findings` lists,
/// `export` writes a bundle `verify` accepts, `verify --db` walks the
/// chain, silences are added and listed; a password in the URL never
/// shows in what they print.
#[test]
fn every_db_command_takes_a_postgres_url() {
    let db = Database::create();
    let url = db.url.clone();
    let fx = path_str(&fixtures());
    let first = kaudit(&["scan", "--db", &url, "--format", "jsonl", &fx], b"");
    assert!(
        first.status.success() || first.status.code() == Some(1),
        "{first:?}"
    );
    let stored = findings(&first).len();
    assert!(stored > 20, "the fixtures produce findings: {stored}");
    let again = kaudit(&["scan", "--db", &url, "--format", "jsonl", &fx], b"");
    assert_eq!(
        findings(&again).len(),
        0,
        "a second scan stores nothing new"
    );

    let listed = kaudit(&["findings", "--db", &url, "--format", "jsonl"], b"");
    assert!(listed.status.success(), "{listed:?}");
    assert_eq!(findings(&listed).len(), stored);

    let verify = kaudit(&["verify", "--db", &url], b"");
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{verify:?}");
    assert!(
        text.contains(&format!("chain intact: {stored} rows")),
        "{text}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let export = kaudit(&["export", "--db", &url, "--out", &path_str(&out)], b"");
    assert!(export.status.success(), "{export:?}");
    let bundle = kaudit(&["verify", &path_str(&out)], b"");
    assert!(bundle.status.success(), "{bundle:?}");

    let add = kaudit(
        &[
            "silence",
            "add",
            "--db",
            &url,
            "--rule",
            "pod-exec",
            "--expires",
            "1h",
            "--comment",
            "maintenance",
            "--by",
            "test",
        ],
        b"",
    );
    assert!(add.status.success(), "{add:?}");
    let list = kaudit(&["silence", "list", "--db", &url], b"");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("maintenance"),
        "{list:?}"
    );

    // A wrong password: refused, and never printed.
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    let bad = format!("postgres://nobody:hunter2-secret@{host}");
    let refused = kaudit(&["findings", "--db", &bad], b"");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(!err.contains("hunter2"), "{err}");
}

/// An audit event of cluster `c-move` (the instances' default cluster):
/// `over` replaces fields of an ordinary service-account request.
fn move_event(n: usize, over: serde_json::Value) -> String {
    let mut e = serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": format!("move-{n}"), "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/shop/configmaps", "verb": "list",
        "user": {"username": "system:serviceaccount:shop:web", "groups": ["system:authenticated"]},
        "sourceIPs": ["10.244.1.23"], "userAgent": "web/1.0",
        "objectRef": {"resource": "configmaps", "namespace": "shop", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": format!("2026-11-03T10:{:02}:{:02}.000000Z", (n / 60) % 60, n % 60),
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
    });
    if let (serde_json::Value::Object(b), serde_json::Value::Object(o)) = (&mut e, over) {
        b.extend(o);
    }
    e.to_string()
}

/// Two instances on one PostgreSQL store, fed by files (no broker): what
/// one learned of a cluster (a token minted) is known to the other when
/// the cluster moves to it (the token used from elsewhere is found there);
/// and a cluster whose events keep reaching both at once is counted in
/// `kaudit_cluster_split_total`.
#[test]
fn token_state_moves_between_instances_and_a_split_cluster_is_counted() {
    let db = Database::create();
    let tmp = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ops = free_port();
        let cfg = dir.join("kaudit.yaml");
        std::fs::write(
            &cfg,
            format!(
                "cluster: c-move\ndetection:\n  clusters:\n    default:\n      pod_cidrs: [10.244.0.0/16]\n      node_cidrs: [10.0.0.0/20]\nstorage: {{postgres: {{url: \"{}\"}}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources:\n  - {{type: file, name: audit, paths: [\"{}/audit*.log\"], poll_ms: 50}}\n",
                db.url,
                path_str(&dir)
            ),
        )
        .unwrap();
        (Daemon::start(&cfg, ops), dir.join("audit.log"))
    };
    let append = |log: &std::path::Path, lines: &[String]| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    };
    let mut pg = db.client();
    let wait = |pg: &mut postgres::Client, sql: &str, what: &str| {
        let t = Instant::now();
        while t.elapsed() < DEADLINE {
            if pg
                .query_one(sql, &[])
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0)
                > 0
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}");
    };

    // Instance a learns node-c's address and a token minted by a person.
    let (a, a_log) = start("a");
    append(
        &a_log,
        &[
            move_event(
                1,
                serde_json::json!({"user": {"username": "system:node:node-c"}, "sourceIPs": ["10.0.1.13"]}),
            ),
            move_event(
                2,
                serde_json::json!({
                    "level": "Request", "verb": "create",
                    "requestURI": "/api/v1/namespaces/shop/serviceaccounts/app/token",
                    "user": {"username": "dave@example.com"}, "sourceIPs": ["10.0.1.11"],
                    "objectRef": {"resource": "serviceaccounts", "namespace": "shop", "name": "app", "subresource": "token", "apiVersion": "v1"},
                    "responseStatus": {"code": 201},
                    "requestObject": {"kind": "TokenRequest", "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}},
                    "annotations": {"authentication.kubernetes.io/issued-credential-id": "JTI=issued-2"}
                }),
            ),
        ],
    );
    wait(
        &mut pg,
        "SELECT count(*) FROM detector_state WHERE name = 'token/c-move'",
        "instance a to store the cluster's token state",
    );

    // The cluster moves to instance b: the token, bound to a pod on node-a,
    // is used from node-c's address.
    let (b, b_log) = start("b");
    append(
        &b_log,
        &[move_event(
            3,
            serde_json::json!({
                "user": {"username": "system:serviceaccount:shop:app",
                         "extra": {"authentication.kubernetes.io/credential-id": ["JTI=issued-2"],
                                   "authentication.kubernetes.io/node-name": ["node-a"],
                                   "authentication.kubernetes.io/pod-name": ["app-1"]}},
                "sourceIPs": ["10.0.1.13"], "userAgent": "app/1.0"
            }),
        )],
    );
    wait(
        &mut pg,
        "SELECT count(*) FROM findings WHERE rule_id = 'token-issued-then-used-elsewhere'",
        "instance b to find the minted token used elsewhere (it needs what a learned)",
    );

    // Now both keep hearing the cluster: a split, counted by both.
    let split = |d: &Daemon| {
        d.get("/metrics").is_some_and(|(_, m)| {
            m.lines().any(|l| {
                l.starts_with("kaudit_cluster_split_total{cluster=\"c-move\"}")
                    && l.rsplit(' ')
                        .next()
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                        >= 1.0
            })
        })
    };
    let t = Instant::now();
    let mut n = 10;
    while !(split(&a) || split(&b)) {
        assert!(
            t.elapsed() < DEADLINE,
            "no kaudit_cluster_split_total after {:?} of one cluster on two instances",
            t.elapsed()
        );
        n += 1;
        append(&a_log, &[move_event(n, serde_json::json!({}))]);
        n += 1;
        append(&b_log, &[move_event(n, serde_json::json!({}))]);
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = a.get("/metrics").map(|(_, m)| m).unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kaudit_instance{name=\"")
                && l.contains("store=\"postgres\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    let log_a = a.stop();
    let log_b = b.stop();
    assert!(
        format!("{log_a}{log_b}").contains("events of one cluster reach two instances at once"),
        "the split is logged"
    );
}

/// A TCP proxy in front of the test's PostgreSQL server that the test can
/// cut (every connection closed, new ones refused) and restore: the
/// database "goes away" without stopping the shared server.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (target, up2, open2) = (target.to_owned(), up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                if let Ok(mut o) = open2.lock() {
                    o.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut o) = self.open.lock() {
            for s in o.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `/readyz` reflects the database: the instance is not ready while
/// PostgreSQL cannot be reached (and says so), is ready again when it
/// can, and what it read meanwhile is stored then (nothing acknowledged
/// before the store took it).
#[test]
fn readyz_follows_the_database_and_nothing_is_lost_while_it_is_gone() {
    let db = Database::create();
    let rest = db.url.split_once("://").map_or(db.url.as_str(), |(_, r)| r);
    let (user, hostpath) = rest.split_once('@').unwrap_or(("", rest));
    let (host, path) = hostpath.split_once('/').unwrap();
    let proxy = Proxy::start(host);
    let via = format!(
        "postgres://{}{}127.0.0.1:{}/{path}",
        user,
        if user.is_empty() { "" } else { "@" },
        proxy.port
    );
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ops = free_port();
    let cfg = tmp.path().join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: c-db\nstorage: {{postgres: {{url: \"{via}\"}}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources:\n  - {{type: file, name: audit, paths: [\"{}/audit*.log\"], poll_ms: 50}}\n",
            path_str(&logs)
        ),
    )
    .unwrap();
    let d = Daemon::start(&cfg, ops);
    let ready = || d.get("/readyz");
    d.wait_for(|| ready().is_some_and(|(s, _)| s == 200), "ready");

    proxy.cut();
    d.wait_for(
        || ready().is_some_and(|(s, body)| s == 503 && body.contains("store")),
        "/readyz 503 naming the store while PostgreSQL is gone",
    );
    // An exec into a pod while the database is gone.
    let log = logs.join("audit.log");
    std::fs::write(&log, format!("{}\n", exec_line("db-gone-1"))).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ready().map(|(s, _)| s), Some(503), "still not ready");

    proxy.restore();
    d.wait_for(|| ready().is_some_and(|(s, _)| s == 200), "ready again");
    let mut pg = db.client();
    let t = Instant::now();
    loop {
        let n: i64 = pg
            .query_one(
                "SELECT count(*) FROM findings WHERE audit_id = 'db-gone-1' AND rule_id = 'pod-exec'",
                &[],
            )
            .unwrap()
            .get(0);
        if n == 1 {
            break;
        }
        assert!(
            t.elapsed() < SHORT,
            "the event read during the outage was not stored; log:\n{}",
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = d.stop();
    assert!(log.contains("reconnected to PostgreSQL"), "{log}");
    assert!(!log.contains("password"), "{log}");
}

/// TLS to PostgreSQL: with `sslmode=require` kaudit talks TLS and checks
/// the server's certificate; a server whose CA it was not given
/// (`PGSSLROOTCERT`) is refused, not trusted. The test server's CA is the
/// run's own (scripts/test.sh: KAUDIT_TEST_POSTGRES_CA).
#[test]
fn tls_to_postgres_checks_the_servers_certificate() {
    let ca = std::env::var("KAUDIT_TEST_POSTGRES_CA").unwrap_or_else(|_| {
        panic!("KAUDIT_TEST_POSTGRES_CA is not set: scripts/test.sh starts the test server with TLS and sets it")
    });
    let db = Database::create();
    let url = format!(
        "{}{}sslmode=require",
        db.url,
        if db.url.contains('?') { "&" } else { "?" }
    );
    let fx = path_str(&fixtures().join("envelopes"));
    let run = |root: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kaudit"));
        c.args(["scan", "--db", &url, &fx])
            .env_remove("PGSSLROOTCERT")
            .stdin(Stdio::null());
        if let Some(r) = root {
            c.env("PGSSLROOTCERT", r);
        }
        c.output().unwrap()
    };
    let trusted = run(Some(&ca));
    assert!(
        trusted.status.success() || trusted.status.code() == Some(1),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM findings", &[])
        .unwrap()
        .get(0);
    assert!(n > 0, "the scan over TLS stored its findings");
    let refused = run(None);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
