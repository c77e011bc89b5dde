//! The evidence commands at the CLI edge: `kaudit findings`, `export`,
//! `verify`, `keygen` and `checkpoint`. Each turns its arguments into calls
//! on the store (`crate::store`) and the bundle writer (`crate::export`),
//! and prints what a person needs to read. Errors are `anyhow` here, with
//! context that names the file involved.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::export::{self, ExportRequest, ExportRow};
use crate::finding::Severity;
use crate::output::{Format, terminal_safe};
use crate::store::{self, Filter, Store, keys};
use crate::timespec;

/// The filters shared by `findings` and `export`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Findings at or after this time: RFC 3339, a date, or a duration back
    /// from now (24h, 7d).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Findings before this time (same forms as --since).
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Only this rule (repeatable).
    #[arg(long, value_name = "ID")]
    pub rule: Vec<String>,
    /// At least this severity.
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    pub severity: Option<Severity>,
    /// Only this category (repeatable).
    #[arg(long, value_name = "C")]
    pub category: Vec<String>,
    /// Only this cluster (repeatable).
    #[arg(long, value_name = "C")]
    pub cluster: Vec<String>,
    /// Only this user (repeatable).
    #[arg(long, value_name = "U")]
    pub user: Vec<String>,
    /// Only this namespace (repeatable).
    #[arg(long, value_name = "N")]
    pub namespace: Vec<String>,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

impl FilterArgs {
    /// The store filter; times are resolved against now.
    pub fn to_filter(&self) -> anyhow::Result<Filter> {
        let now = timespec::now();
        let time = |t: &Option<String>, flag: &str| -> anyhow::Result<Option<i64>> {
            t.as_deref()
                .map(|t| timespec::parse(t, now).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
                .transpose()
        };
        Ok(Filter {
            since: time(&self.since, "--since")?,
            until: time(&self.until, "--until")?,
            rule: self.rule.clone(),
            min_severity: self.severity,
            category: self.category.clone(),
            cluster: self
                .cluster
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            user: self.user.clone(),
            namespace: self.namespace.clone(),
        })
    }

    /// The filters as given, for an export's manifest.
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "since": self.since, "until": self.until, "rule": self.rule,
            "severity": self.severity, "category": self.category, "cluster": self.cluster,
            "user": self.user, "namespace": self.namespace,
        })
    }
}

fn open(db: &Path) -> anyhow::Result<Store> {
    super::open_store(db)
}

/// `kaudit findings`: prints the stored findings that match.
pub fn findings(
    db: &Path,
    filters: &FilterArgs,
    format: Format,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let store = open(db)?;
    let rows = store.query(&filters.to_filter()?, limit)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if format == Format::Text && !rows.is_empty() {
        writeln!(
            out,
            "{:<27} {:<8} {:<30} {:<14} SUMMARY",
            "TIME", "SEVERITY", "RULE", "CLUSTER"
        )?;
    }
    for row in &rows {
        match format {
            Format::Jsonl => {
                out.write_all(crate::output::json_terminal_safe(&row.canonical).as_bytes())?;
                out.write_all(b"\n")?;
            }
            Format::Text => {
                let f = &row.finding;
                let s = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("-");
                // Alerts not delivered (yet) show beside the finding.
                let states = store.alert_states(s("id")).unwrap_or_default();
                let repeats = states.iter().map(|a| a.repeats).max().unwrap_or(0);
                let undelivered: Vec<String> = states
                    .into_iter()
                    .filter(|a| a.state != "delivered")
                    .map(|a| match a.last_error {
                        Some(e) => format!("{} {} ({e})", a.sink, a.state),
                        None => format!("{} {}", a.sink, a.state),
                    })
                    .collect();
                let mut alerts = if undelivered.is_empty() {
                    String::new()
                } else {
                    format!("  [alert {}]", undelivered.join(", "))
                };
                if repeats > 0 {
                    alerts.push_str(&format!("  [+{repeats} repeats]"));
                }
                if let Ok(Some(silence)) = store.silenced_by(s("id")) {
                    alerts.push_str(&format!("  [silenced by {silence}]"));
                }
                writeln!(
                    out,
                    "{:<27} {:<8} {:<30} {:<14} {}{}",
                    terminal_safe(s("time")),
                    terminal_safe(s("severity")),
                    terminal_safe(s("rule_id")),
                    terminal_safe(s("cluster")),
                    terminal_safe(s("summary")),
                    terminal_safe(&alerts)
                )?;
            }
        }
    }
    out.flush()?;
    let (pending, dead) = store.outbox_depth().unwrap_or((0, 0));
    if pending + dead > 0 {
        eprintln!(
            "kaudit findings: {} matched; alerts waiting: {pending}, dead-lettered: {dead}",
            rows.len()
        );
    } else {
        eprintln!("kaudit findings: {} matched", rows.len());
    }
    Ok(())
}

/// `kaudit export`: writes a bundle (and, with `tar`, its .tar.gz).
pub fn export(
    db: &Path,
    out_dir: &Path,
    filters: &FilterArgs,
    formats: &[export::Format],
    sign_key: Option<&Path>,
    tar: bool,
) -> anyhow::Result<()> {
    let store = open(db)?;
    let filter = filters.to_filter()?;
    let signing_key = sign_key
        .map(|p| {
            keys::read_signing_key(p)
                .with_context(|| format!("cannot use the signing key {}", p.display()))
        })
        .transpose()?;
    let signed = signing_key.is_some();
    let (rows, chain) = bundle(
        &store,
        &filter,
        filters.to_json(),
        formats,
        signing_key,
        out_dir,
        None,
    )?;
    println!(
        "kaudit export: {} findings, {} chain rows in range, written to {}{}",
        rows,
        chain,
        out_dir.display(),
        if signed { " (signed)" } else { " (unsigned)" }
    );
    if tar {
        let archive = PathBuf::from(format!("{}.tar.gz", out_dir.display()));
        export::pack(out_dir, &archive)?;
        println!("kaudit export: packed into {}", archive.display());
    }
    Ok(())
}

/// Writes the evidence bundle of the findings `filter` selects into
/// `out_dir` (the CLI's `export` and the console's download): one store
/// snapshot (rows, chain, verification, coverage and triage), refused when
/// the store fails verification. Returns the numbers of findings and of
/// chain rows in the range.
pub fn bundle(
    store: &store::Store,
    filter: &store::Filter,
    filters_json: serde_json::Value,
    formats: &[export::Format],
    signing_key: Option<ed25519_dalek::SigningKey>,
    out_dir: &Path,
    max_rows: Option<usize>,
) -> anyhow::Result<(usize, usize)> {
    // One snapshot: the rows, the chain, its verification and the coverage
    // must describe the same database even while a scan commits.
    let (rows, chain, report, coverage, clusters, triage) = store.read_snapshot(|store| {
        let rows: Vec<ExportRow> = store
            .query(filter, max_rows.map(|m| m + 1))?
            .into_iter()
            .map(|r| ExportRow {
                seq: r.seq,
                hash: r.hash,
                prev_hash: r.prev_hash,
                finding: r.finding,
            })
            .collect();
        let chain = store.chain_rows(filter.since, filter.until)?;
        let report = store.verify_chain()?;
        let coverage = store.coverage(filter.since, filter.until)?;
        let clusters = store.coverage_clusters()?;
        let ids: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.finding["id"].as_str())
            .collect();
        let triage = store.triage_of(&ids)?;
        Ok::<_, store::Error>((rows, chain, report, coverage, clusters, triage))
    })?;
    if let Some(max) = max_rows
        && rows.len() > max
    {
        bail!(
            "more than {max} findings match: narrow the filter, or run `kaudit export` on the host"
        );
    }
    if let Some(p) = &report.problem {
        bail!(
            "the findings database fails verification, so no evidence is exported from it: {}",
            p.message
        );
    }
    let coverage = coverage_json(&coverage, &clusters, filter.since, filter.until);
    let mut formats = formats.to_vec();
    if formats.is_empty() {
        formats = vec![
            export::Format::Jsonl,
            export::Format::Csv,
            export::Format::Ocsf,
        ];
    }
    let triage = triage
        .iter()
        .map(|t| {
            serde_json::json!({
                "finding_id": t.finding_id,
                "action": t.action.as_str(),
                "comment": t.comment,
                "actor": t.actor,
                "at": timespec::unix_to_rfc3339(t.at),
                "silence_id": t.silence_id,
            })
        })
        .collect();
    let req = ExportRequest {
        out_dir: out_dir.to_path_buf(),
        formats,
        filters: filters_json,
        since: filter.since,
        until: filter.until,
        chain_head: report.head.clone(),
        coverage,
        signing_key,
        kaudit_version: env!("CARGO_PKG_VERSION").to_owned(),
        triage,
    };
    export::export(&rows, &chain, &req)
        .with_context(|| format!("cannot export to {}", out_dir.display()))?;
    Ok((rows.len(), chain.len()))
}

/// Silent hours listed one by one at most (the stretches are complete).
const SILENT_HOURS_LISTED: usize = 10_000;

/// Coverage for a manifest: the hourly counts, and per cluster the hours of
/// the range in which no event arrived at all (a silent stretch: monitoring
/// was blind, or the cluster's audit logging was switched off). A cluster
/// seen outside the range and not at all inside it is listed too, silent
/// over the whole range.
pub(crate) fn coverage_json(
    rows: &[store::CoverageRow],
    known: &[(String, i64, i64)],
    since: Option<i64>,
    until: Option<i64>,
) -> serde_json::Value {
    use std::collections::{BTreeMap, BTreeSet};
    let mut hours: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.events > 0) {
        hours.entry(r.cluster.as_str()).or_default().insert(r.hour);
    }
    let floor = |t: i64| t.div_euclid(3600) * 3600;
    let mut clusters = serde_json::Map::new();
    for (cluster, ever_first, ever_last) in known {
        let empty = BTreeSet::new();
        let seen = hours.get(cluster.as_str()).unwrap_or(&empty);
        let (first, last) = match (seen.first(), seen.last()) {
            (Some(&f), Some(&l)) => (f, l),
            // Nothing in the range: silent over all of it, if the range is
            // bounded (an unbounded export has every cluster's events).
            // A cluster first seen after the range was not there yet.
            _ => match (since, until) {
                (Some(s), Some(u)) if u > s && *ever_first <= floor(u - 1) => {
                    (floor(s), floor(u - 1))
                }
                _ => continue,
            },
        };
        // Within the export's range, from the first to the last hour seen
        // (a cluster may start or stop being monitored inside the range).
        let from = since.map_or(first, |s| floor(s).max(first));
        let to = until.map_or(last, |u| floor(u - 1).min(last));
        let mut silent = Vec::new();
        let mut stretches: Vec<serde_json::Value> = Vec::new();
        let mut total = 0u64;
        let mut open: Option<i64> = None;
        let mut h = from;
        while h <= to + 3600 {
            let quiet = h <= to && !seen.contains(&h);
            if quiet {
                total += 1;
                if silent.len() < SILENT_HOURS_LISTED {
                    silent.push(timespec::unix_to_rfc3339(h));
                }
                open.get_or_insert(h);
            } else if let Some(start) = open.take() {
                stretches.push(serde_json::json!({
                    "from": timespec::unix_to_rfc3339(start),
                    "to": timespec::unix_to_rfc3339(h),
                    "hours": (h - start) / 3600,
                }));
            }
            h += 3600;
        }
        let mut entry = serde_json::json!({
            "hours_with_events": seen.len(),
            "silent_hours": silent,
            "silent_hours_total": total,
            "silent_stretches": stretches,
            "ever_first_hour": timespec::unix_to_rfc3339(*ever_first),
            "ever_last_hour": timespec::unix_to_rfc3339(*ever_last),
        });
        if !seen.is_empty() {
            entry["first_hour"] = timespec::unix_to_rfc3339(first).into();
            entry["last_hour"] = timespec::unix_to_rfc3339(last).into();
        }
        clusters.insert(cluster.clone(), entry);
    }
    let hourly: Vec<serde_json::Value> = rows
        .iter()
        .map(|c| {
            serde_json::json!({"cluster": c.cluster, "hour": timespec::unix_to_rfc3339(c.hour),
                "source": c.source, "events": c.events, "malformed": c.malformed, "truncated": c.truncated})
        })
        .collect();
    serde_json::json!({"clusters": clusters, "hourly": hourly})
}

/// `kaudit prune`: deletes findings older than the cutoff, keeping the
/// chain verifiable through its anchor. The new anchor is signed with
/// `sign_key` as a prune record appended to `checkpoint_file` (before the
/// prune commits); an existing anchor must already be authorised there.
pub fn prune(
    db: &Path,
    older_than: &str,
    sign_key: &Path,
    checkpoint_file: &Path,
) -> anyhow::Result<()> {
    let mut store = open(db)?;
    let cutoff = timespec::parse(older_than, timespec::now())
        .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
    let key = keys::read_signing_key(sign_key)
        .with_context(|| format!("cannot use the signing key {}", sign_key.display()))?;
    let mut before = store.verify_rows()?;
    if before.anchor.is_some() {
        let (_, prunes) = if checkpoint_file.exists() {
            read_checkpoint_file(checkpoint_file)?
        } else {
            Default::default()
        };
        store::check_anchor(&mut before, &prunes, &key.verifying_key());
        if let Some(p) = &before.problem {
            bail!(
                "the findings database's existing retention anchor is not authorised by {}, so it is not pruned further: {}",
                checkpoint_file.display(),
                p.message
            );
        }
    }
    let (report, record) = store.prune_signed(cutoff, &key, &mut |r| {
        append_line(checkpoint_file, &r.to_json())
            .map_err(|e| store::Error::Checkpoint(format!("{e:#}")))
    })?;
    println!(
        "kaudit prune: {} findings older than {} removed{}{}{}",
        report.pruned,
        timespec::unix_to_rfc3339(cutoff),
        report
            .anchor
            .as_ref()
            .map(|a| format!("; the chain is anchored at row {} ({})", a.seq, a.hash))
            .unwrap_or_default(),
        if report.kept_older > 0 {
            format!(
                "; {} older findings kept (they follow a newer one in the chain)",
                report.kept_older
            )
        } else {
            String::new()
        },
        if record.is_some() {
            format!(
                "; signed prune record appended to {}",
                checkpoint_file.display()
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Appends one line to `path` and syncs it.
fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot append to {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("cannot append to {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// The chain checkpoints and prune records in a checkpoint file.
fn read_checkpoint_file(
    path: &Path,
) -> anyhow::Result<(Vec<store::ChainCheckpoint>, Vec<store::PruneRecord>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut cps = Vec::new();
    let mut prunes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match store::CheckpointLine::from_json(line).with_context(|| {
            format!(
                "{} line {}: not a kaudit chain checkpoint or prune record",
                path.display(),
                i + 1
            )
        })? {
            store::CheckpointLine::Chain(c) => cps.push(c),
            store::CheckpointLine::Prune(p) => prunes.push(p),
        }
    }
    Ok((cps, prunes))
}

/// Signs the chain head of `db` and appends the checkpoint to `file` (the
/// end of `scan --db`, like the daemon's shutdown).
pub fn sign_and_append(db: &Path, sign_key: &Path, file: &Path) -> anyhow::Result<()> {
    checkpoint(db, sign_key, Some(file))
}

/// `kaudit verify --db` or `kaudit verify BUNDLE`; true when it holds.
pub fn verify(
    db: Option<&Path>,
    bundle: Option<&Path>,
    public_key: Option<&Path>,
    checkpoints: Option<&Path>,
) -> anyhow::Result<bool> {
    let key = public_key
        .map(|p| {
            keys::read_verifying_key(p)
                .with_context(|| format!("cannot use the public key {}", p.display()))
        })
        .transpose()?;
    match (db, bundle) {
        (Some(db), None) => {
            let store = open(db)?;
            let mut notes = Vec::new();
            let report = match (checkpoints, &key) {
                (Some(path), Some(key)) => {
                    let (cps, prunes) = read_checkpoint_file(path)?;
                    if cps.is_empty() {
                        println!(
                            "{} holds no chain checkpoints: there is nothing to check the database against",
                            path.display()
                        );
                        return Ok(false);
                    }
                    let mut report = store.verify_chain_against(&cps, key)?;
                    store::check_anchor(&mut report, &prunes, key);
                    let newest = cps.iter().map(|c| c.seq).max().unwrap_or(0);
                    let head = report.head.as_ref().map_or(0, |h| h.0);
                    if report.is_ok() {
                        notes.push(if head > newest {
                            format!(
                                "{} rows (rows {}–{head}) lie after the newest checkpoint (row {newest}): no signature covers them yet",
                                head - newest,
                                newest + 1
                            )
                        } else {
                            format!("0 rows lie after the newest checkpoint (row {newest})")
                        });
                        if let Some(a) = &report.anchor {
                            notes.push(format!(
                                "the retention anchor (row {}) is authorised by a signed prune record",
                                a.seq
                            ));
                        }
                    }
                    report
                }
                (Some(_), None) => {
                    bail!("--checkpoints needs --public-key to check their signatures")
                }
                (None, Some(key)) => {
                    let report = store.verify_chain_against(&store.stored_checkpoints()?, key)?;
                    if report.is_ok() && report.checkpoints_checked + report.checkpoints_pruned > 0
                    {
                        notes.push(
                            "the checkpoints stored in the database were checked against the given public key"
                                .to_owned(),
                        );
                    }
                    report
                }
                (None, None) => {
                    let report = store.verify_chain()?;
                    if report.is_ok() && report.checkpoints_checked + report.checkpoints_pruned > 0
                    {
                        notes.push(
                            "the checkpoints stored in the database were only self-checked (each against the public key it names): give --public-key to check them against a trusted key"
                                .to_owned(),
                        );
                    }
                    report
                }
            };
            let unverified_anchor = report.anchor.as_ref().filter(|_| report.is_ok());
            if let (None, Some(a)) = (checkpoints, unverified_anchor) {
                notes.push(format!(
                    "the retention anchor (row {}) is not verified: give --checkpoints and --public-key to check it against a signed prune record",
                    a.seq
                ));
            }
            println!("{report}");
            for n in notes {
                println!("{n}");
            }
            Ok(report.is_ok())
        }
        (None, Some(bundle)) => {
            let report = export::verify_bundle(bundle, key.as_ref())?;
            println!("{report}");
            // With a key, the bundle must carry a signature that it checks.
            let signed = key.is_none() || report.signature == export::SignatureStatus::Valid;
            Ok(report.is_valid() && signed)
        }
        _ => bail!("give either --db FILE or a bundle directory / .tar.gz"),
    }
}

/// `kaudit keygen --out FILE`.
pub fn keygen(out: &Path) -> anyhow::Result<()> {
    let key = keys::generate();
    keys::write_pem(&key, out).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "kaudit keygen: private key {} (PKCS#8, mode 0600), public key {} (SPKI)",
        out.display(),
        keys::public_key_path(out).display()
    );
    Ok(())
}

/// `kaudit checkpoint`: signs the chain head and appends it to a file kept
/// outside kaudit's reach.
pub fn checkpoint(db: &Path, sign_key: &Path, append: Option<&Path>) -> anyhow::Result<()> {
    let mut store = open(db)?;
    let key = keys::read_signing_key(sign_key)
        .with_context(|| format!("cannot use the signing key {}", sign_key.display()))?;
    let Some(cp) = store.sign_head(&key)? else {
        println!("kaudit checkpoint: the chain is empty; nothing to sign");
        return Ok(());
    };
    let line = cp.to_json();
    if let Some(path) = append {
        append_line(path, &line)?;
    }
    println!("{line}");
    Ok(())
}
