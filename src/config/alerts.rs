//! The `alerts` section: where findings are sent (webhook, Slack and email
//! sinks through the durable outbox), and how: routing, dedup, grouping,
//! throttles, templates, the heartbeat.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::Secret;
use crate::finding::{Finding, Severity};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Links to findings in alerts start here (the console, later).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The same rule + cluster + identity + target within this window
    /// alerts once; the repeats are counted on that alert, not sent.
    #[serde(default, deserialize_with = "super::opt_duration")]
    pub dedup_window: Option<i64>,
    /// New alerts wait this long; findings of one rule that arrive within
    /// it go out as one message listing them.
    #[serde(default, deserialize_with = "super::opt_duration")]
    pub group_window: Option<i64>,
    /// A dead man's switch: `sink` gets a heartbeat every `interval`, so
    /// that kaudit itself stopping is noticed where alerts are read.
    #[serde(default)]
    pub heartbeat: Option<Heartbeat>,
    /// Age (since the finding was stored) after which a failing alert is
    /// dead-lettered.
    #[serde(default = "default_max_age", deserialize_with = "super::duration_de")]
    pub max_age: i64,
    /// Attempts before an alert is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

fn default_attempts() -> u32 {
    12
}

fn default_max_age() -> i64 {
    7 * 86_400
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub sink: String,
    #[serde(deserialize_with = "super::duration_de")]
    pub interval: i64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            base_url: None,
            dedup_window: None,
            group_window: None,
            max_attempts: default_attempts(),
            max_age: default_max_age(),
            heartbeat: None,
            sinks: Vec::new(),
        }
    }
}

/// One destination of alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub name: String,
    /// `webhook`, `slack` or `email`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub min_severity: Option<Severity>,
    #[serde(default)]
    pub include: RouteFilter,
    #[serde(default)]
    pub exclude: RouteFilter,
    // webhook
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub hmac_secret: Option<Secret>,
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    #[serde(default)]
    pub hmac_secret_file: Option<PathBuf>,
    /// A client certificate and key (PEM) for receivers that want mTLS,
    /// and a CA (PEM) to trust for the receiver's certificate.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Messages per minute at most; the surplus goes out as one summary
    /// message when the minute is over (never dropped).
    #[serde(default)]
    pub throttle_per_minute: Option<u32>,
    /// Email subject / Slack title, with `{field}`s of the finding
    /// (`{rule_id}`, `{rule_title}`, `{severity}`, `{SEVERITY}`,
    /// `{cluster}`, `{namespace}`, `{name}`, `{user}`, `{summary}`, ...).
    #[serde(default)]
    pub subject_template: Option<String>,
    /// The summary line of Slack and email messages, likewise.
    #[serde(default)]
    pub summary_template: Option<String>,
    /// Extra request headers (values are not secret: use hmac for that).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    // slack
    #[serde(default)]
    pub webhook_url: Option<Secret>,
    #[serde(default)]
    pub webhook_url_env: Option<String>,
    #[serde(default)]
    pub webhook_url_file: Option<PathBuf>,
    #[serde(default)]
    pub bot_token: Option<Secret>,
    #[serde(default)]
    pub bot_token_env: Option<String>,
    #[serde(default)]
    pub bot_token_file: Option<PathBuf>,
    #[serde(default)]
    pub channel: Option<String>,
    /// chat.postMessage's address (a proxy, tests).
    #[serde(default)]
    pub api_url: Option<String>,
    // email
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
}

/// An SMTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Trust this CA (PEM) for the server's certificate, besides the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_smtp_tls() -> String {
    "starttls".to_owned()
}

fn default_timeout() -> u64 {
    10_000
}

/// Which findings a sink takes: empty lists match everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFilter {
    #[serde(default)]
    pub rules: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub clusters: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

impl RouteFilter {
    fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.categories.is_empty()
            && self.clusters.is_empty()
            && self.namespaces.is_empty()
    }

    /// Every non-empty list names the finding's value.
    fn matches(&self, f: &Finding) -> bool {
        let has = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        // Cluster names are lower-cased everywhere else; here too.
        let has_ci = |list: &[String], v: &str| {
            list.is_empty() || list.iter().any(|x| x.eq_ignore_ascii_case(v))
        };
        has(&self.rules, &f.rule_id)
            && has(&self.categories, &f.category)
            && has_ci(&self.clusters, &f.cluster)
            && has(&self.namespaces, f.namespace.as_deref().unwrap_or(""))
    }
}

impl SinkConfig {
    /// Whether this sink takes `f`.
    pub fn routes(&self, f: &Finding) -> bool {
        self.min_severity.is_none_or(|min| f.severity >= min)
            && self.include.matches(f)
            && (self.exclude.is_empty() || !self.exclude.matches(f))
    }
}

impl AlertsConfig {
    /// The sinks `f` goes to.
    pub fn route(&self, f: &Finding) -> Vec<String> {
        self.sinks
            .iter()
            .filter(|s| s.routes(f))
            .map(|s| s.name.clone())
            .collect()
    }

    pub(super) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.sinks.iter().enumerate() {
            if !names.insert(&s.name) {
                problems.push(format!(
                    "alerts.sinks[{i}]: the name {:?} is used twice",
                    s.name
                ));
            }
            match s.kind.as_str() {
                "webhook" => {
                    let ways = usize::from(s.url.is_some())
                        + usize::from(s.url_env.is_some())
                        + usize::from(s.url_file.is_some());
                    if ways != 1 {
                        problems.push(format!(
                            "alerts.sinks[{i}] ({}): a webhook sink needs one of url, url_env, url_file",
                            s.name
                        ));
                    }
                }
                "slack" => {
                    let hook = usize::from(s.webhook_url.is_some())
                        + usize::from(s.webhook_url_env.is_some())
                        + usize::from(s.webhook_url_file.is_some());
                    let bot = usize::from(s.bot_token.is_some())
                        + usize::from(s.bot_token_env.is_some())
                        + usize::from(s.bot_token_file.is_some());
                    if !((hook == 1 && bot == 0) || (hook == 0 && bot == 1 && s.channel.is_some()))
                    {
                        problems.push(format!(
                            "alerts.sinks[{i}] ({}): a slack sink needs webhook_url (or _env, _file), or bot_token (or _env, _file) with channel",
                            s.name
                        ));
                    }
                }
                "email" => {
                    if s.smtp.is_none() || s.from.is_none() || s.to.is_empty() {
                        problems.push(format!(
                            "alerts.sinks[{i}] ({}): an email sink needs smtp, from and to",
                            s.name
                        ));
                    }
                    if let Some(smtp) = &s.smtp
                        && !matches!(smtp.tls.as_str(), "none" | "starttls" | "tls")
                    {
                        problems.push(format!(
                            "alerts.sinks[{i}] ({}): smtp.tls {:?}: write none, starttls or tls",
                            s.name, smtp.tls
                        ));
                    }
                }
                other => problems.push(format!(
                    "alerts.sinks[{i}] ({}): unknown type {other:?}: write webhook, slack or email",
                    s.name
                )),
            }
        }
        if let Some(h) = &self.heartbeat {
            if !self.sinks.iter().any(|s| s.name == h.sink) {
                problems.push(format!("alerts.heartbeat.sink {:?} names no sink", h.sink));
            }
            if h.interval <= 0 {
                problems.push("alerts.heartbeat.interval must be longer than 0".to_owned());
            }
        }
        if self.max_attempts == 0 {
            problems.push("alerts.max_attempts must be at least 1".to_owned());
        }
        problems
    }
}
