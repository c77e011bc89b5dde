//! `kaudit run` end to end: a real daemon process reading real files,
//! killed and restarted, its store and its HTTP endpoints checked.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A free loopback port (bound and released; the daemon binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Daemon {
    pub child: Child,
    pub ops: u16,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `kaudit run --config CONFIG` and waits for /healthz.
    pub fn start(config: &Path, ops: u16) -> Daemon {
        let log = config.with_extension(format!("log.{}", free_port()));
        let child = Command::new(env!("CARGO_BIN_EXE_kaudit"))
            .args(["run", "--config", &path_str(config)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("kaudit run starts");
        let d = Daemon { child, ops, log };
        d.wait_for(
            || d.get("/healthz").is_some_and(|(s, _)| s == 200),
            "healthz",
        );
        d
    }

    /// GET on the operations server: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.ops, path)
    }

    /// Polls `cond` every 50 ms for up to 30 s.
    pub fn wait_for(&self, cond: impl Fn() -> bool, what: &str) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; daemon log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGTERM, then the exit status (must be a clean exit).
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "exit {status:?}; log:\n{log}");
        log
    }

    /// SIGKILL: no chance to drain or commit.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET over a plain socket.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// An exec into a pod: one pod-exec finding each.
pub fn exec_line(id: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/shop/pods/web-1/exec?command=sh&container=app&stdin=true&tty=true","verb":"create","user":{{"username":"alice@example.com","groups":["system:authenticated"]}},"sourceIPs":["10.0.0.10"],"userAgent":"kubectl/v1.30.4","objectRef":{{"resource":"pods","namespace":"shop","name":"web-1","subresource":"exec","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":101}},"requestReceivedTimestamp":"2026-11-03T10:00:00.000000Z","stageTimestamp":"2026-11-03T10:00:00.100000Z"}}"#
    )
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// pod-exec findings in the store, by auditID.
pub fn exec_counts(db: &Path) -> BTreeMap<String, usize> {
    let out = kaudit(
        &[
            "findings",
            "--db",
            &path_str(db),
            "--rule",
            "pod-exec",
            "--format",
            "jsonl",
        ],
        b"",
    );
    let mut m = BTreeMap::new();
    for f in findings(&out) {
        *m.entry(f["audit_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    m
}

fn file_config(dir: &Path, ops: u16, extra: &str) -> PathBuf {
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: prod\nstorage: {{path: {db}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources:\n  - {{type: file, name: audit, paths: [\"{logs}/audit*.log\", \"{logs}/audit*.log.gz\"], poll_ms: 50, copy_grace: 1s}}\n{extra}",
            db = path_str(&dir.join("k.db")),
            logs = path_str(&dir.join("logs")),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    cfg
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| exec_line(&format!("e{i:04}"))).collect()
}

fn wait_count(d: &Daemon, db: &Path, n: usize) {
    d.wait_for(|| exec_counts(db).len() >= n, &format!("{n} findings"));
}

/// Rename and copytruncate rotation while the daemon runs, a kill -9 and a
/// restart in the middle: every finding is stored exactly once.
#[test]
fn file_rotation_and_restart_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("logs/audit.log");
    let cfg = file_config(dir, free_port(), "");
    let ops = free_port();
    let cfg_text = std::fs::read_to_string(&cfg).unwrap();
    let re_port = |p: u16| {
        let text = cfg_text
            .lines()
            .map(|l| {
                if l.starts_with("server:") {
                    format!("server: {{listen: \"127.0.0.1:{p}\"}}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&cfg, text).unwrap();
    };
    re_port(ops);

    append(&log, &ids(0..50));
    let d = Daemon::start(&cfg, ops);
    wait_count(&d, &db, 50);
    // Rename rotation (the API server's own): the old file is renamed, more
    // lines land in it before the writer reopens, then a new file starts.
    let rotated = dir.join("logs/audit-2026-11-03T10-00-00.000.log.old");
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, &ids(50..60));
    append(&log, &ids(60..100));
    wait_count(&d, &db, 100);
    // copytruncate: copied aside (not matching the pattern), emptied in place.
    std::fs::copy(&log, dir.join("logs/audit.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, &ids(100..120));
    wait_count(&d, &db, 120);
    // kill -9 while lines are arriving, then a restart.
    append(&log, &ids(120..160));
    d.kill();
    append(&log, &ids(160..200));
    let ops = free_port();
    re_port(ops);
    let d = Daemon::start(&cfg, ops);
    wait_count(&d, &db, 200);
    // A rotated, compressed file (read whole, once): old lines and new.
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.join("logs/audit-2026-11-02.log.gz")).unwrap(),
        flate2::Compression::default(),
    );
    for l in ids(190..210) {
        writeln!(gz, "{l}").unwrap();
    }
    gz.finish().unwrap();
    wait_count(&d, &db, 210);
    let log_text = d.stop();
    let counts = exec_counts(&db);
    assert_eq!(counts.len(), 210, "{log_text}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    // A third start reads nothing again.
    let ops = free_port();
    re_port(ops);
    let d = Daemon::start(&cfg, ops);
    std::thread::sleep(Duration::from_millis(500));
    let (_, metrics) = d.get("/metrics").unwrap();
    assert!(!metrics.contains("kaudit_findings_total{"), "{metrics}");
    d.stop();
    assert_eq!(exec_counts(&db).len(), 210);
}

/// Events counted into the store's coverage (each line read once is
/// counted once).
fn coverage_events(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT COALESCE(SUM(events), 0) FROM coverage", [], |r| {
        r.get(0)
    })
    .unwrap()
}

fn signal(d: &Daemon, sig: &str) {
    Command::new("kill")
        .args([sig, &d.child.id().to_string()])
        .status()
        .unwrap();
}

fn gzip(lines: &[String]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for l in lines {
        writeln!(gz, "{l}").unwrap();
    }
    gz.finish().unwrap()
}

/// Files are known by their content (a fingerprint of the first line), not
/// by name or inode: rename-then-compress rotation, copytruncate with the
/// copy watched (what was not read yet is read from the copy), a `.gz`
/// still being written, a new file where an old one was (a reused inode):
/// every line is read exactly once, counted once in the coverage.
#[test]
fn file_identity_follows_content_through_every_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let logs = dir.join("logs");
    let log = logs.join("audit.log");
    let ops = free_port();
    let cfg = file_config(dir, ops, "");
    append(&log, &ids(0..30));
    let d = Daemon::start(&cfg, ops);
    wait_count(&d, &db, 30);

    // Rename, more lines written to the renamed file, then compressed (the
    // plain file removed), while a new file starts.
    let renamed = logs.join("audit.log.1");
    std::fs::rename(&log, &renamed).unwrap();
    append(&renamed, &ids(30..40));
    append(&log, &ids(40..60));
    std::fs::write(
        logs.join("audit.log.1.gz"),
        gzip(
            &(0..40)
                .map(|i| exec_line(&format!("e{i:04}")))
                .collect::<Vec<_>>(),
        ),
    )
    .unwrap();
    std::fs::remove_file(&renamed).unwrap();
    wait_count(&d, &db, 60);
    // The handle on the deleted file is let go (its .gz has the content).
    d.wait_for(
        || {
            std::fs::read_dir(format!("/proc/{}/fd", d.child.id()))
                .unwrap()
                .flatten()
                .all(|fd| {
                    !std::fs::read_link(fd.path())
                        .is_ok_and(|p| p.to_string_lossy().ends_with("(deleted)"))
                })
        },
        "the deleted file to be let go",
    );

    // copytruncate while kaudit is not looking: lines 60..70 land in the
    // file, it is copied to a watched name and emptied, 70..80 follow.
    signal(&d, "-STOP");
    append(&log, &ids(60..70));
    std::fs::copy(&log, logs.join("audit-copy.log")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, &ids(70..80));
    signal(&d, "-CONT");
    wait_count(&d, &db, 80);

    // A compressed file still being written: half of it, then the rest.
    let gz = gzip(&ids(80..2080));
    let half = gz.len() / 2;
    let gz_path = logs.join("audit-2026-11-04.log.gz");
    std::fs::write(&gz_path, &gz[..half]).unwrap();
    d.wait_for(|| exec_counts(&db).len() > 80, "part of the .gz");
    std::thread::sleep(Duration::from_millis(300));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&gz_path)
        .unwrap();
    f.write_all(&gz[half..]).unwrap();
    drop(f);
    wait_count(&d, &db, 2080);
    d.stop();

    // While kaudit is down the file is replaced by a new one (on a reused
    // inode, often): it is read from its start.
    std::fs::remove_file(&log).unwrap();
    append(&log, &ids(2080..2200));
    let ops = free_port();
    let cfg = file_config(dir, ops, "");
    let d = Daemon::start(&cfg, ops);
    wait_count(&d, &db, 2200);
    std::thread::sleep(Duration::from_millis(500));
    let log_text = d.stop();
    let counts = exec_counts(&db);
    assert_eq!(counts.len(), 2200, "{log_text}");
    assert!(counts.values().all(|n| *n == 1));
    assert_eq!(
        coverage_events(&db),
        2200,
        "a line was read twice: {log_text}"
    );
}

/// A file emptied in place (copytruncate) before kaudit read its end, with
/// no pattern matching the copy: the loss is a finding, and what follows
/// in the file is read.
#[test]
fn a_file_truncated_before_it_was_read_is_reported_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("logs/audit.log");
    let ops = free_port();
    let cfg = file_config(dir, ops, "");
    // Far more than one read: kaudit is behind when the file is cut.
    let benign: Vec<String> = (0..120_000)
        .map(|i| {
            exec_line(&format!("b{i:06}"))
                .replace("/exec?", "/log?")
                .replace("\"subresource\":\"exec\"", "\"subresource\":\"log\"")
        })
        .collect();
    append(&log, &benign);
    let d = Daemon::start(&cfg, ops);
    d.wait_for(|| coverage_events(&db) > 0, "the first events");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, &ids(0..5));
    wait_count(&d, &db, 5);
    let lost = || {
        findings(&kaudit(
            &[
                "findings",
                "--db",
                &path_str(&db),
                "--rule",
                "audit-events-lost",
                "--format",
                "jsonl",
            ],
            b"",
        ))
    };
    // After the copy grace (1 s here): no copy showed up.
    d.wait_for(|| !lost().is_empty(), "the loss");
    std::thread::sleep(Duration::from_millis(300));
    let lost = lost();
    let log_text = d.stop();
    assert_eq!(lost.len(), 1, "{log_text}");
    assert_eq!(lost[0]["category"], "pipeline");
    assert_eq!(lost[0]["cluster"], "prod");
    assert_eq!(lost[0]["details"]["unit"], "bytes");
    assert!(lost[0]["details"]["count"].as_u64().unwrap() > 0);
    assert!(coverage_events(&db) < 120_005, "the cut part was not read");
}

/// /healthz, /readyz and /metrics; the store refusing commits turns
/// /readyz false and holds the input until it works again.
#[test]
fn operations_endpoints_and_store_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("logs/audit.log");
    let ops = free_port();
    let cfg = file_config(dir, ops, "");
    append(&log, &ids(0..5));
    let d = Daemon::start(&cfg, ops);
    wait_count(&d, &db, 5);
    let (status, ready) = d.get("/readyz").unwrap();
    assert_eq!(status, 200);
    assert!(
        ready.starts_with("ready\n") && ready.contains("source audit: ok"),
        "{ready}"
    );
    let (status, metrics) = d.get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"kaudit_events_total{source="audit",cluster="prod"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kaudit_findings_total{rule="pod-exec",severity="medium"} 5"#)
            || metrics.contains(r#"kaudit_findings_total{rule="pod-exec",severity="high"} 5"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("kaudit_event_latency_seconds_bucket"),
        "{metrics}"
    );

    // The store refuses every finding from now on.
    rusqlite_exec(
        &db,
        "CREATE TRIGGER refuse BEFORE INSERT ON findings BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;",
    );
    // Enough at once that commits happen inside the batch (every 1000
    // findings): the part after a refused one must not be skipped.
    append(&log, &ids(5..1505));
    d.wait_for(
        || {
            d.get("/readyz")
                .is_some_and(|(s, b)| s == 503 && b.contains("store"))
        },
        "readyz to turn false",
    );
    assert_eq!(exec_counts(&db).len(), 5, "nothing stored while refused");
    std::thread::sleep(Duration::from_millis(1500));
    rusqlite_exec(&db, "DROP TRIGGER refuse;");
    wait_count(&d, &db, 1505);
    d.wait_for(
        || d.get("/readyz").is_some_and(|(s, _)| s == 200),
        "readyz again",
    );
    let log_text = d.stop();
    assert!(
        log_text.contains("the store refused a commit"),
        "{log_text}"
    );
    assert_eq!(exec_counts(&db).len(), 1505);
}

/// Runs SQL on the daemon's database from outside (another connection).
pub fn rusqlite_exec(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// A cluster that stops sending raises audit-stream-silent once, and
/// audit-stream-resumed when it sends again.
#[test]
fn silent_stream_is_a_finding_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("logs/audit.log");
    let ops = free_port();
    let cfg = file_config(dir, ops, "stream: {silence_after: 2s}\n");
    append(&log, &ids(0..3));
    let d = Daemon::start(&cfg, ops);
    wait_count(&d, &db, 3);
    let rule = |r: &str| {
        findings(&kaudit(
            &[
                "findings",
                "--db",
                &path_str(&db),
                "--rule",
                r,
                "--format",
                "jsonl",
            ],
            b"",
        ))
    };
    d.wait_for(
        || rule("audit-stream-silent").len() == 1,
        "audit-stream-silent",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rule("audit-stream-silent").len(), 1, "once per silence");
    let silent = &rule("audit-stream-silent")[0];
    assert_eq!(silent["cluster"], "prod");
    assert_eq!(silent["category"], "pipeline");
    append(&log, &ids(3..4));
    d.wait_for(
        || rule("audit-stream-resumed").len() == 1,
        "audit-stream-resumed",
    );
    d.stop();
}

/// stdin as a source: a pipeline's input is read to its end, stored, and
/// the daemon stops by itself.
#[test]
fn stdin_source_reads_to_the_end_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{}\"}}\nsources: [{{type: stdin, cluster: lab}}]\n",
            path_str(&db),
            free_port()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["run", "--config", &path_str(&cfg)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    for l in ids(0..30) {
        writeln!(input, "{l}").unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = exec_counts(&db);
    assert_eq!(counts.len(), 30);
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
    assert_eq!(one[0]["cluster"], "lab");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate for
/// `client_cn`, written as PEM files into `dir`.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

pub fn make_pki(dir: &Path, client_cn: &str) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kaudit test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut sp =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    sp.distinguished_name.push(DnType::CommonName, "kaudit");
    let server = sp.signed_by(&server_key, &ca, &ca_key).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name.push(DnType::CommonName, client_cn);
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = cp.signed_by(&client_key, &ca, &ca_key).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        client_pem: format!("{}{}", client.pem(), client_key.serialize_pem()).into_bytes(),
        ca_pem: ca.pem().into_bytes(),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, server.pem()).unwrap();
    std::fs::write(&pki.key, server_key.serialize_pem()).unwrap();
    pki
}

fn event_list(ids: &[String]) -> String {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        ids.join(",")
    )
}

/// The API server's webhook backend, as it runs: HTTPS with a client
/// certificate, EventList batches, clusters bound to identities, 413 over
/// the limit, and a batch answered 200 is stored even when the daemon is
/// killed right after.
#[test]
fn webhook_over_mtls_binds_clients_to_clusters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let pki = make_pki(dir, "kube-apiserver-prod");
    let (ops, hook, plain) = (free_port(), free_port(), free_port());
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"storage: {{path: {db}}}
server: {{listen: "127.0.0.1:{ops}"}}
sources:
  - type: webhook
    name: apiserver
    listen: "127.0.0.1:{hook}"
    tls: {{cert: {cert}, key: {key}, client_ca: {ca}}}
    clients: [{{subject: kube-apiserver-prod, clusters: [prod]}}]
    max_body_bytes: 65536
  - type: webhook
    name: firehose
    listen: "127.0.0.1:{plain}"
    path: /firehose/{{cluster}}
    clients: [{{token_file: {token}, clusters: ["*"]}}]
    firehose_access_key: fh-key
"#,
            db = path_str(&db),
            cert = path_str(&pki.cert),
            key = path_str(&pki.key),
            ca = path_str(&pki.ca),
            token = path_str(&token_file),
        ),
    )
    .unwrap();
    let d = Daemon::start(&cfg, ops);
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap())
        .identity(reqwest::Identity::from_pem(&pki.client_pem).unwrap())
        .build()
        .unwrap();
    let url = |c: &str| format!("https://127.0.0.1:{hook}/audit/{c}");
    let r = client
        .post(url("prod"))
        .body(event_list(&ids(0..3)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Answered 200 only once committed: the findings are there at once.
    assert_eq!(exec_counts(&db).len(), 3);
    let stored = findings(&kaudit(
        &["findings", "--db", &path_str(&db), "--format", "jsonl"],
        b"",
    ));
    assert!(stored.iter().all(|f| f["cluster"] == "prod"));
    // This client may not post for another cluster.
    let r = client
        .post(url("staging"))
        .body(event_list(&ids(3..4)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Over the body limit.
    let big: Vec<String> = (0..200).map(|i| exec_line(&format!("big{i}"))).collect();
    // The daemon answers 413 as soon as it sees the length and closes; a
    // client still writing the body may see the closed socket first (Go's
    // client, the API server's, reads the early answer). Either way nothing
    // of it is stored, and the rejection is counted (checked below).
    match client.post(url("prod")).body(event_list(&big)).send() {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    assert!(exec_counts(&db).keys().all(|id| !id.starts_with("big")));
    // No client certificate: the handshake fails.
    let anonymous = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap())
        .build()
        .unwrap();
    assert!(anonymous.post(url("prod")).body("{}").send().is_err());

    // Firehose HTTP endpoint: the access key, a bearer token, base64 records.
    use base64::Engine as _;
    let records: Vec<serde_json::Value> = ids(10..12)
        .iter()
        .map(|l| serde_json::json!({"data": base64::engine::general_purpose::STANDARD.encode(l)}))
        .collect();
    let body = serde_json::json!({"requestId": "req-1", "timestamp": 1793000000000u64, "records": records});
    let plain_client = reqwest::blocking::Client::new();
    let post = |key: &str, token: &str| {
        plain_client
            .post(format!("http://127.0.0.1:{plain}/firehose/eks-prod"))
            .header("X-Amz-Firehose-Request-Id", "req-1")
            .header("X-Amz-Firehose-Access-Key", key)
            .header("Authorization", format!("Bearer {token}"))
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let r = post("wrong", "s3cret-token");
    assert_eq!(r.status(), 401);
    let r = post("fh-key", "wrong");
    assert_eq!(r.status(), 401);
    // Every answer to Firehose is its JSON, refusals included.
    let r = plain_client
        .post(format!("http://127.0.0.1:{plain}/elsewhere"))
        .header("X-Amz-Firehose-Request-Id", "req-0")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let reply: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(reply["requestId"], "req-0");
    assert!(reply["timestamp"].as_u64().is_some());
    assert_eq!(reply["errorMessage"], "no such path");
    let r = post("fh-key", "s3cret-token");
    assert_eq!(r.status(), 200);
    let reply: serde_json::Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(reply["requestId"], "req-1");
    assert!(reply["timestamp"].as_u64().is_some());
    assert_eq!(exec_counts(&db).len(), 5);

    // A GKE Pub/Sub push request and a gzip'd EventList, through the same
    // listener: each is recognised by its shape.
    let push = std::fs::read(fixtures().join("envelopes/gke/pubsub_push.json")).unwrap();
    let r = plain_client
        .post(format!("http://127.0.0.1:{plain}/firehose/gke-prod"))
        .header("Authorization", "Bearer s3cret-token")
        .header("X-Amz-Firehose-Access-Key", "fh-key")
        .body(push)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let gke = findings(&kaudit(
        &[
            "findings",
            "--db",
            &path_str(&db),
            "--cluster",
            "gke-prod",
            "--format",
            "jsonl",
        ],
        b"",
    ));
    assert!(
        gke.iter().any(|f| f["rule_id"] == "pod-exec"),
        "the fixture's exec: {gke:?}"
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(event_list(&ids(30..32)).as_bytes()).unwrap();
    let r = client
        .post(url("prod"))
        .body(gz.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // 5 before, the GKE exec, and the two of the gzip'd list.
    assert_eq!(exec_counts(&db).len(), 8);

    // kill -9 right after a 200: the batch is in the store after restart.
    let r = client
        .post(url("prod"))
        .body(event_list(&ids(20..25)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, metrics) = d.get("/metrics").unwrap();
    for reason in ["cluster", "too-large", "firehose-key", "unauthenticated"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason}: {metrics}"
        );
    }
    d.kill();
    let d = Daemon::start(&cfg, ops);
    assert_eq!(exec_counts(&db).len(), 13);
    d.stop();
}

/// SIGHUP reloads the rules between two batches: events after it meet the
/// new rule, none is lost, and a broken rule file leaves the old rules.
#[test]
fn sighup_reloads_rules_without_losing_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("logs/audit.log");
    let rules = dir.join("site.yaml");
    std::fs::write(&rules, "lists: {}\n").unwrap();
    let ops = free_port();
    let cfg = file_config(
        dir,
        ops,
        &format!("detection: {{rules: [{}]}}\n", path_str(&rules)),
    );
    let cm = |id: &str| {
        format!(
            r#"{{"auditID":"{id}","stage":"ResponseComplete","verb":"get","requestURI":"/api/v1/namespaces/shop/configmaps/app","user":{{"username":"bob"}},"objectRef":{{"resource":"configmaps","namespace":"shop","name":"app"}},"responseStatus":{{"code":200}},"requestReceivedTimestamp":"2026-11-03T10:00:00Z"}}"#
        )
    };
    append(&log, &[cm("before")]);
    append(&log, &ids(0..1));
    let d = Daemon::start(&cfg, ops);
    wait_count(&d, &db, 1);
    let custom = || {
        findings(&kaudit(
            &[
                "findings",
                "--db",
                &path_str(&db),
                "--rule",
                "custom-cm-read",
                "--format",
                "jsonl",
            ],
            b"",
        ))
    };
    assert!(custom().is_empty());
    // A broken file: the running rules stay.
    std::fs::write(&rules, "rules: [{id: broken}]\n").unwrap();
    let pid = d.child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(
        &rules,
        "rules:\n  - id: custom-cm-read\n    title: ConfigMap read\n    severity: low\n    category: custom\n    when: {field: objectRef.resource, equals: configmaps}\n    summary: \"{user.username} read configmap {objectRef.name}\"\n",
    )
    .unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    d.wait_for(
        || {
            std::fs::read_to_string(&d.log)
                .unwrap_or_default()
                .contains("configuration reloaded")
        },
        "the reload",
    );
    append(&log, &[cm("after")]);
    append(&log, &ids(1..2));
    wait_count(&d, &db, 2);
    d.wait_for(|| custom().len() == 1, "the new rule's finding");
    assert_eq!(custom()[0]["audit_id"], "after");
    let log_text = d.stop();
    assert!(log_text.contains("the running one stays"), "{log_text}");
}

/// SIGHUP with a new source list: an added webhook listens, a file source
/// whose patterns changed is restarted from its committed offsets (nothing
/// read twice), a removed source stops listening and leaves /readyz.
#[test]
fn sighup_starts_restarts_and_stops_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ops = free_port();
    let hook = free_port();
    let cfg = dir.join("kaudit.yaml");
    let write = |patterns: &str, webhook: bool| {
        let mut text = format!(
            "cluster: prod\nstorage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources:\n  - {{type: file, name: audit, paths: [{patterns}], poll_ms: 50}}\n",
            path_str(&db)
        );
        if webhook {
            text += &format!(
                "  - {{type: webhook, name: hook, listen: \"127.0.0.1:{hook}\", path: /audit, allow_anonymous: true}}\n"
            );
        }
        std::fs::write(&cfg, text).unwrap();
    };
    let a = format!("\"{}/a*.log\"", path_str(&logs));
    let ab = format!(
        "\"{}/a*.log\", \"{}/b*.log\"",
        path_str(&logs),
        path_str(&logs)
    );
    write(&a, false);
    append(&logs.join("a.log"), &ids(0..10));
    append(&logs.join("b.log"), &ids(10..20));
    let d = Daemon::start(&cfg, ops);
    wait_count(&d, &db, 10);
    let reloads = |n: u32| {
        move |d: &Daemon| {
            d.get("/metrics").is_some_and(|(_, m)| {
                m.contains(&format!(
                    "kaudit_config_reloads_total{{outcome=\"ok\"}} {n}"
                ))
            })
        }
    };

    write(&ab, true);
    signal(&d, "-HUP");
    d.wait_for(|| reloads(1)(&d), "the first reload");
    wait_count(&d, &db, 20);
    let r = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{hook}/audit"))
        .body(event_list(&ids(20..25)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_count(&d, &db, 25);
    let (_, ready) = d.get("/readyz").unwrap();
    assert!(ready.contains("source hook: ok"), "{ready}");

    write(&ab, false);
    signal(&d, "-HUP");
    d.wait_for(|| reloads(2)(&d), "the second reload");
    d.wait_for(
        || std::net::TcpStream::connect(("127.0.0.1", hook)).is_err(),
        "the webhook to stop listening",
    );
    let (_, ready) = d.get("/readyz").unwrap();
    assert!(!ready.contains("hook"), "{ready}");
    append(&logs.join("a.log"), &ids(25..30));
    wait_count(&d, &db, 30);
    let log = d.stop();
    assert!(log.contains("audit: restarted"), "{log}");
    assert!(
        log.contains("hook: started") && log.contains("hook: stopped"),
        "{log}"
    );
    let counts = exec_counts(&db);
    assert_eq!(counts.len(), 30);
    assert!(counts.values().all(|n| *n == 1));
    assert_eq!(coverage_events(&db), 30, "a line was read twice: {log}");
}

/// A webhook batch posted again (the API server retrying a POST whose
/// answer it did not get) is neither counted twice nor alerted twice; a
/// different request under a reused auditID still is looked at.
#[test]
fn a_redelivered_batch_is_counted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let (ops, hook) = (free_port(), free_port());
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: prod\nstorage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources:\n  - {{type: webhook, name: hook, listen: \"127.0.0.1:{hook}\", path: /audit, allow_anonymous: true}}\n",
            path_str(&db)
        ),
    )
    .unwrap();
    let d = Daemon::start(&cfg, ops);
    let http = reqwest::blocking::Client::new();
    let body = event_list(&ids(0..10));
    for _ in 0..2 {
        let r = http
            .post(format!("http://127.0.0.1:{hook}/audit"))
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(coverage_events(&db), 10, "the retry was counted");
    // The same auditID on another request (another user) is not a retry.
    let other = exec_line("e0003").replace("alice@example.com", "mallory@example.com");
    let r = http
        .post(format!("http://127.0.0.1:{hook}/audit"))
        .body(format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{other}]}}"#
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(coverage_events(&db), 11);
    let reused = findings(&kaudit(
        &[
            "findings",
            "--db",
            &path_str(&db),
            "--rule",
            "audit-id-reused",
            "--format",
            "jsonl",
        ],
        b"",
    ));
    assert_eq!(reused.len(), 1);
    d.stop();
    assert_eq!(exec_counts(&db).len(), 11, "ten, and the reused id's own");
}
