//! The built-in detections that `kaudit scan` ships before the rule engine:
//! exec, attach and port-forward into pods.
//!
//! Fields (DESIGN.md, detection catalogue): `objectRef.resource=pods`,
//! `objectRef.subresource` ∈ {exec, attach, portforward}, verb `create`
//! (SPDY) or `get` (WebSocket, kubectl ≥ 1.30). A rule fires on the first
//! stage that carries the outcome (ResponseStarted or ResponseComplete); a
//! denied request (4xx) is still a finding: an attempt. The command is every
//! `command=` of the requestURI query, the ports every `ports=`.

use serde_json::{Value, json};

use crate::event::AuditEvent;
use crate::finding::{Finding, RuleMeta, Severity};

/// The built-in rules.
pub static RULES: [RuleMeta; 3] = [
    RuleMeta {
        id: "pod-exec",
        title: "Exec into a pod",
        severity: Severity::Medium,
        category: "exec",
        mitre: &["T1609"],
        references: &[("falco", "Attach/Exec Pod")],
    },
    RuleMeta {
        id: "pod-attach",
        title: "Attach to a pod",
        severity: Severity::Medium,
        category: "attach",
        mitre: &["T1609"],
        references: &[("falco", "Attach/Exec Pod")],
    },
    RuleMeta {
        id: "pod-portforward",
        title: "Port-forward to a pod",
        severity: Severity::Medium,
        category: "portforward",
        mitre: &["T1572"],
        references: &[],
    },
];

/// The rules whose conditions `ev` meets.
pub(super) fn candidates<'r>(ev: &AuditEvent<'_>) -> impl Iterator<Item = &'r RuleMeta> + use<'r> {
    let rule = (ev.resource() == "pods"
        && matches!(ev.verb(), "create" | "get")
        && ev.carries_outcome())
    .then(|| match ev.subresource() {
        "exec" => Some(&RULES[0]),
        "attach" => Some(&RULES[1]),
        "portforward" => Some(&RULES[2]),
        _ => None,
    })
    .flatten();
    rule.into_iter()
}

/// Builds the finding of `rule` (one of `candidates(ev)`).
pub(super) fn finding(rule: &RuleMeta, ev: &AuditEvent<'_>) -> Finding {
    let q = ev.query();
    let container = q.first("container").map(str::to_owned);
    let code = ev.response_code();
    let denied = code.is_some_and(|c| c >= 400);
    let target = format!("{}/{}", ev.namespace(), ev.name());
    let who = ev.username();
    let (summary, mut details) = match rule.id {
        "pod-exec" => {
            let command: Vec<String> = ev.exec_command().iter().map(|c| c.to_string()).collect();
            let verb = if denied { "tried to run" } else { "ran" };
            let summary = format!("{who} {verb} {} in {target}", shell_join(&command));
            (summary, json!({ "command": command }))
        }
        "pod-attach" => {
            let verb = if denied { "tried to attach" } else { "attached" };
            (format!("{who} {verb} to {target}"), json!({}))
        }
        _ => {
            let ports: Vec<Value> = q
                .values("ports")
                .map(|p| p.parse::<u16>().map_or(Value::String(p.into_owned()), Value::from))
                .collect();
            let list = ports.iter().map(|p| p.to_string().replace('"', "")).collect::<Vec<_>>();
            let verb = if denied { "tried to port-forward" } else { "port-forwarded" };
            let summary = format!("{who} {verb} to {target} port {}", list.join(", "));
            (summary, json!({ "ports": ports }))
        }
    };
    if let Value::Object(d) = &mut details {
        if let Some(c) = container {
            d.insert("container".into(), c.into());
        }
        for flag in ["stdin", "tty"] {
            if q.first(flag) == Some("true") {
                d.insert(flag.into(), true.into());
            }
        }
        d.insert("outcome".into(), if denied { "denied" } else { "allowed" }.into());
        if let Some(c) = code {
            d.insert("response_code".into(), c.into());
        }
        if let Some(via) = ev.impersonated_user.as_ref().and_then(|u| u.username.as_deref()) {
            d.insert("as_user".into(), via.into());
        }
    }
    Finding::from_event(rule, ev, rule.severity, summary, details)
}

/// Joins a command for a human: arguments with spaces or quotes are quoted.
fn shell_join(args: &[String]) -> String {
    if args.is_empty() {
        return "a command".into();
    }
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Detector;

    fn findings(lines: &[&str]) -> Vec<Finding> {
        let mut d = Detector::new();
        let mut out = Vec::new();
        for l in lines {
            let ev = AuditEvent::parse(l).unwrap();
            d.check(&ev, &mut |f| out.push(f));
        }
        out
    }

    const EXEC_STARTED: &str = r#"{"auditID":"e1","stage":"ResponseStarted","verb":"create","requestURI":"/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&command=id+-u&container=web&stdin=true&tty=true","user":{"username":"alice"},"objectRef":{"resource":"pods","namespace":"prod","name":"web-0","subresource":"exec"},"responseStatus":{"code":101}}"#;
    const EXEC_COMPLETE: &str = r#"{"auditID":"e1","stage":"ResponseComplete","verb":"create","requestURI":"/api/v1/namespaces/prod/pods/web-0/exec?command=sh","user":{"username":"alice"},"objectRef":{"resource":"pods","namespace":"prod","name":"web-0","subresource":"exec"},"responseStatus":{"code":101}}"#;

    #[test]
    fn exec_once_across_stages() {
        let f = findings(&[EXEC_STARTED, EXEC_COMPLETE, EXEC_STARTED]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule_id, "pod-exec");
        assert_eq!(f[0].details["command"], json!(["sh", "-c", "id -u"]));
        assert_eq!(f[0].details["tty"], json!(true));
        assert_eq!(f[0].summary, "alice ran sh -c 'id -u' in prod/web-0");
        assert_eq!(f[0].references["falco"], "Attach/Exec Pod");
    }

    #[test]
    fn websocket_get_and_denied_attempts() {
        let ws = r#"{"auditID":"w1","stage":"ResponseComplete","verb":"get","requestURI":"/api/v1/namespaces/a/pods/p/attach?container=c","objectRef":{"resource":"pods","namespace":"a","name":"p","subresource":"attach"},"responseStatus":{"code":403},"user":{"username":"mallory"}}"#;
        let f = findings(&[ws]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule_id, "pod-attach");
        assert_eq!(f[0].details["outcome"], "denied");
        assert_eq!(f[0].summary, "mallory tried to attach to a/p");
    }

    #[test]
    fn request_received_alone_and_other_subresources_are_silent() {
        let rr = EXEC_STARTED.replace("ResponseStarted", "RequestReceived");
        let logs = EXEC_STARTED.replace("\"exec\"", "\"log\"");
        let list = EXEC_STARTED.replace("\"create\"", "\"list\"");
        assert!(findings(&[&rr, &logs, &list]).is_empty());
    }

    #[test]
    fn portforward_ports() {
        let pf = r#"{"auditID":"p1","stage":"ResponseStarted","verb":"create","requestURI":"/api/v1/namespaces/db/pods/pg-0/portforward?ports=5432&ports=x","objectRef":{"resource":"pods","namespace":"db","name":"pg-0","subresource":"portforward"},"user":{"username":"bob"}}"#;
        let f = findings(&[pf]);
        assert_eq!(f[0].details["ports"], json!([5432, "x"]));
        assert_eq!(f[0].summary, "bob port-forwarded to db/pg-0 port 5432, x");
    }

    #[test]
    fn same_audit_id_in_two_clusters_is_two_findings() {
        let mut d = Detector::new();
        let mut n = 0;
        for c in ["a", "b"] {
            let mut ev = AuditEvent::parse(EXEC_STARTED).unwrap();
            ev.cluster = Some(c.into());
            d.check(&ev, &mut |_| n += 1);
        }
        assert_eq!(n, 2);
    }
}
