//! One token's life: minted by a TokenRequest (token-minted-by-user), used
//! from one place, then from another (token-replayed), or used from
//! somewhere other than where it was minted
//! (token-issued-then-used-elsewhere).

use serde::Deserialize;
use serde_json::json;

use super::bound::display_agent;
use super::rules::{ISSUED_THEN_USED_ELSEWHERE, MINTED_BY_USER, REPLAYED};
use super::state::{Addrs, Ident, Issued, Place};
use super::{CONTROLLER_MANAGER, Req, Run};
use crate::finding::Severity;

const ISSUED_ID: &str = "authentication.kubernetes.io/issued-credential-id";
/// Addresses remembered per credential id.
const CREDENTIAL_ADDRS: usize = 8;

/// token-replayed: one credential id from a second address within the window.
pub fn replayed(run: &mut Run<'_>, r: &Req<'_, '_>) {
    let Some(cred) = r.credential.filter(|c| c.starts_with("JTI=")) else {
        return;
    };
    if r.service_account.is_none() {
        return;
    }
    let Some(addr) = r.addr() else { return };
    // Loopback is the control-plane host itself, whichever address it
    // also uses: not a second place.
    if addr.is_loopback() {
        return;
    }
    let trusted = run.nets.trusted(&addr);
    let window = run.settings.replay_window;
    let Some(uses) = run.state.creds.entry(cred, Addrs::default) else {
        return;
    };
    // The history (a few addresses, however old) says whether this address
    // is new for the token; the window says whether it is a replay.
    let new_here = !uses.contains(&addr);
    let had_history = !uses.0.is_empty();
    let others: Vec<(std::net::IpAddr, i64)> = uses
        .0
        .iter()
        .filter(|(a, t)| *a != addr && r.t.saturating_sub(*t) <= window)
        .copied()
        .collect();
    uses.touch(addr, r.t, CREDENTIAL_ADDRS);
    if new_here && had_history {
        // For token-recon: this token just turned up somewhere new.
        if let Some(id) = run.state.idents.entry(r.user, Ident::default) {
            id.new_place = Some((Place::Addr(addr), r.t));
        }
    }
    // Trusted addresses (CI runners, bastions) may share a token with
    // each other; a use there is not a replay, nor a witness of one.
    let others: Vec<_> = others
        .into_iter()
        .filter(|(a, _)| !run.nets.trusted(a))
        .collect();
    if trusted || !new_here || others.is_empty() || !run.enabled(REPLAYED) {
        return;
    }
    let external = !run.nets.internal(&addr) || others.iter().any(|(a, _)| !run.nets.internal(a));
    let list: Vec<String> = others.iter().map(|(a, _)| a.to_string()).collect();
    let summary = format!(
        "{}'s token {cred} was used from {addr} and, within {} minutes, from {}",
        r.user,
        window / 60,
        list.join(", ")
    );
    run.emit(
        REPLAYED,
        r.ev,
        if external {
            Severity::Critical
        } else {
            Severity::High
        },
        summary,
        json!({
            "credential_id": cred,
            "address": addr.to_string(),
            "other_addresses": others.iter().map(|(a, t)| json!({
                "address": a.to_string(),
                "last_seen": crate::timespec::unix_to_rfc3339(*t),
            })).collect::<Vec<_>>(),
            "window_seconds": window,
            "bound_pod": r.pod,
            "user_agent": r.user_agent(),
            "why": "a token is used by one client in one place; the same token id from two addresses means it was copied",
        }),
    );
}

/// The parts of a TokenRequest body the detectors read.
#[derive(Deserialize, Default)]
struct TokenRequest {
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    expiration_seconds: Option<i64>,
    #[serde(default)]
    audiences: Vec<String>,
    bound_object_ref: Option<BoundObject>,
}

/// The TokenRequest as answered (RequestResponse level).
#[derive(Deserialize, Default)]
struct TokenResponse {
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Status {
    expiration_timestamp: Option<String>,
}

#[derive(Deserialize)]
struct BoundObject {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

fn is_token_request(r: &Req<'_, '_>) -> bool {
    r.ev.resource() == "serviceaccounts" && r.ev.subresource() == "token" && r.ev.verb() == "create"
}

/// Kubelets mint tokens for their pods and the controller manager for its
/// controllers: that is how bound tokens work.
fn routine_minter(r: &Req<'_, '_>) -> bool {
    r.node.is_some() || r.user == CONTROLLER_MANAGER
}

/// token-minted-by-user on the TokenRequest; remembers the issued id.
pub fn minted(run: &mut Run<'_>, r: &Req<'_, '_>) {
    if !is_token_request(r) || !r.succeeded() || routine_minter(r) || run.automation(r.user) {
        return;
    }
    let body: TokenRequest =
        r.ev.request_object
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default();
    let ns = r.ev.namespace();
    let sa = format!("{ns}/{}", r.ev.name());
    let issued = r.ev.annotation(ISSUED_ID).filter(|v| !v.is_empty());
    let expiration = body.spec.expiration_seconds;
    if let Some(id) = issued {
        // The real expiry when the response or the request says it; else
        // issued_ttl. Memory is bounded by the table, not by the expiry.
        let expires =
            r.ev.response_object
                .and_then(|raw| serde_json::from_str::<TokenResponse>(raw.get()).ok())
                .and_then(|t| t.status.expiration_timestamp)
                .and_then(|ts| crate::timespec::rfc3339_to_unix(&ts))
                .or_else(|| expiration.map(|e| r.t.saturating_add(e.max(60))))
                .unwrap_or_else(|| r.t.saturating_add(run.settings.issued_ttl));
        run.state.issued.insert(
            id.to_owned(),
            Issued {
                by: r.user.to_owned(),
                addr: r.addr(),
                family: r.family.to_string(),
                service_account: sa.clone(),
                request: r.ev.audit_id().chars().take(64).collect(),
                at: r.t,
                expires,
                reported: false,
            },
        );
    }
    let long = expiration.is_some_and(|e| e > 86_400);
    let kube = ns == "kube-system";
    let mut why = vec![format!(
        "{} is neither a kubelet nor the controller manager, the identities that mint tokens as their job",
        r.user
    )];
    if long {
        why.push(format!(
            "it asked for {} hours, longer than a day",
            expiration.unwrap_or(0) / 3600
        ));
    }
    if kube {
        why.push("the service account is a kube-system one".to_owned());
    }
    let summary = format!(
        "{} minted a token for service account {sa}{} from {}",
        r.user,
        match expiration {
            Some(e) => format!(" valid for {}", human_duration(e)),
            None => String::new(),
        },
        r.addr()
            .map_or("an unknown address".to_owned(), |a| a.to_string())
    );
    run.emit(
        MINTED_BY_USER,
        r.ev,
        if long || kube {
            Severity::High
        } else {
            Severity::Medium
        },
        summary,
        json!({
            "service_account": sa,
            "expiration_seconds": expiration,
            "audiences": body.spec.audiences,
            "bound_object": body.spec.bound_object_ref.map(|b| format!("{}/{}", b.kind, b.name)),
            "issued_credential_id": issued,
            "source_ip": r.addr().map(|a| a.to_string()),
            "user_agent": r.user_agent(),
            "why": why.join("; "),
        }),
    );
}

/// token-issued-then-used-elsewhere: a hand-minted token in use from
/// another address or another client family than the one that minted it.
pub fn issued_then_used(run: &mut Run<'_>, r: &Req<'_, '_>) {
    let (Some(cred), Some(_)) = (r.credential, r.service_account) else {
        return;
    };
    let addr = r.addr();
    // Handed to a trusted runner or bastion: where such tokens belong.
    if addr.is_some_and(|a| run.nets.trusted(&a)) {
        return;
    }
    let enabled = run.enabled(ISSUED_THEN_USED_ELSEWHERE);
    let Some(issued) = run.state.issued.get_mut(cred) else {
        return;
    };
    if issued.reported || r.t > issued.expires.saturating_add(300) {
        return;
    }
    let other_addr = addr.is_some() && issued.addr.is_some() && addr != issued.addr;
    let other_client = *r.family != *issued.family;
    if !(other_addr || other_client) {
        return;
    }
    issued.reported = true;
    let issued = issued.clone();
    if !enabled {
        return;
    }
    let used_from = addr.map_or("-".to_owned(), |a| a.to_string());
    let minted_from = issued.addr.map_or("-".to_owned(), |a| a.to_string());
    let mut why = Vec::new();
    if other_addr {
        why.push(format!("minted from {minted_from}, used from {used_from}"));
    }
    if other_client {
        why.push(format!(
            "minted with {}, used with {}",
            issued.family, r.family
        ));
    }
    let summary = format!(
        "Token {cred} for {} that {} minted was used from {used_from} with {}",
        issued.service_account,
        issued.by,
        display_agent(r.user_agent())
    );
    run.emit(
        ISSUED_THEN_USED_ELSEWHERE,
        r.ev,
        Severity::High,
        summary,
        json!({
            "credential_id": cred,
            "issued_by": issued.by,
            "issued_from": minted_from,
            "issued_client": issued.family,
            "issued_at": crate::timespec::unix_to_rfc3339(issued.at),
            "used_from": used_from,
            "used_client": r.family,
            "related": [issued.request],
            "why": why.join("; "),
        }),
    );
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}
