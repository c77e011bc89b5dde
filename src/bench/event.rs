//! One synthetic audit event and how it is written: an `audit.k8s.io/v1`
//! Event as the API server's log backend writes it (field order, `\u0026`
//! in request URIs, `"metadata":{}` in responseStatus, bound-token
//! `user.extra` keys in sorted order), formatted with `write!` straight into
//! the output, without serde and without allocating.
//!
//! Every string the corpus puts here is plain ASCII without quotes or
//! backslashes, except the pre-escaped constant texts (RBAC reasons, bodies)
//! that are written verbatim.

use std::io::{self, Write};

use super::rng::{Micros, Uuid, write_time};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    ResponseStarted,
    ResponseComplete,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
        }
    }
}

/// `user.groups`.
#[derive(Debug, Clone, Copy)]
pub enum Groups<'a> {
    List(&'a [&'a str]),
    /// `system:serviceaccounts`, `system:serviceaccounts:NS`, `system:authenticated`.
    ServiceAccount(&'a str),
}

/// `user.extra`.
#[derive(Debug, Clone, Copy)]
pub enum Extra<'a> {
    None,
    /// A client certificate's credential id: `X509SHA256=<hex>`.
    Cert(&'a str),
    /// A bound service-account token: its id and the pod and node it is
    /// bound to.
    Bound {
        jti: Uuid,
        node: &'a str,
        node_uid: Uuid,
        pod: &'a str,
        pod_uid: Uuid,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    pub username: &'a str,
    pub uid: Option<Uuid>,
    pub groups: Groups<'a>,
    pub extra: Extra<'a>,
}

/// `objectRef`; empty strings are left out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjRef<'a> {
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub sub: &'a str,
}

/// `responseStatus`: a code, and for failures the reason and message.
#[derive(Debug, Clone, Copy)]
pub struct Status<'a> {
    pub code: u16,
    pub reason: &'a str,
    pub message: &'a str,
}

impl Status<'_> {
    pub const fn ok(code: u16) -> Self {
        Status {
            code,
            reason: "",
            message: "",
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, Copy)]
pub struct Ev<'a> {
    pub level: &'a str,
    pub id: Uuid,
    pub stage: Stage,
    /// With plain `&`; written as `\u0026` as the API server does.
    pub uri: &'a str,
    pub verb: &'a str,
    pub user: User<'a>,
    /// `impersonatedUser`: username and groups.
    pub impersonated: Option<(&'a str, &'a [&'a str])>,
    pub source_ip: &'a str,
    pub user_agent: &'a str,
    pub object: Option<ObjRef<'a>>,
    pub status: Status<'a>,
    /// Raw JSON bodies (levels Request / RequestResponse).
    pub request_object: Option<&'a str>,
    pub response_object: Option<&'a str>,
    pub received: Micros,
    pub stage_time: Micros,
    pub decision: &'a str,
    /// `authorization.k8s.io/reason`, already JSON-escaped.
    pub reason: &'a str,
    /// One more annotation (key, value), e.g. a TokenRequest's issued id.
    pub annotation: Option<(&'a str, &'a str)>,
}

/// Writes `ev` as one JSON line.
pub fn write_event<W: Write + ?Sized>(w: &mut W, ev: &Ev<'_>) -> io::Result<()> {
    write!(
        w,
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"{}","auditID":"{}","stage":"{}","requestURI":""#,
        ev.level,
        ev.id,
        ev.stage.as_str()
    )?;
    // The API server's JSON encoder escapes `&` (and `<`, `>`).
    let mut parts = ev.uri.split('&');
    if let Some(first) = parts.next() {
        w.write_all(first.as_bytes())?;
    }
    for p in parts {
        w.write_all(b"\\u0026")?;
        w.write_all(p.as_bytes())?;
    }
    write!(w, r#"","verb":"{}","user":"#, ev.verb)?;
    write_user(w, &ev.user)?;
    if let Some((name, groups)) = ev.impersonated {
        write!(w, r#","impersonatedUser":{{"username":"{name}","groups":"#)?;
        write_list(w, groups)?;
        w.write_all(b"}")?;
    }
    write!(
        w,
        r#","sourceIPs":["{}"],"userAgent":"{}""#,
        ev.source_ip, ev.user_agent
    )?;
    if let Some(o) = &ev.object {
        write!(w, r#","objectRef":{{"resource":"{}""#, o.resource)?;
        for (key, value) in [
            ("namespace", o.namespace),
            ("name", o.name),
            ("apiGroup", o.group),
            ("apiVersion", o.version),
            ("subresource", o.sub),
        ] {
            if !value.is_empty() {
                write!(w, r#","{key}":"{value}""#)?;
            }
        }
        w.write_all(b"}")?;
    }
    let s = &ev.status;
    if s.reason.is_empty() {
        write!(
            w,
            r#","responseStatus":{{"metadata":{{}},"code":{}}}"#,
            s.code
        )?;
    } else {
        write!(
            w,
            r#","responseStatus":{{"metadata":{{}},"status":"Failure","message":"{}","reason":"{}","code":{}}}"#,
            s.message, s.reason, s.code
        )?;
    }
    if let Some(body) = ev.request_object {
        write!(w, r#","requestObject":{body}"#)?;
    }
    if let Some(body) = ev.response_object {
        write!(w, r#","responseObject":{body}"#)?;
    }
    w.write_all(br#","requestReceivedTimestamp":""#)?;
    write_time(w, ev.received)?;
    w.write_all(br#"","stageTimestamp":""#)?;
    write_time(w, ev.stage_time)?;
    write!(
        w,
        r#"","annotations":{{"authorization.k8s.io/decision":"{}","authorization.k8s.io/reason":"{}""#,
        ev.decision, ev.reason
    )?;
    if let Some((key, value)) = ev.annotation {
        write!(w, r#","{key}":"{value}""#)?;
    }
    w.write_all(b"}}\n")
}

fn write_user<W: Write + ?Sized>(w: &mut W, u: &User<'_>) -> io::Result<()> {
    write!(w, r#"{{"username":"{}""#, u.username)?;
    if let Some(uid) = u.uid {
        write!(w, r#","uid":"{uid}""#)?;
    }
    w.write_all(br#","groups":"#)?;
    match u.groups {
        Groups::List(groups) => write_list(w, groups)?,
        Groups::ServiceAccount(ns) => write!(
            w,
            r#"["system:serviceaccounts","system:serviceaccounts:{ns}","system:authenticated"]"#
        )?,
    }
    match u.extra {
        Extra::None => {}
        Extra::Cert(hex) => write!(
            w,
            r#","extra":{{"authentication.kubernetes.io/credential-id":["X509SHA256={hex}"]}}"#
        )?,
        Extra::Bound {
            jti,
            node,
            node_uid,
            pod,
            pod_uid,
        } => write!(
            w,
            concat!(
                r#","extra":{{"authentication.kubernetes.io/credential-id":["JTI={}"],"#,
                r#""authentication.kubernetes.io/node-name":["{}"],"#,
                r#""authentication.kubernetes.io/node-uid":["{}"],"#,
                r#""authentication.kubernetes.io/pod-name":["{}"],"#,
                r#""authentication.kubernetes.io/pod-uid":["{}"]}}"#
            ),
            jti, node, node_uid, pod, pod_uid
        )?,
    }
    w.write_all(b"}")
}

fn write_list<W: Write + ?Sized>(w: &mut W, items: &[&str]) -> io::Result<()> {
    w.write_all(b"[")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write!(w, r#""{item}""#)?;
    }
    w.write_all(b"]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_valid_json_with_the_api_servers_shape() {
        let ev = Ev {
            level: "Metadata",
            id: Uuid(1, 2),
            stage: Stage::ResponseComplete,
            uri: "/api/v1/namespaces/shop/pods?limit=500&resourceVersion=0",
            verb: "list",
            user: User {
                username: "system:serviceaccount:shop:web",
                uid: Some(Uuid(3, 4)),
                groups: Groups::ServiceAccount("shop"),
                extra: Extra::Bound {
                    jti: Uuid(5, 6),
                    node: "node-a",
                    node_uid: Uuid(7, 8),
                    pod: "web-1",
                    pod_uid: Uuid(9, 10),
                },
            },
            impersonated: Some(("system:admin", &["system:masters"])),
            source_ip: "10.244.1.5",
            user_agent: "web/v0.0.0 (linux/amd64) kubernetes/$Format",
            object: Some(ObjRef {
                resource: "pods",
                namespace: "shop",
                version: "v1",
                ..ObjRef::default()
            }),
            status: Status {
                code: 404,
                reason: "NotFound",
                message: r#"pods \"x\" not found"#,
            },
            request_object: Some(r#"{"a":1}"#),
            response_object: None,
            received: 1_793_696_400_000_000,
            stage_time: 1_793_696_400_001_000,
            decision: "allow",
            reason: r#"RBAC: allowed by RoleBinding \"r/shop\""#,
            annotation: Some(("k", "v")),
        };
        let mut out = Vec::new();
        write_event(&mut out, &ev).unwrap();
        assert!(out.ends_with(b"}\n"));
        assert!(
            out.windows(6).any(|w| w == b"\\u0026"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["requestURI"],
            "/api/v1/namespaces/shop/pods?limit=500&resourceVersion=0"
        );
        assert_eq!(v["user"]["groups"][1], "system:serviceaccounts:shop");
        assert_eq!(
            v["user"]["extra"]["authentication.kubernetes.io/pod-name"][0],
            "web-1"
        );
        assert_eq!(v["impersonatedUser"]["groups"][0], "system:masters");
        assert_eq!(v["responseStatus"]["code"], 404);
        assert_eq!(v["requestObject"]["a"], 1);
        assert_eq!(v["stageTimestamp"], "2026-11-03T09:00:00.001000Z");
        assert_eq!(v["annotations"]["k"], "v");
        assert!(v["objectRef"].get("name").is_none());
    }
}
