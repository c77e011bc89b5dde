//! Unit tests of the token detectors through [`Detector`]: the cases the
//! scenario fixtures do not isolate (escalations, throttles, refinements of
//! catalogue rules, bounded state, snapshots).

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::detect::{Detector, RuleSet};

fn config(yaml: &str) -> Config {
    Config::parse(yaml).unwrap()
}

const PROD: &str = "detection:\n  clusters:\n    default:\n      pod_cidrs: [10.244.0.0/16]\n      node_cidrs: [10.0.0.0/20]\n      trusted_user_agents: ['argocd/*']\n      automation_identities: ['system:serviceaccount:vault:*']\n";

fn detector(cfg: &Config) -> Detector {
    Detector::with_token(
        Arc::new(RuleSet::load(&[]).unwrap()),
        TokenDetector::new(cfg).unwrap(),
    )
}

/// An event: `base` fields overridden by `over`.
fn ev(n: usize, over: Value) -> String {
    let mut base = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": format!("a-{n}"), "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/shop/configmaps", "verb": "list",
        "user": {"username": "system:serviceaccount:shop:web", "groups": ["system:authenticated"]},
        "sourceIPs": ["10.244.1.23"], "userAgent": "web/v0.0.0 (linux/amd64) kubernetes/$Format",
        "objectRef": {"resource": "configmaps", "namespace": "shop", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": format!("2026-11-03T10:00:{:02}.000000Z", n % 60),
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
    });
    if let (Value::Object(b), Value::Object(o)) = (&mut base, over) {
        for (k, v) in o {
            b.insert(k, v);
        }
    }
    base.to_string()
}

fn run(d: &mut Detector, events: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for raw in events {
        let e = crate::event::AuditEvent::parse(raw).unwrap();
        d.check(&e, &mut |f| {
            out.push((f.rule_id.clone(), f.severity.to_string()))
        });
    }
    out
}

fn ids(found: &[(String, String)]) -> Vec<&str> {
    found.iter().map(|(r, _)| r.as_str()).collect()
}

#[test]
fn person_reading_a_secret_is_one_finding_not_two() {
    let mut d = detector(&config(PROD));
    let read = ev(
        1,
        json!({
            "verb": "get", "requestURI": "/api/v1/namespaces/shop/secrets/db",
            "user": {"username": "carol@example.com"}, "sourceIPs": ["198.51.100.4"],
            "objectRef": {"resource": "secrets", "namespace": "shop", "name": "db", "apiVersion": "v1"}
        }),
    );
    let found = run(
        &mut d,
        &[read.clone(), read.replace("ResponseComplete", "Panic")],
    );
    // token-secret-read replaces k8s-secret-get (which would say medium).
    assert!(
        found.contains(&("token-secret-read".into(), "medium".into())),
        "{found:?}"
    );
    assert!(!ids(&found).contains(&"k8s-secret-get"), "{found:?}");
    // In kube-system, the catalogue's rule speaks alone.
    let kube = read
        .replace("namespaces/shop", "namespaces/kube-system")
        .replace(r#""namespace":"shop""#, r#""namespace":"kube-system""#);
    let found = run(&mut d, &[kube.replace("a-1", "a-2")]);
    assert!(
        ids(&found).contains(&"secret-read-kube-system"),
        "{found:?}"
    );
    assert!(!ids(&found).contains(&"token-secret-read"), "{found:?}");
}

#[test]
fn token_secret_creation_refines_the_catalogue_rule() {
    let mut d = detector(&config(PROD));
    let create = ev(
        1,
        json!({
            "level": "Request", "verb": "create", "requestURI": "/api/v1/namespaces/kube-system/secrets",
            "user": {"username": "mallory@example.com"},
            "objectRef": {"resource": "secrets", "namespace": "kube-system", "name": "cac-token", "apiVersion": "v1"},
            "responseStatus": {"code": 201},
            "requestObject": {"kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "cac-token", "annotations": {"kubernetes.io/service-account.name": "clusterrole-aggregation-controller"}}}
        }),
    );
    let found = run(&mut d, &[create]);
    assert!(
        found.contains(&("token-secret-read".into(), "high".into())),
        "{found:?}"
    );
    assert!(
        !ids(&found).contains(&"service-account-token-secret-created"),
        "{found:?}"
    );
    // Disabled, the catalogue rule is back.
    let mut d = detector(&config("detection:\n  disable: [token-secret-read]\n"));
    let create = ev(
        2,
        json!({
            "level": "Request", "verb": "create", "requestURI": "/api/v1/namespaces/ci/secrets",
            "user": {"username": "mallory@example.com"},
            "objectRef": {"resource": "secrets", "namespace": "ci", "name": "t", "apiVersion": "v1"},
            "responseStatus": {"code": 201},
            "requestObject": {"kind": "Secret", "type": "kubernetes.io/service-account-token", "metadata": {"name": "t"}}
        }),
    );
    assert!(ids(&run(&mut d, &[create])).contains(&"service-account-token-secret-created"));
}

fn token_request(n: usize, user: &str, ns: &str, seconds: Option<i64>) -> String {
    let mut body =
        json!({"kind": "TokenRequest", "spec": {"audiences": ["https://kubernetes.default.svc"]}});
    if let Some(s) = seconds {
        body["spec"]["expirationSeconds"] = s.into();
    }
    ev(
        n,
        json!({
            "level": "Request", "verb": "create",
            "requestURI": format!("/api/v1/namespaces/{ns}/serviceaccounts/app/token"),
            "user": {"username": user}, "sourceIPs": ["10.0.1.11"],
            "objectRef": {"resource": "serviceaccounts", "namespace": ns, "name": "app", "subresource": "token", "apiVersion": "v1"},
            "responseStatus": {"code": 201}, "requestObject": body,
            "annotations": {"authentication.kubernetes.io/issued-credential-id": format!("JTI=issued-{n}")}
        }),
    )
}

#[test]
fn minted_by_user_escalates_for_long_tokens_and_kube_system() {
    let mut d = detector(&config(PROD));
    let found = run(
        &mut d,
        &[
            token_request(1, "dave@example.com", "shop", Some(3600)),
            token_request(2, "dave@example.com", "shop", Some(90 * 86_400)),
            token_request(3, "dave@example.com", "kube-system", None),
            token_request(4, "system:node:node-a", "shop", Some(3607)),
            token_request(
                5,
                "system:kube-controller-manager",
                "kube-system",
                Some(3600),
            ),
            token_request(6, "system:serviceaccount:vault:vault", "shop", Some(600)),
        ],
    );
    let minted: Vec<&str> = found
        .iter()
        .filter(|(r, _)| r == "token-minted-by-user")
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(minted, ["medium", "high", "high"], "{found:?}");
}

#[test]
fn forbidden_burst_counts_requests_not_copies() {
    let mut d = detector(&config(PROD));
    let denied = |n: usize| {
        let what = ["nodes", "pods", "secrets", "roles"][n % 4];
        ev(
            n,
            json!({
                "requestURI": format!("/api/v1/{what}"), "objectRef": {"resource": what, "apiVersion": "v1"},"responseStatus": {"code": 403},
                "annotations": {"authorization.k8s.io/decision": "forbid"}
            }),
        )
    };
    // One request delivered ten times is one refusal.
    let copies: Vec<String> = (0..10).map(|_| denied(1)).collect();
    assert!(!ids(&run(&mut d, &copies)).contains(&"token-forbidden-burst"));
    let many: Vec<String> = (2..=12).map(denied).collect();
    let found = run(&mut d, &many);
    assert_eq!(
        found
            .iter()
            .filter(|(r, _)| r == "token-forbidden-burst")
            .count(),
        1,
        "{found:?}"
    );
}

#[test]
fn repeated_reports_are_throttled_per_identity() {
    let mut d = detector(&config(PROD));
    let legacy = |n: usize, ts: &str| {
        let mut e: Value = serde_json::from_str(&ev(n, json!({
            "user": {"username": "system:serviceaccount:old:default"},
            "annotations": {"authentication.k8s.io/legacy-token": "system:serviceaccount:old:default"}
        })))
        .unwrap();
        e["requestReceivedTimestamp"] = ts.into();
        e.to_string()
    };
    let found = run(
        &mut d,
        &[
            legacy(1, "2026-11-03T10:00:00Z"),
            legacy(2, "2026-11-03T11:00:00Z"),
            legacy(3, "2026-11-04T10:00:01Z"),
        ],
    );
    assert_eq!(
        ids(&found),
        ["legacy-token-used", "legacy-token-used"],
        "{found:?}"
    );
}

#[test]
fn interactive_client_respects_trusted_agents_and_automation() {
    let mut d = detector(&config(PROD));
    let mk = |n: usize, user: &str, ua: &str| {
        ev(
            n,
            json!({"user": {"username": user}, "userAgent": ua, "sourceIPs": ["10.0.1.11"]}),
        )
    };
    let found = run(
        &mut d,
        &[
            mk(1, "system:serviceaccount:shop:web", "curl/8.5.0"),
            mk(
                2,
                "system:serviceaccount:argocd:server",
                "argocd/v2.11.3 (linux/amd64)",
            ),
            mk(3, "system:serviceaccount:vault:vault", "kubectl/v1.30.4"),
            mk(4, "system:serviceaccount:shop:api", "Go-http-client/1.1"),
            mk(5, "system:serviceaccount:shop:api", "my-go-http-client/1.1"),
        ],
    );
    assert_eq!(
        ids(&found),
        ["token-interactive-client", "token-interactive-client"],
        "{found:?}"
    );
}

#[test]
fn without_networks_private_ranges_are_internal() {
    let mut d = detector(&Config::default());
    let mk = |n: usize, ip: &str| ev(n, json!({"sourceIPs": [ip]}));
    let found = run(
        &mut d,
        &[mk(1, "10.1.2.3"), mk(2, "192.168.7.7"), mk(3, "100.64.3.3")],
    );
    assert!(found.is_empty(), "{found:?}");
    let found = run(&mut d, &[mk(4, "8.8.8.8")]);
    assert_eq!(ids(&found), ["token-outside-cluster"]);
}

#[test]
fn state_is_bounded_and_evictions_are_counted() {
    let cfg = config("detection:\n  token: {max_entries: 16, max_clusters: 2}\n");
    let mut t = TokenDetector::new(&cfg).unwrap();
    let mut out = Vec::new();
    for n in 0..5000 {
        let raw = ev(
            n,
            json!({
                "user": {"username": format!("system:serviceaccount:ns{n}:sa"),
                         "extra": {"authentication.kubernetes.io/credential-id": [format!("JTI={n}")]}},
                "sourceIPs": [format!("10.{}.{}.{}", n % 3, n / 256 % 256, n % 256)],
                "cluster": format!("c{}", n % 3),
            }),
        );
        let mut e = crate::event::AuditEvent::parse(&raw).unwrap();
        e.cluster = Some(format!("c{}", n % 3).into());
        t.check(&e, &mut out);
    }
    let s = t.stats();
    assert!(s.clusters <= 2, "{s:?}");
    assert!(s.entries <= 2 * 7 * 16, "{s:?}");
    // 5000 distinct tokens, at most 32 kept: the rest were counted out.
    assert!(s.evictions >= 4900, "{s:?}");
}

/// What `t` learns: node-c's address (its kubelet), and a token dave
/// minted for shop/app (credential id JTI=issued-2).
fn learn_node_and_mint(t: &mut TokenDetector) {
    let mut out = Vec::new();
    let kubelet = ev(
        1,
        json!({"user": {"username": "system:node:node-c"}, "sourceIPs": ["10.0.1.13"]}),
    );
    let mint = token_request(2, "dave@example.com", "shop", Some(3600));
    for raw in [&kubelet, &mint] {
        t.check(&crate::event::AuditEvent::parse(raw).unwrap(), &mut out);
    }
}

/// That token, bound to a pod on node-a, used from node-c's address: what
/// `t` finds.
fn use_minted_elsewhere(t: &mut TokenDetector) -> Vec<crate::finding::Finding> {
    let use_it = ev(
        3,
        json!({
            "user": {"username": "system:serviceaccount:shop:app",
                     "extra": {"authentication.kubernetes.io/credential-id": ["JTI=issued-2"],
                               "authentication.kubernetes.io/node-name": ["node-a"],
                               "authentication.kubernetes.io/pod-name": ["app-1"]}},
            "sourceIPs": ["10.0.1.13"], "userAgent": "app/1.0"
        }),
    );
    let mut found = Vec::new();
    t.check(
        &crate::event::AuditEvent::parse(&use_it).unwrap(),
        &mut found,
    );
    found
}

#[test]
fn snapshot_restores_what_was_learned() {
    let cfg = config(PROD);
    let mut a = TokenDetector::new(&cfg).unwrap();
    learn_node_and_mint(&mut a);
    let snap = a.take_snapshot().expect("state changed");
    assert!(a.take_snapshot().is_none(), "nothing changed since");
    let mut b = TokenDetector::new(&cfg).unwrap();
    b.restore(&snap).unwrap();
    assert!(b.stats().entries > 0);
    // b knows node-c's address and the minted token.
    let found = use_minted_elsewhere(&mut b);
    let rules: Vec<&str> = found.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(
        rules,
        [
            "token-bound-pod-elsewhere",
            "token-issued-then-used-elsewhere"
        ]
    );
    assert_eq!(found[0].details["address_node"], "node-c");
    assert!(
        b.restore(b"{\"version\":99,\"clock\":0,\"clusters\":[]}")
            .is_err()
    );
    assert!(b.restore(b"not json").is_err());
}

/// Several instances sharing a store: the instance a cluster moves to
/// (a Kafka rebalance) reads what the previous one learned of it, cluster
/// by cluster, before it checks the cluster's next event.
#[test]
fn shared_state_moves_with_a_cluster_between_instances() {
    let cfg = config(PROD);
    let mut a = TokenDetector::new(&cfg).unwrap();
    a.share_state();
    learn_node_and_mint(&mut a);
    let snaps = a.take_cluster_snapshots();
    let names: Vec<&str> = snaps.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, ["default"], "one snapshot per cluster changed");
    assert!(
        a.take_cluster_snapshots().is_empty(),
        "nothing changed since"
    );

    let mut b = TokenDetector::new(&cfg).unwrap();
    b.share_state();
    // First sight of the cluster here: its state is wanted, once.
    assert!(b.wants_load("default", 1_000));
    assert!(!b.wants_load("default", 1_010));
    b.load_cluster(&snaps[0].1).unwrap();
    let found = use_minted_elsewhere(&mut b);
    let rules: Vec<&str> = found.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(
        rules,
        [
            "token-bound-pod-elsewhere",
            "token-issued-then-used-elsewhere"
        ],
        "what instance a learned is known to instance b"
    );
    // Unheard for RELOAD_AFTER: another instance may have had it.
    assert!(b.wants_load("default", 1_010 + RELOAD_AFTER));
    // Without sharing, nothing is ever wanted.
    let mut solo = TokenDetector::new(&cfg).unwrap();
    assert!(!solo.wants_load("default", 1_000));
    assert!(solo.take_cluster_snapshots().is_empty());
    assert!(b.load_cluster(b"not json").is_err());
}

fn with_extra(n: usize, user: &str, ip: &str, extra: Value, over: Value) -> String {
    let mut e: Value = serde_json::from_str(&ev(n, over)).unwrap();
    e["user"] = json!({"username": user, "extra": extra});
    e["sourceIPs"] = json!([ip]);
    e.to_string()
}

fn bound_to(jti: &str, pod: &str, node: &str) -> Value {
    json!({
        "authentication.kubernetes.io/credential-id": [format!("JTI={jti}")],
        "authentication.kubernetes.io/pod-name": [pod],
        "authentication.kubernetes.io/node-name": [node],
    })
}

/// Review: a client-chosen Audit-ID repeated on every probe must not hide
/// a burst; one request retried is a misconfiguration, not a probe.
#[test]
fn forbidden_burst_is_not_hidden_by_a_reused_audit_id() {
    let mut d = detector(&config(PROD));
    let probe = |n: usize, ns: &str| {
        let mut e: Value = serde_json::from_str(&ev(
            n,
            json!({
                "requestURI": format!("/api/v1/namespaces/{ns}/secrets"),
                "objectRef": {"resource": "secrets", "namespace": ns, "apiVersion": "v1"},
                "responseStatus": {"code": 403},
                "annotations": {"authorization.k8s.io/decision": "forbid"}
            }),
        ))
        .unwrap();
        e["auditID"] = "probe".into();
        e.to_string()
    };
    let events: Vec<String> = (0..12).map(|n| probe(n, &format!("ns{n}"))).collect();
    assert!(ids(&run(&mut d, &events)).contains(&"token-forbidden-burst"));
    // kube-state-metrics without RBAC for cronjobs: the same list, retried.
    let mut d = detector(&config(PROD));
    let retry: Vec<String> = (0..30)
        .map(|n| {
            ev(
                n,
                json!({
                    "requestURI": "/apis/batch/v1/cronjobs?limit=500",
                    "objectRef": {"resource": "cronjobs", "apiGroup": "batch", "apiVersion": "v1"},
                    "responseStatus": {"code": 403}
                }),
            )
        })
        .collect();
    assert!(!ids(&run(&mut d, &retry)).contains(&"token-forbidden-burst"));
}

/// Review: a token minted for a year at Metadata level (no body) and used
/// elsewhere two days later is still caught.
#[test]
fn long_lived_minted_token_is_remembered() {
    let mut d = detector(&config(PROD));
    let mint = ev(
        1,
        json!({
            "verb": "create", "requestURI": "/api/v1/namespaces/shop/serviceaccounts/web/token",
            "user": {"username": "alice@example.com"}, "sourceIPs": ["198.51.100.30"],
            "userAgent": "kubectl/v1.30.2",
            "objectRef": {"resource": "serviceaccounts", "namespace": "shop", "name": "web", "subresource": "token"},
            "responseStatus": {"code": 201},
            "annotations": {"authentication.kubernetes.io/issued-credential-id": "JTI=aaaa"}
        }),
    );
    let mut used: Value = serde_json::from_str(&with_extra(
        2,
        "system:serviceaccount:shop:web",
        "10.244.9.9",
        json!({"authentication.kubernetes.io/credential-id": ["JTI=aaaa"]}),
        json!({"userAgent": "python-requests/2.31.0"}),
    ))
    .unwrap();
    used["requestReceivedTimestamp"] = "2026-11-04T23:00:00Z".into();
    let found = run(&mut d, &[mint, used.to_string()]);
    assert!(
        ids(&found).contains(&"token-issued-then-used-elsewhere"),
        "{found:?}"
    );
}

/// Reading the same logs again (a re-scan, a redelivery after a restart)
/// with the state the first reading saved finds the same findings: the
/// first permission review stays the first (token-recon), it does not turn
/// into a routine review the catalogue rule then reports as new.
#[test]
fn the_first_review_read_again_is_still_the_first() {
    let sa = "system:serviceaccount:shop:web";
    let review = |n: usize| {
        with_extra(
            n,
            sa,
            "10.244.1.23",
            bound_to("one", "web-1", "node-a"),
            json!({
                "verb": "create", "requestURI": "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                "objectRef": {"resource": "selfsubjectaccessreviews", "apiGroup": "authorization.k8s.io"},
                "responseStatus": {"code": 201}
            }),
        )
    };
    let mut first = detector(&config(PROD));
    assert_eq!(ids(&run(&mut first, &[review(1)])), ["token-recon"]);
    let saved = first.token_mut().unwrap().take_snapshot().unwrap();
    let mut again = detector(&config(PROD));
    again.token_mut().unwrap().restore(&saved).unwrap();
    assert_eq!(ids(&run(&mut again, &[review(1)])), ["token-recon"]);
    // A later review by the same account is routine: the catalogue's.
    assert_eq!(
        ids(&run(&mut again, &[review(2)])),
        ["rbac-self-permission-review"]
    );
}

/// Review: a stolen token used from an attacker's pod, then a permission
/// check, is recon (high) even when the account reviewed before; a new pod
/// of the same workload (a new token) is not.
#[test]
fn recon_follows_the_token_not_the_pod_network() {
    let mut d = detector(&config(PROD));
    let sa = "system:serviceaccount:shop:web";
    let review = |n: usize, jti: &str, ip: &str| {
        with_extra(
            n,
            sa,
            ip,
            bound_to(jti, "web-1", "node-a"),
            json!({
                "verb": "create", "requestURI": "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                "objectRef": {"resource": "selfsubjectaccessreviews", "apiGroup": "authorization.k8s.io"},
                "responseStatus": {"code": 201}
            }),
        )
    };
    let use_ = |n: usize, jti: &str, ip: &str| {
        with_extra(n, sa, ip, bound_to(jti, "web-1", "node-a"), json!({}))
    };
    let found = run(
        &mut d,
        &[
            use_(1, "one", "10.244.1.23"),
            review(2, "one", "10.244.1.23"),
        ],
    );
    assert_eq!(found, [("token-recon".to_owned(), "medium".to_owned())]);
    // The next pod (its own token) checks again: routine.
    let found = run(
        &mut d,
        &[
            use_(3, "two", "10.244.1.40"),
            review(4, "two", "10.244.1.40"),
        ],
    );
    assert_eq!(ids(&found), ["rbac-self-permission-review"], "{found:?}");
    // Token one, copied into another pod, checks what it may do.
    let found = run(&mut d, &[review(5, "one", "10.244.7.7")]);
    assert!(
        found.contains(&("token-recon".to_owned(), "high".to_owned())),
        "{found:?}"
    );
}

/// Review: identities exempted in the rule token-recon refines are exempt.
#[test]
fn recon_honours_the_catalogue_exceptions() {
    let mut sources = crate::detect::builtin_sources();
    sources.push(crate::detect::RuleSource {
        name: "t.yaml".into(),
        text: "lists:\n  rbac_self_review_users: {append: [\"system:serviceaccount:shop:web\"]}\n"
            .into(),
        dir: None,
    });
    let rules = Arc::new(RuleSet::compile(&sources).unwrap());
    let mut d = Detector::with_token(rules, TokenDetector::new(&config(PROD)).unwrap());
    let review = ev(
        1,
        json!({
            "verb": "create", "requestURI": "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "objectRef": {"resource": "selfsubjectaccessreviews", "apiGroup": "authorization.k8s.io"},
            "responseStatus": {"code": 201}
        }),
    );
    assert!(run(&mut d, &[review]).is_empty());
}

/// Review: hostNetwork pods before their node's kubelet was seen, and a
/// node credential used from another node's address.
#[test]
fn node_addresses_are_neither_guessed_nor_taken_over() {
    let mut d = detector(&config(PROD));
    let proxy = |n: usize| {
        with_extra(
            n,
            "system:serviceaccount:kube-system:kube-proxy",
            "10.0.1.12",
            bound_to("kp", "kube-proxy-1", "node-b"),
            json!({}),
        )
    };
    // node-b's kubelet not seen yet: its address could be node-b's.
    assert!(run(&mut d, &[proxy(1)]).is_empty());
    let kubelet = |n: usize, node: &str, ip: &str| {
        ev(
            n,
            json!({"user": {"username": format!("system:node:{node}")}, "sourceIPs": [ip]}),
        )
    };
    // node-b talks from 10.0.1.12; then node-a's credential from there.
    let found = run(
        &mut d,
        &[
            kubelet(2, "node-b", "10.0.1.12"),
            kubelet(3, "node-a", "10.0.1.12"),
            proxy(4),
        ],
    );
    assert!(found.is_empty(), "node-b's own pod stays quiet: {found:?}");
}

#[test]
fn secret_reads_by_controllers_and_automation_are_quiet() {
    let mut d = detector(&config(PROD));
    let list = |n: usize, user: &str, ns: &str| {
        ev(
            n,
            json!({
                "requestURI": format!("/api/v1/namespaces/{ns}/secrets"), "user": {"username": user},
                "objectRef": {"resource": "secrets", "namespace": ns, "apiVersion": "v1"}
            }),
        )
    };
    let found = run(
        &mut d,
        &[
            list(
                1,
                "system:serviceaccount:kube-system:namespace-controller",
                "old-team",
            ),
            list(2, "system:serviceaccount:vault:vault", "shop"),
            list(3, "system:serviceaccount:shop:web", "payments"),
            list(4, "system:serviceaccount:shop:web", "payments"),
        ],
    );
    assert_eq!(found, [("token-secret-read".to_owned(), "high".to_owned())]);
}

#[test]
fn late_stages_do_not_reset_the_throttle() {
    let mut d = detector(&config(PROD));
    let at = |n: usize, ts: &str| {
        let mut e: Value =
            serde_json::from_str(&ev(n, json!({"sourceIPs": ["203.0.113.9"]}))).unwrap();
        e["requestReceivedTimestamp"] = ts.into();
        e.to_string()
    };
    let found = run(
        &mut d,
        &[
            at(1, "2026-11-03T10:00:50Z"),
            at(2, "2026-11-03T10:00:10Z"), // a long request, logged late
            at(3, "2026-11-03T10:01:30Z"),
        ],
    );
    assert_eq!(ids(&found), ["token-outside-cluster"], "{found:?}");
}

#[test]
fn interactive_client_found_past_a_leading_space() {
    let mut d = detector(&config(PROD));
    let raw = ev(
        1,
        json!({"userAgent": " kubectl/v1.30.2 (linux/amd64)", "sourceIPs": ["10.0.1.11"]}),
    );
    assert_eq!(ids(&run(&mut d, &[raw])), ["token-interactive-client"]);
}
