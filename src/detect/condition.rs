//! Conditions: the `when` / `unless` / `escalate` language of rule files,
//! from YAML to a compiled tree that one event is tested against.
//!
//! ```yaml
//! all: [ ... ]                 # every one holds
//! any: [ ... ]                 # at least one holds
//! not: { ... }
//! macro: name                  # a named condition from `macros:`
//! { field: PATH, OP: VALUE, icase: true, every: true }
//! ```
//! Operators: `equals`, `in`, `in_list` (a named list), `prefix`, `suffix`,
//! `contains` (one or many needles, matched with aho-corasick), `regex`,
//! `exists` (true/false), `cidr`, `gt`, `gte`, `lt`, `lte`. A field with
//! several values (a list, or a path through `[]`) holds when *any* value
//! satisfies the operator, or *every* value with `every: true`.
//!
//! Compiling resolves macros and lists and checks every field path, regex
//! and network, so evaluation cannot fail. This module also says which
//! literals an event must contain for a condition to hold
//! ([`Cond::needles`]), for the rule set's prefilter.

use std::collections::{BTreeMap, HashSet};

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::field::{Eval, Field, Key, Val};

/// A scalar in a rule file, kept as its text (`true`, `403`, `pods`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_yaml_ng::Value::deserialize(d)?;
        match v {
            serde_yaml_ng::Value::String(s) => Ok(Scalar(s)),
            serde_yaml_ng::Value::Bool(b) => Ok(Scalar(b.to_string())),
            serde_yaml_ng::Value::Number(n) => Ok(Scalar(n.to_string())),
            other => Err(D::Error::custom(format!(
                "expected a string, number or boolean, found {}",
                kind_of(&other)
            ))),
        }
    }
}

fn kind_of(v: &serde_yaml_ng::Value) -> &'static str {
    match v {
        serde_yaml_ng::Value::Null => "nothing",
        serde_yaml_ng::Value::Sequence(_) => "a list",
        serde_yaml_ng::Value::Mapping(_) => "a mapping",
        _ => "a tagged value",
    }
}

/// One value, a list of values, or `{list: NAME}` (a named list).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
    Named { list: String },
}

impl OneOrMany {
    fn resolve(&self, names: &Names<'_>) -> Result<Vec<String>, String> {
        match self {
            OneOrMany::One(s) => Ok(vec![s.0.clone()]),
            OneOrMany::Many(v) => Ok(v.iter().map(|s| s.0.clone()).collect()),
            OneOrMany::Named { list } => names
                .lists
                .get(list)
                .cloned()
                .ok_or_else(|| format!("unknown list '{list}'")),
        }
    }
}

/// A condition as written in YAML.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CondDef {
    #[serde(default)]
    all: Option<Vec<CondDef>>,
    #[serde(default)]
    any: Option<Vec<CondDef>>,
    #[serde(default)]
    not: Option<Box<CondDef>>,
    #[serde(default, rename = "macro")]
    macro_name: Option<String>,
    /// `each: PATH` with `where: COND`: some element of PATH satisfies COND,
    /// whose `.relative` paths read that element.
    #[serde(default)]
    each: Option<String>,
    #[serde(default, rename = "where")]
    where_: Option<Box<CondDef>>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    equals: Option<Scalar>,
    #[serde(default, rename = "in")]
    in_values: Option<Vec<Scalar>>,
    #[serde(default)]
    in_list: Option<String>,
    #[serde(default)]
    prefix: Option<OneOrMany>,
    #[serde(default)]
    suffix: Option<OneOrMany>,
    #[serde(default)]
    contains: Option<OneOrMany>,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    exists: Option<bool>,
    /// The path reaches an explicit JSON `null` (true) or does not (false):
    /// a merge patch removing a key.
    #[serde(default)]
    null: Option<bool>,
    #[serde(default)]
    cidr: Option<OneOrMany>,
    #[serde(default)]
    gt: Option<f64>,
    #[serde(default)]
    gte: Option<f64>,
    #[serde(default)]
    lt: Option<f64>,
    #[serde(default)]
    lte: Option<f64>,
    /// Compare strings ignoring ASCII case.
    #[serde(default)]
    icase: bool,
    /// Every value must satisfy the operator (default: any value).
    #[serde(default)]
    every: bool,
}

/// Named lists and macros that conditions may refer to.
pub struct Names<'n> {
    pub lists: &'n BTreeMap<String, Vec<String>>,
    pub macros: &'n BTreeMap<String, CondDef>,
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Each { field: Field, cond: Box<Cond> },
    Test { field: Field, op: Op, every: bool },
}

/// A compiled operator.
#[derive(Debug, Clone)]
pub enum Op {
    /// Exact match against a set (equals, in, in_list); lower-cased when icase.
    In {
        set: HashSet<String, ahash::RandomState>,
        icase: bool,
    },
    Prefix {
        needles: Vec<String>,
        icase: bool,
    },
    Suffix {
        needles: Vec<String>,
        icase: bool,
    },
    Contains {
        ac: AhoCorasick,
        needles: Vec<String>,
        icase: bool,
    },
    Regex(Regex),
    Exists(bool),
    Null(bool),
    Cidr(Vec<IpNet>),
    Cmp {
        gt: Option<f64>,
        gte: Option<f64>,
        lt: Option<f64>,
        lte: Option<f64>,
    },
}

impl CondDef {
    /// Compiles this condition. Errors name what is wrong in a sentence.
    pub fn compile(&self, names: &Names<'_>) -> Result<Cond, String> {
        self.compile_depth(names, 0)
    }

    fn compile_depth(&self, names: &Names<'_>, depth: usize) -> Result<Cond, String> {
        if depth > 64 {
            return Err(
                "conditions nested more than 64 deep (a macro that refers to itself?)".into(),
            );
        }
        let structural = [
            self.all.is_some(),
            self.any.is_some(),
            self.not.is_some(),
            self.macro_name.is_some(),
            self.field.is_some(),
            self.each.is_some(),
        ];
        match structural.iter().filter(|b| **b).count() {
                        0 => return Err("a condition needs one of: all, any, not, macro, field, each".into()),1 => {}
                        _ => return Err("a condition has more than one of: all, any, not, macro, field, each (wrap them in 'all')".into()),
        }
        if let Some(path) = &self.each {
            let field = Field::parse(path)?;
            if !field.is_json_path() {
                return Err(format!(
                    "each: '{path}' is not a path into a request or response body, a pod spec or an element"
                ));
            }
            let inner = self
                .where_
                .as_ref()
                .ok_or("each needs 'where: CONDITION' (tested on every element)")?;
            return Ok(Cond::Each {
                field,
                cond: Box::new(inner.compile_depth(names, depth + 1)?),
            });
        }
        if self.where_.is_some() {
            return Err("'where' belongs to 'each'".into());
        }
        if let Some(list) = &self.all {
            return Ok(Cond::All(
                list.iter()
                    .map(|c| c.compile_depth(names, depth + 1))
                    .collect::<Result<_, _>>()?,
            ));
        }
        if let Some(list) = &self.any {
            return Ok(Cond::Any(
                list.iter()
                    .map(|c| c.compile_depth(names, depth + 1))
                    .collect::<Result<_, _>>()?,
            ));
        }
        if let Some(inner) = &self.not {
            return Ok(Cond::Not(Box::new(inner.compile_depth(names, depth + 1)?)));
        }
        if let Some(m) = &self.macro_name {
            let def = names
                .macros
                .get(m)
                .ok_or_else(|| format!("unknown macro '{m}'"))?;
            return def
                .compile_depth(names, depth + 1)
                .map_err(|e| format!("in macro '{m}': {e}"));
        }
        let path = self.field.as_deref().unwrap_or_default();
        let field = Field::parse(path)?;
        let op = self.op(names).map_err(|e| format!("field '{path}': {e}"))?;
        Ok(Cond::Test {
            field,
            op,
            every: self.every,
        })
    }

    fn op(&self, names: &Names<'_>) -> Result<Op, String> {
        let cmp =
            self.gt.is_some() || self.gte.is_some() || self.lt.is_some() || self.lte.is_some();
        let ops = [
            self.equals.is_some(),
            self.in_values.is_some(),
            self.in_list.is_some(),
            self.prefix.is_some(),
            self.suffix.is_some(),
            self.contains.is_some(),
            self.regex.is_some(),
            self.exists.is_some(),
            self.null.is_some(),
            self.cidr.is_some(),
            cmp,
        ];
        match ops.iter().filter(|b| **b).count() {
            0 => return Err("no operator (equals, in, in_list, prefix, suffix, contains, regex, exists, null, cidr, gt, gte, lt, lte)".into()),1 => {}
            _ => return Err("more than one operator; combine conditions with 'all' or 'any'".into()),
        }
        let icase = self.icase;
        let fold = |s: String| if icase { s.to_ascii_lowercase() } else { s };
        if let Some(v) = &self.equals {
            return Ok(Op::In {
                set: std::iter::once(fold(v.0.clone())).collect(),
                icase,
            });
        }
        if let Some(v) = &self.in_values {
            return Ok(Op::In {
                set: v.iter().map(|s| fold(s.0.clone())).collect(),
                icase,
            });
        }
        if let Some(name) = &self.in_list {
            let list = names
                .lists
                .get(name)
                .ok_or_else(|| format!("unknown list '{name}'"))?;
            return Ok(Op::In {
                set: list.iter().cloned().map(fold).collect(),
                icase,
            });
        }
        if let Some(v) = &self.prefix {
            return Ok(Op::Prefix {
                needles: v.resolve(names)?.into_iter().map(fold).collect(),
                icase,
            });
        }
        if let Some(v) = &self.suffix {
            return Ok(Op::Suffix {
                needles: v.resolve(names)?.into_iter().map(fold).collect(),
                icase,
            });
        }
        if let Some(v) = &self.contains {
            let needles = v.resolve(names)?;
            if needles.iter().any(String::is_empty) {
                return Err("'contains' with an empty string matches everything".into());
            }
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(icase)
                .build(&needles)
                .map_err(|e| format!("cannot build the 'contains' matcher: {e}"))?;
            return Ok(Op::Contains { ac, needles, icase });
        }
        if let Some(r) = &self.regex {
            let re = regex::RegexBuilder::new(r)
                .case_insensitive(icase)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("bad regex {r:?}: {e}"))?;
            return Ok(Op::Regex(re));
        }
        if let Some(e) = self.exists {
            return Ok(Op::Exists(e));
        }
        if let Some(n) = self.null {
            return Ok(Op::Null(n));
        }
        if let Some(v) = &self.cidr {
            let nets = v
                .resolve(names)?
                .iter()
                .map(|n| parse_net(n))
                .collect::<Result<_, _>>()?;
            return Ok(Op::Cidr(nets));
        }
        Ok(Op::Cmp {
            gt: self.gt,
            gte: self.gte,
            lt: self.lt,
            lte: self.lte,
        })
    }
}

/// `10.0.0.0/8`, or a bare address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("'{s}' is not a network (CIDR such as 10.0.0.0/8) or an address"))
}

impl Cond {
    /// Tests the condition against one event.
    pub fn eval(&self, e: &Eval<'_, '_>) -> bool {
        self.eval_in(e, None)
    }

    /// Tests the condition with `scope` as the element `.paths` read.
    fn eval_in<'x>(&self, e: &'x Eval<'_, '_>, scope: Option<&'x Value>) -> bool {
        match self {
            Cond::All(cs) => cs.iter().all(|c| c.eval_in(e, scope)),
            Cond::Any(cs) => cs.iter().any(|c| c.eval_in(e, scope)),
            Cond::Not(c) => !c.eval_in(e, scope),
            Cond::Each { field, cond } => field
                .elements(e, scope)
                .into_iter()
                .any(|el| cond.eval_in(e, Some(el))),
            Cond::Test { field, op, every } => {
                let mut vals = Vec::new();
                field.values(e, scope, &mut vals);
                let nulls = vals.iter().filter(|v| **v == Val::Null).count();
                if let Op::Null(want) = op {
                    return (nulls > 0) == *want;
                }
                vals.retain(|v| *v != Val::Null);
                if let Op::Exists(want) = op {
                    return vals.is_empty() != *want;
                }
                if vals.is_empty() {
                    return false;
                }
                if *every {
                    vals.iter().all(|v| op.test(v))
                } else {
                    vals.iter().any(|v| op.test(v))
                }
            }
        }
    }

    /// (field, value) pairs of which at least one must hold for this
    /// condition to hold: the rule index's entries for it. `None` when no
    /// such set is known.
    pub fn keys(&self) -> Option<Vec<(Key, String)>> {
        match self {
            // The most selective requirement: the fewest events it lets by.
            Cond::All(cs) => {
                let mut options: Vec<Vec<(Key, String)>> =
                    cs.iter().filter_map(Cond::keys).collect();
                // A verb test and a resource test together: the pairs.
                let only = |k: Key| options.iter().find(|ks| ks.iter().all(|(kk, _)| *kk == k));
                if let (Some(verbs), Some(resources)) = (only(Key::Verb), only(Key::Resource))
                    && verbs.len() * resources.len() <= 64
                {
                    let pairs = verbs
                        .iter()
                        .flat_map(|(_, v)| {
                            resources
                                .iter()
                                .map(move |(_, r)| (Key::VerbResource, format!("{v}\0{r}")))
                        })
                        .collect();
                    options.push(pairs);
                }
                options
                    .into_iter()
                    .min_by_key(|ks| ks.iter().map(|(k, v)| k.share(v)).sum::<u32>())
            }
            Cond::Any(cs) => {
                let mut all = Vec::new();
                for c in cs {
                    all.extend(c.keys()?);
                }
                Some(all)
            }
            Cond::Not(_) | Cond::Each { .. } => None,
            // One value per event: `every` and `any` agree, and no value
            // fails the test.
            Cond::Test {
                field,
                op: Op::In { set, icase: false },
                ..
            } if field.key().is_some() => {
                let key = field.key()?;
                Some(set.iter().map(|v| (key, v.clone())).collect())
            }
            // Only these tests pass on a path without values.
            Cond::Test {
                op: Op::Exists(false) | Op::Null(_),
                ..
            } => None,
            Cond::Test { field, .. } => field.presence().map(|k| vec![k]),
        }
    }

    /// Literals of which at least one must occur in the event's raw text
    /// (ignoring ASCII case) for this condition to hold; `None` when no such
    /// set is known (negations, numbers, regexes, derived fields).
    pub fn needles(&self) -> Option<Vec<String>> {
        match self {
            Cond::All(cs) => cs
                .iter()
                .filter_map(Cond::needles)
                // The most selective requirement: the fewest, longest needles.
                .max_by_key(|n| n.iter().map(String::len).min().unwrap_or(0) * 16 / n.len().max(1)),
            Cond::Any(cs) => {
                let mut all = Vec::new();
                for c in cs {
                    all.extend(c.needles()?);
                }
                Some(all)
            }
            Cond::Not(_) => None,
            // An element must exist for `each` to hold: what its condition
            // needs is needed (element fields are body text, stored verbatim).
            Cond::Each { cond, .. } => cond.needles(),
            Cond::Test {
                field,
                op: Op::Exists(true),
                ..
            } => field.key_needle().and_then(safe_needle).map(|n| vec![n]),
            Cond::Test { field, op, .. } => {
                if !field.in_raw_text() {
                    return None;
                }
                // Case-insensitive tests give no needles: the prefilter
                // matches exactly, which keeps its fast search.
                let literals: Vec<&String> = match op {
                    Op::In { set, icase: false } => set.iter().collect(),
                    Op::Prefix {
                        needles,
                        icase: false,
                    }
                    | Op::Suffix {
                        needles,
                        icase: false,
                    }
                    | Op::Contains {
                        needles,
                        icase: false,
                        ..
                    } => needles.iter().collect(),
                    _ => return None,
                };
                // A number may be written many ways in a raw body (3600,
                // 3.6e3, 3600.0): numbers give no needles.
                if literals.iter().any(|l| l.trim().parse::<f64>().is_ok()) {
                    return None;
                }
                literals.iter().map(|l| safe_needle(l)).collect()
            }
        }
    }
}

/// The longest run of characters that no JSON encoder escapes
/// (`[A-Za-z0-9_.:-]`), at least 3 long: a substring of the value that
/// appears verbatim in the event's JSON text whenever the value does.
fn safe_needle(s: &str) -> Option<String> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || "_.:-".contains(c)))
        .rev()
        .max_by_key(|run| run.len())
        .filter(|run| run.len() >= 3)
        .map(str::to_owned)
}

impl Op {
    fn test(&self, v: &Val<'_>) -> bool {
        match self {
            Op::In { set, icase } => {
                let t = v.text();
                if *icase {
                    set.contains(&t.to_ascii_lowercase())
                } else {
                    set.contains(t.as_ref())
                }
            }
            Op::Prefix { needles, icase } => {
                let t = v.text();
                needles.iter().any(|n| {
                    t.len() >= n.len()
                        && (if *icase {
                            t.as_bytes()[..n.len()].eq_ignore_ascii_case(n.as_bytes())
                        } else {
                            t.starts_with(n.as_str())
                        })
                })
            }
            Op::Suffix { needles, icase } => {
                let t = v.text();
                needles.iter().any(|n| {
                    t.len() >= n.len()
                        && (if *icase {
                            t.as_bytes()[t.len() - n.len()..].eq_ignore_ascii_case(n.as_bytes())
                        } else {
                            t.ends_with(n.as_str())
                        })
                })
            }
            Op::Contains { ac, .. } => ac.is_match(v.text().as_ref()),
            Op::Regex(re) => re.is_match(&v.text()),
            Op::Exists(_) | Op::Null(_) => true,
            Op::Cidr(nets) => v
                .text()
                .trim()
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Op::Cmp { gt, gte, lt, lte } => v.num().is_some_and(|n| {
                gt.is_none_or(|g| n > g)
                    && gte.is_none_or(|g| n >= g)
                    && lt.is_none_or(|l| n < l)
                    && lte.is_none_or(|l| n <= l)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AuditEvent;

    fn cond(yaml: &str) -> Result<Cond, String> {
        let lists = BTreeMap::from([(
            "admins".to_owned(),
            vec!["root".to_owned(), "Alice".to_owned()],
        )]);
        let macros = BTreeMap::from([(
            "exec".to_owned(),
            serde_yaml_ng::from_str::<CondDef>("{field: objectRef.subresource, equals: exec}")
                .unwrap(),
        )]);
        let def: CondDef = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        def.compile(&Names {
            lists: &lists,
            macros: &macros,
        })
    }

    fn holds(yaml: &str, raw: &str) -> bool {
        let ev = AuditEvent::parse(raw).unwrap();
        cond(yaml).unwrap().eval(&Eval::new(&ev))
    }

    const EV: &str = r#"{"auditID":"x","verb":"create","user":{"username":"alice","groups":["dev","system:authenticated"]},"sourceIPs":["10.1.2.3"],"objectRef":{"resource":"pods","subresource":"exec"},"responseStatus":{"code":403},"requestObject":{"spec":{"expirationSeconds":90000,"containers":[{"name":"a"},{"name":"b"}]}}}"#;

    #[test]
    fn operators() {
        assert!(holds("{field: verb, equals: create}", EV));
        assert!(holds("{field: verb, in: [get, create]}", EV));
        assert!(holds(
            "{field: user.username, in_list: admins, icase: true}",
            EV
        ));
        assert!(!holds("{field: user.username, in_list: admins}", EV));
        assert!(holds("{field: user.groups, prefix: 'system:'}", EV));
        assert!(holds(
            "{field: user.username, suffix: [CE], icase: true}",
            EV
        ));
        assert!(holds("{field: objectRef.resource, contains: [od, zz]}", EV));
        assert!(holds(
            "{field: user.username, contains: {list: admins}, icase: true}",
            EV
        ));
        assert!(!holds("{field: user.username, prefix: {list: admins}}", EV));
        assert!(holds("{field: user.username, regex: '^al.ce$'}", EV));
        assert!(holds(
            "{field: impersonatedUser.username, exists: false}",
            EV
        ));
        assert!(holds("{field: sourceIP, cidr: [10.0.0.0/8]}", EV));
        assert!(!holds("{field: sourceIP, cidr: 192.168.0.0/16}", EV));
        assert!(holds("{field: responseStatus.code, gte: 400, lt: 500}", EV));
        assert!(holds("{field: responseStatus.code, equals: 403}", EV));
        assert!(holds(
            "{field: requestObject.spec.expirationSeconds, gt: 86400}",
            EV
        ));
        assert!(holds("{macro: exec}", EV));
        assert!(holds(
            "{all: [{macro: exec}, {not: {field: verb, equals: get}}]}",
            EV
        ));
        assert!(holds(
            "{any: [{field: verb, equals: get}, {field: verb, equals: create}]}",
            EV
        ));
    }

    #[test]
    fn each_tests_fields_of_one_element_together() {
        let role = r#"{"auditID":"r","verb":"create","requestObject":{"rules":[{"resources":["secrets"],"verbs":["watch"]},{"resources":["pods"],"verbs":["get"]}]}}"#;
        let secrets_get = "{each: 'requestObject.rules[]', where: {all: [{field: '.resources', equals: secrets}, {field: '.verbs', in: [get, list]}]}}";
        assert!(
            !holds(secrets_get, role),
            "secrets and get are in different rules"
        );
        let pods_get = "{each: 'requestObject.rules[]', where: {all: [{field: '.resources', equals: pods}, {field: '.verbs', equals: get}]}}";
        assert!(holds(pods_get, role));
        assert_eq!(cond(pods_get).unwrap().needles().map(|n| n.len()), Some(1));
        let pod = r#"{"auditID":"p","verb":"create","requestObject":{"spec":{"containers":[{"image":"a"}],"initContainers":[{"image":"b","securityContext":{"privileged":true}}]}}}"#;
        assert!(holds(
            "{each: 'pod.allContainers[]', where: {all: [{field: .image, equals: b}, {field: .securityContext.privileged, equals: true}]}}",
            pod
        ));
        assert!(!holds(
            "{each: 'pod.allContainers[]', where: {all: [{field: .image, equals: a}, {field: .securityContext.privileged, equals: true}]}}",
            pod
        ));
        assert!(
            cond("{each: verb, where: {field: .x, exists: true}}")
                .unwrap_err()
                .contains("not a path into")
        );
        assert!(
            cond("{each: 'requestObject.rules[]'}")
                .unwrap_err()
                .contains("needs 'where")
        );
    }

    #[test]
    fn explicit_null_is_seen_only_by_null() {
        let patch = r#"{"auditID":"n","verb":"patch","requestObject":{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":null}}}}"#;
        let path = r#"requestObject.metadata.labels[\"pod-security.kubernetes.io/enforce\"]"#;
        assert!(holds(&format!("{{field: \"{path}\", null: true}}"), patch));
        assert!(!holds(
            &format!("{{field: \"{path}\", exists: true}}"),
            patch
        ));
        assert!(!holds(
            &format!("{{field: \"{path}\", equals: 'null'}}"),
            patch
        ));
        assert!(holds(&format!("{{field: \"{path}\", null: false}}"), EV));
    }

    #[test]
    fn any_and_every_value() {
        assert!(holds(
            "{field: 'requestObject.spec.containers[].name', equals: b}",
            EV
        ));
        assert!(!holds(
            "{field: 'requestObject.spec.containers[].name', equals: b, every: true}",
            EV
        ));
        assert!(holds(
            "{field: user.groups, prefix: [d, s], every: true}",
            EV
        ));
    }

    #[test]
    fn errors_are_sentences() {
        for (y, msg) in [
            ("{field: verbz, equals: x}", "unknown field 'verbz'"),
            ("{field: verb}", "no operator"),
            (
                "{field: verb, equals: a, prefix: b}",
                "more than one operator",
            ),
            ("{field: verb, in_list: nope}", "unknown list 'nope'"),
            ("{macro: nope}", "unknown macro 'nope'"),
            ("{field: verb, regex: '('}", "bad regex"),
            ("{field: sourceIP, cidr: 10.0.0.0/33}", "is not a network"),
            ("{all: [], field: verb}", "more than one of"),
            ("{}", "needs one of"),
            ("{field: verb, equalz: x}", "unknown field `equalz`"),
        ] {
            let e = cond(y).unwrap_err();
            assert!(e.contains(msg), "{y}: {e}");
        }
    }

    #[test]
    fn needles_for_the_prefilter() {
        let n = |y: &str| cond(y).unwrap().needles();
        assert_eq!(
            n("{field: objectRef.subresource, in: [exec]}"),
            Some(vec!["exec".into()])
        );
        assert_eq!(n("{field: verb, regex: x}"), None);
        assert_eq!(n("{not: {field: verb, equals: get}}"), None);
        assert_eq!(n("{field: uri.command, contains: [bash]}"), None);
        // The most selective conjunct wins.
        assert_eq!(
            n(
                "{all: [{field: verb, in: [get, create]}, {field: objectRef.subresource, equals: portforward}]}"
            ),
            Some(vec!["portforward".into()])
        );
        // A disjunction needs every branch to have needles.
        assert_eq!(
            n("{any: [{field: verb, equals: create}, {field: verb, regex: x}]}"),
            None
        );
        // Characters a JSON encoder may escape are left out.
        assert_eq!(
            n("{field: requestURI, contains: '/dev/tcp'}"),
            Some(vec!["dev".into()])
        );
        assert_eq!(n("{field: verb, equals: '*'}"), None);
        assert_eq!(n("{field: verb, equals: GET, icase: true}"), None);
        assert_eq!(
            n("{field: requestObject.spec.expirationSeconds, equals: 3600}"),
            None
        );
        assert_eq!(
            n("{field: impersonatedUser.username, exists: true}"),
            Some(vec!["impersonatedUser".into()])
        );
        assert_eq!(n("{field: impersonatedUser.username, exists: false}"), None);
    }
}
