//! Falco parity: the built-in catalogue run over Falco's own k8s audit test
//! suite (../shared/peers/falco: events, expected.tsv, RULES.md).
//!
//! Each row of expected.tsv names an events file, the Falco rule expected
//! to fire on it (and how often) or `none`, and the allow-list change
//! Falco's test made first. That tuning is expressed as a kaudit rule file
//! under tests/falco-tuning/ and loaded with `--rules`. A kaudit rule
//! "is" a Falco rule when its `references.falco` names it exactly.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// The tuning column of expected.tsv, as a kaudit rule file.
fn tuning_file(tuning: &str) -> PathBuf {
    let name = match tuning {
        "-" => "default.yaml",
        "namespace foo allowed" => "ns-foo.yaml",
        "user some-user allowed" => "user-some-user.yaml",
        "info-level activity rules off" => "no-activity.yaml",
        "namespace foo allowed; user some-user allowed" => "ns-foo_user-some-user.yaml",
        "namespace foo allowed; info-level activity rules off" => "ns-foo_no-activity.yaml",
        "namespace foo allowed; user some-user allowed; info-level activity rules off" => {
            "ns-foo_user-some-user_no-activity.yaml"
        }
        "only apache images allowed in pods" => "apache-images-only.yaml",
        "only nginx images allowed in pods" => "nginx-images-only.yaml",
        "nginx image trusted for privileged/hostPath/hostNetwork" => "nginx-trusted.yaml",
        other => panic!("expected.tsv has a tuning with no file in tests/falco-tuning: {other:?}"),
    };
    root().join("tests/falco-tuning").join(name)
}

/// The Falco rule a finding stands for, if any.
fn falco_name(finding: &serde_json::Value) -> Option<&str> {
    finding["references"]["falco"].as_str()
}

#[test]
fn every_falco_test_case_gives_falcos_result() {
    let falco = peers().join("falco");
    let table = std::fs::read_to_string(falco.join("expected.tsv")).unwrap();
    let mut failures = Vec::new();
    let mut rows = 0;
    for row in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = row.split('\t').collect();
        assert_eq!(cols.len(), 6, "expected.tsv row: {row}");
        let (case, file, expect, rule, count, tuning) =
            (cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]);
        rows += 1;
        let out = kaudit(
            &[
                "scan",
                "--format",
                "jsonl",
                "--rules",
                &path_str(&tuning_file(tuning)),
                &path_str(&falco.join("events").join(file)),
            ],
            b"",
        );
        if out.status.code() != Some(0) {
            failures.push(format!("{case}: kaudit scan failed: {}", stderr(&out)));
            continue;
        }
        let found = findings(&out);
        let fired: BTreeMap<&str, usize> =
            found
                .iter()
                .filter_map(falco_name)
                .fold(BTreeMap::new(), |mut m, name| {
                    *m.entry(name).or_default() += 1;
                    m
                });
        match expect {
            "detect" => {
                let want: usize = count.parse().unwrap();
                let got = fired.get(rule).copied().unwrap_or(0);
                if got != want {
                    failures.push(format!(
                        "{case} ({file}, tuning {tuning:?}): '{rule}' fired {got} times, Falco {want}; Falco rules fired: {fired:?}"
                    ));
                }
            }
            "none" => {
                if !fired.is_empty() {
                    failures.push(format!(
                        "{case} ({file}, tuning {tuning:?}): Falco fires nothing, kaudit fired {fired:?}"
                    ));
                }
            }
            other => panic!("{case}: unknown expect {other:?}"),
        }
    }
    assert!(rows >= 58, "expected.tsv has {rows} rows");
    assert!(
        failures.is_empty(),
        "{} of {rows} Falco cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The rows of RULES.md's rule table: number and name.
fn falco_rules() -> Vec<(u32, String)> {
    let text = std::fs::read_to_string(peers().join("falco/RULES.md")).unwrap();
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // | # | rule | priority | condition |
            let n: u32 = cells.get(1)?.parse().ok()?;
            Some((n, cells.get(2)?.to_string()))
        })
        .collect()
}

/// Falco rules shipped off by default: Create Disallowed Pod, All K8s Audit
/// Events, Full K8s Administrative Access and the two untrusted-node rules.
const FALCO_OFF_BY_DEFAULT: [u32; 5] = [2, 44, 45, 47, 48];

#[test]
fn every_falco_rule_on_by_default_has_an_enabled_kaudit_rule() {
    let out = kaudit(&["rules", "list", "--format", "jsonl"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rules = findings(&out);
    let enabled: BTreeSet<&str> = rules
        .iter()
        .filter(|r| r["enabled"] == serde_json::Value::Bool(true))
        .filter_map(falco_name)
        .collect();
    let shipped_off: BTreeSet<&str> = rules
        .iter()
        .filter(|r| r["enabled"] == serde_json::Value::Bool(false))
        .filter_map(falco_name)
        .collect();

    let falco = falco_rules();
    assert_eq!(falco.len(), 48, "RULES.md lists 48 rules: {falco:?}");
    let mut missing = Vec::new();
    for (n, name) in &falco {
        if FALCO_OFF_BY_DEFAULT.contains(n) {
            // Off in Falco, off in kaudit: present to enable, never on.
            assert!(
                !enabled.contains(name.as_str()),
                "Falco ships '{name}' off; kaudit's rule for it must be disabled"
            );
        } else if !enabled.contains(name.as_str()) {
            missing.push(format!("{n} {name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "Falco rules on by default with no enabled kaudit rule naming them in references.falco:\n{}",
        missing.join("\n")
    );
    // The ones Falco users switch on are there to switch on (All K8s Audit
    // Events, rule 44, has no counterpart: it is Falco's raw event dump).
    for n in [2, 45, 47, 48] {
        let name = &falco.iter().find(|(m, _)| *m == n).unwrap().1;
        assert!(
            shipped_off.contains(name.as_str()),
            "no disabled kaudit rule for Falco's '{name}'"
        );
    }
}
