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

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::decode::{self, Context, Limits};
use crate::detect::token::TokenDetector;
use crate::detect::{Detector, RuleSet};
use crate::finding::{Finding, Severity};
use crate::output::{Format, Printer, terminal_safe};
use crate::pipeline::{Output, Pipeline};
use crate::store::Store;

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
    /// Evaluate RequestReceived events (audit policies that log no later stage).
    pub request_received: bool,
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

/// SQLite page cache of a scan into the store, KiB: it appends and looks
/// up little, and `scan` stays within 64 MB whatever the input (issue 8);
/// the daemon keeps the store's default.
const SCAN_CACHE_KIB: i64 = 8 * 1024;

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
        Some(path) => {
            let store = Store::open(path)?;
            store.limit_cache(SCAN_CACHE_KIB)?;
            Some(store)
        }
        None => None,
    };
    let token = TokenDetector::new(&opts.config).map_err(ScanError::Config)?;
    let (pipeline, warning) =
        Pipeline::new(Detector::with_token(opts.rules.clone(), token), store)?;
    if let Some(w) = warning {
        writeln!(err, "kaudit: {w}")?;
    }
    let mut run = Run {
        pipeline,
        out: ScanOutput {
            printer: Printer::new(out, opts.format),
            write_error: None,
            stdout_closed: false,
            stored: opts.db.is_some(),
            err,
        },
        inputs: 0,
        unreadable: 0,
    };
    let mut ctx = Context::new(opts.limits);
    ctx.default_cluster = opts.config.cluster.as_deref();
    ctx.request_received = opts.request_received;
    let stdin = [PathBuf::from("-")];
    let paths = if opts.paths.is_empty() {
        &stdin[..]
    } else {
        &opts.paths[..]
    };
    for path in paths {
        if path.as_os_str() == "-" {
            run.input("-", io::stdin().lock(), &ctx);
        } else {
            run.path(path, &ctx);
        }
        let _ = run.pipeline.commit(true, Vec::new(), &mut run.out);
        run.fail()?;
    }
    run.out.printer.flush()?;
    let c = &run.pipeline.counts;
    Ok(Summary {
        inputs: run.inputs,
        events: c.events,
        malformed: c.malformed,
        truncated: c.truncated,
        skipped: c.skipped,
        findings: c.findings,
        unreadable: run.unreadable,
        duplicates: c.duplicates,
        max_severity: c.max_severity,
        state_evictions: run
            .pipeline
            .detector()
            .token()
            .map_or(0, |t| t.stats().evictions),
    })
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

/// Findings printed as they become new; problems on the error stream.
struct ScanOutput<'o> {
    printer: Printer<&'o mut dyn Write>,
    write_error: Option<io::Error>,
    /// The reader of stdout went away; findings are still stored.
    stdout_closed: bool,
    /// Findings go to a store (a closed stdout does not stop the scan).
    stored: bool,
    err: &'o mut dyn Write,
}

impl Output for ScanOutput<'_> {
    fn finding(&mut self, f: &Finding) {
        if self.write_error.is_some() || self.stdout_closed {
            return;
        }
        match self.printer.finding(f) {
            Ok(()) => {}
            // `kaudit scan --db ... | head`: the reader has gone, but the
            // store still gets every finding (a finding stored but never
            // printed would otherwise be lost to a rerun: it is a duplicate
            // by then).
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe && self.stored => {
                self.stdout_closed = true;
            }
            Err(e) => self.write_error = Some(e),
        }
    }

    fn problem(&mut self, source: &str, line: u64, message: &str, audit_id: Option<&str>) {
        let id = audit_id
            .map(|id| format!(" (auditID {})", terminal_safe(id)))
            .unwrap_or_default();
        let _ = writeln!(
            self.err,
            "kaudit: {}:{line}: {}{id}",
            terminal_safe(source),
            terminal_safe(message),
        );
    }

    fn stopped(&self) -> bool {
        self.write_error.is_some()
    }
}

struct Run<'o> {
    pipeline: Pipeline,
    out: ScanOutput<'o>,
    inputs: u64,
    unreadable: u64,
}

impl Run<'_> {
    /// The error that stops the scan, if any.
    fn fail(&mut self) -> Result<(), ScanError> {
        if let Some(e) = self.pipeline.take_store_error() {
            return Err(e.into());
        }
        if let Some(e) = self.out.write_error.take() {
            return Err(e.into());
        }
        Ok(())
    }

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
                if self.pipeline.stopped(&self.out) {
                    return;
                }
            }
            return;
        }
        match File::open(path) {
            Ok(f) => self.input(&path.display().to_string(), f, ctx),
            Err(e) => self.unreadable(path, &e),
        }
    }

    fn unreadable(&mut self, path: &Path, e: &io::Error) {
        self.unreadable += 1;
        let _ = writeln!(
            self.out.err,
            "kaudit: {}: cannot read: {e}",
            terminal_safe(&path.display().to_string())
        );
    }

    fn input(&mut self, source: &str, reader: impl io::Read, ctx: &Context<'_>) {
        self.inputs += 1;
        let ctx = ctx.for_source(source);
        if let Err(e) = self.pipeline.feed(reader, &ctx, &mut self.out) {
            self.pipeline.counts.malformed += 1;
            let (line, msg) = match &e {
                decode::Error::Read { line, source } => {
                    (format!(":{line}"), format!("read error: {source}"))
                }
                other => (String::new(), other.to_string()),
            };
            let _ = writeln!(
                self.out.err,
                "kaudit: {}{line}: {} (the rest of this input is skipped)",
                terminal_safe(source),
                terminal_safe(&msg)
            );
        }
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
