//! Where in-cluster credentials are used from: token-outside-cluster and
//! token-bound-pod-elsewhere, and the node addresses both rely on, learned
//! from the kubelets' own requests (`system:node:NAME`).

use serde_json::json;

use super::rules::{BOUND_POD_ELSEWHERE, OUTSIDE_CLUSTER};
use super::state::Addrs;
use super::{Req, Run};
use crate::finding::Severity;

/// Addresses remembered per node.
const NODE_ADDRS: usize = 4;

/// A kubelet's request shows one of its node's addresses. Only addresses
/// that could be a node's are learned (a node credential used from the
/// internet must not teach that the internet is that node), and only the
/// address the API server saw, never a forwarded-for value.
pub fn learn_node(run: &mut Run<'_>, r: &Req<'_, '_>) {
    let (Some(node), Some(addr)) = (r.node, r.addr()) else {
        return;
    };
    if !run.nets.node_candidate(&addr) || addr.is_loopback() {
        return;
    }
    // An address another node used recently stays that node's: a node
    // credential used from it does not take it over (a stolen kubelet
    // credential must not move a node's address to itself).
    let owner = run.state.node_of.peek(&addr).cloned();
    if let Some(other) = owner.as_deref().filter(|o| *o != node) {
        let recent = run.state.nodes.peek(other).is_some_and(|a| {
            a.0.iter()
                .any(|(ip, t)| *ip == addr && r.t.saturating_sub(*t) < run.settings.replay_window)
        });
        if recent {
            return;
        }
    }
    if let Some(addrs) = run.state.nodes.entry(node, Addrs::default) {
        addrs.touch(addr, r.t, NODE_ADDRS);
    }
    // Kubelets talk every few seconds: rewrite the reverse entry only when
    // the address changed hands.
    if owner.as_deref() != Some(node) {
        run.state.node_of.insert(addr, node.to_owned());
    }
}

/// A service-account or node identity authenticated from outside the
/// cluster's networks.
pub fn outside_cluster(run: &mut Run<'_>, r: &Req<'_, '_>) {
    if !run.enabled(OUTSIDE_CLUSTER) || !r.in_cluster_identity() {
        return;
    }
    let Some(src) = &r.src else { return };
    let addr = src.addr;
    if run.nets.internal(&addr) || run.nets.trusted(&addr) {
        return;
    }
    if !run.first_in(
        format!("outside|{}|{addr}", r.user),
        r.t,
        run.settings.replay_window,
    ) {
        return;
    }
    let spoofed: Vec<String> = src
        .forwarded
        .iter()
        .filter(|a| run.nets.internal(a))
        .map(|a| a.to_string())
        .collect();
    let what = if r.node.is_some() {
        "node credential"
    } else {
        "service-account token"
    };
    let mut why = format!(
        "{addr} is outside {} and not a trusted address; a {what} is meant to be used from inside the cluster",
        run.nets.describe()
    );
    if !spoofed.is_empty() {
        why.push_str(&format!(
            "; the client also sent X-Forwarded-For {} to pass as internal",
            spoofed.join(", ")
        ));
    }
    let severity = if r.node.is_some() || !spoofed.is_empty() {
        Severity::Critical
    } else {
        Severity::High
    };
    let summary = format!(
        "{} ({what}) was used from {addr}, outside cluster {}, with {}",
        r.user,
        r.cluster,
        display_agent(r.user_agent())
    );
    run.emit(
        OUTSIDE_CLUSTER,
        r.ev,
        severity,
        summary,
        json!({
            "address": addr.to_string(),
            "forwarded_for": src.forwarded.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "internal_networks": run.nets.describe(),
            "credential_id": r.credential,
            "bound_pod": r.pod,
            "bound_node": r.bound_node,
            "user_agent": r.user_agent(),
            "why": why,
        }),
    );
}

/// A token bound to a pod used from neither the pod networks nor an
/// address its node uses, or from another node's address.
pub fn bound_pod_elsewhere(run: &mut Run<'_>, r: &Req<'_, '_>) {
    if !run.enabled(BOUND_POD_ELSEWHERE) || r.service_account.is_none() {
        return;
    }
    if r.pod.is_none() && r.bound_node.is_none() {
        return;
    }
    let Some(addr) = r.addr() else { return };
    if addr.is_loopback() || run.nets.trusted(&addr) {
        return;
    }
    let known = r.bound_node.and_then(|n| run.state.nodes.peek(n));
    // The common case, a pod on a hostNetwork or a kubelet-side client:
    // settled without formatting an address.
    if known.is_some_and(|a| a.0.iter().any(|(ip, _)| *ip == addr)) {
        return;
    }
    let node_addrs: Vec<String> = known
        .map(|a| a.0.iter().map(|(ip, _)| ip.to_string()).collect())
        .unwrap_or_default();
    let other = run.state.other_node(&addr, r.bound_node).map(str::to_owned);
    let in_pods = run.nets.pod(&addr);
    let pod = r.pod.unwrap_or("-");
    let node = r.bound_node.unwrap_or("-");
    // The bound node's addresses are not known yet (a fresh start, an
    // evicted entry) and this could be one: a hostNetwork pod on its node.
    if node_addrs.is_empty() && other.is_none() && run.nets.node_candidate(&addr) {
        return;
    }
    let why = match &other {
        Some(o) => format!(
            "{addr} is an address of node {o}, but the token is bound to pod {pod} on node {node}"
        ),
        None if in_pods => return,
        None if node_addrs.is_empty() => format!(
            "{addr} is not in the pod networks ({}) and no address of node {node} has been seen yet",
            run.nets.describe()
        ),
        None => format!(
            "{addr} is not in the pod networks ({}) nor one of node {node}'s addresses ({})",
            run.nets.describe(),
            node_addrs.join(", ")
        ),
    };
    let key = format!("bound|{}|{addr}", r.credential.unwrap_or(pod));
    if !run.first_in(key, r.t, run.settings.replay_window) {
        return;
    }
    let external = !run.nets.internal(&addr);
    let severity = if external {
        Severity::Critical
    } else {
        Severity::High
    };
    let summary = format!(
        "{}'s token, bound to pod {pod} on node {node}, was used from {addr}{}",
        r.user,
        match (&other, external) {
            (Some(o), _) => format!(" (node {o})"),
            (None, true) => " outside the cluster".to_owned(),
            (None, false) => String::new(),
        }
    );
    run.emit(
        BOUND_POD_ELSEWHERE,
        r.ev,
        severity,
        summary,
        json!({
            "address": addr.to_string(),
            "bound_pod": r.pod,
            "bound_node": r.bound_node,
            "node_addresses": node_addrs,
            "address_node": other,
            "credential_id": r.credential,
            "user_agent": r.user_agent(),
            "why": why,
        }),
    );
}

/// A user agent for a summary: quoted, or "no user agent".
pub fn display_agent(ua: &str) -> String {
    if ua.is_empty() {
        "no user agent".to_owned()
    } else {
        let short: String = ua.chars().take(80).collect();
        format!("user agent {short:?}")
    }
}
