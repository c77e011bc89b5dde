//! `AuditEvent`: the normalised `audit.k8s.io/v1` Event, as a borrowed view.
//!
//! Every decoder (`crate::decode`) produces this one type, whatever envelope
//! the event arrived in. Strings borrow from the input buffer where the JSON
//! has no escapes (`Cow::Borrowed`) and are copied only when it does;
//! `requestObject`, `responseObject` and `authenticationMetadata` stay raw JSON
//! until a detector asks for them. Unknown fields are ignored, `kind` and
//! `apiVersion` may be missing (shippers drop them), and `v1beta1` events
//! parse the same way.
//!
//! This module owns the shape of an event and the accessors detectors use
//! (the parsed `requestURI` query, the exec command, the stage). Deciding
//! whether some JSON *is* an audit event, and where it came from, is the
//! decoder's job.

mod fast;
pub mod query;
pub mod short;

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

pub use query::Query;
pub use short::Short;

/// Ordered string pairs (annotations), borrowed where possible.
pub type StrPairs<'a> = Short<(Cow<'a, str>, Cow<'a, str>), 4>;
/// A short list of strings (groups, sourceIPs, an `extra` value), inline.
pub type Strs<'a> = Short<Cow<'a, str>, 4>;
/// Ordered string-list pairs (`user.extra`), borrowed where possible.
pub type ListPairs<'a> = Short<(Cow<'a, str>, ExtraValues<'a>), 6>;
/// The values of one `user.extra` key: almost always exactly one.
pub type ExtraValues<'a> = Short<Cow<'a, str>, 1>;

/// One audit event. Field names follow `audit.k8s.io/v1`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent<'a> {
    /// `Event`, or absent.
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub kind: Option<Cow<'a, str>>,
    /// `audit.k8s.io/v1`, `audit.k8s.io/v1beta1`, or absent.
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub api_version: Option<Cow<'a, str>>,
    /// `None`, `Metadata`, `Request` or `RequestResponse`.
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub level: Option<Cow<'a, str>>,
    /// Unique per request; shared by all stages of one request.
    #[serde(borrow, default, rename = "auditID", deserialize_with = "opt_cow")]
    pub audit_id: Option<Cow<'a, str>>,
    /// The stage this copy of the event was logged at.
    #[serde(default)]
    pub stage: Option<Stage>,
    /// Path and query as the client sent them.
    #[serde(borrow, default, rename = "requestURI", deserialize_with = "opt_cow")]
    pub request_uri: Option<Cow<'a, str>>,
    /// The Kubernetes verb (`get`, `create`, `impersonate`, ...).
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub verb: Option<Cow<'a, str>>,
    /// The authenticated caller.
    #[serde(borrow, default)]
    pub user: UserInfo<'a>,
    /// Who the caller impersonated, if anyone (rare: boxed, which keeps
    /// the event a quarter smaller to move).
    #[serde(borrow, default)]
    pub impersonated_user: Option<Box<UserInfo<'a>>>,
    /// X-Forwarded-For values first, the connection's remote address last.
    #[serde(borrow, default, rename = "sourceIPs", deserialize_with = "cow_vec")]
    pub source_ips: Strs<'a>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub object_ref: Option<ObjectRef<'a>>,
    #[serde(borrow, default)]
    pub response_status: Option<ResponseStatus<'a>>,
    /// The request body (Request and RequestResponse levels), unparsed.
    #[serde(borrow, default)]
    pub request_object: Option<RawJson<'a>>,
    /// The response body (RequestResponse level), unparsed.
    #[serde(borrow, default)]
    pub response_object: Option<RawJson<'a>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub request_received_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub stage_timestamp: Option<Cow<'a, str>>,
    /// Annotations in the order they appear.
    #[serde(borrow, default, deserialize_with = "string_pairs")]
    pub annotations: StrPairs<'a>,
    /// Kubernetes ≥ 1.35 (`impersonationConstraint`), unparsed.
    #[serde(borrow, default)]
    pub authentication_metadata: Option<RawJson<'a>>,

    /// The cluster the event belongs to, lower-cased (set by the decoder).
    #[serde(skip)]
    pub cluster: Option<Cow<'a, str>>,
    /// Which envelope carried the event and where it sat in the input.
    #[serde(skip)]
    pub origin: Origin,
    /// The input it was read from (a path, `-`, a source name).
    #[serde(skip)]
    pub source: &'a str,
    /// The event's JSON text, verbatim: the evidence.
    #[serde(skip)]
    pub raw: &'a str,
    /// Its source's audit policy logs only RequestReceived (the source's
    /// `request_received` option): that stage is the one to evaluate.
    #[serde(skip)]
    pub outcome_at_request: bool,
}

/// A JSON value kept as its text (a request or response body), parsed
/// only when a detector asks for it. The text is checked JSON: serde_json
/// checked it, or the fast path's checking skip did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    /// `text` must be one valid JSON value (the caller checked it).
    pub(crate) fn checked(text: &'a str) -> Self {
        RawJson(text)
    }

    pub fn get(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for RawJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawJson({})", self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawJson<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(|r| RawJson(r.get()))
    }
}

/// The stage of request handling an event was logged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
    /// A stage this version does not know.
    #[serde(other)]
    Unknown,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
            Stage::Unknown => "Unknown",
        }
    }
}

/// `authentication.k8s.io/v1` UserInfo.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo<'a> {
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub username: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub uid: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "cow_vec")]
    pub groups: Strs<'a>,
    /// `extra` in input order: key, values.
    #[serde(borrow, default, deserialize_with = "string_list_pairs")]
    pub extra: ListPairs<'a>,
}

impl<'a> UserInfo<'a> {
    /// The values of one `extra` key, e.g.
    /// `authentication.kubernetes.io/credential-id`.
    pub fn extra(&self, key: &str) -> &[Cow<'a, str>] {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| &v[..])
            .unwrap_or(&[])
    }
}

/// The object a request addressed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef<'a> {
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub resource: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub uid: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub api_group: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub resource_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub subresource: Option<Cow<'a, str>>,
}

/// The interesting part of the response's `metav1.Status`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseStatus<'a> {
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub status: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub reason: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    pub message: Option<Cow<'a, str>>,
}

/// The envelope an event arrived in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// A bare `Event` object (one per line, pretty-printed, or alone).
    #[default]
    Event,
    /// An item of an `EventList` (the webhook backend's batch).
    EventList,
    /// An element of a JSON array of events.
    Array,
    /// A `logEvents[].message` of an EKS CloudWatch Logs subscription payload.
    CloudWatch,
    /// A CloudWatch payload inside a Kinesis Data Firehose HTTP delivery.
    Firehose,
    /// A GKE Cloud Audit Logs `LogEntry`.
    Gke,
    /// A GKE `LogEntry` inside a Pub/Sub push request.
    GkePubSub,
    /// An AKS diagnostic-settings record (`records[].properties.log`).
    Aks,
    /// A shipper record whose `message` (Vector) or `log` (Fluent Bit)
    /// field holds the event as a string.
    Wrapped,
}

impl Envelope {
    pub fn as_str(self) -> &'static str {
        match self {
            Envelope::Event => "event",
            Envelope::EventList => "eventlist",
            Envelope::Array => "array",
            Envelope::CloudWatch => "cloudwatch",
            Envelope::Firehose => "firehose",
            Envelope::Gke => "gke",
            Envelope::GkePubSub => "gke-pubsub",
            Envelope::Aks => "aks",
            Envelope::Wrapped => "wrapped",
        }
    }
}

/// Where an event came from: its envelope and its position in the input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub envelope: Envelope,
    /// 1-based line of the input where the outermost JSON value began.
    pub line: u64,
}

impl<'a> AuditEvent<'a> {
    /// Parses one event from its JSON text. The result borrows from `raw`.
    ///
    /// This only checks the shape; [`AuditEvent::validate`] says whether
    /// the result is an audit event at all.
    pub fn parse(raw: &'a str) -> Result<Self, serde_json::Error> {
        match fast::parse(raw) {
            Some(ev) => Ok(ev),
            None => AuditEvent::parse_with_serde(raw),
        }
    }

    /// The reference parser (serde's derive): what [`AuditEvent::parse`]
    /// answers, the fast path included.
    fn parse_with_serde(raw: &'a str) -> Result<Self, serde_json::Error> {
        let mut ev: AuditEvent<'a> = serde_json::from_str(raw)?;
        ev.raw = raw;
        Ok(ev)
    }

    /// An audit event needs an auditID and a verb or requestURI.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.audit_id.as_deref().is_none_or(str::is_empty) {
            return Err("no auditID");
        }
        if self.verb.is_none() && self.request_uri.is_none() {
            return Err("neither verb nor requestURI");
        }
        Ok(())
    }

    pub fn audit_id(&self) -> &str {
        self.audit_id.as_deref().unwrap_or("")
    }

    pub fn verb(&self) -> &str {
        self.verb.as_deref().unwrap_or("")
    }

    pub fn username(&self) -> &str {
        self.user.username.as_deref().unwrap_or("")
    }

    pub fn resource(&self) -> &str {
        self.object_ref
            .as_ref()
            .and_then(|o| o.resource.as_deref())
            .unwrap_or("")
    }

    pub fn subresource(&self) -> &str {
        self.object_ref
            .as_ref()
            .and_then(|o| o.subresource.as_deref())
            .unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.object_ref
            .as_ref()
            .and_then(|o| o.namespace.as_deref())
            .unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.object_ref
            .as_ref()
            .and_then(|o| o.name.as_deref())
            .unwrap_or("")
    }

    pub fn response_code(&self) -> Option<i64> {
        self.response_status.as_ref().and_then(|s| s.code)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Whether this copy of the event carries the request's outcome: the
    /// first of ResponseStarted (long-running requests) or ResponseComplete;
    /// Panic counts as complete. Events that carry no stage (some cloud
    /// formats log one entry per request) count too.
    pub fn carries_outcome(&self) -> bool {
        // An unknown stage (a newer API server, a shipper that rewrote it)
        // is evaluated rather than silently skipped.
        self.stage != Some(Stage::RequestReceived) || self.outcome_at_request
    }

    /// The parsed query of `requestURI` (empty when there is none).
    pub fn query(&self) -> Query<'_> {
        Query::parse(self.request_uri.as_deref().unwrap_or(""))
    }

    /// The command of an exec, in order: every `command=` of the
    /// `requestURI` query, or, for formats that log the exec options as the
    /// request body (GKE), `requestObject.command`.
    pub fn exec_command(&self) -> Vec<Cow<'_, str>> {
        let from_query: Vec<Cow<'_, str>> = self.query().values("command").collect();
        if !from_query.is_empty() {
            return from_query;
        }
        #[derive(Deserialize)]
        struct ExecOptions<'b> {
            #[serde(borrow, default, deserialize_with = "cow_vec")]
            command: Strs<'b>,
        }
        self.request_object
            .and_then(|raw| serde_json::from_str::<ExecOptions<'_>>(raw.get()).ok())
            .map(|o| o.command.into_vec())
            .unwrap_or_default()
    }
}

/// Deserializes a JSON object of strings into ordered pairs without a map.
fn string_pairs<'de, D>(d: D) -> Result<StrPairs<'de>, D::Error>
where
    D: Deserializer<'de>,
{
    struct PairsVisitor;
    impl<'de> Visitor<'de> for PairsVisitor {
        type Value = StrPairs<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Short::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Short::new();
            while let Some((k, v)) = map.next_entry::<BorrowedStr<'de>, BorrowedStr<'de>>()? {
                out.push((k.0, v.0));
            }
            Ok(out)
        }
    }
    d.deserialize_any(PairsVisitor)
}

/// Deserializes `user.extra` (an object of string lists) into ordered pairs.
fn string_list_pairs<'de, D>(d: D) -> Result<ListPairs<'de>, D::Error>
where
    D: Deserializer<'de>,
{
    struct ListPairsVisitor;
    impl<'de> Visitor<'de> for ListPairsVisitor {
        type Value = ListPairs<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of string lists")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Short::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Short::new();
            while let Some((k, v)) = map.next_entry::<BorrowedStr<'de>, StrList<'de, 1>>()? {
                out.push((k.0, v.0));
            }
            Ok(out)
        }
    }
    d.deserialize_any(ListPairsVisitor)
}

/// `Option<Cow<str>>` that borrows: serde's derive copies every string in
/// an `Option<Cow<str>>`, which would allocate per field.
fn opt_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<BorrowedStr<'de>>::deserialize(d)?.map(|s| s.0))
}

/// A list of borrowed strings (null and a lone string accepted).
fn cow_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Strs<'de>, D::Error> {
    Ok(StrList::<4>::deserialize(d)?.0)
}

/// A string that borrows from the input when it has no escapes.
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BorrowedStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A list of strings; a single string or null is accepted as a list too.
struct StrList<'a, const N: usize>(Short<Cow<'a, str>, N>);

impl<'de, const N: usize> Deserialize<'de> for StrList<'de, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for V<N> {
            type Value = StrList<'de, N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StrList(Short::new()))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrList(std::iter::once(Cow::Borrowed(v)).collect()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrList(std::iter::once(Cow::Owned(v.to_owned())).collect()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Short::new();
                while let Some(s) = seq.next_element::<BorrowedStr<'de>>()? {
                    out.push(s.0);
                }
                Ok(StrList(out))
            }
        }
        d.deserialize_any(V::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"a1","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&command=cat+%2Fetc%2Fshadow&container=web","verb":"create","user":{"username":"alice","groups":["system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["JTI=7f3c"],"scopes":"one"}},"sourceIPs":["203.0.113.9","10.0.0.4"],"userAgent":"kubectl/v1.31.2","objectRef":{"resource":"pods","namespace":"default","name":"web","apiVersion":"v1","subresource":"exec"},"responseStatus":{"metadata":{},"code":101},"requestReceivedTimestamp":"2026-11-28T02:00:00.000000Z","stageTimestamp":"2026-11-28T02:00:00.100000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed"},"futureField":{"x":[1,2]}}"#;

    #[test]
    fn parses_every_field_and_borrows() {
        let ev = AuditEvent::parse(EXEC).unwrap();
        assert!(ev.validate().is_ok());
        assert_eq!(ev.audit_id(), "a1");
        assert_eq!(ev.stage, Some(Stage::ResponseStarted));
        assert!(matches!(ev.verb, Some(Cow::Borrowed("create"))));
        assert_eq!(ev.resource(), "pods");
        assert_eq!(ev.subresource(), "exec");
        assert_eq!(ev.response_code(), Some(101));
        assert_eq!(ev.source_ips[..], ["203.0.113.9", "10.0.0.4"]);
        assert_eq!(
            ev.user.extra("authentication.kubernetes.io/credential-id"),
            ["JTI=7f3c"]
        );
        assert_eq!(ev.user.extra("scopes"), ["one"]);
        assert_eq!(
            ev.annotation("authorization.k8s.io/decision"),
            Some("allow")
        );
        assert_eq!(ev.exec_command(), ["sh", "-c", "cat /etc/shadow"]);
        assert!(ev.carries_outcome());
        assert_eq!(ev.raw, EXEC);
    }

    #[test]
    fn escaped_strings_are_copied_not_lost() {
        let raw = r#"{"auditID":"x","verb":"get","userAgent":"evil\u003cscript\u003e\n"}"#;
        let ev = AuditEvent::parse(raw).unwrap();
        assert_eq!(ev.user_agent.as_deref(), Some("evil<script>\n"));
    }

    #[test]
    fn missing_kind_and_v1beta1_are_events() {
        let ev = AuditEvent::parse(r#"{"auditID":"x","verb":"get"}"#).unwrap();
        assert!(ev.validate().is_ok());
        let ev = AuditEvent::parse(
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1beta1","metadata":{"creationTimestamp":"2018-10-26T13:38:34Z"},"timestamp":"2018-10-26T13:38:34Z","auditID":"x","requestURI":"/api"}"#,
        )
        .unwrap();
        assert!(ev.validate().is_ok());
    }

    #[test]
    fn not_an_event() {
        assert!(AuditEvent::parse(r#"{"kind": 0}"#).is_err());
        let ev = AuditEvent::parse(r#"{"apiVersion":"audit.k8s.io/v1","kind":"Event"}"#).unwrap();
        assert_eq!(ev.validate(), Err("no auditID"));
        let ev = AuditEvent::parse(r#"{"auditID":"x"}"#).unwrap();
        assert_eq!(ev.validate(), Err("neither verb nor requestURI"));
    }

    #[test]
    fn stages() {
        let ev =
            AuditEvent::parse(r#"{"auditID":"x","verb":"get","stage":"RequestReceived"}"#).unwrap();
        assert!(!ev.carries_outcome());
        let ev = AuditEvent::parse(r#"{"auditID":"x","verb":"get","stage":"Panic"}"#).unwrap();
        assert!(ev.carries_outcome());
        let ev = AuditEvent::parse(r#"{"auditID":"x","verb":"get","stage":"Sideways"}"#).unwrap();
        assert_eq!(ev.stage, Some(Stage::Unknown));
        assert!(ev.carries_outcome());
    }

    #[test]
    fn exec_command_from_request_object() {
        let raw = r#"{"auditID":"x","verb":"create","requestObject":{"@type":"core.k8s.io/v1.PodExecOptions","command":["/bin/sh","-c","id"]}}"#;
        let ev = AuditEvent::parse(raw).unwrap();
        assert_eq!(ev.exec_command(), ["/bin/sh", "-c", "id"]);
    }

    #[test]
    fn null_maps_and_lists_are_empty() {
        let raw = r#"{"auditID":"x","verb":"get","annotations":null,"user":{"username":"a","extra":null,"groups":[]}}"#;
        let ev = AuditEvent::parse(raw).unwrap();
        assert!(ev.annotations.is_empty());
        assert!(ev.user.extra.is_empty());
    }

    /// Every event the repository holds (fixtures, the peers' captures,
    /// rule tests, the bench corpus), one JSON text per entry.
    fn every_event() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["fixtures/envelopes", "../shared/peers"] {
            let mut stack = vec![root.join(dir)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        files.push(p);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for f in files {
            let text = String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned();
            out.extend(
                text.lines()
                    .filter(|l| l.trim_start().starts_with('{'))
                    .map(str::to_owned),
            );
            if text.trim_start().starts_with('{') && text.lines().count() > 1 {
                out.push(text);
            }
        }
        let rules = crate::detect::RuleSet::load(&[]).unwrap();
        for r in rules.rules() {
            for t in &r.tests {
                out.extend(t.events.iter().cloned());
            }
        }
        let mut corpus = Vec::new();
        let opts = crate::bench::corpus::Options {
            events: 3000,
            seed: 7,
            attack_every: 50,
            ..crate::bench::corpus::Options::default()
        };
        crate::bench::corpus::generate(&opts, &mut corpus).unwrap();
        out.extend(
            String::from_utf8(corpus)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
        out
    }

    /// The fast path answers exactly what serde answers, or leaves it to
    /// serde.
    fn agrees(raw: &str) {
        if let Some(fast) = fast::parse(raw) {
            let reference = AuditEvent::parse_with_serde(raw);
            assert!(
                reference.is_ok(),
                "the fast path accepted what serde refuses ({:?}): {raw}",
                reference.err()
            );
            assert_eq!(
                format!("{fast:?}"),
                format!("{:?}", reference.unwrap()),
                "{raw}"
            );
        }
    }

    #[test]
    fn fast_path_agrees_with_serde_on_every_event() {
        let events = every_event();
        assert!(events.len() > 3000, "{}", events.len());
        let mut fast = 0;
        for raw in &events {
            agrees(raw);
            fast += usize::from(fast::parse(raw).is_some());
        }
        // And it is the path taken: every event of the bench corpus and
        // nearly all the captured ones.
        assert!(
            fast * 100 >= events.len() * 95,
            "{fast} of {}",
            events.len()
        );
    }

    /// Edits that take an event off the common shape.
    fn mutate(raw: &str, seed: u64) -> String {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n.max(1) as u64) as usize
        };
        let chars: Vec<(usize, char)> = raw.char_indices().collect();
        let at = chars.get(next(chars.len())).map_or(0, |c| c.0);
        let (head, tail) = raw.split_at(at);
        const PIECES: &[&str] = &[
            "\"",
            "\\",
            "\\\"",
            "\\u0041",
            "\\ud800",
            "\\n",
            ",",
            ":",
            "{",
            "}",
            "[",
            "]",
            "null",
            "true",
            "1",
            "-0",
            "1.5e3",
            "0403",
            " ",
            "\t",
            "\u{1}",
            "é",
            r#""verb":"get","#,
            r#""user":null,"#,
            r#""stage":7,"#,
            r#""code":403.0,"#,
            r#""sourceIPs":"10.0.0.1","#,
            r#""annotations":{"a":null},"#,
            r#""x":[[[[[]]]]],"#,
            r#""v\u0065rb":"delete","#,
            "\\ud83d\\ude00",
            "\\udc00",
            r#""reason":"a \"b\" \u0026 c","#,
            r#""extra":{"k":"v"},"#,
            r#""requestObject":{"a":[1,{"b":"c"}]},"#,
        ];
        match next(4) {
            0 => format!("{head}{}{tail}", PIECES[next(PIECES.len())]),
            1 => head.to_owned(),
            2 => {
                let cut = tail.char_indices().nth(next(8)).map_or(tail.len(), |c| c.0);
                format!("{head}{}", &tail[cut..])
            }
            _ => format!(
                "{head}{}{}{tail}",
                PIECES[next(PIECES.len())],
                PIECES[next(PIECES.len())]
            ),
        }
    }

    #[test]
    fn fast_path_agrees_with_serde_on_mutations() {
        let events = every_event();
        for (i, raw) in events.iter().enumerate() {
            for k in 0..6 {
                let seed = (i * 6 + k) as u64;
                let once = mutate(raw, seed);
                agrees(&once);
                agrees(&mutate(&once, seed + 1_000_003));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_path_agrees_on_arbitrary_fields(
            key in proptest::sample::select(vec!["kind", "verb", "stage", "user", "impersonatedUser",
                "sourceIPs", "objectRef", "responseStatus", "annotations", "requestObject", "other"]),
            value in proptest::sample::select(vec![r#""s""#, r#""\u00e9\n""#, "null", "0", "-12", "1.5",
                "true", "[]", r#"["a","b"]"#, r#"[1]"#, "{}", r#"{"code":403,"message":"m"}"#,
                r#"{"username":"u","extra":{"k":["v"],"k2":"w","k3":null}}"#, r#"{"a":"b","a":"c"}"#,
                r#"{"resource":"pods","resource":"x"}"#, r#"{"code":1e2}"#, "[[[[[[[[[]]]]]]]]]"]),
            pad in "[ \t\n]{0,2}",
        ) {
            let raw = format!(r#"{{"auditID":"a","verb":"get",{pad}"{key}"{pad}:{pad}{value}{pad}}}"#);
            agrees(&raw);
        }
    }
}
