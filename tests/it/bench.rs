//! `kaudit bench` end to end: the corpus is the same bytes for a seed and
//! looks like the documented traffic; `kaudit scan` finds every planted
//! attack with exactly the rule ids the generator lists (the check that a
//! faster hot path still detects everything); `bench run` reports every
//! figure. Nothing here asserts on speed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::*;

/// `kaudit bench corpus` into `dir/name`; returns (events file, planted file).
fn corpus(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    let planted = dir.join(format!("{name}.planted.tsv"));
    let mut all = vec!["bench", "corpus", "--out"];
    let out_s = path_str(&out);
    all.push(&out_s);
    all.extend_from_slice(args);
    let run = kaudit(&all, b"");
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(
        stderr(&run).starts_with("kaudit bench corpus: events="),
        "{}",
        stderr(&run)
    );
    (out, planted)
}

/// (auditID → rule ids, auditID → attack) from a planted TSV.
fn planted(path: &Path) -> (HashMap<String, BTreeSet<String>>, HashMap<String, String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("audit_id\tattack\trule_id"));
    let mut rules: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut kinds = HashMap::new();
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 3, "{line}");
        rules
            .entry(cols[0].to_owned())
            .or_default()
            .insert(cols[2].to_owned());
        kinds.insert(cols[0].to_owned(), cols[1].to_owned());
    }
    (rules, kinds)
}

fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn uuid_shaped(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The traffic class of an event, as the generator documents it.
fn class(e: &serde_json::Value) -> &'static str {
    let user = e["user"]["username"].as_str().unwrap_or("");
    let path = e["requestURI"]
        .as_str()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("");
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        "health"
    } else if user.starts_with("system:node:") {
        "node"
    } else if user.starts_with("system:serviceaccount:") {
        "service_account"
    } else if user.starts_with("system:kube-") {
        "control_plane"
    } else {
        "person"
    }
}

#[test]
fn bench_corpus_is_the_same_bytes_for_a_seed_and_looks_like_the_documented_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--events", "20000", "--seed", "7"];
    let (a, pa) = corpus(dir.path(), "a.jsonl", &args);
    let (b, pb) = corpus(dir.path(), "b.jsonl", &args);
    let (c, _) = corpus(dir.path(), "c.jsonl", &["--events", "20000", "--seed", "8"]);
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap(), "same seed, other bytes");
    assert_eq!(
        std::fs::read(&pa).unwrap(),
        std::fs::read(&pb).unwrap(),
        "same seed, other planted list"
    );
    assert_ne!(
        bytes,
        std::fs::read(&c).unwrap(),
        "another seed, same bytes"
    );

    let evs = events(&a);
    assert_eq!(evs.len(), 20_000);
    // About 1 KB per event on average.
    let avg = bytes.len() / evs.len();
    assert!((800..=1400).contains(&avg), "{avg} bytes per event");

    let mut seen = HashSet::new();
    let mut last_received = String::new();
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    let mut jti_pod: HashMap<String, String> = HashMap::new();
    let mut sa_events = 0;
    for e in &evs {
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        assert!(
            matches!(e["level"].as_str(), Some("Metadata" | "RequestResponse")),
            "{e}"
        );
        let id = e["auditID"].as_str().unwrap();
        assert!(uuid_shaped(id), "{id}");
        let stage = e["stage"].as_str().unwrap();
        let received = e["requestReceivedTimestamp"].as_str().unwrap().to_owned();
        let stage_time = e["stageTimestamp"].as_str().unwrap();
        // Same fixed-width RFC 3339 UTC format: comparable as strings.
        assert!(stage_time >= received.as_str(), "{e}");
        if seen.insert(id.to_owned()) {
            assert!(
                matches!(stage, "ResponseComplete" | "ResponseStarted"),
                "{e}"
            );
            // Requests arrive in time order.
            assert!(
                received >= last_received,
                "{received} after {last_received}"
            );
            last_received = received;
        } else {
            // A second line for a request: a watch or session that ended.
            assert_eq!(stage, "ResponseComplete", "{e}");
        }
        assert!(e["sourceIPs"][0].is_string(), "{e}");
        assert!(e["userAgent"].is_string(), "{e}");
        assert!(e["responseStatus"]["code"].is_u64(), "{e}");
        assert!(
            e["annotations"]["authorization.k8s.io/decision"].is_string(),
            "{e}"
        );
        *by_class.entry(class(e)).or_default() += 1;
        let user = e["user"]["username"].as_str().unwrap();
        if user.starts_with("system:serviceaccount:") {
            sa_events += 1;
            let extra = &e["user"]["extra"];
            let jti = extra["authentication.kubernetes.io/credential-id"][0]
                .as_str()
                .unwrap();
            assert!(jti.starts_with("JTI=") && uuid_shaped(&jti[4..]), "{e}");
            for key in ["pod-name", "pod-uid", "node-name", "node-uid"] {
                assert!(
                    extra[format!("authentication.kubernetes.io/{key}")][0].is_string(),
                    "{key}: {e}"
                );
            }
            let pod = extra["authentication.kubernetes.io/pod-name"][0]
                .as_str()
                .unwrap();
            // A token belongs to one pod.
            let owner = jti_pod.entry(jti.to_owned()).or_insert(pod.to_owned());
            assert_eq!(owner, pod, "{jti} used by two pods");
        }
    }
    // A token is used many times.
    assert!(
        jti_pod.len() * 5 < sa_events,
        "{} tokens for {sa_events} service-account events",
        jti_pod.len()
    );

    // The documented mix (corpus.rs): node 50%, service accounts 37%,
    // control plane 4%, health 7%, people 2%, by requests drawn.
    let share = |c: &str| by_class.get(c).copied().unwrap_or(0) as f64 * 100.0 / 20_000.0;
    for (c, lo, hi) in [
        ("node", 46.0, 54.0),
        ("service_account", 33.0, 41.0),
        ("control_plane", 3.0, 5.5),
        ("health", 5.5, 8.5),
        ("person", 1.3, 3.0),
    ] {
        assert!(
            (lo..=hi).contains(&share(c)),
            "{c}: {:.2}% ({by_class:?})",
            share(c)
        );
    }

    // Two attacks by default (one in 10,000), each in the corpus.
    let (rules, _) = planted(&pa);
    assert_eq!(rules.len(), 2);
    assert!(rules.keys().all(|id| seen.contains(id)));

    // --planted - prints the list instead.
    let out = dir.path().join("d.jsonl");
    let run = kaudit(
        &[
            "bench",
            "corpus",
            "--events",
            "20000",
            "--seed",
            "7",
            "--out",
            &path_str(&out),
            "--planted",
            "-",
        ],
        b"",
    );
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(run.stdout, std::fs::read(&pa).unwrap());
}

/// The check that matters when the hot path is made faster: every planted
/// attack is still found, with exactly the rule ids the generator lists,
/// and nothing else fires but the catalogue's disallowed-k8s-user on
/// people's requests.
#[test]
fn bench_scan_finds_every_planted_attack_with_exactly_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    finds_every_planted_attack(dir.path(), &[]);
}

/// The RequestResponse variant: the same events with their bodies (5 to 20
/// KB on reads and writes), and the same findings: benign bodies fire no
/// body rule.
#[test]
fn bench_scan_of_the_request_response_corpus_finds_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let file = finds_every_planted_attack(dir.path(), &["--level", "request-response"]);
    let bytes = std::fs::metadata(&file).unwrap().len();
    let evs = events(&file);
    // Attacks keep the bodies they are generated with.
    let (attacks, _) = planted(&dir.path().join("corpus.jsonl.planted.tsv"));
    let mut dressed = 0;
    for e in &evs {
        if e["level"] == "RequestResponse" && !attacks.contains_key(e["auditID"].as_str().unwrap())
        {
            dressed += 1;
            // 5 to 20 KB per event, bodies included.
            let size = e.to_string().len();
            assert!((4_500..=25_000).contains(&size), "{size}: {e}");
            assert_ne!(e["objectRef"]["resource"], "secrets");
        }
    }
    assert!(
        dressed * 2 > evs.len(),
        "{dressed} of {} with bodies",
        evs.len()
    );
    assert!(
        bytes / evs.len() as u64 > 4_000,
        "{} bytes per event",
        bytes / evs.len() as u64
    );
}

/// Scans a corpus made in `dir` with `extra` arguments: every planted
/// attack fires exactly its rules, benign traffic only
/// `disallowed-k8s-user` on people's requests. Returns the corpus file.
fn finds_every_planted_attack(dir: &Path, extra: &[&str]) -> PathBuf {
    // 20,000 Metadata events, or 5,000 with bodies (about 50 MB): 200
    // attacks either way.
    let (count, every) = if extra.is_empty() {
        ("20000", "100")
    } else {
        ("5000", "25")
    };
    let mut args = vec!["--events", count, "--seed", "3", "--attack-every", every];
    args.extend_from_slice(extra);
    let (file, planted_file) = corpus(dir, "corpus.jsonl", &args);
    let (expected, kinds) = planted(&planted_file);
    assert!(expected.len() >= 190, "{} attacks", expected.len());
    let kinds_seen: BTreeSet<&str> = kinds.values().map(String::as_str).collect();
    assert_eq!(
        kinds_seen,
        BTreeSet::from([
            "attach",
            "cluster-admin-binding",
            "exec",
            "impersonation",
            "portforward",
            "secret-read",
            "token-outside",
        ])
    );

    let out = kaudit(&["scan", "--format", "jsonl", &path_str(&file)], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary(&out)["events"].to_string(), count);
    let mut found: HashMap<String, BTreeSet<String>> = HashMap::new();
    for f in findings(&out) {
        found
            .entry(f["audit_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(f["rule_id"].as_str().unwrap().to_owned());
    }

    let mut missed = Vec::new();
    for (id, rules) in &expected {
        let mut got = found.get(id).cloned().unwrap_or_default();
        got.remove("disallowed-k8s-user");
        if &got != rules {
            missed.push(format!(
                "{} {id}: expected {rules:?}, got {got:?}",
                kinds[id]
            ));
        }
    }
    assert!(
        missed.is_empty(),
        "{} of {} planted attacks not found as listed:\n{}",
        missed.len(),
        expected.len(),
        missed.join("\n")
    );

    // Nothing else: benign traffic fires only disallowed-k8s-user, and only
    // on people's requests.
    let users: HashMap<String, String> = events(&file)
        .iter()
        .map(|e| {
            (
                e["auditID"].as_str().unwrap().to_owned(),
                e["user"]["username"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut people = 0;
    for (id, rules) in &found {
        if expected.contains_key(id) {
            continue;
        }
        assert_eq!(
            rules,
            &BTreeSet::from(["disallowed-k8s-user".to_owned()]),
            "{id}"
        );
        assert!(!users[id].starts_with("system:"), "{id}: {}", users[id]);
        people += 1;
    }
    assert!(people > 0);
    file
}

#[test]
fn bench_run_reports_every_figure_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = kaudit(
        &[
            "bench",
            "run",
            "--events",
            "20000",
            "--format",
            "json",
            "--dir",
            &path_str(dir.path()),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON object: {text}");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();

    assert!(r["date"].as_str().unwrap().starts_with("20"));
    assert!(r["cpus_online"].as_u64().unwrap() >= 1);
    assert_eq!(r["repeat"], 1);
    let c = &r["corpus"];
    assert_eq!(c["events"], 20_000);
    assert!(c["bytes"].as_u64().unwrap() > 20_000 * 800);
    assert_eq!(c["attacks_planted"], 2);
    assert_eq!(c["generated"], true);

    let runs = r["runs"].as_array().unwrap();
    // By default: one CPU, then all.
    assert_eq!(
        runs.iter()
            .map(|r| r["cpus"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["0", "all"]
    );
    let jq_installed = which("jq");
    for run in runs {
        let mut phases = vec!["scan", "scan_db", "wc"];
        if jq_installed {
            phases.push("jq");
        } else {
            assert!(run["jq"].is_null());
        }
        for phase in phases {
            let f = &run[phase];
            assert!(f["command"].is_string(), "{phase}: {f}");
            assert_eq!(f["events"], 20_000, "{phase}");
            assert_eq!(f["bytes"], c["bytes"], "{phase}");
            for key in ["seconds", "events_per_s", "mb_per_s", "peak_rss_mb"] {
                assert!(f[key].as_f64().unwrap() > 0.0, "{phase}.{key}: {f}");
            }
        }
        assert!(run["scan"]["command"].as_str().unwrap().contains(" scan "));
        assert!(run["scan_db"]["command"].as_str().unwrap().contains("--db"));
        // Both planted attacks found, each with its rules.
        let recall = &run["recall"];
        assert!(recall["planted"].as_u64().unwrap() >= 2, "{recall}");
        assert_eq!(recall["found"], recall["planted"], "{recall}");
        assert!(run["findings"].as_u64().unwrap() >= recall["planted"].as_u64().unwrap());
        assert_eq!(run["findings_stored"], run["findings"]);
        assert!(run["multiples"]["wc"].as_f64().unwrap() > 0.0);
        if jq_installed {
            assert!(run["multiples"]["jq"].as_f64().unwrap() > 0.0);
        }
    }
    // Running again reuses the corpus.
    let again = kaudit(
        &[
            "bench",
            "run",
            "--events",
            "20000",
            "--format",
            "json",
            "--cpus",
            "0",
            "--dir",
            &path_str(dir.path()),
        ],
        b"",
    );
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let r2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(r2["corpus"]["generated"], false);
    assert_eq!(r2["runs"].as_array().unwrap().len(), 1);
}

#[test]
fn bench_run_refuses_a_bad_cpu_list() {
    let out = kaudit(&["bench", "run", "--cpus", "0;1"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--cpus"), "{}", stderr(&out));
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}
