//! GKE: Cloud Audit Logs `LogEntry` records whose `protoPayload` is an
//! `AuditLog` with `serviceName: "k8s.io"`, as a log sink exports them, and
//! the Pub/Sub push request that carries one
//! (`{"message":{"data":"<base64 LogEntry>",...},"subscription"}`).
//!
//! The LogEntry is mapped onto an `AuditEvent`: verb, resource and
//! subresource from `methodName` (`io.k8s.core.v1.pods.exec.create`);
//! group, version, namespace and name from `resourceName`
//! (`core/v1/namespaces/NS/pods/NAME/exec`); the user from
//! `authenticationInfo.principalEmail`; address and user agent from
//! `requestMetadata`; the auditID from `insertId`; the cluster from
//! `resource.labels.cluster_name`; the exec command from `request.command`
//! (kept as the event's requestObject). The format has no groups,
//! `user.extra`, impersonation or HTTP status: a denial is read from
//! `authorizationInfo[].granted` and `status.code` (google.rpc codes). Other
//! services' entries (`container.googleapis.com`, ...) are skipped.

use std::borrow::Cow;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Dispatch, Error};
use crate::event::{AuditEvent, Envelope, ObjectRef, RawJson, ResponseStatus, UserInfo};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogEntry<'a> {
    #[serde(borrow, default)]
    insert_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    receive_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource: Option<MonitoredResource<'a>>,
    #[serde(borrow)]
    proto_payload: AuditLog<'a>,
    #[serde(borrow, default)]
    labels: Option<std::collections::BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

#[derive(Deserialize)]
struct MonitoredResource<'a> {
    #[serde(borrow, default)]
    labels: Option<ResourceLabels<'a>>,
}

#[derive(Deserialize)]
struct ResourceLabels<'a> {
    #[serde(borrow, default)]
    cluster_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditLog<'a> {
    #[serde(borrow, default)]
    service_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    method_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    authentication_info: Option<AuthenticationInfo<'a>>,
    #[serde(borrow, default)]
    request_metadata: Option<RequestMetadata<'a>>,
    #[serde(borrow, default)]
    authorization_info: Vec<AuthorizationInfo<'a>>,
    #[serde(borrow, default)]
    status: Option<RpcStatus<'a>>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticationInfo<'a> {
    #[serde(borrow, default)]
    principal_email: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestMetadata<'a> {
    #[serde(borrow, default)]
    caller_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    caller_supplied_user_agent: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AuthorizationInfo<'a> {
    #[serde(default)]
    granted: Option<bool>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    permission: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RpcStatus<'a> {
    #[serde(default)]
    code: Option<i64>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// One LogEntry (`text`) whose `protoPayload` is present.
pub(super) fn log_entry(d: &mut Dispatch<'_, '_>, text: &str, line: u64, envelope: Envelope) {
    let entry = match serde_json::from_str::<LogEntry<'_>>(text) {
        Ok(e) => e,
        Err(e) => {
            return d.malformed(
                line,
                text.as_bytes(),
                Error::Envelope {
                    envelope: "gke",
                    reason: format!("a LogEntry whose protoPayload is not an AuditLog: {e}"),
                },
            );
        }
    };
    let p = &entry.proto_payload;
    if p.service_name.as_deref() != Some("k8s.io") {
        return d.skipped(line, "gke audit entry of a service other than k8s.io");
    }
    let method = p.method_name.as_deref().unwrap_or("");
    let Some(m) = parse_method(method) else {
        return d.malformed(
            line,
            text.as_bytes(),
            Error::Envelope {
                envelope: "gke",
                reason: format!("methodName {method:?} is not io.k8s.<group>.<version>.<resource>[.<subresource>].<verb>"),
            },
        );
    };
    let r = p
        .resource_name
        .as_deref()
        .map(parse_resource_name)
        .unwrap_or_default();
    let denied = p
        .authorization_info
        .iter()
        .any(|a| a.granted == Some(false));
    let rpc = p.status.as_ref().and_then(|s| s.code).unwrap_or(0);
    let code = match rpc {
        _ if denied => Some(403),
        7 => Some(403),
        16 => Some(401),
        5 => Some(404),
        6 => Some(409),
        _ => None,
    };
    let mut annotations: crate::event::StrPairs<'_> = entry
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (Cow::Borrowed(k.as_ref()), Cow::Borrowed(v.as_ref())))
        .collect();
    if denied
        && !annotations
            .iter()
            .any(|(k, _)| k == "authorization.k8s.io/decision")
    {
        annotations.push(("authorization.k8s.io/decision".into(), "forbid".into()));
    }
    let ev = AuditEvent {
        kind: None,
        api_version: None,
        level: None,
        audit_id: entry.insert_id.as_deref().map(Cow::Borrowed),
        stage: None,
        request_uri: None,
        verb: Some(Cow::Borrowed(m.verb)),
        user: UserInfo {
            username: p
                .authentication_info
                .as_ref()
                .and_then(|a| a.principal_email.as_deref())
                .map(Cow::Borrowed),
            ..UserInfo::default()
        },
        impersonated_user: None,
        source_ips: p
            .request_metadata
            .as_ref()
            .and_then(|m| m.caller_ip.as_deref())
            .map(|ip| std::iter::once(Cow::Borrowed(ip)).collect())
            .unwrap_or_default(),
        user_agent: p
            .request_metadata
            .as_ref()
            .and_then(|m| m.caller_supplied_user_agent.as_deref())
            .map(Cow::Borrowed),
        object_ref: Some(ObjectRef {
            resource: Some(Cow::Borrowed(m.resource)),
            subresource: m.subresource.map(Cow::Borrowed),
            namespace: r.namespace.map(Cow::Borrowed),
            name: r.name.map(Cow::Borrowed),
            api_group: Some(Cow::Borrowed(r.group.unwrap_or(m.group))),
            api_version: Some(Cow::Borrowed(r.version.unwrap_or(m.version))),
            ..ObjectRef::default()
        }),
        response_status: code.map(|c| ResponseStatus {
            code: Some(c),
            message: p
                .status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .map(Cow::Borrowed),
            ..ResponseStatus::default()
        }),
        request_object: p.request.map(|r| RawJson::checked(r.get())),
        response_object: p.response.map(|r| RawJson::checked(r.get())),
        request_received_timestamp: entry.timestamp.as_deref().map(Cow::Borrowed),
        stage_timestamp: entry
            .receive_timestamp
            .as_deref()
            .or(entry.timestamp.as_deref())
            .map(Cow::Borrowed),
        annotations,
        authentication_metadata: None,
        cluster: None,
        origin: Default::default(),
        source: "",
        raw: text,
        outcome_at_request: false,
    };
    if let Err(reason) = ev.validate() {
        return d.malformed(line, text.as_bytes(), Error::NotAuditEvent(reason.into()));
    }
    let cluster = entry
        .resource
        .as_ref()
        .and_then(|r| r.labels.as_ref())
        .and_then(|l| l.cluster_name.as_deref());
    d.emit(ev, line, envelope, cluster);
}

/// Whether a `message` object is a Pub/Sub message (it has a string `data`).
pub(super) fn is_pubsub_message(message: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
    }
    serde_json::from_str::<Probe<'_>>(message.get())
        .ok()
        .and_then(|p| p.data)
        .is_some_and(|d| d.get().starts_with('"'))
}

/// A Pub/Sub push request; `message` is the raw `message` object.
pub(super) fn pubsub_push(d: &mut Dispatch<'_, '_>, message: &RawValue, line: u64) {
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow, default)]
        data: Option<Cow<'a, str>>,
    }
    let data = match serde_json::from_str::<Message<'_>>(message.get()) {
        Ok(Message { data: Some(d) }) => d,
        _ => {
            return d.malformed(
                line,
                message.get().as_bytes(),
                Error::Envelope {
                    envelope: "gke-pubsub",
                    reason: "a Pub/Sub message without a string 'data'".into(),
                },
            );
        }
    };
    match base64::engine::general_purpose::STANDARD.decode(data.trim().as_bytes()) {
        Ok(payload) => d.nested(&payload, line, Envelope::GkePubSub),
        Err(e) => d.malformed(
            line,
            message.get().as_bytes(),
            Error::Envelope {
                envelope: "gke-pubsub",
                reason: format!("'message.data' is not base64: {e}"),
            },
        ),
    }
}

#[derive(Debug, PartialEq)]
struct Method<'a> {
    group: &'a str,
    version: &'a str,
    resource: &'a str,
    subresource: Option<&'a str>,
    verb: &'a str,
}

/// `io.k8s.core.v1.pods.exec.create` → core group, v1, pods, exec, create.
fn parse_method(method: &str) -> Option<Method<'_>> {
    let rest = method.strip_prefix("io.k8s.")?;
    let parts: Vec<&str> = rest.split('.').collect();
    let vi = parts.iter().position(|p| is_version(p))?;
    let tail = &parts[vi + 1..];
    let (verb, tail) = tail.split_last()?;
    let (resource, tail) = tail.split_first()?;
    if tail.len() > 1 || resource.is_empty() || verb.is_empty() {
        return None;
    }
    let group = &rest[..parts[..vi]
        .iter()
        .map(|p| p.len() + 1)
        .sum::<usize>()
        .saturating_sub(1)];
    Some(Method {
        group: if group == "core" { "" } else { group },
        version: parts[vi],
        resource,
        subresource: tail.first().copied(),
        verb,
    })
}

/// `v1`, `v1beta1`, `v2alpha3`.
fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = &rest[digits..];
    rest.is_empty()
        || ["alpha", "beta"].iter().any(|q| {
            rest.strip_prefix(q)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

#[derive(Debug, Default, PartialEq)]
struct ResourceName<'a> {
    group: Option<&'a str>,
    version: Option<&'a str>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

/// `core/v1/namespaces/NS/pods/NAME/exec`, `rbac.authorization.k8s.io/v1/clusterrolebindings/NAME`.
fn parse_resource_name(rn: &str) -> ResourceName<'_> {
    let seg: Vec<&str> = rn.split('/').collect();
    if seg.len() < 3 || !is_version(seg[1]) {
        return ResourceName::default();
    }
    let group = if seg[0] == "core" { "" } else { seg[0] };
    let rest = &seg[2..];
    let (namespace, name) = match rest {
        ["namespaces", ns, _resource, name, ..] => (Some(*ns), Some(*name)),
        ["namespaces", ns, _resource] => (Some(*ns), None),
        ["namespaces", name] => (None, Some(*name)),
        [_resource, name, ..] => (None, Some(*name)),
        _ => (None, None),
    };
    ResourceName {
        group: Some(group),
        version: Some(seg[1]),
        namespace: namespace.filter(|s| !s.is_empty()),
        name: name.filter(|s| !s.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods() {
        assert_eq!(
            parse_method("io.k8s.core.v1.pods.exec.create"),
            Some(Method {
                group: "",
                version: "v1",
                resource: "pods",
                subresource: Some("exec"),
                verb: "create"
            })
        );
        let m = parse_method("io.k8s.authorization.rbac.v1.clusterrolebindings.create").unwrap();
        assert_eq!(
            (m.group, m.resource, m.subresource, m.verb),
            ("authorization.rbac", "clusterrolebindings", None, "create")
        );
        let m = parse_method("io.k8s.apps.v1beta2.deployments.list").unwrap();
        assert_eq!((m.version, m.verb), ("v1beta2", "list"));
        assert_eq!(
            parse_method("google.container.v1.ClusterManager.UpdateCluster"),
            None
        );
        assert_eq!(parse_method("io.k8s.core.v1"), None);
        assert_eq!(parse_method("io.k8s.core.v1.a.b.c.d"), None);
        assert_eq!(parse_method("io.k8s."), None);
    }

    #[test]
    fn resource_names() {
        let r = parse_resource_name("core/v1/namespaces/payments/pods/api-7d9f/exec");
        assert_eq!(
            (r.group, r.namespace, r.name),
            (Some(""), Some("payments"), Some("api-7d9f"))
        );
        let r = parse_resource_name("rbac.authorization.k8s.io/v1/clusterrolebindings/pwn");
        assert_eq!(
            (r.group, r.namespace, r.name),
            (Some("rbac.authorization.k8s.io"), None, Some("pwn"))
        );
        let r = parse_resource_name("core/v1/namespaces/foo");
        assert_eq!((r.namespace, r.name), (None, Some("foo")));
        let r = parse_resource_name("core/v1/namespaces/payments/pods");
        assert_eq!((r.namespace, r.name), (Some("payments"), None));
        assert_eq!(parse_resource_name("garbage"), ResourceName::default());
    }
}
