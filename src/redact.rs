//! Redaction of secrets inside an audit event, before the event is stored,
//! alerted or exported as evidence (DESIGN: "Evidence is redacted").
//!
//! Input: one audit event, as JSON text ([`redact_event`]) or already parsed
//! ([`redact_value`]). Output: the same event with every secret value
//! replaced by `"[redacted sha256:<12 hex>]"`, the first 12 hex digits of the
//! SHA-256 of the original value's bytes, so an analyst can tell two values
//! apart or match a known one without seeing it. Keys, structure and every
//! other value are kept as they were.
//!
//! What is a secret here:
//! - Secrets (`kind: Secret`, `SecretList`, or any request/response body of
//!   an event whose `objectRef.resource` is `secrets`, including list items,
//!   `Table` rows and JSON-patch operations): every value under `data` and
//!   `stringData`, and the `kubectl.kubernetes.io/last-applied-configuration`
//!   annotation (it holds the whole Secret) or any other annotation that
//!   carries a copy of it.
//! - TokenRequest responses: `status.token`.
//! - Values under credential-like keys (`authorization`, `cookie`, `token`,
//!   `password`, `client-key-data`, `secret`, `*_password`, `apiToken`, ...),
//!   `{name, value}` pairs whose name is credential-like (container env,
//!   probe HTTP headers).
//! - ConfigMaps: values under credential-like keys, values holding a private
//!   key, AWS credentials, or a Helm release.
//! - Inside any string: the credential after `Bearer ` or `Authorization:`,
//!   JWTs (also base64-wrapped), PEM private-key bodies, `key=value`,
//!   `key: value` and `"key": "value"` pairs whose key is credential-like
//!   (kubeconfig lines, env files, query strings, CLI flags), and the
//!   password in `scheme://user:password@host`.
//! - Inside `last-applied-configuration` annotations and audit events
//!   wrapped in a string: the same rules, applied to the parsed JSON (a
//!   bounded number of levels deep).
//!
//! Not redacted, on purpose: user names, groups, credential ids
//! (`JTI=<uuid>`, `X509SHA256=<hex>`), annotations such as
//! `authentication.kubernetes.io/issued-credential-id`, request paths and
//! command arguments other than the credentials embedded in them. Keys are
//! never changed, even when they look like a credential.
//!
//! It leaves to others: deciding what an audit event is and unwrapping
//! envelopes (`crate::decode`), matching rules (which see values before
//! redaction) and escaping for the output medium (`crate::alert`). Every
//! string may be attacker-chosen: the walk is iterative, JSON found inside
//! strings is parsed at most two levels deep, every scan is linear in the
//! string's length, and nothing here panics.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Start of every replacement value.
const MARKER_PREFIX: &str = "[redacted sha256:";
/// How many hex digits of the hash a replacement shows.
const MARKER_HEX: usize = 12;
/// The annotation `kubectl apply` leaves on every object it touched.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// How many levels of JSON held inside a string value are parsed and
/// redacted structurally (a `last-applied-configuration` annotation, an
/// audit event wrapped by a shipper).
const PARSE_BUDGET: u8 = 2;
/// How many times a string that had something redacted is scanned again.
const MAX_RESCANS: usize = 4;
/// How far from an AWS access key id a secret access key counts as its.
const AWS_NEAR: usize = 512;
/// Longest key looked at when scanning `key=value` text.
const MAX_KEY: usize = 256;

/// Keys whose value is a credential, compared after lower-casing and
/// dropping everything but letters and digits (`Client-Key-Data`,
/// `client_key_data` and `clientKeyData` all match `clientkeydata`).
const CREDENTIAL_KEYS: &[&str] = &[
    "authorization",
    "proxyauthorization",
    "auth",
    "xapikey",
    "apikey",
    "cookie",
    "setcookie",
    "password",
    "passwd",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "bearertoken",
    "clientkeydata",
    "clientcertificatedata",
    "secret",
    "clientsecret",
    "privatekey",
    "secretkey",
    "secretaccesskey",
    "sessiontoken",
    "xauthtoken",
    "xamzsecuritytoken",
];

/// Endings of a normalised key name that mark its value as a credential
/// (`DB_PASSWORD`, `github_token`, `--client-secret`, `adminPassword`).
const CREDENTIAL_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "token",
    "secret",
    "apikey",
    "secretkey",
    "privatekey",
    "clientkeydata",
    "secretaccesskey",
];

/// Endings that look like the ones above but name something that is not a
/// credential (pagination cursors, a boolean switch).
const NOT_CREDENTIAL_SUFFIXES: &[&str] =
    &["pagetoken", "continuetoken", "automountserviceaccounttoken"];

/// Words that make a ConfigMap key credential-like wherever they occur in
/// it (`db_password`, `SECRET_KEY_BASE`, `aws-credentials`).
const CONFIGMAP_KEY_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
];

/// Values that stand for a credential without being one.
const PLACEHOLDERS: &[&str] = &[
    "true",
    "false",
    "null",
    "none",
    "nil",
    "undefined",
    "token",
    "tokens",
    "redacted",
];

/// Parses `raw` (one audit event's JSON text) and returns it with secrets
/// replaced.
///
/// Fails only when `raw` is not JSON (including nesting deeper than
/// serde_json's limit of 128 levels); any JSON value is accepted.
pub fn redact_event(raw: &str) -> Result<serde_json::Value, serde_json::Error> {
    let mut event: Value = serde_json::from_str(raw)?;
    redact_value(&mut event);
    Ok(event)
}

/// Redacts an already-parsed event in place; returns how many values were
/// replaced.
///
/// A value already replaced is left alone, so redacting twice changes
/// nothing the second time. A list of events (`EventList`) works too: every
/// object that looks like an audit event gets its own context.
pub fn redact_value(event: &mut serde_json::Value) -> usize {
    redact_tree(event, Role::Normal, PARSE_BUDGET)
}

/// Redacts secrets inside arbitrary bytes (a quarantined input that is not
/// JSON): each valid UTF-8 stretch goes through the string scanners
/// (bearer credentials, JWTs, `key=value` and `--flag value` credentials);
/// invalid bytes are kept as they are, since they may be why the input was
/// quarantined.
pub fn redact_bytes(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        let mut v = serde_json::Value::String(chunk.valid().to_owned());
        redact_value(&mut v);
        if let serde_json::Value::String(text) = v {
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// The replacement for a secret whose bytes are `original`.
fn marker(original: &[u8]) -> String {
    let digest = Sha256::digest(original);
    let mut hex = hex::encode(digest);
    hex.truncate(MARKER_HEX);
    format!("{MARKER_PREFIX}{hex}]")
}

/// Replaces `s` whole when it is `sensitive`, not empty and not already
/// redacted; returns whether it did.
fn redact_whole_if(s: &mut String, sensitive: impl FnOnce(&str) -> bool) -> bool {
    if s.is_empty() || is_redacted(s) || !sensitive(s) {
        return false;
    }
    *s = redact_whole(s);
    true
}

/// The replacement for a whole value. An HTTP authorization value keeps its
/// scheme (`Bearer [redacted ...]`), which says what kind of credential it
/// was.
fn redact_whole(s: &str) -> String {
    let b = s.as_bytes();
    let keep = scheme_prefix_len(b);
    match (s.get(..keep), s.get(keep..)) {
        (Some(scheme), Some(rest)) if keep > 0 => format!("{scheme}{}", marker(rest.as_bytes())),
        _ => marker(b),
    }
}

/// Length of a leading `Bearer ` or `Basic ` (with the spaces after it) when
/// a credential follows it; 0 otherwise.
fn scheme_prefix_len(b: &[u8]) -> usize {
    for scheme in [&b"bearer"[..], &b"basic"[..]] {
        if starts_with_ci(b, 0, scheme) {
            let end = run_end(b, scheme.len(), |c| c == b' ' || c == b'\t');
            if end > scheme.len() && end < b.len() {
                return end;
            }
        }
    }
    0
}

/// True when `s` is a replacement this module produces for a whole value
/// (with or without a kept `Bearer `/`Basic `).
fn is_redacted(s: &str) -> bool {
    is_marker(s)
        || s.get(scheme_prefix_len(s.as_bytes())..)
            .is_some_and(is_marker)
}

/// True when `s` is exactly a replacement this module produces.
fn is_marker(s: &str) -> bool {
    s.len() == MARKER_PREFIX.len() + MARKER_HEX + 1
        && s.ends_with(']')
        && s.strip_prefix(MARKER_PREFIX)
            .and_then(|rest| rest.get(..MARKER_HEX))
            .is_some_and(|hex| {
                hex.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            })
}

/// Kinds of Kubernetes object that get special treatment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Secret,
    ConfigMap,
    TokenRequest,
}

/// How a value in the tree is treated, decided by where it sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Anything else: structure is walked, strings are scanned.
    Normal,
    /// An object of this kind, or a list, table or watch event of them.
    Object(Kind),
    /// The `metadata` of an object (of this kind, when known).
    Meta(Option<Kind>),
    /// The `metadata.annotations` of an object (of this kind, when known).
    Annotations(Option<Kind>),
    /// A ConfigMap's `data` or `binaryData`.
    ConfigMapData { helm: bool },
    /// A TokenRequest's `status`.
    TokenStatus,
    /// A list's `items`.
    Items(Kind),
    /// A `Table`'s `rows`.
    Rows(Kind),
    /// One `Table` row, whose `object` is the object.
    Row(Kind),
    /// A JSON patch (RFC 6902) applied to an object of this kind.
    PatchOps(Kind),
    /// One operation of such a patch.
    PatchOp(Kind),
    /// Every string and number below is a secret.
    RedactAll,
    /// The value of a credential-like key: strings and numbers (also in
    /// arrays) are secrets, objects are walked normally.
    RedactScalars,
}

impl Role {
    fn redacts_scalars(self) -> bool {
        matches!(self, Role::RedactAll | Role::RedactScalars)
    }

    fn element_role(self) -> Role {
        match self {
            Role::Items(kind) => Role::Object(kind),
            Role::Rows(kind) => Role::Row(kind),
            Role::PatchOps(kind) => Role::PatchOp(kind),
            Role::RedactAll => Role::RedactAll,
            Role::RedactScalars => Role::RedactScalars,
            _ => Role::Normal,
        }
    }
}

/// The special kinds an audit event's request and response bodies have,
/// from its `objectRef` (or a GKE entry's `methodName`).
#[derive(Clone, Copy, Debug)]
struct EventContext {
    request: Option<Kind>,
    response: Option<Kind>,
}

/// Walks `root` without recursion; returns how many values were replaced.
/// Recursion happens only through JSON parsed out of strings, and `budget`
/// bounds it.
fn redact_tree(root: &mut Value, role: Role, budget: u8) -> usize {
    let mut count = 0;
    let mut stack: Vec<(&mut Value, Role)> = vec![(root, role)];
    while let Some((value, role)) = stack.pop() {
        match value {
            Value::String(s) => count += redact_string(s, role, budget),
            Value::Number(n) => {
                if role.redacts_scalars() {
                    let text = n.to_string();
                    *value = Value::String(marker(text.as_bytes()));
                    count += 1;
                }
            }
            Value::Array(items) => {
                let child = role.element_role();
                // `["--password", "hunter2"]`: a credential flag's value is
                // the next argument.
                let mut after_flag = false;
                for item in items.iter_mut() {
                    let text = item.as_str();
                    let is_value =
                        !text.is_some_and(|t| t.starts_with("--") || is_placeholder(t.as_bytes()));
                    let role = if after_flag && is_value {
                        Role::RedactScalars
                    } else {
                        child
                    };
                    after_flag = child == Role::Normal && text.is_some_and(is_credential_flag);
                    stack.push((item, role));
                }
            }
            Value::Object(map) => count += visit_object(map, role, budget, &mut stack),
            Value::Null | Value::Bool(_) => {}
        }
    }
    count
}

/// Redacts one string value in place according to its role.
fn redact_string(s: &mut String, role: Role, budget: u8) -> usize {
    if role.redacts_scalars() {
        if s.is_empty() || is_redacted(s) {
            return 0;
        }
        *s = redact_whole(s);
        return 1;
    }
    if let Some(outcome) = redact_embedded_event(s, budget) {
        return match outcome {
            Some(redacted) => {
                *s = redacted;
                1
            }
            None => 0,
        };
    }
    let Some(mut redacted) = scan_string(s) else {
        return 0;
    };
    // A replacement can change what surrounds another credential (the key
    // before a `=`, the start of a line): scan again until nothing changes,
    // so that redacting twice finds nothing more.
    for _ in 0..MAX_RESCANS {
        match scan_string(&redacted) {
            Some(again) => redacted = again,
            None => break,
        }
    }
    *s = redacted;
    1
}

/// An audit event wrapped in a string (a shipper's `message` field): parsed
/// and redacted structurally. `None` when `s` is not such an event;
/// `Some(None)` when it is and holds nothing to redact.
fn redact_embedded_event(s: &str, budget: u8) -> Option<Option<String>> {
    if budget == 0 || !s.trim_start().starts_with('{') || !s.contains("\"auditID\"") {
        return None;
    }
    let mut inner: Value = serde_json::from_str(s).ok()?;
    if !inner.is_object() {
        return None;
    }
    if redact_tree(&mut inner, Role::Normal, budget - 1) == 0 {
        return Some(None);
    }
    serde_json::to_string(&inner).ok().map(Some)
}

/// Decides the roles of an object's children and pushes them; redacts in
/// place what needs the whole object to decide. Returns how many values it
/// replaced itself.
fn visit_object<'a>(
    map: &'a mut Map<String, Value>,
    role: Role,
    budget: u8,
    stack: &mut Vec<(&'a mut Value, Role)>,
) -> usize {
    let role = match role {
        Role::Normal | Role::RedactScalars => role_from_kind(map),
        other => other,
    };
    match role {
        Role::RedactAll => {
            stack.extend(map.values_mut().map(|child| (child, Role::RedactAll)));
            0
        }
        Role::ConfigMapData { helm } => visit_configmap_data(map, helm, stack),
        Role::Annotations(kind) => visit_annotations(map, kind, budget, stack),
        Role::PatchOp(kind) => visit_patch_op(map, kind, stack),
        _ => {
            let context = if role == Role::Normal {
                event_context(map)
            } else {
                None
            };
            let env_value = role == Role::Normal && is_credential_pair(map);
            let helm = role == Role::Object(Kind::ConfigMap) && is_helm_release(map);
            for (key, child) in map.iter_mut() {
                let child_role = child_role(role, key, context, env_value, helm, child);
                stack.push((child, child_role));
            }
            0
        }
    }
}

/// The role an object gets from its own `kind` (or GKE's `@type`).
fn role_from_kind(map: &Map<String, Value>) -> Role {
    let kind = match map.get("kind").and_then(Value::as_str) {
        Some(kind) => kind,
        None => match map.get("@type").and_then(Value::as_str) {
            Some(t) => t.rsplit('.').next().unwrap_or(t),
            None => return Role::Normal,
        },
    };
    match kind {
        "Secret" | "SecretList" => Role::Object(Kind::Secret),
        "ConfigMap" | "ConfigMapList" => Role::Object(Kind::ConfigMap),
        "TokenRequest" => Role::Object(Kind::TokenRequest),
        _ => Role::Normal,
    }
}

/// The role of `child`, found under `key` in an object whose role is `role`.
fn child_role(
    role: Role,
    key: &str,
    context: Option<EventContext>,
    env_value: bool,
    helm: bool,
    child: &Value,
) -> Role {
    let specific = match role {
        Role::Object(kind) => match key {
            "metadata" => Some(Role::Meta(Some(kind))),
            "items" => Some(Role::Items(kind)),
            "rows" => Some(Role::Rows(kind)),
            "object" => Some(Role::Object(kind)),
            "data" | "stringData" if kind == Kind::Secret => Some(Role::RedactAll),
            "data" | "binaryData" if kind == Kind::ConfigMap => Some(Role::ConfigMapData { helm }),
            "status" if kind == Kind::TokenRequest => Some(Role::TokenStatus),
            _ => None,
        },
        Role::TokenStatus => (key == "token").then_some(Role::RedactAll),
        Role::Meta(kind) => (key == "annotations").then_some(Role::Annotations(kind)),
        Role::Row(kind) => (key == "object").then_some(Role::Object(kind)),
        Role::Normal => match key {
            "requestObject" | "request" => context
                .and_then(|c| c.request)
                .map(|kind| body_role(kind, child)),
            "responseObject" | "response" => context
                .and_then(|c| c.response)
                .map(|kind| body_role(kind, child)),
            "metadata" => Some(Role::Meta(None)),
            "value" if env_value => Some(Role::RedactAll),
            _ => None,
        },
        _ => None,
    };
    specific.unwrap_or_else(|| key_role(key))
}

/// The role of a request or response body of an event about `kind`.
fn body_role(kind: Kind, body: &Value) -> Role {
    match body {
        Value::Array(_) => Role::PatchOps(kind),
        // A body the audit log kept as text (a YAML patch): nothing in a
        // Secret's body is safe to show.
        Value::String(_) if kind == Kind::Secret => Role::RedactAll,
        _ => Role::Object(kind),
    }
}

/// The role a value gets from its key alone.
fn key_role(key: &str) -> Role {
    if is_credential_key(key) {
        Role::RedactScalars
    } else {
        Role::Normal
    }
}

/// The context of `map` when it looks like an audit event (or a GKE
/// `protoPayload`).
fn event_context(map: &Map<String, Value>) -> Option<EventContext> {
    if let Some(object_ref) = map.get("objectRef").and_then(Value::as_object) {
        let field = |name: &str| object_ref.get(name).and_then(Value::as_str).unwrap_or("");
        return Some(context_for(field("resource"), field("subresource")));
    }
    let method = map.get("methodName").and_then(Value::as_str)?;
    let (resource, subresource) = gke_resource(method);
    Some(context_for(resource, subresource))
}

/// Resource and subresource from a GKE `methodName`
/// (`io.k8s.core.v1.pods.exec.create` → `pods`, `exec`).
fn gke_resource(method: &str) -> (&str, &str) {
    let parts: Vec<&str> = method.split('.').collect();
    let is_version = |p: &&str| {
        let b = p.as_bytes();
        b.first() == Some(&b'v') && b.get(1).is_some_and(u8::is_ascii_digit)
    };
    let Some(version) = parts.iter().position(is_version) else {
        return ("", "");
    };
    match parts.get(version + 1..).unwrap_or_default() {
        [resource, _verb] => (resource, ""),
        [resource, subresource, _verb] => (resource, subresource),
        _ => ("", ""),
    }
}

fn context_for(resource: &str, subresource: &str) -> EventContext {
    match (resource, subresource) {
        ("secrets", _) => EventContext {
            request: Some(Kind::Secret),
            response: Some(Kind::Secret),
        },
        ("configmaps", "") => EventContext {
            request: Some(Kind::ConfigMap),
            response: Some(Kind::ConfigMap),
        },
        ("serviceaccounts", "token") => EventContext {
            request: None,
            response: Some(Kind::TokenRequest),
        },
        _ => EventContext {
            request: None,
            response: None,
        },
    }
}

/// A `{name, value}` pair (container env var, probe HTTP header) whose name
/// says the value is a credential.
fn is_credential_pair(map: &Map<String, Value>) -> bool {
    let Some(name) = map.get("name").and_then(Value::as_str) else {
        return false;
    };
    let Some(value) = map.get("value").and_then(Value::as_str) else {
        return false;
    };
    // `$(OTHER_VAR)` expansions and file paths are not credentials.
    if value.starts_with("$(") || value.starts_with('/') {
        return false;
    }
    is_credential_key(name)
}

/// A Helm release stored by the ConfigMap driver (`owner: helm`): its
/// `release` value holds the chart's values, secrets included.
fn is_helm_release(map: &Map<String, Value>) -> bool {
    map.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get("owner"))
        .and_then(Value::as_str)
        .is_some_and(|owner| owner.eq_ignore_ascii_case("helm"))
}

/// ConfigMap `data`/`binaryData`: values that look like credentials are
/// replaced whole, the rest is scanned like any string.
fn visit_configmap_data<'a>(
    map: &'a mut Map<String, Value>,
    helm: bool,
    stack: &mut Vec<(&'a mut Value, Role)>,
) -> usize {
    let mut count = 0;
    for (key, child) in map.iter_mut() {
        let replaced = match &mut *child {
            Value::String(s) => redact_whole_if(s, |v| {
                (helm && key == "release") || configmap_value_is_credential(key, v)
            }),
            _ => false,
        };
        if replaced {
            count += 1;
            continue;
        }
        stack.push((child, key_role(key)));
    }
    count
}

/// Annotations: `last-applied-configuration` (and other copies of the whole
/// object) is replaced whole on a Secret, and elsewhere when the copy holds
/// anything that would be redacted.
fn visit_annotations<'a>(
    map: &'a mut Map<String, Value>,
    kind: Option<Kind>,
    budget: u8,
    stack: &mut Vec<(&'a mut Value, Role)>,
) -> usize {
    let mut count = 0;
    for (key, child) in map.iter_mut() {
        match &mut *child {
            Value::String(s) if annotation_is_sensitive(key, s, kind, budget) => {
                *s = redact_whole(s);
                count += 1;
                continue;
            }
            Value::String(_) => {}
            _ if kind == Some(Kind::Secret) && key == LAST_APPLIED => {
                stack.push((child, Role::RedactAll));
                continue;
            }
            _ => {}
        }
        stack.push((child, key_role(key)));
    }
    count
}

fn annotation_is_sensitive(key: &str, value: &str, kind: Option<Kind>, budget: u8) -> bool {
    if value.is_empty() || is_redacted(value) {
        return false;
    }
    let snapshot =
        key == LAST_APPLIED || (value.trim_start().starts_with('{') && value.contains("\"kind\""));
    if kind == Some(Kind::Secret) {
        // Any annotation carrying a copy of the Secret (kubectl's, kapp's...).
        return snapshot
            || value.contains("\"data\"")
            || value.contains("\"stringData\"")
            || value.starts_with("data:")
            || value.contains("\ndata:");
    }
    if !snapshot {
        return false;
    }
    if budget == 0 {
        // Only reachable inside a parsed copy: a copy inside a copy is never
        // written by kubectl, so nothing in it is needed.
        return true;
    }
    let Ok(mut inner) = serde_json::from_str::<Value>(value) else {
        return false;
    };
    let role = match (kind, &inner) {
        (Some(Kind::ConfigMap), Value::Object(_)) => Role::Object(Kind::ConfigMap),
        _ => Role::Normal,
    };
    redact_tree(&mut inner, role, budget - 1) > 0
}

/// One JSON-patch operation on a Secret or ConfigMap: its `value` is
/// treated according to the `path` it is written to.
fn visit_patch_op<'a>(
    map: &'a mut Map<String, Value>,
    kind: Kind,
    stack: &mut Vec<(&'a mut Value, Role)>,
) -> usize {
    let target = map
        .get("path")
        .and_then(Value::as_str)
        .map(|path| patch_target(kind, path));
    let mut count = 0;
    for (key, child) in map.iter_mut() {
        if key == "value" {
            match &target {
                Some(PatchTarget::Role(role)) => {
                    stack.push((child, *role));
                    continue;
                }
                Some(PatchTarget::ConfigMapEntry(entry)) => {
                    let replaced = match &mut *child {
                        Value::String(s) => {
                            redact_whole_if(s, |v| configmap_value_is_credential(entry, v))
                        }
                        _ => false,
                    };
                    if replaced {
                        count += 1;
                        continue;
                    }
                }
                None => {}
            }
        }
        stack.push((child, key_role(key)));
    }
    count
}

/// What a JSON-patch `path` points at.
enum PatchTarget {
    Role(Role),
    ConfigMapEntry(String),
}

fn patch_target(kind: Kind, path: &str) -> PatchTarget {
    if path.is_empty() || path == "/" {
        return PatchTarget::Role(Role::Object(kind));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return PatchTarget::Role(Role::Normal);
    };
    // RFC 6901 escapes: `~1` is `/`, `~0` is `~`.
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let role = match (kind, segs.as_slice()) {
        (Kind::Secret, ["data" | "stringData", ..]) => Role::RedactAll,
        (Kind::ConfigMap, ["data" | "binaryData"]) => Role::ConfigMapData { helm: false },
        (Kind::ConfigMap, ["data" | "binaryData", entry]) => {
            return PatchTarget::ConfigMapEntry((*entry).to_owned());
        }
        (_, ["metadata"]) => Role::Meta(Some(kind)),
        (_, ["metadata", "annotations"]) => Role::Annotations(Some(kind)),
        (_, ["metadata", "annotations", LAST_APPLIED]) => Role::RedactAll,
        (Kind::TokenRequest, ["status"]) => Role::TokenStatus,
        _ => Role::Normal,
    };
    PatchTarget::Role(role)
}

// ---------------------------------------------------------------------------
// Key names
// ---------------------------------------------------------------------------

/// `key` lower-cased with everything but ASCII letters and digits dropped.
fn normalize_key(key: &[u8]) -> Vec<u8> {
    key.iter()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(u8::to_ascii_lowercase)
        .collect()
}

/// True when a value under `key` is a credential: a header-like name
/// (`Authorization`, `client-key-data`, `token`), or a name ending in one
/// (`DB_PASSWORD`, `apiToken`). Qualified names (`example.com/x`, used by
/// annotations, labels and `user.extra`) only match exactly, so audit
/// annotations such as `authentication.k8s.io/legacy-token` are kept.
fn is_credential_key(key: &str) -> bool {
    credential_key_bytes(key.as_bytes(), !key.contains('/'))
}

fn credential_key_bytes(key: &[u8], suffixes: bool) -> bool {
    let norm = normalize_key(key);
    if norm.is_empty() {
        return false;
    }
    if CREDENTIAL_KEYS.iter().any(|k| norm == k.as_bytes()) {
        return true;
    }
    suffixes
        && CREDENTIAL_SUFFIXES
            .iter()
            .any(|s| norm.ends_with(s.as_bytes()))
        && !NOT_CREDENTIAL_SUFFIXES
            .iter()
            .any(|s| norm.ends_with(s.as_bytes()))
}

/// [`credential_key_bytes`] for keys found inside text (`key=value`,
/// `key: value`). A client certificate is public: in a kubeconfig only the
/// key, token and password lines are redacted.
fn text_key_is_credential(key: &[u8]) -> bool {
    credential_key_bytes(key, true) && normalize_key(key) != b"clientcertificatedata"
}

/// A command-line flag naming a credential, written without its value
/// (`--password`, `--token`, `--client-secret`).
fn is_credential_flag(arg: &str) -> bool {
    let name = arg.trim_start_matches('-');
    arg.len() > name.len()
        && arg.len() <= MAX_KEY
        && !name.is_empty()
        && name.bytes().all(is_ident)
        && text_key_is_credential(name.as_bytes())
}

/// True when a ConfigMap value under `key` is a credential.
fn configmap_value_is_credential(key: &str, value: &str) -> bool {
    let norm = normalize_key(key.as_bytes());
    let b = value.as_bytes();
    CONFIGMAP_KEY_WORDS
        .iter()
        .any(|w| find(&norm, 0, w.as_bytes()).is_some())
        || has_private_key(b)
        || find_ci(b, 0, b"aws_secret_access_key").is_some()
        || find_ci(b, 0, b"aws_session_token").is_some()
        || has_aws_key_pair(b)
}

// ---------------------------------------------------------------------------
// Byte scanning helpers
// ---------------------------------------------------------------------------

/// Index of the first `pat` in `hay` at or after `from`.
fn find(hay: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    let (&first, _) = pat.split_first()?;
    let mut i = from;
    loop {
        let p = i + hay.get(i..)?.iter().position(|&c| c == first)?;
        if hay.get(p..p.saturating_add(pat.len())) == Some(pat) {
            return Some(p);
        }
        i = p + 1;
    }
}

/// [`find`], ignoring ASCII case.
fn find_ci(hay: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    let (&first, _) = pat.split_first()?;
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut i = from;
    loop {
        let p = i + hay
            .get(i..)?
            .iter()
            .position(|&c| c == lower || c == upper)?;
        if starts_with_ci(hay, p, pat) {
            return Some(p);
        }
        i = p + 1;
    }
}

fn starts_with_ci(b: &[u8], at: usize, pat: &[u8]) -> bool {
    b.get(at..at.saturating_add(pat.len()))
        .is_some_and(|w| w.eq_ignore_ascii_case(pat))
}

/// The first index at or after `i` whose byte fails `keep`.
fn run_end(b: &[u8], mut i: usize, keep: impl Fn(u8) -> bool) -> usize {
    while b.get(i).is_some_and(|&c| keep(c)) {
        i += 1;
    }
    i
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn is_b64std(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

/// Characters of a key name in `key=value` / `key: value` text.
fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XX` escape at `i` stands for.
fn pct_decoded(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    let hi = hex_val(*b.get(i + 1)?)?;
    let lo = hex_val(*b.get(i + 2)?)?;
    Some(hi * 16 + lo)
}

/// Bytes that end a credential written without quotes.
fn ends_token(c: u8) -> bool {
    c.is_ascii_whitespace()
        || c.is_ascii_control()
        || matches!(
            c,
            b'"' | b'\'' | b'`' | b'&' | b',' | b';' | b'\\' | b'<' | b'>' | b')' | b']' | b'}'
        )
}

/// End of an unquoted credential starting at `i`. In URL-encoded text
/// (`url`), `+` is a space and `%XX` escapes of delimiters end it too.
fn token_end(b: &[u8], mut i: usize, url: bool) -> usize {
    while let Some(&c) = b.get(i) {
        if ends_token(c) {
            break;
        }
        if url && (c == b'+' || pct_decoded(b, i).is_some_and(ends_token)) {
            break;
        }
        i += 1;
    }
    i
}

/// Index of the next `\n` or `\r` at or after `i`, or the end.
fn line_end(b: &[u8], i: usize) -> usize {
    run_end(b, i, |c| c != b'\n' && c != b'\r')
}

fn trim_end(b: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && b.get(end - 1).is_some_and(u8::is_ascii_whitespace) {
        end -= 1;
    }
    end
}

/// Start of the line holding index `i`.
fn line_start(b: &[u8], mut i: usize) -> usize {
    while i > 0 && !matches!(b.get(i - 1), Some(b'\n' | b'\r')) {
        i -= 1;
    }
    i
}

/// True when only spaces, tabs and YAML list dashes stand between the start
/// of the line and `i` (`  - password: x`), or `export ` (`export TOKEN=x`).
fn only_indent_before(b: &[u8], i: usize) -> bool {
    let mut j = i;
    let mut steps = 0;
    while j > 0 && steps < MAX_KEY && matches!(b.get(j - 1), Some(b' ' | b'\t' | b'-')) {
        j -= 1;
        steps += 1;
    }
    if j == 0 || matches!(b.get(j - 1), Some(b'\n' | b'\r')) {
        return true;
    }
    if j < i && j >= 6 && starts_with_ci(b, j - 6, b"export") {
        let mut k = j - 6;
        while k > 0 && matches!(b.get(k - 1), Some(b' ' | b'\t')) {
            k -= 1;
        }
        return k == 0 || matches!(b.get(k - 1), Some(b'\n' | b'\r'));
    }
    false
}

/// Index of the quote closing a value opened by `quote` just before `from`
/// (backslash escapes skipped inside `"`); the end of the line when there
/// is none.
fn closing_quote(b: &[u8], from: usize, quote: u8) -> usize {
    let mut i = from;
    while let Some(&c) = b.get(i) {
        if c == quote || c == b'\n' || c == b'\r' {
            return i;
        }
        i += if c == b'\\' && quote == b'"' { 2 } else { 1 };
    }
    b.len()
}

/// Span of a value starting at `start`: inside its quotes when quoted, else
/// to the end of the line (`to_eol`) or of the unquoted token.
fn value_span(b: &[u8], start: usize, url: bool, to_eol: bool) -> (usize, usize) {
    match b.get(start) {
        Some(&q @ (b'"' | b'\'')) => (start + 1, closing_quote(b, start + 1, q)),
        Some(b'\\') if b.get(start + 1) == Some(&b'"') => {
            let close = find(b, start + 2, b"\\\"").unwrap_or_else(|| line_end(b, start));
            (start + 2, close)
        }
        _ if to_eol => (start, trim_end(b, start, line_end(b, start))),
        _ => (start, token_end(b, start, url)),
    }
}

/// True when `v` stands for a credential without being one (`$TOKEN`,
/// `{{ .Values.password }}`, `<token>`, `true`) or is already redacted.
fn is_placeholder(v: &[u8]) -> bool {
    v.is_empty()
        || v.starts_with(b"$")
        || starts_with_ci(v, 0, b"%24")
        || v.starts_with(b"{{")
        || v.starts_with(b"<")
        || v.iter().all(|&c| c == b'*')
        || PLACEHOLDERS
            .iter()
            .any(|p| v.eq_ignore_ascii_case(p.as_bytes()))
}

/// Records `b[start..end]` as a secret unless it is a placeholder or starts
/// an existing replacement. A leading `Bearer `/`Basic ` is kept.
fn push_candidate(b: &[u8], start: usize, end: usize, spans: &mut Vec<(usize, usize)>) {
    let Some(value) = b.get(start..end) else {
        return;
    };
    let skip = scheme_prefix_len(value);
    let (start, value) = (start + skip, value.get(skip..).unwrap_or_default());
    let already = b
        .get(start..)
        .is_some_and(|rest| rest.starts_with(MARKER_PREFIX.as_bytes()));
    if already || is_placeholder(value) {
        return;
    }
    spans.push((start, end));
}

// ---------------------------------------------------------------------------
// Secrets inside strings
// ---------------------------------------------------------------------------

/// Finds credentials inside `s`; returns `s` with each replaced, or `None`
/// when there are none.
fn scan_string(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 4 {
        return None;
    }
    let mut spans = Vec::new();
    leading_bearer(b, &mut spans);
    bearer_tokens(b, &mut spans);
    authorization_values(b, &mut spans);
    jwts(b, &mut spans);
    base64_jwts(b, &mut spans);
    pem_private_keys(b, &mut spans);
    assignments(b, &mut spans);
    colon_pairs(b, &mut spans);
    url_passwords(b, &mut spans);
    query_flag_values(b, &mut spans);
    prefixed_tokens(b, &mut spans);
    apply_spans(s, spans)
}

/// Replaces every span (overlapping ones merged) with its marker.
fn apply_spans(s: &str, mut spans: Vec<(usize, usize)>) -> Option<String> {
    spans.retain(|&(start, end)| start < end && s.get(start..end).is_some());
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start < last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (start, end) in merged {
        out.push_str(s.get(at..start)?);
        out.push_str(&marker(s.get(start..end)?.as_bytes()));
        at = end;
    }
    out.push_str(s.get(at..)?);
    Some(out)
}

/// A value that starts with `Bearer `: everything after the word.
fn leading_bearer(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    if !starts_with_ci(b, 0, b"bearer") {
        return;
    }
    let start = run_end(b, 6, |c| c == b' ' || c == b'\t');
    if start > 6 {
        push_candidate(b, start, b.len(), spans);
    }
}

/// Spaces (or URL-encoded spaces) at `i`; returns where they end and
/// whether the text is URL-encoded.
fn skip_spaces(b: &[u8], mut i: usize) -> (usize, bool) {
    let mut url = false;
    loop {
        match b.get(i) {
            Some(b' ' | b'\t') => i += 1,
            Some(b'+') => {
                url = true;
                i += 1;
            }
            Some(b'%') if pct_decoded(b, i) == Some(b' ') => {
                url = true;
                i += 3;
            }
            _ => return (i, url),
        }
    }
}

/// `... Bearer <token> ...` anywhere (a curl header in a command line).
fn bearer_tokens(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(p) = find_ci(b, from, b"bearer") {
        from = p + 6;
        if p > 0 && b.get(p - 1).is_some_and(u8::is_ascii_alphanumeric) {
            continue;
        }
        let (start, url) = skip_spaces(b, p + 6);
        if start == p + 6 {
            continue;
        }
        let end = token_end(b, start, url);
        let token = b.get(start..end).unwrap_or_default();
        // "bearer of", "bearer token": English, not a credential.
        if token.len() <= 12 && token.iter().all(u8::is_ascii_lowercase) {
            continue;
        }
        push_candidate(b, start, end, spans);
        from = from.max(end);
    }
}

/// `Authorization: <scheme> <credential>` (also `authorization=`, JSON
/// `"Authorization": "..."` and URL-encoded forms): the credential.
fn authorization_values(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(p) = find_ci(b, from, b"authorization") {
        from = p + 13;
        if p > 0 && b.get(p - 1).is_some_and(u8::is_ascii_alphanumeric) {
            continue;
        }
        let mut i = run_end(b, p + 13, |c| matches!(c, b'"' | b'\'' | b'\\'));
        i = run_end(b, i, |c| c == b' ' || c == b'\t');
        let mut url = false;
        match b.get(i) {
            Some(b':' | b'=') => i += 1,
            Some(b'%') if matches!(pct_decoded(b, i), Some(b':' | b'=')) => {
                i += 3;
                url = true;
            }
            _ => continue,
        }
        loop {
            match b.get(i) {
                Some(b' ' | b'\t' | b'"' | b'\'' | b'\\') => i += 1,
                Some(b'+') => {
                    url = true;
                    i += 1;
                }
                Some(b'%') if matches!(pct_decoded(b, i), Some(b' ' | b'"' | b'\'')) => {
                    url = true;
                    i += 3;
                }
                _ => break,
            }
        }
        // An optional scheme word (`Bearer`, `Basic`) before the credential.
        let word_end = run_end(b, i, |c| c.is_ascii_alphabetic());
        let (after, url_gap) = skip_spaces(b, word_end);
        let start =
            if word_end > i && after > word_end && b.get(after).is_some_and(|&c| !ends_token(c)) {
                url |= url_gap;
                after
            } else {
                i
            };
        let end = token_end(b, start, url);
        push_candidate(b, start, end, spans);
        from = from.max(end);
    }
}

/// End of a JWT (JWS or JWE compact form) starting at `p`, if one does.
fn jwt_end(b: &[u8], p: usize) -> Option<usize> {
    if !b.get(p..)?.starts_with(b"eyJ") {
        return None;
    }
    let e1 = run_end(b, p, is_b64url);
    if e1 - p < 16 || b.get(e1) != Some(&b'.') {
        return None;
    }
    let e2 = run_end(b, e1 + 1, is_b64url);
    if e2 - (e1 + 1) < 2 || b.get(e2) != Some(&b'.') {
        return None;
    }
    let mut end = run_end(b, e2 + 1, is_b64url);
    for _ in 0..2 {
        if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(|&c| is_b64url(c)) {
            end = run_end(b, end + 1, is_b64url);
        } else {
            break;
        }
    }
    Some(end)
}

/// JWTs anywhere (`?access_token=eyJ...`, `token: eyJ...`).
fn jwts(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(p) = find(b, from, b"eyJ") {
        match jwt_end(b, p) {
            Some(end) => {
                spans.push((p, end));
                from = end;
            }
            // A JWT starting later in the same base64url run would fail the
            // same way: skip the run (keeps the scan linear).
            None => from = run_end(b, p, is_b64url).max(p + 3),
        }
    }
}

/// Standard base64 decoding of `text` (no padding or whitespace inside);
/// a trailing partial group is dropped.
fn b64_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => break,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    out
}

/// Base64 of a JWT (`ZXlK...`, how a token looks in a Secret's `data` or
/// pasted from `kubectl get secret -o yaml`).
fn base64_jwts(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(p) = find(b, from, b"ZXlK") {
        from = p + 4;
        let chars_end = run_end(b, p, is_b64std);
        if chars_end - p < 40 {
            continue;
        }
        let decoded = b64_decode(b.get(p..chars_end).unwrap_or_default());
        if jwt_end(&decoded, 0).is_some() {
            spans.push((p, run_end(b, chars_end, |c| c == b'=')));
        }
        // A token is encoded on its own, not glued after other base64: the
        // rest of the run is not looked at again (keeps the scan linear).
        from = chars_end.max(from);
    }
}

/// The body of a PEM private key (`-----BEGIN ... PRIVATE KEY-----`); the
/// BEGIN and END lines are kept so a reader knows what it was.
fn pem_private_keys(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    let mut next_end: Option<usize> = None;
    while let Some(p) = find(b, from, b"-----BEGIN ") {
        from = p + 11;
        let Some(label_end) = find(b, p + 11, b"-----") else {
            return;
        };
        let label = b.get(p + 11..label_end).unwrap_or_default();
        if label.len() > 64 || find(label, 0, b"PRIVATE KEY").is_none() {
            continue;
        }
        let body = label_end + 5;
        // Every BEGIN is looked at (one hidden in another's body too), and
        // the END search is shared between them so the scan stays linear.
        let body_end = match next_end {
            Some(end) if end >= body => end,
            _ => {
                let end = find(b, body, b"-----END ").unwrap_or(b.len());
                next_end = Some(end);
                end
            }
        };
        push_candidate(b, body, body_end, spans);
    }
}

/// True when `b` holds a PEM private key.
fn has_private_key(b: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = find(b, from, b"-----BEGIN ") {
        from = p + 11;
        let label = find(b, from, b"-----")
            .and_then(|end| b.get(from..end))
            .unwrap_or_default();
        if label.len() <= 64 && find(label, 0, b"PRIVATE KEY").is_some() {
            return true;
        }
    }
    false
}

/// True when `b` holds an AWS access key id (`AKIA`/`ASIA` + 16) with a
/// secret access key (40 base64 characters, both cases) within
/// [`AWS_NEAR`] bytes of it.
fn has_aws_key_pair(b: &[u8]) -> bool {
    let mut ids = Vec::new();
    for prefix in [b"AKIA", b"ASIA"] {
        let mut from = 0;
        while let Some(p) = find(b, from, prefix) {
            from = p + 4;
            let id_end = p + 20;
            let body = b.get(p + 4..id_end).unwrap_or_default();
            let is_id = body.len() == 16
                && body
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                && !(p > 0 && b.get(p - 1).is_some_and(u8::is_ascii_alphanumeric))
                && !b.get(id_end).is_some_and(u8::is_ascii_alphanumeric);
            if is_id {
                ids.push(p);
            }
        }
    }
    if ids.is_empty() {
        return false;
    }
    ids.sort_unstable();
    let mut i = 0;
    while i < b.len() {
        let end = run_end(b, i, is_b64std);
        let run = b.get(i..end).unwrap_or_default();
        if run.len() == 40
            && run.iter().any(u8::is_ascii_uppercase)
            && run.iter().any(u8::is_ascii_lowercase)
        {
            // The nearest id before or after the run.
            let next = ids.partition_point(|&id| id < i);
            let near = |id: &usize| id.abs_diff(i) <= AWS_NEAR;
            if ids.get(next).is_some_and(near)
                || next
                    .checked_sub(1)
                    .and_then(|k| ids.get(k))
                    .is_some_and(near)
            {
                return true;
            }
        }
        i = end + 1;
    }
    false
}

/// The key ending just before `end` in `key=value` text, and whether the
/// text is a URL query (`?key=`, `&key=`, `%26key%3D`).
fn key_before(b: &[u8], end: usize) -> Option<(usize, bool)> {
    let mut start = end;
    while start > 0 && end - start < MAX_KEY && b.get(start - 1).is_some_and(|&c| is_ident(c)) {
        start -= 1;
    }
    if start == end || (start > 0 && b.get(start - 1).is_some_and(|&c| is_ident(c))) {
        return None;
    }
    let mut url = false;
    // `%26token=`: the escape's hex digits were read as part of the key.
    if start > 0 && b.get(start - 1) == Some(&b'%') && end - start > 2 {
        let escaped = pct_decoded(b, start - 1);
        if escaped.is_some() {
            url = matches!(escaped, Some(b'&' | b'?' | b' '));
            start += 2;
        }
    }
    if start > 0 && matches!(b.get(start - 1), Some(b'?' | b'&')) {
        url = true;
    }
    Some((start, url))
}

/// `key=value` and `key%3Dvalue` with a credential-like key: env lines,
/// query strings, `--token=...` flags.
fn assignments(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while i < b.len() {
        let (sep_len, pct) = match b.get(i) {
            Some(b'=') => (1, false),
            Some(b'%') if pct_decoded(b, i) == Some(b'=') => (3, true),
            _ => {
                i += 1;
                continue;
            }
        };
        let key_end = i;
        i += sep_len;
        let Some((key_start, query)) = key_before(b, key_end) else {
            continue;
        };
        if !text_key_is_credential(b.get(key_start..key_end).unwrap_or_default()) {
            continue;
        }
        let url = pct || query;
        // `KEY=value` alone on its line (an env file) runs to the end of the
        // line; a `--flag=value` ends at the next space.
        let to_eol = !url && b.get(key_start) != Some(&b'-') && only_indent_before(b, key_start);
        let (start, end) = value_span(b, i, url, to_eol);
        push_candidate(b, start, end, spans);
        // Keys inside the value are part of the secret: skip over them.
        i = i.max(end);
    }
}

/// YAML `key: value` at the start of a line (kubeconfig `token:`,
/// `client-key-data:`, `password:`; block scalars too) and JSON
/// `"key": "value"` anywhere, with a credential-like key.
fn colon_pairs(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(colon) = find(b, from, b":") {
        from = colon + 1;
        let mut key_end = colon;
        while key_end > 0
            && colon - key_end < MAX_KEY
            && matches!(b.get(key_end - 1), Some(b' ' | b'\t'))
        {
            key_end -= 1;
        }
        let quoted = matches!(b.get(key_end.wrapping_sub(1)), Some(b'"' | b'\''));
        if quoted {
            key_end -= 1;
            if b.get(key_end.wrapping_sub(1)) == Some(&b'\\') {
                key_end -= 1;
            }
        }
        let mut key_start = key_end;
        while key_start > 0
            && key_end - key_start < MAX_KEY
            && b.get(key_start - 1).is_some_and(|&c| is_ident(c))
        {
            key_start -= 1;
        }
        if key_start == key_end {
            continue;
        }
        let mut before = key_start;
        if quoted {
            if !matches!(b.get(before.wrapping_sub(1)), Some(b'"' | b'\'')) {
                continue;
            }
            before -= 1;
            if b.get(before.wrapping_sub(1)) == Some(&b'\\') {
                before -= 1;
            }
        }
        let at_line_start = only_indent_before(b, before);
        if !quoted && !at_line_start {
            continue;
        }
        if !text_key_is_credential(b.get(key_start..key_end).unwrap_or_default()) {
            continue;
        }
        let after = colon + 1;
        if !quoted && !matches!(b.get(after), None | Some(b' ' | b'\t' | b'\n' | b'\r')) {
            continue;
        }
        let start = run_end(b, after, |c| c == b' ' || c == b'\t');
        let (start, end) = match b.get(start) {
            None | Some(b'\n' | b'\r') => block_span(b, before, start),
            Some(b'|' | b'>') if is_block_indicator(b, start) => {
                block_span(b, before, line_end(b, start))
            }
            Some(b'"' | b'\'' | b'\\') => value_span(b, start, false, false),
            _ if quoted && !at_line_start => (start, token_end(b, start, false)),
            _ => (start, trim_end(b, start, line_end(b, start))),
        };
        push_candidate(b, start, end, spans);
        from = from.max(end);
    }
}

/// True when a YAML block-scalar indicator (`|`, `>-`, `|+2`) is all that
/// follows at `i` on its line.
fn is_block_indicator(b: &[u8], i: usize) -> bool {
    let end = trim_end(b, i, line_end(b, i));
    b.get(i + 1..end)
        .is_some_and(|rest| rest.iter().all(|&c| matches!(c, b'-' | b'+' | b'0'..=b'9')))
}

/// The lines after `eol` indented deeper than the key at `key_at`: a YAML
/// value written on the following lines.
fn block_span(b: &[u8], key_at: usize, eol: usize) -> (usize, usize) {
    let column = key_at - line_start(b, key_at);
    let mut pos = eol;
    let mut start = None;
    let mut end = 0;
    loop {
        // Step over the line break ending the previous line.
        if b.get(pos) == Some(&b'\r') {
            pos += 1;
        }
        if b.get(pos) == Some(&b'\n') {
            pos += 1;
        }
        if pos >= b.len() {
            break;
        }
        let le = line_end(b, pos);
        let indent = run_end(b, pos, |c| c == b' ' || c == b'\t') - pos;
        if pos + indent < le {
            if indent <= column {
                break;
            }
            if start.is_none() {
                start = Some(pos + indent);
            }
            end = trim_end(b, pos, le);
        }
        pos = le;
    }
    match start {
        Some(start) if start < end => (start, end),
        _ => (0, 0),
    }
}

/// The byte at `i`, decoding a `%XX` escape; with the length it took.
fn byte_at(b: &[u8], i: usize) -> Option<(u8, usize)> {
    match pct_decoded(b, i) {
        Some(c) => Some((c, 3)),
        None => b.get(i).map(|&c| (c, 1)),
    }
}

/// The password in `scheme://user:password@host`, also percent-encoded
/// (`postgres%3A%2F%2Fuser%3Apass%40db` in an exec command).
fn url_passwords(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(p) = find(b, from, b":") {
        from = p + 1;
        let (start, encoded) = if b.get(p + 1..p + 3) == Some(b"//") {
            (p + 3, false)
        } else {
            continue;
        };
        url_userinfo(b, start, encoded, spans);
    }
    let mut from = 0;
    while let Some(p) = find_ci(b, from, b"%3A%2F%2F") {
        from = p + 9;
        url_userinfo(b, p + 9, true, spans);
    }
}

fn url_userinfo(b: &[u8], start: usize, encoded: bool, spans: &mut Vec<(usize, usize)>) {
    let mut i = start;
    let mut colon = None;
    while let Some((c, len)) = byte_at(b, i) {
        if matches!(c, b'/' | b'?' | b'#') || ends_token(c) || (encoded && c == b'+') {
            return;
        }
        if c == b'@' {
            if let Some(colon) = colon {
                push_candidate(b, colon, i, spans);
            }
            return;
        }
        if c == b':' && colon.is_none() {
            colon = Some(i + len);
        }
        i += len;
    }
}

/// `?command=--password&command=hunter2`: in a query string (an exec
/// command), the parameter after a credential flag of the same name.
fn query_flag_values(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let Some(q) = find(b, 0, b"?") else {
        return;
    };
    let mut previous_flag: Option<&[u8]> = None;
    let mut at = q + 1;
    while at <= b.len() {
        let end = run_end(b, at, |c| {
            c != b'&' && c != b'#' && !c.is_ascii_whitespace()
        });
        let param = b.get(at..end).unwrap_or_default();
        let eq = param.iter().position(|&c| c == b'=');
        let (name, value_start) = match eq {
            Some(eq) => (param.get(..eq).unwrap_or_default(), at + eq + 1),
            None => (param, end),
        };
        let value = b.get(value_start..end).unwrap_or_default();
        if previous_flag == Some(name) && !value.starts_with(b"--") {
            push_candidate(b, value_start, end, spans);
        }
        previous_flag = std::str::from_utf8(value)
            .ok()
            .filter(|v| is_credential_flag(v))
            .map(|_| name);
        if b.get(end) != Some(&b'&') {
            return;
        }
        at = end + 1;
    }
}

/// Tokens whose issuer gave them a recognisable prefix (GitHub, GitLab,
/// Slack, Stripe, Google).
const TOKEN_PREFIXES: &[&str] = &[
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xoxs-",
    "sk_live_",
    "rk_live_",
    "AIza",
    "ya29.",
];

/// Provider tokens with a known prefix, anywhere.
fn prefixed_tokens(b: &[u8], spans: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let starts_word = i == 0 || !b.get(i - 1).is_some_and(u8::is_ascii_alphanumeric);
        let prefix = if starts_word && matches!(c, b'g' | b'x' | b's' | b'r' | b'A' | b'y') {
            TOKEN_PREFIXES.iter().find(|p| {
                b.get(i..)
                    .is_some_and(|rest| rest.starts_with(p.as_bytes()))
            })
        } else {
            None
        };
        let Some(prefix) = prefix else {
            i += 1;
            continue;
        };
        let body = i + prefix.len();
        let end = run_end(b, body, |c| is_b64url(c) || c == b'.');
        if end - body >= 16 {
            push_candidate(b, i, end, spans);
        }
        i = end.max(i + 1);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn redact_bytes_keeps_invalid_bytes_and_removes_credentials() {
        let raw = b"curl -H 'Authorization: Bearer s3cr3tvalue0123456789' \xff\xfe tail";
        let out = redact_bytes(raw);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("s3cr3tvalue0123456789"), "{text}");
        assert!(text.contains("[redacted sha256:"), "{text}");
        assert!(
            out.windows(2).any(|w| w == b"\xff\xfe"),
            "invalid bytes kept"
        );
        assert_eq!(redact_bytes(b"plain"), b"plain");
    }

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The replacement the module should produce for `original`.
    fn red(original: &str) -> String {
        let hex = hex::encode(Sha256::digest(original.as_bytes()));
        format!("[redacted sha256:{}]", &hex[..12])
    }

    fn redacted(mut event: Value) -> (Value, usize) {
        let n = redact_value(&mut event);
        (event, n)
    }

    /// Redacting again changes nothing.
    fn assert_idempotent(event: &Value) {
        let mut again = event.clone();
        assert_eq!(redact_value(&mut again), 0, "second pass redacted more");
        assert_eq!(&again, event);
    }

    const JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRLbVhfWWRvYUNiTSJ9.eyJhdWQiOlsiaHR0cHM6Ly9rdWJlcm5ldGVzLmRlZmF1bHQuc3ZjIl0sImV4cCI6MTcxODk5OTk5OSwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OmNpOmRlcGxveWVyIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMDEyMzQ1Njc4OQ";

    fn secret_create_event() -> Value {
        let last_applied = "{\"apiVersion\":\"v1\",\"data\":{\"password\":\"aHVudGVyMg==\",\"username\":\"YWRtaW4=\"},\"kind\":\"Secret\",\"metadata\":{\"annotations\":{},\"name\":\"db-creds\",\"namespace\":\"payments\"},\"stringData\":{\"url\":\"postgres://admin:hunter2@db:5432/pay\"},\"type\":\"Opaque\"}\n";
        json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": "6f1c3a52-8d4e-4f7a-9b1e-2c3d4e5f6a7b",
            "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/payments/secrets?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
            "verb": "create",
            "user": {"username": "alice@example.com", "groups": ["platform-admins", "system:authenticated"]},
            "sourceIPs": ["203.0.113.7"],
            "userAgent": "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
            "objectRef": {"resource": "secrets", "namespace": "payments", "name": "db-creds", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 201},
            "requestObject": {
                "kind": "Secret",
                "apiVersion": "v1",
                "metadata": {
                    "name": "db-creds",
                    "namespace": "payments",
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied}
                },
                "type": "Opaque",
                "data": {"password": "aHVudGVyMg==", "username": "YWRtaW4="},
                "stringData": {"url": "postgres://admin:hunter2@db:5432/pay"}
            },
            "responseObject": {
                "kind": "Secret",
                "apiVersion": "v1",
                "metadata": {
                    "name": "db-creds",
                    "namespace": "payments",
                    "uid": "0b7c9a4e-1f2d-4c3b-8a5e-6d7f8091a2b3",
                    "resourceVersion": "884213",
                    "creationTimestamp": "2024-06-11T09:14:02Z",
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
                    "managedFields": [{
                        "manager": "kubectl-client-side-apply",
                        "operation": "Update",
                        "apiVersion": "v1",
                        "time": "2024-06-11T09:14:02Z",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:data": {".": {}, "f:password": {}, "f:url": {}, "f:username": {}}, "f:type": {}}
                    }]
                },
                "type": "Opaque",
                "data": {"password": "aHVudGVyMg==", "url": "cG9zdGdyZXM6Ly9hZG1pbjpodW50ZXIyQGRiOjU0MzIvcGF5", "username": "YWRtaW4="}
            },
            "requestReceivedTimestamp": "2024-06-11T09:14:02.118823Z",
            "stageTimestamp": "2024-06-11T09:14:02.131094Z",
            "annotations": {
                "authorization.k8s.io/decision": "allow",
                "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"platform-admins\" of ClusterRole \"cluster-admin\" to Group \"platform-admins\""
            }
        })
    }

    #[test]
    fn secret_create_redacts_data_string_data_and_last_applied() {
        let original = secret_create_event();
        let (out, n) = redacted(original.clone());
        let req = &out["requestObject"];
        assert_eq!(req["data"]["password"], red("aHVudGVyMg=="));
        assert_eq!(req["data"]["username"], red("YWRtaW4="));
        assert_eq!(
            req["stringData"]["url"],
            red("postgres://admin:hunter2@db:5432/pay")
        );
        let last_applied = original["requestObject"]["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        assert_eq!(
            req["metadata"]["annotations"][LAST_APPLIED],
            red(last_applied)
        );
        let resp = &out["responseObject"];
        assert_eq!(
            resp["data"]["url"],
            red("cG9zdGdyZXM6Ly9hZG1pbjpodW50ZXIyQGRiOjU0MzIvcGF5")
        );
        assert_eq!(
            resp["metadata"]["annotations"][LAST_APPLIED],
            red(last_applied)
        );
        // 3 + 1 in the request, 3 + 1 in the response.
        assert_eq!(n, 8);
        // What people and detections need is kept.
        for body in [req, resp] {
            assert_eq!(body["metadata"]["name"], "db-creds");
            assert_eq!(body["metadata"]["namespace"], "payments");
            assert_eq!(body["type"], "Opaque");
        }
        assert_eq!(
            resp["metadata"]["managedFields"],
            original["responseObject"]["metadata"]["managedFields"]
        );
        for field in [
            "user",
            "objectRef",
            "requestURI",
            "annotations",
            "userAgent",
            "sourceIPs",
        ] {
            assert_eq!(out[field], original[field], "{field} changed");
        }
        let text = out.to_string();
        for secret in ["aHVudGVyMg==", "hunter2", "YWRtaW4="] {
            assert!(!text.contains(secret), "{secret} leaked");
        }
        assert_idempotent(&out);
    }

    #[test]
    fn redact_event_parses_and_redacts() {
        let raw = secret_create_event().to_string();
        let out = redact_event(&raw).unwrap();
        assert_eq!(
            out["requestObject"]["data"]["password"],
            red("aHVudGVyMg==")
        );
        assert!(redact_event("{not json").is_err());
    }

    #[test]
    fn secret_list_response_redacts_every_item() {
        let token_b64 = "ZXlKaGJHY2lPaUpTVXpJMU5pSXNJbXRwWkNJNklrUkxiVmhmV1dSdllVTmlUU0o5LmV5SnpkV0lpT2lKemVYTjBaVzA2YzJWeWRtbGpaV0ZqWTI5MWJuUTZaR1ZtWVhWc2REcGtaV1poZFd4MEluMC5zaWc=";
        let event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": "b1f0e1c2-3d4e-5f60-7182-93a4b5c6d7e8",
            "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/kube-system/secrets?limit=500",
            "verb": "list",
            "user": {"username": "system:serviceaccount:ci:deployer", "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]},
            "sourceIPs": ["198.51.100.23"],
            "userAgent": "curl/8.5.0",
            "objectRef": {"resource": "secrets", "namespace": "kube-system", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "responseObject": {
                "kind": "SecretList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "991022"},
                "items": [
                    {
                        "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
                        "type": "bootstrap.kubernetes.io/token",
                        "data": {"token-id": "YWJjZGVm", "token-secret": "MDEyMzQ1Njc4OWFiY2RlZg==", "usage-bootstrap-authentication": "dHJ1ZQ=="}
                    },
                    {
                        "metadata": {
                            "name": "legacy-sa-token",
                            "namespace": "kube-system",
                            "annotations": {"kubernetes.io/service-account.name": "legacy-sa"}
                        },
                        "type": "kubernetes.io/service-account-token",
                        "data": {"ca.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t", "namespace": "a3ViZS1zeXN0ZW0=", "token": token_b64}
                    }
                ]
            },
            "requestReceivedTimestamp": "2024-06-11T10:00:00.000000Z",
            "stageTimestamp": "2024-06-11T10:00:00.010000Z",
            "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
        });
        let (out, n) = redacted(event.clone());
        assert_eq!(n, 6);
        let items = &out["responseObject"]["items"];
        assert_eq!(
            items[0]["data"]["token-secret"],
            red("MDEyMzQ1Njc4OWFiY2RlZg==")
        );
        assert_eq!(items[1]["data"]["token"], red(token_b64));
        assert_eq!(items[1]["metadata"]["name"], "legacy-sa-token");
        assert_eq!(
            items[1]["metadata"]["annotations"]["kubernetes.io/service-account.name"],
            "legacy-sa"
        );
        assert_eq!(items[1]["type"], "kubernetes.io/service-account-token");
        assert_eq!(out["user"], event["user"]);
        assert_idempotent(&out);
    }

    #[test]
    fn secret_table_rows_and_partial_metadata_are_covered() {
        let event = json!({
            "auditID": "c0ffee00-0000-4000-8000-000000000001",
            "stage": "ResponseComplete",
            "verb": "list",
            "requestURI": "/api/v1/namespaces/default/secrets?includeObject=Object",
            "objectRef": {"resource": "secrets", "namespace": "default", "apiVersion": "v1"},
            "responseObject": {
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "columnDefinitions": [{"name": "Name", "type": "string"}, {"name": "Data", "type": "string"}],
                "rows": [{
                    "cells": ["app-tls", 2],
                    "object": {
                        "metadata": {"name": "app-tls", "annotations": {LAST_APPLIED: "{\"data\":{\"tls.key\":\"c2VjcmV0\"}}"}},
                        "data": {"tls.crt": "Y2VydA==", "tls.key": "c2VjcmV0"}
                    }
                }]
            }
        });
        let (out, n) = redacted(event);
        let row = &out["responseObject"]["rows"][0];
        assert_eq!(row["object"]["data"]["tls.key"], red("c2VjcmV0"));
        assert_eq!(row["cells"], json!(["app-tls", 2]));
        assert_eq!(row["object"]["metadata"]["name"], "app-tls");
        assert_eq!(n, 3);
    }

    #[test]
    fn secret_json_patch_values_are_redacted() {
        let event = json!({
            "auditID": "7e57ab1e-0000-4000-8000-000000000002",
            "verb": "patch",
            "requestURI": "/api/v1/namespaces/default/secrets/db",
            "objectRef": {"resource": "secrets", "namespace": "default", "name": "db", "apiVersion": "v1"},
            "requestObject": [
                {"op": "replace", "path": "/data/password", "value": "bmV3LXBhc3M="},
                {"op": "add", "path": "/metadata/labels/team", "value": "payments"},
                {"op": "add", "path": "/stringData", "value": {"api-key": "sk_live_123"}}
            ]
        });
        let (out, n) = redacted(event);
        let ops = &out["requestObject"];
        assert_eq!(ops[0]["value"], red("bmV3LXBhc3M="));
        assert_eq!(ops[0]["path"], "/data/password");
        assert_eq!(ops[1]["value"], "payments");
        assert_eq!(ops[2]["value"]["api-key"], red("sk_live_123"));
        assert_eq!(n, 2);
    }

    #[test]
    fn token_request_response_redacts_status_token_only() {
        let event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": "2a5c6f0e-9b8d-4c7e-a1f2-3b4c5d6e7f80",
            "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/ci/serviceaccounts/deployer/token",
            "verb": "create",
            "user": {"username": "bob@example.com", "groups": ["system:authenticated"]},
            "sourceIPs": ["192.0.2.44"],
            "userAgent": "kubectl/v1.30.2 (darwin/arm64) kubernetes/3968350",
            "objectRef": {"resource": "serviceaccounts", "namespace": "ci", "name": "deployer", "apiVersion": "v1", "subresource": "token"},
            "responseStatus": {"metadata": {}, "code": 201},
            "requestObject": {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": {"audiences": null, "expirationSeconds": 3600, "boundObjectRef": null},
                "status": {"token": "", "expirationTimestamp": null}
            },
            "responseObject": {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": "deployer", "namespace": "ci", "creationTimestamp": "2024-06-11T11:00:00Z"},
                "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 3600, "boundObjectRef": null},
                "status": {"token": JWT, "expirationTimestamp": "2024-06-11T12:00:00Z"}
            },
            "requestReceivedTimestamp": "2024-06-11T11:00:00.000000Z",
            "stageTimestamp": "2024-06-11T11:00:00.004000Z",
            "annotations": {
                "authentication.kubernetes.io/issued-credential-id": "JTI=8f3e2d1c-0b9a-4876-a5b4-c3d2e1f0a9b8",
                "authorization.k8s.io/decision": "allow",
                "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"token-minters/ci\" of Role \"token-minter\" to User \"bob@example.com\""
            }
        });
        let (out, n) = redacted(event.clone());
        assert_eq!(n, 1);
        assert_eq!(out["responseObject"]["status"]["token"], red(JWT));
        assert_eq!(
            out["responseObject"]["status"]["expirationTimestamp"],
            "2024-06-11T12:00:00Z"
        );
        assert_eq!(out["requestObject"], event["requestObject"]);
        assert_eq!(out["annotations"], event["annotations"]);
        assert_eq!(
            out["responseObject"]["spec"],
            event["responseObject"]["spec"]
        );

        // Without `kind` (a shipper dropped it) the objectRef still says so.
        let mut bare = event;
        bare["responseObject"]["status"] = json!({"token": "opaque-token-value-1234"});
        bare["responseObject"]
            .as_object_mut()
            .unwrap()
            .remove("kind");
        let (out, n) = redacted(bare);
        assert_eq!(n, 1);
        assert_eq!(
            out["responseObject"]["status"]["token"],
            red("opaque-token-value-1234")
        );
    }

    #[test]
    fn token_review_spec_token_is_redacted() {
        let event = json!({
            "auditID": "aa00aa00-0000-4000-8000-000000000003",
            "verb": "create",
            "requestURI": "/apis/authentication.k8s.io/v1/tokenreviews",
            "objectRef": {"resource": "tokenreviews", "apiGroup": "authentication.k8s.io", "apiVersion": "v1"},
            "requestObject": {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "spec": {"token": "static-token-abc123"}}
        });
        let (out, n) = redacted(event);
        assert_eq!(n, 1);
        assert_eq!(
            out["requestObject"]["spec"]["token"],
            red("static-token-abc123")
        );
    }

    #[test]
    fn configmap_with_kubeconfig_and_aws_keys() {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: LS0tLS1CRUdJTiBDRVJU\n    server: https://10.0.0.1:6443\n  name: prod\ncontexts:\n- context:\n    cluster: prod\n    user: deployer\n  name: prod\ncurrent-context: prod\nusers:\n- name: deployer\n  user:\n    token: {JWT}\n- name: admin\n  user:\n    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t\n    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQ==\n- name: basic\n  user:\n    username: ops\n    password: \"s3cr3t pass\"\n"
        );
        let aws_file = "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nregion = eu-west-1\n";
        let deploy = "#!/bin/sh\n# ci creds\nexport AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nexport AWS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\naws s3 sync ./dist s3://bucket\n";
        let event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
            "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/build/configmaps?fieldManager=kubectl-create",
            "verb": "create",
            "user": {"username": "carol@example.com", "groups": ["developers", "system:authenticated"]},
            "sourceIPs": ["10.0.4.17"],
            "userAgent": "kubectl/v1.29.1 (linux/amd64) kubernetes/bc401b9",
            "objectRef": {"resource": "configmaps", "namespace": "build", "name": "ci-tools", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 201},
            "requestObject": {
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"name": "ci-tools", "namespace": "build"},
                "data": {
                    "kubeconfig": kubeconfig,
                    "aws-config": aws_file,
                    "deploy.sh": deploy,
                    "db_password": "hunter2",
                    "log-level": "debug",
                    "settings.json": "{\"retries\": 3, \"endpoint\": \"https://api.example.com\"}"
                }
            }
        });
        let (out, n) = redacted(event.clone());
        let data = &out["requestObject"]["data"];
        let kc = data["kubeconfig"].as_str().unwrap();
        assert!(kc.contains(&format!("    token: {}\n", red(JWT))), "{kc}");
        assert!(kc.contains(&format!(
            "    client-key-data: {}\n",
            red("LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQ==")
        )));
        assert!(kc.contains(&format!("    password: \"{}\"\n", red("s3cr3t pass"))));
        assert!(kc.contains("    server: https://10.0.0.1:6443\n"));
        assert!(kc.contains("    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t\n"));
        assert!(kc.contains("    username: ops\n"));
        assert!(kc.contains("current-context: prod\n"));
        assert_eq!(data["aws-config"], red(aws_file));
        assert_eq!(data["deploy.sh"], red(deploy));
        assert_eq!(data["db_password"], red("hunter2"));
        assert_eq!(data["log-level"], "debug");
        assert_eq!(
            data["settings.json"],
            event["requestObject"]["data"]["settings.json"]
        );
        assert_eq!(
            out["requestObject"]["metadata"],
            event["requestObject"]["metadata"]
        );
        assert_eq!(n, 4);
        assert_idempotent(&out);
    }

    #[test]
    fn configmap_last_applied_with_credentials_is_redacted() {
        let last_applied = "{\"apiVersion\":\"v1\",\"data\":{\"db_password\":\"hunter2\",\"mode\":\"fast\"},\"kind\":\"ConfigMap\",\"metadata\":{\"annotations\":{},\"name\":\"app\",\"namespace\":\"web\"}}\n";
        let harmless = "{\"apiVersion\":\"v1\",\"data\":{\"mode\":\"fast\"},\"kind\":\"ConfigMap\",\"metadata\":{\"annotations\":{},\"name\":\"app\",\"namespace\":\"web\"}}\n";
        let object = |la: &str| {
            json!({
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {"name": "app", "namespace": "web", "annotations": {LAST_APPLIED: la}},
                "data": {"mode": "fast"}
            })
        };
        let event = |la: &str| {
            json!({
                "auditID": "1a2b3c4d-0000-4000-8000-000000000004",
                "verb": "update",
                "requestURI": "/api/v1/namespaces/web/configmaps/app",
                "objectRef": {"resource": "configmaps", "namespace": "web", "name": "app", "apiVersion": "v1"},
                "requestObject": object(la)
            })
        };
        let (out, n) = redacted(event(last_applied));
        assert_eq!(n, 1);
        assert_eq!(
            out["requestObject"]["metadata"]["annotations"][LAST_APPLIED],
            red(last_applied)
        );
        let (out, n) = redacted(event(harmless));
        assert_eq!(n, 0);
        assert_eq!(out, event(harmless));
    }

    #[test]
    fn request_uri_access_token_jwt_is_replaced_in_place() {
        let event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": "9c8b7a6f-5e4d-4c3b-2a19-087f6e5d4c3b",
            "stage": "ResponseComplete",
            "requestURI": format!("/api/v1/namespaces/default/pods?access_token={JWT}&watch=true"),
            "verb": "watch",
            "user": {"username": "system:serviceaccount:default:scanner"},
            "sourceIPs": ["203.0.113.99"],
            "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200}
        });
        let (out, n) = redacted(event.clone());
        assert_eq!(n, 1);
        assert_eq!(
            out["requestURI"],
            format!(
                "/api/v1/namespaces/default/pods?access_token={}&watch=true",
                red(JWT)
            )
        );
        assert_eq!(out["user"], event["user"]);
    }

    #[test]
    fn exec_curl_bearer_token_is_redacted_and_other_arguments_kept() {
        let uri = "/api/v1/namespaces/prod/pods/web-7d9c8f6b5-x2k4q/exec?command=curl&command=-s&command=-H&command=Authorization%3A+Bearer+abc.def&command=https%3A%2F%2Fkubernetes.default.svc%2Fapi%2Fv1%2Fsecrets&container=web&stderr=true&stdout=true";
        let event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": "e1e2e3e4-f5f6-4a7b-8c9d-0e1f2a3b4c5d",
            "stage": "ResponseStarted",
            "requestURI": uri,
            "verb": "create",
            "user": {"username": "mallory@example.com", "groups": ["system:authenticated"]},
            "sourceIPs": ["203.0.113.50"],
            "userAgent": "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
            "objectRef": {"resource": "pods", "namespace": "prod", "name": "web-7d9c8f6b5-x2k4q", "apiVersion": "v1", "subresource": "exec"},
            "responseStatus": {"metadata": {}, "code": 101}
        });
        let (out, n) = redacted(event);
        assert_eq!(n, 1);
        let expected = uri.replace("abc.def", &red("abc.def"));
        assert_eq!(out["requestURI"], expected);
        assert!(expected.contains(
            "command=curl&command=-s&command=-H&command=Authorization%3A+Bearer+[redacted sha256:"
        ));

        // The same command in a pod spec (not URL-encoded).
        let mut pod = json!({
            "kind": "Pod",
            "spec": {"containers": [{"name": "c", "image": "curlimages/curl", "args": ["curl", "-H", "Authorization: Bearer abc.def", "https://kubernetes.default.svc/api"]}]}
        });
        assert_eq!(redact_value(&mut pod), 1);
        assert_eq!(
            pod["spec"]["containers"][0]["args"],
            json!([
                "curl",
                "-H",
                format!("Authorization: Bearer {}", red("abc.def")),
                "https://kubernetes.default.svc/api"
            ])
        );
    }

    #[test]
    fn credentials_in_separate_arguments_and_urls_are_redacted() {
        let uri = "/api/v1/namespaces/db/pods/pg-0/exec?command=psql&command=postgres%3A%2F%2Fapp%3Ahunter5%40pg-0%3A5432%2Fapp&command=--password&command=hunter6&command=--port&command=5432&container=pg&stdin=true&stdout=true&tty=true";
        let mut event = json!({
            "auditID": "5e5e5e5e-0000-4000-8000-000000000006",
            "verb": "create",
            "requestURI": uri,
            "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "db", "name": "pg-0", "apiVersion": "v1"}
        });
        assert_eq!(redact_value(&mut event), 1);
        let expected = uri
            .replace("hunter5", &red("hunter5"))
            .replace("hunter6", &red("hunter6"));
        assert_eq!(event["requestURI"], expected);

        let mut pod = json!({
            "kind": "Pod",
            "spec": {"containers": [{
                "name": "join",
                "command": ["kubeadm", "join", "10.0.0.1:6443", "--token", "abcdef.0123456789abcdef", "--discovery-token-ca-cert-hash", "sha256:0a1b2c", "--password", "$(DB_PASSWORD)"],
                "env": [{"name": "GH", "value": "ghp_0123456789abcdefABCDEF0123456789abcd"}]
            }]}
        });
        assert_eq!(redact_value(&mut pod), 2);
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["command"][4], red("abcdef.0123456789abcdef"));
        assert_eq!(c["command"][6], "sha256:0a1b2c");
        assert_eq!(c["command"][8], "$(DB_PASSWORD)");
        assert_eq!(
            c["env"][0]["value"],
            red("ghp_0123456789abcdefABCDEF0123456789abcd")
        );

        let docker = "{\"auths\":{\"registry.example.com\":{\"auth\":\"dXNlcjpwYXNz\"}}}";
        let mut cm = json!({"kind": "ConfigMap", "metadata": {"name": "ci"}, "data": {"config.json": docker}});
        assert_eq!(redact_value(&mut cm), 1);
        assert_eq!(
            cm["data"]["config.json"],
            docker.replace("dXNlcjpwYXNz", &red("dXNlcjpwYXNz"))
        );
    }

    #[test]
    fn bearer_values_keep_the_word() {
        let mut headers = json!({"Authorization": "Bearer abc", "X-Forwarded-Header": "bearer  xyz123", "note": "the bearer of bad news"});
        assert_eq!(redact_value(&mut headers), 2);
        assert_eq!(headers["Authorization"], format!("Bearer {}", red("abc")));
        assert_eq!(
            headers["X-Forwarded-Header"],
            format!("bearer  {}", red("xyz123"))
        );
        assert_eq!(headers["note"], "the bearer of bad news");
        let mut cmd = json!([
            "sh",
            "-c",
            "curl -H \"Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\" https://kubernetes.default.svc"
        ]);
        let before = cmd.clone();
        assert_eq!(redact_value(&mut cmd), 0);
        assert_eq!(cmd, before);
    }

    #[test]
    fn credential_id_jti_is_unchanged() {
        let event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": "0d1e2f3a-4b5c-4d6e-8f70-81a2b3c4d5e6",
            "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/ci/secrets/deploy-key",
            "verb": "get",
            "user": {
                "username": "system:serviceaccount:ci:deployer",
                "uid": "5b2f8c1e-7d3a-4e9b-a6c5-0f1e2d3c4b5a",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/credential-id": ["JTI=8f3e2d1c-0b9a-4876-a5b4-c3d2e1f0a9b8"],
                    "authentication.kubernetes.io/node-name": ["ip-10-0-3-17.eu-west-1.compute.internal"],
                    "authentication.kubernetes.io/node-uid": ["c7d8e9f0-a1b2-4c3d-9e4f-5a6b7c8d9e0f"],
                    "authentication.kubernetes.io/pod-name": ["runner-6c9f7d8b4-q7w2e"],
                    "authentication.kubernetes.io/pod-uid": ["a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"]
                }
            },
            "sourceIPs": ["198.51.100.77"],
            "userAgent": "python-requests/2.31.0",
            "objectRef": {"resource": "secrets", "namespace": "ci", "name": "deploy-key", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": "2024-06-11T12:00:00.000000Z",
            "stageTimestamp": "2024-06-11T12:00:00.002000Z",
            "annotations": {
                "authorization.k8s.io/decision": "allow",
                "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"deployer/ci\" of Role \"secret-reader\" to ServiceAccount \"deployer/ci\"",
                "authentication.k8s.io/stale-token": "subject: system:serviceaccount:ci:deployer, seconds after warning threshold: 5231",
                "authentication.k8s.io/legacy-token-autogenerated-secret": "deployer-token-x7k2p"
            }
        });
        let (out, n) = redacted(event.clone());
        assert_eq!(n, 0);
        assert_eq!(out, event);
        // A client certificate's credential id too.
        let mut cert = json!({"user": {"username": "admin", "extra": {"authentication.kubernetes.io/credential-id": ["X509SHA256=7c2e9f0a1b3d5e7f90a2c4e6f8a0b2d4e6f8a0c2e4f6a8b0d2f4a6c8e0a2c4e6"]}}});
        let before = cert.clone();
        assert_eq!(redact_value(&mut cert), 0);
        assert_eq!(cert, before);
    }

    #[test]
    fn event_without_secrets_is_unchanged() {
        let raw = r#"{
          "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
          "auditID": "3f2e1d0c-b9a8-4776-a5b4-c3d2e1f0a9b8", "stage": "ResponseComplete",
          "requestURI": "/api/v1/namespaces/shop/pods?fieldManager=kubectl-client-side-apply&fieldSelector=metadata.name%3Dtoken-cache",
          "verb": "create",
          "user": {"username": "system:serviceaccount:argocd:argocd-application-controller", "uid": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
                   "groups": ["system:serviceaccounts", "system:serviceaccounts:argocd", "system:authenticated"]},
          "sourceIPs": ["10.244.1.15"],
          "userAgent": "argocd-controller/v2.11.3+e8ce2c4 (linux/amd64)",
          "objectRef": {"resource": "pods", "namespace": "shop", "name": "cart-0", "apiVersion": "v1"},
          "responseStatus": {"metadata": {}, "code": 201},
          "requestObject": {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "cart-0", "namespace": "shop", "labels": {"app": "cart", "token-cache": "enabled"},
                         "annotations": {"prometheus.io/scrape": "true", "checksum/secret": "9d8e7f60a1b2c3d4"}},
            "spec": {
              "serviceAccountName": "cart", "automountServiceAccountToken": false,
              "imagePullSecrets": [{"name": "regcred"}],
              "containers": [{
                "name": "cart", "image": "registry.example.com/shop/cart:1.4.2",
                "command": ["/bin/cart"], "args": ["--listen=:8080", "--token-file=/var/run/secrets/tokens/vault-token", "--log-level=info"],
                "env": [{"name": "TOKEN_PATH", "value": "/var/run/secrets/tokens/vault-token"},
                        {"name": "SECRET_NAME", "value": "cart-db"},
                        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "cart-db", "key": "password"}}},
                        {"name": "API_TOKEN", "value": "$(VAULT_TOKEN)"}],
                "envFrom": [{"secretRef": {"name": "cart-env"}}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}]}},
                "volumeMounts": [{"name": "vault-token", "mountPath": "/var/run/secrets/tokens"}, {"name": "tls", "mountPath": "/etc/tls"}]
              }],
              "volumes": [
                {"name": "vault-token", "projected": {"sources": [{"serviceAccountToken": {"path": "vault-token", "expirationSeconds": 7200, "audience": "vault"}}]}},
                {"name": "tls", "secret": {"secretName": "cart-tls", "defaultMode": 420}}
              ]
            }
          },
          "requestReceivedTimestamp": "2024-06-11T13:00:00.000000Z", "stageTimestamp": "2024-06-11T13:00:00.021000Z",
          "annotations": {"authorization.k8s.io/decision": "allow",
                          "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding \"argocd-application-controller\" of ClusterRole \"argocd-application-controller\" to ServiceAccount \"argocd-application-controller/argocd\"",
                          "pod-security.kubernetes.io/enforce-policy": "restricted:latest"}
        }"#;
        let parsed: Value = serde_json::from_str(raw).unwrap();
        let out = redact_event(raw).unwrap();
        assert_eq!(out, parsed);
        let mut again = parsed.clone();
        assert_eq!(redact_value(&mut again), 0);

        // An exec without credentials keeps its command untouched.
        let mut exec = json!({
            "auditID": "4a4a4a4a-0000-4000-8000-000000000005",
            "verb": "get",
            "requestURI": "/api/v1/namespaces/prod/pods/web-0/exec?command=cat&command=%2Fvar%2Frun%2Fsecrets%2Fkubernetes.io%2Fserviceaccount%2Ftoken&container=web&stdout=true",
            "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "prod", "name": "web-0", "apiVersion": "v1"},
            "user": {"username": "oncall@example.com"}
        });
        let before = exec.clone();
        assert_eq!(redact_value(&mut exec), 0);
        assert_eq!(exec, before);
    }

    #[test]
    fn hashes_are_stable_and_distinct() {
        let mut a = secret_create_event();
        let mut b = secret_create_event();
        redact_value(&mut a);
        redact_value(&mut b);
        assert_eq!(a, b);
        let pw = &a["requestObject"]["data"]["password"];
        assert_eq!(pw, &a["responseObject"]["data"]["password"]);
        assert_ne!(pw, &a["requestObject"]["data"]["username"]);
        assert_eq!(marker(b"x"), marker(b"x"));
        assert_ne!(marker(b"x"), marker(b"y"));
        // sha256("hunter2") = f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7
        assert_eq!(marker(b"hunter2"), "[redacted sha256:f52fbd32b2b3]");
        assert!(is_marker(&marker(b"hunter2")));
    }

    #[test]
    fn pod_env_credentials_and_private_keys_are_redacted() {
        let key =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAxyz\n-----END RSA PRIVATE KEY-----\n";
        let mut pod = json!({
            "kind": "Pod",
            "metadata": {"name": "api", "annotations": {"example.com/debug": key}},
            "spec": {"containers": [{
                "name": "api",
                "env": [
                    {"name": "DB_PASSWORD", "value": "hunter2"},
                    {"name": "LOG_LEVEL", "value": "info"}
                ],
                "args": ["--db-url=postgres://app:hunter3@db:5432/app", "--password=hunter4", "--port=8080"],
                "livenessProbe": {"httpGet": {"path": "/", "port": 80, "httpHeaders": [{"name": "Authorization", "value": "Basic YWRtaW46cGFzcw=="}]}}
            }]}
        });
        assert_eq!(redact_value(&mut pod), 5);
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["env"][0]["value"], red("hunter2"));
        assert_eq!(c["env"][1]["value"], "info");
        assert_eq!(
            c["args"][0],
            format!("--db-url=postgres://app:{}@db:5432/app", red("hunter3"))
        );
        assert_eq!(c["args"][1], format!("--password={}", red("hunter4")));
        assert_eq!(c["args"][2], "--port=8080");
        assert_eq!(
            c["livenessProbe"]["httpGet"]["httpHeaders"][0]["value"],
            format!("Basic {}", red("YWRtaW46cGFzcw=="))
        );
        assert_eq!(
            pod["metadata"]["annotations"]["example.com/debug"],
            format!(
                "-----BEGIN RSA PRIVATE KEY-----{}-----END RSA PRIVATE KEY-----\n",
                red("\nMIIEowIBAAKCAQEAxyz\n")
            )
        );
    }

    #[test]
    fn event_list_and_wrapped_events_get_their_own_context() {
        let mut list = json!({
            "kind": "EventList",
            "apiVersion": "audit.k8s.io/v1",
            "items": [secret_create_event(), secret_create_event()]
        });
        assert_eq!(redact_value(&mut list), 16);
        assert_eq!(
            list["items"][1]["requestObject"]["data"]["password"],
            red("aHVudGVyMg==")
        );

        let inner = secret_create_event().to_string();
        let mut wrapped = json!({"@timestamp": "2024-06-11T09:14:03Z", "message": inner});
        assert_eq!(redact_value(&mut wrapped), 1);
        let message: Value = serde_json::from_str(wrapped["message"].as_str().unwrap()).unwrap();
        assert_eq!(
            message["requestObject"]["data"]["password"],
            red("aHVudGVyMg==")
        );
        assert!(!wrapped.to_string().contains("aHVudGVyMg=="));
    }

    #[test]
    fn gke_entries_are_understood() {
        let mut entry = json!({
            "protoPayload": {
                "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                "methodName": "io.k8s.core.v1.secrets.create",
                "resourceName": "core/v1/namespaces/default/secrets/api",
                "request": {"@type": "core.k8s.io/v1.Secret", "metadata": {"name": "api"}, "data": {"key": "c2VjcmV0"}}
            },
            "resource": {"type": "k8s_cluster", "labels": {"cluster_name": "prod"}}
        });
        assert_eq!(redact_value(&mut entry), 1);
        assert_eq!(
            entry["protoPayload"]["request"]["data"]["key"],
            red("c2VjcmV0")
        );
        assert_eq!(entry["protoPayload"]["request"]["metadata"]["name"], "api");
    }

    #[test]
    fn deep_nesting_is_handled_without_panic() {
        let ok = format!("{}{}", "[".repeat(120), "]".repeat(120));
        assert!(redact_event(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(redact_event(&deep).is_err());
        let deep_obj = format!(
            "{}\"x\"{}",
            "{\"kind\":\"Secret\",\"data\":".repeat(5_000),
            "}".repeat(5_000)
        );
        assert!(redact_event(&deep_obj).is_err());
        // A Value built by code may be deeper than the parser allows.
        let mut v = json!("Bearer abcdef");
        for _ in 0..400 {
            v = json!({"kind": "Secret", "data": {"k": "v"}, "x": [v]});
        }
        assert_eq!(redact_value(&mut v), 401);
    }

    #[test]
    fn string_scanner_edge_cases() {
        let cases: &[(&str, &str)] = &[
            ("password: hunter2", "password: {hunter2}"),
            (
                "  - password: |\n      line1\n      line2\n  - next: 1",
                "  - password: |\n      {line1\n      line2}\n  - next: 1",
            ),
            (
                "{\"client_secret\":\"abc\\\"def\",\"x\":1}",
                "{\"client_secret\":\"{abc\\\"def}\",\"x\":1}",
            ),
            (
                "export GITHUB_TOKEN=ghp_abcdef123\necho ok",
                "export GITHUB_TOKEN={ghp_abcdef123}\necho ok",
            ),
            (
                "https://x/?a=1&api_key=k3y&b=2",
                "https://x/?a=1&api_key={k3y}&b=2",
            ),
            (
                "command=curl%3Fa%3D1%26token%3Dsecret1&c=2",
                "command=curl%3Fa%3D1%26token%3D{secret1}&c=2",
            ),
        ];
        for (input, expected) in cases {
            let mut out = String::new();
            let mut rest = *expected;
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}').map(|c| c + open) else {
                    break;
                };
                // `{` inside JSON text is literal when not followed by a redaction.
                if rest[open + 1..].starts_with('"') {
                    out.push_str(&rest[..=open]);
                    rest = &rest[open + 1..];
                    continue;
                }
                out.push_str(&rest[..open]);
                out.push_str(&red(&rest[open + 1..close]));
                rest = &rest[close + 1..];
            }
            out.push_str(rest);
            assert_eq!(
                scan_string(input).as_deref(),
                Some(out.as_str()),
                "input: {input:?}"
            );
        }
        for unchanged in [
            "system:serviceaccount:kube-system:token-cleaner",
            "JTI=8f3e2d1c-0b9a-4876-a5b4-c3d2e1f0a9b8",
            "/api/v1/namespaces/default/secrets/my-token",
            "RBAC: allowed by ClusterRoleBinding \"x\" of ClusterRole \"y\"",
            "token: $TOKEN",
            "password: \"{{ .Values.password }}\"",
            "kubectl/v1.30.2 (linux/amd64) kubernetes/3968350",
        ] {
            assert_eq!(scan_string(unchanged), None, "{unchanged:?}");
        }
    }

    /// Fragments that exercise the scanners' edges when concatenated.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Bearer ".to_owned()),
            Just("bearer+".to_owned()),
            Just("Authorization".to_owned()),
            Just("%3A".to_owned()),
            Just("%3D".to_owned()),
            Just("%2".to_owned()),
            Just("eyJhbGciOiJSUzI1NiJ9".to_owned()),
            Just("ZXlKaGJHY2lPaUpTVXpJMU5pSjkuZXlKemRXSWlPaUo0SW4wLnNpZw".to_owned()),
            Just(".".to_owned()),
            Just("token".to_owned()),
            Just("password".to_owned()),
            Just(": ".to_owned()),
            Just(":".to_owned()),
            Just("=".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("  ".to_owned()),
            Just("- ".to_owned()),
            Just("|".to_owned()),
            Just("\"".to_owned()),
            Just("'".to_owned()),
            Just("\\".to_owned()),
            Just("-----BEGIN RSA PRIVATE KEY-----".to_owned()),
            Just("-----END ".to_owned()),
            Just("-----".to_owned()),
            Just("AKIAIOSFODNN7EXAMPLE".to_owned()),
            Just("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned()),
            Just("://u:p@".to_owned()),
            Just("%3A%2F%2Fu%3Ap%40".to_owned()),
            Just("%40".to_owned()),
            Just("command=--password&command=".to_owned()),
            Just("--token".to_owned()),
            Just("ghp_".to_owned()),
            Just("[redacted sha256:".to_owned()),
            Just("é€😀".to_owned()),
            Just("$".to_owned()),
            Just("&".to_owned()),
            Just("?".to_owned()),
            "[a-zA-Z0-9_-]{0,20}",
            ".{0,4}",
        ]
    }

    fn tricky_string() -> impl Strategy<Value = String> {
        prop::collection::vec(fragment(), 0..24).prop_map(|parts| parts.concat())
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("kind".to_owned()),
            Just("data".to_owned()),
            Just("stringData".to_owned()),
            Just("binaryData".to_owned()),
            Just("metadata".to_owned()),
            Just("annotations".to_owned()),
            Just(LAST_APPLIED.to_owned()),
            Just("objectRef".to_owned()),
            Just("resource".to_owned()),
            Just("subresource".to_owned()),
            Just("requestObject".to_owned()),
            Just("responseObject".to_owned()),
            Just("items".to_owned()),
            Just("rows".to_owned()),
            Just("object".to_owned()),
            Just("status".to_owned()),
            Just("token".to_owned()),
            Just("name".to_owned()),
            Just("value".to_owned()),
            Just("path".to_owned()),
            Just("labels".to_owned()),
            Just("owner".to_owned()),
            Just("methodName".to_owned()),
            Just("@type".to_owned()),
            ".{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![
                Just("Secret"),
                Just("SecretList"),
                Just("ConfigMap"),
                Just("TokenRequest"),
                Just("secrets"),
                Just("configmaps"),
                Just("serviceaccounts"),
                Just("token"),
                Just("helm"),
                Just("/data/password"),
                Just("/metadata/annotations"),
                Just(""),
                Just("io.k8s.core.v1.secrets.create"),
            ]
            .prop_map(Value::from),
            tricky_string().prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            // Keep the source tree clean: no regression files next to it.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_text_never_panics(raw in ".*") {
            let _ = redact_event(&raw);
            let mut v = Value::String(raw);
            redact_value(&mut v);
        }

        #[test]
        fn tricky_strings_never_panic_and_are_idempotent(s in tricky_string()) {
            let mut v = Value::String(s);
            redact_value(&mut v);
            let mut again = v.clone();
            prop_assert_eq!(redact_value(&mut again), 0);
            prop_assert_eq!(again, v);
        }

        #[test]
        fn arbitrary_values_never_panic_and_are_idempotent(mut v in json_value()) {
            let _ = redact_event(&v.to_string());
            redact_value(&mut v);
            let mut again = v.clone();
            prop_assert_eq!(redact_value(&mut again), 0);
            prop_assert_eq!(again, v);
        }

        #[test]
        fn secret_values_never_survive(
            values in prop::collection::btree_map("[a-z.-]{1,12}", "[A-Za-z0-9+/=]{16,40}", 1..6),
            as_list in any::<bool>(),
        ) {
            let data: Map<String, Value> = values.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
            let secret = json!({"metadata": {"name": "s"}, "data": data.clone(), "stringData": data});
            let body = if as_list { json!({"kind": "SecretList", "items": [secret]}) } else { secret };
            let mut event = json!({
                "auditID": "x",
                "verb": "get",
                "objectRef": {"resource": "secrets", "namespace": "n"},
                "responseObject": body
            });
            redact_value(&mut event);
            let text = event.to_string();
            for v in values.values() {
                prop_assert!(!text.contains(v.as_str()), "{} leaked", v);
            }
        }
    }
}
