//! Findings-store benchmark: insert throughput, database size and the
//! filtered query an auditor runs (one rule, one week, one cluster).
//!
//! ```text
//! cargo run --release --example store_bench -- --findings 1000000 [--batch 1000] [--db FILE]
//! ```
//!
//! Findings are realistic: exec-style findings with a redacted audit event
//! as evidence (about 1 KiB), spread over 30 days, 20 clusters, 80 rules and
//! 500 users, arriving roughly in time order. Without `--db` the database
//! goes to a temporary directory and is deleted afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kaudit::finding::{Finding, Severity, finding_id};
use kaudit::store::{Batch, Filter, Inserted, Store};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const DAY: i64 = 86_400;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;

struct Args {
    findings: usize,
    batch: usize,
    db: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        findings: 1_000_000,
        batch: 1000,
        db: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--findings" => {
                a.findings = value()?.parse().map_err(|e| format!("--findings: {e}"))?
            }
            "--batch" => a.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--db" => a.db = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    Ok(a)
}

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn rfc3339(unix: i64, micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(
        (unix as i128) * 1_000_000_000 + (micros as i128) * 1000,
    )
    .ok()
    .and_then(|t| t.format(&Rfc3339).ok())
    .unwrap_or_default()
}

const CATEGORIES: [&str; 8] = [
    "exec",
    "attach",
    "portforward",
    "impersonation",
    "token",
    "secrets",
    "rbac",
    "workload",
];
const NAMESPACES: [&str; 10] = [
    "default",
    "payments",
    "kube-system",
    "monitoring",
    "ingress",
    "cardholder",
    "batch",
    "web",
    "data",
    "ci",
];

fn make(i: usize, n: usize, rng: &mut Rng) -> Finding {
    let cluster = format!("prod-{:02}", rng.below(20));
    let rule_no = rng.below(80);
    let rule_id = format!("rule-{rule_no:02}");
    let category = CATEGORIES[(rule_no % 8) as usize];
    let severity = Severity::ALL[(rule_no % 5) as usize];
    let user = format!("user{:03}@example.com", rng.below(500));
    let namespace = NAMESPACES[rng.below(10) as usize];
    let pod = format!("api-{:x}", rng.below(1 << 24));
    // Arrival roughly follows event time over 30 days, with some jitter.
    let t = START + (i as i64) * (30 * DAY) / (n.max(1) as i64) + rng.below(300) as i64;
    let time = rfc3339(t, rng.below(1_000_000) as i64);
    let audit_id = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        rng.next() as u32,
        rng.below(1 << 16),
        rng.below(1 << 16),
        rng.below(1 << 16),
        rng.below(1 << 48)
    );
    let ip = format!(
        "10.{}.{}.{}",
        rng.below(256),
        rng.below(256),
        rng.below(256)
    );
    let uri = format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/exec?command=sh&command=-c&command=id&container=app&stdin=true&stdout=true&tty=true"
    );
    let evidence = serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": audit_id, "stage": "ResponseStarted", "requestURI": uri, "verb": "create",
        "user": {"username": user, "uid": format!("{:x}", rng.next()),
                 "groups": ["system:authenticated", "oidc:sre"],
                 "extra": {"authentication.kubernetes.io/credential-id": [format!("JTI={:x}", rng.next())]}},
        "sourceIPs": [ip], "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc",
        "objectRef": {"resource": "pods", "namespace": namespace, "name": pod, "apiVersion": "v1", "subresource": "exec"},
        "responseStatus": {"metadata": {}, "code": 101},
        "requestReceivedTimestamp": time, "stageTimestamp": time,
        "annotations": {"authorization.k8s.io/decision": "allow",
                        "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"sre-exec\" of ClusterRole \"exec\" to Group \"oidc:sre\""}
    });
    Finding {
        id: finding_id(&cluster, &audit_id, &rule_id),
        rule_id: rule_id.clone(),
        rule_title: format!("Rule number {rule_no}"),
        severity,
        category: category.to_owned(),
        mitre: vec!["T1609".to_owned()],
        references: BTreeMap::from([("falco".to_owned(), "Attach/Exec Pod".to_owned())]),
        cluster,
        audit_id,
        stage: Some("ResponseStarted".to_owned()),
        time: Some(time),
        user: user.clone(),
        groups: vec!["system:authenticated".to_owned(), "oidc:sre".to_owned()],
        impersonated_user: None,
        source_ips: vec![ip],
        user_agent: Some("kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc".to_owned()),
        verb: "create".to_owned(),
        resource: "pods".to_owned(),
        subresource: Some("exec".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(pod.clone()),
        request_uri: Some(uri),
        summary: format!("{user} ran sh -c id in {namespace}/{pod}"),
        details: serde_json::json!({"command": ["sh", "-c", "id"], "container": "app"}),
        evidence,
    }
}

fn size(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            std::fs::metadata(PathBuf::from(p)).ok()
        })
        .map(|m| m.len())
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let tmp = tempfile::tempdir()?;
    let path = a.db.clone().unwrap_or_else(|| tmp.path().join("bench.db"));
    let mut store = Store::open(&path)?;
    let mut rng = Rng(0x6b61_7564_6974);

    println!(
        "store_bench: {} findings in batches of {} into {}",
        a.findings,
        a.batch,
        path.display()
    );
    let mut new = 0usize;
    let mut commit_time = std::time::Duration::ZERO;
    let started = Instant::now();
    let mut i = 0;
    while i < a.findings {
        let end = (i + a.batch).min(a.findings);
        let batch = Batch {
            findings: (i..end).map(|k| make(k, a.findings, &mut rng)).collect(),
            ..Batch::default()
        };
        let t = Instant::now();
        let out = store.commit(&batch)?;
        commit_time += t.elapsed();
        new += out
            .iter()
            .filter(|r| matches!(r, Inserted::New { .. }))
            .count();
        i = end;
        if i % 100_000 == 0 {
            println!(
                "  {i:>9} committed, {:.0} findings/s so far (commit only)",
                i as f64 / commit_time.as_secs_f64()
            );
        }
    }
    let wall = started.elapsed();
    println!(
        "insert: {new} new findings; commit {:.1}s = {:.0} findings/s; with generation {:.1}s = {:.0} findings/s",
        commit_time.as_secs_f64(),
        new as f64 / commit_time.as_secs_f64(),
        wall.as_secs_f64(),
        new as f64 / wall.as_secs_f64()
    );
    // The auditor's question: one rule, one week, one cluster.
    let filter = Filter {
        since: Some(START + 7 * DAY),
        until: Some(START + 14 * DAY),
        rule: vec!["rule-07".to_owned()],
        cluster: vec!["prod-03".to_owned()],
        ..Filter::default()
    };
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..5 {
        let t = Instant::now();
        found = store.query(&filter, None)?.len();
        times.push(t.elapsed());
    }
    let first = times[0];
    times.sort();
    println!(
        "query (rule-07, prod-03, days 8-14): {found} findings; first {:.1} ms, median of 5 {:.1} ms",
        first.as_secs_f64() * 1e3,
        times[2].as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let rows = store.chain_rows(filter.since, filter.until)?.len();
    println!(
        "chain rows for that week (completeness proof): {rows} rows in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let report = store.verify_chain()?;
    println!(
        "verify_chain: {report} in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let dup = Batch {
        findings: {
            let mut r = Rng(0x6b61_7564_6974);
            (0..a.batch.min(a.findings))
                .map(|k| make(k, a.findings, &mut r))
                .collect()
        },
        ..Batch::default()
    };
    let out = store.commit(&dup)?;
    let dups = out
        .iter()
        .filter(|r| matches!(r, Inserted::Duplicate))
        .count();
    println!(
        "re-committing the first batch: {dups}/{} duplicates in {:.1} ms",
        out.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(store);
    let bytes = size(&path);
    println!(
        "size: {:.1} MiB on disk after close ({:.0} bytes per finding, indexes included)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / new.max(1) as f64
    );
    Ok(())
}
