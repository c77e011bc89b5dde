//! `Finding`: what a detection produces, in the JSON format DESIGN.md fixes
//! (one per line in jsonl output, exports and webhooks).
//!
//! This module owns the format, the severity scale and the finding id. A
//! finding is built from the event that triggered it; its `evidence` is that
//! event, redacted (`crate::redact`). Rendering for a medium is elsewhere.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::AuditEvent;

/// The cluster name used for events that carry none.
pub const DEFAULT_CLUSTER: &str = "default";

/// kaudit's own judgment of how bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown severity {s:?}: expected info, low, medium, high or critical")
            })
    }
}

/// What a rule says about itself; shared by every finding it produces.
#[derive(Debug, Clone)]
pub struct RuleMeta {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub category: String,
    pub mitre: Vec<String>,
    /// The rules this one replaces in other tools (`falco`, `sigma`, ...).
    pub references: BTreeMap<String, String>,
}

impl RuleMeta {
    /// The description of a rule written in code (no references).
    pub fn builtin(
        id: &str,
        title: &str,
        severity: Severity,
        category: &str,
        mitre: &[&str],
    ) -> RuleMeta {
        RuleMeta {
            id: id.into(),
            title: title.into(),
            severity,
            category: category.into(),
            mitre: mitre.iter().map(|m| (*m).to_owned()).collect(),
            references: BTreeMap::new(),
        }
    }
}

/// One finding. Field order and names are the documented format.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub rule_id: String,
    pub rule_title: String,
    pub severity: Severity,
    pub category: String,
    pub mitre: Vec<String>,
    pub references: BTreeMap<String, String>,
    pub cluster: String,
    pub audit_id: String,
    pub stage: Option<String>,
    pub time: Option<String>,
    pub user: String,
    pub groups: Vec<String>,
    pub impersonated_user: Option<String>,
    pub source_ips: Vec<String>,
    pub user_agent: Option<String>,
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub request_uri: Option<String>,
    pub summary: String,
    pub details: serde_json::Value,
    pub evidence: serde_json::Value,
}

/// The stable id of the finding of `rule_id` on request `audit_id` in
/// `cluster`: the same across runs, restarts and instances.
pub fn finding_id(cluster: &str, audit_id: &str, rule_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [cluster, audit_id, rule_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

impl Finding {
    /// Builds a finding of `rule` from the event that triggered it.
    pub fn from_event(
        rule: &RuleMeta,
        ev: &AuditEvent<'_>,
        severity: Severity,
        summary: String,
        details: serde_json::Value,
    ) -> Finding {
        let evidence = Evidence::of(ev);
        evidence.finding(rule, ev, severity, summary, details)
    }
}

/// An event's redacted evidence, and the event read back from it: every
/// field of a finding is taken from the redacted view, so that a secret
/// removed from the evidence (`--password X` in an exec command, a token in
/// a query string) does not come back through `request_uri`, `summary` or
/// `details` (DESIGN: secrets are redacted before anything is stored or
/// sent).
pub struct Evidence {
    /// The redacted event.
    pub value: serde_json::Value,
    /// Its JSON text, when it reads back as an audit event (not for GKE,
    /// whose evidence is a LogEntry).
    text: Option<String>,
}

impl Evidence {
    pub fn of(ev: &AuditEvent<'_>) -> Evidence {
        match crate::redact::redact_event(ev.raw) {
            Ok(value) => {
                let text = serde_json::to_string(&value).ok();
                Evidence { value, text }
            }
            // The decoder parsed this text already; should it still fail,
            // keep no evidence rather than unredacted text.
            Err(e) => Evidence {
                value: serde_json::json!({ "unavailable": e.to_string() }),
                text: None,
            },
        }
    }

    /// The redacted event as an `AuditEvent` (with `ev`'s cluster and
    /// origin), or `None` when the evidence is not an audit event.
    pub fn event<'t>(&'t self, ev: &AuditEvent<'_>) -> Option<AuditEvent<'t>> {
        let text = self.text.as_deref()?;
        let mut red = AuditEvent::parse(text).ok()?;
        red.validate().ok()?;
        red.cluster = ev
            .cluster
            .as_deref()
            .map(|c| std::borrow::Cow::Owned(c.to_owned()));
        red.origin = ev.origin;
        Some(red)
    }

    /// Builds the finding; its fields come from the redacted view, and
    /// `summary` and `details` are redacted once more as text.
    pub fn finding(
        self,
        rule: &RuleMeta,
        ev: &AuditEvent<'_>,
        severity: Severity,
        summary: String,
        details: serde_json::Value,
    ) -> Finding {
        let mut rest = serde_json::json!({"summary": summary, "details": details});
        crate::redact::redact_value(&mut rest);
        let summary = rest["summary"].as_str().unwrap_or_default().to_owned();
        let details = rest["details"].take();
        let evidence = self.value.clone();
        match self.event(ev) {
            Some(red) => Finding::build(rule, &red, severity, summary, details, evidence),
            None => {
                let mut f = Finding::build(rule, ev, severity, summary, details, evidence);
                let mut uri =
                    serde_json::json!({"requestURI": f.request_uri, "userAgent": f.user_agent});
                crate::redact::redact_value(&mut uri);
                f.request_uri = uri["requestURI"].as_str().map(str::to_owned);
                f.user_agent = uri["userAgent"].as_str().map(str::to_owned);
                f
            }
        }
    }
}

impl Finding {
    fn build(
        rule: &RuleMeta,
        ev: &AuditEvent<'_>,
        severity: Severity,
        summary: String,
        details: serde_json::Value,
        evidence: serde_json::Value,
    ) -> Finding {
        let cluster = ev.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
        let audit_id = ev.audit_id();
        let s = |c: &Option<std::borrow::Cow<'_, str>>| c.as_deref().map(str::to_owned);
        Finding {
            id: finding_id(cluster, audit_id, &rule.id),
            rule_id: rule.id.clone(),
            rule_title: rule.title.clone(),
            severity,
            category: rule.category.clone(),
            mitre: rule.mitre.clone(),
            references: rule.references.clone(),
            cluster: cluster.to_owned(),
            audit_id: audit_id.to_owned(),
            stage: ev.stage.map(|s| s.as_str().to_owned()),
            time: s(&ev.request_received_timestamp),
            user: ev.username().to_owned(),
            groups: ev.user.groups.iter().map(|g| g.to_string()).collect(),
            impersonated_user: ev
                .impersonated_user
                .as_ref()
                .and_then(|u| u.username.as_deref())
                .map(str::to_owned),
            source_ips: ev.source_ips.iter().map(|i| i.to_string()).collect(),
            user_agent: s(&ev.user_agent),
            verb: ev.verb().to_owned(),
            resource: ev.resource().to_owned(),
            subresource: ev.object_ref.as_ref().and_then(|o| s(&o.subresource)),
            namespace: ev.object_ref.as_ref().and_then(|o| s(&o.namespace)),
            name: ev.object_ref.as_ref().and_then(|o| s(&o.name)),
            request_uri: s(&ev.request_uri),
            summary,
            details,
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_unambiguous() {
        assert_eq!(finding_id("c", "a", "r"), finding_id("c", "a", "r"));
        assert_ne!(finding_id("c", "a", "r"), finding_id("c", "a", "s"));
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(finding_id("ab", "c", "r"), finding_id("a", "bc", "r"));
        assert_eq!(finding_id("c", "a", "r").len(), 32);
    }

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Info < Severity::Low && Severity::High < Severity::Critical);
        assert_eq!("HIGH".parse::<Severity>(), Ok(Severity::High));
        assert!("urgent".parse::<Severity>().is_err());
    }
}
