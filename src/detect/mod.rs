//! Detection: audit events in, findings out.
//!
//! Rules are YAML (`rules/*.yaml`, compiled into the binary, plus user
//! files): `ruleset` loads and compiles them, `condition` is the condition
//! language, `field` reads event fields, `prefilter` dismisses events no rule
//! can match with one aho-corasick pass. [`Detector`] runs the compiled set
//! on each event and remembers which (cluster, auditID, rule) it has already
//! reported, so that a request logged at several stages, or delivered twice,
//! yields one finding. The stateful `token` detectors run beside the rules;
//! where one refines a catalogue rule, its finding replaces that rule's on
//! the same request. Detection never fails and stores nothing: the caller
//! decides what to do with a finding.

mod condition;
mod field;
pub mod pipeline;
mod prefilter;
mod ruleset;
pub mod token;

use std::sync::Arc;

use crate::event::AuditEvent;
use crate::finding::Finding;

pub use ruleset::{Expect, LoadError, Rule, RuleError, RuleSet, RuleSource, TestOutcome};

/// The built-in catalogue, compiled into the binary.
const BUILTIN: &[(&str, &str)] = &[
    ("rules/base.yaml", include_str!("../../rules/base.yaml")),
    ("rules/exec.yaml", include_str!("../../rules/exec.yaml")),
    (
        "rules/impersonation.yaml",
        include_str!("../../rules/impersonation.yaml"),
    ),
    ("rules/access.yaml", include_str!("../../rules/access.yaml")),
    (
        "rules/workloads.yaml",
        include_str!("../../rules/workloads.yaml"),
    ),
    ("rules/rbac.yaml", include_str!("../../rules/rbac.yaml")),
    (
        "rules/secrets.yaml",
        include_str!("../../rules/secrets.yaml"),
    ),
    (
        "rules/security-floor.yaml",
        include_str!("../../rules/security-floor.yaml"),
    ),
    (
        "rules/activity.yaml",
        include_str!("../../rules/activity.yaml"),
    ),
];

/// The built-in rule files.
pub fn builtin_sources() -> Vec<RuleSource> {
    BUILTIN
        .iter()
        .map(|(name, text)| RuleSource {
            name: (*name).to_owned(),
            text: (*text).to_owned(),
            dir: None,
        })
        .collect()
}

/// Findings remembered for deduplication at most.
const SEEN: std::num::NonZeroUsize = std::num::NonZeroUsize::new(1 << 18).unwrap();

/// Runs a rule set (and the token detectors) and suppresses repeats within
/// its lifetime.
pub struct Detector {
    rules: Arc<RuleSet>,
    token: Option<token::TokenDetector>,
    /// Findings already reported: id → fingerprint of the request that
    /// produced it. A repeat with the same fingerprint is another stage or
    /// a redelivery; a different fingerprint is a reused auditID. Bounded
    /// ([`SEEN`] most recent, about 64 bytes each): the stages of one
    /// request arrive close together, and with a store a finding older
    /// than that is still recognised there (unique on cluster, auditID and
    /// rule), so a daemon's memory stays flat however long it runs.
    seen: lru::LruCache<[u8; 16], u64, ahash::RandomState>,
    /// The findings of the event being checked (kept to reuse its buffer).
    batch: Vec<Finding>,
}

impl Detector {
    /// The rules alone.
    pub fn new(rules: Arc<RuleSet>) -> Self {
        Detector {
            rules,
            token: None,
            seen: lru::LruCache::with_hasher(SEEN, ahash::RandomState::new()),
            batch: Vec::new(),
        }
    }

    /// The rules and the stateful token detectors.
    pub fn with_token(rules: Arc<RuleSet>, mut token: token::TokenDetector) -> Self {
        token.use_lists(&rules);
        Detector {
            token: Some(token),
            ..Detector::new(rules)
        }
    }

    /// Replaces the rules (a reload); what was reported and the token
    /// detectors' state are kept.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        if let Some(t) = &mut self.token {
            t.use_lists(&rules);
        }
        self.rules = rules;
    }

    pub fn token(&self) -> Option<&token::TokenDetector> {
        self.token.as_ref()
    }

    pub fn token_mut(&mut self) -> Option<&mut token::TokenDetector> {
        self.token.as_mut()
    }

    /// Runs every rule on `ev`, calling `found` for each new finding.
    pub fn check(&mut self, ev: &AuditEvent<'_>, found: &mut dyn FnMut(Finding)) {
        let mut batch = std::mem::take(&mut self.batch);
        let checked = self.rules.check(ev, &mut |_, f| batch.push(f));
        let from_rules = batch.len();
        if let Some(t) = &mut self.token {
            t.check(ev, &mut batch);
        }
        if batch.is_empty() && !checked.body_unreadable {
            // Nothing found: the common case costs no fingerprint.
            self.batch = batch;
            return;
        }
        let fp = fingerprint(ev);
        if batch.len() > from_rules && from_rules > 0 {
            for id in supersede(&mut batch, from_rules) {
                // Never reported later either (another stage of the request).
                self.seen.put(key(&id), fp);
            }
        }
        let seen = &mut self.seen;
        let mut reused = false;
        for mut f in batch.drain(..) {
            match seen.get(&key(&f.id)).copied() {
                None => {
                    seen.put(key(&f.id), fp);
                    found(f);
                }
                Some(old) if old == fp => {}
                Some(_) => {
                    // Another request under the same auditID: its findings are
                    // its own, tracked under the id plus its fingerprint.
                    let alias = format!("{}#{fp:016x}", ev.audit_id());
                    pipeline::rekey(&mut f, &alias);
                    if let serde_json::Value::Object(d) = &mut f.details {
                        d.insert("original_audit_id".into(), ev.audit_id().into());
                    }
                    if seen.put(key(&f.id), fp).is_none() {
                        reused = true;
                        found(f);
                    }
                }
            }
        }
        self.batch = batch;
        if reused {
            let alias = format!("{}#{fp:016x}", ev.audit_id());
            let f = pipeline::audit_id_reused(ev, &alias);
            if seen.put(key(&f.id), fp).is_none() {
                found(f);
            }
        }
        if checked.body_unreadable {
            let f = pipeline::body_unreadable(ev);
            if seen.put(key(&f.id), fp).is_none() {
                found(f);
            }
        }
    }

    /// Reports a finding made outside the rules (a pipeline problem), once.
    pub fn report(&mut self, f: Finding, found: &mut dyn FnMut(Finding)) {
        if self.seen.put(key(&f.id), 0).is_none() {
            found(f);
        }
    }
}

/// Drops the rule findings (`batch[..from_rules]`) that a token finding
/// after them supersedes; the token finding takes the higher severity and
/// names the rule it refines. Returns the dropped findings' ids.
fn supersede(batch: &mut Vec<Finding>, from_rules: usize) -> Vec<String> {
    let mut dropped = vec![false; from_rules];
    for i in from_rules..batch.len() {
        let replaces = token::supersedes(&batch[i].rule_id);
        for (j, gone) in dropped.iter_mut().enumerate() {
            if replaces.contains(&batch[j].rule_id.as_str()) {
                *gone = true;
                let (sev, rule) = (batch[j].severity, batch[j].rule_id.clone());
                let f = &mut batch[i];
                f.severity = f.severity.max(sev);
                if let serde_json::Value::Object(d) = &mut f.details {
                    d.insert("refines".into(), rule.into());
                }
            }
        }
    }
    let mut ids = Vec::new();
    let mut i = 0;
    batch.retain(|f| {
        let keep = i >= from_rules || !dropped[i];
        if !keep {
            ids.push(f.id.clone());
        }
        i += 1;
        keep
    });
    ids
}

/// A finding id as 16 bytes (ids are 32 hex digits).
fn key(id: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    if hex::decode_to_slice(id, &mut k).is_err() {
        // Not an id we made: hash it instead, still stable.
        let h = <sha2::Sha256 as sha2::Digest>::digest(id.as_bytes());
        k.copy_from_slice(&h[..16]);
    }
    k
}

/// What identifies one request across its stages and redeliveries: the
/// auditID alone does not (a client can choose it).
fn fingerprint(ev: &AuditEvent<'_>) -> u64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [
        ev.request_received_timestamp.as_deref().unwrap_or(""),
        ev.verb(),
        ev.request_uri.as_deref().unwrap_or(""),
        ev.username(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No two built-in files define the same list or macro: a later file
    /// would silently replace an earlier one's.
    #[test]
    fn builtin_files_do_not_redefine_names() {
        #[derive(serde::Deserialize)]
        struct Names {
            #[serde(default)]
            lists: std::collections::BTreeMap<String, serde_yaml_ng::Value>,
            #[serde(default)]
            macros: std::collections::BTreeMap<String, serde_yaml_ng::Value>,
        }
        let mut seen = std::collections::HashMap::new();
        for (file, text) in BUILTIN {
            let names: Names = serde_yaml_ng::from_str(text).unwrap();
            for name in names
                .lists
                .keys()
                .map(|n| format!("list {n}"))
                .chain(names.macros.keys().map(|n| format!("macro {n}")))
            {
                if let Some(first) = seen.insert(name.clone(), *file) {
                    panic!("{name} is defined in {first} and again in {file}");
                }
            }
        }
    }

    fn rule_ids(
        set: &RuleSet,
        raw: &str,
        filtered: bool,
    ) -> Vec<(String, crate::finding::Severity)> {
        let Ok(ev) = AuditEvent::parse(raw) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut push = |r: &Rule, f: Finding| out.push((r.meta.id.clone(), f.severity));
        if filtered {
            set.check(&ev, &mut push);
        } else {
            set.check_unfiltered(&ev, &mut push);
        }
        out
    }

    /// Every event the repository holds, one JSON text per entry.
    fn corpus() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        let mut files = vec![
            root.join("fixtures/envelopes/k8s/audit.log"),
            root.join("fixtures/envelopes/malformed/mixed.jsonl"),
        ];
        if let Ok(rd) = std::fs::read_dir(root.join("../shared/peers/falco/events")) {
            files.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
        }
        for f in files {
            let bytes = std::fs::read(f).unwrap_or_default();
            for line in String::from_utf8_lossy(&bytes).lines() {
                if line.trim_start().starts_with('{') {
                    out.push(line.to_owned());
                }
            }
        }
        // Built-in test events too: they are written to hit each rule.
        let set = RuleSet::load(&[]).unwrap();
        for r in set.rules() {
            for t in &r.tests {
                out.extend(t.events.iter().cloned());
            }
        }
        out
    }

    /// The prefilter never hides a match: on every event we have, and on
    /// each with random letters upper-cased or `\u00XX`-escaped, the
    /// filtered and unfiltered rule sets find the same.
    #[test]
    fn prefilter_agrees_with_full_evaluation() {
        use proptest::prelude::*;
        let set = RuleSet::load(&[]).unwrap();
        let corpus = corpus();
        assert!(corpus.len() > 50);
        let mut matched = 0;
        for raw in &corpus {
            let a = rule_ids(&set, raw, true);
            assert_eq!(a, rule_ids(&set, raw, false), "{raw}");
            matched += a.len();
        }
        assert!(
            matched >= 15,
            "the corpus should exercise the rules: {matched}"
        );
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(
                    0..corpus.len(),
                    proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3), 1..6),
                ),
                |(i, edits)| {
                    let mut chars: Vec<char> = corpus[i].chars().collect();
                    let mut out = String::new();
                    let targets: Vec<(usize, u8)> = edits
                        .iter()
                        .map(|(ix, k)| (ix.index(chars.len()), *k))
                        .collect();
                    for (pos, c) in chars.drain(..).enumerate() {
                        match targets.iter().find(|(p, _)| *p == pos).map(|(_, k)| *k) {
                            Some(0) if c.is_ascii_alphanumeric() => {
                                out.push_str(&format!("\\u{:04x}", c as u32))
                            }
                            Some(1) => out.push(c.to_ascii_uppercase()),
                            _ => out.push(c),
                        }
                    }
                    prop_assert_eq!(rule_ids(&set, &out, true), rule_ids(&set, &out, false));
                    Ok(())
                },
            )
            .unwrap();
    }

    fn exec(id: &str, ts: &str, ns: &str, cmd: &str) -> String {
        format!(
            r#"{{"auditID":"{id}","stage":"ResponseStarted","requestReceivedTimestamp":"{ts}","verb":"create","requestURI":"/api/v1/namespaces/{ns}/pods/p/exec?command={cmd}","user":{{"username":"mallory"}},"objectRef":{{"resource":"pods","subresource":"exec","namespace":"{ns}","name":"p"}}}}"#
        )
    }

    fn run(events: &[String]) -> Vec<Finding> {
        let mut d = Detector::new(Arc::new(RuleSet::load(&[]).unwrap()));
        let mut out = Vec::new();
        for raw in events {
            let ev = AuditEvent::parse(raw).unwrap();
            d.check(&ev, &mut |f| out.push(f));
        }
        out
    }

    /// Regression (review): a client-chosen Audit-ID reused for a second
    /// request must not hide that request's findings.
    #[test]
    fn reused_audit_id_does_not_hide_a_finding() {
        let first = exec("fixed", "2026-11-28T01:00:00.000000Z", "dev", "ls");
        let again = first.replace("ResponseStarted", "ResponseComplete");
        let attack = exec(
            "fixed",
            "2026-11-28T01:05:00.000000Z",
            "kube-system",
            "cat+%2Fvar%2Frun%2Fsecrets%2Fkubernetes.io%2Fserviceaccount%2Ftoken",
        );
        let f = run(&[first, again, attack]);
        let ids: Vec<&str> = f.iter().map(|f| f.rule_id.as_str()).collect();
        assert_eq!(
            ids.iter().filter(|r| **r == "pod-exec").count(),
            2,
            "{ids:?}"
        );
        assert!(ids.contains(&"audit-id-reused"), "{ids:?}");
        let second = f.iter().filter(|f| f.rule_id == "pod-exec").nth(1).unwrap();
        assert_eq!(second.severity, crate::finding::Severity::Critical);
        assert!(second.audit_id.starts_with("fixed#"));
        assert_eq!(second.details["original_audit_id"], "fixed");
    }

    /// Regression (review): a secret redacted from the evidence must not come
    /// back through request_uri, summary or details.
    #[test]
    fn no_secret_leaves_through_the_finding_fields() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let raw = exec(
            "s1",
            "2026-11-28T01:00:00.000000Z",
            "prod",
            &format!(
                "mysql&command=--password&command=hunter2&command=-e&command=curl+-H+%22Authorization%3A+Bearer+{jwt}%22"
            ),
        );
        let f = run(&[raw]);
        let exec = f
            .iter()
            .find(|f| f.rule_id == "pod-exec")
            .expect("the exec is found");
        let text = serde_json::to_string(exec).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains(jwt), "{text}");
        assert!(text.contains("[redacted sha256:"), "{text}");
        assert_eq!(exec.details["command"][0], "mysql");
    }

    /// Regression (review): padding a patch body past serde_json's depth
    /// limit must not silently blind the body rules.
    #[test]
    fn body_too_deep_to_read_is_a_finding() {
        let raw = format!(
            r#"{{"auditID":"deep","stage":"ResponseComplete","verb":"create","requestURI":"/api/v1/namespaces/a/pods","user":{{"username":"eve"}},"objectRef":{{"resource":"pods","namespace":"a"}},"responseStatus":{{"code":201}},"requestObject":{{"kind":"Pod","spec":{{"hostPID":true,"containers":[{{"image":"x","securityContext":{{"privileged":true}}}}]}},"pad":{}1{}}}}}"#,
            "[".repeat(1000),
            "]".repeat(1000)
        );
        let f = run(&[raw]);
        assert!(
            f.iter().any(|f| f.rule_id == "request-body-unreadable"),
            "{:?}",
            f.iter().map(|f| &f.rule_id).collect::<Vec<_>>()
        );
    }

    /// The catalogue compiles, and every rule carries positive and negative
    /// inline tests, which pass.
    #[test]
    fn builtin_catalogue_is_tested_and_passes() {
        let set = RuleSet::load(&[]).unwrap();
        for rule in set.rules() {
            let kinds: Vec<Expect> = rule.tests.iter().map(|t| t.expect).collect();
            assert!(
                kinds.contains(&Expect::Match) && kinds.contains(&Expect::NoMatch),
                "rule {} needs a positive and a negative test",
                rule.meta.id
            );
        }
        let failures: Vec<String> = set
            .run_tests()
            .into_iter()
            .filter_map(|t| {
                t.failure
                    .map(|f| format!("{} {}: {f}", t.rule.meta.id, t.label))
            })
            .collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
