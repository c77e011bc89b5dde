//! The `kaudit` command line: parses arguments, sets up logging, and calls
//! into the library. Errors that stop a command are printed as
//! `kaudit: <error>` and exit with status 2.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use kaudit::decode::Limits;
use kaudit::finding::Severity;
use kaudit::output::Format;
use kaudit::scan::{ScanOptions, scan};

#[derive(Parser)]
#[command(name = "kaudit", version, about = "Security detector for Kubernetes API-server audit logs")]
struct Cli {
    /// Log format for kaudit's own diagnostics (on stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Scan audit logs offline and print findings.
    ///
    /// Reads files, directories (recursively: files named *.json, *.jsonl,
    /// *.ndjson, *.log, *.txt, optionally rotated (.1) and/or gzip'd (.gz)),
    /// gzip files and stdin ("-", the default) in any supported envelope:
    /// audit Event, EventList, JSON array, JSON lines, EKS CloudWatch and
    /// Firehose, GKE LogEntry and Pub/Sub push, AKS records, Vector and
    /// Fluent Bit wrappers. Problems with the input are reported on stderr,
    /// one line each, and the scan goes on; a summary line ends it.
    Scan {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Exit with status 1 when a finding at or above this severity exists.
        #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
        fail_on: Option<Severity>,
        /// Largest audit event accepted, in bytes; larger ones are quarantined.
        #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_event_bytes)]
        max_event_bytes: usize,
        /// Files, directories, or - for stdin.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kaudit: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Scan {
            format,
            fail_on,
            max_event_bytes,
            paths,
        } => {
            if max_event_bytes == 0 {
                anyhow::bail!("--max-event-bytes must be greater than 0");
            }
            let limits = Limits {
                max_event_bytes,
                max_document_bytes: Limits::default().max_document_bytes.max(max_event_bytes),
            };
            let opts = ScanOptions {
                paths,
                format,
                limits,
            };
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let mut err = io::stderr().lock();
            let summary = match scan(&opts, &mut out, &mut err) {
                Ok(s) => s,
                // A closed pipe (`kaudit scan | head`) is not an error.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
                Err(e) => return Err(e).context("cannot write findings"),
            };
            eprintln!("{}", summary.line());
            if summary.unreadable > 0 {
                return Ok(ExitCode::from(2));
            }
            if fail_on.is_some_and(|min| summary.max_severity.is_some_and(|s| s >= min)) {
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAUDIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
