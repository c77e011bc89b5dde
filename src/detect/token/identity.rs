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

/// Records where a service account was seen; a place it had not been
/// before (when it had been somewhere) is remembered as new.
pub fn track(run: &mut Run<'_>, r: &Req<'_, '_>) {
    if r.service_account.is_none() {
        return;
    }
    let Some(p) = place(run, r) else { return };
    let id = run.state.idents.entry(&r.user.to_owned(), Ident::default);
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
    {
        return;
    }
    let window = run.settings.recon_window;
    let Some(id) = run.state.idents.get_mut(&r.user.to_owned()) else {
        return;
    };
    let first = !id.reviewed;
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
    let b = run.state.bursts.entry(&r.user.to_owned(), Burst::default);
    if b.hits.iter().any(|(_, id)| id == ev.audit_id()) {
        return; // another copy of a request already counted
    }
    b.hits.push_back((r.t, ev.audit_id().to_owned()));
    while b.hits.front().is_some_and(|(t, _)| r.t - *t > window) || b.hits.len() > count {
        b.hits.pop_front();
    }
    if b.hits.len() < count || b.fired_at.is_some_and(|f| r.t >= f && r.t - f <= window) {
        return;
    }
    b.fired_at = Some(r.t);
    let related: Vec<String> = b.hits.drain(..).map(|(_, id)| id).collect();
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
            "window_seconds": window,
            "related": related,
            "source_ip": r.addr().map(|a| a.to_string()),
            "user_agent": r.user_agent(),
            "why": "clients that know their permissions are rarely refused; many refusals in a row is a credential being tried against what it might reach",
        }),
    );
}
