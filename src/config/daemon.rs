//! The daemon's part of the configuration: sources, the operations server,
//! stream health. Secrets (`password`, `token`, ...) may be given inline,
//! as `NAME_env` (an environment variable) or `NAME_file`; [`Secret`] never
//! prints its value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// One source of audit events.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    File(FileSource),
    Stdin(StdinSource),
    Webhook(WebhookSource),
    Kafka(KafkaSource),
}

impl SourceConfig {
    /// Whether RequestReceived events are evaluated for this source.
    pub fn request_received(&self) -> bool {
        match self {
            SourceConfig::File(s) => s.request_received,
            SourceConfig::Stdin(s) => s.request_received,
            SourceConfig::Webhook(s) => s.request_received,
            SourceConfig::Kafka(s) => s.request_received,
        }
    }

    /// The source's name: given, or made from its type and position.
    pub fn name(&self, index: usize) -> String {
        let (given, kind) = match self {
            SourceConfig::File(s) => (&s.name, "file"),
            SourceConfig::Stdin(s) => (&s.name, "stdin"),
            SourceConfig::Webhook(s) => (&s.name, "webhook"),
            SourceConfig::Kafka(s) => (&s.name, "kafka"),
        };
        given.clone().unwrap_or_else(|| format!("{kind}-{index}"))
    }
}

/// Audit log files: paths or globs, followed through rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    #[serde(default)]
    pub name: Option<String>,
    /// Evaluate RequestReceived events (an audit policy that omits the
    /// later stages); otherwise rules wait for the stage with the outcome.
    #[serde(default)]
    pub request_received: bool,
    /// A path or glob (`/var/log/kubernetes/audit/*.log`); rotated files
    /// matching it (`audit-2026-….log.gz`) are read too.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    /// The cluster of every event read here.
    #[serde(default)]
    pub cluster: Option<String>,
    /// How often files are checked for growth and rotation.
    #[serde(default = "default_poll", deserialize_with = "millis")]
    pub poll_ms: u64,
    /// A file truncated in place before it was read to its end: how long
    /// its content may take to show up under a watched name (a copy
    /// compressed after the truncation) before the loss is reported.
    #[serde(
        default = "default_copy_grace",
        deserialize_with = "super::duration_de"
    )]
    pub copy_grace: i64,
}

fn default_copy_grace() -> i64 {
    60
}

impl FileSource {
    pub fn patterns(&self) -> Vec<String> {
        self.path.iter().chain(&self.paths).cloned().collect()
    }
}

fn default_poll() -> u64 {
    250
}

/// Standard input, for pipelines (`kubectl logs ... | kaudit run`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSource {
    #[serde(default)]
    pub name: Option<String>,
    /// Evaluate RequestReceived events (an audit policy that omits the
    /// later stages); otherwise rules wait for the stage with the outcome.
    #[serde(default)]
    pub request_received: bool,
    #[serde(default)]
    pub cluster: Option<String>,
}

/// The API server's audit webhook backend (and Firehose / Pub/Sub push).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSource {
    #[serde(default)]
    pub name: Option<String>,
    /// Evaluate RequestReceived events (an audit policy that omits the
    /// later stages); otherwise rules wait for the stage with the outcome.
    #[serde(default)]
    pub request_received: bool,
    pub listen: SocketAddr,
    /// The path; `{cluster}` takes the cluster from it.
    #[serde(default = "default_webhook_path")]
    pub path: String,
    /// TLS; without it the listener is plain HTTP (loopback tests, a
    /// terminating proxy in front).
    #[serde(default)]
    pub tls: Option<TlsServer>,
    /// Who may post, and for which clusters. Empty: anyone the TLS layer
    /// let in (client certificates, if `tls.client_ca`), for any cluster.
    #[serde(default)]
    pub clients: Vec<WebhookClient>,
    /// Accept posts from anyone who reaches the listener (no client
    /// certificate, token or Firehose key): refused unless said outright.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Bodies over this are answered 413.
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    /// EKS Firehose HTTP-endpoint deliveries: the access key Firehose sends
    /// in `X-Amz-Firehose-Access-Key`.
    #[serde(default)]
    pub firehose_access_key: Option<Secret>,
    #[serde(default)]
    pub firehose_access_key_env: Option<String>,
    #[serde(default)]
    pub firehose_access_key_file: Option<PathBuf>,
    /// The cluster when the path has none.
    #[serde(default)]
    pub cluster: Option<String>,
}

fn default_webhook_path() -> String {
    "/audit/{cluster}".to_owned()
}

fn default_body_limit() -> usize {
    64 << 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServer {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates signed by this CA are required (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// One client identity and the clusters it may post for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookClient {
    /// The client certificate's subject common name.
    #[serde(default)]
    pub subject: Option<String>,
    /// A bearer token (`Authorization: Bearer …`).
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Clusters it may post for (`*`: any).
    pub clusters: Vec<String>,
}

/// A Kafka topic read in a consumer group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSource {
    #[serde(default)]
    pub name: Option<String>,
    /// Evaluate RequestReceived events (an audit policy that omits the
    /// later stages); otherwise rules wait for the stage with the outcome.
    #[serde(default)]
    pub request_received: bool,
    pub brokers: String,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
    pub group_id: String,
    /// `header:NAME`, `key`, `topic`, or `fixed:NAME`; else the envelope's.
    #[serde(default)]
    pub cluster_from: Option<String>,
    /// `auto` (by shape), or a string field holding the event (`message`).
    #[serde(default)]
    pub envelope: Option<String>,
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka's session timeout (ms); tests shorten it.
    #[serde(default)]
    pub session_timeout_ms: Option<u32>,
    /// Further librdkafka properties. A value written `env:NAME` or
    /// `file:PATH` is read from there (for `ssl.key.password` and the
    /// like); values are never printed.
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

impl KafkaSource {
    pub fn topic_list(&self) -> Vec<String> {
        self.topic.iter().chain(&self.topics).cloned().collect()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// plaintext, ssl, sasl_plaintext, sasl_ssl.
    #[serde(default)]
    pub protocol: Option<String>,
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Azure Event Hubs: the namespace connection string (user
    /// `$ConnectionString`, SASL PLAIN over TLS on port 9093).
    #[serde(default)]
    pub event_hubs_connection_string_env: Option<String>,
    #[serde(default)]
    pub event_hubs_connection_string_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The operations server: /healthz, /readyz, /metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The findings console (web UI and JSON API); off unless enabled.
    #[serde(default)]
    pub ui: UiConfig,
}

/// The findings console: its own listener (loopback by default), behind a
/// token (or client certificates with `tls.client_ca`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_ui_listen")]
    pub listen: SocketAddr,
    /// The access token (the API's bearer token; the login form's password).
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// HTTPS; with `client_ca`, a client certificate signed by it also lets
    /// a client in without the token.
    #[serde(default)]
    pub tls: Option<TlsServer>,
    /// The Ed25519 key (`kaudit keygen`) that signs bundles exported from
    /// the console; unsigned without it.
    #[serde(default)]
    pub sign_key: Option<PathBuf>,
    /// Mark the session cookie `Secure` though the console itself speaks
    /// plain HTTP (behind a reverse proxy that adds TLS). Always so with
    /// `tls`.
    #[serde(default)]
    pub secure_cookie: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: false,
            listen: default_ui_listen(),
            token: None,
            token_env: None,
            token_file: None,
            tls: None,
            sign_key: None,
            secure_cookie: false,
        }
    }
}

fn default_ui_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9443))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ui: UiConfig::default(),
            listen: default_listen(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// Health of the audit stream itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// A cluster that sent events and then nothing for this long is silent.
    #[serde(default = "default_silence", deserialize_with = "super::duration_de")]
    pub silence_after: i64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            silence_after: default_silence(),
        }
    }
}

fn default_silence() -> i64 {
    600
}

/// A secret value: never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[secret]")
    }
}

/// Resolves a secret given inline, as `*_env` or as `*_file` (one of them);
/// `what` names it in errors. Trailing newlines of files are dropped.
pub fn resolve_secret(
    what: &str,
    inline: Option<&Secret>,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<Secret>, String> {
    match (inline, env, file) {
        (None, None, None) => Ok(None),
        (Some(s), None, None) => Ok(Some(s.clone())),
        (None, Some(var), None) => std::env::var(var)
            .map(|v| Some(Secret(v)))
            .map_err(|_| format!("{what}: environment variable {var} is not set")),
        (None, None, Some(path)) => std::fs::read_to_string(path)
            .map(|v| Some(Secret(v.trim_end_matches(['\n', '\r']).to_owned())))
            .map_err(|e| format!("{what}: cannot read {}: {e}", path.display())),
        _ => Err(format!(
            "{what}: give it one way only (inline, _env or _file)"
        )),
    }
}

fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => {
            let s = s.trim();
            if let Some(ms) = s.strip_suffix("ms") {
                ms.trim()
                    .parse()
                    .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a duration")))
            } else {
                super::parse_duration(s)
                    .map(|secs| secs.max(0) as u64 * 1000)
                    .map_err(serde::de::Error::custom)
            }
        }
    }
}
