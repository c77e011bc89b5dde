//! One identity's behaviour over time: the places a service account's
//! token is seen (its pod network, a node, an outside address), token-recon
//! (enumerating its own permissions right after turning up somewhere new,
//! or for the first time) and token-forbidden-burst (many 403s at once).

use serde_json::json;

use super::rules::{FORBIDDEN_BURST, RECON};
use super::state::{Burst, Ident, Place};
use super::{Req, Run};
use crate::event::Stage;
use crate::finding::Severity;

/// Places remembered per identity.
const PLACES: usize = 8;
/// Distinct (verb, resource, namespace) a burst of refusals must span.
const MIN_BURST_TARGETS: usize = 3;

/// A short hash of several strings (length-prefixed, so no two lists collide
/// by concatenation).
fn fingerprint(parts: &[&str]) -> u64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Where `r` came from, as a place an identity is seen at.
fn place(run: &Run<'_>, r: &Req<'_, '_>) -> Option<Place> {
    let addr = r.addr()?;
    if let Some(node) = run.state.node_of.peek(&addr) {
        return Some(Place::Node(node.clone()));
    }
    if addr.is_loopback() || run.nets.pod(&addr) {
        return Some(Place::PodNetwork);
    }
    Some(Place::Addr(addr))
}

/// Records where a service account without a token id (a legacy token)
/// was seen; a place it had not been before (when it had been somewhere)
/// is remembered as new. Tokens with an id are followed per token instead
/// (`credential::replayed`): a pod keeps its address for its life, so a
/// token at a new address is news, while a new pod is not.
pub fn track(run: &mut Run<'_>, r: &Req<'_, '_>) {
    if r.service_account.is_none() || r.credential.is_some_and(|c| c.starts_with("JTI=")) {
        return;
    }
    let Some(p) = place(run, r) else { return };
    let Some(id) = run.state.idents.entry(r.user, Ident::default) else {
        return;
    };
    if let Some(e) = id.places.iter_mut().find(|(q, _)| *q == p) {
        e.1 = e.1.max(r.t);
        return;
    }
    if !id.places.is_empty() {
        id.new_place = Some((p.clone(), r.t));
    }
    if id.places.len() >= PLACES {
        id.places.remove(0);
    }
    id.places.push((p, r.t));
}

/// token-recon.
pub fn recon(run: &mut Run<'_>, r: &Req<'_, '_>) {
    let ev = r.ev;
    if r.service_account.is_none()
        || !ev.resource().starts_with("selfsubject")
        || ev.verb() != "create"
        || !r.succeeded()
        || run.automation(r.user)
        || run.lists.self_review_users.contains(r.user)
    {
        return;
    }
    let window = run.settings.recon_window;
    let Some(id) = run.state.idents.entry(r.user, Ident::default) else {
        return;
    };
    let audit_id = ev.audit_id.as_deref().unwrap_or("");
    let first = !id.reviewed || id.first_review.as_deref() == Some(audit_id);
    if !id.reviewed && !audit_id.is_empty() {
        id.first_review = Some(audit_id.chars().take(64).collect());
    }
    id.reviewed = true;
    let recent = id
        .new_place
        .clone()
        .filter(|(_, at)| r.t >= *at && r.t - *at <= window);
    let (severity, why) = match (&recent, first) {
        (Some((p, at)), _) => (
            Severity::High,
            format!(
                "its token turned up at {p} {} seconds earlier, somewhere it had not been used before, and it then asked what it may do",
                r.t - at
            ),
        ),
        (None, true) => (
            Severity::Medium,
            "it had not enumerated its own permissions before (since kaudit has watched it)"
                .to_owned(),
        ),
        (None, false) => return,
    };
    let summary = format!(
        "{} enumerated its own permissions ({}) from {}",
        r.user,
        ev.resource(),
        r.addr()
            .map_or("an unknown address".to_owned(), |a| a.to_string())
    );
    run.emit(
        RECON,
        ev,
        severity,
        summary,
        json!({
            "review": ev.resource(),
            "new_place": recent.as_ref().map(|(p, _)| p.to_string()),
            "first_review": first,
            "source_ip": r.addr().map(|a| a.to_string()),
            "user_agent": r.user_agent(),
            "why": why,
        }),
    );
}

/// token-forbidden-burst: `count` forbidden answers within `window`.
pub fn forbidden_burst(run: &mut Run<'_>, r: &Req<'_, '_>) {
    let ev = r.ev;
    if r.code != Some(403)
        || r.user.is_empty()
        || r.user == "system:anonymous"
        || ev.stage == Some(Stage::ResponseStarted)
    {
        return;
    }
    let count = run.settings.forbidden_burst.count;
    let window = run.settings.forbidden_burst.window;
    let fp = fingerprint(&[
        ev.audit_id(),
        ev.request_received_timestamp.as_deref().unwrap_or(""),
        ev.verb(),
        ev.request_uri.as_deref().unwrap_or(""),
    ]);
    let target = fingerprint(&[ev.verb(), ev.resource(), ev.subresource(), ev.namespace()]);
    let Some(b) = run.state.bursts.entry(r.user, Burst::default) else {
        return;
    };
    if b.hits.iter().any(|(_, f, _)| *f == fp) {
        return; // another copy of a request already counted
    }
    b.hits.push_back((r.t, fp, target));
    b.ids.push_back(ev.audit_id().chars().take(64).collect());
    while b.hits.front().is_some_and(|(t, _, _)| r.t - *t > window) || b.hits.len() > count {
        b.hits.pop_front();
        b.ids.pop_front();
    }
    if b.hits.len() < count || b.fired_at.is_some_and(|f| r.t >= f && r.t - f <= window) {
        return;
    }
    // One request retried over and over (a controller missing one
    // permission) is a misconfiguration, not a probe: a probe tries
    // several things.
    let mut targets: Vec<u64> = b.hits.iter().map(|(_, _, t)| *t).collect();
    targets.sort_unstable();
    targets.dedup();
    if targets.len() < MIN_BURST_TARGETS {
        return;
    }
    b.fired_at = Some(r.t);
    b.hits.clear();
    let related: Vec<String> = b.ids.drain(..).collect();
    let severity = if r.in_cluster_identity() {
        Severity::High
    } else {
        Severity::Medium
    };
    let summary = format!(
        "{} was refused {count} times within {} minutes (last: {} {})",
        r.user,
        window / 60,
        ev.verb(),
        ev.request_uri.as_deref().unwrap_or("-")
    );
    run.emit(
        FORBIDDEN_BURST,
        ev,
        severity,
        summary,
        json!({
            "count": count,
            "distinct_requests": targets.len(),
            "window_seconds": window,
            "related": related,
            "source_ip": r.addr().map(|a| a.to_string()),
            "user_agent": r.user_agent(),
            "why": "clients that know their permissions are rarely refused; many refusals in a row is a credential being tried against what it might reach",
        }),
    );
}
