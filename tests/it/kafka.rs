//! The Kafka source against a real Kafka-protocol broker: tansu (installed
//! by scripts/test.sh with `cargo install tansu`), producing with
//! librdkafka itself. kill -9 mid-stream, restarts and a second process
//! joining the group: every finding is stored once, and none is reported
//! (logged as new) twice.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::daemon::{Daemon, exec_counts, exec_line, free_port};
use super::*;

/// The tansu binary: on PATH or in ~/.cargo/bin.
fn tansu() -> PathBuf {
    if let Ok(paths) = std::env::var("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("tansu");
            if p.is_file() {
                return p;
            }
        }
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = PathBuf::from(home).join(".cargo/bin/tansu");
    assert!(
        p.is_file(),
        "tansu is not installed: scripts/test.sh installs it (cargo install tansu --version 0.6.0 --features dynostore)"
    );
    p
}

pub(crate) struct Broker {
    child: Child,
    url: String,
    port: u16,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_logging(None)
    }

    /// A broker whose log (group coordination at info) goes to `log`.
    pub(crate) fn start_logging(log: Option<&Path>) -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn,tansu_broker::coordinator=info")
            .stdout(log.map_or_else(Stdio::null, |l| std::fs::File::create(l).unwrap().into()))
            .stderr(log.map_or_else(Stdio::null, |l| {
                std::fs::File::create(l.with_extension("stderr"))
                    .unwrap()
                    .into()
            }))
            .spawn()
            .expect("tansu starts");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, url, port }
    }

    pub(crate) fn create_topic(&self, name: &str, partitions: usize) {
        let out = Command::new(tansu())
            .args([
                "topic",
                "create",
                "--broker",
                &self.url,
                "--partitions",
                &partitions.to_string(),
                name,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces exec events `range` to `topic`, keyed and with a cluster header.
fn produce(bootstrap: &str, topic: &str, range: std::ops::Range<usize>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("message.timeout.ms", "20000")
            .create()
            .unwrap();
        for i in range {
            let id = format!("k{i:04}");
            let line = exec_line(&id);
            let headers = OwnedHeaders::new().insert(Header {
                key: "cluster",
                value: Some("EKS-Prod"),
            });
            producer
                .send(
                    FutureRecord::to(topic)
                        .key(&id)
                        .payload(&line)
                        .headers(headers),
                    Duration::from_secs(20),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    });
}

fn config(dir: &Path, broker: &Broker, ops: u16) -> PathBuf {
    let cfg = dir.join(format!("kaudit-{ops}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            r#"storage: {{path: {db}}}
server: {{listen: "127.0.0.1:{ops}"}}
sources:
  - type: kafka
    name: audit-topic
    brokers: "{bootstrap}"
    topic: k8s-audit
    group_id: kaudit
    cluster_from: header:cluster
    session_timeout_ms: 6000
    properties: {{heartbeat.interval.ms: "500", topic.metadata.refresh.interval.ms: "1000"}}
"#,
            db = path_str(&dir.join("k.db")),
            bootstrap = broker.bootstrap(),
        ),
    )
    .unwrap();
    cfg
}

fn wait_count(d: &Daemon, db: &Path, n: usize) {
    d.wait_for(|| exec_counts(db).len() >= n, &format!("{n} findings"));
}

/// New-finding log lines by finding id, over every daemon log in `dir`.
fn reported(dir: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.contains(".log.") {
            continue;
        }
        for line in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            if line.contains(" finding ") || line.ends_with(" finding") {
                if let Some(id) = line.split(" id=").nth(1).and_then(|r| r.split(' ').next()) {
                    *m.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
    }
    m
}

#[test]
fn kafka_consumer_group_loses_and_repeats_nothing() {
    let broker = Broker::start();
    broker.create_topic("k8s-audit", 3);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");

    produce(&broker.bootstrap(), "k8s-audit", 0..60);
    let ops = free_port();
    let a = Daemon::start(&config(dir, &broker, ops), ops);
    wait_count(&a, &db, 60);
    let one = findings(&kaudit(
        &[
            "findings",
            "--db",
            &path_str(&db),
            "--format",
            "jsonl",
            "--limit",
            "1",
        ],
        b"",
    ));
    assert_eq!(
        one[0]["cluster"], "eks-prod",
        "cluster from the header, lower-cased"
    );
    // kill -9 while messages arrive.
    produce(&broker.bootstrap(), "k8s-audit", 60..120);
    a.kill();
    produce(&broker.bootstrap(), "k8s-audit", 120..150);
    let ops = free_port();
    let b = Daemon::start(&config(dir, &broker, ops), ops);
    wait_count(&b, &db, 150);
    // A second process joins the group (a restart overlapping the old one).
    let ops = free_port();
    let c = Daemon::start(&config(dir, &broker, ops), ops);
    produce(&broker.bootstrap(), "k8s-audit", 150..210);
    wait_count(&c, &db, 210);
    b.stop();
    produce(&broker.bootstrap(), "k8s-audit", 210..240);
    wait_count(&c, &db, 240);
    let (_, metrics) = c.get("/metrics").unwrap();
    assert!(metrics.contains("kaudit_consumer_lag{"), "{metrics}");
    c.stop();

    let counts = exec_counts(&db);
    assert_eq!(counts.len(), 240);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let logged = reported(dir);
    assert!(
        logged.values().all(|n| *n == 1),
        "a finding was reported as new twice: {:?}",
        logged.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(logged.len() >= 150, "{}", logged.len());
}
