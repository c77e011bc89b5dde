//! The attacks planted in the benchmark corpus, and the rule ids each must
//! fire with kaudit's default configuration (no config file, the built-in
//! catalogue and the token detectors). Each planted attack has its own
//! auditID and its own address or object, so that no detector's
//! once-per-window throttle can hide one behind another.
//!
//! | attack | what | fires |
//! |---|---|---|
//! | `exec` | a person runs a shell or reads the pod's token with kubectl exec (ResponseStarted 101, ResponseComplete later) | `pod-exec` |
//! | `attach` | a person attaches to a container | `pod-attach` |
//! | `portforward` | a person forwards a port to a pod | `pod-portforward` |
//! | `impersonation` | a person acts as `system:admin` in `system:masters` | `impersonation-privileged-identity` |
//! | `secret-read` | a person reads an application's secret | `token-secret-read` (which supersedes `k8s-secret-get`) |
//! | `token-outside` | a pod's bound token (its current `JTI=`, pod and node extras), just used by the pod, used with kubectl from a public address | `token-outside-cluster`, `token-bound-pod-elsewhere`, `token-replayed`, `token-interactive-client` |
//! | `cluster-admin-binding` | a person binds a service account to cluster-admin (level RequestResponse, with the bodies) | `rbac-privileged-role-binding`, `k8s-clusterrolebinding-created` |
//!
//! People's requests also fire the catalogue's `disallowed-k8s-user`
//! (every request of a user outside `allowed_k8s_users`), planted or not:
//! that rule is not listed here.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::corpus::{Actor, Class, Gen, request};
use super::event::{Ev, ObjRef, Stage, Status};
use super::rng::{Rng, Uuid};
use super::traffic::{Op, WORKLOADS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    Exec,
    Attach,
    PortForward,
    Impersonation,
    SecretRead,
    TokenOutside,
    ClusterAdminBinding,
}

/// A planted attack: the auditID of the request that must be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planted {
    pub audit_id: Uuid,
    pub attack: Attack,
}

impl Attack {
    pub const ALL: [Attack; 7] = [
        Attack::Exec,
        Attack::Attach,
        Attack::PortForward,
        Attack::Impersonation,
        Attack::SecretRead,
        Attack::TokenOutside,
        Attack::ClusterAdminBinding,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::Exec => "exec",
            Attack::Attach => "attach",
            Attack::PortForward => "portforward",
            Attack::Impersonation => "impersonation",
            Attack::SecretRead => "secret-read",
            Attack::TokenOutside => "token-outside",
            Attack::ClusterAdminBinding => "cluster-admin-binding",
        }
    }

    /// The rule ids kaudit fires on the attack's auditID with its default
    /// configuration (besides `disallowed-k8s-user` for people).
    pub fn rules(self) -> &'static [&'static str] {
        match self {
            Attack::Exec => &["pod-exec"],
            Attack::Attach => &["pod-attach"],
            Attack::PortForward => &["pod-portforward"],
            Attack::Impersonation => &["impersonation-privileged-identity"],
            Attack::SecretRead => &["token-secret-read"],
            Attack::TokenOutside => &[
                "token-outside-cluster",
                "token-bound-pod-elsewhere",
                "token-replayed",
                "token-interactive-client",
            ],
            Attack::ClusterAdminBinding => &[
                "rbac-privileged-role-binding",
                "k8s-clusterrolebinding-created",
            ],
        }
    }

    /// Lines written at once (the stolen token's attack is preceded by the
    /// pod's own use of it).
    pub fn lines(self) -> u64 {
        match self {
            Attack::TokenOutside => 2,
            _ => 1,
        }
    }
}

/// Commands of exec sessions (query form, without the container).
const EXEC_COMMANDS: &[&str] = &[
    "command=sh",
    "command=%2Fbin%2Fbash",
    "command=sh&command=-c&command=cat+%2Fvar%2Frun%2Fsecrets%2Fkubernetes.io%2Fserviceaccount%2Ftoken",
    "command=env",
    "command=sh&command=-c&command=id%3B+cat+%2Fetc%2Fos-release",
];

const PORTS: &[&str] = &["5432", "8080", "6379", "9200"];

/// The attacker's address for attack number `k`: unique per attack (for
/// the first 130,048), in 198.18.0.0/15 (RFC 2544's benchmarking network,
/// public to kaudit).
fn attacker_ip(k: u64) -> String {
    let net = k / 254;
    format!("198.{}.{}.{}", 18 + (net >> 8) % 2, net & 0xff, k % 254 + 1)
}

/// Writes attack number `k` of kind `attack` at the generator's current
/// time.
pub fn plant<W: Write>(
    g: &mut Gen<W>,
    rng: &mut Rng,
    k: u64,
    attack: Attack,
) -> io::Result<Planted> {
    let id = rng.uuid();
    let now = g.em.now;
    let w = &g.world;
    let target = &w.pods[*rng.pick(&w.app_pods)];
    let def = &WORKLOADS[target.workload];
    let person = Actor::person(rng.below(64) as usize);
    let mut ev = Ev {
        level: "Metadata",
        id,
        stage: Stage::ResponseComplete,
        uri: "",
        verb: "get",
        user: person.user,
        impersonated: None,
        source_ip: person.ip,
        user_agent: person.user_agent,
        object: None,
        status: Status::ok(200),
        request_object: None,
        response_object: None,
        received: now,
        stage_time: now + rng.range(800, 4_000),
        decision: "allow",
        reason: person.reason,
        annotation: None,
    };
    let s = &mut g.s;
    s.uri.clear();
    s.name.clear();
    let pod_ref = |sub: &'static str| ObjRef {
        resource: "pods",
        namespace: def.ns,
        name: &target.name,
        version: "v1",
        sub,
        ..ObjRef::default()
    };
    match attack {
        Attack::Exec | Attack::Attach | Attack::PortForward => {
            let (sub, query) = match attack {
                Attack::Exec => ("exec", *rng.pick(EXEC_COMMANDS)),
                Attack::Attach => ("attach", ""),
                _ => ("portforward", ""),
            };
            let _ = write!(
                s.uri,
                "/api/v1/namespaces/{}/pods/{}/{sub}?",
                def.ns, target.name
            );
            match attack {
                Attack::PortForward => {
                    let _ = write!(s.uri, "ports={}", rng.pick(PORTS));
                }
                _ => {
                    if !query.is_empty() {
                        s.uri.push_str(query);
                        s.uri.push('&');
                    }
                    let _ = write!(
                        s.uri,
                        "container={}&stdin=true&stdout=true&tty=true",
                        def.name
                    );
                }
            }
            // SPDY clients send create, WebSocket clients (kubectl >= 1.30) get.
            let verb = if rng.one_in(2) { "create" } else { "get" };
            let ev = Ev {
                stage: Stage::ResponseStarted,
                uri: &s.uri,
                verb,
                object: Some(pod_ref(sub)),
                status: Status::ok(101),
                stage_time: now + rng.range(20_000, 60_000),
                ..ev
            };
            let end = now + rng.range(20, 900) * 1_000_000;
            g.em.emit_long_running(&ev, Class::Attack, end)?;
        }
        Attack::Impersonation => {
            let _ = write!(s.uri, "/api/v1/namespaces/{}/pods?limit=500", def.ns);
            ev.uri = &s.uri;
            ev.verb = "list";
            ev.impersonated = Some(("system:admin", &["system:masters", "system:authenticated"]));
            ev.object = Some(ObjRef {
                resource: "pods",
                namespace: def.ns,
                version: "v1",
                ..ObjRef::default()
            });
            g.em.emit(&ev, Class::Attack)?;
        }
        Attack::SecretRead => {
            let _ = write!(s.name, "{}-credentials", def.name);
            let _ = write!(s.uri, "/api/v1/namespaces/{}/secrets/{}", def.ns, s.name);
            ev.uri = &s.uri;
            ev.object = Some(ObjRef {
                resource: "secrets",
                namespace: def.ns,
                name: &s.name,
                version: "v1",
                ..ObjRef::default()
            });
            g.em.emit(&ev, Class::Attack)?;
        }
        Attack::TokenOutside => {
            // The pod uses its token as usual, then the same token turns up
            // with kubectl from a public address.
            let pod = *rng.pick(&w.app_pods);
            let own = &WORKLOADS[w.pods[pod].workload];
            let usual = Actor::pod(w, pod);
            let op: &Op = &own.ops[0];
            request(&mut g.em, s, w, &usual, op, Class::Attack)?;
            let ip = attacker_ip(k);
            s.uri.clear();
            let _ = write!(s.uri, "/api/v1/namespaces/{}/pods?limit=500", own.ns);
            let ev = Ev {
                uri: &s.uri,
                verb: "list",
                user: usual.user,
                source_ip: &ip,
                user_agent: "kubectl/v1.30.2 (linux/amd64) kubernetes/39683505",
                object: Some(ObjRef {
                    resource: "pods",
                    namespace: own.ns,
                    version: "v1",
                    ..ObjRef::default()
                }),
                reason: usual.reason,
                received: g.em.now + 1_000,
                stage_time: g.em.now + 1_000 + rng.range(800, 4_000),
                ..ev
            };
            g.em.emit(&ev, Class::Attack)?;
        }
        Attack::ClusterAdminBinding => {
            let _ = write!(s.name, "debug-admin-{k}");
            let body = format!(
                r#"{{"kind":"ClusterRoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{{"name":"{name}","creationTimestamp":null}},"subjects":[{{"kind":"ServiceAccount","name":"default","namespace":"{ns}"}}],"roleRef":{{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"}}}}"#,
                name = s.name,
                ns = def.ns
            );
            let stored = format!(
                r#"{{"kind":"ClusterRoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{{"name":"{name}","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"2026-11-03T09:00:00Z"}},"subjects":[{{"kind":"ServiceAccount","name":"default","namespace":"{ns}"}}],"roleRef":{{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"}}}}"#,
                name = s.name,
                ns = def.ns,
                uid = rng.uuid(),
                rv = rng.range(48_000_000, 49_000_000)
            );
            ev.level = "RequestResponse";
            ev.uri = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?fieldManager=kubectl-create&fieldValidation=Strict";
            ev.verb = "create";
            ev.object = Some(ObjRef {
                resource: "clusterrolebindings",
                name: &s.name,
                group: "rbac.authorization.k8s.io",
                version: "v1",
                ..ObjRef::default()
            });
            ev.status = Status::ok(201);
            ev.request_object = Some(&body);
            ev.response_object = Some(&stored);
            g.em.emit(&ev, Class::Attack)?;
        }
    }
    Ok(Planted {
        audit_id: id,
        attack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_addresses_are_distinct_and_public() {
        let ips: std::collections::HashSet<String> = (0..5_000).map(attacker_ip).collect();
        assert_eq!(ips.len(), 5_000);
        for ip in ips.iter().take(50) {
            let a: std::net::Ipv4Addr = ip.parse().unwrap();
            assert!(!a.is_private() && !a.is_loopback(), "{a}");
        }
    }
}
