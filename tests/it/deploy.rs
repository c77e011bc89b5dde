//! deploy/ checked against the binary and against each other: the example
//! configurations pass `kaudit check` and document every option; every YAML
//! file parses; the audit policy logs what the detections read and never a
//! secret's body; the image, the systemd unit and the Kubernetes manifests
//! agree on binary, user, ports and paths; the image's healthcheck and the
//! certificates make-certs.sh makes work against a running daemon; the
//! manifests validate against Kubernetes' schemas and the unit passes
//! systemd-analyze (both through scripts/validate-deploy.sh).

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
