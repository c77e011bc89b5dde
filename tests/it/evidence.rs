//! The findings store and evidence bundles end to end: `scan --db`,
//! `findings`, `keygen`, `export`, `verify`, `checkpoint`, through the real
//! binary, with tampering done the way an insider would (sqlite, editing
//! files).

use super::*;

fn k8s_fixtures() -> String {
    path_str(&fixtures().join("envelopes/k8s"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn db_with_findings(dir: &Path) -> PathBuf {
    let db = dir.join("f.db");
    let out = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            "--db",
            &path_str(&db),
            &k8s_fixtures(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(summary(&out)["findings"] > 5);
    db
}

#[test]
fn scanning_twice_stores_and_prints_each_finding_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_with_findings(dir.path());
    let again = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            "--db",
            &path_str(&db),
            &k8s_fixtures(),
        ],
        b"",
    );
    let s = summary(&again);
    assert_eq!(s["findings"], 0, "{}", stderr(&again));
    assert!(s["duplicates"] > 5);
    assert!(findings(&again).is_empty());
}

#[test]
fn findings_are_queried_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let db = path_str(&db_with_findings(dir.path()));
    let all = kaudit(&["findings", "--db", &db, "--format", "jsonl"], b"");
    let all = findings(&all);
    let exec = findings(&kaudit(
        &[
            "findings", "--db", &db, "--format", "jsonl", "--rule", "pod-exec",
        ],
        b"",
    ));
    assert!(!exec.is_empty() && exec.len() < all.len());
    assert!(exec.iter().all(|f| f["rule_id"] == "pod-exec"));
    let high = findings(&kaudit(
        &[
            "findings",
            "--db",
            &db,
            "--format",
            "jsonl",
            "--severity",
            "high",
        ],
        b"",
    ));
    assert!(
        high.iter()
            .all(|f| ["high", "critical"].contains(&f["severity"].as_str().unwrap()))
    );
    let ns = findings(&kaudit(
        &[
            "findings",
            "--db",
            &db,
            "--format",
            "jsonl",
            "--namespace",
            "payments",
        ],
        b"",
    ));
    assert!(!ns.is_empty() && ns.iter().all(|f| f["namespace"] == "payments"));
    // The fixtures are from 2024: nothing in the last day, everything since 2024.
    let recent = findings(&kaudit(
        &[
            "findings", "--db", &db, "--format", "jsonl", "--since", "24h",
        ],
        b"",
    ));
    assert!(recent.is_empty());
    let since = findings(&kaudit(
        &[
            "findings",
            "--db",
            &db,
            "--format",
            "jsonl",
            "--since",
            "2024-01-01",
        ],
        b"",
    ));
    assert_eq!(since.len(), all.len());
    let bad = kaudit(&["findings", "--db", &db, "--since", "last tuesday"], b"");
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--since"), "{}", stderr(&bad));
}

#[test]
fn a_signed_bundle_verifies_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let db = path_str(&db_with_findings(dir.path()));
    let key = dir.path().join("k.pem");
    assert_eq!(
        kaudit(&["keygen", "--out", &path_str(&key)], b"")
            .status
            .code(),
        Some(0)
    );
    let public = path_str(&dir.path().join("k.pem.pub"));
    let bundle = dir.path().join("bundle");
    let out = kaudit(
        &[
            "export",
            "--db",
            &db,
            "--out",
            &path_str(&bundle),
            "--sign-key",
            &path_str(&key),
            "--tar",
            "--rule",
            "pod-exec",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for f in [
        "manifest.json",
        "manifest.sig",
        "findings.jsonl",
        "findings.csv",
        "findings.ocsf.jsonl",
        "chain.jsonl",
        "README.md",
    ] {
        assert!(bundle.join(f).exists(), "{f}");
    }
    let ok = kaudit(
        &["verify", &path_str(&bundle), "--public-key", &public],
        b"",
    );
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    let tar = format!("{}.tar.gz", bundle.display());
    assert_eq!(
        kaudit(&["verify", &tar, "--public-key", &public], b"")
            .status
            .code(),
        Some(0)
    );

    // openssl checks the same signature (an auditor need not trust kaudit).
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok()
    {
        use base64::Engine;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(
                std::fs::read_to_string(bundle.join("manifest.sig"))
                    .unwrap()
                    .trim(),
            )
            .unwrap();
        let sig_bin = dir.path().join("sig.bin");
        std::fs::write(&sig_bin, sig).unwrap();
        let v = std::process::Command::new("openssl")
            .args([
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                &public,
                "-rawin",
                "-in",
                &path_str(&bundle.join("manifest.json")),
                "-sigfile",
                &path_str(&sig_bin),
            ])
            .output()
            .unwrap();
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    }

    // Another key: the signature does not hold.
    let other = dir.path().join("other.pem");
    kaudit(&["keygen", "--out", &path_str(&other)], b"");
    let wrong = kaudit(
        &[
            "verify",
            &path_str(&bundle),
            "--public-key",
            &path_str(&dir.path().join("other.pem.pub")),
        ],
        b"",
    );
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stdout(&wrong).contains("manifest.sig"),
        "{}",
        stdout(&wrong)
    );

    // An edited file is named.
    let csv = bundle.join("findings.csv");
    let text = std::fs::read_to_string(&csv)
        .unwrap()
        .replace("pod-exec", "pod-exex");
    std::fs::write(&csv, text).unwrap();
    let edited = kaudit(
        &["verify", &path_str(&bundle), "--public-key", &public],
        b"",
    );
    assert_eq!(edited.status.code(), Some(1));
    assert!(
        stdout(&edited).contains("findings.csv"),
        "{}",
        stdout(&edited)
    );
}

#[test]
fn altered_deleted_and_truncated_rows_fail_verify_db() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_with_findings(dir.path());
    let dbs = path_str(&db);
    assert_eq!(
        kaudit(&["verify", "--db", &dbs], b"").status.code(),
        Some(0)
    );

    // A signed checkpoint of the head, kept outside the database.
    let key = dir.path().join("k.pem");
    kaudit(&["keygen", "--out", &path_str(&key)], b"");
    let cps = dir.path().join("checkpoints.jsonl");
    let cp = kaudit(
        &[
            "checkpoint",
            "--db",
            &dbs,
            "--sign-key",
            &path_str(&key),
            "--append",
            &path_str(&cps),
        ],
        b"",
    );
    assert_eq!(cp.status.code(), Some(0), "{}", stderr(&cp));
    let public = path_str(&dir.path().join("k.pem.pub"));
    let with_cps = [
        "verify",
        "--db",
        dbs.as_str(),
        "--checkpoints",
        &path_str(&cps),
        "--public-key",
        &public,
    ];
    assert_eq!(kaudit(&with_cps, b"").status.code(), Some(0));

    let conn = rusqlite::Connection::open(&db).unwrap();
    let max: i64 = conn
        .query_row("SELECT max(seq) FROM findings", [], |r| r.get(0))
        .unwrap();

    // Cutting off the tail is caught by the checkpoint stored in the
    // database; an insider who also deletes the stored checkpoints leaves a
    // chain that verifies on its own, but not against the checkpoint kept
    // outside the database.
    conn.execute("DELETE FROM findings WHERE seq = ?1", [max])
        .unwrap();
    assert_eq!(
        kaudit(&["verify", "--db", &dbs], b"").status.code(),
        Some(1)
    );
    conn.execute("DELETE FROM chain_checkpoints", []).unwrap();
    assert_eq!(
        kaudit(&["verify", "--db", &dbs], b"").status.code(),
        Some(0)
    );
    let cut = kaudit(&with_cps, b"");
    assert_eq!(cut.status.code(), Some(1), "{}", stdout(&cut));

    // Editing a row names it.
    let changed = conn
        .execute(r#"UPDATE findings SET finding = replace(finding, '"summary":"', '"summary":"(edited) ') WHERE seq = 3"#, [])
        .unwrap();
    assert_eq!(changed, 1);
    let edited = kaudit(&["verify", "--db", &dbs], b"");
    assert_eq!(edited.status.code(), Some(1));
    assert!(stdout(&edited).contains("row 3"), "{}", stdout(&edited));
}

#[test]
fn a_scan_signs_its_chain_head_and_prune_keeps_the_chain_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let db = path_str(&dir.path().join("f.db"));
    let key = dir.path().join("k.pem");
    kaudit(&["keygen", "--out", &path_str(&key)], b"");
    let cps = path_str(&dir.path().join("elsewhere/checkpoints.jsonl"));
    std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
    let out = kaudit(
        &[
            "scan",
            "--db",
            &db,
            "--sign-key",
            &path_str(&key),
            "--checkpoint-file",
            &cps,
            &k8s_fixtures(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = std::fs::read_to_string(&cps).unwrap();
    assert_eq!(lines.lines().count(), 1);
    let public = path_str(&dir.path().join("k.pem.pub"));
    let verify = [
        "verify",
        "--db",
        db.as_str(),
        "--checkpoints",
        cps.as_str(),
        "--public-key",
        public.as_str(),
    ];
    assert_eq!(kaudit(&verify, b"").status.code(), Some(0));

    // The fixtures are from 2024: pruning everything older than a year
    // leaves an anchor, and the chain still verifies (its checkpoints were
    // pruned with the rows they cover).
    // Pruning is authorised by a signature: the key and the checkpoint
    // file are required.
    let unsigned = kaudit(&["prune", "--db", &db, "--older-than", "365d"], b"");
    assert_eq!(unsigned.status.code(), Some(2), "{}", stderr(&unsigned));
    let pruned = kaudit(
        &[
            "prune",
            "--db",
            &db,
            "--older-than",
            "365d",
            "--sign-key",
            &path_str(&key),
            "--checkpoint-file",
            &cps,
        ],
        b"",
    );
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    assert!(
        stdout(&pruned).contains("anchored at row"),
        "{}",
        stdout(&pruned)
    );
    let lines = std::fs::read_to_string(&cps).unwrap();
    assert_eq!(lines.lines().count(), 2);
    assert!(
        lines
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(r#"{"format":"kaudit-prune-v1","#),
        "{lines}"
    );
    let v = kaudit(&verify, b"");
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    assert!(
        stdout(&v).contains("is authorised by a signed prune record"),
        "{}",
        stdout(&v)
    );
    let v = kaudit(&["verify", "--db", &db], b"");
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    assert!(
        stdout(&v).contains("the retention anchor (row ")
            && stdout(&v).contains(") is not verified"),
        "{}",
        stdout(&v)
    );
    assert!(
        findings(&kaudit(
            &["findings", "--db", &db, "--format", "jsonl"],
            b""
        ))
        .is_empty()
    );
}

#[test]
fn the_manifest_shows_silent_hours() {
    let dir = tempfile::tempdir().unwrap();
    // Two events three hours apart: the two hours between had none.
    let ev = |id: &str, hour: u32| {
        format!(
            r#"{{"auditID":"{id}","stage":"ResponseStarted","requestReceivedTimestamp":"2026-06-01T{hour:02}:10:00.000000Z","verb":"create","requestURI":"/api/v1/namespaces/a/pods/p/exec?command=id","user":{{"username":"alice"}},"objectRef":{{"resource":"pods","subresource":"exec","namespace":"a","name":"p"}}}}"#
        )
    };
    let log = dir.path().join("audit.log");
    std::fs::write(&log, format!("{}\n{}\n", ev("a1", 1), ev("a2", 4))).unwrap();
    let db = path_str(&dir.path().join("f.db"));
    kaudit(&["scan", "--db", &db, &path_str(&log)], b"");
    let bundle = dir.path().join("b");
    let out = kaudit(&["export", "--db", &db, "--out", &path_str(&bundle)], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap();
    let cluster = &manifest["coverage"]["clusters"]["default"];
    assert_eq!(
        cluster["silent_hours"],
        serde_json::json!(["2026-06-01T02:00:00Z", "2026-06-01T03:00:00Z"]),
        "{manifest}"
    );
    assert_eq!(cluster["hours_with_events"], 2);
    assert_eq!(cluster["silent_hours_total"], 2);
    assert_eq!(
        cluster["silent_stretches"],
        serde_json::json!([{"from": "2026-06-01T02:00:00Z", "to": "2026-06-01T04:00:00Z", "hours": 2}])
    );

    // Another cluster, seen before and after a range in which it sent
    // nothing: listed, silent over the whole range.
    let other = |id: &str, hour: u32| ev(id, hour).replacen('{', r#"{"annotations":{},"#, 1);
    let other_log = dir.path().join("other.log");
    std::fs::write(
        &other_log,
        format!("{}\n{}\n", other("b1", 0), other("b2", 6)),
    )
    .unwrap();
    let edge_cfg = dir.path().join("edge.yaml");
    std::fs::write(&edge_cfg, "cluster: edge\n").unwrap();
    let out = kaudit(
        &[
            "scan",
            "--db",
            &db,
            "--config",
            &path_str(&edge_cfg),
            &path_str(&other_log),
        ],
        b"",
    );
    assert!(stderr(&out).contains("events=2"), "{}", stderr(&out));
    let ranged = dir.path().join("r");
    let out = kaudit(
        &[
            "export",
            "--db",
            &db,
            "--since",
            "2026-06-01T01:00:00Z",
            "--until",
            "2026-06-01T05:00:00Z",
            "--out",
            &path_str(&ranged),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ranged.join("manifest.json")).unwrap())
            .unwrap();
    let edge = &manifest["coverage"]["clusters"]["edge"];
    assert_eq!(edge["hours_with_events"], 0, "{manifest}");
    assert_eq!(edge["silent_hours_total"], 4);
    assert_eq!(edge["silent_stretches"][0]["hours"], 4);
    assert_eq!(edge["ever_last_hour"], "2026-06-01T06:00:00Z");
}

/// `db_with_findings` plus a key pair and a checkpoint of the head appended
/// to a file: (db, private key, public key, checkpoint file).
fn signed_db(dir: &Path) -> (String, String, String, String) {
    let db = path_str(&db_with_findings(dir));
    let key = path_str(&dir.join("k.pem"));
    kaudit(&["keygen", "--out", &key], b"");
    let cps = path_str(&dir.join("checkpoints.jsonl"));
    let cp = kaudit(
        &[
            "checkpoint",
            "--db",
            &db,
            "--sign-key",
            &key,
            "--append",
            &cps,
        ],
        b"",
    );
    assert_eq!(cp.status.code(), Some(0), "{}", stderr(&cp));
    let public = format!("{key}.pub");
    (db, key, public, cps)
}

#[test]
fn a_forged_retention_anchor_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _key, public, cps) = signed_db(dir.path());
    let verify = [
        "verify",
        "--db",
        db.as_str(),
        "--checkpoints",
        cps.as_str(),
        "--public-key",
        public.as_str(),
    ];
    assert_eq!(kaudit(&verify, b"").status.code(), Some(0));

    // An insider deletes a prefix and writes the anchor retention would.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let hash: String = conn
        .query_row("SELECT hash FROM findings WHERE seq = 3", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch(&format!(
        "DELETE FROM findings WHERE seq <= 3;
         INSERT INTO chain_anchor (id, seq, hash, pruned_rows, cutoff, pruned_at) VALUES (1, 3, '{hash}', 3, 0, 0);"
    ))
    .unwrap();
    let out = kaudit(&verify, b"");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(
            "rows 1–3 are gone and no signed prune record authorises it: history was cut"
        ),
        "{}",
        stdout(&out)
    );

    // A prune record signed by another key does not authorise it.
    let other = path_str(&dir.path().join("other.pem"));
    kaudit(&["keygen", "--out", &other], b"");
    drop(conn); // checkpoints the WAL into the file copied below
    let elsewhere = dir.path().join("copy.db");
    std::fs::copy(&db, &elsewhere).unwrap();
    let forged_cps = path_str(&dir.path().join("forged.jsonl"));
    std::fs::copy(&cps, &forged_cps).unwrap();
    let forged = kaudit(
        &[
            "prune",
            "--db",
            &path_str(&elsewhere),
            "--older-than",
            "1d",
            "--sign-key",
            &other,
            "--checkpoint-file",
            &forged_cps,
        ],
        b"",
    );
    // kaudit refuses to extend an unauthorised anchor, even with a key.
    assert_ne!(forged.status.code(), Some(0), "{}", stdout(&forged));
    assert!(
        stderr(&forged).contains("history was cut"),
        "{}",
        stderr(&forged)
    );

    // Without checkpoints, the anchor is reported as not verified.
    let plain = kaudit(&["verify", "--db", &db], b"");
    assert_eq!(plain.status.code(), Some(0), "{}", stdout(&plain));
    assert!(
        stdout(&plain).contains("the retention anchor (row 3) is not verified"),
        "{}",
        stdout(&plain)
    );
}

#[test]
fn an_oversized_event_is_one_finding_whatever_path_it_is_read_from() {
    let dir = tempfile::tempdir().unwrap();
    // No auditID in the first 64 KiB: the finding is named by the bytes.
    let big = format!(
        r#"{{"verb":"create","requestObject":{{"pad":"{}"}},"auditID":"late"}}"#,
        "x".repeat(100_000)
    );
    let a = dir.path().join("a.log");
    let b = dir.path().join("b.log");
    std::fs::write(&a, format!("{big}\n")).unwrap();
    std::fs::write(&b, format!("{big}\n")).unwrap();
    let db = path_str(&dir.path().join("f.db"));
    let first = kaudit(
        &[
            "scan",
            "--db",
            &db,
            "--max-event-bytes",
            "10000",
            &path_str(&a),
        ],
        b"",
    );
    assert_eq!(summary(&first)["findings"], 1, "{}", stderr(&first));
    let second = kaudit(
        &[
            "scan",
            "--db",
            &db,
            "--max-event-bytes",
            "10000",
            &path_str(&b),
        ],
        b"",
    );
    assert_eq!(
        (summary(&second)["findings"], summary(&second)["duplicates"]),
        (0, 1),
        "{}",
        stderr(&second)
    );
}

#[test]
fn stored_checkpoints_are_checked_against_the_given_key() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _key, public, _cps) = signed_db(dir.path());
    let ours = kaudit(&["verify", "--db", &db, "--public-key", &public], b"");
    assert_eq!(ours.status.code(), Some(0), "{}", stdout(&ours));
    assert!(
        stdout(&ours).contains("checked against the given public key"),
        "{}",
        stdout(&ours)
    );
    // Without a key, the output says the check was only a self-check.
    let plain = kaudit(&["verify", "--db", &db], b"");
    assert_eq!(plain.status.code(), Some(0), "{}", stdout(&plain));
    assert!(
        stdout(&plain).contains("were only self-checked"),
        "{}",
        stdout(&plain)
    );
    // A checkpoint stored by someone else's key fails against ours.
    let other = path_str(&dir.path().join("other.pem"));
    kaudit(&["keygen", "--out", &other], b"");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM chain_checkpoints", []).unwrap();
    drop(conn);
    let cp = kaudit(&["checkpoint", "--db", &db, "--sign-key", &other], b"");
    assert_eq!(cp.status.code(), Some(0), "{}", stderr(&cp));
    let theirs = kaudit(&["verify", "--db", &db, "--public-key", &public], b"");
    assert_eq!(theirs.status.code(), Some(1), "{}", stdout(&theirs));
    assert!(
        stdout(&theirs).contains("was signed by another key"),
        "{}",
        stdout(&theirs)
    );
}

#[test]
fn an_empty_checkpoint_file_fails_and_unsigned_rows_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = path_str(&dir.path().join("f.db"));
    let key = path_str(&dir.path().join("k.pem"));
    kaudit(&["keygen", "--out", &key], b"");
    let public = format!("{key}.pub");
    let cps = path_str(&dir.path().join("checkpoints.jsonl"));
    std::fs::write(&cps, "\n").unwrap();
    let log = path_str(&fixtures().join("envelopes/k8s/audit.log"));
    let out = kaudit(&["scan", "--format", "jsonl", "--db", &db, &log], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let verify = [
        "verify",
        "--db",
        db.as_str(),
        "--checkpoints",
        cps.as_str(),
        "--public-key",
        public.as_str(),
    ];
    let empty = kaudit(&verify, b"");
    assert_eq!(empty.status.code(), Some(1), "{}", stdout(&empty));
    assert!(
        stdout(&empty).contains("holds no chain checkpoints"),
        "{}",
        stdout(&empty)
    );
    let cp = kaudit(
        &[
            "checkpoint",
            "--db",
            &db,
            "--sign-key",
            &key,
            "--append",
            &cps,
        ],
        b"",
    );
    assert_eq!(cp.status.code(), Some(0), "{}", stderr(&cp));
    let at_head = kaudit(&verify, b"");
    assert_eq!(at_head.status.code(), Some(0), "{}", stdout(&at_head));
    assert!(
        stdout(&at_head).contains("0 rows lie after the newest checkpoint"),
        "{}",
        stdout(&at_head)
    );
    // More findings after the checkpoint are counted.
    let all = kaudit(
        &["scan", "--format", "jsonl", "--db", &db, &k8s_fixtures()],
        b"",
    );
    assert_eq!(all.status.code(), Some(0), "{}", stderr(&all));
    let after = kaudit(&verify, b"");
    assert_eq!(after.status.code(), Some(0), "{}", stdout(&after));
    assert!(
        stdout(&after).contains("lie after the newest checkpoint (row ")
            && stdout(&after).contains("no signature covers them yet"),
        "{}",
        stdout(&after)
    );
}
