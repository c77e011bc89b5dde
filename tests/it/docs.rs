//! Generated documentation stays in step with the catalogue.
//!
//! `docs/falco-migration.md` maps every Falco k8saudit rule to the kaudit
//! rule that replaces it, built from `references.falco`. When the catalogue
//! changes, regenerate it with `KAUDIT_BLESS=1 cargo nextest run docs`.

use super::*;

fn migration_table() -> String {
    let out = kaudit(&["rules", "list", "--format", "jsonl"], b"");
    let mut rows: Vec<(String, String, String, String, bool)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|r| {
            let falco = r["references"]["falco"].as_str()?.to_owned();
            Some((
                falco,
                r["id"].as_str()?.to_owned(),
                r["severity"].as_str()?.to_owned(),
                r["file"].as_str()?.to_owned(),
                r["enabled"].as_bool()?,
            ))
        })
        .collect();
    rows.sort();
    let mut md = String::from(
        "# Migrating from Falco's k8saudit rules\n\n\
         Generated from the catalogue's `references.falco` (`kaudit rules list --format jsonl`);\n\
         a test keeps it current. Each Falco rule, the kaudit rule that replaces it, its\n\
         severity (kaudit's own judgment) and the file that defines it. Rules Falco ships\n\
         switched off ship disabled here too: turn them on with `enable: [id]` in a rule file.\n\
         Falco's allow-lists keep their names (`allowed_k8s_users`, `k8s_audit_privileged_images`, ...):\n\
         extend them with `lists: {NAME: {append: [...]}}`.\n\n\
         | Falco rule | kaudit rule | severity | file | enabled |\n|---|---|---|---|---|\n",
    );
    for (falco, id, sev, file, enabled) in rows {
        md.push_str(&format!(
            "| {falco} | `{id}` | {sev} | {file} | {} |\n",
            if enabled { "yes" } else { "no (as in Falco)" }
        ));
    }
    md
}

#[test]
fn falco_migration_table_is_current() {
    let path = root().join("docs/falco-migration.md");
    let want = migration_table();
    if std::env::var_os("KAUDIT_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        have, want,
        "docs/falco-migration.md is stale: regenerate it with KAUDIT_BLESS=1 cargo nextest run docs"
    );
}
