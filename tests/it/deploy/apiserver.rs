//! deploy/apiserver/: the audit policy, evaluated the way the API server
//! does (first matching rule), gives the detections the levels they need
//! and never logs a credential's body; the webhook kubeconfig is well formed
//! and points at the webhook source kaudit's ConfigMap configures.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Policy {
    api_version: String,
    kind: String,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[serde(default)]
    omit_managed_fields: bool,
    rules: Vec<PolicyRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyRule {
    level: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// A request as the policy sees it: (user, groups, verb, "group/resource/sub"
/// or a non-resource path, namespace).
struct Req<'a>(&'a str, &'a [&'a str], &'a str, &'a str, &'a str);

/// The level the API server would log `r` at: the first rule that matches
/// (k8s.io/apiserver/pkg/audit/policy/checker.go), None if none does.
fn level<'p>(p: &'p Policy, r: &Req<'_>) -> &'p str {
    let Req(user, groups, verb, what, ns) = *r;
    let resource = what.split_once(':').map(|(g, rest)| {
        let (res, sub) = rest.split_once('/').unwrap_or((rest, ""));
        (g, res, sub)
    });
    let matches = |rule: &PolicyRule| {
        (rule.users.is_empty() || rule.users.iter().any(|u| u == user))
            && (rule.user_groups.is_empty()
                || rule
                    .user_groups
                    .iter()
                    .any(|g| groups.contains(&g.as_str())))
            && (rule.verbs.is_empty() || rule.verbs.iter().any(|v| v == verb))
            && if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
                let Some((g, res, sub)) = resource else {
                    return false;
                };
                let combined = if sub.is_empty() {
                    res.to_owned()
                } else {
                    format!("{res}/{sub}")
                };
                (rule.namespaces.is_empty() || rule.namespaces.iter().any(|n| n == ns))
                    && (rule.resources.is_empty()
                        || rule.resources.iter().any(|gr| {
                            gr.group == g
                                && gr.resource_names.is_empty()
                                && (gr.resources.is_empty()
                                    || gr.resources.iter().any(|x| {
                                        *x == combined
                                            || x == "*"
                                            || (!sub.is_empty()
                                                && x.strip_prefix("*/") == Some(sub))
                                            || x.strip_suffix("/*") == Some(res)
                                    }))
                        }))
            } else if !rule.non_resource_urls.is_empty() {
                resource.is_none()
                    && rule
                        .non_resource_urls
                        .iter()
                        .any(|u| match u.strip_suffix('*') {
                            Some(prefix) => what.starts_with(prefix),
                            None => u == what,
                        })
            } else {
                true
            }
    };
    p.rules
        .iter()
        .find(|r| matches(r))
        .map_or("None", |r| r.level.as_str())
}

#[test]
fn audit_policy_logs_what_kaudit_reads_and_no_secret_bodies() {
    let p: Policy = serde_yaml_ng::from_str(&read("apiserver/audit-policy.yaml")).unwrap();
    assert_eq!(
        (p.api_version.as_str(), p.kind.as_str()),
        ("audit.k8s.io/v1", "Policy")
    );
    assert_eq!(p.omit_stages, ["RequestReceived"]);
    assert!(p.omit_managed_fields);
    let stages = [
        "RequestReceived",
        "ResponseStarted",
        "ResponseComplete",
        "Panic",
    ];
    for r in &p.rules {
        assert!(
            ["None", "Metadata", "Request", "RequestResponse"].contains(&r.level.as_str()),
            "{}",
            r.level
        );
        assert!(r.omit_stages.iter().all(|s| stages.contains(&s.as_str())));
        // The API server refuses a rule with both (ValidatePolicy).
        assert!(
            r.non_resource_urls.is_empty() || (r.resources.is_empty() && r.namespaces.is_empty()),
            "a rule mixes nonResourceURLs with resources or namespaces"
        );
    }
    let alice: &[&str] = &["system:authenticated"];
    let node: &[&str] = &["system:nodes", "system:authenticated"];
    let sa: &[&str] = &["system:serviceaccounts", "system:authenticated"];
    let (a, k, s) = (
        "alice",
        "system:node:worker-1",
        "system:serviceaccount:ci:deployer",
    );
    let expect = [
        (Req(a, alice, "create", ":pods/exec", "shop"), "Request"),
        (Req(a, alice, "get", ":pods/exec", "shop"), "Request"), // WebSocket
        (Req(a, alice, "create", ":pods/attach", "shop"), "Request"),
        (
            Req(a, alice, "create", ":pods/portforward", "shop"),
            "Request",
        ),
        (
            Req(a, alice, "patch", ":pods/ephemeralcontainers", "shop"),
            "Request",
        ),
        (Req(a, alice, "get", ":nodes/proxy", ""), "Request"),
        // The TokenRequest's body, never its answer (the token).
        (
            Req(a, alice, "create", ":serviceaccounts/token", "ci"),
            "Request",
        ),
        (
            Req(
                a,
                alice,
                "create",
                "rbac.authorization.k8s.io:clusterrolebindings",
                "",
            ),
            "RequestResponse",
        ),
        (
            Req(s, sa, "patch", "rbac.authorization.k8s.io:roles", "ci"),
            "RequestResponse",
        ),
        (
            Req(
                s,
                sa,
                "create",
                "authorization.k8s.io:selfsubjectaccessreviews",
                "",
            ),
            "RequestResponse",
        ),
        (Req(s, sa, "create", ":pods", "ci"), "Request"),
        (Req(s, sa, "patch", "apps:daemonsets", "ci"), "Request"),
        (
            Req(
                a,
                alice,
                "create",
                "certificates.k8s.io:certificatesigningrequests",
                "",
            ),
            "Request",
        ),
        (
            Req(
                a,
                alice,
                "delete",
                "admissionregistration.k8s.io:validatingwebhookconfigurations",
                "",
            ),
            "Request",
        ),
        (Req(a, alice, "patch", ":namespaces", ""), "Request"),
        // Credentials: metadata only, every verb.
        (Req(a, alice, "create", ":secrets", "ci"), "Metadata"),
        (Req(s, sa, "get", ":secrets", "kube-system"), "Metadata"),
        (Req(s, sa, "list", ":secrets", ""), "Metadata"),
        (Req(a, alice, "update", ":configmaps", "ci"), "Metadata"),
        (
            Req(s, sa, "create", "authentication.k8s.io:tokenreviews", ""),
            "Metadata",
        ),
        // Kubelets stay visible (node addresses are learned from them)...
        (Req(k, node, "get", ":pods", "shop"), "Metadata"),
        (Req(k, node, "patch", ":nodes/status", ""), "Metadata"),
        (Req(k, node, "watch", ":secrets", "shop"), "Metadata"),
        // ...except their lease renewals.
        (
            Req(
                k,
                node,
                "update",
                "coordination.k8s.io:leases",
                "kube-node-lease",
            ),
            "None",
        ),
        // Deleting events (covering tracks) is logged; writing them is not.
        (Req(a, alice, "delete", ":events", "shop"), "Metadata"),
        (Req(k, node, "create", ":events", "shop"), "None"),
        (
            Req(
                "system:anonymous",
                &["system:unauthenticated"],
                "get",
                "/api",
                "",
            ),
            "Metadata",
        ),
        (
            Req(
                "system:anonymous",
                &["system:unauthenticated"],
                "get",
                "/healthz",
                "",
            ),
            "None",
        ),
        (Req(s, sa, "impersonate", ":users", ""), "Metadata"),
    ];
    let wrong: Vec<String> = expect
        .iter()
        .filter(|(r, want)| level(&p, r) != *want)
        .map(|(r, want)| {
            format!(
                "{} {} {} {}: {} (want {want})",
                r.0,
                r.2,
                r.3,
                r.4,
                level(&p, r)
            )
        })
        .collect();
    assert!(wrong.is_empty(), "audit-policy.yaml:\n{}", wrong.join("\n"));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    clusters: Vec<Named<KubeCluster>>,
    users: Vec<Named<KubeUser>>,
    contexts: Vec<Named<Value>>,
    #[serde(rename = "current-context")]
    current_context: String,
    #[serde(default)]
    preferences: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KubeCluster {
    server: String,
    certificate_authority: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KubeUser {
    client_certificate: String,
    client_key: String,
}

#[test]
fn webhook_kubeconfig_points_at_the_webhook_source() {
    let kc: Kubeconfig =
        serde_yaml_ng::from_str(&read("apiserver/webhook-kubeconfig.yaml")).unwrap();
    assert_eq!(
        (kc.api_version.as_str(), kc.kind.as_str()),
        ("v1", "Config")
    );
    assert_eq!(kc.contexts[0].name, kc.current_context);
    let server = &kc.clusters[0].value.server;
    // https://HOST:PORT/audit/CLUSTER: the ConfigMap source's port and path.
    let rest = server.strip_prefix("https://").expect("https");
    let (hostport, path) = rest.split_once('/').unwrap();
    let cm = configmap_config();
    let port = hostport.rsplit_once(':').unwrap().1;
    assert!(
        cm.contains(&format!("listen: \"0.0.0.0:{port}\"")),
        "{port}"
    );
    assert!(
        cm.contains("path: \"/audit/{cluster}\"") && path.starts_with("audit/") && path.len() > 6
    );
    let flags = read("apiserver/apiserver-flags.md");
    for file in [
        &kc.clusters[0].value.certificate_authority,
        &kc.users[0].value.client_certificate,
        &kc.users[0].value.client_key,
    ] {
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        assert!(
            flags.contains(name),
            "apiserver-flags.md does not name {name}"
        );
    }
}
