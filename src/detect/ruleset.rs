//! Rule files in, one compiled [`RuleSet`] out.
//!
//! Files are read in order: the built-in catalogue (compiled into the
//! binary from `rules/*.yaml`), then each user directory's `*.yaml` /
//! `*.yml` files in name order. Later files extend or replace what earlier
//! ones defined:
//!
//! ```yaml
//! lists:
//!   admins: [alice]                 # define or replace a list
//!   allowed_k8s_users: {append: [ci-bot]}   # extend one
//! macros:
//!   exec: {field: objectRef.subresource, equals: exec}
//! rules:
//!   - id: pod-exec                  # same id as a built-in: replaces it
//!     ...
//! disable: [k8s-deployment-created] # turn rules off
//! enable: [create-disallowed-pod]   # turn on rules shipped disabled
//! ```
//!
//! Every problem in every file is collected before failing, each with its
//! file, line and a plain sentence ([`RuleError`]). Compilation happens once;
//! the result is immutable and shared.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::condition::{Cond, CondDef, Names};
use super::field::{Eval, Field, Val};
use super::prefilter::{Candidates, Prefilter, Requirement};
use crate::event::{AuditEvent, Envelope};
use crate::finding::{Evidence, Finding, RuleMeta, Severity};

/// One rule file's text and where it came from.
#[derive(Debug, Clone)]
pub struct RuleSource {
    /// Shown in messages: a path, or `rules/exec.yaml` for built-ins.
    pub name: String,
    pub text: String,
    /// Where relative test-event paths are resolved; none for built-ins.
    pub dir: Option<PathBuf>,
}

/// A problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub rule: Option<String>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(r) = &self.rule {
            write!(f, "rule '{r}': ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found while loading rules.
#[derive(Debug, thiserror::Error)]
pub struct LoadError(pub Vec<RuleError>);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    lists: BTreeMap<String, ListDef>,
    #[serde(default)]
    macros: BTreeMap<String, CondDef>,
    #[serde(default)]
    rules: Vec<RuleDef>,
    #[serde(default)]
    disable: Vec<String>,
    #[serde(default)]
    enable: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListDef {
    Items(Vec<String>),
    Append { append: Vec<String> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDef {
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    severity: Severity,
    category: String,
    #[serde(default)]
    mitre: Vec<String>,
    #[serde(default)]
    references: BTreeMap<String, String>,
    when: CondDef,
    #[serde(default)]
    unless: Vec<CondDef>,
    #[serde(default)]
    escalate: Vec<EscalateDef>,
    summary: String,
    #[serde(default)]
    details: BTreeMap<String, String>,
    #[serde(default)]
    tests: Vec<TestDef>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalateDef {
    severity: Severity,
    when: CondDef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestDef {
    /// An inline event (a mapping), inline JSON text, or a path to a file
    /// of events relative to the rule file.
    event: serde_yaml_ng::Value,
    expect: Expect,
    /// The severity the finding must have (checks escalation).
    #[serde(default)]
    severity: Option<Severity>,
}

/// What an inline test expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Match,
    NoMatch,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub meta: RuleMeta,
    pub description: String,
    pub enabled: bool,
    pub file: String,
    pub line: usize,
    when: Cond,
    unless: Vec<Cond>,
    escalate: Vec<(Severity, Cond)>,
    summary: Template,
    details: Vec<(String, Field)>,
    pub tests: Vec<RuleTest>,
}

/// One inline test of a rule, with its event as JSON text.
#[derive(Debug, Clone)]
pub struct RuleTest {
    pub events: Vec<String>,
    pub expect: Expect,
    pub severity: Option<Severity>,
    /// What the test is, for messages (a path or "inline event #N").
    pub label: String,
}

/// What running the rules learned besides findings.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checked {
    /// A rule needed the request or response body and could not read it.
    pub body_unreadable: bool,
}

/// The compiled rule set: every rule (enabled or not) and the prefilter
/// over the enabled ones.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Indexes of enabled rules into `rules`.
    active: Vec<usize>,
    prefilter: Prefilter,
    /// Every list, as finally defined (built-in, appended, replaced).
    lists: BTreeMap<String, Vec<String>>,
}

impl RuleSet {
    /// Loads the built-in catalogue, then the given rule directories or files.
    pub fn load(extra: &[PathBuf]) -> Result<RuleSet, LoadError> {
        RuleSet::load_with(extra, Vec::new())
    }

    /// Like [`RuleSet::load`], then `more` (rule text made from the
    /// configuration, e.g. its `detection.disable`).
    pub fn load_with(extra: &[PathBuf], more: Vec<RuleSource>) -> Result<RuleSet, LoadError> {
        let mut sources = super::builtin_sources();
        let mut errors = Vec::new();
        for path in extra {
            match read_rule_path(path) {
                Ok(mut s) => sources.append(&mut s),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(LoadError(errors));
        }
        sources.extend(more);
        RuleSet::compile(&sources)
    }

    /// Compiles rule files, given in order.
    pub fn compile(sources: &[RuleSource]) -> Result<RuleSet, LoadError> {
        let mut errors = Vec::new();
        let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut macros: BTreeMap<String, CondDef> = BTreeMap::new();
        let mut defs: Vec<(RuleDef, usize, usize)> = Vec::new(); // def, source, line
        let mut by_id: HashMap<String, usize> = HashMap::new();
        let mut toggles: Vec<(String, bool, usize, usize)> = Vec::new();

        for (si, src) in sources.iter().enumerate() {
            let file: RuleFile = match serde_yaml_ng::from_str(&src.text) {
                Ok(f) => f,
                Err(e) => {
                    let line = e.location().map_or(1, |l| l.line());
                    errors.push(RuleError {
                        file: src.name.clone(),
                        line,
                        rule: rule_at_line(&src.text, line),
                        message: clean_yaml_error(&e),
                    });
                    continue;
                }
            };
            for (name, def) in file.lists {
                match def {
                    ListDef::Items(items) => {
                        lists.insert(name, items);
                    }
                    ListDef::Append { append } => lists.entry(name).or_default().extend(append),
                }
            }
            macros.extend(file.macros);
            let mut seen_here = HashMap::new();
            let mut occurrences: HashMap<String, usize> = HashMap::new();
            for def in file.rules {
                let nth = occurrences.entry(def.id.clone()).or_default();
                let line = line_of_id(&src.text, &def.id, *nth);
                *nth += 1;
                if let Some(first) = seen_here.insert(def.id.clone(), line) {
                    errors.push(RuleError {
                        file: src.name.clone(),
                        line,
                        rule: Some(def.id.clone()),
                        message: format!("duplicate id (first defined at line {first}); to replace a rule, define it in a later file"),
                    });
                    continue;
                }
                match by_id.get(&def.id) {
                    Some(&i) => defs[i] = (def, si, line),
                    None => {
                        by_id.insert(def.id.clone(), defs.len());
                        defs.push((def, si, line));
                    }
                }
            }
            for (ids, on) in [(file.disable, false), (file.enable, true)] {
                for id in ids {
                    let line = line_of_word(&src.text, &id);
                    toggles.push((id, on, si, line));
                }
            }
        }
        for (id, on, si, line) in toggles {
            match by_id.get(&id) {
                Some(&i) => defs[i].0.enabled = on,
                None => errors.push(RuleError {
                    file: sources[si].name.clone(),
                    line,
                    rule: None,
                    message: format!(
                        "{} names unknown rule '{id}'",
                        if on { "enable" } else { "disable" }
                    ),
                }),
            }
        }

        let names = Names {
            lists: &lists,
            macros: &macros,
        };
        let mut rules = Vec::new();
        for (def, si, line) in defs {
            let src = &sources[si];
            match compile_rule(def, src, line, &names) {
                Ok(r) => rules.push(r),
                Err(mut es) => errors.append(&mut es),
            }
        }
        if !errors.is_empty() {
            return Err(LoadError(errors));
        }
        let active: Vec<usize> = (0..rules.len()).filter(|&i| rules[i].enabled).collect();
        let prefilter = Prefilter::new(
            active
                .iter()
                .map(|&i| Requirement {
                    keys: rules[i].when.keys(),
                    needles: rules[i].when.needles(),
                })
                .collect(),
        );
        Ok(RuleSet {
            rules,
            active,
            prefilter,
            lists,
        })
    }

    /// The items of list `name` (empty when there is none): the stateful
    /// detectors honour the exceptions users write for the rules they refine.
    pub fn list(&self, name: &str) -> &[String] {
        self.lists.get(name).map_or(&[], |l| &l[..])
    }

    /// Every rule, enabled or not, in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Runs every enabled rule on `ev`; calls `found` with each match.
    pub fn check(&self, ev: &AuditEvent<'_>, found: &mut dyn FnMut(&Rule, Finding)) -> Checked {
        if !ev.carries_outcome() {
            return Checked::default();
        }
        // GKE events are built from a LogEntry: some values (a 403 read
        // from `granted: false`) are not in its text, so every rule runs.
        let synthesized = matches!(ev.origin.envelope, Envelope::Gke | Envelope::GkePubSub);
        let candidates = if synthesized {
            Candidates::everything()
        } else {
            self.prefilter.candidates(ev)
        };
        let e = Eval::new(ev);
        for (k, &i) in self.active.iter().enumerate() {
            if !candidates.get(k) {
                continue;
            }
            let rule = &self.rules[i];
            if let Some(f) = rule.evaluate(&e) {
                found(rule, f);
            }
        }
        Checked {
            body_unreadable: e.body_unreadable(),
        }
    }
}

impl RuleSet {
    /// `check` without the prefilter: every enabled rule is evaluated. The
    /// two must agree (a test holds them to it).
    pub fn check_unfiltered(&self, ev: &AuditEvent<'_>, found: &mut dyn FnMut(&Rule, Finding)) {
        let e = Eval::new(ev);
        for &i in &self.active {
            let rule = &self.rules[i];
            if let Some(f) = rule.evaluate(&e) {
                found(rule, f);
            }
        }
    }
}

impl Rule {
    /// The summary and details of a finding, read from `view`.
    fn render(&self, view: &Eval<'_, '_>) -> (String, serde_json::Value) {
        let summary = self.summary.render(view);
        let mut details = serde_json::Map::new();
        for (name, field) in &self.details {
            let mut vals = Vec::new();
            field.values(view, None, &mut vals);
            let v = if field.is_list() {
                serde_json::Value::Array(
                    vals.iter()
                        .filter(|v| **v != Val::Null)
                        .map(Val::to_json)
                        .collect(),
                )
            } else {
                match vals.iter().find(|v| **v != Val::Null) {
                    Some(v) => v.to_json(),
                    None => continue,
                }
            };
            details.insert(name.clone(), v);
        }
        (summary, serde_json::Value::Object(details))
    }

    /// The finding this rule makes of an event, if it matches.
    pub fn evaluate(&self, e: &Eval<'_, '_>) -> Option<Finding> {
        if !e.ev.carries_outcome() || !self.when.eval(e) || self.unless.iter().any(|c| c.eval(e)) {
            return None;
        }
        let severity = self
            .escalate
            .iter()
            .filter(|(_, c)| c.eval(e))
            .map(|(s, _)| *s)
            .fold(self.meta.severity, Severity::max);
        // What a finding says is read from the redacted event, so that no
        // secret redacted from the evidence is repeated in the summary or
        // details (the conditions above saw the real values).
        let evidence = Evidence::of(e.ev);
        let (summary, details) = match evidence.event(e.ev) {
            Some(red) => self.render(&Eval::new(&red)),
            None => self.render(e),
        };
        Some(evidence.finding(&self.meta, e.ev, severity, summary, details))
    }
}

fn compile_rule(
    def: RuleDef,
    src: &RuleSource,
    line: usize,
    names: &Names<'_>,
) -> Result<Rule, Vec<RuleError>> {
    let mut errors = Vec::new();
    let err = |message: String| RuleError {
        file: src.name.clone(),
        line,
        rule: Some(def.id.clone()),
        message,
    };
    if def.id.is_empty()
        || !def
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        errors.push(err(format!(
            "id {:?} must be letters, digits, '-' and '_'",
            def.id
        )));
    }
    let mut compile = |what: &str, c: &CondDef| match c.compile(names) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(err(format!("{what}: {e}")));
            None
        }
    };
    let when = compile("when", &def.when);
    let unless: Vec<Option<Cond>> = def.unless.iter().map(|c| compile("unless", c)).collect();
    let escalate: Vec<Option<(Severity, Cond)>> = def
        .escalate
        .iter()
        .map(|x| compile("escalate", &x.when).map(|c| (x.severity, c)))
        .collect();
    let summary = Template::parse(&def.summary).map_err(|e| err(format!("summary: {e}")));
    let details: Vec<Result<(String, Field), RuleError>> = def
        .details
        .iter()
        .map(|(k, v)| {
            Field::parse(v)
                .map(|f| (k.clone(), f))
                .map_err(|e| err(format!("details.{k}: {e}")))
        })
        .collect();
    let mut tests = Vec::new();
    for (n, t) in def.tests.iter().enumerate() {
        match test_events(&t.event, src) {
            Ok((events, label)) => tests.push(RuleTest {
                events,
                expect: t.expect,
                severity: t.severity,
                label: label.unwrap_or_else(|| format!("inline event #{}", n + 1)),
            }),
            Err(e) => errors.push(err(format!("tests[{n}]: {e}"))),
        }
    }
    let summary = match summary {
        Ok(s) => Some(s),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let mut ok_details = Vec::new();
    for d in details {
        match d {
            Ok(d) => ok_details.push(d),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(when), Some(summary)) = (when, summary) else {
        return Err(errors);
    };
    Ok(Rule {
        meta: RuleMeta {
            id: def.id,
            title: def.title,
            severity: def.severity,
            category: def.category,
            mitre: def.mitre,
            references: def.references,
        },
        description: def.description,
        enabled: def.enabled,
        file: src.name.clone(),
        line,
        when,
        unless: unless.into_iter().flatten().collect(),
        escalate: escalate.into_iter().flatten().collect(),
        summary,
        details: ok_details,
        tests,
    })
}

/// The events of an inline test: a mapping, JSON text, or a file path.
fn test_events(
    v: &serde_yaml_ng::Value,
    src: &RuleSource,
) -> Result<(Vec<String>, Option<String>), String> {
    match v {
        serde_yaml_ng::Value::String(s) if s.trim_start().starts_with('{') => {
            Ok((vec![s.clone()], None))
        }
        serde_yaml_ng::Value::String(path) => {
            let dir = src.dir.as_ref().ok_or_else(|| {
                format!("built-in rules must inline their test events (got path '{path}')")
            })?;
            let full = dir.join(path);
            let text = std::fs::read_to_string(&full)
                .map_err(|e| format!("cannot read test event '{}': {e}", full.display()))?;
            let events = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect();
            Ok((events, Some(path.clone())))
        }
        serde_yaml_ng::Value::Mapping(_) => serde_json::to_string(v)
            .map(|s| (vec![s], None))
            .map_err(|e| format!("the test event cannot be written as JSON: {e}")),
        _ => Err("'event' must be a mapping, JSON text or a file path".into()),
    }
}

fn read_rule_path(path: &Path) -> Result<Vec<RuleSource>, RuleError> {
    let err = |message: String| RuleError {
        file: path.display().to_string(),
        line: 1,
        rule: None,
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let files = if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| err(format!("cannot read directory: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).map_err(|e| RuleError {
                file: f.display().to_string(),
                line: 1,
                rule: None,
                message: format!("cannot read: {e}"),
            })?;
            Ok(RuleSource {
                name: f.display().to_string(),
                dir: f.parent().map(Path::to_path_buf),
                text,
            })
        })
        .collect()
}

/// serde_yaml's message without the trailing position (we print our own).
fn clean_yaml_error(e: &serde_yaml_ng::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// The line of the `nth` (0-based) `id: <id>` in a rule file (1 when not
/// found).
fn line_of_id(text: &str, id: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start().trim_start_matches("- ").trim_start();
            l.strip_prefix("id:")
                .map(|v| v.trim().trim_matches(['"', '\'']))
                .is_some_and(|v| v == id)
        })
        .nth(nth)
        .map_or(1, |(i, _)| i + 1)
}

/// The id of the rule whose block contains `line`, if any.
fn rule_at_line(text: &str, line: usize) -> Option<String> {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("- ").trim_start();
            l.strip_prefix("id:")
                .map(|v| v.trim().trim_matches(['"', '\'']).to_owned())
        })
        .last()
}

/// The first line holding `word` (for disable/enable entries).
fn line_of_word(text: &str, word: &str) -> usize {
    text.lines()
        .position(|l| l.contains(word))
        .map_or(1, |i| i + 1)
}

/// A summary template: text with `{field}` and `{field|shell}` holes.
#[derive(Debug)]
struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Field { field: Field, shell: bool },
}

impl Template {
    fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
            if after.as_bytes().first() == Some(&c) {
                text.push(c as char);
                rest = &after[1..];
                continue;
            }
            if c == b'}' {
                return Err("unmatched '}' (write '}}' for a literal brace)".into());
            }
            let end = after
                .find('}')
                .ok_or("unclosed '{' (write '{{' for a literal brace)")?;
            let inner = after[..end].trim();
            let (path, shell) = match inner.strip_suffix("|shell") {
                Some(p) => (p, true),
                None => (inner, false),
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Field {
                field: Field::parse(path)?,
                shell,
            });
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    fn render(&self, e: &Eval<'_, '_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { field, shell } => {
                    let mut vals = Vec::new();
                    field.values(e, None, &mut vals);
                    let texts: Vec<String> = vals
                        .iter()
                        .filter(|v| **v != Val::Null)
                        .map(|v| v.text().into_owned())
                        .collect();
                    if texts.is_empty() {
                        out.push('-');
                    } else if *shell {
                        out.push_str(&shell_join(&texts));
                    } else {
                        out.push_str(&texts.join(", "));
                    }
                }
            }
        }
        out
    }
}

/// Joins arguments for a human: those with spaces or quotes are quoted.
fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The result of one inline test.
#[derive(Debug)]
pub struct TestOutcome<'r> {
    pub rule: &'r Rule,
    pub label: String,
    /// None when it passed; otherwise what went wrong.
    pub failure: Option<String>,
}

impl RuleSet {
    /// Runs every rule's inline tests (disabled rules too).
    pub fn run_tests(&self) -> Vec<TestOutcome<'_>> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let active = self.active.iter().position(|&a| a == i);
            for t in &rule.tests {
                let failure = run_test(rule, t).or_else(|| {
                    // A match the prefilter would hide is a broken rule:
                    // `check` would never see it.
                    let k = active?;
                    t.events.iter().find_map(|text| {
                        let ev = AuditEvent::parse(text).ok()?;
                        rule.evaluate(&Eval::new(&ev))?;
                        (!self.prefilter.candidates(&ev).get(k)).then(|| {
                            "the rule matches, but the prefilter dismisses the event: a literal or field value it is filed under is missing from the event".to_owned()
                        })
                    })
                });
                out.push(TestOutcome {
                    rule,
                    label: t.label.clone(),
                    failure,
                });
            }
        }
        out
    }
}

fn run_test(rule: &Rule, t: &RuleTest) -> Option<String> {
    let mut matched: Option<Severity> = None;
    for text in &t.events {
        let ev = match AuditEvent::parse(text) {
            Ok(ev) => ev,
            Err(e) => return Some(format!("the test event is not an audit event: {e}")),
        };
        if let Err(e) = ev.validate() {
            return Some(format!("the test event is not an audit event: {e}"));
        }
        if let Some(f) = rule.evaluate(&Eval::new(&ev)) {
            matched = matched.max(Some(f.severity));
        }
    }
    match (t.expect, matched) {
        (Expect::Match, None) => Some("expected a match, got none".into()),
        (Expect::NoMatch, Some(_)) => Some("expected no match, but the rule matched".into()),
        (Expect::Match, Some(s)) if t.severity.is_some_and(|want| want != s) => Some(format!(
            "matched with severity {s}, expected {}",
            t.severity.map_or("", |s| s.as_str())
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, text: &str) -> RuleSource {
        RuleSource {
            name: name.into(),
            text: text.into(),
            dir: None,
        }
    }

    const BASE: &str = r#"
lists:
  shells: [sh, bash]
macros:
  exec: {field: objectRef.subresource, equals: exec}
rules:
  - id: t-exec
    title: Exec
    severity: medium
    category: exec
    when: {all: [{macro: exec}, {field: verb, in: [create, get]}]}
    unless:
      - {field: user.username, equals: oncall}
    escalate:
      - {severity: high, when: {field: objectRef.namespace, equals: kube-system}}
      - {severity: critical, when: {field: uri.command, in_list: shells}}
    summary: "{user.username} ran {uri.command|shell} in {objectRef.namespace}/{objectRef.name}"
    details: {command: uri.command, container: "uri.container|first"}
    tests:
      - event: {auditID: a, verb: create, objectRef: {subresource: exec, namespace: kube-system}}
        expect: match
        severity: high
      - event: '{"auditID":"b","verb":"create","objectRef":{"subresource":"exec"},"user":{"username":"oncall"}}'
        expect: no_match
"#;

    fn exec_event(ns: &str, cmd: &str, user: &str) -> String {
        format!(
            r#"{{"auditID":"x","stage":"ResponseStarted","verb":"create","requestURI":"/api/v1/namespaces/{ns}/pods/p/exec?command={cmd}&command=-c&command=id+-u&container=app","user":{{"username":"{user}"}},"objectRef":{{"resource":"pods","subresource":"exec","namespace":"{ns}","name":"p"}}}}"#
        )
    }

    fn run(set: &RuleSet, raw: &str) -> Vec<Finding> {
        let ev = AuditEvent::parse(raw).unwrap();
        let mut out = Vec::new();
        set.check(&ev, &mut |_, f| out.push(f));
        out
    }

    #[test]
    fn compiles_matches_escalates_and_renders() {
        let set = RuleSet::compile(&[src("base.yaml", BASE)]).unwrap();
        let f = run(&set, &exec_event("prod", "python", "alice"));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Medium);
        assert_eq!(f[0].summary, "alice ran python -c 'id -u' in prod/p");
        assert_eq!(
            f[0].details,
            serde_json::json!({"command": ["python", "-c", "id -u"], "container": "app"})
        );
        assert_eq!(
            run(&set, &exec_event("kube-system", "python", "alice"))[0].severity,
            Severity::High
        );
        assert_eq!(
            run(&set, &exec_event("prod", "bash", "alice"))[0].severity,
            Severity::Critical
        );
        assert!(run(&set, &exec_event("prod", "bash", "oncall")).is_empty());
        assert!(
            set.run_tests().iter().all(|t| t.failure.is_none()),
            "{:?}",
            set.run_tests()
        );
    }

    #[test]
    fn later_files_override_extend_and_disable() {
        let user = r#"
lists:
  shells: {append: [python]}
rules:
  - id: t-exec
    title: Exec (ours)
    severity: low
    category: exec
    when: {macro: exec}
    escalate: [{severity: critical, when: {field: uri.command, in_list: shells}}]
    summary: "exec by {user.username}"
"#;
        let set = RuleSet::compile(&[src("base.yaml", BASE), src("user.yaml", user)]).unwrap();
        assert_eq!(set.rules().len(), 1);
        let f = run(&set, &exec_event("prod", "python", "oncall"));
        assert_eq!(
            (f[0].rule_title.as_str(), f[0].severity),
            ("Exec (ours)", Severity::Critical)
        );

        let off = "disable: [t-exec]\n";
        let set = RuleSet::compile(&[src("base.yaml", BASE), src("off.yaml", off)]).unwrap();
        assert!(run(&set, &exec_event("prod", "python", "alice")).is_empty());
        let on = "enable: [t-exec]\n";
        let set = RuleSet::compile(&[
            src("base.yaml", BASE),
            src("off.yaml", off),
            src("on.yaml", on),
        ])
        .unwrap();
        assert_eq!(run(&set, &exec_event("prod", "python", "alice")).len(), 1);
    }

    #[test]
    fn every_problem_is_reported_with_file_and_line() {
        let broken = r#"rules:
  - id: one
    title: One
    severity: urgent
    category: x
    when: {field: verb, equals: get}
    summary: s
"#;
        let err = RuleSet::compile(&[src("broken.yaml", broken)]).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].line, 4, "{err}");
        assert!(
            err.to_string().contains("unknown variant `urgent`"),
            "{err}"
        );

        let bad = r#"rules:
  - id: two
    title: Two
    severity: low
    category: x
    when: {field: verbz, equals: get}
    unless: [{field: verb, in_list: nope}]
    summary: "{user.nam}"
  - id: three
    title: Three
    severity: low
    category: x
    when: {field: user.username, regex: "("}
    summary: s
  - id: three
    title: Three again
    severity: low
    category: x
    when: {field: verb, equals: get}
    summary: s
disable: [four]
"#;
        let err = RuleSet::compile(&[src("bad.yaml", bad)]).unwrap_err();
        let msgs: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        let want = [
            "bad.yaml:15: rule 'three': duplicate id (first defined at line 9)",
            "bad.yaml:21: disable names unknown rule 'four'",
            "bad.yaml:2: rule 'two': when: unknown field 'verbz'",
            "bad.yaml:2: rule 'two': unless: field 'verb': unknown list 'nope'",
            "bad.yaml:2: rule 'two': summary: unknown user field 'nam'",
            "bad.yaml:9: rule 'three': when: field 'user.username': bad regex",
        ];
        for w in want {
            assert!(
                msgs.iter().any(|m| m.starts_with(w)),
                "missing {w:?} in {msgs:#?}"
            );
        }

        let typo = "rules:\n  - id: five\n    title: Five\n    severity: low\n    category: x\n    when: {field: verb, equals: get}\n    summary: s\n    sumary: t\n";
        let err = RuleSet::compile(&[src("typo.yaml", typo)]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("typo.yaml:8: rule 'five': rules[0]: unknown field `sumary`"),
            "{err}"
        );
    }

    #[test]
    fn failing_inline_tests_are_reported() {
        let text = r#"rules:
  - id: t
    title: T
    severity: low
    category: x
    when: {field: verb, equals: delete}
    summary: s
    tests:
      - {event: {auditID: a, verb: get}, expect: match}
      - {event: {auditID: a, verb: delete}, expect: no_match}
      - {event: {auditID: a, verb: delete}, expect: match, severity: high}
      - {event: {auditID: a, verb: delete}, expect: match}
"#;
        let set = RuleSet::compile(&[src("t.yaml", text)]).unwrap();
        let failures: Vec<_> = set.run_tests().into_iter().map(|t| t.failure).collect();
        assert_eq!(
            failures.iter().filter(|f| f.is_some()).count(),
            3,
            "{failures:?}"
        );
        assert!(failures[3].is_none());
    }

    #[test]
    fn templates() {
        assert!(Template::parse("a {{literal}} b").is_ok());
        assert!(Template::parse("a {verb").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a } b").unwrap_err().contains("unmatched"));
        assert!(Template::parse("{nope}").is_err());
    }

    /// The index keeps routine traffic away from the rules: the built-in
    /// catalogue files every rule but one under some field value, and the
    /// commonest requests of a cluster (a kubelet's get, a controller's
    /// watch, a lease renewal) meet only that one.
    #[test]
    fn routine_requests_meet_almost_no_rules() {
        let set = RuleSet::load(&[]).unwrap();
        let unindexed: Vec<&str> = set
            .active
            .iter()
            .map(|&i| &set.rules[i])
            .filter(|r| r.when.keys().is_none())
            .map(|r| r.meta.id.as_str())
            .collect();
        assert_eq!(unindexed, ["disallowed-k8s-user"]);
        let routine = [
            r#"{"auditID":"a","stage":"ResponseComplete","verb":"get","requestURI":"/api/v1/nodes/n1","user":{"username":"system:node:n1","groups":["system:nodes"]},"objectRef":{"resource":"nodes","name":"n1","apiVersion":"v1"},"responseStatus":{"code":200},"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#,
            r#"{"auditID":"b","stage":"ResponseStarted","verb":"watch","requestURI":"/api/v1/namespaces/app/configmaps?watch=true","user":{"username":"system:serviceaccount:app:operator","extra":{"authentication.kubernetes.io/credential-id":["JTI=1"]}},"objectRef":{"resource":"configmaps","namespace":"app","apiVersion":"v1"},"responseStatus":{"code":200}}"#,
            r#"{"auditID":"c","stage":"ResponseComplete","verb":"update","requestURI":"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1","user":{"username":"system:node:n1"},"objectRef":{"resource":"leases","namespace":"kube-node-lease","name":"n1","apiGroup":"coordination.k8s.io"},"responseStatus":{"code":200}}"#,
        ];
        for raw in routine {
            let ev = AuditEvent::parse(raw).unwrap();
            let c = set.prefilter.candidates(&ev);
            let met: Vec<&str> = (0..set.active.len())
                .filter(|&k| c.get(k))
                .map(|k| set.rules[set.active[k]].meta.id.as_str())
                .collect();
            assert_eq!(met, ["disallowed-k8s-user"], "{raw}");
        }
    }
}
