//! A finding as an OCSF 1.2.0 Detection Finding (class_uid 2004, category
//! Findings 2, activity Create 1, type_uid 200401): one JSON object a line
//! in `findings.ocsf.jsonl`.
//!
//! Input: the finding JSON (DESIGN "A finding"), kaudit's version and a
//! fallback time for findings without one. Output: a record that carries
//! every attribute the class, its parents (finding, base_event), the
//! profiles it applies (`cloud`, `host`, `security_control`, listed in
//! `metadata.profiles`) and each object it holds require, typed as the
//! schema's dictionary says. The tests check that offline against the
//! schema files in `../shared/peers/ocsf`.
//!
//! The mapping:
//! - `finding_info`: uid = finding id, title = rule title, desc = summary,
//!   analytic {uid = rule id, name = rule title, type Rule, category},
//!   attacks = the rule's MITRE ids (technique / sub-technique, with the
//!   technique's primary tactic for the ids kaudit's rules use).
//! - `actor.user`: name, uid, groups, credential id (`JTI=`/`X509SHA256=`).
//! - `api`: operation = verb, request.uid = auditID, service
//!   `kube-apiserver`, group and version of the object, response.code.
//! - `resources`: the target object, `type` = `resource/subresource`
//!   (`pods/exec`); a request without an object name (a list) names the
//!   collection (`secrets`).
//! - `evidences[]`: one per audit event: `data` = the redacted event,
//!   verbatim, and `src_endpoint` from its `sourceIPs`: `ip` = the connection
//!   address (the last of `sourceIPs`), `intermediate_ips` = the earlier,
//!   client-supplied forwarded addresses (valid IP addresses only). The 1.2.0
//!   Detection Finding has no top-level `src_endpoint` or `http_request`
//!   (the schema check rejects them), so the user agent is in `unmapped`.
//! - `cloud.provider` = `Kubernetes`: the finding does not say which cloud
//!   (if any) hosts the cluster; the cluster name is in `unmapped.cluster`.
//! - `action_id`: Denied (2) when the API server answered 401/403, else
//!   Allowed (1) — kaudit only detects; `disposition_id` Detected (15).
//! - `unmapped`: cluster, category, stage, impersonated user, request URI,
//!   user agent, source IPs as given, details, references.
//!
//! Nothing here fails: missing finding fields are left out or defaulted.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

/// The OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.2.0";

/// Profiles applied to every record.
const PROFILES: [&str; 3] = ["cloud", "host", "security_control"];

/// MITRE ATT&CK techniques kaudit's rules name: id, name, primary tactic.
const TECHNIQUES: &[(&str, &str, &str, &str)] = &[
    ("T1036", "Masquerading", "TA0005", "Defense Evasion"),
    ("T1053", "Scheduled Task/Job", "TA0002", "Execution"),
    (
        "T1069",
        "Permission Groups Discovery",
        "TA0007",
        "Discovery",
    ),
    ("T1070", "Indicator Removal", "TA0005", "Defense Evasion"),
    ("T1078", "Valid Accounts", "TA0001", "Initial Access"),
    ("T1087", "Account Discovery", "TA0007", "Discovery"),
    ("T1090", "Proxy", "TA0011", "Command and Control"),
    ("T1098", "Account Manipulation", "TA0003", "Persistence"),
    (
        "T1105",
        "Ingress Tool Transfer",
        "TA0011",
        "Command and Control",
    ),
    (
        "T1133",
        "External Remote Services",
        "TA0001",
        "Initial Access",
    ),
    ("T1136", "Create Account", "TA0003", "Persistence"),
    ("T1204", "User Execution", "TA0002", "Execution"),
    ("T1485", "Data Destruction", "TA0040", "Impact"),
    ("T1489", "Service Stop", "TA0040", "Impact"),
    (
        "T1528",
        "Steal Application Access Token",
        "TA0006",
        "Credential Access",
    ),
    ("T1531", "Account Access Removal", "TA0040", "Impact"),
    (
        "T1543",
        "Create or Modify System Process",
        "TA0003",
        "Persistence",
    ),
    (
        "T1546",
        "Event Triggered Execution",
        "TA0003",
        "Persistence",
    ),
    (
        "T1548",
        "Abuse Elevation Control Mechanism",
        "TA0004",
        "Privilege Escalation",
    ),
    (
        "T1550",
        "Use Alternate Authentication Material",
        "TA0005",
        "Defense Evasion",
    ),
    (
        "T1552",
        "Unsecured Credentials",
        "TA0006",
        "Credential Access",
    ),
    (
        "T1557",
        "Adversary-in-the-Middle",
        "TA0006",
        "Credential Access",
    ),
    ("T1562", "Impair Defenses", "TA0005", "Defense Evasion"),
    (
        "T1572",
        "Protocol Tunneling",
        "TA0011",
        "Command and Control",
    ),
    (
        "T1609",
        "Container Administration Command",
        "TA0002",
        "Execution",
    ),
    ("T1610", "Deploy Container", "TA0002", "Execution"),
    ("T1611", "Escape to Host", "TA0004", "Privilege Escalation"),
    (
        "T1613",
        "Container and Resource Discovery",
        "TA0007",
        "Discovery",
    ),
    (
        "T1649",
        "Steal or Forge Authentication Certificates",
        "TA0006",
        "Credential Access",
    ),
];

/// OCSF severity id and caption for a kaudit severity.
fn severity(s: &str) -> (i64, &'static str) {
    match s {
        "info" => (1, "Informational"),
        "low" => (2, "Low"),
        "medium" => (3, "Medium"),
        "high" => (4, "High"),
        "critical" => (5, "Critical"),
        _ => (0, "Unknown"),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// RFC 3339 to milliseconds since the Unix epoch.
fn millis(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The `attacks` array for MITRE ids such as `T1609` or `T1098.006`.
fn attacks(mitre: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in mitre.iter().filter_map(Value::as_str) {
        let (technique, sub) = match id.split_once('.') {
            Some((t, _)) => (t, Some(id)),
            None => (id, None),
        };
        let url = |id: &str| {
            format!(
                "https://attack.mitre.org/techniques/{}/",
                id.replace('.', "/")
            )
        };
        let mut a = Map::new();
        let mut t = Map::new();
        t.insert("uid".into(), json!(technique));
        t.insert("src_url".into(), json!(url(technique)));
        if let Some((_, name, tactic_uid, tactic_name)) =
            TECHNIQUES.iter().find(|(uid, ..)| *uid == technique)
        {
            t.insert("name".into(), json!(name));
            a.insert(
                "tactic".into(),
                json!({"uid": tactic_uid, "name": tactic_name}),
            );
        }
        a.insert("technique".into(), Value::Object(t));
        if let Some(sub) = sub {
            a.insert(
                "sub_technique".into(),
                json!({"uid": sub, "src_url": url(sub)}),
            );
        }
        out.push(Value::Object(a));
    }
    out
}

/// The `src_endpoint` for an event's `sourceIPs`: the connection's address
/// is the last, the others were forwarded (and chosen) by the client. Only
/// valid IP addresses are kept; `None` without a valid connection address.
fn src_endpoint(ips: &[&str]) -> Option<Value> {
    let valid = |s: &&str| s.parse::<IpAddr>().is_ok();
    let (last, rest) = ips.split_last()?;
    if !valid(last) {
        return None;
    }
    let mut e = json!({ "ip": last });
    let forwarded: Vec<&str> = rest.iter().copied().filter(valid).collect();
    if !forwarded.is_empty() {
        e["intermediate_ips"] = json!(forwarded);
    }
    Some(e)
}

/// The Detection Finding for `finding`. `fallback_time_ms` is used when
/// the finding has no parseable `time`.
pub fn detection_finding(finding: &Value, kaudit_version: &str, fallback_time_ms: i64) -> Value {
    let empty = Value::Null;
    let ev = match finding.get("evidence") {
        Some(Value::Array(list)) => list.first().unwrap_or(&empty),
        Some(v) => v,
        None => &empty,
    };
    let object_ref = ev.get("objectRef").unwrap_or(&empty);
    let id = text(finding, "id").unwrap_or("");
    let rule_id = text(finding, "rule_id").unwrap_or("");
    let title = text(finding, "rule_title").unwrap_or(rule_id);
    let summary = text(finding, "summary").unwrap_or(title);
    let time_str = text(finding, "time");
    let time_ms = time_str.and_then(millis).unwrap_or(fallback_time_ms);
    let (severity_id, severity_name) = severity(text(finding, "severity").unwrap_or(""));
    let code = ev
        .get("responseStatus")
        .and_then(|s| s.get("code"))
        .and_then(Value::as_i64);
    let denied = matches!(code, Some(401 | 403));

    let mut rec = Map::new();
    let mut put = |k: &str, v: Value| {
        rec.insert(k.to_owned(), v);
    };
    put("category_uid", json!(2));
    put("category_name", json!("Findings"));
    put("class_uid", json!(2004));
    put("class_name", json!("Detection Finding"));
    put("activity_id", json!(1));
    put("activity_name", json!("Create"));
    put("type_uid", json!(200401));
    put("type_name", json!("Detection Finding: Create"));
    put("severity_id", json!(severity_id));
    put("severity", json!(severity_name));
    put("time", json!(time_ms));
    put("status_id", json!(1));
    put("status", json!("New"));
    put("message", json!(summary));
    put("action_id", json!(if denied { 2 } else { 1 }));
    put("action", json!(if denied { "Denied" } else { "Allowed" }));
    put("disposition_id", json!(15));
    put("disposition", json!("Detected"));
    put("cloud", json!({"provider": "Kubernetes"}));

    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {"name": "kaudit", "vendor_name": "kaudit", "version": kaudit_version},
        "profiles": PROFILES,
        "log_name": "findings",
    });
    if !id.is_empty() {
        metadata["uid"] = json!(id);
    }
    if let Some(t) = time_str {
        metadata["original_time"] = json!(t);
    }
    put("metadata", metadata);

    // finding_info
    let mut analytic = json!({"uid": rule_id, "name": title, "type_id": 1, "type": "Rule"});
    if let Some(c) = text(finding, "category") {
        analytic["category"] = json!(c);
    }
    let mut info = json!({
        "uid": id, "title": title, "desc": summary, "analytic": analytic,
        "first_seen_time": time_ms, "last_seen_time": time_ms,
    });
    let attacks = finding
        .get("mitre")
        .and_then(Value::as_array)
        .map(|m| attacks(m))
        .unwrap_or_default();
    if !attacks.is_empty() {
        info["attacks"] = json!(attacks);
        put("attacks", json!(attacks));
    }
    if let Some(c) = text(finding, "category") {
        info["types"] = json!([c]);
    }
    put("finding_info", info);

    // actor
    let user_name = text(finding, "user");
    let mut user = Map::new();
    if let Some(n) = user_name {
        user.insert("name".into(), json!(n));
        let system = n.starts_with("system:");
        user.insert("type_id".into(), json!(if system { 3 } else { 1 }));
        user.insert("type".into(), json!(if system { "System" } else { "User" }));
    }
    if let Some(uid) = ev.get("user").and_then(|u| text(u, "uid")) {
        user.insert("uid".into(), json!(uid));
    }
    let credential = ev
        .get("user")
        .and_then(|u| u.get("extra"))
        .and_then(|x| x.get("authentication.kubernetes.io/credential-id"))
        .and_then(|c| c.get(0))
        .and_then(Value::as_str);
    if let Some(c) = credential {
        user.insert("credential_uid".into(), json!(c));
    }
    let groups: Vec<Value> = finding
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| {
            g.iter()
                .filter_map(Value::as_str)
                .map(|name| json!({"name": name}))
                .collect()
        })
        .unwrap_or_default();
    if !groups.is_empty() {
        user.insert("groups".into(), Value::Array(groups));
    }
    // `user` needs one of name, uid or account.
    let actor = if user.contains_key("name") || user.contains_key("uid") {
        Some(json!({"user": user}))
    } else {
        None
    };
    if let Some(a) = actor {
        put("actor", a);
    }

    // api
    let verb = text(finding, "verb").unwrap_or("unknown");
    let audit_id = text(finding, "audit_id").unwrap_or(id);
    let mut api = json!({
        "operation": verb,
        "request": {"uid": audit_id},
        "service": {"name": "kube-apiserver"},
    });
    if let Some(g) = text(object_ref, "apiGroup") {
        api["group"] = json!({"name": g});
    }
    if let Some(v) = text(object_ref, "apiVersion") {
        api["version"] = json!(v);
    }
    if let Some(c) = code {
        api["response"] = json!({"code": c});
    }
    put("api", api);

    // resources
    let resource = text(finding, "resource");
    if let Some(resource) = resource {
        let ty = match text(finding, "subresource") {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        let mut r = json!({
            "name": text(finding, "name").unwrap_or(resource),
            "type": ty,
            "cloud": {"provider": "Kubernetes"},
        });
        if let Some(ns) = text(finding, "namespace") {
            r["namespace"] = json!(ns);
        }
        if let Some(uid) = text(object_ref, "uid") {
            r["uid"] = json!(uid);
        }
        put("resources", json!([r]));
    }

    // evidences: one per audit event, with the addresses it came from.
    let finding_ips: Vec<&str> = finding
        .get("source_ips")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let events: Vec<&Value> = match finding.get("evidence") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(v) => vec![v],
    };
    let evidences: Vec<Value> = events
        .into_iter()
        .map(|e| {
            let mut o = json!({"data": e});
            let event_ips: Vec<&str> = e
                .get("sourceIPs")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let ips = if event_ips.is_empty() {
                &finding_ips
            } else {
                &event_ips
            };
            if let Some(src) = src_endpoint(ips) {
                o["src_endpoint"] = src;
            }
            o
        })
        .collect();
    if !evidences.is_empty() {
        put("evidences", Value::Array(evidences));
    }

    let mut unmapped = Map::new();
    for k in [
        "cluster",
        "category",
        "stage",
        "impersonated_user",
        "request_uri",
        "user_agent",
        "source_ips",
        "details",
        "references",
    ] {
        if let Some(v) = finding.get(k).filter(|v| !v.is_null()) {
            unmapped.insert(k.to_owned(), v.clone());
        }
    }
    put("unmapped", Value::Object(unmapped));
    Value::Object(rec)
}

#[cfg(test)]
mod tests {
    //! An offline validator for OCSF records against the schema files in
    //! `../shared/peers/ocsf`, and the records kaudit writes checked with it.

    use super::*;
    use crate::export::tests::finding;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn schema_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/ocsf")
    }

    fn load(rel: &str) -> Value {
        let p = schema_dir().join(rel);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Attributes in OCSF 1.2.0's `includes/classification.json` and
    /// `includes/occurrence.json`, which base_event `$include`s but the
    /// schema copy does not ship: their requirement as upstream defines it.
    const INCLUDES: &[(&str, &str)] = &[
        ("activity_id", "required"),
        ("activity_name", "optional"),
        ("category_uid", "required"),
        ("category_name", "optional"),
        ("class_uid", "required"),
        ("class_name", "optional"),
        ("type_uid", "required"),
        ("type_name", "optional"),
        ("time", "required"),
        ("timezone_offset", "recommended"),
        ("count", "optional"),
        ("duration", "optional"),
        ("start_time", "optional"),
        ("end_time", "optional"),
    ];

    /// A class or object with its parents, includes and profiles merged:
    /// attribute name to its definition (child keys override parent keys).
    struct Def {
        attrs: BTreeMap<String, Map<String, Value>>,
        at_least_one: Vec<String>,
    }

    struct Schema {
        dict: Map<String, Value>,
        types: Map<String, Value>,
    }

    impl Schema {
        fn new() -> Schema {
            let d = load("dictionary.json");
            Schema {
                dict: d["attributes"].as_object().unwrap().clone(),
                types: d["types"]["attributes"].as_object().unwrap().clone(),
            }
        }

        /// Merges `file`'s attributes (and what it includes or extends).
        fn merge(&self, file: &str, def: &mut Def) {
            let v = load(file);
            let dir = if file.starts_with("objects/") {
                "objects"
            } else {
                "events"
            };
            if let Some(parent) = v["extends"].as_str() {
                let pf = if dir == "objects" {
                    format!("objects/{parent}.json")
                } else if parent == "base_event" {
                    "events/base_event.json".to_owned()
                } else {
                    format!("events/findings/{parent}.json")
                };
                self.merge(&pf, def);
            }
            // Profiles are applied: every record lists them all.
            for p in v["profiles"].as_array().into_iter().flatten() {
                let p = p.as_str().unwrap();
                self.merge_attrs(&load(&format!("profiles/{p}.json"))["attributes"], def);
            }
            if let Some(c) = v["constraints"]["at_least_one"].as_array() {
                def.at_least_one = c.iter().map(|s| s.as_str().unwrap().to_owned()).collect();
            }
            self.merge_attrs(&v["attributes"], def);
        }

        fn merge_attrs(&self, attrs: &Value, def: &mut Def) {
            for (k, a) in attrs.as_object().unwrap() {
                if k == "$include" {
                    for inc in a.as_array().unwrap() {
                        let inc = inc.as_str().unwrap();
                        if inc.starts_with("includes/") {
                            for (name, req) in INCLUDES {
                                def.attrs
                                    .entry((*name).into())
                                    .or_default()
                                    .insert("requirement".into(), json!(req));
                            }
                        } else {
                            self.merge_attrs(&load(inc)["attributes"], def);
                        }
                    }
                    continue;
                }
                let e = def.attrs.entry(k.clone()).or_default();
                for (kk, vv) in a.as_object().unwrap() {
                    e.insert(kk.clone(), vv.clone());
                }
            }
        }

        fn def(&self, file: &str) -> Def {
            let mut d = Def {
                attrs: BTreeMap::new(),
                at_least_one: Vec::new(),
            };
            self.merge(file, &mut d);
            d
        }

        /// The primitive a type name reduces to (`timestamp_t` → `long_t`).
        fn base_type<'a>(&'a self, t: &'a str) -> &'a str {
            match self.types.get(t).and_then(|d| d["type"].as_str()) {
                Some(b) => self.base_type(b),
                None => t,
            }
        }

        /// Every problem with `value` as an instance of `file`'s class or
        /// object, at `path`.
        fn check(&self, file: &str, value: &Value, path: &str, errs: &mut Vec<String>) {
            let def = self.def(file);
            let Some(obj) = value.as_object() else {
                errs.push(format!("{path}: expected an object"));
                return;
            };
            for (name, a) in &def.attrs {
                if a.get("requirement").and_then(Value::as_str) == Some("required")
                    && !obj.contains_key(name)
                {
                    errs.push(format!("{path}.{name}: required by {file}, missing"));
                }
            }
            if !def.at_least_one.is_empty() && !def.at_least_one.iter().any(|k| obj.contains_key(k))
            {
                errs.push(format!("{path}: needs one of {:?}", def.at_least_one));
            }
            for (name, v) in obj {
                let p = format!("{path}.{name}");
                let Some(local) = def.attrs.get(name) else {
                    errs.push(format!("{p}: not an attribute of {file}"));
                    continue;
                };
                let Some(dict) = self.dict.get(name).and_then(Value::as_object) else {
                    errs.push(format!("{p}: not in the dictionary"));
                    continue;
                };
                // The dictionary's definition, overridden by the class's.
                let mut eff = dict.clone();
                for (k, vv) in local {
                    eff.insert(k.clone(), vv.clone());
                }
                let ty = eff["type"].as_str().unwrap_or("").to_owned();
                let is_array = eff.get("is_array").and_then(Value::as_bool) == Some(true);
                let enums = eff.get("enum").and_then(Value::as_object).cloned();
                if is_array {
                    let Some(items) = v.as_array() else {
                        errs.push(format!("{p}: expected an array of {ty}"));
                        continue;
                    };
                    for (i, item) in items.iter().enumerate() {
                        self.check_value(&ty, enums.as_ref(), item, &format!("{p}[{i}]"), errs);
                    }
                } else {
                    self.check_value(&ty, enums.as_ref(), v, &p, errs);
                }
            }
        }

        fn check_value(
            &self,
            ty: &str,
            enums: Option<&Map<String, Value>>,
            v: &Value,
            p: &str,
            errs: &mut Vec<String>,
        ) {
            let base = self.base_type(ty);
            let ok = match base {
                "string_t" => v.is_string(),
                "integer_t" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                "long_t" => v.is_i64() || v.is_u64(),
                "float_t" => v.is_number(),
                "boolean_t" => v.is_boolean(),
                "json_t" => true,
                "object" => v.is_object(),
                obj => {
                    let file = format!("objects/{obj}.json");
                    if !schema_dir().join(&file).is_file() {
                        errs.push(format!("{p}: unknown type {obj}"));
                        return;
                    }
                    self.check(&file, v, p, errs);
                    true
                }
            };
            if !ok {
                errs.push(format!("{p}: {v} is not a {ty}"));
                return;
            }
            if ty == "ip_t" && v.as_str().is_some_and(|s| s.parse::<IpAddr>().is_err()) {
                errs.push(format!("{p}: {v} is not an IP address"));
            }
            if let (Some(e), Some(n)) = (enums, v.as_i64()) {
                if !e.contains_key(&n.to_string()) {
                    errs.push(format!("{p}: {n} is not one of the enum's values"));
                }
            }
        }

        fn validate(&self, rec: &Value) -> Vec<String> {
            let mut errs = Vec::new();
            self.check(
                "events/findings/detection_finding.json",
                rec,
                "$",
                &mut errs,
            );
            errs
        }
    }

    fn record(f: &Value) -> Value {
        detection_finding(f, "0.1.0", 1_700_000_000_000)
    }

    #[test]
    fn schema_copy_is_1_2_0() {
        assert_eq!(load("version.json")["version"], OCSF_VERSION);
        let class = load("events/findings/detection_finding.json");
        assert_eq!(class["uid"], 4);
        let cats = load("categories.json");
        assert_eq!(cats["attributes"]["findings"]["uid"], 2);
    }

    #[test]
    fn the_validator_catches_what_it_should() {
        let s = Schema::new();
        let mut rec = record(&finding(1, "pod-exec", "high", "kubectl"));
        assert!(s.validate(&rec).is_empty());
        rec.as_object_mut().unwrap().remove("severity_id");
        rec["time"] = json!("yesterday");
        rec["finding_info"].as_object_mut().unwrap().remove("uid");
        rec["actor"]["user"]["groups"] = json!({"name": "x"});
        rec["api"]["request"]["uid"] = json!(5);
        rec["resources"][0]["cloud"] = json!({});
        rec["bogus"] = json!(1);
        rec["metadata"]["product"]
            .as_object_mut()
            .unwrap()
            .remove("vendor_name");
        rec["evidences"][0]["src_endpoint"]["ip"] = json!("not-an-ip");
        rec["status_id"] = json!(42);
        rec["http_request"] = json!({"user_agent": "x"});
        let errs = s.validate(&rec);
        for needle in [
            "$.severity_id: required",
            "$.time: \"yesterday\" is not a timestamp_t",
            "$.finding_info.uid: required",
            "$.actor.user.groups: expected an array",
            "$.api.request.uid: 5 is not a string_t",
            "$.resources[0].cloud.provider: required",
            "$.bogus: not an attribute",
            "$.metadata.product.vendor_name: required",
            "$.evidences[0].src_endpoint.ip: \"not-an-ip\" is not an IP address",
            "$.http_request: not an attribute",
            "$.status_id: 42 is not one of",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(needle)),
                "{needle} not in {errs:#?}"
            );
        }
    }

    #[test]
    fn every_exported_record_validates() {
        let s = Schema::new();
        let tmp = tempfile::tempdir().unwrap();
        let (out, _) = crate::export::tests::exported(tmp.path());
        let text = std::fs::read_to_string(out.join(crate::export::FINDINGS_OCSF)).unwrap();
        let mut n = 0;
        for line in text.lines() {
            let rec: Value = serde_json::from_str(line).unwrap();
            let errs = s.validate(&rec);
            assert!(errs.is_empty(), "{errs:#?}");
            n += 1;
        }
        assert_eq!(n, 8);
    }

    #[test]
    fn odd_findings_still_validate() {
        let s = Schema::new();
        let mut cases = Vec::new();
        // A pipeline finding: no event, no user, no time, no resource.
        cases.push(json!({
            "id": "p1", "rule_id": "stream-silent", "rule_title": "Audit stream went silent",
            "severity": "critical", "category": "pipeline", "mitre": [], "cluster": "c",
            "audit_id": "pipeline:c:stream-silent:2026-07-01T00:00:00Z", "time": null,
            "user": "", "groups": [], "source_ips": [], "verb": "", "resource": "",
            "summary": "no events for 10m", "details": {}, "evidence": null
        }));
        // A list request, a denied request, hostile addresses, evidence list.
        let mut f = finding(2, "secrets-list", "low", "=cmd|' /C calc'!A0");
        f["name"] = Value::Null;
        f["subresource"] = Value::Null;
        f["source_ips"] = json!(["not an ip", "2001:db8::1"]);
        f["evidence"] = json!([
            {"auditID": "a", "responseStatus": {"code": 403}},
            {"auditID": "b", "sourceIPs": ["10.1.1.1", "bogus", "198.51.100.1"]}
        ]);
        f["severity"] = json!("info");
        f["user"] = json!("system:serviceaccount:ns:sa");
        cases.push(f);
        // Nothing at all.
        cases.push(json!({}));
        for f in &cases {
            let rec = record(f);
            let errs = s.validate(&rec);
            assert!(errs.is_empty(), "{f}: {errs:#?}");
        }
        let rec = record(&cases[1]);
        assert_eq!(rec["action_id"], 2);
        assert_eq!(rec["resources"][0]["name"], "pods");
        assert_eq!(
            rec["evidences"][0]["src_endpoint"],
            json!({"ip": "2001:db8::1"})
        );
        assert_eq!(
            rec["evidences"][1]["src_endpoint"],
            json!({"ip": "198.51.100.1", "intermediate_ips": ["10.1.1.1"]})
        );
        assert_eq!(rec["evidences"].as_array().unwrap().len(), 2);
        assert_eq!(rec["actor"]["user"]["type_id"], 3);
        assert_eq!(record(&cases[0])["time"], 1_700_000_000_000_i64);
    }

    #[test]
    fn the_mapping_carries_the_finding() {
        let rec = record(&finding(1, "pod-exec", "critical", "kubectl/v1.31"));
        assert_eq!(rec["class_uid"], 2004);
        assert_eq!(rec["category_uid"], 2);
        assert_eq!(rec["type_uid"], 200401);
        assert_eq!(rec["severity_id"], 5);
        assert_eq!(rec["time"], 1_782_900_000_123_i64);
        assert_eq!(rec["metadata"]["version"], "1.2.0");
        assert_eq!(rec["finding_info"]["uid"], format!("{:032x}", 1));
        assert_eq!(rec["finding_info"]["analytic"]["uid"], "pod-exec");
        assert_eq!(
            rec["finding_info"]["attacks"][0]["technique"]["uid"],
            "T1609"
        );
        assert_eq!(rec["finding_info"]["attacks"][0]["tactic"]["uid"], "TA0002");
        assert_eq!(
            rec["finding_info"]["attacks"][1]["sub_technique"]["uid"],
            "T1098.006"
        );
        assert_eq!(
            rec["finding_info"]["attacks"][2]["technique"],
            json!({"uid": "T9999", "src_url": "https://attack.mitre.org/techniques/T9999/"})
        );
        assert_eq!(rec["actor"]["user"]["name"], "alice@example.com");
        assert_eq!(rec["actor"]["user"]["uid"], "u-1");
        assert_eq!(rec["actor"]["user"]["credential_uid"], "JTI=abc");
        assert_eq!(rec["api"]["operation"], "create");
        assert_eq!(rec["api"]["request"]["uid"], "a1");
        assert_eq!(rec["resources"][0]["type"], "pods/exec");
        assert_eq!(rec["resources"][0]["namespace"], "payments");
        assert_eq!(rec["evidences"][0]["src_endpoint"]["ip"], "203.0.113.7");
        assert_eq!(
            rec["evidences"][0]["src_endpoint"]["intermediate_ips"],
            json!(["10.0.0.9"])
        );
        assert_eq!(rec["unmapped"]["user_agent"], "kubectl/v1.31");
        assert_eq!(rec["evidences"][0]["data"]["auditID"], "a1");
        assert_eq!(rec["unmapped"]["cluster"], "prod-eu-1");
        assert_eq!(
            rec["message"],
            "alice@example.com ran sh -c id in payments/api-0"
        );
    }
}
