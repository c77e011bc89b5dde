//! What the token detectors remember about one cluster, and its snapshot.
//!
//! Every table is a bounded [`Table`]: nodes and their addresses (learned
//! from kubelets), credential ids and where they were used, credential ids
//! issued by TokenRequests, identities and the places they were seen,
//! forbidden-answer counters, and when each throttled report last went
//! out. A snapshot is plain serde data written to the store with the
//! findings, so a restart keeps what correctness needs.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::table::Table;

/// Event time, Unix seconds.
pub type Time = i64;

/// Addresses with the time each was last seen, most recent last.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Addrs(pub Vec<(IpAddr, Time)>);

impl Addrs {
    /// Records `addr` at `t`, keeping at most `cap` addresses.
    pub fn touch(&mut self, addr: IpAddr, t: Time, cap: usize) {
        if let Some(i) = self.0.iter().position(|(a, _)| *a == addr) {
            let mut e = self.0.remove(i);
            e.1 = e.1.max(t);
            self.0.push(e);
        } else {
            if self.0.len() >= cap {
                self.0.remove(0);
            }
            self.0.push((addr, t));
        }
    }

    pub fn contains(&self, addr: &IpAddr) -> bool {
        self.0.iter().any(|(a, _)| a == addr)
    }
}

/// A credential id issued by a TokenRequest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    /// Who asked for it.
    pub by: String,
    /// From where, and with which client.
    pub addr: Option<IpAddr>,
    pub family: String,
    /// `namespace/name` of the service account.
    pub service_account: String,
    /// The TokenRequest's auditID.
    pub request: String,
    pub at: Time,
    pub expires: Time,
    /// Already reported as used elsewhere.
    pub reported: bool,
}

/// Where an identity was seen: its pod network, a node, or an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Place {
    PodNetwork,
    Node(String),
    Addr(IpAddr),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::PodNetwork => f.write_str("the pod network"),
            Place::Node(n) => write!(f, "node {n}"),
            Place::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// One identity's history, for token-recon.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ident {
    pub places: Vec<(Place, Time)>,
    /// When, and where, it last showed up somewhere it had not been.
    pub new_place: Option<(Place, Time)>,
    /// It has enumerated its permissions before.
    pub reviewed: bool,
    /// The auditID of its first review (at most 64 characters): the same
    /// request read again (a re-scan, a redelivery) is that first review
    /// again, not a later one.
    pub first_review: Option<String>,
}

/// Recent forbidden answers for one identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Burst {
    /// (time, request fingerprint, target hash), oldest first. A
    /// fingerprint, not the auditID: a client chooses its auditID.
    pub hits: VecDeque<(Time, u64, u64)>,
    /// auditIDs of the hits (at most 64 characters each), for the finding.
    pub ids: VecDeque<String>,
    pub fired_at: Option<Time>,
}

/// All state of one cluster.
pub struct ClusterState {
    pub nodes: Table<String, Addrs>,
    pub node_of: Table<IpAddr, String>,
    pub creds: Table<String, Addrs>,
    pub issued: Table<String, Issued>,
    pub idents: Table<String, Ident>,
    pub bursts: Table<String, Burst>,
    pub reported: Table<String, Time>,
}

/// A cluster's state as read back from the store: what correctness needs
/// across a restart (learned node addresses, issued credential ids, which
/// identities have reviewed their permissions, the throttles). The
/// short-window tables (token addresses, refusal counters) start empty.
#[derive(Debug, Default, Deserialize)]
pub struct ClusterSnapshot {
    #[serde(default)]
    nodes: Vec<(String, Addrs)>,
    #[serde(default)]
    issued: Vec<(String, Issued)>,
    #[serde(default)]
    reviewed: Vec<String>,
    #[serde(default)]
    reported: Vec<(String, Time)>,
    /// (identity, auditID of its first review); absent in older snapshots.
    #[serde(default)]
    first_reviews: Vec<(String, String)>,
}

/// The same, written straight from the tables (no copy of the state).
#[derive(Serialize)]
pub struct ClusterSnapshotRef<'a> {
    nodes: Vec<(&'a String, &'a Addrs)>,
    issued: Vec<(&'a String, &'a Issued)>,
    reviewed: Vec<&'a String>,
    reported: Vec<(&'a String, &'a Time)>,
    first_reviews: Vec<(&'a String, &'a String)>,
}

fn dump<K: std::hash::Hash + Eq + Clone, V>(t: &Table<K, V>) -> Vec<(&K, &V)> {
    t.iter_oldest_first().collect()
}

fn load<K: Clone + std::hash::Hash + Eq, V>(t: &mut Table<K, V>, rows: Vec<(K, V)>) {
    for (k, v) in rows {
        t.insert(k, v);
    }
}

impl ClusterState {
    pub fn new(cap: usize) -> Self {
        ClusterState {
            nodes: Table::new(cap),
            node_of: Table::new(cap),
            creds: Table::new(cap),
            issued: Table::new(cap),
            idents: Table::new(cap),
            bursts: Table::new(cap),
            reported: Table::new(cap),
        }
    }

    /// Entries evicted for want of room, all tables together.
    pub fn evictions(&self) -> u64 {
        self.nodes.evictions()
            + self.node_of.evictions()
            + self.creds.evictions()
            + self.issued.evictions()
            + self.idents.evictions()
            + self.bursts.evictions()
            + self.reported.evictions()
    }

    pub fn entries(&self) -> usize {
        self.nodes.len()
            + self.node_of.len()
            + self.creds.len()
            + self.issued.len()
            + self.idents.len()
            + self.bursts.len()
            + self.reported.len()
    }

    /// Whether `addr` was last learned as another node's than `node`.
    pub fn other_node(&self, addr: &IpAddr, node: Option<&str>) -> Option<&str> {
        self.node_of
            .peek(addr)
            .map(String::as_str)
            .filter(|n| Some(*n) != node)
    }

    pub fn snapshot(&self) -> ClusterSnapshotRef<'_> {
        ClusterSnapshotRef {
            nodes: dump(&self.nodes),
            issued: dump(&self.issued),
            reviewed: self
                .idents
                .iter_oldest_first()
                .filter(|(_, i)| i.reviewed)
                .map(|(k, _)| k)
                .collect(),
            reported: dump(&self.reported),
            first_reviews: self
                .idents
                .iter_oldest_first()
                .filter_map(|(k, i)| i.first_review.as_ref().map(|a| (k, a)))
                .collect(),
        }
    }

    pub fn restore(snap: ClusterSnapshot, cap: usize) -> Self {
        let mut s = ClusterState::new(cap);
        for (node, addrs) in &snap.nodes {
            for (a, _) in &addrs.0 {
                s.node_of.insert(*a, node.clone());
            }
        }
        load(&mut s.nodes, snap.nodes);
        load(&mut s.issued, snap.issued);
        let mut first: std::collections::HashMap<String, String> =
            snap.first_reviews.into_iter().collect();
        for who in snap.reviewed {
            let first_review = first.remove(&who);
            s.idents.insert(
                who,
                Ident {
                    reviewed: true,
                    first_review,
                    ..Ident::default()
                },
            );
        }
        load(&mut s.reported, snap.reported);
        s
    }
}
