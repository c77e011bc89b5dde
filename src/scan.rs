//! `kaudit scan`: the offline scanner.
//!
//! Reads files, directories (recursively, in name order), `.gz` files and
//! stdin (`-`) in any supported envelope, runs detection, and prints
//! findings. Problems with the input (malformed, oversized, truncated
//! events, unreadable files) are reported one line each on the error stream,
//! naming the input and line, and counted; they never stop the scan.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decode::{self, Context, Limits, Problem, ProblemKind, Sink};
use crate::detect::{Detector, RuleSet, pipeline};
use crate::event::AuditEvent;
use crate::finding::{DEFAULT_CLUSTER, Finding, Severity};
use crate::output::{Format, Printer, terminal_safe};

/// What to scan and how to print it.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Files, directories, or `-` for stdin. Empty means stdin.
    pub paths: Vec<PathBuf>,
    pub format: Format,
    pub limits: Limits,
    pub rules: Arc<RuleSet>,
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
    /// The most severe finding.
    pub max_severity: Option<Severity>,
}

impl Summary {
    /// The line printed on stderr at the end of a scan.
    pub fn line(&self) -> String {
        format!(
            "kaudit scan: inputs={} events={} malformed={} truncated={} skipped={} findings={}{}",
            self.inputs,
            self.events,
            self.malformed,
            self.truncated,
            self.skipped,
            self.findings,
            if self.unreadable > 0 {
                format!(" unreadable={}", self.unreadable)
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
pub fn scan(opts: &ScanOptions, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<Summary> {
    let mut run = Run {
        detector: Detector::new(opts.rules.clone()),
        printer: Printer::new(out, opts.format),
        err,
        summary: Summary::default(),
        source: String::new(),
        write_error: None,
    };
    let ctx = Context::new(opts.limits);
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
        if let Some(e) = run.write_error.take() {
            return Err(e);
        }
    }
    run.printer.flush()?;
    Ok(run.summary)
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

/// Counts and prints one finding; keeps the first write error.
fn emit(
    printer: &mut Printer<&mut dyn Write>,
    summary: &mut Summary,
    write_error: &mut Option<io::Error>,
    f: &Finding,
) {
    summary.findings += 1;
    summary.max_severity = summary.max_severity.max(Some(f.severity));
    if write_error.is_none() {
        if let Err(e) = printer.finding(f) {
            *write_error = Some(e);
        }
    }
}

struct Run<'o> {
    detector: Detector,
    printer: Printer<&'o mut dyn Write>,
    err: &'o mut dyn Write,
    summary: Summary,
    /// The input being read, for messages.
    source: String,
    /// The first failure to write a finding (a closed pipe, a full disk).
    write_error: Option<io::Error>,
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
                if self.write_error.is_some() {
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
        self.summary.unreadable += 1;
        let _ = writeln!(
            self.err,
            "kaudit: {}: cannot read: {e}",
            terminal_safe(&path.display().to_string())
        );
    }

    fn input(&mut self, source: String, reader: impl io::Read, ctx: &Context<'_>) {
        self.summary.inputs += 1;
        self.source = source;
        let name = self.source.clone();
        let ctx = ctx.for_source(&name);
        if let Err(e) = decode::decode(reader, &ctx, self) {
            self.summary.malformed += 1;
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
        self.summary.events += 1;
        let Run {
            detector,
            printer,
            summary,
            write_error,
            ..
        } = self;
        detector.check(ev, &mut |f: Finding| {
            emit(printer, summary, write_error, &f)
        });
    }

    fn problem(&mut self, p: &Problem<'_>) {
        match p.kind {
            ProblemKind::Malformed | ProblemKind::Oversized => self.summary.malformed += 1,
            ProblemKind::Truncated => self.summary.truncated += 1,
        }
        // Oversized and truncated events are findings too (evasion, a
        // broken pipeline), not just lines on stderr.
        if let Some(f) = pipeline::from_problem(p, &self.source, DEFAULT_CLUSTER) {
            let Run {
                detector,
                printer,
                summary,
                write_error,
                ..
            } = self;
            detector.report(f, &mut |f| emit(printer, summary, write_error, &f));
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
        self.summary.skipped += 1;
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
