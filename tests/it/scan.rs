//! `kaudit scan` end to end.

use super::*;

/// The rules the envelope fixtures' `detections` column counts.
const SESSION_RULES: [&str; 3] = ["pod-exec", "pod-attach", "pod-portforward"];

fn sessions(out: &Output) -> u64 {
    findings(out)
        .iter()
        .filter(|f| SESSION_RULES.contains(&f["rule_id"].as_str().unwrap_or("")))
        .count() as u64
}

#[test]
fn each_envelope_fixture_yields_its_expected_findings() {
    let dir = fixtures().join("envelopes");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    for row in table.lines().skip(1).filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = row.split('\t').collect();
        let out = kaudit(
            &["scan", "--format", "jsonl", &path_str(&dir.join(cols[0]))],
            b"",
        );
        assert_eq!(out.status.code(), Some(0), "{}: {}", cols[0], stderr(&out));
        let s = summary(&out);
        let malformed: u64 = cols[3].parse().unwrap();
        assert_eq!(s["events"], cols[1].parse::<u64>().unwrap(), "{}", cols[0]);
        assert_eq!(s["skipped"], cols[2].parse::<u64>().unwrap(), "{}", cols[0]);
        assert_eq!(s["malformed"], malformed, "{}", cols[0]);
        assert_eq!(
            s["truncated"],
            cols[4].parse::<u64>().unwrap(),
            "{}",
            cols[0]
        );
        assert_eq!(findings(&out).len() as u64, s["findings"]);
        assert_eq!(
            sessions(&out),
            cols[5].parse::<u64>().unwrap(),
            "{}",
            cols[0]
        );

        // One stderr line per problem, each naming the file and a line.
        let problem_lines = stderr(&out)
            .lines()
            .filter(|l| l.starts_with(&format!("kaudit: {}:", dir.join(cols[0]).display())))
            .count() as u64;
        assert_eq!(
            problem_lines,
            malformed + s["truncated"],
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn finding_json_has_the_documented_fields() {
    let out = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            &path_str(&fixtures().join("envelopes/k8s/event_pretty.json")),
        ],
        b"",
    );
    let f = &findings(&out)[0];
    for key in [
        "id",
        "rule_id",
        "rule_title",
        "severity",
        "category",
        "mitre",
        "references",
        "cluster",
        "audit_id",
        "stage",
        "time",
        "user",
        "groups",
        "impersonated_user",
        "source_ips",
        "user_agent",
        "verb",
        "resource",
        "subresource",
        "namespace",
        "name",
        "request_uri",
        "summary",
        "details",
        "evidence",
    ] {
        assert!(f.get(key).is_some(), "missing {key} in {f}");
    }
    assert_eq!(f["rule_id"], "pod-exec");
    assert_eq!(f["category"], "exec");
    assert_eq!(
        f["details"]["command"][2],
        "cat /var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    assert_eq!(f["id"].as_str().unwrap().len(), 32);
    assert_eq!(f["evidence"]["auditID"], f["audit_id"]);
}

#[test]
fn directories_are_walked_and_stdin_read() {
    let out = kaudit(&["scan", "--format", "jsonl", &path_str(&fixtures())], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert!(s["inputs"] >= 17, "{s:?}");
    // README, Python and TSV files beside the fixtures are not read.
    assert!(!stderr(&out).contains(".py:"), "{}", stderr(&out));

    let log = std::fs::read(fixtures().join("envelopes/k8s/audit.log")).unwrap();
    let out = kaudit(&["scan", "--format", "jsonl", "-"], &log);
    let s = summary(&out);
    assert_eq!((s["events"], sessions(&out)), (20, 3));
    let out = kaudit(&["scan", "--format", "jsonl"], &log);
    assert_eq!(summary(&out)["events"], 20);
}

#[test]
fn same_request_in_two_files_is_one_finding() {
    // audit.log and its gzip hold the same requests: dedup is per
    // (cluster, auditID, rule) across the whole run.
    let dir = fixtures().join("envelopes/k8s");
    let out = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            &path_str(&dir.join("audit.log")),
            &path_str(&dir.join("audit.log.gz")),
        ],
        b"",
    );
    assert_eq!(sessions(&out), 3);
    let once = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            &path_str(&dir.join("audit.log")),
        ],
        b"",
    );
    assert_eq!(summary(&out)["findings"], summary(&once)["findings"]);
}

#[test]
fn falco_peer_exec_and_attach_are_found() {
    let events = peers().join("falco/events");
    for (file, rule) in [
        ("exec_pod.json", "pod-exec"),
        ("attach_pod.json", "pod-attach"),
    ] {
        let out = kaudit(
            &["scan", "--format", "jsonl", &path_str(&events.join(file))],
            b"",
        );
        let f = findings(&out);
        assert_eq!(f.len(), 1, "{file}");
        assert_eq!(f[0]["rule_id"], rule);
        assert_eq!(f[0]["references"]["falco"], "Attach/Exec Pod");
    }
    let out = kaudit(&["scan", &path_str(&events.join("fal_01_003.json"))], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(summary(&out)["malformed"], 1);
    assert!(
        stderr(&out).contains("fal_01_003.json:1: not an audit event"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn whole_falco_peer_directory_scans_cleanly() {
    let out = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            &path_str(&peers().join("falco/events")),
        ],
        b"",
    );
    let s = summary(&out);
    assert_eq!(s["malformed"], 1, "only fal_01_003.json: {}", stderr(&out));
    assert!(s["events"] >= 50);
    let rules: Vec<_> = findings(&out)
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap().to_owned())
        .collect();
    for rule in ["pod-exec", "pod-attach"] {
        assert_eq!(rules.iter().filter(|r| *r == rule).count(), 1, "{rules:?}");
    }
}

#[test]
fn fail_on_sets_the_exit_code() {
    // A medium attach in the default namespace.
    let attach = path_str(&peers().join("falco/events/attach_pod.json"));
    assert_eq!(
        kaudit(&["scan", "--fail-on", "medium", &attach], b"")
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        kaudit(&["scan", "--fail-on", "high", &attach], b"")
            .status
            .code(),
        Some(0)
    );
    // An exec that reads the service-account token escalates to critical.
    let exec = path_str(&fixtures().join("envelopes/k8s/event_pretty.json"));
    assert_eq!(
        kaudit(&["scan", "--fail-on", "critical", &exec], b"")
            .status
            .code(),
        Some(1)
    );
    let bad = kaudit(&["scan", "--fail-on", "urgent", &exec], b"");
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("unknown severity"));
}

#[test]
fn unreadable_path_is_reported_and_the_rest_scanned() {
    let exec = path_str(&fixtures().join("envelopes/k8s/event_pretty.json"));
    let out = kaudit(
        &["scan", "--format", "jsonl", "/nonexistent/audit.log", &exec],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("kaudit: /nonexistent/audit.log: cannot read"));
    // The exec, and what its stolen pod token used from outside says.
    let rules: Vec<String> = findings(&out)
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        rules,
        [
            "pod-exec",
            "token-outside-cluster",
            "token-bound-pod-elsewhere",
            "token-interactive-client"
        ]
    );
}

#[test]
fn oversized_and_truncated_gzip_inputs_do_not_stop_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"auditID":"g1","stage":"ResponseStarted","verb":"create","requestURI":"/api/v1/namespaces/a/pods/p/exec?command=id","objectRef":{"resource":"pods","namespace":"a","name":"p","subresource":"exec"}}"#;
    let big = format!(
        r#"{{"auditID":"big","verb":"create","requestObject":{{"pad":"{}"}}}}"#,
        "x".repeat(20_000)
    );
    let file = dir.path().join("mixed.log");
    std::fs::write(&file, format!("{big}\n{good}\n")).unwrap();
    let out = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            "--max-event-bytes",
            "10000",
            &path_str(&file),
        ],
        b"",
    );
    // The exec is found, and the padded event is a finding of its own
    // (padding is an evasion trick), named by the auditID read from it.
    let f = findings(&out);
    let rules: Vec<&str> = f.iter().map(|f| f["rule_id"].as_str().unwrap()).collect();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules.contains(&"pod-exec"));
    let padded = f
        .iter()
        .find(|f| f["rule_id"] == "oversized-event")
        .unwrap();
    assert_eq!(
        (padded["audit_id"].as_str(), padded["category"].as_str()),
        (Some("big"), Some("evasion"))
    );
    assert_eq!(summary(&out)["malformed"], 1);
    // Alone, the padded event still fails the scan at --fail-on medium.
    let only_big = dir.path().join("big.log");
    std::fs::write(&only_big, format!("{big}\n")).unwrap();
    let alone = kaudit(
        &[
            "scan",
            "--fail-on",
            "medium",
            "--max-event-bytes",
            "10000",
            &path_str(&only_big),
        ],
        b"",
    );
    assert_eq!(alone.status.code(), Some(1), "{}", stderr(&alone));
    assert!(
        stderr(&out).contains("mixed.log:1: event of "),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("(auditID big)"), "{}", stderr(&out));

    let gz = std::fs::read(fixtures().join("envelopes/k8s/audit.log.gz")).unwrap();
    let cut = dir.path().join("cut.log.gz");
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let out = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            &path_str(&cut),
            &path_str(&file),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    // The line reached is named: what came before it was scanned.
    let at = err.find("cut.log.gz:").expect("the file is named");
    let rest = &err[at + "cut.log.gz:".len()..];
    let line: u64 = rest[..rest.find(':').unwrap()]
        .parse()
        .expect("a line number");
    assert!(line > 1 && rest.contains(": read error: "), "{err}");
    assert_eq!(summary(&out)["malformed"], 1);
    assert!(summary(&out)["events"] >= 2);
}

#[test]
fn hostile_strings_are_escaped_in_the_table() {
    let ev = r#"{"auditID":"h1","stage":"ResponseStarted","verb":"create","requestURI":"/api/v1/namespaces/a/pods/p/exec?command=%1B%5D0%3Bpwned%07&command=%1B%5B2J","user":{"username":"eve\u001b[31m\r"},"objectRef":{"resource":"pods","namespace":"a\u202e","name":"p","subresource":"exec"}}"#;
    let out = kaudit(&["scan", "-"], ev.as_bytes());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("eve\\u{1b}[31m\\u{d}"), "{text}");
    assert!(
        !text.contains('\u{1b}')
            && !text.contains('\r')
            && !text.contains('\u{7}')
            && !text.contains('\u{202e}')
    );
    assert!(text.starts_with("TIME"), "{text}");
}

#[test]
fn log_format_json_is_accepted() {
    let out = kaudit(&["--log-format", "json", "scan", "-"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(summary(&out)["events"], 0);
}

/// An audit policy that logs only RequestReceived: the stage is skipped
/// unless the source says so (`--request-received`, or `request_received`
/// on a daemon source).
#[test]
fn request_received_only_policies_are_an_option() {
    let ev = r#"{"auditID":"rr1","stage":"RequestReceived","verb":"create","requestURI":"/api/v1/namespaces/shop/pods/web/exec?command=id","user":{"username":"alice"},"objectRef":{"resource":"pods","namespace":"shop","name":"web","subresource":"exec"},"requestReceivedTimestamp":"2026-11-03T10:00:00Z"}"#;
    let plain = kaudit(&["scan", "--format", "jsonl", "-"], ev.as_bytes());
    assert!(findings(&plain).is_empty());
    let opted = kaudit(
        &["scan", "--format", "jsonl", "--request-received", "-"],
        ev.as_bytes(),
    );
    let f = findings(&opted);
    let exec = f
        .iter()
        .find(|f| f["rule_id"] == "pod-exec")
        .unwrap_or_else(|| panic!("{}", stderr(&opted)));
    assert_eq!(exec["stage"], "RequestReceived");
}
