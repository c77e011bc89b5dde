//! What only a store several instances share must guarantee, tested on a
//! real PostgreSQL server (`KAUDIT_TEST_POSTGRES_URL`, which
//! `scripts/test.sh` starts): concurrent writers never fork the chain,
//! concurrent claims never take the same alert, instances starting
//! together migrate once, and a connection the server dropped comes back.

use std::sync::{Arc, Barrier};

use super::db::params;
use super::testutil::*;
use super::{Batch, Filter, Store};

fn open(url: &str) -> Store {
    Store::open(url).unwrap()
}

#[test]
fn instances_starting_together_migrate_once() {
    let url = fresh_postgres_database();
    let go = Arc::new(Barrier::new(4));
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let (url, go) = (url.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                Store::open(&url).map(|s| s.schema_version().unwrap())
            })
        })
        .collect();
    for t in opened {
        assert_eq!(t.join().unwrap().unwrap(), super::SCHEMA_VERSION);
    }
}

#[test]
fn concurrent_writers_never_fork_the_chain() {
    let url = fresh_postgres_database();
    drop(open(&url));
    let go = Arc::new(Barrier::new(3));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (url, go) = (url.clone(), go.clone());
            std::thread::spawn(move || {
                let mut store = open(&url);
                go.wait();
                for b in 0..20 {
                    // Each batch: 3 findings of its own and one that every
                    // writer stores (a redelivery): stored once.
                    let mut findings: Vec<_> = (0..3)
                        .map(|i| finding("c1", &format!("w{w}-b{b}-{i}"), "pod-exec"))
                        .collect();
                    findings.push(finding("c1", &format!("shared-{b}"), "pod-exec"));
                    store
                        .commit(&Batch {
                            findings,
                            ..Batch::default()
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    let store = open(&url);
    let report = store.verify_chain().unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.rows, 3 * 20 * 3 + 20);
    let seqs: Vec<i64> = store
        .conn()
        .query_map("SELECT seq FROM findings ORDER BY seq", params![], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(seqs, (1..=200).collect::<Vec<i64>>(), "no gap, no fork");
    assert_eq!(store.query(&Filter::default(), None).unwrap().len(), 200);
}

#[test]
fn concurrent_claims_never_take_the_same_alert() {
    let url = fresh_postgres_database();
    let mut store = open(&url);
    let findings: Vec<_> = (0..60)
        .map(|i| finding("c1", &format!("a{i}"), "pod-exec"))
        .collect();
    let n = findings.len();
    store
        .commit(&Batch {
            findings,
            outbox: vec![vec!["siem".to_owned()]; n],
            ..Batch::default()
        })
        .unwrap();
    let now = super::now_unix();
    let go = Arc::new(Barrier::new(3));
    let claimers: Vec<_> = (0..3)
        .map(|_| {
            let (url, go) = (url.clone(), go.clone());
            std::thread::spawn(move || {
                let store = open(&url);
                go.wait();
                let mut mine = Vec::new();
                loop {
                    let got = store.outbox_claim(now, 300, 7, "siem").unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|i| i.finding_id));
                }
            })
        })
        .collect();
    let mut all: Vec<String> = Vec::new();
    for t in claimers {
        all.extend(t.join().unwrap());
    }
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), claimed, "an alert was claimed twice");
    assert_eq!(claimed, n, "every alert claimed once");
    // Leases expire: a dead instance's claims are taken over after it.
    assert!(
        store
            .outbox_claim(now, 300, 100, "siem")
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .outbox_claim(now + 301, 300, 100, "siem")
            .unwrap()
            .len(),
        n
    );
}

#[test]
fn a_connection_the_server_dropped_comes_back() {
    let url = fresh_postgres_database();
    let mut store = open(&url);
    let pid: i32 = store
        .conn()
        .query_row("SELECT pg_backend_pid()", params![], |r| r.get(0))
        .unwrap();
    let killer = open(&url);
    let killed: bool = killer
        .conn()
        .query_row("SELECT pg_terminate_backend(?1)", params![pid], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(killed);
    // The first use after the drop may fail (it finds the connection
    // gone); the store is usable again right after, without reopening.
    let _ = store.commit(&Batch {
        findings: vec![finding("c1", "a1", "pod-exec")],
        ..Batch::default()
    });
    assert!(store.is_alive());
    store
        .commit(&Batch {
            findings: vec![finding("c1", "a2", "pod-exec")],
            ..Batch::default()
        })
        .unwrap();
    let report = store.verify_chain().unwrap();
    assert!(report.is_ok(), "{report}");
    assert!(report.rows >= 1);
}

#[test]
fn the_url_password_never_shows_in_errors() {
    let url = "postgres://kaudit:hunter2-secret@127.0.0.1:1/nowhere?connect_timeout=2";
    let e = Store::open(url).unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
    assert!(e.contains("kaudit:***@127.0.0.1:1"), "{e}");
}

/// Hostile text: PostgreSQL cannot store U+0000, which an attacker can put
/// in a user name or namespace; the batch must still go in (as U+FFFD),
/// the chain still verify, and the finding's neighbours still be found.
#[test]
fn a_nul_in_attacker_text_neither_stops_the_pipeline_nor_breaks_the_chain() {
    let url = fresh_postgres_database();
    let mut store = open(&url);
    let mut hostile = finding("c1", "a1", "pod-exec");
    hostile.user = "mallory\u{0}@example.com".into();
    hostile.namespace = Some("pay\u{0}ments".into());
    hostile.source_ips = vec!["10.0.0.9".into()];
    hostile.id = crate::finding::finding_id(&hostile.cluster, &hostile.audit_id, &hostile.rule_id);
    let mut next = finding("c1", "a2", "pod-exec");
    next.source_ips = vec!["10.0.0.9".into()];
    next.user = "someone-else".into();
    store
        .commit(&Batch {
            findings: vec![hostile, next],
            quarantine: vec![super::QuarantineRow {
                source: "file\u{0}".into(),
                error: "bad\u{0}input".into(),
                audit_id: Some("x\u{0}".into()),
                raw: b"{\0}".to_vec(),
                ..super::QuarantineRow::default()
            }],
            ..Batch::default()
        })
        .unwrap();
    let report = store.verify_chain().unwrap();
    assert!(report.is_ok(), "{report}");
    let user: String = store
        .conn()
        .query_row(
            "SELECT \"user\" FROM findings WHERE seq = 1",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(user, "mallory\u{FFFD}@example.com");
    let first = store.query(&Filter::default(), None).unwrap();
    let related = store.related(&first[0].finding, 3600, 10).unwrap();
    assert_eq!(related.len(), 1, "the same source address links them");
}
