//! The token detectors' rule descriptions: id, title, base severity,
//! category, MITRE techniques, and which catalogue rules each refines.
//!
//! A detector that refines a catalogue rule *supersedes* it: when both
//! fire on one request, only the detector's finding is kept, at the higher
//! of the two severities, so one request never yields two findings that
//! say the same thing.

use std::sync::LazyLock;

use crate::finding::{RuleMeta, Severity};

pub struct TokenRule {
    pub meta: RuleMeta,
    /// Catalogue rules whose finding on the same request this one replaces.
    pub supersedes: &'static [&'static str],
    /// What it looks for, one paragraph (for `kaudit rules list` and docs).
    pub description: &'static str,
}

fn rule(
    id: &str,
    title: &str,
    severity: Severity,
    category: &str,
    mitre: &[&str],
    supersedes: &'static [&'static str],
    description: &'static str,
) -> TokenRule {
    TokenRule {
        meta: RuleMeta::builtin(id, title, severity, category, mitre),
        supersedes,
        description,
    }
}

pub const OUTSIDE_CLUSTER: usize = 0;
pub const BOUND_POD_ELSEWHERE: usize = 1;
pub const REPLAYED: usize = 2;
pub const ISSUED_THEN_USED_ELSEWHERE: usize = 3;
pub const INTERACTIVE_CLIENT: usize = 4;
pub const MINTED_BY_USER: usize = 5;
pub const LEGACY_USED: usize = 6;
pub const LEGACY_INVALIDATED: usize = 7;
pub const STALE: usize = 8;
pub const SECRET_READ: usize = 9;
pub const RECON: usize = 10;
pub const FORBIDDEN_BURST: usize = 11;
pub const COUNT: usize = 12;

/// Every token detector, indexed by the constants above.
pub static RULES: LazyLock<Vec<TokenRule>> = LazyLock::new(|| {
    use Severity::*;
    vec![
        rule(
            "token-outside-cluster",
            "Service-account or node credential used from outside the cluster",
            High,
            "token",
            &["T1078.004", "T1528"],
            &[],
            "A system:serviceaccount:* or system:node:* identity authenticated from an address outside the cluster's networks (configured per cluster; private ranges when none are) and not trusted. Critical for node credentials, and when X-Forwarded-For claimed an internal address. Reported once per identity and address per replay window.",
        ),
        rule(
            "token-bound-pod-elsewhere",
            "Pod-bound token used away from its pod and node",
            High,
            "token",
            &["T1528", "T1550.001"],
            &[],
            "A token bound to a pod (user.extra pod-name / node-name) was used from an address that is neither in the pod networks nor one its node uses, or that belongs to another node. Node addresses are learned from the kubelets' own requests. Critical when the address is outside the cluster.",
        ),
        rule(
            "token-replayed",
            "One token used from several addresses",
            High,
            "token",
            &["T1550.001"],
            &[],
            "One credential id (user.extra credential-id JTI=...) was seen from two or more source addresses within the replay window (default 1 h): a copied token. Critical when one of them is outside the cluster.",
        ),
        rule(
            "token-issued-then-used-elsewhere",
            "Token minted by hand and then used from somewhere else",
            High,
            "token",
            &["T1528", "T1550.001"],
            &[],
            "A TokenRequest by anyone but a kubelet or the controller manager issued a credential id that was later used from another address, or by another client family, than the requester's.",
        ),
        rule(
            "token-interactive-client",
            "Service-account token driven by an interactive client",
            Medium,
            "token",
            &["T1078.004", "T1059"],
            &[],
            "A service-account token was used by kubectl, curl, wget, python-requests, Postman, Go's default client and the like, from outside the pod networks. High from outside the cluster. Trusted user agents and automation identities are exempt.",
        ),
        rule(
            "token-minted-by-user",
            "Service-account token minted by someone other than a kubelet",
            Medium,
            "token",
            &["T1528", "T1098"],
            &[],
            "A TokenRequest (create serviceaccounts/token) by anyone but kubelets, the controller manager and automation identities. High when it asks for more than 24 hours or the service account is in kube-system.",
        ),
        rule(
            "legacy-token-used",
            "Legacy secret-based service-account token used",
            Low,
            "token",
            &["T1078.004"],
            &[],
            "A long-lived token from a kubernetes.io/service-account-token secret authenticated a request (annotation authentication.k8s.io/legacy-token). Reported once per identity per repeat interval.",
        ),
        rule(
            "legacy-token-invalidated",
            "Invalidated legacy token tried",
            High,
            "token",
            &["T1078.004", "T1110"],
            &[],
            "Someone presented a legacy secret-based token that Kubernetes had invalidated (annotation authentication.k8s.io/legacy-token-invalidated): authentication failed, so the user may be empty. An old leaked token being tried. Reported once per secret and address per replay window.",
        ),
        rule(
            "stale-token",
            "Bound token used past its warn-after time",
            Medium,
            "token",
            &["T1078.004"],
            &[],
            "A bound service-account token was used after the time its issuer said clients should have refreshed it (annotation authentication.k8s.io/stale-token): an old client library, or a token copied out of its pod. Reported once per identity per repeat interval.",
        ),
        rule(
            "token-secret-read",
            "Secrets read across namespaces or by a person",
            Medium,
            "token",
            &["T1552.007", "T1528"],
            &["k8s-secret-get", "service-account-token-secret-created"],
            "Secrets were read (get, list, watch) in a namespace by a service account of another namespace (high) or by a person (medium), or a kubernetes.io/service-account-token secret was created (a long-lived token minted; needs the request body). Reads in the kube namespaces and cluster-wide lists are secret-read-kube-system and secrets-listed-cluster-wide.",
        ),
        rule(
            "token-recon",
            "Service account enumerated its permissions from somewhere new",
            Medium,
            "token",
            &["T1613", "T1069", "T1087"],
            &["rbac-self-permission-review"],
            "A service account created a SelfSubjectAccessReview, SelfSubjectRulesReview or SelfSubjectReview right after (recon window, default 10 min) its token appeared at a new place (high), or for the first time since kaudit has watched it (medium).",
        ),
        rule(
            "token-forbidden-burst",
            "Burst of forbidden requests by one identity",
            Medium,
            "token",
            &["T1613", "T1069"],
            &[],
            "One identity got N forbidden (403) answers (default 10) within a window (default 5 min): a stolen credential probing what it may do. High for service accounts and nodes.",
        ),
    ]
});

/// The catalogue rules a token detector's finding replaces.
pub fn supersedes(rule_id: &str) -> &'static [&'static str] {
    RULES
        .iter()
        .find(|r| r.meta.id == rule_id)
        .map(|r| r.supersedes)
        .unwrap_or(&[])
}
