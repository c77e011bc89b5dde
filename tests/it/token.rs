//! The token-misuse detectors end to end: `kaudit scan --config` over the
//! scenarios in fixtures/token (kubelets teaching node addresses, ordinary
//! controller and workload traffic, then an attack or its look-alike), with
//! every finding each must produce listed in fixtures/token/expected.tsv.

use std::collections::BTreeMap;

use super::*;

fn dir() -> PathBuf {
    fixtures().join("token")
}

fn config() -> String {
    path_str(&dir().join("config.yaml"))
}

/// `rule:severity` of each finding, in order.
fn scan_with(config: &str, files: &[&Path], extra: &[&str]) -> Vec<String> {
    let mut args = vec!["scan", "--format", "jsonl", "--config", config];
    args.extend_from_slice(extra);
    let files: Vec<String> = files.iter().map(|f| path_str(f)).collect();
    args.extend(files.iter().map(String::as_str));
    let out = kaudit(&args, b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    findings(&out)
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["rule_id"].as_str().unwrap(),
                f["severity"].as_str().unwrap()
            )
        })
        .collect()
}

fn detail(out: &Output, rule: &str, key: &str) -> serde_json::Value {
    findings(out)
        .into_iter()
        .find(|f| f["rule_id"] == rule)
        .unwrap_or_else(|| panic!("no {rule} in {}", String::from_utf8_lossy(&out.stdout)))["details"]
        [key]
        .clone()
}

#[test]
fn every_scenario_gives_exactly_its_expected_findings() {
    let table = std::fs::read_to_string(dir().join("expected.tsv")).unwrap();
    let mut listed = Vec::new();
    let mut failures = Vec::new();
    for row in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (file, expect) = row.split_once('\t').expect("two columns");
        listed.push(file.to_owned());
        let expect: Vec<String> = match expect {
            "-" => Vec::new(),
            e => e.split(',').map(str::to_owned).collect(),
        };
        let got = scan_with(&config(), &[&dir().join(file)], &[]);
        if got != expect {
            failures.push(format!(
                "{file}:\n  expected {expect:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every scenario is in the table, and every negative has its positive.
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    on_disk.sort();
    listed.sort();
    assert_eq!(on_disk, listed);
    for n in &listed {
        if let Some(base) = n.strip_suffix(".negative.jsonl") {
            assert!(
                listed.contains(&format!("{base}.jsonl")),
                "{n} has no positive"
            );
        } else if !matches!(n.as_str(), "benign.jsonl" | "mixed.jsonl") {
            let negative = n.replace(".jsonl", ".negative.jsonl");
            assert!(listed.contains(&negative), "{n} has no negative");
        }
    }
}

/// The mixed sequence: each detector fires exactly once, nothing else does.
#[test]
fn mixed_sequence_fires_each_detector_once() {
    let got = scan_with(&config(), &[&dir().join("mixed.jsonl")], &[]);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for g in &got {
        *counts
            .entry(g.split(':').next().unwrap().to_owned())
            .or_default() += 1;
    }
    let expected = [
        "anonymous-allowed",
        "legacy-token-invalidated",
        "legacy-token-used",
        "stale-token",
        "token-bound-pod-elsewhere",
        "token-forbidden-burst",
        "token-interactive-client",
        "token-issued-then-used-elsewhere",
        "token-minted-by-user",
        "token-outside-cluster",
        "token-recon",
        "token-replayed",
        "token-secret-read",
    ];
    assert_eq!(
        counts.keys().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "{got:?}"
    );
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    // Every token detector is in the mixed sequence.
    let list = kaudit(&["rules", "list", "--format", "jsonl"], b"");
    let stateful: Vec<String> = findings(&list)
        .iter()
        .filter(|r| r["file"].as_str().unwrap_or("").starts_with("stateful"))
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stateful.len(), 12);
    for id in stateful {
        assert!(
            counts.contains_key(&id),
            "{id} is not exercised by mixed.jsonl"
        );
    }
}

fn event(user: &str, ips: &[&str], extra: &str, at: &str, n: u32) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"t-{n}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/batch/configmaps","verb":"list","user":{{"username":"{user}","groups":["system:authenticated"],"extra":{{{extra}}}}},"sourceIPs":{ips},"userAgent":"report/v0.0.0 (linux/amd64) kubernetes/$Format","objectRef":{{"resource":"configmaps","namespace":"batch","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2026-11-03T10:{at}.000000Z","stageTimestamp":"2026-11-03T10:{at}.000000Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}}}"#,
        ips = serde_json::to_string(ips).unwrap()
    )
}

const REPORT_TOKEN: &str = r#""authentication.kubernetes.io/credential-id":["JTI=6b1f0b6e-0c1f-4d8e-9a51-0f0e4a1b2c3d"],"authentication.kubernetes.io/node-name":["node-b"],"authentication.kubernetes.io/pod-name":["report-28871340-zq9c2"]"#;

fn scan_events(events: &[String], extra_args: &[&str]) -> Output {
    let input = events.join("\n");
    let mut args = vec!["scan", "--format", "jsonl", "--config"];
    let cfg = config();
    args.push(&cfg);
    args.extend_from_slice(extra_args);
    args.push("-");
    kaudit(&args, input.as_bytes())
}

/// X-Forwarded-For values are client-written: a stolen token claiming an
/// internal address through them is still outside (and worse for trying).
#[test]
fn forwarded_for_does_not_make_a_stolen_token_internal() {
    let sa = "system:serviceaccount:batch:report";
    let spoofed = event(
        sa,
        &["10.244.2.77", "203.0.113.9"],
        REPORT_TOKEN,
        "00:00",
        1,
    );
    let out = scan_events(&[spoofed], &[]);
    let got: Vec<String> = findings(&out)
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["rule_id"].as_str().unwrap(),
                f["severity"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "token-outside-cluster:critical",
            "token-bound-pod-elsewhere:critical"
        ]
    );
    assert_eq!(
        detail(&out, "token-outside-cluster", "address"),
        "203.0.113.9"
    );
    assert_eq!(
        detail(&out, "token-outside-cluster", "forwarded_for"),
        serde_json::json!(["10.244.2.77"])
    );
    // Behind the configured load balancer, the address it saw is used:
    // internal here, so nothing to report.
    let proxied = event(
        sa,
        &["10.244.2.77", "172.31.255.4"],
        REPORT_TOKEN,
        "00:00",
        2,
    );
    assert!(findings(&scan_events(&[proxied], &[])).is_empty());
    // ... and outside there.
    let proxied = event(
        sa,
        &["203.0.113.9", "172.31.255.4"],
        REPORT_TOKEN,
        "00:00",
        3,
    );
    let out = scan_events(&[proxied], &[]);
    assert_eq!(
        detail(&out, "token-outside-cluster", "address"),
        "203.0.113.9"
    );
}

/// A node credential sent with a forged X-Forwarded-For must not teach
/// kaudit that the forged address is that node's.
#[test]
fn forwarded_for_does_not_poison_node_learning() {
    let real_b = event("system:node:node-b", &["10.0.1.12"], "", "00:00", 0);
    let node_b = event(
        "system:node:node-b",
        &["10.0.1.99", "203.0.113.5"],
        "",
        "00:00",
        1,
    );
    let use_token = event(
        "system:serviceaccount:batch:report",
        &["10.0.1.99"],
        REPORT_TOKEN,
        "00:10",
        2,
    );
    let out = scan_events(&[real_b, node_b, use_token], &[]);
    let rules: Vec<String> = findings(&out)
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["rule_id"].as_str().unwrap(),
                f["severity"].as_str().unwrap()
            )
        })
        .collect();
    // The node credential from outside; then the pod token from the forged
    // address is still away from node-b (had 10.0.1.99 been learned as
    // node-b's, it would pass).
    assert_eq!(
        rules,
        [
            "token-outside-cluster:critical",
            "token-bound-pod-elsewhere:high"
        ]
    );
    // The learned address of node-b is the real one only once a real
    // kubelet request shows it.
    let real = event("system:node:node-b", &["10.0.1.12"], "", "00:00", 3);
    let from_node = event(
        "system:serviceaccount:batch:report",
        &["10.0.1.12"],
        REPORT_TOKEN,
        "00:10",
        4,
    );
    assert!(findings(&scan_events(&[real, from_node], &[])).is_empty());
}

/// Learned node addresses and issued credential ids survive a restart:
/// with --db the second scan knows what the first one learned.
#[test]
fn state_survives_a_restart_through_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let db = path_str(&tmp.path().join("k.db"));
    let lines = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir().join(name))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let benign = lines("benign.jsonl");
    let attack: Vec<String> = lines("issued-then-used-elsewhere.jsonl")
        .into_iter()
        .skip(benign.len())
        .collect();
    assert_eq!(attack.len(), 2, "the mint and the use");
    let mut first = benign.clone();
    first.push(attack[0].clone());
    let out = scan_events(&first, &["--db", &db]);
    let got: Vec<String> = findings(&out)
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ["token-minted-by-user"]);
    // A new process: the use of the minted token, and a token bound to
    // node-b used from node-c's address (known only from the first run).
    let elsewhere: Vec<String> = lines("bound-pod-elsewhere.jsonl")
        .into_iter()
        .skip(benign.len())
        .collect();
    let out = scan_events(&[attack[1].clone(), elsewhere[0].clone()], &["--db", &db]);
    let got: Vec<String> = findings(&out)
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got,
        [
            "token-issued-then-used-elsewhere",
            "token-bound-pod-elsewhere"
        ],
        "{}",
        stderr(&out)
    );
    assert_eq!(
        detail(&out, "token-bound-pod-elsewhere", "address_node"),
        "node-c"
    );
    // Without the store, the second half alone knows neither: nothing is
    // found (the address could be node-b's for all it knows).
    let out = scan_events(&[attack[1].clone(), elsewhere[0].clone()], &[]);
    assert!(
        findings(&out).is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn config_disables_detectors_and_catalogue_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.yaml");
    let base = std::fs::read_to_string(dir().join("config.yaml")).unwrap();
    let text = base.replace(
        "  rules: [tuning.yaml]",
        &format!(
            "  rules: [{}]\n  disable: [token-replayed, anonymous-allowed]",
            path_str(&dir().join("tuning.yaml"))
        ),
    );
    assert_ne!(text, base);
    std::fs::write(&cfg, text).unwrap();
    let cfg = path_str(&cfg);
    assert!(scan_with(&cfg, &[&dir().join("replayed.jsonl")], &[]).is_empty());
    assert!(scan_with(&cfg, &[&dir().join("anonymous-allowed.jsonl")], &[]).is_empty());
    assert_eq!(
        scan_with(&cfg, &[&dir().join("stale-token.jsonl")], &[]),
        ["stale-token:medium"]
    );
    let list = kaudit(&["rules", "list", "--config", &cfg], b"");
    let text = String::from_utf8_lossy(&list.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("token-replayed "))
        .unwrap();
    assert!(line.contains("[stateful] [disabled]"), "{line}");
}

#[test]
fn check_validates_the_config() {
    let ok = kaudit(&["check", "--config", &config()], b"");
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("12 token detectors (12 enabled)"), "{text}");
    assert!(text.contains("1 cluster(s) configured"), "{text}");

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "detection:\n  clusters:\n    prod:\n      pod_cidrs: [10.244.0.0/33]\n",
    )
    .unwrap();
    let out = kaudit(&["check", "--config", &path_str(&bad)], b"");
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("bad.yaml") && err.contains("line 4") && err.contains("not a network"),
        "{err}"
    );

    std::fs::write(&bad, "detection:\n  disable: [no-such-rule]\n").unwrap();
    let out = kaudit(&["check", "--config", &path_str(&bad)], b"");
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no-such-rule"), "{}", stderr(&out));
}

/// Names in the details are names, not credentials: the redactor must not
/// hash them (a key ending in "secret" or "token" would be).
#[test]
fn detail_names_survive_redaction() {
    let out = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            "--config",
            &config(),
            &path_str(&dir().join("legacy-token-used.jsonl")),
        ],
        b"",
    );
    assert_eq!(
        detail(&out, "legacy-token-used", "secret_name"),
        "legacy-app-token"
    );
    assert_eq!(
        detail(&out, "legacy-token-used", "legacy_token_subject"),
        "system:serviceaccount:legacy-app:default"
    );
}
