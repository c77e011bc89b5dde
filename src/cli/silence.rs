//! `kaudit silence add|list|expire`: holding back alerts of findings like
//! these, until then. The daemon reads active silences every few seconds;
//! silenced findings are still stored, and marked.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::output::terminal_safe;
use crate::store::{Silence, Store};

#[derive(clap::Args, Debug)]
pub struct AddArgs {
    #[arg(long, value_name = "FILE")]
    pub db: PathBuf,
    #[arg(long)]
    pub rule: Option<String>,
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    /// One finding, by id.
    #[arg(long)]
    pub finding: Option<String>,
    /// Until when: a duration from now (`4h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub expires: String,
    /// Why (kept with the silence, shown by `list`).
    #[arg(long)]
    pub comment: String,
    /// Who set it (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
}

fn open(db: &Path) -> anyhow::Result<Store> {
    super::open_store(db)
}

/// Adds a silence and prints its id.
pub fn add(a: &AddArgs) -> anyhow::Result<()> {
    let now = crate::timespec::now();
    let expires_at = match crate::config::parse_duration(&a.expires) {
        Ok(secs) => now + secs,
        Err(_) => crate::timespec::rfc3339_to_unix(&a.expires).with_context(|| {
            format!(
                "--expires {:?}: write a duration (4h, 7d) or an RFC 3339 time",
                a.expires
            )
        })?,
    };
    if expires_at <= now {
        bail!("--expires {:?} is already past", a.expires);
    }
    if [
        &a.rule,
        &a.category,
        &a.cluster,
        &a.namespace,
        &a.user,
        &a.finding,
    ]
    .iter()
    .all(|m| m.is_none())
    {
        bail!(
            "a silence needs at least one of --rule, --category, --cluster, --namespace, --user, --finding (it would silence everything)"
        );
    }
    if a.comment.trim().is_empty() {
        bail!("--comment must say why");
    }
    let by =
        a.by.clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".to_owned());
    let s = Silence {
        rule: a.rule.clone(),
        category: a.category.clone(),
        cluster: a.cluster.as_ref().map(|c| c.to_ascii_lowercase()),
        namespace: a.namespace.clone(),
        user: a.user.clone(),
        finding: a.finding.clone(),
        expires_at,
        comment: a.comment.clone(),
        created_by: by,
        created_at: now,
        ..Silence::default()
    };
    let id = open(&a.db)?.add_silence(&s)?;
    println!(
        "silence {id} added, until {}",
        crate::timespec::unix_to_rfc3339(expires_at)
    );
    Ok(())
}

/// Lists silences (active ones unless `all`).
pub fn list(db: &Path, all: bool) -> anyhow::Result<()> {
    let now = crate::timespec::now();
    let silences = open(db)?.silences(now, all)?;
    let mut out = std::io::stdout().lock();
    for s in &silences {
        let mut m = Vec::new();
        for (k, v) in [
            ("rule", &s.rule),
            ("category", &s.category),
            ("cluster", &s.cluster),
            ("namespace", &s.namespace),
            ("user", &s.user),
            ("finding", &s.finding),
        ] {
            if let Some(v) = v {
                m.push(format!("{k}={v}"));
            }
        }
        let state = if s.active(now) { "active" } else { "ended" };
        writeln!(
            out,
            "{:<5} {:<7} until {}  {}  by {}: {}",
            s.id,
            state,
            crate::timespec::unix_to_rfc3339(s.expired_at.unwrap_or(s.expires_at)),
            terminal_safe(&m.join(" ")),
            terminal_safe(&s.created_by),
            terminal_safe(&s.comment)
        )?;
    }
    eprintln!("kaudit silence: {} listed", silences.len());
    Ok(())
}

/// Ends silence `id` now.
pub fn expire(db: &Path, id: i64) -> anyhow::Result<()> {
    if !open(db)?.expire_silence(id, crate::timespec::now())? {
        bail!("no active silence {id}");
    }
    println!("silence {id} ended");
    Ok(())
}
