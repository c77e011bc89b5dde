//! Detections written in code rather than YAML: what the input itself says
//! about evasion or a broken log pipeline.
//!
//! - `audit-id-reused`: one auditID on two different requests. The API
//!   server takes the client's `Audit-ID` header as the auditID, so a
//!   client can reuse an id to make a later request look like a repeat of
//!   an earlier, harmless one.
//! - `request-body-unreadable`: a rule needed a request or response body
//!   that could not be read (nested past the depth limit: padding a patch
//!   to blind body rules).
//! - `oversized-event`: an event over the size cap was quarantined (padding
//!   an event is an evasion trick).
//! - `truncated-event`: the log pipeline cut an event short (CloudWatch's
//!   `[Truncated...]`).
//!
//! Each is a [`RuleMeta`] and a constructor of its finding; deduplication is
//! the [`Detector`](super::Detector)'s.

use std::sync::LazyLock;

use serde_json::json;

use crate::decode::Problem;
use crate::event::AuditEvent;
use crate::finding::{Finding, RuleMeta, Severity, finding_id};

fn meta(id: &str, title: &str, severity: Severity, category: &str, mitre: &[&str]) -> RuleMeta {
    RuleMeta::builtin(id, title, severity, category, mitre)
}

pub static AUDIT_ID_REUSED: LazyLock<RuleMeta> = LazyLock::new(|| {
    meta(
        "audit-id-reused",
        "One auditID on two different requests",
        Severity::High,
        "evasion",
        &["T1562.008"],
    )
});
pub static BODY_UNREADABLE: LazyLock<RuleMeta> = LazyLock::new(|| {
    meta(
        "request-body-unreadable",
        "Request body too deeply nested to inspect",
        Severity::High,
        "evasion",
        &["T1562"],
    )
});
pub static OVERSIZED_EVENT: LazyLock<RuleMeta> = LazyLock::new(|| {
    meta(
        "oversized-event",
        "Audit event over the size cap",
        Severity::Medium,
        "evasion",
        &["T1562.008"],
    )
});
pub static TRUNCATED_EVENT: LazyLock<RuleMeta> = LazyLock::new(|| {
    meta(
        "truncated-event",
        "Audit event truncated by the log pipeline",
        Severity::Low,
        "pipeline",
        &[],
    )
});

/// The finding for a request whose auditID an earlier, different request
/// already used; `alias` is the id this request is tracked under.
pub fn audit_id_reused(ev: &AuditEvent<'_>, alias: &str) -> Finding {
    let summary = format!(
        "auditID {} was used again by a different request ({} {} by {}): the client chose it with the Audit-ID header",
        ev.audit_id(),
        ev.verb(),
        ev.request_uri.as_deref().unwrap_or("-"),
        ev.username()
    );
    let mut f = Finding::from_event(
        &AUDIT_ID_REUSED,
        ev,
        AUDIT_ID_REUSED.severity,
        summary,
        json!({"original_audit_id": ev.audit_id()}),
    );
    rekey(&mut f, alias);
    f
}

/// The finding for an event whose body a rule could not read.
pub fn body_unreadable(ev: &AuditEvent<'_>) -> Finding {
    let summary = format!(
        "{} {} by {}: its body is nested more than {} levels deep, so rules that read it could not run",
        ev.verb(),
        ev.request_uri.as_deref().unwrap_or("-"),
        ev.username(),
        super::field::MAX_BODY_DEPTH
    );
    Finding::from_event(
        &BODY_UNREADABLE,
        ev,
        BODY_UNREADABLE.severity,
        summary,
        json!({}),
    )
}

/// The finding for an oversized or truncated event, if `p` is one.
pub fn from_problem(p: &Problem<'_>, source: &str, cluster: &str) -> Option<Finding> {
    let rule: &RuleMeta = match p.kind {
        crate::decode::ProblemKind::Oversized => &OVERSIZED_EVENT,
        crate::decode::ProblemKind::Truncated => &TRUNCATED_EVENT,
        crate::decode::ProblemKind::Malformed => return None,
    };
    let audit_id = p
        .audit_id
        .map(str::to_owned)
        // No auditID could be read: name the event by its bytes, so that the
        // same file scanned under another path (./audit.log, stdin, a
        // rotated name) is still the same finding.
        .unwrap_or_else(|| {
            let digest = <sha2::Sha256 as sha2::Digest>::digest(p.sample);
            format!(
                "pipeline:{cluster}:{}:{}",
                rule.id,
                hex::encode(&digest[..12])
            )
        });
    let summary = match p.audit_id {
        Some(id) => format!("{} (auditID {id}, {source} line {})", p.error, p.line),
        None => format!("{} ({source} line {})", p.error, p.line),
    };
    Some(event_less(
        rule,
        cluster,
        audit_id,
        summary,
        json!({"source": source, "line": p.line, "error": p.error.to_string()}),
    ))
}

/// A finding with no event behind it: a problem of the pipeline itself. Its
/// evidence is empty (a quarantined event may hold secrets in the part
/// that was cut off; a silence has no event at all).
fn event_less(
    rule: &RuleMeta,
    cluster: &str,
    audit_id: String,
    summary: String,
    details: serde_json::Value,
) -> Finding {
    Finding {
        id: finding_id(cluster, &audit_id, &rule.id),
        rule_id: rule.id.clone(),
        rule_title: rule.title.clone(),
        severity: rule.severity,
        category: rule.category.clone(),
        mitre: rule.mitre.clone(),
        references: rule.references.clone(),
        cluster: cluster.to_owned(),
        audit_id,
        stage: None,
        time: None,
        user: String::new(),
        groups: Vec::new(),
        impersonated_user: None,
        source_ips: Vec::new(),
        user_agent: None,
        verb: String::new(),
        resource: String::new(),
        subresource: None,
        namespace: None,
        name: None,
        request_uri: None,
        summary,
        details,
        evidence: serde_json::Value::Null,
    }
}

pub static STREAM_SILENT: LazyLock<RuleMeta> = LazyLock::new(|| {
    meta(
        "audit-stream-silent",
        "A cluster's audit events stopped arriving",
        Severity::High,
        "pipeline",
        &["T1562.008"],
    )
});
pub static STREAM_RESUMED: LazyLock<RuleMeta> = LazyLock::new(|| {
    meta(
        "audit-stream-resumed",
        "A silent cluster's audit events arrive again",
        Severity::Low,
        "pipeline",
        &[],
    )
});

/// `cluster` sent events until `last` (Unix seconds) and nothing since,
/// for longer than `after` seconds; `now` is when that was noticed.
pub fn stream_silent(cluster: &str, last: i64, after: i64, now: i64) -> Finding {
    let since = crate::timespec::unix_to_rfc3339(last);
    let mut f = event_less(
        &STREAM_SILENT,
        cluster,
        format!("pipeline:{cluster}:audit-stream-silent:{since}"),
        format!(
            "no audit event from cluster {cluster} since {since} ({} minutes): an audit policy change, a stopped API server log backend or a broken pipeline looks like this",
            (now - last) / 60
        ),
        json!({"last_event_at": since, "silent_for_seconds": now - last, "threshold_seconds": after}),
    );
    f.time = Some(crate::timespec::unix_to_rfc3339(now));
    f
}

pub static EVENTS_LOST: LazyLock<RuleMeta> = LazyLock::new(|| {
    meta(
        "audit-events-lost",
        "Audit events were lost before kaudit read them",
        Severity::High,
        "pipeline",
        &["T1562.008"],
    )
});

/// A source lost input before it was read (`lost`), noticed at `now`. The
/// same gap seen again (after a restart) is the same finding.
pub fn events_lost(cluster: &str, source: &str, lost: &crate::source::Lost, now: i64) -> Finding {
    let mut f = event_less(
        &EVENTS_LOST,
        cluster,
        format!(
            "pipeline:{cluster}:audit-events-lost:{source}:{}@{}",
            lost.what, lost.from
        ),
        format!(
            "{} {} of audit input from {} ({source}) were lost before kaudit read them: {}",
            lost.count, lost.unit, lost.what, lost.reason
        ),
        json!({"source": source, "where": lost.what, "from": lost.from, "count": lost.count, "unit": lost.unit, "reason": lost.reason}),
    );
    f.time = Some(crate::timespec::unix_to_rfc3339(now));
    f
}

pub static HEARTBEAT: LazyLock<RuleMeta> = LazyLock::new(|| {
    meta(
        "kaudit-heartbeat",
        "kaudit is running",
        Severity::Info,
        "pipeline",
        &[],
    )
});

/// The heartbeat sent at `now` (not stored: its absence is the signal).
pub fn heartbeat(cluster: &str, now: i64, stats: serde_json::Value) -> Finding {
    let at = crate::timespec::unix_to_rfc3339(now);
    let mut f = event_less(
        &HEARTBEAT,
        cluster,
        format!("pipeline:{cluster}:kaudit-heartbeat:{at}"),
        format!("kaudit is running ({at}); if these stop, kaudit has stopped"),
        stats,
    );
    f.time = Some(at);
    f
}

pub static STORE_UNWRITABLE: LazyLock<RuleMeta> = LazyLock::new(|| {
    meta(
        "store-unwritable",
        "kaudit cannot write its findings store",
        Severity::Critical,
        "pipeline",
        &[],
    )
});

/// The store refused a commit at `now`: nothing is acknowledged until it
/// works again. Sent to the sinks directly (it cannot be stored).
pub fn store_unwritable(cluster: &str, error: &str, now: i64) -> Finding {
    let at = crate::timespec::unix_to_rfc3339(now);
    let mut f = event_less(
        &STORE_UNWRITABLE,
        cluster,
        format!("pipeline:{cluster}:store-unwritable:{at}"),
        format!(
            "kaudit cannot write its findings store ({error}): input is held, not acknowledged, until it can"
        ),
        json!({"error": error, "since": at}),
    );
    f.time = Some(at);
    f
}

/// `cluster`, silent since `last`, sent an event again at `now`.
pub fn stream_resumed(cluster: &str, last: i64, now: i64) -> Finding {
    let since = crate::timespec::unix_to_rfc3339(last);
    let mut f = event_less(
        &STREAM_RESUMED,
        cluster,
        format!("pipeline:{cluster}:audit-stream-resumed:{since}"),
        format!(
            "audit events from cluster {cluster} arrive again after {} minutes of silence (since {since}); the gap is not covered",
            (now - last) / 60
        ),
        json!({"silent_from": since, "resumed_at": crate::timespec::unix_to_rfc3339(now), "gap_seconds": now - last}),
    );
    f.time = Some(crate::timespec::unix_to_rfc3339(now));
    f
}

/// Gives a finding the identity of `alias` (an auditID with a suffix).
pub fn rekey(f: &mut Finding, alias: &str) {
    f.audit_id = alias.to_owned();
    f.id = finding_id(&f.cluster, alias, &f.rule_id);
}
