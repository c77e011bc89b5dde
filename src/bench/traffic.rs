//! The benign traffic of the benchmark cluster, as tables: what kubelets,
//! the workloads' service accounts, the control plane, people with kubectl
//! and health checks send to the API server, with weights. The corpus
//! generator (`corpus.rs`) draws requests from these tables; nothing here
//! fires a rule with kaudit's default configuration except what people do
//! (the catalogue's `disallowed-k8s-user` reports every request of a user
//! not in `allowed_k8s_users`, which sites are expected to fill in).

/// Where a request's namespace comes from.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Cluster-scoped (no namespace), or all namespaces.
    Cluster,
    /// The actor's own namespace (a kubelet's: the namespace of the pod it
    /// serves).
    Own,
    Ns(&'static str),
    /// The namespace of a random application pod.
    App,
}

/// The object's name in the URI and objectRef.
#[derive(Debug, Clone, Copy)]
pub enum Name {
    None,
    Fixed(&'static str),
    /// The node (kubelets, node-bound daemons).
    Node,
    /// The target pod.
    Pod,
    /// The target pod's workload name followed by this suffix.
    Workload(&'static str),
    /// An event about the target pod: `POD.<16 hex digits>`.
    Event,
}

/// A field selector in a list or watch.
#[derive(Debug, Clone, Copy)]
pub enum Sel {
    /// `spec.nodeName=<node>`.
    SpecNode,
    /// `metadata.name=<node>`.
    SelfNode,
    /// `metadata.name=<fixed>`.
    Name(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub enum Query {
    None,
    Raw(&'static str),
    /// `allowWatchBookmarks=true&resourceVersion=N&timeout=..&timeoutSeconds=..&watch=true`.
    Watch,
    WatchSel(Sel),
    /// `fieldSelector=..&limit=500&resourceVersion=0`.
    ListSel(Sel),
}

/// One kind of request and its weight among its actor's requests. A
/// resource of `""` makes a non-resource request whose path is the
/// `Name::Fixed`.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub weight: u32,
    pub verb: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub scope: Scope,
    pub name: Name,
    pub sub: &'static str,
    pub query: Query,
}

#[allow(clippy::too_many_arguments)]
const fn op(
    weight: u32,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    scope: Scope,
    name: Name,
    sub: &'static str,
    query: Query,
) -> Op {
    Op {
        weight,
        verb,
        group,
        version: version_of(group),
        resource,
        scope,
        name,
        sub,
        query,
    }
}

const fn version_of(group: &str) -> &'static str {
    match group.as_bytes() {
        b"argoproj.io" => "v1alpha1",
        b"cilium.io" => "v2",
        _ => "v1",
    }
}

/// A non-resource GET (`/metrics`, `/readyz`, discovery).
const fn path(weight: u32, p: &'static str) -> Op {
    op(
        weight,
        "get",
        "",
        "",
        Scope::Cluster,
        Name::Fixed(p),
        "",
        Query::None,
    )
}

/// Leader election: a get and an update of a lease, every few seconds.
const fn lease(weight: u32, verb: &'static str, scope: Scope, name: &'static str) -> Op {
    op(
        weight,
        verb,
        "coordination.k8s.io",
        "leases",
        scope,
        Name::Fixed(name),
        "",
        Query::Raw("timeout=5s"),
    )
}

use Name as N;
use Query as Q;
use Scope as S;

const LIST: Query = Q::Raw("limit=500&resourceVersion=0");

/// Kubelets: node lease and status, their pods' status, the config maps
/// and secrets of their pods, events, and (rarely) a TokenRequest for a
/// pod, which is generated separately because it rotates the pod's token.
pub const KUBELET: &[Op] = &[
    op(
        30,
        "update",
        "coordination.k8s.io",
        "leases",
        S::Ns("kube-node-lease"),
        N::Node,
        "",
        Q::Raw("timeout=10s"),
    ),
    op(
        6,
        "get",
        "coordination.k8s.io",
        "leases",
        S::Ns("kube-node-lease"),
        N::Node,
        "",
        Q::Raw("timeout=10s"),
    ),
    op(
        12,
        "get",
        "",
        "nodes",
        S::Cluster,
        N::Node,
        "",
        Q::Raw("resourceVersion=0&timeout=10s"),
    ),
    op(
        8,
        "patch",
        "",
        "nodes",
        S::Cluster,
        N::Node,
        "status",
        Q::Raw("timeout=10s"),
    ),
    op(10, "patch", "", "pods", S::Own, N::Pod, "status", Q::None),
    op(5, "get", "", "pods", S::Own, N::Pod, "", Q::None),
    op(
        6,
        "list",
        "",
        "configmaps",
        S::Own,
        N::None,
        "",
        Q::ListSel(Sel::Name("kube-root-ca.crt")),
    ),
    op(
        3,
        "watch",
        "",
        "configmaps",
        S::Own,
        N::None,
        "",
        Q::WatchSel(Sel::Name("kube-root-ca.crt")),
    ),
    op(
        3,
        "get",
        "",
        "configmaps",
        S::Own,
        N::Workload("-config"),
        "",
        Q::None,
    ),
    op(
        4,
        "get",
        "",
        "secrets",
        S::Own,
        N::Workload("-credentials"),
        "",
        Q::None,
    ),
    op(3, "create", "", "events", S::Own, N::Event, "", Q::None),
    op(
        2,
        "watch",
        "",
        "pods",
        S::Cluster,
        N::None,
        "",
        Q::WatchSel(Sel::SpecNode),
    ),
    op(
        1,
        "watch",
        "",
        "services",
        S::Cluster,
        N::None,
        "",
        Q::Watch,
    ),
    op(
        1,
        "watch",
        "",
        "nodes",
        S::Cluster,
        N::None,
        "",
        Q::WatchSel(Sel::SelfNode),
    ),
    op(
        1,
        "get",
        "storage.k8s.io",
        "csinodes",
        S::Cluster,
        N::Node,
        "",
        Q::None,
    ),
];

/// A workload whose pods talk to the API server with their bound
/// service-account tokens.
#[derive(Debug)]
pub struct Workload {
    pub ns: &'static str,
    pub sa: &'static str,
    pub name: &'static str,
    pub user_agent: &'static str,
    /// Replicas; 0 for a DaemonSet (one pod per node).
    pub replicas: u32,
    /// Pods on the host network use their node's address.
    pub host_network: bool,
    /// An application (its namespace is one of `Scope::App`'s).
    pub app: bool,
    /// Share of the service-account traffic.
    pub weight: u32,
    pub ops: &'static [Op],
    /// The RBAC binding that allows it (for the authorization reason).
    pub binding: &'static str,
}

#[allow(clippy::too_many_arguments)]
const fn workload(
    ns: &'static str,
    sa: &'static str,
    name: &'static str,
    user_agent: &'static str,
    replicas: u32,
    weight: u32,
    ops: &'static [Op],
    binding: &'static str,
) -> Workload {
    Workload {
        ns,
        sa,
        name,
        user_agent,
        replicas,
        host_network: false,
        app: false,
        weight,
        ops,
        binding,
    }
}

const fn app(
    ns: &'static str,
    name: &'static str,
    user_agent: &'static str,
    replicas: u32,
    weight: u32,
    ops: &'static [Op],
) -> Workload {
    Workload {
        ns,
        sa: name,
        name,
        user_agent,
        replicas,
        host_network: false,
        app: true,
        weight,
        ops,
        binding: name,
    }
}

const fn daemon(w: Workload, host_network: bool) -> Workload {
    Workload {
        replicas: 0,
        host_network,
        ..w
    }
}

const APP_CONFIG: &[Op] = &[
    op(
        8,
        "get",
        "",
        "configmaps",
        S::Own,
        N::Workload("-config"),
        "",
        Q::None,
    ),
    op(
        1,
        "watch",
        "",
        "configmaps",
        S::Own,
        N::None,
        "",
        Q::WatchSel(Sel::Name("feature-flags")),
    ),
    lease(4, "get", S::Own, "leader"),
    lease(4, "update", S::Own, "leader"),
    op(1, "create", "", "events", S::Own, N::Event, "", Q::None),
];

const APP_WEB: &[Op] = &[
    op(
        8,
        "get",
        "",
        "configmaps",
        S::Own,
        N::Workload("-config"),
        "",
        Q::None,
    ),
    op(
        2,
        "get",
        "",
        "services",
        S::Own,
        N::Fixed("cart"),
        "",
        Q::None,
    ),
    op(
        1,
        "list",
        "discovery.k8s.io",
        "endpointslices",
        S::Own,
        N::None,
        "",
        Q::Raw("labelSelector=kubernetes.io%2Fservice-name%3Dcart&limit=500"),
    ),
];

/// The cluster's workloads: add-ons and operators, then applications.
pub const WORKLOADS: &[Workload] = &[
    workload(
        "kube-system",
        "coredns",
        "coredns",
        "coredns/v1.11.3 (linux/amd64) kubernetes/$Format",
        2,
        3,
        &[
            op(
                2,
                "watch",
                "discovery.k8s.io",
                "endpointslices",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
            op(
                1,
                "list",
                "discovery.k8s.io",
                "endpointslices",
                S::Cluster,
                N::None,
                "",
                LIST,
            ),
            op(
                1,
                "watch",
                "",
                "services",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
            op(
                1,
                "watch",
                "",
                "namespaces",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
        ],
        "system:coredns",
    ),
    daemon(
        workload(
            "kube-system",
            "kube-proxy",
            "kube-proxy",
            "kube-proxy/v1.30.4 (linux/amd64) kubernetes/0b4d27c",
            0,
            4,
            &[
                op(
                    2,
                    "watch",
                    "discovery.k8s.io",
                    "endpointslices",
                    S::Cluster,
                    N::None,
                    "",
                    Q::Raw(
                        "allowWatchBookmarks=true&labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name&resourceVersion=48214102&timeout=9m12s&timeoutSeconds=552&watch=true",
                    ),
                ),
                op(
                    2,
                    "watch",
                    "",
                    "services",
                    S::Cluster,
                    N::None,
                    "",
                    Q::Watch,
                ),
                op(
                    3,
                    "get",
                    "",
                    "nodes",
                    S::Cluster,
                    N::Node,
                    "",
                    Q::Raw("resourceVersion=0"),
                ),
            ],
            "system:node-proxier",
        ),
        true,
    ),
    daemon(
        workload(
            "kube-system",
            "cilium",
            "cilium",
            "cilium-agent/1.16.1 (linux/amd64) kubernetes/$Format",
            0,
            8,
            &[
                op(
                    6,
                    "get",
                    "cilium.io",
                    "ciliumnodes",
                    S::Cluster,
                    N::Node,
                    "",
                    Q::None,
                ),
                op(
                    3,
                    "update",
                    "cilium.io",
                    "ciliumnodes",
                    S::Cluster,
                    N::Node,
                    "status",
                    Q::None,
                ),
                op(
                    4,
                    "patch",
                    "cilium.io",
                    "ciliumendpoints",
                    S::App,
                    N::Pod,
                    "",
                    Q::None,
                ),
                op(
                    1,
                    "watch",
                    "cilium.io",
                    "ciliumidentities",
                    S::Cluster,
                    N::None,
                    "",
                    Q::Watch,
                ),
                op(
                    1,
                    "watch",
                    "",
                    "pods",
                    S::Cluster,
                    N::None,
                    "",
                    Q::WatchSel(Sel::SpecNode),
                ),
            ],
            "cilium",
        ),
        true,
    ),
    daemon(
        workload(
            "logging",
            "fluent-bit",
            "fluent-bit",
            "fluent-bit/3.1.7",
            0,
            5,
            &[
                op(6, "get", "", "pods", S::App, N::Pod, "", Q::None),
                op(
                    1,
                    "list",
                    "",
                    "pods",
                    S::Cluster,
                    N::None,
                    "",
                    Q::ListSel(Sel::SpecNode),
                ),
            ],
            "fluent-bit-read",
        ),
        false,
    ),
    workload(
        "cert-manager",
        "cert-manager",
        "cert-manager",
        "cert-manager-controller/v1.15.3 (linux/amd64) cert-manager/6ea5ed6c1e6e4ce8f2fc1b8b1b0d2b8e1e1d7c5a",
        1,
        6,
        &[
            lease(20, "get", S::Ns("kube-system"), "cert-manager-controller"),
            lease(
                20,
                "update",
                S::Ns("kube-system"),
                "cert-manager-controller",
            ),
            op(
                1,
                "watch",
                "cert-manager.io",
                "certificates",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
            op(
                1,
                "list",
                "cert-manager.io",
                "certificaterequests",
                S::Cluster,
                N::None,
                "",
                LIST,
            ),
            op(1, "watch", "", "secrets", S::Own, N::None, "", Q::Watch),
            op(1, "create", "", "events", S::Own, N::Event, "", Q::None),
        ],
        "cert-manager-controller-certificates",
    ),
    workload(
        "ingress-nginx",
        "ingress-nginx",
        "ingress-nginx-controller",
        "nginx-ingress-controller/v1.11.2 (linux/amd64) ingress-nginx/46e76e5916813cfca2a9b0bfdc34b69a0000f6b9",
        2,
        6,
        &[
            lease(20, "get", S::Own, "ingress-nginx-leader"),
            lease(20, "update", S::Own, "ingress-nginx-leader"),
            op(
                1,
                "watch",
                "networking.k8s.io",
                "ingresses",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
            op(
                1,
                "watch",
                "discovery.k8s.io",
                "endpointslices",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
            op(
                3,
                "get",
                "",
                "configmaps",
                S::Own,
                N::Fixed("ingress-nginx-controller"),
                "",
                Q::None,
            ),
        ],
        "ingress-nginx",
    ),
    workload(
        "monitoring",
        "prometheus",
        "prometheus",
        "Prometheus/2.54.1",
        1,
        4,
        &[
            path(10, "/metrics"),
            op(1, "watch", "", "pods", S::Cluster, N::None, "", Q::Watch),
            op(
                1,
                "watch",
                "discovery.k8s.io",
                "endpointslices",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
            op(
                1,
                "watch",
                "",
                "services",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
        ],
        "prometheus",
    ),
    workload(
        "monitoring",
        "kube-state-metrics",
        "kube-state-metrics",
        "kube-state-metrics/v2.13.0 (linux/amd64) kubernetes/$Format",
        1,
        3,
        &[
            op(2, "list", "", "pods", S::Cluster, N::None, "", LIST),
            op(
                1,
                "list",
                "apps",
                "deployments",
                S::Cluster,
                N::None,
                "",
                LIST,
            ),
            op(
                1,
                "list",
                "apps",
                "replicasets",
                S::Cluster,
                N::None,
                "",
                LIST,
            ),
            op(1, "list", "", "nodes", S::Cluster, N::None, "", LIST),
            op(1, "list", "", "namespaces", S::Cluster, N::None, "", LIST),
            op(1, "watch", "", "pods", S::Cluster, N::None, "", Q::Watch),
        ],
        "kube-state-metrics",
    ),
    workload(
        "argocd",
        "argocd-application-controller",
        "argocd-application-controller",
        "argocd-application-controller/v2.12.3 (linux/amd64) kubernetes/$Format",
        1,
        5,
        &[
            op(
                5,
                "get",
                "apps",
                "deployments",
                S::App,
                N::Workload(""),
                "",
                Q::None,
            ),
            op(
                3,
                "list",
                "",
                "pods",
                S::App,
                N::None,
                "",
                Q::Raw("limit=500"),
            ),
            op(
                2,
                "patch",
                "argoproj.io",
                "applications",
                S::Own,
                N::Fixed("shop"),
                "",
                Q::None,
            ),
            op(
                1,
                "watch",
                "argoproj.io",
                "applications",
                S::Own,
                N::None,
                "",
                Q::Watch,
            ),
        ],
        "argocd-application-controller",
    ),
    workload(
        "karpenter",
        "karpenter",
        "karpenter",
        "karpenter/v1.0.6 (linux/amd64) kubernetes/$Format",
        2,
        6,
        &[
            lease(20, "get", S::Own, "karpenter-leader-election"),
            lease(20, "update", S::Own, "karpenter-leader-election"),
            op(2, "list", "", "nodes", S::Cluster, N::None, "", LIST),
            op(
                2,
                "list",
                "karpenter.sh",
                "nodeclaims",
                S::Cluster,
                N::None,
                "",
                LIST,
            ),
            op(1, "watch", "", "pods", S::Cluster, N::None, "", Q::Watch),
        ],
        "karpenter-core",
    ),
    workload(
        "external-dns",
        "external-dns",
        "external-dns",
        "external-dns/v0.15.0 (linux/amd64) kubernetes/$Format",
        1,
        1,
        &[
            op(1, "list", "", "services", S::Cluster, N::None, "", LIST),
            op(
                1,
                "list",
                "networking.k8s.io",
                "ingresses",
                S::Cluster,
                N::None,
                "",
                LIST,
            ),
        ],
        "external-dns-viewer",
    ),
    workload(
        "kube-system",
        "ebs-csi-controller-sa",
        "ebs-csi-controller",
        "csi-attacher/v4.6.1 (linux/amd64) kubernetes/$Format",
        2,
        6,
        &[
            lease(10, "get", S::Ns("kube-system"), "ebs-csi-aws-com"),
            lease(10, "update", S::Ns("kube-system"), "ebs-csi-aws-com"),
            lease(
                10,
                "get",
                S::Ns("kube-system"),
                "external-attacher-leader-ebs-csi-aws-com",
            ),
            lease(
                10,
                "update",
                S::Ns("kube-system"),
                "external-attacher-leader-ebs-csi-aws-com",
            ),
            op(
                1,
                "watch",
                "storage.k8s.io",
                "volumeattachments",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
            op(
                1,
                "watch",
                "",
                "persistentvolumes",
                S::Cluster,
                N::None,
                "",
                Q::Watch,
            ),
        ],
        "ebs-csi-attacher-binding",
    ),
    app(
        "payments",
        "api",
        "api/v0.0.0 (linux/amd64) kubernetes/$Format",
        12,
        8,
        APP_CONFIG,
    ),
    app(
        "payments",
        "ledger-worker",
        "ledger-worker/v0.0.0 (linux/amd64) kubernetes/$Format",
        6,
        5,
        APP_CONFIG,
    ),
    app(
        "shop",
        "web",
        "web/v0.0.0 (linux/amd64) kubernetes/$Format",
        20,
        8,
        APP_WEB,
    ),
    app(
        "shop",
        "cart",
        "cart/v0.0.0 (linux/amd64) kubernetes/$Format",
        8,
        4,
        APP_CONFIG,
    ),
    app(
        "search",
        "indexer",
        "indexer/v0.0.0 (linux/amd64) kubernetes/$Format",
        6,
        4,
        APP_CONFIG,
    ),
];

/// The control plane's own identities (client certificates, not tokens).
pub struct ControlPlane {
    pub username: &'static str,
    pub user_agent: &'static str,
    pub reason: &'static str,
    pub weight: u32,
    pub ops: &'static [Op],
}

pub const CONTROL_PLANE: &[ControlPlane] = &[
    ControlPlane {
        username: "system:kube-controller-manager",
        user_agent: "kube-controller-manager/v1.30.4 (linux/amd64) kubernetes/0b4d27c/leader-election",
        reason: r#"RBAC: allowed by ClusterRoleBinding \"system:kube-controller-manager\" of ClusterRole \"system:kube-controller-manager\" to User \"system:kube-controller-manager\""#,
        weight: 3,
        ops: &[
            lease(15, "get", S::Ns("kube-system"), "kube-controller-manager"),
            lease(
                15,
                "update",
                S::Ns("kube-system"),
                "kube-controller-manager",
            ),
            op(
                3,
                "update",
                "apps",
                "deployments",
                S::App,
                N::Workload(""),
                "status",
                Q::None,
            ),
            op(
                4,
                "update",
                "discovery.k8s.io",
                "endpointslices",
                S::App,
                N::Workload("-7bk2x"),
                "",
                Q::None,
            ),
            op(3, "create", "", "events", S::App, N::Event, "", Q::None),
        ],
    },
    ControlPlane {
        username: "system:kube-scheduler",
        user_agent: "kube-scheduler/v1.30.4 (linux/amd64) kubernetes/0b4d27c/leader-election",
        reason: r#"RBAC: allowed by ClusterRoleBinding \"system:kube-scheduler\" of ClusterRole \"system:kube-scheduler\" to User \"system:kube-scheduler\""#,
        weight: 2,
        ops: &[
            lease(15, "get", S::Ns("kube-system"), "kube-scheduler"),
            lease(15, "update", S::Ns("kube-system"), "kube-scheduler"),
            op(2, "create", "", "pods", S::App, N::Pod, "binding", Q::None),
            op(1, "create", "", "events", S::App, N::Event, "", Q::None),
        ],
    },
];

/// People with kubectl: OIDC users from the office or the VPN.
pub struct Person {
    pub username: &'static str,
    pub groups: &'static [&'static str],
    pub ip: &'static str,
    pub user_agent: &'static str,
    pub reason: &'static str,
}

const PLATFORM: &str = r#"RBAC: allowed by ClusterRoleBinding \"platform-admins\" of ClusterRole \"cluster-admin\" to Group \"platform-team\""#;
const DEVELOPERS: &str = r#"RBAC: allowed by ClusterRoleBinding \"developers-edit\" of ClusterRole \"edit\" to Group \"developers\""#;

pub const PEOPLE: &[Person] = &[
    Person {
        username: "alice@example.com",
        groups: &["platform-team", "system:authenticated"],
        ip: "198.51.100.23",
        user_agent: "kubectl/v1.30.2 (linux/amd64) kubernetes/39683505",
        reason: PLATFORM,
    },
    Person {
        username: "bob@example.com",
        groups: &["developers", "system:authenticated"],
        ip: "198.51.100.41",
        user_agent: "kubectl/v1.30.5 (darwin/arm64) kubernetes/74e84a9",
        reason: DEVELOPERS,
    },
    Person {
        username: "carol@example.com",
        groups: &["platform-team", "system:authenticated"],
        ip: "203.0.113.18",
        user_agent: "kubectl/v1.30.2 (darwin/arm64) kubernetes/39683505",
        reason: PLATFORM,
    },
    Person {
        username: "dave@example.com",
        groups: &["developers", "system:authenticated"],
        ip: "203.0.113.52",
        user_agent: "kubectl/v1.30.4 (windows/amd64) kubernetes/0b4d27c",
        reason: DEVELOPERS,
    },
    Person {
        username: "erin@example.com",
        groups: &["developers", "system:authenticated"],
        ip: "198.51.100.77",
        user_agent: "kubectl/v1.30.5 (linux/amd64) kubernetes/74e84a9",
        reason: DEVELOPERS,
    },
];

/// What people do: discovery, looking at pods, logs, deployments and
/// events of the applications, the odd rollout restart.
pub const PERSON_OPS: &[Op] = &[
    path(4, "/api"),
    path(4, "/apis"),
    op(
        10,
        "list",
        "",
        "pods",
        S::App,
        N::None,
        "",
        Q::Raw("limit=500"),
    ),
    op(5, "get", "", "pods", S::App, N::Pod, "", Q::None),
    op(5, "get", "", "pods", S::App, N::Pod, "log", Q::None),
    op(
        4,
        "list",
        "apps",
        "deployments",
        S::App,
        N::None,
        "",
        Q::Raw("limit=500"),
    ),
    op(
        3,
        "get",
        "apps",
        "deployments",
        S::App,
        N::Workload(""),
        "",
        Q::None,
    ),
    op(
        1,
        "patch",
        "apps",
        "deployments",
        S::App,
        N::Workload(""),
        "",
        Q::Raw("fieldManager=kubectl-rollout"),
    ),
    op(
        3,
        "list",
        "",
        "events",
        S::App,
        N::None,
        "",
        Q::Raw("limit=500"),
    ),
    op(
        2,
        "list",
        "",
        "namespaces",
        S::Cluster,
        N::None,
        "",
        Q::Raw("limit=500"),
    ),
    op(
        2,
        "list",
        "",
        "nodes",
        S::Cluster,
        N::None,
        "",
        Q::Raw("limit=500"),
    ),
];

/// Health checks of the API server: load balancers and probes
/// (anonymous), and the monitoring service account.
pub const HEALTH_PATHS: &[Op] = &[path(4, "/readyz"), path(4, "/livez"), path(2, "/healthz")];

pub const PROBES: &[(&str, &str)] = &[
    ("10.0.1.5", "ELB-HealthChecker/2.0"),
    ("10.0.2.5", "ELB-HealthChecker/2.0"),
    ("10.0.3.5", "ELB-HealthChecker/2.0"),
    ("10.0.0.10", "kube-probe/1.30"),
];

pub const PUBLIC_INFO_VIEWER: &str = r#"RBAC: allowed by ClusterRoleBinding \"system:public-info-viewer\" of ClusterRole \"system:public-info-viewer\" to Group \"system:unauthenticated\""#;

/// The user agent of kubelets.
pub const KUBELET_UA: &str = "kubelet/v1.30.4 (linux/amd64) kubernetes/0b4d27c";

/// The control plane's address.
pub const CONTROL_PLANE_IP: &str = "10.0.0.10";
