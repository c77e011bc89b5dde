//! Field paths: how a rule names a piece of an audit event, and how the
//! values behind a path are read from one event.
//!
//! A path is parsed and checked once, when rules are compiled
//! ([`Field::parse`]); reading it ([`Field::values`]) cannot fail and
//! yields zero or more [`Val`]s (a path through a list yields one value per
//! element). Request and response bodies are parsed lazily, once per event,
//! and only when a rule reaches into them ([`Eval`]).
//!
//! Paths: `verb`, `stage`, `level`, `auditID`, `requestURI`, `userAgent`,
//! `cluster`, `sourceIPs`, `sourceIP` (the connection's address: the last
//! entry), `user.{username,uid,groups}`, `user.extra.<key>`,
//! `impersonatedUser.{username,uid,groups}`, `impersonatedUser.extra.<key>`,
//! `objectRef.{resource,subresource,namespace,name,uid,apiGroup,apiVersion,resourceVersion}`,
//! `responseStatus.{code,status,reason,message}`, `annotations.<key>`,
//! `uri.path`, `uri.<query parameter>`, `requestObject.<json path>`,
//! `responseObject.<json path>`, `authenticationMetadata.<json path>`
//! (Kubernetes ≥ 1.35), and `pod.<json path>` (the pod spec of a
//! Pod, of a workload's template, or of a CronJob's job template, in the
//! request body), with `pod.allContainers[]` (containers, initContainers and
//! ephemeralContainers together), `pod.images` and `pod.imageRepositories`.
//! Inside an `each` condition, a path starting with `.` (or `[`) is read
//! from the element being tested (`.verbs`, `.subjects[].name`).
//! JSON paths are dot-separated keys, `[]` for every element of a list (or
//! every value of an object),//! `[N]` for one, and `["key.with.dots"]` for keys that hold dots.
//! A path may end in a modifier: `|repository` (an image without tag or
//! digest), `|int` (numbers only), `|first` (the first value only), `|join`
//! (all values joined by spaces into one: a command line).

use std::borrow::Cow;
use std::cell::{Cell, OnceCell};
use std::fmt;

use serde_json::Value;

use crate::event::{AuditEvent, Query, UserInfo};

/// One value read from an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'e> {
    Str(Cow<'e, str>),
    Num(f64),
    Bool(bool),
    /// An explicit JSON `null` in a body (a merge patch removing a key).
    /// Only `exists`/`null` tests see it; other operators skip it.
    Null,
}

impl Val<'_> {
    /// The value as text, as a rule compares it (`true`, `403`, `pods`).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s.as_ref()),
            Val::Num(n) => Cow::Owned(fmt_num(*n)),
            Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Val::Null => Cow::Borrowed("null"),
        }
    }

    pub fn num(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.trim().parse().ok(),
            Val::Bool(_) | Val::Null => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Val::Str(s) => Value::String(s.to_string()),
            Val::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, |n| {
                // Whole numbers print as integers.
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                {
                    Value::from(n.as_f64().unwrap_or_default() as i64)
                } else {
                    Value::Number(n)
                }
            }),
            Val::Bool(b) => Value::Bool(*b),
            Val::Null => Value::Null,
        }
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// What one event offers to rules, with the expensive parts parsed lazily.
pub struct Eval<'e, 'a> {
    pub ev: &'e AuditEvent<'a>,
    query: OnceCell<Query<'e>>,
    request: OnceCell<Option<Value>>,
    response: OnceCell<Option<Value>>,
    auth_meta: OnceCell<Option<Value>>,
    /// A body a rule needed could not be read (nested past
    /// [`MAX_BODY_DEPTH`], or not JSON): detection was impaired.
    unreadable: Cell<bool>,
}

/// Deepest nesting a request or response body may have. Kubernetes objects
/// stay far below it; a body nested deeper is an attempt to blind body
/// rules, and is reported as such.
pub const MAX_BODY_DEPTH: usize = 256;

impl<'e, 'a> Eval<'e, 'a> {
    pub fn new(ev: &'e AuditEvent<'a>) -> Self {
        Eval {
            ev,
            query: OnceCell::new(),
            request: OnceCell::new(),
            response: OnceCell::new(),
            auth_meta: OnceCell::new(),
            unreadable: Cell::new(false),
        }
    }

    fn query(&self) -> &Query<'e> {
        self.query
            .get_or_init(|| Query::parse(self.ev.request_uri.as_deref().unwrap_or("")))
    }

    fn body(&self, doc: Doc) -> Option<&Value> {
        let (cell, raw) = match doc {
            Doc::Request => (&self.request, self.ev.request_object),
            Doc::Response => (&self.response, self.ev.response_object),
            Doc::AuthMeta => (&self.auth_meta, self.ev.authentication_metadata),
        };
        cell.get_or_init(|| {
            let parsed = raw.and_then(|r| parse_body(r.get()));
            if raw.is_some() && parsed.is_none() {
                self.unreadable.set(true);
            }
            parsed
        })
        .as_ref()
    }

    /// Whether a body some rule needed could not be read.
    pub fn body_unreadable(&self) -> bool {
        self.unreadable.get()
    }
}

/// Parses a body nested at most [`MAX_BODY_DEPTH`] deep. serde_json's own
/// limit (128) is lifted for it, because a client-sent patch can pad its
/// nesting up to that limit to hide from every body rule.
fn parse_body(text: &str) -> Option<Value> {
    if max_depth(text.as_bytes()) > MAX_BODY_DEPTH {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    serde::Deserialize::deserialize(&mut de).ok()
}

/// The deepest nesting of `{`/`[` outside strings.
fn max_depth(b: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &c in b {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Where in an event a field is.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Verb,
    Stage,
    Level,
    AuditId,
    RequestUri,
    UserAgent,
    Cluster,
    Ips,
    Ip,
    User(UserPart),
    Impersonated(UserPart),
    ObjectRef(ObjPart),
    Code,
    Status(StatusPart),
    Annotation(String),
    UriPath,
    UriParam(String),
    Body {
        doc: Doc,
        path: Vec<Seg>,
    },
    Pod(PodPart),
    /// A path relative to the element an `each` condition is looking at.
    Elem(Vec<Seg>),
}

/// A raw JSON part of the event, parsed on demand.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Doc {
    Request,
    Response,
    AuthMeta,
}

#[derive(Debug, Clone, PartialEq)]
enum UserPart {
    Username,
    Uid,
    Groups,
    Extra(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ObjPart {
    Resource,
    Subresource,
    Namespace,
    Name,
    Uid,
    ApiGroup,
    ApiVersion,
    ResourceVersion,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StatusPart {
    Status,
    Reason,
    Message,
}

#[derive(Debug, Clone, PartialEq)]
enum PodPart {
    /// A path from the pod spec.
    Spec(Vec<Seg>),
    /// A path from every container of every kind.
    AllContainers(Vec<Seg>),
    Images,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Each,
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Modifier {
    None,
    Repository,
    Int,
    First,
    Join,
}

/// What rules are indexed by (see `detect::prefilter`): an event field, or
/// the presence of a part of the event, whose values an event is looked up
/// by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Verb,
    Resource,
    Subresource,
    /// `objectRef.apiGroup`.
    ApiGroup,
    /// The verb and `objectRef.resource` together, filed as
    /// `VERB\0RESOURCE`.
    VerbResource,
    Username,
    /// `responseStatus.code`, as rules write it (`403`).
    Code,
    /// Present (value `""`) when the event has an `impersonatedUser`.
    Impersonating,
    /// The keys of the event's annotations.
    Annotation,
}

impl Key {
    /// Calls `f` with each of the event's values of this key.
    pub fn values(self, ev: &AuditEvent<'_>, f: &mut dyn FnMut(&str)) {
        let one = match self {
            Key::Verb => ev.verb.as_deref(),
            Key::Resource => ev.object_ref.as_ref().and_then(|o| o.resource.as_deref()),
            Key::Subresource => ev
                .object_ref
                .as_ref()
                .and_then(|o| o.subresource.as_deref()),
            Key::ApiGroup => ev.object_ref.as_ref().and_then(|o| o.api_group.as_deref()),
            Key::VerbResource => {
                let resource = ev.object_ref.as_ref().and_then(|o| o.resource.as_deref());
                if let (Some(v), Some(r)) = (ev.verb.as_deref(), resource) {
                    // On the stack unless hostile values make it long.
                    let mut buf = [0u8; 96];
                    let n = v.len() + 1 + r.len();
                    if n <= buf.len() {
                        buf[..v.len()].copy_from_slice(v.as_bytes());
                        buf[v.len() + 1..n].copy_from_slice(r.as_bytes());
                        if let Ok(pair) = std::str::from_utf8(&buf[..n]) {
                            f(pair);
                        }
                    } else {
                        f(&format!("{v}\0{r}"));
                    }
                }
                return;
            }
            Key::Username => ev.user.username.as_deref(),
            Key::Code => {
                if let Some(c) = ev.response_code() {
                    // As `Val::text` writes the number.
                    f(&fmt_num(c as f64));
                }
                return;
            }
            Key::Impersonating => ev.impersonated_user.as_ref().map(|_| ""),
            Key::Annotation => {
                ev.annotations.iter().for_each(|(k, _)| f(k));
                return;
            }
        };
        if let Some(v) = one {
            f(v);
        }
    }

    /// About how many events in a thousand carry `value` here: how little
    /// an index entry narrows the rules (a guess from typical traffic; it
    /// only chooses between the keys a rule offers).
    pub fn share(self, value: &str) -> u32 {
        match (self, value) {
            (Key::Verb, "get" | "list" | "watch" | "update" | "patch") => 300,
            (Key::Verb, "create") => 100,
            (Key::Verb, _) => 10,
            (Key::Resource, "pods" | "nodes" | "leases" | "configmaps" | "endpoints") => 100,
            (Key::Resource, "endpointslices" | "events" | "secrets" | "serviceaccounts") => 50,
            (Key::Resource, _) => 20,
            (Key::Subresource, "status") => 100,
            (Key::Subresource, _) => 5,
            (Key::ApiGroup, "apps" | "coordination.k8s.io" | "discovery.k8s.io") => 200,
            (Key::ApiGroup, _) => 20,
            (Key::VerbResource, pair) => {
                let (v, r) = pair.split_once('\0').unwrap_or((pair, ""));
                (Key::Verb.share(v) * Key::Resource.share(r) / 1000).max(1)
            }
            (Key::Username, _) => 20,
            (Key::Code, "200" | "201") => 900,
            (Key::Code, _) => 20,
            (Key::Impersonating, _) => 5,
            (Key::Annotation, v) if v.starts_with("authorization.k8s.io/") => 1000,
            (Key::Annotation, _) => 10,
        }
    }
}

/// A compiled field path.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    path: String,
    source: Source,
    modifier: Modifier,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl Field {
    /// Parses a field path; the error says what is wrong in a sentence.
    pub fn parse(path: &str) -> Result<Field, String> {
        let (base, modifier) = match path.rsplit_once('|') {
            Some((b, "repository")) => (b, Modifier::Repository),
            Some((b, "int")) => (b, Modifier::Int),
            Some((b, "first")) => (b, Modifier::First),
            Some((b, "join")) => (b, Modifier::Join),
            Some((_, m)) => {
                return Err(format!(
                    "unknown modifier '|{m}' (expected |repository, |int, |first or |join)"
                ));
            }
            None => (path, Modifier::None),
        };
        let source = parse_source(base.trim())?;
        Ok(Field {
            path: path.to_owned(),
            source,
            modifier,
        })
    }

    /// Whether the field holds several values by nature (a list).
    pub fn is_list(&self) -> bool {
        if matches!(self.modifier, Modifier::First | Modifier::Join) {
            return false;
        }
        match &self.source {
            Source::Ips | Source::UriParam(_) => true,
            Source::User(UserPart::Groups | UserPart::Extra(_))
            | Source::Impersonated(UserPart::Groups | UserPart::Extra(_)) => true,
            Source::Body { path, .. } => path.contains(&Seg::Each),
            Source::Pod(PodPart::Spec(p)) | Source::Elem(p) => p.contains(&Seg::Each),
            Source::Pod(PodPart::AllContainers(_) | PodPart::Images) => true,
            _ => false,
        }
    }

    /// Whether the field's values appear verbatim (as JSON strings) in the
    /// event's raw text, so that a literal prefilter may rely on them.
    pub fn in_raw_text(&self) -> bool {
        !matches!(
            self.source,
            Source::Cluster | Source::UriParam(_) | Source::UriPath
        )
    }

    /// Reads the values of this field from one event.
    pub fn values<'x>(
        &self,
        e: &'x Eval<'_, '_>,
        scope: Option<&'x Value>,
        out: &mut Vec<Val<'x>>,
    ) {
        let start = out.len();
        self.raw_values(e, scope, out);
        match self.modifier {
            Modifier::None => {}
            Modifier::First => out.truncate(start + 1),
            Modifier::Join => {
                if out.len() > start {
                    let joined: Vec<String> =
                        out.drain(start..).map(|v| v.text().into_owned()).collect();
                    out.push(Val::Str(Cow::Owned(joined.join(" "))));
                }
            }
            Modifier::Int => {
                let vals: Vec<Val<'x>> = out
                    .drain(start..)
                    .filter_map(|v| {
                        let n = v.num()?;
                        (n.fract() == 0.0).then_some(Val::Num(n))
                    })
                    .collect();
                out.extend(vals);
            }
            Modifier::Repository => {
                for v in &mut out[start..] {
                    if let Val::Str(s) = v {
                        let repo = image_repository(s).to_owned();
                        *v = Val::Str(Cow::Owned(repo));
                    }
                }
            }
        }
    }

    /// The JSON values a body path reaches (objects included), for `each`.
    pub fn elements<'x>(&self, e: &'x Eval<'_, '_>, scope: Option<&'x Value>) -> Vec<&'x Value> {
        let mut out = Vec::new();
        let (root, path) = match &self.source {
            Source::Body { doc, path } => (e.body(*doc), path),
            Source::Pod(PodPart::Spec(path)) => (e.body(Doc::Request).and_then(pod_spec), path),
            Source::Pod(PodPart::AllContainers(path)) => {
                if let Some(spec) = e.body(Doc::Request).and_then(pod_spec) {
                    for kind in ["containers", "initContainers", "ephemeralContainers"] {
                        if let Some(Value::Array(cs)) = spec.get(kind) {
                            cs.iter().for_each(|c| walk_nodes(c, path, &mut out));
                        }
                    }
                }
                return out;
            }
            Source::Elem(path) => (scope, path),
            _ => return out,
        };
        if let Some(root) = root {
            walk_nodes(root, path, &mut out);
        }
        out
    }

    /// Whether `elements` can read this field (a path into JSON).
    pub fn is_json_path(&self) -> bool {
        matches!(
            self.source,
            Source::Body { .. }
                | Source::Pod(PodPart::Spec(_) | PodPart::AllContainers(_))
                | Source::Elem(_)
        )
    }

    /// The single-valued event field this path reads, when it is one the
    /// rule index looks rules up by (see `detect::prefilter`).
    pub fn key(&self) -> Option<Key> {
        if self.modifier != Modifier::None {
            return None;
        }
        match &self.source {
            Source::Verb => Some(Key::Verb),
            Source::ObjectRef(ObjPart::Resource) => Some(Key::Resource),
            Source::ObjectRef(ObjPart::Subresource) => Some(Key::Subresource),
            Source::ObjectRef(ObjPart::ApiGroup) => Some(Key::ApiGroup),
            Source::User(UserPart::Username) => Some(Key::Username),
            Source::Code => Some(Key::Code),
            _ => None,
        }
    }

    /// The index entry every event in which this path has a value is filed
    /// under: whatever the test, a value must be there for it to pass.
    pub fn presence(&self) -> Option<(Key, String)> {
        match &self.source {
            Source::Impersonated(_) => Some((Key::Impersonating, String::new())),
            Source::Annotation(k) => Some((Key::Annotation, k.clone())),
            _ => None,
        }
    }

    /// A JSON key that appears verbatim in the raw text of every event in
    /// which this field has a value, for `exists: true` prefiltering.
    pub fn key_needle(&self) -> Option<&str> {
        match &self.source {
            Source::Impersonated(_) => Some("impersonatedUser"),
            Source::Annotation(k) | Source::User(UserPart::Extra(k)) => Some(k),
            _ => None,
        }
    }

    fn raw_values<'x>(
        &self,
        e: &'x Eval<'_, '_>,
        scope: Option<&'x Value>,
        out: &mut Vec<Val<'x>>,
    ) {
        let ev = e.ev;
        let s = |v: Option<&'x str>, out: &mut Vec<Val<'x>>| {
            if let Some(v) = v {
                out.push(Val::Str(Cow::Borrowed(v)));
            }
        };
        match &self.source {
            Source::Verb => s(ev.verb.as_deref(), out),
            Source::Stage => s(ev.stage.map(|st| st.as_str()), out),
            Source::Level => s(ev.level.as_deref(), out),
            Source::AuditId => s(ev.audit_id.as_deref(), out),
            Source::RequestUri => s(ev.request_uri.as_deref(), out),
            Source::UserAgent => s(ev.user_agent.as_deref(), out),
            Source::Cluster => s(
                Some(
                    ev.cluster
                        .as_deref()
                        .unwrap_or(crate::finding::DEFAULT_CLUSTER),
                ),
                out,
            ),
            Source::Ips => ev.source_ips.iter().for_each(|ip| s(Some(ip), out)),
            Source::Ip => s(ev.source_ips.last().map(|ip| ip.as_ref()), out),
            Source::User(part) => user_values(&ev.user, part, out),
            Source::Impersonated(part) => {
                if let Some(u) = &ev.impersonated_user {
                    user_values(u, part, out);
                }
            }
            Source::ObjectRef(part) => {
                let o = ev.object_ref.as_ref();
                let v = o.and_then(|o| match part {
                    ObjPart::Resource => o.resource.as_deref(),
                    ObjPart::Subresource => o.subresource.as_deref(),
                    ObjPart::Namespace => o.namespace.as_deref(),
                    ObjPart::Name => o.name.as_deref(),
                    ObjPart::Uid => o.uid.as_deref(),
                    ObjPart::ApiGroup => o.api_group.as_deref(),
                    ObjPart::ApiVersion => o.api_version.as_deref(),
                    ObjPart::ResourceVersion => o.resource_version.as_deref(),
                });
                s(v, out);
            }
            Source::Code => {
                if let Some(c) = ev.response_code() {
                    out.push(Val::Num(c as f64));
                }
            }
            Source::Status(part) => {
                let st = ev.response_status.as_ref();
                let v = st.and_then(|st| match part {
                    StatusPart::Status => st.status.as_deref(),
                    StatusPart::Reason => st.reason.as_deref(),
                    StatusPart::Message => st.message.as_deref(),
                });
                s(v, out);
            }
            Source::Annotation(key) => s(ev.annotation(key), out),
            Source::UriPath => {
                if let Some(uri) = ev.request_uri.as_deref() {
                    let path = percent_encoding::percent_decode_str(crate::event::query::path(uri));
                    out.push(Val::Str(path.decode_utf8_lossy()));
                }
            }
            Source::Elem(path) => {
                if let Some(v) = scope {
                    walk(v, path, out);
                }
            }
            Source::UriParam(key) => {
                if ev.request_uri.is_some() {
                    out.extend(e.query().values(key).map(Val::Str));
                } else if let Some(body) = e.body(Doc::Request) {
                    // No requestURI (GKE): the request options are logged as
                    // the body, e.g. PodExecOptions {"command": [...]}.
                    walk(body, &[Seg::Key(key.clone())], out);
                }
            }
            Source::Body { doc, path } => {
                if let Some(body) = e.body(*doc) {
                    walk(body, path, out);
                }
            }
            Source::Pod(part) => {
                let Some(spec) = e.body(Doc::Request).and_then(pod_spec) else {
                    return;
                };
                match part {
                    PodPart::Spec(path) => walk(spec, path, out),
                    PodPart::AllContainers(path) => {
                        for kind in ["containers", "initContainers", "ephemeralContainers"] {
                            if let Some(Value::Array(cs)) = spec.get(kind) {
                                for c in cs {
                                    walk(c, path, out);
                                }
                            }
                        }
                    }
                    PodPart::Images => {
                        for kind in ["containers", "initContainers", "ephemeralContainers"] {
                            if let Some(Value::Array(cs)) = spec.get(kind) {
                                for c in cs {
                                    if let Some(Value::String(img)) = c.get("image") {
                                        out.push(Val::Str(Cow::Borrowed(img)));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn user_values<'x>(u: &'x UserInfo<'_>, part: &UserPart, out: &mut Vec<Val<'x>>) {
    match part {
        UserPart::Username => {
            if let Some(n) = u.username.as_deref() {
                out.push(Val::Str(Cow::Borrowed(n)));
            }
        }
        UserPart::Uid => {
            if let Some(n) = u.uid.as_deref() {
                out.push(Val::Str(Cow::Borrowed(n)));
            }
        }
        UserPart::Groups => {
            out.extend(u.groups.iter().map(|g| Val::Str(Cow::Borrowed(g.as_ref()))))
        }
        UserPart::Extra(key) => out.extend(
            u.extra(key)
                .iter()
                .map(|g| Val::Str(Cow::Borrowed(g.as_ref()))),
        ),
    }
}

/// The pod spec inside a request body: a Pod's `spec`, a workload's
/// `spec.template.spec`, a CronJob's `spec.jobTemplate.spec.template.spec`,
/// or (for `pods/ephemeralcontainers`) the body's own `spec`.
fn pod_spec(body: &Value) -> Option<&Value> {
    let spec = body.get("spec")?;
    if let Some(t) = spec.get("template").and_then(|t| t.get("spec")) {
        return Some(t);
    }
    if let Some(t) = spec
        .get("jobTemplate")
        .and_then(|j| j.get("spec"))
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
    {
        return Some(t);
    }
    Some(spec)
}

/// Walks a JSON path, pushing every scalar reached.
fn walk<'x>(v: &'x Value, path: &[Seg], out: &mut Vec<Val<'x>>) {
    let Some((seg, rest)) = path.split_first() else {
        match v {
            Value::String(s) => out.push(Val::Str(Cow::Borrowed(s))),
            Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    out.push(Val::Num(f));
                }
            }
            Value::Bool(b) => out.push(Val::Bool(*b)),
            // A list at the end of a path yields its scalar elements.
            Value::Array(items) => {
                for item in items {
                    if !item.is_array() {
                        walk(item, &[], out);
                    }
                }
            }
            // Objects have no scalar form; `exists` still sees them.
            Value::Object(_) => out.push(Val::Str(Cow::Borrowed(""))),
            Value::Null => out.push(Val::Null),
        }
        return;
    };
    match (seg, v) {
        (Seg::Key(k), Value::Object(m)) => {
            if let Some(child) = m.get(k) {
                walk(child, rest, out);
            }
        }
        (Seg::Each, Value::Array(items)) => {
            for item in items {
                walk(item, rest, out);
            }
        }
        // `[]` on an object steps into every value (ConfigMap `data`).
        (Seg::Each, Value::Object(m)) => {
            for item in m.values() {
                walk(item, rest, out);
            }
        }
        (Seg::Index(i), Value::Array(items)) => {
            if let Some(item) = items.get(*i) {
                walk(item, rest, out);
            }
        }
        _ => {}
    }
}

/// Walks a JSON path, pushing every node reached (the elements of a list
/// reached by `[]`; objects and lists themselves otherwise).
fn walk_nodes<'x>(v: &'x Value, path: &[Seg], out: &mut Vec<&'x Value>) {
    let Some((seg, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    match (seg, v) {
        (Seg::Key(k), Value::Object(m)) => {
            if let Some(child) = m.get(k) {
                walk_nodes(child, rest, out);
            }
        }
        (Seg::Each, Value::Array(items)) => items.iter().for_each(|i| walk_nodes(i, rest, out)),
        (Seg::Each, Value::Object(m)) => m.values().for_each(|i| walk_nodes(i, rest, out)),
        (Seg::Index(i), Value::Array(items)) => {
            if let Some(item) = items.get(*i) {
                walk_nodes(item, rest, out);
            }
        }
        _ => {}
    }
}

/// `registry.example.com:5000/team/app:1.2@sha256:..` → `registry.example.com:5000/team/app`.
pub fn image_repository(image: &str) -> &str {
    let no_digest = image.split_once('@').map_or(image, |(r, _)| r);
    match no_digest.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

fn parse_source(path: &str) -> Result<Source, String> {
    if path.starts_with('.') || path.starts_with('[') {
        return body_path(path).map(Source::Elem);
    }
    let simple = match path {
        "verb" => Some(Source::Verb),
        "stage" => Some(Source::Stage),
        "level" => Some(Source::Level),
        "auditID" => Some(Source::AuditId),
        "requestURI" => Some(Source::RequestUri),
        "userAgent" => Some(Source::UserAgent),
        "cluster" => Some(Source::Cluster),
        "sourceIPs" => Some(Source::Ips),
        "sourceIP" => Some(Source::Ip),
        "responseStatus.code" => Some(Source::Code),
        "responseStatus.status" => Some(Source::Status(StatusPart::Status)),
        "responseStatus.reason" => Some(Source::Status(StatusPart::Reason)),
        "responseStatus.message" => Some(Source::Status(StatusPart::Message)),
        "uri.path" => Some(Source::UriPath),
        "pod.images" => Some(Source::Pod(PodPart::Images)),
        _ => None,
    };
    if let Some(s) = simple {
        return Ok(s);
    }
    if let Some(rest) = path.strip_prefix("user.") {
        return user_part(rest).map(Source::User);
    }
    if let Some(rest) = path.strip_prefix("impersonatedUser.") {
        return user_part(rest).map(Source::Impersonated);
    }
    if let Some(rest) = path.strip_prefix("objectRef.") {
        let part = match rest {
            "resource" => ObjPart::Resource,
            "subresource" => ObjPart::Subresource,
            "namespace" => ObjPart::Namespace,
            "name" => ObjPart::Name,
            "uid" => ObjPart::Uid,
            "apiGroup" => ObjPart::ApiGroup,
            "apiVersion" => ObjPart::ApiVersion,
            "resourceVersion" => ObjPart::ResourceVersion,
            _ => {
                return Err(format!(
                    "unknown field 'objectRef.{rest}' (objectRef has resource, subresource, namespace, name, uid, apiGroup, apiVersion, resourceVersion)"
                ));
            }
        };
        return Ok(Source::ObjectRef(part));
    }
    if let Some(key) = path.strip_prefix("annotations.") {
        return non_empty(key, "annotations.<key>").map(|k| Source::Annotation(k.to_owned()));
    }
    if let Some(key) = path.strip_prefix("uri.") {
        return non_empty(key, "uri.<query parameter>").map(|k| Source::UriParam(k.to_owned()));
    }
    if let Some(rest) = path.strip_prefix("requestObject") {
        return body_path(rest).map(|path| Source::Body {
            doc: Doc::Request,
            path,
        });
    }
    if let Some(rest) = path.strip_prefix("responseObject") {
        return body_path(rest).map(|path| Source::Body {
            doc: Doc::Response,
            path,
        });
    }
    if let Some(rest) = path.strip_prefix("authenticationMetadata") {
        return body_path(rest).map(|path| Source::Body {
            doc: Doc::AuthMeta,
            path,
        });
    }
    if path == "pod.imageRepositories" {
        return Err("use 'pod.images|repository' for image repositories".into());
    }
    if let Some(rest) = path.strip_prefix("pod.allContainers[]") {
        return body_path(rest).map(|p| Source::Pod(PodPart::AllContainers(p)));
    }
    if let Some(rest) = path.strip_prefix("pod") {
        return body_path(rest).map(|p| Source::Pod(PodPart::Spec(p)));
    }
    Err(format!("unknown field '{path}'"))
}

fn non_empty<'p>(s: &'p str, what: &str) -> Result<&'p str, String> {
    if s.is_empty() {
        Err(format!("'{what}' needs a key"))
    } else {
        Ok(s)
    }
}

fn user_part(rest: &str) -> Result<UserPart, String> {
    match rest {
        "username" => Ok(UserPart::Username),
        "uid" => Ok(UserPart::Uid),
        "groups" => Ok(UserPart::Groups),
        _ => match rest.strip_prefix("extra.") {
            Some(k) if !k.is_empty() => Ok(UserPart::Extra(k.to_owned())),
            _ => Err(format!(
                "unknown user field '{rest}' (expected username, uid, groups or extra.<key>)"
            )),
        },
    }
}

/// `.spec.containers[].image`, `.metadata.labels["a.b/c"]`, `[0].x`.
fn body_path(mut rest: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("[]") {
            segs.push(Seg::Each);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("[\"") {
            let end = r.find("\"]").ok_or("unclosed [\"...\"] in field path")?;
            segs.push(Seg::Key(r[..end].to_owned()));
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or("unclosed [ in field path")?;
            let i = r[..end]
                .parse()
                .map_err(|_| format!("'[{}]' is not [], [N] or [\"key\"]", &r[..end]))?;
            segs.push(Seg::Index(i));
            rest = &r[end + 1..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err("empty key in field path".into());
            }
            segs.push(Seg::Key(r[..end].to_owned()));
            rest = &r[end..];
        } else {
            return Err(format!("unexpected '{rest}' in field path"));
        }
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(path: &str, raw: &str) -> Vec<String> {
        let ev = AuditEvent::parse(raw).unwrap();
        let e = Eval::new(&ev);
        let f = Field::parse(path).unwrap();
        let mut out = Vec::new();
        f.values(&e, None, &mut out);
        out.iter()
            .filter(|v| **v != Val::Null)
            .map(|v| v.text().into_owned())
            .collect()
    }

    const POD: &str = r#"{"auditID":"x","verb":"create","user":{"username":"u","groups":["a","b"],"extra":{"authentication.kubernetes.io/pod-name":["p"]}},"sourceIPs":["1.2.3.4","10.0.0.1"],"requestURI":"/api/v1/namespaces/n/pods?dryRun=All","objectRef":{"resource":"pods"},"responseStatus":{"code":201},"annotations":{"authorization.k8s.io/decision":"allow"},"requestObject":{"kind":"Pod","metadata":{"labels":{"app.kubernetes.io/name":"web"}},"spec":{"hostNetwork":true,"containers":[{"image":"nginx:1.25","securityContext":{"privileged":true}},{"image":"registry:5000/team/side@sha256:abc"}],"initContainers":[{"image":"busybox"}],"volumes":[{"hostPath":{"path":"/etc"}},{"emptyDir":{}}]}}}"#;

    #[test]
    fn reads_scalar_and_list_fields() {
        assert_eq!(vals("verb", POD), ["create"]);
        assert_eq!(vals("user.groups", POD), ["a", "b"]);
        assert_eq!(
            vals("user.extra.authentication.kubernetes.io/pod-name", POD),
            ["p"]
        );
        assert_eq!(vals("sourceIP", POD), ["10.0.0.1"]);
        assert_eq!(vals("responseStatus.code", POD), ["201"]);
        assert_eq!(
            vals("annotations.authorization.k8s.io/decision", POD),
            ["allow"]
        );
        assert_eq!(vals("uri.dryRun", POD), ["All"]);
        assert_eq!(vals("uri.path", POD), ["/api/v1/namespaces/n/pods"]);
        let proxy = r#"{"auditID":"x","verb":"get","requestURI":"/api/v1/nodes/n1/proxy/%72un/ns/p/c?cmd=id"}"#;
        assert_eq!(
            vals("uri.path", proxy),
            ["/api/v1/nodes/n1/proxy/run/ns/p/c"]
        );
        assert_eq!(vals("cluster", POD), ["default"]);
        let imp = r#"{"auditID":"x","verb":"get","authenticationMetadata":{"impersonationConstraint":"impersonate:user-info"}}"#;
        assert_eq!(
            vals("authenticationMetadata.impersonationConstraint", imp),
            ["impersonate:user-info"]
        );
        assert!(vals("impersonatedUser.username", POD).is_empty());
    }

    #[test]
    fn reads_bodies_and_pod_specs() {
        assert_eq!(
            vals(
                "requestObject.spec.containers[].securityContext.privileged",
                POD
            ),
            ["true"]
        );
        assert_eq!(
            vals(
                "requestObject.metadata.labels[\"app.kubernetes.io/name\"]",
                POD
            ),
            ["web"]
        );
        assert_eq!(
            vals("requestObject.spec.containers[1].image", POD),
            ["registry:5000/team/side@sha256:abc"]
        );
        assert_eq!(vals("pod.hostNetwork", POD), ["true"]);
        assert_eq!(vals("requestObject.metadata.labels[]", POD), ["web"]);
        assert_eq!(vals("pod.volumes[].hostPath.path", POD), ["/etc"]);
        assert_eq!(
            vals("pod.images", POD),
            [
                "nginx:1.25",
                "registry:5000/team/side@sha256:abc",
                "busybox"
            ]
        );
        assert_eq!(
            vals("pod.images|repository", POD),
            ["nginx", "registry:5000/team/side", "busybox"]
        );
        assert_eq!(vals("pod.allContainers[].image|first", POD), ["nginx:1.25"]);
        let deploy = r#"{"auditID":"x","verb":"create","requestObject":{"kind":"Deployment","spec":{"template":{"spec":{"hostPID":true}}}}}"#;
        assert_eq!(vals("pod.hostPID", deploy), ["true"]);
        let cron = r#"{"auditID":"x","verb":"create","requestObject":{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"hostIPC":true}}}}}}}"#;
        assert_eq!(vals("pod.hostIPC", cron), ["true"]);
    }

    #[test]
    fn deep_bodies_parse_to_the_limit_and_are_flagged_beyond() {
        let body = |n: usize| {
            format!(
                r#"{{"auditID":"x","verb":"patch","requestObject":{{"spec":{{"hostPID":true}},"pad":{}1{}}}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let raw = body(200);
        let ev = AuditEvent::parse(&raw).unwrap();
        let e = Eval::new(&ev);
        let mut out = Vec::new();
        Field::parse("requestObject.spec.hostPID")
            .unwrap()
            .values(&e, None, &mut out);
        assert_eq!(
            out,
            [Val::Bool(true)],
            "200 levels: past serde_json's 128, still read"
        );
        assert!(!e.body_unreadable());
        let raw = body(5000);
        let ev = AuditEvent::parse(&raw).unwrap();
        let e = Eval::new(&ev);
        let mut out = Vec::new();
        Field::parse("requestObject.spec.hostPID")
            .unwrap()
            .values(&e, None, &mut out);
        assert!(out.is_empty());
        assert!(e.body_unreadable(), "a body too deep to read is reported");
    }

    #[test]
    fn uri_params_fall_back_to_gke_request_options() {
        let gke = r#"{"auditID":"x","verb":"create","requestObject":{"@type":"core.k8s.io/v1.PodExecOptions","command":["/bin/sh","-c","id"],"container":"api"}}"#;
        assert_eq!(vals("uri.command", gke), ["/bin/sh", "-c", "id"]);
        assert_eq!(vals("uri.container", gke), ["api"]);
    }

    #[test]
    fn modifiers() {
        let ev =
            r#"{"auditID":"x","verb":"create","requestURI":"/x?ports=5432&ports=abc&ports=80"}"#;
        assert_eq!(vals("uri.ports|int", ev), ["5432", "80"]);
        assert_eq!(vals("uri.ports|join", ev), ["5432 abc 80"]);
        assert_eq!(image_repository("nginx"), "nginx");
        assert_eq!(
            image_repository("docker.io/library/nginx:1.25"),
            "docker.io/library/nginx"
        );
        assert_eq!(image_repository("localhost:5000/app"), "localhost:5000/app");
    }

    #[test]
    fn bad_paths_say_why() {
        for (p, msg) in [
            ("verbz", "unknown field 'verbz'"),
            ("objectRef.kind", "objectRef has"),
            ("user.name", "unknown user field"),
            ("requestObject.spec[x]", "is not [], [N]"),
            ("requestObject.a..b", "empty key"),
            ("verb|upper", "unknown modifier"),
            ("annotations.", "needs a key"),
        ] {
            let err = Field::parse(p).unwrap_err();
            assert!(err.contains(msg), "{p}: {err}");
        }
    }

    #[test]
    fn list_and_raw_classification() {
        assert!(Field::parse("user.groups").unwrap().is_list());
        assert!(!Field::parse("verb").unwrap().is_list());
        assert!(Field::parse("pod.containers[].image").unwrap().is_list());
        assert!(!Field::parse("uri.container|first").unwrap().is_list());
        assert!(!Field::parse("uri.command").unwrap().in_raw_text());
        assert!(Field::parse("objectRef.resource").unwrap().in_raw_text());
    }
}
