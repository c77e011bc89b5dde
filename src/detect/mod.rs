//! Detection: audit events in, findings out.
//!
//! `Detector` runs every detection on each event and remembers which
//! (cluster, auditID, rule) it has already reported, so that a request
//! logged at several stages, or delivered twice, yields one finding.
//! The detections themselves live in submodules; today that is the small
//! built-in set in `builtin` (exec, attach, port-forward), which the rule
//! engine will replace. Detection never fails and never stores anything:
//! the caller decides what to do with a finding.

mod builtin;

use std::collections::HashSet;

use crate::event::AuditEvent;
use crate::finding::{DEFAULT_CLUSTER, Finding, finding_id};

pub use builtin::RULES;

/// Runs detections and suppresses repeats within its lifetime.
#[derive(Default)]
pub struct Detector {
    /// Ids of findings already reported (16 bytes each: a scan of millions
    /// of findings stays small).
    seen: HashSet<[u8; 16]>,
}

impl Detector {
    pub fn new() -> Self {
        Detector::default()
    }

    /// Runs every detection on `ev`, calling `found` for each new finding.
    pub fn check(&mut self, ev: &AuditEvent<'_>, found: &mut dyn FnMut(Finding)) {
        for rule in builtin::candidates(ev) {
            let cluster = ev.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
            let id = finding_id(cluster, ev.audit_id(), rule.id);
            let mut key = [0u8; 16];
            if hex::decode_to_slice(&id, &mut key).is_err() || !self.seen.insert(key) {
                continue;
            }
            found(builtin::finding(rule, ev));
        }
    }
}
