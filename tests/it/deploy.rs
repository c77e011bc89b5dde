//! deploy/ checked against the binary and against each other: the example
//! configurations pass `kaudit check` and document every option; every YAML
//! file parses; the audit policy logs what the detections read and never a
//! secret's body; the image, the systemd unit and the Kubernetes manifests
//! agree on binary, user, ports and paths; the image's healthcheck and the
//! certificates make-certs.sh makes work against a running daemon; the
//! manifests validate against Kubernetes' schemas and the unit passes
//! systemd-analyze (both through scripts/validate-deploy.sh); the scaled
//! overlay (deploy/kubernetes/scaled) renders several replicas on a
//! PostgreSQL store whose URL comes from a Secret, and validates too.

use std::collections::BTreeSet;
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::daemon::make_pki;
use super::*;

mod apiserver;
mod image;

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy().join(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

/// Every document of a YAML file (multi-document files too).
fn docs(text: &str, what: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{what}: {e}")))
        .collect()
}

fn yaml(rel: &str) -> Value {
    let mut d = docs(&read(rel), rel);
    assert_eq!(d.len(), 1, "deploy/{rel}: one document expected");
    d.remove(0)
}

/// The ConfigMap's kaudit.yaml.
fn configmap_config() -> String {
    yaml("kubernetes/base/configmap.yaml")["data"]["kaudit.yaml"]
        .as_str()
        .expect("data.kaudit.yaml")
        .to_owned()
}

/// `text` with `from` replaced by `to`; `from` must occur (the test says
/// which assumption about deploy/ broke).
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "expected {from:?} in the configuration"
    );
    text.replace(from, to)
}

/// The TLS files a configuration names under /etc/kaudit/tls/, made in
/// `etc/tls` (a CA, a server certificate and key, the clients' CA).
fn tls_files(etc: &Path) {
    let tls = etc.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let pki = make_pki(&tls, "kube-apiserver-prod-eu-1");
    std::fs::rename(&pki.cert, tls.join("tls.crt")).unwrap();
    std::fs::rename(&pki.key, tls.join("tls.key")).unwrap();
    std::fs::rename(&pki.ca, tls.join("apiservers-ca.crt")).unwrap();
}

/// `kaudit check --config FILE` with these environment variables.
fn check(config: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["check", "--config", &path_str(config)])
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The `pub NAME:` fields of the configuration structs: the option names.
fn option_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for f in [
        "src/config.rs",
        "src/config/daemon.rs",
        "src/config/alerts.rs",
    ] {
        let src = std::fs::read_to_string(root().join(f)).unwrap();
        for line in src.lines() {
            if let Some(rest) = line.trim().strip_prefix("pub ")
                && let Some((name, _)) = rest.split_once(':')
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn example_config_passes_check_and_names_every_option() {
    let text = read("kaudit.example.yaml");
    // `kind` is written `type` (serde rename).
    let missing: Vec<_> = option_names()
        .into_iter()
        .map(|n| if n == "kind" { "type".to_owned() } else { n })
        .filter(|n| !text.contains(&format!("{n}:")))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/kaudit.example.yaml does not show {missing:?}"
    );
    for kind in ["file", "stdin", "webhook", "kafka"] {
        assert!(text.contains(&format!("type: {kind}")), "no {kind} source");
    }

    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    tls_files(&etc);
    std::fs::create_dir_all(etc.join("rules")).unwrap();
    std::fs::create_dir_all(etc.join("secrets")).unwrap();
    std::fs::write(etc.join("secrets/forwarder.token"), "forwarder-s3cret\n").unwrap();
    let cfg = tmp.path().join("kaudit.yaml");
    std::fs::write(
        &cfg,
        swap(&text, "/etc/kaudit/", &format!("{}/", path_str(&etc))),
    )
    .unwrap();
    let secrets = [
        ("FIREHOSE_ACCESS_KEY", "fh-s3cret"),
        ("KAFKA_PASSWORD", "kafka-s3cret"),
        (
            "EVENTHUBS_CONNECTION",
            "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=hubs-s3cret",
        ),
        ("SIEM_URL", "https://siem.example/hook?token=url-s3cret"),
        ("SIEM_HMAC", "hmac-s3cret"),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/slack-s3cret",
        ),
        ("SMTP_PASSWORD", "smtp-s3cret"),
    ];
    let out = check(&cfg, &secrets);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("7 source(s)"), "{printed}");
    assert!(
        !printed.contains("s3cret"),
        "check printed a secret: {printed}"
    );
    // Without the environment, check names each missing secret.
    let out = check(&cfg, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("KAFKA_PASSWORD is not set"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn configmap_config_passes_check_with_the_deployments_env() {
    let text = configmap_config();
    // Every *_env it names is set by the Deployment.
    let dep = yaml("kubernetes/base/deployment.yaml");
    let env: BTreeSet<&str> = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for line in text.lines() {
        if let Some((_, var)) = line.split_once("_env: ") {
            assert!(
                env.contains(var.trim()),
                "the Deployment does not set {var}"
            );
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    tls_files(&etc);
    let cfg = tmp.path().join("kaudit.yaml");
    std::fs::write(
        &cfg,
        swap(&text, "/etc/kaudit/", &format!("{}/", path_str(&etc))),
    )
    .unwrap();
    let out = check(&cfg, &[("KAFKA_PASSWORD", "x")]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&deploy(), &mut files);
    assert!(files.len() >= 12, "{files:?}");
    for f in &files {
        let d = docs(&std::fs::read_to_string(f).unwrap(), &path_str(f));
        assert!(!d.is_empty(), "{} is empty", f.display());
        for v in d {
            assert!(
                v.as_mapping().is_some_and(|m| !m.is_empty()),
                "{}: a document is not a mapping",
                f.display()
            );
        }
    }
    docs(&configmap_config(), "configmap.yaml data.kaudit.yaml");
}

#[test]
fn shippers_fill_the_topic_the_kafka_source_reads() {
    let cm = configmap_config();
    assert!(cm.contains("topic: k8s-audit") && cm.contains("cluster_from: key"));
    let fb = read("shippers/fluent-bit.conf");
    let kv = |k: &str| {
        fb.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(k)).then(|| w.collect::<Vec<_>>().join(" "))
        })
    };
    assert_eq!(kv("Topics").as_deref(), Some("k8s-audit"));
    assert!(kv("Message_Key").is_some(), "the cluster goes in the key");
    assert_eq!(
        kv("Path").as_deref(),
        Some("/var/log/kubernetes/audit/audit*.log")
    );
    let v = yaml("shippers/vector.yaml");
    assert_eq!(v["sinks"]["kafka"]["topic"], "k8s-audit");
    assert_eq!(v["sinks"]["kafka"]["key_field"], "cluster");
    assert_eq!(v["sinks"]["kafka"]["encoding"]["codec"], "text");
    assert_eq!(
        v["sources"]["kube_audit"]["include"][0],
        "/var/log/kubernetes/audit/audit*.log"
    );
    assert!(
        read("apiserver/apiserver-flags.md")
            .contains("--audit-log-path=/var/log/kubernetes/audit/audit.log")
    );
}

/// deploy/kubernetes/scaled as `kubectl kustomize` renders it: every
/// document (kubectl is needed, as for the base in validate-deploy.sh).
fn render_scaled() -> (String, Vec<Value>) {
    let out = Command::new("kubectl")
        .args(["kustomize", "deploy/kubernetes/scaled"])
        .current_dir(root())
        .output()
        .expect("kubectl (it renders the kustomize overlays)");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/kubernetes/scaled: {}",
        stderr(&out)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let d = docs(&text, "kubectl kustomize deploy/kubernetes/scaled");
    (text, d)
}

/// The one rendered document of this kind (and name, if given).
fn one<'a>(d: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<_> = d
        .iter()
        .filter(|v| v["kind"] == kind && name.is_none_or(|n| v["metadata"]["name"] == n))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name:?} expected");
    found[0]
}

/// Whether a `matchLabels` selector selects these labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

/// The `*_env` values anywhere in a configuration: the variables it reads.
fn env_names(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str().is_some_and(|k| k.ends_with("_env"))
                    && let Some(name) = v.as_str()
                {
                    out.insert(name.to_owned());
                }
                env_names(v, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| env_names(v, out)),
        _ => {}
    }
}

/// The scaled overlay: several replicas in one Kafka consumer group over
/// one PostgreSQL store. No PVC, the store's URL from a Secret, the base's
/// pod hardening and resources kept, replicas spread over nodes, a
/// disruption budget that selects them, egress to PostgreSQL; the rendered
/// output validates against Kubernetes' schemas.
#[test]
fn scaled_overlay_runs_replicas_on_postgres_from_a_secret() {
    let (text, d) = render_scaled();
    let kinds: Vec<&str> = d.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    for kind in [
        "PersistentVolumeClaim",
        "DaemonSet",
        "StatefulSet",
        "Secret",
    ] {
        assert!(
            !kinds.contains(&kind),
            "the scaled overlay renders a {kind}: {kinds:?}"
        );
    }
    assert!(
        d.iter()
            .all(|v| v["metadata"]["namespace"] == "kaudit" || v["kind"] == "Namespace")
    );

    let dep = one(&d, "Deployment", Some("kaudit"));
    let base = yaml("kubernetes/base/deployment.yaml");
    assert!(
        dep["spec"]["replicas"].as_u64().unwrap() >= 2,
        "{:?}",
        dep["spec"]["replicas"]
    );
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &dep["spec"]["template"]["spec"];
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&dep["spec"]["selector"], labels));
    // The base's hardening, as it is.
    let base_pod = &base["spec"]["template"]["spec"];
    for k in [
        "securityContext",
        "serviceAccountName",
        "automountServiceAccountToken",
    ] {
        assert_eq!(pod[k], base_pod[k], "pod {k}");
    }
    let c = &pod["containers"][0];
    let bc = &base_pod["containers"][0];
    for k in [
        "args",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
    ] {
        assert_eq!(c[k], bc[k], "container {k}");
    }
    // Replicas prefer distinct nodes.
    let anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_sequence()
        .into_iter()
        .flatten()
        .chain(
            pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                .as_sequence()
                .into_iter()
                .flatten(),
        )
        .map(|t| if t["podAffinityTerm"].is_mapping() { &t["podAffinityTerm"] } else { t })
        .any(|t| t["topologyKey"] == "kubernetes.io/hostname" && selects(&t["labelSelector"], labels));
    assert!(
        anti,
        "no pod anti-affinity over kubernetes.io/hostname: {:?}",
        pod["affinity"]
    );

    // No SQLite file: no PVC volume, nothing mounted at /var/lib/kaudit.
    let volumes = pod["volumes"].as_sequence().unwrap();
    assert!(
        volumes.iter().all(|v| v["persistentVolumeClaim"].is_null()),
        "{volumes:?}"
    );
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&"/etc/kaudit") && !mounts.contains(&"/var/lib/kaudit"),
        "{mounts:?}"
    );
    // Every Secret a volume needs is one the docs tell to create.
    for v in volumes {
        for s in v["projected"]["sources"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            assert!(
                s["secret"].is_null(),
                "the scaled pod mounts a Secret: {s:?}"
            );
        }
    }

    // The configuration: PostgreSQL, no path; Kafka in one group.
    let cm = one(&d, "ConfigMap", Some("kaudit-config"));
    let cfg_text = cm["data"]["kaudit.yaml"]
        .as_str()
        .expect("data.kaudit.yaml");
    let cfg = docs(cfg_text, "the scaled ConfigMap's kaudit.yaml").remove(0);
    let storage = &cfg["storage"];
    assert!(
        storage["path"].is_null(),
        "storage.path with several instances: {storage:?}"
    );
    let pg = &storage["postgres"];
    assert!(pg.is_mapping(), "no storage.postgres: {storage:?}");
    assert!(
        pg["url"].is_null(),
        "the PostgreSQL URL inline in a ConfigMap"
    );
    let url_env = pg["url_env"].as_str().expect("storage.postgres.url_env");
    if !pg["pool"].is_null() {
        assert!(
            (1..=32).contains(&pg["pool"].as_u64().unwrap()),
            "{:?}",
            pg["pool"]
        );
    }
    let sources = cfg["sources"].as_sequence().unwrap();
    assert!(!sources.is_empty());
    let mut groups = BTreeSet::new();
    for s in sources {
        // A webhook would spread one cluster's batches over the replicas.
        assert_eq!(s["type"], "kafka", "only Kafka sources scale out: {s:?}");
        assert_eq!(
            s["cluster_from"], "key",
            "a cluster's events stay on one partition"
        );
        groups.insert(s["group_id"].as_str().expect("group_id").to_owned());
    }
    assert_eq!(groups.len(), 1, "one consumer group: {groups:?}");
    assert!(cfg_text.contains("topic: k8s-audit"), "the shippers' topic");

    // The URL from a Secret's key, required; the Secret is an example only.
    let env = c["env"].as_sequence().unwrap();
    let var = env
        .iter()
        .find(|e| e["name"] == url_env)
        .unwrap_or_else(|| panic!("the Deployment does not set {url_env}"));
    let key_ref = &var["valueFrom"]["secretKeyRef"];
    assert!(key_ref.is_mapping() && var["value"].is_null(), "{var:?}");
    assert_ne!(key_ref["optional"], true, "{var:?}");
    let secret = yaml("kubernetes/scaled/secret-postgres.example.yaml");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], key_ref["name"]);
    let key = key_ref["key"].as_str().unwrap();
    let example = secret["stringData"][key]
        .as_str()
        .expect("stringData holds the key");
    assert!(
        example.starts_with("postgres://") && example.contains("CHANGE-ME"),
        "{example}"
    );
    assert!(
        !text.contains("CHANGE-ME"),
        "the example Secret is rendered"
    );
    // Every variable the configuration reads, the Deployment sets.
    let set: BTreeSet<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
    let mut read = BTreeSet::new();
    env_names(&cfg, &mut read);
    for v in &read {
        assert!(set.contains(v.as_str()), "the Deployment does not set {v}");
    }

    // Ports: only the operations server; no webhook Service.
    let ports: Vec<u64> = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [9090]);
    assert!(cfg_text.contains("listen: \"0.0.0.0:9090\""));
    for s in d.iter().filter(|v| v["kind"] == "Service") {
        for p in s["spec"]["ports"].as_sequence().unwrap() {
            assert_ne!(p["port"], 8443, "{s:?}");
        }
    }

    // A disruption budget for these pods that lets one go at a time.
    let pdb = one(&d, "PodDisruptionBudget", None);
    assert!(selects(&pdb["spec"]["selector"], labels), "{pdb:?}");
    let replicas = dep["spec"]["replicas"].as_u64().unwrap();
    match (
        pdb["spec"]["maxUnavailable"].as_u64(),
        pdb["spec"]["minAvailable"].as_u64(),
    ) {
        (Some(n), None) => assert!(n >= 1 && n < replicas),
        (None, Some(n)) => assert!(n >= 1 && n < replicas),
        other => panic!("PodDisruptionBudget: {other:?}"),
    }

    // NetworkPolicy: egress to PostgreSQL, nothing in on 8443.
    let policies: Vec<&Value> = d
        .iter()
        .filter(|v| v["kind"] == "NetworkPolicy" && selects(&v["spec"]["podSelector"], labels))
        .collect();
    let port_in = |rules: &Value, port: u64| {
        rules.as_sequence().into_iter().flatten().any(|r| {
            r["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|p| p["port"].as_u64() == Some(port))
        })
    };
    assert!(policies.iter().any(|p| port_in(&p["spec"]["egress"], 5432)));
    assert!(
        !policies
            .iter()
            .any(|p| port_in(&p["spec"]["ingress"], 8443))
    );

    // The rendered overlay against Kubernetes' schemas, the versions
    // validate-deploy.sh checks (it builds the validator's venv).
    let venv = std::env::var_os("KAUDIT_VALIDATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/kaudit-validate-venv")
        });
    let ready = Command::new("bash")
        .args([
            "-c",
            r#"mkdir -p "$(dirname "$1")" && exec 9>"$1.lock" && flock 9 && test -x "$1/bin/kubernetes-validate""#,
            "_",
        ])
        .arg(&venv)
        .status()
        .unwrap()
        .success();
    if !ready {
        let out = Command::new("bash")
            .args(["scripts/validate-deploy.sh", "manifests"])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "validate-deploy.sh manifests: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    let script = std::fs::read_to_string(root().join("scripts/validate-deploy.sh")).unwrap();
    let versions = script
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSIONS=\""))
        .and_then(|l| l.split_once('"'))
        .expect("K8S_VERSIONS in validate-deploy.sh")
        .0;
    let tmp = tempfile::tempdir().unwrap();
    let rendered = tmp.path().join("scaled.yaml");
    std::fs::write(&rendered, &text).unwrap();
    for v in versions.split_whitespace() {
        let out = Command::new(venv.join("bin/kubernetes-validate"))
            .args(["--strict", "-k", v])
            .arg(&rendered)
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            out.status.success()
                && !said.contains("ERROR")
                && !said.contains("Couldn't find schema"),
            "the rendered scaled overlay against Kubernetes {v}:\n{said}"
        );
    }
}

/// The scaled ConfigMap's configuration passes `kaudit check` with its
/// store swapped for a SQLite path: sources, detection and server are
/// checked by the binary; the PostgreSQL store is asserted on above.
#[test]
fn scaled_config_passes_check_apart_from_the_store() {
    let (_, d) = render_scaled();
    let cm = one(&d, "ConfigMap", Some("kaudit-config"));
    let mut cfg = docs(cm["data"]["kaudit.yaml"].as_str().unwrap(), "kaudit.yaml").remove(0);
    let tmp = tempfile::tempdir().unwrap();
    let mut storage = serde_yaml_ng::Mapping::new();
    storage.insert(
        "path".into(),
        path_str(&tmp.path().join("kaudit.db")).into(),
    );
    cfg["storage"] = Value::Mapping(storage);
    let path = tmp.path().join("kaudit.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&cfg).unwrap()).unwrap();
    let out = check(&path, &[("KAFKA_PASSWORD", "x")]);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("1 source(s)"), "{printed}");
}
