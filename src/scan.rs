//! `kaudit scan`: the offline scanner.
//!
//! Reads files, directories (recursively, in name order), `.gz` files and
//! stdin (`-`) in any supported envelope, runs detection, and prints
//! findings. Problems with the input (malformed, oversized, truncated
//! events, unreadable files) are reported one line each on the error stream,
//! naming the input and line, and counted; they never stop the scan.
//!
//! With a store (`--db`), findings are committed before they are printed,
//! and only new ones are printed: scanning the same input twice adds and
//! prints nothing. Each batch commits its findings, the quarantined inputs
//! and the coverage counts (events per cluster and hour) in one transaction.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::decode::{self, Context, Limits, Problem, ProblemKind, Sink};
use crate::detect::token::{STATE_NAME, TokenDetector};
use crate::detect::{Detector, RuleSet, pipeline};
use crate::event::AuditEvent;
use crate::finding::{DEFAULT_CLUSTER, Finding, Severity};
use crate::output::{Format, Printer, terminal_safe};
use crate::store::{Batch, CoverageDelta, Inserted, QuarantineRow, Store};

/// What to scan and how to print it.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Files, directories, or `-` for stdin. Empty means stdin.
    pub paths: Vec<PathBuf>,
    pub format: Format,
    pub limits: Limits,
    pub rules: Arc<RuleSet>,
    /// The findings database; `None` prints without storing.
    pub db: Option<PathBuf>,
    /// Networks, trust and windows of the token detectors.
    pub config: Config,
}

/// Why a scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot write findings: {0}")]
    Write(#[from] io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("{0}")]
    Config(String),
}

/// Findings held until their batch is committed.
const BATCH_FINDINGS: usize = 1000;
/// Detector state is written with a batch at most this often (and at the
/// end of every input).
const STATE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Counts for the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub inputs: u64,
    pub events: u64,
    /// Inputs that are not audit events, including oversized ones and
    /// unreadable (e.g. corrupt gzip) stretches.
    pub malformed: u64,
    pub truncated: u64,
    pub skipped: u64,
    pub findings: u64,
    /// Paths that could not be opened at all.
    pub unreadable: u64,
    /// With a store: findings already stored by an earlier run.
    pub duplicates: u64,
    /// The most severe finding.
    pub max_severity: Option<Severity>,
    /// Entries the token detectors dropped for want of room (their caps).
    pub state_evictions: u64,
}

impl Summary {
    /// The line printed on stderr at the end of a scan.
    pub fn line(&self) -> String {
        format!(
            "kaudit scan: inputs={} events={} malformed={} truncated={} skipped={} findings={}{}{}{}",
            self.inputs,
            self.events,
            self.malformed,
            self.truncated,
            self.skipped,
            self.findings,
            if self.duplicates > 0 {
                format!(" duplicates={}", self.duplicates)
            } else {
                String::new()
            },
            if self.unreadable > 0 {
                format!(" unreadable={}", self.unreadable)
            } else {
                String::new()
            },
            if self.state_evictions > 0 {
                format!(" state_evictions={}", self.state_evictions)
            } else {
                String::new()
            }
        )
    }
}

/// Runs a scan, printing findings to `out` and problems to `err`.
///
/// # Errors
/// Only when writing to `out` fails; problems with inputs are counted.
pub fn scan(
    opts: &ScanOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Summary, ScanError> {
    let store = match &opts.db {
        Some(path) => Some(Store::open(path)?),
        None => None,
    };
    let mut token = TokenDetector::new(&opts.config).map_err(ScanError::Config)?;
    if let Some(saved) = store
        .as_ref()
        .map(|s| s.detector_state(STATE_NAME))
        .transpose()?
        .flatten()
        && let Err(e) = token.restore(&saved)
    {
        // Detection goes on from a clean state rather than not at all.
        writeln!(err, "kaudit: {e}; the token detectors start afresh")?;
    }
    let mut run = Run {
        detector: Detector::with_token(opts.rules.clone(), token),
        out: Output {
            printer: Printer::new(out, opts.format),
            summary: Summary::default(),
            write_error: None,
            store,
            pending: Batch::default(),
            coverage: HashMap::new(),
            store_error: None,
            stdout_closed: false,
            pending_quarantine_bytes: 0,
        },
        err,
        source: String::new(),
        hours: HashMap::new(),
        state_written: std::time::Instant::now(),
    };
    let mut ctx = Context::new(opts.limits);
    ctx.default_cluster = opts.config.cluster.as_deref();
    let stdin = [PathBuf::from("-")];
    let paths = if opts.paths.is_empty() {
        &stdin[..]
    } else {
        &opts.paths[..]
    };
    for path in paths {
        if path.as_os_str() == "-" {
            run.input("-".into(), io::stdin().lock(), &ctx);
        } else {
            run.path(path, &ctx);
        }
        run.commit(true);
        run.out.fail()?;
    }
    run.out.printer.flush()?;
    if let Some(t) = run.detector.token() {
        run.out.summary.state_evictions = t.stats().evictions;
    }
    Ok(run.out.summary)
}

/// Whether a file met while walking a directory is read: `*.json`,
/// `*.jsonl`, `*.ndjson`, `*.log`, `*.txt`, each optionally rotated (`.1`)
/// and/or gzip'd (`.gz`). Hidden files are not. Paths named on the command
/// line are always read.
fn looks_like_log(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') {
        return false;
    }
    let mut name = name.strip_suffix(".gz").unwrap_or(name);
    if let Some((stem, n)) = name.rsplit_once('.') {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            name = stem;
        }
    }
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    ["json", "jsonl", "ndjson", "log", "txt"]
        .iter()
        .any(|e| e.eq_ignore_ascii_case(ext))
}

/// Where findings go: straight to the printer, or through the store first.
struct Output<'o> {
    printer: Printer<&'o mut dyn Write>,
    summary: Summary,
    /// The first failure to write a finding (a closed pipe, a full disk).
    write_error: Option<io::Error>,
    store: Option<Store>,
    /// Findings, quarantine rows and coverage not yet committed.
    pending: Batch,
    /// (cluster, hour, source) → (events, malformed, truncated).
    coverage: HashMap<(String, i64, String), (u64, u64, u64)>,
    /// The first failure to commit; the scan stops on it.
    store_error: Option<crate::store::Error>,
    /// The reader of stdout went away; findings are still stored.
    stdout_closed: bool,
    pending_quarantine_bytes: usize,
}

impl Output<'_> {
    /// Holds a finding for the next commit (printed once committed), or
    /// prints it at once without a store. The caller commits when
    /// [`Output::due`] says so, between events, so that a commit never
    /// splits one event's findings from the detector state it changed.
    fn finding(&mut self, f: Finding) {
        if self.store.is_some() {
            self.pending.findings.push(f);
        } else {
            self.print(&f);
        }
    }

    fn due(&self) -> bool {
        self.pending.findings.len() >= BATCH_FINDINGS
            || self.pending.quarantine.len() >= BATCH_FINDINGS
            || self.pending_quarantine_bytes >= 8 << 20
    }

    fn print(&mut self, f: &Finding) {
        self.summary.findings += 1;
        self.summary.max_severity = self.summary.max_severity.max(Some(f.severity));
        if self.write_error.is_none() && !self.stdout_closed {
            match self.printer.finding(f) {
                Ok(()) => {}
                // `kaudit scan --db ... | head`: the reader has gone, but the
                // store still gets every finding (a finding stored but never
                // printed would otherwise be lost to a rerun: it is a
                // duplicate by then).
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe && self.store.is_some() => {
                    self.stdout_closed = true;
                }
                Err(e) => self.write_error = Some(e),
            }
        }
    }

    /// Whether the scan must stop reading input.
    fn stopped(&self) -> bool {
        self.write_error.is_some() || self.store_error.is_some()
    }

    /// Commits early when quarantined bytes pile up (memory stays bounded
    /// on inputs that are mostly malformed).
    fn quarantined(&mut self, row: QuarantineRow) {
        self.pending_quarantine_bytes += row.raw.len();
        self.pending.quarantine.push(row);
    }

    /// Commits the pending batch, with the detector state `state` that
    /// reflects it, and prints the findings that were new.
    fn commit(&mut self, state: Option<Vec<u8>>) {
        let Some(store) = &mut self.store else {
            return;
        };
        if self.store_error.is_some() {
            return;
        }
        let mut batch = std::mem::take(&mut self.pending);
        self.pending_quarantine_bytes = 0;
        batch.coverage = self
            .coverage
            .drain()
            .map(
                |((cluster, hour, source), (events, malformed, truncated))| CoverageDelta {
                    cluster,
                    hour,
                    source,
                    events,
                    malformed,
                    truncated,
                },
            )
            .collect();
        batch.state = state
            .map(|s| vec![(STATE_NAME.to_owned(), s)])
            .unwrap_or_default();
        if batch.findings.is_empty()
            && batch.quarantine.is_empty()
            && batch.coverage.is_empty()
            && batch.state.is_empty()
        {
            return;
        }
        match store.commit(&batch) {
            Ok(results) => {
                for (f, r) in batch.findings.iter().zip(results) {
                    match r {
                        Inserted::New { .. } => self.print(f),
                        Inserted::Duplicate => self.summary.duplicates += 1,
                    }
                }
            }
            Err(e) => self.store_error = Some(e),
        }
    }

    /// The error that stops the scan, if any.
    fn fail(&mut self) -> Result<(), ScanError> {
        if let Some(e) = self.store_error.take() {
            return Err(e.into());
        }
        if let Some(e) = self.write_error.take() {
            return Err(e.into());
        }
        Ok(())
    }

    fn count(&mut self, cluster: &str, hour: i64, source: &str, which: usize) {
        if self.store.is_none() {
            return;
        }
        let c = self
            .coverage
            .entry((cluster.to_owned(), hour, source.to_owned()))
            .or_default();
        match which {
            0 => c.0 += 1,
            1 => c.1 += 1,
            _ => c.2 += 1,
        }
    }
}

struct Run<'o> {
    detector: Detector,
    out: Output<'o>,
    err: &'o mut dyn Write,
    /// The input being read, for messages.
    source: String,
    /// `YYYY-MM-DDTHH` → the hour's Unix time (one parse per hour seen).
    hours: HashMap<String, i64>,
    /// When the detector state was last committed.
    state_written: std::time::Instant,
}

impl Run<'_> {
    /// Commits what is pending, with the token detectors' state when
    /// `final_` (the end of an input) or when it was last written more than
    /// [`STATE_EVERY`] ago: the state of a large cluster is megabytes, not
    /// worth rewriting with every thousand findings. A scan that dies
    /// between two is rerun from the start, so the lag loses nothing.
    fn commit(&mut self, final_: bool) {
        if self.out.store.is_none() {
            return;
        }
        let due = final_ || self.state_written.elapsed() >= STATE_EVERY;
        let state = if due {
            self.state_written = std::time::Instant::now();
            self.detector.token_mut().and_then(|t| t.take_snapshot())
        } else {
            None
        };
        self.out.commit(state);
    }

    /// The hour (Unix time of its start) an event belongs to.
    fn hour_of(&mut self, time: Option<&str>) -> i64 {
        let now_hour = || crate::timespec::now() / 3600 * 3600;
        let Some(prefix) = time.and_then(|t| t.get(..13)) else {
            return now_hour();
        };
        if let Some(h) = self.hours.get(prefix) {
            return *h;
        }
        let h =
            crate::timespec::rfc3339_to_unix(&format!("{prefix}:00:00Z")).unwrap_or_else(now_hour);
        if self.hours.len() < 100_000 {
            self.hours.insert(prefix.to_owned(), h);
        }
        h
    }
}

impl Run<'_> {
    fn path(&mut self, path: &Path, ctx: &Context<'_>) {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return self.unreadable(path, &e),
        };
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = match fs::read_dir(path) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => return self.unreadable(path, &e),
            };
            entries.sort();
            for entry in entries {
                // Symlinked directories are not followed: no loops.
                let is_link_dir = fs::symlink_metadata(&entry)
                    .is_ok_and(|m| m.file_type().is_symlink())
                    && entry.is_dir();
                if !is_link_dir && (entry.is_dir() || looks_like_log(&entry)) {
                    self.path(&entry, ctx);
                }
                if self.out.stopped() {
                    return;
                }
            }
            return;
        }
        match File::open(path) {
            Ok(f) => self.input(path.display().to_string(), f, ctx),
            Err(e) => self.unreadable(path, &e),
        }
    }

    fn unreadable(&mut self, path: &Path, e: &io::Error) {
        self.out.summary.unreadable += 1;
        let _ = writeln!(
            self.err,
            "kaudit: {}: cannot read: {e}",
            terminal_safe(&path.display().to_string())
        );
    }

    fn input(&mut self, source: String, reader: impl io::Read, ctx: &Context<'_>) {
        self.out.summary.inputs += 1;
        self.source = source;
        let name = self.source.clone();
        let ctx = ctx.for_source(&name);
        if let Err(e) = decode::decode(reader, &ctx, self) {
            self.out.summary.malformed += 1;
            let (line, msg) = match &e {
                decode::Error::Read { line, source } => {
                    (format!(":{line}"), format!("read error: {source}"))
                }
                other => (String::new(), other.to_string()),
            };
            let _ = writeln!(
                self.err,
                "kaudit: {}{line}: {} (the rest of this input is skipped)",
                terminal_safe(&self.source),
                terminal_safe(&msg)
            );
        }
    }
}

impl Sink for Run<'_> {
    fn event(&mut self, ev: &AuditEvent<'_>) {
        if self.out.stopped() {
            return;
        }
        self.out.summary.events += 1;
        if self.out.store.is_some() {
            let hour = self.hour_of(ev.request_received_timestamp.as_deref());
            let cluster = ev.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER);
            self.out.count(cluster, hour, &self.source, 0);
        }
        let Run { detector, out, .. } = self;
        detector.check(ev, &mut |f| out.finding(f));
        if self.out.due() {
            self.commit(false);
        }
    }

    fn problem(&mut self, p: &Problem<'_>) {
        match p.kind {
            ProblemKind::Malformed | ProblemKind::Oversized => self.out.summary.malformed += 1,
            ProblemKind::Truncated => self.out.summary.truncated += 1,
        }
        if self.out.store.is_some() {
            let hour = self.hour_of(None);
            let which = if p.kind == ProblemKind::Truncated {
                2
            } else {
                1
            };
            self.out.count(DEFAULT_CLUSTER, hour, &self.source, which);
            // Quarantine keeps the input's bytes, with the secrets the
            // redactor recognises in plain text replaced.
            self.out.quarantined(QuarantineRow {
                source: self.source.clone(),
                position: format!("line {}", p.line),
                kind: match p.kind {
                    ProblemKind::Malformed => "malformed",
                    ProblemKind::Oversized => "oversized",
                    ProblemKind::Truncated => "truncated",
                }
                .into(),
                error: p.error.to_string(),
                audit_id: p.audit_id.map(str::to_owned),
                raw: crate::redact::redact_bytes(p.sample),
            });
        }
        // Oversized and truncated events are findings too (evasion, a
        // broken pipeline), not just lines on stderr.
        if let Some(f) = pipeline::from_problem(p, &self.source, DEFAULT_CLUSTER) {
            let Run { detector, out, .. } = self;
            detector.report(f, &mut |f| out.finding(f));
        }
        if self.out.due() {
            self.commit(false);
        }
        let id = p
            .audit_id
            .map(|id| format!(" (auditID {id})"))
            .unwrap_or_default();
        let _ = writeln!(
            self.err,
            "kaudit: {}:{}: {}{}",
            terminal_safe(&self.source),
            p.line,
            terminal_safe(&p.error.to_string()),
            id
        );
    }

    fn skipped(&mut self, _line: u64, _what: &'static str) {
        self.out.summary.skipped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_walk_picks_log_files() {
        for yes in [
            "audit.log",
            "audit.log.1",
            "audit-2024-11-28T02-24-22.123.log.gz",
            "a.json",
            "b.JSONL",
            "c.ndjson.gz",
            "records.txt",
        ] {
            assert!(looks_like_log(Path::new(yes)), "{yes}");
        }
        for no in [
            "README.md",
            "make.py",
            "expected.tsv",
            ".hidden.log",
            "audit",
            "x.log.bak",
        ] {
            assert!(!looks_like_log(Path::new(no)), "{no}");
        }
    }
}
