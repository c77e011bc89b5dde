//! `kaudit rules list|test` and `kaudit check` end to end.

use super::*;

#[test]
fn rules_test_passes_and_lists_the_catalogue() {
    let out = kaudit(&["rules", "test"], b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains(" passed, 0 failed"), "{text}");

    let out = kaudit(&["rules", "list", "--format", "jsonl"], b"");
    let rules: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rules
            .iter()
            .any(|r| r["id"] == "pod-exec" && r["references"]["falco"] == "Attach/Exec Pod")
    );
    for r in &rules {
        for key in [
            "id",
            "title",
            "severity",
            "category",
            "mitre",
            "references",
            "enabled",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
    }
    let out = kaudit(&["rules", "list"], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("pod-exec ") && l.contains("falco: Attach/Exec Pod")),
        "{text}"
    );
}

#[test]
fn check_points_at_every_broken_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "rules:\n  - id: mine\n    title: Mine\n    severity: low\n    category: exec\n    when: {field: objectRef.subresourc, equals: exec}\n    unless: [{field: user.username, in_list: no_such_list}]\n    summary: \"{user.username}\"\n",
    )
    .unwrap();
    let out = kaudit(&["check", "--rules", &path_str(&file)], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let name = file.display().to_string();
    assert!(
        err.contains(&format!(
            "{name}:2: rule 'mine': when: unknown field 'objectRef.subresourc'"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:2: rule 'mine': unless: field 'user.username': unknown list 'no_such_list'"
        )),
        "{err}"
    );

    std::fs::write(
        &file,
        "rules:\n  - id: x\n    title: X\n    severity: severe\n",
    )
    .unwrap();
    let err = stderr(&kaudit(&["check", "--rules", &path_str(&file)], b""));
    assert!(
        err.contains(&format!(
            "{name}:4: rule 'x': rules[0].severity: unknown variant `severe`"
        )),
        "{err}"
    );

    let ok = kaudit(&["check"], b"");
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
}

#[test]
fn user_rules_override_extend_and_disable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.yaml");
    std::fs::write(
        &file,
        r#"
rules:
  - id: pod-exec
    title: Exec (site policy)
    severity: critical
    category: exec
    when: {all: [{field: objectRef.subresource, equals: exec}, {field: user.username, in_list: site_humans}]}
    summary: "{user.username} exec"
lists:
  site_humans: [minikube-user]
disable: [pod-attach]
"#,
    )
    .unwrap();
    let events = peers().join("falco/events");
    let out = kaudit(
        &[
            "scan",
            "--format",
            "jsonl",
            "--rules",
            &path_str(&file),
            &path_str(&events.join("exec_pod.json")),
            &path_str(&events.join("attach_pod.json")),
        ],
        b"",
    );
    let f = findings(&out);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0]["rule_id"].as_str(), f[0]["severity"].as_str()),
        (Some("pod-exec"), Some("critical"))
    );
}
