//! token-secret-read: secrets read in a namespace by a service account of
//! another namespace or by a person, and long-lived service-account token
//! secrets created.
//!
//! It refines the catalogue's k8s-secret-get and
//! service-account-token-secret-created (it supersedes them on the same
//! request); reads in the kube namespaces and cluster-wide lists stay with
//! secret-read-kube-system and secrets-listed-cluster-wide, which do not
//! overlap it.

use serde_json::json;

use super::rules::SECRET_READ;
use super::{CONTROLLER_MANAGER, Req, Run};
use crate::finding::Severity;

const KUBE_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
const TOKEN_SECRET: &str = "kubernetes.io/service-account-token";

/// Not a person: Kubernetes' own identities and the managed services'.
fn system_identity(user: &str) -> bool {
    user.is_empty() || user.starts_with("system:") || user.starts_with("eks:")
}

/// The controller manager's own controllers, when it runs with
/// `--use-service-account-credentials` (the namespace controller lists the
/// secrets of every namespace it deletes, the garbage collector reads
/// what it collects).
fn control_plane_controller(user: &str) -> bool {
    user.strip_prefix("system:serviceaccount:kube-system:")
        .is_some_and(|name| {
            name.ends_with("-controller")
                || matches!(
                    name,
                    "generic-garbage-collector"
                        | "horizontal-pod-autoscaler"
                        | "persistent-volume-binder"
                        | "token-cleaner"
                        | "bootstrap-signer"
                        | "legacy-service-account-token-cleaner"
                        | "resourcequota-controller"
                )
        })
}

pub fn read(run: &mut Run<'_>, r: &Req<'_, '_>) {
    let ev = r.ev;
    if !run.enabled(SECRET_READ)
        || ev.resource() != "secrets"
        || !ev.subresource().is_empty()
        || !r.succeeded()
    {
        return;
    }
    let ns = ev.namespace();
    let verb = ev.verb();
    if run.automation(r.user) || control_plane_controller(r.user) {
        return;
    }
    let source_ip = r.addr().map(|a| a.to_string());
    let (severity, why) = match verb {
        "get" | "list" | "watch" => {
            if ns.is_empty() || KUBE_NAMESPACES.contains(&ns) {
                return;
            }
            match r.service_account {
                Some((own, _)) if own != ns => (
                    Severity::High,
                    format!(
                        "a service account of namespace {own} read secrets of namespace {ns}: workloads read their own namespace's secrets, reaching into another's is how a stolen token collects credentials"
                    ),
                ),
                Some(_) => return,
                None if system_identity(r.user) => return,
                None => (
                    Severity::Medium,
                    format!(
                        "a person read secrets of namespace {ns}: secrets hold tokens and passwords that people rarely need to see"
                    ),
                ),
            }
        }
        "create" => {
            if r.user == CONTROLLER_MANAGER
                || run.lists.token_controllers.contains(r.user)
                || !created_token_secret(r)
            {
                return;
            }
            (
                if KUBE_NAMESPACES.contains(&ns) {
                    Severity::High
                } else {
                    Severity::Medium
                },
                "a kubernetes.io/service-account-token secret holds a token that never expires and is bound to no pod: a durable credential that survives the pod and is easily carried out".to_owned(),
            )
        }
        _ => return,
    };
    // Informers list and re-watch on every resync: one report per identity,
    // namespace and verb per window (each read of a named secret is its own).
    if matches!(verb, "list" | "watch")
        && !run.first_in(
            format!("secrets|{}|{ns}|{verb}", r.user),
            r.t,
            run.settings.replay_window,
        )
    {
        return;
    }
    let target = if ev.name().is_empty() {
        format!("the secrets of {ns}")
    } else {
        format!("secret {ns}/{}", ev.name())
    };
    let summary = if verb == "create" {
        format!(
            "{} created long-lived token {target} for service account {}",
            r.user,
            token_secret_account(r).unwrap_or_else(|| "?".to_owned())
        )
    } else {
        format!(
            "{} {} {target} from {}",
            r.user,
            past(verb),
            source_ip.as_deref().unwrap_or("an unknown address")
        )
    };
    run.emit(
        SECRET_READ,
        ev,
        severity,
        summary,
        json!({
            "secret_name": ev.name(),
            "namespace": ns,
            "service_account": token_secret_account(r),
            "source_ip": source_ip,
            "user_agent": r.user_agent(),
            "why": why,
        }),
    );
}

fn past(verb: &str) -> &str {
    match verb {
        "get" => "read",
        "list" => "listed",
        _ => "watched",
    }
}

/// The request body, when logged, creates a service-account token secret.
fn created_token_secret(r: &Req<'_, '_>) -> bool {
    #[derive(serde::Deserialize)]
    struct Secret<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    r.ev.request_object
        .and_then(|raw| serde_json::from_str::<Secret<'_>>(raw.get()).ok())
        .and_then(|s| s.kind)
        .is_some_and(|k| k == TOKEN_SECRET)
}

/// `kubernetes.io/service-account.name` of a created token secret.
fn token_secret_account(r: &Req<'_, '_>) -> Option<String> {
    let raw = r.ev.request_object?;
    let v: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    v.pointer("/metadata/annotations/kubernetes.io~1service-account.name")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
}
