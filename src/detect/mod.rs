//! Detection: audit events in, findings out.
//!
//! Rules are YAML (`rules/*.yaml`, compiled into the binary, plus user
//! files): `ruleset` loads and compiles them, `condition` is the condition
//! language, `field` reads event fields, `prefilter` dismisses events no rule
//! can match with one aho-corasick pass. [`Detector`] runs the compiled set
//! on each event and remembers which (cluster, auditID, rule) it has already
//! reported, so that a request logged at several stages, or delivered twice,
//! yields one finding. Detection never fails and stores nothing: the caller
//! decides what to do with a finding.

mod condition;
mod field;
mod prefilter;
mod ruleset;

use std::collections::HashSet;
use std::sync::Arc;

use crate::event::AuditEvent;
use crate::finding::{DEFAULT_CLUSTER, Finding, finding_id};

pub use ruleset::{Expect, LoadError, Rule, RuleError, RuleSet, RuleSource, TestOutcome};

/// The built-in catalogue, compiled into the binary.
const BUILTIN: &[(&str, &str)] = &[("rules/exec.yaml", include_str!("../../rules/exec.yaml"))];

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

/// Runs a rule set and suppresses repeats within its lifetime.
pub struct Detector {
    rules: Arc<RuleSet>,
    /// Ids of findings already reported (16 bytes each: a scan of millions
    /// of findings stays small).
    seen: HashSet<[u8; 16]>,
}

impl Detector {
    pub fn new(rules: Arc<RuleSet>) -> Self {
        Detector {
            rules,
            seen: HashSet::new(),
        }
    }

    /// Runs every rule on `ev`, calling `found` for each new finding.
    pub fn check(&mut self, ev: &AuditEvent<'_>, found: &mut dyn FnMut(Finding)) {
        let seen = &mut self.seen;
        self.rules.check(ev, &mut |rule, f| {
            let cluster = ev.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
            let id = finding_id(cluster, ev.audit_id(), &rule.meta.id);
            let mut key = [0u8; 16];
            if hex::decode_to_slice(&id, &mut key).is_ok() && seen.insert(key) {
                found(f);
            }
        });
    }
}
