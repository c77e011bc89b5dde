//! Stateful detectors of service-account token misuse (and the stolen node
//! credential), correlating token ids, pod bindings, TokenRequests and
//! source addresses across events.
//!
//! [`TokenDetector`] owns all state, per cluster and bounded (see
//! `state`). For each event that carries its outcome it reads what the
//! detectors need once ([`Req`]), learns from it (kubelet addresses, where
//! each token and identity was seen, issued credential ids), then runs the
//! detectors, one file per theme:
//!
//! - `bound`: token-outside-cluster, token-bound-pod-elsewhere (and node
//!   address learning);
//! - `credential`: token-replayed, token-minted-by-user,
//!   token-issued-then-used-elsewhere;
//! - `client`: token-interactive-client;
//! - `annotations`: legacy-token-used, legacy-token-invalidated, stale-token;
//! - `secrets`: token-secret-read;
//! - `identity`: token-recon, token-forbidden-burst.
//!
//! Windows use event time (requestReceivedTimestamp). Reports that a
//! workload would repeat on every request are throttled per identity and
//! address. The state's snapshot goes to the store with the findings.

mod annotations;
mod bound;
mod client;
mod credential;
mod identity;
pub mod place;
pub mod rules;
mod secrets;
mod state;
mod table;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};

use crate::config::{ClusterConfig, Config, TokenSettings, glob_match};
use crate::event::AuditEvent;
use crate::finding::{DEFAULT_CLUSTER, Finding, Severity};

use place::{Networks, Source};
use state::{ClusterSnapshot, ClusterState, Time};
use table::Table;

pub use rules::{RULES, TokenRule, supersedes};

const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const SA_PREFIX: &str = "system:serviceaccount:";
const NODE_PREFIX: &str = "system:node:";
const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";

/// The stateful token detectors and everything they remember.
pub struct TokenDetector {
    settings: TokenSettings,
    clusters: BTreeMap<String, ClusterConfig>,
    enabled: [bool; rules::COUNT],
    interactive: AhoCorasick,
    state: Table<String, ClusterState>,
    /// The latest event time seen: the time of events that carry none.
    clock: Time,
    /// State changed since the last snapshot.
    dirty: bool,
    /// Entries lost with clusters evicted whole.
    lost: u64,
    /// Exceptions written for the catalogue rules the detectors refine.
    lists: Lists,
    /// Several instances share the store: state is kept per cluster.
    shared: Option<Shared>,
}

/// What an instance of several tracks to keep each cluster's state in the
/// shared store: the clusters changed since their state was saved, and
/// when each was last heard here (a cluster heard again after
/// [`RELOAD_AFTER`] may have been handled by another instance meanwhile,
/// so its stored state is read back first).
#[derive(Default)]
struct Shared {
    dirty: HashSet<String>,
    heard: HashMap<String, Time>,
}

/// How long a cluster may go unheard here before its state is read again
/// from the shared store.
pub const RELOAD_AFTER: Time = 60;

/// Catalogue lists the detectors honour (see [`TokenDetector::use_lists`]).
#[derive(Default)]
pub struct Lists {
    /// `rbac_self_review_users`: identities that check their own permissions
    /// as their job (token-recon, refining rbac-self-permission-review).
    pub self_review_users: HashSet<String>,
    /// `secrets_token_controllers`: identities that create token secrets
    /// (token-secret-read, refining service-account-token-secret-created).
    pub token_controllers: HashSet<String>,
}

/// Counters for operators (a metric in the daemon, a line in `scan`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub clusters: usize,
    pub entries: usize,
    pub evictions: u64,
}

/// What the detectors read from one event, read once.
pub struct Req<'e, 'a> {
    pub ev: &'e AuditEvent<'a>,
    pub cluster: &'e str,
    pub user: &'e str,
    /// `system:serviceaccount:NS:NAME` → (NS, NAME).
    pub service_account: Option<(&'e str, &'e str)>,
    /// `system:node:NAME` → NAME.
    pub node: Option<&'e str>,
    pub src: Option<Source>,
    pub t: Time,
    /// `user.extra` credential-id (`JTI=…`, `X509SHA256=…`).
    pub credential: Option<&'e str>,
    /// The pod and node the token is bound to.
    pub pod: Option<&'e str>,
    pub bound_node: Option<&'e str>,
    /// The client's product name, lower-cased (`kubectl`, `curl`, ...).
    pub family: Cow<'e, str>,
    pub code: Option<i64>,
}

impl Req<'_, '_> {
    pub fn addr(&self) -> Option<std::net::IpAddr> {
        self.src.as_ref().map(|s| s.addr)
    }

    /// A service account or a node: a credential that lives in the cluster.
    pub fn in_cluster_identity(&self) -> bool {
        self.service_account.is_some() || self.node.is_some()
    }

    pub fn succeeded(&self) -> bool {
        self.code.is_none_or(|c| (200..300).contains(&c))
    }

    pub fn user_agent(&self) -> &str {
        self.ev.user_agent.as_deref().unwrap_or("")
    }
}

/// One event's run of the detectors over one cluster's state.
pub struct Run<'s> {
    pub settings: &'s TokenSettings,
    pub cfg: Option<&'s ClusterConfig>,
    pub nets: Networks<'s>,
    pub state: &'s mut ClusterState,
    pub interactive: &'s AhoCorasick,
    pub lists: &'s Lists,
    enabled: &'s [bool; rules::COUNT],
    out: &'s mut Vec<Finding>,
}

impl Run<'_> {
    pub fn enabled(&self, rule: usize) -> bool {
        self.enabled[rule]
    }

    /// Emits a finding of token rule `rule`.
    pub fn emit(
        &mut self,
        rule: usize,
        ev: &AuditEvent<'_>,
        severity: Severity,
        summary: String,
        details: serde_json::Value,
    ) {
        if self.enabled[rule] {
            self.out.push(Finding::from_event(
                &RULES[rule].meta,
                ev,
                severity,
                summary,
                details,
            ));
        }
    }

    /// True once per `key` per `interval` seconds of event time: reports a
    /// workload would repeat on every request go out once.
    /// An event older than the last report (the late stage of a long
    /// request) neither reports nor moves the throttle back.
    pub fn first_in(&mut self, key: String, t: Time, interval: Time) -> bool {
        if let Some(last) = self.state.reported.get_mut(&key) {
            if t < last.saturating_add(interval) {
                return false;
            }
            *last = t;
            return true;
        }
        self.state.reported.insert(key, t);
        true
    }

    /// An identity configured as automation in this cluster.
    pub fn automation(&self, user: &str) -> bool {
        self.cfg
            .is_some_and(|c| c.automation_identities.iter().any(|p| glob_match(p, user)))
    }
}

/// The state snapshot as stored.
#[derive(Deserialize)]
struct Snapshot {
    version: u32,
    clock: Time,
    clusters: Vec<(String, ClusterSnapshot)>,
}

/// The same, written from the live state.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    clock: Time,
    clusters: Vec<(&'a String, state::ClusterSnapshotRef<'a>)>,
}

const SNAPSHOT_VERSION: u32 = 1;

/// The name the token state is stored under.
pub const STATE_NAME: &str = "token";

impl TokenDetector {
    /// Keeps state per cluster for a store several instances share: see
    /// [`TokenDetector::wants_load`] and
    /// [`TokenDetector::take_cluster_snapshots`].
    pub fn share_state(&mut self) {
        self.shared = Some(Shared::default());
    }

    /// Whether the stored state of `cluster` must be read (with
    /// [`TokenDetector::load_cluster`]) before its event at `now` (unix
    /// seconds) is checked: never heard here, or not for
    /// [`RELOAD_AFTER`]. Only when the state is shared.
    pub fn wants_load(&mut self, cluster: &str, now: Time) -> bool {
        let Some(sh) = self.shared.as_mut() else {
            return false;
        };
        match sh.heard.get_mut(cluster) {
            Some(t) if now.saturating_sub(*t) < RELOAD_AFTER => {
                *t = (*t).max(now);
                false
            }
            Some(t) => {
                *t = now;
                true
            }
            None => {
                if sh.heard.len() >= self.settings.max_entries.max(1024) {
                    sh.heard.clear();
                }
                sh.heard.insert(cluster.to_owned(), now);
                true
            }
        }
    }

    /// `cluster`'s state is to be written again (its last write failed).
    pub fn mark_dirty(&mut self, cluster: &str) {
        if let Some(sh) = self.shared.as_mut() {
            sh.dirty.insert(cluster.to_owned());
        }
    }

    /// `cluster`'s stored state could not be read: try again at its next
    /// event.
    pub fn forget_heard(&mut self, cluster: &str) {
        if let Some(sh) = self.shared.as_mut() {
            sh.heard.remove(cluster);
        }
    }

    /// Replaces what is known of one cluster by its stored snapshot (from
    /// [`TokenDetector::take_cluster_snapshots`]).
    ///
    /// # Errors
    /// An unreadable snapshot; what was known stays.
    pub fn load_cluster(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snap = read_snapshot(bytes)?;
        self.clock = self.clock.max(snap.clock);
        for (name, c) in snap.clusters {
            self.state
                .insert(name, ClusterState::restore(c, self.settings.max_entries));
        }
        Ok(())
    }

    /// The snapshots of the clusters changed since the last call, one per
    /// cluster: (cluster, bytes), stored as `token/CLUSTER`.
    pub fn take_cluster_snapshots(&mut self) -> Vec<(String, Vec<u8>)> {
        let Some(sh) = self.shared.as_mut() else {
            return Vec::new();
        };
        let dirty = std::mem::take(&mut sh.dirty);
        let mut out = Vec::with_capacity(dirty.len());
        for cluster in dirty {
            let Some(state) = self.state.peek(&cluster) else {
                continue;
            };
            let snap = SnapshotRef {
                version: SNAPSHOT_VERSION,
                clock: self.clock,
                clusters: vec![(&cluster, state.snapshot())],
            };
            if let Ok(bytes) = serde_json::to_vec(&snap) {
                out.push((cluster.clone(), bytes));
            }
        }
        self.dirty = false;
        out
    }

    /// Detectors configured by `cfg` (defaults when there is no config).
    ///
    /// # Errors
    /// When the interactive-client patterns cannot be compiled.
    pub fn new(cfg: &Config) -> Result<Self, String> {
        let d = &cfg.detection;
        let enabled = std::array::from_fn(|i| !d.disable.iter().any(|id| *id == RULES[i].meta.id));
        let interactive = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(&d.token.interactive_clients)
            .map_err(|e| format!("detection.token.interactive_clients: {e}"))?;
        Ok(TokenDetector {
            settings: d.token.clone(),
            clusters: d.clusters.clone(),
            enabled,
            interactive,
            state: Table::new(d.token.max_clusters),
            clock: 0,
            dirty: false,
            lost: 0,
            lists: Lists::default(),
            shared: None,
        })
    }

    /// Takes the exception lists of the rules the detectors refine, so that
    /// an identity exempted there is exempted here too.
    pub fn use_lists(&mut self, rules: &crate::detect::RuleSet) {
        let set = |name: &str| rules.list(name).iter().cloned().collect();
        self.lists = Lists {
            self_review_users: set("rbac_self_review_users"),
            token_controllers: set("secrets_token_controllers"),
        };
    }

    /// Ids in `disable` that name no token detector (for validation).
    pub fn is_token_rule(id: &str) -> bool {
        RULES.iter().any(|r| r.meta.id == id)
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            clusters: self.state.len(),
            evictions: self.lost,
            ..Stats::default()
        };
        for (_, c) in self.state.iter_oldest_first() {
            s.entries += c.entries();
            s.evictions += c.evictions();
        }
        s
    }

    /// Runs the detectors on `ev`, pushing findings to `out`.
    pub fn check(&mut self, ev: &AuditEvent<'_>, out: &mut Vec<Finding>) {
        if !ev.carries_outcome() || !relevant(ev) {
            return;
        }
        let cluster = ev.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
        let cfg = self
            .clusters
            .get(cluster)
            .or_else(|| self.clusters.get(DEFAULT_CLUSTER));
        let t = ev
            .request_received_timestamp
            .as_deref()
            .or(ev.stage_timestamp.as_deref())
            .and_then(crate::timespec::rfc3339_to_unix)
            .unwrap_or(self.clock);
        self.clock = self.clock.max(t);
        let req = read(ev, cluster, cfg, t);
        let cap = self.settings.max_entries;
        if let Some((_, gone)) = self.state.make_room_for(cluster) {
            // A whole cluster's state goes: count what it held.
            self.lost += gone.evictions() + gone.entries() as u64;
        }
        let Some(state) = self.state.entry(cluster, || ClusterState::new(cap)) else {
            return;
        };
        self.dirty = true;
        if let Some(sh) = self.shared.as_mut()
            && !sh.dirty.contains(cluster)
        {
            sh.dirty.insert(cluster.to_owned());
        }
        let mut run = Run {
            settings: &self.settings,
            cfg,
            nets: Networks::new(cfg),
            state,
            interactive: &self.interactive,
            lists: &self.lists,
            enabled: &self.enabled,
            out,
        };
        // Learning first: the request itself may be what is new.
        bound::learn_node(&mut run, &req);
        identity::track(&mut run, &req);
        bound::outside_cluster(&mut run, &req);
        bound::bound_pod_elsewhere(&mut run, &req);
        credential::replayed(&mut run, &req);
        credential::issued_then_used(&mut run, &req);
        credential::minted(&mut run, &req);
        client::interactive(&mut run, &req);
        annotations::check(&mut run, &req);
        secrets::read(&mut run, &req);
        identity::recon(&mut run, &req);
        identity::forbidden_burst(&mut run, &req);
    }

    /// The state to store, if it changed since the last call.
    pub fn take_snapshot(&mut self) -> Option<Vec<u8>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let snap = SnapshotRef {
            version: SNAPSHOT_VERSION,
            clock: self.clock,
            clusters: self
                .state
                .iter_oldest_first()
                .map(|(k, v)| (k, v.snapshot()))
                .collect(),
        };
        serde_json::to_vec(&snap).ok()
    }

    /// Takes new settings (a configuration reload) and keeps what was
    /// learned, under the new limits.
    ///
    /// # Errors
    /// When the new settings are unusable; the running ones stay.
    pub fn reconfigure(&mut self, cfg: &Config) -> Result<(), String> {
        let mut next = TokenDetector::new(cfg)?;
        next.lists = std::mem::take(&mut self.lists);
        next.shared = self.shared.take();
        next.lost = self.lost;
        self.dirty = true;
        if let Some(snap) = self.take_snapshot() {
            next.restore(&snap)?;
        }
        next.dirty = true;
        *self = next;
        Ok(())
    }

    /// Restores stored state. A snapshot this version cannot read is
    /// reported and ignored: detection starts afresh rather than not at all.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snap = read_snapshot(bytes)?;
        self.clock = snap.clock;
        for (name, c) in snap.clusters {
            self.state
                .insert(name, ClusterState::restore(c, self.settings.max_entries));
        }
        Ok(())
    }
}

/// A stored snapshot, if this version of kaudit can read it.
fn read_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    let snap: Snapshot = serde_json::from_slice(bytes)
        .map_err(|e| format!("the stored token-detector state is unreadable: {e}"))?;
    if snap.version != SNAPSHOT_VERSION {
        return Err(format!(
            "the stored token-detector state is version {}, this kaudit reads {SNAPSHOT_VERSION}",
            snap.version
        ));
    }
    Ok(snap)
}

/// Whether any token detector can care about `ev`: the cheap test that
/// lets ordinary traffic by people and control-plane users through.
fn relevant(ev: &AuditEvent<'_>) -> bool {
    let user = ev.username();
    user.starts_with(SA_PREFIX)
        || user.starts_with(NODE_PREFIX)
        || ev.resource() == "secrets"
        || ev.resource() == "serviceaccounts"
        || ev.resource().starts_with("selfsubject")
        || ev.response_code() == Some(403)
        || ev
            .annotations
            .iter()
            .any(|(k, _)| k.starts_with("authentication.k8s.io/"))
}

fn read<'e, 'a>(
    ev: &'e AuditEvent<'a>,
    cluster: &'e str,
    cfg: Option<&ClusterConfig>,
    t: Time,
) -> Req<'e, 'a> {
    let user = ev.username();
    let service_account = user
        .strip_prefix(SA_PREFIX)
        .and_then(|rest| rest.split_once(':'));
    let node = user.strip_prefix(NODE_PREFIX).filter(|n| !n.is_empty());
    let first = |key: &str| {
        ev.user
            .extra(key)
            .first()
            .map(|v| v.as_ref())
            .filter(|v| !v.is_empty())
    };
    let proxies = cfg.map(|c| &c.trusted_proxies[..]).unwrap_or(&[]);
    Req {
        ev,
        cluster,
        user,
        service_account,
        node,
        src: place::pick(&ev.source_ips, proxies),
        t,
        credential: first(CREDENTIAL_ID),
        pod: first(POD_NAME),
        bound_node: first(NODE_NAME),
        family: client::family(ev.user_agent.as_deref().unwrap_or("")),
        code: ev.response_code(),
    }
}

/// Whether `id` is a token detector a `disable` list may name.
pub fn known_ids() -> HashSet<&'static str> {
    RULES.iter().map(|r| r.meta.id.as_str()).collect()
}

#[cfg(test)]
mod tests;
