//! Writes a synthetic audit stream to stdout for measuring the token
//! detectors' memory: many nodes, service accounts and distinct token ids
//! (each used about ten times), kubelet TokenRequests, a few refusals and
//! outside addresses. Every event is realistic in shape, none is an attack
//! pattern on purpose.
//!
//! ```text
//! cargo run --release --example token_stream -- 10000000 \
//!   | /usr/bin/time -v target/release/kaudit scan --format jsonl - > /dev/null
//! ```

use std::io::{self, BufWriter, Write};

fn main() -> io::Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let out = io::stdout();
    let mut w = BufWriter::with_capacity(1 << 20, out.lock());
    let base = 1_793_000_000u64; // 2026-10-26
    for i in 0..n {
        let t = base + i / 1000;
        let ms = i % 1000;
        let ts = format_time(t, ms);
        let node = i % 5000;
        let node_ip = format!(
            "10.{}.{}.{}",
            1 + node / 65536,
            node / 256 % 256,
            node % 256
        );
        if i % 20 == 0 {
            writeln!(
                w,
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"k-{i}","stage":"ResponseComplete","requestURI":"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-{node}","verb":"update","user":{{"username":"system:node:node-{node}","groups":["system:nodes","system:authenticated"]}},"sourceIPs":["{node_ip}"],"userAgent":"kubelet/v1.30.4 (linux/amd64) kubernetes/0b4d27c","objectRef":{{"resource":"leases","namespace":"kube-node-lease","name":"node-{node}","apiGroup":"coordination.k8s.io","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{ts}","stageTimestamp":"{ts}"}}"#
            )?;
            continue;
        }
        let jti = i / 10;
        let sa = i % 200_000;
        let pod_ip = format!("10.244.{}.{}", jti / 256 % 256, jti % 256);
        if i % 50 == 1 {
            writeln!(
                w,
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"m-{i}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns{sa}/serviceaccounts/sa{sa}/token","verb":"create","user":{{"username":"system:node:node-{node}","groups":["system:nodes","system:authenticated"]}},"sourceIPs":["{node_ip}"],"userAgent":"kubelet/v1.30.4 (linux/amd64) kubernetes/0b4d27c","objectRef":{{"resource":"serviceaccounts","namespace":"ns{sa}","name":"sa{sa}","subresource":"token","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":201}},"requestReceivedTimestamp":"{ts}","stageTimestamp":"{ts}","annotations":{{"authentication.kubernetes.io/issued-credential-id":"JTI=t-{jti}"}}}}"#
            )?;
            continue;
        }
        let (code, ip) = match i % 5000 {
            7 => (200, format!("203.0.{}.{}", i / 5000 % 256, i % 251)),
            k if k % 1000 == 3 => (403, pod_ip.clone()),
            _ => (200, pod_ip.clone()),
        };
        writeln!(
            w,
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"s-{i}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns{sa}/configmaps/app","verb":"get","user":{{"username":"system:serviceaccount:ns{sa}:sa{sa}","groups":["system:serviceaccounts","system:authenticated"],"extra":{{"authentication.kubernetes.io/credential-id":["JTI=t-{jti}"],"authentication.kubernetes.io/node-name":["node-{node}"],"authentication.kubernetes.io/pod-name":["pod-{jti}"]}}}},"sourceIPs":["{ip}"],"userAgent":"app/v0.0.0 (linux/amd64) kubernetes/$Format","objectRef":{{"resource":"configmaps","namespace":"ns{sa}","name":"app","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"{ts}","stageTimestamp":"{ts}"}}"#
        )?;
    }
    w.flush()
}

/// Unix seconds and milliseconds as RFC 3339 (UTC), without a time crate.
fn format_time(secs: u64, ms: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
