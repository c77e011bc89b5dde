//! `kaudit bench`: throughput, memory and recall figures (issue 8).
//!
//! This module owns the benchmark and nothing on the hot path:
//! - [`corpus`]: the deterministic corpus generator (by seed): realistic
//!   Metadata-level audit traffic of one cluster, about 1 KB per event,
//!   with planted attacks and the list of (auditID, rule id) each must
//!   fire; the traffic tables are in `traffic`, the attacks in
//!   [`attacks`], the event writer in `event`, the PRNG, ids and
//!   timestamps in `rng`;
//! - [`run`]: `kaudit bench run`: each phase (decode+detect, scan into
//!   the store, jq, wc) in a child process, on one CPU and on all;
//! - [`kafka`]: `kaudit bench kafka`: the daemon from Kafka to stored
//!   finding: a topic fed at a sustained rate, the latency of each planted
//!   attack from producer to store, the daemon's peak RSS;
//! - [`measure`]: one child timed, pinned with taskset, its peak RSS read
//!   from `wait4`;
//! - [`report`]: the figures as JSON or a table.
//!
//! The CLI edge is `crate::cli::bench`.

pub mod attacks;
mod bodies;
pub mod corpus;
mod event;
pub mod kafka;
pub mod measure;
pub mod report;
mod rng;
pub mod run;
mod traffic;

use std::io;
use std::path::PathBuf;

/// Why a benchmark could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("{0}")]
    Failed(String),
}
