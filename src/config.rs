//! The configuration file (`--config FILE`, YAML): typed, validated, with
//! errors that name the file, the line and what to write instead.
//!
//! This module owns the shape of the file and its defaults. `scan` reads
//! `cluster` and `detection`; `kaudit run` also `storage`, `sources`,
//! `server` and `stream` (typed in `daemon`); `alerts` belongs to alerting
//! and is accepted but not yet read (`kaudit check` says so).
//!
//! ```yaml
//! cluster: prod-eu-1
//! detection:
//!   rules: [/etc/kaudit/rules]
//!   disable: [token-interactive-client]
//!   clusters:
//!     prod-eu-1:
//!       pod_cidrs: [10.244.0.0/16]
//!       node_cidrs: [10.0.0.0/20]
//!       service_cidrs: [10.96.0.0/12]
//!       trusted_cidrs: [192.0.2.10]          # CI runners, bastions
//!       trusted_proxies: [10.0.255.0/24]     # load balancers that add X-Forwarded-For
//!       trusted_user_agents: ["argocd/*"]
//!       automation_identities: ["system:serviceaccount:ci:*"]
//!   token:
//!     replay_window: 1h
//!     forbidden_burst: {count: 10, window: 5m}
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

mod alerts;
mod daemon;
pub use alerts::*;
pub use daemon::*;

/// A problem with the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster of events that carry none (lower-cased).
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub storage: Option<Storage>,
    #[serde(default)]
    pub detection: Detection,
    /// Where `kaudit run` reads audit events.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Where findings are sent (`kaudit run`).
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The daemon's operations server (/healthz, /readyz, /metrics).
    #[serde(default)]
    pub server: Option<ServerConfig>,
    /// Health of the audit stream (silence detection).
    #[serde(default)]
    pub stream: StreamConfig,
    /// Size caps of the decoder (`kaudit run`; `scan` has flags).
    #[serde(default)]
    pub decode: DecodeConfig,
}

/// The decoder's size caps (DESIGN.md, "Size").
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// One audit event; a larger one is quarantined (`oversized-event`).
    #[serde(default = "default_event_bytes")]
    pub max_event_bytes: usize,
    /// One line or top-level value that may hold a whole envelope.
    #[serde(default = "default_document_bytes")]
    pub max_document_bytes: usize,
}

fn default_event_bytes() -> usize {
    crate::decode::Limits::default().max_event_bytes
}

fn default_document_bytes() -> usize {
    crate::decode::Limits::default().max_document_bytes
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            max_event_bytes: default_event_bytes(),
            max_document_bytes: default_document_bytes(),
        }
    }
}

impl DecodeConfig {
    pub fn limits(&self) -> crate::decode::Limits {
        crate::decode::Limits {
            max_event_bytes: self.max_event_bytes,
            max_document_bytes: self.max_document_bytes,
        }
    }
}

/// Where findings are kept: a SQLite file (`path`, one instance) or a
/// PostgreSQL database several instances share (`postgres`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub postgres: Option<PostgresStorage>,
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// The shared PostgreSQL store (docs/deployment.md, "Scaling out").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresStorage {
    /// `postgres://user:password@host:5432/db?sslmode=require`; prefer
    /// `url_env` or `url_file` (the URL holds the password).
    #[serde(default)]
    pub url: Option<daemon::Secret>,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Connections the findings console may hold for its readers
    /// (default 2); the daemon's writer, delivery and sources each hold
    /// their own.
    #[serde(default)]
    pub pool: Option<u32>,
}

impl Storage {
    /// Where the store is: the SQLite file, or the PostgreSQL URL (with
    /// its password: never print it, `store::redact_url` does).
    ///
    /// # Errors
    /// Both or neither of `path` and `postgres`, an unreadable URL secret,
    /// or a URL that is not `postgres://`.
    pub fn location(&self) -> Result<PathBuf, String> {
        match (&self.path, &self.postgres) {
            (Some(p), None) => Ok(p.clone()),
            (None, Some(pg)) => {
                let url = daemon::resolve_secret(
                    "storage.postgres.url",
                    pg.url.as_ref(),
                    pg.url_env.as_deref(),
                    pg.url_file.as_deref(),
                )?
                .ok_or("storage.postgres needs url, url_env or url_file")?;
                let url = url.expose().trim();
                if !crate::store::is_postgres_url(url) {
                    return Err(
                        "storage.postgres: the URL must start with postgres:// or postgresql://"
                            .into(),
                    );
                }
                Ok(PathBuf::from(url))
            }
            (Some(_), Some(_)) => Err(
                "storage: give either path (SQLite, one instance) or postgres (shared), not both"
                    .into(),
            ),
            (None, None) => Err(
                "storage needs path (a SQLite file) or postgres (a shared PostgreSQL database)"
                    .into(),
            ),
        }
    }
}

/// What is detected, and how.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    /// Rule files or directories loaded after the built-in catalogue.
    #[serde(default)]
    pub rules: Vec<PathBuf>,
    /// Rule ids turned off: catalogue rules and stateful detectors alike.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Networks and trust, per cluster; `default` applies to events with no
    /// cluster and to clusters not listed.
    #[serde(default, deserialize_with = "lowercase_keys")]
    pub clusters: BTreeMap<String, ClusterConfig>,
    #[serde(default)]
    pub token: TokenSettings,
}

/// One cluster's networks and what it trusts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default, deserialize_with = "nets")]
    pub pod_cidrs: Vec<IpNet>,
    #[serde(default, deserialize_with = "nets")]
    pub node_cidrs: Vec<IpNet>,
    #[serde(default, deserialize_with = "nets")]
    pub service_cidrs: Vec<IpNet>,
    /// Other addresses allowed to use service-account tokens (CI runners,
    /// bastions, a NAT gateway the pods' traffic leaves through).
    #[serde(default, deserialize_with = "nets")]
    pub trusted_cidrs: Vec<IpNet>,
    /// Proxies in front of the API server that append X-Forwarded-For: the
    /// address used is the rightmost `sourceIPs` entry not in these.
    #[serde(default, deserialize_with = "nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// User agents allowed to drive service-account tokens by hand
    /// (`*` matches any run of characters, case-insensitive). A user agent
    /// is chosen by the client: this only quiets token-interactive-client.
    #[serde(default)]
    pub trusted_user_agents: Vec<String>,
    /// Identities that mint, review and use tokens as their job (Vault,
    /// CI deployers, operators): `*` matches any run of characters.
    #[serde(default)]
    pub automation_identities: Vec<String>,
}

impl ClusterConfig {
    /// Whether any network is configured (otherwise private ranges count
    /// as internal).
    pub fn has_networks(&self) -> bool {
        !(self.pod_cidrs.is_empty() && self.node_cidrs.is_empty() && self.service_cidrs.is_empty())
    }
}

/// The stateful token detectors' windows, thresholds and memory caps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// One credential id from two addresses within this time: token-replayed.
    #[serde(deserialize_with = "duration")]
    pub replay_window: i64,
    /// How long after a token shows up at a new address a self-review is
    /// reconnaissance (token-recon).
    #[serde(deserialize_with = "duration")]
    pub recon_window: i64,
    pub forbidden_burst: Burst,
    /// How long an issued credential id is remembered when the TokenRequest
    /// does not say when it expires (a Metadata-level log); otherwise its
    /// own expiry counts.
    #[serde(deserialize_with = "duration")]
    pub issued_ttl: i64,
    /// legacy-token-used and stale-token report one identity at most once
    /// in this time (a workload uses its token on every request).
    #[serde(deserialize_with = "duration")]
    pub repeat_interval: i64,
    /// Clients that mark a token as driven by hand (token-interactive-client):
    /// user-agent prefixes, case-insensitive.
    pub interactive_clients: Vec<String>,
    /// Entries per table per cluster (credentials, identities, nodes,
    /// issued tokens, burst counters); the least recently used go first.
    pub max_entries: usize,
    /// Clusters with state; the least recently seen go first.
    pub max_clusters: usize,
}

/// N forbidden answers for one identity within a window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    pub count: usize,
    #[serde(deserialize_with = "duration")]
    pub window: i64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            replay_window: 3600,
            recon_window: 600,
            forbidden_burst: Burst {
                count: 10,
                window: 300,
            },
            issued_ttl: 7 * 86_400,
            repeat_interval: 86_400,
            interactive_clients: [
                "kubectl/",
                "curl/",
                "wget/",
                "python-requests/",
                "python-urllib",
                "python-httpx/",
                "aiohttp/",
                "httpie/",
                "postmanruntime/",
                "insomnia/",
                "go-http-client/",
                "okhttp/",
                "axios/",
                "node-fetch",
                "undici",
                "powershell/",
                "mozilla/5.0 (windows nt; windows nt",
                "k9s/",
                "lens/",
                "openlens/",
                "headlamp/",
                "kubernetes-dashboard",
                "kube-hunter",
                "peirates",
                "kubeletctl",
            ]
            .map(String::from)
            .to_vec(),
            max_entries: 100_000,
            max_clusters: 1_000,
        }
    }
}

/// The longest window or interval accepted (keeps time arithmetic in range).
const MAX_DURATION: i64 = 400 * 86_400;

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        // Rule paths are relative to the configuration file.
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in &mut cfg.detection.rules {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        Ok(cfg)
    }

    /// Parses and validates configuration text; the error is one sentence
    /// per problem, with the line where serde found it.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
        };
        cfg.cluster = cfg.cluster.map(|c| c.to_ascii_lowercase());
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.detection.token;
        let mut problems = Vec::new();
        if t.forbidden_burst.count < 2 {
            problems.push("detection.token.forbidden_burst.count must be at least 2".to_owned());
        }
        for (name, v) in [
            ("replay_window", t.replay_window),
            ("recon_window", t.recon_window),
            ("forbidden_burst.window", t.forbidden_burst.window),
            ("issued_ttl", t.issued_ttl),
            ("repeat_interval", t.repeat_interval),
        ] {
            if v <= 0 || v > MAX_DURATION {
                problems.push(format!(
                    "detection.token.{name} must be longer than 0 and at most 400 days (write e.g. 5m, 1h, 30d)"
                ));
            }
        }
        if t.forbidden_burst.count > 10_000 {
            problems.push("detection.token.forbidden_burst.count must be at most 10000".to_owned());
        }
        if let Some(server) = &self.server
            && server.ui.enabled
        {
            let ui = &server.ui;
            let mtls = ui.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
            if ui.token.is_none() && ui.token_env.is_none() && ui.token_file.is_none() && !mtls {
                problems.push(
                    "server.ui is enabled without a way in: give token, token_env or token_file (or tls.client_ca)"
                        .to_owned(),
                );
            }
            if !ui.listen.ip().is_loopback() && ui.tls.is_none() {
                problems.push(format!(
                    "server.ui.listen {} is not a loopback address: give server.ui.tls (the token and the findings would cross the network in clear)",
                    ui.listen
                ));
            }
        }
        let d = &self.decode;
        if d.max_event_bytes < 1024
            || d.max_document_bytes < d.max_event_bytes
            || d.max_document_bytes > 1 << 30
        {
            problems.push(
                "decode: max_event_bytes must be at least 1024, and max_document_bytes at least max_event_bytes and at most 1 GiB"
                    .to_owned(),
            );
        }
        if t.max_entries < 16 || t.max_clusters < 1 {
            problems.push(
                "detection.token.max_entries must be at least 16 and max_clusters at least 1"
                    .to_owned(),
            );
        }
        for (cluster, c) in &self.detection.clusters {
            for (what, list) in [
                ("trusted_user_agents", &c.trusted_user_agents),
                ("automation_identities", &c.automation_identities),
            ] {
                if list.iter().any(|p| p.trim().is_empty() || p.trim() == "*") {
                    problems.push(format!(
                        "detection.clusters.{cluster}.{what}: an empty or bare \"*\" pattern would trust everyone"
                    ));
                }
            }
        }
        problems.extend(self.validate_sources());
        problems.extend(self.alerts.validate());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    fn validate_sources(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let name = s.name(i);
            if !names.insert(name.clone()) {
                problems.push(format!("sources[{i}]: the name {name:?} is used twice"));
            }
            match s {
                SourceConfig::File(f) if f.patterns().is_empty() => problems.push(format!(
                    "sources[{i}] ({name}): a file source needs `path` or `paths`"
                )),
                SourceConfig::Kafka(k) => {
                    if k.topic_list().is_empty() {
                        problems.push(format!(
                            "sources[{i}] ({name}): a kafka source needs `topic` or `topics`"
                        ));
                    }
                    for key in k.properties.keys() {
                        if matches!(
                            key.as_str(),
                            "enable.auto.commit"
                                | "enable.auto.offset.store"
                                | "group.id"
                                | "bootstrap.servers"
                        ) {
                            problems.push(format!(
                                "sources[{i}] ({name}): properties.{key} cannot be set: kaudit commits offsets itself, after the store (use brokers and group_id)"
                            ));
                        }
                    }
                    if let Some(e) = &k.envelope
                        && !(matches!(
                            e.as_str(),
                            "auto"
                                | "raw"
                                | "eventlist"
                                | "cloudwatch"
                                | "firehose"
                                | "aks"
                                | "gke"
                        ) || e.strip_prefix("field:").is_some_and(|f| !f.is_empty()))
                    {
                        problems.push(format!(
                            "sources[{i}] ({name}): envelope {e:?}: write auto, raw, eventlist, cloudwatch, firehose, aks, gke or field:NAME"
                        ));
                    }
                    if let Some(c) = &k.cluster_from
                        && !(c == "key"
                            || c == "topic"
                            || c.strip_prefix("header:").is_some_and(|h| !h.is_empty())
                            || c.strip_prefix("fixed:").is_some_and(|h| !h.is_empty()))
                    {
                        problems.push(format!(
                            "sources[{i}] ({name}): cluster_from {c:?}: write header:NAME, key, topic or fixed:NAME"
                        ));
                    }
                }
                SourceConfig::Webhook(w) => {
                    if !w.path.starts_with('/') {
                        problems.push(format!(
                            "sources[{i}] ({name}): path {:?} must start with /",
                            w.path
                        ));
                    }
                    let firehose = w.firehose_access_key.is_some()
                        || w.firehose_access_key_env.is_some()
                        || w.firehose_access_key_file.is_some();
                    if w.clients.is_empty() && !firehose && !w.allow_anonymous {
                        problems.push(format!(
                            "sources[{i}] ({name}): a webhook source without clients (certificate subjects or tokens) or a Firehose key accepts forged events from anyone: add clients, or write allow_anonymous: true"
                        ));
                    }
                    if w.clients.iter().any(|c| c.subject.is_some())
                        && w.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
                    {
                        problems.push(format!(
                            "sources[{i}] ({name}): clients by certificate subject need tls.client_ca (without it no client certificate is asked for)"
                        ));
                    }
                    for (j, c) in w.clients.iter().enumerate() {
                        let ways = usize::from(c.subject.is_some())
                            + usize::from(
                                c.token.is_some()
                                    || c.token_env.is_some()
                                    || c.token_file.is_some(),
                            );
                        if ways != 1 {
                            problems.push(format!(
                                "sources[{i}] ({name}): clients[{j}] needs exactly one of `subject` or a token"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        problems
    }

    /// The rules: built-in, then `detection.rules`, then `extra` (--rules),
    /// then `detection.disable` (the ids that are catalogue rules; the
    /// token detectors read the list themselves). `origin` names the
    /// configuration file in errors.
    ///
    /// # Errors
    /// Every problem of every rule file, with file and line.
    pub fn rules(
        &self,
        origin: Option<&Path>,
        extra: &[PathBuf],
    ) -> Result<crate::detect::RuleSet, crate::detect::LoadError> {
        let mut paths = self.detection.rules.clone();
        paths.extend(extra.iter().cloned());
        let yaml_off: Vec<&String> = self
            .detection
            .disable
            .iter()
            .filter(|id| !crate::detect::token::TokenDetector::is_token_rule(id))
            .collect();
        let mut more = Vec::new();
        if !yaml_off.is_empty() {
            more.push(crate::detect::RuleSource {
                name: format!(
                    "{} (detection.disable)",
                    origin.unwrap_or(Path::new("config")).display()
                ),
                text: format!(
                    "disable: [{}]\n",
                    yaml_off
                        .iter()
                        .map(|id| serde_json::Value::String((*id).clone()).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                dir: None,
            });
        }
        crate::detect::RuleSet::load_with(&paths, more)
    }

    /// The settings of `cluster`: its own entry, else `default`, else none.
    pub fn cluster(&self, cluster: &str) -> Option<&ClusterConfig> {
        self.detection
            .clusters
            .get(cluster)
            .or_else(|| self.detection.clusters.get(crate::finding::DEFAULT_CLUSTER))
    }
}

/// `*` matches any run of characters; ASCII case is ignored.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    // Classic two-pointer wildcard match with backtracking to the last star.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A network: `10.0.0.0/8`, or a bare address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    IpNet::from_str(s)
        .map(|n| n.trunc())
        .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
        .map_err(|_| {
            format!("{s:?} is not a network: write an address or a CIDR such as 10.244.0.0/16")
        })
}

/// A duration: `90s`, `30m`, `1h`, `7d`, or a number of seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write e.g. 90s, 30m, 1h, 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{s:?} is not a duration: write e.g. 90s, 30m, 1h, 7d"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too long a duration"))
}

fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let raw: Vec<String> = Vec::deserialize(d)?;
    raw.iter()
        .map(|s| parse_net(s).map_err(serde::de::Error::custom))
        .collect()
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    duration_de(d)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    duration_de(d).map(Some)
}

pub(crate) fn duration_de<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(i64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(n) => Ok(n),
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

fn lowercase_keys<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, ClusterConfig>, D::Error> {
    let raw: BTreeMap<String, ClusterConfig> = BTreeMap::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let lower = k.to_ascii_lowercase();
        if out.insert(lower.clone(), v).is_some() {
            return Err(serde::de::Error::custom(format!(
                "cluster {lower:?} is configured twice (cluster names are compared lower-cased)"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_a_file_or_a_postgres_url_never_both() {
        let loc = |yaml: &str| {
            Config::parse(yaml)
                .unwrap()
                .storage
                .unwrap()
                .location()
                .map(|p| p.to_string_lossy().into_owned())
        };
        assert_eq!(
            loc("storage: {path: /var/lib/k.db}").unwrap(),
            "/var/lib/k.db"
        );
        assert_eq!(
            loc("storage: {postgres: {url: 'postgres://k:pw@db/kaudit', pool: 4}}").unwrap(),
            "postgres://k:pw@db/kaudit"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "postgresql://k@db/kaudit\n").unwrap();
        assert_eq!(
            loc(&format!(
                "storage: {{postgres: {{url_file: {}}}}}",
                f.display()
            ))
            .unwrap(),
            "postgresql://k@db/kaudit"
        );
        let e = loc("storage: {path: /k.db, postgres: {url: 'postgres://db/k'}}").unwrap_err();
        assert!(e.contains("not both"), "{e}");
        assert!(loc("storage: {}").unwrap_err().contains("path"));
        let e = loc("storage: {postgres: {url: 'mysql://db/k'}}").unwrap_err();
        assert!(e.contains("postgres://"), "{e}");
        let e = loc("storage: {postgres: {url_env: KAUDIT_TEST_UNSET_VARIABLE_X}}").unwrap_err();
        assert!(e.contains("KAUDIT_TEST_UNSET_VARIABLE_X"), "{e}");
        assert!(Config::parse("storage: {postgres: {url: 'postgres://db/k', bogus: 1}}").is_err());
    }

    #[test]
    fn parses_the_documented_example() {
        let cfg = Config::parse(
            r#"
cluster: Prod-EU-1
detection:
  clusters:
    PROD-eu-1: {pod_cidrs: [10.244.0.0/16], node_cidrs: [10.0.0.0/20], service_cidrs: [10.96.0.0/12], trusted_cidrs: [192.0.2.10]}
  token: {replay_window: 2h, forbidden_burst: {count: 5, window: 60}}
sources: [{type: stdin}]
alerts: {sinks: []}
"#,
        )
        .unwrap();
        assert_eq!(cfg.cluster.as_deref(), Some("prod-eu-1"));
        let c = cfg.cluster("prod-eu-1").unwrap();
        assert_eq!(c.trusted_cidrs[0].to_string(), "192.0.2.10/32");
        assert!(c.has_networks());
        assert_eq!(cfg.detection.token.replay_window, 7200);
        assert_eq!(cfg.detection.token.forbidden_burst.window, 60);
        assert_eq!(cfg.detection.token.recon_window, 600);
        assert!(cfg.cluster("other").is_none());
        assert_eq!(cfg.sources.len(), 1);
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e = Config::parse("detection:\n  clusters:\n    a: {pod_cidrs: [10.0.0.0/33]}\n")
            .unwrap_err();
        assert!(
            e.contains("is not a network") && e.contains("line 3"),
            "{e}"
        );
        let e = Config::parse("detection:\n  token: {replay_window: soon}\n").unwrap_err();
        assert!(e.contains("is not a duration"), "{e}");
        let e = Config::parse("detektion: {}\n").unwrap_err();
        assert!(e.contains("unknown field `detektion`"), "{e}");
        let e = Config::parse("detection:\n  clusters:\n    a: {automation_identities: ['*']}\n")
            .unwrap_err();
        assert!(e.contains("would trust everyone"), "{e}");
        let e = Config::parse(
            "sources: [{type: kafka, brokers: b, topic: t, group_id: g, envelope: soap, cluster_from: header}]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("envelope \"soap\"") && e.contains("cluster_from \"header\""),
            "{e}"
        );
        let e = Config::parse("alerts: {sinks: [{name: x, type: pager}]}\n").unwrap_err();
        assert!(e.contains("unknown type \"pager\""), "{e}");
        let e = Config::parse("detection:\n  clusters:\n    A: {}\n    a: {}\n").unwrap_err();
        assert!(e.contains("configured twice"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "system:serviceaccount:ci:*",
            "system:serviceaccount:ci:deployer"
        ));
        assert!(!glob_match(
            "system:serviceaccount:ci:*",
            "system:serviceaccount:cid:x"
        ));
        assert!(glob_match("ArgoCD/*", "argocd/v2.11 (linux)"));
        assert!(glob_match(
            "*vault*",
            "system:serviceaccount:vault:vault-auth"
        ));
        assert!(!glob_match("a*b", "acbd"));
        assert!(glob_match("exact", "EXACT"));
    }
}
