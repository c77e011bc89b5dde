//! kaudit: an off-cluster security detector for Kubernetes API-server audit
//! logs.
//!
//! # Layout (modules follow the data flow)
//!
//! - [`decode`]: bytes in any envelope (audit Event, EventList, JSON lines,
//!   EKS CloudWatch / Firehose, GKE LogEntry / Pub/Sub, AKS records,
//!   shipper wrappers; plain or gzip) to [`event::AuditEvent`]s.
//! - [`event`]: the normalised audit event, a borrowed view.
//! - [`detect`]: events to [`finding::Finding`]s, once per request and rule.
//! - [`finding`]: the finding format; [`redact`]: secrets out of evidence.
//! - [`store`]: findings in SQLite with a tamper-evident hash chain, signed
//!   checkpoints, quarantine, coverage, source checkpoints, retention.
//! - [`export`]: signed evidence bundles (jsonl, csv, ocsf) and their
//!   verification.
//! - [`output`]: findings printed for people and tools.
//! - [`scan`]: the offline scanner that wires these together.
//! - [`config`]: the configuration file, typed and validated.
//! - [`cli`]: the evidence commands at the CLI edge; [`timespec`]: time
//!   arguments.
//! - [`ui`]: the findings console (web pages and JSON API) the daemon
//!   serves.
//! - [`bench`]: `kaudit bench`: the deterministic benchmark corpus and the
//!   throughput, memory and recall measurements.

pub mod alert;
pub mod bench;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod detect;
pub mod event;
pub mod export;
pub mod finding;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod redact;
pub mod scan;
pub mod server;
pub mod source;
pub mod store;
pub mod timespec;
pub mod ui;
