//! The container image, the systemd unit and the Kubernetes manifests agree
//! on binary, user, ports and paths; the image has the libraries the binary
//! links; the manifests validate and the unit verifies
//! (scripts/validate-deploy.sh); the image's healthcheck and make-certs.sh's
//! certificates work against a daemon running the ConfigMap's configuration.

use std::process::Command;

use super::super::daemon::{Daemon, exec_line, free_port};
use super::*;

/// The Dockerfile's instructions, continuation lines joined: (INSTRUCTION, rest).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("container/Dockerfile");
    let mut out: Vec<(String, String)> = Vec::new();
    let mut cur = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        cur.push_str(line.trim_end().trim_end_matches('\\'));
        cur.push(' ');
        if !line.trim_end().ends_with('\\') {
            if let Some((i, rest)) = cur.trim().split_once(' ') {
                out.push((i.to_owned(), rest.trim().to_owned()));
            }
            cur.clear();
        }
    }
    out
}

fn instr(d: &[(String, String)], name: &str) -> String {
    d.iter()
        .rev()
        .find(|(i, _)| i == name)
        .map(|(_, r)| r.clone())
        .unwrap_or_else(|| panic!("no {name}"))
}

/// The HEALTHCHECK's command (exec form).
fn healthcheck() -> Vec<String> {
    let hc = instr(&dockerfile(), "HEALTHCHECK");
    let json = &hc[hc.find("CMD [").expect("HEALTHCHECK CMD [...]") + 4..];
    serde_json::from_str(json).unwrap()
}

#[test]
fn image_unit_and_manifests_agree() {
    let d = dockerfile();
    let froms: Vec<_> = d
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, r)| r.as_str())
        .collect();
    assert_eq!(froms, ["rust:1-bookworm AS build", "debian:bookworm-slim"]);
    assert!(d.iter().any(|(i, r)| i == "COPY"
        && r.starts_with("--from=build")
        && r.ends_with(" /usr/local/bin/kaudit")));
    assert_eq!(instr(&d, "USER"), "65532:65532");
    assert_eq!(instr(&d, "ENTRYPOINT"), r#"["/usr/local/bin/kaudit"]"#);
    let cmd: Vec<String> = serde_json::from_str(&instr(&d, "CMD")).unwrap();
    assert_eq!(cmd, ["run", "--config", "/etc/kaudit/kaudit.yaml"]);
    assert_eq!(instr(&d, "EXPOSE"), "8443 9090");

    let unit = read("systemd/kaudit.service");
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/local/bin/kaudit run --config /etc/kaudit/kaudit.yaml")
    );
    assert!(unit.lines().any(|l| l == "StateDirectory=kaudit"));

    let dep = yaml("kubernetes/base/deployment.yaml");
    assert_eq!(dep["kind"], "Deployment");
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let pod = &dep["spec"]["template"]["spec"];
    for k in ["runAsUser", "runAsGroup", "fsGroup"] {
        assert_eq!(pod["securityContext"][k], 65532, "{k}");
    }
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, cmd);
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&"/etc/kaudit") && mounts.contains(&"/var/lib/kaudit"),
        "{mounts:?}"
    );
    let cm = configmap_config();
    assert!(cm.contains("path: /var/lib/kaudit/kaudit.db"));
    // Container ports, Service ports, the configuration's listeners.
    let ports: Vec<u64> = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8443, 9090]);
    let services = docs(&read("kubernetes/base/service.yaml"), "service.yaml");
    let svc_ports: Vec<u64> = services
        .iter()
        .map(|s| s["spec"]["ports"][0]["port"].as_u64().unwrap())
        .collect();
    assert_eq!(svc_ports, [8443, 9090]);
    for p in ports {
        assert!(
            cm.contains(&format!("listen: \"0.0.0.0:{p}\"")),
            "the ConfigMap does not listen on {p}"
        );
    }
    // Never a DaemonSet.
    assert!(
        !std::fs::read_dir(deploy().join("kubernetes/base"))
            .unwrap()
            .any(|e| std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .contains("kind: DaemonSet"))
    );
}

/// Every shared library the built binary needs comes from the runtime
/// image: debian:bookworm-slim's own packages or those the Dockerfile's
/// runtime stage installs (the build image is bookworm too, as is this
/// machine, so the same packages provide them).
#[test]
fn runtime_image_has_the_binarys_libraries() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_kaudit"))
        .output()
        .expect("ldd runs");
    let ldd = String::from_utf8(out.stdout).unwrap();
    let d = dockerfile();
    let runtime_run = instr(&d, "RUN");
    let mut checked = 0;
    for path in ldd
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
    {
        let owner = |p: &str| {
            let o = Command::new("dpkg")
                .args(["-S", p])
                .output()
                .expect("dpkg runs (a Debian machine)");
            o.status.success().then(|| {
                String::from_utf8_lossy(&o.stdout)
                    .split(':')
                    .next()
                    .unwrap()
                    .to_owned()
            })
        };
        let pkg = owner(path)
            .or_else(|| owner(&format!("/usr{path}")))
            .unwrap_or_else(|| panic!("no package owns {path}"));
        assert!(
            ["libc6", "libgcc-s1", "zlib1g"].contains(&pkg.as_str())
                || runtime_run.contains(&format!(" {pkg} ")),
            "{path} ({pkg}) is neither in debian:bookworm-slim nor installed by the runtime stage"
        );
        checked += 1;
    }
    assert!(checked >= 3, "{ldd}");
}

#[test]
fn systemd_unit_is_hardened_and_verifies() {
    let unit = read("systemd/kaudit.service");
    let set: Vec<(&str, &str)> = unit
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.starts_with('#'))
        .collect();
    let has = |k: &str, v: &str| set.contains(&(k, v));
    for (k, v) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "kaudit"),
        ("ConfigurationDirectory", "kaudit"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("SystemCallFilter", "@system-service"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert!(has(k, v), "kaudit.service lacks {k}={v}");
    }
    assert!(set.iter().any(|(k, _)| *k == "RestrictAddressFamilies"));
    assert!(set.iter().any(|(k, _)| *k == "TimeoutStopSec"));
    // Nothing writable beyond the state directory.
    assert!(!set.iter().any(|(k, _)| *k == "ReadWritePaths"));

    let out = Command::new("bash")
        .args([
            "scripts/validate-deploy.sh",
            "unit",
            env!("CARGO_BIN_EXE_kaudit"),
        ])
        .current_dir(root())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        out.status.success() && text.contains("ok: systemd-analyze verify"),
        "{text}"
    );
}

/// `bash scripts/validate-deploy.sh ARGS` from the repository root:
/// (success, stdout and stderr).
fn validate_deploy(args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .arg("scripts/validate-deploy.sh")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    (out.status.success(), text)
}

/// No image can be built here (no Docker daemon): the Dockerfile is linted.
#[test]
fn dockerfile_passes_hadolint() {
    let (ok, text) = validate_deploy(&["image"]);
    assert!(ok && text.contains("ok: hadolint"), "{text}");
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let (ok, text) = validate_deploy(&["manifests"]);
    assert!(ok && text.contains("manifests: all valid"), "{text}");
    // The base itself is listed, as rendered by kustomize.
    assert!(
        text.contains("ok: kustomize base renders and validates"),
        "{text}"
    );
}

/// The ConfigMap's configuration run as the daemon (paths and ports moved
/// to the test's own): the image's HEALTHCHECK command sees /healthz, and
/// make-certs.sh's certificates carry an API server's batch over mTLS to
/// the cluster its certificate is bound to, and no other.
#[test]
fn healthcheck_and_make_certs_work_against_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = dir.join("pki");
    let out = Command::new("bash")
        .arg(deploy().join("apiserver/make-certs.sh"))
        .args([
            &path_str(&pki),
            "DNS:kaudit.example,IP:127.0.0.1",
            "prod-eu-1",
        ])
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "make-certs.sh: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("{subject: kube-apiserver-prod-eu-1, clusters: [prod-eu-1]}"),
        "{stdout}"
    );
    let etc = dir.join("etc");
    std::fs::create_dir_all(etc.join("tls")).unwrap();
    for (from, to) in [
        ("kaudit.crt", "tls.crt"),
        ("kaudit.key", "tls.key"),
        ("ca.crt", "apiservers-ca.crt"),
    ] {
        std::fs::copy(pki.join(from), etc.join("tls").join(to)).unwrap();
    }
    let (ops, hook) = (free_port(), free_port());
    let mut text = swap(
        &configmap_config(),
        "/etc/kaudit/",
        &format!("{}/", path_str(&etc)),
    );
    text = swap(&text, "/var/lib/kaudit/", &format!("{}/", path_str(dir)));
    text = swap(&text, "0.0.0.0:9090", &format!("127.0.0.1:{ops}"));
    text = swap(&text, "0.0.0.0:8443", &format!("127.0.0.1:{hook}"));
    // No broker listens there: the Kafka source waits, the webhook serves.
    text = swap(
        &text,
        "kafka-bootstrap.kafka.svc:9093",
        &format!("127.0.0.1:{}", free_port()),
    );
    let cfg = dir.join("kaudit.yaml");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.join("daemon.log");
    let child = Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["run", "--config", &path_str(&cfg)])
        .env("KAFKA_PASSWORD", "x")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let d = Daemon { child, ops, log };
    d.wait_for(
        || d.get("/healthz").is_some_and(|(s, _)| s == 200),
        "healthz",
    );

    let hc = healthcheck();
    let run_hc = |port: u16| {
        let args: Vec<String> = hc
            .iter()
            .map(|a| a.replace("/9090", &format!("/{port}")))
            .collect();
        Command::new(&args[0])
            .args(&args[1..])
            .status()
            .unwrap()
            .success()
    };
    assert!(
        hc.iter().any(|a| a.contains("/dev/tcp/127.0.0.1/9090")),
        "{hc:?}"
    );
    assert!(
        run_hc(ops),
        "the HEALTHCHECK command failed against a live daemon"
    );
    assert!(
        !run_hc(free_port()),
        "the HEALTHCHECK command passed with nothing listening"
    );

    let identity = [
        std::fs::read(pki.join("apiserver-prod-eu-1.crt")).unwrap(),
        std::fs::read(pki.join("apiserver-prod-eu-1.key")).unwrap(),
    ]
    .concat();
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.crt")).unwrap()).unwrap(),
        )
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap();
    let batch = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        exec_line("deploy-1")
    );
    let post = |cluster: &str| {
        client
            .post(format!("https://127.0.0.1:{hook}/audit/{cluster}"))
            .body(batch.clone())
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post("prod-eu-1"), 200);
    assert_eq!(post("staging"), 403);
    let stored = findings(&kaudit(
        &[
            "findings",
            "--db",
            &path_str(&dir.join("kaudit.db")),
            "--format",
            "jsonl",
        ],
        b"",
    ));
    assert!(
        stored
            .iter()
            .any(|f| f["rule_id"] == "pod-exec" && f["cluster"] == "prod-eu-1"),
        "{stored:?}"
    );
    d.stop();
}
