//! Alert delivery end to end: the daemon, a real HTTP receiver on
//! loopback, the durable outbox. Refusals and a dead receiver mean later
//! delivery; kill -9 before delivery means delivery after the restart;
//! every alert is delivered (answered 2xx) exactly once, signed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::daemon::{Daemon, exec_line, free_port};
use super::*;

/// A request the receiver saw, and what it answered.
#[derive(Debug, Clone)]
struct Seen {
    headers: BTreeMap<String, String>,
    body: String,
    status: u16,
}

/// A tiny HTTP/1.1 server: answers `503` (Retry-After: 1) to the first
/// `refuse` requests, then `200`.
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    fn start(port: u16, refuse: usize) -> Receiver {
        Receiver::start_with(port, refuse, 503)
    }

    /// Answers `status` (Retry-After: 1) to the first `refuse` requests.
    fn start_with(port: u16, refuse: usize, refusal: u16) -> Receiver {
        Receiver::start_answering(port, refuse, refusal, "")
    }

    /// Like `start_with`, answering 200s with `reply` (JSON) as the body.
    fn start_answering(port: u16, refuse: usize, refusal: u16, reply: &'static str) -> Receiver {
        Receiver::start_full(port, refuse, refusal, reply, 0)
    }

    /// Every answer after `delay_ms` (a slow receiver).
    fn start_full(
        port: u16,
        refuse: usize,
        refusal: u16,
        reply: &'static str,
        delay_ms: u64,
    ) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
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
                let _ = r.read_exact(&mut body);
                let mut all = s2.lock().unwrap();
                let status = if all.len() < refuse { refusal } else { 200 };
                all.push(Seen {
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                    status,
                });
                drop(all);
                std::thread::sleep(Duration::from_millis(delay_ms));
                let mut w = conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{}",
                    if status == 200 { reply.len() } else { 0 },
                    if status == 200 { reply } else { "" }
                );
            }
        });
        Receiver { seen, stop }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn delivered(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in self.seen().iter().filter(|s| s.status == 200) {
            let key = s
                .headers
                .get("idempotency-key")
                .cloned()
                .unwrap_or_else(|| s.body.clone());
            *m.entry(key).or_default() += 1;
        }
        m
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn webhook_alerts_survive_refusals_outages_and_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let hook = free_port();
    let cfg = dir.join("kaudit.yaml");
    let write_cfg = |ops: u16| {
        std::fs::write(
            &cfg,
            format!(
                r#"cluster: prod
storage: {{path: {db}}}
server: {{listen: "127.0.0.1:{ops}"}}
sources: [{{type: file, path: "{log}", poll_ms: 50}}]
alerts:
  sinks:
    - name: siem
      type: webhook
      url: "http://127.0.0.1:{hook}/kaudit"
      hmac_secret: k3y
      headers: {{X-Team: secops}}
      min_severity: medium
"#,
                db = path_str(&db),
                log = path_str(&log),
            ),
        )
        .unwrap();
    };
    let receiver = Receiver::start(hook, 1);
    let ops = free_port();
    write_cfg(ops);
    let lines: Vec<String> = (0..3).map(|i| exec_line(&format!("a{i}"))).collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let d = Daemon::start(&cfg, ops);
    wait("three deliveries", || receiver.delivered().len() == 3);
    // The refused first attempt was retried; low findings were not sent.
    let seen = receiver.seen();
    assert_eq!(seen[0].status, 503);
    for s in &seen {
        let f: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(f["rule_id"], "pod-exec");
        assert_eq!(s.headers["idempotency-key"], f["id"].as_str().unwrap());
        assert_eq!(s.headers["x-team"], "secops");
        let ts = &s.headers["x-kaudit-timestamp"];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k3y").unwrap();
        mac.update(format!("{ts}.{}", s.body).as_bytes());
        assert_eq!(
            s.headers["x-kaudit-signature"],
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
    }

    // The receiver goes away; two more findings are stored, and kaudit is
    // killed before it could deliver them.
    drop(receiver);
    std::thread::sleep(Duration::from_millis(200));
    let more: Vec<String> = (3..5).map(|i| exec_line(&format!("a{i}"))).collect();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "{}", more.join("\n")).unwrap();
    d.wait_for(
        || super::daemon::exec_counts(&db).len() == 5,
        "the two findings stored",
    );
    d.kill();
    // The receiver is back, kaudit restarts: the two arrive, once.
    let receiver = Receiver::start(hook, 0);
    let ops = free_port();
    write_cfg(ops);
    let d = Daemon::start(&cfg, ops);
    d.wait_for(
        || receiver.delivered().len() == 2,
        "the two after the restart",
    );
    std::thread::sleep(Duration::from_millis(500));
    let (_, metrics) = d.get("/metrics").unwrap();
    assert!(
        metrics.contains(r#"kaudit_alert_deliveries_total{sink="siem",outcome="delivered"} 2"#),
        "{metrics}"
    );
    d.stop();
    assert!(receiver.delivered().values().all(|n| *n == 1));
    assert!(receiver.seen().iter().all(|s| {
        ["a3", "a4"].contains(
            &serde_json::from_str::<serde_json::Value>(&s.body).unwrap()["audit_id"]
                .as_str()
                .unwrap(),
        )
    }));
}

/// Slack: a Block Kit message per finding through an incoming webhook;
/// attacker-chosen strings cannot mention or link; 429 means later.
#[test]
fn slack_messages_escape_and_respect_rate_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let hook = free_port();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"cluster: prod
storage: {{path: {db}}}
server: {{listen: "127.0.0.1:{ops}"}}
sources: [{{type: file, path: "{log}", poll_ms: 50}}]
alerts:
  base_url: https://kaudit.example
  sinks:
    - {{name: secops, type: slack, webhook_url: "http://127.0.0.1:{hook}/services/T0/B0/x", min_severity: medium, include: {{rules: [pod-exec]}}}}
"#,
            db = path_str(&db),
            log = path_str(&log),
        ),
    )
    .unwrap();
    let receiver = Receiver::start_with(hook, 1, 429);
    // The attacker names the pod and the command.
    let line = exec_line("s1")
        .replace("\"name\":\"web-1\"", "\"name\":\"web-1<!here>\"")
        .replace("command=sh", "command=%3C%21channel%3E");
    std::fs::write(&log, format!("{line}\n")).unwrap();
    let d = Daemon::start(&cfg, ops);
    wait("the slack message", || receiver.delivered().len() == 1);
    d.stop();
    let seen = receiver.seen();
    assert_eq!(seen[0].status, 429);
    let ok = seen.iter().find(|s| s.status == 200).unwrap();
    let msg: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(msg["blocks"][0]["type"], "header");
    let text = ok.body.clone();
    assert!(
        !text.contains("<!channel>") && !text.contains("<!here>"),
        "{text}"
    );
    assert!(text.contains("web-1&lt;!here&gt;"), "{text}");
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(text.contains("https://kaudit.example/findings/"), "{text}");
    assert!(receiver.delivered().values().all(|n| *n == 1));
}

/// The venv's Python with aiosmtpd (scripts/test.sh installs it).
fn smtp_python() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let py = PathBuf::from(home).join(".cache/kaudit-venv/bin/python");
    assert!(
        py.is_file(),
        "aiosmtpd is not installed: scripts/test.sh installs it into ~/.cache/kaudit-venv"
    );
    py
}

/// Starts aiosmtpd on `port`, delivering to the maildir `maildir`, with
/// STARTTLS when given certificates, and waits until it listens.
fn start_smtp(port: u16, maildir: &Path, tls: Option<&super::daemon::Pki>) -> std::process::Child {
    start_smtp_with(port, maildir, tls, "aiosmtpd.handlers.Mailbox")
}

/// `start_smtp` with another handler class (`tests/it/smtp_refusing.py`'s
/// `smtp_refusing.Refusing` is importable).
fn start_smtp_with(
    port: u16,
    maildir: &Path,
    tls: Option<&super::daemon::Pki>,
    handler: &str,
) -> std::process::Child {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "-m".to_owned(),
        "aiosmtpd".into(),
        "-n".into(),
        "-l".into(),
        listen,
    ];
    if let Some(pki) = tls {
        args.extend([
            "--tlscert".into(),
            path_str(&pki.cert),
            "--tlskey".into(),
            path_str(&pki.key),
        ]);
    }
    args.extend(["-c".into(), handler.into(), path_str(maildir)]);
    let child = Command::new(smtp_python())
        .args(&args)
        .env("PYTHONPATH", root().join("tests/it"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait("aiosmtpd", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

/// Email over STARTTLS to a real SMTP server (aiosmtpd), read back with
/// Python's email parser: subject, both parts, HTML escaping.
#[test]
fn email_alerts_reach_a_real_smtp_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let maildir = dir.join("mail");
    let pki = super::daemon::make_pki(dir, "unused");
    let smtp_port = free_port();
    let mut smtp = start_smtp(smtp_port, &maildir, Some(&pki));
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"cluster: prod
storage: {{path: {db}}}
server: {{listen: "127.0.0.1:{ops}"}}
sources: [{{type: file, path: "{log}", poll_ms: 50}}]
alerts:
  base_url: https://kaudit.example
  sinks:
    - name: soc-mail
      type: email
      smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: starttls, ca_file: {ca}}}
      from: "kaudit <kaudit@example.com>"
      to: [soc@example.com]
      include: {{rules: [pod-exec]}}
      subject_template: "[kaudit][{{SEVERITY}}] {{rule_id}} by {{user}}"
"#,
            db = path_str(&db),
            log = path_str(&log),
            ca = path_str(&pki.ca),
        ),
    )
    .unwrap();
    let line = exec_line("m1").replace(
        "\"username\":\"alice@example.com\"",
        "\"username\":\"<script>alert(1)</script>\\r\\nBcc: evil@example.com\"",
    );
    std::fs::write(&log, format!("{line}\n")).unwrap();
    let d = Daemon::start(&cfg, ops);
    let new = maildir.join("new");
    wait("the mail", || {
        std::fs::read_dir(&new).map(|r| r.count()).unwrap_or(0) == 1
    });
    d.stop();
    let _ = smtp.kill();
    let _ = smtp.wait();
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let script = r#"
import email, json, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
parts = {p.get_content_type(): p.get_content() for p in m.walk() if not p.is_multipart()}
print(json.dumps({"subject": m["subject"], "from": m["from"], "to": m["to"], "bcc": m["bcc"], "type": m.get_content_type(), "parts": parts}))
"#;
    let out = Command::new(smtp_python())
        .args(["-c", script, &path_str(&file)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["type"], "multipart/alternative");
    // The template, with the attacker's line break flattened: no Bcc.
    let subject = m["subject"].as_str().unwrap();
    assert!(
        subject.starts_with("[kaudit][") && subject.contains("] pod-exec by <script>"),
        "{m}"
    );
    assert!(!subject.contains('\n') && !subject.contains('\r'), "{m}");
    assert!(m["bcc"].is_null(), "{m}");
    assert_eq!(m["to"], "soc@example.com");
    let html = m["parts"]["text/html"].as_str().unwrap();
    let text = m["parts"]["text/plain"].as_str().unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(text.contains("Who: <script>alert(1)</script>"), "{text}");
    assert!(html.contains("https://kaudit.example/findings/"), "{html}");
}

/// What leaves kaudit is the redacted evidence: a TokenRequest's issued
/// token and a Secret's data never reach a sink.
#[test]
fn alerts_carry_no_secret_values() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let hook = free_port();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: prod\nstorage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts: {{sinks: [{{name: siem, type: webhook, url: \"http://127.0.0.1:{hook}/\"}}]}}\n",
            path_str(&db),
            path_str(&log)
        ),
    )
    .unwrap();
    let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Y2k6ZGVwbG95ZXIifQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmU";
    let token_request = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"tr1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ci/serviceaccounts/deployer/token","verb":"create","user":{{"username":"alice@example.com"}},"sourceIPs":["198.51.100.7"],"userAgent":"kubectl/v1.30.4","objectRef":{{"resource":"serviceaccounts","namespace":"ci","name":"deployer","subresource":"token","apiVersion":"v1"}},"responseStatus":{{"code":201}},"requestObject":{{"kind":"TokenRequest","spec":{{"expirationSeconds":3600}}}},"responseObject":{{"kind":"TokenRequest","status":{{"token":"{jwt}","expirationTimestamp":"2026-11-03T11:00:00Z"}}}},"requestReceivedTimestamp":"2026-11-03T10:00:00Z","annotations":{{"authentication.kubernetes.io/issued-credential-id":"JTI=abc"}}}}"#
    );
    let secret = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"sc1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/kube-system/secrets","verb":"create","user":{"username":"mallory@example.com"},"sourceIPs":["198.51.100.8"],"objectRef":{"resource":"secrets","namespace":"kube-system","name":"cac-token","apiVersion":"v1"},"responseStatus":{"code":201},"requestObject":{"kind":"Secret","type":"kubernetes.io/service-account-token","metadata":{"name":"cac-token","annotations":{"kubernetes.io/service-account.name":"clusterrole-aggregation-controller"}},"data":{"token":"aHVudGVyMi1zdXBlci1zZWNyZXQ="},"stringData":{"password":"hunter2-super-secret"}},"requestReceivedTimestamp":"2026-11-03T10:00:01Z"}"#;
    std::fs::write(&log, format!("{token_request}\n{secret}\n")).unwrap();
    let receiver = Receiver::start(hook, 0);
    let d = Daemon::start(&cfg, ops);
    wait("the alerts", || {
        let rules: Vec<String> = receiver
            .seen()
            .iter()
            .map(|s| {
                serde_json::from_str::<serde_json::Value>(&s.body).unwrap()["rule_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        rules.contains(&"token-minted-by-user".to_owned())
            && rules.contains(&"token-secret-read".to_owned())
    });
    d.stop();
    for s in receiver.seen() {
        for secret in [jwt, "aHVudGVyMi1zdXBlci1zZWNyZXQ=", "hunter2-super-secret"] {
            assert!(
                !s.body.contains(secret),
                "a secret value left kaudit: {}",
                s.body
            );
        }
    }
}

/// When the store refuses commits, the sinks (which need no disk) are told
/// once, directly; the findings held meanwhile are alerted once it works.
#[test]
fn a_failing_store_is_told_to_the_sinks_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let hook = free_port();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: prod\nstorage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts: {{sinks: [{{name: siem, type: webhook, url: \"http://127.0.0.1:{hook}/\", min_severity: medium}}]}}\n",
            path_str(&db),
            path_str(&log)
        ),
    )
    .unwrap();
    std::fs::write(&log, format!("{}\n", exec_line("f0"))).unwrap();
    let receiver = Receiver::start(hook, 0);
    let d = Daemon::start(&cfg, ops);
    wait("the first alert", || receiver.delivered().len() == 1);
    super::daemon::rusqlite_exec(
        &db,
        "CREATE TRIGGER refuse BEFORE INSERT ON findings BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;",
    );
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for i in 1..4 {
        writeln!(f, "{}", exec_line(&format!("f{i}"))).unwrap();
    }
    let rule_of = |s: &Seen| {
        serde_json::from_str::<serde_json::Value>(&s.body).unwrap()["rule_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    wait("the store-unwritable notice", || {
        receiver
            .seen()
            .iter()
            .any(|s| rule_of(s) == "store-unwritable")
    });
    std::thread::sleep(Duration::from_secs(2));
    super::daemon::rusqlite_exec(&db, "DROP TRIGGER refuse;");
    wait("the held findings' alerts", || {
        receiver.delivered().len() == 5
    });
    d.stop();
    let notices: Vec<Seen> = receiver
        .seen()
        .into_iter()
        .filter(|s| rule_of(s) == "store-unwritable")
        .collect();
    assert_eq!(notices.len(), 1, "told once");
    assert!(
        notices[0].body.contains("disk full (test)"),
        "{}",
        notices[0].body
    );
    assert_eq!(
        receiver
            .seen()
            .iter()
            .filter(|s| rule_of(s) == "pod-exec")
            .count(),
        4
    );
}

/// The dead man's switch: the heartbeat sink hears from kaudit every
/// interval, and stops hearing when kaudit stops.
#[test]
fn heartbeat_reaches_its_sink_every_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hook = free_port();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: prod\nstorage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\"}}]\nalerts:\n  heartbeat: {{sink: ops, interval: 1s}}\n  sinks: [{{name: ops, type: webhook, url: \"http://127.0.0.1:{hook}/\"}}]\n",
            path_str(&dir.join("k.db")),
            path_str(&dir.join("none.log"))
        ),
    )
    .unwrap();
    let receiver = Receiver::start(hook, 0);
    let d = Daemon::start(&cfg, ops);
    wait("three heartbeats", || receiver.seen().len() >= 3);
    d.stop();
    let n = receiver.seen().len();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        receiver.seen().len() <= n + 1,
        "no heartbeat after the stop"
    );
    for s in receiver.seen() {
        let f: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(f["rule_id"], "kaudit-heartbeat");
        assert_eq!(f["cluster"], "prod");
    }
}

/// A sink that hangs does not hold up another; a sink that refuses the
/// payload dead-letters it, visibly in `kaudit findings`.
#[test]
fn a_stuck_sink_blocks_no_other_and_dead_letters_show() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    // Accepts connections and never answers.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    let good = free_port();
    let refusing = free_port();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"storage: {{path: {db}}}
server: {{listen: "127.0.0.1:{ops}"}}
sources: [{{type: file, path: "{log}", poll_ms: 50}}]
alerts:
  sinks:
    - {{name: stuck, type: webhook, url: "http://127.0.0.1:{stuck_port}/", timeout_ms: 20000, include: {{rules: [pod-exec]}}}}
    - {{name: good, type: webhook, url: "http://127.0.0.1:{good}/", include: {{rules: [pod-exec]}}}}
    - {{name: refusing, type: webhook, url: "http://127.0.0.1:{refusing}/", include: {{rules: [pod-exec]}}}}
"#,
            db = path_str(&db),
            log = path_str(&log),
        ),
    )
    .unwrap();
    let lines: Vec<String> = (0..3).map(|i| exec_line(&format!("s{i}"))).collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let good_rx = Receiver::start(good, 0);
    let refusing_rx = Receiver::start_with(refusing, 100, 400);
    let start = Instant::now();
    let d = Daemon::start(&cfg, ops);
    wait("the good sink's alerts", || good_rx.delivered().len() == 3);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "held up by the stuck sink"
    );
    wait("the refusals", || refusing_rx.seen().len() == 3);
    std::thread::sleep(Duration::from_millis(300));
    let out = kaudit(
        &["findings", "--db", &path_str(&db), "--rule", "pod-exec"],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("refusing dead (HTTP 400)"), "{text}");
    assert!(
        stderr(&out).contains("dead-lettered: 3"),
        "{}",
        stderr(&out)
    );
    drop(stuck);
    d.stop();
}

/// `kaudit silence`: silenced findings are stored and marked, not sent;
/// once the silence ends, alerts flow again.
#[test]
fn silences_hold_back_alerts_not_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let dbs = path_str(&db);
    let log = dir.join("audit.log");
    let hook = free_port();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{path: {dbs}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts: {{sinks: [{{name: siem, type: webhook, url: \"http://127.0.0.1:{hook}/\", include: {{rules: [pod-exec]}}}}]}}\n",
            path_str(&log)
        ),
    )
    .unwrap();
    std::fs::write(&log, "").unwrap();
    let receiver = Receiver::start(hook, 0);
    let d = Daemon::start(&cfg, ops);
    let bad = kaudit(
        &[
            "silence",
            "add",
            "--db",
            &dbs,
            "--expires",
            "1h",
            "--comment",
            "x",
        ],
        b"",
    );
    assert!(stderr(&bad).contains("at least one of"), "{}", stderr(&bad));
    let added = kaudit(
        &[
            "silence",
            "add",
            "--db",
            &dbs,
            "--rule",
            "pod-exec",
            "--namespace",
            "shop",
            "--expires",
            "1h",
            "--comment",
            "planned maintenance",
            "--by",
            "oncall",
        ],
        b"",
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let list = kaudit(&["silence", "list", "--db", &dbs], b"");
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        text.contains("rule=pod-exec namespace=shop")
            && text.contains("by oncall: planned maintenance"),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(2500)); // the daemon reads silences every 2 s
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "{}", exec_line("q1")).unwrap();
    d.wait_for(
        || super::daemon::exec_counts(&db).len() == 1,
        "the finding stored",
    );
    std::thread::sleep(Duration::from_millis(800));
    assert!(receiver.seen().is_empty(), "a silenced finding was sent");
    let out = kaudit(&["findings", "--db", &dbs, "--rule", "pod-exec"], b"");
    assert!(String::from_utf8_lossy(&out.stdout).contains("[silenced by 1]"));
    // Ended: the next exec alerts.
    assert!(
        kaudit(&["silence", "expire", "--db", &dbs, "1"], b"")
            .status
            .success()
    );
    assert!(
        !kaudit(&["silence", "expire", "--db", &dbs, "1"], b"")
            .status
            .success()
    );
    std::thread::sleep(Duration::from_millis(2500));
    writeln!(f, "{}", exec_line("q2")).unwrap();
    wait("the alert after the silence", || {
        receiver.delivered().len() == 1
    });
    d.stop();
    let sent: serde_json::Value = serde_json::from_str(&receiver.seen()[0].body).unwrap();
    assert_eq!(sent["audit_id"], "q2");
}

/// A webhook sink with a client certificate, delivering to a receiver that
/// requires one (kaudit's own webhook intake, over mTLS): delivered; the
/// same sink without the certificate is not.
#[test]
fn webhook_sink_presents_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = super::daemon::make_pki(dir, "kaudit-alerts");
    let client_pem = dir.join("client.pem");
    std::fs::write(&client_pem, &pki.client_pem).unwrap();
    // The receiver: a second kaudit whose webhook wants that certificate.
    let (rx_ops, rx_port) = (free_port(), free_port());
    let rx_cfg = dir.join("receiver.yaml");
    std::fs::write(
        &rx_cfg,
        format!(
            "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{rx_ops}\"}}\nsources:\n  - {{type: webhook, name: in, listen: \"127.0.0.1:{rx_port}\", path: /in, cluster: alerts, tls: {{cert: {}, key: {}, client_ca: {}}}, clients: [{{subject: kaudit-alerts, clusters: [alerts]}}]}}\n",
            path_str(&dir.join("rx.db")),
            path_str(&pki.cert),
            path_str(&pki.key),
            path_str(&pki.ca)
        ),
    )
    .unwrap();
    let rx = Daemon::start(&rx_cfg, rx_ops);
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    std::fs::write(&log, format!("{}\n", exec_line("c1"))).unwrap();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts:\n  sinks:\n    - {{name: mtls, type: webhook, url: \"https://127.0.0.1:{rx_port}/in\", client_cert: {cert}, client_key: {cert}, ca_file: {ca}, include: {{rules: [pod-exec]}}}}\n    - {{name: nocert, type: webhook, url: \"https://127.0.0.1:{rx_port}/in\", ca_file: {ca}, include: {{rules: [pod-exec]}}}}\n",
            path_str(&db),
            path_str(&log),
            cert = path_str(&client_pem),
            ca = path_str(&pki.ca)
        ),
    )
    .unwrap();
    let d = Daemon::start(&cfg, ops);
    let state = |sink: &str| {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT state, attempts FROM alert_outbox WHERE sink = ?1",
                [sink],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .ok()
    };
    d.wait_for(
        || state("mtls").is_some_and(|(s, _)| s == "delivered"),
        "delivery over mTLS",
    );
    d.wait_for(
        || state("nocert").is_some_and(|(s, n)| s == "pending" && n >= 1),
        "a refused attempt",
    );
    d.stop();
    // The receiver got it (not an audit event, so quarantined there).
    let (_, metrics) = rx.get("/metrics").unwrap();
    assert!(
        metrics.contains(r#"kaudit_malformed_total{source="in"}"#),
        "{metrics}"
    );
    rx.stop();
}

/// The dedup window: the same rule, cluster, identity and target alert
/// once; the repeats are stored, and counted on that alert.
#[test]
fn repeats_within_the_dedup_window_alert_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let hook = free_port();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts: {{dedup_window: 10m, sinks: [{{name: siem, type: webhook, url: \"http://127.0.0.1:{hook}/\", include: {{rules: [pod-exec]}}}}]}}\n",
            path_str(&db),
            path_str(&log)
        ),
    )
    .unwrap();
    // Four execs into the same pod by the same person, one into another pod.
    let mut lines: Vec<String> = (0..4).map(|i| exec_line(&format!("r{i}"))).collect();
    lines.push(exec_line("other").replace("web-1", "web-2"));
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let receiver = Receiver::start(hook, 0);
    let d = Daemon::start(&cfg, ops);
    d.wait_for(
        || super::daemon::exec_counts(&db).len() == 5,
        "five findings stored",
    );
    wait("two alerts", || receiver.delivered().len() == 2);
    std::thread::sleep(Duration::from_millis(800));
    d.stop();
    assert_eq!(receiver.seen().len(), 2, "repeats are not sent");
    let out = kaudit(
        &["findings", "--db", &path_str(&db), "--rule", "pod-exec"],
        b"",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[+3 repeats]"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The group window: findings of one rule arriving within it go out as one
/// message listing them; a throttled sink summarises its surplus in one
/// message instead of dropping it.
#[test]
fn groups_and_throttles_send_fewer_messages_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let (grouped, throttled) = (free_port(), free_port());
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts:\n  group_window: 2s\n  sinks:\n    - {{name: grouped, type: webhook, url: \"http://127.0.0.1:{grouped}/\", include: {{rules: [pod-exec]}}}}\n    - {{name: throttled, type: webhook, url: \"http://127.0.0.1:{throttled}/\", throttle_per_minute: 2, include: {{rules: [pod-exec]}}}}\n",
            path_str(&db),
            path_str(&log)
        ),
    )
    .unwrap();
    let lines: Vec<String> = (0..4)
        .map(|i| exec_line(&format!("g{i}")).replace("web-1", &format!("web-{i}")))
        .collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let (g, t) = (Receiver::start(grouped, 0), Receiver::start(throttled, 0));
    let d = Daemon::start(&cfg, ops);
    wait("the group", || !g.seen().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let seen = g.seen();
    assert_eq!(seen.len(), 1, "one message for the four");
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["kind"], "group");
    assert_eq!(body["count"], 4);
    assert_eq!(body["findings"].as_array().unwrap().len(), 4);
    assert!(seen[0].headers["idempotency-key"].len() == 32);
    // The throttled sink (2 a minute) got the four in one message too.
    wait("the throttled sink", || !t.seen().is_empty());
    // Three more: one slot left, so one more summary, nothing dropped.
    let more: Vec<String> = (4..7)
        .map(|i| exec_line(&format!("g{i}")).replace("web-1", &format!("web-{i}")))
        .collect();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "{}", more.join("\n")).unwrap();
    wait("the second summary", || t.seen().len() == 2);
    std::thread::sleep(Duration::from_millis(3000));
    d.stop();
    assert_eq!(t.seen().len(), 2, "the throttle held: {:?}", t.seen().len());
    let total: u64 = t
        .seen()
        .iter()
        .map(|s| {
            serde_json::from_str::<serde_json::Value>(&s.body).unwrap()["count"]
                .as_u64()
                .unwrap_or(1)
        })
        .sum();
    assert_eq!(total, 7, "every finding in some message");
    let db_states = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM alert_outbox WHERE state = 'delivered'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(db_states, 4 + 3 + 4 + 3);
}

/// Slack with a bot token: chat.postMessage with the channel and the
/// token, `{"ok": true}` is delivered; payloads in the user name and the
/// user agent stay plain text.
#[test]
fn slack_bot_token_posts_to_chat_post_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("audit.log");
    let api = free_port();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts: {{sinks: [{{name: sec, type: slack, bot_token: xoxb-test-token, channel: \"#secops\", api_url: \"http://127.0.0.1:{api}/api/chat.postMessage\", include: {{rules: [pod-exec]}}}}]}}\n",
            path_str(&dir.join("k.db")),
            path_str(&log)
        ),
    )
    .unwrap();
    let line = exec_line("b1")
        .replace(
            "\"username\":\"alice@example.com\"",
            "\"username\":\"<@U024BE7LH> <https://evil.example|x>\"",
        )
        .replace(
            "\"userAgent\":\"kubectl/v1.30.4\"",
            "\"userAgent\":\"<!everyone>\"",
        );
    std::fs::write(&log, format!("{line}\n")).unwrap();
    let rx = Receiver::start_answering(api, 0, 503, r#"{"ok":true}"#);
    let d = Daemon::start(&cfg, ops);
    wait("the post", || !rx.seen().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    d.stop();
    let seen = rx.seen();
    assert_eq!(seen.len(), 1, "delivered once");
    assert_eq!(seen[0].headers["authorization"], "Bearer xoxb-test-token");
    let msg: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(msg["channel"], "#secops");
    assert!(
        !seen[0].body.contains("<@U024BE7LH>") && !seen[0].body.contains("<https://evil"),
        "{}",
        seen[0].body
    );
    assert!(
        seen[0].body.contains("&lt;@U024BE7LH&gt;"),
        "{}",
        seen[0].body
    );
}

/// Two processes sharing one store (an overlapping restart) deliver each
/// alert once: a delivery claims its rows.
#[test]
fn two_processes_on_one_store_alert_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let hook = free_port();
    let lines: Vec<String> = (0..10)
        .map(|i| exec_line(&format!("p{i}")).replace("web-1", &format!("web-{i}")))
        .collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let config = |ops: u16, name: &str| {
        let cfg = dir.join(name);
        std::fs::write(
            &cfg,
            format!(
                "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts: {{sinks: [{{name: siem, type: webhook, url: \"http://127.0.0.1:{hook}/\", include: {{rules: [pod-exec]}}}}]}}\n",
                path_str(&db),
                path_str(&log)
            ),
        )
        .unwrap();
        cfg
    };
    let rx = Receiver::start_full(hook, 0, 503, "", 300);
    let (a_ops, b_ops) = (free_port(), free_port());
    let a = Daemon::start(&config(a_ops, "a.yaml"), a_ops);
    let b = Daemon::start(&config(b_ops, "b.yaml"), b_ops);
    wait("ten alerts", || rx.delivered().len() == 10);
    std::thread::sleep(Duration::from_secs(2));
    a.stop();
    b.stop();
    let delivered = rx.delivered();
    assert!(delivered.values().all(|n| *n == 1), "{delivered:?}");
    assert_eq!(rx.seen().len(), 10, "no alert sent twice");
}

/// An email digest: findings of one rule within the group window in one
/// mail listing them.
#[test]
fn email_digest_lists_grouped_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = dir.join("audit.log");
    let maildir = dir.join("mail");
    let smtp_port = free_port();
    let mut smtp = start_smtp(smtp_port, &maildir, None);
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: prod\nstorage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts:\n  group_window: 2s\n  sinks:\n    - {{name: mail, type: email, smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none}}, from: kaudit@example.com, to: [soc@example.com], include: {{rules: [pod-exec]}}}}\n",
            path_str(&dir.join("k.db")),
            path_str(&log)
        ),
    )
    .unwrap();
    let lines: Vec<String> = (0..3)
        .map(|i| exec_line(&format!("d{i}")).replace("web-1", &format!("web-<b>{i}</b>")))
        .collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let d = Daemon::start(&cfg, ops);
    let new = maildir.join("new");
    wait("the digest", || {
        std::fs::read_dir(&new).map(|r| r.count()).unwrap_or(0) >= 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    d.stop();
    let _ = smtp.kill();
    let _ = smtp.wait();
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one mail for the three");
    let script = r#"
import email, json, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
parts = {p.get_content_type(): p.get_content() for p in m.walk() if not p.is_multipart()}
print(json.dumps({"subject": m["subject"], "parts": parts}))
"#;
    let out = Command::new(smtp_python())
        .args(["-c", script, &path_str(&files[0].path())])
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        m["subject"].as_str().unwrap().ends_with("(3 findings)"),
        "{m}"
    );
    let html = m["parts"]["text/html"].as_str().unwrap();
    assert_eq!(html.matches("<tr>").count(), 3, "{html}");
    assert!(
        !html.contains("<b>") && html.contains("&lt;b&gt;"),
        "{html}"
    );
}

/// SIGHUP reloads the alert configuration with the rest: a sink added by a
/// reload receives the findings made after it (each once), a source whose
/// settings changed is restarted, and nothing read is lost or repeated.
#[test]
fn sighup_adds_an_alert_sink_and_restarts_a_changed_source() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let hook = free_port();
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    let write_cfg = |poll: u32, alerts: &str| {
        std::fs::write(
            &cfg,
            format!(
                "cluster: prod\nstorage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: {poll}}}]\n{alerts}",
                path_str(&db),
                path_str(&log)
            ),
        )
        .unwrap();
    };
    write_cfg(50, "");
    std::fs::write(&log, format!("{}\n", exec_line("before-reload"))).unwrap();
    let receiver = Receiver::start(hook, 0);
    let d = Daemon::start(&cfg, ops);
    wait("the first finding", || {
        super::daemon::exec_counts(&db).len() == 1
    });
    write_cfg(
        60,
        &format!(
            "alerts: {{sinks: [{{name: siem, type: webhook, url: \"http://127.0.0.1:{hook}/\"}}]}}\n"
        ),
    );
    Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    wait("the reload", || {
        d.get("/metrics")
            .is_some_and(|(_, m)| m.contains("kaudit_config_reloads_total{outcome=\"ok\"} 1"))
    });
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "{}", exec_line("after-reload")).unwrap();
    let bodies = || -> Vec<serde_json::Value> {
        receiver
            .seen()
            .iter()
            .map(|s| serde_json::from_str(&s.body).unwrap())
            .collect()
    };
    wait("the alert", || {
        bodies().iter().any(|b| b["rule_id"] == "pod-exec")
    });
    std::thread::sleep(Duration::from_millis(500));
    let all = bodies();
    // Only what was found after the reload, each once.
    assert!(
        all.iter().all(|b| b["audit_id"] == "after-reload"),
        "{all:?}"
    );
    assert_eq!(
        all.iter().filter(|b| b["rule_id"] == "pod-exec").count(),
        1,
        "{all:?}"
    );
    assert!(receiver.delivered().values().all(|n| *n == 1));
    let log_text = d.stop();
    // The file source's settings changed: it was restarted, reading on
    // from its committed offset.
    assert!(log_text.contains("file-0: restarted"), "{log_text}");
    assert_eq!(super::daemon::exec_counts(&db).len(), 2);
}

/// kill -9 while an alert is being sent (claimed, not recorded): the next
/// process on this host takes the claim back at once instead of waiting
/// for the lease, and resends with the same Idempotency-Key.
#[test]
fn a_crash_while_sending_is_resent_at_once_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let cfg = dir.join("kaudit.yaml");
    let write_cfg = |ops: u16, hook: u16| {
        std::fs::write(
            &cfg,
            format!(
                "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts: {{sinks: [{{name: siem, type: webhook, url: \"http://127.0.0.1:{hook}/\", timeout_ms: 20000, include: {{rules: [pod-exec]}}}}]}}\n",
                path_str(&db),
                path_str(&log)
            ),
        )
        .unwrap();
    };
    // A receiver that takes 20 s to answer: the send is in flight.
    let hook = free_port();
    let slow = Receiver::start_full(hook, 0, 503, "", 20_000);
    let ops = free_port();
    write_cfg(ops, hook);
    std::fs::write(&log, format!("{}\n", exec_line("inflight"))).unwrap();
    let d = Daemon::start(&cfg, ops);
    d.wait_for(|| !slow.seen().is_empty(), "the send in flight");
    d.kill();
    // The receiver is reached at a new address after the restart (the slow
    // one still sits in its answer).
    let hook = free_port();
    let receiver = Receiver::start(hook, 0);
    let ops = free_port();
    write_cfg(ops, hook);
    let d = Daemon::start(&cfg, ops);
    // Within wait_for's 30 s, far less than the 300 s lease.
    d.wait_for(|| receiver.delivered().len() == 1, "the resend");
    let log_text = d.stop();
    assert!(log_text.contains("taken back"), "{log_text}");
    assert_eq!(receiver.seen().len(), 1);
    // The same alert as the send cut short.
    assert_eq!(
        receiver.seen()[0].headers["idempotency-key"],
        slow.seen()[0].headers["idempotency-key"]
    );
}

/// One recipient the SMTP server refuses (550) does not keep the alert from
/// the others: each is tried on its own, and the alert counts delivered.
#[test]
fn a_refused_recipient_does_not_stop_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("k.db");
    let log = dir.join("audit.log");
    let maildir = dir.join("mail");
    let smtp_port = free_port();
    let mut smtp = start_smtp_with(smtp_port, &maildir, None, "smtp_refusing.Refusing");
    let ops = free_port();
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(
        &cfg,
        format!(
            "storage: {{path: {}}}\nserver: {{listen: \"127.0.0.1:{ops}\"}}\nsources: [{{type: file, path: \"{}\", poll_ms: 50}}]\nalerts:\n  sinks:\n    - {{name: mail, type: email, smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none}}, from: kaudit@example.com, to: [nobody@example.com, soc@example.com], include: {{rules: [pod-exec]}}}}\n",
            path_str(&db),
            path_str(&log)
        ),
    )
    .unwrap();
    std::fs::write(&log, format!("{}\n", exec_line("r1"))).unwrap();
    let d = Daemon::start(&cfg, ops);
    let new = maildir.join("new");
    d.wait_for(
        || std::fs::read_dir(&new).map(|r| r.count()).unwrap_or(0) == 1,
        "the mail to the other recipient",
    );
    d.wait_for(
        || {
            d.get("/metrics").is_some_and(|(_, m)| {
                m.contains(r#"kaudit_alert_deliveries_total{sink="mail",outcome="delivered"} 1"#)
            })
        },
        "the delivery recorded",
    );
    let log_text = d.stop();
    let _ = smtp.kill();
    let _ = smtp.wait();
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mail = std::fs::read_to_string(file).unwrap();
    assert!(
        mail.starts_with("X-Rcpt-To: soc@example.com\r\n")
            || mail.starts_with("X-Rcpt-To: soc@example.com\n"),
        "{mail}"
    );
    assert!(log_text.contains("nobody@example.com"), "{log_text}");
    assert_eq!(std::fs::read_dir(&new).unwrap().count(), 1);
}
