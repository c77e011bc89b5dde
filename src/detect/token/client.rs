//! Which client drove a request: the user agent's product name (its
//! "family"), and token-interactive-client, a service-account token driven
//! by a hand-held tool from outside the pod networks.

use std::borrow::Cow;

use serde_json::json;

use super::rules::INTERACTIVE_CLIENT;
use super::{Req, Run};
use crate::config::glob_match;
use crate::finding::Severity;

/// The product token of a user agent, lower-cased: `kubectl/v1.30.2
/// (linux/amd64) kubernetes/abc` → `kubectl`.
pub fn family(ua: &str) -> Cow<'_, str> {
    let end = ua
        .find(|c: char| c == '/' || c.is_whitespace())
        .unwrap_or(ua.len())
        .min(64);
    let name = ua.get(..end).unwrap_or("");
    if name.is_empty() {
        return Cow::Borrowed("unknown");
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// token-interactive-client.
pub fn interactive(run: &mut Run<'_>, r: &Req<'_, '_>) {
    if !run.enabled(INTERACTIVE_CLIENT) || r.service_account.is_none() {
        return;
    }
    let ua = r.user_agent();
    // A product token anywhere in the user agent, at a token boundary: a
    // leading space or a wrapper's prefix does not hide `curl/8.5.0`.
    let Some(m) = run.interactive.find_iter(ua).find(|m| {
        m.start() == 0
            || ua.as_bytes().get(m.start() - 1).is_some_and(|b| {
                b.is_ascii_whitespace() || matches!(b, b'(' | b';' | b',' | b'"' | b'\'')
            })
    }) else {
        return;
    };
    let Some(addr) = r.addr() else { return };
    if run.nets.pod(&addr) || run.nets.trusted(&addr) || run.automation(r.user) {
        return;
    }
    if run
        .cfg
        .is_some_and(|c| c.trusted_user_agents.iter().any(|p| glob_match(p, ua)))
    {
        return;
    }
    if !run.first_in(
        format!("client|{}|{addr}|{}", r.user, r.family),
        r.t,
        run.settings.replay_window,
    ) {
        return;
    }
    let external = !run.nets.internal(&addr);
    let tool = ua.get(m.range()).unwrap_or("");
    let summary = format!(
        "{}'s token was driven by {} from {addr}{}",
        r.user,
        r.family,
        if external {
            ", outside the cluster"
        } else {
            ""
        }
    );
    run.emit(
        INTERACTIVE_CLIENT,
        r.ev,
        if external {
            Severity::High
        } else {
            Severity::Medium
        },
        summary,
        json!({
            "user_agent": ua,
            "client": r.family,
            "matched": tool,
            "address": addr.to_string(),
            "bound_pod": r.pod,
            "why": format!(
                "workloads use their token through their own client library; {} is a tool people drive by hand, here from {addr}, which is not in the pod networks",
                r.family
            ),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(
            family("kubectl/v1.30.2 (linux/amd64) kubernetes/3968350"),
            "kubectl"
        );
        assert_eq!(family("Go-http-client/1.1"), "go-http-client");
        assert_eq!(family("python-requests/2.31.0"), "python-requests");
        assert_eq!(family(""), "unknown");
        assert_eq!(family("Mozilla/5.0 (X11)"), "mozilla");
    }
}
