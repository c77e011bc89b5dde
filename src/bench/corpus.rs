//! The deterministic benchmark corpus: realistic API-server audit traffic
//! (`audit.k8s.io/v1` Events at level Metadata, about 1 KB each, JSON
//! lines) of one cluster, from a seed, byte-identical for the same seed and
//! options, with planted attacks spread through it.
//!
//! The cluster: 48 nodes (`ip-10-0-A-B.eu-west-1.compute.internal`, node
//! network 10.0.0.0/20, pods in 10.244.N.0/24 on node N), add-ons and
//! operators (CoreDNS, kube-proxy and Cilium on the host network,
//! cert-manager, ingress-nginx, Prometheus, kube-state-metrics, Argo CD,
//! Karpenter, external-dns, the EBS CSI controller, Fluent Bit), and
//! applications in `payments`, `shop` and `search` (see `traffic.rs`).
//!
//! The traffic, by share of the requests drawn (the lines also hold the
//! ResponseComplete of watches that ended, and the planted attacks):
//!
//! | class | share | who |
//! |---|---|---|
//! | node | 50% | kubelets (`system:node:NAME`, group `system:nodes`, from the node's address): node lease and status, their pods' status, config maps and secrets of their pods, events, watches; now and then a TokenRequest for a pod, which rotates that pod's token |
//! | service account | 37% | pods with bound tokens (`system:serviceaccount:NS:NAME`, `user.extra` credential-id `JTI=…`, pod-name, pod-uid, node-name, node-uid; one token per pod, used until the kubelet rotates it), from the pod's address (the node's for host-network pods): leader-election leases, watches and lists, events, config maps |
//! | control plane | 4% | `system:kube-controller-manager` and `system:kube-scheduler` (client certificates) |
//! | health | 7% | `/readyz`, `/livez`, `/healthz`: load balancers and probes as `system:anonymous`, and the monitoring service account |
//! | person | 2% | OIDC users (`alice@example.com`, group `system:authenticated`) with kubectl from office and VPN addresses |
//!
//! Time starts at 2026-11-03T09:00:00Z and advances by 0–2 ms per request
//! (about 1,000 requests per second). Watches log ResponseStarted and, 5 to
//! 10 minutes later, ResponseComplete with the same auditID. Requests that
//! fail are realistic and harmless (a 404 on a lease or config map get, a
//! 409 on a lease update).
//!
//! One request in `attack_every` (10,000 by default) is an attack, at a
//! random position in each stretch of that many lines; the attacks cycle
//! through the kinds in `attacks.rs`, and the list of (auditID, rule id)
//! each must fire with kaudit's default configuration is returned with the
//! summary ([`write_planted`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::io::{self, Write};

use super::attacks::{self, Attack, Planted};
use super::bodies::Bodies;
use super::event::{Ev, Extra, Groups, ObjRef, Stage, Status, User, write_event};
use super::rng::{Micros, Rng, Uuid};
use super::traffic::{
    CONTROL_PLANE, CONTROL_PLANE_IP, HEALTH_PATHS, KUBELET, KUBELET_UA, Name, Op, PEOPLE,
    PERSON_OPS, PROBES, PUBLIC_INFO_VIEWER, Query, Scope, Sel, WORKLOADS,
};

/// Bumped whenever the bytes generated for a seed change, so that a cached
/// corpus of an older generator is not reused by `kaudit bench run`.
pub const GENERATOR_VERSION: u32 = 1;

/// 2026-11-03T09:00:00Z.
const START: Micros = 1_793_696_400_000_000;
const NODES: usize = 48;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Lines (events) to write.
    pub events: u64,
    pub seed: u64,
    /// One attack per this many lines; 0 plants none.
    pub attack_every: u64,
    /// Metadata, or RequestResponse with bodies.
    pub level: Level,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            events: 1_000_000,
            seed: 1,
            attack_every: 10_000,
            level: Level::Metadata,
        }
    }
}

/// The audit level of the benign traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Level {
    /// About 1 KB per event, no bodies.
    #[default]
    Metadata,
    /// Request and response bodies on reads and writes (5 to 20 KB per
    /// such event; `bodies`).
    RequestResponse,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Metadata => "metadata",
            Level::RequestResponse => "request-response",
        }
    }
}

/// The traffic classes, for the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Node = 0,
    ServiceAccount = 1,
    ControlPlane = 2,
    Health = 3,
    Person = 4,
    Attack = 5,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Node,
        Class::ServiceAccount,
        Class::ControlPlane,
        Class::Health,
        Class::Person,
        Class::Attack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Node => "node",
            Class::ServiceAccount => "service_account",
            Class::ControlPlane => "control_plane",
            Class::Health => "health",
            Class::Person => "person",
            Class::Attack => "attack",
        }
    }
}

/// Weights of the classes among benign requests (per mille).
const CLASS_WEIGHTS: [u32; 5] = [500, 370, 40, 70, 20];

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub events: u64,
    pub bytes: u64,
    /// Lines per [`Class`], indexed by `Class as usize`.
    pub lines_by_class: [u64; 6],
    pub planted: Vec<Planted>,
}

impl Summary {
    /// Planted (auditID, rule id) pairs.
    pub fn planted_pairs(&self) -> usize {
        self.planted.iter().map(|p| p.attack.rules().len()).sum()
    }
}

pub struct Node {
    pub name: String,
    pub username: String,
    pub ip: String,
    pub uid: Uuid,
    /// sha256 of the kubelet's client certificate (hex).
    pub cert: String,
}

pub struct Pod {
    pub workload: usize,
    pub name: String,
    pub uid: Uuid,
    pub node: usize,
    pub ip: String,
    /// The id of the token the pod uses now.
    pub jti: Uuid,
}

pub struct WorkloadState {
    pub username: String,
    pub uid: Uuid,
    pub reason: String,
    pub pods: Vec<usize>,
}

/// The cluster: nodes, workloads and their pods.
pub struct World {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub workloads: Vec<WorkloadState>,
    /// Pods of applications (targets of people and attacks).
    pub app_pods: Vec<usize>,
    /// Pods per node.
    pub node_pods: Vec<Vec<usize>>,
    workload_weights: Vec<u32>,
    op_weights: Vec<Vec<u32>>,
    kubelet_weights: Vec<u32>,
    person_weights: Vec<u32>,
    health_weights: Vec<u32>,
    control_weights: Vec<u32>,
    control_op_weights: Vec<Vec<u32>>,
    monitoring: usize,
}

/// Kubernetes' alphabet for generated name suffixes.
const NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn suffix(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(*rng.pick(NAME_CHARS)))
        .collect()
}

fn weights(ops: &[Op]) -> Vec<u32> {
    ops.iter().map(|o| o.weight).collect()
}

impl World {
    pub fn new(rng: &mut Rng) -> World {
        let nodes: Vec<Node> = (0..NODES)
            .map(|i| {
                let a = 1 + i % 3;
                let b = 10 + (i / 3) * 15 + rng.below(15) as usize;
                let name = format!("ip-10-0-{a}-{b}.eu-west-1.compute.internal");
                Node {
                    username: format!("system:node:{name}"),
                    name,
                    ip: format!("10.0.{a}.{b}"),
                    uid: rng.uuid(),
                    cert: format!(
                        "{:016x}{:016x}{:016x}{:016x}",
                        rng.next_u64(),
                        rng.next_u64(),
                        rng.next_u64(),
                        rng.next_u64()
                    ),
                }
            })
            .collect();
        let mut pods = Vec::new();
        let mut workloads = Vec::new();
        let mut app_pods = Vec::new();
        let mut node_pods = vec![Vec::new(); NODES];
        let mut next_ip = [2u32; NODES];
        let mut monitoring = 0;
        for (w, def) in WORKLOADS.iter().enumerate() {
            if def.sa == "prometheus" {
                monitoring = w;
            }
            let replicas = if def.replicas == 0 {
                NODES
            } else {
                def.replicas as usize
            };
            let rs = suffix(rng, 10);
            let mut ids = Vec::with_capacity(replicas);
            for r in 0..replicas {
                let node = if def.replicas == 0 {
                    r
                } else {
                    rng.below(NODES as u64) as usize
                };
                let name = if def.replicas == 0 {
                    format!("{}-{}", def.name, suffix(rng, 5))
                } else {
                    format!("{}-{rs}-{}", def.name, suffix(rng, 5))
                };
                let ip = if def.host_network {
                    nodes[node].ip.clone()
                } else {
                    let host = next_ip[node];
                    next_ip[node] += 1;
                    format!("10.244.{node}.{host}")
                };
                let id = pods.len();
                pods.push(Pod {
                    workload: w,
                    name,
                    uid: rng.uuid(),
                    node,
                    ip,
                    jti: rng.uuid(),
                });
                node_pods[node].push(id);
                if def.app {
                    app_pods.push(id);
                }
                ids.push(id);
            }
            workloads.push(WorkloadState {
                username: format!("system:serviceaccount:{}:{}", def.ns, def.sa),
                uid: rng.uuid(),
                reason: format!(
                    r#"RBAC: allowed by ClusterRoleBinding \"{b}\" of ClusterRole \"{b}\" to ServiceAccount \"{}/{}\""#,
                    def.sa,
                    def.ns,
                    b = def.binding
                ),
                pods: ids,
            });
        }
        World {
            nodes,
            pods,
            workloads,
            app_pods,
            node_pods,
            workload_weights: WORKLOADS.iter().map(|w| w.weight).collect(),
            op_weights: WORKLOADS.iter().map(|w| weights(w.ops)).collect(),
            kubelet_weights: weights(KUBELET),
            person_weights: weights(PERSON_OPS),
            health_weights: weights(HEALTH_PATHS),
            control_weights: CONTROL_PLANE.iter().map(|c| c.weight).collect(),
            control_op_weights: CONTROL_PLANE.iter().map(|c| weights(c.ops)).collect(),
            monitoring,
        }
    }

    /// The identity of a pod's bound token, as it authenticates.
    pub fn pod_user(&self, pod: usize) -> User<'_> {
        let p = &self.pods[pod];
        let def = &WORKLOADS[p.workload];
        let node = &self.nodes[p.node];
        User {
            username: &self.workloads[p.workload].username,
            uid: Some(self.workloads[p.workload].uid),
            groups: Groups::ServiceAccount(def.ns),
            extra: Extra::Bound {
                jti: p.jti,
                node: &node.name,
                node_uid: node.uid,
                pod: &p.name,
                pod_uid: p.uid,
            },
        }
    }
}

/// Who sends a request, and from where.
#[derive(Clone, Copy)]
pub struct Actor<'a> {
    pub user: User<'a>,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub reason: &'a str,
    /// The actor's namespace (`Scope::Own`).
    pub ns: &'a str,
    /// The node it runs on or is.
    pub node: Option<usize>,
    /// Its pod (a kubelet's: the pod it is serving).
    pub pod: Option<usize>,
    pub impersonated: Option<(&'a str, &'a [&'a str])>,
}

impl<'a> Actor<'a> {
    pub fn pod(world: &'a World, pod: usize) -> Actor<'a> {
        let p = &world.pods[pod];
        let def = &WORKLOADS[p.workload];
        Actor {
            user: world.pod_user(pod),
            ip: &p.ip,
            user_agent: def.user_agent,
            reason: &world.workloads[p.workload].reason,
            ns: def.ns,
            node: Some(p.node),
            pod: Some(pod),
            impersonated: None,
        }
    }

    pub fn person(index: usize) -> Actor<'static> {
        let p = &PEOPLE[index % PEOPLE.len()];
        Actor {
            user: User {
                username: p.username,
                uid: None,
                groups: Groups::List(p.groups),
                extra: Extra::None,
            },
            ip: p.ip,
            user_agent: p.user_agent,
            reason: p.reason,
            ns: "default",
            node: None,
            pod: None,
            impersonated: None,
        }
    }
}

/// Reusable string buffers for the parts of an event that are composed.
#[derive(Default)]
pub struct Scratch {
    pub uri: String,
    pub name: String,
    pub message: String,
    pub annotation: String,
}

/// A line to write later: (its time, sequence, class, the line).
type Pending = Reverse<(Micros, u64, u8, Vec<u8>)>;

/// Writes lines, counts them, and holds the ResponseComplete lines of
/// requests still running (watches, exec sessions) until their time.
pub struct Emitter<W: Write> {
    out: W,
    pub rng: Rng,
    pub now: Micros,
    pub lines: u64,
    pub bytes: u64,
    pub by_class: [u64; 6],
    line: Vec<u8>,
    pending: BinaryHeap<Pending>,
    seq: u64,
    /// The RequestResponse variant's bodies.
    bodies: Option<Bodies>,
}

impl<W: Write> Emitter<W> {
    fn write_line(&mut self, class: u8) -> io::Result<()> {
        self.out.write_all(&self.line)?;
        self.lines += 1;
        self.bytes += self.line.len() as u64;
        self.by_class[usize::from(class)] += 1;
        Ok(())
    }

    /// Writes one event.
    pub fn emit(&mut self, ev: &Ev<'_>, class: Class) -> io::Result<()> {
        self.line.clear();
        let dressed = match &mut self.bodies {
            Some(b) if class != Class::Attack => b.dress(ev),
            _ => None,
        };
        write_event(&mut self.line, dressed.as_ref().unwrap_or(ev))?;
        self.write_line(class as u8)
    }

    /// Writes `ev` (ResponseStarted) now and its ResponseComplete at `end`.
    pub fn emit_long_running(&mut self, ev: &Ev<'_>, class: Class, end: Micros) -> io::Result<()> {
        self.emit(ev, class)?;
        let done = Ev {
            stage: Stage::ResponseComplete,
            stage_time: end,
            ..*ev
        };
        let mut line = Vec::with_capacity(self.line.len());
        write_event(&mut line, &done)?;
        self.seq += 1;
        self.pending
            .push(Reverse((end, self.seq, class as u8, line)));
        Ok(())
    }

    /// Writes the next pending ResponseComplete if its time has come.
    fn flush_due(&mut self) -> io::Result<bool> {
        let due = matches!(self.pending.peek(), Some(Reverse((t, ..))) if *t <= self.now);
        if !due {
            return Ok(false);
        }
        if let Some(Reverse((_, _, class, line))) = self.pending.pop() {
            self.line = line;
            self.write_line(class)?;
        }
        Ok(true)
    }

    /// Advances time to the next request.
    pub fn tick(&mut self) {
        self.now += self.rng.below(2000);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The generator's state: the world, the output, scratch buffers.
pub struct Gen<W: Write> {
    pub world: World,
    pub em: Emitter<W>,
    pub s: Scratch,
}

/// Writes the corpus to `out` and returns what was written (with the
/// planted attacks).
///
/// At `Level::RequestResponse` the events are those of the Metadata corpus
/// of the same seed, with bodies.
pub fn generate<W: Write>(opts: &Options, out: W) -> io::Result<Summary> {
    let level = opts.level;
    let mut root = Rng::new(opts.seed);
    let world = World::new(&mut root.fork(1));
    let traffic = root.fork(2);
    let mut attack_rng = root.fork(3);
    let bodies = (level == Level::RequestResponse).then(|| Bodies::new(root.fork(4)));
    let mut g = Gen {
        world,
        em: Emitter {
            out,
            rng: traffic,
            now: START,
            lines: 0,
            bytes: 0,
            by_class: [0; 6],
            line: Vec::with_capacity(4096),
            pending: BinaryHeap::new(),
            seq: 0,
            bodies,
        },
        s: Scratch::default(),
    };
    let mut planted = Vec::new();
    let every = opts.attack_every;
    let mut slot = 0u64;
    let mut next_attack = if every == 0 {
        u64::MAX
    } else {
        attack_rng.below(every)
    };
    while g.em.lines < opts.events {
        if g.em.flush_due()? {
            continue;
        }
        if g.em.lines >= next_attack {
            let attack = Attack::ALL[(slot % Attack::ALL.len() as u64) as usize];
            if opts.events - g.em.lines >= attack.lines() {
                g.em.tick();
                planted.push(attacks::plant(&mut g, &mut attack_rng, slot, attack)?);
            }
            slot += 1;
            next_attack = slot.saturating_mul(every) + attack_rng.below(every);
            continue;
        }
        g.em.tick();
        benign(&mut g)?;
    }
    g.em.flush()?;
    Ok(Summary {
        events: g.em.lines,
        bytes: g.em.bytes,
        lines_by_class: g.em.by_class,
        planted,
    })
}

/// One benign request of a class drawn by weight.
fn benign<W: Write>(g: &mut Gen<W>) -> io::Result<()> {
    let w = &g.world;
    match g.em.rng.weighted(&CLASS_WEIGHTS) {
        0 => {
            let node = g.em.rng.below(NODES as u64) as usize;
            let pod = *g.em.rng.pick(&w.node_pods[node]);
            // About one kubelet request in 2,000 is a TokenRequest.
            if g.em.rng.one_in(2000) {
                return token_request(g, node, pod);
            }
            let op = &KUBELET[g.em.rng.weighted(&w.kubelet_weights)];
            let actor = kubelet(w, node, pod);
            request(&mut g.em, &mut g.s, w, &actor, op, Class::Node)
        }
        1 => {
            let wl = g.em.rng.weighted(&w.workload_weights);
            let pod = *g.em.rng.pick(&w.workloads[wl].pods);
            let op = &WORKLOADS[wl].ops[g.em.rng.weighted(&w.op_weights[wl])];
            let actor = Actor::pod(w, pod);
            request(&mut g.em, &mut g.s, w, &actor, op, Class::ServiceAccount)
        }
        2 => {
            let c = g.em.rng.weighted(&w.control_weights);
            let cp = &CONTROL_PLANE[c];
            let op = &cp.ops[g.em.rng.weighted(&w.control_op_weights[c])];
            let actor = Actor {
                user: User {
                    username: cp.username,
                    uid: None,
                    groups: Groups::List(&["system:authenticated"]),
                    extra: Extra::None,
                },
                ip: CONTROL_PLANE_IP,
                user_agent: cp.user_agent,
                reason: cp.reason,
                ns: "kube-system",
                node: None,
                pod: None,
                impersonated: None,
            };
            request(&mut g.em, &mut g.s, w, &actor, op, Class::ControlPlane)
        }
        3 => {
            let op = &HEALTH_PATHS[g.em.rng.weighted(&w.health_weights)];
            if g.em.rng.below(10) < 3 {
                let pod = *g.em.rng.pick(&w.workloads[w.monitoring].pods);
                let actor = Actor {
                    user_agent: "Blackbox-Exporter/0.25.0",
                    ..Actor::pod(w, pod)
                };
                request(&mut g.em, &mut g.s, w, &actor, op, Class::Health)
            } else {
                let (ip, user_agent) = *g.em.rng.pick(PROBES);
                let actor = Actor {
                    user: User {
                        username: "system:anonymous",
                        uid: None,
                        groups: Groups::List(&["system:unauthenticated"]),
                        extra: Extra::None,
                    },
                    ip,
                    user_agent,
                    reason: PUBLIC_INFO_VIEWER,
                    ns: "default",
                    node: None,
                    pod: None,
                    impersonated: None,
                };
                request(&mut g.em, &mut g.s, w, &actor, op, Class::Health)
            }
        }
        _ => {
            let person = g.em.rng.below(PEOPLE.len() as u64) as usize;
            let op = &PERSON_OPS[g.em.rng.weighted(&w.person_weights)];
            request(
                &mut g.em,
                &mut g.s,
                w,
                &Actor::person(person),
                op,
                Class::Person,
            )
        }
    }
}

fn kubelet(w: &World, node: usize, pod: usize) -> Actor<'_> {
    let n = &w.nodes[node];
    Actor {
        user: User {
            username: &n.username,
            uid: None,
            groups: Groups::List(&["system:nodes", "system:authenticated"]),
            extra: Extra::Cert(&n.cert),
        },
        ip: &n.ip,
        user_agent: KUBELET_UA,
        // The Node authorizer gives no reason.
        reason: "",
        ns: WORKLOADS[w.pods[pod].workload].ns,
        node: Some(node),
        pod: Some(pod),
        impersonated: None,
    }
}

/// A kubelet asks for a new token for one of its pods (TokenRequest); the
/// pod uses the new token from now on.
fn token_request<W: Write>(g: &mut Gen<W>, node: usize, pod: usize) -> io::Result<()> {
    let jti = g.em.rng.uuid();
    let def = &WORKLOADS[g.world.pods[pod].workload];
    g.s.uri.clear();
    let _ = write!(
        g.s.uri,
        "/api/v1/namespaces/{}/serviceaccounts/{}/token",
        def.ns, def.sa
    );
    g.s.annotation.clear();
    let _ = write!(g.s.annotation, "JTI={jti}");
    let actor = kubelet(&g.world, node, pod);
    let id = g.em.rng.uuid();
    let latency = g.em.rng.range(2_000, 9_000);
    let ev = Ev {
        level: "Metadata",
        id,
        stage: Stage::ResponseComplete,
        uri: &g.s.uri,
        verb: "create",
        user: actor.user,
        impersonated: None,
        source_ip: actor.ip,
        user_agent: actor.user_agent,
        object: Some(ObjRef {
            resource: "serviceaccounts",
            namespace: def.ns,
            name: def.sa,
            version: "v1",
            sub: "token",
            ..ObjRef::default()
        }),
        status: Status::ok(201),
        request_object: None,
        response_object: None,
        received: g.em.now,
        stage_time: g.em.now + latency,
        decision: "allow",
        reason: "",
        annotation: Some((
            "authentication.kubernetes.io/issued-credential-id",
            &g.s.annotation,
        )),
    };
    g.em.emit(&ev, Class::Node)?;
    g.world.pods[pod].jti = jti;
    Ok(())
}

/// Writes a watch's query: bookmarks, an optional field selector, a
/// resource version and a timeout of 5 to 10 minutes. Returns the timeout
/// in seconds.
fn watch_query(uri: &mut String, rng: &mut Rng, sel: Option<(&str, &str)>) -> u64 {
    let secs = rng.range(300, 600);
    uri.push_str("?allowWatchBookmarks=true");
    if let Some((field, value)) = sel {
        let _ = write!(uri, "&fieldSelector={field}%3D{value}");
    }
    let _ = write!(
        uri,
        "&resourceVersion={}&timeout={}m{}s&timeoutSeconds={secs}&watch=true",
        rng.range(48_000_000, 49_000_000),
        secs / 60,
        secs % 60
    );
    secs
}

/// One request of `op` by `actor`, with its URI, objectRef and outcome.
pub fn request<W: Write>(
    em: &mut Emitter<W>,
    s: &mut Scratch,
    world: &World,
    actor: &Actor<'_>,
    op: &Op,
    class: Class,
) -> io::Result<()> {
    let target = match op.scope {
        Scope::App => Some(*em.rng.pick(&world.app_pods)),
        _ => actor.pod,
    };
    let target_pod = target.map(|p| &world.pods[p]);
    let node = actor
        .node
        .map(|n| world.nodes[n].name.as_str())
        .unwrap_or("");
    let ns = match op.scope {
        Scope::Cluster => "",
        Scope::Own => actor.ns,
        Scope::Ns(ns) => ns,
        Scope::App => target_pod.map_or("default", |p| WORKLOADS[p.workload].ns),
    };
    s.name.clear();
    match op.name {
        Name::None => {}
        Name::Fixed(n) => s.name.push_str(n),
        Name::Node => s.name.push_str(node),
        Name::Pod => s.name.push_str(target_pod.map_or("", |p| &p.name)),
        Name::Workload(suffix) => {
            if let Some(p) = target_pod {
                s.name.push_str(WORKLOADS[p.workload].name);
                s.name.push_str(suffix);
            }
        }
        Name::Event => {
            let _ = write!(
                s.name,
                "{}.{:016x}",
                target_pod.map_or("event", |p| &p.name),
                em.rng.next_u64() >> 4 | 1 << 60
            );
        }
    }
    let watch = op.verb == "watch";
    let mut watch_secs = 0;
    s.uri.clear();
    if op.resource.is_empty() {
        // A non-resource URL: the name is the path.
        s.uri.push_str(&s.name);
    } else {
        if op.group.is_empty() {
            s.uri.push_str("/api/v1");
        } else {
            let _ = write!(s.uri, "/apis/{}/{}", op.group, op.version);
        }
        if !ns.is_empty() {
            let _ = write!(s.uri, "/namespaces/{ns}");
        }
        let _ = write!(s.uri, "/{}", op.resource);
        if !s.name.is_empty() && (op.verb != "create" || !op.sub.is_empty()) {
            s.uri.push('/');
            s.uri.push_str(&s.name);
        }
        if !op.sub.is_empty() {
            let _ = write!(s.uri, "/{}", op.sub);
        }
        let sel = |sel: Sel| match sel {
            Sel::SpecNode => ("spec.nodeName", node),
            Sel::SelfNode => ("metadata.name", node),
            Sel::Name(n) => ("metadata.name", n),
        };
        match op.query {
            Query::None => {}
            Query::Raw(q) => {
                s.uri.push('?');
                s.uri.push_str(q);
                if watch {
                    watch_secs = 552;
                }
            }
            Query::Watch => watch_secs = watch_query(&mut s.uri, &mut em.rng, None),
            Query::WatchSel(f) => watch_secs = watch_query(&mut s.uri, &mut em.rng, Some(sel(f))),
            Query::ListSel(f) => {
                let (field, value) = sel(f);
                let _ = write!(
                    s.uri,
                    "?fieldSelector={field}%3D{value}&limit=500&resourceVersion=0"
                );
            }
        }
    }
    // The outcome: mostly success; now and then a lease or config map
    // that is not there yet, or a lease update that lost a race.
    let mut status = Status::ok(if op.verb == "create" { 201 } else { 200 });
    s.message.clear();
    let group_suffix = if op.group.is_empty() { "" } else { "." };
    if op.verb == "get" && matches!(op.resource, "leases" | "configmaps") && em.rng.one_in(500) {
        let _ = write!(
            s.message,
            r#"{}{group_suffix}{} \"{}\" not found"#,
            op.resource, op.group, s.name
        );
        status = Status {
            code: 404,
            reason: "NotFound",
            message: &s.message,
        };
    } else if op.verb == "update" && op.resource == "leases" && em.rng.one_in(200) {
        let _ = write!(
            s.message,
            r#"Operation cannot be fulfilled on {}{group_suffix}{} \"{}\": the object has been modified; please apply your changes to the latest version and try again"#,
            op.resource, op.group, s.name
        );
        status = Status {
            code: 409,
            reason: "Conflict",
            message: &s.message,
        };
    }
    let latency = match op.verb {
        "watch" => em.rng.range(150, 900),
        "list" => em.rng.range(1_500, 40_000),
        _ => em.rng.range(400, 6_000),
    };
    let id = em.rng.uuid();
    let ev = Ev {
        level: "Metadata",
        id,
        stage: if watch {
            Stage::ResponseStarted
        } else {
            Stage::ResponseComplete
        },
        uri: &s.uri,
        verb: op.verb,
        user: actor.user,
        impersonated: actor.impersonated,
        source_ip: actor.ip,
        user_agent: actor.user_agent,
        object: (!op.resource.is_empty()).then_some(ObjRef {
            resource: op.resource,
            namespace: ns,
            name: &s.name,
            group: op.group,
            version: op.version,
            sub: op.sub,
        }),
        status,
        request_object: None,
        response_object: None,
        received: em.now,
        stage_time: em.now + latency,
        decision: "allow",
        reason: actor.reason,
        annotation: None,
    };
    if watch {
        em.emit_long_running(&ev, class, em.now + watch_secs * 1_000_000)
    } else {
        em.emit(&ev, class)
    }
}

/// Writes the planted attacks as TSV: `audit_id`, `attack`, `rule_id`, one
/// line per rule an attack must fire (an attack may fire several).
pub fn write_planted<W: Write>(mut w: W, planted: &[Planted]) -> io::Result<()> {
    writeln!(w, "audit_id\tattack\trule_id")?;
    for p in planted {
        for rule in p.attack.rules() {
            writeln!(w, "{}\t{}\t{rule}", p.audit_id, p.attack.name())?;
        }
    }
    w.flush()
}

/// Reads a file written by [`write_planted`]: (auditID, attack, rule id).
pub fn read_planted(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        match (cols.next(), cols.next(), cols.next(), cols.next()) {
            (Some(id), Some(attack), Some(rule), None) => {
                rows.push((id.to_owned(), attack.to_owned(), rule.to_owned()))
            }
            _ => {
                return Err(format!(
                    "line {}: expected audit_id, attack, rule_id",
                    i + 1
                ));
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(opts: &Options) -> (Vec<u8>, Summary) {
        let mut out = Vec::new();
        let summary = generate(opts, &mut out).unwrap();
        (out, summary)
    }

    #[test]
    fn same_seed_same_bytes_and_exactly_n_lines() {
        let opts = Options {
            events: 3_000,
            seed: 42,
            attack_every: 500,
            ..Options::default()
        };
        let (a, sa) = corpus(&opts);
        let (b, _) = corpus(&opts);
        assert_eq!(a, b);
        assert_eq!(sa.events, 3_000);
        assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 3_000);
        assert_eq!(sa.bytes, a.len() as u64);
        assert_eq!(sa.planted.len(), 6);
        let (c, _) = corpus(&Options { seed: 43, ..opts });
        assert_ne!(a, c);
    }

    #[test]
    fn every_line_parses_and_audit_ids_are_unique_per_request() {
        let (out, summary) = corpus(&Options {
            events: 5_000,
            seed: 7,
            attack_every: 700,
            ..Options::default()
        });
        let mut ids = std::collections::HashSet::new();
        for line in out.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
            assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
            let id = v["auditID"].as_str().unwrap().to_owned();
            // A second line for an auditID is the ResponseComplete of a
            // long-running request.
            if !ids.insert(id) {
                assert_eq!(v["stage"], "ResponseComplete");
            }
        }
        for p in &summary.planted {
            assert!(ids.contains(&p.audit_id.to_string()));
        }
    }

    #[test]
    fn planted_list_round_trips() {
        let (_, summary) = corpus(&Options {
            events: 2_000,
            seed: 1,
            attack_every: 100,
            ..Options::default()
        });
        let mut out = Vec::new();
        write_planted(&mut out, &summary.planted).unwrap();
        let rows = read_planted(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(rows.len(), summary.planted_pairs());
        assert!(read_planted("audit_id\tattack\trule_id\nx\ty\n").is_err());
    }
}
