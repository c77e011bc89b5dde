//! Test helpers: findings and temporary stores.

use std::collections::BTreeMap;

use crate::finding::{Finding, Severity, finding_id};

use super::Store;

/// A fresh, empty store: a SQLite file in a temporary directory (kept
/// alive by the returned guard), or, when `KAUDIT_TEST_STORE=postgres`, a
/// new database on the PostgreSQL server at `KAUDIT_TEST_POSTGRES_URL`
/// (`scripts/test.sh` runs the store tests both ways).
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = if std::env::var("KAUDIT_TEST_STORE").as_deref() == Ok("postgres") {
        Store::open(fresh_postgres_database()).unwrap()
    } else {
        Store::open(dir.path().join("kaudit.db")).unwrap()
    };
    (dir, store)
}

/// Another connection to the same store as `store` (a second process).
pub(crate) fn reopen(dir: &tempfile::TempDir, store: &Store) -> Store {
    match store.dialect() {
        super::Dialect::Sqlite => Store::open(dir.path().join("kaudit.db")).unwrap(),
        super::Dialect::Postgres => Store::open(POSTGRES_DB.with(|d| d.borrow().clone())).unwrap(),
    }
}

thread_local! {
    static POSTGRES_DB: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Creates an empty database on the test server; its URL.
pub(crate) fn fresh_postgres_database() -> String {
    let admin = std::env::var("KAUDIT_TEST_POSTGRES_URL").expect(
        "KAUDIT_TEST_STORE=postgres needs KAUDIT_TEST_POSTGRES_URL (scripts/test.sh starts a server and sets it)",
    );
    let name = format!(
        "kaudit_t_{}_{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000_000
    );
    let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    POSTGRES_DB.with(|d| *d.borrow_mut() = url.clone());
    url
}

/// A realistic exec finding at 2026-01-01T00:00:00Z.
pub(crate) fn finding(cluster: &str, audit_id: &str, rule_id: &str) -> Finding {
    finding_at(cluster, audit_id, rule_id, "2026-01-01T00:00:00.123456Z")
}

/// A finding with the given RFC 3339 time.
pub(crate) fn finding_at(cluster: &str, audit_id: &str, rule_id: &str, time: &str) -> Finding {
    Finding {
        id: finding_id(cluster, audit_id, rule_id),
        rule_id: rule_id.to_owned(),
        rule_title: "Exec into a pod".to_owned(),
        severity: Severity::Medium,
        category: "exec".to_owned(),
        mitre: vec!["T1609".to_owned()],
        references: BTreeMap::from([("falco".to_owned(), "Attach/Exec Pod".to_owned())]),
        cluster: cluster.to_owned(),
        audit_id: audit_id.to_owned(),
        stage: Some("ResponseStarted".to_owned()),
        time: Some(time.to_owned()),
        user: "alice@example.com".to_owned(),
        groups: vec!["system:authenticated".to_owned()],
        impersonated_user: None,
        source_ips: vec!["203.0.113.7".to_owned()],
        user_agent: Some("kubectl/v1.31.0 (linux/amd64)".to_owned()),
        verb: "create".to_owned(),
        resource: "pods".to_owned(),
        subresource: Some("exec".to_owned()),
        namespace: Some("payments".to_owned()),
        name: Some("api-7d9f".to_owned()),
        request_uri: Some(
            "/api/v1/namespaces/payments/pods/api-7d9f/exec?command=sh&stdin=true".to_owned(),
        ),
        summary: "alice@example.com ran sh in payments/api-7d9f".to_owned(),
        details: serde_json::json!({"command": ["sh"], "é": 1.5, "z": null}),
        evidence: serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": audit_id,
            "verb": "create", "user": {"username": "alice@example.com"}
        }),
    }
}
